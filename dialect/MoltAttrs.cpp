// Parsers, printers and verifiers of the `molt` attributes.
#include "dialect/MoltAttrs.h"

#include "mlir/IR/Builders.h"
#include "mlir/IR/DialectImplementation.h"
#include "llvm/ADT/SmallSet.h"
#include "llvm/ADT/TypeSwitch.h" // used by the generated printer
#include "llvm/Support/CheckedArithmetic.h"
#include "molt/gate.h"

#include <cmath>
#include <cstdio>
#include <cstdlib>

using namespace mlir;
using namespace mlir::molt;

// The spec dialect's gate kinds are the contract's (core/include/molt/gate.h), value for value;
// the spelling a bundle carries is taken from the contract's table (passes/EmitBundle.cpp).
static_assert(static_cast<int>(GateKind::jumprelu) == static_cast<int>(::molt::GateKind::JumpReLU));
static_assert(static_cast<int>(GateKind::relu) == static_cast<int>(::molt::GateKind::ReLU));
static_assert(static_cast<int>(GateKind::topk) == static_cast<int>(::molt::GateKind::TopK));

#define GET_ATTRDEF_CLASSES
#include "dialect/MoltAttrs.cpp.inc"

void MoltDialect::registerAttributes() {
  addAttributes<
#define GET_ATTRDEF_LIST
#include "dialect/MoltAttrs.cpp.inc"
      >();
}

std::string mlir::molt::formatFloat(const llvm::APFloat &value) {
  double v = value.convertToDouble();
  if (std::isnan(v))
    return "nan";
  if (std::isinf(v))
    return v < 0 ? "-inf" : "inf";
  // Shortest %g precision that reads back exactly: 0.1 prints as "0.1", not 1.000000e-01.
  char buf[64];
  for (int precision = 1; precision <= 17; ++precision) {
    std::snprintf(buf, sizeof(buf), "%.*g", precision, v);
    if (std::strtod(buf, nullptr) == v)
      break;
  }
  std::string s(buf);
  // MLIR's lexer needs a '.' before any exponent to see a float.
  if (s.find('.') == std::string::npos) {
    size_t e = s.find('e');
    s.insert(e == std::string::npos ? s.size() : e, ".0");
  }
  return s;
}

static APFloat toAPFloat(double v) { return APFloat(v); }

//===----------------------------------------------------------------------===//
// Parsing helpers: `name = value`, with the location of the value for diagnostics.
//===----------------------------------------------------------------------===//

static ParseResult parseNamedFloat(AsmParser &parser, StringRef name, double &value) {
  return failure(parser.parseKeyword(name) || parser.parseEqual() || parser.parseFloat(value));
}

static ParseResult parseNamedInt(AsmParser &parser, StringRef name, int64_t &value) {
  return failure(parser.parseKeyword(name) || parser.parseEqual() ||
                 parser.parseInteger(value));
}

// `name = [1, 2, ...]`, keeping where each number is so that errors can point at it.
static ParseResult parseIntList(AsmParser &parser, StringRef name,
                                SmallVectorImpl<int64_t> &values, SmallVectorImpl<SMLoc> &locs) {
  if (parser.parseKeyword(name) || parser.parseEqual())
    return failure();
  return parser.parseCommaSeparatedList(AsmParser::Delimiter::Square, [&]() {
    locs.push_back(parser.getCurrentLocation());
    return parser.parseInteger(values.emplace_back());
  });
}

// `<kind`, the opening of #molt.gate and #molt.penalty; an unknown kind is reported with
// the kinds that exist.
template <typename Kind>
static std::optional<Kind> parseOpeningKind(AsmParser &parser,
                                            std::optional<Kind> (*symbolize)(StringRef),
                                            StringRef what, StringRef expected) {
  StringRef name;
  if (parser.parseLess())
    return std::nullopt;
  SMLoc kindLoc = parser.getCurrentLocation();
  if (parser.parseKeyword(&name))
    return std::nullopt;
  std::optional<Kind> kind = symbolize(name);
  if (!kind)
    parser.emitError(kindLoc) << "unknown " << what << " kind '" << name << "' (expected "
                              << expected << ")";
  return kind;
}

//===----------------------------------------------------------------------===//
// BucketAttr
//===----------------------------------------------------------------------===//

LogicalResult BucketAttr::verify(function_ref<InFlightDiagnostic()> emitError, int64_t rank,
                                 int64_t count) {
  if (rank <= 0)
    return emitError() << "bucket rank must be positive, got " << rank;
  if (count <= 0)
    return emitError() << "bucket count must be positive, got " << count;
  return success();
}

//===----------------------------------------------------------------------===//
// ScheduleAttr
//===----------------------------------------------------------------------===//

static constexpr int64_t kReferenceRanks[] = {512, 256, 128, 64, 32};

SmallVector<Bucket> ScheduleAttr::getBucketValues() const {
  SmallVector<Bucket> values;
  for (BucketAttr b : getBuckets())
    values.push_back({b.getRank(), b.getCount()});
  return values;
}

LogicalResult ScheduleAttr::verify(function_ref<InFlightDiagnostic()> emitError,
                                   ArrayRef<BucketAttr> buckets) {
  if (buckets.empty())
    return emitError() << "schedule must have at least one bucket";
  llvm::SmallSet<int64_t, 8> seen;
  for (BucketAttr b : buckets) {
    if (!b)
      return emitError() << "schedule has a null bucket";
    if (!seen.insert(b.getRank()).second)
      return emitError() << "schedule repeats rank " << b.getRank();
  }
  return success();
}

// Counts N, 2N, 4N, ... for `size` buckets; nullopt on overflow.
static std::optional<SmallVector<int64_t>> geometricCounts(int64_t n, size_t size) {
  SmallVector<int64_t> counts;
  std::optional<int64_t> count = n;
  for (size_t i = 0; i < size; ++i) {
    if (!count)
      return std::nullopt;
    counts.push_back(*count);
    count = llvm::checkedMul<int64_t>(*count, 2);
  }
  return counts;
}

Attribute ScheduleAttr::parse(AsmParser &parser, Type) {
  SMLoc loc = parser.getCurrentLocation();
  if (parser.parseLess())
    return {};
  SmallVector<int64_t> ranks, counts;
  SmallVector<SMLoc> rankLocs, countLocs;
  bool reference = succeeded(parser.parseOptionalKeyword("reference"));
  bool geometric = !reference && succeeded(parser.parseOptionalKeyword("geometric"));
  if (reference || geometric) {
    int64_t n = 0;
    SMLoc nLoc;
    if (parser.parseKeyword("N") || parser.parseEqual() ||
        (nLoc = parser.getCurrentLocation(), parser.parseInteger(n)))
      return {};
    if (reference) {
      ranks.assign(std::begin(kReferenceRanks), std::end(kReferenceRanks));
      rankLocs.assign(ranks.size(), nLoc);
    } else if (parser.parseComma() || parseIntList(parser, "ranks", ranks, rankLocs)) {
      return {};
    }
    if (n <= 0) {
      parser.emitError(nLoc) << "schedule N must be positive, got " << n;
      return {};
    }
    std::optional<SmallVector<int64_t>> doubled = geometricCounts(n, ranks.size());
    if (!doubled) {
      parser.emitError(nLoc) << "schedule N = " << n << " is too large (counts overflow int64)";
      return {};
    }
    counts = std::move(*doubled);
    countLocs.assign(counts.size(), nLoc);
  } else if (parseIntList(parser, "ranks", ranks, rankLocs) || parser.parseComma() ||
             parseIntList(parser, "counts", counts, countLocs)) {
    return {};
  }
  if (parser.parseGreater())
    return {};
  if (ranks.size() != counts.size()) {
    parser.emitError(loc) << "schedule has " << ranks.size() << " ranks but " << counts.size()
                          << " counts";
    return {};
  }
  SmallVector<BucketAttr> buckets;
  for (size_t i = 0; i < ranks.size(); ++i) {
    SMLoc at = ranks[i] <= 0 ? rankLocs[i] : countLocs[i]; // the number BucketAttr rejects
    BucketAttr bucket =
        parser.getChecked<BucketAttr>(at, parser.getContext(), ranks[i], counts[i]);
    if (!bucket)
      return {};
    buckets.push_back(bucket);
  }
  return parser.getChecked<ScheduleAttr>(loc, parser.getContext(), buckets);
}

void ScheduleAttr::print(AsmPrinter &printer) const {
  SmallVector<Bucket> buckets = getBucketValues();
  SmallVector<int64_t> ranks, counts;
  for (const Bucket &b : buckets) {
    ranks.push_back(b.rank);
    counts.push_back(b.count);
  }
  bool geometric = buckets.size() >= 2 && geometricCounts(counts[0], counts.size()) == counts;
  if (geometric && ArrayRef<int64_t>(ranks) == ArrayRef<int64_t>(kReferenceRanks)) {
    printer << "<reference N = " << counts[0] << ">";
    return;
  }
  if (geometric) {
    printer << "<geometric N = " << counts[0] << ", ranks = [";
    llvm::interleaveComma(ranks, printer);
    printer << "]>";
    return;
  }
  printer << "<ranks = [";
  llvm::interleaveComma(ranks, printer);
  printer << "], counts = [";
  llvm::interleaveComma(counts, printer);
  printer << "]>";
}

//===----------------------------------------------------------------------===//
// GateAttr
//===----------------------------------------------------------------------===//

GateAttr GateAttr::getJumpReLU(MLIRContext *context, double threshold, double bandwidth) {
  return get(context, GateKind::jumprelu, toAPFloat(threshold), toAPFloat(bandwidth), 0);
}
GateAttr GateAttr::getReLU(MLIRContext *context) {
  return get(context, GateKind::relu, toAPFloat(0), toAPFloat(0), 0);
}
GateAttr GateAttr::getTopK(MLIRContext *context, int64_t k) {
  return get(context, GateKind::topk, toAPFloat(0), toAPFloat(0), k);
}

LogicalResult GateAttr::verify(function_ref<InFlightDiagnostic()> emitError, GateKind kind,
                               APFloat threshold, APFloat bandwidth, int64_t k) {
  bool noFloats = threshold.isPosZero() && bandwidth.isPosZero();
  switch (kind) {
  case GateKind::jumprelu:
    if (!threshold.isFinite() || threshold.isNegative())
      return emitError() << "jumprelu threshold must be finite and >= 0, got "
                         << formatFloat(threshold);
    if (!bandwidth.isFinite() || bandwidth.isNegative() || bandwidth.isZero())
      return emitError() << "jumprelu bandwidth must be finite and > 0, got "
                         << formatFloat(bandwidth);
    if (k != 0)
      return emitError() << "jumprelu gate takes no k";
    return success();
  case GateKind::relu:
    if (!noFloats || k != 0)
      return emitError() << "relu gate takes no parameters";
    return success();
  case GateKind::topk:
    if (k <= 0)
      return emitError() << "topk k must be positive, got " << k;
    if (!noFloats)
      return emitError() << "topk gate takes no threshold or bandwidth";
    return success();
  }
  return emitError() << "unknown gate kind " << static_cast<int>(kind);
}

Attribute GateAttr::parse(AsmParser &parser, Type) {
  SMLoc loc = parser.getCurrentLocation();
  std::optional<GateKind> kind =
      parseOpeningKind(parser, symbolizeGateKind, "gate", "jumprelu, relu or topk");
  if (!kind)
    return {};
  double threshold = 0, bandwidth = 0;
  int64_t k = 0;
  if (*kind == GateKind::jumprelu &&
      (parseNamedFloat(parser, "threshold", threshold) || parser.parseComma() ||
       parseNamedFloat(parser, "bandwidth", bandwidth)))
    return {};
  if (*kind == GateKind::topk && parseNamedInt(parser, "k", k))
    return {};
  if (parser.parseGreater())
    return {};
  return parser.getChecked<GateAttr>(loc, parser.getContext(), *kind, toAPFloat(threshold),
                                     toAPFloat(bandwidth), k);
}

void GateAttr::print(AsmPrinter &printer) const {
  printer << "<" << stringifyGateKind(getKind());
  if (getKind() == GateKind::jumprelu)
    printer << " threshold = " << formatFloat(getThreshold())
            << ", bandwidth = " << formatFloat(getBandwidth());
  if (getKind() == GateKind::topk)
    printer << " k = " << getK();
  printer << ">";
}

//===----------------------------------------------------------------------===//
// PenaltyAttr
//===----------------------------------------------------------------------===//

PenaltyAttr PenaltyAttr::getTanh(MLIRContext *context, double c, double lambda, double warmup) {
  return get(context, PenaltyKind::tanh, toAPFloat(c), toAPFloat(lambda), toAPFloat(warmup));
}
PenaltyAttr PenaltyAttr::getL1(MLIRContext *context, double lambda, double warmup) {
  return get(context, PenaltyKind::l1, toAPFloat(0), toAPFloat(lambda), toAPFloat(warmup));
}

LogicalResult PenaltyAttr::verify(function_ref<InFlightDiagnostic()> emitError,
                                  PenaltyKind kind, APFloat c, APFloat lambda, APFloat warmup) {
  if (kind == PenaltyKind::tanh && (!c.isFinite() || c.isNegative() || c.isZero()))
    return emitError() << "tanh penalty c must be finite and > 0, got " << formatFloat(c);
  if (kind == PenaltyKind::l1 && !c.isPosZero())
    return emitError() << "l1 penalty takes no c";
  if (kind != PenaltyKind::tanh && kind != PenaltyKind::l1)
    return emitError() << "unknown penalty kind " << static_cast<int>(kind);
  if (!lambda.isFinite() || (lambda.isNegative() && !lambda.isZero()))
    return emitError() << "penalty lambda must be finite and >= 0, got " << formatFloat(lambda);
  double w = warmup.convertToDouble();
  if (!(w >= 0.0 && w <= 1.0))
    return emitError() << "penalty warmup must be in [0, 1], got " << formatFloat(warmup);
  return success();
}

Attribute PenaltyAttr::parse(AsmParser &parser, Type) {
  SMLoc loc = parser.getCurrentLocation();
  std::optional<PenaltyKind> kind =
      parseOpeningKind(parser, symbolizePenaltyKind, "penalty", "tanh or l1");
  if (!kind)
    return {};
  double c = 0, lambda = 0, warmup = 0;
  if (*kind == PenaltyKind::tanh && (parseNamedFloat(parser, "c", c) || parser.parseComma()))
    return {};
  if (parseNamedFloat(parser, "lambda", lambda) || parser.parseComma() ||
      parseNamedFloat(parser, "warmup", warmup) || parser.parseGreater())
    return {};
  return parser.getChecked<PenaltyAttr>(loc, parser.getContext(), *kind, toAPFloat(c),
                                        toAPFloat(lambda), toAPFloat(warmup));
}

void PenaltyAttr::print(AsmPrinter &printer) const {
  printer << "<" << stringifyPenaltyKind(getKind());
  if (getKind() == PenaltyKind::tanh)
    printer << " c = " << formatFloat(getC()) << ",";
  printer << " lambda = " << formatFloat(getLambda()) << ", warmup = " << formatFloat(getWarmup())
          << ">";
}
