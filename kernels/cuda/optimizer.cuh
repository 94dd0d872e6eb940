// grad_norm and adam: one pass over every parameter, through the executor's ParamEntry table (Args::params).
#pragma once

#include "molt_kernels/common.cuh"

namespace molt {
namespace k {

/// stats[4] = sum over the list of ||d_p||^2; stats[5] = 1 when that or a loss stat is non-finite.
/// p[0] = stats.
template <class C> __device__ __forceinline__ void grad_norm(const Args &a) {
  constexpr int TH = C::threads;
  float *stats = arg<float>(a, 0);
  __shared__ float scratch[32];
  float s = 0.f;
  const long long stride = (long long)gridDim.x * TH;
  for (int e = 0; e < a.nparams; ++e) {
    const float *d = a.params[e].d;
    const long long n = a.params[e].n;
    for (long long i = (long long)blockIdx.x * TH + threadIdx.x; i < n; i += stride)
      s = fmaf(d[i], d[i], s);
  }
  s = blockSum<TH>(s, scratch);
  if (threadIdx.x == 0) {
    atomicAdd(&stats[4], s);
    if (nonFinite(s) || (blockIdx.x == 0 && (nonFinite(stats[0]) || nonFinite(stats[2]))))
      stats[5] = 1.f;
  }
}

/// Adam with bias correction and global-norm clipping; skipped when stats[5] > 0. Writes each
/// param's bf16 copy (ParamEntry::lp) where the executor keeps one.
/// p[0] = scalars, p[1] = stats.
template <class C> __device__ __forceinline__ void adam(const Args &a) {
  constexpr int TH = C::threads;
  const float *sc = arg<float>(a, 0), *stats = arg<float>(a, 1);
  if (stats[5] > 0.f || nonFinite(stats[4]))
    return;
  const float lr = sc[1], b1 = sc[2], b2 = sc[3], eps = sc[4], clip = sc[5], step = sc[6];
  const float gnorm = sqrtf(stats[4]);
  const float gscale = clip > 0.f && gnorm > clip ? clip / gnorm : 1.f;
  const float c1 = 1.f / (1.f - powf(b1, step)), c2 = 1.f / (1.f - powf(b2, step));
  const long long stride = (long long)gridDim.x * TH;
  for (int e = 0; e < a.nparams; ++e) {
    const ParamEntry pe = a.params[e];
    for (long long i = (long long)blockIdx.x * TH + threadIdx.x; i < pe.n; i += stride) {
      const float g = pe.d[i] * gscale;
      const float m = b1 * pe.m[i] + (1.f - b1) * g;
      const float v = b2 * pe.v[i] + (1.f - b2) * g * g;
      pe.m[i] = m;
      pe.v[i] = v;
      const float p = pe.p[i] - lr * (m * c1) / (sqrtf(v * c2) + eps);
      pe.p[i] = p;
      if (pe.lp) // a bf16 plan's streamed copy follows the fp32 master in the same pass
        pe.lp[i] = floatToBf16(p);
    }
  }
}

} // namespace k
} // namespace molt
