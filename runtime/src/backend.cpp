// createBackend: the one place that maps a device name to a backend.
#include "molt/backend.h"

#include "cpu/cpu_backend.h"
// The CUDA backend lands in its own change; until its header exists this build has none.
#if defined(MOLT_HAVE_CUDA) && __has_include("cuda/cuda_backend.h")
#include "cuda/cuda_backend.h"
#include "emu/emu_backend.h"
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
  if (name == "cuda-emu") { // the CUDA kernels on the host SIMT emulator (runtime/src/emu)
#ifdef MOLT_CUDA_BACKEND
    return createCudaEmuBackend();
#else
    return unavailable("this build has no CUDA backend to emulate");
#endif
  }
  return invalidArgument("unknown device '" + name + "' (expected cpu, cuda or cuda-emu)");
}

} // namespace molt
