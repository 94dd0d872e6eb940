// The dense per-token tail of kernels/cpu/loss.h.
#include "kernels/cpu/loss.h"

#include <algorithm>

#include "kernels/cpu/parallel.h"

namespace molt::cpu {

template <typename S> void addBias(int64_t B, int64_t D, const S *decB, S *yhat) {
  parallelRanges(B, grainFor(D), [&](int64_t lo, int64_t hi) {
    for (int64_t i = lo; i < hi; ++i) {
      S *row = yhat + i * D;
#pragma omp simd
      for (int64_t j = 0; j < D; ++j)
        row[j] += decB[j];
    }
  });
}

template <typename S> void mseLoss(int64_t B, int64_t D, const S *yhat, const S *y, S *dYhat, S *stats) {
  constexpr int64_t kRows = 32; // fixed chunks: the sums do not depend on the thread count
  const S scale = S(2) / S(B);
  double sums[3] = {0, 0, 0};
  for (int which = 0; which < 3; ++which)
    sums[which] = fixedChunkSum(B, kRows, [&](int64_t lo, int64_t hi) {
      double acc = 0;
      for (int64_t i = lo; i < hi; ++i)
        for (int64_t j = 0; j < D; ++j) {
          int64_t at = i * D + j;
          double yv = double(y[at]), e = double(yhat[at]) - yv;
          if (which == 0) {
            dYhat[at] = scale * (yhat[at] - y[at]);
            acc += e * e;
          } else {
            acc += which == 1 ? yv * yv : yv;
          }
        }
      return acc;
    });
  stats[0] += S(sums[0]);
  stats[1] += S(sums[1]);
  stats[6] += S(sums[2]);
}

template <typename S> void biasGrad(int64_t B, int64_t D, const S *dYhat, S *dDecB) {
  parallelRanges(D, grainFor(B), [&](int64_t lo, int64_t hi) {
    std::fill(dDecB + lo, dDecB + hi, S(0));
    for (int64_t i = 0; i < B; ++i)
      for (int64_t j = lo; j < hi; ++j)
        dDecB[j] += dYhat[i * D + j];
  });
}

#define MOLT_INSTANTIATE(S)                                                                        \
  template void addBias<S>(int64_t, int64_t, const S *, S *);                                     \
  template void mseLoss<S>(int64_t, int64_t, const S *, const S *, S *, S *);                      \
  template void biasGrad<S>(int64_t, int64_t, const S *, S *);
MOLT_INSTANTIATE(float)
MOLT_INSTANTIATE(double)
#undef MOLT_INSTANTIATE

} // namespace molt::cpu
