// Gram-matrix Frobenius norms of kernels/cpu/frob_norm.h.
#include "kernels/cpu/frob_norm.h"

#include <algorithm>
#include <cmath>

#include "kernels/cpu/gemm.h"
#include "kernels/cpu/parallel.h"

namespace molt::cpu {

template <typename S>
void frobNorm(int64_t D, int64_t R, int64_t N, const S *u, const S *v, S *norm, S *gramU, S *gramV) {
  parallelItems(N, N * R * R * D, [&](int64_t n) {
    const S *ut = u + n * D * R, *vt = v + n * R * D;
    S *gu = gramU + n * R * R, *gv = gramV + n * R * R;
    gram(Trans::Yes, R, D, ut, R, gu); // UᵀU, U is [D,R]
    gram(Trans::No, R, D, vt, D, gv);  // VVᵀ, V is [R,D]
    // trace(gu·gv) = Σ gu∘gv because gv is symmetric; rounding can leave it a hair below 0.
    double tr = 0.0;
    for (int64_t i = 0; i < R * R; ++i)
      tr += double(gu[i]) * double(gv[i]);
    norm[n] = S(std::sqrt(std::max(0.0, tr)));
  });
}

template <typename S>
void frobNormBwd(int64_t D, int64_t R, int64_t N, const S *dNorm, const S *norm, const S *u,
                 const S *v, const S *gramU, const S *gramV, S *dU, S *dV) {
  parallelItems(N, 2 * N * R * R * D, [&](int64_t n) {
    if (norm[n] == S(0) || dNorm[n] == S(0))
      return;
    S s = dNorm[n] / norm[n];
    const S *ut = u + n * D * R, *vt = v + n * R * D;
    gemm(Trans::No, Trans::No, D, R, R, s, ut, R, gramV + n * R * R, R, S(1), dU + n * D * R, R);
    gemm(Trans::No, Trans::No, R, D, R, s, gramU + n * R * R, R, vt, D, S(1), dV + n * R * D, D);
  });
}

#define MOLT_INSTANTIATE(S)                                                                        \
  template void frobNorm<S>(int64_t, int64_t, int64_t, const S *, const S *, S *, S *, S *);      \
  template void frobNormBwd<S>(int64_t, int64_t, int64_t, const S *, const S *, const S *,         \
                               const S *, const S *, const S *, S *, S *);
MOLT_INSTANTIATE(float)
MOLT_INSTANTIATE(double)
#undef MOLT_INSTANTIATE

} // namespace molt::cpu
