// The CUDA kernel ABI: the one struct every emitted entry takes, shared by device code and the host executor.
//
// This header is valid C++ for the host compiler too (runtime/src/cuda includes it), so the
// executor and the kernels cannot disagree on the layout. Device-only helpers live in
// molt_kernels/common.cuh.
#pragma once

namespace molt {
namespace k {

/// Most argument slots an op may use (the longest op in core/include/molt/ops.def has 11).
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
  /// The bf16 copy of p the kernels of a bf16 plan read (docs/bundle.md, "Precision"), which
  /// adam rewrites after each update of the fp32 master p; null when there is none.
  unsigned short *lp;
};

/// The single by-value argument of every `extern "C" __global__` entry.
struct Args {
  /// Device pointers in canonical argument order (molt/ops.def). For grad_norm / adam the `params`
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
  /// lp[i]: the bf16 copy of argument i (same element order as p[i]) when the plan's precision
  /// is bf16 and the executor keeps one (x and every param), else null. Kernels compiled for
  /// bf16 stream these instead of the fp32 tensors.
  const unsigned short *lp[kMaxArgs];
};

// Gate and penalty kinds as compile-time constants (the manifest's strings, mapped by
// molt/cuda_wrapper.h).
enum Gate { kGateJumpRelu = 0, kGateRelu = 1, kGateTopK = 2 };
enum Penalty { kPenaltyTanh = 0, kPenaltyL1 = 1 };
/// The manifest's `precision` as the wrapper's `Cfg::precision` (absent means kPrecisionF32).
enum Precision { kPrecisionF32 = 0, kPrecisionBf16 = 1 };

#if defined(__CUDACC__) || defined(__CUDACC_RTC__)
#define MOLT_HD __host__ __device__ __forceinline__
#else
#define MOLT_HD inline
#endif

/// The bits of a float as an unsigned and back: register moves on the device (NVRTC has no
/// __builtin_memcpy), a memcpy on the host (where the intrinsics do not exist).
MOLT_HD unsigned floatBits(float f) {
#if defined(__CUDA_ARCH__)
  return __float_as_uint(f);
#else
  unsigned u;
  __builtin_memcpy(&u, &f, sizeof u);
  return u;
#endif
}
MOLT_HD float bitsFloat(unsigned u) {
#if defined(__CUDA_ARCH__)
  return __uint_as_float(u);
#else
  float f;
  __builtin_memcpy(&f, &u, sizeof f);
  return f;
#endif
}

/// bf16 as stored: the top half of an fp32 bit pattern. One conversion for the kernels, the
/// host executor and the emulator, so a copy made on the host and one made on the device agree
/// to the bit (no cuda_bf16.h, which the host compiler lacks). Round to nearest, ties to even;
/// NaN stays a (quiet) NaN, +-Inf and overflow go to +-Inf.
MOLT_HD unsigned short floatToBf16(float f) {
  const unsigned u = floatBits(f);
  if ((u & 0x7fffffffu) > 0x7f800000u)
    return (unsigned short)((u >> 16) | 0x40u);
  return (unsigned short)((u + 0x7fffu + ((u >> 16) & 1u)) >> 16);
}
MOLT_HD float bf16ToFloat(unsigned short h) { return bitsFloat(unsigned(h) << 16); }

} // namespace k
} // namespace molt
