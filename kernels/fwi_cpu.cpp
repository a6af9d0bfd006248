// C++/OpenMP implementation of the compiled propagator's ops (see fwi_common.h).
//
// Every per-cell array lives on the "storage grid": the padded grid plus a zero halo of N
// cells, (nzs, nxs) = (nzp + 2N, nxp + 2N), so stencils never test bounds. The halo is never
// written. Reconstruction frames live on (nz + 2N, nx + 2N): the interior plus the ring.
#include <torch/extension.h>

#include <algorithm>
#include <utility>
#include <vector>

#include "fwi_common.h"
#include "fwi_launch.h"

namespace fwi {
namespace {

template <int N>
struct Cpu {
  // ---------------------------------------------------------------- forward
  static void forward(const StepArgs& a) {
    const int64_t B = a.d.b, nzp = a.d.nzp, nxp = a.d.nxp, p = a.d.p, nz = a.d.nz, nx = a.d.nx;
    const int64_t nxs = nxp + 2 * N, nzs = nzp + 2 * N, plane = nzs * nxs;
    const float* V = a.v2dt2;
    const Weights w = a.w;
    float* u = a.u;
    float* up = a.uprev;
    for (int64_t s = 0; s < a.nsteps; ++s) {
      const int64_t n = a.n0 + s;
      // save ring(u^n)
      if (a.ring) {
        const int64_t C = 2 * N * (nz + nx);
#pragma omp parallel for collapse(2) schedule(static)
        for (int64_t b = 0; b < B; ++b)
          for (int64_t q = 0; q < C; ++q) {
            int64_t r, c;
            ring_cell(q, N, nz, nx, p + N, &r, &c);
            a.ring[(s * B + b) * C + q] = u[b * plane + r * nxs + c];
          }
      }
      // pass 1: psi in the PML strips (reads u at neighbours, psi locally)
#pragma omp parallel for collapse(2) schedule(static)
      for (int64_t b = 0; b < B; ++b)
        for (int64_t i = N; i < nzp + N; ++i) {
          const int64_t row = b * plane + i * nxs;
          const bool zp = a.az[i] != 0.f;
          for (int64_t j = N; j < nxp + N; ++j) {
            const int64_t k = row + j;
            if (a.ax[j] != 0.f) a.psix[k] = a.bx[j] * a.psix[k] + a.ax[j] * d1<N>(u + k, 1, w, N, N);
            if (zp) a.psiz[k] = a.bz[i] * a.psiz[k] + a.az[i] * d1<N>(u + k, nxs, w, N, N);
          }
        }
      // pass 2: every cell
#pragma omp parallel for collapse(2) schedule(static)
      for (int64_t b = 0; b < B; ++b)
        for (int64_t i = N; i < nzp + N; ++i) {
          const int64_t row = b * plane + i * nxs;
          const bool zp = a.az[i] != 0.f;
          const bool zin = (i >= p + N) && (i < p + N + nz);
          if (!zp) {
            // x-PML columns and interior columns of a row outside the z-PML
            for (int64_t j = N; j < nxp + N; ++j) {
              const int64_t k = row + j;
              float ax_ = d2<N>(u + k, 1, w, N, N);
              const float az_ = d2<N>(u + k, nxs, w, N, N);
              float zx = 0.f;
              if (a.ax[j] != 0.f) {
                ax_ += d1<N>(a.psix + k, 1, w, N, N);
                zx = a.bx[j] * a.zx[k] + a.ax[j] * ax_;
                a.zx[k] = zx;
              }
              const float L = ((ax_ + az_) + zx) + 0.f;
              up[k] = (2.f * u[k] - up[k]) + V[i * nxs + j] * L;
              if (a.lap && zin && j >= p + N && j < p + N + nx)
                a.lap[((s * B + b) * nz + (i - p - N)) * nx + (j - p - N)] = L;
            }
          } else {
            for (int64_t j = N; j < nxp + N; ++j) {
              const int64_t k = row + j;
              float ax_ = d2<N>(u + k, 1, w, N, N);
              const float az_ = d2<N>(u + k, nxs, w, N, N) + d1<N>(a.psiz + k, nxs, w, N, N);
              float zx = 0.f;
              if (a.ax[j] != 0.f) {
                ax_ += d1<N>(a.psix + k, 1, w, N, N);
                zx = a.bx[j] * a.zx[k] + a.ax[j] * ax_;
                a.zx[k] = zx;
              }
              const float zz = a.bz[i] * a.zz[k] + a.az[i] * az_;
              a.zz[k] = zz;
              const float L = ((ax_ + az_) + zx) + zz;
              up[k] = (2.f * u[k] - up[k]) + V[i * nxs + j] * L;
            }
          }
        }
      // source, then receivers (record[n] = u^{n+1})
      for (int64_t b = 0; b < B; ++b) {
        const int64_t k = storage_index(a.src[b], nxp, nxs, N);
        up[b * plane + k] += V[k] * a.wavelet[b * a.nt + n];
        for (int64_t r = 0; r < a.nrec; ++r)
          a.record[(b * a.nt + n) * a.nrec + r] =
              up[b * plane + storage_index(a.rec[b * a.nrec + r], nxp, nxs, N)];
      }
      std::swap(u, up);
    }
  }

  // ---------------------------------------------------------------- backward
  static void backward(const AdjArgs& a) {
    const int64_t B = a.d.b, nzp = a.d.nzp, nxp = a.d.nxp, p = a.d.p, nz = a.d.nz, nx = a.d.nx;
    const int64_t nxs = nxp + 2 * N, nzs = nzp + 2 * N, plane = nzs * nxs;
    const int64_t hx = nx + 2 * N, hplane = (nz + 2 * N) * hx;
    const float* V = a.v2dt2;
    const Weights w = a.w;
    float* lam = a.lam;
    float* lp = a.lamprev;
    float* ua = a.ua;  // u^{n+1} (interior), becomes u^{n-1}
    float* ub = a.ub;  // u^n (interior + ring)
    const int64_t C = 2 * N * (nz + nx);
    // Abar_x / Abar_z at storage index k (row i, column j)
    auto abx = [&](int64_t k, int64_t i, int64_t j) {
      const float g = V[i * nxs + j] * lam[k];
      return abar(g, a.ax[j], a.zx[k]);
    };
    auto abz = [&](int64_t k, int64_t i, int64_t j) {
      const float g = V[i * nxs + j] * lam[k];
      return abar(g, a.az[i], a.zz[k]);
    };
    for (int64_t s = a.nsteps - 1; s >= 0; --s) {
      const int64_t n = a.n0 + s;
      // adjoint source of record[n] into lam = lam^{n+1}
      for (int64_t b = 0; b < B; ++b)
        for (int64_t r = 0; r < a.nrec; ++r)
          lam[b * plane + storage_index(a.rec[b * a.nrec + r], nxp, nxs, N)] +=
              a.grad_record[(b * a.nt + n) * a.nrec + r];
      // gradient (and reconstruction of u^{n-1} for the boundary strategy)
      if (a.boundary) {
#pragma omp parallel for collapse(2) schedule(static)
        for (int64_t b = 0; b < B; ++b)
          for (int64_t q = 0; q < C; ++q) {
            int64_t r, c;
            ring_cell(q, N, nz, nx, N, &r, &c);
            ub[b * hplane + r * hx + c] = a.ring[(s * B + b) * C + q];
          }
      }
#pragma omp parallel for collapse(2) schedule(static)
      for (int64_t b = 0; b < B; ++b)
        for (int64_t i = 0; i < nz; ++i)
          for (int64_t j = 0; j < nx; ++j) {
            const int64_t ks = (i + p + N) * nxs + (j + p + N);
            float L;
            if (a.boundary) {
              const int64_t kh = b * hplane + (i + N) * hx + (j + N);
              L = (d2<N>(ub + kh, 1, w, N, N) + d2<N>(ub + kh, hx, w, N, N)) + 0.f;
              ua[kh] = (2.f * ub[kh] + V[ks] * L) - ua[kh];
            } else {
              L = a.lap[((s * B + b) * nz + i) * nx + j];
            }
            a.grad[(b * nz + i) * nx + j] += lam[b * plane + ks] * L;
          }
      for (int64_t b = 0; b < B; ++b) {
        const int64_t ks = storage_index(a.src[b], nxp, nxs, N);
        const int64_t zi = ks / nxs - p - N, xi = ks % nxs - p - N;
        const float f = a.wavelet[b * a.nt + n];
        a.grad[(b * nz + zi) * nx + xi] += lam[b * plane + ks] * f;
        if (a.boundary) ua[b * hplane + (zi + N) * hx + (xi + N)] += V[ks] * f;
      }
      // adjoint pass 1: pbar -= D(m Abar) in the PML strips
#pragma omp parallel for collapse(2) schedule(static)
      for (int64_t b = 0; b < B; ++b)
        for (int64_t i = N; i < nzp + N; ++i) {
          const int64_t row = b * plane + i * nxs;
          const bool zp = a.az[i] != 0.f;
          for (int64_t j = N; j < nxp + N; ++j) {
            const int64_t k = row + j;
            if (a.ax[j] != 0.f) {
              float acc = 0.f;
              for (int kk = 1; kk <= N; ++kk) {
                const float hi = a.ax[j + kk] != 0.f ? abx(k + kk, i, j + kk) : 0.f;
                const float lo = a.ax[j - kk] != 0.f ? abx(k - kk, i, j - kk) : 0.f;
                acc += w.c1[kk] * (hi - lo);
              }
              a.px[k] -= acc;
            }
            if (zp) {
              float acc = 0.f;
              for (int kk = 1; kk <= N; ++kk) {
                const float hi = a.az[i + kk] != 0.f ? abz(k + kk * nxs, i + kk, j) : 0.f;
                const float lo = a.az[i - kk] != 0.f ? abz(k - kk * nxs, i - kk, j) : 0.f;
                acc += w.c1[kk] * (hi - lo);
              }
              a.pz[k] -= acc;
            }
          }
        }
      // adjoint pass 2: every cell
#pragma omp parallel for collapse(2) schedule(static)
      for (int64_t b = 0; b < B; ++b)
        for (int64_t i = N; i < nzp + N; ++i) {
          const int64_t row = b * plane + i * nxs;
          for (int64_t j = N; j < nxp + N; ++j) {
            const int64_t k = row + j;
            float sx = w.c2[0] * abx(k, i, j), sz = w.c2[0] * abz(k, i, j);
            float px = 0.f, pz = 0.f;
            for (int kk = 1; kk <= N; ++kk) {
              sx += w.c2[kk] * (abx(k + kk, i, j + kk) + abx(k - kk, i, j - kk));
              sz += w.c2[kk] * (abz(k + kk * nxs, i + kk, j) + abz(k - kk * nxs, i - kk, j));
              px += w.c1[kk] * (a.ax[j + kk] * a.px[k + kk] - a.ax[j - kk] * a.px[k - kk]);
              pz += w.c1[kk] * (a.az[i + kk] * a.pz[k + kk * nxs] - a.az[i - kk] * a.pz[k - kk * nxs]);
            }
            lp[k] = (2.f * lam[k] - lp[k]) + ((sx + sz) - (px + pz));
          }
        }
      // adjoint pass 3: zbar, pbar carried to the previous step (PML strips)
#pragma omp parallel for collapse(2) schedule(static)
      for (int64_t b = 0; b < B; ++b)
        for (int64_t i = N; i < nzp + N; ++i) {
          const int64_t row = b * plane + i * nxs;
          const bool zp = a.az[i] != 0.f;
          for (int64_t j = N; j < nxp + N; ++j) {
            const int64_t k = row + j;
            const float g = V[i * nxs + j] * lam[k];
            if (a.ax[j] != 0.f) {
              a.zx[k] = a.bx[j] * (a.zx[k] + g);
              a.px[k] = a.bx[j] * a.px[k];
            }
            if (zp) {
              a.zz[k] = a.bz[i] * (a.zz[k] + g);
              a.pz[k] = a.bz[i] * a.pz[k];
            }
          }
        }
      std::swap(lam, lp);
      if (a.boundary) std::swap(ua, ub);
    }
  }
};

}  // namespace

void forward_cpu(const StepArgs& a) {
  switch (a.n_half) {
    case 1: Cpu<1>::forward(a); break;
    case 2: Cpu<2>::forward(a); break;
    case 4: Cpu<4>::forward(a); break;
    default: TORCH_CHECK(false, "fwi: unsupported stencil half-width ", a.n_half);
  }
}

void backward_cpu(const AdjArgs& a) {
  switch (a.n_half) {
    case 1: Cpu<1>::backward(a); break;
    case 2: Cpu<2>::backward(a); break;
    case 4: Cpu<4>::backward(a); break;
    default: TORCH_CHECK(false, "fwi: unsupported stencil half-width ", a.n_half);
  }
}

}  // namespace fwi
