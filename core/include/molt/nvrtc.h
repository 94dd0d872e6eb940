// NVRTC compilation of one CUDA C++ source: the floor's access to the toolchain, needing no GPU.
//
// Only libnvrtc is needed (opened with dlopen through molt/cuda_api.h); the compiler's
// --verify-nvrtc and the runtime's kernel cache (molt/cuda.h) both compile through here.
#pragma once

#include <map>
#include <string>
#include <vector>

#include "molt/status.h"

namespace molt::cuda {

/// Compiles one CUDA C++ translation unit with NVRTC for `arch` ("sm_80", "sm_90a", ...):
/// a cubin when `cubin`, else PTX for the matching compute_XY. `includeDirs` become -I;
/// `headers` (include name -> text) are supplied in memory. Errors carry the NVRTC log.
StatusOr<std::string> compileSource(const std::string &source, const std::string &name,
                                    const std::vector<std::string> &includeDirs,
                                    const std::string &arch, bool cubin,
                                    const std::map<std::string, std::string> &headers = {});

/// "13.0", or Unavailable when there is no NVRTC.
StatusOr<std::string> nvrtcVersion();

} // namespace molt::cuda
