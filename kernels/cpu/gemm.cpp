// Dense matrix products: the BLAS binding and the blocked fallback behind kernels/cpu/gemm.h.
#include "kernels/cpu/gemm.h"

#include <algorithm>
#include <cstdlib>
#include <type_traits>
#include <vector>

#ifdef MOLT_HAVE_BLAS
#include <cblas.h>
#include <dlfcn.h>
#endif

#include "kernels/cpu/parallel.h"
#include "molt/config.h"

namespace molt::cpu {

namespace {

#ifdef MOLT_HAVE_BLAS
// OpenBLAS is opened at first use rather than linked, because it picks its kernel family once,
// when it loads: from OPENBLAS_CORETYPE, else from its own table of CPU models. Debian 12's
// 0.3.21 does not know recent Xeons and runs its generic "Prescott" kernels on them
// (OPENBLAS_VERBOSE=2 prints the choice; bench_cpu_train_step's gpt2-n8 sparse step took 1408 ms
// that way, 527 ms with SkylakeX). Unless the user chose a family, molt names the one the CPU's
// features allow before loading it.
struct Blas {
  decltype(&cblas_sgemm) sgemm = nullptr;
  decltype(&cblas_dgemm) dgemm = nullptr;
  decltype(&cblas_ssyrk) ssyrk = nullptr;
  decltype(&cblas_dsyrk) dsyrk = nullptr;
};

/// The OpenBLAS kernel family this CPU can run, best first; null: leave it to OpenBLAS.
const char *coretypeFor() {
  __builtin_cpu_init();
  if (__builtin_cpu_supports("avx512f") && __builtin_cpu_supports("avx512bw") &&
      __builtin_cpu_supports("avx512dq") && __builtin_cpu_supports("avx512vl"))
    return "SkylakeX";
  if (__builtin_cpu_supports("avx2") && __builtin_cpu_supports("fma"))
    return "Haswell";
  return nullptr;
}

/// The loaded library, pinned to one thread (OpenMP owns the threads); null when it cannot be
/// opened, and the blocked products run instead.
const Blas *openBlas() {
  static const Blas *table = []() -> const Blas * {
    if (config::openblasCoretype().empty())
      if (const char *core = coretypeFor())
        setenv("OPENBLAS_CORETYPE", core, 0);
    void *lib = nullptr;
    for (const char *name : {"libopenblas.so.0", MOLT_OPENBLAS_LIBRARY})
      if ((lib = dlopen(name, RTLD_NOW | RTLD_LOCAL)))
        break;
    if (!lib)
      return nullptr;
    static Blas b;
    b.sgemm = reinterpret_cast<decltype(b.sgemm)>(dlsym(lib, "cblas_sgemm"));
    b.dgemm = reinterpret_cast<decltype(b.dgemm)>(dlsym(lib, "cblas_dgemm"));
    b.ssyrk = reinterpret_cast<decltype(b.ssyrk)>(dlsym(lib, "cblas_ssyrk"));
    b.dsyrk = reinterpret_cast<decltype(b.dsyrk)>(dlsym(lib, "cblas_dsyrk"));
    auto threads = reinterpret_cast<void (*)(int)>(dlsym(lib, "openblas_set_num_threads"));
    if (!b.sgemm || !b.dgemm || !b.ssyrk || !b.dsyrk || !threads)
      return nullptr;
    threads(1);
    return &b;
  }();
  return table;
}

CBLAS_TRANSPOSE cblasTrans(Trans t) { return t == Trans::Yes ? CblasTrans : CblasNoTrans; }

void blas(const Blas &l, Trans ta, Trans tb, int64_t m, int64_t n, int64_t k, float alpha,
          const float *a, int64_t lda, const float *b, int64_t ldb, float beta, float *c,
          int64_t ldc) {
  l.sgemm(CblasRowMajor, cblasTrans(ta), cblasTrans(tb), int(m), int(n), int(k), alpha, a,
          int(lda), b, int(ldb), beta, c, int(ldc));
}
void blas(const Blas &l, Trans ta, Trans tb, int64_t m, int64_t n, int64_t k, double alpha,
          const double *a, int64_t lda, const double *b, int64_t ldb, double beta, double *c,
          int64_t ldc) {
  l.dgemm(CblasRowMajor, cblasTrans(ta), cblasTrans(tb), int(m), int(n), int(k), alpha, a,
          int(lda), b, int(ldb), beta, c, int(ldc));
}
#endif

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

} // namespace

template <typename S>
void gemm(Trans ta, Trans tb, int64_t m, int64_t n, int64_t k, S alpha, const S *a, int64_t lda,
          const S *b, int64_t ldb, S beta, S *c, int64_t ldc) {
  if (m <= 0 || n <= 0)
    return;
#ifdef MOLT_HAVE_BLAS
  if (const Blas *l = openBlas()) {
    blas(*l, ta, tb, m, n, k, alpha, a, lda, b, ldb, beta, c, ldc);
    return;
  }
#endif
  blocked(ta, tb, m, n, k, alpha, a, lda, b, ldb, beta, c, ldc);
}

template <typename S> void gram(Trans ta, int64_t n, int64_t k, const S *a, int64_t lda, S *c) {
#ifdef MOLT_HAVE_BLAS
  if (const Blas *l = openBlas()) {
    if constexpr (std::is_same_v<S, float>)
      l->ssyrk(CblasRowMajor, CblasUpper, cblasTrans(ta), int(n), int(k), 1.f, a, int(lda), 0.f,
               c, int(n));
    else
      l->dsyrk(CblasRowMajor, CblasUpper, cblasTrans(ta), int(n), int(k), 1.0, a, int(lda), 0.0,
               c, int(n));
    for (int64_t i = 0; i < n; ++i)
      for (int64_t j = 0; j < i; ++j)
        c[i * n + j] = c[j * n + i];
    return;
  }
#endif
  Trans tb = ta == Trans::Yes ? Trans::No : Trans::Yes;
  gemm(ta, tb, n, n, k, S(1), a, lda, a, lda, S(0), c, n);
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
