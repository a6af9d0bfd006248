// C++/OpenMP implementation of the compiled propagator's ops (see fwi_common.h).
//
// Every per-cell array lives on the "storage grid": the padded grid plus a zero halo of N
// cells, (nzs, nxs) = (nzp + 2N, nxp + 2N), so stencils never test bounds. The halo is never
// written. Reconstruction frames live on (nz + 2N, nx + 2N): the interior plus the ring.
//
// Layout of the work (same arithmetic as the header formulas, so results agree with the
// straightforward per-cell form to float rounding; only the sign of some zeros may differ):
//
// * Each row is cut into runs of columns with a constant x-PML flag (ax != 0); the z-PML
//   flag (az != 0) is constant per row. Each run goes to a branch-free inner loop
//   specialised on the two flags, so the interior loop is the bare leapfrog update and
//   vectorises. Inner loops are `omp simd simdlen(8)`: no runtime alias checks, and 8-lane
//   vectors leave shorter scalar tails on the narrow PML runs than 16-lane ones (measured
//   faster on the 2-core Zen 4 box, where 512-bit operations run as two 256-bit halves).
// * Adjoint: it carries mu = V lam instead of lam (as the CUDA kernels do; V = (v dt)^2 > 0),
//   so g = V lam is mu itself and the update reads mu_prev = 2 mu - mu_prev + V (...); the
//   adjoint source enters as mu[rec] += V dJ/drecord and the gradient is (mu / V)(L + f delta).
//   Abar_x / Abar_z (scratch planes Bx, Bz) are formed only where they differ from mu or are
//   read next to such cells: columns within 2N of an x-PML column, rows within 2N of a z-PML
//   row. Cells whose x (z) stencil touches no PML cell read mu, where Abar = mu exactly and the
//   pbar term is zero. The lam/lamprev buffers hold mu on return.
// * Threads: with at least as many shots as threads (and an even split or many shots), each
//   thread runs whole shots through all steps of the call (shots handed out dynamically, so a
//   thread slowed by other load takes fewer), with no barrier per step and a per-shot working
//   set that stays in cache. Otherwise the threads split the rows of every
//   shot into bands and synchronise between passes.
#include <torch/extension.h>
#include <omp.h>

#include <algorithm>
#include <utility>
#include <vector>

#include "fwi_common.h"
#include "fwi_launch.h"

namespace fwi {
namespace {

// A run of columns (or rows) [lo, hi) with a constant flag.
struct Run {
  int lo, hi;
  bool on;
};

// Maximal runs of equal flag of m over [lo, hi).
std::vector<Run> runs_of(const std::vector<char>& m, int lo, int hi) {
  std::vector<Run> out;
  for (int j = lo; j < hi;) {
    int e = j + 1;
    while (e < hi && m[e] == m[j]) ++e;
    out.push_back({j, e, m[j] != 0});
    j = e;
  }
  return out;
}

// m widened by r cells on both sides.
std::vector<char> widen(const std::vector<char>& m, int r) {
  const int n = static_cast<int>(m.size());
  std::vector<char> out(m.size(), 0);
  for (int j = 0; j < n; ++j)
    if (m[j])
      for (int d = std::max(0, j - r); d <= std::min(n - 1, j + r); ++d) out[d] = 1;
  return out;
}

// Flags of a coefficient array (nonzero cells).
std::vector<char> nonzero(const float* a, int n) {
  std::vector<char> m(n);
  for (int j = 0; j < n; ++j) m[j] = a[j] != 0.f;
  return m;
}

// Band [lo, hi) of thread t out of nt over [a, b).
inline void band(int a, int b, int t, int nt, int* lo, int* hi) {
  const int n = b - a;
  *lo = a + static_cast<int>(static_cast<int64_t>(n) * t / nt);
  *hi = a + static_cast<int>(static_cast<int64_t>(n) * (t + 1) / nt);
}

// Whole shots per thread when the split is even or the shots many; rows otherwise.
inline bool split_by_shot(int64_t nshots) {
  const int t = omp_get_max_threads();
  return t <= 1 || (nshots >= t && (nshots % t == 0 || nshots >= 3 * t));
}

// Copy the ring (2N(nz+nx) cells, order of ring_cell) of a frame with row length ld whose
// interior starts at (off, off): save = frame -> ring, else ring -> frame.
template <int N>
void ring_copy(bool save, float* frame, int ld, int off, int nz, int nx, float* ring) {
  auto row = [&](int r, int c, int len) {
    float* f = frame + static_cast<int64_t>(r) * ld + c;
    if (save)
      std::copy(f, f + len, ring);
    else
      std::copy(ring, ring + len, f);
    ring += len;
  };
  for (int r = 0; r < N; ++r) row(off - N + r, off, nx);
  for (int r = 0; r < N; ++r) row(off + nz + r, off, nx);
  for (int r = 0; r < nz; ++r) row(off + r, off - N, N);
  for (int r = 0; r < nz; ++r) row(off + r, off + nx, N);
}

template <int N>
struct Cpu {
  // Second derivative c0 f + sum_k ck (f[+ks] + f[-ks]) (same order as fwi::d2).
  static inline float d2(const float* f, int s, const float* c2) {
    float acc = c2[0] * f[0];
#pragma GCC unroll 8
    for (int k = 1; k <= N; ++k) acc += c2[k] * (f[k * s] + f[-k * s]);
    return acc;
  }
  // First derivative sum_k ck (f[+ks] - f[-ks]) (fwi::d1 without its leading 0 + ...).
  static inline float d1(const float* f, int s, const float* c1) {
    float acc = c1[1] * (f[s] - f[-s]);
#pragma GCC unroll 8
    for (int k = 2; k <= N; ++k) acc += c1[k] * (f[k * s] - f[-k * s]);
    return acc;
  }

  // Geometry and the row/column runs of one call.
  struct Geo {
    int B, nzp, nxp, p, nz, nx, nxs, nzs, plane;
    std::vector<char> zpml;          // per storage row: az != 0
    std::vector<Run> xruns;          // columns [N, nxp+N) by ax != 0
    std::vector<float> mx, mz;       // 1 where ax (az) != 0, per storage column (row)
    std::vector<char> znear, zfar;   // rows within N (2N) of a z-PML row
    std::vector<Run> xnear, xfar;    // columns within N (2N) of an x-PML column
    int W;                           // CPML strip width p + 2N (compact layout, fwi_common.h)

    // Pointer p with p[j] = element (b, i, j) of an x-strip field, for columns j of the strip
    // holding column j0 (left strip if j0 < W, else right); p[j +- k] stays inside the row.
    template <typename T>
    T* xrow(T* base, int b, int i, int j0) const {
      const int64_t r = (static_cast<int64_t>(b) * nzs + i) * (2 * W);
      return base + r - (j0 < W ? 0 : nxs - 2 * W);
    }
    // Pointer p with p[j] = element (b, i, j) of a z-strip field (row i within a strip, or
    // within N rows of one); p[j +- k nxs] stays inside the array.
    template <typename T>
    T* zrow(T* base, int b, int i) const {
      const int ii = i < W ? i : i - (nzs - 2 * W);
      return base + (static_cast<int64_t>(b) * 2 * W + ii) * nxs;
    }

    Geo(const Dims& d, const float* ax, const float* az) {
      B = static_cast<int>(d.b);
      nzp = static_cast<int>(d.nzp); nxp = static_cast<int>(d.nxp);
      p = static_cast<int>(d.p); nz = static_cast<int>(d.nz); nx = static_cast<int>(d.nx);
      nxs = nxp + 2 * N; nzs = nzp + 2 * N; plane = nzs * nxs;
      W = p + 2 * N;
      const std::vector<char> mxc = nonzero(ax, nxs);
      zpml = nonzero(az, nzs);
      xruns = runs_of(mxc, N, nxp + N);
      mx.assign(mxc.begin(), mxc.end());
      mz.assign(zpml.begin(), zpml.end());
      znear = widen(zpml, N);
      zfar = widen(zpml, 2 * N);
      xnear = runs_of(widen(mxc, N), N, nxp + N);
      xfar = runs_of(widen(mxc, 2 * N), N, nxp + N);
    }
  };

  // ---------------------------------------------------------------- forward rows
  // psi_x = b_x psi_x + a_x Dx u on columns [lo, hi) of one row.
  static void psi_x_row(int lo, int hi, const float* __restrict u, float* __restrict ps,
                        const float* __restrict ax, const float* __restrict bx, const float* c1) {
    #pragma omp simd simdlen(8)
    for (int j = lo; j < hi; ++j) ps[j] = bx[j] * ps[j] + ax[j] * d1(u + j, 1, c1);
  }
  static void psi_z_row(int lo, int hi, int nxs, const float* __restrict u, float* __restrict ps, float a,
                        float b, const float* c1) {
    #pragma omp simd simdlen(8)
    for (int j = lo; j < hi; ++j) ps[j] = b * ps[j] + a * d1(u + j, nxs, c1);
  }

  // Leapfrog update of columns [lo, hi) of one row; PX / PZ: the x / z CPML terms are on;
  // ST: L is also written to Lr.
  template <bool PX, bool PZ, bool ST>
  static void step_row(int lo, int hi, int nxs, const float* __restrict u, float* __restrict up,
                       const float* __restrict V, const float* __restrict psx, const float* __restrict psz,
                       float* __restrict zx, float* __restrict zz, const float* __restrict ax,
                       const float* __restrict bx, float az, float bz, float* __restrict Lr, const float* c2,
                       const float* c1) {
    #pragma omp simd simdlen(8)
    for (int j = lo; j < hi; ++j) {
      float dx = d2(u + j, 1, c2);
      float dz = d2(u + j, nxs, c2);
      float L;
      if constexpr (PX) {
        dx += d1(psx + j, 1, c1);
        const float zxv = bx[j] * zx[j] + ax[j] * dx;
        zx[j] = zxv;
        if constexpr (PZ) {
          dz += d1(psz + j, nxs, c1);
          const float zzv = bz * zz[j] + az * dz;
          zz[j] = zzv;
          L = ((dx + dz) + zxv) + zzv;
        } else {
          L = (dx + dz) + zxv;
        }
      } else if constexpr (PZ) {
        dz += d1(psz + j, nxs, c1);
        const float zzv = bz * zz[j] + az * dz;
        zz[j] = zzv;
        L = (dx + dz) + zzv;
      } else {
        L = dx + dz;
      }
      up[j] = (2.f * u[j] - up[j]) + V[j] * L;
      if constexpr (ST) Lr[j] = L;
    }
  }

  struct Fwd {
    const StepArgs& a;
    const Geo& g;
    float c1[N + 1], c2[N + 1];

    Fwd(const StepArgs& a_, const Geo& g_) : a(a_), g(g_) {
      for (int k = 0; k <= N; ++k) { c1[k] = a.w.c1[k]; c2[k] = a.w.c2[k]; }
    }

    // pass 1: psi in the PML strips, storage rows [r0, r1) of shot b.
    void psi(int b, int r0, int r1, const float* u) const {
      const int nxs = g.nxs;
      for (int i = r0; i < r1; ++i) {
        const int64_t row = static_cast<int64_t>(b) * g.plane + static_cast<int64_t>(i) * nxs;
        if (g.zpml[i]) psi_z_row(N, g.nxp + N, nxs, u + row, g.zrow(a.psiz, b, i), a.az[i], a.bz[i], c1);
        for (const Run& r : g.xruns)
          if (r.on) psi_x_row(r.lo, r.hi, u + row, g.xrow(a.psix, b, i, r.lo), a.ax, a.bx, c1);
      }
    }

    template <bool PX, bool PZ>
    void run(const Run& r, bool st, int b, int64_t row, int i, const float* u, float* up, float* Lr) const {
      const float* V = a.v2dt2 + static_cast<int64_t>(i) * g.nxs;
      const float* psx = PX ? g.xrow(a.psix, b, i, r.lo) : nullptr;
      float* zx = PX ? g.xrow(a.zx, b, i, r.lo) : nullptr;
      const float* psz = PZ ? g.zrow(a.psiz, b, i) : nullptr;
      float* zz = PZ ? g.zrow(a.zz, b, i) : nullptr;
      if (st)
        step_row<PX, PZ, true>(r.lo, r.hi, g.nxs, u + row, up + row, V, psx, psz, zx, zz, a.ax, a.bx, a.az[i],
                               a.bz[i], Lr, c2, c1);
      else
        step_row<PX, PZ, false>(r.lo, r.hi, g.nxs, u + row, up + row, V, psx, psz, zx, zz, a.ax, a.bx, a.az[i],
                                a.bz[i], Lr, c2, c1);
    }

    // pass 2: every cell of storage rows [r0, r1) of shot b at chunk step s; Lr: row scratch.
    void update(int b, int r0, int r1, int64_t s, const float* u, float* up, float* Lr) const {
      const int o = g.p + N;
      for (int i = r0; i < r1; ++i) {
        const int64_t row = static_cast<int64_t>(b) * g.plane + static_cast<int64_t>(i) * g.nxs;
        const bool st = a.lap && i >= o && i < o + g.nz;
        const bool zp = g.zpml[i];
        for (const Run& r : g.xruns) {
          if (r.on) {
            if (zp) run<true, true>(r, st, b, row, i, u, up, Lr); else run<true, false>(r, st, b, row, i, u, up, Lr);
          } else {
            if (zp) run<false, true>(r, st, b, row, i, u, up, Lr); else run<false, false>(r, st, b, row, i, u, up, Lr);
          }
        }
        if (st) {
          float* dst = a.lap + ((s * g.B + b) * g.nz + (i - o)) * g.nx;
          std::copy(Lr + o, Lr + o + g.nx, dst);
        }
      }
    }

    // ring(u^n) of shot b (before the update), then source and receivers into u^{n+1}.
    void save_ring(int b, int64_t s, float* u) const {
      if (!a.ring) return;
      const int64_t C = 2 * N * (g.nz + g.nx);
      ring_copy<N>(true, u + static_cast<int64_t>(b) * g.plane, g.nxs, g.p + N, g.nz, g.nx,
                   a.ring + (s * g.B + b) * C);
    }
    void inject(int b, int64_t n, float* up) const {
      const int64_t nxp = g.nxp, nxs = g.nxs;
      float* ub = up + static_cast<int64_t>(b) * g.plane;
      const int64_t k = storage_index(a.src[b], nxp, nxs, N);
      ub[k] += a.v2dt2[k] * a.wavelet[b * a.nt + n];
      for (int64_t r = 0; r < a.nrec; ++r)
        a.record[(b * a.nt + n) * a.nrec + r] = ub[storage_index(a.rec[b * a.nrec + r], nxp, nxs, N)];
    }
  };

  static void forward(const StepArgs& a) {
    const Geo g(a.d, a.ax, a.az);
    const Fwd f(a, g);
    const int r0 = N, r1 = g.nzp + N;
    if (split_by_shot(g.B)) {
#pragma omp parallel
      {
        std::vector<float> Lr(g.nxs);
#pragma omp for schedule(dynamic, 1)
        for (int b = 0; b < g.B; ++b) {
          float* u = a.u;
          float* up = a.uprev;
          for (int64_t s = 0; s < a.nsteps; ++s) {
            f.save_ring(b, s, u);
            f.psi(b, r0, r1, u);
            f.update(b, r0, r1, s, u, up, Lr.data());
            f.inject(b, a.n0 + s, up);
            std::swap(u, up);
          }
        }
      }
      return;
    }
#pragma omp parallel
    {
      std::vector<float> Lr(g.nxs);
      int lo, hi;
      band(r0, r1, omp_get_thread_num(), omp_get_num_threads(), &lo, &hi);
      float* u = a.u;
      float* up = a.uprev;
      for (int64_t s = 0; s < a.nsteps; ++s) {
        for (int b = 0; b < g.B; ++b) f.psi(b, lo, hi, u);
#pragma omp barrier
        for (int b = 0; b < g.B; ++b) f.update(b, lo, hi, s, u, up, Lr.data());
#pragma omp barrier
#pragma omp single
        for (int b = 0; b < g.B; ++b) {
          f.save_ring(b, s, u);
          f.inject(b, a.n0 + s, up);
        }
        std::swap(u, up);
      }
    }
  }

  // ---------------------------------------------------------------- backward rows
  // Adjoint pass 2 on columns [lo, hi) of one row: X / Z are Bx / Bz where the x / z
  // stencil touches the PML (XN / ZN, with the pbar terms), mu (= lam) elsewhere.
  template <bool XN, bool ZN>
  static void adj_row(int lo, int hi, int nxs, const float* __restrict lam, float* __restrict lp,
                      const float* __restrict V, const float* __restrict X, const float* __restrict Z,
                      const float* __restrict px,
                      const float* __restrict pz, const float* __restrict ax, const float* azr,
                      const float* c2, const float* c1) {
    #pragma omp simd simdlen(8)
    for (int j = lo; j < hi; ++j) {
      float sx = c2[0] * X[j], sz = c2[0] * Z[j];
#pragma GCC unroll 8
      for (int k = 1; k <= N; ++k) {
        sx += c2[k] * (X[j + k] + X[j - k]);
        sz += c2[k] * (Z[j + k * nxs] + Z[j - k * nxs]);
      }
      float q = sx + sz;
      if constexpr (XN || ZN) {
        float tx = 0.f, tz = 0.f;
        if constexpr (XN) {
          tx = c1[1] * (ax[j + 1] * px[j + 1] - ax[j - 1] * px[j - 1]);
#pragma GCC unroll 8
          for (int k = 2; k <= N; ++k) tx += c1[k] * (ax[j + k] * px[j + k] - ax[j - k] * px[j - k]);
        }
        if constexpr (ZN) {
          tz = c1[1] * (azr[1] * pz[j + nxs] - azr[-1] * pz[j - nxs]);
#pragma GCC unroll 8
          for (int k = 2; k <= N; ++k) tz += c1[k] * (azr[k] * pz[j + k * nxs] - azr[-k] * pz[j - k * nxs]);
        }
        q = q - (tx + tz);
      }
      lp[j] = (2.f * lam[j] - lp[j]) + V[j] * q;
    }
  }

  struct Adj {
    const AdjArgs& a;
    const Geo& g;
    float c1[N + 1], c2[N + 1];
    float *Bx, *Bz;  // (B, nzs, nxs) scratch planes with a zero halo
    int hx, hplane;

    Adj(const AdjArgs& a_, const Geo& g_, float* scratch) : a(a_), g(g_) {
      for (int k = 0; k <= N; ++k) { c1[k] = a.w.c1[k]; c2[k] = a.w.c2[k]; }
      const int64_t sz = static_cast<int64_t>(g.B) * g.plane;
      Bx = scratch; Bz = scratch + sz;
      hx = g.nx + 2 * N;
      hplane = (g.nz + 2 * N) * hx;
    }

    int64_t off(int b, int i) const {
      return static_cast<int64_t>(b) * g.plane + static_cast<int64_t>(i) * g.nxs;
    }

    // adjoint source of record[n] into mu^{n+1} (times V); ring of u^n into ub.
    void begin(int b, int64_t s, int64_t n, float* lam, float* ub) const {
      float* l = lam + static_cast<int64_t>(b) * g.plane;
      for (int64_t r = 0; r < a.nrec; ++r) {
        const int64_t kr = storage_index(a.rec[b * a.nrec + r], g.nxp, g.nxs, N);
        l[kr] += a.v2dt2[kr] * a.grad_record[(b * a.nt + n) * a.nrec + r];
      }
      if (a.boundary) {
        const int64_t C = 2 * N * (g.nz + g.nx);
        ring_copy<N>(false, ub + static_cast<int64_t>(b) * hplane, hx, N, g.nz, g.nx,
                     const_cast<float*>(a.ring + (s * g.B + b) * C));
      }
    }

    // gradient on interior rows [i0, i1), with the reconstruction u^{n-1} into ua.
    void gradient(int b, int i0, int i1, int64_t s, const float* lam, float* ua, const float* ub) const {
      const int o = g.p + N, nx = g.nx;
      for (int i = i0; i < i1; ++i) {
        const float* __restrict l = lam + off(b, i + o) + o;
        const float* __restrict V = a.v2dt2 + static_cast<int64_t>(i + o) * g.nxs + o;
        float* __restrict gr = a.grad + (static_cast<int64_t>(b) * g.nz + i) * nx;
        if (a.boundary) {
          const int64_t kh = static_cast<int64_t>(b) * hplane + static_cast<int64_t>(i + N) * hx + N;
          const float* __restrict fb = ub + kh;
          float* __restrict fa = ua + kh;
          const int ld = hx;
          #pragma omp simd simdlen(8)
          for (int j = 0; j < nx; ++j) {
            const float L = d2(fb + j, 1, c2) + d2(fb + j, ld, c2);
            fa[j] = (2.f * fb[j] + V[j] * L) - fa[j];
            gr[j] += (l[j] * L) / V[j];
          }
        } else {
          const float* __restrict L = a.lap + ((s * g.B + b) * g.nz + i) * nx;
          #pragma omp simd simdlen(8)
          for (int j = 0; j < nx; ++j) gr[j] += (l[j] * L[j]) / V[j];
        }
      }
    }

    // source term of the gradient (and of the reconstruction).
    void source(int b, int64_t n, const float* lam, float* ua) const {
      const int64_t ks = storage_index(a.src[b], g.nxp, g.nxs, N);
      const int64_t zi = ks / g.nxs - g.p - N, xi = ks % g.nxs - g.p - N;
      const float f = a.wavelet[b * a.nt + n];
      a.grad[(b * g.nz + zi) * g.nx + xi] += (lam[static_cast<int64_t>(b) * g.plane + ks] * f) / a.v2dt2[ks];
      if (a.boundary) ua[static_cast<int64_t>(b) * hplane + (zi + N) * hx + (xi + N)] += a.v2dt2[ks] * f;
    }

    // Bx, Bz = Abar_x, Abar_z where they are read (g = mu), after the lazy adjoint pass 3 of the
    // step after (see the CUDA file): on the PML cells zbar <- b (zbar + mu^{n+2}) (mu_prev holds
    // mu^{n+2} until `update`); pbar is scaled by b in `pbar`.
    void scratch(int b, int r0, int r1, const float* lam, const float* lp) const {
      const int lo = N, hi = g.nxp + N;
      for (int i = r0; i < r1; ++i) {
        const int64_t row = off(b, i);
        const float* __restrict Gr = lam + row;
        const float* __restrict Mp = lp + row;
        if (g.zfar[i]) {
          float* __restrict Br = Bz + row;
          if (g.zpml[i]) {
            float* __restrict zz = g.zrow(a.zz, b, i);
            const float az = a.az[i], bz = a.bz[i];
            #pragma omp simd simdlen(8)
            for (int j = lo; j < hi; ++j) {
              const float zc = bz * (zz[j] + Mp[j]);
              zz[j] = zc;
              Br[j] = abar(Gr[j], az, zc);
            }
          } else {
            std::copy(Gr + lo, Gr + hi, Br + lo);  // Abar_z = g where a_z = 0
          }
        }
        for (const Run& r : g.xfar) {
          if (r.on) std::copy(Gr + r.lo, Gr + r.hi, Bx + row + r.lo);  // Abar_x = g where a_x = 0
        }
        for (const Run& r : g.xruns) {
          if (!r.on) continue;
          float* __restrict zx = g.xrow(a.zx, b, i, r.lo);
          const float* __restrict ax = a.ax;
          const float* __restrict bx = a.bx;
          float* __restrict Br = Bx + row;
          #pragma omp simd simdlen(8)
          for (int j = r.lo; j < r.hi; ++j) {
            const float zc = bx[j] * (zx[j] + Mp[j]);
            zx[j] = zc;
            Br[j] = abar(Gr[j], ax[j], zc);
          }
        }
      }
    }

    // adjoint pass 1: pbar <- b pbar - D(m Abar) on the PML cells of rows [r0, r1) (b pbar: the
    // lazy pass 3 of the step after).
    void pbar(int b, int r0, int r1) const {
      const int nxs = g.nxs;
      const float* __restrict mx = g.mx.data();
      for (int i = r0; i < r1; ++i) {
        const int64_t row = off(b, i);
        if (g.zpml[i]) {
          const float* __restrict Z = Bz + row;
          float* __restrict pz = g.zrow(a.pz, b, i);
          const float* mz = g.mz.data() + i;
          const float bz = a.bz[i];
          #pragma omp simd simdlen(8)
          for (int j = N; j < g.nxp + N; ++j) {
            float acc = c1[1] * (mz[1] * Z[j + nxs] - mz[-1] * Z[j - nxs]);
#pragma GCC unroll 8
            for (int k = 2; k <= N; ++k) acc += c1[k] * (mz[k] * Z[j + k * nxs] - mz[-k] * Z[j - k * nxs]);
            pz[j] = bz * pz[j] - acc;
          }
        }
        for (const Run& r : g.xruns) {
          if (!r.on) continue;
          const float* __restrict X = Bx + row;
          float* __restrict px = g.xrow(a.px, b, i, r.lo);
          const float* __restrict bx = a.bx;
          #pragma omp simd simdlen(8)
          for (int j = r.lo; j < r.hi; ++j) {
            float acc = c1[1] * (mx[j + 1] * X[j + 1] - mx[j - 1] * X[j - 1]);
#pragma GCC unroll 8
            for (int k = 2; k <= N; ++k) acc += c1[k] * (mx[j + k] * X[j + k] - mx[j - k] * X[j - k]);
            px[j] = bx[j] * px[j] - acc;
          }
        }
      }
    }

    // XN runs and ZN rows lie inside (or within N cells of) a CPML strip, so the strip row
    // pointers are valid there; pbar is read only multiplied by a (zero outside the PML).
    template <bool XN, bool ZN>
    void adj_run(const Run& r, int b, int64_t row, int i, const float* lam, float* lp) const {
      adj_row<XN, ZN>(r.lo, r.hi, g.nxs, lam + row, lp + row, a.v2dt2 + static_cast<int64_t>(i) * g.nxs,
                      (XN ? Bx : lam) + row, (ZN ? Bz : lam) + row,
                      XN ? g.xrow(a.px, b, i, r.lo) : nullptr, ZN ? g.zrow(a.pz, b, i) : nullptr, a.ax,
                      a.az + i, c2, c1);
    }

    // adjoint pass 2: every cell of rows [r0, r1).
    void update(int b, int r0, int r1, const float* lam, float* lp) const {
      for (int i = r0; i < r1; ++i) {
        const int64_t row = off(b, i);
        const bool zn = g.znear[i];
        for (const Run& r : g.xnear) {
          if (r.on) {
            if (zn) adj_run<true, true>(r, b, row, i, lam, lp); else adj_run<true, false>(r, b, row, i, lam, lp);
          } else {
            if (zn) adj_run<false, true>(r, b, row, i, lam, lp); else adj_run<false, false>(r, b, row, i, lam, lp);
          }
        }
      }
    }
  };

  static void backward(const AdjArgs& a) {
    const Geo g(a.d, a.ax, a.az);
    std::vector<float> scratch(2 * static_cast<size_t>(g.B) * g.plane, 0.f);
    const Adj f(a, g, scratch.data());
    const int r0 = N, r1 = g.nzp + N;
    if (split_by_shot(g.B)) {
#pragma omp parallel for schedule(dynamic, 1)
      for (int b = 0; b < g.B; ++b) {
        float* lam = a.lam;
        float* lp = a.lamprev;
        float* ua = a.ua;
        float* ub = a.ub;
        for (int64_t s = a.nsteps - 1; s >= 0; --s) {
          const int64_t n = a.n0 + s;
          f.begin(b, s, n, lam, ub);
          f.gradient(b, 0, g.nz, s, lam, ua, ub);
          f.source(b, n, lam, ua);
          f.scratch(b, r0, r1, lam, lp);
          f.pbar(b, r0, r1);
          f.update(b, r0, r1, lam, lp);
          std::swap(lam, lp);
          if (a.boundary) std::swap(ua, ub);
        }
      }
      return;
    }
#pragma omp parallel
    {
      const int t = omp_get_thread_num(), nt = omp_get_num_threads();
      int lo, hi, ilo, ihi;
      band(r0, r1, t, nt, &lo, &hi);
      band(0, g.nz, t, nt, &ilo, &ihi);
      float* lam = a.lam;
      float* lp = a.lamprev;
      float* ua = a.ua;
      float* ub = a.ub;
      for (int64_t s = a.nsteps - 1; s >= 0; --s) {
        const int64_t n = a.n0 + s;
#pragma omp single
        for (int b = 0; b < g.B; ++b) f.begin(b, s, n, lam, ub);
        for (int b = 0; b < g.B; ++b) {
          f.gradient(b, ilo, ihi, s, lam, ua, ub);
          f.scratch(b, lo, hi, lam, lp);
        }
#pragma omp barrier
#pragma omp single nowait
        for (int b = 0; b < g.B; ++b) f.source(b, n, lam, ua);
        for (int b = 0; b < g.B; ++b) f.pbar(b, lo, hi);
#pragma omp barrier
        for (int b = 0; b < g.B; ++b) f.update(b, lo, hi, lam, lp);
#pragma omp barrier
        std::swap(lam, lp);
        if (a.boundary) std::swap(ua, ub);
      }
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
