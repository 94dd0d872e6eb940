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
  auto update = [&](const ParamEntry &pe, long long i, float g, float m0, float v0, float p0) {
    g *= gscale;
    const float m = b1 * m0 + (1.f - b1) * g;
    const float v = b2 * v0 + (1.f - b2) * g * g;
    const float p = p0 - lr * (m * c1) / (sqrtf(v * c2) + eps);
    if (pe.lp) // a bf16 plan's streamed copy follows the fp32 master in the same pass
      pe.lp[i] = floatToBf16(p);
    return float4{m, v, p, 0.f};
  };
  const long long stride = (long long)gridDim.x * TH;
  for (int e = 0; e < a.nparams; ++e) {
    const ParamEntry pe = a.params[e];
    // 16-byte loads and stores of p, d_p, m, v where all four are aligned (the executors'
    // allocations are), then the tail (or an unaligned param) one element at a time.
    const bool vec = ((reinterpret_cast<unsigned long long>(pe.p) | reinterpret_cast<unsigned long long>(pe.d) |
                       reinterpret_cast<unsigned long long>(pe.m) | reinterpret_cast<unsigned long long>(pe.v)) &
                      15) == 0;
    const long long n4 = vec ? pe.n / 4 : 0;
    for (long long q = (long long)blockIdx.x * TH + threadIdx.x; q < n4; q += stride) {
      const float4 g = reinterpret_cast<const float4 *>(pe.d)[q];
      const float4 m = reinterpret_cast<const float4 *>(pe.m)[q];
      const float4 v = reinterpret_cast<const float4 *>(pe.v)[q];
      const float4 p = reinterpret_cast<const float4 *>(pe.p)[q];
      const float4 r0 = update(pe, 4 * q, g.x, m.x, v.x, p.x), r1 = update(pe, 4 * q + 1, g.y, m.y, v.y, p.y),
                   r2 = update(pe, 4 * q + 2, g.z, m.z, v.z, p.z), r3 = update(pe, 4 * q + 3, g.w, m.w, v.w, p.w);
      reinterpret_cast<float4 *>(pe.m)[q] = make_float4(r0.x, r1.x, r2.x, r3.x);
      reinterpret_cast<float4 *>(pe.v)[q] = make_float4(r0.y, r1.y, r2.y, r3.y);
      reinterpret_cast<float4 *>(pe.p)[q] = make_float4(r0.z, r1.z, r2.z, r3.z);
    }
    for (long long i = 4 * n4 + (long long)blockIdx.x * TH + threadIdx.x; i < pe.n; i += stride) {
      const float4 r = update(pe, i, pe.d[i], pe.m[i], pe.v[i], pe.p[i]);
      pe.m[i] = r.x;
      pe.v[i] = r.y;
      pe.p[i] = r.z;
    }
  }
}

} // namespace k
} // namespace molt
