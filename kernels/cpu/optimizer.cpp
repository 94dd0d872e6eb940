// The gradient norm and the Adam update of kernels/cpu/optimizer.h.
#include "kernels/cpu/optimizer.h"

#include <algorithm>
#include <cmath>

#include "kernels/cpu/parallel.h"

namespace molt::cpu {

template <typename S> void gradNorm(const std::vector<ParamSlot<S>> &params, S *stats) {
  double total = 0;
  for (const ParamSlot<S> &ps : params)
    total += fixedChunkSum(ps.n, 1 << 14, [&](int64_t lo, int64_t hi) {
      // Eight fixed lanes: vectorised, yet the summation order is written down, not chosen by
      // the compiler or the thread count.
      double lanes[8] = {0, 0, 0, 0, 0, 0, 0, 0};
      int64_t i = lo;
      for (; i + 8 <= hi; i += 8)
        for (int l = 0; l < 8; ++l)
          lanes[l] += double(ps.d[i + l]) * double(ps.d[i + l]);
      for (; i < hi; ++i)
        lanes[0] += double(ps.d[i]) * double(ps.d[i]);
      double acc = 0;
      for (double l : lanes)
        acc += l;
      return acc;
    });
  stats[4] = S(total);
  // A norm that overflows S is as useless to clipping as an infinite one.
  bool finite = std::isfinite(stats[4]);
  for (int i = 0; i < 3; ++i)
    finite = finite && std::isfinite(double(stats[i]));
  stats[5] = finite ? S(0) : S(1);
}

template <typename S>
void adam(const std::vector<ParamSlot<S>> &params, const S *scalars, const S *stats) {
  if (stats[5] > S(0))
    return;
  const double lr = scalars[1], b1 = scalars[2], b2 = scalars[3], eps = scalars[4];
  // step is 1-based; a 0 would divide by 1 − β⁰ = 0 and turn every weight into NaN.
  const double clip = scalars[5], step = std::max(1.0, double(scalars[6]));
  const double norm = std::sqrt(double(stats[4]));
  const S scale = S(clip > 0 && norm > clip ? clip / norm : 1.0);
  const S c1 = S(1.0 / (1.0 - std::pow(b1, step))), c2 = S(1.0 / (1.0 - std::pow(b2, step)));
  const S sb1 = S(b1), sb2 = S(b2), slr = S(lr), seps = S(eps);
  for (const ParamSlot<S> &ps : params)
    parallelRanges(ps.n, grainFor(8), [&](int64_t lo, int64_t hi) {
#pragma omp simd
      for (int64_t i = lo; i < hi; ++i) {
        S g = ps.d[i] * scale;
        S m = sb1 * ps.m[i] + (S(1) - sb1) * g;
        S v = sb2 * ps.v[i] + (S(1) - sb2) * g * g;
        ps.m[i] = m;
        ps.v[i] = v;
        ps.p[i] -= slr * (m * c1) / (std::sqrt(v * c2) + seps);
      }
    });
}

#define MOLT_INSTANTIATE(S)                                                                        \
  template void gradNorm<S>(const std::vector<ParamSlot<S>> &, S *);                              \
  template void adam<S>(const std::vector<ParamSlot<S>> &, const S *, const S *);
MOLT_INSTANTIATE(float)
MOLT_INSTANTIATE(double)
#undef MOLT_INSTANTIATE

} // namespace molt::cpu
