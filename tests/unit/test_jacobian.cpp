// Jacobians and jacobian_cosine: against float64 central differences, dense references and each other.
#include "molt/jacobian.h"

#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>
#include <cstdio>
#include <random>
#include <unistd.h>

#include "cpu/cpu_executor.h"
#include "molt/backend.h"
#include "molt/safetensors.h"

namespace molt {
namespace {

std::vector<float> randomVec(std::mt19937_64 &rng, size_t n, double sd) {
  std::normal_distribution<double> N(0.0, sd);
  std::vector<float> v(n);
  for (float &x : v)
    x = float(N(rng));
  return v;
}

TeacherMlp randomTeacher(int64_t d, int64_t h, Activation act, uint64_t seed) {
  std::mt19937_64 rng(seed);
  if (act == Activation::SwiGlu) { // h is the MLP's width m here
    auto cp = [&](size_t n, double sd) {
      auto f = randomVec(rng, n, sd);
      return std::vector<double>(f.begin(), f.end());
    };
    auto g = cp(size_t(h * d), 1.5 / std::sqrt(double(d)));
    auto u = cp(size_t(h * d), 1.0 / std::sqrt(double(d)));
    return swigluTeacher(d, h, g, u, cp(size_t(d * h), 1.0 / std::sqrt(double(h))));
  }
  TeacherMlp t;
  t.d = d, t.h = h, t.activation = act;
  auto cp = [&](size_t n, double sd) {
    auto f = randomVec(rng, n, sd);
    return std::vector<double>(f.begin(), f.end());
  };
  t.w_in = cp(size_t(h * d), 1.0 / std::sqrt(double(d)));
  t.b_in = cp(size_t(h), 0.3);
  t.w_out = cp(size_t(d * h), 1.0 / std::sqrt(double(h)));
  t.b_out = cp(size_t(d), 0.1);
  return t;
}

struct Model {
  ModelDesc desc;
  HostTensors params;
};

// Encoder, thresholds and decoder bias of `units` units. JumpReLU thresholds lie in
// [0.05, ~0.35], so a good share of units open on unit-scale inputs.
void addEncoder(Model &m, std::mt19937_64 &rng, int64_t units, int64_t d, const std::string &gate) {
  m.desc.d_model = d;
  m.desc.gate.kind = gate;
  m.params["enc_w"] = randomVec(rng, size_t(units * d), 1.0 / std::sqrt(double(d)));
  m.params["enc_b"] = randomVec(rng, size_t(units), 0.2);
  if (gate == "jumprelu") {
    std::vector<float> th = randomVec(rng, size_t(units), 0.1);
    for (float &t : th)
      t = std::fabs(t) + 0.05f;
    m.params["theta"] = th;
  }
  m.params["dec_b"] = randomVec(rng, size_t(d), 0.1);
}

// A MOLT whose thresholds leave roughly half the transforms open on unit-scale inputs.
Model randomMolt(int64_t d, std::vector<Bucket> buckets, const std::string &gate, uint64_t seed) {
  std::mt19937_64 rng(seed);
  Model m;
  m.desc.kind = "molt";
  m.desc.buckets = buckets;
  int64_t T = 0;
  for (size_t k = 0; k < buckets.size(); ++k) {
    const Bucket &b = buckets[k];
    T += b.count;
    m.params["u" + std::to_string(k)] = randomVec(rng, size_t(b.count * d * b.rank), 0.5);
    m.params["v" + std::to_string(k)] = randomVec(rng, size_t(b.count * b.rank * d), 0.5);
  }
  addEncoder(m, rng, T, d, gate);
  return m;
}

Model randomTranscoder(int64_t d, int64_t F, const std::string &gate, int64_t k, bool skip,
                       uint64_t seed) {
  std::mt19937_64 rng(seed);
  Model m;
  m.desc.kind = "transcoder";
  m.desc.features = F;
  m.desc.gate.k = k;
  m.desc.skip = skip;
  addEncoder(m, rng, F, d, gate);
  m.params["dec_w"] = randomVec(rng, size_t(F * d), 0.5);
  if (skip)
    m.params["skip_w"] = randomVec(rng, size_t(d * d), 0.2);
  return m;
}

ReplacementLayer layerOf(const Model &m) {
  auto l = makeReplacement(m.desc, m.params);
  EXPECT_TRUE(l.isOk()) << l.status().message();
  return *l;
}

// Distance from x to the nearest gate decision boundary of the layer (for TopK also the gap
// between the k-th and (k+1)-th pre-activation), and of the teacher's relu kinks.
double gateMargin(const ReplacementLayer &L, const double *x) {
  std::vector<double> pre(size_t(L.units));
  double m = 1e9;
  for (int64_t t = 0; t < L.units; ++t) {
    double a = L.enc_sign * L.enc_b[size_t(t)];
    for (int64_t j = 0; j < L.d; ++j)
      a += L.enc_w[size_t(t * L.d + j)] * x[j];
    pre[size_t(t)] = a;
    // JumpReLU opens at θ⁺ = max(θ, 0) (docs/bundle.md).
    m = std::min(m, std::fabs(a - (L.gate == GateKind::JumpReLU ? std::max(L.theta[size_t(t)], 0.0) : 0.0)));
  }
  if (L.gate == GateKind::TopK) {
    std::sort(pre.begin(), pre.end(), std::greater<double>());
    m = std::min(m, pre[size_t(L.topk - 1)] - pre[size_t(L.topk)]);
  }
  return m;
}

// Points at least `margin` from every gate boundary, so central differences see a smooth map.
std::vector<double> safePoints(const ReplacementLayer &L, const TeacherMlp *T, int count,
                               double margin, uint64_t seed) {
  std::mt19937_64 rng(seed);
  std::normal_distribution<double> N(0.0, 1.0);
  std::vector<double> out;
  std::vector<double> pre(T ? size_t(T->h) : 0);
  while (int64_t(out.size()) < count * L.d) {
    std::vector<double> x(size_t(L.d));
    for (double &v : x)
      v = N(rng);
    if (gateMargin(L, x.data()) < margin)
      continue;
    if (T && T->activation == Activation::Relu) {
      teacherPreactivation(*T, x.data(), pre.data());
      double mm = 1e9;
      for (double p : pre)
        mm = std::min(mm, std::fabs(p));
      if (mm < margin)
        continue;
    }
    out.insert(out.end(), x.begin(), x.end());
  }
  return out;
}

template <typename F>
std::vector<double> finiteDifferenceJacobian(F &&f, const double *x, int64_t d, double eps) {
  std::vector<double> J(size_t(d * d)), xp(x, x + d), yp(static_cast<size_t>(d)), ym(static_cast<size_t>(d));
  for (int64_t j = 0; j < d; ++j) {
    xp[size_t(j)] = x[j] + eps;
    f(xp.data(), yp.data());
    xp[size_t(j)] = x[j] - eps;
    f(xp.data(), ym.data());
    xp[size_t(j)] = x[j];
    for (int64_t i = 0; i < d; ++i)
      J[size_t(i * d + j)] = (yp[size_t(i)] - ym[size_t(i)]) / (2 * eps);
  }
  return J;
}

void expectClose(const std::vector<double> &a, const std::vector<double> &b, double tol,
                 const std::string &what) {
  ASSERT_EQ(a.size(), b.size());
  double scale = 0;
  for (double v : b)
    scale = std::max(scale, std::fabs(v));
  for (size_t i = 0; i < a.size(); ++i)
    ASSERT_NEAR(a[i], b[i], tol * (1.0 + scale)) << what << " entry " << i;
}

void checkLayerAgainstFiniteDifferences(const Model &m, const std::string &what) {
  ReplacementLayer L = layerOf(m);
  const int64_t d = L.d;
  std::vector<double> xs = safePoints(L, nullptr, 5, 1e-3, 7);
  std::vector<double> J(size_t(d * d)), v(static_cast<size_t>(d)), jv(static_cast<size_t>(d)), want(static_cast<size_t>(d));
  std::mt19937_64 rng(3);
  std::normal_distribution<double> N(0.0, 1.0);
  int64_t opened = 0;
  for (int p = 0; p < 5; ++p) {
    const double *x = &xs[size_t(p * d)];
    std::vector<ActiveUnit> act;
    activeUnits(L, x, act);
    opened += int64_t(act.size());
    replacementJacobian(L, x, J.data());
    auto fd = finiteDifferenceJacobian(
        [&](const double *xx, double *yy) { replacementForward(L, xx, yy); }, x, d, 1e-6);
    expectClose(J, fd, 1e-7, what + " J vs finite differences");
    // The JVP is J·v without forming J.
    for (double &e : v)
      e = N(rng);
    replacementJvp(L, x, v.data(), jv.data());
    for (int64_t i = 0; i < d; ++i) {
      want[size_t(i)] = 0;
      for (int64_t j = 0; j < d; ++j)
        want[size_t(i)] += J[size_t(i * d + j)] * v[size_t(j)];
    }
    expectClose(jv, want, 1e-12, what + " jvp");
  }
  EXPECT_GT(opened, 0) << what << ": no unit ever opened, the test checks nothing";
}

TEST(Jacobian, MoltJumpReluMatchesFiniteDifferences) {
  checkLayerAgainstFiniteDifferences(randomMolt(7, {{4, 2}, {2, 3}, {1, 3}}, "jumprelu", 11),
                                     "molt/jumprelu");
}

TEST(Jacobian, MoltReluMatchesFiniteDifferences) {
  checkLayerAgainstFiniteDifferences(randomMolt(6, {{3, 2}, {1, 4}}, "relu", 12), "molt/relu");
}

TEST(Jacobian, TranscoderGatesMatchFiniteDifferences) {
  checkLayerAgainstFiniteDifferences(randomTranscoder(6, 15, "relu", 0, true, 13), "tc/relu+skip");
  checkLayerAgainstFiniteDifferences(randomTranscoder(6, 15, "jumprelu", 0, false, 14), "tc/jumprelu");
  checkLayerAgainstFiniteDifferences(randomTranscoder(6, 15, "topk", 4, true, 15), "tc/topk+skip");
}

// A learned θ below 0 applies as θ⁺ = 0: the JumpReLU layer is then exactly the ReLU layer
// with the same weights (never a negative gate for pre in (θ, 0)), and J still matches
// finite differences.
TEST(Jacobian, NegativeThresholdsGateAsRelu) {
  Model m = randomMolt(7, {{4, 2}, {2, 3}}, "jumprelu", 16);
  for (float &t : m.params["theta"])
    t = -t - 0.2f;
  checkLayerAgainstFiniteDifferences(m, "molt/jumprelu θ<0");
  Model relu = m;
  relu.desc.gate.kind = "relu";
  relu.params.erase("theta");
  ReplacementLayer L = layerOf(m), R = layerOf(relu);
  std::vector<double> xs = safePoints(L, nullptr, 8, 1e-3, 9);
  std::vector<double> J(size_t(L.d * L.d)), JR(J.size());
  int64_t belowZero = 0;
  for (int p = 0; p < 8; ++p) {
    const double *x = &xs[size_t(p * L.d)];
    std::vector<ActiveUnit> act, actR;
    activeUnits(L, x, act);
    activeUnits(R, x, actR);
    ASSERT_EQ(act.size(), actR.size()) << "point " << p;
    for (size_t q = 0; q < act.size(); ++q) {
      EXPECT_EQ(act[q].index, actR[q].index);
      EXPECT_GT(act[q].gate, 0.0);
    }
    replacementJacobian(L, x, J.data());
    replacementJacobian(R, x, JR.data());
    EXPECT_EQ(J, JR) << "point " << p;
    for (int64_t t = 0; t < L.units; ++t) {
      double a = L.enc_sign * L.enc_b[size_t(t)];
      for (int64_t j = 0; j < L.d; ++j)
        a += L.enc_w[size_t(t * L.d + j)] * x[j];
      belowZero += a > L.theta[size_t(t)] && a < 0;
    }
  }
  EXPECT_GT(belowZero, 0) << "no pre in (θ, 0): the test checks nothing";
}

TEST(Jacobian, TeacherMatchesFiniteDifferencesForEveryActivation) {
  for (Activation a :
       {Activation::Gelu, Activation::GeluTanh, Activation::Relu, Activation::SwiGlu}) {
    TeacherMlp T = randomTeacher(5, 11, a, 21);
    ReplacementLayer dummy = layerOf(randomTranscoder(5, 3, "relu", 0, false, 1));
    std::vector<double> xs = safePoints(dummy, &T, 4, 1e-3, 5);
    std::vector<double> J(25), v(5), jv(5), want(5);
    for (int p = 0; p < 4; ++p) {
      const double *x = &xs[size_t(p * 5)];
      teacherJacobian(T, x, J.data());
      auto fd = finiteDifferenceJacobian(
          [&](const double *xx, double *yy) { teacherForward(T, xx, yy); }, x, 5, 1e-6);
      expectClose(J, fd, 1e-7, activationName(a));
      for (int j = 0; j < 5; ++j)
        v[size_t(j)] = j - 2.0;
      teacherJvp(T, x, v.data(), jv.data());
      for (int i = 0; i < 5; ++i) {
        want[size_t(i)] = 0;
        for (int j = 0; j < 5; ++j)
          want[size_t(i)] += J[size_t(i * 5 + j)] * v[size_t(j)];
      }
      expectClose(jv, want, 1e-12, std::string(activationName(a)) + " jvp");
    }
  }
}

std::vector<float> randomRows(int64_t n, int64_t d, uint64_t seed) {
  std::mt19937_64 rng(seed);
  return randomVec(rng, size_t(n * d), 1.0);
}

void expectExactEqualsDense(const Model &m, const TeacherMlp &T, const std::string &what) {
  const int64_t n = 40;
  std::vector<float> x = randomRows(n, m.desc.d_model, 99);
  JacobianOptions exact, dense;
  dense.method = JacobianMethod::Dense;
  auto a = jacobianCosine(m.desc, m.params, T, x.data(), n, exact);
  auto b = jacobianCosine(m.desc, m.params, T, x.data(), n, dense);
  ASSERT_TRUE(a.isOk()) << a.status().message();
  ASSERT_TRUE(b.isOk()) << b.status().message();
  for (int64_t i = 0; i < n; ++i)
    EXPECT_NEAR(a->per_token[size_t(i)], b->per_token[size_t(i)], 1e-10) << what << " token " << i;
  EXPECT_NEAR(a->mean, b->mean, 1e-11) << what;
  EXPECT_EQ(a->degenerate, b->degenerate) << what;
  EXPECT_LT(a->degenerate, n / 2) << what << ": most tokens have a zero Jacobian";
  EXPECT_GT(std::fabs(a->mean), 1e-3) << what << ": a zero cosine checks nothing";
}

TEST(JacobianCosine, IdentitiesEqualDenseJacobians) {
  TeacherMlp T = randomTeacher(9, 17, Activation::Gelu, 31);
  expectExactEqualsDense(randomMolt(9, {{5, 2}, {3, 3}, {1, 5}}, "jumprelu", 32), T, "molt/jumprelu");
  expectExactEqualsDense(randomMolt(9, {{4, 3}, {2, 2}}, "relu", 33), T, "molt/relu");
  expectExactEqualsDense(randomTranscoder(9, 20, "relu", 0, true, 34), T, "tc/relu+skip");
  expectExactEqualsDense(randomTranscoder(9, 20, "topk", 5, false, 35), T, "tc/topk");
  TeacherMlp R = randomTeacher(9, 17, Activation::Relu, 36);
  expectExactEqualsDense(randomTranscoder(9, 20, "jumprelu", 0, true, 37), R, "tc/jumprelu+skip");
  TeacherMlp G = randomTeacher(9, 17, Activation::GeluTanh, 38);
  expectExactEqualsDense(randomMolt(9, {{6, 1}, {2, 4}}, "jumprelu", 39), G, "molt/gelu_tanh");
  TeacherMlp S = randomTeacher(9, 13, Activation::SwiGlu, 40);
  expectExactEqualsDense(randomMolt(9, {{5, 2}, {3, 3}}, "jumprelu", 41), S, "molt/swiglu");
  expectExactEqualsDense(randomTranscoder(9, 20, "relu", 0, true, 42), S, "tc/relu+skip/swiglu");
}

// The SwiGLU teacher computes w_down·(silu(w_gate·x) ∘ (w_up·x)) from its unstacked weights.
TEST(Teacher, SwigluForwardIsTheLlamaMlp) {
  const int64_t d = 6, m = 10;
  std::mt19937_64 rng(77);
  auto cp = [&](size_t n) {
    auto f = randomVec(rng, n, 0.5);
    return std::vector<double>(f.begin(), f.end());
  };
  auto g = cp(size_t(m * d)), u = cp(size_t(m * d)), w = cp(size_t(d * m)), x = cp(size_t(d));
  TeacherMlp T = swigluTeacher(d, m, g, u, w);
  ASSERT_TRUE(validateTeacher(T).isOk());
  std::vector<double> y(static_cast<size_t>(d)), want(static_cast<size_t>(d), 0.0), a(static_cast<size_t>(m));
  for (int64_t k = 0; k < m; ++k) {
    double gk = 0, uk = 0;
    for (int64_t j = 0; j < d; ++j)
      gk += g[size_t(k * d + j)] * x[size_t(j)], uk += u[size_t(k * d + j)] * x[size_t(j)];
    a[size_t(k)] = gk / (1 + std::exp(-gk)) * uk;
  }
  for (int64_t i = 0; i < d; ++i)
    for (int64_t k = 0; k < m; ++k)
      want[size_t(i)] += w[size_t(i * m + k)] * a[size_t(k)];
  teacherForward(T, x.data(), y.data());
  expectClose(y, want, 1e-13, "swiglu forward");
}

// A ReLU transcoder with W_enc = w_in, b_enc = b_in and decoder rows = columns of w_out (plus
// Gaussian noise of sd `noise`): at noise 0 it computes the ReLU teacher exactly. Rounds T's
// weights to float, as the transcoder's params are.
Model teacherAsTranscoder(TeacherMlp &T, double noise, uint64_t seed) {
  for (auto *w : {&T.w_in, &T.b_in, &T.w_out, &T.b_out})
    for (double &v : *w)
      v = double(float(v));
  std::mt19937_64 rng(seed);
  std::normal_distribution<double> N(0.0, noise > 0 ? noise : 1.0);
  Model m;
  m.desc.kind = "transcoder";
  m.desc.d_model = T.d;
  m.desc.features = T.h;
  m.desc.gate.kind = "relu";
  m.params["enc_w"].assign(T.w_in.begin(), T.w_in.end());
  m.params["enc_b"].assign(T.b_in.begin(), T.b_in.end());
  std::vector<float> dec(size_t(T.h * T.d));
  for (int64_t f = 0; f < T.h; ++f)
    for (int64_t i = 0; i < T.d; ++i)
      dec[size_t(f * T.d + i)] = float(T.w_out[size_t(i * T.h + f)] + (noise > 0 ? N(rng) : 0.0));
  m.params["dec_w"] = dec;
  m.params["dec_b"].assign(T.b_out.begin(), T.b_out.end());
  return m;
}

TEST(JacobianCosine, RandomisedEstimateIsWithinThreeStandardErrors) {
  const int64_t d = 24, n = 200;
  TeacherMlp G = randomTeacher(d, 48, Activation::Gelu, 41);
  TeacherMlp R = randomTeacher(d, 48, Activation::Relu, 45);
  std::vector<float> x = randomRows(n, d, 42);
  // Unrelated models (cosine near 0) and a noisy copy of the teacher (cosine near 0.8, where
  // the ratio's bias would show first).
  const std::pair<Model, TeacherMlp *> cases[] = {
      {randomMolt(d, {{8, 2}, {4, 4}, {2, 8}}, "jumprelu", 43), &G},
      {randomTranscoder(d, 60, "relu", 0, true, 44), &G},
      {teacherAsTranscoder(R, 0.1, 46), &R}};
  for (const auto &[m, Tp] : cases) {
    const TeacherMlp &T = *Tp;
    auto exact = jacobianCosine(m.desc, m.params, T, x.data(), n);
    ASSERT_TRUE(exact.isOk()) << exact.status().message();
    if (Tp == &R)
      EXPECT_GT(exact->mean, 0.5) << "the noisy teacher copy should be close to the teacher";
    for (bool gaussian : {false, true}) {
      JacobianOptions o;
      o.method = JacobianMethod::Random;
      o.probes = 64;
      o.gaussian = gaussian;
      o.seed = 5;
      auto est = jacobianCosine(m.desc, m.params, T, x.data(), n, o);
      ASSERT_TRUE(est.isOk()) << est.status().message();
      EXPECT_GT(est->probe_std_error, 0.0);
      EXPECT_LT(est->probe_std_error, 0.02); // 200 tokens × 64 probes pin it down well
      EXPECT_NEAR(est->mean, exact->mean, 3 * est->probe_std_error)
          << m.desc.kind << (gaussian ? " gaussian" : " rademacher") << ", exact " << exact->mean;
      EXPECT_GE(est->std_error, est->probe_std_error * 0.5);
      // Same seed, same answer, whatever the threads did.
      auto again = jacobianCosine(m.desc, m.params, T, x.data(), n, o);
      EXPECT_EQ(again->mean, est->mean);
    }
  }
}

TEST(JacobianCosine, ATranscoderThatIsTheReluTeacherScoresOne) {
  const int64_t d = 12, h = 30, n = 50;
  TeacherMlp T = randomTeacher(d, h, Activation::Relu, 81);
  Model m = teacherAsTranscoder(T, 0.0, 0);
  std::vector<float> x = randomRows(n, d, 82);
  auto exact = jacobianCosine(m.desc, m.params, T, x.data(), n);
  ASSERT_TRUE(exact.isOk()) << exact.status().message();
  EXPECT_NEAR(exact->mean, 1.0, 1e-12);
  EXPECT_EQ(exact->degenerate, 0);
  JacobianOptions o;
  o.method = JacobianMethod::Random;
  o.probes = 8;
  auto est = jacobianCosine(m.desc, m.params, T, x.data(), n, o);
  ASSERT_TRUE(est.isOk());
  EXPECT_NEAR(est->mean, 1.0, 1e-12); // J_m v = J_T v for every probe: no noise at all
}

// Numerical rank by Gaussian elimination with full pivoting.
int64_t numericalRank(std::vector<double> A, int64_t d, double relTol) {
  double scale = 0;
  for (double v : A)
    scale = std::max(scale, std::fabs(v));
  int64_t rank = 0;
  std::vector<char> rowUsed(size_t(d), 0), colUsed(size_t(d), 0);
  for (int64_t step = 0; step < d; ++step) {
    double best = 0;
    int64_t pr = -1, pc = -1;
    for (int64_t i = 0; i < d; ++i)
      for (int64_t j = 0; j < d; ++j)
        if (!rowUsed[size_t(i)] && !colUsed[size_t(j)] && std::fabs(A[size_t(i * d + j)]) > best)
          best = std::fabs(A[size_t(i * d + j)]), pr = i, pc = j;
    if (pr < 0 || best <= relTol * scale)
      break;
    ++rank;
    rowUsed[size_t(pr)] = colUsed[size_t(pc)] = 1;
    for (int64_t i = 0; i < d; ++i) {
      if (rowUsed[size_t(i)])
        continue;
      double f = A[size_t(i * d + pc)] / A[size_t(pr * d + pc)];
      for (int64_t j = 0; j < d; ++j)
        A[size_t(i * d + j)] -= f * A[size_t(pr * d + j)];
    }
  }
  return rank;
}

TEST(Jacobian, TranscoderRankIsAtMostL0ButMoltsIsNot) {
  const int64_t d = 16;
  ReplacementLayer tc = layerOf(randomTranscoder(d, 40, "topk", 3, true, 51));
  ReplacementLayer molt = layerOf(randomMolt(d, {{8, 3}, {4, 6}}, "relu", 52));
  std::vector<float> xf = randomRows(10, d, 53);
  std::vector<double> J(size_t(d * d));
  for (int p = 0; p < 10; ++p) {
    std::vector<double> x(xf.begin() + p * d, xf.begin() + (p + 1) * d);
    std::vector<ActiveUnit> act;
    activeUnits(tc, x.data(), act);
    replacementJacobian(tc, x.data(), J.data());
    for (int64_t i = 0; i < d * d; ++i)
      J[size_t(i)] -= tc.skip_w[size_t(i)];
    EXPECT_LE(numericalRank(J, d, 1e-10), int64_t(act.size()));
    EXPECT_EQ(numericalRank(tc.skip_w, d, 1e-10), d); // the skip itself is full rank

    activeUnits(molt, x.data(), act);
    replacementJacobian(molt, x.data(), J.data());
    if (act.size() >= 2) // two rank-≥4 transforms plus their rank-one terms already exceed L0
      EXPECT_GT(numericalRank(J, d, 1e-10), int64_t(act.size()));
  }
}

// ---- the compiled `jvp` entry --------------------------------------------------------------

// A committed fixture bundle (whose jvp entry mirrors what molt-compile emits) with random
// params of its shapes, so that a good share of its units open on unit-scale inputs.
struct FixtureModel {
  Plan plan;
  Model model;
};

FixtureModel fixtureModel(const std::string &name, uint64_t seed) {
  auto plan = loadPlan(std::string(MOLT_SOURCE_DIR) + "/tests/fixtures/" + name);
  EXPECT_TRUE(plan.isOk()) << plan.status().message();
  const ModelDesc &md = plan->model;
  FixtureModel f{*plan, md.kind == "molt"
                            ? randomMolt(md.d_model, md.buckets, md.gate.kind, seed)
                            : randomTranscoder(md.d_model, md.features, md.gate.kind, md.gate.k,
                                               md.skip, seed)};
  f.model.desc = md;
  return f;
}

void writeParams(Executor &exec, const Plan &plan, const HostTensors &params) {
  for (const ParamDesc &p : plan.params) {
    const std::vector<float> &v = params.at(p.name);
    ASSERT_TRUE(exec.write(p.name, v.data(), v.size() * sizeof(float)).isOk()) << p.name;
  }
}

const char *const kJvpFixtures[] = {"tiny-molt", "tiny-molt-relu-l1", "tiny-transcoder",
                                    "tiny-transcoder-jumprelu", "tiny-transcoder-topk"};

// The jvp entry is the derivative of the forward entry: float64 central differences of the
// float64 CPU executor's forward along Rademacher directions, at points away from every gate
// boundary (where each map is a quadratic, so the differences are exact up to rounding). The
// float32 executor (the CPU backend) matches the host J·v that the Random method uses.
TEST(CompiledJvp, IsTheForwardEntrysDirectionalDerivativeAndTheHostJvp) {
  const int64_t B = 16;
  const double eps = 1e-4;
  for (const char *name : kJvpFixtures) {
    SCOPED_TRACE(name);
    FixtureModel f = fixtureModel(name, 17);
    ReplacementLayer L = layerOf(f.model);
    const int64_t d = L.d;
    std::vector<double> xs = safePoints(L, nullptr, int(B), 0.05, 23);
    std::mt19937_64 rng(29);
    std::vector<double> v(size_t(B * d));
    for (double &e : v)
      e = (rng() >> 63) ? 1.0 : -1.0;
    int64_t opened = 0;
    for (int64_t i = 0; i < B; ++i) {
      std::vector<ActiveUnit> act;
      activeUnits(L, &xs[size_t(i * d)], act);
      opened += int64_t(act.size());
    }
    EXPECT_GT(opened, B) << "too few open units: the test would check little";

    auto exec64 = CpuExecutor<double>::create(f.plan, B);
    ASSERT_TRUE(exec64.isOk()) << exec64.status().message();
    CpuExecutor<double> &e64 = **exec64;
    writeParams(e64, f.plan, f.model.params);
    auto forwardAt = [&](double step) {
      double *x = e64.data("x");
      for (size_t i = 0; i < xs.size(); ++i)
        x[i] = xs[i] + step * v[i];
      EXPECT_TRUE(e64.run("forward").isOk());
      const double *y = e64.data("yhat");
      return std::vector<double>(y, y + B * d);
    };
    std::vector<double> yp = forwardAt(eps), ym = forwardAt(-eps), fd(size_t(B * d));
    for (size_t i = 0; i < fd.size(); ++i)
      fd[i] = (yp[i] - ym[i]) / (2 * eps);
    std::copy(xs.begin(), xs.end(), e64.data("x"));
    std::copy(v.begin(), v.end(), e64.data("x_dot"));
    Status ran = e64.run("jvp");
    ASSERT_TRUE(ran.isOk()) << ran.message();
    const double *jv64 = e64.data("y_dot");
    expectClose(std::vector<double>(jv64, jv64 + B * d), fd, 1e-8, "jvp vs finite differences");

    // fp32: the backend executor against the host's float64 J·v at the fp32-rounded points.
    auto backend = createBackend("cpu");
    ASSERT_TRUE(backend.isOk());
    auto exec32 = (*backend)->prepare(f.plan, "", B);
    ASSERT_TRUE(exec32.isOk()) << exec32.status().message();
    writeParams(**exec32, f.plan, f.model.params);
    std::vector<float> x32(xs.begin(), xs.end()), v32(v.begin(), v.end()), y32(size_t(B * d));
    ASSERT_TRUE((*exec32)->write("x", x32.data(), x32.size() * 4).isOk());
    ASSERT_TRUE((*exec32)->write("x_dot", v32.data(), v32.size() * 4).isOk());
    ASSERT_TRUE((*exec32)->run("jvp").isOk());
    ASSERT_TRUE((*exec32)->read("y_dot", y32.data(), y32.size() * 4).isOk());
    std::vector<double> got(y32.begin(), y32.end()), want(size_t(B * d));
    for (int64_t i = 0; i < B; ++i) {
      std::vector<double> xi(x32.begin() + i * d, x32.begin() + (i + 1) * d);
      replacementJvp(L, xi.data(), &v[size_t(i * d)], &want[size_t(i * d)]);
    }
    expectClose(got, want, 1e-5, "fp32 jvp entry vs host jvp");
  }
}

// The compiled estimator sees Random's probes (same seed), so it differs from Random only by
// fp32 rounding, and it agrees with Exact within 3 probe standard errors. 150 tokens through a
// batch of 64 also runs a partly filled last batch.
TEST(JacobianCosine, CompiledEstimateMatchesRandomAndExact) {
  const int64_t n = 150;
  for (const char *name : {"tiny-molt", "tiny-transcoder", "tiny-transcoder-topk"}) {
    SCOPED_TRACE(name);
    FixtureModel f = fixtureModel(name, 53);
    const int64_t d = f.plan.model.d_model;
    TeacherMlp T = randomTeacher(d, 20, Activation::Gelu, 54);
    std::vector<float> x = randomRows(n, d, 55);
    auto backend = createBackend("cpu");
    ASSERT_TRUE(backend.isOk());
    auto exec = (*backend)->prepare(f.plan, "", 64);
    ASSERT_TRUE(exec.isOk()) << exec.status().message();
    writeParams(**exec, f.plan, f.model.params);

    auto exact = jacobianCosine(f.model.desc, f.model.params, T, x.data(), n);
    ASSERT_TRUE(exact.isOk()) << exact.status().message();
    JacobianOptions o;
    o.method = JacobianMethod::Random;
    o.probes = 64;
    o.seed = 5;
    auto random = jacobianCosine(f.model.desc, f.model.params, T, x.data(), n, o);
    o.method = JacobianMethod::Compiled;
    o.executor = exec->get();
    auto compiled = jacobianCosine(f.model.desc, f.model.params, T, x.data(), n, o);
    ASSERT_TRUE(random.isOk()) << random.status().message();
    ASSERT_TRUE(compiled.isOk()) << compiled.status().message();

    EXPECT_LT(exact->degenerate, n / 2);
    EXPECT_EQ(compiled->degenerate, random->degenerate);
    for (int64_t i = 0; i < n; ++i)
      EXPECT_NEAR(compiled->per_token[size_t(i)], random->per_token[size_t(i)], 1e-4)
          << "token " << i;
    EXPECT_NEAR(compiled->probe_std_error, random->probe_std_error, 1e-5);
    EXPECT_GT(compiled->probe_std_error, 0.0);
    EXPECT_NEAR(compiled->mean, exact->mean, 3 * compiled->probe_std_error)
        << "exact " << exact->mean;
  }
}

// The same estimate with the jvp entry's CUDA kernels (on a GPU, or on the host SIMT emulator
// cuda-emu): the probes are the same, so only fp32 rounding may differ from the CPU executor.
TEST(JacobianCosine, CompiledOnCudaMatchesTheCpuExecutor) {
  const int64_t n = 40;
  int ran = 0;
  for (const char *device : {"cuda", "cuda-emu"}) {
    auto backend = createBackend(device);
    if (!backend.isOk())
      continue;
    for (const char *name : {"tiny-molt", "tiny-transcoder", "tiny-transcoder-topk"}) {
      SCOPED_TRACE(std::string(device) + " " + name);
      FixtureModel f = fixtureModel(name, 71);
      const int64_t d = f.plan.model.d_model;
      TeacherMlp T = randomTeacher(d, 20, Activation::Gelu, 72);
      std::vector<float> x = randomRows(n, d, 73);
      JacobianOptions o;
      o.method = JacobianMethod::Compiled;
      o.probes = 8;
      o.seed = 9;
      std::vector<double> perToken[2];
      for (int side = 0; side < 2; ++side) {
        auto b = side == 0 ? createBackend("cpu") : createBackend(device);
        ASSERT_TRUE(b.isOk());
        auto exec = (*b)->prepare(f.plan, "", 32); // 40 tokens: a full and a partial batch
        ASSERT_TRUE(exec.isOk()) << exec.status().message();
        writeParams(**exec, f.plan, f.model.params);
        o.executor = exec->get();
        auto r = jacobianCosine(f.model.desc, f.model.params, T, x.data(), n, o);
        ASSERT_TRUE(r.isOk()) << r.status().message();
        EXPECT_LT(r->degenerate, n / 2);
        perToken[side] = r->per_token;
      }
      for (int64_t i = 0; i < n; ++i)
        EXPECT_NEAR(perToken[1][size_t(i)], perToken[0][size_t(i)], 1e-4) << "token " << i;
    }
    ++ran;
  }
  if (!ran)
    GTEST_SKIP() << "neither cuda nor cuda-emu is available here";
}

TEST(JacobianCosine, CompiledNeedsAnExecutorWithAJvpEntry) {
  FixtureModel f = fixtureModel("tiny-molt", 61);
  TeacherMlp T = randomTeacher(8, 10, Activation::Gelu, 62);
  std::vector<float> x = randomRows(4, 8, 63);
  JacobianOptions o;
  o.method = JacobianMethod::Compiled;
  auto none = jacobianCosine(f.model.desc, f.model.params, T, x.data(), 4, o);
  ASSERT_FALSE(none.isOk());
  EXPECT_NE(none.status().message().find("executor"), std::string::npos);
  Plan old = f.plan; // a bundle compiled before the jvp entry existed
  old.entry_points.erase("jvp");
  auto backend = createBackend("cpu");
  ASSERT_TRUE(backend.isOk());
  auto exec = (*backend)->prepare(old, "", 4);
  ASSERT_TRUE(exec.isOk()) << exec.status().message();
  o.executor = exec->get();
  auto missing = jacobianCosine(f.model.desc, f.model.params, T, x.data(), 4, o);
  ASSERT_FALSE(missing.isOk());
  EXPECT_NE(missing.status().message().find("'jvp'"), std::string::npos);
}

TEST(Jacobian, BadParamsAreOneLineErrors) {
  Model m = randomMolt(5, {{2, 2}}, "jumprelu", 61);
  Model missing = m;
  missing.params.erase("v0");
  auto a = makeReplacement(missing.desc, missing.params);
  ASSERT_FALSE(a.isOk());
  EXPECT_EQ(a.status().code(), Code::NotFound);
  EXPECT_NE(a.status().message().find("'v0'"), std::string::npos);
  Model wrong = m;
  wrong.params["enc_w"].pop_back();
  auto b = makeReplacement(wrong.desc, wrong.params);
  ASSERT_FALSE(b.isOk());
  EXPECT_NE(b.status().message().find("enc_w"), std::string::npos);
  Model nan = m;
  nan.params["u0"][3] = NAN;
  EXPECT_FALSE(makeReplacement(nan.desc, nan.params).isOk());
  Model topk = randomTranscoder(5, 4, "topk", 9, false, 62);
  EXPECT_FALSE(makeReplacement(topk.desc, topk.params).isOk());

  TeacherMlp T = randomTeacher(6, 8, Activation::Gelu, 63); // d=6 against the layer's 5
  std::vector<float> x(10, 0.5f);
  auto c = jacobianCosine(m.desc, m.params, T, x.data(), 2);
  ASSERT_FALSE(c.isOk());
  EXPECT_NE(c.status().message().find("d=6"), std::string::npos);
  TeacherMlp T5 = randomTeacher(5, 8, Activation::Gelu, 64);
  x[7] = NAN;
  auto e = jacobianCosine(m.desc, m.params, T5, x.data(), 2);
  ASSERT_FALSE(e.isOk());
  EXPECT_NE(e.status().message().find("row 1"), std::string::npos);
}

std::string tempPath(const std::string &name) {
  return std::string(MOLT_BINARY_DIR) + "/test_jacobian_" + std::to_string(getpid()) + "_" + name;
}

TEST(Teacher, LoadsTheContractFormatAndRejectsBadFiles) {
  TeacherMlp T = randomTeacher(4, 6, Activation::GeluTanh, 71);
  auto f32 = [](const std::vector<double> &v) { return std::vector<float>(v.begin(), v.end()); };
  std::vector<TensorData> ts = {f32Tensor("w_in", {6, 4}, f32(T.w_in)),
                                f32Tensor("b_in", {6}, f32(T.b_in)),
                                f32Tensor("w_out", {4, 6}, f32(T.w_out)),
                                f32Tensor("b_out", {4}, f32(T.b_out))};
  const std::string good = tempPath("good.safetensors");
  ASSERT_TRUE(writeSafetensors(good, ts, {{"activation", "gelu_tanh"}}).isOk());
  auto loaded = loadTeacher(good);
  ASSERT_TRUE(loaded.isOk()) << loaded.status().message();
  EXPECT_EQ(loaded->d, 4);
  EXPECT_EQ(loaded->h, 6);
  EXPECT_EQ(loaded->activation, Activation::GeluTanh);
  for (size_t i = 0; i < T.w_out.size(); ++i)
    EXPECT_EQ(loaded->w_out[i], double(float(T.w_out[i])));

  const std::string bad = tempPath("bad.safetensors");
  ASSERT_TRUE(writeSafetensors(bad, ts, {{"activation", "swish"}}).isOk());
  auto b = loadTeacher(bad);
  ASSERT_FALSE(b.isOk());
  EXPECT_NE(b.status().message().find("swish"), std::string::npos);
  ASSERT_TRUE(writeSafetensors(bad, ts, {}).isOk());
  EXPECT_FALSE(loadTeacher(bad).isOk());
  ts[2] = f32Tensor("w_out", {4, 5}, std::vector<float>(20, 0.f));
  ASSERT_TRUE(writeSafetensors(bad, ts, {{"activation", "relu"}}).isOk());
  auto c = loadTeacher(bad);
  ASSERT_FALSE(c.isOk());
  EXPECT_NE(c.status().message().find("w_out"), std::string::npos);
  EXPECT_EQ(c.status().message().find('\n'), std::string::npos);
  EXPECT_EQ(loadTeacher(tempPath("absent.safetensors")).status().code(), Code::NotFound);
  std::remove(good.c_str());
  std::remove(bad.c_str());
}

TEST(Teacher, LoadsTheSwigluFormat) {
  const int64_t d = 4, m = 3;
  std::vector<float> g(m * d), u(m * d), w(d * m);
  for (size_t i = 0; i < g.size(); ++i)
    g[i] = 0.25f * float(i % 5) - 0.5f, u[i] = 0.125f * float(i % 7) - 0.25f;
  for (size_t i = 0; i < w.size(); ++i)
    w[i] = 0.5f - 0.0625f * float(i);
  const std::string path = tempPath("swiglu.safetensors");
  std::vector<TensorData> ts = {f32Tensor("w_gate", {m, d}, g), f32Tensor("w_up", {m, d}, u),
                                f32Tensor("w_down", {d, m}, w)};
  ASSERT_TRUE(writeSafetensors(path, ts, {{"activation", "swiglu"}}).isOk());
  auto T = loadTeacher(path);
  ASSERT_TRUE(T.isOk()) << T.status().message();
  EXPECT_EQ(T->activation, Activation::SwiGlu);
  EXPECT_EQ(T->d, d);
  EXPECT_EQ(T->h, 2 * m);
  TeacherMlp want = swigluTeacher(d, m, std::vector<double>(g.begin(), g.end()),
                                  std::vector<double>(u.begin(), u.end()),
                                  std::vector<double>(w.begin(), w.end()));
  EXPECT_EQ(T->w_in, want.w_in);
  EXPECT_EQ(T->w_out, want.w_out);
  // A missing w_up, and a w_down of the wrong shape, are one-line errors naming the tensor.
  ts.erase(ts.begin() + 1);
  ASSERT_TRUE(writeSafetensors(path, ts, {{"activation", "swiglu"}}).isOk());
  auto missing = loadTeacher(path);
  ASSERT_FALSE(missing.isOk());
  EXPECT_NE(missing.status().message().find("w_up"), std::string::npos);
  ts = {f32Tensor("w_gate", {m, d}, g), f32Tensor("w_up", {m, d}, u),
        f32Tensor("w_down", {m, d}, w)};
  ASSERT_TRUE(writeSafetensors(path, ts, {{"activation", "swiglu"}}).isOk());
  auto shape = loadTeacher(path);
  ASSERT_FALSE(shape.isOk());
  EXPECT_NE(shape.status().message().find("w_down"), std::string::npos);
  EXPECT_EQ(shape.status().message().find('\n'), std::string::npos);
  std::remove(path.c_str());
}

} // namespace
} // namespace molt
