// The jacobian_cosine metric: checks its inputs, finds each token's open units, runs the chosen
// method (exact.cpp, dense.cpp, probes.cpp) and summarises the per-token cosines.
#include "jacobian/common.h"

namespace molt {

namespace {

// Serial reductions in row order: the result does not depend on the thread count.
JacobianCosine summarise(jacobian::TokenResults out) {
  JacobianCosine res;
  const int64_t n = int64_t(out.cosine.size());
  res.tokens = n;
  double sum = 0, pv = 0;
  for (int64_t i = 0; i < n; ++i) {
    sum += out.cosine[size_t(i)];
    pv += out.probeVar[size_t(i)];
    res.degenerate += out.degenerate[size_t(i)];
  }
  res.mean = sum / double(n);
  double var = 0;
  for (double c : out.cosine)
    var += (c - res.mean) * (c - res.mean);
  res.std_error = n > 1 ? std::sqrt(var / double(n - 1) / double(n)) : 0.0;
  res.probe_std_error = std::sqrt(pv) / double(n);
  res.per_token = std::move(out.cosine);
  return res;
}

} // namespace

StatusOr<JacobianCosine> jacobianCosine(const ReplacementLayer &L, const TeacherMlp &T,
                                        const float *x, int64_t n, const JacobianOptions &opt) {
  if (T.d != L.d)
    return invalidArgument("teacher width d=" + std::to_string(T.d) + " differs from the model's d=" +
                           std::to_string(L.d));
  if (n <= 0)
    return invalidArgument("no tokens to measure the Jacobian cosine on");
  const bool probed = opt.method == JacobianMethod::Random || opt.method == JacobianMethod::Compiled;
  if (probed && opt.probes < 2)
    return invalidArgument("the randomised Jacobian cosine needs at least 2 probes per token");
  if (opt.method == JacobianMethod::Compiled && !opt.executor)
    return invalidArgument("the compiled Jacobian cosine needs an executor of the layer's bundle");
  const int64_t d = L.d;
  std::vector<double> xs(size_t(n * d));
  for (int64_t i = 0; i < n * d; ++i) {
    xs[size_t(i)] = x[i];
    if (!std::isfinite(xs[size_t(i)]))
      return invalidArgument("row " + std::to_string(i / d) + " of x is not finite");
  }

  jacobian::TokenResults out;
  out.cosine.assign(size_t(n), 0.0);
  out.probeVar.assign(size_t(n), 0.0);
  out.degenerate.assign(size_t(n), 0);
  if (opt.method == JacobianMethod::Compiled) {
    MOLT_RETURN_IF_ERROR(jacobian::compiledCosines(L, T, xs, opt, out));
  } else if (opt.method == JacobianMethod::Dense) {
    jacobian::denseCosines(L, T, xs, out);
  } else {
    std::vector<std::vector<ActiveUnit>> acts(static_cast<size_t>(n));
#pragma omp parallel for schedule(dynamic, 16)
    for (int64_t i = 0; i < n; ++i)
      activeUnits(L, &xs[size_t(i * d)], acts[size_t(i)]);
    if (opt.method == JacobianMethod::Exact)
      jacobian::exactCosines(L, T, xs, acts, out);
    else
      jacobian::randomCosines(L, T, xs, acts, opt, out);
  }
  return summarise(std::move(out));
}

StatusOr<JacobianCosine> jacobianCosine(const ModelDesc &model, const HostTensors &params,
                                        const TeacherMlp &teacher, const float *x, int64_t n,
                                        const JacobianOptions &options) {
  auto layer = makeReplacement(model, params);
  if (!layer)
    return layer.status();
  return jacobianCosine(*layer, teacher, x, n, options);
}

} // namespace molt
