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

/// Applies transforms [nlo, nhi) of the bucket, each to its open tokens gathered into one
/// matrix (two GEMMs with V_t / U_t hot), scatter-adding into `out` in transform order.
template <typename S>
void applyTransforms(int64_t B, int64_t D, int64_t R, int64_t OFF, int64_t nlo, int64_t nhi,
                     const S *x, const S *u, const S *v, const PairLists<S> &pairs, S *out) {
  S *xg = scratch<S>(kScratch0, size_t(B * D));
  S *h = scratch<S>(kScratch1, size_t(B * R));
  S *yg = scratch<S>(kScratch2, size_t(B * D));
  S *gates = scratch<S>(kScratch3, size_t(B));
  int32_t *toks = scratch<int32_t>(kScratch0, size_t(B));
  for (int64_t n = nlo; n < nhi; ++n) {
    const int64_t t = OFF + n;
    int64_t m = 0;
    for (int32_t p = pairs.ptr[t]; p < pairs.ptr[t + 1]; ++p) {
      if (pairs.gate[p] == S(0))
        continue; // listed only for the θ gradient
      gatherRow(D, x, pairs.tok[p], xg + m * D);
      toks[m] = pairs.tok[p];
      gates[m++] = pairs.gate[p];
    }
    if (m == 0)
      continue;
    gemm(Trans::No, Trans::Yes, m, R, D, S(1), xg, D, v + n * R * D, D, S(0), h, R);
    for (int64_t i = 0; i < m; ++i)
      for (int64_t r = 0; r < R; ++r)
        h[i * R + r] *= gates[i];
    gemm(Trans::No, Trans::Yes, m, D, R, S(1), h, R, u + n * D * R, R, S(0), yg, D);
    for (int64_t i = 0; i < m; ++i) {
      S *dst = out + int64_t(toks[i]) * D;
      const S *src = yg + i * D;
#pragma omp simd
      for (int64_t j = 0; j < D; ++j)
        dst[j] += src[j];
    }
  }
}

// Runs part(nlo, nhi, dst) over contiguous transform ranges of about equal pair counts, one
// per thread (so each weight is read once), each range scatter-adding into its own [B, D]
// output: the first straight into `out`, the others into zeroed private ones, then added in
// range order. The bits depend on the data and the thread count only.
template <typename S, typename Part>
void byTransformRanges(int64_t B, int64_t D, int64_t N, int64_t OFF, const PairLists<S> &pairs,
                       int64_t workPerPair, S *out, Part &&part) {
  const int64_t base = pairs.ptr[OFF], total = pairs.ptr[OFF + N] - base;
  const int parts = int(std::clamp<int64_t>(total * workPerPair / kParallelWork, 1,
                                            std::min<int64_t>(threadCount(), N)));
  if (parts == 1) {
    part(int64_t(0), N, out);
    return;
  }
  std::vector<int64_t> first(size_t(parts) + 1, N);
  first[0] = 0;
  for (int p = 1; p < parts; ++p) {
    int64_t n = first[size_t(p) - 1];
    while (n < N && pairs.ptr[OFF + n] - base < total * p / parts)
      ++n;
    first[size_t(p)] = n;
  }
  S *acc = scratch<S>(kAccumulators, size_t(parts - 1) * size_t(B * D));
  auto partOutput = [&](int p) { return acc + int64_t(p - 1) * B * D; };
#pragma omp parallel for schedule(static, 1) num_threads(parts)
  for (int p = 0; p < parts; ++p) {
    S *mine = p == 0 ? out : partOutput(p);
    if (p > 0)
      std::memset(mine, 0, size_t(B * D) * sizeof(S));
    part(first[size_t(p)], first[size_t(p) + 1], mine);
  }
  parallelRanges(B, grainFor(parts * D), [&](int64_t lo, int64_t hi) {
    for (int p = 1; p < parts; ++p) {
      const S *src = partOutput(p);
      for (int64_t i = lo * D; i < hi * D; ++i)
        out[i] += src[i];
    }
  });
}

template <typename S>
void bucketApply(int64_t B, int64_t D, int64_t R, int64_t N, int64_t OFF, const S *x, const S *u,
                 const S *v, const PairLists<S> &pairs, S *yhat) {
  byTransformRanges(B, D, N, OFF, pairs, 2 * R * D, yhat, [&](int64_t lo, int64_t hi, S *dst) {
    applyTransforms(B, D, R, OFF, lo, hi, x, u, v, pairs, dst);
  });
}

// Transform n's backward over its listed pairs: h = X V_tᵀ, z = dY U_t, pair_dgate += h·z;
// with dU (and dV) d_u_t += dYᵀ(g h), d_v_t += (g z)ᵀ X; with dX, dX[tok] += (g z) V_t.
template <typename S>
void transformBackward(int64_t D, int64_t R, int64_t OFF, int64_t n, const S *dYhat, const S *x,
                       const S *u, const S *v, const PairLists<S> &pairs, S *dU, S *dV,
                       S *pairDgate, S *dX) {
  const int64_t t = OFF + n;
  const int64_t p0 = pairs.ptr[t], m = pairs.ptr[t + 1] - p0;
  if (m == 0)
    return;
  S *xg = scratch<S>(kScratch0, size_t(m * D));
  S *dy = scratch<S>(kScratch1, size_t(m * D));
  S *h = scratch<S>(kScratch2, size_t(m * R));
  S *z = scratch<S>(kScratch3, size_t(m * R));
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
  if (dU) {
    gemm(Trans::Yes, Trans::No, D, R, m, S(1), dy, D, h, R, S(1), dU + n * D * R, R);
    gemm(Trans::Yes, Trans::No, R, D, m, S(1), z, R, xg, D, S(1), dV + n * R * D, D);
  }
  if (!dX)
    return;
  // dx rows = (g z) V_t, reusing the gathered-x scratch, then scattered to their tokens.
  gemm(Trans::No, Trans::No, m, D, R, S(1), z, R, vt, D, S(0), xg, D);
  for (int64_t i = 0; i < m; ++i) {
    S *dst = dX + int64_t(pairs.tok[p0 + i]) * D;
    const S *src = xg + i * D;
#pragma omp simd
    for (int64_t j = 0; j < D; ++j)
      dst[j] += src[j];
  }
}

template <typename S>
void bucketApplyBwd(int64_t D, int64_t R, int64_t N, int64_t OFF, const S *dYhat, const S *x,
                    const S *u, const S *v, const PairLists<S> &pairs, S *dU, S *dV, S *pairDgate) {
  parallelItems(N, int64_t(pairs.ptr[OFF + N] - pairs.ptr[OFF]) * 4 * R * D, [&](int64_t n) {
    transformBackward(D, R, OFF, n, dYhat, x, u, v, pairs, dU, dV, pairDgate, (S *)nullptr);
  });
}

template <typename S>
void bucketApplyDx(int64_t B, int64_t D, int64_t R, int64_t N, int64_t OFF, const S *dYhat,
                   const S *x, const S *u, const S *v, const PairLists<S> &pairs, S *dU, S *dV,
                   S *pairDgate, S *dX) {
  if (!dU || !dV)
    dU = dV = nullptr;
  byTransformRanges(B, D, N, OFF, pairs, 4 * R * D, dX, [&](int64_t lo, int64_t hi, S *dst) {
    for (int64_t n = lo; n < hi; ++n)
      transformBackward(D, R, OFF, n, dYhat, x, u, v, pairs, dU, dV, pairDgate, dst);
  });
}

#define MOLT_INSTANTIATE(S)                                                                        \
  template void bucketApplyDx<S>(int64_t, int64_t, int64_t, int64_t, int64_t, const S *,          \
                                 const S *, const S *, const S *, const PairLists<S> &, S *, S *,  \
                                 S *, S *);                                                         \
  template void bucketApply<S>(int64_t, int64_t, int64_t, int64_t, int64_t, const S *, const S *, \
                               const S *, const PairLists<S> &, S *);                              \
  template void bucketApplyBwd<S>(int64_t, int64_t, int64_t, int64_t, const S *, const S *,       \
                                  const S *, const S *, const PairLists<S> &, S *, S *, S *);
MOLT_INSTANTIATE(float)
MOLT_INSTANTIATE(double)
#undef MOLT_INSTANTIATE

} // namespace molt::cpu
