// Test-side dense float64 references for a MOLT or transcoder layer: every transform for every
// token, masked by the gate, ‖U_tV_t‖_F from the explicit d×d product. Deliberately naive and
// independent of kernels/cpu, so the sparse kernels are checked against plain loops.
#pragma once

#include <algorithm>
#include <cmath>
#include <map>
#include <random>
#include <string>
#include <vector>

#include "molt/plan.h"

namespace molt::test {

using Tensors = std::map<std::string, std::vector<double>>;

struct Reference {
  int64_t B = 0, D = 0, T = 0;
  std::vector<double> pre;   // [B,T]
  std::vector<double> gate;  // [B,T], the gate value g (0 where closed)
  std::vector<double> norm;  // [T], ‖U_tV_t‖_F (molt) or ‖dec_w_f‖ (transcoder)
  std::vector<double> yhat;  // [B,D]
  std::vector<double> dGate; // [B,T], ∂loss/∂g with loss = sse/B + λ·penalty/B
  double sse = 0, penalty = 0;
  double loss(double lambda) const { return sse / double(B) + lambda * penalty / double(B); }
};

inline double penaltyS(const PenaltyDesc &p, double s) { return p.kind == "tanh" ? std::tanh(p.c * s) : s; }
inline double penaltyDS(const PenaltyDesc &p, double s) {
  if (p.kind != "tanh")
    return 1.0;
  double th = std::tanh(p.c * s);
  return p.c * (1 - th * th);
}

/// out[i] = Σ_j m[i*cols + j] · v[j]
inline std::vector<double> matVec(const double *m, int64_t rows, int64_t cols, const double *v) {
  std::vector<double> out(size_t(rows), 0.0);
  for (int64_t i = 0; i < rows; ++i)
    for (int64_t j = 0; j < cols; ++j)
      out[size_t(i)] += m[i * cols + j] * v[j];
  return out;
}

/// The per-transform linear map U_tV_t x of a molt ([D]), from the bucket params.
inline std::vector<double> transformApply(const ModelDesc &m, const Tensors &p, int64_t t,
                                          const double *x) {
  int64_t D = m.d_model, off = 0;
  for (size_t k = 0; k < m.buckets.size(); ++k) {
    int64_t R = m.buckets[k].rank, N = m.buckets[k].count;
    if (t < off + N) {
      int64_t n = t - off;
      std::vector<double> h = matVec(p.at("v" + std::to_string(k)).data() + n * R * D, R, D, x);
      return matVec(p.at("u" + std::to_string(k)).data() + n * D * R, D, R, h.data());
    }
    off += N;
  }
  return {};
}

/// ‖U_tV_t‖_F by forming the D×D product (what the kernels must never do).
inline double explicitFrobenius(const ModelDesc &m, const Tensors &p, int64_t t) {
  int64_t D = m.d_model;
  double s = 0;
  std::vector<double> e(size_t(D), 0.0);
  for (int64_t j = 0; j < D; ++j) { // column j of U_tV_t is U_tV_t e_j
    std::fill(e.begin(), e.end(), 0.0);
    e[size_t(j)] = 1.0;
    for (double c : transformApply(m, p, t, e.data()))
      s += c * c;
  }
  return std::sqrt(s);
}

/// The full dense forward, loss and ∂loss/∂g of `plan`'s layer on x, y ([B,D] each).
inline Reference referenceForward(const Plan &plan, const Tensors &p, const std::vector<double> &x,
                                  const std::vector<double> &y, int64_t B, double lambda) {
  const ModelDesc &m = plan.model;
  const bool tc = m.kind == "transcoder";
  Reference r;
  r.B = B;
  r.D = m.d_model;
  r.T = m.numTransforms();
  const int64_t D = r.D, T = r.T;
  r.pre.assign(size_t(B * T), 0.0);
  r.gate.assign(size_t(B * T), 0.0);
  r.yhat.assign(size_t(B * D), 0.0);
  r.dGate.assign(size_t(B * T), 0.0);
  r.norm.assign(size_t(T), 0.0);
  for (int64_t t = 0; t < T; ++t) {
    if (tc) {
      double s = 0;
      for (int64_t j = 0; j < D; ++j)
        s += p.at("dec_w")[size_t(t * D + j)] * p.at("dec_w")[size_t(t * D + j)];
      r.norm[size_t(t)] = std::sqrt(s);
    } else {
      r.norm[size_t(t)] = explicitFrobenius(m, p, t);
    }
  }
  for (int64_t i = 0; i < B; ++i) {
    const double *xi = x.data() + i * D;
    double *pre = r.pre.data() + i * T, *g = r.gate.data() + i * T;
    for (int64_t t = 0; t < T; ++t) {
      double a = tc ? p.at("enc_b")[size_t(t)] : -p.at("enc_b")[size_t(t)];
      for (int64_t j = 0; j < D; ++j)
        a += p.at("enc_w")[size_t(t * D + j)] * xi[j];
      pre[t] = a;
    }
    for (int64_t t = 0; t < T; ++t) {
      if (m.gate.kind == "jumprelu")
        g[t] = pre[t] > std::max(p.at("theta")[size_t(t)], 0.0) ? pre[t] : 0.0; // θ⁺
      else if (m.gate.kind == "relu")
        g[t] = std::max(pre[t], 0.0);
      else { // topk: rank among the token's pre-activations, ties to the lower index
        int64_t above = 0;
        for (int64_t s = 0; s < T; ++s)
          above += pre[s] > pre[t] || (pre[s] == pre[t] && s < t);
        g[t] = above < m.gate.k ? std::max(pre[t], 0.0) : 0.0;
      }
    }
    double *yh = r.yhat.data() + i * D;
    for (int64_t t = 0; t < T; ++t) {
      if (g[t] == 0)
        continue;
      std::vector<double> out = tc ? std::vector<double>(p.at("dec_w").begin() + t * D,
                                                         p.at("dec_w").begin() + (t + 1) * D)
                                   : transformApply(m, p, t, xi);
      for (int64_t j = 0; j < D; ++j)
        yh[j] += g[t] * out[size_t(j)];
      r.penalty += penaltyS(m.penalty, g[t] * r.norm[size_t(t)]);
    }
    if (tc && m.skip) {
      std::vector<double> s = matVec(p.at("skip_w").data(), D, D, xi);
      for (int64_t j = 0; j < D; ++j)
        yh[j] += s[size_t(j)];
    }
    if (m.decoder_bias)
      for (int64_t j = 0; j < D; ++j)
        yh[j] += p.at("dec_b")[size_t(j)];
    std::vector<double> dy(static_cast<size_t>(D), 0.0);
    for (int64_t j = 0; j < D; ++j) {
      double e = yh[j] - y[size_t(i * D + j)];
      r.sse += e * e;
      dy[size_t(j)] = 2 * e / double(B);
    }
    for (int64_t t = 0; t < T; ++t) {
      std::vector<double> out = tc ? std::vector<double>(p.at("dec_w").begin() + t * D,
                                                         p.at("dec_w").begin() + (t + 1) * D)
                                   : transformApply(m, p, t, xi);
      double dg = 0;
      for (int64_t j = 0; j < D; ++j)
        dg += out[size_t(j)] * dy[size_t(j)];
      double n = r.norm[size_t(t)];
      r.dGate[size_t(i * T + t)] = dg + lambda / double(B) * penaltyDS(m.penalty, g[t] * n) * n;
    }
  }
  return r;
}

/// Fills v with N(0, std²) draws.
inline void fillNormal(std::vector<double> &v, double std, std::mt19937_64 &rng) {
  std::normal_distribution<double> dist(0.0, std);
  for (double &e : v)
    e = dist(rng);
}

} // namespace molt::test
