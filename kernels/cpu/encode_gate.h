// encode_gate / tc_encode and their backward (gate_bwd / tc_encode_bwd): the encoder GEMM, the
// gate, and the compaction of listed (token, transform) pairs into per-transform token lists.
//
// Everything after the GEMM costs O(B·T) scanning plus O(pairs); the backward costs O(pairs·d).
#pragma once

#include <cstdint>

#include "molt/gate.h"

namespace molt::cpu {

using molt::GateKind; // the one definition (molt/gate.h)

struct GateParams {
  GateKind kind = GateKind::JumpReLU;
  double bandwidth = 0.0; // JumpReLU: the STE rectangle width ε
  int64_t k = 0;          // TopK
};

/// Per-transform CSR lists of listed pairs (docs/bundle.md): ptr [T+1], then per pair the
/// token (ascending within a transform), the gate value and the pre-activation.
template <typename S> struct PairLists {
  const int32_t *ptr = nullptr;
  const int32_t *tok = nullptr;
  const S *gate = nullptr;
  const S *pre = nullptr;
};

/// pre = x·encWᵀ + biasSign·encB (molt: biasSign = −1, transcoder: +1); gates every pair and
/// writes the listed ones per transform. JumpReLU applies θ⁺ = max(θ, 0), so g = pre·H(pre − θ⁺)
/// ≥ 0 whatever θ is learned. Listed: pre > θ⁺ − ε/2 (JumpReLU), pre > 0 (ReLU), among the
/// token's k largest with pre > 0 (TopK, ties to the lower index). stats[3] += #(g > 0).
/// theta may be null unless the gate is JumpReLU.
template <typename S>
void encodeGate(int64_t B, int64_t T, int64_t D, const GateParams &gate, S biasSign, const S *x,
                const S *encW, const S *encB, const S *theta, S *pre, int32_t *pairPtr,
                int32_t *pairTok, S *pairGate, S *pairPre, int32_t *pairCount, S *stats);

/// Overwrites dEncW [T,D], dEncB [T] and (JumpReLU, when dTheta is not null) dTheta [T] from
/// the gate gradients of the listed pairs: da = dg·H(pre − θ⁺) (ReLU/TopK: dg·[pre > 0]),
/// dEncW_t = Σ da·x, dEncB_t = biasSign·Σ da, dθ_t = Σ dg·(−θ⁺/ε)·[|pre − θ⁺| < ε/2] (0 for θ ≤ 0).
template <typename S>
void gateBwd(int64_t T, int64_t D, const GateParams &gate, S biasSign, const S *x, const S *theta,
             const PairLists<S> &pairs, const S *pairDgate, S *dEncW, S *dEncB, S *dTheta);

/// The gates' part of the input gradient: dX[tok] += da·encW_t for every listed pair, with
/// gateBwd's da = dg·[pre > θ⁺] (ReLU/TopK: [pre > 0]); pre = x·encWᵀ ± b, so ∂pre/∂x = encW_t.
/// Threads own token ranges, so each row of dX is summed in transform order on any thread count.
template <typename S>
void gateBwdDx(int64_t B, int64_t T, int64_t D, const GateParams &gate, const S *encW,
               const S *theta, const PairLists<S> &pairs, const S *pairDgate, S *dX);

} // namespace molt::cpu
