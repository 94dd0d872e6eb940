// The NVRTC disk cache under damage (every header byte flipped, random image damage, truncation,
// junk), a cache that cannot be written, and two processes filling one cache at once.
#include <gtest/gtest.h>

#include <sys/wait.h>
#include <unistd.h>

#include <filesystem>
#include <fstream>
#include <iterator>
#include <random>

#include "molt/cuda.h"

#ifdef MOLT_HAVE_CUDA

namespace {

namespace fs = std::filesystem;

// Small self-contained kernels: NVRTC builds them quickly, so many damage trials stay cheap.
std::string source(int i) {
  return "extern \"C\" __global__ void k" + std::to_string(i) +
         "(float *x) { x[threadIdx.x] += " + std::to_string(i) + ".0f; }\n";
}

std::string slurp(const fs::path &p) {
  std::ifstream in(p, std::ios::binary);
  return std::string((std::istreambuf_iterator<char>(in)), std::istreambuf_iterator<char>());
}
void spit(const fs::path &p, const std::string &bytes) {
  std::ofstream(p, std::ios::binary | std::ios::trunc) << bytes;
}

class ReliabilityKernelCache : public testing::Test {
protected:
  void SetUp() override {
    if (!molt::cuda::nvrtcVersion().isOk())
      GTEST_SKIP() << "no NVRTC";
    dir_ = fs::path(testing::TempDir()) / ("molt-cache-rel-" + std::to_string(getpid()));
    fs::remove_all(dir_);
  }
  void TearDown() override { fs::remove_all(dir_); }
  molt::StatusOr<molt::cuda::CompiledImage> compile(int i, const fs::path &dir) {
    return molt::cuda::compileCached(source(i), "k.cu", {}, "sm_80", {}, dir.string());
  }
  fs::path onlyEntry() {
    std::vector<fs::path> entries;
    for (const auto &e : fs::directory_iterator(dir_))
      entries.push_back(e.path());
    EXPECT_EQ(entries.size(), 1u) << "temp files left, or a second entry";
    return entries.empty() ? fs::path() : entries[0];
  }
  // Puts `damaged` in place of the entry and checks it is not served: rebuilt, identical to the
  // clean image, and repaired (the next call hits). Returns false when the damage was served.
  bool detectedAndRepaired(const fs::path &entry, const std::string &damaged,
                           const molt::cuda::CompiledImage &clean) {
    spit(entry, damaged);
    auto again = compile(0, dir_);
    EXPECT_TRUE(again.isOk());
    if (!again.isOk() || again->cacheHit)
      return false;
    EXPECT_EQ(again->image, clean.image);
    EXPECT_EQ(again->cubin, clean.cubin);
    auto hit = compile(0, dir_);
    EXPECT_TRUE(hit.isOk() && hit->cacheHit && hit->image == clean.image);
    return true;
  }
  fs::path dir_;
};

TEST_F(ReliabilityKernelCache, EveryHeaderByteFlipIsDetected) {
  auto clean = compile(0, dir_);
  ASSERT_TRUE(clean.isOk()) << clean.status().message();
  const fs::path entry = onlyEntry();
  const std::string good = slurp(entry);
  const size_t header = good.find('\n') + 1;
  for (size_t i = 0; i < header; ++i) {
    std::string bad = good;
    bad[i] = char(bad[i] ^ 0x01); // '0'<->'1', 'b'<->'c', ' '<->'!': the smallest edits
    EXPECT_TRUE(detectedAndRepaired(entry, bad, *clean)) << "byte " << i << " of the header";
  }
}

TEST_F(ReliabilityKernelCache, RandomDamageIsDetected) {
  auto clean = compile(0, dir_);
  ASSERT_TRUE(clean.isOk()) << clean.status().message();
  const fs::path entry = onlyEntry();
  const std::string good = slurp(entry);
  std::mt19937_64 gen(2024);
  int trials = 0;
  for (int t = 0; t < 24; ++t, ++trials) {
    std::string bad = good;
    switch (t % 4) {
    case 0: // a flipped bit anywhere in the image
      bad[good.find('\n') + 1 + gen() % (good.size() - good.find('\n') - 1)] ^= char(1 << (gen() % 8));
      break;
    case 1: // torn write: a prefix
      bad.resize(gen() % good.size());
      break;
    case 2: // trailing junk
      bad += std::string(1 + gen() % 64, char(gen()));
      break;
    case 3: // an image-sized block of junk
      for (char &c : bad)
        c = char(gen());
      break;
    }
    EXPECT_TRUE(detectedAndRepaired(entry, bad, *clean)) << "trial " << t;
  }
  EXPECT_EQ(trials, 24);
}

TEST_F(ReliabilityKernelCache, AnUnwritableCacheOnlyCostsTime) {
  fs::create_directories(dir_);
  spit(dir_ / "not-a-directory", "x"); // cache "directory" is a file: nothing can be written
  auto a = compile(1, dir_ / "not-a-directory");
  ASSERT_TRUE(a.isOk()) << a.status().message();
  auto b = compile(1, dir_ / "not-a-directory");
  ASSERT_TRUE(b.isOk());
  EXPECT_FALSE(b->cacheHit);
  EXPECT_EQ(a->image, b->image);
}

// Two processes (fork) compile the same kernels into one empty cache, in opposite orders, over
// several rounds; both succeed, agree, and the cache ends with one valid entry per kernel.
TEST_F(ReliabilityKernelCache, TwoProcessesShareOneCache) {
  const int kernels = 3, rounds = 3;
  for (int round = 0; round < rounds; ++round) {
    fs::remove_all(dir_);
    pid_t pids[2];
    for (int p = 0; p < 2; ++p) {
      pids[p] = fork();
      ASSERT_GE(pids[p], 0);
      if (pids[p] == 0) {
        int bad = 0;
        for (int k = 0; k < kernels; ++k) {
          auto r = compile(p == 0 ? k : kernels - 1 - k, dir_);
          bad += !r.isOk() || r->image.empty();
        }
        _exit(bad);
      }
    }
    for (pid_t pid : pids) {
      int status = 0;
      ASSERT_EQ(waitpid(pid, &status, 0), pid);
      EXPECT_TRUE(WIFEXITED(status) && WEXITSTATUS(status) == 0) << "round " << round;
    }
    int entries = 0;
    for (const auto &e : fs::directory_iterator(dir_)) {
      EXPECT_EQ(e.path().extension(), ".bin") << "temp file left: " << e.path();
      ++entries;
    }
    EXPECT_EQ(entries, kernels);
    for (int k = 0; k < kernels; ++k) {
      auto r = compile(k, dir_);
      ASSERT_TRUE(r.isOk());
      EXPECT_TRUE(r->cacheHit) << "kernel " << k << ", round " << round;
    }
  }
}

} // namespace

#endif // MOLT_HAVE_CUDA
