// The synthetic teachers (random MLP, rank groups), their data and the least-squares linear baseline.
#include "molt/synth.h"

#include <cmath>
#include <cstdio>
#include <random>
#include <sstream>
#include <vector>

#include "molt/io.h"
#include "molt/random.h"
#include "molt/safetensors.h"
#include "molt/teacher.h"

namespace molt {
namespace {

// Solves A x = b for symmetric positive definite A (n×n, row-major) by Cholesky, in place.
bool choleskySolve(std::vector<double> &a, std::vector<double> &b, int64_t n, int64_t rhs) {
  for (int64_t j = 0; j < n; ++j) {
    double s = a[size_t(j * n + j)];
    for (int64_t k = 0; k < j; ++k)
      s -= a[size_t(j * n + k)] * a[size_t(j * n + k)];
    if (s <= 0)
      return false;
    double l = std::sqrt(s);
    a[size_t(j * n + j)] = l;
    for (int64_t i = j + 1; i < n; ++i) {
      double t = a[size_t(i * n + j)];
      for (int64_t k = 0; k < j; ++k)
        t -= a[size_t(i * n + k)] * a[size_t(j * n + k)];
      a[size_t(i * n + j)] = t / l;
    }
  }
  for (int64_t c = 0; c < rhs; ++c) {
    for (int64_t i = 0; i < n; ++i) { // L z = b
      double t = b[size_t(i * rhs + c)];
      for (int64_t k = 0; k < i; ++k)
        t -= a[size_t(i * n + k)] * b[size_t(k * rhs + c)];
      b[size_t(i * rhs + c)] = t / a[size_t(i * n + i)];
    }
    for (int64_t i = n - 1; i >= 0; --i) { // Lᵀ x = z
      double t = b[size_t(i * rhs + c)];
      for (int64_t k = i + 1; k < n; ++k)
        t -= a[size_t(k * n + i)] * b[size_t(k * rhs + c)];
      b[size_t(i * rhs + c)] = t / a[size_t(i * n + i)];
    }
  }
  return true;
}

class Generator {
public:
  Generator(const SynthOptions &o, const SynthTeacher &t)
      : o_(o), t_(t.mlp), rng_(o.seed * 0x9e3779b97f4a7c15ull + 17), normal_(rng_),
        centres_(t.centres) {
    // The random teacher's centres: unit variance per dimension, far apart relative to the
    // noise, so each cluster sees a different set of active hidden units (a different local
    // linear map).
    if (centres_.empty()) {
      centres_.resize(size_t(o.clusters * o.d));
      for (double &c : centres_)
        c = normal_();
    }
    clusters_ = int64_t(centres_.size()) / o.d;
  }
  void row(double *x, double *y) {
    int64_t k = int64_t(rng_() % uint64_t(clusters_));
    for (int64_t j = 0; j < o_.d; ++j)
      x[j] = centres_[size_t(k * o_.d + j)] + o_.noise * normal_();
    teacherForward(t_, x, y);
  }

private:
  const SynthOptions &o_;
  const TeacherMlp &t_;
  std::mt19937_64 rng_;
  NormalSampler normal_;
  std::vector<double> centres_;
  int64_t clusters_ = 0;
};

/// Orthonormalises the `n` rows of v (each `len` long) by modified Gram–Schmidt; false when
/// they are (numerically) dependent.
bool orthonormalise(std::vector<double> &v, int64_t n, int64_t len) {
  for (int64_t i = 0; i < n; ++i) {
    double *r = &v[size_t(i * len)];
    for (int64_t k = 0; k < i; ++k) {
      const double *q = &v[size_t(k * len)];
      double dot = 0;
      for (int64_t j = 0; j < len; ++j)
        dot += r[j] * q[j];
      for (int64_t j = 0; j < len; ++j)
        r[j] -= dot * q[j];
    }
    double norm = 0;
    for (int64_t j = 0; j < len; ++j)
      norm += r[j] * r[j];
    if (norm < 1e-20)
      return false;
    for (int64_t j = 0; j < len; ++j)
      r[j] /= std::sqrt(norm);
  }
  return true;
}

/// n random orthonormal vectors of length len (n <= len).
std::vector<double> randomOrthonormal(int64_t n, int64_t len, NormalSampler &normal) {
  std::vector<double> v;
  do {
    v.assign(size_t(n * len), 0.0);
    for (double &e : v)
      e = normal();
  } while (!orthonormalise(v, n, len));
  return v;
}

// The rank-groups teacher (docs/tuning.md). Cluster g's centre is √d·ĉ_g, the ĉ_g orthonormal.
// Its group has ranks[g] pairs of hidden units (i+, i−) with
//   w_in rows α·ĉ_g ± β·q_i,  b_in = −κ,  w_out columns ±c·w_i,
// q_i orthonormal and orthogonal to every centre, w_i orthonormal. At its own cluster a unit's
// pre-activation is κ ± noise, elsewhere −κ ± noise (α·√d = 2κ), so only the group is active;
// there act(p) ≈ p and each pair adds c·w_i·2β·q_iᵀx: the ĉ_g parts and the biases cancel,
// the cluster's mean output is 0, and the local map 2βc·Σ w_i q_iᵀ has rank ranks[g] with a
// flat spectrum, so a lower-rank transform cannot fit it. β puts the noise's pre-activation
// spread along q_i at κ/6 (about κ/5.5 with the part along ĉ_g): over five standard
// deviations from switching a unit on or off.
constexpr double kGroupMargin = 6.0;  // κ: GELU is within 1e-2 of linear/zero beyond ±2.7
constexpr double kGroupOutScale = 0.5; // c

StatusOr<SynthTeacher> groupTeacher(const SynthOptions &o, Activation act) {
  const int64_t d = o.d, k = int64_t(o.groupRanks.size());
  int64_t maxRank = 0, pairs = 0;
  for (int64_t r : o.groupRanks) {
    if (r < 1)
      return invalidArgument("group ranks must be positive");
    maxRank = std::max(maxRank, r);
    pairs += r;
  }
  if (k > d || maxRank > d - k)
    return invalidArgument("rank groups need d >= groups + the largest rank (the within-group "
                           "directions are orthogonal to every centre): " +
                           std::to_string(k) + " groups, largest rank " + std::to_string(maxRank) +
                           ", d " + std::to_string(d));
  if (!(o.noise > 0))
    return invalidArgument("rank groups need noise > 0 (the local maps act on it)");
  std::mt19937_64 rng(o.seed);
  NormalSampler normal(rng);
  const std::vector<double> basis = randomOrthonormal(d, d, normal); // centres, then the rest
  const double kappa = kGroupMargin, alpha = 2 * kappa / std::sqrt(double(d)),
               beta = kappa / (6 * o.noise);
  SynthTeacher t;
  TeacherMlp &m = t.mlp;
  m.d = d;
  m.h = 2 * pairs;
  m.activation = act;
  m.w_in.assign(size_t(m.h * d), 0.0);
  m.b_in.assign(size_t(m.h), -kappa);
  m.w_out.assign(size_t(d * m.h), 0.0);
  m.b_out.assign(size_t(d), 0.0);
  t.centres.resize(size_t(k * d));
  for (int64_t g = 0, unit = 0; g < k; ++g) {
    const double *c = &basis[size_t(g * d)];
    for (int64_t j = 0; j < d; ++j)
      t.centres[size_t(g * d + j)] = std::sqrt(double(d)) * c[j];
    const int64_t r = o.groupRanks[size_t(g)];
    // q_i: orthonormal combinations of the d − k basis vectors orthogonal to all centres.
    const std::vector<double> coef = randomOrthonormal(r, d - k, normal);
    const std::vector<double> out = randomOrthonormal(r, d, normal);
    for (int64_t i = 0; i < r; ++i) {
      std::vector<double> q(size_t(d), 0.0);
      for (int64_t b = 0; b < d - k; ++b)
        for (int64_t j = 0; j < d; ++j)
          q[size_t(j)] += coef[size_t(i * (d - k) + b)] * basis[size_t((k + b) * d + j)];
      for (int sign = 1; sign >= -1; sign -= 2, ++unit)
        for (int64_t j = 0; j < d; ++j) {
          m.w_in[size_t(unit * d + j)] = alpha * c[j] + sign * beta * q[size_t(j)];
          m.w_out[size_t(j * m.h + unit)] = sign * kGroupOutScale * out[size_t(i * d + j)];
        }
    }
    t.clusterRank.push_back(r);
  }
  return t;
}

} // namespace

StatusOr<std::vector<int64_t>> parseRankGroups(const std::string &text) {
  std::vector<int64_t> ranks;
  std::stringstream in(text);
  std::string item;
  while (std::getline(in, item, ',')) {
    long long r = 0, count = 1;
    int used = 0, usedCount = 0;
    bool ok = std::sscanf(item.c_str(), "%lld%n", &r, &used) == 1;
    if (ok && item[size_t(used)] == ':')
      ok = std::sscanf(item.c_str() + used + 1, "%lld%n", &count, &usedCount) == 1 &&
           item[size_t(used + 1 + usedCount)] == 0;
    else
      ok = ok && item[size_t(used)] == 0;
    if (!ok || r < 1 || count < 1 || count > 100000)
      return invalidArgument("bad rank group '" + item + "' (expected RANK or RANK:COUNT)");
    ranks.insert(ranks.end(), size_t(count), r);
  }
  if (ranks.empty())
    return invalidArgument("no rank groups in '" + text + "'");
  return ranks;
}

StatusOr<SynthTeacher> makeSynthTeacher(const SynthOptions &o) {
  StatusOr<Activation> act = parseActivation(o.activation);
  if (!act)
    return act.status();
  if (!o.groupRanks.empty())
    return groupTeacher(o, *act);
  SynthTeacher s;
  TeacherMlp &t = s.mlp;
  t.d = o.d;
  t.h = o.hidden;
  t.activation = *act;
  std::mt19937_64 rng(o.seed);
  NormalSampler normal(rng);
  auto fill = [&](std::vector<double> &v, size_t n, double stdev) {
    v.resize(n);
    for (double &e : v)
      e = stdev * normal();
  };
  fill(t.w_in, size_t(o.hidden * o.d), o.gain / std::sqrt(double(o.d)));
  fill(t.b_in, size_t(o.hidden), 0.5 * o.gain);
  fill(t.w_out, size_t(o.d * o.hidden), 1.0 / std::sqrt(double(o.hidden)));
  fill(t.b_out, size_t(o.d), 0.1);
  return s;
}

namespace {

std::vector<float> toFloat(const std::vector<double> &v) { return {v.begin(), v.end()}; }

// Writes `rows` rows in shards of at most shardRows; `visit` sees each (x, y) in float64.
template <typename Visit>
Status writeSplit(const std::string &dir, int64_t rows, const SynthOptions &o, Generator &gen,
                  Visit visit) {
  MOLT_RETURN_IF_ERROR(makeDirs(dir));
  int64_t d = o.d;
  std::vector<double> x(static_cast<size_t>(d)), y(static_cast<size_t>(d));
  for (int64_t first = 0, shard = 0; first < rows; first += o.shardRows, ++shard) {
    int64_t n = std::min(o.shardRows, rows - first);
    std::vector<float> xs(size_t(n * d)), ys(size_t(n * d));
    for (int64_t r = 0; r < n; ++r) {
      gen.row(x.data(), y.data());
      visit(x.data(), y.data());
      for (int64_t j = 0; j < d; ++j) {
        xs[size_t(r * d + j)] = float(x[size_t(j)]);
        ys[size_t(r * d + j)] = float(y[size_t(j)]);
      }
    }
    char name[32];
    std::snprintf(name, sizeof name, "/shard-%05lld.safetensors", (long long)shard);
    MOLT_RETURN_IF_ERROR(
        writeSafetensors(dir + name, {f32Tensor("x", {n, d}, xs), f32Tensor("y", {n, d}, ys)}));
  }
  return Status::ok();
}

} // namespace

StatusOr<SynthReport> synthesize(const SynthOptions &o) {
  if (o.d <= 0 || o.hidden <= 0 || o.clusters <= 0 || o.trainRows <= o.d || o.valRows <= 0 ||
      o.shardRows <= 0 || !(o.noise >= 0))
    return invalidArgument("d, hidden, clusters, rows and shard rows must be positive, train "
                           "rows more than d, noise >= 0");
  StatusOr<SynthTeacher> made = makeSynthTeacher(o);
  if (!made)
    return made.status();
  TeacherMlp &t = made->mlp;
  Generator gen(o, *made);
  {
    // Centre the teacher's output: a large mean would let any map with a bias look good on
    // NMSE (whose denominator is not centred) and hide the nonlinearity being measured.
    std::vector<double> x(static_cast<size_t>(o.d)), y(static_cast<size_t>(o.d)),
        mean(static_cast<size_t>(o.d), 0.0);
    const int kSamples = 4096;
    for (int i = 0; i < kSamples; ++i) {
      gen.row(x.data(), y.data());
      for (int64_t j = 0; j < o.d; ++j)
        mean[size_t(j)] += y[size_t(j)] / kSamples;
    }
    for (int64_t j = 0; j < o.d; ++j)
      t.b_out[size_t(j)] -= mean[size_t(j)];
  }
  MOLT_RETURN_IF_ERROR(makeDirs(o.out));
  MOLT_RETURN_IF_ERROR(writeSafetensors(
      o.out + "/teacher.safetensors",
      {f32Tensor("w_in", {t.h, o.d}, toFloat(t.w_in)),
       f32Tensor("b_in", {t.h}, toFloat(t.b_in)),
       f32Tensor("w_out", {o.d, t.h}, toFloat(t.w_out)),
       f32Tensor("b_out", {o.d}, toFloat(t.b_out))},
      {{"activation", o.activation}}));

  // Normal equations for y ≈ W [x; 1], accumulated in float64 while the shards are written.
  int64_t n = o.d + 1, d = o.d;
  std::vector<double> xtx(size_t(n * n), 0.0), xty(size_t(n * d), 0.0);
  double sumY2 = 0;
  MOLT_RETURN_IF_ERROR(writeSplit(o.out + "/train", o.trainRows, o, gen,
                                  [&](const double *x, const double *y) {
                                    for (int64_t i = 0; i < n; ++i) {
                                      double xi = i < d ? x[i] : 1.0;
                                      for (int64_t k = 0; k < n; ++k)
                                        xtx[size_t(i * n + k)] += xi * (k < d ? x[k] : 1.0);
                                      for (int64_t j = 0; j < d; ++j)
                                        xty[size_t(i * d + j)] += xi * y[j];
                                    }
                                    for (int64_t j = 0; j < d; ++j)
                                      sumY2 += y[j] * y[j];
                                  }));
  // Train-set residual from the normal equations: Σ‖y‖² − tr(Wᵀ XᵀY) at the optimum.
  std::vector<double> a = xtx, w = xty;
  for (int64_t i = 0; i < n; ++i)
    a[size_t(i * n + i)] += 1e-9 * (1.0 + xtx[size_t(i * n + i)]);
  if (!choleskySolve(a, w, n, d))
    return internalError("the least-squares system is singular");
  double explained = 0;
  for (size_t i = 0; i < w.size(); ++i)
    explained += w[i] * xty[i];
  SynthReport r;
  r.linearNmseTrain = (sumY2 - explained) / sumY2;

  double sse = 0, valY2 = 0;
  MOLT_RETURN_IF_ERROR(writeSplit(o.out + "/val", o.valRows, o, gen,
                                  [&](const double *x, const double *y) {
                                    for (int64_t j = 0; j < d; ++j) {
                                      double p = w[size_t(d * d + j)];
                                      for (int64_t i = 0; i < d; ++i)
                                        p += x[i] * w[size_t(i * d + j)];
                                      sse += (p - y[j]) * (p - y[j]);
                                      valY2 += y[j] * y[j];
                                    }
                                  }));
  r.linearNmseVal = sse / valY2;
  return r;
}

} // namespace molt
