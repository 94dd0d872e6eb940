// The bf16 precision option on the host: the one bf16 rounding (abi.cuh), the manifest field and the wrapper's Cfg::precision.
#include <gtest/gtest.h>

#include <cfloat>
#include <cmath>
#include <cstring>
#include <limits>
#include <random>

#include "kernels/cuda/abi.cuh"
#include "molt/cuda_wrapper.h"
#include "molt/io.h"
#include "molt/plan.h"
#ifdef MOLT_HAVE_CUDA
#include "molt/cuda.h"
#endif

namespace molt {
namespace {

float fromBits(unsigned u) {
  float f;
  std::memcpy(&f, &u, 4);
  return f;
}

TEST(Bf16, RoundsToNearestWithTiesToEven) {
  EXPECT_EQ(k::floatToBf16(1.0f), 0x3f80);
  EXPECT_EQ(k::floatToBf16(-2.0f), 0xc000);
  // 1 + 2^-8 lies halfway between 1 and 1 + 2^-7: ties go to the even mantissa (1).
  EXPECT_EQ(k::floatToBf16(fromBits(0x3f808000u)), 0x3f80);
  // 1 + 3 * 2^-8 lies halfway between 1 + 2^-7 (odd) and 1 + 2^-6 (even).
  EXPECT_EQ(k::floatToBf16(fromBits(0x3f818000u)), 0x3f82);
  // Just above / below the halfway point.
  EXPECT_EQ(k::floatToBf16(fromBits(0x3f808001u)), 0x3f81);
  EXPECT_EQ(k::floatToBf16(fromBits(0x3f807fffu)), 0x3f80);
  // A carry out of the mantissa bumps the exponent.
  EXPECT_EQ(k::floatToBf16(fromBits(0x3fffffffu)), 0x4000);
}

TEST(Bf16, KeepsSpecialValues) {
  EXPECT_EQ(k::floatToBf16(std::numeric_limits<float>::infinity()), 0x7f80);
  EXPECT_EQ(k::floatToBf16(-std::numeric_limits<float>::infinity()), 0xff80);
  EXPECT_EQ(k::floatToBf16(FLT_MAX), 0x7f80); // rounds past the largest bf16
  EXPECT_EQ(k::floatToBf16(-0.0f), 0x8000);
  // A NaN whose payload sits only in the low 16 bits must not become Inf.
  const unsigned short nan = k::floatToBf16(fromBits(0x7f800001u));
  EXPECT_TRUE(std::isnan(k::bf16ToFloat(nan)));
  EXPECT_TRUE(std::isnan(k::bf16ToFloat(k::floatToBf16(std::nanf("")))));
  // Subnormals round like any other value.
  EXPECT_EQ(k::floatToBf16(fromBits(0x00008000u)), 0x0000);
  EXPECT_EQ(k::floatToBf16(fromBits(0x00018000u)), 0x0002);
}

TEST(Bf16, RoundTripsExactlyAndErrsAtMostHalfAnUlp) {
  for (unsigned h = 0; h < 0x10000u; ++h) {
    const float f = k::bf16ToFloat((unsigned short)h);
    if (!std::isnan(f))
      ASSERT_EQ(k::floatToBf16(f), h) << std::hex << h;
  }
  std::mt19937 rng(7);
  std::normal_distribution<float> normal(0.f, 3.f);
  for (int i = 0; i < 100000; ++i) {
    const float f = normal(rng);
    const float r = k::bf16ToFloat(k::floatToBf16(f));
    // Half a bf16 ulp: 2^(e-8) for f in [2^e, 2^(e+1)), so at most |f| 2^-8.
    ASSERT_LE(std::fabs(r - f), std::ldexp(std::fabs(f), -8)) << f;
  }
}

std::string fixtureManifest() {
  auto text = readFile(std::string(MOLT_SOURCE_DIR) + "/tests/fixtures/tiny-molt/manifest.json");
  EXPECT_TRUE(text.isOk());
  return text ? *text : "";
}

TEST(Precision, ManifestRecordsBf16AndRejectsOthers) {
  auto f32 = parsePlan(fixtureManifest());
  ASSERT_TRUE(f32.isOk()) << f32.status().message();
  EXPECT_EQ(f32->precision, "f32");
  // The default stays implicit, so fp32 bundles read and write as they always have.
  EXPECT_EQ(planToJson(*f32).find("\"precision\""), std::string::npos);

  Plan bf16 = *f32;
  bf16.precision = "bf16";
  const std::string text = planToJson(bf16);
  EXPECT_NE(text.find("\"precision\": \"bf16\""), std::string::npos);
  auto back = parsePlan(text);
  ASSERT_TRUE(back.isOk()) << back.status().message();
  EXPECT_EQ(back->precision, "bf16");

  std::string f16 = text;
  f16.replace(f16.find("\"bf16\""), 6, "\"f16\"");
  auto bad = parsePlan(f16);
  ASSERT_FALSE(bad.isOk());
  EXPECT_NE(bad.status().message().find("manifest.precision"), std::string::npos)
      << bad.status().message();
}

TEST(Precision, WrapperCarriesItAsCfgPrecision) {
  KernelDesc k;
  k.name = "apply_0";
  k.op = "bucket_apply";
  k.entry = "molt_apply_0";
  k.attrs = {{"D", int64_t(64)}, {"R", int64_t(32)}, {"N", int64_t(2)}, {"OFF", int64_t(0)}};
  k.launch = cudaDefaultLaunch(k);
  auto f32 = cudaWrapperSource(k);
  ASSERT_TRUE(f32.isOk());
  EXPECT_EQ(f32->find("precision"), std::string::npos);
  auto bf16 = cudaWrapperSource(k, "bf16");
  ASSERT_TRUE(bf16.isOk());
  EXPECT_NE(bf16->find("static constexpr int precision = molt::k::kPrecisionBf16;"),
            std::string::npos)
      << *bf16;
  EXPECT_FALSE(cudaWrapperSource(k, "f16").isOk());
}

#ifdef MOLT_HAVE_CUDA
/// Through NVRTC (no GPU): every tile kernel of a bf16 wrapper at the reference shapes reaches
/// the bf16 tensor cores, and its fp32 twin has no mma at all.
TEST(Precision, Bf16TileKernelsCompileToTheBf16TensorCoreMma) {
  if (auto v = cuda::nvrtcVersion(); !v)
    GTEST_SKIP() << v.status().message();
  auto headers = cuda::loadKernelHeaders(MOLT_SOURCE_DIR "/kernels/cuda");
  ASSERT_TRUE(headers.isOk()) << headers.status().message();
  const int64_t D = 768;
  auto bucket = [&](const char *op, int64_t r) {
    KernelDesc k;
    k.name = k.op = op;
    k.entry = std::string("molt_") + op;
    k.attrs = {{"D", D}, {"R", r}, {"N", int64_t(16)}, {"OFF", int64_t(0)}};
    return k;
  };
  KernelDesc skip;
  skip.name = skip.op = "skip_apply";
  skip.entry = "molt_skip_apply";
  skip.attrs = {{"D", D}};
  for (KernelDesc k : {bucket("bucket_apply", 32), bucket("bucket_apply_bwd", 512),
                       bucket("frob_norm", 64), bucket("frob_norm_bwd", 128), skip}) {
    k.launch = cudaDefaultLaunch(k);
    for (const char *precision : {"f32", "bf16"}) {
      auto src = cudaWrapperSource(k, precision);
      ASSERT_TRUE(src.isOk());
      auto ptx = cuda::compileSource(*src, k.name + ".cu", {}, "compute_80", false, *headers);
      ASSERT_TRUE(ptx.isOk()) << k.name << " " << precision << ": " << ptx.status().message();
      const bool bf16Mma = ptx->find("mma.sync.aligned.m16n8k16.row.col.f32.bf16.bf16.f32") !=
                           std::string::npos;
      EXPECT_EQ(bf16Mma, std::string(precision) == "bf16") << k.name << " " << precision;
      if (std::string(precision) == "f32")
        EXPECT_EQ(ptx->find("mma.sync"), std::string::npos) << k.name;
    }
  }
}
#endif

} // namespace
} // namespace molt
