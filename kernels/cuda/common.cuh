// Device building blocks shared by the kernel families: reductions, scans, SIMT / TF32 tile products, tickets.
#pragma once

#include "molt_kernels/abi.cuh"

namespace molt {
namespace k {

template <class T> __device__ __forceinline__ T *arg(const Args &a, int i) {
  return static_cast<T *>(a.p[i]);
}

__device__ __forceinline__ float warpSum(float v) {
#pragma unroll
  for (int o = 16; o > 0; o >>= 1)
    v += __shfl_xor_sync(0xffffffffu, v, o);
  return v;
}

/// Sum over the block; the result is valid in every thread. `scratch` holds >= 32 floats.
template <int THREADS> __device__ __forceinline__ float blockSum(float v, float *scratch) {
  static_assert(THREADS % 32 == 0, "whole warps");
  constexpr int W = THREADS / 32;
  v = warpSum(v);
  __syncthreads(); // scratch may still be read from a previous call
  if ((threadIdx.x & 31) == 0)
    scratch[threadIdx.x >> 5] = v;
  __syncthreads();
  float r = 0.f;
#pragma unroll
  for (int w = 0; w < W; ++w)
    r += scratch[w];
  return r;
}

/// Exclusive prefix sum of one int per thread over the block; `total` gets the block sum.
/// `scratch` holds >= 32 ints.
template <int THREADS>
__device__ __forceinline__ int blockExclusiveScan(int v, int *scratch, int &total) {
  constexpr int W = THREADS / 32;
  const int lane = threadIdx.x & 31, warp = threadIdx.x >> 5;
  int incl = v;
#pragma unroll
  for (int o = 1; o < 32; o <<= 1) {
    int n = __shfl_up_sync(0xffffffffu, incl, o);
    if (lane >= o)
      incl += n;
  }
  __syncthreads();
  if (lane == 31)
    scratch[warp] = incl;
  __syncthreads();
  int before = 0;
  total = 0;
#pragma unroll
  for (int w = 0; w < W; ++w) {
    int s = scratch[w];
    before += w < warp ? s : 0;
    total += s;
  }
  return before + incl - v;
}

/// Atomically takes the next work item from a zeroed counter, broadcast to the block.
__device__ __forceinline__ unsigned takeTicket(unsigned *counter, unsigned *slot) {
  __syncthreads();
  if (threadIdx.x == 0)
    *slot = atomicAdd(counter, 1u);
  __syncthreads();
  return *slot;
}

/// Spins until *counter >= target. Safe only when every unit of work counted by `counter` has
/// already been taken by a running block (tickets), so no waiter can starve a producer.
__device__ __forceinline__ void waitCount(unsigned *counter, unsigned target) {
  if (threadIdx.x == 0) {
    while (*(volatile unsigned *)counter < target)
      __nanosleep(256);
    __threadfence();
  }
  __syncthreads();
}

/// The gate of encode_gate / tc_encode and their backward, in one place (docs/bundle.md).
/// JumpReLU applies th = max(theta, 0), so g = pre H(pre - th) is never negative whatever theta
/// is learned (theta <= 0 makes it a ReLU); ReLU applies 0. `th` below is always that threshold.
/// TopK reads as ReLU here (open iff pre > 0, as the CPU's backward has it); its listing is the
/// per-token selection of topk.cuh, which encode_gate.cuh applies instead of listed().
template <int GATE> struct GateRule {
  /// The applied threshold of list t (fmaxf also reads a NaN theta as 0, as the CPU backend does).
  __device__ __forceinline__ static float threshold(const float *theta, long long t) {
    return GATE == kGateJumpRelu ? fmaxf(theta[t], 0.f) : 0.f;
  }
  /// Listed: the pair enters the CSR lists (g may still be 0: the near-threshold pairs).
  __device__ __forceinline__ static bool listed(float pre, float th, float bandwidth) {
    return GATE == kGateJumpRelu ? pre > th - 0.5f * bandwidth : pre > 0.f;
  }
  __device__ __forceinline__ static bool open(float pre, float th) { return pre > th; }
  __device__ __forceinline__ static float gate(float pre, float th) {
    return open(pre, th) ? pre : 0.f;
  }
};

template <int IM, int IN> __device__ __forceinline__ void zeroTile(float (&c)[IM][IN]) {
#pragma unroll
  for (int i = 0; i < IM; ++i)
#pragma unroll
    for (int j = 0; j < IN; ++j)
      c[i][j] = 0.f;
}

/// Register-blocked SIMT tile product: C[M][N] += sum_k A[k][m] * B[k][n] with A and B staged
/// k-major in shared memory. Thread (ty, tx) of a 16-wide grid owns rows ty + i*TY and columns
/// tx + j*16, so a warp reads two A words (broadcast) and 16 consecutive B words per k.
template <int M, int N, int THREADS> struct SimtTileAcc {
  static constexpr int TX = 16, TY = THREADS / 16;
  static constexpr int IM = M / TY, IN = N / TX;
  static_assert(THREADS % 16 == 0 && M % TY == 0 && N % TX == 0, "tile must divide the threads");
  float c[IM][IN];
  __device__ __forceinline__ void zero() { zeroTile(c); }
  __device__ __forceinline__ static int row(int i) { return int(threadIdx.x) / TX + i * TY; }
  __device__ __forceinline__ static int col(int j) { return int(threadIdx.x) % TX + j * TX; }

  /// Accumulates K steps; As is [K][LDA] (m fastest), Bs is [K][LDB] (n fastest).
  template <int K, int LDA, int LDB>
  __device__ __forceinline__ void mma(const float *As, const float *Bs) {
#pragma unroll 8
    for (int kk = 0; kk < K; ++kk) {
      float av[IM], bv[IN];
#pragma unroll
      for (int i = 0; i < IM; ++i)
        av[i] = As[kk * LDA + row(i)];
#pragma unroll
      for (int j = 0; j < IN; ++j)
        bv[j] = Bs[kk * LDB + col(j)];
#pragma unroll
      for (int i = 0; i < IM; ++i)
#pragma unroll
        for (int j = 0; j < IN; ++j)
          c[i][j] = fmaf(av[i], bv[j], c[i][j]);
    }
  }
};

__device__ __forceinline__ unsigned toTf32(float v) {
#if defined(MOLT_CUDA_EMU)
  // cvt.rna.tf32.f32: keep 10 mantissa bits, round to nearest with ties away from zero (adding
  // half an ulp to the magnitude carries into the exponent exactly when the hardware's does);
  // NaN stays NaN, which the carry alone could turn into Inf.
  const unsigned u = __float_as_uint(v);
  if ((u & 0x7fffffffu) > 0x7f800000u)
    return 0x7fffffffu & 0xffffe000u;
  return (u + 0x1000u) & 0xffffe000u;
#else
  unsigned r;
  asm("cvt.rna.tf32.f32 %0, %1;" : "=r"(r) : "f"(v));
  return r;
#endif
}

#if defined(MOLT_CUDA_EMU)
/// The arithmetic of every emulated mma.sync m16n8kK: lane (g, t) = (lane / 4, lane % 4) owns
/// D[g][2t], D[g][2t+1], D[g+8][2t], D[g+8][2t+1] (the PTX layout of d0..d3 for k8 and k16
/// alike) and adds Σ_k a(r, k)·b(k, c) to each, in k order, in fp32. a and b read the gathered
/// fragments; only their layouts differ between the shapes.
template <int K, typename FragA, typename FragB>
__device__ __forceinline__ void emuMmaAccumulate(float &d0, float &d1, float &d2, float &d3,
                                                 FragA a, FragB b) {
  const int g = (threadIdx.x & 31) >> 2, t = threadIdx.x & 3;
  float *d[4] = {&d0, &d1, &d2, &d3};
  for (int q = 0; q < 4; ++q) {
    const int r = g + 8 * (q >> 1), c = 2 * t + (q & 1);
    float acc = *d[q];
    for (int k = 0; k < K; ++k)
      acc = fmaf(a(r, k), b(k, c), acc);
    *d[q] = acc;
  }
}

/// mma.sync.aligned.m16n8k8.row.col.f32.tf32.tf32.f32 on the host emulator (kernels/cuda/emu):
/// one warp collective gathers every lane's A and B fragments, then each lane computes its own
/// four D elements. PTX ISA fragment layout, lane = 4g + t: a0 = A[g][t], a1 = A[g+8][t],
/// a2 = A[g][t+4], a3 = A[g+8][t+4]; b0 = B[t][g], b1 = B[t+4][g]; d0, d1 = D[g][2t], D[g][2t+1];
/// d2, d3 = D[g+8][2t], D[g+8][2t+1]. The tensor core reads only the 19 high bits of a tf32
/// operand, so products are exact in fp32; the k-order of the fp32 sum is this emulator's choice.
__device__ __forceinline__ void emuMmaM16N8K8Tf32(float &d0, float &d1, float &d2, float &d3,
                                                  unsigned a0, unsigned a1, unsigned a2,
                                                  unsigned a3, unsigned b0, unsigned b1) {
  const unsigned mine[6] = {a0, a1, a2, a3, b0, b1};
  const auto frag = molt_emu::warpExchange("mma.sync.m16n8k8.tf32", 0xffffffffu, mine, 6);
  auto op = [&](int lane, int reg) { return __uint_as_float(frag[lane][reg] & 0xffffe000u); };
  auto a = [&](int r, int k) { return op((r & 7) * 4 + (k & 3), (r >> 3) + 2 * (k >> 2)); };
  auto b = [&](int k, int n) { return op(n * 4 + (k & 3), 4 + (k >> 2)); };
  emuMmaAccumulate<8>(d0, d1, d2, d3, a, b);
}
#endif

/// The same tile product on the tensor cores (mma.sync m16n8k8 TF32, fp32 accumulate), with the
/// same interface: element (i, j) of c is at row(i), col(j). Warps tile M in 16-row strips and
/// N in 8-column fragments; per the PTX fragment layout, lane (g, t) = (lane / 4, lane % 4) owns
/// rows g and g + 8 and columns 2t, 2t + 1 of each fragment.
template <int M, int N, int THREADS> struct MmaTileAcc {
  static constexpr int WARPS = THREADS / 32;
  static constexpr int WM = M / 16 < WARPS ? M / 16 : WARPS; // warps along M
  static constexpr int WN = WARPS / WM;                       // warps along N
  static constexpr int NT = N / (WN * 8);                     // 8-column fragments per warp
  static constexpr int IM = 2 * (M / (16 * WM)), IN = 2 * NT;
  float c[IM][IN];
  __device__ __forceinline__ void zero() { zeroTile(c); }
  __device__ __forceinline__ static int warp() { return int(threadIdx.x) >> 5; }
  __device__ __forceinline__ static int row(int i) {
    return (warp() / WN) * 16 + (i >> 1) * 16 * WM + ((threadIdx.x & 31) >> 2) + (i & 1) * 8;
  }
  __device__ __forceinline__ static int col(int j) {
    return (warp() % WN) * NT * 8 + (j >> 1) * 8 + 2 * (threadIdx.x & 3) + (j & 1);
  }

  template <int K, int LDA, int LDB>
  __device__ __forceinline__ void mma(const float *As, const float *Bs) {
    static_assert(K % 8 == 0, "K must be a multiple of 8");
    const int g = (threadIdx.x & 31) >> 2, t = threadIdx.x & 3;
#pragma unroll 2
    for (int k0 = 0; k0 < K; k0 += 8) {
#pragma unroll
      for (int mi = 0; mi < IM / 2; ++mi) {
        const int m = (warp() / WN) * 16 + mi * 16 * WM + g;
        const unsigned a0 = toTf32(As[(k0 + t) * LDA + m]), a1 = toTf32(As[(k0 + t) * LDA + m + 8]),
                       a2 = toTf32(As[(k0 + t + 4) * LDA + m]),
                       a3 = toTf32(As[(k0 + t + 4) * LDA + m + 8]);
#pragma unroll
        for (int f = 0; f < NT; ++f) {
          const int n = (warp() % WN) * NT * 8 + f * 8 + g;
          const unsigned b0 = toTf32(Bs[(k0 + t) * LDB + n]), b1 = toTf32(Bs[(k0 + t + 4) * LDB + n]);
#if defined(MOLT_CUDA_EMU)
          emuMmaM16N8K8Tf32(c[2 * mi][2 * f], c[2 * mi][2 * f + 1], c[2 * mi + 1][2 * f],
                            c[2 * mi + 1][2 * f + 1], a0, a1, a2, a3, b0, b1);
#else
          asm volatile("mma.sync.aligned.m16n8k8.row.col.f32.tf32.tf32.f32 "
                       "{%0,%1,%2,%3}, {%4,%5,%6,%7}, {%8,%9}, {%0,%1,%2,%3};"
                       : "+f"(c[2 * mi][2 * f]), "+f"(c[2 * mi][2 * f + 1]),
                         "+f"(c[2 * mi + 1][2 * f]), "+f"(c[2 * mi + 1][2 * f + 1])
                       : "r"(a0), "r"(a1), "r"(a2), "r"(a3), "r"(b0), "r"(b1));
#endif
        }
      }
    }
  }
};

/// True when an M x N tile divides into the 16x8 accumulator fragments of MmaTileAcc's warp
/// tiling (16-row strips over the warps, then 8-column fragments).
template <int M, int N, int THREADS>
constexpr bool kMmaFits =
    M % 16 == 0 && THREADS % 32 == 0 &&
    N % ((THREADS / 32) / (M / 16 < THREADS / 32 ? M / 16 : THREADS / 32) * 8) == 0 &&
    (THREADS / 32) % (M / 16 < THREADS / 32 ? M / 16 : THREADS / 32) == 0;

/// The tile product every kernel uses: TF32 tensor cores when built with MOLT_TF32 (the
/// executor's fast mode; ~1e-3 relative error) and the tile divides into 16x8 fragments,
/// else exact-order fp32 FFMA (the default, checked against the CPU oracle at 2e-4).
/// (tile.cuh's TileAccFor adds the bf16 choice of bf16 plans.)
template <int M, int N, int THREADS>
constexpr bool kUseMma =
#ifdef MOLT_TF32
    kMmaFits<M, N, THREADS>;
#else
    false;
#endif

template <bool MMA, int M, int N, int THREADS> struct TileAccPick {
  using type = SimtTileAcc<M, N, THREADS>;
};
template <int M, int N, int THREADS> struct TileAccPick<true, M, N, THREADS> {
  using type = MmaTileAcc<M, N, THREADS>;
};
template <int M, int N, int THREADS>
using TileAcc = typename TileAccPick<kUseMma<M, N, THREADS>, M, N, THREADS>::type;

/// Stages a [ROWS x K] slab, read row by row from global memory (k contiguous: coalesced), into
/// shared memory transposed as s[k][row] with leading dimension LD (odd LD keeps the transposed
/// stores free of bank conflicts). `f(row, k)` returns the element or 0 past the edge.
template <int ROWS, int K, int LD, int THREADS, class F>
__device__ __forceinline__ void stageRowsT(float *s, F f) {
  for (int idx = threadIdx.x; idx < ROWS * K; idx += THREADS) {
    const int r = idx / K, kk = idx % K;
    s[kk * LD + r] = f(r, kk);
  }
}

/// Stages a [K x COLS] slab whose columns are contiguous in global memory as s[k][col].
template <int K, int COLS, int LD, int THREADS, class F>
__device__ __forceinline__ void stageCols(float *s, F f) {
  for (int idx = threadIdx.x; idx < K * COLS; idx += THREADS) {
    const int kk = idx / COLS, c = idx % COLS;
    s[kk * LD + c] = f(kk, c);
  }
}

/// Adds a ROWS x COLS tile held in registers (any TileAcc) into global memory with 16-byte
/// atomics: the tile goes through shared memory (`stage`, ROWS*COLS floats, free on entry) so
/// each thread then adds four consecutive columns of one row, a quarter of the L2 atomic
/// transactions of scalar adds. rowPtr(r) is the global address of the tile's column 0 in row r,
/// or nullptr to skip the row; columns at or past `cols` are skipped. Ends with a barrier.
template <int ROWS, int COLS, int THREADS, class Acc, class RowPtr>
__device__ __forceinline__ void atomicAddTile(const Acc &acc, float *stage, RowPtr rowPtr, int cols) {
  static_assert(COLS % 4 == 0, "16-byte column groups");
#pragma unroll
  for (int i = 0; i < Acc::IM; ++i)
#pragma unroll
    for (int j = 0; j < Acc::IN; ++j)
      stage[Acc::row(i) * COLS + Acc::col(j)] = acc.c[i][j];
  __syncthreads();
  for (int idx = threadIdx.x; idx < ROWS * COLS / 4; idx += THREADS) {
    const int r = idx / (COLS / 4), c = (idx % (COLS / 4)) * 4;
    float *dst = rowPtr(r);
    if (!dst || c >= cols)
      continue;
    const float *v = stage + r * COLS + c;
#if defined(__CUDA_ARCH__) && __CUDA_ARCH__ >= 900
    if (c + 4 <= cols && (reinterpret_cast<unsigned long long>(dst + c) & 15) == 0) {
      atomicAdd(reinterpret_cast<float4 *>(dst + c), make_float4(v[0], v[1], v[2], v[3]));
      continue;
    }
#endif
    for (int q = 0; q < 4 && c + q < cols; ++q)
      atomicAdd(dst + c + q, v[q]);
  }
  __syncthreads();
}

__device__ __forceinline__ long long cdivll(long long x, long long n) { return (x + n - 1) / n; }

/// True for NaN and +-Inf.
__device__ __forceinline__ bool nonFinite(float v) { return !(fabsf(v) <= 3.402823466e38f); }

} // namespace k
} // namespace molt
