// Shots interleaved in memory, four to a float4: does the forward step get cheaper per cell?
// The shipped kernels (kernels/fwi_cuda.cu) keep one (nzs, nxs) plane per shot, so every cell
// update pays its own index arithmetic, CPML tests and coefficient loads, and loads one float per
// neighbour. Here the state is laid out (B/4, nzs, nxs, 4): one float4 load brings a neighbour for
// four shots, and the per-cell work (indices, strip mapping, a/b coefficients, V, branches) is
// shared by 4 Q shots (Q quads per thread). Same operator and summation order as k_psi + k_main.
// The probe runs 64 forward steps of the seed problem (B = 8, no source or receivers) with the
// one-plane-per-shot kernels of 9990528 and with these, checks that the fields agree, and times
// both (run W17: 15.2 against 10.9 us per step, bit-identical). The lanes layout has been shipped
// since 90bc2c4, so the baseline is taken from git:
//   git show 9990528:kernels/fwi_cuda.cu > /tmp/fwi_cuda_planes.cu
//   nvcc -O3 -std=c++17 -arch=sm_90 -Ikernels -I/tmp tools/probes/interleave.cu -o /tmp/il && /tmp/il
#include "fwi_cuda_planes.cu"

#include <algorithm>
#include <cmath>
#include <cstdio>
#include <random>
#include <vector>

namespace fwi {
namespace il {

__device__ __forceinline__ float4 operator+(float4 a, float4 b) { return {a.x + b.x, a.y + b.y, a.z + b.z, a.w + b.w}; }
__device__ __forceinline__ float4 operator-(float4 a, float4 b) { return {a.x - b.x, a.y - b.y, a.z - b.z, a.w - b.w}; }
__device__ __forceinline__ float4 operator*(float s, float4 a) { return {s * a.x, s * a.y, s * a.z, s * a.w}; }
__device__ __forceinline__ float4 zero4() { return {0.f, 0.f, 0.f, 0.f}; }

// Interleaved planes: field (B/4, nzs, nxs) of float4; x strips (B/4, nzs, 2W); z strips (B/4, 2W, nxs).
struct G4 {
  Grid g;
  int nq, xplane, zplane;
  __device__ __forceinline__ int kx(int q, int i, int j) const {
    return q * xplane + i * (2 * g.w) + (j < g.w ? j : j - (g.nxs - 2 * g.w));
  }
  __device__ __forceinline__ int kz(int q, int i, int j) const {
    return q * zplane + (i < g.w ? i : i - (g.nzs - 2 * g.w)) * g.nxs + j;
  }
};

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

// psi in the PML strips, Q quads of shots per thread.
template <int N, int Q>
__global__ void k_psi4(G4 G, Weights w, const float4* __restrict__ u, float4* __restrict__ psix,
                       float4* __restrict__ psiz, const float* __restrict__ ax, const float* __restrict__ bx,
                       const float* __restrict__ az, const float* __restrict__ bz) {
  pdl_begin();
  const Grid& g = G.g;
  const int t = blockIdx.x * blockDim.x + threadIdx.x;
  if (t >= pml_cells(g)) return;
  int i, j;
  pml_cell(t, g, &i, &j);
  const int q0 = blockIdx.y * Q, cell = i * g.nxs + j;
  const float a_x = ax[j], a_z = az[i];
  if (a_x != 0.f) {
    const float b_ = bx[j];
#pragma unroll
    for (int q = 0; q < Q; ++q) {
      const int p = G.kx(q0 + q, i, j);
      psix[p] = b_ * psix[p] + a_x * d1v<N>(u + (q0 + q) * g.plane + cell, 1, w);
    }
  }
  if (a_z != 0.f) {
    const float b_ = bz[i];
#pragma unroll
    for (int q = 0; q < Q; ++q) {
      const int p = G.kz(q0 + q, i, j);
      psiz[p] = b_ * psiz[p] + a_z * d1v<N>(u + (q0 + q) * g.plane + cell, g.nxs, w);
    }
  }
}

// u^{n+1} = 2 u - u_prev + V L with zeta in the PML; one cell (R = 1) and Q quads per thread.
// Interior blocks (no PML in the stencil) skip every coefficient read.
template <int N, int Q>
__global__ void __launch_bounds__(BX * BY) k_main4(G4 G, Tiling t, Weights w, const float* __restrict__ V,
                                                   const float4* __restrict__ u, float4* __restrict__ up,
                                                   const float4* __restrict__ psix, const float4* __restrict__ psiz,
                                                   float4* __restrict__ zxa, float4* __restrict__ zza,
                                                   const float* __restrict__ ax, const float* __restrict__ bx,
                                                   const float* __restrict__ az, const float* __restrict__ bz) {
  pdl_begin();
  const Grid& g = G.g;
  const int j0 = t.ox + blockIdx.x * BX, i0 = t.oz + blockIdx.y * BY;
  const int j = j0 + threadIdx.x, i = i0 + threadIdx.y, q0 = blockIdx.z * Q;
  const int lo = N + g.p;
  if (j < N || j >= g.nxp + N || i < N || i >= g.nzp + N) return;
  const int cell = i * g.nxs + j;
  const float vk = V[cell];
  const bool inner = (j0 >= lo) && (j0 + BX <= lo + g.nx) && (i0 >= lo) && (i0 + BY <= lo + g.nz);
  if (inner) {
#pragma unroll
    for (int q = 0; q < Q; ++q) {
      const int k = (q0 + q) * g.plane + cell;
      const float4 L = d2v<N>(u + k, 1, w) + d2v<N>(u + k, g.nxs, w);
      up[k] = (2.f * u[k] - up[k]) + vk * L;
    }
    return;
  }
  const float a_x = ax[j], a_z = az[i];
  const float b_x = a_x != 0.f ? bx[j] : 0.f, b_z = a_z != 0.f ? bz[i] : 0.f;
#pragma unroll
  for (int q = 0; q < Q; ++q) {
    const int k = (q0 + q) * g.plane + cell;
    float4 Ax = d2v<N>(u + k, 1, w), Az = d2v<N>(u + k, g.nxs, w);
    float4 zx = zero4(), zz = zero4();
    if (a_x != 0.f) {
      const int p = G.kx(q0 + q, i, j);
      Ax = Ax + d1v<N>(psix + p, 1, w);
      zx = b_x * zxa[p] + a_x * Ax;
      zxa[p] = zx;
    }
    if (a_z != 0.f) {
      const int p = G.kz(q0 + q, i, j);
      Az = Az + d1v<N>(psiz + p, g.nxs, w);
      zz = b_z * zza[p] + a_z * Az;
      zza[p] = zz;
    }
    const float4 L = ((Ax + Az) + zx) + zz;
    up[k] = (2.f * u[k] - up[k]) + vk * L;
  }
}

}  // namespace il
}  // namespace fwi

using namespace fwi;

#define CK(x) do { cudaError_t e_ = (x); if (e_ != cudaSuccess) { std::printf("CUDA %s at %d\n", cudaGetErrorString(e_), __LINE__); return 1; } } while (0)

template <class T>
T* dev_copy(const std::vector<T>& h) {
  T* p = nullptr;
  cudaMalloc(&p, h.size() * sizeof(T));
  cudaMemcpy(p, h.data(), h.size() * sizeof(T), cudaMemcpyHostToDevice);
  return p;
}

// (B, rows, cols) -> (B/4, rows, cols, 4)
std::vector<float> to_il(const std::vector<float>& a, int B, size_t plane) {
  std::vector<float> o(a.size());
  for (int b = 0; b < B; ++b)
    for (size_t c = 0; c < plane; ++c) o[((b / 4) * plane + c) * 4 + b % 4] = a[b * plane + c];
  return o;
}

std::vector<float> from_dev(const float* p, size_t n) {
  std::vector<float> h(n);
  cudaMemcpy(h.data(), p, n * sizeof(float), cudaMemcpyDeviceToHost);
  return h;
}

double rel_diff(const std::vector<float>& ref, const std::vector<float>& il, int B, size_t plane) {
  const std::vector<float> r = to_il(ref, B, plane);
  double num = 0, den = 0;
  for (size_t e = 0; e < r.size(); ++e) {
    num += (double(r[e]) - il[e]) * (double(r[e]) - il[e]);
    den += double(r[e]) * r[e];
  }
  return std::sqrt(num / std::max(den, 1e-300));
}

int main(int argc, char** argv) {
  const int B = 8, N = 2, nz = 141, nx = 681, p = 50, T = 64;
  const int reps = argc > 1 ? std::atoi(argv[1]) : 20;
  Dims d{B, nz, nx, p, nz + 2 * p, nx + 2 * p};
  const Grid g = make_grid(d, N);
  const int W2 = 2 * g.w;
  const size_t plane = size_t(g.nzs) * g.nxs, xpl = size_t(g.nzs) * W2, zpl = size_t(W2) * g.nxs;
  const double dh = 25.0, dt = 0.002;
  Weights w{};
  const double c2[] = {-5.0 / 2, 4.0 / 3, -1.0 / 12}, c1[] = {0.0, 2.0 / 3, -1.0 / 12};
  for (int k = 0; k <= N; ++k) { w.c2[k] = float(c2[k] / (dh * dh)); w.c1[k] = float(c1[k] / dh); }
  std::mt19937 rng(1);
  std::uniform_real_distribution<float> U(-1.f, 1.f), Vd(1500.f, 4500.f);
  // coefficients: a = b - 1, b = exp(-d dt) with d growing into the PML
  auto profile = [&](int len, int inner, std::vector<float>& a, std::vector<float>& b) {
    a.assign(len, 0.f); b.assign(len, 0.f);
    for (int s = 0; s < p; ++s) {
      const double x = (p - s - 0.5) / p, dd = 40.0 * x * x, bb = std::exp(-dd * dt);
      const int lo = N + s, hi = N + p + inner + (p - 1 - s);
      b[lo] = b[hi] = float(bb); a[lo] = a[hi] = float(bb - 1.0);
    }
  };
  std::vector<float> ax, bx, az, bz;
  profile(g.nxs, nx, ax, bx);
  profile(g.nzs, nz, az, bz);
  std::vector<float> V(plane, 0.f);
  for (int i = N; i < g.nzs - N; ++i)
    for (int j = N; j < g.nxs - N; ++j) { const float v = Vd(rng); V[i * g.nxs + j] = float((v * dt) * (v * dt)); }
  // state: u, u_prev random on the padded grid (halo zero); strips zero except their PML cells
  std::vector<float> u(B * plane, 0.f), up(B * plane, 0.f);
  for (int b = 0; b < B; ++b)
    for (int i = N; i < g.nzs - N; ++i)
      for (int j = N; j < g.nxs - N; ++j) { u[b * plane + i * g.nxs + j] = U(rng); up[b * plane + i * g.nxs + j] = U(rng); }
  std::vector<float> zeros_x(B * xpl, 0.f), zeros_z(B * zpl, 0.f);
  std::vector<float> wav(B * 2000, 0.f);
  std::vector<int64_t> src(B, -1), rec(B, 0);

  float *dV = dev_copy(V), *dax = dev_copy(ax), *dbx = dev_copy(bx), *daz = dev_copy(az), *dbz = dev_copy(bz);
  float *dwav = dev_copy(wav);
  int64_t *dsrc = dev_copy(src), *drec = dev_copy(rec);
  // baseline buffers (shipped layout) and interleaved ones
  float *bu = dev_copy(u), *bup = dev_copy(up), *bpx = dev_copy(zeros_x), *bpz = dev_copy(zeros_z),
        *bzx = dev_copy(zeros_x), *bzz = dev_copy(zeros_z), *brec = dev_copy(std::vector<float>(B * 2000, 0.f));
  float *iu = dev_copy(to_il(u, B, plane)), *iup = dev_copy(to_il(up, B, plane)), *ipx = dev_copy(zeros_x),
        *ipz = dev_copy(zeros_z), *izx = dev_copy(zeros_x), *izz = dev_copy(zeros_z);
  cudaStream_t st;
  CK(cudaStreamCreate(&st));

  StepArgs a{};
  a.d = d; a.n_half = N; a.nt = 2000; a.nrec = 0; a.n0 = 0; a.nsteps = T; a.w = w;
  a.v2dt2 = dV; a.ax = dax; a.bx = dbx; a.az = daz; a.bz = dbz; a.wavelet = dwav; a.src = dsrc; a.rec = drec;
  a.u = bu; a.uprev = bup; a.psix = bpx; a.psiz = bpz; a.zx = bzx; a.zz = bzz; a.record = brec;
  a.ring = nullptr; a.lap = nullptr;

  const il::G4 G{g, B / 4, int(xpl), int(zpl)};
  const Tiling tl = make_tiling(g, N + g.p, 1);
  const Launcher launch{st, true};
  auto il_forward = [&](auto qtag) {
    constexpr int Q = decltype(qtag)::value;
    float4 *cu = reinterpret_cast<float4*>(iu), *cp = reinterpret_cast<float4*>(iup);
    const int pblocks = (pml_cells(g) + 255) / 256;
    for (int s = 0; s < T; ++s) {
      launch(il::k_psi4<N, Q>, dim3(pblocks, B / 4 / Q), dim3(256), G, w, static_cast<const float4*>(cu),
             reinterpret_cast<float4*>(ipx), reinterpret_cast<float4*>(ipz), static_cast<const float*>(dax),
             static_cast<const float*>(dbx), static_cast<const float*>(daz), static_cast<const float*>(dbz));
      dim3 grid = tile_grid(g, tl, 1);
      grid.z = B / 4 / Q;
      launch(il::k_main4<N, Q>, grid, dim3(BX, BY), G, tl, w, static_cast<const float*>(dV),
             static_cast<const float4*>(cu), cp, static_cast<const float4*>(reinterpret_cast<float4*>(ipx)),
             static_cast<const float4*>(reinterpret_cast<float4*>(ipz)), reinterpret_cast<float4*>(izx),
             reinterpret_cast<float4*>(izz), static_cast<const float*>(dax), static_cast<const float*>(dbx),
             static_cast<const float*>(daz), static_cast<const float*>(dbz));
      std::swap(cu, cp);
    }
    // T is even: u is back in iu
  };

  // correctness: 64 steps of each, from the same state
  forward_cuda(a, st);
  il_forward(std::integral_constant<int, 1>{});
  CK(cudaStreamSynchronize(st));
  CK(cudaGetLastError());
  std::printf("Q=1 rel L2 diff: u %.3e u_prev %.3e psi_x %.3e zeta_z %.3e\n",
              rel_diff(from_dev(bu, B * plane), from_dev(iu, B * plane), B, plane),
              rel_diff(from_dev(bup, B * plane), from_dev(iup, B * plane), B, plane),
              rel_diff(from_dev(bpx, B * xpl), from_dev(ipx, B * xpl), B, xpl),
              rel_diff(from_dev(bzz, B * zpl), from_dev(izz, B * zpl), B, zpl));
  il_forward(std::integral_constant<int, 2>{});
  forward_cuda(a, st);
  CK(cudaStreamSynchronize(st));
  std::printf("Q=2 rel L2 diff after 64 more steps: u %.3e zeta_x %.3e\n",
              rel_diff(from_dev(bu, B * plane), from_dev(iu, B * plane), B, plane),
              rel_diff(from_dev(bzx, B * xpl), from_dev(izx, B * xpl), B, xpl));

  cudaEvent_t e0, e1;
  cudaEventCreate(&e0);
  cudaEventCreate(&e1);
  auto time = [&](auto f) {
    std::vector<float> ts;
    for (int r = 0; r < reps; ++r) {
      cudaEventRecord(e0, st);
      f();
      cudaEventRecord(e1, st);
      cudaEventSynchronize(e1);
      float ms = 0;
      cudaEventElapsedTime(&ms, e0, e1);
      ts.push_back(ms * 1000.f / T);
    }
    std::sort(ts.begin(), ts.end());
    return ts[ts.size() / 2];
  };
  for (int k = 0; k < 2; ++k) {
    std::printf("us per forward step (8 shots, median of %d chunks of 64): shipped %.2f | float4 Q=1 %.2f | Q=2 %.2f\n",
                reps, time([&] { forward_cuda(a, st); }),
                time([&] { il_forward(std::integral_constant<int, 1>{}); }),
                time([&] { il_forward(std::integral_constant<int, 2>{}); }));
  }
  CK(cudaGetLastError());
  return 0;
}
