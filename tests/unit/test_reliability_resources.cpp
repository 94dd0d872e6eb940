// Resource faults say what to change (docs/reliability.md): an allocation that fails for lack of
// memory names the tensor and suggests a smaller batch; a data shard that turns unreadable
// during a run stops it with the shard's name and leaves the last checkpoint loadable.
#include <gtest/gtest.h>

#include <chrono>
#include <filesystem>
#include <random>
#include <thread>

#include "executor_base.h"
#include "molt/checkpoint.h"
#include "molt/io.h"
#include "molt/run.h"
#include "molt/safetensors.h"
#include "tiny_run.h"

namespace molt {
namespace {

namespace fs = std::filesystem;

// An executor whose device runs out of memory on one tensor (as cuMemAlloc reports it).
class OutOfMemoryExecutor final : public ExecutorBase {
public:
  OutOfMemoryExecutor(Plan plan, int64_t batch, std::string failOn)
      : ExecutorBase(std::move(plan), batch), failOn_(std::move(failOn)) {}

protected:
  Status allocate(const BufferInfo &info) override {
    return info.name == failOn_ ? internalError("cuMemAlloc(&p, bytes): out of memory")
                                : Status::ok();
  }
  Status writeBytes(const BufferInfo &, const void *) override { return Status::ok(); }
  Status readBytes(const BufferInfo &, void *) override { return Status::ok(); }
  Status zeroBytes(const BufferInfo &) override { return Status::ok(); }
  Status launch(const KernelDesc &, const Invocation &) override { return Status::ok(); }

private:
  std::string failOn_;
};

TEST(ReliabilityResources, OutOfMemoryNamesTheTensorAndSuggestsABatch) {
  StatusOr<Plan> plan = loadPlan(std::string(MOLT_SOURCE_DIR) + "/tests/fixtures/tiny-molt");
  ASSERT_TRUE(plan.isOk());
  OutOfMemoryExecutor exec(*plan, 4096, "pre");
  Status st = exec.initialize();
  ASSERT_FALSE(st.isOk());
  const std::string &m = st.message();
  EXPECT_NE(m.find("allocating 'pre' [4096,"), std::string::npos) << m;
  EXPECT_NE(m.find("out of memory"), std::string::npos) << m;
  EXPECT_NE(m.find("try a smaller batch (e.g. --batch 2048)"), std::string::npos) << m;
  EXPECT_EQ(m.find('\n'), std::string::npos);
  // Another failure names the tensor but suggests nothing it would not help.
  class Refusing final : public ExecutorBase {
  public:
    using ExecutorBase::ExecutorBase;

  protected:
    Status allocate(const BufferInfo &) override { return invalidArgument("no such device"); }
    Status writeBytes(const BufferInfo &, const void *) override { return Status::ok(); }
    Status readBytes(const BufferInfo &, void *) override { return Status::ok(); }
    Status zeroBytes(const BufferInfo &) override { return Status::ok(); }
    Status launch(const KernelDesc &, const Invocation &) override { return Status::ok(); }
  } refusing(*plan, 16);
  st = refusing.initialize();
  ASSERT_FALSE(st.isOk());
  EXPECT_EQ(st.code(), Code::InvalidArgument);
  EXPECT_NE(st.message().find("allocating '"), std::string::npos);
  EXPECT_EQ(st.message().find("--batch"), std::string::npos) << st.message();
}

void writeShard(const std::string &path, int64_t n, uint64_t seed) {
  std::mt19937_64 gen(seed);
  std::normal_distribution<float> normal(0.0f, 1.0f);
  std::vector<float> x(size_t(n * 8)), y(size_t(n * 8));
  for (size_t i = 0; i < x.size(); ++i) {
    x[i] = normal(gen);
    y[i] = 0.5f * x[i] + 0.1f * normal(gen);
  }
  ASSERT_TRUE(writeSafetensors(path, {f32Tensor("x", {n, 8}, x), f32Tensor("y", {n, 8}, y)}).isOk());
}

TEST(ReliabilityResources, AShardThatChangesMidRunStopsTheRunNamingItAndKeepsTheCheckpoint) {
  const std::string dir = testing::TempDir() + "/molt_resources/shard";
  fs::remove_all(dir);
  fs::create_directories(dir + "/data");
  writeShard(dir + "/data/a.safetensors", 256, 1);
  writeShard(dir + "/data/b.safetensors", 256, 2);
  TrainOptions o = tinyRunOptions(dir + "/data", dir + "/run");
  o.steps = 20000; // ~600 epochs of 32 steps: the stream re-reads both shards every epoch
  const std::string ckpt = o.out + "/checkpoint.safetensors";
  // Once the first checkpoint exists, shard b is replaced by a shorter file (a rename, so the
  // run's mapping of the old file stays valid: the check, not a SIGBUS, must stop it).
  std::thread saboteur([&] {
    const auto deadline = std::chrono::steady_clock::now() + std::chrono::seconds(120);
    while (!fs::exists(ckpt) && std::chrono::steady_clock::now() < deadline)
      std::this_thread::sleep_for(std::chrono::milliseconds(1));
    writeShard(dir + "/b-short.safetensors", 100, 3);
    fs::rename(dir + "/b-short.safetensors", dir + "/data/b.safetensors");
  });
  Status st = runTraining(o);
  saboteur.join();
  ASSERT_FALSE(st.isOk()) << "the run finished on a changed shard";
  EXPECT_EQ(st.code(), Code::Io);
  EXPECT_NE(st.message().find(dir + "/data/b.safetensors"), std::string::npos) << st.message();
  EXPECT_NE(st.message().find("became unreadable"), std::string::npos) << st.message();
  EXPECT_EQ(st.message().find('\n'), std::string::npos);
  StatusOr<Plan> plan = loadPlan(o.out + "/bundle");
  ASSERT_TRUE(plan.isOk());
  StatusOr<Checkpoint> ck = loadCheckpoint(ckpt, *plan);
  ASSERT_TRUE(ck.isOk()) << ck.status().message();
  EXPECT_GE(ck->state.step, 10);
  EXPECT_LT(ck->state.step, o.steps);
  EXPECT_FALSE(fs::exists(o.out + "/weights.safetensors"));
}

} // namespace
} // namespace molt
