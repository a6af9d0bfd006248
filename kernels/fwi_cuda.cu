// CUDA implementation of the compiled propagator's ops (see fwi_common.h for the math and
// fwi_cpu.cpp for the same algorithm on the CPU). All launches go on the stream the op wrapper
// passes (torch's current stream). This file needs only the CUDA toolkit (no torch headers), so
// CI can compile-check it without a GPU.
//
// * Shots in lanes. On the GPU every per-shot field is stored with four shots interleaved:
//   (Q, rows, cols, 4) with Q = ceil(B / 4) (fwi_launch.h checks the shapes), one float4 per cell.
//   A thread updates one cell for the four shots of its quad (grid.z = Q): one load instruction
//   brings a neighbour for four shots, and the per-cell work (index arithmetic, the CPML strip
//   mapping and tests, the coefficients, V) is shared by four updates. Measured on the seed
//   problem (docs/benchmarks.md, run W17): a forward step 15.2 -> 10.9 us against one plane per
//   shot. Lanes of shots b >= B (the last quad of a batch that is not a multiple of 4) get no
//   source, no adjoint source and no ring, so they stay zero; records, rings and the saved
//   laplacian keep their per-shot layouts (B, ...).
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
// * Early interior blocks: the interior blocks of k_main and k_adj_main touch nothing their
//   predecessor (k_psi, k_grad_p1) writes or reads, so they skip the wait and run beside it
//   (receiver tiles of k_adj_main excepted; see k_main). FWI_EARLY=0 makes every block wait.
#include <cuda_runtime.h>

#include <cstdlib>
#include <utility>

#include "fwi_common.h"
#include <stdexcept>
#include <string>

namespace fwi {
namespace {

// Threads (= cells) of the 2D kernels' blocks. Build variants with FWI_CUDA_DEFINES="-DFWI_BX=..
// -DFWI_BY=.." (backend.py) measure other shapes; run X2 (docs/benchmarks.md): 16 x 16, 32 x 16
// and 64 x 4 were 3-7 % slower than 32 x 8 on the seed problem.
#ifndef FWI_BX
#define FWI_BX 32
#endif
#ifndef FWI_BY
#define FWI_BY 8
#endif
constexpr int BX = FWI_BX, BY = FWI_BY;
static_assert(BX * BY % 32 == 0 && BX * BY <= 1024, "FWI_BX * FWI_BY must be a multiple of 32, at most 1024");
constexpr int kLanes = 4;       // shots per float4
// Minimum resident blocks per SM asked of the compiler for the 2D kernels (0: none, the compiler's
// choice), which caps their registers; build variants with FWI_CUDA_DEFINES (backend.py) to measure
// others. Note that __launch_bounds__(256, 1) is not "none": it lets k_grad_p1 take 88 registers.
#ifndef FWI_MINB_MAIN
#define FWI_MINB_MAIN 0
#endif
#ifndef FWI_MINB_GRAD
#define FWI_MINB_GRAD 0
#endif
#ifndef FWI_MINB_ADJ
#define FWI_MINB_ADJ 0
#endif
#define FWI_BOUNDS_0 __launch_bounds__(BX * BY)
#define FWI_BOUNDS_4 __launch_bounds__(BX * BY, 4)
#define FWI_BOUNDS_5 __launch_bounds__(BX * BY, 5)
#define FWI_BOUNDS_6 __launch_bounds__(BX * BY, 6)
#define FWI_BOUNDS_7 __launch_bounds__(BX * BY, 7)
#define FWI_BOUNDS_8 __launch_bounds__(BX * BY, 8)
#define FWI_CAT_(a, b) a##b
#define FWI_BOUNDS(minb) FWI_CAT_(FWI_BOUNDS_, minb)
#define FWI_MINB_OK(v) ((v) == 0 || ((v) >= 4 && (v) <= 8))
#if !FWI_MINB_OK(FWI_MINB_MAIN) || !FWI_MINB_OK(FWI_MINB_GRAD) || !FWI_MINB_OK(FWI_MINB_ADJ)
#error "FWI_MINB_MAIN / FWI_MINB_GRAD / FWI_MINB_ADJ must be 0 (no bound) or 4..8"
#endif

// Programmatic dependent launch (see the file comment); no-ops before sm_90.
__device__ __forceinline__ void pdl_begin() {
#if defined(__CUDA_ARCH__) && __CUDA_ARCH__ >= 900
  asm volatile("griddepcontrol.wait;" ::: "memory");
  asm volatile("griddepcontrol.launch_dependents;" ::: "memory");
#endif
}
// pdl_begin for a block that may skip the wait: one that reads nothing its predecessor kernel
// writes, and writes nothing the predecessor reads (see "Early interior blocks" at k_main).
__device__ __forceinline__ void pdl_begin_unless(bool skip_wait) {
#if defined(__CUDA_ARCH__) && __CUDA_ARCH__ >= 900
  if (!skip_wait) asm volatile("griddepcontrol.wait;" ::: "memory");
  asm volatile("griddepcontrol.launch_dependents;" ::: "memory");
#endif
}

// ------------------------------------------------------------------ four shots per float4
__device__ __forceinline__ float4 operator+(float4 a, float4 b) { return {a.x + b.x, a.y + b.y, a.z + b.z, a.w + b.w}; }
__device__ __forceinline__ float4 operator-(float4 a, float4 b) { return {a.x - b.x, a.y - b.y, a.z - b.z, a.w - b.w}; }
__device__ __forceinline__ float4 operator*(float s, float4 a) { return {s * a.x, s * a.y, s * a.z, s * a.w}; }
__device__ __forceinline__ float4 operator*(float4 a, float4 b) { return {a.x * b.x, a.y * b.y, a.z * b.z, a.w * b.w}; }
__device__ __forceinline__ float4 zero4() { return {0.f, 0.f, 0.f, 0.f}; }
__device__ __forceinline__ float4 mul_rn(float s, float4 a) {
  return {__fmul_rn(s, a.x), __fmul_rn(s, a.y), __fmul_rn(s, a.z), __fmul_rn(s, a.w)};
}
// Lane l of v; l must be a compile-time constant after unrolling (else v goes to local memory).
__device__ __forceinline__ float& lane(float4& v, int l) { return l == 0 ? v.x : l == 1 ? v.y : l == 2 ? v.z : v.w; }
__device__ __forceinline__ float lane(const float4& v, int l) { return l == 0 ? v.x : l == 1 ? v.y : l == 2 ? v.z : v.w; }

// Sizes in 32-bit ints (the host checks 4 Q nzs nxs < 2^31): 64-bit index arithmetic costs
// several instructions per operation on the GPU. Flat indices below count float4 cells.
struct Grid {
  int B, Q, nz, nx, p, nzp, nxp, nzs, nxs, plane, n, w;  // B shots in Q quads; w: CPML strip width p + 2N
  // flat index of (quad q, i, j) in the x-strip and z-strip arrays (compact layout, fwi_common.h)
  __device__ __forceinline__ int kx(int q, int i, int j) const {
    return (q * nzs + i) * (2 * w) + (j < w ? j : j - (nxs - 2 * w));
  }
  __device__ __forceinline__ int kz(int q, int i, int j) const {
    return (q * 2 * w + (i < w ? i : i - (nzs - 2 * w))) * nxs + j;
  }
  __device__ __forceinline__ bool live(int q, int l) const { return q * kLanes + l < B; }  // a real shot
};

inline Grid make_grid(const Dims& d, int n) {
  Grid g{static_cast<int>(d.b), static_cast<int>((d.b + kLanes - 1) / kLanes), static_cast<int>(d.nz),
         static_cast<int>(d.nx), static_cast<int>(d.p), static_cast<int>(d.nzp), static_cast<int>(d.nxp),
         static_cast<int>(d.nzp + 2 * n), static_cast<int>(d.nxp + 2 * n), 0, n, static_cast<int>(d.p + 2 * n)};
  g.plane = g.nzs * g.nxs;
  if (static_cast<int64_t>(g.plane) * g.Q * kLanes >= (int64_t{1} << 31))
    throw std::runtime_error(
        "fwi: grid too large for 32-bit indexing on the GPU; use fewer shots per call (FWI_SHOT_GROUP=N steps at "
        "most N shots at a time)");
  return g;
}

// Tiling of the storage grid for the 2D kernels: blocks of BX x BY cells with the tile origin
// (ox, oz) shifted so that column/row `edge` starts a tile (the first interior one, or the first
// whose stencil stays interior): more tiles then fall wholly inside the interior and take the
// short paths. Cells before N (the halo) are skipped.
struct Tiling {
  int ox, oz;
};

inline int tile_origin(int edge, int n, int size) { return edge - size * ((edge - n + size - 1) / size); }

inline Tiling make_tiling(const Grid& g, int edge) {
  return Tiling{tile_origin(edge, g.n, BX), tile_origin(edge, g.n, BY)};
}

inline dim3 tile_grid(const Grid& g, const Tiling& t) {
  return dim3((g.nxp + g.n - t.ox + BX - 1) / BX, (g.nzp + g.n - t.oz + BY - 1) / BY, g.Q);
}

// The order for tiling `t`: `inner(j0, i0)` says whether the tile at storage origin (j0, i0) is
// an interior one; it must hold on a rectangle of tiles (it does: separate tests in x and z).
template <class InnerX, class InnerZ>
TileOrder make_order(const Grid& g, const Tiling& t, InnerX inner_x, InnerZ inner_z) {
  const dim3 tg = tile_grid(g, t);
  TileOrder o{static_cast<int>(tg.x), static_cast<int>(tg.y), 0, 0, 0, 0, 1};
  for (int tx = 0; tx < o.TX; ++tx)
    if (inner_x(t.ox + tx * BX)) {
      if (o.nIx == 0) o.ix0 = tx;
      ++o.nIx;
    }
  for (int ty = 0; ty < o.TY; ++ty)
    if (inner_z(t.oz + ty * BY)) {
      if (o.nIy == 0) o.iy0 = ty;
      ++o.nIy;
    }
  if (o.nIx == 0 || o.nIy == 0) o.ix0 = o.nIx = o.iy0 = o.nIy = 0;
  const char* env = std::getenv("FWI_TILE_ORDER");  // "rows": row-major, as before (to compare; S1)
  if (env && std::string(env) == "rows") o.first = 0;
  return o;
}

__device__ __forceinline__ int sidx(int64_t padded_flat, const Grid& g) {
  const int f = static_cast<int>(padded_flat);
  return (f / g.nxp + g.n) * g.nxs + (f % g.nxp + g.n);
}

// Number of PML cells of one plane and the (row, col) storage coordinates of PML cell t:
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

// First and second derivatives along a line of stride s (no bounds: the storage grid has a halo),
// in the summation order of d1 / d2 (fwi_common.h).
template <int N>
__device__ __forceinline__ float4 d1v(const float4* __restrict__ f, int s, const Weights& w) {
  float4 acc = zero4();
#pragma unroll
  for (int k = 1; k <= N; ++k) acc = acc + w.c1[k] * (f[k * s] - f[-k * s]);
  return acc;
}

template <int N>
__device__ __forceinline__ float4 d2v(const float4* __restrict__ f, int s, const Weights& w) {
  float4 acc = w.c2[0] * f[0];
#pragma unroll
  for (int k = 1; k <= N; ++k) acc = acc + w.c2[k] * (f[k * s] + f[-k * s]);
  return acc;
}

// ------------------------------------------------------------------ forward kernels
// psi in the PML strips: psi = b psi + a D u (reads u at neighbours, psi locally), in the
// first `pblocks` blocks of 256 threads (one PML cell of quad blockIdx.y each). The blocks after
// them read the same u = u^n (source already added) for two small copies: first the previous
// step's record, record[n-1] = u[rec] (`nrec_step` = n - 1, or -1 for none), then this step's
// boundary ring (ring null for none).
template <int N>
__global__ void k_psi(Grid g, Weights w, const float4* __restrict__ u, float4* __restrict__ psix,
                      float4* __restrict__ psiz, const float* __restrict__ ax, const float* __restrict__ bx,
                      const float* __restrict__ az, const float* __restrict__ bz, int pblocks,
                      const int64_t* __restrict__ rec, float* __restrict__ record, int nt, int nrec, int nrec_step,
                      float* __restrict__ ring) {
  pdl_begin();
  const int q = blockIdx.y;
  if (static_cast<int>(blockIdx.x) >= pblocks) {
    int e = (blockIdx.x - pblocks) * blockDim.x + threadIdx.x;
    const int nr = nrec_step >= 0 ? nrec : 0;
    if (e < nr) {  // receivers differ per shot: one float of each lane's cell
      const float* uq = reinterpret_cast<const float*>(u + q * g.plane);
#pragma unroll
      for (int l = 0; l < kLanes; ++l) {
        const int b = q * kLanes + l;
        if (g.live(q, l))
          record[(static_cast<int64_t>(b) * nt + nrec_step) * nrec + e] = uq[sidx(rec[b * nrec + e], g) * kLanes + l];
      }
      return;
    }
    e -= nr;
    const int C = 2 * N * (g.nz + g.nx);
    if (ring && e < C) {
      int64_t r, c;
      ring_cell(e, N, g.nz, g.nx, N + g.p, &r, &c);
      float4 v = u[q * g.plane + static_cast<int>(r) * g.nxs + static_cast<int>(c)];
#pragma unroll
      for (int l = 0; l < kLanes; ++l)
        if (g.live(q, l)) ring[(q * kLanes + l) * C + e] = lane(v, l);
    }
    return;
  }
  const int t = blockIdx.x * blockDim.x + threadIdx.x;
  if (t >= pml_cells(g)) return;
  int i, j;
  pml_cell(t, g, &i, &j);
  const int k = q * g.plane + i * g.nxs + j;
  const float a_x = ax[j], a_z = az[i];
  if (a_x != 0.f) {
    const int p = g.kx(q, i, j);
    psix[p] = bx[j] * psix[p] + a_x * d1v<N>(u + k, 1, w);
  }
  if (a_z != 0.f) {
    const int p = g.kz(q, i, j);
    psiz[p] = bz[i] * psiz[p] + a_z * d1v<N>(u + k, g.nxs, w);
  }
}

// u^{n+1} = 2 u - u_prev + V L (+ V f^n at each lane's source), zeta updated in the PML, L stored
// on interior cells when `lap` (full strategy, per-shot layout (B, nz, nx)). One cell of quad
// blockIdx.z per thread; blocks whose cells and stencils see no PML cell read no CPML coefficient
// (L = Ax + Az, the per-cell path's value up to the sign of a zero).
template <int N>
__global__ void FWI_BOUNDS(FWI_MINB_MAIN)
    k_main(Grid g, Tiling t, Weights w, const float* __restrict__ V, const float4* __restrict__ u,
           float4* __restrict__ up, const float4* __restrict__ psix, const float4* __restrict__ psiz,
           float4* __restrict__ zxa, float4* __restrict__ zza, const float* __restrict__ ax,
           const float* __restrict__ bx, const float* __restrict__ az, const float* __restrict__ bz,
           float* __restrict__ lap, const int64_t* __restrict__ src, const float* __restrict__ wavelet, int nt,
           int n, int early, TileOrder order) {
  int tx_, ty_, q;
  order.tile(g.Q, blockIdx.x, &tx_, &ty_, &q);
  const int j0 = t.ox + tx_ * BX, i0 = t.oz + ty_ * BY;
  const int lo = N + g.p;
  const bool inner = (j0 >= lo) && (j0 + BX <= lo + g.nx) && (i0 >= lo) && (i0 + BY <= lo + g.nz);  // block-uniform
  // Early interior blocks (`early`): the predecessor is this step's k_psi, which writes only psi
  // (and, in spare blocks, the record and ring from u^n); an interior block reads u^n, u^{n-1}, V
  // and the wavelet, none of which k_psi writes, and writes u^{n+1} (the u^{n-1} buffer) and lap,
  // which k_psi does not read. u^n itself was complete before k_psi's blocks passed their own wait,
  // and this grid starts only after all of them did. So interior blocks skip the wait and run
  // beside k_psi; PML blocks wait for psi.
  pdl_begin_unless(early && inner);
  const int j = j0 + threadIdx.x, i = i0 + threadIdx.y;
  if (j < N || j >= g.nxp + N || i < N || i >= g.nzp + N) return;
  const int cell = i * g.nxs + j, k = q * g.plane + cell;
  float4 L;
  if (inner) {
    L = d2v<N>(u + k, 1, w) + d2v<N>(u + k, g.nxs, w);
  } else {
    const float a_x = ax[j], a_z = az[i];
    float4 Ax = d2v<N>(u + k, 1, w), Az = d2v<N>(u + k, g.nxs, w);
    float4 zx = zero4(), zz = zero4();
    if (a_x != 0.f) {
      const int p = g.kx(q, i, j);
      Ax = Ax + d1v<N>(psix + p, 1, w);
      zx = bx[j] * zxa[p] + a_x * Ax;
      zxa[p] = zx;
    }
    if (a_z != 0.f) {
      const int p = g.kz(q, i, j);
      Az = Az + d1v<N>(psiz + p, g.nxs, w);
      zz = bz[i] * zza[p] + a_z * Az;
      zza[p] = zz;
    }
    L = ((Ax + Az) + zx) + zz;
  }
  const float vk = V[cell];
  float4 unew = (2.f * u[k] - up[k]) + vk * L;
  const int flat = (i - N) * g.nxp + (j - N);
#pragma unroll
  for (int l = 0; l < kLanes; ++l) {
    const int b = q * kLanes + l;
    if (g.live(q, l) && flat == static_cast<int>(src[b])) lane(unew, l) += vk * wavelet[b * nt + n];  // source
  }
  up[k] = unew;
  const int zi = i - lo, xi = j - lo;  // interior coordinates
  if (lap && zi >= 0 && zi < g.nz && xi >= 0 && xi < g.nx) {
#pragma unroll
    for (int l = 0; l < kLanes; ++l)
      if (g.live(q, l)) lap[((q * kLanes + l) * g.nz + zi) * g.nx + xi] = lane(L, l);
  }
}

// ------------------------------------------------------------------ backward kernels
// Item t of quad q: adjoint source of record[n] into mu^{n+1} (times V, `sign` +1 or -1) for
// t < nrec, then ring(u^n) into the reconstruction frame ub (ring may be null).
template <int N>
__device__ __forceinline__ void adjsrc_ring(const Grid& g, int q, int t, const float* __restrict__ V,
                                            float4* __restrict__ mu, const int64_t* __restrict__ rec,
                                            const float* __restrict__ grad_record, int nt, int nrec, int n,
                                            const float* __restrict__ ring, float4* __restrict__ ub,
                                            float sign = 1.f) {
  if (t < nrec) {  // receivers differ per shot; atomics, since two may share a cell
    float* mq = reinterpret_cast<float*>(mu + q * g.plane);
#pragma unroll
    for (int l = 0; l < kLanes; ++l) {
      const int b = q * kLanes + l;
      if (!g.live(q, l)) continue;
      const int kr = sidx(rec[b * nrec + t], g);
      atomicAdd(&mq[kr * kLanes + l], sign * (V[kr] * grad_record[(static_cast<int64_t>(b) * nt + n) * nrec + t]));
    }
    return;
  }
  if (!ring) return;
  const int e = t - nrec, C = 2 * N * (g.nz + g.nx);
  if (e >= C) return;
  const int hx = g.nx + 2 * N, hplane = (g.nz + 2 * N) * hx;
  int64_t r, c;
  ring_cell(e, N, g.nz, g.nx, N, &r, &c);
  float4 v = zero4();
#pragma unroll
  for (int l = 0; l < kLanes; ++l)
    if (g.live(q, l)) lane(v, l) = ring[(q * kLanes + l) * C + e];
  ub[q * hplane + static_cast<int>(r) * hx + static_cast<int>(c)] = v;
}

// adjsrc_ring for the chunk's last step, which the backward loop takes first; every other step
// gets them from the extra blocks of k_grad_p1 in the loop iteration before (the next step in
// time), which subtract the source from mu_prev instead (see Lazy)
template <int N>
__global__ void k_adjsrc_ring(Grid g, const float* __restrict__ V, float4* __restrict__ mu,
                              const int64_t* __restrict__ rec, const float* __restrict__ grad_record, int nt,
                              int nrec, int n, const float* __restrict__ ring, float4* __restrict__ ub) {
  pdl_begin();
  adjsrc_ring<N>(g, blockIdx.y, blockIdx.x * blockDim.x + threadIdx.x, V, mu, rec, grad_record, nt, nrec, n, ring, ub);
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
  float4* lp;                    // mu^{n+2} (Q, nzs, nxs, 4): read in the PML, source subtracted at receivers
  const float *bx, *bz;          // CPML decay (nxs), (nzs)
  const float4 *zxr, *zzr;       // raw zbar strips of step n + 1
  float4 *zxc, *zzc;             // carried zbar strips of step n (written here)
  int tyg;                       // first block row of the extra blocks
  const int64_t* rec;            // (B, R) receivers
  const float* grad_record;      // (B, nt, R)
  int nrec, n_prev;              // n_prev < 0: no extra work
  const float* ring_prev;        // (B, C) ring of u^{n-1}, or null
};

__device__ __forceinline__ float4 carry(float b, float4 z, float4 m) { return b * (z + m); }
// Adjoint CPML quantity Abar at one cell (abar of fwi_common.h, per lane).
__device__ __forceinline__ float4 abar4(float4 g, float a, float4 zbar) { return g + a * (zbar + g); }

// Gradient: the sum over steps and over the quad's four shots of mu (L + f delta_src), one (nz, nx)
// plane per quad (k_grad_scale divides it by V at the end), and, for the boundary strategy, the
// reconstruction u^{n-1} = 2 u^n - u^{n+1} + V (L + f delta_src) into the frame ua (frame index kh)
// on interior cells; adjoint pass 1 (with the lazy pass 3) on PML cells. One cell of quad blockIdx.z per thread.
template <int N>
__global__ void FWI_BOUNDS(FWI_MINB_GRAD)
    k_grad_p1(Grid g, Tiling t, Weights w, bool boundary, const float* __restrict__ V,
              const float4* __restrict__ lam, float4* __restrict__ px, float4* __restrict__ pz, Lazy z3,
              const float* __restrict__ ax, const float* __restrict__ az, float* __restrict__ grad,
              float4* __restrict__ ua, const float4* __restrict__ ub, const float* __restrict__ lap,
              const int64_t* __restrict__ src, const float* __restrict__ wavelet, int nt, int n) {
  pdl_begin();
  if (static_cast<int>(blockIdx.y) >= z3.tyg) {  // extra blocks: source of step n - 1, ring of u^{n-1}
    const int e = ((blockIdx.y - z3.tyg) * gridDim.x + blockIdx.x) * (BX * BY) + threadIdx.y * BX + threadIdx.x;
    adjsrc_ring<N>(g, blockIdx.z, e, V, z3.lp, z3.rec, z3.grad_record, nt, z3.nrec, z3.n_prev, z3.ring_prev, ua,
                   -1.f);
    return;
  }
  const int j0 = t.ox + blockIdx.x * BX, i0 = t.oz + blockIdx.y * BY, q = blockIdx.z;
  const int j = j0 + threadIdx.x, i = i0 + threadIdx.y;
  if (j < N || j >= g.nxp + N || i < N || i >= g.nzp + N) return;
  const int lo = N + g.p, hx = g.nx + 2 * N;
  const int cell = i * g.nxs + j, k = q * g.plane + cell;
  const int zi = i - lo, xi = j - lo;
  if (zi >= 0 && zi < g.nz && xi >= 0 && xi < g.nx) {  // interior: gradient and reconstruction
    const int kh = q * (g.nz + 2 * N) * hx + (zi + N) * hx + (xi + N);
    float4 L = zero4(), ubk = zero4();
    if (boundary) {
      L = d2v<N>(ub + kh, 1, w) + d2v<N>(ub + kh, hx, w);
      ubk = ub[kh];
    } else {
#pragma unroll
      for (int l = 0; l < kLanes; ++l)
        if (g.live(q, l)) lane(L, l) = lap[((q * kLanes + l) * g.nz + zi) * g.nx + xi];
    }
    const float4 lk = lam[k];  // lam holds mu = V lam
    const float vk = V[cell];
    float4 gsum = lk * L;
    float4 unew = zero4();
    if (boundary) unew = (2.f * ubk + vk * L) - ua[kh];
    const int flat = (i - N) * g.nxp + (j - N);
#pragma unroll
    for (int l = 0; l < kLanes; ++l) {
      const int b = q * kLanes + l;
      if (g.live(q, l) && flat == static_cast<int>(src[b])) {  // the source cell of shot b
        const float f = wavelet[b * nt + n];
        lane(gsum, l) += lane(lk, l) * f;
        lane(unew, l) += vk * f;
      }
    }
    const int kg = (q * g.nz + zi) * g.nx + xi;  // one plane per quad: its four shots summed
    grad[kg] += ((gsum.x + gsum.y) + (gsum.z + gsum.w));  // divided by V once, by k_grad_scale
    if (boundary) ua[kh] = unew;
    return;
  }
  const float4* __restrict__ mp = z3.lp;
  const float* __restrict__ bx = z3.bx;
  const float* __restrict__ bz = z3.bz;
  const float a_x = ax[j], a_z = az[i];
  if (a_x != 0.f) {
    const int kx = g.kx(q, i, j);  // neighbours with ax != 0 lie in the same strip
    const float4* __restrict__ zx = z3.zxr;
    float4 acc = zero4();
#pragma unroll
    for (int s = 1; s <= N; ++s) {
      const float4 hi = ax[j + s] != 0.f ? abar4(lam[k + s], ax[j + s], carry(bx[j + s], zx[kx + s], mp[k + s]))
                                         : zero4();
      const float4 lo_ = ax[j - s] != 0.f ? abar4(lam[k - s], ax[j - s], carry(bx[j - s], zx[kx - s], mp[k - s]))
                                          : zero4();
      acc = acc + w.c1[s] * (hi - lo_);
    }
    px[kx] = mul_rn(bx[j], px[kx]) - acc;
    z3.zxc[kx] = carry(bx[j], zx[kx], mp[k]);
  }
  if (a_z != 0.f) {
    const int kz = g.kz(q, i, j);
    const float4* __restrict__ zz = z3.zzr;
    const int sn = g.nxs;
    float4 acc = zero4();
#pragma unroll
    for (int s = 1; s <= N; ++s) {
      const float4 hi = az[i + s] != 0.f
                            ? abar4(lam[k + s * sn], az[i + s], carry(bz[i + s], zz[kz + s * sn], mp[k + s * sn]))
                            : zero4();
      const float4 lo_ = az[i - s] != 0.f
                             ? abar4(lam[k - s * sn], az[i - s], carry(bz[i - s], zz[kz - s * sn], mp[k - s * sn]))
                             : zero4();
      acc = acc + w.c1[s] * (hi - lo_);
    }
    pz[kz] = mul_rn(bz[i], pz[kz]) - acc;
    z3.zzc[kz] = carry(bz[i], zz[kz], mp[k]);
  }
}

// Adjoint pass 2 on every cell, one cell of quad blockIdx.z per thread. Along an axis whose
// stencil reaches no PML cell from this block (block-uniform test), Abar = mu and the pbar term
// vanishes: that second derivative is read straight from global memory, as in the forward. Along
// the other axes the block stages shared-memory tiles: Abar_x and a_x pbar_x (x halo), Abar_z and
// a_z pbar_z (z halo).
template <int N>
__global__ void FWI_BOUNDS(FWI_MINB_ADJ) k_adj_main(Grid g, Tiling t, Weights w, const float* __restrict__ V,
                                                      const float4* __restrict__ lam, float4* __restrict__ lp,
                                                      const float4* __restrict__ px, const float4* __restrict__ pz,
                                                      const float4* __restrict__ zx, const float4* __restrict__ zz,
                                                      const float* __restrict__ ax, const float* __restrict__ az,
                                                      const unsigned char* __restrict__ rec_tiles,
                                                      TileOrder order) {
  __shared__ float4 sAx[BY][BX + 2 * N], sAz[BY + 2 * N][BX], sPx[BY][BX + 2 * N], sPz[BY + 2 * N][BX];
  int tile_x, tile_y, q;
  order.tile(g.Q, blockIdx.x, &tile_x, &tile_y, &q);
  const int tx = threadIdx.x, ty = threadIdx.y, tid = ty * BX + tx;
  const int j0 = t.ox + tile_x * BX, i0 = t.oz + tile_y * BY;  // storage coords of the tile origin
  const int xlo = g.p + N, xhi = g.p + N + g.nx, zlo = g.p + N, zhi = g.p + N + g.nz;  // interior range
  const bool need_x = !((j0 - N >= xlo) && (j0 + BX - 1 + N < xhi));  // x tiles touch a PML column
  const bool need_z = !((i0 - N >= zlo) && (i0 + BY - 1 + N < zhi));  // z tiles touch a PML row
  // Early interior blocks (rec_tiles non-null; see k_main): the predecessor k_grad_p1 writes the
  // PML strips (pbar, carried zbar), the gradient and the frames, and reads mu_prev only at PML
  // cells, but its extra blocks subtract the next adjoint source from mu_prev at the receivers:
  // interior tiles holding a receiver of this quad, and their x neighbours (rec_tiles, written
  // once per call), wait.
  pdl_begin_unless(rec_tiles && !need_x && !need_z &&
                   !rec_tiles[(q * order.TY + tile_y) * order.TX + tile_x]);
  if (!need_x && !need_z) {  // the stencil stays inside the interior
    const int i = i0 + ty, j = j0 + tx, k = q * g.plane + i * g.nxs + j;
    const float4 S = d2v<N>(lam + k, 1, w) + d2v<N>(lam + k, g.nxs, w);
    lp[k] = (2.f * lam[k] - lp[k]) + V[i * g.nxs + j] * S;
    return;
  }
  const float4* lamq = lam + q * g.plane;
  // x-halo tiles
  for (int e = tid; need_x && e < BY * (BX + 2 * N); e += BX * BY) {
    const int r = e / (BX + 2 * N), c = e % (BX + 2 * N);
    const int i = i0 + r, j = j0 - N + c;
    float4 A = zero4(), P = zero4();
    if (i >= 0 && j >= 0 && i < g.nzs && j < g.nxs) {
      const float4 gk = lamq[i * g.nxs + j];
      const float a = ax[j];
      if (a != 0.f) {
        const int p = g.kx(q, i, j);
        A = abar4(gk, a, zx[p]);
        P = a * px[p];
      } else {
        A = gk;
      }
    }
    sAx[r][c] = A;
    sPx[r][c] = P;
  }
  // z-halo tiles
  for (int e = tid; need_z && e < (BY + 2 * N) * BX; e += BX * BY) {
    const int r = e / BX, c = e % BX;
    const int i = i0 - N + r, j = j0 + c;
    float4 A = zero4(), P = zero4();
    if (i >= 0 && j >= 0 && i < g.nzs && j < g.nxs) {
      const float4 gk = lamq[i * g.nxs + j];
      const float a = az[i];
      if (a != 0.f) {
        const int p = g.kz(q, i, j);
        A = abar4(gk, a, zz[p]);
        P = a * pz[p];
      } else {
        A = gk;
      }
    }
    sAz[r][c] = A;
    sPz[r][c] = P;
  }
  __syncthreads();
  const int i = i0 + ty, j = j0 + tx;
  if (j < N || j >= g.nxp + N || i < N || i >= g.nzp + N) return;
  const int k = q * g.plane + i * g.nxs + j;
  float4 sx, sz, qx = zero4(), qz = zero4();
  if (need_x) {
    sx = w.c2[0] * sAx[ty][tx + N];
#pragma unroll
    for (int s = 1; s <= N; ++s) {
      sx = sx + w.c2[s] * (sAx[ty][tx + N + s] + sAx[ty][tx + N - s]);
      qx = qx + w.c1[s] * (sPx[ty][tx + N + s] - sPx[ty][tx + N - s]);
    }
  } else {  // the x range is interior: in the grid, Abar_x = mu, pbar_x term 0
    sx = d2v<N>(lam + k, 1, w);
  }
  if (need_z) {
    sz = w.c2[0] * sAz[ty + N][tx];
#pragma unroll
    for (int s = 1; s <= N; ++s) {
      sz = sz + w.c2[s] * (sAz[ty + N + s][tx] + sAz[ty + N - s][tx]);
      qz = qz + w.c1[s] * (sPz[ty + N + s][tx] - sPz[ty + N - s][tx]);
    }
  } else {
    sz = d2v<N>(lam + k, g.nxs, w);
  }
  lp[k] = (2.f * lam[k] - lp[k]) + V[i * g.nxs + j] * ((sx + sz) - (qx + qz));
}

// rec_tiles[q][ty][tx] = 1 for the tiles (of tiling t, grid gx x gy) holding a receiver of a live
// shot of quad q, and for their left and right neighbours: a 32-byte sector holds two cells of a
// row, so an early block next to a receiver tile could otherwise pull the receiver cell's sector
// into L1 before k_grad_p1's atomic update. The buffer is zeroed before. One receiver of one
// shot per thread.
__global__ void k_rec_tiles(Grid g, Tiling t, int gx, int gy, const int64_t* __restrict__ rec, int nrec,
                            unsigned char* __restrict__ rec_tiles) {
  pdl_begin();
  const int e = blockIdx.x * blockDim.x + threadIdx.x;
  if (e >= g.B * nrec) return;
  const int b = e / nrec, k = sidx(rec[e], g);
  const int i = k / g.nxs, j = k % g.nxs;
  const int tx = (j - t.ox) / BX, ty = (i - t.oz) / BY;  // j >= ox, i >= oz: receivers are interior
  unsigned char* row = rec_tiles + ((b / kLanes) * gy + ty) * gx;
  row[tx] = 1;
  if (tx > 0) row[tx - 1] = 1;
  if (tx + 1 < gx) row[tx + 1] = 1;
}

// dJ/dV = (sum over steps of mu (L + f delta_src)) / V: k_grad_p1 accumulates the sum (mu = V lam),
// and this divides once, after the backward's last step (n = 0), instead of every step.
__global__ void k_grad_scale(Grid g, const float* __restrict__ V, float* __restrict__ grad) {
  pdl_begin();
  const int e = blockIdx.x * blockDim.x + threadIdx.x;
  if (e >= g.nz * g.nx) return;
  const int lo = g.n + g.p, zi = e / g.nx, xi = e % g.nx;
  const float vk = V[(zi + lo) * g.nxs + xi + lo];
  const int kg = blockIdx.y * g.nz * g.nx + e;
  grad[kg] = grad[kg] / vk;
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

// Whether interior blocks may skip the wait for their predecessor (k_main, k_adj_main: see k_main);
// FWI_EARLY=0 turns it off.
inline bool early_blocks() {
  const char* env = std::getenv("FWI_EARLY");
  return !(env && std::string(env) == "0");
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

inline float4* f4p(float* p) { return reinterpret_cast<float4*>(p); }

template <int N>
void forward_impl(const StepArgs& a, cudaStream_t st) {
  const Grid g = make_grid(a.d, N);
  const Tiling tl = make_tiling(g, N + g.p);
  const dim3 block(BX, BY), tiles = tile_grid(g, tl);
  const int lo = N + g.p;
  const TileOrder order = make_order(
      g, tl, [&](int j0) { return j0 >= lo && j0 + BX <= lo + g.nx; },
      [&](int i0) { return i0 >= lo && i0 + BY <= lo + g.nz; });  // k_main's `inner`
  const dim3 grid(tiles.x * tiles.y * tiles.z);
  const int pblocks = (pml_cells(g) + 255) / 256;
  const int64_t C = 2 * N * (a.d.nz + a.d.nx);
  const int nt = static_cast<int>(a.nt), nrec = static_cast<int>(a.nrec);
  float4* u = f4p(a.u);
  float4* up = f4p(a.uprev);
  float4 *psix = f4p(a.psix), *psiz = f4p(a.psiz), *zx = f4p(a.zx), *zz = f4p(a.zz);
  const Launcher launch{st, pdl_enabled(k_main<N>)};
  const int early = early_blocks() ? 1 : 0;
  // Per step: k_psi (+ the previous step's record and this step's ring), k_main (+ the source).
  // The record of the chunk's last step is taken after the loop.
  auto extra_blocks = [&](int64_t items) { return static_cast<int>((items + 255) / 256); };
  for (int64_t s = 0; s < a.nsteps; ++s) {
    const int n = static_cast<int>(a.n0 + s);
    float* ring = a.ring ? a.ring + s * g.B * C : nullptr;
    const int nb = pblocks + extra_blocks((s > 0 ? a.nrec : 0) + (ring ? C : 0));
    if (nb > 0)
      launch(k_psi<N>, dim3(nb, g.Q), dim3(256), g, a.w, static_cast<const float4*>(u), psix, psiz, a.ax, a.bx, a.az,
             a.bz, pblocks, a.rec, a.record, nt, nrec, s > 0 ? n - 1 : -1, ring);
    float* lap = a.lap ? a.lap + s * g.B * a.d.nz * a.d.nx : nullptr;
    launch(k_main<N>, grid, block, g, tl, a.w, a.v2dt2, static_cast<const float4*>(u), up,
           static_cast<const float4*>(psix), static_cast<const float4*>(psiz), zx, zz, a.ax, a.bx, a.az, a.bz, lap,
           a.src, a.wavelet, nt, n, early, order);
    std::swap(u, up);
  }
  if (a.nsteps > 0 && a.nrec > 0)
    launch(k_psi<N>, dim3(extra_blocks(a.nrec), g.Q), dim3(256), g, a.w, static_cast<const float4*>(u), psix, psiz,
           a.ax, a.bx, a.az, a.bz, 0, a.rec, a.record, nt, nrec, static_cast<int>(a.n0 + a.nsteps - 1),
           static_cast<float*>(nullptr));
}

template <int N>
void backward_impl(const AdjArgs& a, cudaStream_t st) {
  const Grid g = make_grid(a.d, N);
  const Tiling tg = make_tiling(g, N + g.p), ta = make_tiling(g, 2 * N + g.p);
  const dim3 block(BX, BY), ggrid = tile_grid(g, tg), agrid = tile_grid(g, ta);
  const int lo = g.p + N;  // k_adj_main's interior tiles: no PML cell within N of the tile
  const TileOrder aorder = make_order(
      g, ta, [&](int j0) { return j0 - N >= lo && j0 + BX - 1 + N < lo + g.nx; },
      [&](int i0) { return i0 - N >= lo && i0 + BY - 1 + N < lo + g.nz; });
  const dim3 agrid1(agrid.x * agrid.y * agrid.z);
  const int64_t C = 2 * N * (a.d.nz + a.d.nx);
  const int nt = static_cast<int>(a.nt), nrec = static_cast<int>(a.nrec);
  float4* lam = f4p(a.lam);
  float4* lp = f4p(a.lamprev);
  float4* ua = f4p(a.ua);
  float4* ub = f4p(a.ub);
  const int64_t small = a.nrec + (a.boundary ? C : 0);
  const int sblocks = static_cast<int>((small + 255) / 256);
  const Launcher launch{st, pdl_enabled(k_adj_main<N>)};
  // tiles of k_adj_main holding a receiver (early interior blocks, see k_adj_main); stream-ordered
  // allocation, freed at the end of the call
  struct StreamBuffer {  // freed (stream-ordered) when the call returns or throws
    void* p = nullptr;
    cudaStream_t st;
    ~StreamBuffer() {
      if (p) (void)cudaFreeAsync(p, st);
    }
  } tiles_buf{nullptr, st};
  unsigned char* rec_tiles = nullptr;  // null: every block waits
  const size_t tile_bytes = static_cast<size_t>(agrid.x) * agrid.y * agrid.z;
  if (launch.pdl && early_blocks() && a.nsteps > 0 &&
      cudaMallocAsync(&tiles_buf.p, tile_bytes, st) != cudaSuccess) {
    (void)cudaGetLastError();  // no stream-ordered memory here: go without early blocks
    tiles_buf.p = nullptr;
  }
  if (tiles_buf.p) {
    rec_tiles = static_cast<unsigned char*>(tiles_buf.p);
    check_launch(cudaMemsetAsync(rec_tiles, 0, tile_bytes, st));
    if (a.nrec > 0)
      launch(k_rec_tiles, dim3(static_cast<unsigned>((g.B * a.nrec + 255) / 256)), dim3(256), g, ta,
             static_cast<int>(agrid.x), static_cast<int>(agrid.y), a.rec, nrec, rec_tiles);
  }
  auto ring_at = [&](int64_t s) -> const float* { return a.boundary ? a.ring + s * g.B * C : nullptr; };
  // Per step: k_grad_p1 (+ pass 3 of the step after, lazily; + in extra block rows the adjoint
  // source and ring of the step before) and k_adj_main. The chunk's first step (its last in
  // time) gets its source and ring from k_adjsrc_ring before the loop.
  if (a.nsteps > 0 && sblocks > 0)
    launch(k_adjsrc_ring<N>, dim3(sblocks, g.Q), dim3(256), g, a.v2dt2, lam, a.rec, a.grad_record, nt, nrec,
           static_cast<int>(a.n0 + a.nsteps - 1), ring_at(a.nsteps - 1), ub);
  // extra block rows of k_grad_p1, whose blocks take BX * BY items each (sblocks counts 256)
  const int64_t xblocks = (small + BX * BY - 1) / (BX * BY);
  const int xrows = static_cast<int>((xblocks + ggrid.x - 1) / ggrid.x);
  float4 *zxr = f4p(a.zx), *zzr = f4p(a.zz), *zxc = f4p(a.zx2), *zzc = f4p(a.zz2);  // raw and carried zbar strips
  float4 *px = f4p(a.px), *pz = f4p(a.pz);
  float* grad = a.grad;  // (Q, nz, nx): the shots of a quad summed
  for (int64_t s = a.nsteps - 1; s >= 0; --s) {
    const int n = static_cast<int>(a.n0 + s);
    const float* lap = a.lap ? a.lap + s * g.B * a.d.nz * a.d.nx : nullptr;
    const bool more = s > 0 && sblocks > 0;
    const Lazy z3{lp, a.bx, a.bz, zxr, zzr, zxc, zzc, static_cast<int>(ggrid.y), a.rec, a.grad_record, nrec,
                  more ? n - 1 : -1, more ? ring_at(s - 1) : nullptr};
    const dim3 gg(ggrid.x, ggrid.y + (more ? xrows : 0), ggrid.z);
    launch(k_grad_p1<N>, gg, block, g, tg, a.w, a.boundary, a.v2dt2, static_cast<const float4*>(lam), px, pz, z3,
           a.ax, a.az, grad, ua, static_cast<const float4*>(ub), lap, a.src, a.wavelet, nt, n);
    launch(k_adj_main<N>, agrid1, block, g, ta, a.w, a.v2dt2, static_cast<const float4*>(lam), lp,
           static_cast<const float4*>(px), static_cast<const float4*>(pz), static_cast<const float4*>(zxc),
           static_cast<const float4*>(zzc), a.ax, a.az, static_cast<const unsigned char*>(rec_tiles), aorder);
    std::swap(lam, lp);
    if (a.boundary) std::swap(ua, ub);
    std::swap(zxr, zxc);
    std::swap(zzr, zzc);
  }
  if (a.nsteps > 0 && a.n0 == 0)
    launch(k_grad_scale, dim3((g.nz * g.nx + 255) / 256, g.Q), dim3(256), g, a.v2dt2, grad);
  if (zxr != f4p(a.zx)) {  // odd step count: the raw strips end in the scratch buffers
    const size_t w2 = static_cast<size_t>(2 * (g.p + 2 * N)), cells = static_cast<size_t>(g.Q) * kLanes * w2;
    check_launch(cudaMemcpyAsync(a.zx, zxr, sizeof(float) * cells * g.nzs, cudaMemcpyDeviceToDevice, st));
    check_launch(cudaMemcpyAsync(a.zz, zzr, sizeof(float) * cells * g.nxs, cudaMemcpyDeviceToDevice, st));
  }
}

}  // namespace

void forward_cuda(const StepArgs& a, void* stream) {
  auto st = static_cast<cudaStream_t>(stream);
  switch (a.n_half) {
    case 1: forward_impl<1>(a, st); break;
    case 2: forward_impl<2>(a, st); break;
    case 4: forward_impl<4>(a, st); break;
    default: throw std::runtime_error("fwi: unsupported stencil half-width");
  }
}

void backward_cuda(const AdjArgs& a, void* stream) {
  auto st = static_cast<cudaStream_t>(stream);
  switch (a.n_half) {
    case 1: backward_impl<1>(a, st); break;
    case 2: backward_impl<2>(a, st); break;
    case 4: backward_impl<4>(a, st); break;
    default: throw std::runtime_error("fwi: unsupported stencil half-width");
  }
}

}  // namespace fwi
