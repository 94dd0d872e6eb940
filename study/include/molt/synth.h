// Synthetic teachers for tests, the demo and the schedule search: an MLP (docs/architecture.md §3 teacher
// format) on clustered inputs, written as x/y activation shards, with the best single linear
// map's NMSE as the bar a sparse layer has to beat.
#pragma once

#include <cstdint>
#include <string>
#include <vector>

#include "molt/status.h"
#include "molt/teacher.h"

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
  /// Non-empty: the rank-groups teacher instead of the random one (docs/tuning.md). One input
  /// cluster per entry; near that cluster's centre only its group's units are active and the
  /// teacher's Jacobian there has exactly this rank. `hidden`, `clusters` and `gain` are then
  /// implied (hidden = 2 Σ ranks: each rank is a ± pair of units).
  std::vector<int64_t> groupRanks;
};

/// "32:2,16:4,8" -> [32, 32, 16, 16, 16, 16, 8]: rank:count pairs (count 1 when left out).
StatusOr<std::vector<int64_t>> parseRankGroups(const std::string &text);

/// The teacher before any data is drawn. For the rank-groups teacher also its cluster centres
/// ([clusters, d]) and the rank of the teacher's Jacobian at each; the random teacher leaves
/// both empty (its centres are drawn with the data).
struct SynthTeacher {
  TeacherMlp mlp;
  std::vector<double> centres;
  std::vector<int64_t> clusterRank;
};

StatusOr<SynthTeacher> makeSynthTeacher(const SynthOptions &opts);

struct SynthReport {
  double linearNmseTrain = 0; // least squares y ≈ W x + b fitted on train
  double linearNmseVal = 0;   // the same map on val
};

StatusOr<SynthReport> synthesize(const SynthOptions &opts);

} // namespace molt
