// Hands a fuzz input to loaders that take a path: an in-memory file (memfd) rewritten per input.
#pragma once

#include <sys/mman.h>
#include <unistd.h>

#include <cstdint>
#include <cstdlib>
#include <string>

namespace molt::fuzz {

/// The path of a file holding exactly `data`. One memfd per process, so no disk traffic and
/// nothing left behind; the loaders open and mmap the path as they would a real file.
inline std::string inputFile(const uint8_t *data, size_t size) {
  static int fd = [] {
    int f = memfd_create("molt-fuzz-input", MFD_CLOEXEC);
    if (f < 0)
      std::abort();
    return f;
  }();
  if (ftruncate(fd, 0) != 0 || (size > 0 && pwrite(fd, data, size, 0) != ssize_t(size)))
    std::abort();
  return "/proc/self/fd/" + std::to_string(fd);
}

/// A property the code under test promised and broke: crash so the fuzzer keeps the input.
#define MOLT_FUZZ_CHECK(cond)                                                                 \
  do {                                                                                         \
    if (!(cond))                                                                               \
      __builtin_trap();                                                                        \
  } while (0)

} // namespace molt::fuzz
