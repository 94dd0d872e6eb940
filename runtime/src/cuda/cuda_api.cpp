// dlopen/dlsym of libcuda and libnvrtc; each library is tried once per process and the outcome kept.
#include "cuda/cuda_api.h"

#include <dlfcn.h>

#include <cstdlib>
#include <mutex>
#include <vector>

namespace molt::cuda {

namespace {

#define MOLT_STR_(x) #x
#define MOLT_STR(x) MOLT_STR_(x) // expand cuda.h's versioning macros before stringizing

Status resolve(void *lib, const char *const *names, void **slots, size_t count,
               const std::string &libName) {
  for (size_t i = 0; i < count; ++i) {
    slots[i] = dlsym(lib, names[i]);
    if (!slots[i])
      return unavailable(libName + " lacks " + names[i] + " (too old?)");
  }
  return Status::ok();
}

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
  static const char *const names[] = {
#define MOLT_NAME(n) MOLT_STR(n),
      MOLT_CUDA_DRIVER_SYMBOLS(MOLT_NAME)
#undef MOLT_NAME
  };
  std::vector<void *> slots(sizeof names / sizeof *names);
  s.status = resolve(lib, names, slots.data(), slots.size(), "libcuda.so.1");
  if (!s.status.isOk())
    return s;
  size_t i = 0;
#define MOLT_ASSIGN(n) s.api.n = reinterpret_cast<decltype(s.api.n)>(slots[i++]);
  MOLT_CUDA_DRIVER_SYMBOLS(MOLT_ASSIGN)
#undef MOLT_ASSIGN
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
  if (const char *home = std::getenv("CUDA_HOME"))
    tries.push_back(std::string(home) + "/lib64/libnvrtc.so");
  if (const char *home = std::getenv("CUDA_PATH"))
    tries.push_back(std::string(home) + "/lib64/libnvrtc.so");
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
  static const char *const names[] = {
#define MOLT_NAME(n) MOLT_STR(n),
      MOLT_NVRTC_SYMBOLS(MOLT_NAME)
#undef MOLT_NAME
  };
  std::vector<void *> slots(sizeof names / sizeof *names);
  s.status = resolve(lib, names, slots.data(), slots.size(), s.api.library);
  if (!s.status.isOk())
    return s;
  size_t i = 0;
#define MOLT_ASSIGN(n) s.api.n = reinterpret_cast<decltype(s.api.n)>(slots[i++]);
  MOLT_NVRTC_SYMBOLS(MOLT_ASSIGN)
#undef MOLT_ASSIGN
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
