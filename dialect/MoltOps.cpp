// Verifiers and helpers of the `molt` spec ops. Every message names the field and its value.
#include "dialect/MoltOps.h"

#include "mlir/IR/Builders.h"
#include "mlir/IR/OpImplementation.h"

using namespace mlir;
using namespace mlir::molt;

#define GET_OP_CLASSES
#include "dialect/MoltOps.cpp.inc"

//===----------------------------------------------------------------------===//
// Syntax shared by the spec ops: `@name {field = value, ...}`
//===----------------------------------------------------------------------===//

static ParseResult parseSpec(OpAsmParser &parser, OperationState &result) {
  StringAttr name;
  if (parser.parseSymbolName(name, SymbolTable::getSymbolAttrName(), result.attributes))
    return failure();
  SMLoc fieldsLoc = parser.getCurrentLocation();
  if (parser.parseOptionalAttrDict(result.attributes))
    return failure();
  // A field of the wrong kind (`decoder_bias = 1`) would otherwise be dropped on its way into
  // the op's properties and read back as null.
  return result.name.verifyInherentAttrs(result.attributes,
                                         [&] { return parser.emitError(fieldsLoc); });
}

// Fields in the order a reader expects them (not the dictionary's alphabetical one), then any
// other inherent field, then annotations from other dialects; i64 integers without `: i64`.
static void printSpec(OpAsmPrinter &p, Operation *op, ArrayRef<StringRef> fields) {
  StringRef symName = SymbolTable::getSymbolAttrName();
  p << ' ';
  p.printSymbolName(op->getAttrOfType<StringAttr>(symName).getValue());
  SmallVector<NamedAttribute> present;
  auto add = [&](StringRef field) {
    if (Attribute value = op->getAttr(field))
      present.emplace_back(StringAttr::get(op->getContext(), field), value);
  };
  llvm::for_each(fields, add);
  for (StringAttr name : op->getRegisteredInfo()->getAttributeNames())
    if (name.getValue() != symName && !llvm::is_contained(fields, name.getValue()))
      add(name.getValue());
  llvm::append_range(present, op->getDiscardableAttrs());
  p << " {";
  llvm::interleaveComma(present, p, [&](NamedAttribute attr) {
    p.printKeywordOrString(attr.getName().getValue());
    p << " = ";
    auto integer = dyn_cast<IntegerAttr>(attr.getValue());
    if (integer && integer.getType().isSignlessInteger(64))
      p << integer.getInt();
    else
      p.printAttribute(attr.getValue());
  });
  p << "}";
}

ParseResult LayerOp::parse(OpAsmParser &parser, OperationState &result) {
  return parseSpec(parser, result);
}
void LayerOp::print(OpAsmPrinter &p) {
  printSpec(p, *this,
            {"d_model", "element_type", "schedule", "gate", "penalty", "decoder_bias"});
}
ParseResult TranscoderOp::parse(OpAsmParser &parser, OperationState &result) {
  return parseSpec(parser, result);
}
void TranscoderOp::print(OpAsmPrinter &p) {
  printSpec(p, *this,
            {"d_model", "element_type", "features", "matched", "activation", "penalty", "skip",
             "decoder_bias"});
}
ParseResult MlpOp::parse(OpAsmParser &parser, OperationState &result) {
  return parseSpec(parser, result);
}
void MlpOp::print(OpAsmPrinter &p) { printSpec(p, *this, {"d_model", "d_hidden", "activation"}); }

//===----------------------------------------------------------------------===//
// Checks shared by the spec ops
//===----------------------------------------------------------------------===//

static LogicalResult verifyPositive(Operation *op, StringRef field, int64_t value) {
  if (value <= 0)
    return op->emitOpError() << field << " must be positive, got " << value;
  return success();
}

// What every spec op needs: a name that can be printed back (the generic form allows ""),
// a positive d_model, and no unknown field. A misspelt field would otherwise be kept as a
// discardable attribute and silently ignored; annotations from other dialects
// ("dialect.name") stay allowed.
static LogicalResult verifySpecOp(Operation *op, int64_t dModel) {
  if (cast<SymbolOpInterface>(op).getName().empty())
    return op->emitOpError() << "needs a non-empty symbol name";
  if (failed(verifyPositive(op, "d_model", dModel)))
    return failure();
  for (NamedAttribute attr : op->getDiscardableAttrs()) {
    if (attr.getName().getValue().contains('.'))
      continue;
    InFlightDiagnostic diag = op->emitOpError() << "has unknown field '" << attr.getName().getValue()
                                                << "' (fields: ";
    llvm::interleaveComma(op->getRegisteredInfo()->getAttributeNames(), diag,
                          [&](StringAttr name) { diag << name.getValue(); });
    return diag << ")";
  }
  return success();
}

static LogicalResult verifyElementType(Operation *op, Type type) {
  if (!type.isF32() && !type.isF16() && !type.isBF16())
    return op->emitOpError() << "element_type must be f32, f16 or bf16, got " << type;
  return success();
}

// topk keeps k of F features per token, so it needs k <= F.
static LogicalResult verifyTopK(Operation *op, GateAttr gate, int64_t features,
                                StringRef what) {
  if (gate.getKind() == GateKind::topk && gate.getK() > features)
    return op->emitOpError() << "activation topk k = " << gate.getK() << " exceeds " << what
                             << " " << features;
  return success();
}

//===----------------------------------------------------------------------===//
// LayerOp
//===----------------------------------------------------------------------===//

LogicalResult LayerOp::verify() {
  Operation *op = getOperation();
  if (failed(verifySpecOp(op, getDModel())) ||
      failed(verifyElementType(op, getElementType())))
    return failure();
  if (getGate().getKind() == GateKind::topk)
    return emitOpError() << "gate topk is only valid on molt.transcoder (use jumprelu or relu)";
  for (BucketAttr bucket : getSchedule().getBuckets())
    if (bucket.getRank() > getDModel())
      return emitOpError() << "schedule rank " << bucket.getRank() << " exceeds d_model = "
                           << getDModel();
  if (!countLayer(*this))
    return emitOpError() << "parameter count overflows int64 (d_model = " << getDModel()
                         << " with this schedule)";
  return success();
}

//===----------------------------------------------------------------------===//
// TranscoderOp
//===----------------------------------------------------------------------===//

LayerOp TranscoderOp::getMatchedLayer(SymbolTableCollection *symbols) {
  FlatSymbolRefAttr matched = getMatchedAttr();
  if (!matched)
    return {};
  Operation *target = symbols ? symbols->lookupNearestSymbolFrom(*this, matched)
                              : SymbolTable::lookupNearestSymbolFrom(*this, matched);
  return dyn_cast_or_null<LayerOp>(target);
}

FailureOr<int64_t> TranscoderOp::getFeatureCount(SymbolTableCollection *symbols) {
  if (std::optional<int64_t> features = getFeatures())
    return *features;
  LayerOp layer = getMatchedLayer(symbols);
  if (!layer)
    return failure();
  std::optional<LayerCounts> budget = countLayer(layer);
  if (!budget)
    return failure();
  std::optional<int64_t> features =
      matchTranscoderFeatures(getTranscoderShape(*this), budget->params);
  if (!features)
    return failure();
  return *features;
}

LogicalResult TranscoderOp::verify() {
  Operation *op = getOperation();
  if (failed(verifySpecOp(op, getDModel())) ||
      failed(verifyElementType(op, getElementType())))
    return failure();
  std::optional<int64_t> features = getFeatures();
  if (features && getMatched())
    return emitOpError() << "takes either features or matched, not both";
  if (!features && !getMatched())
    return emitOpError() << "needs features = <count> or matched = @<molt.layer>";
  if (!features)
    return success(); // the rest depends on the layer: see verifySymbolUses
  if (failed(verifyPositive(op, "features", *features)) ||
      failed(verifyTopK(op, getActivation(), *features, "features =")))
    return failure();
  if (!countTranscoderParams(getTranscoderShape(*this), *features))
    return emitOpError() << "parameter count overflows int64 (d_model = " << getDModel()
                         << ", features = " << *features << ")";
  return success();
}

LogicalResult TranscoderOp::verifySymbolUses(SymbolTableCollection &symbols) {
  FlatSymbolRefAttr matched = getMatchedAttr();
  if (!matched)
    return success();
  Operation *target = symbols.lookupNearestSymbolFrom(*this, matched);
  if (!target)
    return emitOpError() << "matched symbol " << matched << " does not exist";
  auto layer = dyn_cast<LayerOp>(target);
  if (!layer)
    return emitOpError() << "matched symbol " << matched << " is a '" << target->getName()
                         << "', not a molt.layer";
  if (layer.getDModel() != getDModel())
    return emitOpError() << "d_model = " << getDModel() << " differs from matched layer "
                         << matched << "'s d_model = " << layer.getDModel();
  FailureOr<int64_t> features = getFeatureCount(&symbols);
  if (failed(features))
    return emitOpError() << "matched layer " << matched
                         << " has too few parameters for even one feature";
  return verifyTopK(*this, getActivation(), *features, "the matched feature count");
}

//===----------------------------------------------------------------------===//
// MlpOp
//===----------------------------------------------------------------------===//

Activation MlpOp::getActivationKind() {
  return symbolizeActivation(getActivation()).value_or(Activation::gelu);
}

LogicalResult MlpOp::verify() {
  Operation *op = getOperation();
  if (failed(verifySpecOp(op, getDModel())) ||
      failed(verifyPositive(op, "d_hidden", getDHidden())))
    return failure();
  if (!symbolizeActivation(getActivation()))
    return emitOpError() << "unknown activation '" << getActivation()
                         << "' (expected gelu, gelu_tanh or relu)";
  if (!countMlpParams(*this))
    return emitOpError() << "parameter count overflows int64 (d_model = " << getDModel()
                         << ", d_hidden = " << getDHidden() << ")";
  return success();
}
