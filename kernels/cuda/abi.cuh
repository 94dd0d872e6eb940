// The CUDA kernel ABI: the one struct every emitted entry takes, shared by device code and the host executor.
//
// This header is valid C++ for the host compiler too (runtime/src/cuda includes it), so the
// executor and the kernels cannot disagree on the layout. Device-only helpers live in
// molt_kernels/common.cuh.
#pragma once

namespace molt {
namespace k {

/// Most argument slots an op may use (the longest op in runtime/include/molt/ops.h has 11).
constexpr int kMaxArgs = 32;

/// One trainable tensor and its companions, for the `params`-list ops (grad_norm, adam).
/// A run has more params than the pointer array could hold four times over, so those ops read a
/// device-resident table instead (Args::params).
struct ParamEntry {
  float *p;
  float *d;
  float *m;
  float *v;
  long long n; // elements
};

/// The single by-value argument of every `extern "C" __global__` entry.
struct Args {
  /// Device pointers in canonical argument order (ops.h). For grad_norm / adam the `params`
  /// slot is skipped: p[] holds the other arguments in order (stats; scalars, stats).
  void *p[kMaxArgs];
  long long B; // tokens in the batch
  long long P; // pair capacity (B x T or B x F)
  int nparams; // entries in `params` (0 for other ops)
  int d_model; // the layer width, for ops whose attrs omit D (tc_penalty)
  /// Device scratch of at least cudaWorkWords(kernel) 32-bit words, zeroed by the executor
  /// before every launch of an op that uses it (encode_gate, tc_encode, frob_norm).
  unsigned *work;
  /// grad_norm / adam: the params of the invocation's list, in list order; else null.
  const ParamEntry *params;
};

// Gate and penalty kinds as compile-time constants (the manifest's strings, mapped by
// kernels/cuda/wrapper.h).
enum Gate { kGateJumpRelu = 0, kGateRelu = 1, kGateTopK = 2 };
enum Penalty { kPenaltyTanh = 0, kPenaltyL1 = 1 };

} // namespace k
} // namespace molt
