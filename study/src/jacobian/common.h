// What the Jacobian methods share (study/src/jacobian/): the per-token products every method
// reads, the Frobenius triple a cosine is made of, and one entry per method. Private to
// study/src/jacobian; the public API is molt/jacobian.h.
//
// Notation: d model width, h teacher hidden width, T units (transforms or features), L0 open
// units of a token, R = Σ_{t open} r_t (the token's total open rank). The teacher Jacobian is
// J_T = W_out D W_in with D = diag(δ), δ = act'(W_in x + b_in).
#pragma once

#include "molt/jacobian.h"

#include <cmath>
#include <cstdint>
#include <vector>

namespace molt::jacobian {

inline double dot(const double *a, const double *b, int64_t n) {
  double s = 0;
#pragma omp simd reduction(+ : s)
  for (int64_t i = 0; i < n; ++i)
    s += a[i] * b[i];
  return s;
}

inline void axpy(double alpha, const double *x, double *y, int64_t n) {
#pragma omp simd
  for (int64_t i = 0; i < n; ++i)
    y[i] += alpha * x[i];
}

// For a molt token: hs = [V_t x] (each open t, r_t values, concatenated) and zs = [U_t V_t x]
// (L0 × d). Transcoders need neither.
void moltProducts(const ReplacementLayer &L, const double *x, const std::vector<ActiveUnit> &act,
                  std::vector<double> &hs, std::vector<double> &zs);

// out = J·v for a token whose open units and molt products are known.
void jvpKnown(const ReplacementLayer &L, const std::vector<ActiveUnit> &act,
              const std::vector<double> &zs, const double *v, double *out, std::vector<double> &tmp);

// out = J_T·v given the token's δ.
void teacherJvpKnown(const TeacherMlp &T, const double *delta, const double *v, double *out,
                     std::vector<double> &tmp);

// The three Frobenius quantities of one token; cos = cross / sqrt(model2 · teacher2).
struct Frob {
  double cross = 0, model2 = 0, teacher2 = 0;
  double cosine(bool &degenerate) const {
    degenerate = !(model2 > 0 && teacher2 > 0);
    return degenerate ? 0.0 : cross / std::sqrt(model2 * teacher2);
  }
};

// Per-token results of one method over rows [0, n) of xs ([n, d] in doubles); probeVar is the
// variance of a token's estimate due to the probes (0 for the exact methods). acts: each row's
// open units.
struct TokenResults {
  std::vector<double> cosine, probeVar;
  std::vector<char> degenerate;
};

/// JacobianMethod::Exact (exact.cpp).
void exactCosines(const ReplacementLayer &L, const TeacherMlp &T, const std::vector<double> &xs,
                  const std::vector<std::vector<ActiveUnit>> &acts, TokenResults &out);
/// JacobianMethod::Dense (dense.cpp).
void denseCosines(const ReplacementLayer &L, const TeacherMlp &T, const std::vector<double> &xs,
                  TokenResults &out);
/// JacobianMethod::Random (probes.cpp).
void randomCosines(const ReplacementLayer &L, const TeacherMlp &T, const std::vector<double> &xs,
                   const std::vector<std::vector<ActiveUnit>> &acts, const JacobianOptions &opt,
                   TokenResults &out);
/// JacobianMethod::Compiled (probes.cpp): fails when the executor's bundle does not fit.
Status compiledCosines(const ReplacementLayer &L, const TeacherMlp &T, const std::vector<double> &xs,
                       const JacobianOptions &opt, TokenResults &out);

} // namespace molt::jacobian
