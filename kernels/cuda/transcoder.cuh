// Transcoder baseline kernels: tc_decode, tc_decode_bwd (per-feature lists), skip_apply and skip_bwd (dense d x d).
#pragma once

#include "molt_kernels/tile.cuh"

namespace molt {
namespace k {

/// yhat[tok] += act * dec_w_f for every listed (token, feature) pair; a block per feature.
template <class C> __device__ __forceinline__ void tc_decode(const Args &a) {
  constexpr int D = C::D, F = C::F, TH = C::threads;
  const int *pptr = arg<int>(a, 0), *ptok = arg<int>(a, 1);
  const float *pgate = arg<float>(a, 2), *decw = arg<float>(a, 3);
  float *yhat = arg<float>(a, 4);
  for (long long f = blockIdx.x; f < F; f += gridDim.x) {
    const float *wf = decw + f * D;
    for (int p = pptr[f]; p < pptr[f + 1]; ++p) {
      const float g = pgate[p];
      if (g == 0.f)
        continue;
      float *yr = yhat + (long long)ptok[p] * D;
      for (int j = threadIdx.x; j < D; j += TH)
        atomicAdd(&yr[j], g * wf[j]);
    }
  }
}

/// d_dec_w_f += sum act dy_tok; pair_dgate += dy_tok . dec_w_f. A warp per pair, lanes over d;
/// each warp adds its partial d_dec_w row with fp32 atomics (order not fixed).
template <class C> __device__ __forceinline__ void tc_decode_bwd(const Args &a) {
  constexpr int D = C::D, F = C::F, TH = C::threads, WARPS = TH / 32, CD = (D + 31) / 32;
  const float *dy = arg<float>(a, 0);
  const int *pptr = arg<int>(a, 1), *ptok = arg<int>(a, 2);
  const float *pgate = arg<float>(a, 3), *decw = arg<float>(a, 4);
  float *ddecw = arg<float>(a, 5), *pdgate = arg<float>(a, 6);
  const int lane = threadIdx.x & 31, warp = threadIdx.x >> 5;
  for (long long f = blockIdx.x; f < F; f += gridDim.x) {
    const float *wf = decw + f * D;
    float acc[CD];
#pragma unroll
    for (int q = 0; q < CD; ++q)
      acc[q] = 0.f;
    bool any = false;
    for (int p = pptr[f] + warp; p < pptr[f + 1]; p += WARPS) {
      any = true;
      const float g = pgate[p];
      const float *dr = dy + (long long)ptok[p] * D;
      float dot = 0.f;
#pragma unroll
      for (int q = 0; q < CD; ++q) {
        const int j = lane + 32 * q;
        if (j < D) {
          const float d = dr[j];
          dot = fmaf(d, wf[j], dot);
          acc[q] = fmaf(g, d, acc[q]);
        }
      }
      dot = warpSum(dot);
      if (lane == 0)
        pdgate[p] += dot;
    }
    if (any)
#pragma unroll
      for (int q = 0; q < CD; ++q)
        if (lane + 32 * q < D)
          atomicAdd(&ddecw[f * D + lane + 32 * q], acc[q]);
  }
}

/// yhat += x . skip_w^T, 64x64 output tiles.
template <class C> __device__ __forceinline__ void skip_apply(const Args &a) {
  constexpr int D = C::D, TH = C::threads, TT = 64, KT = 32, TD = (D + TT - 1) / TT;
  constexpr int PREC = PrecisionOf<C>::value;
  const Operand<PREC> x = operand<PREC>(a, 0), sw = operand<PREC>(a, 1);
  float *yhat = arg<float>(a, 2);
  __shared__ float as[KT * (TT + 1)], bs[KT * (TT + 1)];
  const long long items = cdivll(a.B, TT) * TD;
  for (long long w = blockIdx.x; w < items; w += gridDim.x) {
    const long long m0 = (w / TD) * TT;
    const int n0 = int(w % TD) * TT;
    TileAccFor<PREC, TT, TT, TH> acc;
    tileLoop<TT, TT, KT, TH, true, true>(
        acc, as, bs, D,
        [&](int m, int k) {
          const long long tok = m0 + m;
          return tok < a.B && k < D ? x[tok * D + k] : 0.f;
        },
        [&](int n, int k) {
          return n0 + n < D && k < D ? sw[(long long)(n0 + n) * D + k] : 0.f;
        });
    forEachElem(acc, [&](int r, int c, int i, int j) {
      const long long tok = m0 + r;
      const int o = n0 + c;
      if (tok < a.B && o < D)
        yhat[tok * D + o] += acc.c[i][j];
    });
  }
}

/// d_skip_w[o][i] = sum_b d_yhat[b][o] x[b][i] (=).
template <class C> __device__ __forceinline__ void skip_bwd(const Args &a) {
  constexpr int D = C::D, TH = C::threads, TT = 64, KT = 32, TD = (D + TT - 1) / TT;
  constexpr int PREC = PrecisionOf<C>::value;
  const float *dy = arg<float>(a, 0);
  const Operand<PREC> x = operand<PREC>(a, 1);
  float *dsw = arg<float>(a, 2);
  __shared__ float as[KT * (TT + 1)], bs[KT * (TT + 1)];
  for (long long w = blockIdx.x; w < (long long)TD * TD; w += gridDim.x) {
    const int o0 = int(w / TD) * TT, i0 = int(w % TD) * TT;
    TileAccFor<PREC, TT, TT, TH> acc;
    // The contraction runs over the batch: both operands are token rows (k-major).
    tileLoop<TT, TT, KT, TH, false, false>(
        acc, as, bs, a.B,
        [&](int c, long long b) { return b < a.B && o0 + c < D ? dy[b * D + o0 + c] : 0.f; },
        [&](int c, long long b) { return b < a.B && i0 + c < D ? x[b * D + i0 + c] : 0.f; });
    forEachElem(acc, [&](int r, int c, int i, int j) {
      const int o = o0 + r, ii = i0 + c;
      if (o < D && ii < D)
        dsw[(long long)o * D + ii] = acc.c[i][j];
    });
  }
}

} // namespace k
} // namespace molt
