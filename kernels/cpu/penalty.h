// penalty: the sparsity term λ/B·Σ S(g·‖U_tV_t‖_F) over listed pairs, with S = tanh(c·) or identity.
#pragma once

#include <cmath>
#include <cstdint>

#include "kernels/cpu/encode_gate.h"

namespace molt::cpu {

enum class PenaltyKind { Tanh, L1 };

struct PenaltyParams {
  PenaltyKind kind = PenaltyKind::Tanh;
  double c = 1.0;

  template <typename S> S value(S p) const { return kind == PenaltyKind::Tanh ? std::tanh(S(c) * p) : p; }
  template <typename S> S slope(S p) const {
    if (kind == PenaltyKind::L1)
      return S(1);
    S th = std::tanh(S(c) * p);
    return S(c) * (S(1) - th * th);
  }
};

/// For the listed pairs of all T transforms: p = g·norm_t; stats[2] += Σ S(p) (in transform
/// order); pairDgate = lamOverB·S'(p)·norm_t (overwrites); dNorm_t = lamOverB·Σ S'(p)·g
/// (overwrites, 0 for a transform without pairs).
template <typename S>
void penalty(int64_t T, const PenaltyParams &pen, const PairLists<S> &pairs, const S *norm,
             S lamOverB, S *pairDgate, S *dNorm, S *stats);

/// Σ over a transform's listed pairs, shared by the MOLT and transcoder penalties: writes
/// pairDgate and returns (Σ S(p), Σ S'(p)·g) for p = g·norm.
template <typename S>
void penaltyPairs(const PenaltyParams &pen, const S *gate, int64_t count, S norm, S lamOverB,
                  S *pairDgate, double &sum, S &slopeDotGate) {
  sum = 0;
  slopeDotGate = 0;
  for (int64_t i = 0; i < count; ++i) {
    S p = gate[i] * norm, sl = pen.slope(p);
    sum += double(pen.value(p));
    pairDgate[i] = lamOverB * sl * norm;
    slopeDotGate += sl * gate[i];
  }
}

} // namespace molt::cpu
