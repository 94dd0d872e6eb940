// The one staged tile loop (global slabs -> shared memory -> tile product) and its precision choice: fp32, TF32 or bf16 tensor cores.
//
// Every tile kernel (bucket_apply, frob_norm, the transcoder's skip) computes acc = A . B^T
// over a long k axis through tileLoop, and reads its streamed operands through Operand, so the
// wrapper's `Cfg::precision` switches both the tile product (bf16 mma.sync m16n8k16, fp32
// accumulate) and the storage read (the executor's bf16 copies) in one place.
#pragma once

#include "molt_kernels/common.cuh"

namespace molt {
namespace k {

/// Cfg::precision when the wrapper defines it (bf16 plans only), else kPrecisionF32.
template <class C, class = void> struct PrecisionOf {
  static constexpr int value = kPrecisionF32;
};
template <class C> struct PrecisionOf<C, decltype(void(C::precision))> {
  static constexpr int value = int(C::precision);
};

/// An operand in global memory as the kernel's precision stores it: the executor's bf16 copy
/// (Args::lp) under kPrecisionBf16 when there is one, else the fp32 tensor. Under fp32 `h` is a
/// constant null, so the branch folds away.
template <int PREC> struct Operand {
  const float *f;
  const unsigned short *h;
  __device__ __forceinline__ float operator[](long long i) const {
    return PREC == kPrecisionBf16 && h ? bf16ToFloat(h[i]) : f[i];
  }
  __device__ __forceinline__ Operand operator+(long long o) const {
    return {f + o, PREC == kPrecisionBf16 && h ? h + o : nullptr};
  }
};
template <int PREC> __device__ __forceinline__ Operand<PREC> operand(const Args &a, int i) {
  return {static_cast<const float *>(a.p[i]), PREC == kPrecisionBf16 ? a.lp[i] : nullptr};
}

/// Two values as the bf16x2 register of an mma fragment: `lo` in the low half, each rounded to
/// nearest even (one cvt on sm_80+, which puts its first source in the high half).
__device__ __forceinline__ unsigned packBf16x2(float lo, float hi) {
#if defined(MOLT_CUDA_EMU)
  return unsigned(floatToBf16(lo)) | (unsigned(floatToBf16(hi)) << 16);
#else
  unsigned r;
  asm("cvt.rn.bf16x2.f32 %0, %1, %2;" : "=r"(r) : "f"(hi), "f"(lo));
  return r;
#endif
}

/// d += A . B for one warp: mma.sync m16n8k16, bf16 inputs, fp32 accumulate. Per the PTX ISA
/// fragment layout, lane (g, t) = (lane / 4, lane % 4) holds A rows g and g + 8 at k = 2t, 2t+1
/// (a0, a1) and 2t+8, 2t+9 (a2, a3); B column g at k = 2t, 2t+1 (b0) and 2t+8, 2t+9 (b1); and
/// d at rows g, g + 8, columns 2t, 2t+1 (d0 d1 on row g, d2 d3 on row g + 8).
__device__ __forceinline__ void mmaBf16(float &d0, float &d1, float &d2, float &d3, unsigned a0,
                                        unsigned a1, unsigned a2, unsigned a3, unsigned b0,
                                        unsigned b1) {
#if defined(MOLT_CUDA_EMU)
  // One warp collective of the emulator (kernels/cuda/emu) gathers every lane's fragments, as
  // the TF32 product does; each lane then sums the exact bf16 products over k in order in fp32
  // (the hardware's order is unspecified).
  const unsigned mine[6] = {a0, a1, a2, a3, b0, b1};
  const auto frag = molt_emu::warpExchange("mma.sync.m16n8k16.bf16", 0xffffffffu, mine, 6);
  auto half = [&](int lane, int reg, int k) {
    return bf16ToFloat((unsigned short)(frag[lane][reg] >> (16 * (k & 1))));
  };
  auto a = [&](int r, int k) { return half((r & 7) * 4 + ((k & 7) >> 1), (r >> 3) + 2 * (k >> 3), k); };
  auto b = [&](int k, int n) { return half(n * 4 + ((k & 7) >> 1), 4 + (k >> 3), k); };
  emuMmaAccumulate<16>(d0, d1, d2, d3, a, b);
#else
  asm volatile("mma.sync.aligned.m16n8k16.row.col.f32.bf16.bf16.f32 "
               "{%0,%1,%2,%3}, {%4,%5,%6,%7}, {%8,%9}, {%0,%1,%2,%3};"
               : "+f"(d0), "+f"(d1), "+f"(d2), "+f"(d3)
               : "r"(a0), "r"(a1), "r"(a2), "r"(a3), "r"(b0), "r"(b1));
#endif
}

/// The tile product on bf16 tensor cores: MmaTileAcc's warp tiling and fragment ownership
/// (row(i), col(j) are the same, since m16n8k16 and m16n8k8 share the accumulator layout), with
/// k-steps of 16 whose operands are rounded to bf16 (exact for values stored as bf16).
template <int M, int N, int THREADS> struct Bf16MmaTileAcc : MmaTileAcc<M, N, THREADS> {
  using Base = MmaTileAcc<M, N, THREADS>;
  using Base::c;
  using Base::IM;
  using Base::NT;
  using Base::WM;
  using Base::WN;

  template <int K, int LDA, int LDB>
  __device__ __forceinline__ void mma(const float *As, const float *Bs) {
    static_assert(K % 16 == 0, "K must be a multiple of 16");
    const int g = (threadIdx.x & 31) >> 2, t = threadIdx.x & 3, w = Base::warp();
#pragma unroll 2
    for (int k0 = 0; k0 < K; k0 += 16) {
      const float *a0 = As + (k0 + 2 * t) * LDA, *a8 = a0 + 8 * LDA;
      const float *b0 = Bs + (k0 + 2 * t) * LDB, *b8 = b0 + 8 * LDB;
      unsigned bf[NT][2]; // converted once per k-step, used by every row strip
#pragma unroll
      for (int f = 0; f < NT; ++f) {
        const int n = (w % WN) * NT * 8 + f * 8 + g;
        bf[f][0] = packBf16x2(b0[n], b0[LDB + n]);
        bf[f][1] = packBf16x2(b8[n], b8[LDB + n]);
      }
#pragma unroll
      for (int mi = 0; mi < IM / 2; ++mi) {
        const int m = (w / WN) * 16 + mi * 16 * WM + g;
        const unsigned r0 = packBf16x2(a0[m], a0[LDA + m]),
                       r1 = packBf16x2(a0[m + 8], a0[LDA + m + 8]),
                       r2 = packBf16x2(a8[m], a8[LDA + m]),
                       r3 = packBf16x2(a8[m + 8], a8[LDA + m + 8]);
#pragma unroll
        for (int f = 0; f < NT; ++f)
          mmaBf16(c[2 * mi][2 * f], c[2 * mi][2 * f + 1], c[2 * mi + 1][2 * f],
                  c[2 * mi + 1][2 * f + 1], r0, r1, r2, r3, bf[f][0], bf[f][1]);
      }
    }
  }
};

template <bool C, class A, class B> struct Select {
  using type = A;
};
template <class A, class B> struct Select<false, A, B> {
  using type = B;
};

/// The tile product of a kernel compiled for PREC: under bf16, the bf16 tensor cores where the
/// tile divides into 16x8 fragments; else (and for tiles that do not divide) TileAcc, the fp32
/// product (TF32 with MOLT_TF32).
template <int PREC, int M, int N, int THREADS>
using TileAccFor = typename Select<PREC == kPrecisionBf16 && kMmaFits<M, N, THREADS>,
                                   Bf16MmaTileAcc<M, N, THREADS>, TileAcc<M, N, THREADS>>::type;

/// Calls f(r, c, i, j) for every accumulator element acc.c[i][j] this thread owns, at row r and
/// column c of the tile (the epilogue of every tile kernel, whatever the tile product's layout).
template <class Acc, class F> __device__ __forceinline__ void forEachElem(const Acc &acc, F f) {
  (void)acc;
#pragma unroll
  for (int i = 0; i < Acc::IM; ++i)
#pragma unroll
    for (int j = 0; j < Acc::IN; ++j)
      f(Acc::row(i), Acc::col(j), i, j);
}

/// Stages a [ROWS x KT] slab into shared memory as s[k][row] (LD = ROWS + 1). K_FAST says which
/// index is contiguous in global memory, so the thread-to-element map keeps the reads coalesced:
/// k (stageRowsT, transposing) or the row (stageCols).
template <int ROWS, int KT, bool K_FAST, int THREADS, class F>
__device__ __forceinline__ void stageSlab(float *s, F f) {
  if constexpr (K_FAST)
    stageRowsT<ROWS, KT, ROWS + 1, THREADS>(s, f);
  else
    stageCols<KT, ROWS, ROWS + 1, THREADS>(s, [&](int kk, int r) { return f(r, kk); });
}

/// The staged tile loop: acc = sum over k < K of a(m, k) b(n, k), for m < M and n < N. a and b
/// read the operands (returning 0 past an edge); A_KFAST / B_KFAST say whether k is the
/// contiguous index of each in global memory. `as` holds KT*(M+1) floats, `bs` KT*(N+1); both
/// are free on entry and on return (the loop ends with a barrier).
/// K's type (int for a width or a rank, long long for the batch) is the type k has in a and b.
template <int M, int N, int KT, int THREADS, bool A_KFAST, bool B_KFAST, class Acc, class KI,
          class FA, class FB>
__device__ __forceinline__ void tileLoop(Acc &acc, float *as, float *bs, KI K, FA a, FB b) {
  acc.zero();
  for (KI k0 = 0; k0 < K; k0 += KT) {
    stageSlab<M, KT, A_KFAST, THREADS>(as, [&](int m, int kk) { return a(m, k0 + kk); });
    stageSlab<N, KT, B_KFAST, THREADS>(bs, [&](int n, int kk) { return b(n, k0 + kk); });
    __syncthreads();
    acc.template mma<KT, M + 1, N + 1>(as, bs);
    __syncthreads();
  }
}

} // namespace k
} // namespace molt
