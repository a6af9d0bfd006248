// Fused ring codecs on CUDA (int8 and fp16): one launch encodes a whole chunk (T, B, C) of ring
// values into codes and per-block sides (int8: fp32 scales; fp16: int8 exponents), one decodes it
// (math in fwi_common.h). They replace the ~10
// torch kernels per chunk of the Python codec (fwi_cli/storage/codecs.py) when the compiled
// kernels are loaded. Needs only the CUDA toolkit (compile-checked in CI without a GPU).
#include <cuda_fp16.h>
#include <cuda_runtime.h>

#include <stdexcept>
#include <string>

#include "fwi_common.h"

namespace fwi {
namespace {

// The absmax of the block's values (one per thread, 0 past the row's end) and whether all are
// finite; every thread of the block must call it.
__device__ __forceinline__ float block_absmax(float v, bool* finite) {
  __shared__ float wmax[kCodecBlock / 32];
  *finite = __syncthreads_and(isfinite(v)) != 0;
  float m = fabsf(v);
  for (int o = 16; o > 0; o >>= 1) m = fmaxf(m, __shfl_xor_sync(0xffffffffu, m, o));
  if ((threadIdx.x & 31) == 0) wmax[threadIdx.x >> 5] = m;
  __syncthreads();
  m = wmax[0];
#pragma unroll
  for (int w = 1; w < kCodecBlock / 32; ++w) m = fmaxf(m, wmax[w]);
  return m;
}

// One block of kCodecBlock threads per (row, codec block): the block's absmax by warp shuffles
// and shared memory, then each thread codes its cell.
__global__ void k_int8_encode(const float* __restrict__ x, int8_t* __restrict__ codes, float* __restrict__ scale,
                              int64_t cells, int nblk) {
  const int64_t row = blockIdx.x;
  const int64_t c = static_cast<int64_t>(blockIdx.y) * kCodecBlock + threadIdx.x;
  const float v = c < cells ? x[row * cells + c] : 0.f;
  bool finite;
  const float m = block_absmax(v, &finite);
  const float s = int8_scale(m, finite);
  if (threadIdx.x == 0) scale[row * nblk + blockIdx.y] = s;
  if (c < cells) codes[row * cells + c] = int8_code(v, s);
}

__global__ void k_int8_decode(const int8_t* __restrict__ codes, const float* __restrict__ scale,
                              float* __restrict__ out, int64_t cells, int nblk) {
  const int64_t row = blockIdx.x;
  const int64_t c = static_cast<int64_t>(blockIdx.y) * kCodecBlock + threadIdx.x;
  if (c < cells) out[row * cells + c] = static_cast<float>(codes[row * cells + c]) * scale[row * nblk + blockIdx.y];
}

// fp16: the block's absmax and whether every value is finite, then the per-block exponent.
__global__ void k_fp16_encode(const float* __restrict__ x, __half* __restrict__ codes, int8_t* __restrict__ exps,
                              int64_t cells, int nblk) {
  const int64_t row = blockIdx.x;
  const int64_t c = static_cast<int64_t>(blockIdx.y) * kCodecBlock + threadIdx.x;
  const float v = c < cells ? x[row * cells + c] : 0.f;
  bool finite;
  const float m = block_absmax(v, &finite);
  const int e = fp16_exponent(m, finite);
  if (threadIdx.x == 0) exps[row * nblk + blockIdx.y] = static_cast<int8_t>(e);
  if (c < cells) codes[row * cells + c] = __float2half_rn(v * pow2f(-e));
}

__global__ void k_fp16_decode(const __half* __restrict__ codes, const int8_t* __restrict__ exps,
                              float* __restrict__ out, int64_t cells, int nblk) {
  const int64_t row = blockIdx.x;
  const int64_t c = static_cast<int64_t>(blockIdx.y) * kCodecBlock + threadIdx.x;
  if (c < cells) out[row * cells + c] = __half2float(codes[row * cells + c]) * pow2f(exps[row * nblk + blockIdx.y]);
}

void check(cudaError_t err) {
  if (err != cudaSuccess) throw std::runtime_error(std::string("fwi: CUDA codec launch failed: ") + cudaGetErrorString(err));
}

}  // namespace

void int8_encode_cuda(const float* x, int8_t* codes, float* scale, int64_t rows, int64_t cells, void* stream) {
  const int nblk = static_cast<int>((cells + kCodecBlock - 1) / kCodecBlock);
  if (rows == 0 || nblk == 0) return;
  k_int8_encode<<<dim3(static_cast<unsigned>(rows), nblk), kCodecBlock, 0, static_cast<cudaStream_t>(stream)>>>(
      x, codes, scale, cells, nblk);
  check(cudaGetLastError());
}

void int8_decode_cuda(const int8_t* codes, const float* scale, float* out, int64_t rows, int64_t cells,
                      void* stream) {
  const int nblk = static_cast<int>((cells + kCodecBlock - 1) / kCodecBlock);
  if (rows == 0 || nblk == 0) return;
  k_int8_decode<<<dim3(static_cast<unsigned>(rows), nblk), kCodecBlock, 0, static_cast<cudaStream_t>(stream)>>>(
      codes, scale, out, cells, nblk);
  check(cudaGetLastError());
}

void fp16_encode_cuda(const float* x, uint16_t* codes, int8_t* exps, int64_t rows, int64_t cells, void* stream) {
  const int nblk = static_cast<int>((cells + kCodecBlock - 1) / kCodecBlock);
  if (rows == 0 || nblk == 0) return;
  k_fp16_encode<<<dim3(static_cast<unsigned>(rows), nblk), kCodecBlock, 0, static_cast<cudaStream_t>(stream)>>>(
      x, reinterpret_cast<__half*>(codes), exps, cells, nblk);
  check(cudaGetLastError());
}

void fp16_decode_cuda(const uint16_t* codes, const int8_t* exps, float* out, int64_t rows, int64_t cells,
                      void* stream) {
  const int nblk = static_cast<int>((cells + kCodecBlock - 1) / kCodecBlock);
  if (rows == 0 || nblk == 0) return;
  k_fp16_decode<<<dim3(static_cast<unsigned>(rows), nblk), kCodecBlock, 0, static_cast<cudaStream_t>(stream)>>>(
      reinterpret_cast<const __half*>(codes), exps, out, cells, nblk);
  check(cudaGetLastError());
}

}  // namespace fwi
