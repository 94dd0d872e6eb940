// The host SIMT emulator itself (kernels/cuda/emu/simt.h): intrinsics, barriers, atomics, TF32 mma, and its fault reports.
//
// Small kernels with known answers, built through the same module path the cuda-emu backend
// uses. The kernel comparisons against the CPU oracle live in test_cuda_kernels.cpp.
#include <gtest/gtest.h>

#include <cfloat>
#include <cmath>
#include <cstdlib>
#include <cstring>
#include <filesystem>
#include <random>
#include <set>

#include "molt/config.h"
#include "molt/cuda.h"

#ifdef MOLT_HAVE_CUDA
#include "emu/emu_module.h"

namespace molt {
namespace {

const char *const kProbeSource = R"(
#include "molt_kernels/common.cuh"

// p[0]: int out[grid][64][10]; p[1]: unsigned counter.
extern "C" __global__ void probe(molt::k::Args a) {
  __shared__ int smem[64];
  __shared__ int scratch[32];
  const int t = threadIdx.x, lane = t & 31;
  int *o = static_cast<int *>(a.p[0]) + (blockIdx.x * 64 + t) * 10;
  o[0] = __shfl_sync(0xffffffffu, t * 10, 31 - lane);
  o[1] = __shfl_up_sync(0xffffffffu, t, 3);
  o[2] = __shfl_down_sync(0xffffffffu, t, 5);
  o[3] = __shfl_xor_sync(0xffffffffu, t, 1);
  const unsigned ballot = __ballot_sync(0xffffffffu, lane % 3 == 0);
  o[4] = int(ballot);
  o[5] = __popc(ballot) * 100 + __ffs(ballot & ~1u);
  smem[t] = t * t;
  __syncthreads();
  o[6] = smem[63 - t]; // written by another warp: only right after a real barrier
  o[7] = int(molt::k::warpSum(float(t)));
  int total = 0;
  o[8] = molt::k::blockExclusiveScan<64>(t, scratch, total) * 10000 + total;
  o[9] = int(atomicAdd(static_cast<unsigned *>(a.p[1]), 1u));
}

// p[0]: float in[n]; p[1]: unsigned out[n] (the tf32 bit patterns); B = n.
extern "C" __global__ void to_tf32(molt::k::Args a) {
  for (long long i = threadIdx.x; i < a.B; i += blockDim.x)
    static_cast<unsigned *>(a.p[1])[i] = molt::k::toTf32(static_cast<const float *>(a.p[0])[i]);
}

// One warp: D[16][8] = A^T B over K = 8 on the TF32 path; p[0] = A [8][16] (k-major),
// p[1] = B [8][8], p[2] = D [16][8].
extern "C" __global__ void mma16x8(molt::k::Args a) {
  molt::k::MmaTileAcc<16, 8, 32> acc;
  acc.zero();
  acc.mma<8, 16, 8>(static_cast<const float *>(a.p[0]), static_cast<const float *>(a.p[1]));
  float *d = static_cast<float *>(a.p[2]);
  for (int i = 0; i < acc.IM; ++i)
    for (int j = 0; j < acc.IN; ++j)
      d[acc.row(i) * 8 + acc.col(j)] = acc.c[i][j];
}

// Block 0 waits for a ticket block 1 bumps: fine on a GPU, a deadlock one block at a time.
extern "C" __global__ void waits_on_later_block(molt::k::Args a) {
  unsigned *c = static_cast<unsigned *>(a.p[1]);
  if (blockIdx.x == 1) {
    if (threadIdx.x == 0)
      atomicAdd(c, 1u);
    return;
  }
  molt::k::waitCount(c, 1u);
}

// Thread 0 waits in a shuffle for lanes that wait at a barrier for thread 0.
extern "C" __global__ void barrier_deadlock(molt::k::Args) {
  if (threadIdx.x == 0)
    (void)__shfl_sync(0xffffffffu, 1, 0);
  else
    __syncthreads();
}

// Thread 5 of block 1 writes through p[0] (null): the GPU's illegal address.
extern "C" __global__ void faults(molt::k::Args a) {
  if (blockIdx.x == 1 && threadIdx.x == 5)
    static_cast<volatile int *>(a.p[0])[3] = 1;
}

// Thread 1 reads what thread 2 writes with no barrier in between: a race that only some
// resume orders ($MOLT_EMU_SCHEDULE) show. Four threads; p[0]: int out.
extern "C" __global__ void racy(molt::k::Args a) {
  __shared__ int cell;
  if (threadIdx.x == 0)
    cell = 0;
  __syncthreads();
  if (threadIdx.x == 2)
    cell = 7;
  if (threadIdx.x == 1)
    *static_cast<int *>(a.p[0]) = cell;
}

// Half a warp shuffles while the other half votes.
extern "C" __global__ void diverges(molt::k::Args) {
  if ((threadIdx.x & 31) < 16)
    (void)__shfl_sync(0xffffffffu, 1, 0);
  else
    (void)__ballot_sync(0xffffffffu, 1);
}
)";

class CudaEmu : public testing::Test {
protected:
  static void SetUpTestSuite() {
    auto headers = cuda::loadKernelHeaders(std::string(MOLT_SOURCE_DIR) + "/kernels/cuda");
    ASSERT_TRUE(headers.isOk()) << headers.status().message();
    const std::vector<emu::KernelSource> kernels = {
        {kProbeSource,
         {"probe", "to_tf32", "mma16x8", "waits_on_later_block", "barrier_deadlock", "diverges",
          "faults", "racy"}}};
    // The shared cache ($MOLT_CACHE_DIR): ctest runs each test in its own process.
    auto m = emu::buildModule(kernels, *headers);
    ASSERT_TRUE(m.isOk()) << m.status().message();
    module = *m;
  }
  static void TearDownTestSuite() { module.reset(); }

  static Status launch(const char *entry, unsigned grid, unsigned block, k::Args &args) {
    const unsigned g[3] = {grid, 1, 1}, b[3] = {block, 1, 1};
    return module->launch(entry, g, b, args);
  }

  static inline std::shared_ptr<emu::Module> module;
};

TEST_F(CudaEmu, WarpIntrinsicsBarriersScansAndAtomicsGiveTheCudaResults) {
  ASSERT_TRUE(module);
  constexpr int kGrid = 3, kBlock = 64;
  std::vector<int> out(kGrid * kBlock * 10, -1);
  unsigned counter = 0;
  k::Args args{};
  args.p[0] = out.data();
  args.p[1] = &counter;
  Status s = launch("probe", kGrid, kBlock, args);
  ASSERT_TRUE(s.isOk()) << s.message();
  EXPECT_EQ(counter, unsigned(kGrid * kBlock));
  unsigned ballot = 0;
  for (int l = 0; l < 32; l += 3)
    ballot |= 1u << l;
  std::set<int> tickets;
  for (int b = 0; b < kGrid; ++b)
    for (int t = 0; t < kBlock; ++t) {
      SCOPED_TRACE("block " + std::to_string(b) + " thread " + std::to_string(t));
      const int *o = &out[size_t((b * kBlock + t) * 10)];
      const int lane = t & 31, warp0 = t & ~31;
      EXPECT_EQ(o[0], (warp0 + 31 - lane) * 10);
      EXPECT_EQ(o[1], lane >= 3 ? t - 3 : t);
      EXPECT_EQ(o[2], lane + 5 < 32 ? t + 5 : t);
      EXPECT_EQ(o[3], t ^ 1);
      EXPECT_EQ(unsigned(o[4]), ballot);
      EXPECT_EQ(o[5], 11 * 100 + 4); // 11 lanes vote; the lowest past lane 0 is lane 3
      EXPECT_EQ(o[6], (63 - t) * (63 - t));
      EXPECT_EQ(o[7], 32 * warp0 + 31 * 32 / 2);
      EXPECT_EQ(o[8], t * (t - 1) / 2 * 10000 + 63 * 64 / 2);
      tickets.insert(o[9]);
    }
  EXPECT_EQ(tickets.size(), size_t(kGrid * kBlock)); // every ticket taken exactly once
  EXPECT_EQ(*tickets.begin(), 0);
  EXPECT_EQ(*tickets.rbegin(), kGrid * kBlock - 1);
}

float bitsToFloat(unsigned u) {
  float f;
  std::memcpy(&f, &u, 4);
  return f;
}
unsigned floatToBits(float f) {
  unsigned u;
  std::memcpy(&u, &f, 4);
  return u;
}

/// cvt.rna.tf32.f32 by the PTX ISA's words, in double arithmetic: the nearest value with a
/// 10-bit mantissa, ties away from zero.
float tf32Reference(float v) {
  if (std::isnan(v) || std::isinf(v) || v == 0.f)
    return v;
  int e = 0;
  std::frexp(double(v), &e); // |v| in [2^(e-1), 2^e)
  const double ulp = std::ldexp(1.0, std::max(e - 1, -126) - 10);
  const double q = std::fabs(double(v)) / ulp, r = std::floor(q) + (q - std::floor(q) >= 0.5 ? 1 : 0);
  return float(std::copysign(r * ulp, double(v)));
}

TEST_F(CudaEmu, Tf32ConversionRoundsToNearestWithTiesAwayFromZero) {
  ASSERT_TRUE(module);
  std::vector<float> in = {1.f + 0x1p-11f,  -(1.f + 0x1p-11f), 1.f + 0x1p-12f, 1.f + 3 * 0x1p-11f,
                           FLT_MAX,         0x1p-140f,         -0.f,           INFINITY,
                           1.f - 0x1p-24f,  3.14159265f};
  std::mt19937 rng(3);
  std::normal_distribution<float> normal(0.f, 10.f);
  for (int i = 0; i < 200; ++i)
    in.push_back(normal(rng));
  std::vector<unsigned> out(in.size());
  k::Args args{};
  args.p[0] = in.data();
  args.p[1] = out.data();
  args.B = (long long)in.size();
  Status s = launch("to_tf32", 1, 64, args);
  ASSERT_TRUE(s.isOk()) << s.message();
  EXPECT_EQ(bitsToFloat(out[0]), 1.f + 0x1p-10f) << "a tie rounds away from zero, not to even";
  EXPECT_EQ(bitsToFloat(out[1]), -(1.f + 0x1p-10f));
  EXPECT_EQ(bitsToFloat(out[2]), 1.f);
  EXPECT_EQ(bitsToFloat(out[3]), 1.f + 0x1p-9f);
  EXPECT_EQ(bitsToFloat(out[4]), INFINITY) << "FLT_MAX rounds up past the largest tf32";
  for (size_t i = 0; i < in.size(); ++i) {
    EXPECT_EQ(out[i] & 0x1fffu, 0u) << i;
    EXPECT_EQ(out[i], floatToBits(tf32Reference(in[i]))) << "input " << in[i];
  }
  std::vector<float> nan = {NAN};
  unsigned nanOut = 0;
  args.p[0] = nan.data();
  args.p[1] = &nanOut;
  args.B = 1;
  ASSERT_TRUE(launch("to_tf32", 1, 32, args).isOk());
  EXPECT_TRUE(std::isnan(bitsToFloat(nanOut)));
}

TEST_F(CudaEmu, Tf32MmaFragmentsComputeTheMatrixProductOfRoundedOperands) {
  ASSERT_TRUE(module);
  std::mt19937 rng(7);
  std::uniform_real_distribution<float> u(-2.f, 2.f);
  std::vector<float> A(8 * 16), B(8 * 8), D(16 * 8, NAN);
  for (float &v : A)
    v = u(rng);
  for (float &v : B)
    v = u(rng);
  k::Args args{};
  args.p[0] = A.data();
  args.p[1] = B.data();
  args.p[2] = D.data();
  Status s = launch("mma16x8", 1, 32, args);
  ASSERT_TRUE(s.isOk()) << s.message();
  double worstRounded = 0, worstExact = 0;
  for (int m = 0; m < 16; ++m)
    for (int n = 0; n < 8; ++n) {
      double rounded = 0, exact = 0;
      for (int k = 0; k < 8; ++k) {
        rounded += double(tf32Reference(A[k * 16 + m])) * double(tf32Reference(B[k * 8 + n]));
        exact += double(A[k * 16 + m]) * double(B[k * 8 + n]);
      }
      worstRounded = std::max(worstRounded, std::fabs(D[m * 8 + n] - rounded));
      worstExact = std::max(worstExact, std::fabs(D[m * 8 + n] - exact));
    }
  EXPECT_LT(worstRounded, 1e-5) << "D must be the product of the tf32-rounded A and B";
  EXPECT_GT(worstExact, 1e-4) << "the operands were not rounded to tf32";
}

TEST_F(CudaEmu, ASpinOnALaterBlockIsReportedNotHung) {
  ASSERT_TRUE(module);
  unsigned counter = 0;
  k::Args args{};
  args.p[1] = &counter;
  Status s = launch("waits_on_later_block", 2, 64, args);
  ASSERT_FALSE(s.isOk());
  EXPECT_NE(s.message().find("spin-wait made no progress"), std::string::npos) << s.message();
  EXPECT_NE(s.message().find("block (0,0,0)"), std::string::npos) << s.message();
}

TEST_F(CudaEmu, ABarrierDeadlockIsReported) {
  ASSERT_TRUE(module);
  k::Args args{};
  Status s = launch("barrier_deadlock", 1, 64, args);
  ASSERT_FALSE(s.isOk());
  EXPECT_NE(s.message().find("deadlock: 63 thread(s) wait at __syncthreads, 1 in warp collectives"),
            std::string::npos)
      << s.message();
}

TEST_F(CudaEmu, LanesInDifferentCollectivesAreReportedAsDivergence) {
  ASSERT_TRUE(module);
  k::Args args{};
  Status s = launch("diverges", 1, 32, args);
  ASSERT_FALSE(s.isOk());
  // Which half arrives first depends on $MOLT_EMU_SCHEDULE; the report names both collectives.
  EXPECT_NE(s.message().find("warp divergence: lane "), std::string::npos) << s.message();
  EXPECT_NE(s.message().find("__ballot_sync"), std::string::npos) << s.message();
  EXPECT_NE(s.message().find("__shfl_sync"), std::string::npos) << s.message();
}

TEST_F(CudaEmu, AnInvalidAddressFailsTheLaunchNamingTheThreadAndTheModuleStaysUsable) {
  ASSERT_TRUE(module);
  k::Args args{};
  Status s = launch("faults", 2, 64, args);
  ASSERT_FALSE(s.isOk());
  EXPECT_NE(s.message().find("block (1,0,0) thread (5,0,0): invalid memory access at"),
            std::string::npos)
      << s.message();
  std::vector<int> out(64 * 10);
  unsigned counter = 0;
  args.p[0] = out.data();
  args.p[1] = &counter;
  s = launch("probe", 1, 64, args);
  EXPECT_TRUE(s.isOk()) << s.message();
  EXPECT_EQ(counter, 64u);
}

/// Sets $MOLT_EMU_SCHEDULE for one scope.
struct ScheduleEnv {
  std::string old;
  bool had;
  explicit ScheduleEnv(const char *value) {
    const char *o = molt::config::raw("MOLT_EMU_SCHEDULE");
    had = o != nullptr;
    old = o ? o : "";
    setenv("MOLT_EMU_SCHEDULE", value, 1);
  }
  ~ScheduleEnv() {
    if (had)
      setenv("MOLT_EMU_SCHEDULE", old.c_str(), 1);
    else
      unsetenv("MOLT_EMU_SCHEDULE");
  }
};

TEST_F(CudaEmu, TheResumeOrderExposesAMissingBarrier) {
  ASSERT_TRUE(module);
  int seen[2] = {-1, -1};
  for (int i = 0; i < 2; ++i) {
    ScheduleEnv env(i == 0 ? "forward" : "reverse");
    k::Args args{};
    args.p[0] = &seen[i];
    Status s = launch("racy", 1, 4, args);
    ASSERT_TRUE(s.isOk()) << s.message();
  }
  EXPECT_EQ(seen[0], 0) << "forward: thread 1 reads before thread 2 writes";
  EXPECT_EQ(seen[1], 7) << "reverse: thread 2 writes first";
  ScheduleEnv bad("sideways");
  k::Args args{};
  args.p[0] = &seen[0];
  Status s = launch("racy", 1, 4, args);
  EXPECT_NE(s.message().find("MOLT_EMU_SCHEDULE=sideways"), std::string::npos) << s.message();
}

TEST_F(CudaEmu, UnknownEntriesAndOversizedBlocksAreErrorsNotCrashes) {
  ASSERT_TRUE(module);
  k::Args args{};
  EXPECT_EQ(launch("no_such_kernel", 1, 32, args).code(), Code::NotFound);
  EXPECT_FALSE(launch("probe", 1, 2048, args).isOk());
}

const std::vector<emu::KernelSource> kNop = {
    {"#include \"molt_kernels/common.cuh\"\nextern \"C\" __global__ void nop(molt::k::Args) {}\n",
     {"nop"}}};

TEST(CudaEmuModule, ASecondBuildOfTheSameSourcesIsACacheHit) {
  auto headers = cuda::loadKernelHeaders(std::string(MOLT_SOURCE_DIR) + "/kernels/cuda");
  ASSERT_TRUE(headers.isOk()) << headers.status().message();
  const std::string dir = testing::TempDir() + "/molt_emu_cache";
  std::filesystem::remove_all(dir);
  auto first = emu::buildModule(kNop, *headers, dir);
  ASSERT_TRUE(first.isOk()) << first.status().message();
  EXPECT_FALSE((*first)->cacheHit());
  auto second = emu::buildModule(kNop, *headers, dir);
  ASSERT_TRUE(second.isOk()) << second.status().message();
  EXPECT_TRUE((*second)->cacheHit());
  EXPECT_EQ((*first)->path(), (*second)->path());
}

// A bundle carries its own abi.cuh; one whose Args layout differs from the runtime's (an older
// molt's) must be refused at load, not run with garbage pointers.
TEST(CudaEmuModule, KernelsBuiltAgainstAnotherAbiAreRefused) {
  auto headers = cuda::loadKernelHeaders(std::string(MOLT_SOURCE_DIR) + "/kernels/cuda");
  ASSERT_TRUE(headers.isOk()) << headers.status().message();
  std::string &abi = (*headers)["molt_kernels/abi.cuh"];
  const size_t at = abi.find("struct Args {");
  ASSERT_NE(at, std::string::npos);
  abi.insert(at + std::strlen("struct Args {"), "\n  long long addedByAnotherVersion;");
  auto m = emu::buildModule(kNop, *headers);
  ASSERT_FALSE(m.isOk());
  EXPECT_NE(m.status().message().find("built against another molt_kernels/abi.cuh"),
            std::string::npos)
      << m.status().message();
}

} // namespace
} // namespace molt

#endif // MOLT_HAVE_CUDA
