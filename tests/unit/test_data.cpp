// Activation shards: validation of every bad input, streaming order, the shuffle window
// (each row once per epoch), exact resume from a cursor, NaN rows, normalisation.
#include <gtest/gtest.h>

#include <algorithm>
#include <cstring>
#include <cmath>
#include <filesystem>
#include <limits>

#include "molt/data.h"
#include "molt/safetensors.h"

namespace {

namespace fs = std::filesystem;

std::string freshDir(const std::string &name) {
  std::string dir = testing::TempDir() + "/molt_data/" + name;
  fs::remove_all(dir);
  fs::create_directories(dir);
  return dir;
}

// Row r of the test data has x = (first + r, 0.5, ..., 0.5) and y = 2x: rows are recognisable.
void writeShard(const std::string &path, int64_t first, int64_t n, int64_t d,
                const std::string &dtype = "F32", int64_t yRows = -1) {
  std::vector<float> x(size_t(n * d), 0.5f), y;
  for (int64_t r = 0; r < n; ++r)
    x[size_t(r * d)] = float(first + r);
  for (float v : x)
    y.push_back(2 * v);
  if (yRows >= 0)
    y.resize(size_t(yRows * d));
  molt::TensorData tx = molt::f32Tensor("x", {n, d}, x);
  molt::TensorData ty = molt::f32Tensor("y", {yRows >= 0 ? yRows : n, d}, y);
  if (dtype != "F32") { // reinterpret as another dtype of the same total size
    tx.dtype = ty.dtype = dtype;
    tx.shape[1] = ty.shape[1] = d * 4 / int64_t(molt::dtypeSize(dtype));
  }
  ASSERT_TRUE(molt::writeSafetensors(path, {tx, ty}).isOk());
}

std::vector<int64_t> drain(molt::BatchStream &s, int64_t batch, int64_t d, int64_t maxRows) {
  std::vector<float> x(size_t(batch * d)), y(size_t(batch * d));
  std::vector<int64_t> ids;
  while (int64_t(ids.size()) < maxRows) {
    auto got = s.next(batch, x.data(), y.data());
    EXPECT_TRUE(got.isOk()) << got.status().message();
    if (!got.isOk() || *got == 0)
      break;
    for (int64_t r = 0; r < *got; ++r) {
      EXPECT_EQ(y[size_t(r * d)], 2 * x[size_t(r * d)]) << "x and y rows came apart";
      ids.push_back(int64_t(x[size_t(r * d)]));
    }
  }
  return ids;
}

TEST(Data, ReadsADirectoryInNameOrder) {
  std::string dir = freshDir("order");
  writeShard(dir + "/b.safetensors", 5, 7, 4);
  writeShard(dir + "/a.safetensors", 0, 5, 4);
  auto set = molt::ShardSet::open(dir, 4);
  ASSERT_TRUE(set.isOk()) << set.status().message();
  EXPECT_EQ((*set)->rows(), 12);
  EXPECT_EQ((*set)->numShards(), 2u);
  molt::BatchStream s(**set, 1, 5, /*shuffle=*/false, /*wrap=*/false);
  std::vector<int64_t> ids = drain(s, 5, 4, 100);
  std::vector<int64_t> expect(12);
  for (int64_t i = 0; i < 12; ++i)
    expect[size_t(i)] = i;
  EXPECT_EQ(ids, expect);
}

TEST(Data, ShuffleServesEveryRowOncePerEpoch) {
  std::string dir = freshDir("shuffle");
  writeShard(dir + "/0.safetensors", 0, 50, 3);
  writeShard(dir + "/1.safetensors", 50, 31, 3);
  auto set = molt::ShardSet::open(dir, 3);
  ASSERT_TRUE(set.isOk());
  molt::BatchStream s(**set, 7, 16, /*shuffle=*/true, /*wrap=*/true);
  std::vector<int64_t> ids = drain(s, 9, 3, 81 * 2);
  ASSERT_EQ(ids.size(), 162u);
  std::vector<int64_t> e1(ids.begin(), ids.begin() + 81), e2(ids.begin() + 81, ids.end());
  EXPECT_NE(e1, e2) << "two epochs should be shuffled differently";
  std::sort(e1.begin(), e1.end());
  std::sort(e2.begin(), e2.end());
  for (int64_t i = 0; i < 81; ++i) {
    EXPECT_EQ(e1[size_t(i)], i);
    EXPECT_EQ(e2[size_t(i)], i);
  }
  std::vector<int64_t> sorted(ids.begin(), ids.begin() + 16);
  EXPECT_FALSE(std::is_sorted(sorted.begin(), sorted.end())) << "the window was not shuffled";
}

TEST(Data, ResumingFromACursorReproducesTheStream) {
  std::string dir = freshDir("resume");
  writeShard(dir + "/0.safetensors", 0, 37, 2);
  writeShard(dir + "/1.safetensors", 37, 20, 2);
  auto set = molt::ShardSet::open(dir, 2);
  ASSERT_TRUE(set.isOk());
  for (int64_t stop : {0, 1, 3, 7, 13}) { // batches before the "checkpoint"
    molt::BatchStream straight(**set, 99, 10, true, true);
    drain(straight, 6, 2, stop * 6);
    molt::DataCursor c = straight.cursor();
    std::vector<int64_t> rest = drain(straight, 6, 2, 60);
    molt::BatchStream resumed(**set, 99, 10, true, true);
    ASSERT_TRUE(resumed.seek(c).isOk());
    EXPECT_EQ(drain(resumed, 6, 2, 60), rest) << "after " << stop << " batches";
  }
  molt::BatchStream s(**set, 1, 10, true, true);
  molt::DataCursor bad;
  bad.shard = 5;
  EXPECT_FALSE(s.seek(bad).isOk());
}

TEST(Data, SkipsAndCountsRowsWithNanOrInf) {
  std::string dir = freshDir("nan");
  std::vector<float> x(6 * 2, 1.0f), y(6 * 2, 1.0f);
  for (int r = 0; r < 6; ++r)
    x[size_t(r * 2)] = float(r);
  x[3] = std::numeric_limits<float>::quiet_NaN();      // row 1
  y[8] = std::numeric_limits<float>::infinity();       // row 4
  ASSERT_TRUE(molt::writeSafetensors(dir + "/s.safetensors", {molt::f32Tensor("x", {6, 2}, x),
                                                              molt::f32Tensor("y", {6, 2}, y)})
                  .isOk());
  auto set = molt::ShardSet::open(dir, 2);
  ASSERT_TRUE(set.isOk());
  molt::BatchStream s(**set, 1, 100, false, false);
  std::vector<float> bx(20), by(20);
  auto got = s.next(10, bx.data(), by.data());
  ASSERT_TRUE(got.isOk());
  EXPECT_EQ(*got, 4);
  EXPECT_EQ(s.skippedRows(), 2);
  EXPECT_EQ(bx[0], 0.0f);
  EXPECT_EQ(bx[2], 2.0f);
  EXPECT_EQ(bx[4], 3.0f);
  EXPECT_EQ(bx[6], 5.0f);
}

TEST(Data, AllNanDataIsAnErrorNotAHang) {
  std::string dir = freshDir("allnan");
  std::vector<float> x(4, std::numeric_limits<float>::quiet_NaN()), y(4, 1.0f);
  ASSERT_TRUE(molt::writeSafetensors(dir + "/s.safetensors", {molt::f32Tensor("x", {2, 2}, x),
                                                              molt::f32Tensor("y", {2, 2}, y)})
                  .isOk());
  auto set = molt::ShardSet::open(dir, 2);
  ASSERT_TRUE(set.isOk());
  molt::BatchStream s(**set, 1, 8, true, true);
  std::vector<float> bx(8), by(8);
  auto got = s.next(4, bx.data(), by.data());
  ASSERT_FALSE(got.isOk());
  EXPECT_NE(got.status().message().find("no finite rows"), std::string::npos);
}

TEST(Data, RejectsBadShards) {
  std::string dir = freshDir("bad");
  writeShard(dir + "/wide.safetensors", 0, 4, 6);
  writeShard(dir + "/mismatch.safetensors", 0, 4, 3, "F32", /*yRows=*/3);
  writeShard(dir + "/f64.safetensors", 0, 4, 4, "F64");
  writeShard(dir + "/i32.safetensors", 0, 4, 3, "I32");
  ASSERT_TRUE(molt::writeSafetensors(dir + "/nox.safetensors",
                                     {molt::f32Tensor("y", {1, 3}, {1, 2, 3})})
                  .isOk());
  struct Case {
    const char *file;
    const char *expect;
  } cases[] = {
      {"wide.safetensors", "has width 6 but the model's d is 3"},
      {"mismatch.safetensors", "x has 4 rows but y has 3"},
      {"f64.safetensors", "unsupported dtype F64"},
      {"i32.safetensors", "unsupported dtype I32"},
      {"nox.safetensors", "needs tensors 'x' and 'y'"},
  };
  for (const Case &c : cases) {
    auto set = molt::ShardSet::open(dir + "/" + c.file, 3);
    ASSERT_FALSE(set.isOk()) << c.file;
    EXPECT_NE(set.status().message().find(c.expect), std::string::npos)
        << c.file << ": " << set.status().message();
  }
  EXPECT_EQ(molt::ShardSet::open(dir + "/missing.safetensors", 3).status().code(),
            molt::Code::NotFound);
  EXPECT_EQ(molt::ShardSet::open(freshDir("empty"), 3).status().code(), molt::Code::NotFound);
}

TEST(Data, ReadsHalfAndBfloat16Shards) {
  std::string dir = freshDir("half");
  // Values exact in both formats: k/4 for small k.
  auto encode = [](float v, bool bf16) {
    uint32_t bits;
    std::memcpy(&bits, &v, 4);
    if (bf16)
      return uint16_t(bits >> 16);
    uint32_t sign = (bits >> 16) & 0x8000, exp = (bits >> 23) & 0xff, mant = bits & 0x7fffff;
    return v == 0 ? uint16_t(sign) : uint16_t(sign | ((exp - 112) << 10) | (mant >> 13));
  };
  for (bool bf16 : {false, true}) {
    std::vector<uint16_t> x(12), y(12);
    for (int i = 0; i < 12; ++i) {
      x[size_t(i)] = encode(float(i - 6) / 4, bf16);
      y[size_t(i)] = encode(float(i) / 2, bf16);
    }
    const char *dtype = bf16 ? "BF16" : "F16";
    std::string path = dir + "/" + dtype + ".safetensors";
    ASSERT_TRUE(molt::writeSafetensors(
                    path, {{"x", dtype, {4, 3}, std::string(reinterpret_cast<char *>(x.data()), 24)},
                           {"y", dtype, {4, 3}, std::string(reinterpret_cast<char *>(y.data()), 24)}})
                    .isOk());
    auto set = molt::ShardSet::open(path, 3);
    ASSERT_TRUE(set.isOk()) << set.status().message();
    std::vector<float> bx(12), by(12);
    (*set)->readRows(0, 0, 4, bx.data(), by.data());
    for (int i = 0; i < 12; ++i) {
      EXPECT_EQ(bx[size_t(i)], float(i - 6) / 4) << dtype;
      EXPECT_EQ(by[size_t(i)], float(i) / 2) << dtype;
    }
  }
}

TEST(Data, NormalisationMakesTheMeanNormSqrtD) {
  std::string dir = freshDir("norm");
  writeShard(dir + "/s.safetensors", 1, 40, 5);
  auto set = molt::ShardSet::open(dir, 5);
  ASSERT_TRUE(set.isOk());
  molt::Normalization norm = molt::computeNormalization(**set);
  molt::BatchStream s(**set, 1, 64, false, false, norm);
  std::vector<float> x(40 * 5), y(40 * 5);
  ASSERT_EQ(*s.next(40, x.data(), y.data()), 40);
  double mx = 0, my = 0;
  for (int r = 0; r < 40; ++r) {
    double nx = 0, ny = 0;
    for (int j = 0; j < 5; ++j) {
      nx += double(x[size_t(r * 5 + j)]) * x[size_t(r * 5 + j)];
      ny += double(y[size_t(r * 5 + j)]) * y[size_t(r * 5 + j)];
    }
    mx += std::sqrt(nx) / 40;
    my += std::sqrt(ny) / 40;
  }
  EXPECT_NEAR(mx, std::sqrt(5.0), 1e-4);
  EXPECT_NEAR(my, std::sqrt(5.0), 1e-4);
  EXPECT_NEAR(norm.y_scale * 2, norm.x_scale, 1e-6) << "y = 2x, so its scale is half";
}

} // namespace
