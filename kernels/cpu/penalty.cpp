// The MOLT sparsity penalty of kernels/cpu/penalty.h.
#include "kernels/cpu/penalty.h"

#include <vector>

#include "kernels/cpu/parallel.h"

namespace molt::cpu {

template <typename S>
void penalty(int64_t T, const PenaltyParams &pen, const PairLists<S> &pairs, const S *norm,
             S lamOverB, S *pairDgate, S *dNorm, S *stats) {
  std::vector<double> part(size_t(T), 0.0);
  parallelItems(T, int64_t(pairs.ptr[T] - pairs.ptr[0]) * 8, [&](int64_t t) {
    int64_t p0 = pairs.ptr[t], count = pairs.ptr[t + 1] - p0;
    S slopeDotGate;
    penaltyPairs(pen, pairs.gate + p0, count, norm[t], lamOverB, pairDgate + p0, part[size_t(t)],
                 slopeDotGate);
    dNorm[t] = lamOverB * slopeDotGate;
  });
  double total = 0;
  for (double p : part)
    total += p;
  stats[2] += S(total);
}

template void penalty<float>(int64_t, const PenaltyParams &, const PairLists<float> &,
                             const float *, float, float *, float *, float *);
template void penalty<double>(int64_t, const PenaltyParams &, const PairLists<double> &,
                              const double *, double, double *, double *, double *);

} // namespace molt::cpu
