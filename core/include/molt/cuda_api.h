// Run-time loading of libcuda and libnvrtc through cuda_symbols.h: one table each, opened once per process.
#pragma once

#include <cuda.h>
#include <nvrtc.h>

#include <string>
#include <vector>

#include "molt/cuda_symbols.h"
#include "molt/status.h"

namespace molt::cuda {

#define MOLT_CUDA_MEMBER(name) decltype(&::name) name = nullptr;

struct DriverApi {
  MOLT_CUDA_DRIVER_SYMBOLS(MOLT_CUDA_MEMBER)
  /// "cuMemAlloc: out of memory" style message for a failed call.
  Status check(CUresult r, const char *what) const;
};

struct NvrtcApi {
  MOLT_NVRTC_SYMBOLS(MOLT_CUDA_MEMBER)
  std::string library; // the path or soname that was opened
};

#undef MOLT_CUDA_MEMBER

/// The driver table (after cuInit), or Unavailable: no libcuda.so.1, a missing symbol, or a
/// driver that fails to initialise (no device, no kernel module).
StatusOr<const DriverApi *> driverApi();
/// The NVRTC table, or Unavailable naming every place that was tried. Needs no GPU.
StatusOr<const NvrtcApi *> nvrtcApi();

/// Every NVRTC option for a target ("sm_90" or "compute_90"); the kernel cache keys on them.
std::vector<std::string> nvrtcOptions(const std::string &target,
                                      const std::vector<std::string> &includeDirs);

} // namespace molt::cuda

#define MOLT_CU(api, call) MOLT_RETURN_IF_ERROR((api).check((api).call, #call))
