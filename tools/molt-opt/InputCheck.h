// Checks molt-opt runs on a spec file before MLIR parses it: inputs MLIR would accept
// silently (an empty file) or could not survive (nesting deep enough to overflow the stack
// of its recursive-descent parser).
#ifndef MOLT_TOOLS_MOLT_OPT_INPUTCHECK_H
#define MOLT_TOOLS_MOLT_OPT_INPUTCHECK_H

#include "llvm/ADT/StringRef.h"

#include <optional>
#include <string>

namespace molt {

/// Brackets nested deeper than this are rejected; real specs nest four deep.
inline constexpr int kMaxNesting = 256;

/// A `line:col: error: ...` tail (1-based) for the first problem in `text`, or nullopt.
std::optional<std::string> checkSpecText(llvm::StringRef text);

} // namespace molt

#endif // MOLT_TOOLS_MOLT_OPT_INPUTCHECK_H
