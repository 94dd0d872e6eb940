// Evaluation of trained weights on held-out data: NMSE, FVU, L0, dead fraction, per-bucket L0
// and usage, and the collapse warning. Works for molt layers and transcoders alike.
#pragma once

#include <string>
#include <vector>

#include "molt/backend.h"
#include "molt/data.h"
#include "molt/trainer.h"

namespace molt {

struct BucketReport {
  int64_t rank = 0, count = 0; // a transcoder reports one group: rank 1, count F
  double l0 = 0;               // mean active transforms of this bucket per token
  double usedFraction = 0;     // transforms of this bucket active at least once
};

struct EvalReport {
  int64_t rows = 0, skippedRows = 0;
  double nmse = 0, fvu = 0, l0 = 0, deadFraction = 0;
  std::vector<BucketReport> buckets;
  std::string warning; // non-empty when the run looks collapsed
  bool hasJacobian = false;   // with a teacher: jacobian_cosine over the first rows
  double jacobianCosine = 0, jacobianStdError = 0;
  int64_t jacobianRows = 0;
  /// One flat JSON object (nmse, fvu, l0, dead_fraction, rows, bucket<k>_l0, ...).
  std::string toJson() const;
  /// A few aligned lines for people.
  std::string toText() const;
};

/// Runs the plan's `eval` entry point over every row of `data` (normalised with `norm`;
/// NMSE and FVU do not depend on the scale) with `params` loaded. The tail that does not fill
/// a batch runs on a second executor of its own size, so every row counts once.
StatusOr<EvalReport> evaluate(Backend &backend, const Plan &plan, const std::string &bundleDir,
                              const TensorMap &params, const ShardSet &data,
                              const Normalization &norm, int64_t batch);

} // namespace molt
