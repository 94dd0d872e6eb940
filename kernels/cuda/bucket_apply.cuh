// bucket_apply and bucket_apply_bwd: gather -> V_t -> gate -> U_t -> scatter-add, the rank-r intermediate kept on chip.
//
// Work item = (transform t of the bucket, chunk of TM listed pairs, slice of RS ranks). Because
// yhat is linear in h, slicing the rank splits the work exactly: each item adds
// g * U_t[:, slice] (V_t[slice, :] x) into yhat with fp32 atomics, so large ranks spread over many
// blocks while U/V slices stream once per token chunk. h lives in shared memory only.
#pragma once

#include "molt_kernels/tile.cuh"

namespace molt {
namespace k {

template <int R, int TILE_M> struct ApplyShape {
  static constexpr int TM = TILE_M > 0 ? TILE_M : 64;             // pairs per item
  static constexpr int RS = R >= 64 ? 64 : ((R + 15) / 16) * 16;  // ranks per item
  static constexpr int S = (R + RS - 1) / RS;                      // rank slices
  static_assert(TM == 16 || TM == 32 || TM == 64, "tile_m must be 16, 32 or 64");
};

/// Maps a monotonically increasing item index to (transform, first item of that transform) by
/// walking the bucket's pair_ptr 32 transforms at a time in warp 0. Blocks visit items in
/// increasing order, so each block walks the bucket once in all.
template <int N, int TM, int S> struct ItemCursor {
  int t;
  long long base;
  int found;

  __device__ __forceinline__ void reset() {
    t = 0;
    base = 0;
  }
  /// Returns false when w is past the bucket's last item. Call with the whole block.
  __device__ __forceinline__ bool locate(const int *ptr, long long w, ItemCursor *shared) {
    if (threadIdx.x < 32) {
      const int lane = threadIdx.x;
      int t0 = shared->t;
      long long b = shared->base;
      int ok = 0;
      while (t0 < N) {
        const int tt = t0 + lane;
        long long items = 0;
        if (tt < N)
          items = cdivll(ptr[tt + 1] - ptr[tt], TM) * S;
        long long incl = items;
#pragma unroll
        for (int o = 1; o < 32; o <<= 1) {
          long long n = __shfl_up_sync(0xffffffffu, incl, o);
          if (lane >= o)
            incl += n;
        }
        const unsigned hit = __ballot_sync(0xffffffffu, tt < N && b + incl > w);
        if (hit) {
          const int l = __ffs(hit) - 1;
          const long long before = __shfl_sync(0xffffffffu, incl - items, l);
          t0 += l;
          b += before;
          ok = 1;
          break;
        }
        b += __shfl_sync(0xffffffffu, incl, 31);
        t0 += 32;
      }
      if (lane == 0) {
        shared->t = t0;
        shared->base = b;
        shared->found = ok;
      }
    }
    __syncthreads();
    return shared->found != 0;
  }
};

/// One work item: transform t of the bucket, its pairs p0 .. p0+n, ranks r0 .. r0+RS.
struct Item {
  int t;
  long long p0;
  int n;
  int r0;
};

/// Finds item w (false past the bucket's last) and stages its tokens (-1 past n) and gates.
template <int N, int TM, int S, int RS, int TH>
__device__ __forceinline__ bool beginItem(ItemCursor<N, TM, S> &cursor, const int *ptr,
                                          const int *ptok, const float *pgate, long long w,
                                          int *toks, float *gates, Item &it) {
  if (!cursor.locate(ptr, w, &cursor))
    return false;
  it.t = cursor.t;
  const long long local = w - cursor.base;
  it.r0 = int(local % S) * RS;
  it.p0 = ptr[it.t] + (local / S) * TM;
  it.n = int(min((long long)TM, (long long)ptr[it.t + 1] - it.p0));
  for (int m = threadIdx.x; m < TM; m += TH) {
    toks[m] = m < it.n ? ptok[it.p0 + m] : -1;
    gates[m] = m < it.n ? pgate[it.p0 + m] : 0.f;
  }
  __syncthreads();
  return true;
}

/// acc[m][r] = sum_k src[tok_m][k] W[r][k] over k < D: gathered token rows against RS rows of
/// a transform's factor, through the staged tile loop. w(r, k) reads the factor; W_KFAST says
/// whether k is its contiguous index (V_t, stored r-major) or not (U_t, k-major).
template <int TM, int RS, int KT, int TH, int D, bool W_KFAST, class Acc, class Src, class W>
__device__ __forceinline__ void gatherProduct(Acc &acc, float *as, float *bs, Src src,
                                              const int *toks, W w) {
  tileLoop<TM, RS, KT, TH, true, W_KFAST>(
      acc, as, bs, int(D),
      [&](int m, int k) {
        const int tok = toks[m];
        return tok >= 0 && k < D ? src[(long long)tok * D + k] : 0.f;
      },
      w);
}

/// yhat[tok] += g * U_t (V_t x[tok]) for every listed pair of the bucket.
template <class C> __device__ __forceinline__ void bucket_apply(const Args &a) {
  constexpr int D = C::D, R = C::R, N = C::N, OFF = C::OFF, TH = C::threads;
  using Sh = ApplyShape<R, C::tile_m>;
  constexpr int TM = Sh::TM, RS = Sh::RS, S = Sh::S, KT = 32, DT = 64;
  constexpr int PREC = PrecisionOf<C>::value;
  const Operand<PREC> x = operand<PREC>(a, 0), u = operand<PREC>(a, 1), v = operand<PREC>(a, 2);
  const int *ptr = arg<int>(a, 3) + OFF, *ptok = arg<int>(a, 4);
  const float *pgate = arg<float>(a, 5);
  float *yhat = arg<float>(a, 6);

  constexpr int kStageA = KT * (TM + 1) + KT * (RS + 1), kStageU = RS * (DT + 1);
  constexpr int kStageY = TM * DT; // the output tile on its way to the atomics
  constexpr int kTileWords = kStageA > kStageU ? (kStageA > kStageY ? kStageA : kStageY)
                                               : (kStageU > kStageY ? kStageU : kStageY);
  __shared__ float hs[RS * (TM + 1)]; // g * h, stored [r][m]
  __shared__ float tiles[kTileWords];
  __shared__ int toks[TM];
  __shared__ float gates[TM];
  __shared__ ItemCursor<N, TM, S> cursor;
  if (threadIdx.x == 0)
    cursor.reset();
  __syncthreads();

  Item it;
  for (long long w = blockIdx.x;
       beginItem<N, TM, S, RS, TH>(cursor, ptr, ptok, pgate, w, toks, gates, it); w += gridDim.x) {
    const int t = it.t, r0 = it.r0;
    const Operand<PREC> vt = v + (long long)t * R * D, ut = u + (long long)t * D * R;

    // h[m][r] = sum_k x[tok_m][k] V_t[r0 + r][k]
    TileAccFor<PREC, TM, RS, TH> h;
    gatherProduct<TM, RS, KT, TH, D, true>(
        h, tiles, tiles + KT * (TM + 1), x, toks, [&](int r, int k) {
          return r0 + r < R && k < D ? vt[(long long)(r0 + r) * D + k] : 0.f;
        });
    forEachElem(h, [&](int m, int r, int i, int j) {
      hs[r * (TM + 1) + m] = gates[m] * h.c[i][j];
    });

    // yhat[tok_m][j] += sum_r gh[m][r] U_t[j][r0 + r], one column tile at a time
    float *us = tiles;
    for (int j0 = 0; j0 < D; j0 += DT) {
      __syncthreads(); // hs written / previous us consumed
      stageRowsT<DT, RS, DT + 1, TH>(us, [&](int j, int r) {
        const int jj = j0 + j, rr = r0 + r;
        return jj < D && rr < R ? ut[(long long)jj * R + rr] : 0.f;
      });
      __syncthreads();
      TileAccFor<PREC, TM, DT, TH> y;
      y.zero();
      y.template mma<RS, TM + 1, DT + 1>(hs, us);
      __syncthreads(); // every thread is done with us: the tile stages through the same words
      atomicAddTile<TM, DT, TH>(
          y, tiles,
          [&](int m) { return toks[m] >= 0 ? yhat + (long long)toks[m] * D + j0 : nullptr; },
          D - j0);
    }
    __syncthreads(); // toks, gates, tiles reused by the next item
  }
}

/// Gradients of bucket_apply: d_u, d_v (+=, fp32 atomics) and pair_dgate (+= h.z). h and
/// z = U_t^T dy are recomputed per item and never leave shared memory.
template <class C> __device__ __forceinline__ void bucket_apply_bwd(const Args &a) {
  constexpr int D = C::D, R = C::R, N = C::N, OFF = C::OFF, TH = C::threads;
  using Sh = ApplyShape<R, C::tile_m>;
  constexpr int TM = Sh::TM, RS = Sh::RS, S = Sh::S, KT = 16, DT = 32;
  constexpr int PREC = PrecisionOf<C>::value;
  const float *dy = arg<float>(a, 0);
  const Operand<PREC> x = operand<PREC>(a, 1), u = operand<PREC>(a, 2), v = operand<PREC>(a, 3);
  const int *ptr = arg<int>(a, 4) + OFF, *ptok = arg<int>(a, 5);
  const float *pgate = arg<float>(a, 6);
  float *du = arg<float>(a, 7), *dv = arg<float>(a, 8), *pdgate = arg<float>(a, 9);

  constexpr int kTileA = KT * (TM + 1) + KT * (RS + 1), kTileB0 = TM * (DT + 1), kTileC = DT * RS;
  constexpr int kTileB = kTileB0 > kTileC ? kTileB0 : kTileC;
  __shared__ float gh[TM * (RS + 1)]; // g * h, [m][r]
  __shared__ float gz[TM * (RS + 1)]; // g * z, [m][r]
  __shared__ float tiles[kTileA > kTileB ? kTileA : kTileB];
  __shared__ int toks[TM];
  __shared__ float gates[TM];
  __shared__ float dots[TM];
  __shared__ ItemCursor<N, TM, S> cursor;
  if (threadIdx.x == 0)
    cursor.reset();
  __syncthreads();

  Item it;
  for (long long w = blockIdx.x;
       beginItem<N, TM, S, RS, TH>(cursor, ptr, ptok, pgate, w, toks, gates, it); w += gridDim.x) {
    const int t = it.t, r0 = it.r0, n = it.n;
    const long long p0 = it.p0;
    const Operand<PREC> vt = v + (long long)t * R * D, ut = u + (long long)t * D * R;
    float *dut = du + (long long)t * D * R;
    float *dvt = dv + (long long)t * R * D;
    float *as = tiles, *bs = tiles + KT * (TM + 1);

    // h = x V_t^T and z = dy U_t over the rank slice
    TileAccFor<PREC, TM, RS, TH> h, z;
    gatherProduct<TM, RS, KT, TH, D, true>(h, as, bs, x, toks, [&](int r, int k) {
      return r0 + r < R && k < D ? vt[(long long)(r0 + r) * D + k] : 0.f;
    });
    gatherProduct<TM, RS, KT, TH, D, false>(z, as, bs, dy, toks, [&](int r, int k) {
      return r0 + r < R && k < D ? ut[(long long)k * R + r0 + r] : 0.f;
    });

    // pair_dgate += h . z over this rank slice: per-row partials meet in shared memory, which
    // works for either tile layout (SIMT or tensor-core fragments).
    for (int m = threadIdx.x; m < TM; m += TH)
      dots[m] = 0.f;
    __syncthreads();
#pragma unroll
    for (int i = 0; i < h.IM; ++i) {
      float s = 0.f;
      const int m = h.row(i);
#pragma unroll
      for (int j = 0; j < h.IN; ++j) {
        s = fmaf(h.c[i][j], z.c[i][j], s);
        const int r = h.col(j);
        gh[m * (RS + 1) + r] = gates[m] * h.c[i][j];
        gz[m * (RS + 1) + r] = gates[m] * z.c[i][j];
      }
      atomicAdd(&dots[m], s);
    }
    __syncthreads();
    for (int m = threadIdx.x; m < n; m += TH)
      atomicAdd(&pdgate[p0 + m], dots[m]);

    // d_u_t[j][r0 + r] += sum_m dy[tok_m][j] gh[m][r]
    for (int j0 = 0; j0 < D; j0 += DT) {
      __syncthreads();
      stageCols<TM, DT, DT + 1, TH>(tiles, [&](int m, int c) {
        const int tok = toks[m], jj = j0 + c;
        return tok >= 0 && jj < D ? dy[(long long)tok * D + jj] : 0.f;
      });
      __syncthreads();
      TileAccFor<PREC, DT, RS, TH> g;
      g.zero();
      g.template mma<TM, DT + 1, RS + 1>(tiles, gh);
      __syncthreads();
      atomicAddTile<DT, RS, TH>(
          g, tiles, [&](int j) { return j0 + j < D ? dut + (long long)(j0 + j) * R + r0 : nullptr; },
          R - r0);
    }
    // d_v_t[r0 + r][k] += sum_m gz[m][r] x[tok_m][k]
    for (int k0 = 0; k0 < D; k0 += DT) {
      __syncthreads();
      stageCols<TM, DT, DT + 1, TH>(tiles, [&](int m, int c) {
        const int tok = toks[m], kx = k0 + c;
        return tok >= 0 && kx < D ? x[(long long)tok * D + kx] : 0.f;
      });
      __syncthreads();
      TileAccFor<PREC, RS, DT, TH> g;
      g.zero();
      g.template mma<TM, RS + 1, DT + 1>(gz, tiles);
      __syncthreads();
      atomicAddTile<RS, DT, TH>(
          g, tiles, [&](int r) { return r0 + r < R ? dvt + (long long)(r0 + r) * D + k0 : nullptr; },
          D - k0);
    }
    __syncthreads();
  }
}

} // namespace k
} // namespace molt
