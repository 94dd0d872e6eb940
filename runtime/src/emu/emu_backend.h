// The "cuda-emu" backend: a plan's CUDA kernels run on the host SIMT emulator (kernels/cuda/emu/simt.h), no GPU needed.
//
// Same ExecutorBase as the CPU and CUDA executors; device memory is host memory; each kernel is
// the very `.cu` text the CUDA backend compiles (the bundle's file, or cudaWrapperSource), built
// by the host compiler (emu_module.h). For CI: the CUDA kernels checked against the CPU oracle
// on a machine without a GPU. Slow (threads are fibers, blocks run one at a time): small batches.
#pragma once

#include <memory>

#include "molt/backend.h"

namespace molt {

/// Always succeeds in a build with the CUDA backend; prepare() reports a missing or failing host
/// compiler with its output.
StatusOr<std::unique_ptr<Backend>> createCudaEmuBackend();

} // namespace molt
