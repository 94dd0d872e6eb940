// DeviceExecutor: what the CUDA and cuda-emu executors share above their memory. A launch of
// either is the same kernel ABI (kernels/cuda/abi.cuh): k::Args in the op's canonical argument
// order (molt/ops.def) with each argument's bf16 copy beside it, the ParamEntry table of a
// `params` list (grad_norm, adam), the work scratch zeroed as the op's row says, the sizes at
// the active rows, and the grid the launch expression gives there. A backend supplies only where
// its tensors, copies, tables and scratch live, and how a launch is issued.
#pragma once

#include <array>
#include <string>
#include <utility>
#include <vector>

#include "executor_base.h"
#include "kernels/cuda/abi.cuh"

namespace molt {

class DeviceExecutor : public ExecutorBase {
protected:
  using ExecutorBase::ExecutorBase;

  /// A tensor's device address (caller memory while bound) and its bf16 copy (null: none).
  virtual void *deviceAddress(const std::string &name) = 0;
  virtual const unsigned short *bf16Copy(const std::string &name) = 0;
  /// The device ParamEntry table of a `params` list and its length (a backend builds it once per
  /// list from paramRows and keeps it where the kernels read it).
  virtual StatusOr<std::pair<const k::ParamEntry *, int>> paramTable(const std::string &list) = 0;
  /// The work scratch (at least the op's cudaWorkWords at the prepared batch) with its first
  /// `zeroedWords` cleared before the launch.
  virtual StatusOr<unsigned *> workScratch(size_t zeroedWords) = 0;

  /// The rows of a `params` list's table: each param's tensor, d_, m_, v_, size and bf16 copy.
  StatusOr<std::vector<k::ParamEntry>> paramRows(const std::string &list);

  /// A launch of `kernel` for `invocation` at the active rows: its arguments and grid.
  struct Launch {
    k::Args args{};
    std::array<unsigned, 3> grid{};
  };
  StatusOr<Launch> marshal(const KernelDesc &kernel, const Invocation &invocation,
                           const LaunchConfig &launch);
};

} // namespace molt
