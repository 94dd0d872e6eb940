// compileSource and nvrtcVersion: one NVRTC program per call, options built in one place.
#include "molt/nvrtc.h"

#include <cstdlib>
#include <memory>

#include "molt/config.h"
#include "molt/cuda_api.h"

namespace molt::cuda {

namespace {

Status nvrtcStatus(const NvrtcApi &api, nvrtcResult r, const char *what) {
  if (r == NVRTC_SUCCESS)
    return Status::ok();
  return internalError(std::string(what) + ": " + api.nvrtcGetErrorString(r));
}

std::string programLog(const NvrtcApi &api, nvrtcProgram prog) {
  size_t size = 0;
  if (api.nvrtcGetProgramLogSize(prog, &size) != NVRTC_SUCCESS || size <= 1)
    return "";
  std::string log(size, '\0');
  api.nvrtcGetProgramLog(prog, log.data());
  log.resize(size - 1);
  constexpr size_t kMax = 6000; // the first errors are the useful ones
  if (log.size() > kMax)
    log = log.substr(0, kMax) + "\n... (log truncated)";
  return log;
}

} // namespace

std::vector<std::string> nvrtcOptions(const std::string &target,
                                      const std::vector<std::string> &includeDirs) {
  // 177: the wrapper's Cfg declares every launch constant; most ops read only some of them.
  std::vector<std::string> options = {"--gpu-architecture=" + target, "-std=c++17",
                                      "--diag-suppress=177"};
  // The fast mode: tile products on TF32 tensor cores (kernels/cuda/common.cuh, TileAcc).
  if (config::cudaTf32())
    options.push_back("-DMOLT_TF32");
  for (const std::string &dir : includeDirs)
    options.push_back("-I" + dir);
  return options;
}

StatusOr<std::string> nvrtcVersion() {
  auto api = nvrtcApi();
  if (!api)
    return api.status();
  int major = 0, minor = 0;
  MOLT_RETURN_IF_ERROR(nvrtcStatus(**api, (*api)->nvrtcVersion(&major, &minor), "nvrtcVersion"));
  return std::to_string(major) + "." + std::to_string(minor);
}

StatusOr<std::string> compileSource(const std::string &source, const std::string &name,
                                    const std::vector<std::string> &includeDirs,
                                    const std::string &arch, bool cubin,
                                    const std::map<std::string, std::string> &headers) {
  auto apiOr = nvrtcApi();
  if (!apiOr)
    return apiOr.status();
  const NvrtcApi &api = **apiOr;
  if (arch.rfind("sm_", 0) != 0 && arch.rfind("compute_", 0) != 0)
    return invalidArgument("arch '" + arch + "' is not sm_XY or compute_XY");
  // A cubin needs a real architecture; PTX is generated for the virtual one of the same number.
  std::string target = arch;
  if (cubin && arch.rfind("compute_", 0) == 0)
    target = "sm_" + arch.substr(8);
  if (!cubin && arch.rfind("sm_", 0) == 0)
    target = "compute_" + arch.substr(3);

  std::vector<const char *> headerText, headerNames;
  for (const auto &[n, text] : headers) {
    headerNames.push_back(n.c_str());
    headerText.push_back(text.c_str());
  }
  nvrtcProgram prog = nullptr;
  MOLT_RETURN_IF_ERROR(nvrtcStatus(
      api,
      api.nvrtcCreateProgram(&prog, source.c_str(), name.c_str(), int(headerText.size()),
                             headerText.data(), headerNames.data()),
      "nvrtcCreateProgram"));
  auto destroy = [&api](nvrtcProgram *p) { api.nvrtcDestroyProgram(p); };
  std::unique_ptr<nvrtcProgram, decltype(destroy)> guard(&prog, destroy);

  const std::vector<std::string> options = nvrtcOptions(target, includeDirs);
  std::vector<const char *> argv;
  for (const std::string &o : options)
    argv.push_back(o.c_str());
  const nvrtcResult r = api.nvrtcCompileProgram(prog, int(argv.size()), argv.data());
  if (r != NVRTC_SUCCESS)
    return invalidArgument("NVRTC failed to compile " + name + " for " + target + " (" +
                           api.nvrtcGetErrorString(r) + "):\n" + programLog(api, prog));
  size_t size = 0;
  std::string image;
  if (cubin) {
    MOLT_RETURN_IF_ERROR(nvrtcStatus(api, api.nvrtcGetCUBINSize(prog, &size), "nvrtcGetCUBINSize"));
    image.resize(size);
    MOLT_RETURN_IF_ERROR(nvrtcStatus(api, api.nvrtcGetCUBIN(prog, image.data()), "nvrtcGetCUBIN"));
  } else {
    MOLT_RETURN_IF_ERROR(nvrtcStatus(api, api.nvrtcGetPTXSize(prog, &size), "nvrtcGetPTXSize"));
    image.resize(size); // includes the NUL the driver's loader expects
    MOLT_RETURN_IF_ERROR(nvrtcStatus(api, api.nvrtcGetPTX(prog, image.data()), "nvrtcGetPTX"));
  }
  return image;
}

} // namespace molt::cuda
