// Dense matrix products for the CPU kernels: OpenBLAS when the build has it, a blocked fallback otherwise.
//
// OpenMP owns the threads: BLAS is pinned to one thread and every parallel product splits its
// rows across OpenMP threads, so a product called inside a parallel region never oversubscribes
// and a row's result never depends on how many threads ran.
#pragma once

#include <cstdint>

namespace molt::cpu {

enum class Trans { No, Yes };

/// C[M,N] = alpha * op(A)[M,K] * op(B)[K,N] + beta * C, row-major, on the calling thread.
template <typename S>
void gemm(Trans ta, Trans tb, int64_t m, int64_t n, int64_t k, S alpha, const S *a, int64_t lda,
          const S *b, int64_t ldb, S beta, S *c, int64_t ldc);

/// The Gram matrix C[N,N] = op(A)·op(A)ᵀ of op(A) [N,K] (Trans::Yes: A is [K,N]), on the calling
/// thread; half the work of gemm (BLAS syrk), both triangles filled.
template <typename S> void gram(Trans ta, int64_t n, int64_t k, const S *a, int64_t lda, S *c);

/// The same product with its rows split across OpenMP threads (call outside a parallel region).
template <typename S>
void gemmParallel(Trans ta, Trans tb, int64_t m, int64_t n, int64_t k, S alpha, const S *a,
                  int64_t lda, const S *b, int64_t ldb, S beta, S *c, int64_t ldc);

} // namespace molt::cpu
