// Top-k selection for tc_encode on CUDA: per token, the k largest pre > 0, ties to the lower index (the CPU's rule, kernels/cpu/encode_gate.h).
//
// A block selects one token's row by radix select on order-preserving 32-bit keys: four 8-bit
// passes find the k-th largest key tau and how many of the keys equal to tau are taken, then
// one block scan in index order finds the last index taken among those ties. A feature is then
// selected iff key > tau, or key == tau and its index <= cut; and it is listed iff also
// pre > 0. (tau, cut) per token is all the column-wise compaction needs, so selection costs
// five reads of the row and no sort.
#pragma once

#include "molt_kernels/common.cuh"

namespace molt {
namespace k {

/// Larger float, larger key; -0 and +0 share a key, as they compare equal on the CPU.
__device__ __forceinline__ unsigned topkKey(float v) {
  unsigned u = __float_as_uint(v);
  if (u == 0x80000000u)
    u = 0u;
  return (u & 0x80000000u) ? ~u : (u | 0x80000000u);
}

/// What a token's selection leaves for the compaction: feature f is taken iff
/// topkTaken(pre, f, sel) (and listed iff also pre > 0).
struct TopkCut {
  unsigned tau;
  int cut;
};

__device__ __forceinline__ bool topkTaken(float pre, int f, TopkCut s) {
  const unsigned key = topkKey(pre);
  return key > s.tau || (key == s.tau && f <= s.cut);
}

/// The selection of the K largest keys of row[0..F) (1 <= K <= F), ties to the lower index.
/// Every thread of the block calls it and gets the result. `hist` holds 256 unsigned, `iscratch`
/// >= 32 ints, `bcast` 2 ints, all shared.
template <int TH>
__device__ __forceinline__ TopkCut topkSelect(const float *row, int F, int K, unsigned *hist,
                                              int *iscratch, int *bcast) {
  unsigned prefix = 0, mask = 0;
  int remaining = K; // keys still to take among those that match prefix under mask
  for (int shift = 24; shift >= 0; shift -= 8) {
    for (int i = threadIdx.x; i < 256; i += TH)
      hist[i] = 0;
    __syncthreads();
    for (int f = threadIdx.x; f < F; f += TH) {
      const unsigned key = topkKey(__ldcg(&row[f]));
      if ((key & mask) == prefix)
        atomicAdd(&hist[(key >> shift) & 255u], 1u);
    }
    __syncthreads();
    if (threadIdx.x == 0) { // 256 bins, from the largest digit down
      int above = 0, digit = 255;
      for (; digit > 0; --digit) {
        const int c = int(hist[digit]);
        if (above + c >= remaining)
          break;
        above += c;
      }
      bcast[0] = digit;
      bcast[1] = remaining - above;
    }
    __syncthreads();
    prefix |= unsigned(bcast[0]) << shift;
    mask |= 255u << shift;
    remaining = bcast[1]; // rewritten only after the next pass's two barriers: no third one
  }
  // Among the keys equal to tau (= prefix), the first `remaining` in index order are taken.
  TopkCut s{prefix, F - 1};
  int seen = 0;
  for (int base = 0; base < F; base += TH) {
    const int f = base + int(threadIdx.x);
    const int eq = f < F && topkKey(__ldcg(&row[f])) == prefix;
    int total = 0;
    const int before = seen + blockExclusiveScan<TH>(eq, iscratch, total);
    if (eq && before + 1 == remaining)
      bcast[0] = f;
    seen += total;
    if (seen >= remaining) // block-uniform
      break;
  }
  __syncthreads();
  s.cut = bcast[0];
  __syncthreads();
  return s;
}

} // namespace k
} // namespace molt
