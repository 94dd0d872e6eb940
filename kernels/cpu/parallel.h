// OpenMP helpers shared by the CPU kernels: static row splits, per-item loops, reductions whose
// result does not depend on the thread count, and per-thread scratch.
//
// Determinism is a contract (resume must be bit-exact), so no kernel uses float atomics or a
// reduction whose order depends on scheduling: sums go through fixedChunkSum.
#pragma once

#include <algorithm>
#include <cstdint>
#include <vector>

#ifdef _OPENMP
#include <omp.h>
#endif

namespace molt::cpu {

inline int threadCount() {
#ifdef _OPENMP
  return omp_get_max_threads();
#else
  return 1;
#endif
}

inline int threadIndex() {
#ifdef _OPENMP
  return omp_get_thread_num();
#else
  return 0;
#endif
}

/// Below this many multiply-adds a parallel region costs more than it saves.
constexpr int64_t kParallelWork = 1 << 15;

/// The fewest items per thread worth a parallel region when each item costs workPerItem.
inline int64_t grainFor(int64_t workPerItem) {
  return std::max<int64_t>(1, kParallelWork / std::max<int64_t>(1, workPerItem));
}

/// Splits [0, n) into one contiguous range per thread (none shorter than minChunk) and calls
/// fn(lo, hi) for each; the split depends only on n and the thread count.
template <typename Fn> void parallelRanges(int64_t n, int64_t minChunk, Fn &&fn) {
  if (n <= 0)
    return;
  int64_t parts = std::max<int64_t>(1, std::min<int64_t>(threadCount(), n / std::max<int64_t>(1, minChunk)));
  if (parts == 1) {
    fn(int64_t(0), n);
    return;
  }
#pragma omp parallel for schedule(static, 1) num_threads(int(parts))
  for (int64_t p = 0; p < parts; ++p)
    fn(n * p / parts, n * (p + 1) / parts);
}

/// Calls fn(i) for every i in [0, n), load-balanced; fn(i) must write only what item i owns.
/// `work` estimates the total multiply-adds, so tiny calls stay on the calling thread.
template <typename Fn> void parallelItems(int64_t n, int64_t work, Fn &&fn) {
#pragma omp parallel for schedule(dynamic, 1) if (n > 1 && work >= kParallelWork)
  for (int64_t i = 0; i < n; ++i)
    fn(i);
}

/// Σ fn(lo, hi) over fixed chunks of [0, n), added in chunk order: the same bits on any number
/// of threads.
template <typename Fn> double fixedChunkSum(int64_t n, int64_t chunk, Fn &&fn) {
  if (n <= 0)
    return 0.0;
  int64_t chunks = (n + chunk - 1) / chunk;
  std::vector<double> part(size_t(chunks), 0.0);
#pragma omp parallel for schedule(static) if (chunks >= 4)
  for (int64_t c = 0; c < chunks; ++c)
    part[size_t(c)] = fn(c * chunk, std::min(n, (c + 1) * chunk));
  double total = 0.0;
  for (double p : part)
    total += p;
  return total;
}

/// Which per-thread buffer a kernel means; slots tell a kernel's simultaneous uses apart.
/// kAccumulators belongs to the thread that calls a kernel, the others to workers (the caller is
/// also worker 0, hence the separate slot).
enum ScratchSlot { kScratch0, kScratch1, kScratch2, kScratch3, kAccumulators, kScratchSlots };

/// A per-thread buffer of at least n elements, reused across calls.
template <typename S> S *scratch(int slot, size_t n) {
  thread_local std::vector<S> buffers[kScratchSlots];
  std::vector<S> &b = buffers[slot];
  if (b.size() < n)
    b.resize(n);
  return b.data();
}

} // namespace molt::cpu
