// A synthetic teacher for tests and the demo: a random MLP (DESIGN.md §3 teacher format) on
// clustered inputs, written as x/y activation shards, with the best single linear map's NMSE
// as the bar a sparse layer has to beat.
#pragma once

#include <cstdint>
#include <string>

#include "molt/status.h"

namespace molt {

struct SynthOptions {
  std::string out;            // writes OUT/teacher.safetensors, OUT/train/, OUT/val/
  int64_t d = 64, hidden = 256;
  int64_t clusters = 256;     // more than d, so no linear map interpolates the centres
  double noise = 0.3;         // within-cluster spread, relative to the unit-norm-per-dim centres
  double gain = 1.0;          // w_in std × √d: larger makes the teacher less linear
  int64_t trainRows = 200000, valRows = 20000, shardRows = 50000;
  uint64_t seed = 1;
  std::string activation = "gelu";
};

struct SynthReport {
  double linearNmseTrain = 0; // least squares y ≈ W x + b fitted on train
  double linearNmseVal = 0;   // the same map on val
};

StatusOr<SynthReport> synthesize(const SynthOptions &opts);

} // namespace molt
