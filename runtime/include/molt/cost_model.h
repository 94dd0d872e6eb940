// The cost model of every CUDA kernel: FLOPs and minimal global-memory bytes of one invocation as
// functions of the step's pair counts, and the time floor they imply on a device.
//
// "Minimal" is what the op's contract (docs/bundle.md) forces through HBM when every input is read
// once at its storage precision (the bf16 copies of x and the weights in a bf16 plan), every
// output written once, and every sum into a tensor that other kernels also add to (yhat, d_u,
// d_v, pair_dgate, stats) done as one atomic per element. Gathered bytes (rows read through
// pair_tok) and reduction bytes (those atomics) are reported apart: they are what the grouped
// kernels' prologues and epilogues have to make cheap (../shared/GPU-KERNELS.md, section 5).
// The emulator's traffic counters (kernels/cuda/emu/simt.h) measure the same quantities, so
// tests/unit/test_cuda_traffic.cpp checks each kernel against this model, and bench_cuda and
// scripts/gpu-check print achieved time over the floor.
#pragma once

#include <cstdint>
#include <string>
#include <vector>

#include "molt/plan.h"
#include "molt/status.h"

namespace molt {

/// What an invocation's cost depends on at run time.
struct StepCounts {
  int64_t batch = 0;
  /// The CSR offsets encode_gate / tc_encode wrote: T + 1 (or F + 1) entries, pair_ptr[T] pairs.
  std::vector<int32_t> pairPtr;
};

struct KernelCost {
  double flops = 0;
  double loadBytes = 0, storeBytes = 0, atomicBytes = 0;
  double gatherBytes = 0;    // the part of loadBytes read through a token index
  double reductionBytes = 0; // the part of atomicBytes that sums per-pair rows into a [B, d] tensor
  double totalBytes() const { return loadBytes + storeBytes + atomicBytes; }
};

/// The model of one invocation of `plan`. NotFound for an op without a model (none today).
StatusOr<KernelCost> kernelCost(const Plan &plan, const Invocation &inv, const StepCounts &counts);

/// A device's limits: dense tensor-core (bf16 plans) or SIMT fp32 (fp32 plans) FLOP/s and HBM bytes/s.
struct DevicePeak {
  std::string name;
  double flops = 0, bytesPerSecond = 0;
};
/// H200 SXM, the numbers ../shared/GPU-KERNELS.md's floor uses: bf16 dense 790 TFLOP/s, fp32
/// SIMT 67 TFLOP/s, HBM3e 4.8 TB/s.
DevicePeak h200Peak(const std::string &precision);

/// max(FLOPs / peak, bytes / bandwidth): the roofline floor of one invocation, seconds.
double floorSeconds(const KernelCost &cost, const DevicePeak &peak);

} // namespace molt
