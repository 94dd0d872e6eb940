// encode_tangent and tc_encode_tangent: the gate values' tangents along x_dot for the `jvp` entry (a warp per listed pair).
//
// pair_tan[p] = [pair_gate[p] > 0] * (enc_w_t . x_dot[tok_p]): every gate has slope 1 where it
// is open, and open is g > 0 for every gate (docs/jacobian.md). The rest of a Jacobian-vector
// product is bucket_apply / tc_decode run on tangents, so this is the only new device code.
#pragma once

#include "molt_kernels/common.cuh"

namespace molt {
namespace k {

/// A block per transform (grid-stride), a warp per pair, lanes over d; each pair's dot product
/// is summed in a fixed order, so pair_tan is deterministic (fp32; the CPU's order differs).
template <class C, int T> __device__ __forceinline__ void encodeTangentImpl(const Args &a) {
  constexpr int D = C::D, WARPS = C::threads / 32;
  const float *xdot = arg<float>(a, 0), *w = arg<float>(a, 1);
  const int *pptr = arg<int>(a, 2), *ptok = arg<int>(a, 3);
  const float *pgate = arg<float>(a, 4);
  float *ptan = arg<float>(a, 5);
  const int lane = threadIdx.x & 31, warp = threadIdx.x >> 5;
  for (long long t = blockIdx.x; t < T; t += gridDim.x) {
    const float *wt = w + t * D;
    for (int p = pptr[t] + warp; p < pptr[t + 1]; p += WARPS) {
      float dot = 0.f;
      if (pgate[p] > 0.f) { // warp-uniform: the whole warp works on pair p
        const float *v = xdot + (long long)ptok[p] * D;
        for (int j = lane; j < D; j += 32)
          dot = fmaf(wt[j], v[j], dot);
        dot = warpSum(dot);
      }
      if (lane == 0)
        ptan[p] = dot;
    }
  }
}

template <class C> __device__ __forceinline__ void encode_tangent(const Args &a) {
  encodeTangentImpl<C, int(C::T)>(a);
}

template <class C> __device__ __forceinline__ void tc_encode_tangent(const Args &a) {
  encodeTangentImpl<C, int(C::F)>(a);
}

} // namespace k
} // namespace molt
