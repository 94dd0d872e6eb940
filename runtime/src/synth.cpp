// The synthetic teacher data generator and its least-squares linear baseline.
#include "molt/synth.h"

#include <cmath>
#include <cstdio>
#include <random>
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
  Generator(const SynthOptions &o, const TeacherMlp &t)
      : o_(o), t_(t), rng_(o.seed * 0x9e3779b97f4a7c15ull + 17), normal_(rng_) {
    // Centres with unit variance per dimension: far apart relative to the noise, so each
    // cluster sees a different set of active hidden units (a different local linear map).
    centres_.resize(size_t(o.clusters * o.d));
    for (double &c : centres_)
      c = normal_();
  }
  void row(double *x, double *y) {
    int64_t k = int64_t(rng_() % uint64_t(o_.clusters));
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
};

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
  StatusOr<Activation> act = parseActivation(o.activation);
  if (!act)
    return act.status();
  TeacherMlp t;
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
  Generator gen(o, t);
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
      {f32Tensor("w_in", {o.hidden, o.d}, toFloat(t.w_in)),
       f32Tensor("b_in", {o.hidden}, toFloat(t.b_in)),
       f32Tensor("w_out", {o.d, o.hidden}, toFloat(t.w_out)),
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
