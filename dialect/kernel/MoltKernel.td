// The `molt_k` dialect: kernel launches of a bundle, one op per kernel of docs/bundle.md.
#ifndef MOLT_KERNEL_TD
#define MOLT_KERNEL_TD

include "mlir/IR/OpBase.td"
include "mlir/IR/AttrTypeBase.td"
include "mlir/IR/BuiltinAttributes.td"
include "mlir/IR/SymbolInterfaces.td"

def MoltK_Dialect : Dialect {
  let name = "molt_k";
  let cppNamespace = "::mlir::molt_k";
  let summary = "Kernel-level molt: specialised kernels, their launch configuration, entry points";
  let description = [{
    What `--molt-lower-to-kernels` produces and `--molt-emit-bundle` writes out as a bundle.
    `molt_k.kernel` declares one specialised kernel (a kernel op of docs/bundle.md with its
    compile-time constants and launch configuration); `molt_k.entry` lists the launches of
    one entry point, each binding the op's canonical arguments (core/include/molt/ops.h)
    to params and buffers by name. Everything is static: ranks, counts, d and tiles.
  }];
  let useDefaultAttributePrinterParser = 1;
}

def MoltK_LaunchAttr : AttrDef<MoltK_Dialect, "Launch"> {
  let mnemonic = "launch";
  let summary = "how a kernel is launched: threads, grid, tiles, pipeline stages, split";
  let description = [{
    `grid` holds three expressions (an integer, `B`, `T`, `P` or `cdiv(X,n)`) that the
    runtime evaluates once the batch is bound; the rest are compile-time constants of the
    emitted source. Chosen by the default heuristic (core/include/molt/cuda_wrapper.h) or read from a
    tuning database.

    ```mlir
    #molt_k.launch<block = array<i64: 256, 1, 1>, grid = ["cdiv(B,8)", "1", "1"], smem = 0,
                   tile_m = 64, tile_n = 32, tile_k = 32, stages = 1, split = "none">
    ```
  }];
  let parameters = (ins "::mlir::DenseI64ArrayAttr":$block, "::mlir::ArrayAttr":$grid,
                        "int64_t":$smem, "int64_t":$tile_m, "int64_t":$tile_n,
                        "int64_t":$tile_k, "int64_t":$stages, StringRefParameter<>:$split);
  let assemblyFormat = "`<` struct(params) `>`";
  let genVerifyDecl = 1;
}

class MoltK_Op<string mnemonic, list<Trait> traits = []> : Op<MoltK_Dialect, mnemonic, traits>;

def MoltK_KernelOp : MoltK_Op<"kernel", [Symbol, HasParent<"::mlir::ModuleOp">]> {
  let summary = "one specialised kernel of the bundle";
  let description = [{
    `op` is a kernel family of docs/bundle.md, `attrs` its compile-time constants
    (integers, floats, strings), `entry` the `extern "C"` symbol of its CUDA source.

    ```mlir
    molt_k.kernel @bucket_apply_0 {op = "bucket_apply", entry = "molt_bucket_apply_0",
      attrs = {D = 64 : i64, N = 2 : i64, OFF = 0 : i64, R = 32 : i64}, launch = #molt_k.launch<...>}
    ```
  }];
  let arguments = (ins SymbolNameAttr:$sym_name, StrAttr:$op, StrAttr:$entry,
                       DictionaryAttr:$attrs, MoltK_LaunchAttr:$launch);
  let assemblyFormat = "$sym_name attr-dict";
  let hasVerifier = 1;
}

def MoltK_EntryOp : MoltK_Op<"entry", [SingleBlock, NoTerminator, HasParent<"::mlir::ModuleOp">]> {
  let summary = "the ordered launches of one entry point";
  let description = [{
    ```mlir
    molt_k.entry "forward" {
      molt_k.launch @encode_gate {args = {x = "x", enc_w = "enc_w", ...}}
    }
    ```
  }];
  let arguments = (ins StrAttr:$name);
  let regions = (region SizedRegion<1>:$body);
  let assemblyFormat = "$name attr-dict-with-keyword $body";
}

def MoltK_LaunchOp : MoltK_Op<"launch", [HasParent<"EntryOp">,
    DeclareOpInterfaceMethods<SymbolUserOpInterface>]> {
  let summary = "one invocation of a kernel";
  let description = [{
    Binds every canonical argument of the kernel's op to a param, gradient or buffer name
    (the `params` argument of grad_norm / adam to a comma-separated list of params).
  }];
  let arguments = (ins FlatSymbolRefAttr:$kernel, DictionaryAttr:$args);
  let assemblyFormat = "$kernel attr-dict";
}

#endif // MOLT_KERNEL_TD
