// Emulator modules: CUDA kernel sources built by the host C++ compiler against kernels/cuda/emu/simt.h, cached by hash.
//
// A module is one shared object holding every kernel of a plan (one translation unit: the
// headers are parsed once), built with `-DMOLT_CUDA_EMU -include simt.h` from exactly the `.cu`
// text the CUDA backend hands NVRTC. Needs a C++20 host compiler at run time ($MOLT_EMU_CXX, else
// the compiler that built molt), never a GPU or the CUDA driver.
#pragma once

#include <cstdint>
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
  /// Whether launches count their global-memory traffic (built with $MOLT_EMU_TRAFFIC set).
  bool countsTraffic() const { return counting_; }
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
  using TrafficFn = int (*)(unsigned long long *);
  using WatchFn = void (*)(void *, unsigned long, unsigned *);
  void *handle_ = nullptr;
  Launch launch_ = nullptr;
  TrafficFn traffic_ = nullptr;
  WatchFn watch_ = nullptr;
  bool counting_ = false;
  std::map<std::string, Entry> entries_;
  std::string path_;
  bool cacheHit_ = false;
};

/// Global-memory bytes a launch moved, as the emulator counts them (kernels/cuda/emu/simt.h,
/// "global-memory traffic"): every load and store of kernel code outside registers, local and
/// shared memory, and every atomic once (its operand's size). Loads three ways: every byte
/// requested, distinct per block (what reaches L2 when a block's own re-reads hit L1) and
/// distinct per launch (HBM behind an L2 that holds everything). Counted only by modules built
/// while $MOLT_EMU_TRAFFIC is set (non-empty, not "0"): they are compiled with the compiler's
/// ThreadSanitizer instrumentation as the hook, several times slower.
struct Traffic {
  uint64_t loadBytes = 0, loadBlockBytes = 0, loadLaunchBytes = 0, storeBytes = 0, atomicBytes = 0;
  uint64_t launches = 0;
  /// The HBM estimate the cost model bounds: distinct loads, every store and atomic.
  uint64_t hbm() const { return loadLaunchBytes + storeBytes + atomicBytes; }
  /// What reaches L2: loads distinct per block, every store and atomic.
  uint64_t l2() const { return loadBlockBytes + storeBytes + atomicBytes; }
};
/// Every counted launch in this process since the last reset, summed per entry name.
std::map<std::string, Traffic> trafficByEntry();
void resetTraffic();
/// Counts, per 4-byte word of [lo, lo + bytes), the stores and atomics of every later counted
/// launch into `counts` (bytes / 4 entries, zeroed by the caller, alive until unwatched);
/// watchWrites(nullptr, 0, nullptr) stops. One range at a time, process-wide.
void watchWrites(void *lo, size_t bytes, unsigned *counts);

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
