// The synthetic teacher generator: its teacher file is in the DESIGN.md §3 format and
// reproduces the shards' y from x; the linear baseline behaves as least squares must.
#include <gtest/gtest.h>

#include <cmath>
#include <filesystem>

#include "molt/data.h"
#include "molt/synth.h"
#include "molt/teacher.h"

namespace {

molt::SynthOptions small(const std::string &name) {
  molt::SynthOptions o;
  o.out = testing::TempDir() + "/molt_synth/" + name;
  std::filesystem::remove_all(o.out);
  o.d = 16;
  o.hidden = 48;
  o.clusters = 40;
  o.trainRows = 3000;
  o.valRows = 1000;
  o.shardRows = 1200;
  return o;
}

TEST(Synth, TeacherFileReproducesTheShards) {
  molt::SynthOptions o = small("teacher");
  auto r = molt::synthesize(o);
  ASSERT_TRUE(r.isOk()) << r.status().message();
  auto teacher = molt::loadTeacher(o.out + "/teacher.safetensors");
  ASSERT_TRUE(teacher.isOk()) << teacher.status().message();
  EXPECT_EQ(teacher->d, 16);
  EXPECT_EQ(teacher->h, 48);
  EXPECT_EQ(teacher->activation, molt::Activation::Gelu);
  auto set = molt::ShardSet::open(o.out + "/train", 16);
  ASSERT_TRUE(set.isOk()) << set.status().message();
  EXPECT_EQ((*set)->rows(), 3000);
  EXPECT_EQ((*set)->numShards(), 3u);
  std::vector<float> x(16), y(16);
  std::vector<double> xd(16), yd(16);
  double mean[16] = {};
  for (int64_t r = 0; r < 1200; ++r) {
    (*set)->readRows(1, r, 1, x.data(), y.data());
    for (int j = 0; j < 16; ++j)
      xd[size_t(j)] = x[size_t(j)];
    molt::teacherForward(*teacher, xd.data(), yd.data());
    for (int j = 0; j < 16; ++j) {
      // The teacher's weights were rounded to f32 when written, the shards' x and y too.
      ASSERT_NEAR(yd[size_t(j)], y[size_t(j)], 2e-5 * (1 + std::fabs(yd[size_t(j)])));
      mean[j] += y[size_t(j)] / 1200;
    }
  }
  for (double m : mean)
    EXPECT_LT(std::fabs(m), 0.25) << "the teacher's output should be roughly centred";
}

TEST(Synth, LinearBaselineIsLeastSquares) {
  molt::SynthOptions o = small("linear");
  auto r = molt::synthesize(o);
  ASSERT_TRUE(r.isOk());
  EXPECT_GT(r->linearNmseTrain, 0.01) << "clustered GELU data should not be linear";
  EXPECT_LT(r->linearNmseTrain, 1.0);
  // The fitted map is optimal on train, so held-out data fits it a little worse.
  EXPECT_LT(r->linearNmseTrain, r->linearNmseVal * 1.05);
  // One tight cluster: the teacher is locally linear there and a linear map explains it.
  o = small("local");
  o.clusters = 1;
  o.noise = 0.01;
  auto local = molt::synthesize(o);
  ASSERT_TRUE(local.isOk());
  EXPECT_LT(local->linearNmseVal, 1e-3);
}

TEST(Synth, RejectsBadOptions) {
  molt::SynthOptions o = small("bad");
  o.trainRows = 4; // fewer rows than d: no least-squares fit
  EXPECT_FALSE(molt::synthesize(o).isOk());
  o = small("bad");
  o.activation = "swish";
  EXPECT_FALSE(molt::synthesize(o).isOk());
}

} // namespace
