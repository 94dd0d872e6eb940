// frob_norm and frob_norm_bwd: exact ||U_t V_t||_F through the r x r Gram matrices, and its gradient.
//
// ||UV||_F^2 = trace(U^T U . V V^T) = sum_ij gram_u_ij gram_v_ij (both symmetric), so a block
// that owns the same 64x64 tile of both Grams adds its part of the trace; the last tile of a
// transform (a per-transform counter in Args::work) takes the square root. The d x d product
// is never formed.
#pragma once

#include "molt_kernels/common.cuh"

namespace molt {
namespace k {

/// norm[OFF + t] = sqrt(trace(U_t^T U_t . V_t V_t^T)); gram_u = U_t^T U_t, gram_v = V_t V_t^T.
template <class C> __device__ __forceinline__ void frob_norm(const Args &a) {
  constexpr int D = C::D, R = C::R, N = C::N, OFF = C::OFF, TH = C::threads;
  constexpr int TT = 64, KT = 16, TI = (R + TT - 1) / TT, PER_T = TI * TI;
  const float *u = arg<float>(a, 0), *v = arg<float>(a, 1);
  float *norm = arg<float>(a, 2), *gu = arg<float>(a, 3), *gv = arg<float>(a, 4);
  float *partial = reinterpret_cast<float *>(a.work + 16);
  unsigned *tilesDone = a.work + 16 + N;

  __shared__ float ua[KT * (TT + 1)], ub[KT * (TT + 1)], va[KT * (TT + 1)], vb[KT * (TT + 1)];
  __shared__ float scratch[32];
  for (long long w = blockIdx.x; w < (long long)N * PER_T; w += gridDim.x) {
    const int t = int(w / PER_T), i0 = int(w % PER_T) / TI * TT, j0 = int(w % PER_T) % TI * TT;
    const float *ut = u + (long long)t * D * R, *vt = v + (long long)t * R * D;
    TileAcc<TT, TT, TH> accU, accV;
    accU.zero();
    accV.zero();
    for (int k0 = 0; k0 < D; k0 += KT) {
      // U_t is [D][R]: its Gram contracts over rows, so stage row slabs of columns i and j.
      stageCols<KT, TT, TT + 1, TH>(ua, [&](int kk, int c) {
        const int kx = k0 + kk, r = i0 + c;
        return kx < D && r < R ? ut[(long long)kx * R + r] : 0.f;
      });
      stageCols<KT, TT, TT + 1, TH>(ub, [&](int kk, int c) {
        const int kx = k0 + kk, r = j0 + c;
        return kx < D && r < R ? ut[(long long)kx * R + r] : 0.f;
      });
      // V_t is [R][D]: its Gram contracts over columns.
      stageRowsT<TT, KT, TT + 1, TH>(va, [&](int rr, int kk) {
        const int kx = k0 + kk, r = i0 + rr;
        return kx < D && r < R ? vt[(long long)r * D + kx] : 0.f;
      });
      stageRowsT<TT, KT, TT + 1, TH>(vb, [&](int rr, int kk) {
        const int kx = k0 + kk, r = j0 + rr;
        return kx < D && r < R ? vt[(long long)r * D + kx] : 0.f;
      });
      __syncthreads();
      accU.template mma<KT, TT + 1, TT + 1>(ua, ub);
      accV.template mma<KT, TT + 1, TT + 1>(va, vb);
      __syncthreads();
    }
    float tr = 0.f;
#pragma unroll
    for (int i = 0; i < accU.IM; ++i)
#pragma unroll
      for (int j = 0; j < accU.IN; ++j) {
        const int r = i0 + accU.row(i), c = j0 + accU.col(j);
        if (r < R && c < R) {
          const long long at = ((long long)t * R + r) * R + c;
          gu[at] = accU.c[i][j];
          gv[at] = accV.c[i][j];
          tr = fmaf(accU.c[i][j], accV.c[i][j], tr);
        }
      }
    tr = blockSum<TH>(tr, scratch);
    if (threadIdx.x == 0) {
      atomicAdd(&partial[t], tr);
      __threadfence();
      if (atomicAdd(&tilesDone[t], 1u) == unsigned(PER_T - 1)) {
        const float total = atomicAdd(&partial[t], 0.f); // read through L2
        norm[OFF + t] = sqrtf(fmaxf(total, 0.f));
      }
    }
  }
}

/// d_u_t += s U_t gram_v_t and d_v_t += s gram_u_t V_t with s = d_norm_t / n_t (0 when n_t = 0).
template <class C> __device__ __forceinline__ void frob_norm_bwd(const Args &a) {
  constexpr int D = C::D, R = C::R, N = C::N, OFF = C::OFF, TH = C::threads;
  constexpr int TT = 64, KT = 32, TI = (R + TT - 1) / TT, TD = (D + TT - 1) / TT;
  constexpr int PER_T = 2 * TI * TD;
  const float *dnorm = arg<float>(a, 0), *norm = arg<float>(a, 1), *u = arg<float>(a, 2),
              *v = arg<float>(a, 3), *gu = arg<float>(a, 4), *gv = arg<float>(a, 5);
  float *du = arg<float>(a, 6), *dv = arg<float>(a, 7);

  __shared__ float as[KT * (TT + 1)], bs[KT * (TT + 1)];
  for (long long w = blockIdx.x; w < (long long)N * PER_T; w += gridDim.x) {
    const int t = int(w / PER_T), item = int(w % PER_T);
    const float n = norm[OFF + t];
    const float s = n > 0.f ? dnorm[OFF + t] / n : 0.f;
    if (s == 0.f)
      continue; // uniform across the block: no barrier is skipped by part of it
    const bool isU = item < TI * TD;
    const int tile = isU ? item : item - TI * TD;
    const float *ut = u + (long long)t * D * R, *vt = v + (long long)t * R * D;
    const float *gut = gu + (long long)t * R * R, *gvt = gv + (long long)t * R * R;
    TileAcc<TT, TT, TH> acc;
    acc.zero();
    // d_u tile: rows j of D, columns r of R. d_v tile: rows r of R, columns k of D.
    const int m0 = isU ? (tile / TI) * TT : (tile / TD) * TT;
    const int n0 = isU ? (tile % TI) * TT : (tile % TD) * TT;
    for (int q0 = 0; q0 < R; q0 += KT) {
      if (isU) {
        stageRowsT<TT, KT, TT + 1, TH>(as, [&](int m, int qq) {
          const int j = m0 + m, q = q0 + qq;
          return j < D && q < R ? ut[(long long)j * R + q] : 0.f;
        });
        stageCols<KT, TT, TT + 1, TH>(bs, [&](int qq, int c) {
          const int q = q0 + qq, r = n0 + c;
          return q < R && r < R ? gvt[(long long)q * R + r] : 0.f;
        });
      } else {
        stageRowsT<TT, KT, TT + 1, TH>(as, [&](int m, int qq) {
          const int r = m0 + m, q = q0 + qq;
          return r < R && q < R ? gut[(long long)r * R + q] : 0.f;
        });
        stageCols<KT, TT, TT + 1, TH>(bs, [&](int qq, int c) {
          const int q = q0 + qq, kx = n0 + c;
          return q < R && kx < D ? vt[(long long)q * D + kx] : 0.f;
        });
      }
      __syncthreads();
      acc.template mma<KT, TT + 1, TT + 1>(as, bs);
      __syncthreads();
    }
    const int rows = isU ? D : R, cols = isU ? R : D;
    float *out = isU ? du + (long long)t * D * R : dv + (long long)t * R * D;
#pragma unroll
    for (int i = 0; i < acc.IM; ++i)
#pragma unroll
      for (int j = 0; j < acc.IN; ++j) {
        const int r = m0 + acc.row(i), c = n0 + acc.col(j);
        if (r < rows && c < cols)
          out[(long long)r * cols + c] += s * acc.c[i][j];
      }
  }
}

} // namespace k
} // namespace molt
