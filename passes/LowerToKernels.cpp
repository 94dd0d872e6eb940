// --molt-lower-to-kernels: fused, specialised programs become molt_k kernels and entry points.
#include "dialect/kernel/MoltKernel.h"
#include "passes/Passes.h"
#include "passes/ProgramIR.h"

#include "molt/cuda_wrapper.h"
#include "molt/ops.h"
#include "molt/tuning.h"

#include "llvm/ADT/StringExtras.h"
#include "llvm/Support/JSON.h"
#include "llvm/Support/MemoryBuffer.h"

#include <map>

namespace mlir::molt {
#define GEN_PASS_DEF_MOLTLOWERTOKERNELS
#include "passes/Passes.h.inc"
} // namespace mlir::molt

using namespace mlir;
using namespace mlir::molt;

namespace {

/// What one top-level program op launches: a kernel op and its argument binding.
struct Launch {
  std::string op;
  SmallVector<std::pair<std::string, std::string>> args;
};

std::string grad(StringRef name) { return "d_" + name.str(); }

/// Ops that are a kernel on their own (no fusion needed), bound positionally.
std::optional<Launch> singleOpLaunch(Operation *op) {
  auto ins = tensorOpIns(op), outs = tensorOpOuts(op);
  auto bind = [&](std::string kernel,
                  std::initializer_list<std::pair<const char *, std::string>> args) {
    Launch l{std::move(kernel), {}};
    for (auto &[arg, buffer] : args)
      l.args.push_back({arg, buffer});
    return l;
  };
  if (isa<AddBiasOp>(op))
    return bind("add_bias", {{"dec_b", ins[0].str()}, {"yhat", outs[0].str()}});
  // In eval a loss kernel also writes its gradient buffers; nothing reads them there.
  if (isa<MseLossOp>(op))
    return bind("mse_loss", {{"yhat", ins[0].str()}, {"y", ins[1].str()},
                             {"d_yhat", grad(ins[0])}, {"stats", outs[0].str()}});
  if (isa<PenaltyOp>(op))
    return bind("penalty", {{"pair_ptr", ins[0].str()}, {"pair_gate", ins[1].str()},
                            {"norm", ins[2].str()}, {"scalars", ins[3].str()},
                            {"pair_dgate", grad(ins[1])}, {"d_norm", grad(ins[2])},
                            {"stats", outs[0].str()}});
  if (isa<FeaturePenaltyOp>(op))
    return bind("tc_penalty", {{"pair_ptr", ins[0].str()}, {"pair_gate", ins[1].str()},
                               {"dec_w", ins[2].str()}, {"scalars", ins[3].str()},
                               {"pair_dgate", grad(ins[1])}, {"d_dec_w", grad(ins[2])},
                               {"stats", outs[0].str()}});
  if (isa<ColSumOp>(op) && !cast<ColSumOp>(op).getNegate())
    return bind("bias_grad", {{"d_yhat", ins[0].str()}, {"d_dec_b", outs[0].str()}});
  if (isa<DecodeRowsOp>(op))
    return bind("tc_decode", {{"pair_ptr", ins[0].str()}, {"pair_tok", ins[1].str()},
                              {"pair_gate", ins[2].str()}, {"dec_w", ins[3].str()},
                              {"yhat", outs[0].str()}});
  if (isa<DecodeRowsGradOp>(op))
    return bind("tc_decode_bwd", {{"d_yhat", ins[0].str()}, {"pair_ptr", ins[1].str()},
                                  {"pair_tok", ins[2].str()}, {"pair_gate", ins[3].str()},
                                  {"dec_w", ins[4].str()}, {"d_dec_w", outs[0].str()},
                                  {"pair_dgate", outs[1].str()}});
  if (isa<SkipApplyOp>(op))
    return bind("skip_apply", {{"x", ins[0].str()}, {"skip_w", ins[1].str()},
                               {"yhat", outs[0].str()}});
  if (isa<PairTangentOp>(op)) {
    bool transcoder = isa_and_nonnull<TranscoderOp>(specOf(op->getParentOfType<ProgramOp>()));
    return bind(transcoder ? "tc_encode_tangent" : "encode_tangent",
                {{"x_dot", ins[0].str()}, {"enc_w", ins[1].str()}, {"pair_ptr", ins[2].str()},
                 {"pair_tok", ins[3].str()}, {"pair_gate", ins[4].str()},
                 {"pair_tan", outs[0].str()}});
  }
  if (isa<SkipGradOp>(op))
    return bind("skip_bwd", {{"d_yhat", ins[0].str()}, {"x", ins[1].str()},
                             {"d_skip_w", outs[0].str()}});
  if (isa<SkipGradXOp>(op))
    return bind("skip_bwd_dx", {{"d_yhat", ins[0].str()}, {"skip_w", ins[1].str()},
                                {"d_x", outs[0].str()}});
  return std::nullopt;
}

/// Every compile-time fact an op (and, for a fused op, its body) carries.
llvm::StringMap<Attribute> collectFacts(Operation *root) {
  llvm::StringMap<Attribute> facts;
  root->walk([&](Operation *op) {
    if (auto consts = op->getAttrOfType<DictionaryAttr>("consts"))
      for (NamedAttribute c : consts)
        facts[c.getName().getValue()] = c.getValue();
    if (isa<GateOp, GateGradOp>(op)) {
      facts["gate"] = op->getAttr("kind");
      facts["bandwidth"] = op->getAttr("bandwidth");
      facts["k"] = op->getAttr("k");
    }
    if (isa<PenaltyOp, PenaltyGradOp, FeaturePenaltyOp, FeaturePenaltyGradOp>(op)) {
      facts["kind"] = op->getAttr("kind");
      facts["c"] = op->getAttr("c");
    }
  });
  return facts;
}

/// The plan's view of a kernel (what wrapper.h's heuristic and the tuning key read).
::molt::KernelDesc kernelDesc(StringRef name, StringRef op, DictionaryAttr attrs) {
  ::molt::KernelDesc k;
  k.name = name.str();
  k.op = op.str();
  for (NamedAttribute a : attrs) {
    std::string key = a.getName().getValue().str();
    if (auto i = dyn_cast<IntegerAttr>(a.getValue()))
      k.attrs[key] = int64_t(i.getInt());
    else if (auto f = dyn_cast<FloatAttr>(a.getValue()))
      k.attrs[key] = f.getValueAsDouble();
    else if (auto s = dyn_cast<StringAttr>(a.getValue()))
      k.attrs[key] = s.getValue().str();
  }
  return k;
}

/// Overrides the fields a tuning-database entry sets.
void applyTuning(const llvm::json::Object &entry, ::molt::LaunchConfig &l) {
  if (const llvm::json::Array *block = entry.getArray("block"))
    for (size_t i = 0; i < 3 && i < block->size(); ++i)
      if (auto v = (*block)[i].getAsInteger())
        l.block[i] = int(*v);
  if (const llvm::json::Array *grid = entry.getArray("grid"))
    for (size_t i = 0; i < 3 && i < grid->size(); ++i)
      if (auto v = (*grid)[i].getAsString())
        l.grid[i] = v->str();
  auto set = [&](StringRef field, auto &target) {
    if (auto v = entry.getInteger(field))
      target = *v;
  };
  set("smem", l.smem);
  set("tile_m", l.tile_m);
  set("tile_n", l.tile_n);
  set("tile_k", l.tile_k);
  set("stages", l.stages);
  if (auto split = entry.getString("split"))
    l.split = split->str();
}

molt_k::LaunchAttr launchAttr(MLIRContext *ctx, const ::molt::LaunchConfig &l) {
  Builder b(ctx);
  return molt_k::LaunchAttr::get(
      ctx, b.getDenseI64ArrayAttr({l.block[0], l.block[1], l.block[2]}),
      b.getStrArrayAttr({l.grid[0], l.grid[1], l.grid[2]}), l.smem, l.tile_m, l.tile_n,
      l.tile_k, l.stages, l.split);
}

struct MoltLowerToKernelsPass : ::mlir::molt::impl::MoltLowerToKernelsBase<MoltLowerToKernelsPass> {
  using MoltLowerToKernelsBase::MoltLowerToKernelsBase;

  void runOnOperation() override {
    ModuleOp module = getOperation();
    MLIRContext *ctx = &getContext();
    if (precision != "f32" && precision != "bf16") {
      module.emitError() << "unknown precision '" << precision << "' (f32 or bf16)";
      return signalPassFailure();
    }
    // Emission reads it back: the wrappers' Cfg::precision and the manifest's "precision"
    // (absent means f32, so fp32 modules print as before).
    if (precision != "f32")
      module->setAttr("molt_k.precision", StringAttr::get(ctx, precision));
    std::optional<llvm::json::Value> tuning;
    if (!tuningDb.empty()) {
      auto file = llvm::MemoryBuffer::getFile(tuningDb);
      if (!file) {
        module.emitError() << "cannot read tuning database " << tuningDb;
        return signalPassFailure();
      }
      auto parsed = llvm::json::parse((*file)->getBuffer());
      if (!parsed || !parsed->getAsObject()) {
        llvm::consumeError(parsed.takeError());
        module.emitError() << "tuning database " << tuningDb << " is not a JSON object";
        return signalPassFailure();
      }
      tuning = std::move(*parsed);
      // molt-tune's database (docs/tuning.md) holds launches per device; a compile has no
      // device, so every CUDA device's entries apply (the smallest device key wins a clash). A
      // plain {signature: launch} object is read as it is.
      if (auto format = tuning->getAsObject()->getString("format");
          format && *format == "molt-tuning/1") {
        llvm::json::Object flat;
        std::vector<std::string> keys; // sorted, so a clash resolves the same way every time
        const llvm::json::Object *devices = tuning->getAsObject()->getObject("devices");
        if (devices)
          for (auto &device : *devices)
            keys.push_back(device.first.str());
        llvm::sort(keys);
        for (const std::string &key : keys) {
          const llvm::json::Object *d = devices->getObject(key);
          const llvm::json::Object *kernels = d ? d->getObject("kernels") : nullptr;
          if (!kernels || d->getString("kind") != std::optional<StringRef>("cuda"))
            continue;
          for (auto &kernel : *kernels)
            if (auto *entry = kernel.second.getAsObject())
              if (auto *launch = entry->getObject("launch"))
                flat.try_emplace(kernel.first, llvm::json::Object(*launch));
        }
        tuning = llvm::json::Value(std::move(flat));
      }
    }

    SmallVector<ProgramOp> programs(module.getOps<ProgramOp>());
    if (programs.empty()) {
      module.emitError() << "has no molt.program to lower";
      return signalPassFailure();
    }
    if (isa_and_nonnull<MlpOp>(specOf(programs.front()))) {
      programs.front().emitError() << "is a teacher MLP program: the bundle format has no "
                                      "kernels for it (the runtime evaluates teachers itself)";
      return signalPassFailure();
    }
    OpBuilder b = OpBuilder::atBlockEnd(module.getBody());
    SymbolTable symbols(module);
    Operation *firstEntry = nullptr; // kernels are declared before all entry points
    for (ProgramOp program : programs) {
      b.setInsertionPointToEnd(module.getBody());
      auto entry = b.create<molt_k::EntryOp>(program.getLoc(), program.getEntry());
      if (!firstEntry)
        firstEntry = entry;
      entry.getBody().push_back(new Block());
      for (Operation &op : program.getBody().front()) {
        Launch launch;
        if (auto fused = dyn_cast<FusedOp>(op)) {
          launch.op = fused.getKernel().str();
          for (NamedAttribute a : fused.getArgs())
            launch.args.push_back(
                {a.getName().getValue().str(), cast<StringAttr>(a.getValue()).getValue().str()});
        } else if (auto single = singleOpLaunch(&op)) {
          launch = std::move(*single);
        } else {
          op.emitError() << "has no kernel: run the fusion passes before lowering";
          return signalPassFailure();
        }
        // The compile-time constants of each kernel op are its attrs in molt/ops.def.
        const ::molt::OpSignature *sig = ::molt::findOp(launch.op);
        if (!sig) {
          op.emitError() << "lowers to unknown kernel op '" << launch.op << "'";
          return signalPassFailure();
        }
        llvm::StringMap<Attribute> facts = collectFacts(&op);
        SmallVector<NamedAttribute> attrs;
        for (const std::string &name : sig->attrs) {
          Attribute value = facts.lookup(name);
          if (!value) {
            op.emitError() << "lacks the constant " << name << " of kernel " << launch.op
                           << " (run --molt-specialize-buckets first)";
            return signalPassFailure();
          }
          attrs.push_back(b.getNamedAttr(name, value));
        }
        DictionaryAttr attrDict = b.getDictionaryAttr(attrs);
        std::optional<int64_t> bucket = bucketOf(&op);
        std::string name = launch.op + (bucket ? "_" + std::to_string(*bucket) : "");

        if (auto existing = symbols.lookup<molt_k::KernelOp>(name)) {
          if (existing.getOp() != launch.op || existing.getAttrs() != attrDict) {
            op.emitError() << "needs kernel " << name << " with other constants than "
                           << "an earlier program's";
            return signalPassFailure();
          }
        } else {
          ::molt::KernelDesc desc = kernelDesc(name, launch.op, attrDict);
          ::molt::LaunchConfig config = ::molt::cudaDefaultLaunch(desc);
          if (tuning)
            if (auto *entryCfg = tuning->getAsObject()->getObject(::molt::kernelSignature(desc)))
              applyTuning(*entryCfg, config);
          OpBuilder kb(firstEntry);
          auto kernel = kb.create<molt_k::KernelOp>(op.getLoc(), name, launch.op, "molt_" + name,
                                                    attrDict, launchAttr(ctx, config));
          symbols.insert(kernel, Block::iterator(firstEntry));
        }
        SmallVector<NamedAttribute> args;
        for (auto &[arg, buffer] : launch.args)
          args.push_back(b.getNamedAttr(arg, b.getStringAttr(buffer)));
        OpBuilder eb = OpBuilder::atBlockEnd(&entry.getBody().front());
        eb.create<molt_k::LaunchOp>(op.getLoc(), FlatSymbolRefAttr::get(ctx, name),
                                    eb.getDictionaryAttr(args));
      }
    }
    module->setAttr("molt_k.spec", programs.front().getSpecAttr());
    for (ProgramOp program : programs)
      program.erase();
  }
};

} // namespace
