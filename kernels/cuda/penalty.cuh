// penalty and tc_penalty: the sparsity penalty S(g * norm) and its gradients, one warp per transform (or feature).
#pragma once

#include "molt_kernels/common.cuh"

namespace molt {
namespace k {

/// S(p) and S'(p) for the penalty kind: tanh(c p) or p.
template <int KIND> struct PenaltyRule {
  __device__ __forceinline__ static void eval(float p, float c, float &s, float &ds) {
    if (KIND == kPenaltyTanh) {
      const float th = tanhf(c * p);
      s = th;
      ds = c * (1.f - th * th);
    } else {
      s = p;
      ds = 1.f;
    }
  }
};

/// Shared body: for each list j (transform or feature) with weight n_j, every listed pair gets
/// pair_dgate = lambda/B S'(g n_j) n_j; d_weight_j = lambda/B sum S'(g n_j) g; stats[2] += S.
template <class C, int LISTS, class Weight, class Out>
__device__ __forceinline__ void penaltyImpl(const Args &a, const int *pptr, const float *pgate,
                                            const float *scalars, float *pdgate, float *stats,
                                            Weight weight, Out writeDWeight) {
  constexpr int TH = C::threads, WARPS = TH / 32;
  float c = 1.f;
  if constexpr (C::kind == kPenaltyTanh)
    c = C::c;
  const float scale = scalars[0] * scalars[7]; // lambda_eff / B
  __shared__ float scratch[32];
  const int lane = threadIdx.x & 31;
  float sum = 0.f;
  for (long long j = (long long)blockIdx.x * WARPS + (threadIdx.x >> 5); j < LISTS;
       j += (long long)gridDim.x * WARPS) {
    const float n = weight(int(j));
    float dn = 0.f;
    for (int q = pptr[j] + lane; q < pptr[j + 1]; q += 32) {
      const float g = pgate[q];
      float s, ds;
      PenaltyRule<C::kind>::eval(g * n, c, s, ds);
      sum += s;
      pdgate[q] = scale * ds * n;
      dn = fmaf(ds, g, dn);
    }
    writeDWeight(int(j), n, scale * warpSum(dn)); // the whole warp, value in every lane
  }
  sum = blockSum<TH>(sum, scratch);
  if (threadIdx.x == 0 && sum != 0.f)
    atomicAdd(&stats[2], sum);
}

template <class C> __device__ __forceinline__ void penalty(const Args &a) {
  const int *pptr = arg<int>(a, 0);
  const float *pgate = arg<float>(a, 1), *norm = arg<float>(a, 2), *scalars = arg<float>(a, 3);
  float *pdgate = arg<float>(a, 4), *dnorm = arg<float>(a, 5), *stats = arg<float>(a, 6);
  penaltyImpl<C, int(C::T)>(
      a, pptr, pgate, scalars, pdgate, stats, [&](int t) { return norm[t]; },
      [&](int t, float, float v) {
        if ((threadIdx.x & 31) == 0)
          dnorm[t] = v;
      });
}

/// Transcoder: p = act * ||dec_w_f||; d_dec_w_f = (lambda/B sum S'(p) act) dec_w_f / ||dec_w_f|| (=).
/// Its attrs carry no D, so the width comes from Args::d_model.
template <class C> __device__ __forceinline__ void tc_penalty(const Args &a) {
  const int D = a.d_model;
  const int *pptr = arg<int>(a, 0);
  const float *pgate = arg<float>(a, 1), *decw = arg<float>(a, 2), *scalars = arg<float>(a, 3);
  float *pdgate = arg<float>(a, 4), *ddecw = arg<float>(a, 5), *stats = arg<float>(a, 6);
  const int lane = threadIdx.x & 31;
  auto rowNorm = [&](int f) {
    float s = 0.f;
    for (int j = lane; j < D; j += 32)
      s = fmaf(decw[(long long)f * D + j], decw[(long long)f * D + j], s);
    return sqrtf(warpSum(s));
  };
  penaltyImpl<C, int(C::F)>(a, pptr, pgate, scalars, pdgate, stats, rowNorm,
                            [&](int f, float n, float g) {
                              const float s = n > 0.f ? g / n : 0.f;
                              for (int j = lane; j < D; j += 32)
                                ddecw[(long long)f * D + j] = s * decw[(long long)f * D + j];
                            });
}

} // namespace k
} // namespace molt
