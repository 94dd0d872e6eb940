// The tuning database (molt/tuning.h): JSON form, default location, atomic writes.
#include "molt/tuning.h"

#include "molt/config.h"

#include <cstdlib>
#include <sys/utsname.h>

#include <nlohmann/json.hpp>

#include "molt/io.h"

namespace molt {

namespace {

using ojson = nlohmann::ordered_json;
constexpr const char *kFormat = "molt-tuning/1";

ojson launchToJson(const LaunchConfig &l) {
  return ojson{{"block", {l.block[0], l.block[1], l.block[2]}},
               {"grid", {l.grid[0], l.grid[1], l.grid[2]}},
               {"smem", l.smem},
               {"tile_m", l.tile_m},
               {"tile_n", l.tile_n},
               {"tile_k", l.tile_k},
               {"stages", l.stages},
               {"split", l.split}};
}

// Absent fields keep the heuristic's value: an entry may set only what it tuned.
LaunchConfig launchFromJson(const ojson &j) {
  LaunchConfig l;
  if (j.contains("block"))
    for (size_t i = 0; i < 3 && i < j["block"].size(); ++i)
      l.block[i] = j["block"][i].get<int>();
  if (j.contains("grid"))
    for (size_t i = 0; i < 3 && i < j["grid"].size(); ++i)
      l.grid[i] = j["grid"][i].get<std::string>();
  l.smem = j.value("smem", l.smem);
  l.tile_m = j.value("tile_m", l.tile_m);
  l.tile_n = j.value("tile_n", l.tile_n);
  l.tile_k = j.value("tile_k", l.tile_k);
  l.stages = j.value("stages", l.stages);
  l.split = j.value("split", l.split);
  return l;
}

} // namespace

std::string tuningDeviceKey(const std::string &kind, const std::string &arch,
                            const std::string &name) {
  return kind + "|" + arch + "|" + name;
}

std::string hostArch() {
  struct utsname u;
  return uname(&u) == 0 ? std::string(u.machine) : std::string("unknown");
}

std::string defaultTuningDbPath() { return config::tuningDbPath(); }

StatusOr<TuningDb> parseTuningDb(const std::string &text) {
  TuningDb db;
  try {
    ojson j = ojson::parse(text);
    if (!j.is_object() || j.value("format", "") != kFormat)
      return invalidArgument(std::string("not a tuning database (expected \"format\": \"") +
                             kFormat + "\")");
    for (auto &[key, dev] : j.at("devices").items()) {
      DeviceTuning &d = db.devices[key];
      d.kind = dev.at("kind").get<std::string>();
      d.name = dev.at("name").get<std::string>();
      d.arch = dev.at("arch").get<std::string>();
      for (auto &[sig, e] : dev.at("kernels").items()) {
        TuningEntry &t = d.kernels[sig];
        if (e.contains("launch"))
          t.launch = launchFromJson(e["launch"]);
        t.threads = e.value("threads", 0);
        t.batch = e.value("batch", int64_t(0));
        t.heuristicUs = e.value("heuristic_us", 0.0);
        t.bestUs = e.value("best_us", 0.0);
      }
    }
  } catch (const std::exception &e) {
    return invalidArgument(std::string("malformed tuning database: ") + e.what());
  }
  return db;
}

std::string tuningDbToJson(const TuningDb &db) {
  ojson j{{"format", kFormat}, {"devices", ojson::object()}};
  for (const auto &[key, d] : db.devices) {
    ojson kernels = ojson::object();
    for (const auto &[sig, t] : d.kernels) {
      ojson e{{"batch", t.batch}, {"heuristic_us", t.heuristicUs}, {"best_us", t.bestUs},
              {"speedup", t.bestUs > 0 ? t.heuristicUs / t.bestUs : 1.0}};
      if (d.kind == "cpu")
        e["threads"] = t.threads;
      else
        e["launch"] = launchToJson(t.launch);
      kernels[sig] = e;
    }
    j["devices"][key] = {{"kind", d.kind}, {"name", d.name}, {"arch", d.arch}, {"kernels", kernels}};
  }
  return j.dump(2) + "\n";
}

StatusOr<TuningDb> loadTuningDb(const std::string &path) {
  if (!pathExists(path))
    return TuningDb{};
  auto text = readFile(path);
  if (!text)
    return text.status();
  auto db = parseTuningDb(*text);
  if (!db)
    return db.status().withContext(path);
  return db;
}

Status saveTuningDb(const TuningDb &db, const std::string &path) {
  size_t slash = path.rfind('/');
  if (slash != std::string::npos && slash > 0)
    MOLT_RETURN_IF_ERROR(makeDirs(path.substr(0, slash)));
  return writeFileAtomic(path, tuningDbToJson(db));
}

const TuningEntry *findTuning(const TuningDb &db, const std::string &deviceKey,
                              const KernelDesc &kernel) {
  auto dev = db.devices.find(deviceKey);
  if (dev == db.devices.end())
    return nullptr;
  auto entry = dev->second.kernels.find(kernelSignature(kernel));
  return entry == dev->second.kernels.end() ? nullptr : &entry->second;
}

} // namespace molt
