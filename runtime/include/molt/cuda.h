// The on-disk kernel cache and a bundle's kernel sources: usable without a GPU (CI, tests).
//
// Only libnvrtc is needed (opened with dlopen); nothing here touches the driver. The CUDA
// backend itself is reached through molt::createBackend("cuda").
#pragma once

#include <map>
#include <string>
#include <vector>

#include "molt/nvrtc.h"
#include "molt/plan.h"
#include "molt/status.h"

namespace molt::cuda {

/// $MOLT_CACHE_DIR, else $XDG_CACHE_HOME/molt/kernels, else ~/.cache/molt/kernels.
std::string defaultCacheDir();

struct CompiledImage {
  std::string image; // cubin, or NUL-terminated PTX
  bool cubin = true;
  bool cacheHit = false;
  std::string arch; // what it was built for ("sm_90" or "compute_90" for PTX)
};

/// compileSource behind the disk cache. The key hashes the source, every header it includes
/// (followed through includeDirs and `headers`), the NVRTC version, arch, output kind and
/// options. Entries are written atomically (temp file + rename; safe with several processes)
/// and carry a checksum: a corrupt entry is recompiled and replaced. When NVRTC cannot build a
/// cubin for `arch` (a GPU newer than the toolkit), PTX for its newest supported arch is
/// returned for the driver to finish. `cacheDir` "" means defaultCacheDir().
StatusOr<CompiledImage> compileCached(const std::string &source, const std::string &name,
                                      const std::vector<std::string> &includeDirs,
                                      const std::string &arch,
                                      const std::map<std::string, std::string> &headers = {},
                                      const std::string &cacheDir = "");

/// The device headers as in-memory NVRTC headers named "molt_kernels/<file>", read from `dir`
/// (kernels/cuda in a source tree, or a bundle's molt_kernels/).
StatusOr<std::map<std::string, std::string>> loadKernelHeaders(const std::string &dir);

/// Where a bundle's kernels find molt_kernels/*.cuh: -I the bundle when it carries them, else
/// in-memory copies of the source tree's kernels/cuda ($MOLT_KERNEL_DIR overrides the path).
struct KernelIncludes {
  std::vector<std::string> dirs;
  std::map<std::string, std::string> headers;
};
StatusOr<KernelIncludes> bundleIncludes(const std::string &bundleDir);

/// True when the bundle holds the kernel's `source` file (compiler-made bundles do).
bool hasKernelSource(const KernelDesc &kernel, const std::string &bundleDir);

/// The launch to use: the manifest's for a compiled kernel; for a hand-built bundle without
/// sources (tests/fixtures, whose launch is a placeholder), cudaDefaultLaunch — the same one
/// emitter that then writes its wrapper.
LaunchConfig effectiveLaunch(const KernelDesc &kernel, const std::string &bundleDir);

/// Each kernel's CUDA source, in plan order: the bundle's `source` file, or the text of the one
/// emitter, cudaWrapperSource, for the kernel with its effectiveLaunch.
StatusOr<std::vector<std::string>> kernelSources(const Plan &plan, const std::string &bundleDir);

/// compileCached for every kernel of a plan, side by side on all cores (NVRTC programs are
/// independent), in plan order.
StatusOr<std::vector<CompiledImage>> compilePlan(const Plan &plan, const std::string &bundleDir,
                                                 const std::string &arch,
                                                 const std::string &cacheDir = "");

} // namespace molt::cuda
