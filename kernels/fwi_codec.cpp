// Fused int8 ring codec: the CPU implementation and the tensor checks shared with the CUDA op
// (math in fwi_common.h; CUDA kernels in fwi_codec_cuda.cu).
//
//   fwi::ring_encode_int8(x, codes, scale)  x (T, B, C) float32 -> codes (T, B, C) int8 and
//                                           scale (T, B, ceil(C / 256)) float32
//   fwi::ring_decode_int8(codes, scale, out)  out (T, B, C) float32 = code * scale of its block
#include "fwi_codec.h"

#include <cmath>

namespace fwi {

int64_t check_codec(const at::Tensor& values, const at::Tensor& codes, const at::Tensor& scale) {
  TORCH_CHECK(values.scalar_type() == at::kFloat && codes.scalar_type() == at::kChar &&
                  scale.scalar_type() == at::kFloat,
              "fwi: the int8 codec takes float32 values, int8 codes and float32 scales");
  TORCH_CHECK(values.is_contiguous() && codes.is_contiguous() && scale.is_contiguous(),
              "fwi: the int8 codec needs contiguous tensors");
  TORCH_CHECK(values.sizes() == codes.sizes() && values.dim() >= 1, "fwi: values and codes must have one shape");
  const int64_t cells = values.size(-1), nblk = (cells + kCodecBlock - 1) / kCodecBlock;
  TORCH_CHECK(scale.numel() * cells == values.numel() * nblk, "fwi: scale must hold ceil(C / 256) values per row");
  TORCH_CHECK(codes.device() == values.device() && scale.device() == values.device(),
              "fwi: codec tensors on different devices");
  return cells;
}

namespace {

void encode_cpu(const at::Tensor& x, const at::Tensor& codes, const at::Tensor& scale) {
  const int64_t cells = check_codec(x, codes, scale);
  if (cells == 0) return;
  const int64_t rows = x.numel() / cells, nblk = (cells + kCodecBlock - 1) / kCodecBlock;
  const float* xp = x.data_ptr<float>();
  int8_t* cp = codes.data_ptr<int8_t>();
  float* sp = scale.data_ptr<float>();
#pragma omp parallel for schedule(static)
  for (int64_t r = 0; r < rows; ++r) {
    for (int64_t k = 0; k < nblk; ++k) {
      const int64_t a = k * kCodecBlock, b = std::min(cells, a + kCodecBlock);
      float m = 0.f;
      bool finite = true;
      for (int64_t c = a; c < b; ++c) {
        finite = finite && std::isfinite(xp[r * cells + c]);
        m = fmaxf(m, fabsf(xp[r * cells + c]));
      }
      const float s = int8_scale(m, finite);
      sp[r * nblk + k] = s;
      for (int64_t c = a; c < b; ++c) cp[r * cells + c] = int8_code(xp[r * cells + c], s);
    }
  }
}

void decode_cpu(const at::Tensor& codes, const at::Tensor& scale, const at::Tensor& out) {
  const int64_t cells = check_codec(out, codes, scale);
  if (cells == 0) return;
  const int64_t rows = out.numel() / cells, nblk = (cells + kCodecBlock - 1) / kCodecBlock;
  const int8_t* cp = codes.data_ptr<int8_t>();
  const float* sp = scale.data_ptr<float>();
  float* op = out.data_ptr<float>();
#pragma omp parallel for schedule(static)
  for (int64_t r = 0; r < rows; ++r)
    for (int64_t c = 0; c < cells; ++c) op[r * cells + c] = static_cast<float>(cp[r * cells + c]) * sp[r * nblk + c / kCodecBlock];
}

}  // namespace

TORCH_LIBRARY_FRAGMENT(fwi, m) {
  m.def("ring_encode_int8(Tensor x, Tensor(a!) codes, Tensor(b!) scale) -> ()");
  m.def("ring_decode_int8(Tensor codes, Tensor scale, Tensor(a!) out) -> ()");
}

TORCH_LIBRARY_IMPL(fwi, CPU, m) {
  m.impl("ring_encode_int8", &encode_cpu);
  m.impl("ring_decode_int8", &decode_cpu);
}

}  // namespace fwi
