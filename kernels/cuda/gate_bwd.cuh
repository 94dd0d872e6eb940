// gate_bwd and tc_encode_bwd: encoder, bias and threshold gradients from the pair gradients, one block per list.
//
// A block owns transform (or feature) t and every column of d_enc_w_t, so each gradient is
// written once (=) with a fixed summation order: tokens in list order.
#pragma once

#include "molt_kernels/common.cuh"

namespace molt {
namespace k {

template <class C, int LISTS, bool PLUS_BIAS> __device__ __forceinline__ void gateBwdImpl(const Args &a) {
  constexpr int D = C::D, TH = C::threads, CD = (D + TH - 1) / TH;
  constexpr int G = C::gate;
  using Rule = GateRule<G>;
  const float *x = arg<float>(a, 0), *theta = arg<float>(a, 1);
  const int *pptr = arg<int>(a, 2), *ptok = arg<int>(a, 3);
  const float *ppre = arg<float>(a, 4), *pdgate = arg<float>(a, 6);
  float *dw = arg<float>(a, 7), *db = arg<float>(a, 8), *dth = arg<float>(a, 9);
  float eps = 1.f;
  if constexpr (G == kGateJumpRelu)
    eps = C::bandwidth;
  __shared__ int toks[TH];
  __shared__ float das[TH];
  __shared__ float scratch[32];

  for (long long t = blockIdx.x; t < LISTS; t += gridDim.x) {
    const float th = Rule::threshold(theta, t);
    float acc[CD];
#pragma unroll
    for (int q = 0; q < CD; ++q)
      acc[q] = 0.f;
    float sumDa = 0.f, sumDth = 0.f;
    const int begin = pptr[t], end = pptr[t + 1];
    for (int p0 = begin; p0 < end; p0 += TH) {
      const int p = p0 + threadIdx.x;
      float da = 0.f;
      if (p < end) {
        const float pre = ppre[p], dg = pdgate[p];
        da = Rule::open(pre, th) ? dg : 0.f;
        // The STE slope -th/eps uses the applied threshold, so it is 0 for theta <= 0.
        if (G == kGateJumpRelu && fabsf(pre - th) < 0.5f * eps)
          sumDth += dg * (-th / eps);
        sumDa += da;
        toks[threadIdx.x] = ptok[p];
      }
      das[threadIdx.x] = da;
      __syncthreads();
      const int n = min(TH, end - p0);
      for (int i = 0; i < n; ++i) {
        const float d = das[i];
        if (d == 0.f)
          continue; // uniform: every thread reads the same d
        const float *xr = x + (long long)toks[i] * D;
#pragma unroll
        for (int q = 0; q < CD; ++q) {
          const int j = threadIdx.x + q * TH;
          if (j < D)
            acc[q] = fmaf(d, xr[j], acc[q]);
        }
      }
      __syncthreads();
    }
#pragma unroll
    for (int q = 0; q < CD; ++q) {
      const int j = threadIdx.x + q * TH;
      if (j < D)
        dw[t * D + j] = acc[q];
    }
    sumDa = blockSum<TH>(sumDa, scratch);
    sumDth = blockSum<TH>(sumDth, scratch);
    if (threadIdx.x == 0) {
      db[t] = PLUS_BIAS ? sumDa : -sumDa;
      if (G == kGateJumpRelu)
        dth[t] = sumDth;
    }
  }
}

/// With th = max(theta, 0): da = dg [pre > th]; d_enc_w_t = sum da x; d_enc_b_t = -sum da;
/// d_theta_t = sum dg (-th/eps) [|pre-th| < eps/2].
template <class C> __device__ __forceinline__ void gate_bwd(const Args &a) {
  gateBwdImpl<C, int(C::T), false>(a);
}

/// As gate_bwd for the transcoder encoder (pre = x.enc_w^T + enc_b, so d_enc_b = +sum da).
template <class C> __device__ __forceinline__ void tc_encode_bwd(const Args &a) {
  gateBwdImpl<C, int(C::F), true>(a);
}

} // namespace k
} // namespace molt
