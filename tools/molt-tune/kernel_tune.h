// molt-tune kernels: times every legal launch configuration of each kernel of a plan and keeps
// the fastest in the tuning database (docs/tuning.md).
#pragma once

#include <cstdint>
#include <string>
#include <vector>

#include "molt/plan.h"
#include "molt/status.h"

namespace molt::tune {

struct KernelTuneOptions {
  std::string bundle; // a bundle directory (molt-tune compiles a .mlir spec into one first)
  std::string device = "cpu";
  std::string db;     // database path
  int64_t batch = 1024;
  int warmup = 2, repeats = 7; // train steps per candidate: discarded, then timed (median)
  bool retune = false;         // re-time kernels the database already holds
  bool quiet = false;
};

/// One candidate: a thread count (CPU) or a launch (CUDA).
struct Candidate {
  int threads = 0; // CPU; 0 is the executor's default (the heuristic)
  LaunchConfig launch;
  std::string label;
};

/// The legal configurations of a kernel on a device, heuristic first, after the cost model's
/// pruning (CPU: thread counts a kernel this small would not use; CUDA: grids below one block
/// per 8 work items or above the work itself).
std::vector<Candidate> candidates(const KernelDesc &k, const std::string &device, int64_t batch,
                                  int64_t dModel, int hardwareThreads);

/// Tunes every kernel not yet in the database, saving after each one; then times the whole
/// train step (heuristic, per-kernel winners, CPU: every kernel at one thread count) and keeps
/// the fastest of those in the database. Prints a line per kernel and per step configuration.
Status tuneKernels(const KernelTuneOptions &options);

} // namespace molt::tune
