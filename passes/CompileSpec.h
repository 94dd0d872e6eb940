// Compiles a spec file into a bundle directory: the compiler as a plain C++ call (no MLIR types),
// for molt-compile and for tools that accept .mlir specs.
#pragma once

#include <string>

#include "molt/status.h"

namespace molt::compiler {

struct CompileOptions {
  std::string symbol;        // spec op to compile ("@molt"); empty: the first layer, else transcoder
  std::string tuningDb;      // launch configurations to prefer (JSON); empty: the heuristic
  std::string verifyArchs;   // e.g. "sm_80,sm_90a": compile every kernel with NVRTC
  bool fusionReport = false; // print the kernels before and after fusion on stdout
  std::string precision = "f32"; // "bf16": bf16 tensor-core tiles and bf16 streamed storage
};

/// Parses, verifies and compiles `specPath`, writing the bundle to `outDir`. Diagnostics go into
/// the returned status's message (file:line:col: error: ...).
Status compileSpec(const std::string &specPath, const std::string &outDir,
                   const CompileOptions &options = {});

} // namespace molt::compiler
