// add_bias, mse_loss and bias_grad: the per-token elementwise and column-sum kernels around the reconstruction.
#pragma once

#include "molt_kernels/common.cuh"

namespace molt {
namespace k {

/// yhat[b][j] += dec_b[j].
template <class C> __device__ __forceinline__ void add_bias(const Args &a) {
  constexpr int D = C::D;
  const float *bias = arg<float>(a, 0);
  float *yhat = arg<float>(a, 1);
  const long long n = a.B * D;
  for (long long i = (long long)blockIdx.x * blockDim.x + threadIdx.x; i < n;
       i += (long long)gridDim.x * blockDim.x)
    yhat[i] += bias[i % D];
}

/// d_yhat = 2 (yhat - y) / B; stats[0] += sse, stats[1] += sum y^2, stats[6] += sum y.
template <class C> __device__ __forceinline__ void mse_loss(const Args &a) {
  constexpr int D = C::D, TH = C::threads;
  const float *yhat = arg<float>(a, 0), *y = arg<float>(a, 1);
  float *dy = arg<float>(a, 2), *stats = arg<float>(a, 3);
  __shared__ float scratch[32];
  const long long n = a.B * D;
  const float scale = 2.f / float(a.B);
  float sse = 0.f, sy2 = 0.f, sy = 0.f;
  for (long long i = (long long)blockIdx.x * TH + threadIdx.x; i < n; i += (long long)gridDim.x * TH) {
    const float yi = y[i], diff = yhat[i] - yi;
    dy[i] = scale * diff;
    sse = fmaf(diff, diff, sse);
    sy2 = fmaf(yi, yi, sy2);
    sy += yi;
  }
  sse = blockSum<TH>(sse, scratch);
  sy2 = blockSum<TH>(sy2, scratch);
  sy = blockSum<TH>(sy, scratch);
  if (threadIdx.x == 0) {
    atomicAdd(&stats[0], sse);
    atomicAdd(&stats[1], sy2);
    atomicAdd(&stats[6], sy);
  }
}

/// d_dec_b[j] = sum_b d_yhat[b][j] (=): a block owns 32 columns, so the sum order is fixed.
template <class C> __device__ __forceinline__ void bias_grad(const Args &a) {
  constexpr int D = C::D, TH = C::threads, COLS = 32, ROWS = TH / COLS;
  static_assert(TH % COLS == 0, "threads must be a multiple of 32");
  const float *dy = arg<float>(a, 0);
  float *db = arg<float>(a, 1);
  __shared__ float part[ROWS][COLS + 1];
  const int c = threadIdx.x % COLS, r = threadIdx.x / COLS;
  for (int j0 = blockIdx.x * COLS; j0 < D; j0 += gridDim.x * COLS) {
    const int j = j0 + c;
    float s = 0.f;
    if (j < D)
      for (long long b = r; b < a.B; b += ROWS)
        s += dy[b * D + j];
    part[r][c] = s;
    __syncthreads();
    if (r == 0 && j < D) {
      float total = 0.f;
#pragma unroll
      for (int q = 0; q < ROWS; ++q)
        total += part[q][c];
      db[j] = total;
    }
    __syncthreads();
  }
}

} // namespace k
} // namespace molt
