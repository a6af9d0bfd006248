// Registers the compiled propagator's ops once, for both devices (CPU here; CUDA in fwi_cuda.cu).
//
//   fwi::forward_steps  advances the wavefield nsteps steps from step n0, writing the record,
//                       the boundary ring of u^n (boundary strategy) or the interior L^n (full).
//   fwi::backward_steps advances the adjoint nsteps steps backwards (steps n0+nsteps-1 .. n0),
//                       accumulating dJ/d(v dt)^2 per shot, reconstructing u (boundary strategy).
//                       (The CUDA kernels sum the four shots of a quad into one (nz, nx) plane,
//                       accumulate V dJ/dV and divide by V in the call that reaches step 0, so
//                       the gradient is complete only after that call.)
// Both swap their leapfrog buffer pairs once per step: after an odd nsteps the caller swaps.
#include <torch/extension.h>

#include "fwi_launch.h"

namespace fwi {

void forward_steps_cpu(const at::Tensor& v2dt2, const at::Tensor& ax, const at::Tensor& bx, const at::Tensor& az,
                       const at::Tensor& bz, const at::Tensor& wavelet, const at::Tensor& src, const at::Tensor& rec,
                       const at::Tensor& u, const at::Tensor& uprev, const at::Tensor& psix, const at::Tensor& psiz,
                       const at::Tensor& zx, const at::Tensor& zz, const at::Tensor& record, const at::Tensor& ring,
                       const at::Tensor& lap, int64_t n0, int64_t nsteps, int64_t pml, c10::ArrayRef<double> c2,
                       c10::ArrayRef<double> c1) {
  forward_cpu(make_step_args(v2dt2, ax, bx, az, bz, wavelet, src, rec, u, uprev, psix, psiz, zx, zz, record, ring,
                             lap, n0, nsteps, pml, c2, c1, false));
}

void backward_steps_cpu(const at::Tensor& v2dt2, const at::Tensor& ax, const at::Tensor& bx, const at::Tensor& az,
                        const at::Tensor& bz, const at::Tensor& wavelet, const at::Tensor& src, const at::Tensor& rec,
                        const at::Tensor& grad_record, const at::Tensor& lam, const at::Tensor& lamprev,
                        const at::Tensor& px, const at::Tensor& pz, const at::Tensor& zx, const at::Tensor& zz,
                        const at::Tensor& grad, const at::Tensor& ua, const at::Tensor& ub, const at::Tensor& ring,
                        const at::Tensor& lap, int64_t n0, int64_t nsteps, int64_t pml, bool boundary,
                        c10::ArrayRef<double> c2, c10::ArrayRef<double> c1) {
  backward_cpu(make_adj_args(v2dt2, ax, bx, az, bz, wavelet, src, rec, grad_record, lam, lamprev, px, pz, zx, zz,
                             grad, ua, ub, ring, lap, n0, nsteps, pml, boundary, c2, c1, false));
}

TORCH_LIBRARY(fwi, m) {
  m.def(
      "forward_steps(Tensor v2dt2, Tensor ax, Tensor bx, Tensor az, Tensor bz, Tensor wavelet, Tensor src, "
      "Tensor rec, Tensor(a!) u, Tensor(b!) uprev, Tensor(c!) psix, Tensor(d!) psiz, Tensor(e!) zx, "
      "Tensor(f!) zz, Tensor(g!) record, Tensor(h!) ring, Tensor(i!) lap, int n0, int nsteps, int pml, "
      "float[] c2, float[] c1) -> ()");
  m.def(
      "backward_steps(Tensor v2dt2, Tensor ax, Tensor bx, Tensor az, Tensor bz, Tensor wavelet, Tensor src, "
      "Tensor rec, Tensor grad_record, Tensor(a!) lam, Tensor(b!) lamprev, Tensor(c!) px, Tensor(d!) pz, "
      "Tensor(e!) zx, Tensor(f!) zz, Tensor(g!) grad, Tensor(h!) ua, Tensor(i!) ub, Tensor ring, Tensor lap, "
      "int n0, int nsteps, int pml, bool boundary, float[] c2, float[] c1) -> ()");
}

TORCH_LIBRARY_IMPL(fwi, CPU, m) {
  m.impl("forward_steps", &forward_steps_cpu);
  m.impl("backward_steps", &backward_steps_cpu);
}

}  // namespace fwi
