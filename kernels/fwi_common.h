// Shared stencil and CPML math of the compiled propagator (host and device).
//
// The operator is documented in fwi_cli/propagator/grid.py. Per shot, on the padded grid
// (nzp, nxp) with zero outside it, for step n:
//
//   psi_x  = b_x psi_x + a_x Dx u                 (x-PML columns only; same in z)
//   Ax     = Dxx u + mx Dx psi_x
//   zeta_x = b_x zeta_x + a_x Ax                  (x-PML columns only)
//   L      = Ax + Az + zeta_x + zeta_z
//   u_next = 2 u - u_prev + V L,  u_next[src] += V[src] f^n,  record[n] = u_next[rec]
//
// with V = (v dt)^2. The hand-written adjoint is the exact transpose of that linear map
// (Dxx^T = Dxx, Dx^T = -Dx). With lam = adjoint of u^{n+1}, g = V lam and the running
// CPML adjoints zbar_x (of zeta) and pbar_x (of psi), both already multiplied by b_x:
//
//   Abar_x = g + a_x (zbar_x + g)                  (= g in the interior)
//   pbar_x <- pbar_x - Dx(mx Abar_x)               (pass 1, PML cells)
//   lam_prev <- 2 lam - lam_prev + Dxx Abar_x + Dzz Abar_z - Dx(a_x pbar_x) - Dz(a_z pbar_z)
//   zbar_x <- b_x (zbar_x + g),  pbar_x <- b_x pbar_x   (pass 3, PML cells)
//
// Both builds apply pass 3 lazily, as the first thing of the next (earlier) step's pass 1, with
// the g of the later step still held in the mu_prev buffer; between op calls zbar and pbar are
// therefore stored before their pass 3.
//
// and dJ/dV += lam * (L + f^n delta_src) on interior cells.
#pragma once

#include <math.h>

#include <cstdint>

#if defined(__CUDACC__)
#define FWI_HD __host__ __device__ __forceinline__
#else
#define FWI_HD inline
#endif

namespace fwi {

constexpr int kMaxHalf = 4;  // spatial order 8

// Finite-difference weights already divided by dh^2 (c2) and dh (c1, index 0 unused).
struct Weights {
  float c2[kMaxHalf + 1];
  float c1[kMaxHalf + 1];
};

// Geometry of one problem: interior (nz, nx), PML width p, padded (nzp, nxp), batch b.
struct Dims {
  int64_t b, nz, nx, p, nzp, nxp;
  FWI_HD int64_t plane() const { return nzp * nxp; }
};

// Second derivative along a line with stride s: c0 f + sum_k ck (f[+k s] + f[-k s]).
// Neighbours outside the grid are zero: lo/hi are how many points exist below/above.
template <int N>
FWI_HD float d2(const float* f, int64_t s, const Weights& w, int64_t lo, int64_t hi) {
  float acc = w.c2[0] * f[0];
#pragma unroll
  for (int k = 1; k <= N; ++k) {
    const float a = (k <= hi) ? f[k * s] : 0.f;
    const float c = (k <= lo) ? f[-k * s] : 0.f;
    acc += w.c2[k] * (a + c);
  }
  return acc;
}

// First derivative along a line: sum_k ck (f[+k s] - f[-k s]).
template <int N>
FWI_HD float d1(const float* f, int64_t s, const Weights& w, int64_t lo, int64_t hi) {
  float acc = 0.f;
#pragma unroll
  for (int k = 1; k <= N; ++k) {
    const float a = (k <= hi) ? f[k * s] : 0.f;
    const float c = (k <= lo) ? f[-k * s] : 0.f;
    acc += w.c1[k] * (a - c);
  }
  return acc;
}

// Adjoint CPML quantity Abar at one cell (see header comment); a is the axis coefficient.
FWI_HD float abar(float g, float a, float zbar) { return g + a * (zbar + g); }

// CPML auxiliary fields are stored only in their strips ("compact" layout). With W = p + 2N:
//   x fields (psi_x, zeta_x and their adjoints): (B, nzs, 2W), storage columns [0, W) and
//     [nxs - W, nxs) of every storage row; column j -> xs_col(j).
//   z fields: (B, 2W, nxs), storage rows [0, W) and [nzs - W, nzs); row i -> zs_row(i).
// (Per-shot shapes as the CPU stores them; CUDA interleaves four shots per cell, (ceil(B/4), ...,
// 4): fwi_cuda.cu, "Shots in lanes".)
// A PML cell's stencil (N cells either side) stays inside its strip, whose cells outside the
// PML (halo and the first N interior cells) are never written and stay zero. Needs nx, nz >= 2N.
FWI_HD int64_t strip_width(int64_t p, int64_t n) { return p + 2 * n; }
FWI_HD int64_t xs_col(int64_t j, int64_t nxs, int64_t w) { return j < w ? j : j - (nxs - 2 * w); }
FWI_HD int64_t zs_row(int64_t i, int64_t nzs, int64_t w) { return i < w ? i : i - (nzs - 2 * w); }

// Map ring position q (0 <= q < 2N(nz+nx)) to (row, col) in a frame whose interior starts
// at (off, off): top strip, bottom strip (N x nx each), left, right strip (nz x N each).
FWI_HD void ring_cell(int64_t q, int64_t n, int64_t nz, int64_t nx, int64_t off,
                      int64_t* row, int64_t* col) {
  const int64_t tb = n * nx, lr = nz * n;
  if (q < tb) {
    *row = off - n + q / nx; *col = off + q % nx;
  } else if (q < 2 * tb) {
    q -= tb; *row = off + nz + q / nx; *col = off + q % nx;
  } else if (q < 2 * tb + lr) {
    q -= 2 * tb; *row = off + q / n; *col = off - n + q % n;
  } else {
    q -= 2 * tb + lr; *row = off + q / n; *col = off + nx + q % n;
  }
}

// Flat index on the padded grid -> flat index on the storage grid (padded + N halo).
FWI_HD int64_t storage_index(int64_t padded_flat, int64_t nxp, int64_t nxs, int64_t n) {
  return (padded_flat / nxp + n) * nxs + (padded_flat % nxp + n);
}

// int8 ring codec (fwi_cli/storage/codecs.py, Int8Codec): one fp32 scale per block of
// kCodecBlock consecutive cells of a (step, shot) row, scale = absmax / 127, and codes
// clamp(rint(x / s), -127, 127) with s = scale, or 1 for an all-zero block; decoding is
// code * scale. A block holding a NaN or an infinity gets a NaN scale, so it decodes to NaN
// (as the torch codec's block does): a non-finite value never comes back finite. Used by the
// fused codec ops (fwi_codec.cpp, fwi_codec_cuda.cu).
constexpr int kCodecBlock = 256;
FWI_HD float int8_scale(float absmax, bool finite) { return finite ? absmax / 127.f : nanf(""); }
FWI_HD int8_t int8_code(float x, float scale) {
  const float s = scale > 0.f ? scale : 1.f;
  return static_cast<int8_t>(fminf(fmaxf(rintf(x / s), -127.f), 127.f));
}

// fp16 ring codec (Fp16Codec): per block e = clamp(floor(log2 absmax) - 14, -126, 126), or 0 for
// an all-zero block or one holding a NaN or an infinity; code = fp16(x 2^-e), decoded code 2^e.
constexpr int kFp16Top = 14, kFp16ExpMax = 126;
FWI_HD int fp16_exponent(float absmax, bool finite) {
  if (!finite || !(absmax > 0.f)) return 0;
  int ex = 0;
  frexpf(absmax, &ex);  // absmax = m 2^ex, m in [0.5, 1): floor(log2 absmax) = ex - 1
  const int e = ex - 1 - kFp16Top;
  return e < -kFp16ExpMax ? -kFp16ExpMax : (e > kFp16ExpMax ? kFp16ExpMax : e);
}
FWI_HD float pow2f(int e) { return ldexpf(1.f, e); }  // exact for |e| <= 126

// Launchers of the fused fp16 codec on CUDA (codes as raw fp16 bits, exponents int8).
void fp16_encode_cuda(const float* x, uint16_t* codes, int8_t* exps, int64_t rows, int64_t cells, void* stream);
void fp16_decode_cuda(const uint16_t* codes, const int8_t* exps, float* out, int64_t rows, int64_t cells,
                      void* stream);

// Launchers of the fused int8 codec on CUDA (fwi_codec_cuda.cu): rows (step, shot) of C cells,
// x/out (rows, C) float32, codes (rows, C) int8, scale (rows, ceil(C / kCodecBlock)).
void int8_encode_cuda(const float* x, int8_t* codes, float* scale, int64_t rows, int64_t cells, void* stream);
void int8_decode_cuda(const int8_t* codes, const float* scale, float* out, int64_t rows, int64_t cells,
                      void* stream);

struct StepArgs {
  Dims d;
  int n_half;
  int64_t nt, nrec, n0, nsteps;
  Weights w;
  const float *v2dt2, *ax, *bx, *az, *bz, *wavelet;
  const int64_t *src, *rec;
  float *u, *uprev, *psix, *psiz, *zx, *zz, *record;
  float* ring;  // (T, B, C) or nullptr
  float* lap;   // (T, B, nz, nx) or nullptr
};

struct AdjArgs {
  Dims d;
  int n_half;
  int64_t nt, nrec, n0, nsteps;
  bool boundary;
  Weights w;
  const float *v2dt2, *ax, *bx, *az, *bz, *wavelet, *grad_record;
  const int64_t *src, *rec;
  float *lam, *lamprev, *px, *pz, *zx, *zz, *grad;  // lam/lamprev hold mu = V lam (both builds)
  float *ua, *ub;     // reconstruction frames (B, nz+2N, nx+2N; CUDA in lanes), boundary strategy
                      // grad: (B, nz, nx) on the CPU, (ceil(B/4), nz, nx) on CUDA (a quad's shots summed)
  float *zx2, *zz2;   // CUDA: scratch zbar strips (same shapes as zx, zz), see fwi_cuda.cu
  const float* ring;  // (T, B, C) boundary strategy
  const float* lap;   // (T, B, nz, nx) full strategy
};

// CUDA launchers (fwi_cuda.cu); `stream` is a cudaStream_t. They throw std::runtime_error
// on a launch failure.
void forward_cuda(const StepArgs& a, void* stream);
void backward_cuda(const AdjArgs& a, void* stream);

// Launch order of the tiles of k_main and k_adj_main, one block per tile of a 1D grid: with
// `first` set, the interior tiles of every quad (a rectangle [ix0, ix0 + nIx) x [iy0, iy0 + nIy)
// of tile indices, the blocks that skip the PDL wait) come before the others, so that the
// blocks resident while the predecessor still runs can work instead of waiting; else row-major
// per quad, as a 3D grid would go.
struct TileOrder {
  int TX, TY, ix0, nIx, iy0, nIy, first;
  FWI_HD void tile(int Q, int b, int* tx, int* ty, int* q) const {
    const int nI = nIx * nIy;
    if (!first) {
      *q = b / (TX * TY);
      const int r = b - *q * TX * TY;
      *ty = r / TX; *tx = r - *ty * TX;
      return;
    }
    if (b < Q * nI) {
      *q = b / nI;
      const int r = b - *q * nI;
      *ty = iy0 + r / nIx; *tx = ix0 + r % nIx;
      return;
    }
    b -= Q * nI;
    const int nO = TX * TY - nI;
    *q = b / nO;
    int r = b - *q * nO;
    const int top = iy0 * TX;
    if (r < top) { *ty = r / TX; *tx = r % TX; return; }
    r -= top;
    const int side = TX - nIx, mid = nIy * side;
    if (r < mid) {
      *ty = iy0 + r / side;
      const int c = r % side;
      *tx = c < ix0 ? c : c + nIx;
      return;
    }
    r -= mid;
    *ty = iy0 + nIy + r / TX; *tx = r % TX;
  }
};

}  // namespace fwi
