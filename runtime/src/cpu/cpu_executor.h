// CpuExecutor<S>: host memory for every tensor and launch() dispatching each op to kernels/cpu.
//
// Training runs CpuExecutor<float>. CpuExecutor<double> runs the same plan with the same
// kernels in float64 so the gradient checks can use finite differences; its host write/read
// still take float (the Executor contract), and data() gives the float64 storage itself.
#pragma once

#include <cstdlib>
#include <map>
#include <memory>

#include "executor_base.h"

namespace molt {

template <typename S> class CpuExecutor final : public ExecutorBase {
public:
  /// Binds `plan` to `batch` tokens and allocates everything (zero-filled).
  static StatusOr<std::unique_ptr<CpuExecutor>> create(const Plan &plan, int64_t batch);

  /// The storage of an f32 tensor as S (nullptr for an unknown or i32 tensor).
  S *data(const std::string &name);
  /// The storage of an i32 tensor (nullptr for an unknown or f32 tensor).
  int32_t *intData(const std::string &name);
  /// Zero-copy access (Executor::storage / bind); only CpuExecutor<float> may alias f32 tensors.
  void *storage(const std::string &name) override { return info(name) ? raw(name) : nullptr; }
  Status bind(const std::string &name, void *external) override;
  /// create() sets these from the tuning database (molt/tuning.h); molt-tune sets candidates
  /// while it times them.
  Status setKernelThreads(const std::string &kernel, int threads) override;

protected:
  using ExecutorBase::ExecutorBase;
  Status allocate(const BufferInfo &info) override;
  Status writeBytes(const BufferInfo &info, const void *host) override;
  Status readBytes(const BufferInfo &info, void *host) override;
  Status zeroBytes(const BufferInfo &info) override;
  Status launch(const KernelDesc &k, const Invocation &inv) override;
  Status dispatch(const KernelDesc &k, const Invocation &inv); // launch() at the set threads

private:
  struct FreeDeleter {
    void operator()(void *p) const { std::free(p); }
  };
  static size_t elementBytes(const BufferInfo &info) {
    return info.dtype == DType::I32 ? sizeof(int32_t) : sizeof(S);
  }
  void *raw(const std::string &name) {
    auto b = bound_.find(name);
    return b != bound_.end() ? b->second : memory_.at(name).get();
  }

  std::map<std::string, std::unique_ptr<void, FreeDeleter>> memory_;
  std::map<std::string, void *> bound_; // caller memory standing in for memory_ (bind())
  std::map<std::string, int> threads_;  // tuned per-kernel thread counts
};

/// The CPU's name as Backend::deviceName() reports it (a tuning-database key part).
std::string cpuDeviceName();

extern template class CpuExecutor<float>;
extern template class CpuExecutor<double>;

} // namespace molt
