// Jacobians of MOLTs, transcoders and the teacher MLP, and the jacobian_cosine metric.
//
// Notation: d model width, h teacher hidden width, T units (transforms or features), L0 open
// units of a token, R = Σ_{t open} r_t (the token's total open rank). The teacher Jacobian is
// J_T = W_out D W_in with D = diag(δ), δ = act'(W_in x + b_in).
#include "molt/jacobian.h"

#include <algorithm>
#include <cmath>
#include <memory>
#include <numeric>

namespace molt {

namespace {

double dot(const double *a, const double *b, int64_t n) {
  double s = 0;
#pragma omp simd reduction(+ : s)
  for (int64_t i = 0; i < n; ++i)
    s += a[i] * b[i];
  return s;
}

void axpy(double alpha, const double *x, double *y, int64_t n) {
#pragma omp simd
  for (int64_t i = 0; i < n; ++i)
    y[i] += alpha * x[i];
}

// C[m×n] = op(A)[m×k] · B[k×n], op(A)(i,p) = A[i*si + p*sp], B row-major. The inner loop is
// an axpy over a row of B, so it vectorises without reassociating a reduction; four rows of C
// share each pass over a row of B, which quarters the traffic from B (too big for L2 at d×h).
void matmul(const double *A, int64_t si, int64_t sp, const double *B, double *C, int64_t m,
            int64_t k, int64_t n) {
  std::fill(C, C + m * n, 0.0);
  int64_t i = 0;
  for (; i + 4 <= m; i += 4) {
    double *c0 = C + i * n, *c1 = c0 + n, *c2 = c1 + n, *c3 = c2 + n;
    for (int64_t p = 0; p < k; ++p) {
      const double a0 = A[i * si + p * sp], a1 = A[(i + 1) * si + p * sp],
                   a2 = A[(i + 2) * si + p * sp], a3 = A[(i + 3) * si + p * sp];
      const double *b = B + p * n;
#pragma omp simd
      for (int64_t j = 0; j < n; ++j) {
        c0[j] += a0 * b[j];
        c1[j] += a1 * b[j];
        c2[j] += a2 * b[j];
        c3[j] += a3 * b[j];
      }
    }
  }
  for (; i < m; ++i)
    for (int64_t p = 0; p < k; ++p)
      axpy(A[i * si + p * sp], B + p * n, C + i * n, n);
}

std::vector<double> transpose(const std::vector<double> &a, int64_t rows, int64_t cols) {
  std::vector<double> t(a.size());
  for (int64_t i = 0; i < rows; ++i)
    for (int64_t j = 0; j < cols; ++j)
      t[size_t(j * rows + i)] = a[size_t(i * cols + j)];
  return t;
}

// splitmix64: a tiny counter-based stream, seeded per token so results do not depend on how
// OpenMP splits the tokens.
struct Rng {
  uint64_t s;
  uint64_t next() {
    uint64_t z = (s += 0x9E3779B97F4A7C15ull);
    z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9ull;
    z = (z ^ (z >> 27)) * 0x94D049BB133111EBull;
    return z ^ (z >> 31);
  }
  double uniform() { return double(next() >> 11) * 0x1.0p-53; }
  double gaussian() {
    double u1 = uniform(), u2 = uniform();
    return std::sqrt(-2.0 * std::log(1.0 - u1)) * std::cos(6.283185307179586 * u2);
  }
};

std::string shapeError(const std::string &name, size_t got, int64_t want) {
  return "param '" + name + "' has " + std::to_string(got) + " values, expected " +
         std::to_string(want);
}

// ---- per-token pieces shared by every method ---------------------------------------------------

// For a molt token: hs = [V_t x] (each open t, r_t values, concatenated) and zs = [U_t V_t x]
// (L0 × d). Transcoders need neither.
void moltProducts(const ReplacementLayer &L, const double *x, const std::vector<ActiveUnit> &act,
                  std::vector<double> &hs, std::vector<double> &zs) {
  int64_t R = 0;
  for (const ActiveUnit &a : act)
    R += L.rank[size_t(a.index)];
  hs.assign(size_t(R), 0.0);
  zs.assign(act.size() * size_t(L.d), 0.0);
  int64_t off = 0;
  for (size_t q = 0; q < act.size(); ++q) {
    int64_t t = act[q].index, r = L.rank[size_t(t)];
    const double *V = &L.v[size_t(L.v_off[size_t(t)])], *U = &L.u[size_t(L.u_off[size_t(t)])];
    double *hv = &hs[size_t(off)], *z = &zs[q * size_t(L.d)];
    for (int64_t i = 0; i < r; ++i)
      hv[i] = dot(V + i * L.d, x, L.d);
    for (int64_t a = 0; a < L.d; ++a)
      z[a] = dot(U + a * r, hv, r);
    off += r;
  }
}

// out = J·v for a token whose open units and molt products are known.
void jvpKnown(const ReplacementLayer &L, const std::vector<ActiveUnit> &act,
              const std::vector<double> &zs, const double *v, double *out, std::vector<double> &tmp) {
  std::fill(out, out + L.d, 0.0);
  for (size_t q = 0; q < act.size(); ++q) {
    int64_t t = act[q].index;
    const double *e = &L.enc_w[size_t(t * L.d)];
    double ev = dot(e, v, L.d);
    if (L.molt) {
      int64_t r = L.rank[size_t(t)];
      const double *V = &L.v[size_t(L.v_off[size_t(t)])], *U = &L.u[size_t(L.u_off[size_t(t)])];
      tmp.resize(size_t(r));
      for (int64_t i = 0; i < r; ++i)
        tmp[size_t(i)] = act[q].gate * dot(V + i * L.d, v, L.d);
      for (int64_t a = 0; a < L.d; ++a)
        out[a] += dot(U + a * r, tmp.data(), r);
      axpy(ev, &zs[q * size_t(L.d)], out, L.d);
    } else {
      axpy(ev, &L.dec_w[size_t(t * L.d)], out, L.d);
    }
  }
  if (!L.skip_w.empty())
    for (int64_t a = 0; a < L.d; ++a)
      out[a] += dot(&L.skip_w[size_t(a * L.d)], v, L.d);
}

void teacherJvpKnown(const TeacherMlp &T, const double *delta, const double *v, double *out,
                     std::vector<double> &tmp) {
  tmp.resize(size_t(T.h));
  for (int64_t k = 0; k < T.h; ++k)
    tmp[size_t(k)] = delta[k] * dot(&T.w_in[size_t(k * T.d)], v, T.d);
  for (int64_t a = 0; a < T.d; ++a)
    out[a] = dot(&T.w_out[size_t(a * T.h)], tmp.data(), T.h);
}

// The three Frobenius quantities of one token; cos = cross / sqrt(model2 · teacher2).
struct Frob {
  double cross = 0, model2 = 0, teacher2 = 0;
  double cosine(bool &degenerate) const {
    degenerate = !(model2 > 0 && teacher2 > 0);
    return degenerate ? 0.0 : cross / std::sqrt(model2 * teacher2);
  }
};

// ---- the randomised estimator (Random and Compiled) -------------------------------------------

// Each token draws its probes from its own stream, so the probes do not depend on the thread
// count, on the executor's batch size, or on whether the model's J·v is computed here (Random)
// or by the compiled `jvp` entry (Compiled): both methods see the same probes for a seed.
Rng tokenRng(uint64_t seed, int64_t token) {
  return Rng{seed * 0x9E3779B97F4A7C15ull ^ uint64_t(token + 1) * 0xD1B54A32D192ED03ull};
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

// The Compiled method: the model's J·v for a whole batch of tokens per run of the bundle's
// `jvp` entry (one probe per token per run), the teacher's on the host. Fills per-token
// cosines, probe variances and degeneracy flags for rows [0, n) of xs.
Status compiledCosines(const ReplacementLayer &L, const TeacherMlp &T, const std::vector<double> &xs,
                       int64_t n, const JacobianOptions &opt, std::vector<double> &cosine,
                       std::vector<double> &probeVar, std::vector<char> &degenerate) {
  Executor &exec = *opt.executor;
  const int64_t d = L.d, B = exec.batch();
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
  std::vector<Rng> rngs(static_cast<size_t>(B), Rng{0});
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
      cosine[size_t(start + j)] = moments[size_t(j)].finish(deg, probeVar[size_t(start + j)]);
      degenerate[size_t(start + j)] = deg;
    }
  }
  return Status::ok();
}

// ---- the exact method: identities on small matrices ------------------------------------------
//
// Teacher norm: ‖W_out D W_in‖² = tr(D G_out D G_in) = δᵀ K δ with K = (W_outᵀW_out) ∘ (W_inW_inᵀ),
//   an h×h table built once (h²·d); per token h².
// MOLT, J_m = Σ g_t M_t + Σ z_t e_tᵀ with M_t = U_tV_t, z_t = M_t x:
//   ⟨M_t, J_T⟩ = Σ_k δ_k c_t[k], c_t[k] = ⟨A_t[:,k], B_t[:,k]⟩, A_t = U_tᵀW_out, B_t = V_tW_inᵀ
//     (r_t×h each, built once per used transform: 2·r_t·d·h); per token L0·h.
//   ⟨z_t e_tᵀ, J_T⟩ = z_tᵀ W_out D W_in e_t = Σ_k δ_k (A_tᵀ (V_t x))_k (W_in e_t)_k; A_t and
//     W_in e_t are kept, so per token R·h.
//   ⟨M_t, M_s⟩ = tr((U_tᵀU_s)(V_sV_tᵀ)), r×r Grams, and ⟨M_s, z_t e_tᵀ⟩ = z_tᵀ(M_s e_t): for
//     each ordered pair of transforms that is ever open together, the scalar and the d-vector
//     M_s e_t = U_s(V_s e_t) are computed once (2·r_s·r_t·d + 2·r_s·d; memory d doubles per
//     pair) and looked up per token: L0²·d.
//   ⟨z_t e_tᵀ, z_s e_sᵀ⟩ = (z_t·z_s)(e_t·e_s): per token L0²·d.
//   Per token in all: h·d (δ) + h² + 2·R·d (z_t) + R·h + 3·L0²·d, against (R + h)·d² for
//   forming J_m and J_T. One-off: h²·d (K) + 2·(Σ_used r_t)·d·h (A_t, B_t) + the pairs.
// Transcoder, J_c = Σ dec_f enc_fᵀ + S:
//   ⟨dec_f enc_fᵀ, J_T⟩ = Σ_k δ_k (W_outᵀdec_f)_k (W_in enc_f)_k, a table c_f built once;
//   ⟨S, J_T⟩ = Σ_k δ_k (W_outᵀ S W_inᵀ)_kk; ⟨dec_f enc_fᵀ, S⟩ = dec_fᵀ S enc_f (once per f);
//   ⟨dec_f enc_fᵀ, dec_g enc_gᵀ⟩ = (dec_f·dec_g)(enc_f·enc_g): per token L0²·d.
class ExactCosine {
public:
  ExactCosine(const ReplacementLayer &L, const TeacherMlp &T,
              const std::vector<std::vector<ActiveUnit>> &acts)
      : L_(L), T_(T), d_(L.d), h_(T.h), n_(L.units) {
    std::vector<char> used(size_t(n_), 0);
    for (const auto &a : acts)
      for (const ActiveUnit &u : a)
        used[size_t(u.index)] = 1;
    buildTeacherGram();
    if (L.molt)
      buildMolt(used, acts);
    else
      buildTranscoder(used);
  }

  /// ‖J_T‖² = δᵀKδ for rows [0, n) of xs. Tokens go in blocks so that each row of K (19 MB at
  /// h = 1536, far beyond cache) is read once per block rather than once per token.
  void teacherNorms(const double *xs, int64_t n, double *out) const {
    constexpr int64_t kBlock = 8;
#pragma omp parallel
    {
      std::vector<double> delta(size_t(kBlock * h_));
#pragma omp for schedule(dynamic, 1)
      for (int64_t b = 0; b < n; b += kBlock) {
        const int64_t m = std::min(kBlock, n - b);
        double acc[kBlock] = {0};
        for (int64_t j = 0; j < m; ++j)
          teacherDerivative(T_, xs + (b + j) * d_, &delta[size_t(j * h_)]);
        for (int64_t k = 0; k < h_; ++k) {
          const double *row = &K_[size_t(k * h_)];
          for (int64_t j = 0; j < m; ++j)
            acc[j] += delta[size_t(j * h_ + k)] * dot(row, &delta[size_t(j * h_)], h_);
        }
        for (int64_t j = 0; j < m; ++j)
          out[b + j] = acc[j];
      }
    }
  }

  /// Cross term and ‖J_m‖² of one token, given its ‖J_T‖² from teacherNorms.
  Frob token(const double *x, double teacher2, const std::vector<ActiveUnit> &act,
             std::vector<double> &delta, std::vector<double> &hs, std::vector<double> &zs,
             std::vector<double> &tmp) const {
    Frob f;
    f.teacher2 = teacher2;
    delta.resize(size_t(h_));
    teacherDerivative(T_, x, delta.data());
    return L_.molt ? moltToken(f, x, act, delta, hs, zs, tmp) : transcoderToken(f, act, delta);
  }

private:
  void buildTeacherGram() {
    std::vector<double> woT = transpose(T_.w_out, d_, h_); // [h,d]
    K_.assign(size_t(h_ * h_), 0.0);
#pragma omp parallel for schedule(dynamic, 8)
    for (int64_t k = 0; k < h_; ++k)
      for (int64_t l = k; l < h_; ++l) {
        double v = dot(&T_.w_in[size_t(k * d_)], &T_.w_in[size_t(l * d_)], d_) *
                   dot(&woT[size_t(k * d_)], &woT[size_t(l * d_)], d_);
        K_[size_t(k * h_ + l)] = K_[size_t(l * h_ + k)] = v;
      }
  }

  void buildMolt(const std::vector<char> &used, const std::vector<std::vector<ActiveUnit>> &acts) {
    std::vector<double> winT = transpose(T_.w_in, h_, d_); // [d,h]
    rOff_.assign(size_t(n_) + 1, 0);
    for (int64_t t = 0; t < n_; ++t)
      rOff_[size_t(t) + 1] = rOff_[size_t(t)] + L_.rank[size_t(t)];
    A_.assign(size_t(rOff_.back() * h_), 0.0);
    c_.assign(size_t(n_ * h_), 0.0);
    w_.assign(size_t(n_ * h_), 0.0);
#pragma omp parallel
    {
      std::vector<double> B;
#pragma omp for schedule(dynamic, 1)
      for (int64_t t = 0; t < n_; ++t) {
        if (!used[size_t(t)])
          continue;
        int64_t r = L_.rank[size_t(t)];
        const double *U = &L_.u[size_t(L_.u_off[size_t(t)])], *V = &L_.v[size_t(L_.v_off[size_t(t)])];
        double *A = &A_[size_t(rOff_[size_t(t)] * h_)];
        matmul(U, 1, r, T_.w_out.data(), A, r, d_, h_); // U_tᵀ W_out
        B.resize(size_t(r * h_));
        matmul(V, d_, 1, winT.data(), B.data(), r, d_, h_); // V_t W_inᵀ
        double *c = &c_[size_t(t * h_)];
        for (int64_t i = 0; i < r; ++i)
          for (int64_t k = 0; k < h_; ++k)
            c[k] += A[i * h_ + k] * B[size_t(i * h_ + k)];
        for (int64_t k = 0; k < h_; ++k)
          w_[size_t(t * h_ + k)] = dot(&T_.w_in[size_t(k * d_)], &L_.enc_w[size_t(t * d_)], d_);
      }
    }
    // For every ordered pair (s, t) ever open together: ⟨M_s, M_t⟩ and the vector M_s e_t.
    pairIndex_.assign(size_t(n_ * n_), -1);
    std::vector<std::pair<int64_t, int64_t>> pairs;
    for (const auto &a : acts)
      for (const ActiveUnit &p : a)
        for (const ActiveUnit &q : a) {
          int32_t &slot = pairIndex_[size_t(p.index * n_ + q.index)];
          if (slot < 0) {
            slot = int32_t(pairs.size());
            pairs.emplace_back(p.index, q.index);
          }
        }
    pairGram_.assign(pairs.size(), 0.0);
    pairMe_.assign(pairs.size() * size_t(d_), 0.0);
#pragma omp parallel
    {
      std::vector<double> gu, ve;
#pragma omp for schedule(dynamic, 1)
      for (size_t p = 0; p < pairs.size(); ++p) {
        auto [s, t] = pairs[p];
        int64_t rs = L_.rank[size_t(s)], rt = L_.rank[size_t(t)];
        const double *Us = &L_.u[size_t(L_.u_off[size_t(s)])], *Ut = &L_.u[size_t(L_.u_off[size_t(t)])];
        const double *Vs = &L_.v[size_t(L_.v_off[size_t(s)])], *Vt = &L_.v[size_t(L_.v_off[size_t(t)])];
        ve.resize(size_t(rs));
        for (int64_t i = 0; i < rs; ++i)
          ve[size_t(i)] = dot(Vs + i * d_, &L_.enc_w[size_t(t * d_)], d_);
        for (int64_t a = 0; a < d_; ++a)
          pairMe_[p * size_t(d_) + size_t(a)] = dot(Us + a * rs, ve.data(), rs);
        if (s > t)
          continue; // the Gram is symmetric: filled from (t, s) below
        gu.resize(size_t(rs * rt));
        matmul(Us, 1, rs, Ut, gu.data(), rs, d_, rt); // U_sᵀ U_t
        double tr = 0;
        for (int64_t i = 0; i < rs; ++i)
          for (int64_t j = 0; j < rt; ++j) // (V_s V_tᵀ)[i,j] pairs with (U_sᵀU_t)[i,j]
            tr += gu[size_t(i * rt + j)] * dot(Vs + i * d_, Vt + j * d_, d_);
        pairGram_[p] = tr;
      }
    }
    for (size_t p = 0; p < pairs.size(); ++p)
      if (pairs[p].first > pairs[p].second)
        pairGram_[p] = pairGram_[size_t(pairIndex_[size_t(pairs[p].second * n_ + pairs[p].first)])];
  }

  Frob moltToken(Frob f, const double *x, const std::vector<ActiveUnit> &act,
                 const std::vector<double> &delta, std::vector<double> &hs, std::vector<double> &zs,
                 std::vector<double> &tmp) const {
    moltProducts(L_, x, act, hs, zs);
    const size_t m = act.size();
    tmp.resize(size_t(h_));
    int64_t off = 0;
    for (size_t q = 0; q < m; ++q) {
      int64_t t = act[q].index, r = L_.rank[size_t(t)];
      f.cross += act[q].gate * dot(delta.data(), &c_[size_t(t * h_)], h_);
      for (int64_t k = 0; k < h_; ++k)
        tmp[size_t(k)] = delta[size_t(k)] * w_[size_t(t * h_ + k)];
      const double *A = &A_[size_t(rOff_[size_t(t)] * h_)];
      for (int64_t i = 0; i < r; ++i)
        f.cross += hs[size_t(off + i)] * dot(A + i * h_, tmp.data(), h_);
      off += r;
    }
    // ‖J_m‖²: Σ g_s g_t ⟨M_s,M_t⟩ + 2 Σ g_s z_t·(M_s e_t) + Σ (z_s·z_t)(e_s·e_t), all from the
    // pair tables but the last.
    for (size_t p = 0; p < m; ++p) {
      int64_t s = act[p].index;
      for (size_t q = 0; q < m; ++q) {
        int64_t t = act[q].index;
        size_t slot = size_t(pairIndex_[size_t(s * n_ + t)]);
        f.model2 += act[p].gate * (act[q].gate * pairGram_[slot] +
                                   2.0 * dot(&zs[q * size_t(d_)], &pairMe_[slot * size_t(d_)], d_));
        f.model2 += dot(&zs[p * size_t(d_)], &zs[q * size_t(d_)], d_) *
                    dot(&L_.enc_w[size_t(s * d_)], &L_.enc_w[size_t(t * d_)], d_);
      }
    }
    return f;
  }

  void buildTranscoder(const std::vector<char> &used) {
    std::vector<double> woT = transpose(T_.w_out, d_, h_); // [h,d]
    c_.assign(size_t(n_ * h_), 0.0);
    sf_.assign(size_t(n_), 0.0);
    const bool skip = !L_.skip_w.empty();
#pragma omp parallel for schedule(dynamic, 4)
    for (int64_t f = 0; f < n_; ++f) {
      if (!used[size_t(f)])
        continue;
      const double *dec = &L_.dec_w[size_t(f * d_)], *enc = &L_.enc_w[size_t(f * d_)];
      for (int64_t k = 0; k < h_; ++k)
        c_[size_t(f * h_ + k)] =
            dot(&woT[size_t(k * d_)], dec, d_) * dot(&T_.w_in[size_t(k * d_)], enc, d_);
      if (skip)
        for (int64_t a = 0; a < d_; ++a)
          sf_[size_t(f)] += dec[a] * dot(&L_.skip_w[size_t(a * d_)], enc, d_);
    }
    sdiag_.assign(size_t(h_), 0.0);
    if (!skip)
      return;
    skip2_ = dot(L_.skip_w.data(), L_.skip_w.data(), d_ * d_);
    std::vector<double> winT = transpose(T_.w_in, h_, d_), sw(size_t(d_ * h_));
    matmul(L_.skip_w.data(), d_, 1, winT.data(), sw.data(), d_, d_, h_); // S W_inᵀ
    for (int64_t a = 0; a < d_; ++a)
      for (int64_t k = 0; k < h_; ++k)
        sdiag_[size_t(k)] += T_.w_out[size_t(a * h_ + k)] * sw[size_t(a * h_ + k)];
  }

  Frob transcoderToken(Frob f, const std::vector<ActiveUnit> &act,
                       const std::vector<double> &delta) const {
    f.cross = dot(delta.data(), sdiag_.data(), h_);
    f.model2 = skip2_;
    for (const ActiveUnit &p : act) {
      f.cross += dot(delta.data(), &c_[size_t(p.index * h_)], h_);
      f.model2 += 2.0 * sf_[size_t(p.index)];
      for (const ActiveUnit &q : act)
        f.model2 += dot(&L_.dec_w[size_t(p.index * d_)], &L_.dec_w[size_t(q.index * d_)], d_) *
                    dot(&L_.enc_w[size_t(p.index * d_)], &L_.enc_w[size_t(q.index * d_)], d_);
    }
    return f;
  }

  const ReplacementLayer &L_;
  const TeacherMlp &T_;
  int64_t d_, h_, n_;
  std::vector<double> K_;             // [h,h] teacher Gram product
  std::vector<int64_t> rOff_;         // molt: first row of transform t in A_
  std::vector<double> A_, c_, w_;     // molt: A_t rows; c_t; W_in e_t. transcoder: c_f in c_
  std::vector<int32_t> pairIndex_;    // molt: [T,T] slot of an ordered pair open together, or -1
  std::vector<double> pairGram_;      // molt: per slot (s,t): ⟨M_s, M_t⟩
  std::vector<double> pairMe_;        // molt: per slot (s,t): M_s e_t (d values)
  std::vector<double> sf_, sdiag_;    // transcoder skip terms
  double skip2_ = 0;
};

void frobDense(const ReplacementLayer &L, const TeacherMlp &T, const double *x,
               std::vector<double> &Jm, std::vector<double> &Jt, Frob &f) {
  const int64_t dd = L.d * L.d;
  Jm.resize(size_t(dd));
  Jt.resize(size_t(dd));
  replacementJacobian(L, x, Jm.data());
  teacherJacobian(T, x, Jt.data());
  f.cross = dot(Jm.data(), Jt.data(), dd);
  f.model2 = dot(Jm.data(), Jm.data(), dd);
  f.teacher2 = dot(Jt.data(), Jt.data(), dd);
}

// Serial reductions in row order: the result does not depend on the thread count.
JacobianCosine summarise(JacobianCosine res, const std::vector<double> &probeVar,
                         const std::vector<char> &degenerate) {
  const int64_t n = res.tokens;
  double sum = 0, pv = 0;
  for (int64_t i = 0; i < n; ++i) {
    sum += res.per_token[size_t(i)];
    pv += probeVar[size_t(i)];
    res.degenerate += degenerate[size_t(i)];
  }
  res.mean = sum / double(n);
  double var = 0;
  for (double c : res.per_token)
    var += (c - res.mean) * (c - res.mean);
  res.std_error = n > 1 ? std::sqrt(var / double(n - 1) / double(n)) : 0.0;
  res.probe_std_error = std::sqrt(pv) / double(n);
  return res;
}

} // namespace

// ---- the layer ------------------------------------------------------------------------------

StatusOr<ReplacementLayer> makeReplacement(const ModelDesc &model, const HostTensors &params) {
  ReplacementLayer L;
  L.d = model.d_model;
  L.gate = model.gate.kind;
  if (L.d <= 0)
    return invalidArgument("model d_model must be positive");
  if (model.kind == "molt") {
    L.molt = true;
    L.enc_sign = -1;
    if (L.gate != "jumprelu" && L.gate != "relu")
      return invalidArgument("molt gate '" + L.gate + "' is not jumprelu or relu");
    for (const Bucket &b : model.buckets) {
      if (b.rank <= 0 || b.count < 0)
        return invalidArgument("bucket (rank " + std::to_string(b.rank) + ", count " +
                               std::to_string(b.count) + ") is invalid");
      L.units += b.count;
    }
  } else if (model.kind == "transcoder") {
    L.molt = false;
    L.enc_sign = +1;
    L.units = model.features;
    if (L.gate != "jumprelu" && L.gate != "relu" && L.gate != "topk")
      return invalidArgument("transcoder gate '" + L.gate + "' is not jumprelu, relu or topk");
    L.topk = model.gate.k;
    if (L.gate == "topk" && (L.topk <= 0 || L.topk > L.units))
      return invalidArgument("topk k=" + std::to_string(L.topk) + " is outside [1, features]");
  } else {
    return invalidArgument("model kind '" + model.kind + "' is not molt or transcoder");
  }
  if (L.units <= 0)
    return invalidArgument("model has no transforms or features");

  auto fetch = [&](const std::string &name, int64_t count, bool required,
                   std::vector<double> &into) -> Status {
    auto it = params.find(name);
    if (it == params.end()) {
      if (required)
        return notFound("param '" + name + "' is missing");
      into.assign(size_t(count), 0.0);
      return Status::ok();
    }
    if (int64_t(it->second.size()) != count)
      return invalidArgument(shapeError(name, it->second.size(), count));
    into.assign(it->second.begin(), it->second.end());
    for (double v : into)
      if (!std::isfinite(v))
        return invalidArgument("param '" + name + "' holds a non-finite value");
    return Status::ok();
  };
  const int64_t d = L.d, n = L.units;
  MOLT_RETURN_IF_ERROR(fetch("enc_w", n * d, true, L.enc_w));
  MOLT_RETURN_IF_ERROR(fetch("enc_b", n, true, L.enc_b));
  MOLT_RETURN_IF_ERROR(fetch("theta", n, L.gate == "jumprelu", L.theta));
  MOLT_RETURN_IF_ERROR(fetch("dec_b", d, model.decoder_bias, L.dec_b));
  if (L.molt) {
    for (size_t k = 0; k < model.buckets.size(); ++k) {
      const Bucket &b = model.buckets[k];
      std::vector<double> u, v;
      MOLT_RETURN_IF_ERROR(fetch("u" + std::to_string(k), b.count * d * b.rank, true, u));
      MOLT_RETURN_IF_ERROR(fetch("v" + std::to_string(k), b.count * b.rank * d, true, v));
      for (int64_t i = 0; i < b.count; ++i) {
        L.rank.push_back(b.rank);
        L.u_off.push_back(int64_t(L.u.size()) + i * d * b.rank);
        L.v_off.push_back(int64_t(L.v.size()) + i * b.rank * d);
      }
      L.u.insert(L.u.end(), u.begin(), u.end());
      L.v.insert(L.v.end(), v.begin(), v.end());
    }
  } else {
    MOLT_RETURN_IF_ERROR(fetch("dec_w", n * d, true, L.dec_w));
    if (model.skip)
      MOLT_RETURN_IF_ERROR(fetch("skip_w", d * d, true, L.skip_w));
  }
  return L;
}

void activeUnits(const ReplacementLayer &L, const double *x, std::vector<ActiveUnit> &out) {
  out.clear();
  std::vector<double> pre(size_t(L.units));
  for (int64_t t = 0; t < L.units; ++t)
    pre[size_t(t)] = dot(&L.enc_w[size_t(t * L.d)], x, L.d) + L.enc_sign * L.enc_b[size_t(t)];
  if (L.gate == "topk") {
    // The k largest pre-activations (ties to the lower index), then ReLU.
    std::vector<int64_t> idx(size_t(L.units));
    std::iota(idx.begin(), idx.end(), 0);
    std::nth_element(idx.begin(), idx.begin() + (L.topk - 1), idx.end(), [&](int64_t a, int64_t b) {
      return pre[size_t(a)] > pre[size_t(b)] || (pre[size_t(a)] == pre[size_t(b)] && a < b);
    });
    idx.resize(size_t(L.topk));
    std::sort(idx.begin(), idx.end());
    for (int64_t t : idx)
      if (pre[size_t(t)] > 0)
        out.push_back({t, pre[size_t(t)], pre[size_t(t)]});
    return;
  }
  // JumpReLU opens at θ⁺ = max(θ, 0) (docs/bundle.md), so a gate is never negative.
  const bool jump = L.gate == "jumprelu";
  for (int64_t t = 0; t < L.units; ++t) {
    double a = pre[size_t(t)];
    if (a > (jump ? std::max(L.theta[size_t(t)], 0.0) : 0.0))
      out.push_back({t, a, a});
  }
}

void replacementForward(const ReplacementLayer &L, const double *x, double *y) {
  std::vector<ActiveUnit> act;
  activeUnits(L, x, act);
  std::copy(L.dec_b.begin(), L.dec_b.end(), y);
  if (L.molt) {
    std::vector<double> hs, zs;
    moltProducts(L, x, act, hs, zs);
    for (size_t q = 0; q < act.size(); ++q)
      axpy(act[q].gate, &zs[q * size_t(L.d)], y, L.d);
  } else {
    for (const ActiveUnit &a : act)
      axpy(a.gate, &L.dec_w[size_t(a.index * L.d)], y, L.d);
    if (!L.skip_w.empty())
      for (int64_t i = 0; i < L.d; ++i)
        y[i] += dot(&L.skip_w[size_t(i * L.d)], x, L.d);
  }
}

void replacementJacobian(const ReplacementLayer &L, const double *x, double *J) {
  const int64_t d = L.d;
  std::vector<ActiveUnit> act;
  activeUnits(L, x, act);
  if (L.skip_w.empty())
    std::fill(J, J + d * d, 0.0);
  else
    std::copy(L.skip_w.begin(), L.skip_w.end(), J);
  std::vector<double> hs, zs;
  if (L.molt)
    moltProducts(L, x, act, hs, zs);
  for (size_t q = 0; q < act.size(); ++q) {
    int64_t t = act[q].index;
    const double *e = &L.enc_w[size_t(t * d)];
    if (!L.molt) {
      for (int64_t i = 0; i < d; ++i)
        axpy(L.dec_w[size_t(t * d + i)], e, J + i * d, d);
      continue;
    }
    int64_t r = L.rank[size_t(t)];
    const double *U = &L.u[size_t(L.u_off[size_t(t)])], *V = &L.v[size_t(L.v_off[size_t(t)])];
    const double *z = &zs[q * size_t(d)];
    for (int64_t i = 0; i < d; ++i) {
      for (int64_t p = 0; p < r; ++p)
        axpy(act[q].gate * U[i * r + p], V + p * d, J + i * d, d); // g U_t V_t
      axpy(z[i], e, J + i * d, d);                                   // (U_tV_t x) e_tᵀ
    }
  }
}

void replacementJvp(const ReplacementLayer &L, const double *x, const double *v, double *out) {
  std::vector<ActiveUnit> act;
  activeUnits(L, x, act);
  std::vector<double> hs, zs, tmp;
  if (L.molt)
    moltProducts(L, x, act, hs, zs);
  jvpKnown(L, act, zs, v, out, tmp);
}

void teacherJvp(const TeacherMlp &T, const double *x, const double *v, double *out) {
  std::vector<double> delta(size_t(T.h)), tmp;
  teacherDerivative(T, x, delta.data());
  teacherJvpKnown(T, delta.data(), v, out, tmp);
}

// ---- the metric -----------------------------------------------------------------------------

StatusOr<JacobianCosine> jacobianCosine(const ReplacementLayer &L, const TeacherMlp &T,
                                        const float *x, int64_t n, const JacobianOptions &opt) {
  if (T.d != L.d)
    return invalidArgument("teacher width d=" + std::to_string(T.d) + " differs from the model's d=" +
                           std::to_string(L.d));
  if (n <= 0)
    return invalidArgument("no tokens to measure the Jacobian cosine on");
  const bool probed = opt.method == JacobianMethod::Random || opt.method == JacobianMethod::Compiled;
  if (probed && opt.probes < 2)
    return invalidArgument("the randomised Jacobian cosine needs at least 2 probes per token");
  if (opt.method == JacobianMethod::Compiled && !opt.executor)
    return invalidArgument("the compiled Jacobian cosine needs an executor of the layer's bundle");
  const int64_t d = L.d;
  std::vector<double> xs(size_t(n * d));
  for (int64_t i = 0; i < n * d; ++i) {
    xs[size_t(i)] = x[i];
    if (!std::isfinite(xs[size_t(i)]))
      return invalidArgument("row " + std::to_string(i / d) + " of x is not finite");
  }

  JacobianCosine res;
  res.tokens = n;
  res.per_token.assign(size_t(n), 0.0);
  std::vector<double> probeVar(size_t(n), 0.0);
  std::vector<char> degenerate(size_t(n), 0);
  if (opt.method == JacobianMethod::Compiled) {
    MOLT_RETURN_IF_ERROR(compiledCosines(L, T, xs, n, opt, res.per_token, probeVar, degenerate));
    return summarise(std::move(res), probeVar, degenerate);
  }

  std::vector<std::vector<ActiveUnit>> acts(static_cast<size_t>(n));
#pragma omp parallel for schedule(dynamic, 16)
  for (int64_t i = 0; i < n; ++i)
    activeUnits(L, &xs[size_t(i * d)], acts[size_t(i)]);
  std::unique_ptr<ExactCosine> exact;
  if (opt.method == JacobianMethod::Exact)
    exact = std::make_unique<ExactCosine>(L, T, acts);
  std::vector<double> teacher2(size_t(n), 0.0);
  if (exact)
    exact->teacherNorms(xs.data(), n, teacher2.data());

#pragma omp parallel
  {
    std::vector<double> a1, a2, a3, a4, a5;
    Frob f;
#pragma omp for schedule(dynamic, 4)
    for (int64_t i = 0; i < n; ++i) {
      const double *xi = &xs[size_t(i * d)];
      const auto &act = acts[size_t(i)];
      bool deg = false;
      if (opt.method == JacobianMethod::Exact) {
        f = exact->token(xi, teacher2[size_t(i)], act, a1, a2, a3, a4);
        res.per_token[size_t(i)] = f.cosine(deg);
      } else if (opt.method == JacobianMethod::Dense) {
        frobDense(L, T, xi, a1, a2, f);
        res.per_token[size_t(i)] = f.cosine(deg);
      } else {
        Rng rng = tokenRng(opt.seed, i);
        std::vector<double> &delta = a1, &zs = a2, &v = a3, &jm = a4, &jt = a5;
        delta.resize(size_t(T.h));
        teacherDerivative(T, xi, delta.data());
        std::vector<double> hs, tmp;
        if (L.molt)
          moltProducts(L, xi, act, hs, zs);
        v.resize(size_t(d));
        jm.resize(size_t(d));
        jt.resize(size_t(d));
        ProbeMoments moments;
        for (int k = 0; k < opt.probes; ++k) {
          drawProbe(rng, opt.gaussian, v.data(), d);
          jvpKnown(L, act, zs, v.data(), jm.data(), tmp);
          teacherJvpKnown(T, delta.data(), v.data(), jt.data(), tmp);
          moments.add(jm.data(), jt.data(), d);
        }
        res.per_token[size_t(i)] = moments.finish(deg, probeVar[size_t(i)]);
      }
      degenerate[size_t(i)] = deg;
    }
  }
  return summarise(std::move(res), probeVar, degenerate);
}

StatusOr<JacobianCosine> jacobianCosine(const ModelDesc &model, const HostTensors &params,
                                        const TeacherMlp &teacher, const float *x, int64_t n,
                                        const JacobianOptions &options) {
  auto layer = makeReplacement(model, params);
  if (!layer)
    return layer.status();
  return jacobianCosine(*layer, teacher, x, n, options);
}

} // namespace molt
