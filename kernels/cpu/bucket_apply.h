// bucket_apply and bucket_apply_bwd: the sparse core. Work is per listed (token, transform)
// pair of one rank bucket; a transform's tokens are gathered into a small matrix so each
// product is one GEMM with V_t / U_t hot in cache. Cost grows with L0, never with T.
#pragma once

#include <cstdint>

#include "kernels/cpu/encode_gate.h"

namespace molt::cpu {

/// yhat[tok] += g·U_t·(V_t·x[tok]) for each listed pair with g ≠ 0 of transforms OFF..OFF+N
/// (u [N,D,R], v [N,R,D]). Threads own contiguous transform ranges and private accumulators
/// added in a fixed order, so the bits depend on the thread count only, never on scheduling.
template <typename S>
void bucketApply(int64_t B, int64_t D, int64_t R, int64_t N, int64_t OFF, const S *x, const S *u,
                 const S *v, const PairLists<S> &pairs, S *yhat);

/// For every listed pair (g = 0 included): h = V_t x, z = U_tᵀ dy; dU_t += dy (g h)ᵀ,
/// dV_t += (g z) xᵀ, pairDgate += h·z. Threads own whole transforms.
template <typename S>
void bucketApplyBwd(int64_t D, int64_t R, int64_t N, int64_t OFF, const S *dYhat, const S *x,
                    const S *u, const S *v, const PairLists<S> &pairs, S *dU, S *dV, S *pairDgate);

/// The input gradient of bucketApply: for every listed pair, h = V_t x, z = U_tᵀ dy;
/// pairDgate += h·z and dX[tok] += g·V_tᵀ z. With dU and dV (both non-null) also bucketApplyBwd's
/// dU_t += dy (g h)ᵀ, dV_t += (g z) xᵀ in the same pass. Threads own contiguous transform ranges
/// and private dX accumulators added in part order (bits depend on the thread count only).
template <typename S>
void bucketApplyDx(int64_t B, int64_t D, int64_t R, int64_t N, int64_t OFF, const S *dYhat,
                   const S *x, const S *u, const S *v, const PairLists<S> &pairs, S *dU, S *dV,
                   S *pairDgate, S *dX);

} // namespace molt::cpu
