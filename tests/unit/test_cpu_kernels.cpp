// The CPU kernels one family at a time, in float64, against plain-loop references: pair
// compaction, top-k, sparse apply against the dense formulation, Gram-matrix norms against the
// explicit product, Adam against a hand-computed step, loss statistics, determinism.
#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>
#include <cstring>
#include <random>

#include "cpu_reference.h"
#include "kernels/cpu/bucket_apply.h"
#include "kernels/cpu/encode_gate.h"
#include "kernels/cpu/frob_norm.h"
#include "kernels/cpu/loss.h"
#include "kernels/cpu/optimizer.h"

namespace molt {
namespace {

using namespace molt::cpu;

/// The outputs of encodeGate, sized for B tokens and T transforms.
template <typename S> struct Encoded {
  std::vector<S> pre, gate, pairPre, stats = std::vector<S>(16, S(0));
  std::vector<int32_t> ptr, tok;
  int32_t count = 0;
  Encoded(int64_t B, int64_t T)
      : pre(size_t(B * T)), gate(size_t(B * T)), pairPre(size_t(B * T)), ptr(size_t(T + 1)),
        tok(size_t(B * T)) {}
  PairLists<S> lists() const { return {ptr.data(), tok.data(), gate.data(), pairPre.data()}; }
};

template <typename S>
Encoded<S> encode(int64_t B, int64_t T, int64_t D, const GateParams &g, S sign,
                  const std::vector<S> &x, const std::vector<S> &w, const std::vector<S> &b,
                  const std::vector<S> &theta) {
  Encoded<S> e(B, T);
  encodeGate<S>(B, T, D, g, sign, x.data(), w.data(), b.data(), theta.data(), e.pre.data(),
                e.ptr.data(), e.tok.data(), e.gate.data(), e.pairPre.data(), &e.count,
                e.stats.data());
  return e;
}

std::vector<double> normal(size_t n, double std, std::mt19937_64 &rng) {
  std::vector<double> v(n);
  test::fillNormal(v, std, rng);
  return v;
}

TEST(EncodeGate, ListsExactlyThePairsAboveTheWindowPerTransformInTokenOrder) {
  const int64_t B = 37, T = 11, D = 9;
  std::mt19937_64 rng(1);
  auto x = normal(B * D, 1, rng), w = normal(T * D, 0.4, rng), b = normal(T, 0.2, rng),
       theta = normal(T, 0.3, rng);
  GateParams g{GateKind::JumpReLU, 0.2, 0};
  // Some thresholds are negative: the gate must apply θ⁺ = max(θ, 0) (docs/bundle.md).
  ASSERT_LT(*std::min_element(theta.begin(), theta.end()), -0.1);
  Encoded<double> e = encode<double>(B, T, D, g, -1.0, x, w, b, theta);

  int64_t listed = 0, active = 0, negativeOpenBelowZero = 0;
  for (int64_t t = 0; t < T; ++t) {
    ASSERT_EQ(e.ptr[size_t(t)], listed) << "transform " << t;
    const double thPlus = std::max(theta[size_t(t)], 0.0);
    for (int64_t i = 0; i < B; ++i) {
      double a = -b[size_t(t)];
      for (int64_t j = 0; j < D; ++j)
        a += x[size_t(i * D + j)] * w[size_t(t * D + j)];
      ASSERT_NEAR(e.pre[size_t(i * T + t)], a, 1e-12);
      negativeOpenBelowZero += a > theta[size_t(t)] && a < 0;
      if (a <= thPlus - 0.1)
        continue;
      ASSERT_EQ(e.tok[size_t(listed)], i);
      EXPECT_EQ(e.pairPre[size_t(listed)], e.pre[size_t(i * T + t)]);
      EXPECT_EQ(e.gate[size_t(listed)], a > thPlus ? e.pre[size_t(i * T + t)] : 0.0);
      EXPECT_GE(e.gate[size_t(listed)], 0.0);
      active += a > thPlus;
      ++listed;
    }
  }
  // Pairs a raw-θ gate would have passed with a negative g did occur, and were gated off.
  EXPECT_GT(negativeOpenBelowZero, 0);
  EXPECT_EQ(e.ptr[size_t(T)], listed);
  EXPECT_EQ(e.count, listed);
  EXPECT_EQ(e.stats[3], double(active));
  EXPECT_GT(listed, 0);
  EXPECT_LT(listed, B * T);
}

// gate_bwd with thresholds on both sides of 0: da = dg·H(pre − θ⁺), dθ = Σ dg·(−θ⁺/ε) over the
// window |pre − θ⁺| < ε/2, hence exactly 0 wherever θ ≤ 0 though pairs sit in that window.
TEST(GateBwd, UsesTheEffectiveThresholdAndGivesNoThetaGradientBelowZero) {
  const int64_t B = 41, T = 8, D = 5;
  const double eps = 0.3;
  std::mt19937_64 rng(3);
  auto x = normal(B * D, 1, rng), w = normal(T * D, 0.5, rng), b = std::vector<double>(T, 0.0);
  std::vector<double> theta(T);
  for (int64_t t = 0; t < T; ++t)
    theta[size_t(t)] = t % 2 ? -0.5 + 0.1 * double(t) : 0.05 + 0.05 * double(t);
  GateParams g{GateKind::JumpReLU, eps, 0};
  Encoded<double> e = encode<double>(B, T, D, g, 1.0, x, w, b, theta);
  std::vector<double> dg = normal(size_t(e.count), 1, rng);
  std::vector<double> dW(static_cast<size_t>(T * D)), dB(static_cast<size_t>(T)),
      dTh(static_cast<size_t>(T));
  gateBwd<double>(T, D, g, 1.0, x.data(), theta.data(), e.lists(), dg.data(), dW.data(),
                  dB.data(), dTh.data());
  int64_t nearZeroThreshold = 0;
  for (int64_t t = 0; t < T; ++t) {
    const double thPlus = std::max(theta[size_t(t)], 0.0);
    double wantB = 0, wantTh = 0;
    std::vector<double> wantW(size_t(D), 0.0);
    for (int32_t p = e.ptr[size_t(t)]; p < e.ptr[size_t(t + 1)]; ++p) {
      const double a = e.pairPre[size_t(p)];
      if (std::abs(a - thPlus) < eps / 2) {
        wantTh += dg[size_t(p)] * (-thPlus / eps);
        nearZeroThreshold += theta[size_t(t)] <= 0;
      }
      if (a > thPlus) {
        wantB += dg[size_t(p)];
        for (int64_t j = 0; j < D; ++j)
          wantW[size_t(j)] += dg[size_t(p)] * x[size_t(e.tok[size_t(p)] * D + j)];
      }
    }
    EXPECT_NEAR(dB[size_t(t)], wantB, 1e-12) << "transform " << t;
    EXPECT_NEAR(dTh[size_t(t)], wantTh, 1e-12) << "transform " << t;
    if (theta[size_t(t)] <= 0)
      EXPECT_EQ(dTh[size_t(t)], 0.0) << "transform " << t;
    for (int64_t j = 0; j < D; ++j)
      EXPECT_NEAR(dW[size_t(t * D + j)], wantW[size_t(j)], 1e-12);
  }
  EXPECT_GT(nearZeroThreshold, 0); // the window around θ⁺ = 0 held pairs
}

TEST(EncodeGate, TopKListsTheKLargestPositivePreActivationsOfEachToken) {
  const int64_t B = 23, T = 13, D = 6, K = 4;
  std::mt19937_64 rng(2);
  auto x = normal(B * D, 1, rng), w = normal(T * D, 0.5, rng), b = normal(T, 0.3, rng);
  Encoded<double> e = encode<double>(B, T, D, GateParams{GateKind::TopK, 0, K}, 1.0, x, w, b, {});
  std::vector<std::vector<int64_t>> perToken(static_cast<size_t>(B));
  for (int64_t t = 0; t < T; ++t)
    for (int32_t p = e.ptr[size_t(t)]; p < e.ptr[size_t(t + 1)]; ++p)
      perToken[size_t(e.tok[size_t(p)])].push_back(t);
  for (int64_t i = 0; i < B; ++i) {
    std::vector<double> row(e.pre.begin() + i * T, e.pre.begin() + (i + 1) * T), sorted = row;
    std::sort(sorted.rbegin(), sorted.rend());
    int64_t expected = 0;
    for (int64_t j = 0; j < K; ++j)
      expected += sorted[size_t(j)] > 0;
    ASSERT_EQ(int64_t(perToken[size_t(i)].size()), expected) << "token " << i;
    for (int64_t t : perToken[size_t(i)])
      EXPECT_GE(row[size_t(t)], sorted[size_t(K - 1)]);
  }
}

// A small MOLT layer: buckets of two ranks, ReLU gate, no decoder bias.
struct Layer {
  Plan plan;
  test::Tensors params;
  std::vector<double> x;
  int64_t B, D, T;
  Layer(int64_t batch, uint64_t seed) : B(batch) {
    plan.model.kind = "molt";
    plan.model.d_model = D = 10;
    plan.model.buckets = {{4, 2}, {3, 3}};
    plan.model.gate.kind = "relu";
    plan.model.decoder_bias = false;
    T = plan.model.numTransforms();
    std::mt19937_64 rng(seed);
    params["enc_w"] = normal(size_t(T * D), 0.4, rng);
    params["enc_b"] = normal(size_t(T), 0.5, rng);
    for (size_t k = 0; k < plan.model.buckets.size(); ++k) {
      const Bucket &bk = plan.model.buckets[k];
      params["u" + std::to_string(k)] = normal(size_t(bk.count * D * bk.rank), 0.5, rng);
      params["v" + std::to_string(k)] = normal(size_t(bk.count * bk.rank * D), 0.3, rng);
    }
    x = normal(size_t(B * D), 1, rng);
  }
  template <typename S> std::vector<S> as(const std::vector<double> &v) const {
    return std::vector<S>(v.begin(), v.end());
  }
  /// Sparse forward in precision S through the kernels.
  template <typename S> std::vector<S> sparseForward() const {
    std::vector<S> xs = as<S>(x);
    Encoded<S> e = encode<S>(B, T, D, GateParams{GateKind::ReLU, 0, 0}, S(-1), xs,
                             as<S>(params.at("enc_w")), as<S>(params.at("enc_b")), {});
    std::vector<S> yhat(size_t(B * D), S(0));
    for (size_t k = 0; k < plan.model.buckets.size(); ++k) {
      const Bucket &bk = plan.model.buckets[k];
      bucketApply<S>(B, D, bk.rank, bk.count, plan.model.bucketOffset(k), xs.data(),
                     as<S>(params.at("u" + std::to_string(k))).data(),
                     as<S>(params.at("v" + std::to_string(k))).data(), e.lists(), yhat.data());
    }
    return yhat;
  }
};

TEST(BucketApply, MatchesTheDenseFormulationMaskedByTheGate) {
  Layer layer(600, 3); // big enough for the multi-threaded path
  std::vector<double> sparse = layer.sparseForward<double>();
  test::Reference dense = test::referenceForward(layer.plan, layer.params, layer.x,
                                                 std::vector<double>(layer.x.size(), 0.0),
                                                 layer.B, 0.0);
  int64_t open = 0;
  for (double g : dense.gate)
    open += g > 0;
  ASSERT_GT(open, layer.B); // several transforms per token on average
  ASSERT_LT(open, layer.B * layer.T);
  for (size_t i = 0; i < sparse.size(); ++i)
    ASSERT_NEAR(sparse[i], dense.yhat[i], 1e-12 * (1 + std::abs(dense.yhat[i]))) << "at " << i;
}

TEST(BucketApply, IsBitIdenticalRunToRun) {
  Layer layer(512, 4);
  std::vector<float> a = layer.sparseForward<float>(), b = layer.sparseForward<float>();
  ASSERT_EQ(a.size(), b.size());
  EXPECT_EQ(0, std::memcmp(a.data(), b.data(), a.size() * sizeof(float)));
}

TEST(FrobNorm, MatchesTheExplicitProductAndGramMatrices) {
  Layer layer(1, 5);
  const ModelDesc &m = layer.plan.model;
  std::vector<double> norm(size_t(layer.T));
  for (size_t k = 0; k < m.buckets.size(); ++k) {
    int64_t R = m.buckets[k].rank, N = m.buckets[k].count, D = m.d_model;
    const auto &u = layer.params.at("u" + std::to_string(k));
    const auto &v = layer.params.at("v" + std::to_string(k));
    std::vector<double> gu(size_t(N * R * R)), gv(size_t(N * R * R));
    frobNorm<double>(D, R, N, u.data(), v.data(), norm.data() + m.bucketOffset(k), gu.data(),
                     gv.data());
    for (int64_t n = 0; n < N; ++n)
      for (int64_t a = 0; a < R; ++a)
        for (int64_t c = 0; c < R; ++c) {
          double eu = 0, ev = 0;
          for (int64_t j = 0; j < D; ++j) {
            eu += u[size_t(n * D * R + j * R + a)] * u[size_t(n * D * R + j * R + c)];
            ev += v[size_t(n * R * D + a * D + j)] * v[size_t(n * R * D + c * D + j)];
          }
          EXPECT_NEAR(gu[size_t(n * R * R + a * R + c)], eu, 1e-12);
          EXPECT_NEAR(gv[size_t(n * R * R + a * R + c)], ev, 1e-12);
        }
  }
  for (int64_t t = 0; t < layer.T; ++t)
    EXPECT_NEAR(norm[size_t(t)], test::explicitFrobenius(m, layer.params, t), 1e-12) << t;
}

TEST(Adam, MatchesAHandComputedStepWithClipping) {
  // Gradient (3, 4) has norm 5; clip 1 scales it to (0.6, 0.8).
  std::vector<double> p = {1.0, -2.0}, d = {3.0, 4.0}, m = {0.1, 0.0}, v = {0.01, 0.0};
  std::vector<ParamSlot<double>> slots = {{p.data(), d.data(), m.data(), v.data(), 2}};
  std::vector<double> stats(16, 0.0), scalars = {0, 0.01, 0.9, 0.99, 1e-8, 1.0, 2.0, 0};
  gradNorm(slots, stats.data());
  EXPECT_DOUBLE_EQ(stats[4], 25.0);
  EXPECT_EQ(stats[5], 0.0);
  adam(slots, scalars.data(), stats.data());
  // m = 0.9 m + 0.1 g; v = 0.99 v + 0.01 g²; p -= lr (m/(1−0.9²)) / (sqrt(v/(1−0.99²)) + ε)
  const double g[2] = {0.6, 0.8}, m0[2] = {0.1, 0.0}, v0[2] = {0.01, 0.0}, p0[2] = {1.0, -2.0};
  for (int i = 0; i < 2; ++i) {
    double mi = 0.9 * m0[i] + 0.1 * g[i], vi = 0.99 * v0[i] + 0.01 * g[i] * g[i];
    double step = 0.01 * (mi / (1 - 0.81)) / (std::sqrt(vi / (1 - 0.9801)) + 1e-8);
    EXPECT_NEAR(m[size_t(i)], mi, 1e-15);
    EXPECT_NEAR(v[size_t(i)], vi, 1e-15);
    EXPECT_NEAR(p[size_t(i)], p0[i] - step, 1e-14);
  }
}

TEST(Adam, SkipsTheStepWhenAnythingIsNonFinite) {
  std::vector<double> p = {1.0}, d = {NAN}, m = {0.5}, v = {0.25};
  std::vector<ParamSlot<double>> slots = {{p.data(), d.data(), m.data(), v.data(), 1}};
  std::vector<double> stats(16, 0.0), scalars = {0, 0.1, 0.9, 0.99, 1e-8, 0, 1, 0};
  gradNorm(slots, stats.data());
  EXPECT_EQ(stats[5], 1.0);
  adam(slots, scalars.data(), stats.data());
  EXPECT_EQ(p[0], 1.0);
  EXPECT_EQ(m[0], 0.5);
  EXPECT_EQ(v[0], 0.25);

  d[0] = 1.0; // finite gradients, but the loss overflowed
  stats.assign(16, 0.0);
  stats[0] = INFINITY;
  gradNorm(slots, stats.data());
  EXPECT_EQ(stats[5], 1.0);
}

TEST(Adam, NeverWritesNaNFromAnOverflowingNormOrAZeroStep) {
  std::vector<float> p = {1.f, 2.f}, d = {3e19f, 1.f}, m = {0.f, 0.f}, v = {0.f, 0.f};
  std::vector<ParamSlot<float>> slots = {{p.data(), d.data(), m.data(), v.data(), 2}};
  std::vector<float> stats(16, 0.f), scalars = {0, 0.1f, 0.9f, 0.99f, 1e-8f, 1.f, 0.f, 0};
  gradNorm(slots, stats.data()); // 9e38 overflows float: no usable clip factor
  EXPECT_EQ(stats[5], 1.f);
  d[0] = 1.f;
  stats.assign(16, 0.f);
  gradNorm(slots, stats.data());
  ASSERT_EQ(stats[5], 0.f);
  adam(slots, scalars.data(), stats.data()); // step 0 is taken as step 1
  for (float w : p)
    EXPECT_TRUE(std::isfinite(w));
  EXPECT_NEAR(p[0], 1.f - 0.1f, 1e-5f);
}

TEST(MseLoss, AccumulatesStatisticsAndTheScaledResidual) {
  const std::vector<double> yhat = {1, 2, 3, 4}, y = {0, 2, 5, 1};
  std::vector<double> dy(4), stats(16, 0.0);
  stats[0] = 1.0; // accumulates
  mseLoss<double>(2, 2, yhat.data(), y.data(), dy.data(), stats.data());
  EXPECT_DOUBLE_EQ(stats[0], 1.0 + 1 + 0 + 4 + 9);
  EXPECT_DOUBLE_EQ(stats[1], 0 + 4 + 25 + 1);
  EXPECT_DOUBLE_EQ(stats[6], 8.0);
  EXPECT_EQ(dy, (std::vector<double>{1, 0, -2, 3})); // 2(ŷ − y)/B with B = 2
  std::vector<double> db(2);
  biasGrad<double>(2, 2, dy.data(), db.data());
  EXPECT_EQ(db, (std::vector<double>{-1, 3}));
}

} // namespace
} // namespace molt
