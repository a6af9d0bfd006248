// Feasibility probe for an on-chip time step (docs/internals.md, "A sketch of that design"):
// one seed-size shot per thread-block cluster, its rows split into bands held in shared memory,
// the N-row halos pushed to the neighbouring blocks through distributed shared memory, one
// cluster barrier per step. Interior-style stencil only (no CPML): it measures what the
// barrier and the halo exchange cost, not the full operator.
//
//   nvcc -O3 -std=c++17 -arch=sm_90 tools/probes/cluster_probe.cu -o /tmp/cluster_probe && /tmp/cluster_probe
//   (-DCLUSTER=8 -DV_SMEM=0: portable clusters of 8, V read from global memory to fit)
//
// Prints how many clusters fit at once, the largest difference from a one-launch-per-step
// global-memory reference after a few steps (0 or rounding-level: same arithmetic) and the
// microseconds per step of both for 8 shots of 245 x 785 storage cells (the seed problem with
// PML 50 and N = 2).
#include <cooperative_groups.h>
#include <cuda_runtime.h>

#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <vector>

namespace cg = cooperative_groups;

constexpr int N = 2;         // stencil half-width (spatial order 4)
constexpr int NZS = 245;     // storage rows of one seed shot
constexpr int NXS = 785;     // storage columns
constexpr int SHOTS = 8;
#ifndef CLUSTER
#define CLUSTER 16
#endif
#ifndef V_SMEM
#define V_SMEM 1
#endif
constexpr int CS = CLUSTER;  // blocks per cluster (16: non-portable size)
constexpr int THREADS = 1024;
constexpr int ROWS = (NZS + CS - 1) / CS;  // rows per block (the last block has fewer)
__constant__ float c2[N + 1] = {-2.5f, 4.f / 3.f, -1.f / 12.f};

#define CHECK(x)                                                                  \
  do {                                                                            \
    cudaError_t e_ = (x);                                                         \
    if (e_ != cudaSuccess) {                                                      \
      std::printf("%s failed: %s\n", #x, cudaGetErrorString(e_));                 \
      std::exit(1);                                                               \
    }                                                                             \
  } while (0)

__device__ __forceinline__ float lap(const float* f, int k, int ld) {
  float ax = c2[0] * f[k], az = c2[0] * f[k];
#pragma unroll
  for (int q = 1; q <= N; ++q) {
    ax += c2[q] * (f[k + q] + f[k - q]);
    az += c2[q] * (f[k + q * ld] + f[k - q * ld]);
  }
  return ax + az;
}

// Reference: one launch per step, fields in global memory; cells within N of the edge stay 0.
__global__ void k_ref(const float* __restrict__ V, const float* __restrict__ u, float* __restrict__ up) {
  const int j = blockIdx.x * blockDim.x + threadIdx.x, i = blockIdx.y, b = blockIdx.z;
  if (j < N || j >= NXS - N || i < N || i >= NZS - N) return;
  const int k = (b * NZS + i) * NXS + j;
  up[k] = (2.f * u[k] - up[k]) + V[i * NXS + j] * lap(u, k, NXS);
}

// One cluster per shot, `steps` steps in one launch. Block `rank` owns storage rows
// [rank * ROWS, min(NZS, (rank + 1) * ROWS)); its shared arrays hold those rows plus N halo rows
// above and below (local row r <-> storage row r0 + r - N).
__global__ void k_cluster(const float* __restrict__ V, float* __restrict__ u_g, float* __restrict__ up_g,
                          int steps) {
  extern __shared__ float sm[];
  cg::cluster_group cluster = cg::this_cluster();
  const int rank = static_cast<int>(cluster.block_rank()), b = blockIdx.x / CS;
  const int r0 = rank * ROWS, nr = min(ROWS, NZS - r0);  // owned rows
  const int plane = (ROWS + 2 * N) * NXS;
  float* A = sm;          // current field (u^n), with halos
  float* B = sm + plane;  // previous field (u^{n-1}), overwritten with u^{n+1}
  float* Vs = V_SMEM ? sm + 2 * plane : nullptr;
  // load owned rows and halos (rows outside the grid are 0)
  for (int e = threadIdx.x; e < plane; e += blockDim.x) {
    const int r = e / NXS, c = e % NXS, gr = r0 + r - N;
    const bool in = gr >= 0 && gr < NZS;
    const int k = (b * NZS + (in ? gr : 0)) * NXS + c;
    A[e] = in ? u_g[k] : 0.f;
    B[e] = in ? up_g[k] : 0.f;
    if (V_SMEM) Vs[e] = in ? V[(in ? gr : 0) * NXS + c] : 0.f;
  }
  cluster.sync();
  for (int s = 0; s < steps; ++s) {
    for (int e = threadIdx.x; e < nr * NXS; e += blockDim.x) {
      const int r = e / NXS + N, c = e % NXS, gr = r0 + r - N;
      if (c < N || c >= NXS - N || gr < N || gr >= NZS - N) continue;
      const int k = r * NXS + c;
      B[k] = (2.f * A[k] - B[k]) + (V_SMEM ? Vs[k] : V[gr * NXS + c]) * lap(A, k, NXS);
    }
    __syncthreads();  // this block's new rows are written
    // push the first N and last N owned rows of the new field into the neighbours' halos
    float* up_nb = rank > 0 ? cluster.map_shared_rank(B, rank - 1) : nullptr;
    float* dn_nb = rank < CS - 1 ? cluster.map_shared_rank(B, rank + 1) : nullptr;
    for (int e = threadIdx.x; e < N * NXS; e += blockDim.x) {
      const int r = e / NXS, c = e % NXS;
      if (up_nb) up_nb[(ROWS + N + r) * NXS + c] = B[(N + r) * NXS + c];          // my top rows -> its bottom halo
      if (dn_nb && nr >= N) dn_nb[r * NXS + c] = B[(nr + r) * NXS + c];        // my bottom rows -> its top halo
    }
    cluster.sync();  // halos in place before the next step reads them
    float* t = A;
    A = B;
    B = t;
  }
  for (int e = threadIdx.x; e < nr * NXS; e += blockDim.x) {
    const int r = e / NXS + N, c = e % NXS, k = (b * NZS + r0 + r - N) * NXS + c;
    u_g[k] = A[r * NXS + c];
    up_g[k] = B[r * NXS + c];
  }
}

int main() {
  const size_t cells = static_cast<size_t>(SHOTS) * NZS * NXS;
  std::vector<float> h(cells), hv(static_cast<size_t>(NZS) * NXS, 0.2f);
  srand(1);
  for (auto& x : h) x = static_cast<float>(rand()) / RAND_MAX - 0.5f;
  for (int b = 0; b < SHOTS; ++b)  // zero the N-cell edge, as the reference keeps it
    for (int i = 0; i < NZS; ++i)
      for (int j = 0; j < NXS; ++j)
        if (i < N || i >= NZS - N || j < N || j >= NXS - N) h[(static_cast<size_t>(b) * NZS + i) * NXS + j] = 0.f;
  float *V, *u1, *p1, *u2, *p2;
  CHECK(cudaMalloc(&V, hv.size() * 4));
  for (float** p : {&u1, &p1, &u2, &p2}) CHECK(cudaMalloc(p, cells * 4));
  CHECK(cudaMemcpy(V, hv.data(), hv.size() * 4, cudaMemcpyHostToDevice));
  auto reset = [&]() {
    for (float* p : {u1, u2}) CHECK(cudaMemcpy(p, h.data(), cells * 4, cudaMemcpyHostToDevice));
    for (float* p : {p1, p2}) CHECK(cudaMemset(p, 0, cells * 4));
  };
  const size_t smem = (V_SMEM ? 3 : 2) * static_cast<size_t>(ROWS + 2 * N) * NXS * 4;
  CHECK(cudaFuncSetAttribute(k_cluster, cudaFuncAttributeMaxDynamicSharedMemorySize, static_cast<int>(smem)));
  CHECK(cudaFuncSetAttribute(k_cluster, cudaFuncAttributeNonPortableClusterSizeAllowed, 1));
  cudaLaunchConfig_t cfg{};
  cudaLaunchAttribute attr[1];
  attr[0].id = cudaLaunchAttributeClusterDimension;
  attr[0].val.clusterDim.x = CS;
  attr[0].val.clusterDim.y = 1;
  attr[0].val.clusterDim.z = 1;
  cfg.gridDim = dim3(SHOTS * CS);
  cfg.blockDim = dim3(THREADS);
  cfg.dynamicSmemBytes = smem;
  cfg.attrs = attr;
  cfg.numAttrs = 1;
  int clusters = 0;
  CHECK(cudaOccupancyMaxActiveClusters(&clusters, k_cluster, &cfg));
  std::printf("smem per block %zu B, clusters of %d that fit at once: %d (need %d)\n", smem, CS, clusters, SHOTS);
  const dim3 rg((NXS + 127) / 128, NZS, SHOTS);
  auto ref_steps = [&](int steps) {
    float *a = u1, *p = p1;
    for (int s = 0; s < steps; ++s) {
      k_ref<<<rg, 128>>>(V, a, p);
      std::swap(a, p);
    }
    return a;  // the current field
  };
  // correctness: 10 steps both ways
  reset();
  float* ref_u = ref_steps(10);
  CHECK(cudaLaunchKernelEx(&cfg, k_cluster, static_cast<const float*>(V), u2, p2, 10));
  CHECK(cudaDeviceSynchronize());
  std::vector<float> a(cells), c(cells);
  CHECK(cudaMemcpy(a.data(), ref_u, cells * 4, cudaMemcpyDeviceToHost));
  CHECK(cudaMemcpy(c.data(), u2, cells * 4, cudaMemcpyDeviceToHost));
  double diff = 0, mag = 0;
  for (size_t k = 0; k < cells; ++k) {
    diff = std::fmax(diff, std::fabs(static_cast<double>(a[k]) - c[k]));
    mag = std::fmax(mag, std::fabs(static_cast<double>(a[k])));
  }
  std::printf("after 10 steps: max |cluster - reference| = %.3g (max |u| %.3g)\n", diff, mag);
  // timing: 2000 steps
  cudaEvent_t e0, e1;
  CHECK(cudaEventCreate(&e0));
  CHECK(cudaEventCreate(&e1));
  float ms = 0;
  reset();
  CHECK(cudaEventRecord(e0));
  ref_steps(2000);
  CHECK(cudaEventRecord(e1));
  CHECK(cudaEventSynchronize(e1));
  CHECK(cudaEventElapsedTime(&ms, e0, e1));
  std::printf("reference (one launch per step, global memory): %.2f us per step\n", ms * 1000 / 2000);
  reset();
  CHECK(cudaEventRecord(e0));
  CHECK(cudaLaunchKernelEx(&cfg, k_cluster, static_cast<const float*>(V), u2, p2, 2000));
  CHECK(cudaEventRecord(e1));
  CHECK(cudaEventSynchronize(e1));
  CHECK(cudaEventElapsedTime(&ms, e0, e1));
  std::printf("cluster (one launch, shared memory, DSMEM halos): %.2f us per step\n", ms * 1000 / 2000);
  return 0;
}
