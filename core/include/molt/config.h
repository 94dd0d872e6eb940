// molt's environment knobs: one accessor per row of molt/config.def (docs/config.md is the
// table), plus the rules built from several knobs. core/src/config.cpp is the only C++ that
// calls getenv. A knob is read when its accessor is called, not cached: tests and Python set
// the environment between calls.
#pragma once

#include <string>
#include <vector>

namespace molt::config {

using Text = std::string;
using Flag = bool;
using Int = long;

#define MOLT_CONFIG(id, env, type, fallback, readers, doc) type id();
#include "molt/config.def"

/// One row of the table, for tools and tests that list the knobs.
struct Knob {
  const char *env;
  const char *type;
  const char *readers;
  const char *doc;
};
const std::vector<Knob> &knobs();

/// The variable's text exactly as set (nullptr when unset), for a test that saves and restores
/// one; molt itself reads through the typed accessors.
const char *raw(const char *env);

// Rules built from several knobs.

/// $XDG_CACHE_HOME, else $HOME/.cache, else "" (no user cache).
std::string userCacheHome();
/// The device headers: $MOLT_KERNEL_DIR, else the kernels/cuda this molt was built from.
std::string kernelHeaderDir();
/// The NVRTC kernel cache: $MOLT_CACHE_DIR, else <user cache>/molt/kernels, else /tmp/molt-kernels.
std::string kernelCacheDir();
/// The tuning database: $MOLT_TUNING_DB ("" for `off`), else <user cache>/molt/tuning.json,
/// else "" (none).
std::string tuningDbPath();
/// The emulator's C++ compiler: $MOLT_EMU_CXX, else the compiler molt was built with.
std::string emuCompiler();

} // namespace molt::config
