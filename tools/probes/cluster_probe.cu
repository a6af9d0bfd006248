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

// Tuned variant: one thread per column walks the block's rows with the z stencil in a register
// window (one shared load per row for z, 2N for x), u^{n-1} and V held in registers for the
// whole launch, the halo rows stored straight into the neighbours' shared memory as they are
// computed, and a single cluster barrier per step (it orders both this step's reads of A before
// the neighbours' next writes into A and the halo writes into B before the next step's reads).
constexpr int RC_THREADS = ((NXS + 31) / 32) * 32;
__global__ void __launch_bounds__(RC_THREADS, 1)
    k_cluster_rc(const float* __restrict__ V, float* __restrict__ u_g, float* __restrict__ up_g, int steps) {
  extern __shared__ float sm[];
  cg::cluster_group cluster = cg::this_cluster();
  const int rank = static_cast<int>(cluster.block_rank()), b = blockIdx.x / CS;
  const int r0 = rank * ROWS, nr = min(ROWS, NZS - r0);
  const int plane = (ROWS + 2 * N) * NXS;
  float* A = sm;
  float* B = sm + plane;
  for (int e = threadIdx.x; e < plane; e += blockDim.x) {
    const int r = e / NXS, c = e % NXS, gr = r0 + r - N;
    const bool in = gr >= 0 && gr < NZS;
    A[e] = in ? u_g[(b * NZS + (in ? gr : 0)) * NXS + c] : 0.f;
    B[e] = 0.f;
  }
  const int c = threadIdx.x;
  const bool col_on = c >= N && c < NXS - N;
  float prev[ROWS], vr[ROWS];
#pragma unroll
  for (int r = 0; r < ROWS; ++r) {
    const int gr = r0 + r;
    const bool on = col_on && r < nr && gr >= N && gr < NZS - N;
    prev[r] = on ? up_g[(b * NZS + gr) * NXS + c] : 0.f;
    vr[r] = on ? V[gr * NXS + c] : 0.f;
  }
  float* up_nb0 = rank > 0 ? cluster.map_shared_rank(sm, rank - 1) : nullptr;
  float* dn_nb0 = rank < CS - 1 ? cluster.map_shared_rank(sm, rank + 1) : nullptr;
  cluster.sync();
  for (int s = 0; s < steps; ++s) {
    const int boff = (s & 1) ? 0 : plane;  // offset of B (the field being written) in every block
    if (col_on) {
      float w[2 * N + 1];  // rows r-N .. r+N of A at column c
#pragma unroll
      for (int q = 0; q < 2 * N; ++q) w[q] = A[q * NXS + c];
#pragma unroll
      for (int r = 0; r < ROWS; ++r) {
        const int k = (r + N) * NXS + c;  // local row r + N
        w[2 * N] = A[k + N * NXS];
        const int gr = r0 + r;
        if (r < nr && gr >= N && gr < NZS - N) {
          float ax = c2[0] * w[N], az = c2[0] * w[N];
#pragma unroll
          for (int q = 1; q <= N; ++q) {
            ax += c2[q] * (A[k + q] + A[k - q]);
            az += c2[q] * (w[N + q] + w[N - q]);
          }
          const float nu = (2.f * w[N] - prev[r]) + vr[r] * (ax + az);
          prev[r] = w[N];
          B[k] = nu;
          if (r < N && up_nb0) up_nb0[boff + (ROWS + N + r) * NXS + c] = nu;
          if (r >= nr - N && dn_nb0) dn_nb0[boff + (r - (nr - N)) * NXS + c] = nu;
        }
#pragma unroll
        for (int q = 0; q < 2 * N; ++q) w[q] = w[q + 1];
      }
    }
    cluster.sync();
    float* t = A;
    A = B;
    B = t;
  }
  // A holds u^{n}, prev u^{n-1}
  for (int e = threadIdx.x; e < nr * NXS; e += blockDim.x) {
    const int r = e / NXS, cc = e % NXS;
    u_g[(b * NZS + r0 + r) * NXS + cc] = A[(r + N) * NXS + cc];
  }
#pragma unroll
  for (int r = 0; r < ROWS; ++r)
    if (r < nr && col_on) up_g[(b * NZS + r0 + r) * NXS + c] = prev[r];
}

// The barrier alone: what one cluster.sync per step costs with nothing else to do.
__global__ void k_sync_only(int steps) {
  cg::cluster_group cluster = cg::this_cluster();
  for (int s = 0; s < steps; ++s) cluster.sync();
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
  // microseconds per step of `run` (2000 steps), printed after `what`
  auto time_steps = [&](const char* what, auto run) {
    CHECK(cudaEventRecord(e0));
    run();
    CHECK(cudaEventRecord(e1));
    CHECK(cudaEventSynchronize(e1));
    CHECK(cudaEventElapsedTime(&ms, e0, e1));
    std::printf("%s: %.2f us per step\n", what, ms * 1000 / 2000);
  };
  reset();
  time_steps("reference (one launch per step, global memory)", [&] { ref_steps(2000); });
  reset();
  time_steps("cluster (one launch, shared memory, DSMEM halos)",
             [&] { CHECK(cudaLaunchKernelEx(&cfg, k_cluster, static_cast<const float*>(V), u2, p2, 2000)); });
  // tuned variant: correctness against 10 reference steps, then 2000 steps
  const size_t smem_rc = 2 * static_cast<size_t>(ROWS + 2 * N) * NXS * 4;
  CHECK(cudaFuncSetAttribute(k_cluster_rc, cudaFuncAttributeMaxDynamicSharedMemorySize, static_cast<int>(smem_rc)));
  CHECK(cudaFuncSetAttribute(k_cluster_rc, cudaFuncAttributeNonPortableClusterSizeAllowed, 1));
  cudaLaunchConfig_t cfg_rc = cfg;
  cfg_rc.blockDim = dim3(RC_THREADS);
  cfg_rc.dynamicSmemBytes = smem_rc;
  CHECK(cudaOccupancyMaxActiveClusters(&clusters, k_cluster_rc, &cfg_rc));
  std::printf("tuned: %d threads, smem per block %zu B, clusters that fit at once: %d\n", RC_THREADS, smem_rc, clusters);
  reset();
  ref_u = ref_steps(10);
  CHECK(cudaMemcpy(a.data(), ref_u, cells * 4, cudaMemcpyDeviceToHost));
  reset();
  CHECK(cudaLaunchKernelEx(&cfg_rc, k_cluster_rc, static_cast<const float*>(V), u2, p2, 10));
  CHECK(cudaDeviceSynchronize());
  CHECK(cudaMemcpy(c.data(), u2, cells * 4, cudaMemcpyDeviceToHost));
  diff = 0;
  for (size_t k = 0; k < cells; ++k) diff = std::fmax(diff, std::fabs(static_cast<double>(a[k]) - c[k]));
  std::printf("tuned after 10 steps: max |cluster - reference| = %.3g\n", diff);
  reset();
  time_steps("tuned cluster (register columns, one barrier per step)",
             [&] { CHECK(cudaLaunchKernelEx(&cfg_rc, k_cluster_rc, static_cast<const float*>(V), u2, p2, 2000)); });
  cudaLaunchConfig_t cfg_s = cfg_rc;
  cfg_s.dynamicSmemBytes = 0;
  time_steps("cluster barrier alone", [&] { CHECK(cudaLaunchKernelEx(&cfg_s, k_sync_only, 2000)); });
  return 0;
}
