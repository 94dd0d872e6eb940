// --molt-specialize-buckets: d, T/F, ranks, counts and bucket offsets become static numbers.
#include "passes/Passes.h"
#include "passes/ProgramIR.h"

namespace mlir::molt {
#define GEN_PASS_DEF_MOLTSPECIALIZEBUCKETS
#include "passes/Passes.h.inc"
} // namespace mlir::molt

using namespace mlir;
using namespace mlir::molt;

namespace {

/// The numbers a spec fixes: d, the width (T or F) and, per bucket, rank, count and offset.
struct SpecNumbers {
  int64_t d = 0, width = 0;
  const char *widthName = "T"; // T transforms, F features, H hidden units (teacher)
  SmallVector<Bucket> buckets;
  SmallVector<int64_t> offsets;
};

FailureOr<SpecNumbers> readSpec(Operation *spec) {
  SpecNumbers n;
  if (auto layer = dyn_cast_or_null<LayerOp>(spec)) {
    n.d = layer.getDModel();
    n.buckets = layer.getSchedule().getBucketValues();
    for (const Bucket &b : n.buckets) {
      n.offsets.push_back(n.width);
      n.width += b.count;
    }
    return n;
  }
  if (auto tc = dyn_cast_or_null<TranscoderOp>(spec)) {
    FailureOr<int64_t> f = tc.getFeatureCount();
    if (failed(f))
      return failure();
    n.d = tc.getDModel();
    n.width = *f;
    n.widthName = "F";
    return n;
  }
  if (auto mlp = dyn_cast_or_null<MlpOp>(spec)) {
    n.d = mlp.getDModel();
    n.width = mlp.getDHidden();
    n.widthName = "H";
    return n;
  }
  return failure();
}

struct MoltSpecializeBucketsPass : ::mlir::molt::impl::MoltSpecializeBucketsBase<MoltSpecializeBucketsPass> {
  void runOnOperation() override {
    ModuleOp module = getOperation();
    auto programs = module.getOps<ProgramOp>();
    if (programs.empty()) {
      module.emitError() << "has no molt.program to specialise (run --molt-expand first)";
      return signalPassFailure();
    }
    FailureOr<SpecNumbers> spec = readSpec(specOf(*programs.begin()));
    if (failed(spec)) {
      (*programs.begin()).emitError() << "does not name a spec op";
      return signalPassFailure();
    }
    Builder b(module.getContext());

    auto bucketOk = [&](Operation *op, std::optional<int64_t> k) -> bool {
      if (k && (*k < 0 || size_t(*k) >= spec->buckets.size())) {
        op->emitError() << "names bucket " << *k << " of a spec with " << spec->buckets.size();
        return false;
      }
      return true;
    };

    // Shapes: every symbol but the batch ones becomes a number.
    auto specialiseShape = [&](Operation *op, ArrayAttr shape) -> FailureOr<ArrayAttr> {
      std::optional<int64_t> k = bucketOf(op);
      if (!bucketOk(op, k))
        return failure();
      SmallVector<Attribute> dims;
      for (Attribute dim : shape) {
        auto sym = dyn_cast<StringAttr>(dim);
        StringRef s = sym ? sym.getValue() : "";
        int64_t value = 0;
        if (!sym || s == "B" || s == "P") {
          dims.push_back(dim);
          continue;
        }
        if (s == "D")
          value = spec->d;
        else if (s == "T" || s == "F")
          value = spec->width;
        else if (s == "T+1" || s == "F+1")
          value = spec->width + 1;
        else if (k && s == "R")
          value = spec->buckets[*k].rank;
        else if (k && s == "N")
          value = spec->buckets[*k].count;
        else {
          op->emitError() << "uses the per-bucket dimension " << s << " without a bucket";
          return failure();
        }
        dims.push_back(b.getI64IntegerAttr(value));
      }
      return b.getArrayAttr(dims);
    };

    for (Operation &op : module.getBody()->getOperations()) {
      if (!isa<ParamOp, BufferOp>(op))
        continue;
      FailureOr<ArrayAttr> shape = specialiseShape(&op, op.getAttrOfType<ArrayAttr>("shape"));
      if (failed(shape))
        return signalPassFailure();
      op.setAttr("shape", *shape);
    }

    // Tensor ops: their compile-time constants.
    WalkResult walk = module.walk([&](Operation *op) {
      if (!op->hasAttr("ins") || !op->hasAttr("outs") || op->hasAttr("consts"))
        return WalkResult::advance();
      std::optional<int64_t> k = bucketOf(op);
      if (!bucketOk(op, k))
        return WalkResult::interrupt();
      SmallVector<NamedAttribute> consts = {b.getNamedAttr("D", b.getI64IntegerAttr(spec->d))};
      if (k) {
        consts.push_back(b.getNamedAttr("R", b.getI64IntegerAttr(spec->buckets[*k].rank)));
        consts.push_back(b.getNamedAttr("N", b.getI64IntegerAttr(spec->buckets[*k].count)));
        consts.push_back(b.getNamedAttr("OFF", b.getI64IntegerAttr(spec->offsets[*k])));
      } else {
        consts.push_back(b.getNamedAttr(spec->widthName, b.getI64IntegerAttr(spec->width)));
      }
      op->setAttr("consts", b.getDictionaryAttr(consts));
      return WalkResult::advance();
    });
    if (walk.wasInterrupted())
      signalPassFailure();
  }
};

} // namespace
