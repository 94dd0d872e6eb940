// grad_norm and adam: the global gradient norm / non-finite check and the Adam update.
#pragma once

#include <cstdint>
#include <vector>

namespace molt::cpu {

/// One parameter with its gradient and Adam moments, all of n elements.
template <typename S> struct ParamSlot {
  S *p = nullptr;
  S *d = nullptr;
  S *m = nullptr;
  S *v = nullptr;
  int64_t n = 0;
};

/// stats[4] = Σ‖d_p‖² (double, fixed order); stats[5] = 1 when that sum or a loss statistic
/// (stats[0..2]) is not finite.
template <typename S> void gradNorm(const std::vector<ParamSlot<S>> &params, S *stats);

/// Adam with bias correction and global-norm clipping, from scalars (lr = [1], β1 = [2],
/// β2 = [3], ε = [4], clip = [5], step = [6]); does nothing when stats[5] > 0.
template <typename S>
void adam(const std::vector<ParamSlot<S>> &params, const S *scalars, const S *stats);

} // namespace molt::cpu
