// CUDA registration of the fwi ops (built only when the device is CUDA): tensor checks,
// device guard, torch's current stream, then the launchers of fwi_cuda.cu.
#include <c10/cuda/CUDAGuard.h>
#include <c10/cuda/CUDAStream.h>
#include <torch/extension.h>

#include "fwi_codec.h"
#include "fwi_launch.h"

namespace fwi {
namespace {

void forward_steps_cuda(const at::Tensor& v2dt2, const at::Tensor& ax, const at::Tensor& bx, const at::Tensor& az,
                        const at::Tensor& bz, const at::Tensor& wavelet, const at::Tensor& src, const at::Tensor& rec,
                        const at::Tensor& u, const at::Tensor& uprev, const at::Tensor& psix, const at::Tensor& psiz,
                        const at::Tensor& zx, const at::Tensor& zz, const at::Tensor& record, const at::Tensor& ring,
                        const at::Tensor& lap, int64_t n0, int64_t nsteps, int64_t pml, c10::ArrayRef<double> c2,
                        c10::ArrayRef<double> c1) {
  const c10::cuda::CUDAGuard guard(u.device());
  forward_cuda(make_step_args(v2dt2, ax, bx, az, bz, wavelet, src, rec, u, uprev, psix, psiz, zx, zz, record, ring,
                              lap, n0, nsteps, pml, c2, c1, true),
               c10::cuda::getCurrentCUDAStream(u.device().index()).stream());
}

void backward_steps_cuda(const at::Tensor& v2dt2, const at::Tensor& ax, const at::Tensor& bx, const at::Tensor& az,
                         const at::Tensor& bz, const at::Tensor& wavelet, const at::Tensor& src, const at::Tensor& rec,
                         const at::Tensor& grad_record, const at::Tensor& lam, const at::Tensor& lamprev,
                         const at::Tensor& px, const at::Tensor& pz, const at::Tensor& zx, const at::Tensor& zz,
                         const at::Tensor& grad, const at::Tensor& ua, const at::Tensor& ub, const at::Tensor& ring,
                         const at::Tensor& lap, int64_t n0, int64_t nsteps, int64_t pml, bool boundary,
                         c10::ArrayRef<double> c2, c10::ArrayRef<double> c1) {
  const c10::cuda::CUDAGuard guard(lam.device());
  AdjArgs a = make_adj_args(v2dt2, ax, bx, az, bz, wavelet, src, rec, grad_record, lam, lamprev, px, pz, zx, zz, grad,
                            ua, ub, ring, lap, n0, nsteps, pml, boundary, c2, c1, true);
  // the second zbar buffer of the lazy pass 3 (fwi_cuda.cu); every cell read is written first
  const at::Tensor zx2 = at::empty_like(zx), zz2 = at::empty_like(zz);
  a.zx2 = zx2.data_ptr<float>();
  a.zz2 = zz2.data_ptr<float>();
  backward_cuda(a, c10::cuda::getCurrentCUDAStream(lam.device().index()).stream());
}

void encode_int8_cuda(const at::Tensor& x, const at::Tensor& codes, const at::Tensor& scale) {
  const int64_t cells = check_codec(x, codes, scale, at::kChar, at::kFloat);
  if (cells == 0) return;
  const c10::cuda::CUDAGuard guard(x.device());
  int8_encode_cuda(x.data_ptr<float>(), codes.data_ptr<int8_t>(), scale.data_ptr<float>(), x.numel() / cells, cells,
                   c10::cuda::getCurrentCUDAStream(x.device().index()).stream());
}

void decode_int8_cuda(const at::Tensor& codes, const at::Tensor& scale, const at::Tensor& out) {
  const int64_t cells = check_codec(out, codes, scale, at::kChar, at::kFloat);
  if (cells == 0) return;
  const c10::cuda::CUDAGuard guard(out.device());
  int8_decode_cuda(codes.data_ptr<int8_t>(), scale.data_ptr<float>(), out.data_ptr<float>(), out.numel() / cells,
                   cells, c10::cuda::getCurrentCUDAStream(out.device().index()).stream());
}

void encode_fp16_cuda(const at::Tensor& x, const at::Tensor& codes, const at::Tensor& exps) {
  const int64_t cells = check_codec(x, codes, exps, at::kHalf, at::kChar);
  if (cells == 0) return;
  const c10::cuda::CUDAGuard guard(x.device());
  fp16_encode_cuda(x.data_ptr<float>(), reinterpret_cast<uint16_t*>(codes.data_ptr<c10::Half>()),
                   exps.data_ptr<int8_t>(), x.numel() / cells, cells,
                   c10::cuda::getCurrentCUDAStream(x.device().index()).stream());
}

void decode_fp16_cuda(const at::Tensor& codes, const at::Tensor& exps, const at::Tensor& out) {
  const int64_t cells = check_codec(out, codes, exps, at::kHalf, at::kChar);
  if (cells == 0) return;
  const c10::cuda::CUDAGuard guard(out.device());
  fp16_decode_cuda(reinterpret_cast<const uint16_t*>(codes.data_ptr<c10::Half>()), exps.data_ptr<int8_t>(),
                   out.data_ptr<float>(), out.numel() / cells, cells,
                   c10::cuda::getCurrentCUDAStream(out.device().index()).stream());
}

}  // namespace

TORCH_LIBRARY_IMPL(fwi, CUDA, m) {
  m.impl("forward_steps", &forward_steps_cuda);
  m.impl("backward_steps", &backward_steps_cuda);
  m.impl("ring_encode_int8", &encode_int8_cuda);
  m.impl("ring_decode_int8", &decode_int8_cuda);
  m.impl("ring_encode_fp16", &encode_fp16_cuda);
  m.impl("ring_decode_fp16", &decode_fp16_cuda);
}

}  // namespace fwi
