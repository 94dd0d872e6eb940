// The tuning database (docs/tuning.md): the launch configurations molt-tune measured best, keyed
// by device and kernel signature, read by molt-compile (CUDA launches) and the CPU executor.
#pragma once

#include <cstdint>
#include <cstdio>
#include <map>
#include <string>
#include <variant>

#include "molt/plan.h"
#include "molt/status.h"

namespace molt {

/// "op(A=1,B=x)": a specialised kernel's identity (its op and compile-time attrs, which include
/// its bucket's rank R, count N and offset OFF, so the rank schedule is part of the key).
/// Header-only so the compiler's lowering computes the very same key without the runtime.
inline std::string kernelSignature(const KernelDesc &k) {
  std::string key = k.op + "(";
  bool first = true;
  for (const auto &[name, value] : k.attrs) {
    key += (first ? "" : ",") + name + "=";
    first = false;
    if (auto *i = std::get_if<int64_t>(&value)) {
      key += std::to_string(*i);
    } else if (auto *d = std::get_if<double>(&value)) {
      char text[32];
      std::snprintf(text, sizeof text, "%.9g", *d); // as precise as the fp32 kernels use it
      key += text;
    } else {
      key += std::get<std::string>(value);
    }
  }
  return key + ")";
}

/// One tuned kernel: the configuration and the measurements that chose it.
struct TuningEntry {
  LaunchConfig launch; // CUDA: applied by molt-compile --tuning-db
  int threads = 0;     // CPU: OpenMP threads for this kernel (0: the executor's default)
  int64_t batch = 0;   // tokens per step it was timed at
  double heuristicUs = 0, bestUs = 0; // median time per launch, microseconds
};

struct DeviceTuning {
  std::string kind; // "cpu" | "cuda"
  std::string name; // Backend::deviceName()
  std::string arch; // CPU: uname machine (x86_64); CUDA: sm_XY
  std::map<std::string, TuningEntry> kernels; // by kernelSignature()
};

struct TuningDb {
  std::map<std::string, DeviceTuning> devices; // by tuningDeviceKey()
};

/// "kind|arch|name".
std::string tuningDeviceKey(const std::string &kind, const std::string &arch,
                            const std::string &name);
/// The CPU's architecture as uname reports it (x86_64, aarch64).
std::string hostArch();

/// MOLT_TUNING_DB when set ("off" or empty disables), else $XDG_CACHE_HOME/molt/tuning.json,
/// else $HOME/.cache/molt/tuning.json. "" when disabled or there is no home.
std::string defaultTuningDbPath();

/// Reads a database; a missing file is an empty database, a malformed one an error.
StatusOr<TuningDb> loadTuningDb(const std::string &path);
/// Parses database text (format "molt-tuning/1").
StatusOr<TuningDb> parseTuningDb(const std::string &json);
std::string tuningDbToJson(const TuningDb &db);
/// Writes atomically (creates the folder), so an interrupted molt-tune never leaves half a file.
Status saveTuningDb(const TuningDb &db, const std::string &path);

/// The entry for a kernel on a device, or nullptr.
const TuningEntry *findTuning(const TuningDb &db, const std::string &deviceKey,
                              const KernelDesc &kernel);

} // namespace molt
