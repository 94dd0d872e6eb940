// The sparse apply and its backward (kernels/cpu/bucket_apply.h).
#include "kernels/cpu/bucket_apply.h"

#include <algorithm>
#include <cstring>

#include "kernels/cpu/gemm.h"
#include "kernels/cpu/parallel.h"

namespace molt::cpu {

namespace {

template <typename S> void gatherRow(int64_t D, const S *src, int32_t row, S *dst) {
  std::memcpy(dst, src + int64_t(row) * D, size_t(D) * sizeof(S));
}

} // namespace

template <typename S>
void bucketApply(int64_t B, int64_t D, int64_t R, int64_t N, int64_t OFF, const S *x, const S *u,
                 const S *v, const PairLists<S> &pairs, S *yhat) {
  // Each token costs about 2·R·D per listed transform of this bucket.
  const int64_t listed = pairs.ptr[OFF + N] - pairs.ptr[OFF];
  parallelRanges(B, grainFor(2 * R * D * std::max<int64_t>(1, listed / std::max<int64_t>(1, B))),
                 [&](int64_t lo, int64_t hi) {
    const int64_t rows = hi - lo;
    S *xg = scratch<S>(0, size_t(rows * D));
    S *h = scratch<S>(1, size_t(rows * R));
    S *yg = scratch<S>(2, size_t(rows * D));
    S *gates = scratch<S>(3, size_t(rows));
    int32_t *toks = scratch<int32_t>(0, size_t(rows));
    for (int64_t n = 0; n < N; ++n) {
      const int64_t t = OFF + n;
      const int32_t *begin = pairs.tok + pairs.ptr[t], *end = pairs.tok + pairs.ptr[t + 1];
      const int32_t *first = std::lower_bound(begin, end, int32_t(lo));
      const int32_t *last = std::lower_bound(first, end, int32_t(hi));
      int64_t m = 0;
      for (const int32_t *it = first; it != last; ++it) {
        S g = pairs.gate[it - pairs.tok];
        if (g == S(0))
          continue; // listed only for the θ gradient
        gatherRow(D, x, *it, xg + m * D);
        toks[m] = *it;
        gates[m++] = g;
      }
      if (m == 0)
        continue;
      gemm(Trans::No, Trans::Yes, m, R, D, S(1), xg, D, v + n * R * D, D, S(0), h, R);
      for (int64_t i = 0; i < m; ++i)
        for (int64_t r = 0; r < R; ++r)
          h[i * R + r] *= gates[i];
      gemm(Trans::No, Trans::Yes, m, D, R, S(1), h, R, u + n * D * R, R, S(0), yg, D);
      for (int64_t i = 0; i < m; ++i) {
        S *dst = yhat + int64_t(toks[i]) * D;
        const S *src = yg + i * D;
#pragma omp simd
        for (int64_t j = 0; j < D; ++j)
          dst[j] += src[j];
      }
    }
  });
}

template <typename S>
void bucketApplyBwd(int64_t D, int64_t R, int64_t N, int64_t OFF, const S *dYhat, const S *x,
                    const S *u, const S *v, const PairLists<S> &pairs, S *dU, S *dV, S *pairDgate) {
  parallelItems(N, int64_t(pairs.ptr[OFF + N] - pairs.ptr[OFF]) * 4 * R * D, [&](int64_t n) {
    const int64_t t = OFF + n;
    const int64_t p0 = pairs.ptr[t], m = pairs.ptr[t + 1] - p0;
    if (m == 0)
      return;
    S *xg = scratch<S>(0, size_t(m * D));
    S *dy = scratch<S>(1, size_t(m * D));
    S *h = scratch<S>(2, size_t(m * R));
    S *z = scratch<S>(3, size_t(m * R));
    for (int64_t i = 0; i < m; ++i) {
      gatherRow(D, x, pairs.tok[p0 + i], xg + i * D);
      gatherRow(D, dYhat, pairs.tok[p0 + i], dy + i * D);
    }
    const S *ut = u + n * D * R, *vt = v + n * R * D;
    gemm(Trans::No, Trans::Yes, m, R, D, S(1), xg, D, vt, D, S(0), h, R);
    gemm(Trans::No, Trans::No, m, R, D, S(1), dy, D, ut, R, S(0), z, R);
    for (int64_t i = 0; i < m; ++i) {
      S g = pairs.gate[p0 + i], dot = 0;
      for (int64_t r = 0; r < R; ++r) {
        dot += h[i * R + r] * z[i * R + r];
        h[i * R + r] *= g;
        z[i * R + r] *= g;
      }
      pairDgate[p0 + i] += dot;
    }
    gemm(Trans::Yes, Trans::No, D, R, m, S(1), dy, D, h, R, S(1), dU + n * D * R, R);
    gemm(Trans::Yes, Trans::No, R, D, m, S(1), z, R, xg, D, S(1), dV + n * R * D, D);
  });
}

#define MOLT_INSTANTIATE(S)                                                                        \
  template void bucketApply<S>(int64_t, int64_t, int64_t, int64_t, int64_t, const S *, const S *, \
                               const S *, const PairLists<S> &, S *);                              \
  template void bucketApplyBwd<S>(int64_t, int64_t, int64_t, int64_t, const S *, const S *,       \
                                  const S *, const S *, const PairLists<S> &, S *, S *, S *);
MOLT_INSTANTIATE(float)
MOLT_INSTANTIATE(double)
#undef MOLT_INSTANTIATE

} // namespace molt::cpu
