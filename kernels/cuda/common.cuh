// Device building blocks shared by the kernel families: reductions, scans, SIMT tile products, tickets.
#pragma once

#include "molt_kernels/abi.cuh"

namespace molt {
namespace k {

template <class T> __device__ __forceinline__ T *arg(const Args &a, int i) {
  return static_cast<T *>(a.p[i]);
}

__device__ __forceinline__ float warpSum(float v) {
#pragma unroll
  for (int o = 16; o > 0; o >>= 1)
    v += __shfl_xor_sync(0xffffffffu, v, o);
  return v;
}

/// Sum over the block; the result is valid in every thread. `scratch` holds >= 32 floats.
template <int THREADS> __device__ __forceinline__ float blockSum(float v, float *scratch) {
  static_assert(THREADS % 32 == 0, "whole warps");
  constexpr int W = THREADS / 32;
  v = warpSum(v);
  __syncthreads(); // scratch may still be read from a previous call
  if ((threadIdx.x & 31) == 0)
    scratch[threadIdx.x >> 5] = v;
  __syncthreads();
  float r = 0.f;
#pragma unroll
  for (int w = 0; w < W; ++w)
    r += scratch[w];
  return r;
}

/// Exclusive prefix sum of one int per thread over the block; `total` gets the block sum.
/// `scratch` holds >= 32 ints.
template <int THREADS>
__device__ __forceinline__ int blockExclusiveScan(int v, int *scratch, int &total) {
  constexpr int W = THREADS / 32;
  const int lane = threadIdx.x & 31, warp = threadIdx.x >> 5;
  int incl = v;
#pragma unroll
  for (int o = 1; o < 32; o <<= 1) {
    int n = __shfl_up_sync(0xffffffffu, incl, o);
    if (lane >= o)
      incl += n;
  }
  __syncthreads();
  if (lane == 31)
    scratch[warp] = incl;
  __syncthreads();
  int before = 0;
  total = 0;
#pragma unroll
  for (int w = 0; w < W; ++w) {
    int s = scratch[w];
    before += w < warp ? s : 0;
    total += s;
  }
  return before + incl - v;
}

/// Atomically takes the next work item from a zeroed counter, broadcast to the block.
__device__ __forceinline__ unsigned takeTicket(unsigned *counter, unsigned *slot) {
  __syncthreads();
  if (threadIdx.x == 0)
    *slot = atomicAdd(counter, 1u);
  __syncthreads();
  return *slot;
}

/// Spins until *counter >= target. Safe only when every unit of work counted by `counter` has
/// already been taken by a running block (tickets), so no waiter can starve a producer.
__device__ __forceinline__ void waitCount(unsigned *counter, unsigned target) {
  if (threadIdx.x == 0) {
    while (*(volatile unsigned *)counter < target)
      __nanosleep(256);
    __threadfence();
  }
  __syncthreads();
}

/// Register-blocked SIMT tile product: C[M][N] += sum_k A[k][m] * B[k][n] with A and B staged
/// k-major in shared memory. Thread (ty, tx) of a 16-wide grid owns rows ty + i*TY and columns
/// tx + j*16, so a warp reads two A words (broadcast) and 16 consecutive B words per k.
template <int M, int N, int THREADS> struct TileAcc {
  static constexpr int TX = 16, TY = THREADS / 16;
  static constexpr int IM = M / TY, IN = N / TX;
  static_assert(THREADS % 16 == 0 && M % TY == 0 && N % TX == 0, "tile must divide the threads");
  float c[IM][IN];

  __device__ __forceinline__ void zero() {
#pragma unroll
    for (int i = 0; i < IM; ++i)
#pragma unroll
      for (int j = 0; j < IN; ++j)
        c[i][j] = 0.f;
  }
  __device__ __forceinline__ static int row(int i) { return int(threadIdx.x) / TX + i * TY; }
  __device__ __forceinline__ static int col(int j) { return int(threadIdx.x) % TX + j * TX; }

  /// Accumulates K steps; As is [K][LDA] (m fastest), Bs is [K][LDB] (n fastest).
  template <int K, int LDA, int LDB>
  __device__ __forceinline__ void mma(const float *As, const float *Bs) {
#pragma unroll 8
    for (int kk = 0; kk < K; ++kk) {
      float av[IM], bv[IN];
#pragma unroll
      for (int i = 0; i < IM; ++i)
        av[i] = As[kk * LDA + row(i)];
#pragma unroll
      for (int j = 0; j < IN; ++j)
        bv[j] = Bs[kk * LDB + col(j)];
#pragma unroll
      for (int i = 0; i < IM; ++i)
#pragma unroll
        for (int j = 0; j < IN; ++j)
          c[i][j] = fmaf(av[i], bv[j], c[i][j]);
    }
  }
};

/// Stages a [ROWS x K] slab, read row by row from global memory (k contiguous: coalesced), into
/// shared memory transposed as s[k][row] with leading dimension LD (odd LD keeps the transposed
/// stores free of bank conflicts). `f(row, k)` returns the element or 0 past the edge.
template <int ROWS, int K, int LD, int THREADS, class F>
__device__ __forceinline__ void stageRowsT(float *s, F f) {
  for (int idx = threadIdx.x; idx < ROWS * K; idx += THREADS) {
    const int r = idx / K, kk = idx % K;
    s[kk * LD + r] = f(r, kk);
  }
}

/// Stages a [K x COLS] slab whose columns are contiguous in global memory as s[k][col].
template <int K, int COLS, int LD, int THREADS, class F>
__device__ __forceinline__ void stageCols(float *s, F f) {
  for (int idx = threadIdx.x; idx < K * COLS; idx += THREADS) {
    const int kk = idx / COLS, c = idx % COLS;
    s[kk * LD + c] = f(kk, c);
  }
}

__device__ __forceinline__ long long cdivll(long long x, long long n) { return (x + n - 1) / n; }

/// True for NaN and +-Inf.
__device__ __forceinline__ bool nonFinite(float v) { return !(fabsf(v) <= 3.402823466e38f); }

} // namespace k
} // namespace molt
