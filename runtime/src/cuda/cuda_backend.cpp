// CudaBackend and CudaExecutor: device memory from a pool, one stream, kernels compiled at prepare.
//
// ExecutorBase owns naming, sizing, zeroing rules and entry-point order; this file supplies the
// device storage and launch(): Args in canonical order, grid expressions evaluated against the
// bound batch, the zeroed work scratch and the param tables of grad_norm / adam.
#include "cuda/cuda_backend.h"

#include <algorithm>
#include <array>
#include <cstdlib>
#include <map>
#include <mutex>

#include "molt/cuda_api.h"
#include "device_executor.h"
#include "kernels/cuda/abi.cuh"
#include "molt/config.h"
#include "molt/cuda_wrapper.h"
#include "molt/cuda.h"
#include "molt/ops.h"

namespace molt {
namespace cuda {
namespace {

/// Device memory recycled by size between executors of one backend (a train loop re-preparing
/// for an eval batch, a benchmark re-binding batches) so cuMemAlloc/cuMemFree stay off the path.
class DevicePool {
public:
  explicit DevicePool(const DriverApi &api) : api_(api) {}
  ~DevicePool() {
    for (auto &[bytes, ptrs] : free_)
      for (CUdeviceptr p : ptrs)
        api_.cuMemFree(p);
  }
  StatusOr<CUdeviceptr> take(size_t bytes) {
    bytes = roundUp(bytes);
    {
      std::lock_guard<std::mutex> lock(mu_);
      auto it = free_.find(bytes);
      if (it != free_.end() && !it->second.empty()) {
        CUdeviceptr p = it->second.back();
        it->second.pop_back();
        return p;
      }
    }
    CUdeviceptr p = 0;
    MOLT_CU(api_, cuMemAlloc(&p, bytes));
    return p;
  }
  void give(CUdeviceptr p, size_t bytes) {
    std::lock_guard<std::mutex> lock(mu_);
    free_[roundUp(bytes)].push_back(p);
  }

private:
  static size_t roundUp(size_t b) { return std::max<size_t>(256, (b + 255) / 256 * 256); }
  const DriverApi &api_;
  std::mutex mu_;
  std::map<size_t, std::vector<CUdeviceptr>> free_;
};

struct Device {
  const DriverApi *api = nullptr;
  CUdevice dev = 0;
  CUcontext ctx = nullptr;
  std::string name;
  int major = 0, minor = 0;
  std::unique_ptr<DevicePool> pool;

  ~Device() {
    pool.reset();
    if (ctx)
      api->cuDevicePrimaryCtxRelease(dev);
  }
  Status makeCurrent() const { return api->check(api->cuCtxSetCurrent(ctx), "cuCtxSetCurrent"); }
  std::string arch() const { return "sm_" + std::to_string(major * 10 + minor); }
};

class CudaExecutor final : public DeviceExecutor {
public:
  static StatusOr<std::unique_ptr<Executor>> create(std::shared_ptr<Device> device, const Plan &plan,
                                                    const std::string &bundleDir, int64_t batch) {
    std::unique_ptr<CudaExecutor> ex(new CudaExecutor(std::move(device), plan, batch));
    MOLT_RETURN_IF_ERROR(ex->device_->makeCurrent());
    const DriverApi &api = *ex->device_->api;
    MOLT_CU(api, cuStreamCreate(&ex->stream_, CU_STREAM_NON_BLOCKING));
    MOLT_RETURN_IF_ERROR(ex->initialize());
    MOLT_RETURN_IF_ERROR(ex->compileKernels(bundleDir));
    return std::unique_ptr<Executor>(std::move(ex));
  }

  ~CudaExecutor() override {
    const DriverApi &api = *device_->api;
    (void)device_->makeCurrent();
    if (stream_)
      api.cuStreamSynchronize(stream_);
    for (auto &[name, k] : kernels_)
      api.cuModuleUnload(k.module);
    for (auto &[name, m] : memory_)
      device_->pool->give(m.first, m.second);
    for (auto &[name, m] : lowp_)
      device_->pool->give(m.first, m.second);
    for (auto &[key, t] : paramTables_)
      device_->pool->give(t.first, t.second);
    if (work_)
      device_->pool->give(work_, workWords_ * 4);
    if (stream_)
      api.cuStreamDestroy(stream_);
  }

  /// Not for a tensor with a bf16 copy: writes through the address would leave the copy stale.
  void *storage(const std::string &name) override {
    return checkBindable(name).isOk() ? reinterpret_cast<void *>(ptr(name)) : nullptr;
  }

  /// Device memory of the caller (same context: the primary one, as PyTorch uses) stands in for
  /// the tensor. Param tables hold raw pointers, so they are rebuilt on next use.
  Status bind(const std::string &name, void *external) override {
    MOLT_RETURN_IF_ERROR(checkBindable(name));
    if (external)
      bound_[name] = reinterpret_cast<CUdeviceptr>(external);
    else
      bound_.erase(name);
    for (auto &[key, t] : paramTables_)
      device_->pool->give(t.first, t.second);
    paramTables_.clear();
    return Status::ok();
  }

  Status synchronize() override {
    MOLT_RETURN_IF_ERROR(device_->makeCurrent());
    return device_->api->check(device_->api->cuStreamSynchronize(stream_), "cuStreamSynchronize");
  }

protected:
  Status allocate(const BufferInfo &info) override {
    auto p = device_->pool->take(info.bytes());
    if (!p)
      return p.status();
    memory_[info.name] = {*p, info.bytes()};
    MOLT_CU(*device_->api, cuMemsetD32Async(*p, 0, info.bytes() / 4, stream_));
    if (!keepsBf16Copy(info.name))
      return Status::ok();
    auto lp = device_->pool->take(lowpBytes(info));
    if (!lp)
      return lp.status();
    lowp_[info.name] = {*lp, lowpBytes(info)};
    return device_->api->check(
        device_->api->cuMemsetD32Async(*lp, 0, lowpBytes(info) / 4, stream_), "cuMemsetD32Async");
  }
  Status writeBytes(const BufferInfo &info, const void *host) override {
    MOLT_RETURN_IF_ERROR(device_->makeCurrent());
    const DriverApi &api = *device_->api;
    MOLT_CU(api, cuMemcpyHtoDAsync(ptr(info.name), host, info.bytes(), stream_));
    std::vector<unsigned short> lowp; // outlives the copy below
    if (auto it = lowp_.find(info.name); it != lowp_.end()) {
      // The same rounding the kernels apply (abi.cuh), so host- and device-made copies agree.
      const float *f = static_cast<const float *>(host);
      lowp.resize(size_t(info.numel()));
      for (size_t i = 0; i < lowp.size(); ++i)
        lowp[i] = k::floatToBf16(f[i]);
      MOLT_CU(api, cuMemcpyHtoDAsync(it->second.first, lowp.data(), lowp.size() * 2, stream_));
    }
    // The caller may reuse `host` at once: the copies must have finished.
    return api.check(api.cuStreamSynchronize(stream_), "cuStreamSynchronize");
  }
  Status readBytes(const BufferInfo &info, void *host) override {
    MOLT_RETURN_IF_ERROR(device_->makeCurrent());
    const DriverApi &api = *device_->api;
    MOLT_CU(api, cuMemcpyDtoHAsync(host, ptr(info.name), info.bytes(), stream_));
    return api.check(api.cuStreamSynchronize(stream_), "cuStreamSynchronize");
  }
  Status zeroBytes(const BufferInfo &info) override {
    if (auto it = lowp_.find(info.name); it != lowp_.end())
      MOLT_CU(*device_->api, cuMemsetD32Async(it->second.first, 0, it->second.second / 4, stream_));
    return device_->api->check(
        device_->api->cuMemsetD32Async(ptr(info.name), 0, info.bytes() / 4, stream_),
        "cuMemsetD32Async");
  }

  Status launch(const KernelDesc &kd, const Invocation &inv) override {
    const DriverApi &api = *device_->api;
    MOLT_RETURN_IF_ERROR(device_->makeCurrent());
    auto kit = kernels_.find(kd.name);
    if (kit == kernels_.end())
      return internalError("kernel '" + kd.name + "' was not compiled");
    const LaunchConfig &L = kit->second.launch;
    auto m = marshal(kd, inv, L);
    if (!m)
      return m.status();
    const std::array<unsigned, 3> &grid = m->grid;
    void *params[] = {&m->args};
    return api.check(api.cuLaunchKernel(kit->second.function, grid[0], grid[1], grid[2],
                                        unsigned(L.block[0]), unsigned(L.block[1]),
                                        unsigned(L.block[2]), unsigned(L.smem),
                                        stream_, params, nullptr),
                     ("launching " + kd.name).c_str());
  }

private:
  struct Kernel {
    CUmodule module = nullptr;
    CUfunction function = nullptr;
    LaunchConfig launch;
  };

  CudaExecutor(std::shared_ptr<Device> device, const Plan &plan, int64_t batch)
      : DeviceExecutor(plan, batch), device_(std::move(device)) {}

  Status compileKernels(const std::string &bundleDir) {
    const DriverApi &api = *device_->api;
    int64_t workWords = 0;
    for (const KernelDesc &k : plan().kernels)
      workWords = std::max(workWords, cudaWorkWords(k, batch()));
    if (workWords > 0) {
      workWords_ = size_t(workWords);
      auto w = device_->pool->take(workWords_ * 4);
      if (!w)
        return w.status();
      work_ = *w;
    }
    auto images = compilePlan(plan(), bundleDir, device_->arch());
    if (!images)
      return images.status();
    for (size_t i = 0; i < images->size(); ++i) {
      const KernelDesc &k = plan().kernels[i];
      Kernel &kern = kernels_[k.name];
      kern.launch = effectiveLaunch(k, bundleDir);
      MOLT_CU(api, cuModuleLoadData(&kern.module, (*images)[i].image.data()));
      MOLT_CU(api, cuModuleGetFunction(&kern.function, kern.module, k.entry.c_str()));
      if (kern.launch.smem > 48 * 1024)
        MOLT_CU(api, cuFuncSetAttribute(kern.function, CU_FUNC_ATTRIBUTE_MAX_DYNAMIC_SHARED_SIZE_BYTES,
                                        int(kern.launch.smem)));
    }
    return Status::ok();
  }

  void *deviceAddress(const std::string &name) override {
    return reinterpret_cast<void *>(ptr(name));
  }
  const unsigned short *bf16Copy(const std::string &name) override {
    auto lp = lowp_.find(name);
    return lp == lowp_.end() ? nullptr : reinterpret_cast<const unsigned short *>(lp->second.first);
  }

  /// The device ParamEntry table of a `params` list (built once; tensors never move).
  StatusOr<std::pair<const k::ParamEntry *, int>> paramTable(const std::string &list) override {
    if (auto it = paramTables_.find(list); it != paramTables_.end())
      return std::make_pair(reinterpret_cast<const k::ParamEntry *>(it->second.first),
                            int(it->second.second / sizeof(k::ParamEntry)));
    auto host = paramRows(list);
    if (!host)
      return host.status();
    const size_t bytes = std::max<size_t>(1, host->size()) * sizeof(k::ParamEntry);
    auto t = device_->pool->take(bytes);
    if (!t)
      return t.status();
    paramTables_[list] = {*t, bytes};
    const DriverApi &api = *device_->api;
    if (!host->empty()) {
      MOLT_CU(api, cuMemcpyHtoDAsync(*t, host->data(), host->size() * sizeof(k::ParamEntry), stream_));
      MOLT_CU(api, cuStreamSynchronize(stream_)); // `host` dies with this frame
    }
    return std::make_pair(reinterpret_cast<const k::ParamEntry *>(*t), int(host->size()));
  }

  StatusOr<unsigned *> workScratch(size_t zeroedWords) override {
    MOLT_CU(*device_->api, cuMemsetD32Async(work_, 0, zeroedWords, stream_));
    return reinterpret_cast<unsigned *>(work_);
  }

  /// Whole 4-byte words, so a zero fill is one cuMemsetD32Async.
  static size_t lowpBytes(const BufferInfo &info) { return (size_t(info.numel()) * 2 + 3) / 4 * 4; }

  /// The tensor's device address: caller memory while bound, else the executor's own.
  CUdeviceptr ptr(const std::string &name) const {
    auto b = bound_.find(name);
    return b != bound_.end() ? b->second : memory_.at(name).first;
  }

  std::shared_ptr<Device> device_;
  CUstream stream_ = nullptr;
  std::map<std::string, CUdeviceptr> bound_;
  std::map<std::string, std::pair<CUdeviceptr, size_t>> memory_;
  std::map<std::string, std::pair<CUdeviceptr, size_t>> lowp_; // bf16 copies (bf16 plans)
  std::map<std::string, std::pair<CUdeviceptr, size_t>> paramTables_;
  std::map<std::string, Kernel> kernels_;
  CUdeviceptr work_ = 0;
  size_t workWords_ = 0;
};

class CudaBackend final : public Backend {
public:
  explicit CudaBackend(std::shared_ptr<Device> d) : device_(std::move(d)) {}
  std::string name() const override { return "cuda"; }
  std::string deviceName() const override { return device_->name + " (" + device_->arch() + ")"; }
  StatusOr<std::unique_ptr<Executor>> prepare(const Plan &plan, const std::string &bundleDir,
                                              int64_t batch) override {
    return CudaExecutor::create(device_, plan, bundleDir, batch);
  }

private:
  std::shared_ptr<Device> device_;
};

} // namespace
} // namespace cuda

StatusOr<std::unique_ptr<Backend>> createCudaBackend() {
  using namespace cuda;
  auto nv = nvrtcApi();
  if (!nv)
    return nv.status();
  auto drv = driverApi();
  if (!drv)
    return drv.status();
  const DriverApi &api = **drv;
  auto device = std::make_shared<Device>();
  device->api = &api;
  const int ordinal = int(config::cudaDevice());
  int count = 0;
  MOLT_CU(api, cuDeviceGetCount(&count));
  if (ordinal < 0 || ordinal >= count)
    return unavailable("MOLT_CUDA_DEVICE=" + std::to_string(ordinal) + " but " +
                       std::to_string(count) + " GPU(s) are visible");
  MOLT_CU(api, cuDeviceGet(&device->dev, ordinal));
  char name[256] = {0};
  MOLT_CU(api, cuDeviceGetName(name, sizeof name - 1, device->dev));
  device->name = name;
  MOLT_CU(api, cuDeviceGetAttribute(&device->major, CU_DEVICE_ATTRIBUTE_COMPUTE_CAPABILITY_MAJOR,
                                    device->dev));
  MOLT_CU(api, cuDeviceGetAttribute(&device->minor, CU_DEVICE_ATTRIBUTE_COMPUTE_CAPABILITY_MINOR,
                                    device->dev));
  MOLT_CU(api, cuDevicePrimaryCtxRetain(&device->ctx, device->dev));
  device->pool = std::make_unique<DevicePool>(api);
  return std::unique_ptr<Backend>(new CudaBackend(std::move(device)));
}

} // namespace molt
