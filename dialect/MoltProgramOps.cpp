// Verifiers and gradient rules of the `molt` program ops: each op's adjoint is written here, once.
#include "dialect/MoltProgramOps.h"

#include "mlir/IR/Builders.h"
#include "mlir/IR/OpImplementation.h"

using namespace mlir;
using namespace mlir::molt;

#include "dialect/MoltProgramInterfaces.cpp.inc"

#define GET_OP_CLASSES
#include "dialect/MoltProgramOps.cpp.inc"

//===----------------------------------------------------------------------===//
// Verifiers
//===----------------------------------------------------------------------===//

static SmallVector<StringRef> names(Operation *op, StringRef attr) {
  SmallVector<StringRef> out;
  if (auto list = op->getAttrOfType<ArrayAttr>(attr))
    for (Attribute a : list)
      if (auto s = dyn_cast<StringAttr>(a))
        out.push_back(s.getValue());
  return out;
}
SmallVector<StringRef> mlir::molt::tensorOpIns(Operation *op) { return names(op, "ins"); }
SmallVector<StringRef> mlir::molt::tensorOpOuts(Operation *op) { return names(op, "outs"); }

LogicalResult mlir::molt::verifyTensorOpArity(Operation *op, unsigned numIns, unsigned numOuts) {
  auto ins = op->getAttrOfType<ArrayAttr>("ins"), outs = op->getAttrOfType<ArrayAttr>("outs");
  if (ins.size() != numIns)
    return op->emitOpError() << "takes " << numIns << " inputs, got " << ins.size();
  if (outs.size() != numOuts)
    return op->emitOpError() << "writes " << numOuts << " outputs, got " << outs.size();
  for (ArrayAttr list : {ins, outs})
    for (Attribute a : list)
      if (cast<StringAttr>(a).getValue().empty())
        return op->emitOpError() << "has an empty buffer name";
  return success();
}

// Dimensions are integers >= 1 or one of the symbols the passes and the runtime know.
static LogicalResult verifyShape(Operation *op, ArrayAttr shape, bool allowBatchSymbols) {
  for (Attribute dim : shape) {
    if (auto i = dyn_cast<IntegerAttr>(dim)) {
      if (i.getInt() < 1)
        return op->emitOpError() << "has dimension " << i.getInt() << " (must be >= 1)";
      continue;
    }
    auto s = dyn_cast<StringAttr>(dim);
    StringRef v = s ? s.getValue() : "";
    bool batch = v == "B" || v == "P";
    bool model = v == "D" || v == "T" || v == "F" || v == "R" || v == "N" || v == "T+1" ||
                 v == "F+1";
    if (!s || !(model || batch) ||
        (batch && !allowBatchSymbols))
      return op->emitOpError() << "has dimension " << dim
                               << " (expected an integer, D, T, F, R, N, T+1 or F+1"
                               << (allowBatchSymbols ? ", B or P)" : ")");
  }
  return success();
}

LogicalResult ParamOp::verify() {
  StringRef init = getInit();
  if (init != "normal" && init != "uniform" && init != "zeros" && init != "const")
    return emitOpError() << "has init '" << init << "' (expected normal, uniform, zeros or const)";
  return verifyShape(*this, getShape(), /*allowBatchSymbols=*/false);
}

LogicalResult BufferOp::verify() {
  if (getDtype() != "f32" && getDtype() != "i32")
    return emitOpError() << "has dtype '" << getDtype() << "' (expected f32 or i32)";
  return verifyShape(*this, getShape(), /*allowBatchSymbols=*/true);
}

//===----------------------------------------------------------------------===//
// Gradient rules. `ab.grad(n)` is the adjoint buffer of n; rules only emit what
// `ab.needs(i)` asks for, so data inputs (x, pair lists) never get gradients.
//===----------------------------------------------------------------------===//

void LinearTOp::buildAdjoint(AdjointBuilder &ab) {
  if (ab.needs(1))
    ab.emit<LinearTGradWOp>({ab.grad(out(0)), in(0)}, {ab.grad(in(1))});
  if (ab.needs(0))
    ab.emit<LinearTGradXOp>({ab.grad(out(0)), in(1)}, {ab.grad(in(0))});
}

void BiasColsOp::buildAdjoint(AdjointBuilder &ab) {
  StringRef dOut = ab.grad(out(0));
  if (ab.needs(0))
    ab.emit<AccumulateOp>({dOut}, {ab.grad(in(0))});
  if (ab.needs(1)) {
    SmallVector<NamedAttribute> attrs;
    if (getNegate())
      attrs.push_back(NamedAttribute(getNegateAttrName(), UnitAttr::get(getContext())));
    ab.emit<ColSumOp>({dOut}, {ab.grad(in(1))}, attrs);
  }
}

void GateOp::buildAdjoint(AdjointBuilder &ab) {
  if (!ab.needs(0) && !ab.needs(1))
    return;
  ab.emit<GateGradOp>({in(0), in(1), ab.grad(out(0))}, {ab.grad(in(0)), ab.grad(in(1))},
                      {NamedAttribute(getKindAttrName(), getKindAttr()),
                       NamedAttribute(getBandwidthAttrName(), getBandwidthAttr()),
                       NamedAttribute(getKAttrName(), getKAttr())});
}

void CompactOp::buildAdjoint(AdjointBuilder &ab) {
  // Only the gate values carry a gradient; the listing itself is piecewise constant.
  if (ab.needs(0))
    ab.emit<ScatterPairsOp>({ab.grad(out(2)), out(0), out(1)}, {ab.grad(in(0))});
}

void GramOp::buildAdjoint(AdjointBuilder &ab) {
  if (!ab.needs(0))
    return;
  SmallVector<NamedAttribute> attrs;
  if (getTranspose())
    attrs.push_back(NamedAttribute(getTransposeAttrName(), UnitAttr::get(getContext())));
  ab.emit<GramGradOp>({in(0), ab.grad(out(0))}, {ab.grad(in(0))}, attrs);
}

void TraceNormOp::buildAdjoint(AdjointBuilder &ab) {
  if (ab.needs(0) || ab.needs(1))
    ab.emit<TraceNormGradOp>({ab.grad(out(0)), out(0), in(0), in(1)},
                             {ab.grad(in(0)), ab.grad(in(1))});
}

void GatherRowsOp::buildAdjoint(AdjointBuilder &ab) {
  if (ab.needs(0))
    ab.emit<ScatterAddRowsOp>({ab.grad(out(0)), in(1), in(2)}, {ab.grad(in(0))});
}

void ProjectVOp::buildAdjoint(AdjointBuilder &ab) {
  if (ab.needs(1))
    ab.emit<ProjectVGradOp>({ab.grad(out(0)), in(0)}, {ab.grad(in(1))});
  if (ab.needs(0))
    ab.emit<ProjectVTOp>({ab.grad(out(0)), in(1)}, {ab.grad(in(0))});
}

void ScaleRowsOp::buildAdjoint(AdjointBuilder &ab) {
  if (ab.needs(0))
    ab.emit<ScaleRowsOp>({ab.grad(out(0)), in(1)}, {ab.grad(in(0))});
  if (ab.needs(1))
    ab.emit<RowDotOp>({in(0), ab.grad(out(0))}, {ab.grad(in(1))});
}

void ProjectUOp::buildAdjoint(AdjointBuilder &ab) {
  if (ab.needs(0))
    ab.emit<ProjectUTOp>({ab.grad(out(0)), in(1)}, {ab.grad(in(0))});
  if (ab.needs(1))
    ab.emit<ProjectUGradOp>({ab.grad(out(0)), in(0)}, {ab.grad(in(1))});
}

void ScatterAddRowsOp::buildAdjoint(AdjointBuilder &ab) {
  if (ab.needs(0))
    ab.emit<GatherRowsOp>({ab.grad(out(0)), in(1), in(2)}, {ab.grad(in(0))});
}

void AddBiasOp::buildAdjoint(AdjointBuilder &ab) {
  if (ab.needs(0))
    ab.emit<ColSumOp>({ab.grad(out(0))}, {ab.grad(in(0))});
}

void MseLossOp::buildAdjoint(AdjointBuilder &ab) {
  if (ab.needs(0))
    ab.emit<MseGradOp>({in(0), in(1)}, {ab.grad(in(0))});
}

void PenaltyOp::buildAdjoint(AdjointBuilder &ab) {
  if (ab.needs(1) || ab.needs(2))
    ab.emit<PenaltyGradOp>({in(0), in(1), in(2), in(3)}, {ab.grad(in(1)), ab.grad(in(2))},
                           {NamedAttribute(getKindAttrName(), getKindAttr()),
                            NamedAttribute(getCAttrName(), getCAttr())});
}

void DecodeRowsOp::buildAdjoint(AdjointBuilder &ab) {
  if (ab.needs(2) || ab.needs(3))
    ab.emit<DecodeRowsGradOp>({ab.grad(out(0)), in(0), in(1), in(2), in(3)},
                              {ab.grad(in(3)), ab.grad(in(2))});
}

void SkipApplyOp::buildAdjoint(AdjointBuilder &ab) {
  if (ab.needs(1))
    ab.emit<SkipGradOp>({ab.grad(out(0)), in(0)}, {ab.grad(in(1))});
  if (ab.needs(0))
    ab.emit<SkipGradXOp>({ab.grad(out(0)), in(1)}, {ab.grad(in(0))});
}

void FeaturePenaltyOp::buildAdjoint(AdjointBuilder &ab) {
  if (ab.needs(1) || ab.needs(2))
    ab.emit<FeaturePenaltyGradOp>({in(0), in(1), in(2), in(3)},
                                  {ab.grad(in(1)), ab.grad(in(2))},
                                  {NamedAttribute(getKindAttrName(), getKindAttr()),
                                   NamedAttribute(getCAttrName(), getCAttr())});
}

void ActivationOp::buildAdjoint(AdjointBuilder &ab) {
  if (ab.needs(0))
    ab.emit<ActivationGradOp>({in(0), ab.grad(out(0))}, {ab.grad(in(0))},
                              {NamedAttribute(getKindAttrName(), getKindAttr())});
}
