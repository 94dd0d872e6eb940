// createBackend: the one place that maps a device name to a backend.
#include "molt/backend.h"

#include "cpu/cpu_backend.h"
// The CUDA backend lands in its own change; until its header exists this build has none.
#if defined(MOLT_HAVE_CUDA) && __has_include("cuda/cuda_backend.h")
#include "cuda/cuda_backend.h"
#define MOLT_CUDA_BACKEND 1
#endif

namespace molt {

StatusOr<std::unique_ptr<Backend>> createBackend(const std::string &name) {
  if (name == "cpu")
    return createCpuBackend();
  if (name == "cuda") {
#ifdef MOLT_CUDA_BACKEND
    return createCudaBackend();
#else
    return unavailable("this build has no CUDA backend");
#endif
  }
  return invalidArgument("unknown device '" + name + "' (expected cpu or cuda)");
}

} // namespace molt
