// Op-wrapper helpers: build the launch arguments (fwi_common.h) from tensors, with checks.
// Same for both devices.
#pragma once

#include <torch/extension.h>

#include "fwi_common.h"

namespace fwi {

void forward_cpu(const StepArgs& a);
void backward_cpu(const AdjArgs& a);

inline Weights make_weights(c10::ArrayRef<double> c2, c10::ArrayRef<double> c1) {
  TORCH_CHECK(c2.size() == c1.size() && c2.size() >= 2 && c2.size() <= kMaxHalf + 1,
              "fwi: weight lists must have N+1 entries");
  Weights w{};
  for (size_t k = 0; k < c2.size(); ++k) {
    w.c2[k] = static_cast<float>(c2[k]);
    w.c1[k] = static_cast<float>(c1[k]);
  }
  return w;
}

inline float* opt_ptr(const at::Tensor& t) { return t.numel() ? t.data_ptr<float>() : nullptr; }

inline void check_f32(const at::Tensor& t, const char* name, const at::Device& dev) {
  TORCH_CHECK(t.scalar_type() == at::kFloat, "fwi: ", name, " must be float32");
  TORCH_CHECK(t.numel() == 0 || t.is_contiguous(), "fwi: ", name, " must be contiguous");
  TORCH_CHECK(t.numel() == 0 || t.device() == dev, "fwi: ", name, " is on the wrong device");
}

// Per-shot fields come in one of two layouts: (B, rows, cols) on the CPU, and on CUDA four shots
// interleaved, (ceil(B/4), rows, cols, 4) (fwi_cuda.cu, "Shots in lanes").

inline void check_field(const at::Tensor& t, int64_t b, bool lanes, int64_t rows, int64_t cols, const char* name) {
  if (lanes) {
    TORCH_CHECK(t.dim() == 4 && t.size(0) == (b + 3) / 4 && t.size(1) == rows && t.size(2) == cols && t.size(3) == 4,
                "fwi: ", name, " must be (ceil(B/4), ", rows, ", ", cols, ", 4) on CUDA (four shots interleaved) for B = ",
                b, ", got ", t.sizes());
  } else {
    TORCH_CHECK(t.dim() == 3 && t.size(0) == b && t.size(1) == rows && t.size(2) == cols, "fwi: ", name, " must be (",
                b, ", ", rows, ", ", cols, "), got ", t.sizes());
  }
}

// A per-shot tensor of exactly `shape` (records, ring chunks, lap: per shot on both devices).
inline void check_shape(const at::Tensor& t, c10::IntArrayRef shape, const char* name) {
  TORCH_CHECK(t.sizes() == shape, "fwi: ", name, " must be ", shape, ", got ", t.sizes());
}

// Source (B) and receiver (B, R) flat indices: int64, on the compute device.
inline void check_indices(const at::Tensor& src, const at::Tensor& rec, int64_t b, const at::Device& dev) {
  TORCH_CHECK(src.scalar_type() == at::kLong && rec.scalar_type() == at::kLong, "fwi: indices must be int64");
  TORCH_CHECK(src.device() == dev && rec.device() == dev, "fwi: source/receiver indices are on the wrong device");
  TORCH_CHECK(src.numel() == b && src.is_contiguous() && rec.is_contiguous(),
              "fwi: src must hold one flat index per shot and rec be contiguous (B, R)");
}

// CPML fields in the compact strip layout of fwi_common.h: x (B, nzs, 2W), z (B, 2W, nxs) per
// shot (lanes: (ceil(B/4), ..., 4)).
inline void check_strips(const at::Tensor& x, const at::Tensor& z, const Dims& d, int64_t n, bool lanes,
                         const char* name) {
  const int64_t w2 = 2 * strip_width(d.p, n), nzs = d.nzp + 2 * n, nxs = d.nxp + 2 * n;
  TORCH_CHECK(d.nz >= 2 * n && d.nx >= 2 * n, "fwi: the interior must be at least 2N cells each way");
  check_field(x, d.b, lanes, nzs, w2, name);
  check_field(z, d.b, lanes, w2, nxs, name);
}

// Sizes shared by StepArgs and AdjArgs: from a storage-grid field ((B, nzs, nxs), or with lanes
// (ceil(B/4), nzs, nxs, 4)), the PML width, the (B, nt) wavelet, the (B, R) receivers and the
// chunk's steps.
template <class Args>
void set_sizes(Args& a, const at::Tensor& field, bool lanes, const at::Tensor& wavelet, const at::Tensor& rec,
               int64_t n0, int64_t nsteps, int64_t pml, c10::ArrayRef<double> c2) {
  const int64_t n = static_cast<int64_t>(c2.size()) - 1;
  a.n_half = static_cast<int>(n);
  TORCH_CHECK(wavelet.dim() == 2 && rec.dim() == 2 && rec.size(0) == wavelet.size(0),
              "fwi: wavelet must be (B, nt) and rec (B, R)");
  TORCH_CHECK(field.dim() == (lanes ? 4 : 3), "fwi: the wavefield must be ",
              lanes ? "(ceil(B/4), nzs, nxs, 4) on CUDA" : "(B, nzs, nxs) on the CPU");
  a.d.b = wavelet.size(0);
  a.d.p = pml;
  a.d.nzp = field.size(1) - 2 * n;
  a.d.nxp = field.size(2) - 2 * n;
  a.d.nz = a.d.nzp - 2 * pml;
  a.d.nx = a.d.nxp - 2 * pml;
  a.nt = wavelet.size(1);
  a.nrec = rec.size(1);
  a.n0 = n0;
  a.nsteps = nsteps;
  TORCH_CHECK(n0 >= 0 && n0 + nsteps <= a.nt, "fwi: steps out of range");
}

// Shapes: v2dt2 (nzs, nxs); ax, bx (nxs); az, bz (nzs); wavelet (B, nt); src (B) and
// rec (B, R) flat padded indices; u.. (B, nzs, nxs), on CUDA (ceil(B/4), nzs, nxs, 4); record (B, nt, R).
inline StepArgs make_step_args(const at::Tensor& v2dt2, const at::Tensor& ax, const at::Tensor& bx,
                               const at::Tensor& az, const at::Tensor& bz, const at::Tensor& wavelet,
                               const at::Tensor& src, const at::Tensor& rec, const at::Tensor& u,
                               const at::Tensor& uprev, const at::Tensor& psix, const at::Tensor& psiz,
                               const at::Tensor& zx, const at::Tensor& zz, const at::Tensor& record,
                               const at::Tensor& ring, const at::Tensor& lap, int64_t n0, int64_t nsteps,
                               int64_t pml, c10::ArrayRef<double> c2, c10::ArrayRef<double> c1, bool lanes) {
  const auto dev = v2dt2.device();
  for (auto* pr : {&v2dt2, &ax, &bx, &az, &bz, &wavelet, &u, &uprev, &psix, &psiz, &zx, &zz, &record, &ring, &lap})
    check_f32(*pr, "state tensor", dev);
  StepArgs a{};
  set_sizes(a, u, lanes, wavelet, rec, n0, nsteps, pml, c2);
  check_indices(src, rec, a.d.b, dev);
  const int64_t n = a.n_half, C = 2 * n * (a.d.nz + a.d.nx);
  check_shape(record, {a.d.b, a.nt, a.nrec}, "record");
  TORCH_CHECK(ring.numel() == 0 || (ring.dim() == 3 && ring.size(0) >= nsteps && ring.size(1) == a.d.b &&
                                    ring.size(2) == C),
              "fwi: ring chunk must be (T >= nsteps, B, 2N(nz + nx)), got ", ring.sizes());
  TORCH_CHECK(lap.numel() == 0 || (lap.dim() == 4 && lap.size(0) >= nsteps && lap.size(1) == a.d.b &&
                                   lap.size(2) == a.d.nz && lap.size(3) == a.d.nx),
              "fwi: lap chunk must be (T >= nsteps, B, nz, nx), got ", lap.sizes());
  a.w = make_weights(c2, c1);
  check_field(u, a.d.b, lanes, a.d.nzp + 2 * n, a.d.nxp + 2 * n, "u");
  check_field(uprev, a.d.b, lanes, a.d.nzp + 2 * n, a.d.nxp + 2 * n, "uprev");
  check_strips(psix, psiz, a.d, n, lanes, "psi");
  check_strips(zx, zz, a.d, n, lanes, "zeta");
  a.v2dt2 = v2dt2.data_ptr<float>(); a.ax = ax.data_ptr<float>(); a.bx = bx.data_ptr<float>();
  a.az = az.data_ptr<float>(); a.bz = bz.data_ptr<float>(); a.wavelet = wavelet.data_ptr<float>();
  a.src = src.data_ptr<int64_t>(); a.rec = rec.data_ptr<int64_t>();
  a.u = u.data_ptr<float>(); a.uprev = uprev.data_ptr<float>();
  a.psix = psix.data_ptr<float>(); a.psiz = psiz.data_ptr<float>();
  a.zx = zx.data_ptr<float>(); a.zz = zz.data_ptr<float>(); a.record = record.data_ptr<float>();
  a.ring = opt_ptr(ring); a.lap = opt_ptr(lap);
  return a;
}

inline AdjArgs make_adj_args(const at::Tensor& v2dt2, const at::Tensor& ax, const at::Tensor& bx,
                             const at::Tensor& az, const at::Tensor& bz, const at::Tensor& wavelet,
                             const at::Tensor& src, const at::Tensor& rec, const at::Tensor& grad_record,
                             const at::Tensor& lam, const at::Tensor& lamprev, const at::Tensor& px,
                             const at::Tensor& pz, const at::Tensor& zx, const at::Tensor& zz,
                             const at::Tensor& grad, const at::Tensor& ua, const at::Tensor& ub,
                             const at::Tensor& ring, const at::Tensor& lap, int64_t n0, int64_t nsteps,
                             int64_t pml, bool boundary, c10::ArrayRef<double> c2, c10::ArrayRef<double> c1,
                             bool lanes) {
  const auto dev = v2dt2.device();
  for (auto* pr : {&v2dt2, &ax, &bx, &az, &bz, &wavelet, &grad_record, &lam, &lamprev, &px, &pz, &zx, &zz, &grad,
                   &ua, &ub, &ring, &lap})
    check_f32(*pr, "adjoint tensor", dev);
  AdjArgs a{};
  set_sizes(a, lam, lanes, wavelet, rec, n0, nsteps, pml, c2);
  check_indices(src, rec, a.d.b, dev);
  const int64_t n = a.n_half, C = 2 * n * (a.d.nz + a.d.nx);
  a.boundary = boundary;
  check_shape(grad_record, {a.d.b, a.nt, a.nrec}, "grad_record");
  if (boundary) {
    TORCH_CHECK(ring.dim() == 3 && ring.size(0) >= nsteps && ring.size(1) == a.d.b && ring.size(2) == C,
                "fwi: ring chunk must be (T >= nsteps, B, 2N(nz + nx)), got ", ring.sizes());
    check_field(ua, a.d.b, lanes, a.d.nz + 2 * n, a.d.nx + 2 * n, "ua (reconstruction frame)");
    check_field(ub, a.d.b, lanes, a.d.nz + 2 * n, a.d.nx + 2 * n, "ub (reconstruction frame)");
  } else {
    TORCH_CHECK(lap.dim() == 4 && lap.size(0) >= nsteps && lap.size(1) == a.d.b && lap.size(2) == a.d.nz &&
                    lap.size(3) == a.d.nx,
                "fwi: saved laplacian chunk must be (T >= nsteps, B, nz, nx), got ", lap.sizes());
  }
  a.w = make_weights(c2, c1);
  check_field(lam, a.d.b, lanes, a.d.nzp + 2 * n, a.d.nxp + 2 * n, "lam");
  check_field(lamprev, a.d.b, lanes, a.d.nzp + 2 * n, a.d.nxp + 2 * n, "lamprev");
  check_strips(px, pz, a.d, n, lanes, "pbar");
  check_strips(zx, zz, a.d, n, lanes, "zbar");
  // CUDA sums the four shots of a quad into one plane (fwi_cuda.cu)
  check_shape(grad, {lanes ? (a.d.b + 3) / 4 : a.d.b, a.d.nz, a.d.nx}, lanes ? "grad (one plane per quad of shots)"
                                                                             : "grad");
  a.v2dt2 = v2dt2.data_ptr<float>(); a.ax = ax.data_ptr<float>(); a.bx = bx.data_ptr<float>();
  a.az = az.data_ptr<float>(); a.bz = bz.data_ptr<float>(); a.wavelet = wavelet.data_ptr<float>();
  a.grad_record = grad_record.data_ptr<float>();
  a.src = src.data_ptr<int64_t>(); a.rec = rec.data_ptr<int64_t>();
  a.lam = lam.data_ptr<float>(); a.lamprev = lamprev.data_ptr<float>();
  a.px = px.data_ptr<float>(); a.pz = pz.data_ptr<float>(); a.zx = zx.data_ptr<float>(); a.zz = zz.data_ptr<float>();
  a.grad = grad.data_ptr<float>();
  a.ua = opt_ptr(ua); a.ub = opt_ptr(ub);
  a.ring = opt_ptr(ring); a.lap = opt_ptr(lap);
  return a;
}

}  // namespace fwi
