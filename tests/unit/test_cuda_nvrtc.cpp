// NVRTC compiles every CUDA kernel family (sm_80, sm_90a) and the disk cache behaves; no GPU needed.
#include <gtest/gtest.h>

#include <cctype>
#include <cstdio>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <random>
#include <set>
#include <thread>

#include <unistd.h>

#include "molt/cuda_wrapper.h"
#include "molt/cuda.h"
#include "molt/ops.h"

#ifdef MOLT_HAVE_CUDA

namespace molt {
namespace {

namespace fs = std::filesystem;

KernelDesc kernel(const std::string &op, std::map<std::string, AttrValue> attrs) {
  KernelDesc k;
  k.name = op;
  k.op = op;
  k.entry = "molt_" + op;
  k.attrs = std::move(attrs);
  k.launch = cudaDefaultLaunch(k);
  return k;
}

/// One kernel of every op at the reference shapes (d = 768, T = 496: the ref:16 schedule).
std::vector<KernelDesc> referenceKernels() {
  const AttrValue D = int64_t(768), T = int64_t(496), F = int64_t(4096);
  const AttrValue jump = std::string("jumprelu"), relu = std::string("relu"), bw = 0.05;
  auto bucket = [&](const std::string &op, int64_t r, int64_t n, int64_t off) {
    return kernel(op, {{"D", D}, {"R", r}, {"N", n}, {"OFF", off}});
  };
  return {
      kernel("encode_gate", {{"D", D}, {"T", T}, {"gate", jump}, {"bandwidth", bw}}),
      kernel("encode_gate", {{"D", D}, {"T", T}, {"gate", relu}}),
      bucket("frob_norm", 512, 16, 0),
      bucket("frob_norm_bwd", 32, 256, 240),
      bucket("bucket_apply", 512, 16, 0),
      bucket("bucket_apply", 32, 256, 240),
      bucket("bucket_apply_bwd", 512, 16, 0),
      bucket("bucket_apply_bwd", 32, 256, 240),
      kernel("add_bias", {{"D", D}}),
      kernel("mse_loss", {{"D", D}}),
      kernel("bias_grad", {{"D", D}}),
      kernel("penalty", {{"T", T}, {"kind", std::string("tanh")}, {"c", 1.0}}),
      kernel("penalty", {{"T", T}, {"kind", std::string("l1")}}),
      kernel("gate_bwd", {{"D", D}, {"T", T}, {"gate", jump}, {"bandwidth", bw}}),
      kernel("grad_norm", {}),
      kernel("adam", {}),
      kernel("tc_encode", {{"D", D}, {"F", F}, {"gate", relu}}),
      kernel("tc_decode", {{"D", D}, {"F", F}}),
      kernel("skip_apply", {{"D", D}}),
      kernel("tc_penalty", {{"F", F}, {"kind", std::string("tanh")}, {"c", 1.0}}),
      kernel("tc_decode_bwd", {{"D", D}, {"F", F}}),
      kernel("skip_bwd", {{"D", D}}),
      kernel("tc_encode_bwd", {{"D", D}, {"F", F}, {"gate", jump}, {"bandwidth", bw}}),
      kernel("tc_encode", {{"D", D}, {"F", F}, {"gate", std::string("topk")}, {"k", int64_t(32)}}),
      kernel("tc_encode_bwd", {{"D", D}, {"F", F}, {"gate", std::string("topk")}}),
      kernel("encode_tangent", {{"D", D}, {"T", T}}),
      kernel("tc_encode_tangent", {{"D", D}, {"F", F}}),
  };
}

class NvrtcTest : public ::testing::Test {
protected:
  void SetUp() override {
    auto v = cuda::nvrtcVersion();
    if (!v)
      GTEST_SKIP() << v.status().message();
    auto h = cuda::loadKernelHeaders(MOLT_SOURCE_DIR "/kernels/cuda");
    ASSERT_TRUE(h.isOk()) << h.status().message();
    headers_ = *h;
  }
  StatusOr<std::string> build(const KernelDesc &k, const std::string &arch, bool cubin = true) {
    auto src = cudaWrapperSource(k);
    if (!src)
      return src.status();
    return cuda::compileSource(*src, k.name + ".cu", {}, arch, cubin, headers_);
  }
  std::map<std::string, std::string> headers_;
};

bool isElf(const std::string &image) { return image.size() > 4 && image.compare(0, 4, "\x7f" "ELF") == 0; }

TEST_F(NvrtcTest, EveryOpHasATemplateAndAHeaderInTheBundleList) {
  for (const OpSignature &s : opSignatures()) {
    const std::string header = cudaKernelHeader(s.op);
    ASSERT_FALSE(header.empty()) << s.op;
    const auto &files = cudaKernelHeaderFiles();
    EXPECT_NE(std::find(files.begin(), files.end(), header), files.end()) << header;
    EXPECT_TRUE(headers_.count("molt_kernels/" + header)) << header;
  }
  for (const std::string &f : cudaKernelHeaderFiles())
    EXPECT_TRUE(headers_.count("molt_kernels/" + f)) << f << " is listed but not in kernels/cuda";
}

TEST_F(NvrtcTest, EveryReferenceKernelCompilesToCubinForSm80AndSm90a) {
  for (const KernelDesc &k : referenceKernels())
    for (const char *arch : {"sm_80", "sm_90a"}) {
      auto image = build(k, arch);
      ASSERT_TRUE(image.isOk()) << k.op << " " << arch << ": " << image.status().message();
      EXPECT_TRUE(isElf(*image)) << k.op << " " << arch;
    }
}

// The committed fixtures carry only manifests: their kernels compile from the one emitter, as
// the CUDA executor does it.
TEST_F(NvrtcTest, EveryFixtureKernelCompiles) {
  int compiled = 0;
  for (const auto &e : fs::directory_iterator(MOLT_SOURCE_DIR "/tests/fixtures")) {
    if (!fs::exists(e.path() / "manifest.json"))
      continue;
    auto plan = loadPlan(e.path().string());
    ASSERT_TRUE(plan.isOk()) << plan.status().message();
    auto images = cuda::compilePlan(*plan, e.path().string(), "sm_90",
                                    (fs::path(MOLT_BINARY_DIR) / "fixture-kernel-cache").string());
    ASSERT_TRUE(images.isOk()) << e.path() << ": " << images.status().message();
    compiled += int(images->size());
  }
  EXPECT_GT(compiled, 30);
}

// A bundle brings its own molt_kernels/abi.cuh. One whose Args layout differs from the
// runtime's (a bundle compiled by an older molt) must fail to compile, naming the cause, rather
// than launch kernels that misread every pointer; the unchanged copy is the control.
TEST_F(NvrtcTest, ABundleBuiltAgainstAnotherAbiIsRefused) {
  auto plan = loadPlan(MOLT_SOURCE_DIR "/tests/fixtures/tiny-molt");
  ASSERT_TRUE(plan.isOk()) << plan.status().message();
  plan->kernels.resize(1); // one NVRTC compile per case is enough
  const fs::path dir = fs::path(::testing::TempDir()) / "abi-guard";
  for (bool changed : {false, true}) {
    fs::remove_all(dir);
    fs::create_directories(dir / "molt_kernels");
    for (const auto &[name, text] : headers_) {
      std::string body = text;
      if (changed && name == "molt_kernels/abi.cuh") {
        const size_t at = body.find("struct Args {");
        ASSERT_NE(at, std::string::npos);
        body.insert(at + std::strlen("struct Args {"), "\n  long long fieldOfAnotherVersion;");
      }
      std::ofstream(dir / name) << body;
    }
    auto images = cuda::compilePlan(*plan, dir.string(), "sm_80", (dir / "cache").string());
    if (!changed) {
      EXPECT_TRUE(images.isOk()) << images.status().message();
      continue;
    }
    ASSERT_FALSE(images.isOk());
    EXPECT_NE(images.status().message().find("built against another molt_kernels/abi.cuh"),
              std::string::npos)
        << images.status().message();
  }
}

TEST_F(NvrtcTest, RandomisedSchedulesCompileIncludingRaggedShapes) {
  std::mt19937 rng(7);
  for (int i = 0; i < 4; ++i) {
    const int64_t d = std::uniform_int_distribution<int64_t>(3, 300)(rng);
    const int64_t r = std::uniform_int_distribution<int64_t>(1, 200)(rng);
    const int64_t n = std::uniform_int_distribution<int64_t>(1, 40)(rng);
    const int64_t off = std::uniform_int_distribution<int64_t>(0, 100)(rng);
    for (const char *op : {"bucket_apply", "bucket_apply_bwd", "frob_norm", "frob_norm_bwd"}) {
      auto image = build(kernel(op, {{"D", d}, {"R", r}, {"N", n}, {"OFF", off}}), "sm_80");
      ASSERT_TRUE(image.isOk()) << op << " d=" << d << " r=" << r << ": " << image.status().message();
    }
  }
}

TEST_F(NvrtcTest, WrapperIsSpecialisedAndRejectsWhatItCannotMap) {
  KernelDesc k = kernel("bucket_apply", {{"D", int64_t(768)}, {"R", int64_t(32)}, {"N", int64_t(256)},
                                         {"OFF", int64_t(240)}});
  k.entry = "molt_apply_r32";
  auto src = cudaWrapperSource(k);
  ASSERT_TRUE(src.isOk());
  EXPECT_NE(src->find("#include \"molt_kernels/bucket_apply.cuh\""), std::string::npos);
  EXPECT_NE(src->find("static constexpr long long R = 32LL;"), std::string::npos);
  EXPECT_NE(src->find("static constexpr long long OFF = 240LL;"), std::string::npos);
  EXPECT_NE(src->find("extern \"C\" __global__ void __launch_bounds__(256) molt_apply_r32("),
            std::string::npos);
  EXPECT_NE(src->find("molt::k::bucket_apply<Cfg>(a);"), std::string::npos);

  KernelDesc bad = kernel("no_such_op", {});
  EXPECT_FALSE(cudaWrapperSource(bad).isOk());
  KernelDesc badGate = kernel("encode_gate", {{"D", int64_t(8)}, {"T", int64_t(4)},
                                              {"gate", std::string("sigmoid")}});
  EXPECT_FALSE(cudaWrapperSource(badGate).isOk());
  KernelDesc badEntry = k;
  badEntry.entry = "1bad name";
  EXPECT_FALSE(cudaWrapperSource(badEntry).isOk());
}

TEST_F(NvrtcTest, CompileErrorsCarryTheLog) {
  auto r = cuda::compileSource("__global__ void f() { undeclared_thing(); }", "broken.cu", {}, "sm_80",
                               true);
  ASSERT_FALSE(r.isOk());
  EXPECT_NE(r.status().message().find("undeclared_thing"), std::string::npos) << r.status().message();
  EXPECT_FALSE(cuda::compileSource("", "x.cu", {}, "gfx90a", true).isOk());
}

TEST_F(NvrtcTest, PtxTargetsTheVirtualArchitecture) {
  auto ptx = build(kernel("add_bias", {{"D", int64_t(64)}}), "sm_90", false);
  ASSERT_TRUE(ptx.isOk()) << ptx.status().message();
  EXPECT_NE(ptx->find(".target sm_90"), std::string::npos);
  EXPECT_NE(ptx->find("molt_add_bias"), std::string::npos);
}

// ---- ptxas and PTX gates (sm_90a) ----

/// What ptxas -v reports for the one kernel of a PTX text.
struct PtxasInfo {
  long registers = -1, smem = 0, stack = 0, spillStores = 0, spillLoads = 0;
};

long numberBefore(const std::string &log, const std::string &what) {
  const size_t at = log.find(what);
  if (at == std::string::npos)
    return -1;
  size_t b = at;
  while (b > 0 && (std::isdigit((unsigned char)log[b - 1])))
    --b;
  return b == at ? -1 : std::atol(log.c_str() + b);
}

/// Runs the toolkit's ptxas (MOLT_PTXAS) on `ptx`; Unavailable without one.
StatusOr<PtxasInfo> ptxas(const std::string &ptx, const std::string &arch) {
#ifndef MOLT_PTXAS
  (void)ptx, (void)arch;
  return unavailable("no ptxas in this build (CUDAToolkit_BIN_DIR)");
#else
  static int serial = 0;
  const fs::path file = fs::path(testing::TempDir()) /
                        ("molt_gate_" + std::to_string(getpid()) + "_" + std::to_string(serial++) + ".ptx");
  std::ofstream(file) << ptx.substr(0, ptx.find('\0')); // NVRTC's PTX size counts its NUL
  const std::string cmd = std::string(MOLT_PTXAS) + " -arch=" + arch + " -v " + file.string() +
                          " -o /dev/null 2>&1";
  FILE *p = popen(cmd.c_str(), "r");
  if (!p)
    return internalError("cannot run " + cmd);
  std::string log;
  char buf[512];
  while (size_t n = fread(buf, 1, sizeof buf, p))
    log.append(buf, n);
  const int rc = pclose(p);
  fs::remove(file);
  if (rc != 0)
    return internalError("ptxas failed: " + log);
  PtxasInfo info;
  info.registers = numberBefore(log, " registers");
  info.smem = std::max(0L, numberBefore(log, " bytes smem"));
  info.stack = numberBefore(log, " bytes stack frame");
  info.spillStores = numberBefore(log, " bytes spill stores");
  info.spillLoads = numberBefore(log, " bytes spill loads");
  return info;
#endif
}

/// The gates every emitted kernel meets: no stack frame or spills, at most 128 registers a
/// thread (two 256-thread CTAs per SM), static shared memory within the 48 KiB that needs no
/// opt-in. Returns "" or what failed.
std::string gateFailures(const std::string &what, const PtxasInfo &i) {
  std::string bad;
  if (i.registers < 0 || i.stack < 0 || i.spillStores < 0)
    bad += " (unparsed ptxas output)";
  if (i.registers > 128)
    bad += " registers " + std::to_string(i.registers) + " > 128";
  if (i.stack > 0)
    bad += " stack frame " + std::to_string(i.stack) + " B";
  if (i.spillStores > 0 || i.spillLoads > 0)
    bad += " spills " + std::to_string(i.spillStores) + "/" + std::to_string(i.spillLoads) + " B";
  if (i.smem > 48 * 1024)
    bad += " smem " + std::to_string(i.smem) + " B > 48 KiB";
  return bad.empty() ? "" : what + ":" + bad;
}

/// Every kernel of every bundle the example specs compile to (<build>/bundles, molt-bundles),
/// and every reference kernel in bf16, through ptxas for sm_90a. Identical sources are gated once.
TEST_F(NvrtcTest, EveryEmittedKernelPassesThePtxasGatesForSm90a) {
  std::vector<std::pair<std::string, std::string>> sources; // (what, .cu text)
  std::set<std::string> seen;
  const fs::path bundles = fs::path(MOLT_BINARY_DIR) / "bundles";
  if (fs::is_directory(bundles))
    for (const auto &e : fs::directory_iterator(bundles)) {
      auto plan = loadPlan(e.path().string());
      if (!plan)
        continue;
      auto src = cuda::kernelSources(*plan, e.path().string());
      ASSERT_TRUE(src.isOk()) << e.path() << ": " << src.status().message();
      for (size_t i = 0; i < src->size(); ++i)
        if (seen.insert((*src)[i]).second)
          sources.push_back({e.path().filename().string() + "/" + plan->kernels[i].name, (*src)[i]});
    }
  for (const KernelDesc &k : referenceKernels()) {
    auto src = cudaWrapperSource(k, "bf16");
    ASSERT_TRUE(src.isOk()) << src.status().message();
    const auto r = k.attrs.find("R");
    if (seen.insert(*src).second)
      sources.push_back({"reference-bf16/" + k.op +
                             (r == k.attrs.end() ? "" : "_r" + std::to_string(std::get<int64_t>(r->second))),
                         *src});
  }
  // Kernels that fail a gate today, with what ptxas reported when they were listed: small-rank
  // frob_norm spills a few bytes. Each listed kernel must still
  // fail (else: remove it), every other must pass.
  const std::map<std::string, std::string> knownFailing = {
      {"minilm/frob_norm_3", "stack frame 8 B spills 8/4 B"},
      {"minilm/frob_norm_4", "stack frame 16 B spills 16/24 B"},
      {"gpt2/frob_norm_4", "stack frame 8 B spills 8/4 B"},
      {"smollm2/frob_norm_4", "stack frame 8 B spills 8/4 B"},
      // Since the all-ranks items (one item per token chunk, TM x R register tile): small
      // spills under the example bundles' tuned launches; the next register pass removes them.
      {"small/bucket_apply_bwd_1", "stack frame 8 B spills 4/8 B"},
      {"smollm2/bucket_apply_4", "stack frame 8 B spills 8/16 B"},
      {"smollm2/bucket_apply_bwd_2", "stack frame 8 B spills 4/4 B"},
      {"minilm/bucket_apply_3", "stack frame 8 B spills 8/16 B"},
      {"minilm/bucket_apply_bwd_4", "stack frame 8 B spills 12/20 B"},
      {"minilm/bucket_apply_bwd_1", "stack frame 8 B spills 4/4 B"},
      {"gpt2/bucket_apply_4", "stack frame 8 B spills 8/16 B"},
      {"gpt2/bucket_apply_bwd_2", "stack frame 8 B spills 4/4 B"},
      // The vjp entry's bucket_apply_bwd_dx is bucket_apply_bwd plus a d_x tail that reads the
      // saved z: the same register tile, so the same class of spills on neighbouring buckets.
      {"smollm2/bucket_apply_bwd_dx_4", "stack frame 8 B spills 8/16 B"},
      {"smollm2/bucket_apply_bwd_dx_3", "stack frame 8 B spills 4/16 B"},
      {"minilm/bucket_apply_bwd_dx_3", "stack frame 8 B spills 8/16 B"},
      {"minilm/bucket_apply_bwd_dx_2", "stack frame 8 B spills 4/16 B"},
      {"gpt2/bucket_apply_bwd_dx_3", "stack frame 8 B spills 16/24 B"},
  };
  std::string failures;
  int gated = 0;
  for (const auto &[what, src] : sources) {
    auto ptx = cuda::compileSource(src, "k.cu", {}, "sm_90a", false, headers_);
    ASSERT_TRUE(ptx.isOk()) << what << ": " << ptx.status().message();
    auto info = ptxas(*ptx, "sm_90a");
    if (!info && info.status().code() == Code::Unavailable)
      GTEST_SKIP() << info.status().message();
    ASSERT_TRUE(info.isOk()) << what << ": " << info.status().message();
    std::printf("[ptxas sm_90a] %-44s regs %3ld smem %6ld stack %ld spills %ld/%ld\n", what.c_str(),
                info->registers, info->smem, info->stack, info->spillStores, info->spillLoads);
    const std::string f = gateFailures(what, *info);
    const auto known = knownFailing.find(what);
    if (known != knownFailing.end() && f.empty())
      failures += "\n  " + what + " now passes: remove it from knownFailing";
    else if (known == knownFailing.end() && !f.empty())
      failures += "\n  " + f;
    else if (known != knownFailing.end())
      std::printf("[ptxas sm_90a] %s: known failure (%s)\n", f.c_str(), known->second.c_str());
    ++gated;
  }
  EXPECT_GT(gated, 20);
  EXPECT_TRUE(failures.empty()) << failures;
}

/// The bf16 tile kernels' PTX: tensor cores (mma.sync), and what the staging rewrite must bring
/// (ldmatrix, cp.async, no scalar 16-bit global loads). What is missing today is listed per op
/// and checked to still be missing, so the list shrinks as the kernels are rewritten.
TEST_F(NvrtcTest, Bf16TileKernelsUseTensorCoresAndTheKnownStagingGapsAreListed) {
  const std::vector<std::string> wanted = {"mma.sync", "ldmatrix", "cp.async", "no ld.global.u16"};
  const std::map<std::string, std::set<std::string>> missingToday = {
      {"bucket_apply", {"ldmatrix", "cp.async", "no ld.global.u16"}},
      {"bucket_apply_bwd", {"ldmatrix", "cp.async", "no ld.global.u16"}},
      {"frob_norm", {"ldmatrix", "cp.async", "no ld.global.u16"}},
      {"frob_norm_bwd", {"ldmatrix", "cp.async", "no ld.global.u16"}},
      {"skip_apply", {"ldmatrix", "cp.async", "no ld.global.u16"}},
      {"skip_bwd", {"ldmatrix", "cp.async", "no ld.global.u16"}},
  };
  std::string failures;
  for (const KernelDesc &k : referenceKernels()) {
    auto known = missingToday.find(k.op);
    if (known == missingToday.end())
      continue;
    auto src = cudaWrapperSource(k, "bf16");
    ASSERT_TRUE(src.isOk());
    auto ptx = cuda::compileSource(*src, "k.cu", {}, "sm_90a", false, headers_);
    ASSERT_TRUE(ptx.isOk()) << k.op << ": " << ptx.status().message();
    for (const std::string &w : wanted) {
      const bool has = w.rfind("no ", 0) == 0
                           ? ptx->find("ld.global.u16") == std::string::npos &&
                                 ptx->find("ld.global.nc.u16") == std::string::npos
                           : ptx->find(w) != std::string::npos;
      const bool listed = known->second.count(w) > 0;
      std::printf("[ptx sm_90a bf16] %-18s R=%-4lld %-18s %s%s\n", k.op.c_str(),
                  (long long)std::get<int64_t>(k.attrs.count("R") ? k.attrs.at("R") : AttrValue(int64_t(0))),
                  w.c_str(), has ? "yes" : "NO", listed ? " (known gap)" : "");
      if (!has && !listed)
        failures += "\n  " + k.op + " lacks " + w;
      if (has && listed)
        failures += "\n  " + k.op + " now has " + w + ": remove it from missingToday";
    }
  }
  EXPECT_TRUE(failures.empty()) << failures;
}

class KernelCacheTest : public NvrtcTest {
protected:
  void SetUp() override {
    NvrtcTest::SetUp();
    if (IsSkipped())
      return;
    dir_ = fs::path(MOLT_BINARY_DIR) / ("kernel-cache-test-" + std::to_string(::getpid()));
    fs::remove_all(dir_);
  }
  void TearDown() override { fs::remove_all(dir_); }
  StatusOr<cuda::CompiledImage> cached(const std::string &src,
                                       const std::map<std::string, std::string> &headers) {
    return cuda::compileCached(src, "k.cu", {}, "sm_80", headers, dir_.string());
  }
  fs::path onlyEntry() {
    std::vector<fs::path> entries;
    for (const auto &e : fs::directory_iterator(dir_))
      entries.push_back(e.path());
    EXPECT_EQ(entries.size(), 1u);
    return entries.empty() ? fs::path() : entries[0];
  }
  fs::path dir_;
};

TEST_F(KernelCacheTest, MissThenHitWithTheSameImage) {
  const std::string src = *cudaWrapperSource(kernel("mse_loss", {{"D", int64_t(64)}}));
  auto cold = cached(src, headers_);
  ASSERT_TRUE(cold.isOk()) << cold.status().message();
  EXPECT_FALSE(cold->cacheHit);
  EXPECT_TRUE(cold->cubin);
  auto warm = cached(src, headers_);
  ASSERT_TRUE(warm.isOk());
  EXPECT_TRUE(warm->cacheHit);
  EXPECT_EQ(warm->image, cold->image);
  // No temp files are left behind.
  EXPECT_EQ(onlyEntry().extension(), ".bin");
}

TEST_F(KernelCacheTest, AHeaderEditChangesTheKey) {
  const std::string src = *cudaWrapperSource(kernel("add_bias", {{"D", int64_t(64)}}));
  ASSERT_TRUE(cached(src, headers_).isOk());
  auto edited = headers_;
  edited["molt_kernels/common.cuh"] += "\n// an edit\n";
  auto after = cached(src, edited);
  ASSERT_TRUE(after.isOk());
  EXPECT_FALSE(after->cacheHit);
}

TEST_F(KernelCacheTest, CorruptEntryIsDetectedRecompiledAndRepaired) {
  const std::string src = *cudaWrapperSource(kernel("bias_grad", {{"D", int64_t(64)}}));
  auto cold = cached(src, headers_);
  ASSERT_TRUE(cold.isOk());
  const fs::path entry = onlyEntry();
  {
    std::fstream f(entry, std::ios::in | std::ios::out | std::ios::binary);
    f.seekp(-5, std::ios::end);
    f.put('\x55');
  }
  auto again = cached(src, headers_);
  ASSERT_TRUE(again.isOk());
  EXPECT_FALSE(again->cacheHit);
  EXPECT_EQ(again->image, cold->image);
  // Truncated to its header line: still detected.
  fs::resize_file(entry, 40);
  EXPECT_FALSE(cached(src, headers_)->cacheHit);
  EXPECT_TRUE(cached(src, headers_)->cacheHit);
}

TEST_F(KernelCacheTest, ConcurrentCompilesOfOneKernelAgree) {
  const std::string src = *cudaWrapperSource(kernel("add_bias", {{"D", int64_t(96)}}));
  std::vector<std::string> images(4);
  std::vector<std::thread> threads;
  for (int i = 0; i < 4; ++i)
    threads.emplace_back([&, i] {
      auto r = cached(src, headers_);
      if (r)
        images[i] = r->image;
    });
  for (auto &t : threads)
    t.join();
  for (const std::string &im : images)
    EXPECT_TRUE(isElf(im) && im == images[0]);
  EXPECT_TRUE(cached(src, headers_)->cacheHit);
  EXPECT_EQ(onlyEntry().extension(), ".bin");
}

} // namespace
} // namespace molt

#endif // MOLT_HAVE_CUDA
