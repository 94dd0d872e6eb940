// molt-compile: compiles a spec (.mlir) into a bundle directory the runtime loads.
#include "passes/CompileSpec.h"

#include <CLI/CLI.hpp>

#include <algorithm>
#include <iostream>

int main(int argc, char **argv) {
  CLI::App app{"molt-compile: compile a molt spec into a bundle (manifest.json, one CUDA source "
               "per kernel, molt_kernels/ headers) that molt-train and molt-eval run."};
  std::string spec, out, arch = "sm_80,sm_90a";
  molt::compiler::CompileOptions options;
  bool verify = false;
  app.add_option("spec", spec, "the spec file (.mlir) with a molt.layer or molt.transcoder")
      ->required();
  app.add_option("-o,--out", out, "the bundle directory to write (created)")->required();
  app.add_option("--symbol", options.symbol,
                 "the spec op to compile, e.g. @transcoder (default: the first molt.layer)");
  app.add_option("--arch", arch, "GPU archs --verify-nvrtc compiles for (comma-separated)")
      ->capture_default_str();
  app.add_flag("--verify-nvrtc", verify, "compile every emitted kernel with NVRTC (no GPU needed)");
  app.add_option("--tuning-db", options.tuningDb,
                 "launch configurations to prefer over the heuristic (JSON)");
  app.add_option("--precision", options.precision,
                 "f32, or bf16: tile products on bf16 tensor cores with fp32 accumulation, x and "
                 "the weights streamed as bf16 copies of the fp32 master weights")
      ->check(CLI::IsMember({"f32", "bf16"}))
      ->capture_default_str();
  app.add_flag("--fusion-report", options.fusionReport,
               "print the kernels of each entry point before and after fusion");
  try {
    app.parse(argc, argv);
  } catch (const CLI::ParseError &e) {
    if (e.get_exit_code() == 0)
      return app.exit(e);
    std::cerr << "molt-compile: error: " << e.what() << "\n";
    return 1;
  }
  if (verify)
    options.verifyArchs = arch;
  molt::Status status = molt::compiler::compileSpec(spec, out, options);
  if (!status) {
    std::string message = status.message();
    std::replace(message.begin(), message.end(), '\n', ' ');
    std::cerr << "molt-compile: error: " << message << "\n";
    return 1;
  }
  return 0;
}
