// CUDA implementation of the compiled propagator's ops (see fwi_common.h for the math and
// fwi_cpu.cpp for the same algorithm on the CPU). One launch covers every shot (grid.z = B);
// all launches go on the stream the op wrapper passes (torch's current stream). This file
// needs only the CUDA toolkit (no torch headers), so CI can compile-check it without a GPU. Storage-grid layout as in fwi_cpu.cpp.
#include <cuda_runtime.h>

#include <algorithm>
#include <utility>

#include "fwi_common.h"
#include <stdexcept>
#include <string>

namespace fwi {
namespace {

constexpr int BX = 32, BY = 8;

struct Grid {
  int64_t B, nz, nx, p, nzp, nxp, nzs, nxs, plane;
};

inline Grid make_grid(const Dims& d, int n) {
  Grid g{d.b, d.nz, d.nx, d.p, d.nzp, d.nxp, d.nzp + 2 * n, d.nxp + 2 * n, 0};
  g.plane = g.nzs * g.nxs;
  return g;
}

// ------------------------------------------------------------------ forward kernels
template <int N>
__global__ void k_psi(Grid g, Weights w, const float* __restrict__ u, float* __restrict__ psix,
                      float* __restrict__ psiz, const float* __restrict__ ax, const float* __restrict__ bx,
                      const float* __restrict__ az, const float* __restrict__ bz) {
  const int64_t j = blockIdx.x * BX + threadIdx.x + N, i = blockIdx.y * BY + threadIdx.y + N, b = blockIdx.z;
  if (j >= g.nxp + N || i >= g.nzp + N) return;
  const float a_x = ax[j], a_z = az[i];
  if (a_x == 0.f && a_z == 0.f) return;
  const int64_t k = b * g.plane + i * g.nxs + j;
  if (a_x != 0.f) psix[k] = bx[j] * psix[k] + a_x * d1<N>(u + k, 1, w, N, N);
  if (a_z != 0.f) psiz[k] = bz[i] * psiz[k] + a_z * d1<N>(u + k, g.nxs, w, N, N);
}

template <int N>
__global__ void k_main(Grid g, Weights w, const float* __restrict__ V, const float* __restrict__ u,
                       float* __restrict__ up, const float* __restrict__ psix, const float* __restrict__ psiz,
                       float* __restrict__ zxa, float* __restrict__ zza, const float* __restrict__ ax,
                       const float* __restrict__ bx, const float* __restrict__ az, const float* __restrict__ bz,
                       float* __restrict__ ring, float* __restrict__ lap) {
  const int64_t j = blockIdx.x * BX + threadIdx.x + N, i = blockIdx.y * BY + threadIdx.y + N, b = blockIdx.z;
  if (j >= g.nxp + N || i >= g.nzp + N) return;
  const int64_t k = b * g.plane + i * g.nxs + j;
  const float a_x = ax[j], a_z = az[i];
  float Ax = d2<N>(u + k, 1, w, N, N);
  float Az = d2<N>(u + k, g.nxs, w, N, N);
  float zx = 0.f, zz = 0.f;
  if (a_x != 0.f) {
    Ax += d1<N>(psix + k, 1, w, N, N);
    zx = bx[j] * zxa[k] + a_x * Ax;
    zxa[k] = zx;
  }
  if (a_z != 0.f) {
    Az += d1<N>(psiz + k, g.nxs, w, N, N);
    zz = bz[i] * zza[k] + a_z * Az;
    zza[k] = zz;
  }
  const float L = ((Ax + Az) + zx) + zz;
  const float uk = u[k];
  up[k] = (2.f * uk - up[k]) + V[i * g.nxs + j] * L;
  // interior coordinates (may be negative / beyond: PML)
  const int64_t zi = i - N - g.p, xi = j - N - g.p;
  if (lap && zi >= 0 && zi < g.nz && xi >= 0 && xi < g.nx) lap[(b * g.nz + zi) * g.nx + xi] = L;
  if (ring) {
    const int64_t C = 2 * N * (g.nz + g.nx), tb = N * g.nx;
    int64_t q = -1;
    if (xi >= 0 && xi < g.nx) {
      if (zi >= -N && zi < 0) q = (zi + N) * g.nx + xi;
      else if (zi >= g.nz && zi < g.nz + N) q = tb + (zi - g.nz) * g.nx + xi;
    } else if (zi >= 0 && zi < g.nz) {
      if (xi >= -N && xi < 0) q = 2 * tb + zi * N + (xi + N);
      else if (xi >= g.nx && xi < g.nx + N) q = 2 * tb + g.nz * N + zi * N + (xi - g.nx);
    }
    if (q >= 0) ring[b * C + q] = uk;
  }
}

__global__ void k_srcrec(Grid g, int n_half, const float* __restrict__ V, float* __restrict__ unew,
                         const int64_t* __restrict__ src, const int64_t* __restrict__ rec,
                         const float* __restrict__ wavelet, float* __restrict__ record, int64_t nt, int64_t nrec,
                         int64_t n) {
  const int64_t b = blockIdx.x;
  if (threadIdx.x == 0) {
    const int64_t ks = storage_index(src[b], g.nxp, g.nxs, n_half);
    unew[b * g.plane + ks] += V[ks] * wavelet[b * nt + n];
  }
  __syncthreads();
  for (int64_t r = threadIdx.x; r < nrec; r += blockDim.x)
    record[(b * nt + n) * nrec + r] = unew[b * g.plane + storage_index(rec[b * nrec + r], g.nxp, g.nxs, n_half)];
}

// ------------------------------------------------------------------ backward kernels
__global__ void k_adjsrc(Grid g, int n_half, float* __restrict__ lam, const int64_t* __restrict__ rec,
                         const float* __restrict__ grad_record, int64_t nt, int64_t nrec, int64_t n) {
  const int64_t b = blockIdx.y;
  for (int64_t r = blockIdx.x * blockDim.x + threadIdx.x; r < nrec; r += gridDim.x * blockDim.x)
    atomicAdd(&lam[b * g.plane + storage_index(rec[b * nrec + r], g.nxp, g.nxs, n_half)],
              grad_record[(b * nt + n) * nrec + r]);
}

template <int N>
__global__ void k_ringload(Grid g, const float* __restrict__ ring, float* __restrict__ ub) {
  const int64_t C = 2 * N * (g.nz + g.nx), b = blockIdx.y;
  const int64_t hx = g.nx + 2 * N, hplane = (g.nz + 2 * N) * hx;
  for (int64_t q = blockIdx.x * blockDim.x + threadIdx.x; q < C; q += gridDim.x * blockDim.x) {
    int64_t r, c;
    ring_cell(q, N, g.nz, g.nx, N, &r, &c);
    ub[b * hplane + r * hx + c] = ring[b * C + q];
  }
}

template <int N>
__device__ __forceinline__ float abx(const float* V, const float* lam, const float* ax, const float* zx, int64_t k,
                                     int64_t kv, int64_t j) {
  return abar(V[kv] * lam[k], ax[j], zx[k]);
}

// Gradient (+ reconstruction) on interior cells; pass 1 of the adjoint on PML cells.
template <int N>
__global__ void k_grad_p1(Grid g, Weights w, bool boundary, const float* __restrict__ V,
                          const float* __restrict__ lam, float* __restrict__ px, float* __restrict__ pz,
                          const float* __restrict__ zx, const float* __restrict__ zz, const float* __restrict__ ax,
                          const float* __restrict__ az, float* __restrict__ grad, float* __restrict__ ua,
                          const float* __restrict__ ub, const float* __restrict__ lap,
                          const int64_t* __restrict__ src, const float* __restrict__ wavelet, int64_t nt,
                          int64_t n) {
  const int64_t j = blockIdx.x * BX + threadIdx.x + N, i = blockIdx.y * BY + threadIdx.y + N, b = blockIdx.z;
  if (j >= g.nxp + N || i >= g.nzp + N) return;
  const int64_t k = b * g.plane + i * g.nxs + j, kv = i * g.nxs + j;
  const int64_t zi = i - N - g.p, xi = j - N - g.p;
  if (zi >= 0 && zi < g.nz && xi >= 0 && xi < g.nx) {
    float L;
    const int64_t hx = g.nx + 2 * N;
    const int64_t kh = b * (g.nz + 2 * N) * hx + (zi + N) * hx + (xi + N);
    if (boundary) {
      L = (d2<N>(ub + kh, 1, w, N, N) + d2<N>(ub + kh, hx, w, N, N)) + 0.f;
    } else {
      L = lap[(b * g.nz + zi) * g.nx + xi];
    }
    const float lk = lam[k];
    float gsum = lk * L;
    float unew = 0.f;
    if (boundary) unew = (2.f * ub[kh] + V[kv] * L) - ua[kh];
    if (storage_index(src[b], g.nxp, g.nxs, N) == kv) {
      const float f = wavelet[b * nt + n];
      gsum += lk * f;
      if (boundary) unew += V[kv] * f;
    }
    grad[(b * g.nz + zi) * g.nx + xi] += gsum;
    if (boundary) ua[kh] = unew;
    return;
  }
  const float a_x = ax[j], a_z = az[i];
  if (a_x != 0.f) {
    float acc = 0.f;
#pragma unroll
    for (int q = 1; q <= N; ++q) {
      const float hi = ax[j + q] != 0.f ? abar(V[kv + q] * lam[k + q], ax[j + q], zx[k + q]) : 0.f;
      const float lo = ax[j - q] != 0.f ? abar(V[kv - q] * lam[k - q], ax[j - q], zx[k - q]) : 0.f;
      acc += w.c1[q] * (hi - lo);
    }
    px[k] -= acc;
  }
  if (a_z != 0.f) {
    float acc = 0.f;
    const int64_t s = g.nxs;
#pragma unroll
    for (int q = 1; q <= N; ++q) {
      const float hi = az[i + q] != 0.f ? abar(V[kv + q * s] * lam[k + q * s], az[i + q], zz[k + q * s]) : 0.f;
      const float lo = az[i - q] != 0.f ? abar(V[kv - q * s] * lam[k - q * s], az[i - q], zz[k - q * s]) : 0.f;
      acc += w.c1[q] * (hi - lo);
    }
    pz[k] -= acc;
  }
}

template <int N>
__global__ void k_adj_main(Grid g, Weights w, const float* __restrict__ V, const float* __restrict__ lam,
                           float* __restrict__ lp, const float* __restrict__ px, const float* __restrict__ pz,
                           const float* __restrict__ zx, const float* __restrict__ zz, const float* __restrict__ ax,
                           const float* __restrict__ az) {
  const int64_t j = blockIdx.x * BX + threadIdx.x + N, i = blockIdx.y * BY + threadIdx.y + N, b = blockIdx.z;
  if (j >= g.nxp + N || i >= g.nzp + N) return;
  const int64_t k = b * g.plane + i * g.nxs + j, kv = i * g.nxs + j, s = g.nxs;
  float sx = w.c2[0] * abar(V[kv] * lam[k], ax[j], zx[k]);
  float sz = w.c2[0] * abar(V[kv] * lam[k], az[i], zz[k]);
  float qx = 0.f, qz = 0.f;
#pragma unroll
  for (int q = 1; q <= N; ++q) {
    sx += w.c2[q] * (abar(V[kv + q] * lam[k + q], ax[j + q], zx[k + q]) +
                     abar(V[kv - q] * lam[k - q], ax[j - q], zx[k - q]));
    sz += w.c2[q] * (abar(V[kv + q * s] * lam[k + q * s], az[i + q], zz[k + q * s]) +
                     abar(V[kv - q * s] * lam[k - q * s], az[i - q], zz[k - q * s]));
    qx += w.c1[q] * (ax[j + q] * px[k + q] - ax[j - q] * px[k - q]);
    qz += w.c1[q] * (az[i + q] * pz[k + q * s] - az[i - q] * pz[k - q * s]);
  }
  lp[k] = (2.f * lam[k] - lp[k]) + ((sx + sz) - (qx + qz));
}

__global__ void k_p3(Grid g, int n_half, const float* __restrict__ V, const float* __restrict__ lam,
                     float* __restrict__ px, float* __restrict__ pz, float* __restrict__ zx, float* __restrict__ zz,
                     const float* __restrict__ ax, const float* __restrict__ bx, const float* __restrict__ az,
                     const float* __restrict__ bz) {
  const int64_t N = n_half;
  const int64_t j = blockIdx.x * BX + threadIdx.x + N, i = blockIdx.y * BY + threadIdx.y + N, b = blockIdx.z;
  if (j >= g.nxp + N || i >= g.nzp + N) return;
  const float a_x = ax[j], a_z = az[i];
  if (a_x == 0.f && a_z == 0.f) return;
  const int64_t k = b * g.plane + i * g.nxs + j;
  const float gk = V[i * g.nxs + j] * lam[k];
  if (a_x != 0.f) {
    zx[k] = bx[j] * (zx[k] + gk);
    px[k] = bx[j] * px[k];
  }
  if (a_z != 0.f) {
    zz[k] = bz[i] * (zz[k] + gk);
    pz[k] = bz[i] * pz[k];
  }
}

inline void check_launch() {
  const cudaError_t err = cudaGetLastError();
  if (err != cudaSuccess) throw std::runtime_error(std::string("fwi: CUDA launch failed: ") + cudaGetErrorString(err));
}

template <int N>
void forward_impl(const StepArgs& a, cudaStream_t st) {
  const Grid g = make_grid(a.d, N);
  const dim3 block(BX, BY), grid((g.nxp + BX - 1) / BX, (g.nzp + BY - 1) / BY, g.B);
  const int64_t C = 2 * N * (g.nz + g.nx);
  float* u = a.u;
  float* up = a.uprev;
  const int rthreads = static_cast<int>(std::min<int64_t>(1024, std::max<int64_t>(32, ((a.nrec + 31) / 32) * 32)));
  for (int64_t s = 0; s < a.nsteps; ++s) {
    const int64_t n = a.n0 + s;
    k_psi<N><<<grid, block, 0, st>>>(g, a.w, u, a.psix, a.psiz, a.ax, a.bx, a.az, a.bz);
    check_launch();
    k_main<N><<<grid, block, 0, st>>>(g, a.w, a.v2dt2, u, up, a.psix, a.psiz, a.zx, a.zz, a.ax, a.bx, a.az, a.bz,
                                      a.ring ? a.ring + s * g.B * C : nullptr,
                                      a.lap ? a.lap + s * g.B * g.nz * g.nx : nullptr);
    check_launch();
    k_srcrec<<<static_cast<unsigned>(g.B), rthreads, 0, st>>>(g, N, a.v2dt2, up, a.src, a.rec, a.wavelet, a.record,
                                                              a.nt, a.nrec, n);
    check_launch();
    std::swap(u, up);
  }
}

template <int N>
void backward_impl(const AdjArgs& a, cudaStream_t st) {
  const Grid g = make_grid(a.d, N);
  const dim3 block(BX, BY), grid((g.nxp + BX - 1) / BX, (g.nzp + BY - 1) / BY, g.B);
  const int64_t C = 2 * N * (g.nz + g.nx);
  float* lam = a.lam;
  float* lp = a.lamprev;
  float* ua = a.ua;
  float* ub = a.ub;
  const dim3 rgrid(static_cast<unsigned>((a.nrec + 255) / 256), static_cast<unsigned>(g.B));
  const dim3 cgrid(static_cast<unsigned>((C + 255) / 256), static_cast<unsigned>(g.B));
  for (int64_t s = a.nsteps - 1; s >= 0; --s) {
    const int64_t n = a.n0 + s;
    k_adjsrc<<<rgrid, 256, 0, st>>>(g, N, lam, a.rec, a.grad_record, a.nt, a.nrec, n);
    check_launch();
    if (a.boundary) {
      k_ringload<N><<<cgrid, 256, 0, st>>>(g, a.ring + s * g.B * C, ub);
      check_launch();
    }
    k_grad_p1<N><<<grid, block, 0, st>>>(g, a.w, a.boundary, a.v2dt2, lam, a.px, a.pz, a.zx, a.zz, a.ax, a.az,
                                         a.grad, ua, ub, a.lap ? a.lap + s * g.B * g.nz * g.nx : nullptr, a.src,
                                         a.wavelet, a.nt, n);
    check_launch();
    k_adj_main<N><<<grid, block, 0, st>>>(g, a.w, a.v2dt2, lam, lp, a.px, a.pz, a.zx, a.zz, a.ax, a.az);
    check_launch();
    k_p3<<<grid, block, 0, st>>>(g, N, a.v2dt2, lam, a.px, a.pz, a.zx, a.zz, a.ax, a.bx, a.az, a.bz);
    check_launch();
    std::swap(lam, lp);
    if (a.boundary) std::swap(ua, ub);
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
