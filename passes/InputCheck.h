// Checks of spec text before MLIR parses it, made by molt-opt and by every compiler facade call
// (passes/CompileSpec.h): inputs MLIR would accept silently (an empty file) or could not
// survive (nesting deep enough to overflow the stack of its recursive-descent parser).
#ifndef MOLT_PASSES_INPUTCHECK_H
#define MOLT_PASSES_INPUTCHECK_H

#include "llvm/ADT/StringRef.h"

#include <optional>
#include <string>

namespace molt {

/// Brackets nested deeper than this are rejected; real specs nest four deep.
inline constexpr int kMaxNesting = 256;

/// The first problem in a spec's text: where (1-based) and what.
struct SpecTextProblem {
  int line = 1, col = 1;
  std::string message;
};

/// The first problem in `text`, or nullopt.
std::optional<SpecTextProblem> checkSpecText(llvm::StringRef text);

} // namespace molt

#endif // MOLT_PASSES_INPUTCHECK_H
