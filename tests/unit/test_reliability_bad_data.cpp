// Bad activation data end to end (runTraining, as molt-train runs it): NaN/Inf rows, all-zero
// shards, extreme magnitudes, a d mismatch, wrong dtypes. docs/reliability.md lists each behaviour.
#include <gtest/gtest.h>

#include <cmath>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <iterator>
#include <limits>
#include <random>

#include "molt/data.h"
#include "molt/run.h"
#include "molt/safetensors.h"
#include "tiny_run.h"

namespace {

namespace fs = std::filesystem;
constexpr int64_t kD = 8; // the tiny-molt fixture's d_model

std::string freshDir(const std::string &name) { return freshTestDir("molt_bad_data", name); }

// n rows of a fixed linear map y = W x with seeded Gaussian x (scale `scale`), then `edit`
// applied to the two arrays: each test breaks the data its own way.
template <typename Edit>
void writeData(const std::string &path, int64_t n, float scale, Edit edit, int64_t d = kD) {
  std::mt19937_64 gen(11);
  std::normal_distribution<float> normal(0.0f, 1.0f);
  std::vector<float> w(size_t(d * d)), x(size_t(n * d)), y(size_t(n * d), 0.0f);
  for (float &v : w)
    v = normal(gen) / std::sqrt(float(d));
  for (float &v : x)
    v = scale * normal(gen);
  for (int64_t r = 0; r < n; ++r)
    for (int64_t i = 0; i < d; ++i)
      for (int64_t j = 0; j < d; ++j)
        y[size_t(r * d + i)] += w[size_t(i * d + j)] * x[size_t(r * d + j)];
  edit(x, y);
  ASSERT_TRUE(molt::writeSafetensors(path, {molt::f32Tensor("x", {n, d}, x),
                                            molt::f32Tensor("y", {n, d}, y)})
                  .isOk());
}
void writeData(const std::string &path, int64_t n, float scale) {
  writeData(path, n, scale, [](std::vector<float> &, std::vector<float> &) {});
}

molt::TrainOptions options(const std::string &data, const std::string &out) {
  return tinyRunOptions(data, out);
}

// Every float of RUN/weights.safetensors is finite (and there is at least one).
void expectFiniteWeights(const std::string &run) {
  auto file = molt::SafetensorsFile::open(run + "/weights.safetensors");
  ASSERT_TRUE(file.isOk()) << file.status().message();
  size_t values = 0;
  for (const molt::TensorView &t : (*file)->tensors()) {
    if (!molt::isFloatDtype(t.dtype))
      continue;
    std::vector<float> v(size_t(t.numel()));
    molt::toF32(t, 0, t.numel(), v.data());
    for (float f : v)
      ASSERT_TRUE(std::isfinite(f)) << t.name << " holds a non-finite weight";
    values += v.size();
  }
  EXPECT_GT(values, 0u);
}

TEST(ReliabilityBadData, NanAndInfRowsAreSkippedAndTrainingStaysFinite) {
  std::string dir = freshDir("nan");
  const float nan = std::numeric_limits<float>::quiet_NaN();
  const float inf = std::numeric_limits<float>::infinity();
  writeData(dir + "/data.safetensors", 256, 1.0f, [&](std::vector<float> &x, std::vector<float> &y) {
    for (int64_t r = 0; r < 256; r += 7) // every 7th row broken, in x or y, NaN or ±Inf
      (r % 2 ? x : y)[size_t(r * kD + r % kD)] = r % 3 == 0 ? nan : (r % 3 == 1 ? inf : -inf);
  });
  auto data = molt::ShardSet::open(dir + "/data.safetensors", kD);
  ASSERT_TRUE(data.isOk());
  molt::BatchStream s(**data, 1, 64, true, false);
  std::vector<float> x(256 * kD), y(256 * kD);
  auto got = s.next(256, x.data(), y.data());
  ASSERT_TRUE(got.isOk());
  EXPECT_EQ(*got, 256 - 37); // rows 0, 7, ..., 252
  EXPECT_EQ(s.skippedRows(), 37);
  for (int64_t i = 0; i < *got * kD; ++i)
    ASSERT_TRUE(std::isfinite(x[size_t(i)]) && std::isfinite(y[size_t(i)]));

  ASSERT_TRUE(molt::runTraining(options(dir + "/data.safetensors", dir + "/run")).isOk());
  expectFiniteWeights(dir + "/run");
}

TEST(ReliabilityBadData, DataWithNoFiniteRowIsAnErrorNotAHang) {
  std::string dir = freshDir("allnan");
  writeData(dir + "/data.safetensors", 64, 1.0f, [](std::vector<float> &x, std::vector<float> &) {
    for (int64_t r = 0; r < 64; ++r)
      x[size_t(r * kD)] = std::numeric_limits<float>::quiet_NaN();
  });
  molt::Status st = molt::runTraining(options(dir + "/data.safetensors", dir + "/run"));
  ASSERT_FALSE(st.isOk());
  EXPECT_NE(st.message().find("no finite rows"), std::string::npos) << st.message();
  EXPECT_EQ(st.message().find('\n'), std::string::npos) << "one line";
  EXPECT_FALSE(fs::exists(dir + "/run/checkpoint.safetensors"));
}

TEST(ReliabilityBadData, AllZeroShardsKeepScaleOneAndTrainToFiniteWeights) {
  std::string dir = freshDir("zero");
  writeData(dir + "/zero.safetensors", 128, 0.0f);
  auto data = molt::ShardSet::open(dir + "/zero.safetensors", kD);
  ASSERT_TRUE(data.isOk());
  molt::Normalization norm = molt::computeNormalization(**data);
  EXPECT_EQ(norm.x_scale, 1.0f); // no norm to match: left alone rather than divided by zero
  EXPECT_EQ(norm.y_scale, 1.0f);
  ASSERT_TRUE(molt::runTraining(options(dir + "/zero.safetensors", dir + "/run")).isOk());
  expectFiniteWeights(dir + "/run");

  // An all-zero shard beside a normal one: rows count as zero-norm rows, nothing breaks.
  fs::create_directories(dir + "/mixed");
  writeData(dir + "/mixed/a.safetensors", 64, 0.0f);
  writeData(dir + "/mixed/b.safetensors", 64, 1.0f);
  ASSERT_TRUE(molt::runTraining(options(dir + "/mixed", dir + "/run-mixed")).isOk());
  expectFiniteWeights(dir + "/run-mixed");
}

// Activations far from 1 in either direction: the normalisation brings them to mean norm √d,
// so training sees the same problem at every scale. Checked against a float64 reference.
TEST(ReliabilityBadData, ExtremeMagnitudesNormaliseToFiniteScales) {
  for (float scale : {1e-30f, 1e-20f, 1e20f, 1e35f}) {
    std::string dir = freshDir("scale");
    writeData(dir + "/data.safetensors", 128, scale);
    auto data = molt::ShardSet::open(dir + "/data.safetensors", kD);
    ASSERT_TRUE(data.isOk());
    molt::Normalization norm = molt::computeNormalization(**data);
    ASSERT_TRUE(std::isfinite(norm.x_scale) && norm.x_scale > 0) << scale;
    ASSERT_TRUE(std::isfinite(norm.y_scale) && norm.y_scale > 0) << scale;
    std::vector<float> x(128 * kD), y(128 * kD);
    (*data)->readRows(0, 0, 128, x.data(), y.data());
    double sum = 0;
    for (int64_t r = 0; r < 128; ++r) {
      double n2 = 0;
      for (int64_t j = 0; j < kD; ++j)
        n2 += double(x[size_t(r * kD + j)]) * x[size_t(r * kD + j)];
      sum += std::sqrt(n2);
    }
    EXPECT_NEAR(double(norm.x_scale) * sum / 128, std::sqrt(double(kD)), 1e-5 * std::sqrt(kD))
        << scale;
    ASSERT_TRUE(molt::runTraining(options(dir + "/data.safetensors", dir + "/run")).isOk())
        << scale;
    expectFiniteWeights(dir + "/run");
  }
}

// Values so small that √d over their mean norm overflows a float (denormal activations).
TEST(ReliabilityBadData, DenormalActivationsDoNotGiveAnInfiniteScale) {
  std::string dir = freshDir("denormal");
  writeData(dir + "/data.safetensors", 64, 1e-41f);
  auto data = molt::ShardSet::open(dir + "/data.safetensors", kD);
  ASSERT_TRUE(data.isOk());
  molt::Normalization norm = molt::computeNormalization(**data);
  EXPECT_EQ(norm.x_scale, 1.0f) << "treated like all-zero data, not scaled by Inf";
  EXPECT_EQ(norm.y_scale, 1.0f);
  ASSERT_TRUE(molt::runTraining(options(dir + "/data.safetensors", dir + "/run")).isOk());
  expectFiniteWeights(dir + "/run");
}

// One row of ~3e37 amid unit-scale rows: finite, so it is served, and it sits in the
// normalisation prefix, whose mean norm it dominates (the other rows shrink towards zero). No
// step may overflow into the weights: a non-finite loss or gradient skips its step instead.
TEST(ReliabilityBadData, AnExtremeOutlierRowLeavesTheWeightsFinite) {
  std::string dir = freshDir("outlier");
  writeData(dir + "/data.safetensors", 256, 1.0f, [](std::vector<float> &x, std::vector<float> &y) {
    for (int64_t j = 0; j < kD; ++j) {
      x[size_t(100 * kD + j)] = 3e37f;
      y[size_t(100 * kD + j)] = -3e37f;
    }
  });
  ASSERT_TRUE(molt::runTraining(options(dir + "/data.safetensors", dir + "/run")).isOk());
  expectFiniteWeights(dir + "/run");
}

TEST(ReliabilityBadData, WidthMismatchIsOneLineAndLeavesTheCheckpoint) {
  std::string dir = freshDir("width");
  writeData(dir + "/d8.safetensors", 64, 1.0f);
  writeData(dir + "/d16.safetensors", 64, 1.0f, [](auto &, auto &) {}, 16);
  molt::Status st = molt::runTraining(options(dir + "/d16.safetensors", dir + "/fresh"));
  ASSERT_FALSE(st.isOk());
  EXPECT_NE(st.message().find("width 16"), std::string::npos) << st.message();
  EXPECT_EQ(st.message().find('\n'), std::string::npos);
  EXPECT_FALSE(fs::exists(dir + "/fresh/checkpoint.safetensors"));

  // A resume pointed at data of another width leaves the run exactly as it was.
  molt::TrainOptions o = options(dir + "/d8.safetensors", dir + "/run");
  o.steps = 10;
  o.scheduleSteps = 20;
  ASSERT_TRUE(molt::runTraining(o).isOk());
  std::ifstream before(dir + "/run/checkpoint.safetensors", std::ios::binary);
  std::string bytes((std::istreambuf_iterator<char>(before)), std::istreambuf_iterator<char>());
  o.data = dir + "/d16.safetensors";
  o.steps = 20;
  o.resume = true;
  EXPECT_FALSE(molt::runTraining(o).isOk());
  std::ifstream after(dir + "/run/checkpoint.safetensors", std::ios::binary);
  EXPECT_EQ(bytes, std::string((std::istreambuf_iterator<char>(after)),
                               std::istreambuf_iterator<char>()));

  // Shards of a directory that disagree on d: the odd one is named.
  fs::create_directories(dir + "/mixed");
  fs::copy_file(dir + "/d8.safetensors", dir + "/mixed/a.safetensors");
  fs::copy_file(dir + "/d16.safetensors", dir + "/mixed/b.safetensors");
  auto mixed = molt::ShardSet::open(dir + "/mixed", 0);
  ASSERT_FALSE(mixed.isOk());
  EXPECT_NE(mixed.status().message().find("b.safetensors"), std::string::npos);
}

TEST(ReliabilityBadData, WrongDtypesAreRejectedByName) {
  std::string dir = freshDir("dtype");
  for (const char *dtype : {"I32", "F64", "I64", "U8", "BOOL"}) {
    size_t size = molt::dtypeSize(dtype);
    molt::TensorData x{"x", dtype, {16, kD}, std::string(size_t(16 * kD) * (size ? size : 1), '\0')};
    molt::TensorData y = molt::f32Tensor("y", {16, kD}, std::vector<float>(16 * kD, 1.0f));
    std::string path = dir + "/" + dtype + ".safetensors";
    ASSERT_TRUE(molt::writeSafetensors(path, {x, y}).isOk()) << dtype;
    molt::Status st = molt::runTraining(options(path, dir + "/run-" + dtype));
    ASSERT_FALSE(st.isOk()) << dtype;
    EXPECT_NE(st.message().find(std::string("unsupported dtype ") + dtype), std::string::npos)
        << st.message();
  }
  // F16 and BF16 are accepted and train like F32.
  for (const char *dtype : {"F16", "BF16"}) {
    molt::TensorData x{"x", dtype, {32, kD}, {}}, y{"y", dtype, {32, kD}, {}};
    const uint16_t quarter = std::string(dtype) == "F16" ? 0x3400 : 0x3E80; // 0.25
    for (molt::TensorData *t : {&x, &y})
      for (int i = 0; i < 32 * kD; ++i)
        t->bytes.append(reinterpret_cast<const char *>(&quarter), 2);
    std::string path = dir + "/" + dtype + ".safetensors";
    ASSERT_TRUE(molt::writeSafetensors(path, {x, y}).isOk());
    ASSERT_TRUE(molt::runTraining(options(path, dir + std::string("/ok-") + dtype)).isOk())
        << dtype;
    expectFiniteWeights(dir + std::string("/ok-") + dtype);
  }
}

} // namespace

namespace {

// A row that is finite on disk but overflows once normalised (it lies outside the prefix the
// scale came from) is dropped and counted like a NaN row: the stream serves finite rows only.
TEST(ReliabilityBadData, RowsThatOverflowWhenNormalisedAreSkipped) {
  std::string dir = freshDir("overflow");
  writeData(dir + "/data.safetensors", 64, 1e-6f, [](std::vector<float> &x, std::vector<float> &) {
    x[size_t(10 * kD + 3)] = 1e12f; // x 1e30 below: Inf
  });
  auto data = molt::ShardSet::open(dir + "/data.safetensors", kD);
  ASSERT_TRUE(data.isOk());
  molt::Normalization norm;
  norm.x_scale = 1e30f;
  molt::BatchStream s(**data, 1, 64, false, false, norm);
  std::vector<float> x(64 * kD), y(64 * kD);
  auto got = s.next(64, x.data(), y.data());
  ASSERT_TRUE(got.isOk());
  EXPECT_EQ(*got, 63);
  EXPECT_EQ(s.skippedRows(), 1);
  for (int64_t i = 0; i < *got * kD; ++i)
    ASSERT_TRUE(std::isfinite(x[size_t(i)]) && std::isfinite(y[size_t(i)])) << i;
}

} // namespace
