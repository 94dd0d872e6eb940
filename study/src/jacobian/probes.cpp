// JacobianMethod::Random and ::Compiled: the cosine estimated from Jacobian-vector products with
// random probes, the model's J·v computed here (Random) or by the bundle's compiled `jvp` entry
// (Compiled). The teacher's J·v is on the host in both.
#include "jacobian/common.h"

#include "molt/random.h"

#include <algorithm>

namespace molt::jacobian {

namespace {

// A per-token stream, so results do not depend on how OpenMP splits the tokens.
struct Rng {
  SplitMix64 mix;
  uint64_t next() { return mix.next(); }
  double uniform() { return double(next() >> 11) * 0x1.0p-53; }
  double gaussian() {
    double u1 = uniform(), u2 = uniform();
    return std::sqrt(-2.0 * std::log(1.0 - u1)) * std::cos(6.283185307179586 * u2);
  }
};

// Each token draws its probes from its own stream, so the probes do not depend on the thread
// count, on the executor's batch size, or on whether the model's J·v is computed here (Random)
// or by the compiled `jvp` entry (Compiled): both methods see the same probes for a seed.
Rng tokenRng(uint64_t seed, int64_t token) {
  return Rng{SplitMix64{seed * 0x9E3779B97F4A7C15ull ^ uint64_t(token + 1) * 0xD1B54A32D192ED03ull}};
}

void drawProbe(Rng &rng, bool gaussian, double *v, int64_t d) {
  for (int64_t i = 0; i < d; ++i)
    v[i] = gaussian ? rng.gaussian() : ((rng.next() >> 63) ? 1.0 : -1.0);
}

// Per probe: a = (J_m v)·(J_T v), b = ‖J_m v‖², c = ‖J_T v‖², each unbiased for its Frobenius
// quantity since E[v vᵀ] = I. The token's estimate A/sqrt(BC) of the means is a ratio, so it is
// consistent but biased at O(1/probes).
struct ProbeMoments {
  double s[3] = {0, 0, 0}, ss[3][3] = {{0}};
  int count = 0;

  void add(const double *jm, const double *jt, int64_t d) {
    double q[3] = {dot(jm, jt, d), dot(jm, jm, d), dot(jt, jt, d)};
    for (int p = 0; p < 3; ++p) {
      s[p] += q[p];
      for (int r = 0; r < 3; ++r)
        ss[p][r] += q[p] * q[r];
    }
    ++count;
  }

  /// The token's cosine estimate; probeVar gets the variance due to the probes (delta method:
  /// the gradient of A/sqrt(BC) against the covariance of the means).
  double finish(bool &degenerate, double &probeVar) const {
    const double K = count;
    Frob f;
    f.cross = s[0] / K, f.model2 = s[1] / K, f.teacher2 = s[2] / K;
    const double c = f.cosine(degenerate);
    probeVar = 0;
    if (degenerate)
      return c;
    double g[3] = {1.0 / std::sqrt(f.model2 * f.teacher2), -0.5 * c / f.model2,
                   -0.5 * c / f.teacher2};
    double mean[3] = {f.cross, f.model2, f.teacher2}, var = 0;
    for (int p = 0; p < 3; ++p)
      for (int r = 0; r < 3; ++r)
        var += g[p] * g[r] * (ss[p][r] - K * mean[p] * mean[r]) / (K - 1);
    probeVar = std::max(var, 0.0) / K;
    return c;
  }
};

} // namespace

void randomCosines(const ReplacementLayer &L, const TeacherMlp &T, const std::vector<double> &xs,
                   const std::vector<std::vector<ActiveUnit>> &acts, const JacobianOptions &opt,
                   TokenResults &out) {
  const int64_t n = int64_t(acts.size()), d = L.d;
#pragma omp parallel
  {
    const size_t dn = static_cast<size_t>(d);
    std::vector<double> delta(static_cast<size_t>(T.h)), hs, zs, v(dn), jm(dn), jt(dn), tmp;
#pragma omp for schedule(dynamic, 4)
    for (int64_t i = 0; i < n; ++i) {
      const double *xi = &xs[size_t(i * d)];
      const auto &act = acts[size_t(i)];
      Rng rng = tokenRng(opt.seed, i);
      teacherDerivative(T, xi, delta.data());
      if (L.molt)
        moltProducts(L, xi, act, hs, zs);
      ProbeMoments moments;
      for (int k = 0; k < opt.probes; ++k) {
        drawProbe(rng, opt.gaussian, v.data(), d);
        jvpKnown(L, act, zs, v.data(), jm.data(), tmp);
        teacherJvpKnown(T, delta.data(), v.data(), jt.data(), tmp);
        moments.add(jm.data(), jt.data(), d);
      }
      bool deg = false;
      out.cosine[size_t(i)] = moments.finish(deg, out.probeVar[size_t(i)]);
      out.degenerate[size_t(i)] = deg;
    }
  }
}

// The Compiled method: the model's J·v for a whole batch of tokens per run of the bundle's
// `jvp` entry (one probe per token per run), the teacher's on the host. Fills per-token
// cosines, probe variances and degeneracy flags for rows [0, n) of xs.
Status compiledCosines(const ReplacementLayer &L, const TeacherMlp &T, const std::vector<double> &xs,
                       const JacobianOptions &opt, TokenResults &out) {
  Executor &exec = *opt.executor;
  const int64_t d = L.d, B = exec.batch(), n = int64_t(xs.size()) / d;
  if (!exec.plan().entry_points.count("jvp"))
    return invalidArgument("the bundle has no 'jvp' entry point (compile it again with this "
                           "molt-compile) for --jacobian-method compiled");
  const ModelDesc &model = exec.plan().model;
  if (model.d_model != d || (model.kind == "molt") != L.molt)
    return invalidArgument("the executor's bundle is a " + model.kind + " of d=" +
                           std::to_string(model.d_model) + ", not the layer's " +
                           (L.molt ? "molt" : "transcoder") + " of d=" + std::to_string(d));
  for (const char *name : {"x", "x_dot", "y_dot"}) {
    const BufferInfo *t = exec.info(name);
    if (!t || t->numel() != B * d)
      return invalidArgument(std::string("the bundle's jvp entry lacks a [B, d] '") + name + "'");
  }
  std::vector<float> xb(size_t(B * d)), vb(size_t(B * d)), yb(size_t(B * d));
  std::vector<double> v(size_t(B * d)), delta(size_t(B * T.h));
  std::vector<Rng> rngs(static_cast<size_t>(B));
  std::vector<ProbeMoments> moments(static_cast<size_t>(B));
  for (int64_t start = 0; start < n; start += B) {
    const int64_t m = std::min(B, n - start);
    std::fill(xb.begin(), xb.end(), 0.0f); // rows past the last token are computed and ignored
    for (int64_t i = 0; i < m * d; ++i)
      xb[size_t(i)] = float(xs[size_t(start * d + i)]);
    MOLT_RETURN_IF_ERROR(exec.write("x", xb.data(), xb.size() * sizeof(float)));
#pragma omp parallel for schedule(dynamic, 4)
    for (int64_t j = 0; j < m; ++j)
      teacherDerivative(T, &xs[size_t((start + j) * d)], &delta[size_t(j * T.h)]);
    for (int64_t j = 0; j < m; ++j) {
      rngs[size_t(j)] = tokenRng(opt.seed, start + j);
      moments[size_t(j)] = ProbeMoments{};
    }
    std::fill(vb.begin(), vb.end(), 0.0f);
    for (int k = 0; k < opt.probes; ++k) {
      for (int64_t j = 0; j < m; ++j) {
        double *vj = &v[size_t(j * d)];
        drawProbe(rngs[size_t(j)], opt.gaussian, vj, d);
        for (int64_t i = 0; i < d; ++i) { // both Jacobians see the fp32 probe the kernels see
          vb[size_t(j * d + i)] = float(vj[i]);
          vj[i] = double(vb[size_t(j * d + i)]);
        }
      }
      MOLT_RETURN_IF_ERROR(exec.write("x_dot", vb.data(), vb.size() * sizeof(float)));
      MOLT_RETURN_IF_ERROR(exec.run("jvp"));
      MOLT_RETURN_IF_ERROR(exec.read("y_dot", yb.data(), yb.size() * sizeof(float)));
#pragma omp parallel
      {
        std::vector<double> jm(static_cast<size_t>(d)), jt(static_cast<size_t>(d)), tmp;
#pragma omp for schedule(dynamic, 4)
        for (int64_t j = 0; j < m; ++j) {
          for (int64_t i = 0; i < d; ++i)
            jm[size_t(i)] = yb[size_t(j * d + i)];
          teacherJvpKnown(T, &delta[size_t(j * T.h)], &v[size_t(j * d)], jt.data(), tmp);
          moments[size_t(j)].add(jm.data(), jt.data(), d);
        }
      }
    }
    for (int64_t j = 0; j < m; ++j) {
      bool deg = false;
      out.cosine[size_t(start + j)] = moments[size_t(j)].finish(deg, out.probeVar[size_t(start + j)]);
      out.degenerate[size_t(start + j)] = deg;
    }
  }
  return Status::ok();
}

} // namespace molt::jacobian
