// Backends and executors: a Plan bound to a batch size on one device.
//
// The CPU backend (runtime/src/cpu) is the numerical oracle; the CUDA backend (runtime/src/cuda)
// runs the NVRTC-compiled kernels of the same plan. Both implement Executor::launch for every
// kernel op in docs/bundle.md; everything else (buffer naming, zeroing, entry-point order) is
// shared in ExecutorBase so the two cannot drift.
#pragma once

#include <cstdint>
#include <map>
#include <memory>
#include <string>
#include <vector>

#include "molt/plan.h"
#include "molt/status.h"

namespace molt {

enum class DType { F32, I32 };

struct BufferInfo {
  std::string name;
  DType dtype = DType::F32;
  std::vector<int64_t> shape; // at the prepared batch (the capacity)
  /// The leading dimension counts rows × perRow (B: 1, P: T, Pk: N_k); 0 for a static shape.
  int64_t perRow = 0;
  /// The shape at `rows` active rows (Executor::setRows): the leading dimension scaled.
  std::vector<int64_t> shapeAt(int64_t rows) const {
    std::vector<int64_t> s = shape;
    if (perRow > 0 && !s.empty())
      s[0] = rows * perRow;
    return s;
  }
  int64_t numel() const {
    int64_t n = 1;
    for (int64_t s : shape)
      n *= s;
    return n;
  }
  size_t bytes() const { return size_t(numel()) * 4; }
};

/// A plan bound to a batch size: owns every param, its d_/m_/v_ companions and every buffer.
class Executor {
public:
  virtual ~Executor() = default;
  virtual const Plan &plan() const = 0;
  /// The prepared batch: the row capacity of every row-sized tensor.
  virtual int64_t batch() const = 0;
  /// The rows the next entries run on (batch() unless setRows chose fewer).
  virtual int64_t rows() const { return batch(); }
  /// Runs later entries on the first `rows` rows, 1 <= rows <= batch(), without re-preparing:
  /// tensors keep their capacity, the kernels see B = rows, and a row-sized tensor's live part
  /// is its first BufferInfo::shapeAt(rows) elements (rows lead every row-sized shape).
  virtual Status setRows(int64_t rows) {
    return rows == batch() ? Status::ok()
                           : unavailable("this executor runs only its prepared batch");
  }
  /// Every tensor the executor owns (params, d_p, m_p, v_p, buffers), or nullptr.
  virtual const BufferInfo *info(const std::string &name) const = 0;
  virtual std::vector<std::string> names() const = 0;
  /// Host <-> executor copies; `bytes` must equal the tensor's size.
  virtual Status write(const std::string &name, const void *host, size_t bytes) = 0;
  virtual Status read(const std::string &name, void *host, size_t bytes) = 0;
  virtual Status zero(const std::string &name) = 0;
  /// Runs an entry point: zeroes what its ops accumulate into (`stats`, `yhat`; molt/ops.def's
  /// Acc role) and, for train_step and train_grad, every d_p; then runs each invocation.
  /// train_apply accumulates nothing, so it keeps train_grad's stats (molt/plan.h).
  virtual Status run(const std::string &entryPoint) = 0;
  /// Waits for queued work (a no-op on the CPU).
  virtual Status synchronize() = 0;
  /// The caller vouches that every row it puts in x and y is finite (molt's data stream drops
  /// the others), so run() may skip its non-finite row check (docs/reliability.md: on CUDA the
  /// check is a device-to-host copy of x and y per run). Off by default.
  virtual void vouchFiniteInputs(bool on) { (void)on; }
  /// Zero-copy embedding (python/, docs/embedding.md): the device address the executor reads and
  /// writes for a tensor (its own storage, fixed for its life, unless bind() redirected it);
  /// nullptr for an unknown name or where the backend does not expose it.
  virtual void *storage(const std::string &name) { return (void)name, nullptr; }
  /// Makes the executor read and write `external` (same device, the tensor's size) in place of
  /// its own storage for `name` until bound again; nullptr restores its own storage. The caller
  /// keeps `external` alive while bound. Unavailable where the backend cannot alias.
  virtual Status bind(const std::string &name, void *external) {
    return (void)external, unavailable("binding '" + name + "' to caller memory is not supported");
  }

  // Measuring and tuning (molt-tune kernels, the benchmarks).
  /// When on, run() synchronizes after each launch and adds its wall time to profile().
  virtual void setProfiling(bool on) = 0;
  /// Seconds per kernel name, accumulated over the runs made while profiling.
  virtual std::map<std::string, double> profile() const = 0;
  /// OpenMP threads for one kernel's launches (0: the default; the CPU executor starts from
  /// the tuning database). Unavailable where the backend has no such knob (CUDA compiles its
  /// launch into the kernel instead).
  virtual Status setKernelThreads(const std::string &kernel, int threads) {
    return (void)threads, unavailable("kernel '" + kernel + "': this backend has no thread setting");
  }
};

class Backend {
public:
  virtual ~Backend() = default;
  virtual std::string name() const = 0;       // "cpu" | "cuda" | "cuda-emu"
  virtual std::string deviceName() const = 0; // e.g. "2-core x86_64" or "NVIDIA H100 80GB HBM3"
  virtual StatusOr<std::unique_ptr<Executor>> prepare(const Plan &plan, const std::string &bundleDir,
                                                      int64_t batch) = 0;
};

/// "cpu" always works; "cuda" returns Unavailable with a one-line reason where there is no
/// driver, no NVRTC or no device; "cuda-emu" runs the CUDA kernels on the host SIMT emulator
/// (runtime/src/emu; needs only a host C++ compiler at run time, slow: for tests).
StatusOr<std::unique_ptr<Backend>> createBackend(const std::string &name);

} // namespace molt
