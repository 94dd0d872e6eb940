// The input gradient d_x = J^T d_yhat (the `input_grad` and `vjp` entries): bucket_apply_dx,
// bucket_apply_bwd_dx, gate_bwd_dx, tc_encode_bwd_dx and skip_bwd_dx.
//
// Simple kernels: a warp per listed pair, fp32 from the master tensors (bucket_apply_bwd_dx
// reads the z its bucket_apply_bwd saved), d_x summed with fp32
// atomics (so d_x is not bit-reproducible across runs on a GPU; the CPU's is). The rank-r
// vector z = U_t^T dy lives in registers, lane l holding z[l], z[l + 32], ...
#pragma once

#include "molt_kernels/bucket_apply.cuh"
#include "molt_kernels/common.cuh"

namespace molt {
namespace k {

/// The list (transform of the bucket) that holds pair p: ptr[t] <= p < ptr[t + 1].
template <int N> __device__ __forceinline__ int listOf(const int *ptr, long long p) {
  int lo = 0, hi = N;
  while (hi - lo > 1) {
    const int mid = (lo + hi) / 2;
    if (ptr[mid] <= p)
      lo = mid;
    else
      hi = mid;
  }
  return lo;
}

/// For each listed pair of the bucket: z = U_t^T dy[tok], h = V_t x[tok]; pair_dgate += h.z
/// and d_x[tok] += g V_t^T z: bucket_apply_dx (arguments 0..6 as bucket_apply_bwd's).
template <class C> __device__ __forceinline__ void bucketInputGrad(const Args &a) {
  constexpr int D = C::D, R = C::R, N = C::N, OFF = C::OFF, WARPS = C::threads / 32;
  constexpr int RW = (R + 31) / 32;
  const float *dy = arg<float>(a, 0), *x = arg<float>(a, 1), *u = arg<float>(a, 2),
              *v = arg<float>(a, 3);
  const int *ptr = arg<int>(a, 4) + OFF, *ptok = arg<int>(a, 5);
  const float *pgate = arg<float>(a, 6);
  float *dx = arg<float>(a, 7), *pdgate = arg<float>(a, 8);
  const int lane = threadIdx.x & 31, warp = threadIdx.x >> 5;
  const long long first = ptr[0], total = ptr[N] - first;
  for (long long q = (long long)blockIdx.x * WARPS + warp; q < total;
       q += (long long)gridDim.x * WARPS) {
    const long long p = first + q;
    const int lo = listOf<N>(ptr, p);
    const float *ut = u + (long long)lo * D * R, *vt = v + (long long)lo * R * D;
    const float *dyr = dy + (long long)ptok[p] * D, *xr = x + (long long)ptok[p] * D;
    const float g = pgate[p];
    float z[RW];
    float dot = 0.f;
#pragma unroll
    for (int k = 0; k < RW; ++k) {
      const int r = lane + 32 * k;
      float zr = 0.f, hr = 0.f;
      if (r < R)
        for (int i = 0; i < D; ++i) {
          zr = fmaf(ut[(long long)i * R + r], dyr[i], zr);
          hr = fmaf(vt[(long long)r * D + i], xr[i], hr);
        }
      z[k] = g * zr;
      dot = fmaf(hr, zr, dot);
    }
    dot = warpSum(dot);
    if (lane == 0)
      pdgate[p] += dot;
    if (g == 0.f)
      continue; // warp-uniform: a pair listed only for the threshold's gradient
    float *dxr = dx + (long long)ptok[p] * D;
    for (int j0 = 0; j0 < D; j0 += 32) {
      const int j = j0 + lane;
      float s = 0.f;
#pragma unroll
      for (int k = 0; k < RW; ++k)
        for (int l = 0; l < 32; ++l) {
          const float zr = __shfl_sync(0xffffffffu, z[k], l);
          const int r = 32 * k + l;
          if (r < R && j < D)
            s = fmaf(zr, vt[(long long)r * D + j], s);
        }
      if (j < D)
        atomicAdd(&dxr[j], s);
    }
  }
}

/// d_x += sum_pairs g V_t^T (U_t^T d_yhat[tok]); pair_dgate += (V_t x).(U_t^T d_yhat[tok]).
template <class C> __device__ __forceinline__ void bucket_apply_dx(const Args &a) {
  bucketInputGrad<C>(a);
}

/// bucket_apply_bwd (d_u, d_v, pair_dgate), then d_x[tok] += g V_t^T z (argument 10) from the
/// z = U_t^T d_yhat[tok] its phase 1 saved in the scratch: no second pass over U_t and d_yhat.
/// A warp per pair, after every phase-1 item is counted done (all were taken by running blocks
/// once this block left phase 1, so the wait cannot starve a producer).
template <class C> __device__ __forceinline__ void bucket_apply_bwd_dx(const Args &a) {
  bucket_apply_bwd<C>(a);
  constexpr int D = C::D, R = C::R, N = C::N, OFF = C::OFF, WARPS = C::threads / 32;
  using Sh = ApplyShape<R, C::tile_m>;
  const int *ptr = arg<int>(a, 4) + OFF, *ptok = arg<int>(a, 5);
  const float *v = arg<float>(a, 3), *pgate = arg<float>(a, 6);
  float *dx = arg<float>(a, 10);
  const float *zsave = reinterpret_cast<const float *>(a.work + 16) + (long long)a.B * N * R;
  __shared__ unsigned items;
  if (threadIdx.x == 0) {
    unsigned total = 0;
    for (int t = 0; t < N; ++t)
      total += unsigned(cdivll(ptr[t + 1] - ptr[t], Sh::TM)) * Sh::S;
    items = total;
  }
  __syncthreads();
  waitCount(a.work + 1, items);
  const int lane = threadIdx.x & 31, warp = threadIdx.x >> 5;
  const long long first = ptr[0], total = ptr[N] - first;
  for (long long q = (long long)blockIdx.x * WARPS + warp; q < total;
       q += (long long)gridDim.x * WARPS) {
    const long long p = first + q;
    const float g = pgate[p];
    if (g == 0.f)
      continue; // warp-uniform: a pair listed only for the threshold's gradient
    const int lo = listOf<N>(ptr, p);
    const float *vt = v + (long long)lo * R * D, *zp = zsave + q * R;
    float *dxr = dx + (long long)ptok[p] * D;
    for (int j = lane; j < D; j += 32) {
      float s = 0.f;
      for (int r = 0; r < R; ++r)
        s = fmaf(__ldcg(zp + r), vt[(long long)r * D + j], s);
      atomicAdd(&dxr[j], g * s);
    }
  }
}

/// d_x[tok] += da enc_w_t, da = d_g [pre > th]: a block per list (grid-stride), a warp per pair.
template <class C, int LISTS> __device__ __forceinline__ void gateInputGrad(const Args &a) {
  constexpr int D = C::D, WARPS = C::threads / 32;
  using Rule = GateRule<C::gate>;
  const float *w = arg<float>(a, 0), *theta = arg<float>(a, 1);
  const int *pptr = arg<int>(a, 2), *ptok = arg<int>(a, 3);
  const float *ppre = arg<float>(a, 4), *pdgate = arg<float>(a, 6);
  float *dx = arg<float>(a, 7);
  const int lane = threadIdx.x & 31, warp = threadIdx.x >> 5;
  for (long long t = blockIdx.x; t < LISTS; t += gridDim.x) {
    const float th = Rule::threshold(theta, t);
    const float *wt = w + t * D;
    for (int p = pptr[t] + warp; p < pptr[t + 1]; p += WARPS) {
      const float da = Rule::open(ppre[p], th) ? pdgate[p] : 0.f;
      if (da == 0.f)
        continue; // warp-uniform
      float *dxr = dx + (long long)ptok[p] * D;
      for (int j = lane; j < D; j += 32)
        atomicAdd(&dxr[j], da * wt[j]);
    }
  }
}

template <class C> __device__ __forceinline__ void gate_bwd_dx(const Args &a) {
  gateInputGrad<C, int(C::T)>(a);
}

template <class C> __device__ __forceinline__ void tc_encode_bwd_dx(const Args &a) {
  gateInputGrad<C, int(C::F)>(a);
}

/// d_x[b][j] += sum_i d_yhat[b][i] skip_w[i][j]: 64 x 64 output blocks (grid-stride), each
/// element owned by one thread.
template <class C> __device__ __forceinline__ void skip_bwd_dx(const Args &a) {
  constexpr int D = C::D, TH = C::threads;
  const float *dy = arg<float>(a, 0), *w = arg<float>(a, 1);
  float *dx = arg<float>(a, 2);
  for (long long b0 = (long long)blockIdx.x * 64; b0 < a.B; b0 += (long long)gridDim.x * 64)
    for (int j0 = blockIdx.y * 64; j0 < D; j0 += gridDim.y * 64)
      for (int e = threadIdx.x; e < 64 * 64; e += TH) {
        const long long b = b0 + e / 64;
        const int j = j0 + e % 64;
        if (b >= a.B || j >= D)
          continue;
        float s = 0.f;
        for (int i = 0; i < D; ++i)
          s = fmaf(dy[b * D + i], w[(long long)i * D + j], s);
        dx[b * D + j] += s;
      }
}

} // namespace k
} // namespace molt
