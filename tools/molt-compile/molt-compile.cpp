// molt-compile: compiles a spec (.mlir) into a bundle directory the runtime loads.
#include "passes/CompileSpec.h"
#include "tools/common/cli.h"

int main(int argc, char **argv) {
  CLI::App app{"molt-compile: compile a molt spec into a bundle (manifest.json, one CUDA source "
               "per kernel, molt_kernels/ headers) that molt-train and molt-eval run.",
               "molt-compile"};
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
  if (int rc = molt::tool::parse(app, argc, argv); rc >= 0)
    return rc;
  if (verify)
    options.verifyArchs = arch;
  molt::Status status = molt::compiler::compileSpec(spec, out, options);
  if (!status)
    return molt::tool::fail("molt-compile", status.message());
  return 0;
}
