// The synthetic teacher generator: its teacher file is in the docs/architecture.md §3 format and
// reproduces the shards' y from x; the linear baseline behaves as least squares must; the
// rank-groups teacher's Jacobian at each cluster has exactly that cluster's rank.
#include <gtest/gtest.h>

#include <algorithm>
#include <cmath>
#include <filesystem>
#include <random>

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

// Eigenvalues of a symmetric n×n matrix by cyclic Jacobi rotations (float64, an independent
// reference: nothing in the runtime computes spectra).
std::vector<double> symmetricEigenvalues(std::vector<double> a, int n) {
  for (int sweep = 0; sweep < 100; ++sweep) {
    double off = 0, total = 0;
    for (int i = 0; i < n; ++i)
      for (int j = 0; j < n; ++j)
        (i == j ? total : off) += a[size_t(i * n + j)] * a[size_t(i * n + j)];
    if (off <= 1e-30 * (total + off))
      break;
    for (int p = 0; p < n; ++p)
      for (int q = p + 1; q < n; ++q) {
        double apq = a[size_t(p * n + q)];
        if (apq == 0)
          continue;
        double theta = (a[size_t(q * n + q)] - a[size_t(p * n + p)]) / (2 * apq);
        double t = (theta >= 0 ? 1 : -1) / (std::fabs(theta) + std::sqrt(theta * theta + 1));
        double c = 1 / std::sqrt(t * t + 1), s = t * c;
        for (int k = 0; k < n; ++k) { // columns p, q
          double akp = a[size_t(k * n + p)], akq = a[size_t(k * n + q)];
          a[size_t(k * n + p)] = c * akp - s * akq;
          a[size_t(k * n + q)] = s * akp + c * akq;
        }
        for (int k = 0; k < n; ++k) { // rows p, q
          double apk = a[size_t(p * n + k)], aqk = a[size_t(q * n + k)];
          a[size_t(p * n + k)] = c * apk - s * aqk;
          a[size_t(q * n + k)] = s * apk + c * aqk;
        }
      }
  }
  std::vector<double> eig(static_cast<size_t>(n));
  for (int i = 0; i < n; ++i)
    eig[size_t(i)] = a[size_t(i * n + i)];
  return eig;
}

/// Singular values of J (d×d) above `relTol` × the largest: its numerical rank.
int numericalRank(const std::vector<double> &J, int d, double relTol) {
  std::vector<double> jtj(size_t(d * d), 0.0);
  for (int i = 0; i < d; ++i)
    for (int j = 0; j < d; ++j)
      for (int k = 0; k < d; ++k)
        jtj[size_t(i * d + j)] += J[size_t(k * d + i)] * J[size_t(k * d + j)];
  std::vector<double> eig = symmetricEigenvalues(jtj, d);
  double top = *std::max_element(eig.begin(), eig.end());
  return int(std::count_if(eig.begin(), eig.end(),
                           [&](double e) { return e > relTol * relTol * top; }));
}

TEST(Synth, ParsesRankGroups) {
  auto r = molt::parseRankGroups("32:2,16:1,8");
  ASSERT_TRUE(r.isOk()) << r.status().message();
  EXPECT_EQ(*r, (std::vector<int64_t>{32, 32, 16, 8}));
  for (const char *bad : {"", "32:", ":2", "0:1", "8:0", "8x", "8:2:1", "8,,4"})
    EXPECT_FALSE(molt::parseRankGroups(bad).isOk()) << bad;
}

TEST(Synth, RankGroupJacobianHasTheGroupsRankAtEveryCluster) {
  molt::SynthOptions o = small("groups");
  o.d = 32;
  o.groupRanks = *molt::parseRankGroups("12:1,8:2,4:3,2:2,1:2"); // 10 groups; 12 <= 32 - 10
  auto made = molt::makeSynthTeacher(o);
  ASSERT_TRUE(made.isOk()) << made.status().message();
  const molt::TeacherMlp &t = made->mlp;
  ASSERT_EQ(t.h, 2 * (12 + 16 + 12 + 4 + 2));
  ASSERT_EQ(made->clusterRank, o.groupRanks);
  ASSERT_TRUE(molt::validateTeacher(t).isOk());
  std::mt19937_64 rng(5);
  std::normal_distribution<double> normal;
  const int d = 32;
  std::vector<double> x(d), J(size_t(d * d)), pre(size_t(t.h));
  for (size_t g = 0; g < o.groupRanks.size(); ++g) {
    const int rank = int(o.groupRanks[g]);
    // The centre, then points drawn as the data is (noise 0.3 per dimension).
    for (int sample = 0; sample < 4; ++sample) {
      for (int j = 0; j < d; ++j)
        x[size_t(j)] = made->centres[g * d + size_t(j)] + (sample ? o.noise * normal(rng) : 0.0);
      molt::teacherPreactivation(t, x.data(), pre.data());
      int active = int(std::count_if(pre.begin(), pre.end(), [](double p) { return p > 0; }));
      EXPECT_EQ(active, 2 * rank) << "cluster " << g << " sample " << sample;
      molt::teacherJacobian(t, x.data(), J.data());
      // The group's singular values are all alike (orthonormal directions); the other units'
      // GELU slopes at -6 +- noise add at most ~1e-2 of them.
      EXPECT_EQ(numericalRank(J, d, sample ? 0.1 : 1e-4), rank)
          << "cluster " << g << " sample " << sample;
    }
  }
}

TEST(Synth, RankGroupDataIsFarFromLinear) {
  molt::SynthOptions o = small("groups-data");
  o.groupRanks = *molt::parseRankGroups("4:2,2:2,1:4"); // 8 groups in d = 16
  auto r = molt::synthesize(o);
  ASSERT_TRUE(r.isOk()) << r.status().message();
  // Every cluster's output is centred at 0 and its map annihilates the other centres, so one
  // linear map explains little.
  EXPECT_GT(r->linearNmseVal, 0.5);
  auto teacher = molt::loadTeacher(o.out + "/teacher.safetensors");
  ASSERT_TRUE(teacher.isOk()) << teacher.status().message();
  EXPECT_EQ(teacher->h, 2 * (8 + 4 + 4));
}

TEST(Synth, RejectsBadOptions) {
  molt::SynthOptions o = small("bad");
  o.trainRows = 4; // fewer rows than d: no least-squares fit
  EXPECT_FALSE(molt::synthesize(o).isOk());
  o = small("bad");
  o.activation = "swish";
  EXPECT_FALSE(molt::synthesize(o).isOk());
  o = small("bad");
  o.groupRanks = {8, 8}; // d = 16 leaves 14 directions beside the centres: rank 8 fits...
  EXPECT_TRUE(molt::makeSynthTeacher(o).isOk());
  o.groupRanks = std::vector<int64_t>(4, 13); // ...13 does not beside 4 centres
  EXPECT_FALSE(molt::makeSynthTeacher(o).isOk());
  o.groupRanks = {2};
  o.noise = 0;
  EXPECT_FALSE(molt::makeSynthTeacher(o).isOk());
}

} // namespace
