// The transcoder baseline's decoder side: tc_decode, skip_apply, tc_penalty and their
// backwards (tc_encode / tc_encode_bwd are encodeGate / gateBwd with biasSign = +1).
// Feature f's decoder vector is row f of decW [F,D].
#pragma once

#include <cstdint>

#include "kernels/cpu/encode_gate.h"
#include "kernels/cpu/penalty.h"

namespace molt::cpu {

/// yhat[tok] += act·decW_f for each listed pair; threads own token ranges.
template <typename S>
void tcDecode(int64_t B, int64_t D, int64_t F, const PairLists<S> &pairs, const S *decW, S *yhat);

/// dDecW_f += Σ act·dy[tok]; pairDgate += decW_f·dy[tok]. Threads own features.
template <typename S>
void tcDecodeBwd(int64_t D, int64_t F, const S *dYhat, const PairLists<S> &pairs, const S *decW,
                 S *dDecW, S *pairDgate);

/// yhat += x·skipWᵀ.
template <typename S> void skipApply(int64_t B, int64_t D, const S *x, const S *skipW, S *yhat);

/// dSkipW = dYhatᵀ·x (overwrites).
template <typename S> void skipBwd(int64_t B, int64_t D, const S *dYhat, const S *x, S *dSkipW);

/// p = act·‖decW_f‖: stats[2] += Σ S(p); pairDgate = lamOverB·S'(p)·‖decW_f‖ (overwrites);
/// dDecW_f = lamOverB·Σ S'(p)·act · decW_f/‖decW_f‖ (overwrites every row).
template <typename S>
void tcPenalty(int64_t D, int64_t F, const PenaltyParams &pen, const PairLists<S> &pairs,
               const S *decW, S lamOverB, S *pairDgate, S *dDecW, S *stats);

/// dX += dYhat · skipW (the skip connection's input gradient).
template <typename S> void skipBwdDx(int64_t B, int64_t D, const S *dYhat, const S *skipW, S *dX);

} // namespace molt::cpu
