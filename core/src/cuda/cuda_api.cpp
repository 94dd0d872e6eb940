// dlopen/dlsym of libcuda and libnvrtc; each library is tried once per process and the outcome kept.
#include "molt/cuda_api.h"

#include "molt/config.h"

#include <dlfcn.h>

#include <cstdlib>
#include <mutex>
#include <vector>

namespace molt::cuda {

namespace {

#define MOLT_STR_(x) #x
#define MOLT_STR(x) MOLT_STR_(x) // expand cuda.h's versioning macros before stringizing

// Fills every member of an API table from `lib`, failing on the first missing symbol.
#define MOLT_RESOLVE(n)                                                                            \
  if (!(api.n = reinterpret_cast<decltype(api.n)>(dlsym(lib, MOLT_STR(n)))))                       \
    return unavailable(libName + " lacks " MOLT_STR(n) " (too old?)");

Status resolve(void *lib, DriverApi &api, const std::string &libName) {
  MOLT_CUDA_DRIVER_SYMBOLS(MOLT_RESOLVE)
  return Status::ok();
}

Status resolve(void *lib, NvrtcApi &api, const std::string &libName) {
  MOLT_NVRTC_SYMBOLS(MOLT_RESOLVE)
  return Status::ok();
}
#undef MOLT_RESOLVE

struct DriverState {
  DriverApi api;
  Status status;
};

struct NvrtcState {
  NvrtcApi api;
  Status status;
};

DriverState loadDriver() {
  DriverState s;
  void *lib = dlopen("libcuda.so.1", RTLD_NOW | RTLD_LOCAL);
  if (!lib)
    lib = dlopen("libcuda.so", RTLD_NOW | RTLD_LOCAL);
  if (!lib) {
    s.status = unavailable("no CUDA driver (libcuda.so.1 not found): this machine has no NVIDIA GPU driver");
    return s;
  }
  s.status = resolve(lib, s.api, "libcuda.so.1");
  if (!s.status.isOk())
    return s;
  CUresult r = s.api.cuInit(0);
  if (r != CUDA_SUCCESS) {
    const char *msg = nullptr;
    s.api.cuGetErrorString(r, &msg);
    s.status = unavailable(std::string("CUDA driver present but cuInit failed: ") +
                           (msg ? msg : "unknown error") + " (no usable GPU?)");
    return s;
  }
  int count = 0;
  if (s.api.cuDeviceGetCount(&count) != CUDA_SUCCESS || count == 0)
    s.status = unavailable("CUDA driver present but no GPU is visible");
  return s;
}

NvrtcState loadNvrtc() {
  NvrtcState s;
  std::vector<std::string> tries;
  for (const std::string &home : {config::cudaHome(), config::cudaPath()})
    if (!home.empty())
      tries.push_back(home + "/lib64/libnvrtc.so");
  for (const char *n : {"libnvrtc.so.13", "libnvrtc.so.12", "libnvrtc.so",
                        "/usr/local/cuda/lib64/libnvrtc.so.13", "/usr/local/cuda/lib64/libnvrtc.so"})
    tries.push_back(n);
  void *lib = nullptr;
  for (const std::string &t : tries)
    if ((lib = dlopen(t.c_str(), RTLD_NOW | RTLD_LOCAL))) {
      s.api.library = t;
      break;
    }
  if (!lib) {
    std::string all;
    for (const std::string &t : tries)
      all += (all.empty() ? "" : ", ") + t;
    s.status = unavailable("NVRTC not found (tried " + all + "); install the CUDA toolkit or set CUDA_HOME");
    return s;
  }
  s.status = resolve(lib, s.api, s.api.library);
  return s;
}

} // namespace

Status DriverApi::check(CUresult r, const char *what) const {
  if (r == CUDA_SUCCESS)
    return Status::ok();
  const char *msg = nullptr;
  if (cuGetErrorString)
    cuGetErrorString(r, &msg);
  return internalError(std::string(what) + ": " + (msg ? msg : "CUDA error " + std::to_string(int(r))));
}

StatusOr<const DriverApi *> driverApi() {
  static const DriverState state = loadDriver();
  if (!state.status.isOk())
    return state.status;
  return &state.api;
}

StatusOr<const NvrtcApi *> nvrtcApi() {
  static const NvrtcState state = loadNvrtc();
  if (!state.status.isOk())
    return state.status;
  return &state.api;
}

} // namespace molt::cuda
