// Checkpoints and runs: save/load round trip, resume bit-identical to a straight run,
// metrics.jsonl well-formed across a resume, and failures that must not touch the run.
#include <gtest/gtest.h>

#include <filesystem>
#include <fstream>
#include <nlohmann/json.hpp>

#include "molt/checkpoint.h"
#include "molt/data.h"
#include "molt/io.h"
#include "molt/jacobian.h"
#include "molt/run.h"
#include "molt/safetensors.h"
#include "molt/synth.h"

namespace {

namespace fs = std::filesystem;
const std::string kFixtures = std::string(MOLT_SOURCE_DIR) + "/tests/fixtures";

std::string tmp(const std::string &name) {
  std::string dir = testing::TempDir() + "/molt_checkpoint/" + name;
  fs::remove_all(dir);
  fs::create_directories(fs::path(dir).parent_path());
  return dir;
}

const std::string &data8() {
  static const std::string dir = [] {
    std::string d = tmp("data8");
    molt::SynthOptions o;
    o.out = d;
    o.d = 8;
    o.hidden = 32;
    o.clusters = 6;
    o.trainRows = 3000;
    o.valRows = 700;
    o.shardRows = 1100; // several shards, so the cursor crosses shard boundaries
    EXPECT_TRUE(molt::synthesize(o).isOk());
    return d;
  }();
  return dir;
}

molt::TrainOptions options(const std::string &fixture, const std::string &out, int64_t steps) {
  molt::TrainOptions o;
  o.bundle = kFixtures + "/" + fixture;
  o.data = data8() + "/train";
  o.out = out;
  o.steps = steps;
  o.batch = 128; // 3000 rows: an epoch ends every ~23 steps
  o.logEvery = 7;
  o.checkpointEvery = 11;
  o.lr = 3e-3;
  o.seed = 5;
  o.quiet = true;
  return o;
}

std::string bytesOf(const std::string &path) {
  auto b = molt::readFile(path);
  EXPECT_TRUE(b.isOk()) << b.status().message();
  return b.isOk() ? *b : "";
}

// The tensors (weights and moments) of a checkpoint, byte for byte.
std::map<std::string, std::string> tensorBytes(const std::string &path) {
  auto f = molt::SafetensorsFile::open(path);
  EXPECT_TRUE(f.isOk()) << f.status().message();
  std::map<std::string, std::string> out;
  for (const molt::TensorView &t : (*f)->tensors())
    out[t.name] = std::string(reinterpret_cast<const char *>(t.data), t.bytes);
  return out;
}

TEST(Checkpoint, ResumeIsBitIdentical) {
  for (const char *fixture : {"tiny-molt", "tiny-transcoder-topk"}) {
    std::string straight = tmp(std::string("straight-") + fixture);
    std::string split = tmp(std::string("split-") + fixture);
    ASSERT_TRUE(molt::runTraining(options(fixture, straight, 60)).isOk());
    molt::TrainOptions first = options(fixture, split, 30);
    first.scheduleSteps = 60;
    ASSERT_TRUE(molt::runTraining(first).isOk());
    molt::TrainOptions second = options(fixture, split, 60);
    second.resume = true;
    molt::Status st = molt::runTraining(second);
    ASSERT_TRUE(st.isOk()) << st.message();
    auto a = tensorBytes(straight + "/checkpoint.safetensors");
    auto b = tensorBytes(split + "/checkpoint.safetensors");
    ASSERT_EQ(a.size(), b.size());
    for (const auto &[name, bytes] : a)
      EXPECT_TRUE(bytes == b[name]) << fixture << ": " << name << " differs after resume";
    EXPECT_EQ(bytesOf(straight + "/weights.safetensors"), bytesOf(split + "/weights.safetensors"));

    // metrics.jsonl: every line parses, steps strictly increase, and the resumed run logs
    // the same steps as the straight one.
    auto steps = [](const std::string &run) {
      std::ifstream in(run + "/metrics.jsonl");
      std::vector<int64_t> s;
      std::string line;
      while (std::getline(in, line)) {
        nlohmann::json j = nlohmann::json::parse(line, nullptr, false);
        EXPECT_FALSE(j.is_discarded()) << line;
        for (const char *key : {"step", "tokens", "loss", "nmse", "l0", "dead_fraction", "lambda",
                                "lr", "tokens_per_s", "skipped"})
          EXPECT_TRUE(j.contains(key)) << key << " missing in " << line;
        s.push_back(j["step"].get<int64_t>());
      }
      return s;
    };
    std::vector<int64_t> s1 = steps(straight), s2 = steps(split);
    EXPECT_TRUE(std::is_sorted(s1.begin(), s1.end()));
    // The split run logs step 30 (its end) besides the multiples of 7.
    s2.erase(std::remove(s2.begin(), s2.end(), 30), s2.end());
    EXPECT_EQ(s1, s2);
  }
}

TEST(Checkpoint, SaveLoadRoundTripsTheState) {
  std::string run = tmp("roundtrip");
  ASSERT_TRUE(molt::runTraining(options("tiny-molt", run, 12)).isOk());
  auto plan = molt::loadPlan(run + "/bundle");
  ASSERT_TRUE(plan.isOk());
  auto ck = molt::loadCheckpoint(run + "/checkpoint.safetensors", *plan);
  ASSERT_TRUE(ck.isOk()) << ck.status().message();
  EXPECT_EQ(ck->state.step, 12);
  EXPECT_EQ(ck->state.adamStep, 12);
  EXPECT_EQ(ck->state.tokens, 12 * 128);
  EXPECT_EQ(ck->state.seed, 5u);
  EXPECT_EQ(ck->config.batch, 128);
  EXPECT_EQ(ck->config.dataRows, 3000);
  EXPECT_EQ(ck->config.schedule.steps, 12);
  EXPECT_DOUBLE_EQ(ck->config.schedule.lr, 3e-3);
  EXPECT_GT(ck->state.norm.x_scale, 0.0f);
  // 3000 rows fit one shuffle window: 12 batches of 128 are 1536 rows into it.
  EXPECT_EQ(ck->state.cursor.epoch, 0);
  EXPECT_EQ(ck->state.cursor.window, 0);
  EXPECT_EQ(ck->state.cursor.served, 12 * 128);
  for (const molt::ParamDesc &p : plan->params) {
    EXPECT_TRUE(ck->tensors.count(p.name));
    EXPECT_TRUE(ck->tensors.count("m_" + p.name));
    EXPECT_TRUE(ck->tensors.count("v_" + p.name));
  }
  EXPECT_EQ(ck->state.lastActive.size(), size_t(plan->model.numTransforms()));
  // A checkpoint of another model is refused.
  auto other = molt::loadPlan(kFixtures + "/tiny-transcoder");
  ASSERT_TRUE(other.isOk());
  auto wrong = molt::loadCheckpoint(run + "/checkpoint.safetensors", *other);
  ASSERT_FALSE(wrong.isOk());
  EXPECT_NE(wrong.status().message().find("different model"), std::string::npos);
}

TEST(Checkpoint, FailuresLeaveTheRunAlone) {
  std::string run = tmp("untouched");
  ASSERT_TRUE(molt::runTraining(options("tiny-molt", run, 10)).isOk());
  std::string ckpt = bytesOf(run + "/checkpoint.safetensors");
  std::string metrics = bytesOf(run + "/metrics.jsonl");
  auto expectUntouched = [&](const char *what) {
    EXPECT_EQ(bytesOf(run + "/checkpoint.safetensors"), ckpt) << what;
    EXPECT_EQ(bytesOf(run + "/metrics.jsonl"), metrics) << what;
  };

  molt::Status fresh = molt::runTraining(options("tiny-molt", run, 20));
  EXPECT_NE(fresh.message().find("already holds a run"), std::string::npos) << fresh.message();
  expectUntouched("a fresh run into an existing RUN");

  molt::TrainOptions batch = options("tiny-molt", run, 20);
  batch.resume = true;
  batch.batch = 64;
  EXPECT_NE(molt::runTraining(batch).message().find("--batch 128"), std::string::npos);
  expectUntouched("resume with another batch");

  molt::TrainOptions data = options("tiny-molt", run, 20);
  data.resume = true;
  data.data = data8() + "/val";
  EXPECT_NE(molt::runTraining(data).message().find("rows"), std::string::npos);
  expectUntouched("resume on other data");

  molt::TrainOptions other = options("tiny-transcoder", run, 20);
  other.resume = true;
  EXPECT_NE(molt::runTraining(other).message().find("differs"), std::string::npos);
  expectUntouched("resume with another bundle");

  // A corrupt checkpoint: resume fails with one line and leaves the file as it is.
  std::string corrupt = ckpt.substr(0, ckpt.size() - 5);
  ASSERT_TRUE(molt::writeFileAtomic(run + "/checkpoint.safetensors", corrupt).isOk());
  molt::TrainOptions resume = options("tiny-molt", run, 20);
  resume.resume = true;
  molt::Status st = molt::runTraining(resume);
  EXPECT_EQ(st.code(), molt::Code::DataLoss) << st.message();
  EXPECT_EQ(bytesOf(run + "/checkpoint.safetensors"), corrupt);

  // A run that never wrote a checkpoint resumes from step 0 (the repeated command of a
  // preemptible job; ReliabilityStop.* in test_reliability_stop.cpp covers the rest).
  molt::TrainOptions missing = options("tiny-molt", tmp("never-ran"), 20);
  missing.resume = true;
  EXPECT_TRUE(molt::runTraining(missing).isOk());
  EXPECT_TRUE(fs::exists(missing.out + "/checkpoint.safetensors"));
}

TEST(Checkpoint, EvaluateRunReportsMetrics) {
  std::string run = tmp("eval");
  molt::TrainOptions o = options("tiny-molt", run, 40);
  ASSERT_TRUE(molt::runTraining(o).isOk());
  auto r = molt::evaluateRun(run, data8() + "/val", 256, "cpu");
  ASSERT_TRUE(r.isOk()) << r.status().message();
  EXPECT_EQ(r->rows, 700); // 2 full batches + a tail of 188: every row counted once
  EXPECT_GT(r->nmse, 0.0);
  EXPECT_LT(r->nmse, 1.5);
  EXPECT_GE(r->fvu, r->nmse) << "FVU's denominator is centred, so it is never smaller";
  ASSERT_EQ(r->buckets.size(), 2u);
  EXPECT_NEAR(r->buckets[0].l0 + r->buckets[1].l0, r->l0, 1e-9);
  nlohmann::json j = nlohmann::json::parse(r->toJson());
  for (const char *key : {"nmse", "fvu", "l0", "dead_fraction"})
    EXPECT_TRUE(j[key].is_number()) << key;
  // The same numbers whatever the batch (the tail executor covers the remainder).
  auto r2 = molt::evaluateRun(run, data8() + "/val", 100, "cpu");
  ASSERT_TRUE(r2.isOk());
  EXPECT_NEAR(r2->nmse, r->nmse, 1e-5 * r->nmse);
  EXPECT_NEAR(r2->l0, r->l0, 1e-9);

  // weights.safetensors has the normalisation folded in: an independent float64 forward
  // (jacobian.h's replacementForward) on raw x reproduces the evaluator's NMSE on raw y.
  auto plan = molt::loadPlan(run + "/bundle");
  ASSERT_TRUE(plan.isOk());
  auto weights = molt::SafetensorsFile::open(run + "/weights.safetensors");
  ASSERT_TRUE(weights.isOk()) << weights.status().message();
  molt::HostTensors params;
  for (const molt::ParamDesc &p : plan->params)
    params[p.name] = *(*weights)->readF32(p.name, p.shape);
  auto layer = molt::makeReplacement(plan->model, params);
  ASSERT_TRUE(layer.isOk()) << layer.status().message();
  auto val = molt::ShardSet::open(data8() + "/val", 8);
  ASSERT_TRUE(val.isOk());
  double sse = 0, y2 = 0;
  std::vector<float> x(8), y(8);
  std::vector<double> xd(8), yhat(8);
  for (size_t s = 0; s < (*val)->numShards(); ++s)
    for (int64_t row = 0; row < (*val)->shardRows(s); ++row) {
      (*val)->readRows(s, row, 1, x.data(), y.data());
      std::copy(x.begin(), x.end(), xd.begin());
      molt::replacementForward(*layer, xd.data(), yhat.data());
      for (int j = 0; j < 8; ++j) {
        sse += (yhat[size_t(j)] - y[size_t(j)]) * (yhat[size_t(j)] - y[size_t(j)]);
        y2 += double(y[size_t(j)]) * y[size_t(j)];
      }
    }
  EXPECT_NEAR(sse / y2, r->nmse, 1e-3 * r->nmse);
}

TEST(Checkpoint, EvalWithATeacherReportsJacobianCosine) {
  std::string run = tmp("eval-teacher");
  ASSERT_TRUE(molt::runTraining(options("tiny-molt", run, 20)).isOk());
  auto r = molt::evaluateRun(run, data8() + "/val", 256, "cpu", data8() + "/teacher.safetensors",
                             100);
  ASSERT_TRUE(r.isOk()) << r.status().message();
  EXPECT_TRUE(r->hasJacobian);
  EXPECT_EQ(r->jacobianRows, 100);
  EXPECT_GT(r->jacobianCosine, -1.0);
  EXPECT_LE(r->jacobianCosine, 1.0);
  EXPECT_NE(r->toJson().find("\"jacobian_cosine\""), std::string::npos);
  auto missing = molt::evaluateRun(run, data8() + "/val", 256, "cpu", run + "/nope", 100);
  ASSERT_FALSE(missing.isOk());
  EXPECT_NE(missing.status().message().find("--teacher"), std::string::npos);
}

} // namespace
