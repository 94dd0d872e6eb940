// --molt-fuse-encode-gate: encoder matmul + bias + gate + compaction become one kernel.
#include "passes/Passes.h"
#include "passes/ProgramIR.h"

namespace mlir::molt {
#define GEN_PASS_DEF_MOLTFUSEENCODEGATE
#include "passes/Passes.h.inc"
} // namespace mlir::molt

using namespace mlir;
using namespace mlir::molt;

namespace {

struct MoltFuseEncodeGatePass : ::mlir::molt::impl::MoltFuseEncodeGateBase<MoltFuseEncodeGatePass> {
  void runOnOperation() override {
    for (ProgramOp program : getOperation().getOps<ProgramOp>()) {
      bool transcoder = isa_and_nonnull<TranscoderOp>(specOf(program));
      SmallVector<CompactOp> roots(program.getBody().front().getOps<CompactOp>());
      for (CompactOp compact : roots) {
        auto gate = writerAs<GateOp>(program, compact.in(0), compact);
        auto bias = gate ? writerAs<BiasColsOp>(program, gate.in(0), gate) : nullptr;
        auto linear = bias ? writerAs<LinearTOp>(program, bias.in(0), bias) : nullptr;
        if (!linear)
          continue;
        fuseOps({linear, bias, gate, compact}, transcoder ? "tc_encode" : "encode_gate",
                {{"x", linear.in(0)},
                 {"enc_w", linear.in(1)},
                 {"enc_b", bias.in(1)},
                 {"theta", gate.in(1)},
                 {"pre", bias.out(0)},
                 {"pair_ptr", compact.out(0)},
                 {"pair_tok", compact.out(1)},
                 {"pair_gate", compact.out(2)},
                 {"pair_pre", compact.out(3)},
                 {"pair_count", compact.out(4)},
                 {"stats", "stats"}});
      }
    }
  }
};

} // namespace
