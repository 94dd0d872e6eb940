// EmuExecutor: host memory as device memory, and every launch through one emulator module per plan.
#include "emu/emu_backend.h"

#include <algorithm>
#include <cstring>
#include <map>

#include "emu/emu_module.h"
#include "device_executor.h"
#include "molt/cuda_wrapper.h"
#include "molt/cuda.h"
#include "molt/ops.h"

namespace molt {
namespace emu {

namespace {

class EmuExecutor final : public DeviceExecutor {
public:
  static StatusOr<std::unique_ptr<Executor>> create(const Plan &plan, const std::string &bundleDir,
                                                    int64_t batch) {
    std::unique_ptr<EmuExecutor> ex(new EmuExecutor(plan, batch));
    MOLT_RETURN_IF_ERROR(ex->initialize());
    MOLT_RETURN_IF_ERROR(ex->build(bundleDir));
    return std::unique_ptr<Executor>(std::move(ex));
  }

  /// As on the GPU, not for a tensor with a bf16 copy: writes through it would leave the copy stale.
  void *storage(const std::string &name) override {
    return checkBindable(name).isOk() ? ptr(name) : nullptr;
  }

  Status bind(const std::string &name, void *external) override {
    MOLT_RETURN_IF_ERROR(checkBindable(name));
    if (external)
      bound_[name] = external;
    else
      bound_.erase(name);
    tables_.clear(); // they hold raw pointers
    return Status::ok();
  }

protected:
  Status allocate(const BufferInfo &info) override {
    memory_[info.name].assign(size_t(info.numel()), 0u);
    if (keepsBf16Copy(info.name))
      lowp_[info.name].assign(size_t(info.numel()), 0);
    return Status::ok();
  }
  Status writeBytes(const BufferInfo &info, const void *host) override {
    std::memcpy(ptr(info.name), host, info.bytes());
    if (auto it = lowp_.find(info.name); it != lowp_.end()) // rounded as the kernels round (abi.cuh)
      for (size_t i = 0; i < size_t(info.numel()); ++i)
        it->second[i] = k::floatToBf16(static_cast<const float *>(host)[i]);
    return Status::ok();
  }
  Status readBytes(const BufferInfo &info, void *host) override {
    std::memcpy(host, ptr(info.name), info.bytes());
    return Status::ok();
  }
  Status zeroBytes(const BufferInfo &info) override {
    std::memset(ptr(info.name), 0, info.bytes());
    if (auto it = lowp_.find(info.name); it != lowp_.end())
      std::fill(it->second.begin(), it->second.begin() + info.numel(), 0);
    return Status::ok();
  }

  Status launch(const KernelDesc &kd, const Invocation &inv) override {
    auto launchIt = launches_.find(kd.name);
    if (launchIt == launches_.end())
      return internalError("kernel '" + kd.name + "' was not built for the emulator");
    const LaunchConfig &L = launchIt->second;
    if (L.smem > 0)
      return unavailable("kernel '" + kd.name + "': the emulator has no dynamic shared memory");
    auto m = marshal(kd, inv, L);
    if (!m)
      return m.status();
    const unsigned block[3] = {unsigned(L.block[0]), unsigned(L.block[1]), unsigned(L.block[2])};
    return module_->launch(kd.entry, m->grid.data(), block, m->args);
  }

private:
  EmuExecutor(const Plan &plan, int64_t batch) : DeviceExecutor(plan, batch) {}

  /// Builds (or finds cached) the plan's module from the sources the CUDA backend would compile.
  Status build(const std::string &bundleDir) {
    auto sources = cuda::kernelSources(plan(), bundleDir);
    if (!sources)
      return sources.status();
    auto inc = cuda::bundleIncludes(bundleDir);
    if (!inc)
      return inc.status();
    std::map<std::string, std::string> headers = inc->headers;
    for (const std::string &dir : inc->dirs) { // a bundle that carries molt_kernels/
      auto h = cuda::loadKernelHeaders(dir + "/molt_kernels");
      if (!h)
        return h.status();
      headers.insert(h->begin(), h->end());
    }
    std::vector<KernelSource> kernels;
    int64_t scratch = 0;
    for (size_t i = 0; i < sources->size(); ++i) {
      const KernelDesc &k = plan().kernels[i];
      kernels.push_back({(*sources)[i], {k.entry}});
      launches_[k.name] = cuda::effectiveLaunch(k, bundleDir);
      scratch = std::max(scratch, cudaWorkWords(k, batch()));
    }
    work_.assign(size_t(scratch), 0u);
    auto m = buildModule(kernels, headers);
    if (!m)
      return m.status();
    module_ = *m;
    return Status::ok();
  }

  void *deviceAddress(const std::string &name) override { return ptr(name); }
  const unsigned short *bf16Copy(const std::string &name) override {
    auto lp = lowp_.find(name);
    return lp == lowp_.end() ? nullptr : lp->second.data();
  }
  StatusOr<std::pair<const k::ParamEntry *, int>> paramTable(const std::string &list) override {
    auto it = tables_.find(list);
    if (it == tables_.end()) {
      auto rows = paramRows(list);
      if (!rows)
        return rows.status();
      it = tables_.emplace(list, std::move(*rows)).first;
    }
    return std::make_pair(static_cast<const k::ParamEntry *>(it->second.data()),
                          int(it->second.size()));
  }
  StatusOr<unsigned *> workScratch(size_t zeroedWords) override {
    std::fill(work_.begin(), work_.begin() + std::min(zeroedWords, work_.size()), 0u);
    return work_.data();
  }

  void *ptr(const std::string &name) {
    auto b = bound_.find(name);
    return b != bound_.end() ? b->second : memory_.at(name).data();
  }

  std::map<std::string, std::vector<unsigned>> memory_;
  std::map<std::string, std::vector<unsigned short>> lowp_; // bf16 copies (bf16 plans)
  std::map<std::string, void *> bound_;
  std::map<std::string, std::vector<k::ParamEntry>> tables_;
  std::map<std::string, LaunchConfig> launches_;
  std::vector<unsigned> work_;
  std::shared_ptr<Module> module_;
};

class EmuBackend final : public Backend {
public:
  std::string name() const override { return "cuda-emu"; }
  std::string deviceName() const override { return "host SIMT emulator of the CUDA kernels"; }
  StatusOr<std::unique_ptr<Executor>> prepare(const Plan &plan, const std::string &bundleDir,
                                              int64_t batch) override {
    return EmuExecutor::create(plan, bundleDir, batch);
  }
};

} // namespace
} // namespace emu

StatusOr<std::unique_ptr<Backend>> createCudaEmuBackend() {
  return std::unique_ptr<Backend>(new emu::EmuBackend);
}

} // namespace molt
