// The host SIMT emulator: CUDA's device vocabulary in plain C++, so kernels/cuda/*.cuh run on a CPU.
//
// runtime/src/emu compiles a plan's kernel sources with the host compiler, `-DMOLT_CUDA_EMU
// -include` this header, into one shared object, and calls molt_emu_launch (bottom of this
// file). Model:
//  * Blocks run one after another in blockIdx order (x fastest), so a function-local `static`
//    is exactly one block's shared memory (`__shared__` expands to it). Like the hardware, it is
//    not cleared between blocks.
//  * A block's threads are cooperative fibers on the calling OS thread. A fiber runs until it
//    reaches __syncthreads, a warp collective, __nanosleep or its end; then the next runnable
//    fiber runs, in thread order or as $MOLT_EMU_SCHEDULE says (scheduleOrder). The order is
//    deterministic, and a barrier costs one context switch per thread.
//  * Warp collectives (__shfl*_sync, __ballot_sync, __syncwarp, and PTX emulations such as
//    mma.sync in common.cuh) go through one primitive, molt_emu::warpExchange: every lane of the
//    mask deposits a few words, the last to arrive publishes all of them, each lane reads what
//    its instruction needs. Lanes that disagree on the instruction or the mask are a kernel bug
//    and fail the launch with a message.
//  * Spin-waits must call __nanosleep (common.cuh waitCount does): it yields. Work of earlier
//    blocks is finished, so a ticket-ordered wait is satisfied at once; a wait on a later block
//    (or on a thread that never arrives) is a deadlock, reported instead of hanging.
//  * A memory fault in kernel code fails the launch naming the block and thread (onFault).
//  * Built with -DMOLT_EMU_TRAFFIC (and -fsanitize=thread, whose per-access callbacks this
//    header defines, see "global-memory traffic" below), every load, store and atomic of kernel
//    code that touches global memory is counted in bytes, per launch: molt_emu_traffic.
// Not emulated: dynamic (extern) shared memory, clusters, cooperative launches, memory-model
// weakness (every access is sequentially consistent), and __CUDA_ARCH__ (left undefined, so
// arch-specific paths take their generic branch).
#pragma once

#ifndef MOLT_CUDA_EMU
#error "kernels/cuda/emu/simt.h is the host emulator; compile with -DMOLT_CUDA_EMU"
#endif

#include <math.h>
#include <link.h>
#include <pthread.h>
#include <signal.h>
#include <sys/mman.h>
#if !defined(__x86_64__)
#include <ucontext.h>
#endif

#include <atomic>
#include <cstdarg>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <mutex>
#include <type_traits>

template <class T> using molt_emu_same = std::type_identity_t<T>; // the operand follows the pointer's type

#define __global__ __attribute__((visibility("default")))
#define __device__
#define __host__
#define __forceinline__ inline
#define __noinline__ __attribute__((noinline))
#define __launch_bounds__(...)
#define __shared__ static
#define __restrict__ __restrict

struct uint3 {
  unsigned x, y, z;
};
struct dim3 {
  unsigned x = 1, y = 1, z = 1;
};
struct float4 {
  float x, y, z, w;
};
inline float4 make_float4(float x, float y, float z, float w) { return {x, y, z, w}; }

// One launch at a time per shared object (molt_emu_launch holds a lock), so these are plain
// globals that the scheduler rewrites before resuming each fiber.
inline uint3 threadIdx, blockIdx;
inline dim3 blockDim, gridDim;
constexpr int warpSize = 32;

namespace molt_emu {

constexpr int kMaxThreads = 1024;
constexpr int kMaxWords = 16; // per lane per collective: an mma's A, B and C fragments fit
constexpr size_t kStackBytes = 64 * 1024;
constexpr long kSpinLimit = 1L << 20; // yields with no other progress before a deadlock is called

enum class Wait : unsigned char { Run, Barrier, Warp, Done };

// ---- fiber contexts ----
// On x86-64 a switch saves the callee-saved registers on the old stack and swaps stack pointers
// (a few ns, no system call). The FP control words (MXCSR, x87) are one state shared by all
// fibers, as no kernel changes them. Elsewhere ucontext, whose swapcontext also saves the signal
// mask with a system call per switch.
#if defined(__x86_64__)
extern "C" void molt_emu_switch(void **saveSp, void *loadSp);
asm(R"(
  .text
  .p2align 4
  .hidden molt_emu_switch
  .globl molt_emu_switch
  .type molt_emu_switch, @function
molt_emu_switch:
  pushq %rbp
  pushq %rbx
  pushq %r12
  pushq %r13
  pushq %r14
  pushq %r15
  movq %rsp, (%rdi)
  movq %rsi, %rsp
  popq %r15
  popq %r14
  popq %r13
  popq %r12
  popq %rbx
  popq %rbp
  ret
  .size molt_emu_switch, .-molt_emu_switch
)");

struct Context {
  void *sp = nullptr;
};
inline void switchContext(Context &from, Context &to) { molt_emu_switch(&from.sp, to.sp); }
/// Prepares `c` to start fn() on the stack [lo, lo + bytes): the frame molt_emu_switch pops.
inline void startContext(Context &c, char *lo, size_t bytes, void (*fn)()) {
  auto *top = reinterpret_cast<unsigned long long *>(
      (reinterpret_cast<uintptr_t>(lo + bytes) & ~uintptr_t(15)));
  top[-1] = 0;                                        // fn's return address: it never returns
  top[-2] = reinterpret_cast<unsigned long long>(fn); // where `ret` goes
  for (int r = 3; r <= 8; ++r)
    top[-r] = 0; // rbp rbx r12..r15
  c.sp = &top[-8];
}
#else
struct Context {
  ucontext_t uc;
};
inline void switchContext(Context &from, Context &to) { swapcontext(&from.uc, &to.uc); }
inline void startContext(Context &c, char *lo, size_t bytes, void (*fn)()) {
  getcontext(&c.uc);
  c.uc.uc_stack.ss_sp = lo;
  c.uc.uc_stack.ss_size = bytes;
  c.uc.uc_link = nullptr;
  makecontext(&c.uc, fn, 0);
}
#endif

struct Fiber {
  Context ctx;
  Wait wait = Wait::Run;
  unsigned gen = 0; // generation of the barrier or warp collective awaited
  uint3 idx{};
};

struct Warp {
  unsigned need = 0, arrived = 0, exited = 0, gen = 0;
  const char *what = nullptr; // the collective in progress, for divergence messages
  unsigned mask = 0;
  unsigned took = 0; // the lanes whose deposits `out` holds (they may exit before others read)
  int words = 0;     // deposited per lane in the collective in progress
  unsigned in[32][kMaxWords];
  unsigned out[32][kMaxWords]; // published when the last lane arrives
};

struct Block {
  Fiber fibers[kMaxThreads];
  Warp warps[kMaxThreads / 32];
  Context sched;
  int n = 0, live = 0, current = 0;
  unsigned barArrived = 0, barGen = 0;
  long spins = 0;
  bool failed = false;
  bool inFiber = false; // kernel code is running: a fault is the kernel's
  pthread_t thread{};    // the launching thread, the only one whose faults are the kernel's
  char message[512] = {0};
  void (*entry)(const void *) = nullptr;
  const void *args = nullptr;
  char *stacks = nullptr;
  size_t stackSlots = 0;
  int order[kMaxThreads]; // the order in which runnable fibers are resumed
};

inline Block *gBlock = nullptr;

// ---- global-memory traffic (MOLT_EMU_TRAFFIC) ----
// The module is compiled with -fsanitize=thread, so the compiler calls __tsan_readN / writeN
// before every memory access of every function in it; this header defines those callbacks (no
// ThreadSanitizer runtime is linked). An access by kernel code counts as global memory unless it
// lies on a fiber stack (registers and local memory), in the module's own image (__shared__
// statics, the emulator's globals), in the Block or on the launching thread's stack (Args):
// what is left is the executor's device memory. Atomics are counted where the CUDA intrinsic is
// (countAtomic), once per intrinsic, and the tsan atomic callbacks only perform the operation.
// Loads are counted three ways: every byte requested; distinct per block (a block's re-reads
// of a 2-byte unit count once: L1 or registers would hold them, other blocks' reads of it count
// again: what reaches L2); distinct per launch (each unit once: HBM with an L2 that holds
// everything, the floor no cache can lower).
struct Traffic {
  unsigned long long load = 0, loadBlock = 0, loadLaunch = 0, store = 0, atomic = 0; // bytes
};
#if defined(MOLT_EMU_TRAFFIC)
#define MOLT_EMU_UNCOUNTED __attribute__((no_sanitize_thread, used))
struct Range {
  uintptr_t lo = 0, hi = 0;
};
inline Traffic gTraffic;
inline Range gLocal[4];
inline uintptr_t gWatchLo = 0, gWatchHi = 0; // a word range whose writes are counted per word
inline unsigned *gWatchCounts = nullptr;

MOLT_EMU_UNCOUNTED inline bool isGlobal(const void *p) {
  const Block *b = gBlock;
  if (!b || !b->inFiber)
    return false;
  const uintptr_t a = reinterpret_cast<uintptr_t>(p);
  for (const Range &r : gLocal)
    if (a - r.lo < r.hi - r.lo)
      return false;
  return true;
}
// The 2-byte units loaded in this launch, each with the last block that loaded it (open
// addressing, key = unit + 1, 0 empty; cleared per launch).
struct Seen {
  uintptr_t key;
  unsigned block;
};
inline Seen *gSeen = nullptr;
inline size_t gSeenCap = 0, gSeenCount = 0;
inline unsigned gBlockSerial = 0; // linear block index + 1 of the running block

MOLT_EMU_UNCOUNTED inline size_t seenSlot(const Seen *table, size_t cap, uintptr_t key) {
  size_t h = size_t(key * 0x9e3779b97f4a7c15ull) & (cap - 1);
  while (table[h].key != 0 && table[h].key != key)
    h = (h + 1) & (cap - 1);
  return h;
}
MOLT_EMU_UNCOUNTED inline void seenGrow() {
  const size_t cap = gSeenCap ? 2 * gSeenCap : size_t(1) << 16;
  Seen *t = static_cast<Seen *>(std::calloc(cap, sizeof(Seen)));
  for (size_t i = 0; i < gSeenCap; ++i)
    if (gSeen[i].key)
      t[seenSlot(t, cap, gSeen[i].key)] = gSeen[i];
  std::free(gSeen);
  gSeen = t;
  gSeenCap = cap;
}
MOLT_EMU_UNCOUNTED inline void seenClear() {
  if (gSeen)
    std::memset(gSeen, 0, gSeenCap * sizeof(Seen));
  gSeenCount = 0;
}
MOLT_EMU_UNCOUNTED inline void countLoad(const void *p, unsigned n) {
  if (!isGlobal(p))
    return;
  gTraffic.load += n;
  const uintptr_t a = reinterpret_cast<uintptr_t>(p);
  for (uintptr_t u = a >> 1; u <= (a + (n ? n : 1) - 1) >> 1; ++u) {
    if (2 * (gSeenCount + 1) > gSeenCap)
      seenGrow();
    Seen &e = gSeen[seenSlot(gSeen, gSeenCap, u + 1)];
    if (e.key == 0) {
      e = {u + 1, gBlockSerial};
      ++gSeenCount;
      gTraffic.loadLaunch += 2;
      gTraffic.loadBlock += 2;
    } else if (e.block != gBlockSerial) {
      e.block = gBlockSerial;
      gTraffic.loadBlock += 2;
    }
  }
}
MOLT_EMU_UNCOUNTED inline void countWrite(const void *p, unsigned n, unsigned long long &bytes) {
  if (!isGlobal(p))
    return;
  bytes += n;
  const uintptr_t a = reinterpret_cast<uintptr_t>(p);
  if (a - gWatchLo < gWatchHi - gWatchLo)
    ++gWatchCounts[(a - gWatchLo) / 4];
}
MOLT_EMU_UNCOUNTED inline void countStore(const void *p, unsigned n) { countWrite(p, n, gTraffic.store); }
MOLT_EMU_UNCOUNTED inline void countAtomic(const void *p, unsigned n) { countWrite(p, n, gTraffic.atomic); }

/// The ranges that are not global memory, for one launch.
MOLT_EMU_UNCOUNTED inline void setLocalRanges(const Block &b, size_t slotBytes) {
  gLocal[0] = {reinterpret_cast<uintptr_t>(b.stacks), reinterpret_cast<uintptr_t>(b.stacks + b.stackSlots * slotBytes)};
  gLocal[1] = {reinterpret_cast<uintptr_t>(&b), reinterpret_cast<uintptr_t>(&b + 1)};
  pthread_attr_t attr;
  void *lo = nullptr;
  size_t size = 0;
  if (pthread_getattr_np(pthread_self(), &attr) == 0) {
    pthread_attr_getstack(&attr, &lo, &size);
    pthread_attr_destroy(&attr);
  }
  gLocal[2] = {reinterpret_cast<uintptr_t>(lo), reinterpret_cast<uintptr_t>(lo) + size};
  static Range image = [] { // every PT_LOAD segment of this shared object, as one span
    Range r{~uintptr_t(0), 0};
    dl_iterate_phdr(
        [](dl_phdr_info *info, size_t, void *data) {
          Range &r = *static_cast<Range *>(data);
          const uintptr_t self = reinterpret_cast<uintptr_t>(&gTraffic);
          Range span{~uintptr_t(0), 0};
          for (int i = 0; i < info->dlpi_phnum; ++i)
            if (info->dlpi_phdr[i].p_type == PT_LOAD) {
              const uintptr_t lo = info->dlpi_addr + info->dlpi_phdr[i].p_vaddr;
              span.lo = lo < span.lo ? lo : span.lo;
              const uintptr_t hi = lo + info->dlpi_phdr[i].p_memsz;
              span.hi = hi > span.hi ? hi : span.hi;
            }
          if (self - span.lo < span.hi - span.lo) {
            r = span;
            return 1;
          }
          return 0;
        },
        &r);
    return r;
  }();
  gLocal[3] = image;
}
#else
inline void countAtomic(const void *, unsigned) {}
#endif

inline int linearTid() {
  return int(threadIdx.x + blockDim.x * (threadIdx.y + blockDim.y * threadIdx.z));
}

/// Stops the launch: records the first message and never resumes the calling fiber.
[[noreturn]] inline void fail(const char *fmt, ...) __attribute__((format(printf, 1, 2)));
inline void fail(const char *fmt, ...) {
  Block &b = *gBlock;
  if (!b.failed) {
    b.failed = true;
    int at = std::snprintf(b.message, sizeof b.message, "block (%u,%u,%u) thread (%u,%u,%u): ",
                           blockIdx.x, blockIdx.y, blockIdx.z, threadIdx.x, threadIdx.y, threadIdx.z);
    va_list ap;
    va_start(ap, fmt);
    std::vsnprintf(b.message + at, sizeof b.message - size_t(at), fmt, ap);
    va_end(ap);
  }
  Fiber &f = b.fibers[b.current];
  f.wait = Wait::Done;
  switchContext(f.ctx, b.sched);
  __builtin_unreachable();
}

/// Back to the scheduler until this fiber is runnable again.
inline void yield() {
  Block &b = *gBlock;
  Fiber &f = b.fibers[b.current];
  switchContext(f.ctx, b.sched);
  f.wait = Wait::Run;
}

inline void progress() { gBlock->spins = 0; }

inline void releaseWarpIfComplete(Warp &w) {
  if (!w.what || (w.arrived & w.need) != (w.need & ~w.exited))
    return;
  for (int l = 0; l < 32; ++l)
    if (w.arrived >> l & 1u)
      std::memcpy(w.out[l], w.in[l], sizeof(unsigned) * size_t(w.words));
  w.took = w.arrived;
  w.arrived = 0;
  w.what = nullptr;
  ++w.gen;
  progress();
}

/// The warp collective every intrinsic is built on: deposits `n` words for this lane and
/// returns all lanes' deposits once every live lane of `mask` has arrived. The rows stay valid
/// until this lane enters its next collective (no lane can publish again before it arrives).
inline const unsigned (*warpExchange(const char *what, unsigned mask, const unsigned *words,
                                     int n))[kMaxWords] {
  Block &b = *gBlock;
  const int tid = linearTid(), lane = tid & 31;
  Warp &w = b.warps[tid >> 5];
  if (n < 0 || n > kMaxWords)
    fail("%s deposits %d words; a warp collective holds at most %d", what, n, kMaxWords);
  if (!(mask >> lane & 1u))
    fail("%s with mask 0x%08x excludes the calling lane %d", what, mask, lane);
  if (w.what && ((w.what != what && std::strcmp(w.what, what) != 0) || w.mask != mask))
    fail("warp divergence: lane %d called %s(mask 0x%08x) while lanes 0x%08x wait in %s(mask 0x%08x)",
         lane, what, mask, w.arrived, w.what, w.mask);
  if (!w.what) {
    w.what = what;
    w.mask = mask;
    w.need = mask;
    w.words = n;
  }
  std::memcpy(w.in[lane], words, sizeof(unsigned) * size_t(n));
  w.arrived |= 1u << lane;
  Fiber &f = b.fibers[b.current];
  const unsigned gen = w.gen;
  releaseWarpIfComplete(w);
  if (w.gen == gen) {
    f.wait = Wait::Warp;
    f.gen = gen;
    yield();
  }
  return w.out;
}

/// The lanes that took part in this lane's last collective.
inline unsigned tookPart() { return gBlock->warps[linearTid() >> 5].took; }

/// Checks that lane `src` took part in this lane's last collective.
inline void requireLane(const char *what, unsigned mask, int src) {
  if (!(tookPart() >> src & 1u))
    fail("%s reads lane %d, which is not in mask 0x%08x or has exited", what, src, mask);
}

template <class T> inline T shuffleFrom(const char *what, unsigned mask, T v, int srcOf(int, int, int),
                                        int arg, int width) {
  static_assert(sizeof(T) <= 8 && std::is_trivially_copyable_v<T>, "shuffle of a 4- or 8-byte value");
  if (width <= 0 || width > 32 || (width & (width - 1)))
    fail("%s width %d is not a power of two <= 32", what, width);
  unsigned words[2] = {0, 0};
  std::memcpy(words, &v, sizeof(T));
  auto rows = warpExchange(what, mask, words, 2);
  const int lane = linearTid() & 31, src = srcOf(lane, arg, width);
  requireLane(what, mask, src);
  T r;
  std::memcpy(&r, rows[src], sizeof(T));
  return r;
}

inline int srcIdx(int lane, int src, int width) { return (lane & ~(width - 1)) + (src & (width - 1)); }
inline int srcUp(int lane, int delta, int width) {
  return (lane & (width - 1)) >= delta ? lane - delta : lane;
}
inline int srcDown(int lane, int delta, int width) {
  return (lane & (width - 1)) + delta < width ? lane + delta : lane;
}
inline int srcXor(int lane, int m, int width) {
  const int s = lane ^ m;
  return s >= (lane / width + 1) * width ? lane : s;
}

template <class T> inline std::atomic_ref<T> ref(T *p) { return std::atomic_ref<T>(*p); }

} // namespace molt_emu

// ---- barriers and fences ----

inline void __syncthreads() {
  using namespace molt_emu;
  Block &b = *gBlock;
  Fiber &f = b.fibers[b.current];
  progress();
  if (int(++b.barArrived) == b.live) {
    b.barArrived = 0;
    ++b.barGen;
    return;
  }
  f.wait = Wait::Barrier;
  f.gen = b.barGen;
  yield();
}
inline void __syncwarp(unsigned mask = 0xffffffffu) {
  molt_emu::warpExchange("__syncwarp", mask, nullptr, 0);
}
inline void __threadfence() { std::atomic_thread_fence(std::memory_order_seq_cst); }
inline void __threadfence_block() { std::atomic_thread_fence(std::memory_order_seq_cst); }
/// A spin-wait's pause: lets the block's other threads run (see the deadlock note above).
inline void __nanosleep(unsigned) {
  using namespace molt_emu;
  if (++gBlock->spins > kSpinLimit)
    fail("spin-wait made no progress in %ld yields: it waits on a later block or on a thread "
         "that never arrives (blocks run one at a time, in blockIdx order)",
         kSpinLimit);
  yield();
}

// ---- warp intrinsics ----

template <class T> inline T __shfl_sync(unsigned mask, T v, int src, int width = 32) {
  return molt_emu::shuffleFrom("__shfl_sync", mask, v, molt_emu::srcIdx, src, width);
}
template <class T> inline T __shfl_up_sync(unsigned mask, T v, unsigned delta, int width = 32) {
  return molt_emu::shuffleFrom("__shfl_up_sync", mask, v, molt_emu::srcUp, int(delta), width);
}
template <class T> inline T __shfl_down_sync(unsigned mask, T v, unsigned delta, int width = 32) {
  return molt_emu::shuffleFrom("__shfl_down_sync", mask, v, molt_emu::srcDown, int(delta), width);
}
template <class T> inline T __shfl_xor_sync(unsigned mask, T v, int laneMask, int width = 32) {
  return molt_emu::shuffleFrom("__shfl_xor_sync", mask, v, molt_emu::srcXor, laneMask, width);
}
inline unsigned __ballot_sync(unsigned mask, int pred) {
  const unsigned word = pred ? 1u : 0u;
  auto rows = molt_emu::warpExchange("__ballot_sync", mask, &word, 1);
  unsigned r = 0;
  for (int l = 0; l < 32; ++l)
    if (molt_emu::tookPart() >> l & 1u)
      r |= (rows[l][0] & 1u) << l;
  return r;
}
inline int __any_sync(unsigned mask, int pred) { return __ballot_sync(mask, pred) != 0; }
inline int __all_sync(unsigned mask, int pred) {
  const unsigned votes = __ballot_sync(mask, pred);
  return votes == molt_emu::tookPart();
}

// ---- bit and conversion intrinsics ----

inline int __ffs(int x) { return __builtin_ffs(x); }
inline int __ffsll(long long x) { return __builtin_ffsll(x); }
inline int __popc(unsigned x) { return __builtin_popcount(x); }
inline int __popcll(unsigned long long x) { return __builtin_popcountll(x); }
inline int __clz(int x) { return x ? __builtin_clz(unsigned(x)) : 32; }
inline unsigned __brev(unsigned x) {
  unsigned r = 0;
  for (int i = 0; i < 32; ++i)
    r |= (x >> i & 1u) << (31 - i);
  return r;
}
inline unsigned __float_as_uint(float v) {
  unsigned u;
  std::memcpy(&u, &v, 4);
  return u;
}
inline float __uint_as_float(unsigned u) {
  float v;
  std::memcpy(&v, &u, 4);
  return v;
}
inline int __float_as_int(float v) { return int(__float_as_uint(v)); }
inline float __int_as_float(int u) { return __uint_as_float(unsigned(u)); }
inline float rsqrtf(float v) { return 1.f / sqrtf(v); }
inline float __expf(float v) { return expf(v); }
inline float __logf(float v) { return logf(v); }
inline float __fdividef(float a, float b) { return a / b; }
inline float __saturatef(float v) { return v < 0.f ? 0.f : v > 1.f ? 1.f : v; }

namespace molt_emu {
/// CUDA's overloaded device min/max: the common type, fminf/fmaxf semantics for floating point.
template <bool MAX, class A, class B> inline std::common_type_t<A, B> pick(A a, B b) {
  using C = std::common_type_t<A, B>;
  if constexpr (std::is_floating_point_v<C>)
    return MAX ? fmax(C(a), C(b)) : fmin(C(a), C(b));
  else
    return (C(a) < C(b)) == MAX ? C(b) : C(a);
}
} // namespace molt_emu
template <class A, class B> inline auto min(A a, B b) { return molt_emu::pick<false>(a, b); }
template <class A, class B> inline auto max(A a, B b) { return molt_emu::pick<true>(a, b); }

// ---- loads with cache hints: plain loads here ----

template <class T> inline T __ldg(const T *p) { return *p; }
template <class T> inline T __ldcg(const T *p) { return *p; }
template <class T> inline T __ldca(const T *p) { return *p; }
template <class T> inline T __ldcs(const T *p) { return *p; }
template <class T> inline T __ldlu(const T *p) { return *p; }

// ---- atomics (std::atomic_ref, so a future multi-threaded launcher stays correct) ----

namespace molt_emu {
/// The atomic view of *p, counted as one atomic of its size (MOLT_EMU_TRAFFIC).
template <class T> inline std::atomic_ref<T> countedRef(T *p) {
  countAtomic(p, sizeof(T));
  return ref(p);
}
} // namespace molt_emu
template <class T> inline T atomicAdd(T *p, molt_emu_same<T> v) { return molt_emu::countedRef(p).fetch_add(v); }
template <class T> inline T atomicSub(T *p, molt_emu_same<T> v) { return molt_emu::countedRef(p).fetch_sub(v); }
template <class T> inline T atomicExch(T *p, molt_emu_same<T> v) { return molt_emu::countedRef(p).exchange(v); }
template <class T> inline T atomicAnd(T *p, molt_emu_same<T> v) { return molt_emu::countedRef(p).fetch_and(v); }
template <class T> inline T atomicOr(T *p, molt_emu_same<T> v) { return molt_emu::countedRef(p).fetch_or(v); }
template <class T> inline T atomicXor(T *p, molt_emu_same<T> v) { return molt_emu::countedRef(p).fetch_xor(v); }
template <class T> inline T atomicCAS(T *p, molt_emu_same<T> expected, molt_emu_same<T> desired) {
  molt_emu::countedRef(p).compare_exchange_strong(expected, desired);
  return expected;
}
template <class T> inline T atomicMax(T *p, molt_emu_same<T> v) {
  auto r = molt_emu::countedRef(p);
  T old = r.load();
  while (old < v && !r.compare_exchange_weak(old, v)) {
  }
  return old;
}
template <class T> inline T atomicMin(T *p, molt_emu_same<T> v) {
  auto r = molt_emu::countedRef(p);
  T old = r.load();
  while (v < old && !r.compare_exchange_weak(old, v)) {
  }
  return old;
}
/// sm_90's vector atomic; each lane of the float4 is its own atomic, as on the hardware.
inline float4 atomicAdd(float4 *p, float4 v) {
  float *f = reinterpret_cast<float *>(p);
  return {atomicAdd(f, v.x), atomicAdd(f + 1, v.y), atomicAdd(f + 2, v.z), atomicAdd(f + 3, v.w)};
}

// ---- the launcher ----

namespace molt_emu {

inline void fiberMain() {
  Block &b = *gBlock;
  b.entry(b.args);
  Fiber &f = b.fibers[b.current];
  f.wait = Wait::Done;
  --b.live;
  progress();
  Warp &w = b.warps[linearTid() >> 5];
  w.exited |= 1u << (linearTid() & 31);
  releaseWarpIfComplete(w);
  // Exited threads count as arrived at the block barrier, as on the hardware.
  if (b.live > 0 && int(b.barArrived) == b.live) {
    b.barArrived = 0;
    ++b.barGen;
  }
  switchContext(f.ctx, b.sched);
}

/// A memory or arithmetic fault in kernel code (the GPU's "illegal address") fails the launch,
/// naming the thread and the address, instead of killing the process: the handler runs on an
/// alternate stack (a fiber's own may have overflowed) and leaves through fail(), which switches
/// to the scheduler. Faults outside kernel code, or on another thread, get the previous
/// handler's treatment. The handler is process-wide: with launches on several threads at once,
/// a fault may not be attributed (it then kills the process, as it would without the emulator).
inline struct sigaction gPrevious[3];
constexpr int kFaultSignals[3] = {SIGSEGV, SIGBUS, SIGFPE};

inline void onFault(int sig, siginfo_t *info, void *) {
  Block *b = gBlock;
  if (!b || !b->inFiber || !pthread_equal(b->thread, pthread_self())) {
    for (int i = 0; i < 3; ++i)
      if (kFaultSignals[i] == sig)
        sigaction(sig, &gPrevious[i], nullptr);
    return; // the instruction faults again, now under the previous handler
  }
  const char *addr = static_cast<const char *>(info->si_addr);
  const size_t slot = kStackBytes + 4096;
  if (sig == SIGSEGV && addr >= b->stacks && addr < b->stacks + b->stackSlots * slot &&
      size_t(addr - b->stacks) % slot < 4096)
    fail("stack overflow: a fiber has %zu KiB of stack (kStackBytes in simt.h)", kStackBytes / 1024);
  fail("%s at address %p", sig == SIGFPE ? "arithmetic fault" : "invalid memory access", info->si_addr);
}

/// Installs onFault and an alternate signal stack for one launch; restores both after.
struct FaultGuard {
  stack_t oldStack{};
  FaultGuard() {
    static thread_local char *alt = static_cast<char *>(
        mmap(nullptr, 1 << 16, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0));
    stack_t st{};
    st.ss_sp = alt;
    st.ss_size = 1 << 16;
    sigaltstack(&st, &oldStack);
    struct sigaction sa {};
    sa.sa_sigaction = onFault;
    sa.sa_flags = SA_SIGINFO | SA_ONSTACK | SA_NODEFER; // never returns: leave the signal unblocked
    sigemptyset(&sa.sa_mask);
    for (int i = 0; i < 3; ++i)
      sigaction(kFaultSignals[i], &sa, &gPrevious[i]);
  }
  ~FaultGuard() {
    for (int i = 0; i < 3; ++i)
      sigaction(kFaultSignals[i], &gPrevious[i], nullptr);
    sigaltstack(&oldStack, nullptr);
  }
};

/// $MOLT_EMU_SCHEDULE: the order in which each block's runnable threads resume, `forward`
/// (default), `reverse` or `random:SEED` (a permutation per block, reproducible). A kernel that
/// reads another thread's shared or global writes without a barrier in between gets the value
/// only in some orders, so running a test under `reverse` and a few seeds exposes such races.
inline bool scheduleOrder(Block &b, unsigned linearBlock, char *err, unsigned long errBytes) {
  const char *env = std::getenv("MOLT_EMU_SCHEDULE");
  const bool reverse = env && !std::strcmp(env, "reverse");
  unsigned long long seed = 0;
  const bool random = env && std::sscanf(env, "random:%llu", &seed) == 1;
  if (env && *env && !reverse && !random && std::strcmp(env, "forward") != 0) {
    std::snprintf(err, errBytes, "MOLT_EMU_SCHEDULE=%s: expected forward, reverse or random:SEED", env);
    return false;
  }
  for (int i = 0; i < b.n; ++i)
    b.order[i] = reverse ? b.n - 1 - i : i;
  if (random) { // Fisher-Yates over splitmix64 of (seed, block)
    unsigned long long x = seed * 0x9e3779b97f4a7c15ull + linearBlock;
    for (int i = b.n - 1; i > 0; --i) {
      x += 0x9e3779b97f4a7c15ull;
      unsigned long long z = (x ^ (x >> 30)) * 0xbf58476d1ce4e5b9ull;
      z = (z ^ (z >> 27)) * 0x94d049bb133111ebull;
      const int j = int((z ^ (z >> 31)) % unsigned(i + 1));
      const int tmp = b.order[i];
      b.order[i] = b.order[j];
      b.order[j] = tmp;
    }
  }
  return true;
}

inline bool runnable(const Block &b, const Fiber &f) {
  switch (f.wait) {
  case Wait::Run:
    return true;
  case Wait::Barrier:
    return b.barGen != f.gen;
  case Wait::Warp:
    return b.warps[(&f - b.fibers) >> 5].gen != f.gen;
  default:
    return false;
  }
}

/// Runs one block to completion; false (with b.message) on a kernel error or a deadlock.
inline bool runBlock(Block &b) {
  b.live = b.n;
  b.barArrived = 0;
  b.spins = 0;
  for (int i = 0; i < (b.n + 31) / 32; ++i) { // the deposits need no clearing
    Warp &w = b.warps[i];
    w.need = w.arrived = w.exited = w.took = w.mask = 0;
    w.what = nullptr;
  }
  for (int t = 0; t < b.n; ++t) {
    Fiber &f = b.fibers[t];
    f.wait = Wait::Run;
    f.idx = {unsigned(t) % blockDim.x, unsigned(t) / blockDim.x % blockDim.y,
             unsigned(t) / (blockDim.x * blockDim.y)};
    // Each stack sits above its own guard page.
    startContext(f.ctx, b.stacks + size_t(t) * (kStackBytes + 4096) + 4096, kStackBytes, fiberMain);
  }
  // Fibers past the block's size form a partial last warp: they never arrive, so need no lane.
  for (int t = b.n; t < (b.n + 31) / 32 * 32; ++t)
    b.warps[t >> 5].exited |= 1u << (t & 31);
  while (b.live > 0) {
    bool ran = false;
    for (int i = 0; i < b.n && !b.failed; ++i) {
      const int t = b.order[i];
      Fiber &f = b.fibers[t];
      if (!runnable(b, f))
        continue;
      ran = true;
      b.current = t;
      threadIdx = f.idx;
      b.inFiber = true;
      switchContext(b.sched, f.ctx);
      b.inFiber = false;
    }
    if (b.failed)
      return false;
    if (!ran) {
      int atBarrier = 0, inWarp = 0;
      for (int t = 0; t < b.n; ++t)
        atBarrier += b.fibers[t].wait == Wait::Barrier, inWarp += b.fibers[t].wait == Wait::Warp;
      std::snprintf(b.message, sizeof b.message,
                    "block (%u,%u,%u): deadlock: %d thread(s) wait at __syncthreads, %d in warp "
                    "collectives, %d exited",
                    blockIdx.x, blockIdx.y, blockIdx.z, atBarrier, inWarp, b.n - b.live);
      return false;
    }
  }
  return true;
}

} // namespace molt_emu

/// Runs entry(args) over grid x block; 0 on success, else -1 with a message in `err`.
extern "C" __attribute__((visibility("default"))) int
molt_emu_launch(void (*entry)(const void *), const void *args, const unsigned grid[3],
                const unsigned block[3], char *err, unsigned long errBytes) {
  using namespace molt_emu;
  static std::mutex mu;
  std::lock_guard<std::mutex> lock(mu);
  const unsigned long long threads = 1ull * block[0] * block[1] * block[2];
  if (threads == 0 || threads > kMaxThreads || grid[0] * grid[1] * grid[2] == 0) {
    std::snprintf(err, errBytes, "launch of %llu threads per block over a %ux%ux%u grid", threads,
                  grid[0], grid[1], grid[2]);
    return -1;
  }
  static Block *blk = new Block; // ~1.4 MB: off the caller's stack, kept between launches
  Block &b = *blk;
  if (b.stackSlots < threads) {
    if (b.stacks)
      munmap(b.stacks, b.stackSlots * (kStackBytes + 4096));
    void *m = mmap(nullptr, threads * (kStackBytes + 4096), PROT_READ | PROT_WRITE,
                   MAP_PRIVATE | MAP_ANONYMOUS | MAP_NORESERVE, -1, 0);
    if (m == MAP_FAILED) {
      b.stacks = nullptr;
      b.stackSlots = 0;
      std::snprintf(err, errBytes, "cannot map %llu fiber stacks", threads);
      return -1;
    }
    b.stacks = static_cast<char *>(m);
    b.stackSlots = threads;
    for (unsigned long long t = 0; t < threads; ++t) // a stack overflow faults, never corrupts
      mprotect(b.stacks + t * (kStackBytes + 4096), 4096, PROT_NONE);
  }
  b.n = int(threads);
  b.entry = entry;
  b.args = args;
  b.failed = false;
  b.message[0] = 0;
  b.thread = pthread_self();
  gBlock = &b;
#if defined(MOLT_EMU_TRAFFIC)
  gTraffic = {};
  seenClear();
  setLocalRanges(b, kStackBytes + 4096);
#endif
  FaultGuard guard;
  blockDim = {block[0], block[1], block[2]};
  gridDim = {grid[0], grid[1], grid[2]};
  for (unsigned z = 0; z < grid[2]; ++z)
    for (unsigned y = 0; y < grid[1]; ++y)
      for (unsigned x = 0; x < grid[0]; ++x) {
        blockIdx = {x, y, z};
#if defined(MOLT_EMU_TRAFFIC)
        gBlockSerial = 1 + x + grid[0] * (y + grid[1] * z);
#endif
        if (!scheduleOrder(b, x + grid[0] * (y + grid[1] * z), err, errBytes)) {
          gBlock = nullptr;
          return -1;
        }
        if (!runBlock(b)) {
          std::snprintf(err, errBytes, "%s", b.message);
          gBlock = nullptr;
          return -1;
        }
      }
  gBlock = nullptr;
  return 0;
}


/// The global-memory bytes of the last launch: {loaded, loaded distinct per block, loaded
/// distinct per launch, stored, atomically updated}; all zero in a module built without
/// MOLT_EMU_TRAFFIC (returns 0 then, 1 when counting).
extern "C" __attribute__((visibility("default"))) int molt_emu_traffic(unsigned long long out[5]) {
#if defined(MOLT_EMU_TRAFFIC)
  const molt_emu::Traffic &t = molt_emu::gTraffic;
  out[0] = t.load, out[1] = t.loadBlock, out[2] = t.loadLaunch, out[3] = t.store, out[4] = t.atomic;
  return 1;
#else
  for (int i = 0; i < 5; ++i)
    out[i] = 0;
  return 0;
#endif
}

/// Counts, per 4-byte word of [lo, lo + bytes), the stores and atomics of later launches into
/// counts[] (bytes / 4 entries, owned by the caller); bytes 0 stops watching.
extern "C" __attribute__((visibility("default"))) void molt_emu_watch_writes(void *lo, unsigned long bytes,
                                                                              unsigned *counts) {
#if defined(MOLT_EMU_TRAFFIC)
  molt_emu::gWatchLo = reinterpret_cast<uintptr_t>(lo);
  molt_emu::gWatchHi = molt_emu::gWatchLo + (counts ? bytes : 0);
  molt_emu::gWatchCounts = counts;
#else
  (void)lo, (void)bytes, (void)counts;
#endif
}

#if defined(MOLT_EMU_TRAFFIC)
// The ThreadSanitizer instrumentation's callbacks (the names and signatures of GCC's and Clang's
// -fsanitize=thread ABI): plain accesses are counted, atomics performed (counted by the
// intrinsics above), function entry and exit ignored.
extern "C" {
#define MOLT_EMU_TSAN_ACCESS(n)                                                                    \
  MOLT_EMU_UNCOUNTED void __tsan_read##n(void *p) { molt_emu::countLoad(p, n); }                   \
  MOLT_EMU_UNCOUNTED void __tsan_write##n(void *p) { molt_emu::countStore(p, n); }                 \
  MOLT_EMU_UNCOUNTED void __tsan_unaligned_read##n(void *p) { molt_emu::countLoad(p, n); }         \
  MOLT_EMU_UNCOUNTED void __tsan_unaligned_write##n(void *p) { molt_emu::countStore(p, n); }       \
  MOLT_EMU_UNCOUNTED void __tsan_volatile_read##n(void *p) { molt_emu::countLoad(p, n); }          \
  MOLT_EMU_UNCOUNTED void __tsan_volatile_write##n(void *p) { molt_emu::countStore(p, n); }
MOLT_EMU_TSAN_ACCESS(1)
MOLT_EMU_TSAN_ACCESS(2)
MOLT_EMU_TSAN_ACCESS(4)
MOLT_EMU_TSAN_ACCESS(8)
MOLT_EMU_TSAN_ACCESS(16)
MOLT_EMU_UNCOUNTED void __tsan_read_range(void *p, unsigned long n) { molt_emu::countLoad(p, unsigned(n)); }
MOLT_EMU_UNCOUNTED void __tsan_write_range(void *p, unsigned long n) { molt_emu::countStore(p, unsigned(n)); }
MOLT_EMU_UNCOUNTED void __tsan_init() {}
MOLT_EMU_UNCOUNTED void __tsan_func_entry(void *) {}
MOLT_EMU_UNCOUNTED void __tsan_func_exit() {}
MOLT_EMU_UNCOUNTED void __tsan_vptr_update(void **, void *) {}
MOLT_EMU_UNCOUNTED void __tsan_vptr_read(void **) {}
MOLT_EMU_UNCOUNTED void __tsan_atomic_thread_fence(int) { __atomic_thread_fence(__ATOMIC_SEQ_CST); }
MOLT_EMU_UNCOUNTED void __tsan_atomic_signal_fence(int) { __atomic_signal_fence(__ATOMIC_SEQ_CST); }
#define MOLT_EMU_TSAN_RMW(n, T, name)                                                              \
  MOLT_EMU_UNCOUNTED T __tsan_atomic##n##_##name(volatile T *a, T v, int) {                        \
    return __atomic_##name(a, v, __ATOMIC_SEQ_CST);                                                \
  }
#define MOLT_EMU_TSAN_ATOMIC(n, T)                                                                 \
  MOLT_EMU_UNCOUNTED T __tsan_atomic##n##_load(const volatile T *a, int) {                         \
    return __atomic_load_n(a, __ATOMIC_SEQ_CST);                                                   \
  }                                                                                                \
  MOLT_EMU_UNCOUNTED void __tsan_atomic##n##_store(volatile T *a, T v, int) {                      \
    __atomic_store_n(a, v, __ATOMIC_SEQ_CST);                                                      \
  }                                                                                                \
  MOLT_EMU_UNCOUNTED T __tsan_atomic##n##_exchange(volatile T *a, T v, int) {                      \
    return __atomic_exchange_n(a, v, __ATOMIC_SEQ_CST);                                            \
  }                                                                                                \
  MOLT_EMU_TSAN_RMW(n, T, fetch_add)                                                               \
  MOLT_EMU_TSAN_RMW(n, T, fetch_sub)                                                               \
  MOLT_EMU_TSAN_RMW(n, T, fetch_and)                                                               \
  MOLT_EMU_TSAN_RMW(n, T, fetch_or)                                                                \
  MOLT_EMU_TSAN_RMW(n, T, fetch_xor)                                                               \
  MOLT_EMU_TSAN_RMW(n, T, fetch_nand)                                                              \
  MOLT_EMU_UNCOUNTED int __tsan_atomic##n##_compare_exchange_strong(volatile T *a, T *c, T v, int, \
                                                                    int) {                         \
    return __atomic_compare_exchange_n(a, c, v, false, __ATOMIC_SEQ_CST, __ATOMIC_SEQ_CST);        \
  }                                                                                                \
  MOLT_EMU_UNCOUNTED int __tsan_atomic##n##_compare_exchange_weak(volatile T *a, T *c, T v, int,   \
                                                                  int) {                           \
    return __atomic_compare_exchange_n(a, c, v, true, __ATOMIC_SEQ_CST, __ATOMIC_SEQ_CST);         \
  }                                                                                                \
  MOLT_EMU_UNCOUNTED T __tsan_atomic##n##_compare_exchange_val(volatile T *a, T c, T v, int, int) { \
    __atomic_compare_exchange_n(a, &c, v, false, __ATOMIC_SEQ_CST, __ATOMIC_SEQ_CST);              \
    return c;                                                                                      \
  }
MOLT_EMU_TSAN_ATOMIC(8, unsigned char)
MOLT_EMU_TSAN_ATOMIC(16, unsigned short)
MOLT_EMU_TSAN_ATOMIC(32, unsigned)
MOLT_EMU_TSAN_ATOMIC(64, unsigned long long)
} // extern "C"
#endif
