// encode_tangent / tc_encode_tangent: the gate values' tangents along x_dot, the one kernel the
// `jvp` entry adds (the rest of a Jacobian-vector product reuses bucket_apply and tc_decode).
#pragma once

#include <cstdint>

#include "kernels/cpu/encode_gate.h"

namespace molt::cpu {

/// pairTan[p] = [g_p > 0]·(encW_t · xDot[tok_p]) for every listed pair of every transform t
/// (overwrites). Every gate has slope 1 where it is open and open means g > 0 (JumpReLU:
/// pre > θ⁺ ≥ 0 makes g = pre; ReLU; a selected TopK unit), so the gate's value is not needed.
/// Costs (listed pairs)·D.
template <typename S>
void encodeTangent(int64_t T, int64_t D, const S *xDot, const S *encW, const PairLists<S> &pairs,
                   S *pairTan);

} // namespace molt::cpu
