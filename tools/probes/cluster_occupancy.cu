// How many thread-block clusters of each size the GPU holds at once, for one-block-per-SM
// kernels of 800 threads and a given dynamic shared memory (the on-chip forward's launch shape).
//   nvcc -O3 -std=c++17 -arch=sm_90 tools/probes/cluster_occupancy.cu -o /tmp/co && /tmp/co
#include <cuda_runtime.h>

#include <cstdio>

__global__ void k_dummy(float* p) {
  extern __shared__ float sm[];
  sm[threadIdx.x] = 0.f;
  if (p) p[threadIdx.x] = sm[threadIdx.x];
}

int main() {
  cudaFuncSetAttribute(k_dummy, cudaFuncAttributeNonPortableClusterSizeAllowed, 1);
  cudaFuncSetAttribute(k_dummy, cudaFuncAttributeMaxDynamicSharedMemorySize, 227 * 1024);
  const int kb[] = {100, 160, 200, 227};
  std::printf("cluster size:");
  for (int cs = 1; cs <= 16; ++cs) std::printf(" %3d", cs);
  std::printf("\n");
  for (int s : kb) {
    std::printf("smem %3d KB: ", s);
    for (int cs = 1; cs <= 16; ++cs) {
      cudaLaunchConfig_t cfg{};
      cudaLaunchAttribute attr[1];
      attr[0].id = cudaLaunchAttributeClusterDimension;
      attr[0].val.clusterDim.x = cs;
      attr[0].val.clusterDim.y = 1;
      attr[0].val.clusterDim.z = 1;
      cfg.gridDim = dim3(cs * 16);
      cfg.blockDim = dim3(800);
      cfg.dynamicSmemBytes = static_cast<size_t>(s) * 1024;
      cfg.attrs = attr;
      cfg.numAttrs = 1;
      int n = -1;
      if (cudaOccupancyMaxActiveClusters(&n, k_dummy, &cfg) != cudaSuccess) n = -1;
      std::printf(" %3d", n);
    }
    std::printf("\n");
  }
  return 0;
}
