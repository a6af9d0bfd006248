// CUDA implementation of the compiled propagator's ops (see fwi_common.h for the math and
// fwi_cpu.cpp for the same algorithm on the CPU). One launch covers every shot (grid.z = B);
// all launches go on the stream the op wrapper passes (torch's current stream). This file
// needs only the CUDA toolkit (no torch headers), so CI can compile-check it without a GPU. Storage-grid layout as in fwi_cpu.cpp.
//
// * The backward carries mu = V lam instead of lam, like fwi_cpu.cpp (V = (v dt)^2 > 0: the
//   API checks v > 0, and V would underflow only for v dt < 1e-19 m). The lam/lamprev buffers
//   hold mu on return.
//   Then g = V lam at a neighbour is just mu there, and the update reads like the forward one:
//     mu_prev = 2 mu - mu_prev + V (Dxx Abar_x + Dzz Abar_z - Dx(a_x pbar_x) - Dz(a_z pbar_z)),
//   with Abar = mu in the interior; the adjoint source enters as mu[rec] += V[rec] dJ/drecord and
//   the gradient is dJ/dV += (mu / V) (L + f delta_src). Interior tiles of the adjoint thus read
//   one field per neighbour instead of two (V and lam).
// * When the kernels were compiled for sm_90+ (checked at run time from the compiled code, not
//   the device), every launch allows programmatic dependent launch (PDL): the next kernel of the
//   stream is scheduled while this one drains, and waits (griddepcontrol.wait, the first thing
//   every kernel does, on every path) until its predecessor has finished and its writes are
//   visible. That hides the launch gaps between the small kernels of a step (2 forward, 2
//   backward). FWI_PDL=0 turns it off.
#include <cuda_runtime.h>

#include <cstdlib>
#include <utility>

#include "fwi_common.h"
#include <stdexcept>
#include <string>

namespace fwi {
namespace {

constexpr int BX = 32, BY = 8;
// Rows per thread of the 2D kernels (k_main, k_grad_p1, k_adj_main): blocks of BX x (BY kRows)
// cells. Measured on the seed problem (docs/benchmarks.md, 2026-11-29 late): 2 rows per thread
// with aligned tiles 0.092 s per iteration, 1 row 0.0945 s.
constexpr int kRows = 2;

// Programmatic dependent launch (see the file comment); no-ops before sm_90.
__device__ __forceinline__ void pdl_begin() {
#if defined(__CUDA_ARCH__) && __CUDA_ARCH__ >= 900
  asm volatile("griddepcontrol.wait;" ::: "memory");
  asm volatile("griddepcontrol.launch_dependents;" ::: "memory");
#endif
}

// Sizes in 32-bit ints (the host checks B * nzs * nxs < 2^31): 64-bit index arithmetic
// costs several instructions per operation on the GPU.
struct Grid {
  int B, nz, nx, p, nzp, nxp, nzs, nxs, plane, n, w;  // w: CPML strip width p + 2N
  // flat index of (b, i, j) in the x-strip and z-strip arrays (compact layout, fwi_common.h)
  __device__ __forceinline__ int kx(int b, int i, int j) const {
    return (b * nzs + i) * (2 * w) + (j < w ? j : j - (nxs - 2 * w));
  }
  __device__ __forceinline__ int kz(int b, int i, int j) const {
    return (b * 2 * w + (i < w ? i : i - (nzs - 2 * w))) * nxs + j;
  }
};

inline Grid make_grid(const Dims& d, int n) {
  Grid g{static_cast<int>(d.b), static_cast<int>(d.nz), static_cast<int>(d.nx), static_cast<int>(d.p),
         static_cast<int>(d.nzp), static_cast<int>(d.nxp), static_cast<int>(d.nzp + 2 * n),
         static_cast<int>(d.nxp + 2 * n), 0, n, static_cast<int>(d.p + 2 * n)};
  g.plane = g.nzs * g.nxs;
  if (static_cast<int64_t>(g.plane) * g.B >= (int64_t{1} << 31))
    throw std::runtime_error("fwi: grid too large for 32-bit indexing on the GPU; use fewer shots per batch");
  return g;
}

// Tiling of the storage grid for the 2D kernels: blocks of BX x (BY R) cells, each thread taking
// R consecutive rows, with the tile origin (ox, oz) shifted so that column/row `edge` starts a tile
// (the first interior one, or the first whose stencil stays interior): more tiles then fall wholly
// inside the interior and take the short paths. Cells before N (the halo) are skipped.
struct Tiling {
  int ox, oz;
};

inline int tile_origin(int edge, int n, int size) { return edge - size * ((edge - n + size - 1) / size); }

inline Tiling make_tiling(const Grid& g, int edge, int rows) {
  return Tiling{tile_origin(edge, g.n, BX), tile_origin(edge, g.n, BY * rows)};
}

inline dim3 tile_grid(const Grid& g, const Tiling& t, int rows) {
  return dim3((g.nxp + g.n - t.ox + BX - 1) / BX, (g.nzp + g.n - t.oz + BY * rows - 1) / (BY * rows), g.B);
}

__device__ __forceinline__ int sidx(int64_t padded_flat, const Grid& g) {
  const int f = static_cast<int>(padded_flat);
  return (f / g.nxp + g.n) * g.nxs + (f % g.nxp + g.n);
}

// Number of PML cells of one shot and the (row, col) storage coordinates of PML cell t:
// top strip, bottom strip (p rows x nxp), then the left/right strips of the interior rows.
__host__ __device__ __forceinline__ int pml_cells(const Grid& g) { return 2 * g.p * g.nxp + g.nz * 2 * g.p; }

__device__ __forceinline__ void pml_cell(int t, const Grid& g, int* i, int* j) {
  const int strip = g.p * g.nxp;
  if (t < strip) {
    *i = g.n + t / g.nxp; *j = g.n + t % g.nxp;
  } else if (t < 2 * strip) {
    t -= strip; *i = g.n + g.p + g.nz + t / g.nxp; *j = g.n + t % g.nxp;
  } else {
    t -= 2 * strip;
    const int r = t / (2 * g.p), c = t % (2 * g.p);
    *i = g.n + g.p + r;
    *j = c < g.p ? g.n + c : g.n + g.p + g.nx + (c - g.p);
  }
}

// ------------------------------------------------------------------ forward kernels
// psi in the PML strips: psi = b psi + a D u (reads u at neighbours, psi locally), in the
// first `pblocks` blocks of 256 threads. The blocks after them read the same u = u^n (source
// already added) for two small copies: first the previous step's record, record[n-1] = u[rec]
// (`nrec_step` = n - 1, or -1 for none), then this step's boundary ring (ring null for none).
template <int N>
__global__ void k_psi(Grid g, Weights w, const float* __restrict__ u, float* __restrict__ psix,
                      float* __restrict__ psiz, const float* __restrict__ ax, const float* __restrict__ bx,
                      const float* __restrict__ az, const float* __restrict__ bz, int pblocks,
                      const int64_t* __restrict__ rec, float* __restrict__ record, int nt, int nrec, int nrec_step,
                      float* __restrict__ ring) {
  pdl_begin();
  const int b = blockIdx.y;
  if (static_cast<int>(blockIdx.x) >= pblocks) {
    int e = (blockIdx.x - pblocks) * blockDim.x + threadIdx.x;
    const int nr = nrec_step >= 0 ? nrec : 0;
    if (e < nr) {
      record[(static_cast<int64_t>(b) * nt + nrec_step) * nrec + e] = u[b * g.plane + sidx(rec[b * nrec + e], g)];
      return;
    }
    e -= nr;
    const int C = 2 * N * (g.nz + g.nx);
    if (ring && e < C) {
      int64_t r, c;
      ring_cell(e, N, g.nz, g.nx, N + g.p, &r, &c);
      ring[b * C + e] = u[b * g.plane + static_cast<int>(r) * g.nxs + static_cast<int>(c)];
    }
    return;
  }
  const int t = blockIdx.x * blockDim.x + threadIdx.x;
  if (t >= pml_cells(g)) return;
  int i, j;
  pml_cell(t, g, &i, &j);
  const int k = b * g.plane + i * g.nxs + j;
  const float a_x = ax[j], a_z = az[i];
  if (a_x != 0.f) {
    const int q = g.kx(b, i, j);
    psix[q] = bx[j] * psix[q] + a_x * d1<N>(u + k, 1, w, N, N);
  }
  if (a_z != 0.f) {
    const int q = g.kz(b, i, j);
    psiz[q] = bz[i] * psiz[q] + a_z * d1<N>(u + k, g.nxs, w, N, N);
  }
}

// Register column of field f at the flat index k0 (stride s between rows): rows -N .. R + N - 1.
template <int N, int R>
__device__ __forceinline__ void load_col(float (&c)[R + 2 * N], const float* f, int k0, int s) {
#pragma unroll
  for (int r = 0; r < R + 2 * N; ++r) c[r] = f[k0 + (r - N) * s];
}

// Second derivative along z at R consecutive rows from a register column c of rows
// [i - N, i + R + N) (same summation order as d2).
template <int N, int R>
__device__ __forceinline__ float d2_col(const float (&c)[R + 2 * N], int r, const Weights& w) {
  float acc = w.c2[0] * c[N + r];
#pragma unroll
  for (int q = 1; q <= N; ++q) acc += w.c2[q] * (c[N + r + q] + c[N + r - q]);
  return acc;
}

// First derivative along z at R consecutive rows from a register column (same order as d1).
template <int N, int R>
__device__ __forceinline__ float d1_col(const float (&c)[R + 2 * N], int r, const Weights& w) {
  float acc = 0.f;
#pragma unroll
  for (int q = 1; q <= N; ++q) acc += w.c1[q] * (c[N + r + q] - c[N + r - q]);
  return acc;
}

// The last part of the forward update at storage cell (i, j) of shot b: leapfrog, source, L.
template <int N>
__device__ __forceinline__ void main_finish(const Grid& g, int b, int i, int j, int k, float uk, float L,
                                            const float* __restrict__ V, float* __restrict__ up,
                                            float* __restrict__ lap, const int64_t* __restrict__ src,
                                            const float* __restrict__ wavelet, int nt, int n) {
  const float vk = V[i * g.nxs + j];
  float unew = (2.f * uk - up[k]) + vk * L;
  if ((i - N) * g.nxp + (j - N) == static_cast<int>(src[b])) unew += vk * wavelet[b * nt + n];  // source
  up[k] = unew;
  const int zi = i - N - g.p, xi = j - N - g.p;  // interior coordinates
  if (lap && zi >= 0 && zi < g.nz && xi >= 0 && xi < g.nx) lap[(b * g.nz + zi) * g.nx + xi] = L;
}

// u^{n+1} = 2 u - u_prev + V L (+ V f^n at the source), zeta updated in the PML, L stored on
// interior cells when `lap` (full strategy). Each thread takes R consecutive rows. Threads whose
// rows and stencils see no PML cell take a short path (no CPML coefficient is read; the z stencil
// of the R rows comes from one register column; L = Ax + Az, the per-cell path's value up to the
// sign of a zero).
// Register budget: 40 at spatial order <= 4 (6 blocks of 256 threads per SM; 48 at order 8), which
// the z-strip columns below need: capped at 32 they spill and lose their gain (run W3 of
// 2026-11-29, docs/benchmarks.md).
template <int N, int R>
__global__ void __launch_bounds__(BX * BY, N > 2 ? 5 : 6)
    k_main(Grid g, Tiling t, Weights w, const float* __restrict__ V, const float* __restrict__ u,
                       float* __restrict__ up, const float* __restrict__ psix, const float* __restrict__ psiz,
                       float* __restrict__ zxa, float* __restrict__ zza, const float* __restrict__ ax,
                       const float* __restrict__ bx, const float* __restrict__ az, const float* __restrict__ bz,
                       float* __restrict__ lap, const int64_t* __restrict__ src, const float* __restrict__ wavelet,
                       int nt, int n) {
  pdl_begin();
  const int j0 = t.ox + blockIdx.x * BX, i0 = t.oz + blockIdx.y * (BY * R), b = blockIdx.z;
  const int j = j0 + threadIdx.x, ib = i0 + threadIdx.y * R;
  const int lo = N + g.p;
  if (j < N || j >= g.nxp + N) return;
  // Blocks without an x-PML column: threads whose R rows all lie in one z strip (or all in the
  // interior, which includes every thread of an interior block) take the z stencils of u and
  // psi_z from register columns (warp-uniform test; same arithmetic as the per-cell path below).
  const bool xint = (j0 >= lo) && (j0 + BX <= lo + g.nx);  // block-uniform
  const bool top = ib >= N && ib + R <= lo, bot = ib >= lo + g.nz && ib + R <= g.nzp + N;
  const bool mid = ib >= lo && ib + R <= lo + g.nz;
  if (xint && (top || bot || mid)) {
    const int k0 = b * g.plane + ib * g.nxs + j;
    float c[R + 2 * N], pc[R + 2 * N];
    load_col<N, R>(c, u, k0, g.nxs);
    if (mid) {
#pragma unroll
      for (int r = 0; r < R; ++r) {
        const int k = k0 + r * g.nxs;
        const float L = d2<N>(u + k, 1, w, N, N) + d2_col<N, R>(c, r, w);
        main_finish<N>(g, b, ib + r, j, k, c[N + r], L, V, up, lap, src, wavelet, nt, n);
      }
      return;
    }
    const int q0 = g.kz(b, ib, j);  // rows ib - N .. ib + R - 1 + N lie in the same strip
    load_col<N, R>(pc, psiz, q0, g.nxs);
#pragma unroll
    for (int r = 0; r < R; ++r) {
      const int i = ib + r, k = k0 + r * g.nxs, q = q0 + r * g.nxs;
      const float a_z = az[i];
      const float Ax = d2<N>(u + k, 1, w, N, N);
      float Az = d2_col<N, R>(c, r, w), zz = 0.f;
      if (a_z != 0.f) {
        Az += d1_col<N, R>(pc, r, w);
        zz = bz[i] * zza[q] + a_z * Az;
        zza[q] = zz;
      }
      const float L = ((Ax + Az) + 0.f) + zz;
      main_finish<N>(g, b, i, j, k, c[N + r], L, V, up, lap, src, wavelet, nt, n);
    }
    return;
  }
#pragma unroll
  for (int r = 0; r < R; ++r) {
    const int i = ib + r;
    if (i < N || i >= g.nzp + N) continue;
    const int k = b * g.plane + i * g.nxs + j;
    const float a_x = ax[j], a_z = az[i];
    float Ax = d2<N>(u + k, 1, w, N, N);
    float Az = d2<N>(u + k, g.nxs, w, N, N);
    float zx = 0.f, zz = 0.f;
    if (a_x != 0.f) {
      const int q = g.kx(b, i, j);
      Ax += d1<N>(psix + q, 1, w, N, N);
      zx = bx[j] * zxa[q] + a_x * Ax;
      zxa[q] = zx;
    }
    if (a_z != 0.f) {
      const int q = g.kz(b, i, j);
      Az += d1<N>(psiz + q, g.nxs, w, N, N);
      zz = bz[i] * zza[q] + a_z * Az;
      zza[q] = zz;
    }
    const float L = ((Ax + Az) + zx) + zz;
    main_finish<N>(g, b, i, j, k, u[k], L, V, up, lap, src, wavelet, nt, n);
  }
}

// ------------------------------------------------------------------ backward kernels
// Item t of shot b: adjoint source of record[n] into mu^{n+1} (times V) for t < nrec, then
// ring(u^n) into the reconstruction frame ub (ring may be null).
template <int N>
__device__ __forceinline__ void adjsrc_ring(const Grid& g, int b, int t, const float* __restrict__ V,
                                            float* __restrict__ mu, const int64_t* __restrict__ rec,
                                            const float* __restrict__ grad_record, int nt, int nrec, int n,
                                            const float* __restrict__ ring, float* __restrict__ ub,
                                            float sign = 1.f) {
  if (t < nrec) {
    const int kr = sidx(rec[b * nrec + t], g);
    atomicAdd(&mu[b * g.plane + kr], sign * (V[kr] * grad_record[(static_cast<int64_t>(b) * nt + n) * nrec + t]));
    return;
  }
  if (!ring) return;
  const int q = t - nrec, C = 2 * N * (g.nz + g.nx);
  if (q >= C) return;
  const int hx = g.nx + 2 * N, hplane = (g.nz + 2 * N) * hx;
  int64_t r, c;
  ring_cell(q, N, g.nz, g.nx, N, &r, &c);
  ub[b * hplane + static_cast<int>(r) * hx + static_cast<int>(c)] = ring[b * C + q];
}

// adjsrc_ring for the chunk's last step, which the backward loop takes first; every other step
// gets them from the extra blocks of k_grad_p1 in the loop iteration before (the next step in
// time), which subtract the source from mu_prev instead (see Lazy)
template <int N>
__global__ void k_adjsrc_ring(Grid g, const float* __restrict__ V, float* __restrict__ mu,
                              const int64_t* __restrict__ rec, const float* __restrict__ grad_record, int nt,
                              int nrec, int n, const float* __restrict__ ring, float* __restrict__ ub) {
  pdl_begin();
  adjsrc_ring<N>(g, blockIdx.y, blockIdx.x * blockDim.x + threadIdx.x, V, mu, rec, grad_record, nt, nrec, n, ring, ub);
}

// Gradient dJ/dV += (mu / V)(L + f delta_src) at interior cell (zi, xi) of shot b (storage
// index k), and for the boundary strategy the reconstruction u^{n-1} = 2 u^n - u^{n+1} + V (L + f
// delta_src) into the frame ua (frame index kh, ubk = u^n there).
template <int N>
__device__ __forceinline__ void grad_finish(const Grid& g, int b, int i, int j, int k, int zi, int xi, int kh,
                                            float L, float ubk, bool boundary, const float* __restrict__ V,
                                            const float* __restrict__ lam, float* __restrict__ grad,
                                            float* __restrict__ ua, const int64_t* __restrict__ src,
                                            const float* __restrict__ wavelet, int nt, int n) {
  const float lk = lam[k], vk = V[i * g.nxs + j];  // lam holds mu = V lam
  float gsum = lk * L;
  float unew = 0.f;
  if (boundary) unew = (2.f * ubk + vk * L) - ua[kh];
  if ((i - N) * g.nxp + (j - N) == static_cast<int>(src[b])) {  // the source cell
    const float f = wavelet[b * nt + n];
    gsum += lk * f;
    if (boundary) unew += vk * f;
  }
  grad[(b * g.nz + zi) * g.nx + xi] += gsum / vk;
  if (boundary) ua[kh] = unew;
}

// Lazy pass 3. The backward does not rescale zbar and pbar after the adjoint update of step
// n + 1; k_grad_p1 of step n does it as it goes: a PML cell's carried zbar is
// b (zbar + mu^{n+2}), computed from the raw strip (zr) and mu^{n+2} (still in the mu_prev
// buffer, which k_adj_main overwrites only afterwards), for its neighbours' pass 1 and, by its
// own thread, into the second strip (zc) that k_adj_main reads; pbar is scaled by its own
// thread before the pass-1 update. The next step swaps the strips. The adjoint source of step
// n - 1 is subtracted from mu^{n+2} at the receivers (extra blocks, rows from `tyg`), so that
// k_adj_main's 2 mu^{n+1} - mu_prev leaves mu^n plus that source; the same blocks copy the
// ring of u^{n-1} into the frame ua. Receivers lie in the interior, where pass 1 reads no mu_prev.
struct Lazy {
  float* lp;                     // mu^{n+2} (B, nzs, nxs): read in the PML, source subtracted at receivers
  const float *bx, *bz;          // CPML decay (nxs), (nzs)
  const float *zxr, *zzr;        // raw zbar strips of step n + 1
  float *zxc, *zzc;              // carried zbar strips of step n (written here)
  int tyg;                       // first block row of the extra blocks
  const int64_t* rec;            // (B, R) receivers
  const float* grad_record;      // (B, nt, R)
  int nrec, n_prev;              // n_prev < 0: no extra work
  const float* ring_prev;        // (B, C) ring of u^{n-1}, or null
};

__device__ __forceinline__ float carry(float b, float z, float m) { return b * (z + m); }

// Gradient (+ reconstruction of u^{n-1}) on interior cells; adjoint pass 1 on PML cells. Each
// thread takes R consecutive rows; blocks wholly inside the interior read the z stencil of the
// frame from one register column.
// 32 registers at spatial order <= 4 (full occupancy; at 40 this kernel is slower, run W3), 40 at
// order 8 (32 would spill).
template <int N, int R>
__global__ void __launch_bounds__(BX * BY, N > 2 ? 6 : 8)
    k_grad_p1(Grid g, Tiling t, Weights w, bool boundary, const float* __restrict__ V,
                          const float* __restrict__ lam, float* __restrict__ px, float* __restrict__ pz,
                          Lazy z3, const float* __restrict__ ax,
                          const float* __restrict__ az, float* __restrict__ grad, float* __restrict__ ua,
                          const float* __restrict__ ub, const float* __restrict__ lap,
                          const int64_t* __restrict__ src, const float* __restrict__ wavelet, int nt, int n) {
  pdl_begin();
  if (static_cast<int>(blockIdx.y) >= z3.tyg) {  // extra blocks: source of step n - 1, ring of u^{n-1}
    const int e = ((blockIdx.y - z3.tyg) * gridDim.x + blockIdx.x) * (BX * BY) + threadIdx.y * BX + threadIdx.x;
    adjsrc_ring<N>(g, blockIdx.z, e, V, z3.lp, z3.rec, z3.grad_record, nt, z3.nrec, z3.n_prev, z3.ring_prev, ua,
                   -1.f);
    return;
  }
  const float* __restrict__ mp = z3.lp;
  const float* __restrict__ bx = z3.bx;
  const float* __restrict__ bz = z3.bz;
  const float* __restrict__ zx = z3.zxr;
  const float* __restrict__ zz = z3.zzr;
  const int j0 = t.ox + blockIdx.x * BX, i0 = t.oz + blockIdx.y * (BY * R), b = blockIdx.z;
  const int j = j0 + threadIdx.x, ib = i0 + threadIdx.y * R;
  const int lo = N + g.p, hx = g.nx + 2 * N;
  const bool inner = (j0 >= lo) && (j0 + BX <= lo + g.nx) && (i0 >= lo) && (i0 + BY * R <= lo + g.nz);  // block-uniform
  if (inner && boundary) {
    const int xi = j - lo, zb = ib - lo;
    const int kh0 = b * (g.nz + 2 * N) * hx + (zb + N) * hx + (xi + N);
    float c[R + 2 * N];
    load_col<N, R>(c, ub, kh0, hx);
#pragma unroll
    for (int r = 0; r < R; ++r) {
      const int kh = kh0 + r * hx;
      const float L = (d2<N>(ub + kh, 1, w, N, N) + d2_col<N, R>(c, r, w)) + 0.f;
      grad_finish<N>(g, b, ib + r, j, b * g.plane + (ib + r) * g.nxs + j, zb + r, xi, kh, L, c[N + r], true, V, lam,
                     grad, ua, src, wavelet, nt, n);
    }
    return;
  }
  if (j < N || j >= g.nxp + N) return;
  // Blocks without an x-PML column: threads whose R rows all lie in one z strip run pass 1 along
  // z from register columns of mu, zbar_z and a_z (warp-uniform test; same arithmetic as below).
  const bool xint = (j0 >= lo) && (j0 + BX <= lo + g.nx);  // block-uniform
  if (xint && ((ib >= N && ib + R <= lo) || (ib >= lo + g.nz && ib + R <= g.nzp + N))) {
    const int k0 = b * g.plane + ib * g.nxs + j, q0 = g.kz(b, ib, j);
    float A[R + 2 * N], Z[R];  // mx Abar_z of rows ib - N .. ib + R - 1 + N; carried zbar of the R rows
#pragma unroll
    for (int r = 0; r < R + 2 * N; ++r) {
      const int row = ib + r - N, o = (r - N) * g.nxs;
      const float a = az[row];
      const float zc = carry(bz[row], zz[q0 + o], mp[k0 + o]);
      if (r >= N && r < N + R) Z[r - N] = zc;
      const float v = abar(lam[k0 + o], a, zc);
      A[r] = a != 0.f ? v : 0.f;
    }
#pragma unroll
    for (int r = 0; r < R; ++r) {
      if (az[ib + r] == 0.f) continue;
      float acc = 0.f;
#pragma unroll
      for (int q = 1; q <= N; ++q) acc += w.c1[q] * (A[N + r + q] - A[N + r - q]);
      const int q = q0 + r * g.nxs;
      pz[q] = __fmul_rn(bz[ib + r], pz[q]) - acc;
      z3.zzc[q] = Z[r];
    }
    return;
  }
#pragma unroll
  for (int r = 0; r < R; ++r) {
    const int i = ib + r;
    if (i < N || i >= g.nzp + N) continue;
    const int k = b * g.plane + i * g.nxs + j;
    const int zi = i - lo, xi = j - lo;
    if (zi >= 0 && zi < g.nz && xi >= 0 && xi < g.nx) {
      const int kh = b * (g.nz + 2 * N) * hx + (zi + N) * hx + (xi + N);
      const float L = boundary ? (d2<N>(ub + kh, 1, w, N, N) + d2<N>(ub + kh, hx, w, N, N)) + 0.f
                               : lap[(b * g.nz + zi) * g.nx + xi];
      grad_finish<N>(g, b, i, j, k, zi, xi, kh, L, boundary ? ub[kh] : 0.f, boundary, V, lam, grad, ua, src, wavelet,
                     nt, n);
      continue;
    }
    const float a_x = ax[j], a_z = az[i];
    if (a_x != 0.f) {
      const int kx = g.kx(b, i, j);  // neighbours with ax != 0 lie in the same strip
      float acc = 0.f;
#pragma unroll
      for (int q = 1; q <= N; ++q) {
        const float hi =
            ax[j + q] != 0.f ? abar(lam[k + q], ax[j + q], carry(bx[j + q], zx[kx + q], mp[k + q])) : 0.f;
        const float lo_ =
            ax[j - q] != 0.f ? abar(lam[k - q], ax[j - q], carry(bx[j - q], zx[kx - q], mp[k - q])) : 0.f;
        acc += w.c1[q] * (hi - lo_);
      }
      px[kx] = __fmul_rn(bx[j], px[kx]) - acc;
      z3.zxc[kx] = carry(bx[j], zx[kx], mp[k]);
    }
    if (a_z != 0.f) {
      const int kz = g.kz(b, i, j);
      float acc = 0.f;
      const int s = g.nxs;
#pragma unroll
      for (int q = 1; q <= N; ++q) {
        const float hi = az[i + q] != 0.f
                             ? abar(lam[k + q * s], az[i + q], carry(bz[i + q], zz[kz + q * s], mp[k + q * s]))
                             : 0.f;
        const float lo_ = az[i - q] != 0.f
                              ? abar(lam[k - q * s], az[i - q], carry(bz[i - q], zz[kz - q * s], mp[k - q * s]))
                              : 0.f;
        acc += w.c1[q] * (hi - lo_);
      }
      pz[kz] = __fmul_rn(bz[i], pz[kz]) - acc;
      z3.zzc[kz] = carry(bz[i], zz[kz], mp[k]);
    }
  }
}

// Adjoint pass 2 on every cell, R consecutive rows per thread. Along an axis whose stencil reaches
// no PML cell from this block (block-uniform test), Abar = mu and the pbar term vanishes: that
// second derivative is read straight from global memory, as in the forward. Along the other axes
// the block stages shared-memory tiles: Abar_x and a_x pbar_x (x halo), Abar_z and a_z pbar_z (z
// halo). Blocks needing neither (the interior) do the forward's leapfrog on mu, with the z stencil
// of the R rows from one register column; the top and bottom strips stage only the z tiles, the
// side strips only the x tiles.
template <int N, int R>
__global__ void __launch_bounds__(BX * BY) k_adj_main(Grid g, Tiling t, Weights w, const float* __restrict__ V,
                                                      const float* __restrict__ lam, float* __restrict__ lp,
                                                      const float* __restrict__ px, const float* __restrict__ pz,
                                                      const float* __restrict__ zx, const float* __restrict__ zz,
                                                      const float* __restrict__ ax, const float* __restrict__ az) {
  constexpr int TY = BY * R;  // rows of the block
  __shared__ float sAx[TY][BX + 2 * N], sAz[TY + 2 * N][BX], sPx[TY][BX + 2 * N], sPz[TY + 2 * N][BX];
  pdl_begin();
  const int tx = threadIdx.x, ty = threadIdx.y * R, tid = threadIdx.y * BX + tx, b = blockIdx.z;
  const int j0 = t.ox + blockIdx.x * BX, i0 = t.oz + blockIdx.y * TY;  // storage coords of the tile origin
  const int xlo = g.p + N, xhi = g.p + N + g.nx, zlo = g.p + N, zhi = g.p + N + g.nz;  // interior range
  const bool need_x = !((j0 - N >= xlo) && (j0 + BX - 1 + N < xhi));  // x tiles touch a PML column
  const bool need_z = !((i0 - N >= zlo) && (i0 + TY - 1 + N < zhi));  // z tiles touch a PML row
  if (!need_x && !need_z) {  // the stencil stays inside the interior
    const int i = i0 + ty, j = j0 + tx, k0 = b * g.plane + i * g.nxs + j;
    float c[R + 2 * N];
    load_col<N, R>(c, lam, k0, g.nxs);
#pragma unroll
    for (int r = 0; r < R; ++r) {
      const int k = k0 + r * g.nxs;
      const float S = d2<N>(lam + k, 1, w, N, N) + d2_col<N, R>(c, r, w);
      lp[k] = (2.f * c[N + r] - lp[k]) + V[(i + r) * g.nxs + j] * S;
    }
    return;
  }
  const float* lamb = lam + b * g.plane;
  // x-halo tiles
  for (int e = tid; need_x && e < TY * (BX + 2 * N); e += BX * BY) {
    const int r = e / (BX + 2 * N), c = e % (BX + 2 * N);
    const int i = i0 + r, j = j0 - N + c;
    float A = 0.f, P = 0.f;
    if (i >= 0 && j >= 0 && i < g.nzs && j < g.nxs) {
      const float gk = lamb[i * g.nxs + j];
      const float a = ax[j];
      if (a != 0.f) {
        const int q = g.kx(b, i, j);
        A = abar(gk, a, zx[q]);
        P = a * px[q];
      } else {
        A = gk;
      }
    }
    sAx[r][c] = A;
    sPx[r][c] = P;
  }
  // z-halo tiles
  for (int e = tid; need_z && e < (TY + 2 * N) * BX; e += BX * BY) {
    const int r = e / BX, c = e % BX;
    const int i = i0 - N + r, j = j0 + c;
    float A = 0.f, P = 0.f;
    if (i >= 0 && j >= 0 && i < g.nzs && j < g.nxs) {
      const float gk = lamb[i * g.nxs + j];
      const float a = az[i];
      if (a != 0.f) {
        const int q = g.kz(b, i, j);
        A = abar(gk, a, zz[q]);
        P = a * pz[q];
      } else {
        A = gk;
      }
    }
    sAz[r][c] = A;
    sPz[r][c] = P;
  }
  __syncthreads();
  const int j = j0 + tx;
  if (j < N || j >= g.nxp + N) return;
#pragma unroll
  for (int r = 0; r < R; ++r) {
    const int i = i0 + ty + r, tr = ty + r;
    if (i < N || i >= g.nzp + N) continue;
    const int k = b * g.plane + i * g.nxs + j;
    float sx, sz, qx = 0.f, qz = 0.f;
    if (need_x) {
      sx = w.c2[0] * sAx[tr][tx + N];
#pragma unroll
      for (int q = 1; q <= N; ++q) {
        sx += w.c2[q] * (sAx[tr][tx + N + q] + sAx[tr][tx + N - q]);
        qx += w.c1[q] * (sPx[tr][tx + N + q] - sPx[tr][tx + N - q]);
      }
    } else {  // the x range is interior: in the grid, Abar_x = mu, pbar_x term 0
      sx = d2<N>(lam + k, 1, w, N, N);
    }
    if (need_z) {
      sz = w.c2[0] * sAz[tr + N][tx];
#pragma unroll
      for (int q = 1; q <= N; ++q) {
        sz += w.c2[q] * (sAz[tr + N + q][tx] + sAz[tr + N - q][tx]);
        qz += w.c1[q] * (sPz[tr + N + q][tx] - sPz[tr + N - q][tx]);
      }
    } else {
      sz = d2<N>(lam + k, g.nxs, w, N, N);
    }
    lp[k] = (2.f * lam[k] - lp[k]) + V[i * g.nxs + j] * ((sx + sz) - (qx + qz));
  }
}

inline void check_launch(cudaError_t err) {
  if (err != cudaSuccess) throw std::runtime_error(std::string("fwi: CUDA launch failed: ") + cudaGetErrorString(err));
}

// Whether launches may use programmatic dependent launch: only if `kernel` (like every kernel
// of this file) was compiled for a virtual architecture >= 9.0, so that pdl_begin() really
// waits (a build for older architectures JIT-compiled on an sm_90 device has no wait), and
// unless FWI_PDL=0.
template <typename Kernel>
bool pdl_enabled(Kernel* kernel) {
  const char* env = std::getenv("FWI_PDL");
  if (env && std::string(env) == "0") return false;
  cudaFuncAttributes fa{};
  if (cudaFuncGetAttributes(&fa, kernel) != cudaSuccess) {
    (void)cudaGetLastError();  // clear it: PDL is an optimisation only
    return false;
  }
  return fa.ptxVersion >= 90;
}

// One kernel launch on `st`, with the PDL attribute when `pdl`.
struct Launcher {
  cudaStream_t st;
  bool pdl;
  template <typename... P, typename... A>
  void operator()(void (*kernel)(P...), dim3 grid, dim3 block, A&&... args) const {
    cudaLaunchConfig_t cfg{};
    cfg.gridDim = grid;
    cfg.blockDim = block;
    cfg.dynamicSmemBytes = 0;
    cfg.stream = st;
    cudaLaunchAttribute attr[1];
    attr[0].id = cudaLaunchAttributeProgrammaticStreamSerialization;
    attr[0].val.programmaticStreamSerializationAllowed = 1;
    cfg.attrs = attr;
    cfg.numAttrs = pdl ? 1 : 0;
    check_launch(cudaLaunchKernelEx(&cfg, kernel, std::forward<A>(args)...));
  }
};

template <int N, int R>
void forward_impl(const StepArgs& a, cudaStream_t st) {
  const Grid g = make_grid(a.d, N);
  const Tiling tl = make_tiling(g, N + g.p, R);
  const dim3 block(BX, BY), grid = tile_grid(g, tl, R);
  const int pblocks = (pml_cells(g) + 255) / 256;
  const int64_t C = 2 * N * (a.d.nz + a.d.nx);
  const int nt = static_cast<int>(a.nt), nrec = static_cast<int>(a.nrec);
  float* u = a.u;
  float* up = a.uprev;
  const Launcher launch{st, pdl_enabled(k_main<N, R>)};
  // Per step: k_psi (+ the previous step's record and this step's ring), k_main (+ the source).
  // The record of the chunk's last step is taken after the loop.
  auto extra_blocks = [&](int64_t items) { return static_cast<int>((items + 255) / 256); };
  for (int64_t s = 0; s < a.nsteps; ++s) {
    const int n = static_cast<int>(a.n0 + s);
    float* ring = a.ring ? a.ring + s * g.B * C : nullptr;
    const int nb = pblocks + extra_blocks((s > 0 ? a.nrec : 0) + (ring ? C : 0));
    if (nb > 0)
      launch(k_psi<N>, dim3(nb, g.B), dim3(256), g, a.w, u, a.psix, a.psiz, a.ax, a.bx, a.az, a.bz, pblocks, a.rec,
             a.record, nt, nrec, s > 0 ? n - 1 : -1, ring);
    float* lap = a.lap ? a.lap + s * g.B * a.d.nz * a.d.nx : nullptr;
    launch(k_main<N, R>, grid, block, g, tl, a.w, a.v2dt2, u, up, a.psix, a.psiz, a.zx, a.zz, a.ax, a.bx, a.az, a.bz,
           lap, a.src, a.wavelet, nt, n);
    std::swap(u, up);
  }
  if (a.nsteps > 0 && a.nrec > 0)
    launch(k_psi<N>, dim3(extra_blocks(a.nrec), g.B), dim3(256), g, a.w, u, a.psix, a.psiz, a.ax, a.bx, a.az, a.bz,
           0, a.rec, a.record, nt, nrec, static_cast<int>(a.n0 + a.nsteps - 1), static_cast<float*>(nullptr));
}

template <int N, int R>
void backward_impl(const AdjArgs& a, cudaStream_t st) {
  const Grid g = make_grid(a.d, N);
  const Tiling tg = make_tiling(g, N + g.p, R), ta = make_tiling(g, 2 * N + g.p, R);
  const dim3 block(BX, BY), ggrid = tile_grid(g, tg, R), agrid = tile_grid(g, ta, R);
  const int64_t C = 2 * N * (a.d.nz + a.d.nx);
  const int nt = static_cast<int>(a.nt), nrec = static_cast<int>(a.nrec);
  float* lam = a.lam;
  float* lp = a.lamprev;
  float* ua = a.ua;
  float* ub = a.ub;
  const int64_t small = a.nrec + (a.boundary ? C : 0);
  const int sblocks = static_cast<int>((small + 255) / 256);
  const Launcher launch{st, pdl_enabled(k_adj_main<N, R>)};
  auto ring_at = [&](int64_t s) -> const float* { return a.boundary ? a.ring + s * g.B * C : nullptr; };
  // Per step: k_grad_p1 (+ pass 3 of the step after, lazily; + in extra block rows the adjoint
  // source and ring of the step before) and k_adj_main. The chunk's first step (its last in
  // time) gets its source and ring from k_adjsrc_ring before the loop.
  if (a.nsteps > 0 && sblocks > 0)
    launch(k_adjsrc_ring<N>, dim3(sblocks, g.B), dim3(256), g, a.v2dt2, lam, a.rec, a.grad_record, nt, nrec,
           static_cast<int>(a.n0 + a.nsteps - 1), ring_at(a.nsteps - 1), ub);
  const int xrows = static_cast<int>((sblocks + ggrid.x - 1) / ggrid.x);  // extra block rows of k_grad_p1
  float *zxr = a.zx, *zzr = a.zz, *zxc = a.zx2, *zzc = a.zz2;  // raw and carried zbar strips
  for (int64_t s = a.nsteps - 1; s >= 0; --s) {
    const int n = static_cast<int>(a.n0 + s);
    const float* lap = a.lap ? a.lap + s * g.B * a.d.nz * a.d.nx : nullptr;
    const bool more = s > 0 && sblocks > 0;
    const Lazy z3{lp, a.bx, a.bz, zxr, zzr, zxc, zzc, static_cast<int>(ggrid.y), a.rec, a.grad_record, nrec,
                  more ? n - 1 : -1, more ? ring_at(s - 1) : nullptr};
    const dim3 gg(ggrid.x, ggrid.y + (more ? xrows : 0), ggrid.z);
    launch(k_grad_p1<N, R>, gg, block, g, tg, a.w, a.boundary, a.v2dt2, lam, a.px, a.pz, z3, a.ax, a.az, a.grad, ua,
           ub, lap, a.src, a.wavelet, nt, n);
    launch(k_adj_main<N, R>, agrid, block, g, ta, a.w, a.v2dt2, lam, lp, a.px, a.pz, zxc, zzc, a.ax, a.az);
    std::swap(lam, lp);
    if (a.boundary) std::swap(ua, ub);
    std::swap(zxr, zxc);
    std::swap(zzr, zzc);
  }
  if (zxr != a.zx) {  // odd step count: the raw strips end in the scratch buffers
    const size_t w2 = static_cast<size_t>(2 * (g.p + 2 * N));
    check_launch(cudaMemcpyAsync(a.zx, zxr, sizeof(float) * g.B * g.nzs * w2, cudaMemcpyDeviceToDevice, st));
    check_launch(cudaMemcpyAsync(a.zz, zzr, sizeof(float) * g.B * w2 * g.nxs, cudaMemcpyDeviceToDevice, st));
  }
}

}  // namespace

void forward_cuda(const StepArgs& a, void* stream) {
  auto st = static_cast<cudaStream_t>(stream);
  switch (a.n_half) {
    case 1: forward_impl<1, kRows>(a, st); break;
    case 2: forward_impl<2, kRows>(a, st); break;
    case 4: forward_impl<4, kRows>(a, st); break;
    default: throw std::runtime_error("fwi: unsupported stencil half-width");
  }
}

void backward_cuda(const AdjArgs& a, void* stream) {
  auto st = static_cast<cudaStream_t>(stream);
  switch (a.n_half) {
    case 1: backward_impl<1, kRows>(a, st); break;
    case 2: backward_impl<2, kRows>(a, st); break;
    case 4: backward_impl<4, kRows>(a, st); break;
    default: throw std::runtime_error("fwi: unsupported stencil half-width");
  }
}

}  // namespace fwi
