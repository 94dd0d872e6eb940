// molt-tune: the tuning database (format, atomic save, lookup by the compiler's key), the CPU
// executor honouring it, the kernel candidates and the rank-schedule candidates.
#include <cmath>
#include <cstdlib>
#include <filesystem>
#include <random>

#include <gtest/gtest.h>

#include "molt/backend.h"
#include "molt/config.h"
#include "molt/cuda_wrapper.h"
#include "molt/io.h"
#include "molt/trainer.h"
#include "molt/tuning.h"
#include "tools/molt-tune/kernel_tune.h"
#include "tools/molt-tune/schedule_search.h"

namespace molt {
namespace {

namespace fs = std::filesystem;

Plan tinyPlan() {
  auto plan = loadPlan(std::string(MOLT_SOURCE_DIR) + "/tests/fixtures/tiny-molt");
  EXPECT_TRUE(plan.isOk()) << plan.status().message();
  return *plan;
}

std::string tempPath(const std::string &name) {
  fs::path dir = fs::temp_directory_path() / ("molt-test-tune-" + std::to_string(::getpid()));
  fs::create_directories(dir);
  return (dir / name).string();
}

TEST(TuningDb, SignatureIsTheCompilersKey) {
  KernelDesc k;
  k.op = "bucket_apply";
  k.attrs = {{"R", int64_t(4)}, {"D", int64_t(16)}, {"OFF", int64_t(1)}, {"N", int64_t(2)}};
  // The key tests/lit/passes/molt-lower-to-kernels.mlir writes by hand: attrs in name order.
  EXPECT_EQ(kernelSignature(k), "bucket_apply(D=16,N=2,OFF=1,R=4)");
  k.attrs = {{"gate", std::string("jumprelu")}, {"bandwidth", 0.05}};
  EXPECT_EQ(kernelSignature(k), "bucket_apply(bandwidth=0.05,gate=jumprelu)");
}

TEST(TuningDb, SavesAtomicallyAndReadsBack) {
  const std::string path = tempPath("db/nested/tuning.json");
  auto empty = loadTuningDb(path);
  ASSERT_TRUE(empty.isOk());
  EXPECT_TRUE(empty->devices.empty()); // a missing database is an empty one

  TuningDb db;
  DeviceTuning &cpu = db.devices[tuningDeviceKey("cpu", "x86_64", "2-thread CPU")];
  cpu.kind = "cpu", cpu.name = "2-thread CPU", cpu.arch = "x86_64";
  cpu.kernels["adam()"] = {LaunchConfig{}, 1, 1024, 200.0, 50.0};
  DeviceTuning &gpu = db.devices[tuningDeviceKey("cuda", "sm_90", "H100")];
  gpu.kind = "cuda", gpu.name = "H100", gpu.arch = "sm_90";
  LaunchConfig l;
  l.block[0] = 128;
  l.grid[0] = "cdiv(B,16)";
  l.tile_n = 32;
  gpu.kernels["bucket_apply(D=16,N=2,OFF=1,R=4)"] = {l, 0, 2048, 30.0, 20.0};
  ASSERT_TRUE(saveTuningDb(db, path).isOk());
  for (auto &entry : fs::directory_iterator(fs::path(path).parent_path()))
    EXPECT_EQ(entry.path().filename(), "tuning.json"); // no temp file left behind

  auto back = loadTuningDb(path);
  ASSERT_TRUE(back.isOk()) << back.status().message();
  EXPECT_EQ(tuningDbToJson(*back), tuningDbToJson(db));
  const TuningEntry &t = back->devices.at("cuda|sm_90|H100").kernels.at("bucket_apply(D=16,N=2,OFF=1,R=4)");
  EXPECT_EQ(t.launch.block[0], 128);
  EXPECT_EQ(t.launch.grid[0], "cdiv(B,16)");
  EXPECT_EQ(t.launch.tile_n, 32);
  EXPECT_EQ(back->devices.at("cpu|x86_64|2-thread CPU").kernels.at("adam()").threads, 1);
  EXPECT_NE(readFile(path)->find("\"speedup\": 4.0"), std::string::npos);
}

TEST(TuningDb, RejectsOtherJson) {
  EXPECT_FALSE(parseTuningDb("{\"bucket_apply()\": {}}").isOk()); // the compiler's flat form
  EXPECT_FALSE(parseTuningDb("[1, 2").isOk());
  EXPECT_FALSE(parseTuningDb("{\"format\": \"molt-tuning/1\", \"devices\": {\"x\": {}}}").isOk());
}

TEST(TuningDb, DefaultPathFollowsTheEnvironment) {
  const char *saved = config::raw("MOLT_TUNING_DB");
  std::string keep = saved ? saved : "";
  setenv("MOLT_TUNING_DB", "/some/where.json", 1);
  EXPECT_EQ(defaultTuningDbPath(), "/some/where.json");
  setenv("MOLT_TUNING_DB", "off", 1);
  EXPECT_EQ(defaultTuningDbPath(), "");
  if (saved)
    setenv("MOLT_TUNING_DB", keep.c_str(), 1);
  else
    unsetenv("MOLT_TUNING_DB");
}

/// Runs one train_step of tiny-molt from fixed params and inputs; returns the new params.
/// `threads` > 0 sets every kernel's thread count through the public API, as molt-tune does.
TensorMap stepOnce(const Plan &plan, int threads = 0) {
  auto exec = (*createBackend("cpu"))->prepare(plan, "", 32);
  EXPECT_TRUE(exec.isOk());
  if (threads > 0)
    for (const KernelDesc &k : plan.kernels)
      EXPECT_TRUE((*exec)->setKernelThreads(k.name, threads).isOk());
  EXPECT_TRUE(writeTensors(**exec, initParams(plan, 3)).isOk());
  std::mt19937 rng(5);
  std::normal_distribution<float> normal;
  std::vector<float> x(size_t(32 * plan.model.d_model)), y(x.size());
  for (float &v : x)
    v = normal(rng);
  for (float &v : y)
    v = normal(rng);
  EXPECT_TRUE((*exec)->write("x", x.data(), x.size() * 4).isOk());
  EXPECT_TRUE((*exec)->write("y", y.data(), y.size() * 4).isOk());
  auto scalars = stepScalars(Schedule{}, 10, 9, 32);
  EXPECT_TRUE((*exec)->write("scalars", scalars.data(), sizeof scalars).isOk());
  EXPECT_TRUE((*exec)->run("train_step").isOk());
  return *readTensors(**exec);
}

TEST(TuningDb, CpuExecutorRunsTunedThreadCountsToTheSameResult) {
  Plan plan = tinyPlan();
  const char *saved = config::raw("MOLT_TUNING_DB");
  std::string keep = saved ? saved : "";
  setenv("MOLT_TUNING_DB", "off", 1);
  TensorMap heuristic = stepOnce(plan);

  // Every kernel at one thread; then a malformed database, which must only cost speed.
  TuningDb db;
  const std::string cpuName = (*createBackend("cpu"))->deviceName();
  DeviceTuning &d = db.devices[tuningDeviceKey("cpu", hostArch(), cpuName)];
  d.kind = "cpu", d.name = cpuName, d.arch = hostArch();
  for (const KernelDesc &k : plan.kernels)
    d.kernels[kernelSignature(k)].threads = 1;
  const std::string path = tempPath("threads.json");
  ASSERT_TRUE(saveTuningDb(db, path).isOk());
  setenv("MOLT_TUNING_DB", path.c_str(), 1);
  TensorMap tuned = stepOnce(plan);
  ASSERT_TRUE(writeFileAtomic(path, "{not json").isOk());
  TensorMap broken = stepOnce(plan);
  setenv("MOLT_TUNING_DB", "off", 1);
  TensorMap set = stepOnce(plan, 1); // the same counts, set by hand
  if (saved)
    setenv("MOLT_TUNING_DB", keep.c_str(), 1);
  else
    unsetenv("MOLT_TUNING_DB");

  ASSERT_EQ(tuned.size(), heuristic.size());
  for (const auto &[name, values] : heuristic) {
    ASSERT_EQ(tuned[name].size(), values.size()) << name;
    for (size_t i = 0; i < values.size(); ++i) {
      // Thread counts regroup sums (parallel.h), so float rounding may differ, nothing more.
      EXPECT_NEAR(tuned[name][i], values[i], 1e-5 + 1e-5 * std::abs(values[i])) << name << i;
      EXPECT_EQ(broken[name][i], values[i]) << name << i;
      EXPECT_EQ(set[name][i], tuned[name][i]) << name << i;
    }
  }
}

TEST(KernelCandidates, CpuThreadCountsArePrunedByWork) {
  Plan plan = tinyPlan();
  for (const KernelDesc &k : plan.kernels) {
    auto small = tune::candidates(k, "cpu", 4, plan.model.d_model, 8);
    ASSERT_FALSE(small.empty());
    EXPECT_EQ(small.front().threads, 0); // the heuristic always competes
    // Four tokens give no kernel a parallel region's worth of work per thread.
    for (const auto &c : small)
      EXPECT_LE(c.threads, 1) << k.name;
  }
  KernelDesc big;
  big.op = "encode_gate";
  big.attrs = {{"D", int64_t(768)}, {"T", int64_t(3000)}};
  auto many = tune::candidates(big, "cpu", 4096, 768, 8);
  ASSERT_EQ(many.size(), 5u); // heuristic, 1, 2, 4, 8
  EXPECT_EQ(many.back().threads, 8);
  auto odd = tune::candidates(big, "cpu", 4096, 768, 6);
  EXPECT_EQ(odd.back().threads, 6); // a thread count that is not a power of two is tried too
}

TEST(KernelCandidates, CudaLaunchesStayInTheTemplatesLegalSet) {
  Plan plan = tinyPlan();
  for (const KernelDesc &k : plan.kernels) {
    auto cands = tune::candidates(k, "cuda", 1024, plan.model.d_model, 1);
    ASSERT_FALSE(cands.empty());
    LaunchConfig heuristic = cudaDefaultLaunch(k);
    EXPECT_EQ(cands.front().launch.grid[0], heuristic.grid[0]);
    for (const auto &c : cands) {
      const int threads = c.launch.block[0] * c.launch.block[1] * c.launch.block[2];
      // kernels/cuda/README.md: 256 threads, or 128 for the tile kernels (threads % 16 == 0).
      EXPECT_TRUE(threads == 256 || (threads == 128 && heuristic.tile_m > 0)) << k.name;
      EXPECT_FALSE(c.launch.grid[0].empty());
      KernelDesc withLaunch = k;
      withLaunch.entry = "molt_" + k.name;
      withLaunch.launch = c.launch;
      EXPECT_TRUE(cudaWrapperSource(withLaunch).isOk()) << k.name << " " << c.label;
    }
  }
}

TEST(RankCandidates, EqualBudgetAndLegalRanks) {
  tune::RankSet ref{"ref", {32, 16, 8, 4}, {2, 4, 8, 16}};
  auto cands = tune::rankCandidates(ref, 64);
  ASSERT_GE(cands.size(), 6u);
  EXPECT_EQ(cands.front().name, "reference");
  EXPECT_EQ(cands.front().counts, ref.counts);
  bool uniform8 = false;
  for (const auto &c : cands) {
    EXPECT_EQ(c.featureEquivalents(), 256) << c.name;
    ASSERT_EQ(c.ranks.size(), c.counts.size());
    for (size_t i = 0; i < c.ranks.size(); ++i) {
      EXPECT_GE(c.ranks[i], 1);
      EXPECT_LE(c.ranks[i], 64);
      EXPECT_GE(c.counts[i], 1) << c.name;
    }
    uniform8 |= c.name == "uniform-r8" && c.counts == std::vector<int64_t>{32};
  }
  EXPECT_TRUE(uniform8);
  EXPECT_EQ(cands.front().scheduleAttr(), "#molt.schedule<ranks = [32, 16, 8, 4], counts = [2, 4, 8, 16]>");
}

TEST(RankCandidates, RankOneIsNotHalvedToZero) {
  // ranks-half of (4, 2, 1) would hold a rank-0 bucket: it is dropped, not divided by.
  tune::RankSet ref{"ref", {4, 2, 1}, {1, 2, 4}};
  auto cands = tune::rankCandidates(ref, 8);
  ASSERT_GT(cands.size(), 3u);
  for (const auto &c : cands) {
    EXPECT_EQ(c.featureEquivalents(), 12) << c.name;
    EXPECT_NE(c.name, "ranks-half");
    for (int64_t r : c.ranks)
      EXPECT_GE(r, 1) << c.name;
  }
}

TEST(RankCandidates, NmseInterpolatesInLogL0) {
  // Endpoints are exact; the geometric mean of the L0s is halfway in NMSE.
  EXPECT_DOUBLE_EQ(tune::nmseAtL0(4, 0.2, 16, 0.1, 4), 0.2);
  EXPECT_DOUBLE_EQ(tune::nmseAtL0(4, 0.2, 16, 0.1, 16), 0.1);
  EXPECT_NEAR(tune::nmseAtL0(4, 0.2, 16, 0.1, 8), 0.15, 1e-12);
  // Extrapolation stops one span out: L0 0.25 (two spans below 4) reads as L0 1.
  EXPECT_NEAR(tune::nmseAtL0(4, 0.2, 16, 0.1, 0.25), 0.3, 1e-12);
  EXPECT_DOUBLE_EQ(tune::nmseAtL0(5, 0.2, 5, 0.3, 9), 0.2); // no span: the first run
  // Two runs where the lower L0 fitted better (a short run at a larger λ can): the trend is
  // not extrapolated, below them the lower-L0 run's NMSE stands...
  EXPECT_DOUBLE_EQ(tune::nmseAtL0(3.6, 0.14, 2.4, 0.12, 1.5), 0.12);
  EXPECT_NEAR(tune::nmseAtL0(3.6, 0.14, 2.4, 0.12, 3.0), 0.12 + 0.02 * std::log(1.25) / std::log(1.5),
              1e-12); // (between them it is still interpolated)
  // ...and above them, the higher-L0 run's.
  EXPECT_DOUBLE_EQ(tune::nmseAtL0(2, 0.1, 4, 0.2, 8), 0.2);
  EXPECT_NEAR(tune::nmseAtL0(2, 0.3, 4, 0.2, 8), 0.1, 1e-12); // the usual trend extrapolates
}

} // namespace
} // namespace molt
