// What the L2 cache of the GPU delivers to kernels shaped like ours (scalar fp32 loads, one cell
// per thread, coalesced rows), when the data fit in L2: is 234 MB per seed step through L2 in
// ~44 us (5.3 TB/s) near the ceiling? Copies and read-only sweeps over footprints from 6 to
// 96 MB, several sweeps per launch (>= ~50 us) and launches for ~20 ms, reported as TB/s of
// bytes loaded + stored.
//   nvcc -O3 -std=c++17 -arch=sm_90 tools/probes/l2bw.cu -o /tmp/l2bw && /tmp/l2bw
#include <cuda_runtime.h>

#include <cstdio>

__global__ void k_copy(const float* __restrict__ a, float* __restrict__ b, int n, int passes) {
  for (int p = 0; p < passes; ++p)
  for (int i = blockIdx.x * blockDim.x + threadIdx.x; i < n; i += gridDim.x * blockDim.x) b[i] = a[i] * 1.0001f;
}

__global__ void k_read(const float* __restrict__ a, float* __restrict__ out, int n, int passes) {
  float s = 0.f;
  for (int p = 0; p < passes; ++p)
  for (int i = blockIdx.x * blockDim.x + threadIdx.x; i < n; i += gridDim.x * blockDim.x) s += a[i];
  if (s == 12345.f) out[0] = s;  // keeps the loads
}

// 3 fields read, 1 written per cell (like k_main's u, u_prev, V -> u_prev)
__global__ void k_3r1w(const float* __restrict__ a, const float* __restrict__ c, float* __restrict__ b, int n,
                       int passes) {
  for (int p = 0; p < passes; ++p)
  for (int i = blockIdx.x * blockDim.x + threadIdx.x; i < n; i += gridDim.x * blockDim.x) b[i] = 2.f * a[i] - b[i] + c[i];
}

int main() {
  int sms = 0;
  cudaDeviceGetAttribute(&sms, cudaDevAttrMultiProcessorCount, 0);
  int l2 = 0;
  cudaDeviceGetAttribute(&l2, cudaDevAttrL2CacheSize, 0);
  std::printf("SMs %d, L2 %d MB\n", sms, l2 >> 20);
  const int mbs[] = {6, 12, 24, 36, 48, 96};
  float *a, *b, *c, *o;
  const size_t maxn = 96ull << 20;  // floats: 384 MB each, plenty
  cudaMalloc(&a, maxn * 4);
  cudaMalloc(&b, maxn * 4);
  cudaMalloc(&c, maxn * 4);
  cudaMalloc(&o, 4);
  cudaMemset(a, 0, maxn * 4);
  cudaMemset(b, 0, maxn * 4);
  cudaMemset(c, 0, maxn * 4);
  cudaEvent_t e0, e1;
  cudaEventCreate(&e0);
  cudaEventCreate(&e1);
  const int grid = sms * 8, block = 256;
  std::printf("footprint MB | copy TB/s | read TB/s | 3 read + 1 write TB/s\n");
  for (int mb : mbs) {
    float t[3];
    for (int kind = 0; kind < 3; ++kind) {
      const int arrays = kind == 0 ? 2 : kind == 1 ? 1 : 3;
      const int n = static_cast<int>((static_cast<size_t>(mb) << 20) / 4 / arrays);
      const double bytes = kind == 0 ? 8.0 * n : kind == 1 ? 4.0 * n : 16.0 * n;
      const int passes = static_cast<int>(50e-6 * 5e12 / bytes) + 1;  // >= ~50 us per launch
      const int reps = static_cast<int>(20e-3 * 5e12 / (bytes * passes)) + 5;
      for (int w = 0; w < 3; ++w) {  // warm the cache
        if (kind == 0) k_copy<<<grid, block>>>(a, b, n, passes);
        if (kind == 1) k_read<<<grid, block>>>(a, o, n, passes);
        if (kind == 2) k_3r1w<<<grid, block>>>(a, c, b, n, passes);
      }
      cudaEventRecord(e0);
      for (int r = 0; r < reps; ++r) {
        if (kind == 0) k_copy<<<grid, block>>>(a, b, n, passes);
        if (kind == 1) k_read<<<grid, block>>>(a, o, n, passes);
        if (kind == 2) k_3r1w<<<grid, block>>>(a, c, b, n, passes);
      }
      cudaEventRecord(e1);
      cudaEventSynchronize(e1);
      float ms = 0;
      cudaEventElapsedTime(&ms, e0, e1);
      t[kind] = static_cast<float>(bytes * passes * reps / (ms * 1e-3) / 1e12);
    }
    std::printf("%12d | %9.2f | %9.2f | %9.2f\n", mb, t[0], t[1], t[2]);
  }
  cudaError_t err = cudaGetLastError();
  if (err != cudaSuccess) std::printf("error: %s\n", cudaGetErrorString(err));
  return 0;
}
