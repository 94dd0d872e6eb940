// JacobianMethod::Exact: the cosine from identities on small matrices, never a d×d Jacobian
// per token.
#include "jacobian/common.h"

#include "kernels/cpu/gemm.h"

#include <algorithm>

namespace molt::jacobian {

namespace {

using cpu::Trans;

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
    // K = (W_outᵀW_out) ∘ (W_in W_inᵀ), both [h,h].
    std::vector<double> gin(size_t(h_ * h_));
    K_.assign(size_t(h_ * h_), 0.0);
    cpu::gemmParallel(Trans::Yes, Trans::No, h_, h_, d_, 1.0, T_.w_out.data(), h_, T_.w_out.data(),
                      h_, 0.0, K_.data(), h_);
    cpu::gemmParallel(Trans::No, Trans::Yes, h_, h_, d_, 1.0, T_.w_in.data(), d_, T_.w_in.data(),
                      d_, 0.0, gin.data(), h_);
    for (size_t i = 0; i < K_.size(); ++i)
      K_[i] *= gin[i];
  }

  void buildMolt(const std::vector<char> &used, const std::vector<std::vector<ActiveUnit>> &acts) {
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
        cpu::gemm(Trans::Yes, Trans::No, r, h_, d_, 1.0, U, r, T_.w_out.data(), h_, 0.0, A,
                  h_); // U_tᵀ W_out
        B.resize(size_t(r * h_));
        cpu::gemm(Trans::No, Trans::Yes, r, h_, d_, 1.0, V, d_, T_.w_in.data(), d_, 0.0, B.data(),
                  h_); // V_t W_inᵀ
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
        cpu::gemm(Trans::Yes, Trans::No, rs, rt, d_, 1.0, Us, rs, Ut, rt, 0.0, gu.data(),
                  rt); // U_sᵀ U_t
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
    c_.assign(size_t(n_ * h_), 0.0);
    sf_.assign(size_t(n_), 0.0);
    const bool skip = !L_.skip_w.empty();
#pragma omp parallel
    {
      std::vector<double> wd(static_cast<size_t>(h_)), we(static_cast<size_t>(h_));
#pragma omp for schedule(dynamic, 4)
      for (int64_t f = 0; f < n_; ++f) {
        if (!used[size_t(f)])
          continue;
        const double *dec = &L_.dec_w[size_t(f * d_)], *enc = &L_.enc_w[size_t(f * d_)];
        cpu::gemm(Trans::Yes, Trans::No, h_, 1, d_, 1.0, T_.w_out.data(), h_, dec, 1, 0.0,
                  wd.data(), 1); // W_outᵀ dec_f
        cpu::gemm(Trans::No, Trans::No, h_, 1, d_, 1.0, T_.w_in.data(), d_, enc, 1, 0.0, we.data(),
                  1); // W_in enc_f
        for (int64_t k = 0; k < h_; ++k)
          c_[size_t(f * h_ + k)] = wd[size_t(k)] * we[size_t(k)];
        if (skip)
          for (int64_t a = 0; a < d_; ++a)
            sf_[size_t(f)] += dec[a] * dot(&L_.skip_w[size_t(a * d_)], enc, d_);
      }
    }
    sdiag_.assign(size_t(h_), 0.0);
    if (!skip)
      return;
    skip2_ = dot(L_.skip_w.data(), L_.skip_w.data(), d_ * d_);
    std::vector<double> sw(size_t(d_ * h_));
    cpu::gemmParallel(Trans::No, Trans::Yes, d_, h_, d_, 1.0, L_.skip_w.data(), d_, T_.w_in.data(),
                      d_, 0.0, sw.data(), h_); // S W_inᵀ
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

} // namespace

void exactCosines(const ReplacementLayer &L, const TeacherMlp &T, const std::vector<double> &xs,
                  const std::vector<std::vector<ActiveUnit>> &acts, TokenResults &out) {
  const int64_t n = int64_t(acts.size()), d = L.d;
  ExactCosine exact(L, T, acts);
  std::vector<double> teacher2(size_t(n), 0.0);
  exact.teacherNorms(xs.data(), n, teacher2.data());
#pragma omp parallel
  {
    std::vector<double> delta, hs, zs, tmp;
#pragma omp for schedule(dynamic, 4)
    for (int64_t i = 0; i < n; ++i) {
      bool deg = false;
      Frob f = exact.token(&xs[size_t(i * d)], teacher2[size_t(i)], acts[size_t(i)], delta, hs, zs,
                           tmp);
      out.cosine[size_t(i)] = f.cosine(deg);
      out.degenerate[size_t(i)] = deg;
    }
  }
}

} // namespace molt::jacobian
