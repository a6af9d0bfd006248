// Fused ring codecs: the CPU implementations and the tensor checks shared with the CUDA ops
// (math in fwi_common.h; CUDA kernels in fwi_codec_cuda.cu).
//
//   fwi::ring_encode_int8(x, codes, scale)  x (T, B, C) float32 -> codes (T, B, C) int8 and
//                                           scale (T, B, ceil(C / 256)) float32
//   fwi::ring_decode_int8(codes, scale, out)  out (T, B, C) float32 = code * scale of its block
//   fwi::ring_encode_fp16(x, codes, exps)   codes (T, B, C) float16, exps (T, B, ceil(C / 256)) int8
//   fwi::ring_decode_fp16(codes, exps, out)   out = code * 2^e of its block
#include "fwi_codec.h"

#include <cmath>

namespace fwi {

int64_t check_codec(const at::Tensor& values, const at::Tensor& codes, const at::Tensor& scale,
                    at::ScalarType code_dtype, at::ScalarType side_dtype) {
  TORCH_CHECK(values.scalar_type() == at::kFloat && codes.scalar_type() == code_dtype &&
                  scale.scalar_type() == side_dtype,
              "fwi: a ring codec takes float32 values, ", code_dtype, " codes and ", side_dtype, " block values");
  TORCH_CHECK(values.is_contiguous() && codes.is_contiguous() && scale.is_contiguous(),
              "fwi: the ring codecs need contiguous tensors");
  TORCH_CHECK(values.sizes() == codes.sizes() && values.dim() >= 1, "fwi: values and codes must have one shape");
  const int64_t cells = values.size(-1), nblk = (cells + kCodecBlock - 1) / kCodecBlock;
  TORCH_CHECK(scale.numel() * cells == values.numel() * nblk, "fwi: a codec needs ceil(C / 256) block values per row");
  TORCH_CHECK(codes.device() == values.device() && scale.device() == values.device(),
              "fwi: codec tensors on different devices");
  return cells;
}

namespace {

// The absmax of row[a..b) and whether every value there is finite.
inline float block_absmax(const float* row, int64_t a, int64_t b, bool* finite) {
  float m = 0.f;
  bool ok = true;
  for (int64_t c = a; c < b; ++c) {
    ok = ok && std::isfinite(row[c]);
    m = fmaxf(m, fabsf(row[c]));
  }
  *finite = ok;
  return m;
}

void encode_cpu(const at::Tensor& x, const at::Tensor& codes, const at::Tensor& scale) {
  const int64_t cells = check_codec(x, codes, scale, at::kChar, at::kFloat);
  if (cells == 0) return;
  const int64_t rows = x.numel() / cells, nblk = (cells + kCodecBlock - 1) / kCodecBlock;
  const float* xp = x.data_ptr<float>();
  int8_t* cp = codes.data_ptr<int8_t>();
  float* sp = scale.data_ptr<float>();
#pragma omp parallel for schedule(static)
  for (int64_t r = 0; r < rows; ++r) {
    for (int64_t k = 0; k < nblk; ++k) {
      const int64_t a = k * kCodecBlock, b = std::min(cells, a + kCodecBlock);
      bool finite;
      const float m = block_absmax(xp + r * cells, a, b, &finite);
      const float s = int8_scale(m, finite);
      sp[r * nblk + k] = s;
      for (int64_t c = a; c < b; ++c) cp[r * cells + c] = int8_code(xp[r * cells + c], s);
    }
  }
}

void decode_cpu(const at::Tensor& codes, const at::Tensor& scale, const at::Tensor& out) {
  const int64_t cells = check_codec(out, codes, scale, at::kChar, at::kFloat);
  if (cells == 0) return;
  const int64_t rows = out.numel() / cells, nblk = (cells + kCodecBlock - 1) / kCodecBlock;
  const int8_t* cp = codes.data_ptr<int8_t>();
  const float* sp = scale.data_ptr<float>();
  float* op = out.data_ptr<float>();
#pragma omp parallel for schedule(static)
  for (int64_t r = 0; r < rows; ++r)
    for (int64_t c = 0; c < cells; ++c) op[r * cells + c] = static_cast<float>(cp[r * cells + c]) * sp[r * nblk + c / kCodecBlock];
}

void encode_fp16_cpu(const at::Tensor& x, const at::Tensor& codes, const at::Tensor& exps) {
  const int64_t cells = check_codec(x, codes, exps, at::kHalf, at::kChar);
  if (cells == 0) return;
  const int64_t rows = x.numel() / cells, nblk = (cells + kCodecBlock - 1) / kCodecBlock;
  const float* xp = x.data_ptr<float>();
  c10::Half* cp = codes.data_ptr<c10::Half>();
  int8_t* ep = exps.data_ptr<int8_t>();
#pragma omp parallel for schedule(static)
  for (int64_t r = 0; r < rows; ++r) {
    for (int64_t k = 0; k < nblk; ++k) {
      const int64_t a = k * kCodecBlock, b = std::min(cells, a + kCodecBlock);
      bool finite;
      const float m = block_absmax(xp + r * cells, a, b, &finite);
      const int e = fp16_exponent(m, finite);
      ep[r * nblk + k] = static_cast<int8_t>(e);
      const float s = pow2f(-e);
      for (int64_t c = a; c < b; ++c) cp[r * cells + c] = c10::Half(xp[r * cells + c] * s);
    }
  }
}

void decode_fp16_cpu(const at::Tensor& codes, const at::Tensor& exps, const at::Tensor& out) {
  const int64_t cells = check_codec(out, codes, exps, at::kHalf, at::kChar);
  if (cells == 0) return;
  const int64_t rows = out.numel() / cells, nblk = (cells + kCodecBlock - 1) / kCodecBlock;
  const c10::Half* cp = codes.data_ptr<c10::Half>();
  const int8_t* ep = exps.data_ptr<int8_t>();
  float* op = out.data_ptr<float>();
#pragma omp parallel for schedule(static)
  for (int64_t r = 0; r < rows; ++r)
    for (int64_t c = 0; c < cells; ++c)
      op[r * cells + c] = static_cast<float>(cp[r * cells + c]) * pow2f(ep[r * nblk + c / kCodecBlock]);
}

}  // namespace

TORCH_LIBRARY_FRAGMENT(fwi, m) {
  m.def("ring_encode_int8(Tensor x, Tensor(a!) codes, Tensor(b!) scale) -> ()");
  m.def("ring_decode_int8(Tensor codes, Tensor scale, Tensor(a!) out) -> ()");
  m.def("ring_encode_fp16(Tensor x, Tensor(a!) codes, Tensor(b!) exps) -> ()");
  m.def("ring_decode_fp16(Tensor codes, Tensor exps, Tensor(a!) out) -> ()");
}

TORCH_LIBRARY_IMPL(fwi, CPU, m) {
  m.impl("ring_encode_int8", &encode_cpu);
  m.impl("ring_decode_int8", &decode_cpu);
  m.impl("ring_encode_fp16", &encode_fp16_cpu);
  m.impl("ring_decode_fp16", &decode_fp16_cpu);
}

}  // namespace fwi
