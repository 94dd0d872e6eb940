// The gate tangents of kernels/cpu/jvp.h.
#include "kernels/cpu/jvp.h"

#include "kernels/cpu/parallel.h"

namespace molt::cpu {

template <typename S>
void encodeTangent(int64_t T, int64_t D, const S *xDot, const S *encW, const PairLists<S> &pairs,
                   S *pairTan) {
  parallelItems(T, int64_t(pairs.ptr[T] - pairs.ptr[0]) * D, [&](int64_t t) {
    const S *e = encW + t * D;
    for (int32_t p = pairs.ptr[t]; p < pairs.ptr[t + 1]; ++p) {
      S dot = 0;
      if (pairs.gate[p] > S(0)) {
        const S *v = xDot + int64_t(pairs.tok[p]) * D;
#pragma omp simd reduction(+ : dot)
        for (int64_t j = 0; j < D; ++j)
          dot += e[j] * v[j];
      }
      pairTan[p] = dot;
    }
  });
}

template void encodeTangent<float>(int64_t, int64_t, const float *, const float *,
                                   const PairLists<float> &, float *);
template void encodeTangent<double>(int64_t, int64_t, const double *, const double *,
                                    const PairLists<double> &, double *);

} // namespace molt::cpu
