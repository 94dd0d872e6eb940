// Preemption (docs/reliability.md, "Stopping and resuming"): the repeated command of a
// preemptible job, `molt-train ... --out RUN --resume`, on a RUN with no checkpoint yet starts at
// step 0 (and refuses a RUN holding files it did not write); a requested stop (SIGTERM / SIGINT
// or molt::requestStop()) checkpoints the step in flight, and the resume is bit-identical to an
// uninterrupted run. The SIGTERM/SIGKILL trials on the real tool are scripts/fault-injection.
#include <gtest/gtest.h>

#include <chrono>
#include <csignal>
#include <filesystem>
#include <fstream>
#include <random>
#include <thread>

#include "molt/io.h"
#include "molt/run.h"
#include "molt/safetensors.h"
#include "molt/stop.h"
#include "tiny_run.h"

namespace {

namespace fs = std::filesystem;
constexpr int64_t kD = 8; // the tiny-molt fixture's d_model

std::string freshDir(const std::string &name) { return freshTestDir("molt_stop", name); }

std::string writeData(const std::string &dir) {
  std::mt19937_64 gen(4);
  std::normal_distribution<float> normal(0.0f, 1.0f);
  const int64_t n = 512;
  std::vector<float> x(size_t(n * kD)), y(size_t(n * kD));
  for (float &v : x)
    v = normal(gen);
  for (int64_t r = 0; r < n; ++r)
    for (int64_t i = 0; i < kD; ++i)
      y[size_t(r * kD + i)] = std::tanh(x[size_t(r * kD + i)]) + 0.5f * x[size_t(r * kD + (i + 1) % kD)];
  const std::string path = dir + "/data.safetensors";
  EXPECT_TRUE(molt::writeSafetensors(path, {molt::f32Tensor("x", {n, kD}, x),
                                            molt::f32Tensor("y", {n, kD}, y)})
                  .isOk());
  return path;
}

molt::TrainOptions options(const std::string &data, const std::string &out) {
  molt::TrainOptions o = tinyRunOptions(data, out);
  o.steps = 40;
  o.seed = 9;
  o.checkpointEvery = 15; // a stop or kill between checkpoints loses steps without the stop rule
  o.logEvery = 5;
  return o;
}

std::string bytes(const std::string &path) {
  molt::StatusOr<std::string> b = molt::readFile(path);
  EXPECT_TRUE(b.isOk()) << path;
  return b ? *b : "";
}

void expectSameRun(const std::string &a, const std::string &b) {
  for (const char *f : {"weights.safetensors", "checkpoint.safetensors"})
    EXPECT_TRUE(bytes(a + "/" + f) == bytes(b + "/" + f)) << f << " differs";
}

TEST(ReliabilityStop, ResumeWithoutACheckpointStartsAtStepZero) {
  const std::string dir = freshDir("no-checkpoint");
  const std::string data = writeData(dir);
  ASSERT_TRUE(molt::runTraining(options(data, dir + "/ref")).isOk());

  // Never started: RUN does not exist.
  molt::TrainOptions o = options(data, dir + "/absent");
  o.resume = true;
  molt::Status st = molt::runTraining(o);
  ASSERT_TRUE(st.isOk()) << st.message();
  expectSameRun(dir + "/ref", dir + "/absent");

  // Killed before its first checkpoint: RUN holds a partial bundle copy, a metrics file with
  // lines of steps never saved, and a temporary of an interrupted write.
  const std::string early = dir + "/early";
  fs::create_directories(early + "/bundle");
  std::ofstream(early + "/bundle/manifest.json") << "{\"trunc";
  std::ofstream(early + "/metrics.jsonl") << "{\"step\":5}\n";
  std::ofstream(early + "/checkpoint.safetensors.tmp-123") << "partial";
  o.out = early;
  st = molt::runTraining(o);
  ASSERT_TRUE(st.isOk()) << st.message();
  expectSameRun(dir + "/ref", early);
  EXPECT_FALSE(fs::exists(early + "/checkpoint.safetensors.tmp-123"));

  // Repeating the command on the finished run changes nothing.
  const std::string before = bytes(early + "/checkpoint.safetensors");
  ASSERT_TRUE(molt::runTraining(o).isOk());
  EXPECT_EQ(bytes(early + "/checkpoint.safetensors"), before);
}

TEST(ReliabilityStop, ResumeRefusesADirectoryHoldingSomeoneElsesFiles) {
  const std::string dir = freshDir("foreign");
  const std::string data = writeData(dir);
  const std::string run = dir + "/run";
  fs::create_directories(run);
  std::ofstream(run + "/thesis.tex") << "mine";
  molt::TrainOptions o = options(data, run);
  o.resume = true;
  molt::Status st = molt::runTraining(o);
  ASSERT_FALSE(st.isOk());
  EXPECT_EQ(st.code(), molt::Code::InvalidArgument);
  EXPECT_NE(st.message().find("thesis.tex"), std::string::npos) << st.message();
  EXPECT_EQ(st.message().find('\n'), std::string::npos);
  EXPECT_EQ(bytes(run + "/thesis.tex"), "mine");
  EXPECT_FALSE(fs::exists(run + "/bundle"));
  EXPECT_FALSE(fs::exists(run + "/checkpoint.safetensors"));
}

TEST(ReliabilityStop, AStopBeforeTheFirstStepCheckpointsStepZeroAndResumesExactly) {
  const std::string dir = freshDir("stop-at-zero");
  const std::string data = writeData(dir);
  ASSERT_TRUE(molt::runTraining(options(data, dir + "/ref")).isOk());
  molt::TrainOptions o = options(data, dir + "/run");
  o.resume = true; // the repeated command, every time
  molt::requestStop();
  molt::Status st = molt::runTraining(o);
  molt::clearStopRequest();
  ASSERT_EQ(st.code(), molt::Code::Cancelled) << st.message();
  EXPECT_NE(st.message().find("stopped at step 0"), std::string::npos) << st.message();
  ASSERT_TRUE(fs::exists(dir + "/run/checkpoint.safetensors"));
  EXPECT_FALSE(fs::exists(dir + "/run/weights.safetensors"));
  ASSERT_TRUE(molt::runTraining(o).isOk());
  expectSameRun(dir + "/ref", dir + "/run");
}

TEST(ReliabilityStop, AStopMidRunCheckpointsTheStepInFlightAndResumesBitIdentically) {
  const std::string dir = freshDir("stop-mid");
  const std::string data = writeData(dir);
  molt::TrainOptions ref = options(data, dir + "/ref");
  ref.steps = 400;
  ASSERT_TRUE(molt::runTraining(ref).isOk());
  molt::TrainOptions o = ref;
  o.out = dir + "/run";
  o.resume = true;
  o.checkpointEvery = 1000; // only the stop writes a checkpoint before the end
  // Another thread asks for the stop once some steps are logged (as a signal handler would).
  std::thread stopper([&] {
    const auto deadline = std::chrono::steady_clock::now() + std::chrono::seconds(60);
    while (std::chrono::steady_clock::now() < deadline) {
      std::ifstream m(o.out + "/metrics.jsonl");
      std::string line;
      int lines = 0;
      while (std::getline(m, line))
        ++lines;
      if (lines >= 2)
        break;
      std::this_thread::sleep_for(std::chrono::milliseconds(1));
    }
    molt::requestStop();
  });
  molt::Status st = molt::runTraining(o);
  stopper.join();
  molt::clearStopRequest();
  if (st.isOk())
    GTEST_SKIP() << "the run finished before the stop arrived (a very fast machine)";
  ASSERT_EQ(st.code(), molt::Code::Cancelled) << st.message();
  ASSERT_TRUE(fs::exists(o.out + "/checkpoint.safetensors"));
  ASSERT_TRUE(molt::runTraining(o).isOk());
  expectSameRun(ref.out, o.out);
}

TEST(ReliabilityStop, SigtermAndSigintOnlyRequestAStopWhileHandled) {
  molt::clearStopRequest();
  for (int sig : {SIGTERM, SIGINT}) {
    {
      molt::StopOnSignals handlers;
      ASSERT_FALSE(molt::stopRequested());
      std::raise(sig); // handled: the process lives on with the flag set
      EXPECT_TRUE(molt::stopRequested());
    }
    molt::clearStopRequest();
  }
  // The previous handlers are back: ignoring SIGTERM now makes a raise harmless and unflagged.
  auto previous = std::signal(SIGTERM, SIG_IGN);
  std::raise(SIGTERM);
  EXPECT_FALSE(molt::stopRequested());
  std::signal(SIGTERM, previous);
}

TEST(ReliabilityStopDeathTest, ASecondSignalEndsTheProcessAtOnce) {
  testing::FLAGS_gtest_death_test_style = "threadsafe";
  EXPECT_EXIT(
      {
        molt::StopOnSignals handlers;
        std::raise(SIGTERM);
        std::raise(SIGTERM);
        std::exit(0); // not reached
      },
      testing::ExitedWithCode(128 + SIGTERM), "");
}

} // namespace
