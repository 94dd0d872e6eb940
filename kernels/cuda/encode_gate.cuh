// encode_gate and tc_encode: tiled x.enc_w^T GEMM with the bias/gate epilogue, then compaction into per-transform pair lists.
//
// One launch, two phases joined by a ticket barrier (common.cuh waitCount):
//   A. blocks take 64x64 (token, transform) tiles by ticket, write pre, and count each
//      transform's listed pairs (Args::work + 16, zeroed by the executor);
//   B. once every tile is done, blocks take transforms by ticket in increasing order, keep a
//      running prefix of the counts (the CSR offset), and scan the transform's column of pre in
//      token order with a block scan, so each list is written with tokens ascending —
//      deterministic, and identical to the CPU backend's lists.
// Tickets make the barrier safe for any grid: a block only waits after every tile has been
// taken by a block that is already running.
// TopK (tc_encode only) cannot list a pair from its tile: between A and B, blocks take tokens by
// ticket, select each token's k largest (topk.cuh), count the selected per feature and park the
// token's cut in Args::work; a second ticket barrier; then B lists the pairs the cut takes.
#pragma once

#include "molt_kernels/common.cuh"
#include "molt_kernels/topk.cuh"

namespace molt {
namespace k {

/// Publishes one finished work item: its writes are visible to any block that sees the count.
__device__ __forceinline__ void markDone(unsigned *done) {
  __threadfence();
  __syncthreads();
  if (threadIdx.x == 0)
    atomicAdd(done, 1u);
}

/// stats[3] += the block's count of active pairs.
template <int TH> __device__ __forceinline__ void addActive(float v, float *scratch, float *stats) {
  const float sum = blockSum<TH>(v, scratch);
  if (threadIdx.x == 0 && sum > 0.f)
    atomicAdd(&stats[3], sum);
}

template <class C, int T, bool PLUS_BIAS> __device__ __forceinline__ void encodeImpl(const Args &a) {
  constexpr int D = C::D, TH = C::threads, TM = 64, TN = 64, KT = 32, ITEMS = 8;
  constexpr int G = C::gate;
  constexpr bool TOPK = G == kGateTopK;
  float bw = 0.f;
  if constexpr (G == kGateJumpRelu)
    bw = C::bandwidth;
  using Rule = GateRule<G>;
  const float *x = arg<float>(a, 0), *w = arg<float>(a, 1), *b = arg<float>(a, 2),
              *theta = arg<float>(a, 3);
  float *pre = arg<float>(a, 4);
  int *pptr = arg<int>(a, 5), *ptok = arg<int>(a, 6);
  float *pgate = arg<float>(a, 7), *ppre = arg<float>(a, 8);
  int *pcount = arg<int>(a, 9);
  float *stats = arg<float>(a, 10);
  unsigned *tileTicket = a.work, *tilesDone = a.work + 1, *colTicket = a.work + 2;
  int *counts = reinterpret_cast<int *>(a.work + 16);
  unsigned *cuts = a.work + 16 + T; // TopK: (tau, cut) per token, 2B words
  const long long B = a.B;
  const long long tilesN = cdivll(T, TN), numTiles = cdivll(B, TM) * tilesN;

  __shared__ float xs[KT * (TM + 1)], ws[KT * (TN + 1)];
  __shared__ int colCount[TN];
  __shared__ int iscratch[32];
  __shared__ float fscratch[32];
  __shared__ unsigned slot;

  // ---- phase A: pre and per-transform counts ----
  float active = 0.f;
  for (;;) {
    const unsigned tile = takeTicket(tileTicket, &slot);
    if (tile >= numTiles)
      break;
    const long long m0 = (tile / tilesN) * TM;
    const int n0 = int(tile % tilesN) * TN;
    for (int i = threadIdx.x; i < TN; i += TH)
      colCount[i] = 0;
    TileAcc<TM, TN, TH> acc;
    acc.zero();
    for (int k0 = 0; k0 < D; k0 += KT) {
      stageRowsT<TM, KT, TM + 1, TH>(xs, [&](int m, int kk) {
        const long long tok = m0 + m;
        const int kx = k0 + kk;
        return tok < B && kx < D ? x[tok * D + kx] : 0.f;
      });
      stageRowsT<TN, KT, TN + 1, TH>(ws, [&](int n, int kk) {
        const int tt = n0 + n, kx = k0 + kk;
        return tt < T && kx < D ? w[(long long)tt * D + kx] : 0.f;
      });
      __syncthreads();
      acc.template mma<KT, TM + 1, TN + 1>(xs, ws);
      __syncthreads();
    }
#pragma unroll
    for (int j = 0; j < acc.IN; ++j) {
      const int tt = n0 + acc.col(j);
      if (tt >= T)
        continue;
      const float bias = b[tt], th = Rule::threshold(theta, tt);
      int listed = 0;
#pragma unroll
      for (int i = 0; i < acc.IM; ++i) {
        const long long tok = m0 + acc.row(i);
        if (tok >= B)
          continue;
        const float p = PLUS_BIAS ? acc.c[i][j] + bias : acc.c[i][j] - bias;
        pre[tok * T + tt] = p;
        if constexpr (!TOPK) {
          listed += Rule::listed(p, th, bw);
          active += Rule::open(p, th) ? 1.f : 0.f;
        }
      }
      if (listed)
        atomicAdd(&colCount[acc.col(j)], listed);
    }
    __syncthreads();
    for (int i = threadIdx.x; i < TN; i += TH)
      if (colCount[i])
        atomicAdd(&counts[n0 + i], colCount[i]);
    markDone(tilesDone);
  }
  addActive<TH>(active, fscratch, stats);
  waitCount(tilesDone, unsigned(numTiles));

  // ---- TopK only: per-token selection, counts of the selected, a second barrier ----
  if constexpr (TOPK) {
    constexpr int K = int(C::k) < T ? int(C::k) : T;
    unsigned *tokTicket = a.work + 3, *tokensDone = a.work + 4;
    __shared__ unsigned hist[256];
    __shared__ int bcast[2];
    float picked = 0.f;
    for (;;) {
      const unsigned tok = takeTicket(tokTicket, &slot);
      if ((long long)tok >= B)
        break;
      const float *row = pre + (long long)tok * T;
      const TopkCut cut = topkSelect<TH>(row, T, K, hist, iscratch, bcast);
      for (int f = threadIdx.x; f < T; f += TH) {
        const float p = __ldcg(&row[f]);
        if (p > 0.f && topkTaken(p, f, cut)) {
          atomicAdd(&counts[f], 1);
          picked += 1.f;
        }
      }
      if (threadIdx.x == 0) {
        cuts[2 * (long long)tok] = cut.tau;
        cuts[2 * (long long)tok + 1] = unsigned(cut.cut);
      }
      markDone(tokensDone);
    }
    addActive<TH>(picked, fscratch, stats);
    waitCount(tokensDone, unsigned(B));
  }

  // ---- phase B: compaction, one transform per ticket, tokens ascending ----
  int prevT = 0;
  long long prefix = 0; // sum of counts[0 .. prevT)
  for (;;) {
    const unsigned t = takeTicket(colTicket, &slot);
    if (t >= unsigned(T))
      break;
    int part = 0;
    for (int i = prevT + threadIdx.x; i < int(t); i += TH)
      part += __ldcg(&counts[i]);
    int add = 0;
    (void)blockExclusiveScan<TH>(part, iscratch, add);
    prefix += add;
    prevT = int(t);
    if (threadIdx.x == 0) {
      pptr[t] = int(prefix);
      if (t == unsigned(T) - 1) {
        const int total = int(prefix) + __ldcg(&counts[t]);
        pptr[T] = total;
        pcount[0] = total;
      }
    }
    const float th = Rule::threshold(theta, t);
    long long run = prefix;
    for (long long base = 0; base < B; base += (long long)TH * ITEMS) {
      const long long tok0 = base + (long long)threadIdx.x * ITEMS;
      float pv[ITEMS];
      bool take[ITEMS];
      int n = 0;
#pragma unroll
      for (int q = 0; q < ITEMS; ++q) {
        const long long tok = tok0 + q;
        pv[q] = tok < B ? __ldcg(&pre[tok * T + t]) : 0.f;
        if constexpr (TOPK)
          take[q] = tok < B && pv[q] > 0.f &&
                    topkTaken(pv[q], int(t),
                              TopkCut{__ldcg(&cuts[2 * tok]), int(__ldcg(&cuts[2 * tok + 1]))});
        else
          take[q] = tok < B && Rule::listed(pv[q], th, bw);
        n += take[q];
      }
      int total = 0;
      long long pos = run + blockExclusiveScan<TH>(n, iscratch, total);
#pragma unroll
      for (int q = 0; q < ITEMS; ++q)
        if (take[q]) {
          ptok[pos] = int(tok0 + q);
          pgate[pos] = Rule::gate(pv[q], th);
          ppre[pos] = pv[q];
          ++pos;
        }
      run += total;
    }
  }
}

/// pre = x.enc_w^T - enc_b; JumpReLU or ReLU gate; per-transform pair lists.
template <class C> __device__ __forceinline__ void encode_gate(const Args &a) {
  encodeImpl<C, int(C::T), false>(a);
}

/// Transcoder encoder: pre = x.enc_w^T + enc_b; ReLU, JumpReLU or TopK (k largest pre > 0).
template <class C> __device__ __forceinline__ void tc_encode(const Args &a) {
  encodeImpl<C, int(C::F), true>(a);
}

} // namespace k
} // namespace molt
