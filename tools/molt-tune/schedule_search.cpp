// molt-tune schedule (schedule_search.h): candidates, short runs (the compiler facade, then
// runTraining and evaluateRun in-process), successive halving, the CSV report and the winning
// spec.
#include "tools/molt-tune/schedule_search.h"

#include <algorithm>
#include <chrono>
#include <cmath>
#include <cstdio>
#include <filesystem>
#include <map>
#include <set>

#include <nlohmann/json.hpp>

#include "molt/io.h"
#ifdef MOLT_HAVE_COMPILE_SPEC
#include "molt/run.h"
#include "passes/CompileSpec.h"
#endif

namespace molt::tune {

namespace fs = std::filesystem;

int64_t RankSet::featureEquivalents() const {
  int64_t f = 0;
  for (size_t i = 0; i < ranks.size(); ++i)
    f += ranks[i] * counts[i];
  return f;
}

namespace {

std::string joinInts(const std::vector<int64_t> &v, const char *sep) {
  std::string s;
  for (size_t i = 0; i < v.size(); ++i)
    s += (i ? sep : "") + std::to_string(v[i]);
  return s;
}

/// Counts giving bucket i the share w[i]/Σw of budget F (rounded down), the remainder going to
/// the lowest rank; empty when the remainder does not divide or a bucket ends up empty (or a
/// rank is below 1: halving rank 1 gives 0).
std::vector<int64_t> countsFor(const std::vector<int64_t> &ranks, const std::vector<double> &w,
                               int64_t F) {
  for (int64_t r : ranks)
    if (r < 1)
      return {};
  double total = 0;
  for (double x : w)
    total += x;
  std::vector<int64_t> counts(ranks.size());
  int64_t used = 0;
  for (size_t i = 0; i + 1 < ranks.size(); ++i) {
    counts[i] = int64_t(std::floor(F * w[i] / total / double(ranks[i])));
    used += counts[i] * ranks[i];
  }
  int64_t rest = F - used, last = ranks.back();
  if (rest <= 0 || rest % last != 0)
    return {};
  counts.back() = rest / last;
  for (int64_t c : counts)
    if (c < 1)
      return {};
  return counts;
}

} // namespace

std::string RankSet::scheduleAttr() const {
  return "#molt.schedule<ranks = [" + joinInts(ranks, ", ") + "], counts = [" +
         joinInts(counts, ", ") + "]>";
}

std::vector<RankSet> rankCandidates(const RankSet &ref, int64_t dModel) {
  const int64_t F = ref.featureEquivalents();
  std::vector<RankSet> out{ref};
  out.front().name = "reference";
  std::set<std::pair<std::vector<int64_t>, std::vector<int64_t>>> seen{{ref.ranks, ref.counts}};
  auto add = [&](std::string name, std::vector<int64_t> ranks, std::vector<int64_t> counts) {
    if (counts.empty() || !seen.insert({ranks, counts}).second)
      return;
    for (int64_t r : ranks)
      if (r < 1 || r > dModel)
        return;
    out.push_back({std::move(name), std::move(ranks), std::move(counts)});
  };
  // Uniform ranks: every rank of the reference (and the ones between) that divides the budget.
  std::set<int64_t> uniform(ref.ranks.begin(), ref.ranks.end());
  for (int64_t r = 1; r <= dModel; r *= 2)
    if (r >= *uniform.begin() && r <= *uniform.rbegin())
      uniform.insert(r);
  for (int64_t r : uniform)
    if (F % r == 0)
      add("uniform-r" + std::to_string(r), {r}, {F / r});
  // Shifted proportions: bucket i's budget share ∝ s^i (s < 1 favours high ranks).
  const size_t n = ref.ranks.size();
  for (double s : {0.5, 0.7, 1.4, 2.0}) {
    std::vector<double> w(n);
    for (size_t i = 0; i < n; ++i)
      w[i] = std::pow(s, double(i));
    char name[32];
    std::snprintf(name, sizeof name, "shift-%.1f", s);
    add(name, ref.ranks, countsFor(ref.ranks, w, F));
  }
  // Other rank sets: the reference's ranks halved and doubled, equal budget per bucket.
  for (int factor : {-2, 2}) {
    std::vector<int64_t> ranks;
    for (int64_t r : ref.ranks)
      ranks.push_back(factor > 0 ? r * factor : r / 2);
    std::sort(ranks.rbegin(), ranks.rend());
    ranks.erase(std::unique(ranks.begin(), ranks.end()), ranks.end());
    add(factor > 0 ? "ranks-x2" : "ranks-half", ranks,
        countsFor(ranks, std::vector<double>(ranks.size(), 1.0), F));
  }
  return out;
}

double nmseAtL0(double l0a, double nmseA, double l0b, double nmseB, double l0) {
  if (l0a <= 0 || l0b <= 0 || std::abs(std::log(l0a) - std::log(l0b)) < 1e-9)
    return nmseA;
  double xa = std::log(l0a), xb = std::log(l0b), x = std::log(l0);
  const double span = std::abs(xb - xa), lo = std::min(xa, xb) - span, hi = std::max(xa, xb) + span;
  x = std::clamp(x, lo, hi);
  double r = nmseA + (nmseB - nmseA) * (x - xa) / (xb - xa);
  // Short runs are noisy enough that a larger λ sometimes trains a better fit at a lower L0; an
  // extrapolation does not follow that trend past the runs (fewer active transforms are taken
  // never to fit better than the run nearest the target did).
  const double nmseLow = xa < xb ? nmseA : nmseB, nmseHigh = xa < xb ? nmseB : nmseA;
  if (x < std::min(xa, xb))
    r = std::max(r, nmseLow);
  if (x > std::max(xa, xb))
    r = std::min(r, nmseHigh);
  return r;
}

#ifdef MOLT_HAVE_COMPILE_SPEC
namespace {

/// The layer's schedule as a candidate (named after the layer, "@" included).
RankSet rankSetOf(const compiler::LayerFacts &layer) {
  RankSet r;
  r.name = "@" + layer.symbol;
  for (const compiler::BucketFacts &b : layer.buckets) {
    r.ranks.push_back(b.rank);
    r.counts.push_back(b.count);
  }
  return r;
}

compiler::RankSchedule scheduleOf(const std::string &layer, const RankSet &r) {
  return {layer, r.ranks, r.counts};
}

struct RunResult {
  double l0 = 0, nmse = 0;
};

constexpr int64_t kEvalBatch = 1024; // molt-eval's default: rows per evaluation batch

} // namespace
#endif

Status searchSchedule(const ScheduleSearchOptions &o) {
#ifndef MOLT_HAVE_COMPILE_SPEC
  (void)o;
  return unavailable("schedule needs the compiler: this build has MOLT_BUILD_COMPILER=OFF");
#else
  const auto start = std::chrono::steady_clock::now();
  auto elapsed = [&] {
    return std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
  };
  auto spec = compiler::readSpec(o.spec);
  if (!spec)
    return spec.status();
  // The compiler's counts (dialect/MoltCounts.h) are the only ones: read, never recomputed.
  auto facts = compiler::describeSpec(*spec);
  if (!facts)
    return facts.status();
  const compiler::LayerFacts *described = facts->findLayer(o.layer);
  if (!described)
    return invalidArgument(o.spec + ": no molt.layer" + (o.layer.empty() ? "" : " " + o.layer));
  const RankSet reference = rankSetOf(*described);
  const std::string layer = reference.name;
  const double lambda = described->lambda;
  if (lambda <= 0)
    return invalidArgument(o.spec + ": " + layer + " has no positive penalty lambda to match L0 with");
  const std::string work = o.work.empty() ? o.out + ".runs" : o.work;
  MOLT_RETURN_IF_ERROR(makeDirs(work));
  const std::string resultsPath = work + "/results.json";
  nlohmann::json results = nlohmann::json::object();
  if (pathExists(resultsPath)) {
    auto text = readFile(resultsPath);
    if (!text)
      return text.status();
    results = nlohmann::json::parse(*text, nullptr, false);
    if (!results.is_object())
      return invalidArgument(resultsPath + " is not a results file (delete it to start over)");
  }

  std::vector<RankSet> cands = rankCandidates(reference, described->dModel);
  std::map<std::string, int64_t> params;
  for (const RankSet &c : cands) {
    // Each candidate's spec is kept beside its runs, to read or to train again by hand.
    auto text = compiler::rescheduleSpec(*spec, scheduleOf(layer, c));
    if (!text)
      return text.status().withContext(c.name);
    MOLT_RETURN_IF_ERROR(writeFileAtomic(work + "/" + c.name + ".mlir", *text));
    auto d = compiler::describeSpec(*spec, scheduleOf(layer, c));
    if (!d)
      return d.status().withContext(c.name);
    params[c.name] = d->findLayer(layer)->params;
  }
  if (!o.quiet)
    std::printf("%zu candidates at %lld feature-equivalents (reference %lld parameters), "
                "lambda %g (x or / %g to match the reference's L0)\n",
                cands.size(), (long long)reference.featureEquivalents(),
                (long long)described->params, lambda, o.lambdaFactor);
  if (!o.quiet && !results.empty())
    std::printf("resuming: %zu finished runs in %s are reused\n", results.size(),
                resultsPath.c_str());
  std::fflush(stdout);

  // Each candidate is compiled once per search, into WORK/NAME.bundle, when it first trains.
  std::set<std::string> compiled;
  auto bundleFor = [&](const RankSet &c) -> StatusOr<std::string> {
    const std::string bundle = work + "/" + c.name + ".bundle";
    if (compiled.count(c.name))
      return bundle;
    std::error_code ec;
    fs::remove_all(bundle, ec); // one an earlier search left: remade from this spec
    compiler::CompileOptions copts;
    copts.symbol = layer;
    copts.schedule = scheduleOf(layer, c);
    MOLT_RETURN_IF_ERROR(compiler::compileSpec(*spec, bundle, copts));
    compiled.insert(c.name);
    return bundle;
  };

  // One short run: cached in results.json (written atomically after each), so a rerun resumes.
  // Seed 0 keeps the key and folder names it had before --seeds existed.
  auto trainSeed = [&](const RankSet &c, double lam, int64_t steps, int seed) -> StatusOr<RunResult> {
    char key[160], suffix[48];
    std::snprintf(suffix, sizeof suffix, seed ? "|seed%d" : "", seed);
    std::snprintf(key, sizeof key, "%s|%g|%lld%s", c.name.c_str(), lam, (long long)steps, suffix);
    if (results.contains(key))
      return RunResult{results[key]["l0"].get<double>(), results[key]["nmse"].get<double>()};
    if (!o.quiet) { // a run takes seconds to minutes: say which one is going
      std::printf("  run %-12s %lld steps, lambda %g, seed %d ...", c.name.c_str(),
                  (long long)steps, lam, seed);
      std::fflush(stdout);
    }
    std::snprintf(suffix, sizeof suffix, seed ? "-lambda%g-seed%d" : "-lambda%g", lam, seed);
    const std::string run = work + "/" + c.name + "-" + std::to_string(steps) + suffix;
    std::error_code ec;
    fs::remove_all(run, ec); // a run an interruption cut short
    auto bundle = bundleFor(c);
    if (!bundle)
      return bundle.status();
    TrainOptions t;
    t.bundle = *bundle;
    t.spec = work + "/" + c.name + ".mlir";
    t.data = o.data;
    t.out = run;
    t.steps = steps;
    t.batch = o.batch;
    t.lambda = lam;
    t.seed = uint64_t(seed);
    t.quiet = true;
    t.checkpointEvery = steps;
    MOLT_RETURN_IF_ERROR(runTraining(t).withContext("training " + run));
    auto e = evaluateRun(run, o.val, kEvalBatch, t.device);
    if (!e)
      return e.status().withContext("evaluating " + run);
    RunResult r{e->l0, e->nmse};
    results[key] = {{"l0", r.l0}, {"nmse", r.nmse}};
    MOLT_RETURN_IF_ERROR(writeFileAtomic(resultsPath, results.dump(1)));
    if (!o.quiet) {
      std::printf(" L0 %.2f, NMSE %.4f (%.0f s)\n", r.l0, r.nmse, elapsed());
      std::fflush(stdout);
    }
    return r;
  };
  // A candidate's result at one λ: L0 and NMSE averaged over --seeds runs, because whether
  // training assigns transforms to the right inputs varies from seed to seed (docs/tuning.md).
  auto train = [&](const RankSet &c, double lam, int64_t steps) -> StatusOr<RunResult> {
    RunResult mean;
    for (int seed = 0; seed < o.seeds; ++seed) {
      auto r = trainSeed(c, lam, steps, seed);
      if (!r)
        return r.status();
      mean.l0 += r->l0 / o.seeds;
      mean.nmse += r->nmse / o.seeds;
    }
    return mean;
  };

  struct Row {
    std::string name;
    int round;
    int64_t steps;
    double lambdaA, lambdaB;
    RunResult a, b;
    double target, score;
  };
  std::vector<Row> rows;
  std::vector<size_t> alive(cands.size());
  for (size_t i = 0; i < alive.size(); ++i)
    alive[i] = i;
  std::string baseline; // the best uniform candidate of round 0, kept to the end
  std::vector<Row> lastRound;
  bool outOfTime = false;
  for (int round = 0; !outOfTime; ++round) {
    const int64_t steps = o.steps << round;
    std::vector<Row> thisRound;
    auto timeUp = [&] { return outOfTime = outOfTime || (o.timeLimit > 0 && elapsed() > o.timeLimit); };
    // Phase 1: every candidate at the spec's λ. The target is the reference's L0 there: the
    // operating point the spec chose. (The round's lowest L0 was the target before; on the
    // rank-groups teacher it came from a half-collapsed candidate, L0 0.5, where every
    // schedule is bad and the ranking says little.)
    std::vector<RunResult> first;
    for (size_t i : alive) {
      if (timeUp())
        break;
      auto a = train(cands[i], lambda, steps);
      if (!a)
        return a.status().withContext(cands[i].name);
      first.push_back(*a);
    }
    const double target = first.empty() ? 0.0 : first.front().l0; // alive[0] is the reference
    // Phase 2: a candidate off the target trains again at λ × factor (above it) or λ / factor
    // (below), up to kLambdaSteps times until its runs bracket the target; NMSE is interpolated
    // in log L0 between the last two runs.
    auto side = [&](double l0) { return l0 > target * 1.02 ? 1 : l0 < target / 1.02 ? -1 : 0; };
    for (size_t j = 0; j < first.size() && !timeUp(); ++j) {
      const RankSet &c = cands[alive[j]];
      RunResult a = first[j], b = a;
      double lamA = lambda, lamB = lambda;
      constexpr int kLambdaSteps = 3;
      const int dir = side(a.l0);
      for (int k = 0; k < kLambdaSteps && dir != 0 && side(b.l0) == dir && !timeUp(); ++k) {
        a = b;
        lamA = lamB;
        lamB = dir > 0 ? lamB * o.lambdaFactor : lamB / o.lambdaFactor;
        auto next = train(c, lamB, steps);
        if (!next)
          return next.status().withContext(c.name);
        b = *next;
      }
      if (outOfTime)
        break;
      Row row{c.name, round, steps, lamA, lamB, a, b, target,
              nmseAtL0(a.l0, a.nmse, b.l0, b.nmse, target)};
      thisRound.push_back(row);
      rows.push_back(row);
      if (!o.quiet) {
        std::printf("round %d, %lld steps, %-12s L0 %6.2f/%6.2f  NMSE %.4f/%.4f  at L0 %.2f: "
                    "%.4f  (%.0f s)\n",
                    round, (long long)steps, c.name.c_str(), a.l0, b.l0, a.nmse, b.nmse, target,
                    row.score, elapsed());
        std::fflush(stdout);
      }
    }
    if (thisRound.size() == alive.size())
      lastRound = thisRound;
    if (outOfTime || alive.size() <= 3)
      break;
    if (round == 0) {
      double best = 1e300;
      for (const Row &r : thisRound)
        if (r.name.rfind("uniform", 0) == 0 && r.score < best)
          best = r.score, baseline = r.name;
    }
    // Successive halving: the better half goes on at twice the steps; the reference and the
    // uniform baseline always do, so the last round compares like with like.
    std::vector<size_t> order(thisRound.size());
    for (size_t i = 0; i < order.size(); ++i)
      order[i] = i;
    std::sort(order.begin(), order.end(),
              [&](size_t x, size_t y) { return thisRound[x].score < thisRound[y].score; });
    std::vector<size_t> next{0};
    size_t keep = (alive.size() + 1) / 2;
    for (size_t k = 0; k < order.size(); ++k) {
      size_t ci = alive[order[k]];
      bool anchor = cands[ci].name == baseline;
      if (ci != 0 && (k < keep || anchor))
        next.push_back(ci);
    }
    if (next.size() >= alive.size()) // only the reference and the baseline beside one other
      break;
    alive = next;
  }
  if (lastRound.empty())
    return unavailable("the time limit ran out before one round finished (rerun to resume)");

  // The CSV report: every run, every round.
  std::string csv = "candidate,ranks,counts,feature_equivalents,parameters,round,steps,lambda_a,"
                    "l0_a,nmse_a,lambda_b,l0_b,nmse_b,target_l0,nmse_at_target\n";
  for (const Row &r : rows) {
    const RankSet &c = *std::find_if(cands.begin(), cands.end(),
                                     [&](const RankSet &x) { return x.name == r.name; });
    char line[512];
    std::snprintf(line, sizeof line, "%s,%s,%s,%lld,%lld,%d,%lld,%g,%.4f,%.6f,%g,%.4f,%.6f,%.4f,%.6f\n",
                  c.name.c_str(), joinInts(c.ranks, " ").c_str(), joinInts(c.counts, " ").c_str(),
                  (long long)c.featureEquivalents(), (long long)params[c.name], r.round,
                  (long long)r.steps, r.lambdaA, r.a.l0, r.a.nmse, r.lambdaB, r.b.l0,
                  r.b.nmse, r.target, r.score);
    csv += line;
  }
  const std::string csvPath = fs::path(o.out).replace_extension(".csv").string();
  MOLT_RETURN_IF_ERROR(writeFileAtomic(csvPath, csv));

  const Row &best = *std::min_element(lastRound.begin(), lastRound.end(),
                                      [](const Row &x, const Row &y) { return x.score < y.score; });
  const RankSet &winner = *std::find_if(cands.begin(), cands.end(),
                                        [&](const RankSet &x) { return x.name == best.name; });
  auto text = compiler::rescheduleSpec(*spec, scheduleOf(layer, winner));
  if (!text)
    return text.status();
  MOLT_RETURN_IF_ERROR(writeFileAtomic(o.out, *text));
  std::printf("best: %s %s (%lld parameters), NMSE %.4f at L0 %.2f after %lld steps\n",
              winner.name.c_str(), winner.scheduleAttr().c_str(), (long long)params[winner.name],
              best.score, best.target, (long long)best.steps);
  // The comparison the search exists for: the winner against the reference and the best
  // uniform-rank schedule of the same (last) round, trained as long, at the same L0.
  const Row *uniform = nullptr;
  for (const Row &r : lastRound)
    if (r.name.rfind("uniform", 0) == 0 && (!uniform || r.score < uniform->score))
      uniform = &r;
  for (const Row *r : std::vector<const Row *>{&lastRound.front(), uniform})
    if (r)
      std::printf("  vs %s %s (%lld parameters): NMSE %.4f at the same L0 and steps\n",
                  r == uniform ? "best uniform" : "the", r->name.c_str(),
                  (long long)params[r->name], r->score);
  std::printf("wrote %s and %s\n", o.out.c_str(), csvPath.c_str());
  return Status::ok();
#endif
}

} // namespace molt::tune
