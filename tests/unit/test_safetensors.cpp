// The safetensors reader and writer: round trips, half-precision conversion, and one test per
// kind of corrupt file (each a one-line error, never a crash).
#include <gtest/gtest.h>

#include <cmath>
#include <cstring>
#include <filesystem>
#include <nlohmann/json.hpp>

#include "molt/io.h"
#include "molt/safetensors.h"

namespace {

std::string tempPath(const std::string &name) {
  std::string dir = testing::TempDir() + "/molt_safetensors";
  std::filesystem::create_directories(dir);
  return dir + "/" + name;
}

// A file with a hand-written header, so the corrupt cases are exactly what they say.
std::string rawFile(const std::string &header, const std::string &data) {
  std::string out(8, '\0');
  uint64_t n = header.size();
  std::memcpy(&out[0], &n, 8); // little-endian host (x86_64, aarch64)
  return out + header + data;
}

molt::Status openStatus(const std::string &bytes) {
  std::string p = tempPath("case.safetensors");
  EXPECT_TRUE(molt::writeFileAtomic(p, bytes).isOk());
  auto f = molt::SafetensorsFile::open(p);
  return f.isOk() ? molt::Status::ok() : f.status();
}

TEST(Safetensors, RoundTripsTensorsAndMetadata) {
  std::vector<float> a = {1.5f, -2.0f, 3.25f, 0.0f, 1e-20f, -7.0f};
  std::vector<int64_t> b = {42, -1, int64_t(1) << 40};
  std::string p = tempPath("rt.safetensors");
  ASSERT_TRUE(molt::writeSafetensors(p, {molt::f32Tensor("a", {2, 3}, a),
                                         molt::i64Tensor("b", {3}, b)},
                                     {{"step", "17"}, {"kind", "test"}})
                  .isOk());
  auto f = molt::SafetensorsFile::open(p);
  ASSERT_TRUE(f.isOk()) << f.status().message();
  EXPECT_EQ((*f)->metadata().at("step"), "17");
  EXPECT_EQ((*f)->tensors().size(), 2u);
  auto back = (*f)->readF32("a", {2, 3});
  ASSERT_TRUE(back.isOk());
  EXPECT_EQ(*back, a);
  const molt::TensorView *tb = (*f)->find("b");
  ASSERT_NE(tb, nullptr);
  EXPECT_EQ(tb->dtype, "I64");
  std::vector<int64_t> got(3);
  std::memcpy(got.data(), tb->data, 24);
  EXPECT_EQ(got, b);
  EXPECT_EQ(reinterpret_cast<uintptr_t>((*f)->find("a")->data) % 8, 0u) << "data not aligned";
  EXPECT_FALSE((*f)->readF32("a", {3, 2}).isOk()) << "wrong shape must be refused";
  EXPECT_FALSE((*f)->readF32("b", {3}).isOk()) << "integer tensor is not a float tensor";
  EXPECT_EQ((*f)->readF32("zz", {1}).status().code(), molt::Code::NotFound);
}

TEST(Safetensors, ConvertsHalfAndBfloat16) {
  // Bit patterns with known values: 1, -2, 65504 (max half), 2^-24 (smallest subnormal), +inf.
  uint16_t half[] = {0x3C00, 0xC000, 0x7BFF, 0x0001, 0x7C00};
  // bf16: 1, -2, 3.140625, 2^-133 (subnormal float).
  uint16_t bf[] = {0x3F80, 0xC000, 0x4049, 0x0001};
  molt::TensorData h{"h", "F16", {5}, std::string(reinterpret_cast<char *>(half), 10)};
  molt::TensorData g{"g", "BF16", {4}, std::string(reinterpret_cast<char *>(bf), 8)};
  std::string p = tempPath("half.safetensors");
  ASSERT_TRUE(molt::writeSafetensors(p, {h, g}).isOk());
  auto f = molt::SafetensorsFile::open(p);
  ASSERT_TRUE(f.isOk()) << f.status().message();
  auto hv = (*f)->readF32("h", {5});
  ASSERT_TRUE(hv.isOk());
  EXPECT_EQ((*hv)[0], 1.0f);
  EXPECT_EQ((*hv)[1], -2.0f);
  EXPECT_EQ((*hv)[2], 65504.0f);
  EXPECT_EQ((*hv)[3], std::ldexp(1.0f, -24));
  EXPECT_TRUE(std::isinf((*hv)[4]));
  auto gv = (*f)->readF32("g", {4});
  ASSERT_TRUE(gv.isOk());
  EXPECT_EQ((*gv)[0], 1.0f);
  EXPECT_EQ((*gv)[1], -2.0f);
  EXPECT_EQ((*gv)[2], 3.140625f);
  EXPECT_EQ((*gv)[3], std::ldexp(1.0f, -133));
}

TEST(Safetensors, EveryHalfValueMatchesTheDefinition) {
  for (uint32_t bits = 0; bits < 0x10000; ++bits) {
    uint16_t h = uint16_t(bits);
    int e = (h >> 10) & 0x1f, m = h & 0x3ff;
    if (e == 31)
      continue;
    double expect = e == 0 ? std::ldexp(double(m), -24) : std::ldexp(double(m | 0x400), e - 25);
    if (h & 0x8000)
      expect = -expect;
    molt::TensorView t;
    t.dtype = "F16";
    t.data = reinterpret_cast<const uint8_t *>(&h);
    float got;
    molt::toF32(t, 0, 1, &got);
    ASSERT_EQ(double(got), expect) << "bits " << std::hex << bits;
  }
}

TEST(Safetensors, RejectsCorruptFiles) {
  struct Case {
    const char *what;
    std::string bytes;
    molt::Code code;
    const char *expect;
  };
  const std::string tensor8 = R"({"t":{"dtype":"F32","shape":[2],"data_offsets":[0,8]}})";
  std::string huge(8, '\xff');
  std::vector<Case> cases = {
      {"too short", "abc", molt::Code::DataLoss, "truncated"},
      {"header beyond the file", huge + "{}", molt::Code::DataLoss, "header length"},
      {"truncated data", rawFile(tensor8, std::string(4, '\0')), molt::Code::DataLoss,
       "outside the 4 data bytes"},
      {"not JSON", rawFile("{\"t\":", ""), molt::Code::DataLoss, "not a JSON object"},
      {"unknown dtype",
       rawFile(R"({"t":{"dtype":"F33","shape":[2],"data_offsets":[0,8]}})", std::string(8, 0)),
       molt::Code::InvalidArgument, "unknown dtype"},
      {"bytes do not match the shape",
       rawFile(R"({"t":{"dtype":"F32","shape":[3],"data_offsets":[0,8]}})", std::string(8, 0)),
       molt::Code::DataLoss, "8 bytes for shape [3]"},
      {"overlap",
       rawFile(R"({"a":{"dtype":"F32","shape":[2],"data_offsets":[0,8]},)"
               R"("b":{"dtype":"F32","shape":[1],"data_offsets":[4,8]}})",
               std::string(8, 0)),
       molt::Code::DataLoss, "overlap"},
      {"gap",
       rawFile(R"({"a":{"dtype":"F32","shape":[1],"data_offsets":[4,8]}})", std::string(8, 0)),
       molt::Code::DataLoss, "gap"},
      {"trailing bytes", rawFile(tensor8, std::string(12, 0)), molt::Code::DataLoss,
       "trailing"},
      {"negative dim",
       rawFile(R"({"t":{"dtype":"F32","shape":[-2],"data_offsets":[0,8]}})", std::string(8, 0)),
       molt::Code::DataLoss, "bad dimension"},
      {"metadata not strings",
       rawFile(R"({"__metadata__":{"step":3},"t":{"dtype":"F32","shape":[2],"data_offsets":[0,8]}})",
               std::string(8, 0)),
       molt::Code::DataLoss, "__metadata__.step"},
      {"missing offsets", rawFile(R"({"t":{"dtype":"F32","shape":[2]}})", std::string(8, 0)),
       molt::Code::DataLoss, "lacks"},
  };
  for (const Case &c : cases) {
    molt::Status st = openStatus(c.bytes);
    ASSERT_FALSE(st.isOk()) << c.what;
    EXPECT_EQ(st.code(), c.code) << c.what << ": " << st.message();
    EXPECT_NE(st.message().find(c.expect), std::string::npos) << c.what << ": " << st.message();
    EXPECT_EQ(st.message().find('\n'), std::string::npos) << c.what;
  }
  EXPECT_EQ(molt::SafetensorsFile::open("/nonexistent.safetensors").status().code(),
            molt::Code::NotFound);
}

TEST(Safetensors, AcceptsAnEmptyFileOfTensors) {
  auto st = openStatus(rawFile("{}", ""));
  EXPECT_TRUE(st.isOk()) << st.message();
}

} // namespace
