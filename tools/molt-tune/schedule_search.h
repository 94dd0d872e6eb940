// molt-tune schedule: searches rank allocations at a spec's parameter budget with short
// training runs and successive halving, scoring NMSE at the reference schedule's L0.
#pragma once

#include <cstdint>
#include <string>
#include <vector>

#include "molt/status.h"

namespace molt::tune {

/// A rank allocation: counts[i] transforms of rank ranks[i].
struct RankSet {
  std::string name;
  std::vector<int64_t> ranks, counts;
  /// Σ count·rank: the U,V parameter budget divided by 2·d_model.
  int64_t featureEquivalents() const;
  std::string scheduleAttr() const; // #molt.schedule<ranks = [...], counts = [...]>
};

/// The candidates at `ref`'s budget (every one has the same Σ count·rank, so the same U,V
/// parameter count): the reference, uniform ranks, proportions shifted toward high or low
/// ranks, and halved/doubled rank sets. Ranks stay within [1, dModel].
std::vector<RankSet> rankCandidates(const RankSet &ref, int64_t dModel);

/// Linear interpolation of NMSE in log L0 between two (L0, NMSE) runs, evaluated at `l0`
/// (extrapolated at most one span beyond them, then clamped).
double nmseAtL0(double l0a, double nmseA, double l0b, double nmseB, double l0);

struct ScheduleSearchOptions {
  std::string spec, data, val, out, work; // work: run folders and results.json ("" = OUT.runs)
  std::string layer;                      // "" = the spec's first molt.layer
  double timeLimit = 0;                   // seconds; 0 = none
  int64_t steps = 300;                    // first round's steps (doubled each round)
  int64_t batch = 512;
  int seeds = 1;            // runs per (candidate, λ, steps), averaged
  double lambdaFactor = 4; // λ step (× or ÷, up to 3 times) to bring a candidate to the target L0
  bool quiet = false;
};

/// Runs the search in-process (the compiler facade, runTraining, evaluateRun); Unavailable in a
/// build without the compiler.
Status searchSchedule(const ScheduleSearchOptions &options);

} // namespace molt::tune
