// Dense matrix products: the BLAS binding and the blocked fallback behind kernels/cpu/gemm.h.
#include "kernels/cpu/gemm.h"

#include <algorithm>
#include <mutex>
#include <type_traits>
#include <vector>

#ifdef MOLT_HAVE_BLAS
#include <cblas.h>
#endif

#include "kernels/cpu/parallel.h"

namespace molt::cpu {

void pinBlasThreads() {
#ifdef MOLT_HAVE_BLAS
  static std::once_flag once;
  std::call_once(once, [] { openblas_set_num_threads(1); });
#endif
}

namespace {

#ifdef MOLT_HAVE_BLAS
CBLAS_TRANSPOSE cblasTrans(Trans t) { return t == Trans::Yes ? CblasTrans : CblasNoTrans; }

void blas(Trans ta, Trans tb, int64_t m, int64_t n, int64_t k, float alpha, const float *a,
          int64_t lda, const float *b, int64_t ldb, float beta, float *c, int64_t ldc) {
  cblas_sgemm(CblasRowMajor, cblasTrans(ta), cblasTrans(tb), int(m), int(n), int(k), alpha, a,
              int(lda), b, int(ldb), beta, c, int(ldc));
}
void blas(Trans ta, Trans tb, int64_t m, int64_t n, int64_t k, double alpha, const double *a,
          int64_t lda, const double *b, int64_t ldb, double beta, double *c, int64_t ldc) {
  cblas_dgemm(CblasRowMajor, cblasTrans(ta), cblasTrans(tb), int(m), int(n), int(k), alpha, a,
              int(lda), b, int(ldb), beta, c, int(ldc));
}
#else
// Packs op(B) into a contiguous K-major panel so the inner loop is a unit-stride axpy the
// compiler vectorises; blocking over K keeps a panel slice in L2 while the rows of A stream.
template <typename S>
void blocked(Trans ta, Trans tb, int64_t m, int64_t n, int64_t k, S alpha, const S *a,
             int64_t lda, const S *b, int64_t ldb, S beta, S *c, int64_t ldc) {
  for (int64_t i = 0; i < m; ++i)
    for (int64_t j = 0; j < n; ++j)
      c[i * ldc + j] = beta == S(0) ? S(0) : beta * c[i * ldc + j];
  constexpr int64_t kBlock = 128;
  std::vector<S> panel(size_t(std::min(k, kBlock) * n));
  for (int64_t p0 = 0; p0 < k; p0 += kBlock) {
    int64_t pk = std::min(kBlock, k - p0);
    for (int64_t p = 0; p < pk; ++p)
      for (int64_t j = 0; j < n; ++j)
        panel[size_t(p * n + j)] = tb == Trans::Yes ? b[j * ldb + p0 + p] : b[(p0 + p) * ldb + j];
    for (int64_t i = 0; i < m; ++i) {
      S *crow = c + i * ldc;
      for (int64_t p = 0; p < pk; ++p) {
        S av = alpha * (ta == Trans::Yes ? a[(p0 + p) * lda + i] : a[i * lda + p0 + p]);
        const S *prow = panel.data() + p * n;
#pragma omp simd
        for (int64_t j = 0; j < n; ++j)
          crow[j] += av * prow[j];
      }
    }
  }
}
#endif

} // namespace

template <typename S>
void gemm(Trans ta, Trans tb, int64_t m, int64_t n, int64_t k, S alpha, const S *a, int64_t lda,
          const S *b, int64_t ldb, S beta, S *c, int64_t ldc) {
  if (m <= 0 || n <= 0)
    return;
#ifdef MOLT_HAVE_BLAS
  pinBlasThreads();
  blas(ta, tb, m, n, k, alpha, a, lda, b, ldb, beta, c, ldc);
#else
  blocked(ta, tb, m, n, k, alpha, a, lda, b, ldb, beta, c, ldc);
#endif
}

template <typename S> void gram(Trans ta, int64_t n, int64_t k, const S *a, int64_t lda, S *c) {
#ifdef MOLT_HAVE_BLAS
  pinBlasThreads();
  if constexpr (std::is_same_v<S, float>)
    cblas_ssyrk(CblasRowMajor, CblasUpper, cblasTrans(ta), int(n), int(k), 1.f, a, int(lda), 0.f,
                c, int(n));
  else
    cblas_dsyrk(CblasRowMajor, CblasUpper, cblasTrans(ta), int(n), int(k), 1.0, a, int(lda), 0.0,
                c, int(n));
  for (int64_t i = 0; i < n; ++i)
    for (int64_t j = 0; j < i; ++j)
      c[i * n + j] = c[j * n + i];
#else
  Trans tb = ta == Trans::Yes ? Trans::No : Trans::Yes;
  gemm(ta, tb, n, n, k, S(1), a, lda, a, lda, S(0), c, n);
#endif
}

template <typename S>
void gemmParallel(Trans ta, Trans tb, int64_t m, int64_t n, int64_t k, S alpha, const S *a,
                  int64_t lda, const S *b, int64_t ldb, S beta, S *c, int64_t ldc) {
  // Row blocks of op(A) start at a column of A when A is transposed.
  parallelRanges(m, grainFor(n * k), [&](int64_t lo, int64_t hi) {
    const S *ablock = ta == Trans::Yes ? a + lo : a + lo * lda;
    gemm(ta, tb, hi - lo, n, k, alpha, ablock, lda, b, ldb, beta, c + lo * ldc, ldc);
  });
}

#define MOLT_INSTANTIATE(S)                                                                        \
  template void gemm<S>(Trans, Trans, int64_t, int64_t, int64_t, S, const S *, int64_t,           \
                        const S *, int64_t, S, S *, int64_t);                                      \
  template void gemmParallel<S>(Trans, Trans, int64_t, int64_t, int64_t, S, const S *, int64_t,   \
                                const S *, int64_t, S, S *, int64_t);                              \
  template void gram<S>(Trans, int64_t, int64_t, const S *, int64_t, S *);
MOLT_INSTANTIATE(float)
MOLT_INSTANTIATE(double)
#undef MOLT_INSTANTIATE

} // namespace molt::cpu
