// add_bias, mse_loss and bias_grad: the per-token dense tail of a layer (O(B·d)).
#pragma once

#include <cstdint>

namespace molt::cpu {

/// yhat[i] += decB for every token.
template <typename S> void addBias(int64_t B, int64_t D, const S *decB, S *yhat);

/// dYhat = 2(ŷ − y)/B; stats[0] += Σ(ŷ − y)², stats[1] += Σy², stats[6] += Σy (sums in double,
/// in a fixed order).
template <typename S> void mseLoss(int64_t B, int64_t D, const S *yhat, const S *y, S *dYhat, S *stats);

/// dDecB = column sums of dYhat (overwrites).
template <typename S> void biasGrad(int64_t B, int64_t D, const S *dYhat, S *dDecB);

} // namespace molt::cpu
