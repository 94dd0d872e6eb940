// Gradient checks: every parameter's analytic gradient from the plan's train_step (run by the
// CPU kernels in float64) against central finite differences of eval's loss, and θ's
// straight-through pseudo-gradient against the formula of docs/bundle.md computed independently.
#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>
#include <random>

#include "cpu/cpu_executor.h"
#include "cpu_reference.h"
#include "molt/plan.h"

namespace molt {
namespace {

using test::Reference;
using test::Tensors;

constexpr int64_t kBatch = 5;
constexpr double kLambda = 0.3;
// No pre-activation comes closer than this to a kink (θ, the STE window edge, 0, a top-k tie),
// so ±h never flips a gate and finite differences see a smooth loss.
constexpr double kMargin = 0.02;

std::string fixture(const std::string &name) {
  return std::string(MOLT_SOURCE_DIR) + "/tests/fixtures/" + name;
}

/// A gtest-legal test name from a fixture name (dashes become underscores).
std::string testNameOf(const ::testing::TestParamInfo<const char *> &info) {
  std::string s = info.param;
  std::replace(s.begin(), s.end(), '-', '_');
  return s;
}

class Harness {
public:
  explicit Harness(const std::string &name) {
    auto plan = loadPlan(fixture(name));
    EXPECT_TRUE(plan.isOk()) << plan.status().message();
    plan_ = *plan;
    auto exec = CpuExecutor<double>::create(plan_, kBatch);
    EXPECT_TRUE(exec.isOk()) << exec.status().message();
    if (!exec.isOk())
      return;
    exec_ = std::move(*exec);
    double *s = exec_->data("scalars");
    // λ, lr = 0 (adam runs but leaves the weights where finite differences need them), β1, β2,
    // ε, no clipping, step 1, 1/B.
    const double scalars[8] = {kLambda, 0.0, 0.9, 0.999, 1e-8, 0.0, 1.0, 1.0 / kBatch};
    std::copy(scalars, scalars + 8, s);
  }

  bool ok() const { return exec_ != nullptr; }
  const Plan &plan() const { return plan_; }
  CpuExecutor<double> &exec() { return *exec_; }
  const ModelDesc &model() const { return plan_.model; }

  Tensors params() {
    Tensors t;
    for (const ParamDesc &p : plan_.params) {
      const double *d = exec_->data(p.name);
      t[p.name].assign(d, d + exec_->info(p.name)->numel());
    }
    return t;
  }
  Tensors grads() {
    Tensors t;
    for (const ParamDesc &p : plan_.params) {
      const double *d = exec_->data("d_" + p.name);
      t[p.name].assign(d, d + exec_->info(p.name)->numel());
    }
    return t;
  }
  Reference reference() {
    std::vector<double> x(exec_->data("x"), exec_->data("x") + kBatch * model().d_model);
    std::vector<double> y(exec_->data("y"), exec_->data("y") + kBatch * model().d_model);
    return test::referenceForward(plan_, params(), x, y, kBatch, kLambda);
  }
  double evalLoss() {
    Status s = exec_->run("eval");
    EXPECT_TRUE(s.isOk()) << s.message();
    const double *st = exec_->data("stats");
    return st[0] / kBatch + kLambda * st[2] / kBatch;
  }

  /// Random weights and data; θ (JumpReLU) drawn uniformly from [thetaLo, thetaHi), by default
  /// near the middle of the pre-activations.
  void randomise(std::mt19937_64 &rng, double thetaLo = -0.2, double thetaHi = 0.4) {
    for (const ParamDesc &p : plan_.params) {
      std::vector<double> v(size_t(exec_->info(p.name)->numel()));
      double std = p.init.kind == "normal" ? p.init.value : 0.3;
      test::fillNormal(v, std, rng);
      if (p.name == "theta")
        for (double &e : v)
          e = std::uniform_real_distribution<double>(thetaLo, thetaHi)(rng);
      std::copy(v.begin(), v.end(), exec_->data(p.name));
    }
    for (const char *name : {"x", "y"}) {
      std::vector<double> v(size_t(kBatch * model().d_model));
      test::fillNormal(v, 1.0, rng);
      std::copy(v.begin(), v.end(), exec_->data(name));
    }
  }

  /// True when every pre-activation keeps kMargin from every kink of the gate.
  bool awayFromKinks(const Reference &r) {
    const GateDesc &g = model().gate;
    for (int64_t i = 0; i < kBatch; ++i) {
      std::vector<double> row(r.pre.begin() + i * r.T, r.pre.begin() + (i + 1) * r.T);
      for (int64_t t = 0; t < r.T; ++t) {
        double a = row[size_t(t)];
        if (g.kind == "jumprelu") {
          if (std::abs(a - thetaPlus(t)) < g.bandwidth / 2 + kMargin)
            return false;
        } else if (std::abs(a) < kMargin) {
          return false;
        }
      }
      if (g.kind == "topk") {
        std::sort(row.rbegin(), row.rend());
        if (row[size_t(g.k - 1)] - row[size_t(g.k)] < kMargin)
          return false;
      }
    }
    return true;
  }

  /// The threshold the gate applies: θ⁺ = max(θ, 0) (docs/bundle.md).
  double thetaPlus(int64_t t) { return std::max(exec_->data("theta")[t], 0.0); }

private:
  Plan plan_;
  std::unique_ptr<CpuExecutor<double>> exec_;
};

class GradientCheck : public ::testing::TestWithParam<const char *> {};

/// Draws inputs away from the gate's kinks, runs train_step, and checks stats against the dense
/// reference and every parameter's gradient against central differences of eval's loss.
void checkAgainstFiniteDifferences(Harness &h, std::mt19937_64 &rng, double thetaLo,
                                   double thetaHi) {
  int tries = 0;
  do {
    h.randomise(rng, thetaLo, thetaHi);
    ASSERT_LT(++tries, 500) << "could not draw inputs away from the gate's kinks";
  } while (!h.awayFromKinks(h.reference()));

  Reference ref = h.reference();
  Tensors before = h.params();
  ASSERT_TRUE(h.exec().run("train_step").isOk());
  const double *stats = h.exec().data("stats");
  ASSERT_EQ(stats[5], 0.0) << "a finite step was flagged non-finite";
  EXPECT_NEAR(stats[0], ref.sse, 1e-10 * (1 + ref.sse));
  EXPECT_NEAR(stats[2], ref.penalty, 1e-10 * (1 + ref.penalty));
  ASSERT_GT(ref.penalty, 0.0) << "no transform is active: the check would be vacuous";
  Tensors grads = h.grads();
  EXPECT_EQ(h.params(), before) << "adam with lr = 0 moved the weights";

  const double step = 1e-5;
  for (const ParamDesc &p : h.plan().params) {
    double *w = h.exec().data(p.name);
    int bad = 0;
    double largest = 0;
    for (size_t e = 0; e < grads[p.name].size(); ++e) {
      double saved = w[e];
      w[e] = saved + step;
      double up = h.evalLoss();
      w[e] = saved - step;
      double down = h.evalLoss();
      w[e] = saved;
      double fd = (up - down) / (2 * step), analytic = grads[p.name][e];
      largest = std::max(largest, std::abs(fd));
      if (std::abs(fd - analytic) > 1e-8 + 1e-6 * std::max(std::abs(fd), std::abs(analytic)) &&
          ++bad <= 3) {
        ADD_FAILURE() << h.plan().model.kind << ": d_" << p.name << "[" << e << "] = " << analytic
                      << ", finite difference " << fd;
      }
    }
    EXPECT_EQ(bad, 0) << p.name;
    // θ's loss is flat away from the window; every other parameter must be exercised.
    if (p.name != "theta") {
      EXPECT_GT(largest, 1e-6) << p.name << ": gradient identically zero, check is vacuous";
    }
  }
}

TEST_P(GradientCheck, EveryParameterMatchesCentralDifferences) {
  Harness h(GetParam());
  ASSERT_TRUE(h.ok());
  std::mt19937_64 rng(1234);
  checkAgainstFiniteDifferences(h, rng, -0.2, 0.4);
}

INSTANTIATE_TEST_SUITE_P(Fixtures, GradientCheck,
                         ::testing::Values("tiny-molt", "tiny-molt-relu-l1", "tiny-transcoder",
                                           "tiny-transcoder-topk", "tiny-transcoder-jumprelu"),
                         testNameOf);

class ThetaStraightThrough : public ::testing::TestWithParam<const char *> {};

// θ gets the rectangle-kernel pseudo-gradient Σ dg·(−θ⁺/ε)·[|pre − θ⁺| < ε/2]; place some
// pre-activations inside the window (listed, gate 0) and check against dg from the dense
// reference.
TEST_P(ThetaStraightThrough, MatchesTheRectangleFormula) {
  Harness h(GetParam());
  ASSERT_TRUE(h.ok());
  std::mt19937_64 rng(99);
  h.randomise(rng);
  const double eps = h.model().gate.bandwidth;
  ASSERT_GT(eps, 0.0);
  Reference r = h.reference();
  double *theta = h.exec().data("theta");
  // Odd transforms: token 0 sits just below θ (in the window, closed); even ones: token 1 sits
  // just above θ (in the window, open). A θ this lands below 0 applies as 0.
  for (int64_t t = 0; t < r.T; ++t)
    theta[t] = t % 2 ? r.pre[size_t(t)] + eps / 4 : r.pre[size_t(r.T + t)] - eps / 4;
  r = h.reference();
  ASSERT_TRUE(h.exec().run("train_step").isOk());
  const double *dTheta = h.exec().data("d_theta");
  int inWindow = 0;
  for (int64_t t = 0; t < r.T; ++t) {
    const double th = h.thetaPlus(t);
    double expect = 0;
    for (int64_t i = 0; i < kBatch; ++i) {
      double a = r.pre[size_t(i * r.T + t)];
      if (std::abs(a - th) < eps / 2) {
        expect += r.dGate[size_t(i * r.T + t)] * (-th / eps);
        inWindow += th > 0;
      }
    }
    EXPECT_NEAR(dTheta[t], expect, 1e-10 * (1 + std::abs(expect))) << "transform " << t;
  }
  EXPECT_GE(inWindow, r.T / 4);
}

INSTANTIATE_TEST_SUITE_P(JumpReLU, ThetaStraightThrough,
                         ::testing::Values("tiny-molt", "tiny-transcoder-jumprelu"), testNameOf);

// Negative thresholds (training with λ ≥ 0.05 drove half of θ down to −0.97): the
// gate must apply θ⁺ = max(θ, 0), so no gate is negative, the penalty is ≥ 0, θ ≤ 0 gets no
// gradient, and the analytic gradients still match finite differences away from the kinks.
class NegativeThreshold : public ::testing::TestWithParam<const char *> {};

TEST_P(NegativeThreshold, GatesStayNonNegativeAndGradientsMatch) {
  Harness h(GetParam());
  ASSERT_TRUE(h.ok());
  std::mt19937_64 rng(7);
  // Every θ in [−0.97, −0.05): a raw-θ gate would pass every pre in (θ, 0) with g < 0.
  checkAgainstFiniteDifferences(h, rng, -0.97, -0.05);

  // Now without keeping away from the kinks, so that listed pairs sit in the STE window
  // around θ⁺ = 0, where a raw-θ estimator would have given θ a gradient.
  const double eps = h.model().gate.bandwidth;
  int64_t negativeUnderRawTheta = 0, inWindow = 0;
  for (int round = 0; round < 20; ++round) {
    h.randomise(rng, -0.97, -0.05);
    Reference r = h.reference();
    const double *theta = h.exec().data("theta");
    for (int64_t i = 0; i < kBatch; ++i)
      for (int64_t t = 0; t < r.T; ++t) {
        double a = r.pre[size_t(i * r.T + t)];
        negativeUnderRawTheta += a > theta[t] && a < 0;
      }
    ASSERT_TRUE(h.exec().run("train_step").isOk());
    const double *stats = h.exec().data("stats");
    EXPECT_GE(stats[2], 0.0) << "penalty";
    EXPECT_NEAR(stats[2], r.penalty, 1e-10 * (1 + r.penalty));
    const int64_t listed = *h.exec().intData("pair_count");
    const double *gate = h.exec().data("pair_gate"), *pre = h.exec().data("pair_pre");
    int64_t positive = 0;
    for (int64_t p = 0; p < listed; ++p) {
      EXPECT_EQ(gate[p], pre[p] > 0 ? pre[p] : 0.0) << "pair " << p << ": θ ≤ 0 gates as a ReLU";
      positive += gate[p] > 0;
      inWindow += std::abs(pre[p]) < eps / 2;
    }
    EXPECT_EQ(stats[3], double(positive)) << "stats[3] counts g > 0";
    const double *dTheta = h.exec().data("d_theta");
    for (int64_t t = 0; t < r.T; ++t)
      EXPECT_EQ(dTheta[t], 0.0) << "transform " << t;
  }
  EXPECT_GT(negativeUnderRawTheta, 0) << "no pre in (θ, 0): the check would be vacuous";
  EXPECT_GT(inWindow, 0) << "no listed pair in the window around 0: dθ = 0 proves nothing";
}

INSTANTIATE_TEST_SUITE_P(JumpReLU, NegativeThreshold,
                         ::testing::Values("tiny-molt", "tiny-transcoder-jumprelu"), testNameOf);

} // namespace
} // namespace molt
