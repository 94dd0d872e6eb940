// The rule for non-finite input (docs/reliability.md, "Non-finite input"), on every backend that
// runs here (cpu, and cuda-emu: the CUDA kernels on the host emulator) and for a MOLT and two
// transcoders: a forward over a row holding NaN or ±Inf gives that row non-finite (the gates
// compare false on NaN, so the kernels alone would answer exactly dec_b), the other rows are
// untouched; a train_step over such a batch (in x or in y) is skipped and leaves every param and
// Adam moment as it was; eval's loss and jvp's tangent go non-finite.
#include <gtest/gtest.h>

#include <cmath>
#include <cstring>
#include <limits>
#include <random>

#include "molt/backend.h"
#include "molt/trainer.h"

namespace molt {
namespace {

constexpr int64_t kBatch = 6;
const float kNan = std::numeric_limits<float>::quiet_NaN();
const float kInf = std::numeric_limits<float>::infinity();

struct Case {
  const char *device, *fixture;
};

std::string caseName(const testing::TestParamInfo<Case> &info) {
  std::string s = std::string(info.param.device) + "_" + info.param.fixture;
  for (char &c : s)
    if (!std::isalnum(static_cast<unsigned char>(c)))
      c = '_';
  return s;
}

class NonFinite : public testing::TestWithParam<Case> {
protected:
  void SetUp() override {
    dir = std::string(MOLT_SOURCE_DIR) + "/tests/fixtures/" + GetParam().fixture;
    StatusOr<Plan> p = loadPlan(dir);
    ASSERT_TRUE(p.isOk()) << p.status().message();
    plan = std::move(*p);
    StatusOr<std::unique_ptr<Backend>> b = createBackend(GetParam().device);
    if (!b)
      GTEST_SKIP() << b.status().message();
    backend = std::move(*b);
    StatusOr<std::unique_ptr<Executor>> e = backend->prepare(plan, dir, kBatch);
    ASSERT_TRUE(e.isOk()) << e.status().message();
    exec = std::move(*e);
    ASSERT_TRUE(writeTensors(*exec, initParams(plan, 7)).isOk());
    for (const ParamDesc &p : plan.params)
      for (const char *prefix : {"m_", "v_"})
        ASSERT_TRUE(exec->zero(prefix + p.name).isOk());
    d = plan.model.d_model;
    std::mt19937 gen(5);
    std::normal_distribution<float> normal(0.0f, 1.0f);
    x.resize(size_t(kBatch * d));
    y.resize(size_t(kBatch * d));
    for (float &v : x)
      v = 2.0f * normal(gen);
    for (float &v : y)
      v = normal(gen);
  }

  std::vector<float> readAll(const std::string &name) {
    std::vector<float> v(size_t(exec->info(name)->numel()));
    EXPECT_TRUE(exec->read(name, v.data(), v.size() * 4).isOk());
    return v;
  }
  void put(const std::string &name, const std::vector<float> &v) {
    ASSERT_TRUE(exec->write(name, v.data(), v.size() * 4).isOk());
  }
  std::vector<float> forward(const std::vector<float> &in) {
    put("x", in);
    Status st = exec->run("forward");
    EXPECT_TRUE(st.isOk()) << st.message();
    return readAll("yhat");
  }
  // Every tensor a train_step may change: the params and their Adam moments.
  std::vector<std::vector<float>> trainState() {
    std::vector<std::vector<float>> out;
    for (const ParamDesc &p : plan.params)
      for (const char *prefix : {"", "m_", "v_"})
        out.push_back(readAll(prefix + p.name));
    return out;
  }

  std::string dir;
  Plan plan;
  std::unique_ptr<Backend> backend;
  std::unique_ptr<Executor> exec;
  int64_t d = 0;
  std::vector<float> x, y;
};

TEST_P(NonFinite, AForwardOverANonFiniteRowIsNonFiniteThereAndExactElsewhere) {
  const std::vector<float> clean = forward(x);
  for (float v : clean)
    ASSERT_TRUE(std::isfinite(v));
  std::vector<float> bad = x;
  bad[size_t(1 * d + 2)] = kNan;  // row 1: one NaN
  bad[size_t(3 * d + 0)] = kInf;  // row 3: +Inf
  bad[size_t(4 * d + d - 1)] = -kInf; // row 4: -Inf
  for (int64_t j = 0; j < d; ++j)
    bad[size_t(5 * d + j)] = kNan; // row 5: all NaN (the gates alone would give exactly dec_b)
  const std::vector<float> got = forward(bad);
  for (int64_t r = 0; r < kBatch; ++r) {
    const bool poisoned = r == 1 || r >= 3;
    for (int64_t j = 0; j < d; ++j) {
      const float v = got[size_t(r * d + j)];
      if (poisoned)
        EXPECT_FALSE(std::isfinite(v)) << "row " << r << " col " << j << " = " << v;
      else
        EXPECT_EQ(std::memcmp(&v, &clean[size_t(r * d + j)], 4), 0) << "row " << r;
    }
  }
  // The rule holds per call: the next clean batch is clean again.
  const std::vector<float> again = forward(x);
  EXPECT_EQ(std::memcmp(again.data(), clean.data(), clean.size() * 4), 0);
}

TEST_P(NonFinite, ATrainStepOverANonFiniteXOrYIsSkippedAndChangesNothing) {
  const std::array<float, 8> scalars = stepScalars(Schedule{}, 1, 0, kBatch);
  for (const char *which : {"x", "y"})
    for (float poison : {kNan, kInf, -kInf}) {
      SCOPED_TRACE(std::string(which) + " holds " + std::to_string(poison));
      std::vector<float> bx = x, by = y;
      (std::string(which) == "x" ? bx : by)[size_t(2 * d + 1)] = poison;
      const auto before = trainState();
      put("x", bx);
      put("y", by);
      ASSERT_TRUE(exec->write("scalars", scalars.data(), sizeof scalars).isOk());
      Status st = exec->run("train_step");
      ASSERT_TRUE(st.isOk()) << st.message();
      const std::vector<float> stats = readAll("stats");
      EXPECT_GT(stats[5], 0.0f) << "not marked skipped";
      EXPECT_FALSE(std::isfinite(stats[0])) << "a finite loss for a non-finite batch";
      const auto after = trainState();
      ASSERT_EQ(before.size(), after.size());
      for (size_t i = 0; i < before.size(); ++i)
        EXPECT_EQ(std::memcmp(before[i].data(), after[i].data(), before[i].size() * 4), 0)
            << "tensor " << i << " changed";
    }
  // A finite batch still trains (the check did not break the step).
  put("x", x);
  put("y", y);
  ASSERT_TRUE(exec->write("scalars", scalars.data(), sizeof scalars).isOk());
  const auto before = trainState();
  ASSERT_TRUE(exec->run("train_step").isOk());
  EXPECT_EQ(readAll("stats")[5], 0.0f);
  const auto after = trainState();
  bool changed = false;
  for (size_t i = 0; i < before.size(); ++i)
    changed |= std::memcmp(before[i].data(), after[i].data(), before[i].size() * 4) != 0;
  EXPECT_TRUE(changed) << "a finite batch no longer trains";
}

TEST_P(NonFinite, EvalLossAndJvpTangentAreNonFinite) {
  const std::array<float, 8> scalars = stepScalars(Schedule{}, 1, 0, kBatch);
  ASSERT_TRUE(exec->write("scalars", scalars.data(), sizeof scalars).isOk());
  for (const char *which : {"x", "y"}) {
    std::vector<float> bx = x, by = y;
    (std::string(which) == "x" ? bx : by)[size_t(0 * d + 0)] = kNan;
    put("x", bx);
    put("y", by);
    ASSERT_TRUE(exec->run("eval").isOk());
    EXPECT_FALSE(std::isfinite(readAll("stats")[0])) << "eval with NaN in " << which;
  }
  if (!plan.entry_points.count("jvp") || !exec->info("x_dot"))
    return;
  std::vector<float> bad = x;
  bad[size_t(2 * d + 3)] = kNan;
  put("x", bad);
  put("x_dot", y);
  ASSERT_TRUE(exec->run("jvp").isOk());
  const std::vector<float> ydot = readAll("y_dot");
  for (int64_t j = 0; j < d; ++j)
    EXPECT_FALSE(std::isfinite(ydot[size_t(2 * d + j)]));
  for (int64_t j = 0; j < d; ++j)
    EXPECT_TRUE(std::isfinite(ydot[size_t(0 * d + j)]));
}

INSTANTIATE_TEST_SUITE_P(
    Reliability, NonFinite,
    testing::Values(Case{"cpu", "tiny-molt"}, Case{"cpu", "tiny-transcoder"},
                    Case{"cpu", "tiny-transcoder-topk"}, Case{"cpu", "tiny-molt-relu-l1"},
                    Case{"cuda-emu", "tiny-molt"}, Case{"cuda-emu", "tiny-transcoder-topk"}),
    caseName);

} // namespace
} // namespace molt
