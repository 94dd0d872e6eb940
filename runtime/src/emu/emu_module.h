// Emulator modules: CUDA kernel sources built by the host C++ compiler against kernels/cuda/emu/simt.h, cached by hash.
//
// A module is one shared object holding every kernel of a plan (one translation unit: the
// headers are parsed once), built with `-DMOLT_CUDA_EMU -include simt.h` from exactly the `.cu`
// text the CUDA backend hands NVRTC. Needs a C++20 host compiler at run time ($MOLT_EMU_CXX, else
// the compiler that built molt), never a GPU or the CUDA driver.
#pragma once

#include <map>
#include <memory>
#include <string>
#include <vector>

#include "kernels/cuda/abi.cuh"
#include "molt/status.h"

namespace molt::emu {

/// A complete `.cu` text and the `extern "C" __global__` entries it defines (a bundle's kernel
/// defines one), each taking molt::k::Args by value (docs/bundle.md).
struct KernelSource {
  std::string source;
  std::vector<std::string> entries;
};

class Module {
public:
  ~Module();
  Module(const Module &) = delete;
  Module &operator=(const Module &) = delete;

  /// Runs `entry` over grid x block, blocks in blockIdx order. A kernel fault the emulator
  /// detects (deadlock, warp divergence, a shuffle from an absent lane) is Internal with its
  /// message. Blocks the calling thread until the kernel is done.
  Status launch(const std::string &entry, const unsigned grid[3], const unsigned block[3],
                const k::Args &args) const;
  bool cacheHit() const { return cacheHit_; }
  /// The shared object on disk.
  const std::string &path() const { return path_; }

private:
  friend StatusOr<std::shared_ptr<Module>> buildModule(const std::vector<KernelSource> &,
                                                       const std::map<std::string, std::string> &,
                                                       const std::string &);
  Module() = default;
  using Entry = void (*)(const void *);
  using Launch = int (*)(Entry, const void *, const unsigned *, const unsigned *, char *,
                         unsigned long);
  void *handle_ = nullptr;
  Launch launch_ = nullptr;
  std::map<std::string, Entry> entries_;
  std::string path_;
  bool cacheHit_ = false;
};

/// Builds (or finds in the cache) the shared object for `kernels`. `headers` maps include names
/// ("molt_kernels/common.cuh") to text, as molt::cuda::loadKernelHeaders returns them. The key
/// hashes the compiler, its flags, simt.h, every header and every source; entries are renamed
/// into place, so concurrent processes are safe. `cacheDir` "" is defaultCacheDir()/emu.
/// With $MOLT_CUDA_TF32 set the kernels are built with -DMOLT_TF32, as NVRTC builds them.
StatusOr<std::shared_ptr<Module>> buildModule(const std::vector<KernelSource> &kernels,
                                              const std::map<std::string, std::string> &headers,
                                              const std::string &cacheDir = "");

/// The emulator header: $MOLT_KERNEL_DIR/emu/simt.h, else the source tree's.
std::string simtHeaderPath();

} // namespace molt::emu
