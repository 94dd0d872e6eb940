// frob_norm and frob_norm_bwd: exact ||U_t V_t||_F through the r x r Gram matrices, and its gradient.
//
// ||UV||_F^2 = trace(U^T U . V V^T) = sum_ij gram_u_ij gram_v_ij (both symmetric), so a block
// that owns the same 64x64 tile of both Grams adds its part of the trace; the last tile of a
// transform (a per-transform counter in Args::work) takes the square root. The d x d product
// is never formed.
#pragma once

#include "molt_kernels/tile.cuh"

namespace molt {
namespace k {

/// norm[OFF + t] = sqrt(trace(U_t^T U_t . V_t V_t^T)); gram_u = U_t^T U_t, gram_v = V_t V_t^T.
template <class C> __device__ __forceinline__ void frob_norm(const Args &a) {
  constexpr int D = C::D, R = C::R, N = C::N, OFF = C::OFF, TH = C::threads;
  constexpr int TT = 64, KT = 16, TI = (R + TT - 1) / TT, PER_T = TI * TI;
  constexpr int PREC = PrecisionOf<C>::value;
  const Operand<PREC> u = operand<PREC>(a, 0), v = operand<PREC>(a, 1);
  float *norm = arg<float>(a, 2), *gu = arg<float>(a, 3), *gv = arg<float>(a, 4);
  float *partial = reinterpret_cast<float *>(a.work + 16);
  unsigned *tilesDone = a.work + 16 + N;

  __shared__ float as[KT * (TT + 1)], bs[KT * (TT + 1)];
  __shared__ float scratch[32];
  for (long long w = blockIdx.x; w < (long long)N * PER_T; w += gridDim.x) {
    const int t = int(w / PER_T), i0 = int(w % PER_T) / TI * TT, j0 = int(w % PER_T) % TI * TT;
    const Operand<PREC> ut = u + (long long)t * D * R, vt = v + (long long)t * R * D;
    // U_t is [D][R]: its Gram contracts over rows (k-major columns i and j); V_t is [R][D]: its
    // Gram contracts over columns (k-contiguous rows i and j).
    auto uCol = [&](int base) {
      return [&, base](int c, int k) {
        return k < D && base + c < R ? ut[(long long)k * R + base + c] : 0.f;
      };
    };
    auto vRow = [&](int base) {
      return [&, base](int r, int k) {
        return k < D && base + r < R ? vt[(long long)(base + r) * D + k] : 0.f;
      };
    };
    TileAccFor<PREC, TT, TT, TH> accU, accV;
    tileLoop<TT, TT, KT, TH, false, false>(accU, as, bs, D, uCol(i0), uCol(j0));
    tileLoop<TT, TT, KT, TH, true, true>(accV, as, bs, D, vRow(i0), vRow(j0));
    float tr = 0.f;
    forEachElem(accU, [&](int rr, int cc, int i, int j) {
      const int r = i0 + rr, c = j0 + cc;
      if (r < R && c < R) {
        const long long at = ((long long)t * R + r) * R + c;
        gu[at] = accU.c[i][j];
        gv[at] = accV.c[i][j];
        tr = fmaf(accU.c[i][j], accV.c[i][j], tr);
      }
    });
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

/// d_u_t += s U_t gram_v_t and d_v_t += s gram_u_t V_t with s = d_norm_t / n_t (0 when n_t = 0),
/// added with reductions after bucket_apply_bwd has stored the data term.
template <class C> __device__ __forceinline__ void frob_norm_bwd(const Args &a) {
  constexpr int D = C::D, R = C::R, N = C::N, OFF = C::OFF, TH = C::threads;
  constexpr int TT = 64, KT = 32, TI = (R + TT - 1) / TT, TD = (D + TT - 1) / TT;
  constexpr int PER_T = 2 * TI * TD;
  constexpr int PREC = PrecisionOf<C>::value;
  const float *dnorm = arg<float>(a, 0), *norm = arg<float>(a, 1);
  const Operand<PREC> u = operand<PREC>(a, 2), v = operand<PREC>(a, 3);
  const float *gu = arg<float>(a, 4), *gv = arg<float>(a, 5);
  float *du = arg<float>(a, 6), *dv = arg<float>(a, 7);

  constexpr int kStage = 2 * KT * (TT + 1) > TT * TT ? 2 * KT * (TT + 1) : TT * TT;
  __shared__ float tiles[kStage];
  float *as = tiles, *bs = tiles + KT * (TT + 1);
  for (long long w = blockIdx.x; w < (long long)N * PER_T; w += gridDim.x) {
    const int t = int(w / PER_T), item = int(w % PER_T);
    const float n = norm[OFF + t];
    const float s = n > 0.f ? dnorm[OFF + t] / n : 0.f;
    if (s == 0.f)
      continue; // uniform across the block: no barrier is skipped by part of it
    const bool isU = item < TI * TD;
    const int tile = isU ? item : item - TI * TD;
    const Operand<PREC> ut = u + (long long)t * D * R, vt = v + (long long)t * R * D;
    const float *gut = gu + (long long)t * R * R, *gvt = gv + (long long)t * R * R;
    TileAccFor<PREC, TT, TT, TH> acc;
    // d_u tile: rows j of D, columns r of R, = U_t gram_v. d_v tile: rows r of R, columns k of
    // D, = gram_u V_t. The contraction index q runs over R; both left factors have R columns.
    const int m0 = isU ? (tile / TI) * TT : (tile / TD) * TT;
    const int n0 = isU ? (tile % TI) * TT : (tile % TD) * TT;
    const int rows = isU ? D : R, cols = isU ? R : D;
    tileLoop<TT, TT, KT, TH, true, false>(
        acc, as, bs, R,
        [&](int m, int q) {
          const int r = m0 + m;
          const long long at = (long long)r * R + q;
          return r < rows && q < R ? (isU ? ut[at] : gut[at]) : 0.f;
        },
        [&](int c, int q) {
          const int col = n0 + c;
          const long long at = (long long)q * cols + col;
          return col < cols && q < R ? (isU ? gvt[at] : vt[at]) : 0.f;
        });
    // One reduction per element (16-byte ones on sm_90), not a load and a store: the block owns
    // the tile, so the add is the only one into each element in this launch.
    float *out = isU ? du + (long long)t * D * R : dv + (long long)t * R * D;
    forEachElem(acc, [&](int, int, int i, int j) { acc.c[i][j] *= s; });
    atomicAddTile<TT, TT, TH>(
        acc, tiles,
        [&](int rr) { return m0 + rr < rows ? out + (long long)(m0 + rr) * cols + n0 : nullptr; },
        cols - n0);
  }
}

} // namespace k
} // namespace molt
