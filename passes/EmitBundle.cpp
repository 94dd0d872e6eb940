// --molt-emit-bundle: the kernel-level module becomes a bundle (manifest.json, .cu files, headers).
#include "dialect/kernel/MoltKernel.h"
#include "passes/Passes.h"
#include "passes/ProgramIR.h"

#include "molt/config.h"
#include "molt/cuda_wrapper.h"
#include "molt/gate.h"
#include "molt/plan.h"
#ifdef MOLT_HAVE_CUDA
#include "molt/nvrtc.h"
#endif

#include "llvm/ADT/StringExtras.h"
#include "llvm/ADT/StringSet.h"
#include "llvm/Support/FileSystem.h"
#include "llvm/Support/MemoryBuffer.h"
#include "llvm/Support/Path.h"
#include "llvm/Support/Process.h"
#include "llvm/Support/raw_ostream.h"

#include <algorithm>
#include <atomic>
#include <cstdlib>
#include <thread>

namespace mlir::molt {
#define GEN_PASS_DEF_MOLTEMITBUNDLE
#include "passes/Passes.h.inc"
} // namespace mlir::molt

using namespace mlir;
using namespace mlir::molt;

namespace {

::molt::GateDesc gateDesc(GateAttr gate) {
  ::molt::GateDesc g;
  g.kind = ::molt::gateKindName(static_cast<::molt::GateKind>(gate.getKind()));
  if (gate.isJumpReLU()) {
    g.threshold = gate.getThresholdValue();
    g.bandwidth = gate.getBandwidthValue();
  }
  if (gate.getKind() == GateKind::topk)
    g.k = gate.getK();
  return g;
}

::molt::PenaltyDesc penaltyDesc(PenaltyAttr penalty) {
  ::molt::PenaltyDesc p;
  p.kind = stringifyPenaltyKind(penalty.getKind()).str();
  p.c = penalty.getCValue();
  p.lambda = penalty.getLambdaValue();
  p.warmup = penalty.getWarmupValue();
  return p;
}

std::string dtypeName(Type t) {
  if (t.isF16())
    return "f16";
  if (t.isBF16())
    return "bf16";
  return "f32";
}

FailureOr<::molt::ModelDesc> modelDesc(Operation *spec) {
  ::molt::ModelDesc m;
  if (auto layer = dyn_cast_or_null<LayerOp>(spec)) {
    m.kind = "molt";
    m.name = layer.getSymName().str();
    m.d_model = layer.getDModel();
    m.dtype = dtypeName(layer.getElementType());
    for (const Bucket &b : layer.getSchedule().getBucketValues())
      m.buckets.push_back({b.rank, b.count});
    m.gate = gateDesc(layer.getGate());
    m.penalty = penaltyDesc(layer.getPenalty());
    m.decoder_bias = layer.getDecoderBias();
    return m;
  }
  if (auto tc = dyn_cast_or_null<TranscoderOp>(spec)) {
    FailureOr<int64_t> f = tc.getFeatureCount();
    if (failed(f))
      return failure();
    m.kind = "transcoder";
    m.name = tc.getSymName().str();
    m.d_model = tc.getDModel();
    m.dtype = dtypeName(tc.getElementType());
    m.features = *f;
    m.skip = tc.getSkip();
    m.gate = gateDesc(tc.getActivation());
    m.penalty = penaltyDesc(tc.getPenalty());
    m.decoder_bias = tc.getDecoderBias();
    return m;
  }
  return failure();
}

::molt::AttrValue attrValue(Attribute a) {
  if (auto i = dyn_cast<IntegerAttr>(a))
    return int64_t(i.getInt());
  if (auto f = dyn_cast<FloatAttr>(a))
    return f.getValueAsDouble();
  return cast<StringAttr>(a).getValue().str();
}

} // namespace

/// The plan of a lowered module (molt_k kernels and entries, molt.param/buffer declarations).
static FailureOr<::molt::Plan> buildPlan(ModuleOp module) {
  auto specRef = module->getAttrOfType<FlatSymbolRefAttr>("molt_k.spec");
  Operation *spec = specRef ? SymbolTable::lookupSymbolIn(module, specRef) : nullptr;
  FailureOr<::molt::ModelDesc> model = modelDesc(spec);
  if (failed(model))
    return module.emitError() << "is not lowered (no molt_k.spec naming a layer or transcoder)";
  ::molt::Plan plan;
  plan.model = std::move(*model);
  if (auto precision = module->getAttrOfType<StringAttr>("molt_k.precision"))
    plan.precision = precision.getValue().str();

  llvm::StringSet<> owned; // params and the runtime-allocated companions of each
  llvm::StringMap<BufferOp> buffers;
  for (Operation &op : module.getBody()->getOperations()) {
    if (auto p = dyn_cast<ParamOp>(op)) {
      ::molt::ParamDesc desc;
      desc.name = p.getName().str();
      for (Attribute dim : p.getShape()) {
        auto i = dyn_cast<IntegerAttr>(dim);
        if (!i)
          return p.emitError() << "has a symbolic shape (run --molt-specialize-buckets first)";
        desc.shape.push_back(i.getInt());
      }
      desc.init.kind = p.getInit().str();
      desc.init.value = p.getScale().convertToDouble();
      for (const char *prefix : {"", "d_", "m_", "v_"})
        owned.insert(prefix + desc.name);
      plan.params.push_back(std::move(desc));
    } else if (auto b = dyn_cast<BufferOp>(op)) {
      buffers[b.getName()] = b;
    }
  }

  // Every buffer a launch binds, in declaration order.
  llvm::StringSet<> used;
  for (auto entry : module.getOps<molt_k::EntryOp>())
    for (auto launch : entry.getBody().front().getOps<molt_k::LaunchOp>())
      for (NamedAttribute arg : launch.getArgs()) {
        StringRef value = cast<StringAttr>(arg.getValue()).getValue();
        if (arg.getName() == "params")
          continue;
        if (!owned.contains(value) && !buffers.count(value))
          return launch.emitError() << "binds '" << value << "', which is neither a param nor "
                                    << "a declared buffer";
        used.insert(value);
      }
  for (Operation &op : module.getBody()->getOperations()) {
    auto b = dyn_cast<BufferOp>(op);
    if (!b || !used.contains(b.getName()))
      continue;
    ::molt::BufferDesc desc;
    desc.name = b.getName().str();
    desc.dtype = b.getDtype().str();
    for (Attribute dim : b.getShape()) {
      ::molt::Dim d;
      if (auto i = dyn_cast<IntegerAttr>(dim))
        d.value = i.getInt();
      else
        d.symbol = cast<StringAttr>(dim).getValue().str();
      if (!d.isStatic() && d.symbol != "B" && d.symbol != "P")
        return b.emitError() << "has a symbolic shape (run --molt-specialize-buckets first)";
      desc.shape.push_back(d);
    }
    plan.buffers.push_back(std::move(desc));
  }

  for (auto k : module.getOps<molt_k::KernelOp>()) {
    ::molt::KernelDesc desc;
    desc.name = k.getSymName().str();
    desc.op = k.getOp().str();
    desc.entry = k.getEntry().str();
    desc.source = desc.name + ".cu";
    for (NamedAttribute a : k.getAttrs())
      desc.attrs[a.getName().getValue().str()] = attrValue(a.getValue());
    molt_k::LaunchAttr l = k.getLaunch();
    for (int i = 0; i < 3; ++i) {
      desc.launch.block[i] = int(l.getBlock()[i]);
      desc.launch.grid[i] = cast<StringAttr>(l.getGrid()[i]).getValue().str();
    }
    desc.launch.smem = l.getSmem();
    desc.launch.tile_m = l.getTileM();
    desc.launch.tile_n = l.getTileN();
    desc.launch.tile_k = l.getTileK();
    desc.launch.stages = int(l.getStages());
    desc.launch.split = l.getSplit().str();
    plan.kernels.push_back(std::move(desc));
  }
  for (auto entry : module.getOps<molt_k::EntryOp>()) {
    auto &invocations = plan.entry_points[entry.getName().str()];
    for (auto launch : entry.getBody().front().getOps<molt_k::LaunchOp>()) {
      ::molt::Invocation inv;
      inv.kernel = launch.getKernel().str();
      for (NamedAttribute arg : launch.getArgs())
        inv.args[arg.getName().getValue().str()] = cast<StringAttr>(arg.getValue()).getValue().str();
      invocations.push_back(std::move(inv));
    }
  }
  return plan;
}


static LogicalResult writeFile(ModuleOp module, const std::string &path, StringRef text) {
  std::error_code ec;
  llvm::raw_fd_ostream os(path, ec);
  if (!ec) {
    os << text;
    os.close();
    ec = os.error();
  }
  if (ec)
    return module.emitError() << "cannot write " << path << ": " << ec.message();
  return success();
}

static LogicalResult writeBundle(ModuleOp module, const ::molt::Plan &plan,
                                 const std::string &dir, StringRef verifyArchs) {
  if (::molt::Status s = ::molt::writePlan(plan, dir); !s)
    return module.emitError() << "cannot write the manifest: " << s.message();
  std::string headerDir = dir + "/molt_kernels";
  if (std::error_code ec = llvm::sys::fs::create_directories(headerDir))
    return module.emitError() << "cannot create " << headerDir << ": " << ec.message();
  const std::string from = ::molt::config::kernelHeaderDir();
  for (const std::string &file : ::molt::cudaKernelHeaderFiles()) {
    auto text = llvm::MemoryBuffer::getFile(from + "/" + file);
    if (!text)
      return module.emitError() << "cannot read the kernel header " << from << "/" << file
                                << " (set MOLT_KERNEL_DIR to kernels/cuda)";
    if (failed(writeFile(module, headerDir + "/" + file, (*text)->getBuffer())))
      return failure();
  }
  std::map<std::string, std::string> sources;
  for (const ::molt::KernelDesc &k : plan.kernels) {
    ::molt::StatusOr<std::string> source = ::molt::cudaWrapperSource(k, plan.precision);
    if (!source)
      return module.emitError() << source.status().message();
    if (failed(writeFile(module, dir + "/" + k.source, *source)))
      return failure();
    sources[k.name] = *source;
  }
  if (verifyArchs.empty())
    return success();
#ifdef MOLT_HAVE_CUDA
  SmallVector<StringRef> archs;
  verifyArchs.split(archs, ',', -1, false);
  // Only the bundle's folder and the CUDA headers: proves the bundle is self-contained.
  const std::vector<std::string> includes = {dir, MOLT_CUDA_INCLUDE_DIR};
  struct Job {
    std::string arch, name;
    const std::string *source;
    std::string error;
  };
  std::vector<Job> jobs;
  for (StringRef arch : archs)
    for (const auto &[name, source] : sources)
      jobs.push_back({arch.str(), name, &source, ""});
  // NVRTC programs are independent: compile them on every core, report in a fixed order.
  std::atomic<size_t> next{0};
  auto worker = [&] {
    for (size_t i = next++; i < jobs.size(); i = next++) {
      Job &job = jobs[i];
      auto image = ::molt::cuda::compileSource(*job.source, job.name + ".cu", includes, job.arch,
                                               /*cubin=*/true);
      if (!image)
        job.error = image.status().message();
    }
  };
  unsigned threads = std::max(1u, std::min<unsigned>(std::thread::hardware_concurrency(), 16));
  std::vector<std::thread> pool;
  for (unsigned t = 1; t < threads && t < jobs.size(); ++t)
    pool.emplace_back(worker);
  worker();
  for (std::thread &t : pool)
    t.join();
  for (const Job &job : jobs)
    if (!job.error.empty())
      return module.emitError() << "NVRTC (" << job.arch << ") rejects " << job.name
                                << ".cu: " << job.error;
  return success();
#else
  return module.emitError() << "--verify-nvrtc needs a build with the CUDA toolkit";
#endif
}

namespace {

struct MoltEmitBundlePass : ::mlir::molt::impl::MoltEmitBundleBase<MoltEmitBundlePass> {
  using MoltEmitBundleBase::MoltEmitBundleBase;

  void runOnOperation() override {
    ModuleOp module = getOperation();
    if (outDir.empty()) {
      module.emitError() << "--molt-emit-bundle needs out-dir=DIR";
      return signalPassFailure();
    }
    FailureOr<::molt::Plan> plan = buildPlan(module);
    if (failed(plan) || failed(writeBundle(module, *plan, outDir, verifyArchs)))
      return signalPassFailure();
    markAllAnalysesPreserved();
  }
};

} // namespace
