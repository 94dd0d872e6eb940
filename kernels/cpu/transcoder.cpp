// The transcoder decoder kernels of kernels/cpu/transcoder.h.
#include "kernels/cpu/transcoder.h"

#include <algorithm>
#include <cmath>
#include <vector>

#include "kernels/cpu/gemm.h"
#include "kernels/cpu/parallel.h"

namespace molt::cpu {

template <typename S>
void tcDecode(int64_t B, int64_t D, int64_t F, const PairLists<S> &pairs, const S *decW, S *yhat) {
  parallelRanges(B, grainFor(D * std::max<int64_t>(1, (pairs.ptr[F] - pairs.ptr[0]) / std::max<int64_t>(1, B))), [&](int64_t lo, int64_t hi) {
    for (int64_t f = 0; f < F; ++f) {
      const int32_t *begin = pairs.tok + pairs.ptr[f], *end = pairs.tok + pairs.ptr[f + 1];
      const int32_t *first = std::lower_bound(begin, end, int32_t(lo));
      const int32_t *last = std::lower_bound(first, end, int32_t(hi));
      const S *w = decW + f * D;
      for (const int32_t *it = first; it != last; ++it) {
        S act = pairs.gate[it - pairs.tok];
        if (act == S(0))
          continue;
        S *row = yhat + int64_t(*it) * D;
#pragma omp simd
        for (int64_t j = 0; j < D; ++j)
          row[j] += act * w[j];
      }
    }
  });
}

template <typename S>
void tcDecodeBwd(int64_t D, int64_t F, const S *dYhat, const PairLists<S> &pairs, const S *decW,
                 S *dDecW, S *pairDgate) {
  parallelItems(F, int64_t(pairs.ptr[F] - pairs.ptr[0]) * 2 * D, [&](int64_t f) {
    const S *w = decW + f * D;
    S *dw = dDecW + f * D;
    for (int32_t p = pairs.ptr[f]; p < pairs.ptr[f + 1]; ++p) {
      const S *dy = dYhat + int64_t(pairs.tok[p]) * D;
      S act = pairs.gate[p], dot = 0;
#pragma omp simd reduction(+ : dot)
      for (int64_t j = 0; j < D; ++j) {
        dot += w[j] * dy[j];
        dw[j] += act * dy[j];
      }
      pairDgate[p] += dot;
    }
  });
}

template <typename S> void skipApply(int64_t B, int64_t D, const S *x, const S *skipW, S *yhat) {
  gemmParallel(Trans::No, Trans::Yes, B, D, D, S(1), x, D, skipW, D, S(1), yhat, D);
}

template <typename S> void skipBwd(int64_t B, int64_t D, const S *dYhat, const S *x, S *dSkipW) {
  gemmParallel(Trans::Yes, Trans::No, D, D, B, S(1), dYhat, D, x, D, S(0), dSkipW, D);
}

template <typename S> void skipBwdDx(int64_t B, int64_t D, const S *dYhat, const S *skipW, S *dX) {
  gemmParallel(Trans::No, Trans::No, B, D, D, S(1), dYhat, D, skipW, D, S(1), dX, D);
}

template <typename S>
void tcPenalty(int64_t D, int64_t F, const PenaltyParams &pen, const PairLists<S> &pairs,
               const S *decW, S lamOverB, S *pairDgate, S *dDecW, S *stats) {
  std::vector<double> part(size_t(F), 0.0);
  parallelItems(F, F * D, [&](int64_t f) {
    const S *w = decW + f * D;
    S *dw = dDecW + f * D;
    double n2 = 0;
    for (int64_t j = 0; j < D; ++j)
      n2 += double(w[j]) * double(w[j]);
    S norm = S(std::sqrt(n2)), slopeDotAct;
    int64_t p0 = pairs.ptr[f];
    penaltyPairs(pen, pairs.gate + p0, pairs.ptr[f + 1] - p0, norm, lamOverB, pairDgate + p0,
                 part[size_t(f)], slopeDotAct);
    S s = norm > S(0) ? lamOverB * slopeDotAct / norm : S(0);
    for (int64_t j = 0; j < D; ++j)
      dw[j] = s * w[j];
  });
  double total = 0;
  for (double p : part)
    total += p;
  stats[2] += S(total);
}

#define MOLT_INSTANTIATE(S)                                                                        \
  template void tcDecode<S>(int64_t, int64_t, int64_t, const PairLists<S> &, const S *, S *);     \
  template void tcDecodeBwd<S>(int64_t, int64_t, const S *, const PairLists<S> &, const S *,      \
                               S *, S *);                                                          \
  template void skipApply<S>(int64_t, int64_t, const S *, const S *, S *);                        \
  template void skipBwd<S>(int64_t, int64_t, const S *, const S *, S *);                          \
  template void skipBwdDx<S>(int64_t, int64_t, const S *, const S *, S *);                        \
  template void tcPenalty<S>(int64_t, int64_t, const PenaltyParams &, const PairLists<S> &,       \
                             const S *, S, S *, S *, S *);
MOLT_INSTANTIATE(float)
MOLT_INSTANTIATE(double)
#undef MOLT_INSTANTIATE

} // namespace molt::cpu
