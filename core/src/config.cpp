// The environment knobs of molt/config.def: the only getenv in molt's C++ (ctest
// config_read_in_one_place checks).
#include "molt/config.h"

#include <cstdlib>

#ifndef MOLT_KERNEL_HEADER_DIR
#error "MOLT_KERNEL_HEADER_DIR (the source tree's kernels/cuda) is set by core/CMakeLists.txt"
#endif
#ifndef MOLT_EMU_CXX
#define MOLT_EMU_CXX "c++"
#endif

namespace molt::config {
namespace {

Text readText(const char *env, const char *fallback) {
  const char *v = std::getenv(env);
  return v && *v ? v : fallback;
}

Flag readFlag(const char *env, bool fallback) {
  const char *v = std::getenv(env);
  if (!v || !*v)
    return fallback;
  return std::string(v) != "0";
}

Int readInt(const char *env, long fallback) {
  const char *v = std::getenv(env);
  return v && *v ? std::atol(v) : fallback;
}

} // namespace

#define MOLT_CONFIG(id, env, type, fallback, readers, doc)                                         \
  type id() { return read##type(env, fallback); }
#include "molt/config.def"

const std::vector<Knob> &knobs() {
  static const std::vector<Knob> table = {
#define MOLT_CONFIG(id, env, type, fallback, readers, doc) {env, #type, readers, doc},
#include "molt/config.def"
  };
  return table;
}

const char *raw(const char *env) { return std::getenv(env); }

std::string userCacheHome() {
  if (std::string x = xdgCacheHome(); !x.empty())
    return x;
  if (std::string h = home(); !h.empty())
    return h + "/.cache";
  return "";
}

std::string kernelHeaderDir() {
  std::string dir = kernelDir();
  return dir.empty() ? MOLT_KERNEL_HEADER_DIR : dir;
}

std::string kernelCacheDir() {
  if (std::string d = cacheDir(); !d.empty())
    return d;
  std::string base = userCacheHome();
  return base.empty() ? "/tmp/molt-kernels" : base + "/molt/kernels";
}

std::string tuningDbPath() {
  if (std::string db = tuningDb(); !db.empty())
    return db == "off" ? "" : db;
  std::string base = userCacheHome();
  return base.empty() ? "" : base + "/molt/tuning.json";
}

std::string emuCompiler() {
  std::string cxx = emuCxx();
  return cxx.empty() ? MOLT_EMU_CXX : cxx;
}

} // namespace molt::config
