// The encoder, gate and pair compaction of kernels/cpu/encode_gate.h.
#include "kernels/cpu/encode_gate.h"

#include <algorithm>
#include <cmath>
#include <numeric>
#include <vector>

#include "kernels/cpu/gemm.h"
#include "kernels/cpu/parallel.h"
#include "kernels/cuda/abi.cuh"

// The CUDA ABI's gate constants (abi.cuh stays free of host headers: bundles carry it) are the
// floor's GateKind values (molt/gate.h), which the CUDA wrapper writes by name.
static_assert(int(molt::GateKind::JumpReLU) == molt::k::kGateJumpRelu &&
                  int(molt::GateKind::ReLU) == molt::k::kGateRelu &&
                  int(molt::GateKind::TopK) == molt::k::kGateTopK,
              "kernels/cuda/abi.cuh's Gate must follow molt/gate.h");

namespace molt::cpu {

namespace {

/// The threshold the gate applies to transform t: θ⁺ = max(θ_t, 0) for JumpReLU, so a learned
/// θ below 0 makes the gate a ReLU rather than letting negative pre-activations through with a
/// negative g (which the tanh penalty would reward); 0 for ReLU and TopK. A NaN θ reads as 0,
/// as CUDA's fmaxf does.
template <typename S> S threshold(const GateParams &gate, const S *theta, int64_t t) {
  if (gate.kind != GateKind::JumpReLU)
    return S(0);
  return theta[t] > S(0) ? theta[t] : S(0);
}

/// Open: pre > θ⁺ (the gate passes pre and its gradient). Listed TopK pairs already passed
/// their selection, so the same test holds for every gate.
template <typename S> bool gateOpen(S pre, S thresholdPlus) { return pre > thresholdPlus; }

/// g = pre·H(pre − θ⁺): never negative.
template <typename S> S gateValue(S pre, S thresholdPlus) {
  return gateOpen(pre, thresholdPlus) ? pre : S(0);
}

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
      if (preRow[t] > threshold(gate, theta, t) - half)
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
        S g = gateValue(a, threshold(gate, theta, t));
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
    const S th = threshold(gate, theta, t);
    for (int32_t p = pairs.ptr[t]; p < pairs.ptr[t + 1]; ++p) {
      S dg = pairDgate[p], a = pairs.pre[p];
      // The STE slope −θ⁺/ε is 0 for θ ≤ 0: θ below 0 moves nothing, so it gets no gradient.
      if (jump && eps > S(0) && std::abs(a - th) < eps / 2)
        dth += dg * (-th / eps);
      if (!gateOpen(a, th) || dg == S(0))
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

template <typename S>
void gateBwdDx(int64_t B, int64_t T, int64_t D, const GateParams &gate, const S *encW,
               const S *theta, const PairLists<S> &pairs, const S *pairDgate, S *dX) {
  const int64_t pairCount = int64_t(pairs.ptr[T] - pairs.ptr[0]);
  parallelRanges(B, grainFor(std::max<int64_t>(1, pairCount / std::max<int64_t>(1, B)) * D),
                 [&](int64_t lo, int64_t hi) {
    for (int64_t t = 0; t < T; ++t) {
      const S th = threshold(gate, theta, t);
      const int32_t *begin = pairs.tok + pairs.ptr[t], *end = pairs.tok + pairs.ptr[t + 1];
      // Tokens ascend within a transform's list: this thread's pairs are one run.
      for (const int32_t *q = std::lower_bound(begin, end, int32_t(lo)); q < end && *q < hi; ++q) {
        const int64_t p = q - pairs.tok;
        const S dg = pairDgate[p];
        if (!gateOpen(pairs.pre[p], th) || dg == S(0))
          continue;
        const S *w = encW + t * D;
        S *dst = dX + int64_t(*q) * D;
#pragma omp simd
        for (int64_t j = 0; j < D; ++j)
          dst[j] += dg * w[j];
      }
    }
  });
}

#define MOLT_INSTANTIATE(S)                                                                        \
  template void gateBwdDx<S>(int64_t, int64_t, int64_t, const GateParams &, const S *, const S *, \
                             const PairLists<S> &, const S *, S *);                                \
  template void encodeGate<S>(int64_t, int64_t, int64_t, const GateParams &, S, const S *,        \
                              const S *, const S *, const S *, S *, int32_t *, int32_t *, S *,     \
                              S *, int32_t *, S *);                                                \
  template void gateBwd<S>(int64_t, int64_t, const GateParams &, S, const S *, const S *,         \
                           const PairLists<S> &, const S *, S *, S *, S *);
MOLT_INSTANTIATE(float)
MOLT_INSTANTIATE(double)
#undef MOLT_INSTANTIATE

} // namespace molt::cpu
