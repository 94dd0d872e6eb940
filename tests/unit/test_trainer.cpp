// The trainer: deterministic initialisation, the step schedule, normalisation folding
// (checked by running the CPU backend on raw and normalised data), loss going down on the
// tiny fixture, and non-finite steps skipped without touching the weights.
#include <gtest/gtest.h>

#include <cmath>
#include <filesystem>
#include <condition_variable>
#include <mutex>
#include <numeric>
#include <random>
#include <thread>

#include "molt/backend.h"
#include "molt/synth.h"
#include "molt/trainer.h"

namespace {

const std::string kFixtures = std::string(MOLT_SOURCE_DIR) + "/tests/fixtures";

molt::Plan fixturePlan(const std::string &name) {
  auto plan = molt::loadPlan(kFixtures + "/" + name);
  EXPECT_TRUE(plan.isOk()) << plan.status().message();
  return *plan;
}

std::unique_ptr<molt::Executor> cpuExecutor(const molt::Plan &plan, const std::string &name,
                                            int64_t batch) {
  auto backend = molt::createBackend("cpu");
  EXPECT_TRUE(backend.isOk());
  auto exec = (*backend)->prepare(plan, kFixtures + "/" + name, batch);
  EXPECT_TRUE(exec.isOk()) << exec.status().message();
  return std::move(*exec);
}

// Synthetic teacher data of width d (shared by the tests that train).
std::string synthData(int64_t d) {
  std::string dir = testing::TempDir() + "/molt_trainer_synth_d" + std::to_string(d);
  if (!std::filesystem::exists(dir + "/train")) {
    molt::SynthOptions o;
    o.out = dir;
    o.d = d;
    o.hidden = 4 * d;
    o.clusters = 8;
    o.trainRows = 4000;
    o.valRows = 500;
    o.shardRows = 1500;
    auto r = molt::synthesize(o);
    EXPECT_TRUE(r.isOk()) << r.status().message();
  }
  return dir;
}

TEST(Trainer, InitialisationIsSeededAndFollowsTheInitDescriptions) {
  molt::Plan plan = fixturePlan("tiny-molt");
  molt::TensorMap a = molt::initParams(plan, 7), b = molt::initParams(plan, 7),
                  c = molt::initParams(plan, 8);
  EXPECT_EQ(a, b);
  EXPECT_NE(a["enc_w"], c["enc_w"]);
  for (float v : a["theta"])
    EXPECT_EQ(v, 0.1f); // const 0.1
  for (float v : a["enc_b"])
    EXPECT_EQ(v, 0.0f); // zeros
  // A big normal param: the sample std is close to the declared one.
  molt::Plan big = plan;
  big.params = {{"w", {200, 100}, {"normal", 0.25}}, {"u", {40000}, {"uniform", 0.5}}};
  molt::TensorMap m = molt::initParams(big, 3);
  double mean = std::accumulate(m["w"].begin(), m["w"].end(), 0.0) / 20000;
  double var = 0;
  for (float v : m["w"])
    var += (v - mean) * (v - mean) / 20000;
  EXPECT_NEAR(mean, 0.0, 0.01);
  EXPECT_NEAR(std::sqrt(var), 0.25, 0.005);
  for (float v : m["u"])
    ASSERT_LE(std::fabs(v), 0.5f);
  double uvar = 0;
  for (float v : m["u"])
    uvar += double(v) * v / 40000;
  EXPECT_NEAR(uvar, 0.25 / 3, 0.003); // Var U(-a, a) = a²/3
}

TEST(Trainer, ScheduleWarmsUpAndDecays) {
  molt::Schedule s;
  s.steps = 1000;
  s.lr = 1e-2;
  s.lrWarmup = 0.1;
  s.minLrFraction = 0.1;
  s.lambda = 2.0;
  s.lambdaWarmup = 0.5;
  auto at = [&](int64_t step) { return molt::stepScalars(s, step, step - 1, 64); };
  EXPECT_FLOAT_EQ(at(50)[1], 5e-3f);        // half-way up the LR ramp
  EXPECT_FLOAT_EQ(at(100)[1], 1e-2f);       // peak
  EXPECT_NEAR(at(550)[1], 5.5e-3f, 1e-6);   // cosine midpoint: min + (1-min)/2
  EXPECT_NEAR(at(1000)[1], 1e-3f, 1e-9);    // floor
  EXPECT_FLOAT_EQ(at(250)[0], 1.0f);        // λ half-way through its ramp
  EXPECT_FLOAT_EQ(at(900)[0], 2.0f);
  EXPECT_FLOAT_EQ(at(7)[6], 7.0f);          // Adam step
  EXPECT_FLOAT_EQ(at(7)[7], 1.0f / 64);
  s.decay = "linear";
  EXPECT_NEAR(at(550)[1], 5.5e-3f, 1e-6);
  s.decay = "constant";
  EXPECT_FLOAT_EQ(at(900)[1], 1e-2f);
}

// Folded weights on raw x must predict raw y as the unfolded ones do on normalised data.
TEST(Trainer, FoldingNormalisationPreservesTheFunction) {
  for (const char *fixture : {"tiny-molt", "tiny-transcoder"}) {
    molt::Plan plan = fixturePlan(fixture);
    const int64_t B = 16, d = plan.model.d_model;
    auto exec = cpuExecutor(plan, fixture, B);
    molt::TensorMap params = molt::initParams(plan, 5);
    for (auto &[name, v] : params) // non-trivial biases and thresholds
      if (name == "enc_b" || name == "dec_b")
        for (size_t i = 0; i < v.size(); ++i)
          v[i] = 0.05f * float(i % 5) - 0.1f;
    molt::Normalization norm{2.5f, 0.4f};
    std::vector<float> x(size_t(B * d)), xs(x.size());
    for (size_t i = 0; i < x.size(); ++i) {
      x[i] = std::sin(0.7f * float(i)) * 0.8f;
      xs[i] = x[i] * norm.x_scale;
    }
    auto forward = [&](const molt::TensorMap &p, const std::vector<float> &in) {
      EXPECT_TRUE(molt::writeTensors(*exec, p).isOk());
      EXPECT_TRUE(exec->write("x", in.data(), in.size() * 4).isOk());
      EXPECT_TRUE(exec->run("forward").isOk());
      std::vector<float> yhat(in.size());
      EXPECT_TRUE(exec->read("yhat", yhat.data(), yhat.size() * 4).isOk());
      return yhat;
    };
    std::vector<float> normalised = forward(params, xs);
    molt::TensorMap folded = params;
    molt::foldNormalization(plan, norm, folded);
    std::vector<float> raw = forward(folded, x);
    double maxAbs = 0;
    for (size_t i = 0; i < raw.size(); ++i) {
      EXPECT_NEAR(raw[i], normalised[i] / norm.y_scale, 1e-4 * (1 + std::fabs(raw[i])))
          << fixture << " element " << i;
      maxAbs = std::max(maxAbs, double(std::fabs(raw[i])));
    }
    EXPECT_GT(maxAbs, 0.01) << fixture << ": the check needs a non-zero output";
  }
}

TEST(Trainer, TrainingTheTinyMoltReducesTheLoss) {
  molt::Plan plan = fixturePlan("tiny-molt");
  std::string dir = synthData(plan.model.d_model);
  auto data = molt::ShardSet::open(dir + "/train", plan.model.d_model);
  ASSERT_TRUE(data.isOk()) << data.status().message();
  molt::TrainState state;
  state.norm = molt::computeNormalization(**data);
  molt::BatchStream stream(**data, 1, 1024, true, true, state.norm);
  auto exec = cpuExecutor(plan, "tiny-molt", 64);
  ASSERT_TRUE(molt::writeTensors(*exec, molt::initParams(plan, 1)).isOk());
  molt::Schedule s;
  s.steps = 300;
  s.lr = 3e-3;
  s.lambda = plan.model.penalty.lambda;
  molt::Trainer trainer(*exec, stream, s, state);
  double first = 0, last = 0;
  for (int i = 0; i < 300; ++i) {
    auto st = trainer.step();
    ASSERT_TRUE(st.isOk()) << st.status().message();
    ASSERT_FALSE(st->skipped);
    if (i < 20)
      first += st->sse / st->sumY2 / 20;
    if (i >= 280)
      last += st->sse / st->sumY2 / 20;
  }
  EXPECT_LT(last, 0.6 * first) << "NMSE " << first << " -> " << last;
  EXPECT_EQ(trainer.state().step, 300);
  EXPECT_EQ(trainer.state().adamStep, 300);
  EXPECT_EQ(trainer.state().tokens, 300 * 64);
  EXPECT_LT(trainer.deadFraction(1 << 30), 1.0);
}

TEST(Trainer, NonFiniteStepsAreSkippedAndStopTheRun) {
  molt::Plan plan = fixturePlan("tiny-molt");
  const int64_t d = plan.model.d_model;
  std::string dir = testing::TempDir() + "/molt_trainer_overflow";
  std::filesystem::create_directories(dir);
  // Finite f32 values whose squares overflow: every loss is +Inf.
  std::vector<float> x(size_t(64 * d), 3e30f), y(size_t(64 * d), -3e30f);
  ASSERT_TRUE(molt::writeSafetensors(dir + "/s.safetensors", {molt::f32Tensor("x", {64, d}, x),
                                                              molt::f32Tensor("y", {64, d}, y)})
                  .isOk());
  auto data = molt::ShardSet::open(dir, d);
  ASSERT_TRUE(data.isOk());
  molt::BatchStream stream(**data, 1, 64, true, true);
  auto exec = cpuExecutor(plan, "tiny-molt", 16);
  molt::TensorMap init = molt::initParams(plan, 1);
  ASSERT_TRUE(molt::writeTensors(*exec, init).isOk());
  molt::Trainer trainer(*exec, stream, molt::Schedule{}, molt::TrainState{});
  trainer.maxConsecutiveSkips = 5;
  for (int i = 0; i < 4; ++i) {
    auto st = trainer.step();
    ASSERT_TRUE(st.isOk()) << st.status().message();
    EXPECT_TRUE(st->skipped);
  }
  auto st = trainer.step();
  ASSERT_FALSE(st.isOk());
  EXPECT_NE(st.status().message().find("5 steps in a row"), std::string::npos);
  EXPECT_EQ(trainer.state().skipped, 5);
  EXPECT_EQ(trainer.state().adamStep, 0);
  auto after = molt::readTensors(*exec);
  ASSERT_TRUE(after.isOk());
  EXPECT_EQ(*after, init) << "a skipped step changed the weights";
}

} // namespace

// The data-parallel split: train_grad then train_apply is train_step, bit for bit, on every
// fixture kind; and a Trainer with a DataParallel of one rank (an all-reduce that changes
// nothing) trains exactly as a plain one, calling its all-reduce once per step.
TEST(Trainer, TrainPhasesAreTrainStepSplitInTwo) {
  for (const char *name : {"tiny-molt", "tiny-transcoder-jumprelu", "tiny-transcoder-topk"}) {
    SCOPED_TRACE(name);
    molt::Plan plan = fixturePlan(name);
    molt::addTrainPhases(plan);
    ASSERT_TRUE(plan.entry_points.count(molt::kTrainGradEntry));
    const auto &apply = plan.entry_points.at(molt::kTrainApplyEntry);
    ASSERT_EQ(apply.size(), 2u); // grad_norm, adam
    EXPECT_EQ(plan.findKernel(apply[0].kernel)->op, "grad_norm");
    EXPECT_EQ(plan.entry_points.at(molt::kTrainGradEntry).size() + 2,
              plan.entry_points.at("train_step").size());
    const int64_t d = plan.model.d_model, b = 32;
    auto whole = cpuExecutor(plan, name, b), split = cpuExecutor(plan, name, b);
    molt::TensorMap init = molt::initParams(plan, 4);
    ASSERT_TRUE(molt::writeTensors(*whole, init).isOk());
    ASSERT_TRUE(molt::writeTensors(*split, init).isOk());
    std::mt19937 rng(1);
    std::normal_distribution<float> normal;
    std::vector<float> x(size_t(b * d)), y(size_t(b * d));
    for (int step = 1; step <= 3; ++step) {
      for (size_t i = 0; i < x.size(); ++i) {
        x[i] = normal(rng);
        y[i] = 0.5f * x[(i + 1) % x.size()];
      }
      molt::Schedule s;
      s.lambda = 0.01;
      auto scalars = molt::stepScalars(s, step, step - 1, b);
      for (molt::Executor *e : {whole.get(), split.get()}) {
        ASSERT_TRUE(e->write("x", x.data(), x.size() * 4).isOk());
        ASSERT_TRUE(e->write("y", y.data(), y.size() * 4).isOk());
        ASSERT_TRUE(e->write("scalars", scalars.data(), sizeof scalars).isOk());
      }
      ASSERT_TRUE(whole->run("train_step").isOk());
      ASSERT_TRUE(split->run(molt::kTrainGradEntry).isOk());
      ASSERT_TRUE(split->run(molt::kTrainApplyEntry).isOk());
      std::array<float, 16> s1{}, s2{};
      ASSERT_TRUE(whole->read("stats", s1.data(), sizeof s1).isOk());
      ASSERT_TRUE(split->read("stats", s2.data(), sizeof s2).isOk());
      EXPECT_EQ(s1, s2); // train_apply kept the loss stats train_grad left
      EXPECT_GT(s1[0], 0.0f);
    }
    auto a = molt::readTensors(*whole), c = molt::readTensors(*split);
    ASSERT_TRUE(a.isOk() && c.isOk());
    EXPECT_EQ(*a, *c);
    EXPECT_NE(*a, init);
  }
}

TEST(Trainer, OneRankDataParallelTrainsAsThePlainTrainer) {
  molt::Plan plan = fixturePlan("tiny-molt");
  molt::addTrainPhases(plan);
  std::string dir = synthData(plan.model.d_model);
  auto set = molt::ShardSet::open(dir + "/train", plan.model.d_model);
  ASSERT_TRUE(set.isOk());
  std::vector<molt::TensorMap> results;
  int calls = 0;
  for (bool parallel : {false, true}) {
    auto exec = cpuExecutor(plan, "tiny-molt", 64);
    ASSERT_TRUE(molt::writeTensors(*exec, molt::initParams(plan, 2)).isOk());
    molt::BatchStream stream(**set, 9, 1024, true, true);
    molt::DataParallel dp;
    if (parallel)
      dp.allReduce = [&calls](molt::Executor &) { ++calls; return molt::Status::ok(); };
    molt::Schedule s;
    s.steps = 20;
    molt::Trainer trainer(*exec, stream, s, molt::TrainState{}, dp);
    for (int i = 0; i < 20; ++i)
      ASSERT_TRUE(trainer.step().isOk());
    auto params = molt::readTensors(*exec);
    ASSERT_TRUE(params.isOk());
    results.push_back(*params);
  }
  EXPECT_EQ(calls, 20);
  EXPECT_EQ(results[0], results[1]);
}

// Two data-parallel ranks on threads, their stats summed and gradients averaged through shared
// memory, train as one executor on the global batch: the C++ half of python -m molt.train.
// (Adam is blind to a constant gradient scale; the reported gradient norm is not.)
TEST(Trainer, TwoRanksOnThreadsTrainAsOneExecutorOnTheGlobalBatch) {
  molt::Plan plan = fixturePlan("tiny-molt");
  molt::addTrainPhases(plan);
  std::string dir = synthData(plan.model.d_model);
  auto set = molt::ShardSet::open(dir + "/train", plan.model.d_model);
  ASSERT_TRUE(set.isOk());
  const int steps = 30;
  molt::Schedule schedule;
  schedule.steps = steps;
  schedule.lambda = 0.01;
  struct Result {
    molt::TensorMap params;
    std::vector<double> loss, gradNorm;
  };
  auto train = [&](int64_t batch, molt::DataParallel dp, Result &out) {
    auto exec = cpuExecutor(plan, "tiny-molt", batch);
    ASSERT_TRUE(molt::writeTensors(*exec, molt::initParams(plan, 2)).isOk());
    molt::BatchStream stream(**set, 9, 1024, true, true);
    molt::Trainer trainer(*exec, stream, schedule, molt::TrainState{}, dp);
    for (int i = 0; i < steps; ++i) {
      auto st = trainer.step();
      ASSERT_TRUE(st.isOk()) << st.status().message();
      out.loss.push_back(st->loss);
      out.gradNorm.push_back(st->gradNorm);
    }
    EXPECT_EQ(trainer.state().tokens, steps * 64);
    out.params = *molt::readTensors(*exec);
  };
  Result one;
  train(64, {}, one);

  // A two-party barrier and the parts each rank contributes.
  std::mutex m;
  std::condition_variable cv;
  int arrived = 0, generation = 0;
  auto barrier = [&] {
    std::unique_lock<std::mutex> lock(m);
    int gen = generation;
    if (++arrived == 2) {
      arrived = 0;
      ++generation;
      cv.notify_all();
    } else {
      cv.wait(lock, [&] { return generation != gen; });
    }
  };
  std::vector<molt::TensorMap> parts(2);
  auto allReduce = [&](int rank) {
    return [&, rank](molt::Executor &exec) -> molt::Status {
      auto mine = molt::readTensors(exec, molt::reducedTensors(plan));
      if (!mine)
        return mine.status();
      parts[size_t(rank)] = *mine;
      barrier();
      for (auto &[name, v] : *mine)
        for (size_t i = 0; i < v.size(); ++i) {
          float sum = parts[0][name][i] + parts[1][name][i]; // rank order on both ranks
          v[i] = name == "stats" ? sum : sum / 2;
        }
      barrier(); // both have read the parts before either overwrites them next step
      return molt::writeTensors(exec, *mine);
    };
  };
  std::vector<Result> ranks(2);
  std::vector<std::thread> threads;
  for (int r = 0; r < 2; ++r)
    threads.emplace_back([&, r] { train(32, {r, 2, allReduce(r)}, ranks[size_t(r)]); });
  for (std::thread &t : threads)
    t.join();
  EXPECT_EQ(ranks[0].params, ranks[1].params); // the same update on both ranks
  for (const molt::ParamDesc &p : plan.params) {
    double diff = 0, norm = 0;
    for (size_t i = 0; i < one.params[p.name].size(); ++i) {
      diff += std::pow(double(ranks[0].params[p.name][i]) - one.params[p.name][i], 2);
      norm += std::pow(double(one.params[p.name][i]), 2);
    }
    EXPECT_LT(std::sqrt(diff / norm), 1e-5) << p.name;
  }
  for (int i = 0; i < steps; ++i) {
    EXPECT_NEAR(ranks[0].loss[size_t(i)], one.loss[size_t(i)], 1e-5 * one.loss[size_t(i)]);
    EXPECT_NEAR(ranks[0].gradNorm[size_t(i)], one.gradNorm[size_t(i)],
                1e-5 * one.gradNorm[size_t(i)]);
  }
  EXPECT_NE(one.params, molt::initParams(plan, 2));
}
