// Evaluation: streams the data once through `eval`, accumulating in float64 on the host.
#include "molt/evaluator.h"

#include <cstdio>
#include <sstream>

#include <nlohmann/json.hpp>

namespace molt {
namespace {

struct Accumulator {
  double sse = 0, active = 0;
  int64_t rows = 0;
  std::vector<double> sumY;      // per dimension, for FVU's mean
  double sumY2 = 0;
  std::vector<int64_t> perTransform; // tokens with g > 0
};

Status runBatch(Executor &exec, const float *x, const float *y, int64_t n, int64_t d,
                Accumulator &acc, std::vector<int32_t> &ptr, std::vector<float> &gate) {
  MOLT_RETURN_IF_ERROR(exec.write("x", x, size_t(n * d) * 4));
  MOLT_RETURN_IF_ERROR(exec.write("y", y, size_t(n * d) * 4));
  std::array<float, 8> scalars{};
  scalars[7] = float(1.0 / double(n));
  MOLT_RETURN_IF_ERROR(exec.write("scalars", scalars.data(), sizeof scalars));
  MOLT_RETURN_IF_ERROR(exec.run("eval"));
  std::array<float, 16> stats{};
  MOLT_RETURN_IF_ERROR(exec.read("stats", stats.data(), sizeof stats));
  acc.sse += stats[0];
  acc.rows += n;
  for (int64_t i = 0; i < n; ++i)
    for (int64_t j = 0; j < d; ++j) {
      double v = y[i * d + j];
      acc.sumY[size_t(j)] += v;
      acc.sumY2 += v * v;
    }
  const BufferInfo *pi = exec.info("pair_ptr"), *gi = exec.info("pair_gate");
  if (!pi || !gi) {
    acc.active += stats[3];
    return Status::ok();
  }
  ptr.resize(size_t(pi->numel()));
  gate.resize(size_t(gi->numel()));
  MOLT_RETURN_IF_ERROR(exec.read("pair_ptr", ptr.data(), pi->bytes()));
  MOLT_RETURN_IF_ERROR(exec.read("pair_gate", gate.data(), gi->bytes()));
  // Active means g > 0, as the kernels count stats[3] and the trainer counts (gates are never
  // negative: docs/bundle.md), so L0, the per-bucket L0s and stats[3] all agree.
  for (size_t t = 0; t + 1 < ptr.size() && t < acc.perTransform.size(); ++t)
    for (int32_t p = ptr[t]; p < ptr[t + 1] && size_t(p) < gate.size(); ++p) {
      bool on = gate[size_t(p)] > 0.0f;
      acc.perTransform[t] += on;
      acc.active += on;
    }
  return Status::ok();
}

} // namespace

StatusOr<EvalReport> evaluate(Backend &backend, const Plan &plan, const std::string &bundleDir,
                              const TensorMap &params, const ShardSet &data,
                              const Normalization &norm, int64_t batch) {
  if (!plan.entry_points.count("eval"))
    return invalidArgument("the bundle has no 'eval' entry point");
  int64_t d = plan.model.d_model, T = plan.model.numTransforms();
  batch = std::max<int64_t>(1, std::min(batch, data.rows()));
  StatusOr<std::unique_ptr<Executor>> main = backend.prepare(plan, bundleDir, batch);
  if (!main)
    return main.status();
  MOLT_RETURN_IF_ERROR(writeTensors(**main, params));

  Accumulator acc;
  acc.sumY.assign(size_t(d), 0.0);
  acc.perTransform.assign(size_t(T), 0);
  BatchStream stream(data, 0, defaultWindowRows(d, batch), /*shuffle=*/false, /*wrap=*/false,
                     norm);
  std::vector<float> x(size_t(batch * d)), y(size_t(batch * d));
  std::vector<int32_t> ptr;
  std::vector<float> gate;
  std::unique_ptr<Executor> tail;
  while (true) {
    StatusOr<int64_t> got = stream.next(batch, x.data(), y.data());
    if (!got)
      return got.status();
    if (*got == 0)
      break;
    Executor *exec = main->get();
    if (*got < batch) {
      StatusOr<std::unique_ptr<Executor>> t = backend.prepare(plan, bundleDir, *got);
      if (!t)
        return t.status();
      tail = std::move(*t);
      MOLT_RETURN_IF_ERROR(writeTensors(*tail, params));
      exec = tail.get();
    }
    MOLT_RETURN_IF_ERROR(runBatch(*exec, x.data(), y.data(), *got, d, acc, ptr, gate));
    if (*got < batch)
      break;
  }
  if (acc.rows == 0)
    return invalidArgument("the evaluation data has no finite rows");

  EvalReport r;
  r.rows = acc.rows;
  r.skippedRows = stream.skippedRows();
  double n = double(acc.rows);
  double centred = acc.sumY2;
  for (double s : acc.sumY)
    centred -= s * s / n;
  r.nmse = acc.sumY2 > 0 ? acc.sse / acc.sumY2 : 0.0;
  r.fvu = centred > 0 ? acc.sse / centred : 0.0;
  r.l0 = acc.active / n;
  int64_t dead = 0;
  for (int64_t c : acc.perTransform)
    dead += c == 0;
  r.deadFraction = T > 0 ? double(dead) / double(T) : 0.0;
  std::vector<Bucket> groups = plan.model.kind == "molt"
                                   ? plan.model.buckets
                                   : std::vector<Bucket>{{1, plan.model.features}};
  int64_t off = 0;
  for (const Bucket &b : groups) {
    BucketReport br{b.rank, b.count, 0, 0};
    int64_t used = 0;
    for (int64_t t = off; t < off + b.count; ++t) {
      br.l0 += double(acc.perTransform[size_t(t)]) / n;
      used += acc.perTransform[size_t(t)] > 0;
    }
    br.usedFraction = double(used) / double(b.count);
    r.buckets.push_back(br);
    off += b.count;
  }
  if (r.l0 < 1.5)
    r.warning = "collapse: L0 is " + std::to_string(r.l0).substr(0, 5) +
                " (< 1.5 active transforms per token)";
  else if (r.deadFraction > 0.5)
    r.warning = "collapse: " + std::to_string(int(r.deadFraction * 100)) +
                "% of the transforms are dead";
  return r;
}

std::string EvalReport::toJson() const {
  nlohmann::ordered_json j;
  j["nmse"] = nmse;
  j["fvu"] = fvu;
  j["l0"] = l0;
  j["dead_fraction"] = deadFraction;
  j["rows"] = rows;
  j["skipped_rows"] = skippedRows;
  for (size_t k = 0; k < buckets.size(); ++k) {
    std::string p = "bucket" + std::to_string(k) + "_";
    j[p + "rank"] = buckets[k].rank;
    j[p + "count"] = buckets[k].count;
    j[p + "l0"] = buckets[k].l0;
    j[p + "used_fraction"] = buckets[k].usedFraction;
  }
  if (hasJacobian) {
    j["jacobian_cosine"] = jacobianCosine;
    j["jacobian_cosine_std_error"] = jacobianStdError;
    j["jacobian_rows"] = jacobianRows;
  }
  j["collapse"] = !warning.empty();
  return j.dump();
}

std::string EvalReport::toText() const {
  std::ostringstream out;
  char line[160];
  std::snprintf(line, sizeof line, "rows %lld  nmse %.5f  fvu %.5f  l0 %.2f  dead %.1f%%\n",
                (long long)rows, nmse, fvu, l0, 100 * deadFraction);
  out << line;
  for (size_t k = 0; k < buckets.size(); ++k) {
    std::snprintf(line, sizeof line, "  bucket %zu  rank %4lld x %-5lld  l0 %6.2f  used %5.1f%%\n",
                  k, (long long)buckets[k].rank, (long long)buckets[k].count, buckets[k].l0,
                  100 * buckets[k].usedFraction);
    out << line;
  }
  if (hasJacobian) {
    std::snprintf(line, sizeof line, "jacobian_cosine %.4f ± %.4f over %lld rows\n",
                  jacobianCosine, jacobianStdError, (long long)jacobianRows);
    out << line;
  }
  if (skippedRows)
    out << "  skipped " << skippedRows << " rows with NaN or Inf\n";
  if (!warning.empty())
    out << "warning: " << warning << "\n";
  return out.str();
}

} // namespace molt
