// bucket_apply and bucket_apply_bwd: gather -> V_t -> gate -> U_t -> scatter-add, the rank-r intermediate kept on chip.
//
// bucket_apply's work item = (transform t of the bucket, chunk of TM listed pairs, every rank):
// h = x V_t^T of all ranks is one register tile (x gathered once per pair), g*h waits in shared
// memory while U_t streams through in column tiles, and each output element of yhat gets one
// fp32 atomic add. bucket_apply_bwd (below) computes the weight gradients with one owner per
// output tile from h and z saved per pair.
#pragma once

#include "molt_kernels/tile.cuh"

namespace molt {
namespace k {

/// The tile shape of both kernels: an item holds all ranks of TM pairs (up to 512; larger ranks
/// go in slices of 512, whose adds then meet in yhat and pair_dgate), so a token's x row is
/// gathered once per item and each output element gets one add. TM shrinks as R grows so that
/// the TM x RS intermediate (registers, then shared memory) stays at 8192 floats.
template <int R, int TILE_M> struct ApplyShape {
  static constexpr int RP = ((R + 15) / 16) * 16;                  // ranks, padded to 16
  static constexpr int RS = RP <= 512 ? RP : 512;                  // ranks per item
  static constexpr int S = (RP + RS - 1) / RS;                     // rank slices (1 up to 512)
  static constexpr int TM0 = TILE_M > 0 ? TILE_M : 64;
  static constexpr int TM = TM0 * RS <= 8192 ? TM0 : (TM0 / 2 * RS <= 8192 ? TM0 / 2 : 16);
  static_assert(TM0 == 16 || TM0 == 32 || TM0 == 64, "tile_m must be 16, 32 or 64");
  static_assert(TM * RS <= 8192, "rank slice too large for one item");
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
  constexpr int TM = Sh::TM, RP = Sh::RS, S = Sh::S, KT = 16; // RP: ranks per item
  constexpr int DT = TM >= 64 ? 32 : 64;              // output columns per tile
  constexpr int KR = RP % 32 == 0 ? 32 : 16;          // ranks per staged U slab
  constexpr int PREC = PrecisionOf<C>::value;
  const Operand<PREC> x = operand<PREC>(a, 0), u = operand<PREC>(a, 1), v = operand<PREC>(a, 2);
  const int *ptr = arg<int>(a, 3) + OFF, *ptok = arg<int>(a, 4);
  const float *pgate = arg<float>(a, 5);
  float *yhat = arg<float>(a, 6);

  // One region, two uses: the staging of h = x V_t^T, then g*h ([r][m]) beside the U slab and
  // the output tile on its way to the atomics.
  constexpr int kStageH = KT * (TM + 1) + KT * (RP + 1);
  constexpr int kHs = RP * (TM + 1);
  constexpr int kSlab = KR * (DT + 1) > TM * DT ? KR * (DT + 1) : TM * DT;
  constexpr int kWords = kStageH > kHs + kSlab ? kStageH : kHs + kSlab;
  __shared__ float tiles[kWords];
  __shared__ int toks[TM];
  __shared__ float gates[TM];
  __shared__ ItemCursor<N, TM, S> cursor;
  float *hs = tiles, *us = tiles + kHs;
  if (threadIdx.x == 0)
    cursor.reset();
  __syncthreads();

  Item it;
  for (long long w = blockIdx.x;
       beginItem<N, TM, S, RP, TH>(cursor, ptr, ptok, pgate, w, toks, gates, it); w += gridDim.x) {
    const int t = it.t, rb = it.r0;
    const Operand<PREC> vt = v + (long long)t * R * D, ut = u + (long long)t * D * R;

    // h[m][r] = sum_k x[tok_m][k] V_t[r][k], every rank at once
    TileAccFor<PREC, TM, RP, TH> h;
    gatherProduct<TM, RP, KT, TH, D, true>(h, tiles, tiles + KT * (TM + 1), x, toks,
                                           [&](int r, int k) {
                                             return rb + r < R && k < D ? vt[(long long)(rb + r) * D + k] : 0.f;
                                           });
    forEachElem(h, [&](int m, int r, int i, int j) { hs[r * (TM + 1) + m] = gates[m] * h.c[i][j]; });

    // yhat[tok_m][j] += sum_r gh[m][r] U_t[j][r], one column tile at a time, K = RP in slabs
    for (int j0 = 0; j0 < D; j0 += DT) {
      TileAccFor<PREC, TM, DT, TH> y;
      y.zero();
      for (int r0 = 0; r0 < RP; r0 += KR) {
        __syncthreads(); // hs written / previous slab consumed
        stageRowsT<DT, KR, DT + 1, TH>(us, [&](int j, int r) {
          const int jj = j0 + j, rr = rb + r0 + r;
          return jj < D && rr < R ? ut[(long long)jj * R + rr] : 0.f;
        });
        __syncthreads();
        y.template mma<KR, TM + 1, DT + 1>(hs + r0 * (TM + 1), us);
      }
      __syncthreads(); // every thread is done with us: the tile stages through the same words
      atomicAddTile<TM, DT, TH>(
          y, us,
          [&](int m) { return toks[m] >= 0 ? yhat + (long long)toks[m] * D + j0 : nullptr; },
          D - j0);
    }
    __syncthreads(); // toks, gates, tiles reused by the next item
  }
}

/// Gradients of bucket_apply in one launch of two phases, with no atomics on d_u or d_v.
///  1. Items of TM pairs (all ranks) taken by ticket: h = x V_t^T and z = dy U_t recomputed,
///     stored per pair in Args::work, and h.z added into pair_dgate (one add per pair, its
///     terms summed in rank order: the same bits under every schedule).
///  2. After every phase-1 item is done (a ticket count: all of them are taken by blocks that
///     are running), output tiles taken by ticket, one block owning each: d_u_t[j][r] =
///     sum_p dy[tok_p][j] g_p h[p][r] and d_v_t[r][k] = sum_p g_p z[p][r] x[tok_p][k] over all of
///     the transform's pairs, stored once (zeros for a transform without pairs).
/// Args::work: words 0..2 the tickets and the phase-1 count (zeroed by the executor, which
/// zeroes only those 16 words of this op's scratch), then h and z of the bucket's pairs,
/// [pair - first pair of the bucket][R] each, B*N pairs of capacity.
template <class C> __device__ __forceinline__ void bucket_apply_bwd(const Args &a) {
  constexpr int D = C::D, R = C::R, N = C::N, OFF = C::OFF, TH = C::threads;
  using Sh = ApplyShape<R, C::tile_m>;
  constexpr int TM = Sh::TM, RP = Sh::RS, S = Sh::S, KT = 16; // RP: ranks per item
  constexpr int RT = Sh::RP < 64 ? Sh::RP : 64, DT = 64, KP = 32; // phase-2 tiles, pairs per slab
  constexpr int TR = (R + RT - 1) / RT, TD = (D + DT - 1) / DT, PER_T = 2 * TR * TD;
  constexpr int PREC = PrecisionOf<C>::value;
  const float *dy = arg<float>(a, 0);
  const Operand<PREC> x = operand<PREC>(a, 1), u = operand<PREC>(a, 2), v = operand<PREC>(a, 3);
  const int *ptr = arg<int>(a, 4) + OFF, *ptok = arg<int>(a, 5);
  const float *pgate = arg<float>(a, 6);
  float *du = arg<float>(a, 7), *dv = arg<float>(a, 8), *pdgate = arg<float>(a, 9);
  unsigned *tickets = a.work, *phase1Done = a.work + 1, *tickets2 = a.work + 2;
  float *hsave = reinterpret_cast<float *>(a.work + 16);
  float *zsave = hsave + (long long)a.B * N * R;

  constexpr int kStage1 = KT * (TM + 1) + KT * (RP + 1), kProd = TM * (RP + 1);
  constexpr int kStage2 = KP * (DT + 1) + KP * (RT + 1);
  constexpr int kA = kStage1 > kProd ? kStage1 : kProd;
  __shared__ float tiles[kA > kStage2 ? kA : kStage2];
  __shared__ int toks[TM];
  __shared__ float gates[TM];
  __shared__ unsigned slot;
  __shared__ int phase1Items;
  __shared__ ItemCursor<N, TM, S> cursor;
  if (threadIdx.x == 0) {
    cursor.reset();
    phase1Items = 0;
  }
  __syncthreads();
  const long long first = ptr[0];

  // ---- phase 1: h, z per pair; pair_dgate += h . z
  Item it;
  for (long long w = takeTicket(tickets, &slot);
       beginItem<N, TM, S, RP, TH>(cursor, ptr, ptok, pgate, w, toks, gates, it);
       w = takeTicket(tickets, &slot)) {
    const int t = it.t, n = it.n, rb = it.r0;
    const long long q0 = it.p0 - first; // the item's first pair in the saved rows
    const Operand<PREC> vt = v + (long long)t * R * D, ut = u + (long long)t * D * R;
    TileAccFor<PREC, TM, RP, TH> acc;
    gatherProduct<TM, RP, KT, TH, D, true>(acc, tiles, tiles + KT * (TM + 1), x, toks,
                                           [&](int r, int k) {
                                             return rb + r < R && k < D ? vt[(long long)(rb + r) * D + k] : 0.f;
                                           });
    forEachElem(acc, [&](int m, int r, int i, int j) {
      if (m < n && rb + r < R)
        hsave[(q0 + m) * R + rb + r] = acc.c[i][j];
    });
    gatherProduct<TM, RP, KT, TH, D, false>(acc, tiles, tiles + KT * (TM + 1), dy, toks,
                                            [&](int r, int k) {
                                              return rb + r < R && k < D ? ut[(long long)k * R + rb + r] : 0.f;
                                            });
    // h . z per row: z meets in shared memory and one thread sums each row in rank order,
    // reading h back (the barrier makes the block's global stores visible to it).
    forEachElem(acc, [&](int m, int r, int i, int j) {
      if (m < n && rb + r < R)
        zsave[(q0 + m) * R + rb + r] = acc.c[i][j];
      tiles[m * (RP + 1) + r] = acc.c[i][j];
    });
    __syncthreads();
    for (int m = threadIdx.x; m < n; m += TH) {
      const float *hm = hsave + (q0 + m) * R + rb;
      float s = 0.f;
      for (int r = 0; r < RP && rb + r < R; ++r)
        s = fmaf(hm[r], tiles[m * (RP + 1) + r], s);
      atomicAdd(&pdgate[it.p0 + m], s);
    }
    __threadfence(); // this item's h and z are visible to every block before it counts as done
    __syncthreads();
    if (threadIdx.x == 0)
      atomicAdd(phase1Done, 1u);
    __syncthreads(); // toks, gates, tiles reused by the next item
  }

  // ---- phase 2: one block per output tile of d_u / d_v
  if (threadIdx.x == 0) {
    int total = 0;
    for (int t = 0; t < N; ++t)
      total += int(cdivll(ptr[t + 1] - ptr[t], TM)) * S;
    phase1Items = total;
  }
  __syncthreads();
  bool waited = false;
  for (long long w = takeTicket(tickets2, &slot); w < (long long)N * PER_T;
       w = takeTicket(tickets2, &slot)) {
    if (!waited) {
      waitCount(phase1Done, unsigned(phase1Items));
      waited = true;
    }
    const int t = int(w / PER_T), item = int(w % PER_T);
    const bool isU = item < TR * TD;
    const int tile = isU ? item : item - TR * TD;
    const int r0 = (tile % TR) * RT, c0 = (tile / TR) * DT; // c: a column of D
    const long long p0 = ptr[t];
    const int n = int(ptr[t + 1] - p0);
    const long long q0 = p0 - first;
    float *as = tiles, *bs = tiles + KP * (DT + 1);
    if (isU) {
      // d_u_t[c0 + j][r0 + r] = sum_p dy[tok_p][c0 + j] * g_p h[p][r0 + r]
      TileAccFor<PREC, DT, RT, TH> acc;
      tileLoop<DT, RT, KP, TH, false, false>(
          acc, as, bs, n,
          [&](int j, int k) {
            const int c = c0 + j;
            return k < n && c < D ? dy[(long long)ptok[p0 + k] * D + c] : 0.f;
          },
          [&](int r, int k) {
            const int rr = r0 + r;
            return k < n && rr < R ? pgate[p0 + k] * __ldcg(hsave + (q0 + k) * R + rr) : 0.f;
          });
      float *out = du + (long long)t * D * R;
      forEachElem(acc, [&](int j, int r, int i, int jj) {
        if (c0 + j < D && r0 + r < R)
          out[(long long)(c0 + j) * R + r0 + r] = acc.c[i][jj];
      });
    } else {
      // d_v_t[r0 + r][c0 + c] = sum_p g_p z[p][r0 + r] * x[tok_p][c0 + c]
      TileAccFor<PREC, RT, DT, TH> acc;
      tileLoop<RT, DT, KP, TH, false, false>(
          acc, bs, as, n,
          [&](int r, int k) {
            const int rr = r0 + r;
            return k < n && rr < R ? pgate[p0 + k] * __ldcg(zsave + (q0 + k) * R + rr) : 0.f;
          },
          [&](int c, int k) {
            const int cc = c0 + c;
            return k < n && cc < D ? x[(long long)ptok[p0 + k] * D + cc] : 0.f;
          });
      float *out = dv + (long long)t * R * D;
      forEachElem(acc, [&](int r, int c, int i, int j) {
        if (r0 + r < R && c0 + c < D)
          out[(long long)(r0 + r) * D + c0 + c] = acc.c[i][j];
      });
    }
  }
}

} // namespace k
} // namespace molt
