// frob_norm and frob_norm_bwd: exact ‖U_t V_t‖_F through r×r Gram matrices, never the d×d product.
#pragma once

#include <cstdint>

namespace molt::cpu {

/// For each of the bucket's N transforms (u [N,D,R], v [N,R,D]): gramU = UᵀU, gramV = VVᵀ
/// (both [N,R,R]) and norm[n] = sqrt(trace(gramU·gramV)). `norm` points at the bucket's slice.
template <typename S>
void frobNorm(int64_t D, int64_t R, int64_t N, const S *u, const S *v, S *norm, S *gramU, S *gramV);

/// dU_t += (dNorm_t/n_t)·U_t·gramV_t and dV_t += (dNorm_t/n_t)·gramU_t·V_t (nothing when n_t = 0).
template <typename S>
void frobNormBwd(int64_t D, int64_t R, int64_t N, const S *dNorm, const S *norm, const S *u,
                 const S *v, const S *gramU, const S *gramV, S *dU, S *dV);

} // namespace molt::cpu
