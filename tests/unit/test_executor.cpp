// The executor: backend selection, tensor naming and sizing, binding checks, zeroing rules,
// the CPU forward against the dense reference, training progress, and bit-exact determinism.
#include <gtest/gtest.h>

#include <algorithm>
#include <cstring>
#include <random>

#include "cpu_reference.h"
#include "molt/backend.h"
#include "molt/plan.h"

namespace molt {
namespace {

const char *const kFixtures[] = {"tiny-molt", "tiny-molt-relu-l1", "tiny-transcoder",
                                 "tiny-transcoder-topk", "tiny-transcoder-jumprelu"};

Plan fixturePlan(const std::string &name) {
  auto plan = loadPlan(std::string(MOLT_SOURCE_DIR) + "/tests/fixtures/" + name);
  EXPECT_TRUE(plan.isOk()) << name << ": " << plan.status().message();
  return plan.isOk() ? *plan : Plan{};
}

std::unique_ptr<Executor> prepare(const Plan &plan, int64_t batch) {
  auto backend = createBackend("cpu");
  EXPECT_TRUE(backend.isOk());
  auto exec = (*backend)->prepare(plan, "", batch);
  EXPECT_TRUE(exec.isOk()) << exec.status().message();
  return exec.isOk() ? std::move(*exec) : nullptr;
}

std::vector<float> readAll(Executor &e, const std::string &name) {
  std::vector<float> v(size_t(e.info(name)->numel()));
  EXPECT_TRUE(e.read(name, v.data(), v.size() * 4).isOk());
  return v;
}

void writeAll(Executor &e, const std::string &name, const std::vector<float> &v) {
  Status s = e.write(name, v.data(), v.size() * 4);
  ASSERT_TRUE(s.isOk()) << s.message();
}

/// Writes N(0, std) weights (std from the param's init, 0.1 for zeros), θ = 0.1, and x, y.
void randomise(Executor &e, uint64_t seed) {
  std::mt19937_64 rng(seed);
  std::normal_distribution<float> unit(0.f, 1.f);
  for (const ParamDesc &p : e.plan().params) {
    std::vector<float> v(size_t(e.info(p.name)->numel()));
    float std = p.init.kind == "normal" ? float(p.init.value) : 0.1f;
    for (float &x : v)
      x = p.name == "theta" ? 0.1f : std * unit(rng);
    writeAll(e, p.name, v);
  }
  for (const char *name : {"x", "y"}) {
    std::vector<float> v(size_t(e.info(name)->numel()));
    for (float &x : v)
      x = unit(rng);
    writeAll(e, name, v);
  }
}

void setScalars(Executor &e, float lambda, float lr, float step) {
  writeAll(e, "scalars", {lambda, lr, 0.9f, 0.999f, 1e-8f, 1.0f, step, 1.0f / float(e.rows())});
}

/// Whether an invocation of `entry` binds the tensor `name`.
bool entryBinds(const Plan &plan, const std::string &entry, const std::string &name) {
  for (const Invocation &inv : plan.entry_points.at(entry))
    for (const auto &[arg, tensor] : inv.args)
      if (tensor == name)
        return true;
  return false;
}

TEST(Backend, SelectsByName) {
  auto cpu = createBackend("cpu");
  ASSERT_TRUE(cpu.isOk());
  EXPECT_EQ((*cpu)->name(), "cpu");
  EXPECT_FALSE((*cpu)->deviceName().empty());
  auto bad = createBackend("tpu");
  ASSERT_FALSE(bad.isOk());
  EXPECT_EQ(bad.status().code(), Code::InvalidArgument);
  auto cuda = createBackend("cuda"); // present, or a clear Unavailable
  if (!cuda.isOk()) {
    EXPECT_EQ(cuda.status().code(), Code::Unavailable) << cuda.status().message();
  }
}

TEST(Executor, SizesEveryTensorAndRunsEveryEntryPointOfEveryFixture) {
  for (const char *name : kFixtures) {
    SCOPED_TRACE(name);
    Plan plan = fixturePlan(name);
    auto exec = prepare(plan, 16);
    ASSERT_TRUE(exec);
    const int64_t T = plan.model.numTransforms();
    for (const ParamDesc &p : plan.params)
      for (const char *prefix : {"d_", "m_", "v_"}) {
        const BufferInfo *info = exec->info(prefix + p.name);
        ASSERT_NE(info, nullptr) << prefix << p.name;
        EXPECT_EQ(info->shape, p.shape);
      }
    EXPECT_EQ(exec->info("pair_tok")->numel(), 16 * T);
    EXPECT_EQ(exec->info("pair_tok")->dtype, DType::I32);
    EXPECT_EQ(exec->info("x")->shape, (std::vector<int64_t>{16, plan.model.d_model}));
    randomise(*exec, 7);
    setScalars(*exec, 0.01f, 1e-3f, 1);
    for (const char *entry : {"forward", "eval", "train_step"}) {
      Status s = exec->run(entry);
      EXPECT_TRUE(s.isOk()) << entry << ": " << s.message();
    }
    EXPECT_EQ(readAll(*exec, "stats")[5], 0.0f);
  }
}

TEST(Executor, ForwardAndEvalMatchTheDenseReference) {
  for (const char *name : kFixtures) {
    SCOPED_TRACE(name);
    Plan plan = fixturePlan(name);
    const int64_t B = 48;
    auto exec = prepare(plan, B);
    ASSERT_TRUE(exec);
    randomise(*exec, 11);
    setScalars(*exec, 0.2f, 0, 1);
    ASSERT_TRUE(exec->run("eval").isOk());
    test::Tensors params;
    for (const ParamDesc &p : plan.params) {
      std::vector<float> v = readAll(*exec, p.name);
      params[p.name].assign(v.begin(), v.end());
    }
    std::vector<float> xf = readAll(*exec, "x"), yf = readAll(*exec, "y");
    test::Reference ref = test::referenceForward(plan, params, {xf.begin(), xf.end()},
                                                 {yf.begin(), yf.end()}, B, 0.2);
    std::vector<float> yhat = readAll(*exec, "yhat"), stats = readAll(*exec, "stats");
    for (size_t i = 0; i < yhat.size(); ++i)
      ASSERT_NEAR(yhat[i], ref.yhat[i], 1e-4 * (1 + std::abs(ref.yhat[i]))) << "yhat[" << i << "]";
    EXPECT_NEAR(stats[0], ref.sse, 1e-4 * ref.sse);
    EXPECT_NEAR(stats[2], ref.penalty, 1e-4 * (1 + ref.penalty));
    double open = 0;
    for (double g : ref.gate)
      open += g > 0;
    EXPECT_NEAR(stats[3], open, 2.0) << "active pairs"; // float vs double at a threshold
    EXPECT_GT(open, 0);
  }
}

TEST(Executor, ZeroesStatsYhatAndGradientsBeforeAnEntryPoint) {
  Plan plan = fixturePlan("tiny-molt");
  auto exec = prepare(plan, 32);
  ASSERT_TRUE(exec);
  randomise(*exec, 3);
  setScalars(*exec, 0.1f, 0, 1);
  ASSERT_TRUE(exec->run("train_step").isOk());
  std::vector<float> du = readAll(*exec, "d_u0"), yhat = readAll(*exec, "yhat"),
                     stats = readAll(*exec, "stats");
  for (const char *name : {"d_u0", "yhat", "stats"})
    writeAll(*exec, name, std::vector<float>(size_t(exec->info(name)->numel()), 123.0f));
  ASSERT_TRUE(exec->run("train_step").isOk());
  EXPECT_EQ(readAll(*exec, "d_u0"), du);
  EXPECT_EQ(readAll(*exec, "yhat"), yhat);
  EXPECT_EQ(readAll(*exec, "stats"), stats);
}

TEST(Executor, RejectsBindingsOfTheWrongShapeOrDtype) {
  Plan plan = fixturePlan("tiny-molt");
  auto backend = createBackend("cpu");
  ASSERT_TRUE(backend.isOk());
  auto rebind = [&](const std::string &kernel, const std::string &arg, const std::string &to) {
    Plan bad = plan;
    for (Invocation &inv : bad.entry_points["forward"])
      if (inv.kernel == kernel)
        inv.args[arg] = to;
    return (*backend)->prepare(bad, "", 8);
  };
  auto wrongBucket = rebind("bucket_apply_0", "u", "u1");
  ASSERT_FALSE(wrongBucket.isOk());
  EXPECT_EQ(wrongBucket.status().code(), Code::InvalidArgument);
  EXPECT_NE(wrongBucket.status().message().find("shape"), std::string::npos)
      << wrongBucket.status().message();
  auto wrongDtype = rebind("encode_gate", "pair_tok", "pair_gate");
  ASSERT_FALSE(wrongDtype.isOk());
  EXPECT_NE(wrongDtype.status().message().find("i32"), std::string::npos);
  auto missing = rebind("add_bias", "dec_b", "no_such_tensor");
  ASSERT_FALSE(missing.isOk());
  EXPECT_EQ(missing.status().code(), Code::InvalidArgument);
  auto zeroBatch = (*backend)->prepare(plan, "", 0);
  EXPECT_FALSE(zeroBatch.isOk());
  auto hugeBatch = (*backend)->prepare(plan, "", int64_t(1) << 30); // 5·2^30 pairs: not i32
  ASSERT_FALSE(hugeBatch.isOk());
  EXPECT_NE(hugeBatch.status().message().find("2^31"), std::string::npos);
}

TEST(Executor, HostCopiesCheckNamesAndSizes) {
  auto exec = prepare(fixturePlan("tiny-molt"), 4);
  ASSERT_TRUE(exec);
  std::vector<float> buf(1000);
  EXPECT_EQ(exec->write("nope", buf.data(), 4).code(), Code::NotFound);
  EXPECT_EQ(exec->write("x", buf.data(), 4).code(), Code::InvalidArgument);
  EXPECT_EQ(exec->read("x", buf.data(), 4 * 4 * 8 + 4).code(), Code::InvalidArgument);
  EXPECT_TRUE(exec->read("x", buf.data(), 4 * 4 * 8).isOk());
  EXPECT_EQ(exec->run("no_such_entry").code(), Code::NotFound);
  EXPECT_EQ(exec->zero("nope").code(), Code::NotFound);
}

// setRows: an executor prepared for 64 rows, run on its first 24, gives bit for bit what one
// prepared for 24 gives, in every entry; it neither reads nor writes past the live rows (the
// rest of yhat keeps a sentinel); and the row count is checked.
TEST(Executor, FewerRowsThanPreparedRunAsAnExecutorOfThatBatch) {
  constexpr int64_t kCap = 64, kRows = 24;
  for (const char *name : kFixtures) {
    SCOPED_TRACE(name);
    Plan plan = fixturePlan(name);
    auto big = prepare(plan, kCap), small = prepare(plan, kRows);
    ASSERT_TRUE(big && small);
    randomise(*big, 9);
    EXPECT_EQ(big->setRows(0).code(), Code::InvalidArgument);
    EXPECT_EQ(big->setRows(kCap + 1).code(), Code::InvalidArgument);
    ASSERT_TRUE(big->setRows(kRows).isOk());
    EXPECT_EQ(big->rows(), kRows);
    EXPECT_EQ(big->batch(), kCap);
    const int64_t d = plan.model.d_model;
    for (const ParamDesc &p : plan.params)
      writeAll(*small, p.name, readAll(*big, p.name));
    for (const char *row : {"x", "y"}) {
      std::vector<float> v = readAll(*big, row);
      v.resize(size_t(kRows * d));
      writeAll(*small, row, v);
      // The live part alone is a valid copy too.
      std::vector<float> back(v.size());
      ASSERT_TRUE(big->read(row, back.data(), back.size() * 4).isOk());
      EXPECT_EQ(back, v);
    }
    for (Executor *e : {big.get(), small.get()}) {
      setScalars(*e, 1e-3f, 1e-2f, 1);
      std::vector<float> dy(size_t(kRows * d)); // the caller's seed of backward / vjp
      for (size_t i = 0; i < dy.size(); ++i)
        dy[i] = float(int(i % 7) - 3) * 0.25f;
      ASSERT_TRUE(e->write("d_yhat", dy.data(), dy.size() * 4).isOk());
    }
    std::vector<float> sentinel(size_t(kCap * d), 7.0f);
    writeAll(*big, "yhat", sentinel);
    for (const auto &[entry, calls] : plan.entry_points) {
      if (entry == "train_step" || entry == "jvp")
        continue; // train_step last (it moves the params); jvp needs x_dot
      SCOPED_TRACE(entry);
      ASSERT_TRUE(big->run(entry).isOk());
      ASSERT_TRUE(small->run(entry).isOk());
      std::vector<float> y = readAll(*big, "yhat"), want = readAll(*small, "yhat");
      if (entry == "forward" || entry == "eval")
        EXPECT_TRUE(std::equal(want.begin(), want.end(), y.begin()));
      EXPECT_TRUE(std::all_of(y.begin() + kRows * d, y.end(), [](float v) { return v == 7.0f; }))
          << "a row past the live rows was written";
      if (entryBinds(plan, entry, "d_x")) {
        std::vector<float> dx = readAll(*big, "d_x"), wantDx = readAll(*small, "d_x");
        EXPECT_TRUE(std::equal(wantDx.begin(), wantDx.end(), dx.begin()));
      }
    }
    ASSERT_TRUE(big->run("train_step").isOk());
    ASSERT_TRUE(small->run("train_step").isOk());
    EXPECT_EQ(readAll(*big, "stats"), readAll(*small, "stats"));
    for (const ParamDesc &p : plan.params)
      EXPECT_EQ(readAll(*big, p.name), readAll(*small, p.name)) << p.name;
  }
}

/// Trains `steps` Adam steps on one fixed batch; returns the eval losses before and after.
std::pair<float, float> trainFixedBatch(Executor &e, int steps, float lr, float lambda) {
  auto loss = [&] {
    EXPECT_TRUE(e.run("eval").isOk());
    std::vector<float> s = readAll(e, "stats");
    return s[0] / float(e.batch()) + lambda * s[2] / float(e.batch());
  };
  setScalars(e, lambda, lr, 1);
  float before = loss();
  for (int step = 1; step <= steps; ++step) {
    setScalars(e, lambda, lr, float(step));
    EXPECT_TRUE(e.run("train_step").isOk());
  }
  return {before, loss()};
}

TEST(Executor, TrainingReducesTheLossOnEveryFixture) {
  for (const char *name : kFixtures) {
    SCOPED_TRACE(name);
    auto exec = prepare(fixturePlan(name), 64);
    ASSERT_TRUE(exec);
    randomise(*exec, 5);
    auto [before, after] = trainFixedBatch(*exec, 150, 1e-2f, 1e-3f);
    EXPECT_LT(after, 0.7f * before);
    for (const ParamDesc &p : exec->plan().params)
      for (float w : readAll(*exec, p.name))
        ASSERT_TRUE(std::isfinite(w)) << p.name;
  }
}

TEST(Executor, TrainStepsAreBitIdenticalRunToRun) {
  Plan plan = fixturePlan("tiny-molt");
  std::vector<std::vector<float>> finals;
  for (int run = 0; run < 2; ++run) {
    auto exec = prepare(plan, 1024);
    ASSERT_TRUE(exec);
    randomise(*exec, 21);
    trainFixedBatch(*exec, 5, 1e-2f, 1e-2f);
    std::vector<float> all;
    for (const ParamDesc &p : plan.params)
      for (const std::string &name : {p.name, "m_" + p.name, "v_" + p.name}) {
        std::vector<float> v = readAll(*exec, name);
        all.insert(all.end(), v.begin(), v.end());
      }
    finals.push_back(all);
  }
  ASSERT_EQ(finals[0].size(), finals[1].size());
  EXPECT_EQ(0, std::memcmp(finals[0].data(), finals[1].data(), finals[0].size() * 4));
}

} // namespace
} // namespace molt
