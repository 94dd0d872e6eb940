// The encoder, gate and pair compaction of kernels/cpu/encode_gate.h.
#include "kernels/cpu/encode_gate.h"

#include <algorithm>
#include <cmath>
#include <numeric>
#include <vector>

#include "kernels/cpu/gemm.h"
#include "kernels/cpu/parallel.h"

namespace molt::cpu {

namespace {

/// Appends the transforms token i lists to `out`, in ascending order, after adding the bias
/// into its pre row.
template <typename S>
void listToken(int64_t T, const GateParams &gate, S biasSign, const S *encB, const S *theta,
               S *preRow, std::vector<int32_t> &order, std::vector<int32_t> &out) {
  for (int64_t t = 0; t < T; ++t)
    preRow[t] += biasSign * encB[t];
  switch (gate.kind) {
  case GateKind::JumpReLU: {
    S half = S(gate.bandwidth / 2);
    for (int64_t t = 0; t < T; ++t)
      if (preRow[t] > theta[t] - half)
        out.push_back(int32_t(t));
    break;
  }
  case GateKind::ReLU:
    for (int64_t t = 0; t < T; ++t)
      if (preRow[t] > S(0))
        out.push_back(int32_t(t));
    break;
  case GateKind::TopK: {
    int64_t k = std::min<int64_t>(gate.k, T);
    order.resize(size_t(T));
    std::iota(order.begin(), order.end(), 0);
    std::partial_sort(order.begin(), order.begin() + k, order.end(), [&](int32_t a, int32_t b) {
      return preRow[a] > preRow[b] || (preRow[a] == preRow[b] && a < b);
    });
    std::sort(order.begin(), order.begin() + k);
    for (int64_t j = 0; j < k; ++j)
      if (preRow[order[size_t(j)]] > S(0))
        out.push_back(order[size_t(j)]);
    break;
  }
  }
}

template <typename S> S gateValue(const GateParams &gate, S pre, S theta) {
  if (gate.kind == GateKind::JumpReLU)
    return pre > theta ? pre : S(0);
  return pre > S(0) ? pre : S(0);
}

} // namespace

template <typename S>
void encodeGate(int64_t B, int64_t T, int64_t D, const GateParams &gate, S biasSign, const S *x,
                const S *encW, const S *encB, const S *theta, S *pre, int32_t *pairPtr,
                int32_t *pairTok, S *pairGate, S *pairPre, int32_t *pairCount, S *stats) {
  gemmParallel(Trans::No, Trans::Yes, B, T, D, S(1), x, D, encW, D, S(0), pre, T);

  // Pass 1: each part of the batch lists its tokens' transforms (token-major) and counts them
  // per transform. Pass 2 turns counts into offsets, transform-major then part order, so each
  // transform's tokens come out ascending. Pass 3 scatters.
  const int parts = int(std::clamp<int64_t>(B * T / kParallelWork, 1, threadCount()));
  const size_t nparts = size_t(parts);
  std::vector<std::vector<int32_t>> listed(nparts), rowEnd(nparts);
  std::vector<int64_t> offset(size_t(parts) * size_t(T), 0);
  std::vector<int64_t> active(size_t(parts), 0);
#pragma omp parallel for schedule(static, 1) num_threads(parts)
  for (int p = 0; p < parts; ++p) {
    std::vector<int32_t> order;
    int64_t *count = offset.data() + size_t(p) * size_t(T);
    for (int64_t i = B * p / parts; i < B * (p + 1) / parts; ++i) {
      listToken(T, gate, biasSign, encB, theta, pre + i * T, order, listed[size_t(p)]);
      rowEnd[size_t(p)].push_back(int32_t(listed[size_t(p)].size()));
    }
    for (int32_t t : listed[size_t(p)])
      ++count[t];
  }
  int64_t running = 0;
  for (int64_t t = 0; t < T; ++t) {
    pairPtr[t] = int32_t(running);
    for (int p = 0; p < parts; ++p) {
      int64_t c = offset[size_t(p) * size_t(T) + size_t(t)];
      offset[size_t(p) * size_t(T) + size_t(t)] = running;
      running += c;
    }
  }
  pairPtr[T] = int32_t(running);
  *pairCount = int32_t(running);
#pragma omp parallel for schedule(static, 1) num_threads(parts)
  for (int p = 0; p < parts; ++p) {
    int64_t *next = offset.data() + size_t(p) * size_t(T);
    size_t j = 0;
    int64_t i0 = B * p / parts;
    for (size_t r = 0; r < rowEnd[size_t(p)].size(); ++r) {
      int64_t i = i0 + int64_t(r);
      for (; j < size_t(rowEnd[size_t(p)][r]); ++j) {
        int32_t t = listed[size_t(p)][j];
        int64_t at = next[t]++;
        S a = pre[i * T + t];
        S g = gateValue(gate, a, theta ? theta[t] : S(0));
        pairTok[at] = int32_t(i);
        pairPre[at] = a;
        pairGate[at] = g;
        active[size_t(p)] += g > S(0);
      }
    }
  }
  stats[3] += S(std::accumulate(active.begin(), active.end(), int64_t(0)));
}

template <typename S>
void gateBwd(int64_t T, int64_t D, const GateParams &gate, S biasSign, const S *x, const S *theta,
             const PairLists<S> &pairs, const S *pairDgate, S *dEncW, S *dEncB, S *dTheta) {
  const bool jump = gate.kind == GateKind::JumpReLU;
  const S eps = S(gate.bandwidth);
  parallelItems(T, int64_t(pairs.ptr[T] - pairs.ptr[0]) * D, [&](int64_t t) {
    S *row = dEncW + t * D;
    std::fill(row, row + D, S(0));
    S db = 0, dth = 0;
    for (int32_t p = pairs.ptr[t]; p < pairs.ptr[t + 1]; ++p) {
      S dg = pairDgate[p], a = pairs.pre[p];
      bool open = jump ? a > theta[t] : a > S(0);
      if (jump && eps > S(0) && std::abs(a - theta[t]) < eps / 2)
        dth += dg * (-theta[t] / eps);
      if (!open || dg == S(0))
        continue;
      db += dg;
      const S *xr = x + int64_t(pairs.tok[p]) * D;
#pragma omp simd
      for (int64_t j = 0; j < D; ++j)
        row[j] += dg * xr[j];
    }
    dEncB[t] = biasSign * db;
    if (jump && dTheta)
      dTheta[t] = dth;
  });
}

#define MOLT_INSTANTIATE(S)                                                                        \
  template void encodeGate<S>(int64_t, int64_t, int64_t, const GateParams &, S, const S *,        \
                              const S *, const S *, const S *, S *, int32_t *, int32_t *, S *,     \
                              S *, int32_t *, S *);                                                \
  template void gateBwd<S>(int64_t, int64_t, const GateParams &, S, const S *, const S *,         \
                           const PairLists<S> &, const S *, S *, S *, S *);
MOLT_INSTANTIATE(float)
MOLT_INSTANTIATE(double)
#undef MOLT_INSTANTIATE

} // namespace molt::cpu
