// compileCached: NVRTC behind an on-disk cache keyed by everything that changes the image.
//
// Entry file <dir>/<key>.bin = one header line "molt-kernel-cache 1 <key> <kind> <arch> <size>
// <checksum>\n" then the image. Written to a unique temp name and renamed into place, so readers
// in other processes see either nothing or a whole entry; the checksum catches anything else.
#include <sys/stat.h>
#include <unistd.h>

#include <atomic>
#include <cinttypes>
#include <cstdio>
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <set>
#include <sstream>
#include <thread>

#include "molt/cuda_api.h"
#include "kernels/cuda/abi.cuh"
#include "molt/config.h"
#include "molt/cuda_wrapper.h"
#include "molt/cuda.h"

namespace molt::cuda {

namespace fs = std::filesystem;

namespace {

uint64_t fnv1a(const std::string &s, uint64_t h = 1469598103934665603ull) {
  for (unsigned char c : s) {
    h ^= c;
    h *= 1099511628211ull;
  }
  return h;
}

std::string hex64(uint64_t v) {
  char buf[17];
  std::snprintf(buf, sizeof buf, "%016" PRIx64, v);
  return buf;
}

bool readFile(const fs::path &p, std::string &out) {
  std::ifstream in(p, std::ios::binary);
  if (!in)
    return false;
  std::ostringstream ss;
  ss << in.rdbuf();
  out = ss.str();
  return true;
}

/// Appends every quoted #include reachable from `text` (name and contents) to `material`, so a
/// header edit changes the key. System includes (<...>) are NVRTC built-ins and versioned by it.
void collectIncludes(const std::string &text, const fs::path &fromDir,
                     const std::vector<std::string> &includeDirs,
                     const std::map<std::string, std::string> &headers, std::set<std::string> &seen,
                     std::string &material) {
  std::istringstream lines(text);
  std::string line;
  while (std::getline(lines, line)) {
    size_t i = line.find_first_not_of(" \t");
    if (i == std::string::npos || line[i] != '#')
      continue;
    i = line.find_first_not_of(" \t", i + 1);
    if (i == std::string::npos || line.compare(i, 7, "include") != 0)
      continue;
    const size_t q0 = line.find('"', i + 7), q1 = q0 == std::string::npos ? q0 : line.find('"', q0 + 1);
    if (q1 == std::string::npos)
      continue;
    const std::string name = line.substr(q0 + 1, q1 - q0 - 1);
    std::string body;
    fs::path where;
    if (auto it = headers.find(name); it != headers.end()) {
      body = it->second;
    } else {
      std::vector<fs::path> candidates = {fromDir / name};
      for (const std::string &d : includeDirs)
        candidates.push_back(fs::path(d) / name);
      bool found = false;
      for (const fs::path &c : candidates)
        if (readFile(c, body)) {
          where = c.parent_path();
          found = true;
          break;
        }
      if (!found)
        body = "<unresolved>"; // NVRTC will report it; the key still differs from a resolved one
    }
    if (!seen.insert(name).second)
      continue;
    material += "\n#file " + name + "\n" + body;
    collectIncludes(body, where.empty() ? fromDir : where, includeDirs, headers, seen, material);
  }
}

struct Target {
  std::string arch; // sm_XY[a] or compute_XY[a]
  bool cubin;
};

/// The requested arch when this NVRTC can build a cubin for it, else PTX for the newest arch
/// it supports that is not newer than the device (the driver JIT-compiles PTX forward).
StatusOr<Target> chooseTarget(const NvrtcApi &api, const std::string &arch) {
  if (arch.rfind("sm_", 0) != 0)
    return Target{arch, false};
  const int want = std::atoi(arch.c_str() + 3);
  int n = 0;
  if (api.nvrtcGetNumSupportedArchs(&n) != NVRTC_SUCCESS || n <= 0)
    return Target{arch, true};
  std::vector<int> archs(n);
  api.nvrtcGetSupportedArchs(archs.data());
  int best = 0;
  for (int a : archs) {
    if (a == want)
      return Target{arch, true};
    if (a < want && a > best)
      best = a;
  }
  if (best == 0)
    return invalidArgument("NVRTC supports no architecture at or below " + arch);
  return Target{"compute_" + std::to_string(best), false};
}

bool readEntry(const fs::path &p, const std::string &key, CompiledImage &out) {
  std::string data;
  if (!readFile(p, data))
    return false;
  const size_t nl = data.find('\n');
  if (nl == std::string::npos)
    return false;
  std::istringstream head(data.substr(0, nl));
  std::string magic, version, k, kind, arch, sum;
  size_t size = 0;
  if (!(head >> magic >> version >> k >> kind >> arch >> size >> sum))
    return false;
  if (magic != "molt-kernel-cache" || version != "1" || k != key || data.size() - nl - 1 != size ||
      (kind != "cubin" && kind != "ptx"))
    return false;
  std::string image = data.substr(nl + 1);
  if (hex64(fnv1a(image)) != sum)
    return false;
  out.image = std::move(image);
  out.cubin = kind == "cubin";
  out.arch = arch;
  out.cacheHit = true;
  return true;
}

void writeEntry(const fs::path &dir, const fs::path &p, const std::string &key, const CompiledImage &c) {
  std::error_code ec;
  fs::create_directories(dir, ec);
  static std::atomic<unsigned> counter{0};
  const fs::path tmp = dir / (key + ".tmp." + std::to_string(getpid()) + "." +
                              std::to_string(counter.fetch_add(1)));
  {
    std::ofstream out(tmp, std::ios::binary | std::ios::trunc);
    if (!out)
      return; // a read-only cache is only slower
    out << "molt-kernel-cache 1 " << key << ' ' << (c.cubin ? "cubin" : "ptx") << ' ' << c.arch
        << ' ' << c.image.size() << ' ' << hex64(fnv1a(c.image)) << '\n';
    out.write(c.image.data(), std::streamsize(c.image.size()));
    if (!out.flush()) {
      out.close();
      fs::remove(tmp, ec);
      return;
    }
  }
  fs::rename(tmp, p, ec);
  if (ec)
    fs::remove(tmp, ec);
}

} // namespace

std::string defaultCacheDir() { return config::kernelCacheDir(); }

StatusOr<CompiledImage> compileCached(const std::string &source, const std::string &name,
                                      const std::vector<std::string> &includeDirs,
                                      const std::string &arch,
                                      const std::map<std::string, std::string> &headers,
                                      const std::string &cacheDir) {
  auto apiOr = nvrtcApi();
  if (!apiOr)
    return apiOr.status();
  auto version = nvrtcVersion();
  if (!version)
    return version.status();
  auto target = chooseTarget(**apiOr, arch);
  if (!target)
    return target.status();

  std::string material = "nvrtc " + *version + "\ntarget " + target->arch +
                         (target->cubin ? " cubin" : " ptx") + "\noptions";
  for (const std::string &o : nvrtcOptions(target->arch, {}))
    material += " " + o;
  material += "\n#file " + name + "\n" + source;
  std::set<std::string> seen;
  collectIncludes(source, fs::current_path(), includeDirs, headers, seen, material);
  const std::string key = hex64(fnv1a(material)) + hex64(fnv1a(material, 0x9e3779b97f4a7c15ull));

  const fs::path dir = cacheDir.empty() ? defaultCacheDir() : cacheDir;
  const fs::path entry = dir / (key + ".bin");
  CompiledImage hit;
  // The key fixes the kind and arch; a header that names others is damaged (the checksum
  // covers only the image).
  if (readEntry(entry, key, hit) && hit.cubin == target->cubin && hit.arch == target->arch)
    return hit;

  auto image = compileSource(source, name, includeDirs, target->arch, target->cubin, headers);
  if (!image)
    return image.status();
  CompiledImage c;
  c.image = std::move(*image);
  c.cubin = target->cubin;
  c.arch = target->arch;
  writeEntry(dir, entry, key, c);
  return c;
}

StatusOr<std::map<std::string, std::string>> loadKernelHeaders(const std::string &dir) {
  std::map<std::string, std::string> headers;
  std::error_code ec;
  for (const auto &e : fs::directory_iterator(dir, ec)) {
    if (e.path().extension() != ".cuh")
      continue;
    std::string text;
    if (!readFile(e.path(), text))
      return ioError("cannot read " + e.path().string());
    headers["molt_kernels/" + e.path().filename().string()] = std::move(text);
  }
  if (ec)
    return notFound("kernel header folder " + dir + ": " + ec.message());
  if (headers.empty())
    return notFound("no .cuh headers in " + dir);
  return headers;
}

StatusOr<KernelIncludes> bundleIncludes(const std::string &bundleDir) {
  KernelIncludes inc;
  struct stat st;
  if (!bundleDir.empty() && stat((bundleDir + "/molt_kernels").c_str(), &st) == 0) {
    inc.dirs.push_back(bundleDir);
    return inc;
  }
  auto h = loadKernelHeaders(config::kernelHeaderDir());
  if (!h)
    return h.status().withContext("CUDA kernel headers");
  inc.headers = std::move(*h);
  return inc;
}

bool hasKernelSource(const KernelDesc &kernel, const std::string &bundleDir) {
  std::error_code ec;
  return !kernel.source.empty() && fs::is_regular_file(fs::path(bundleDir) / kernel.source, ec);
}

LaunchConfig effectiveLaunch(const KernelDesc &kernel, const std::string &bundleDir) {
  return hasKernelSource(kernel, bundleDir) ? kernel.launch : cudaDefaultLaunch(kernel);
}

// Appended to every kernel's source: a bundle carries its own molt_kernels/abi.cuh, and one
// compiled by an older molt may lay out Args differently from this runtime, which would launch
// the kernels on misread pointers. The compile fails instead, naming the cause.
std::string abiGuard() {
  return "\nstatic_assert(sizeof(::molt::k::Args) == " + std::to_string(sizeof(k::Args)) +
         " && sizeof(::molt::k::ParamEntry) == " + std::to_string(sizeof(k::ParamEntry)) +
         ", \"these kernels were built against another molt_kernels/abi.cuh than this runtime's: "
         "recompile the bundle with this molt\");\n";
}

StatusOr<std::vector<std::string>> kernelSources(const Plan &plan, const std::string &bundleDir) {
  std::vector<std::string> sources;
  for (const KernelDesc &k : plan.kernels) {
    std::string text;
    if (hasKernelSource(k, bundleDir)) {
      if (!readFile(fs::path(bundleDir) / k.source, text))
        return ioError("cannot read " + (fs::path(bundleDir) / k.source).string());
      sources.push_back(text + abiGuard());
      continue;
    }
    KernelDesc withLaunch = k;
    withLaunch.launch = cudaDefaultLaunch(k);
    auto generated = cudaWrapperSource(withLaunch, plan.precision);
    if (!generated)
      return generated.status();
    sources.push_back(*generated + abiGuard());
  }
  return sources;
}

StatusOr<std::vector<CompiledImage>> compilePlan(const Plan &plan, const std::string &bundleDir,
                                                 const std::string &arch, const std::string &cacheDir) {
  auto inc = bundleIncludes(bundleDir);
  if (!inc)
    return inc.status();
  auto sources = kernelSources(plan, bundleDir);
  if (!sources)
    return sources.status();
  const size_t n = sources->size();
  std::vector<StatusOr<CompiledImage>> images(n, StatusOr<CompiledImage>(internalError("not compiled")));
  const unsigned workers = std::max(1u, std::min<unsigned>(unsigned(n), std::thread::hardware_concurrency()));
  std::atomic<size_t> next{0};
  std::vector<std::thread> pool;
  for (unsigned w = 0; w < workers; ++w)
    pool.emplace_back([&] {
      for (size_t i; (i = next.fetch_add(1)) < n;)
        images[i] = compileCached((*sources)[i], plan.kernels[i].name + ".cu", inc->dirs, arch,
                                  inc->headers, cacheDir);
    });
  for (std::thread &t : pool)
    t.join();
  std::vector<CompiledImage> out;
  for (size_t i = 0; i < n; ++i) {
    if (!images[i])
      return images[i].status().withContext("kernel '" + plan.kernels[i].name + "'");
    out.push_back(std::move(*images[i]));
  }
  return out;
}

} // namespace molt::cuda
