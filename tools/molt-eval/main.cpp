// molt-eval: measures a trained run on held-out activation data.
#include <cmath>
#include <cstdio>
#include <string>

#include <nlohmann/json.hpp>

#include "../common/cli.h"
#include "splice.h"

#include "molt/run.h"

int main(int argc, char **argv) {
  std::string run, data, device = "cpu", teacher;
  int64_t batch = 1024, jacobianRows = 2000;
  std::string jacobianMethod = "exact";
  int probes = 64;
  std::string splice;
  int spliceSequences = 16;
  bool json = false;
  CLI::App app{"Evaluates a run: NMSE, FVU, L0, dead fraction, per-bucket L0 and usage.\n"
               "Warns when the run looks collapsed (L0 < 1.5 or most transforms dead).",
               "molt-eval"};
  app.add_option("RUN", run, "a run directory written by molt-train")->required();
  app.add_option("--data", data, "evaluation data (file or directory of x/y shards)")
      ->required();
  app.add_option("--teacher", teacher, "teacher MLP (safetensors): also report jacobian_cosine");
  app.add_option("--jacobian-rows", jacobianRows, "rows the Jacobian metric averages over")
      ->capture_default_str();
  app.add_option("--jacobian-method", jacobianMethod,
                 "exact (identities, float64), random (host J·v with random probes) or compiled "
                 "(the bundle's jvp entry on --device, same probes)")
      ->check(CLI::IsMember({"exact", "random", "compiled"}))
      ->capture_default_str();
  app.add_option("--probes", probes, "probes per token for random / compiled")
      ->capture_default_str();
  app.add_flag("--json", json, "print one flat JSON object instead of text");
  app.add_option("--batch", batch, "tokens per evaluation batch")->capture_default_str();
  app.add_option("--device", device, "cpu or cuda")->capture_default_str();
  app.add_option("--splice", splice,
                 "a causal-LM harvest (molt-harvest --model smollm2): also report the next-token "
                 "loss with its layer's MLP replaced by RUN, the KL to the clean model and the "
                 "loss recovered vs mean and zero ablation (runs python -m molt.splice)");
  app.add_option("--splice-sequences", spliceSequences,
                 "held-out sequences of the harvest the spliced loss averages over (0: all)")
      ->capture_default_str();
  if (int rc = molt::tool::parse(app, argc, argv); rc >= 0)
    return rc;
  if (batch <= 0)
    return molt::tool::fail("molt-eval", "--batch must be positive");
  if (probes < 2)
    return molt::tool::fail("molt-eval", "--probes must be at least 2");
  if (spliceSequences < 0)
    return molt::tool::fail("molt-eval", "--splice-sequences must be >= 0");
  molt::JacobianOptions jacobian;
  jacobian.method = jacobianMethod == "random"     ? molt::JacobianMethod::Random
                    : jacobianMethod == "compiled" ? molt::JacobianMethod::Compiled
                                                   : molt::JacobianMethod::Exact;
  jacobian.probes = probes;
  molt::StatusOr<molt::EvalReport> r =
      molt::evaluateRun(run, data, batch, device, teacher, jacobianRows, jacobian);
  if (!r)
    return molt::tool::fail("molt-eval", r.status().message());
  nlohmann::json spliced;
  if (!splice.empty()) {
    molt::tool::SpliceResult s = molt::tool::runSplice(run, splice, spliceSequences);
    if (s.exitCode != 0)
      return 1; // the evaluator printed its one-line error
    spliced = nlohmann::json::parse(s.stdout_, nullptr, /*allow_exceptions=*/false);
    if (!spliced.is_object())
      return molt::tool::fail("molt-eval", "python -m molt.splice printed no JSON object");
    spliced.erase("run");
  }
  if (json) {
    nlohmann::json j = nlohmann::json::parse(r->toJson());
    if (!splice.empty())
      j.update(spliced);
    std::printf("%s\n", j.dump().c_str());
  } else {
    std::fputs(r->toText().c_str(), stdout);
    auto num = [&](const char *key) { // null (no ablation gap) prints as nan
      auto it = spliced.find(key);
      return it != spliced.end() && it->is_number() ? it->get<double>() : std::nan("");
    };
    if (!splice.empty())
      std::printf("spliced over %.0f tokens  ce clean %.4f  ce spliced %.4f  ce mean-abl %.4f  "
                  "ce zero-abl %.4f  kl %.4f  recovered vs mean %.4f  vs zero %.4f\n",
                  num("spliced_tokens"), num("ce_clean"), num("ce_spliced"), num("ce_mean"),
                  num("ce_zero"), num("kl"), num("recovered_vs_mean"), num("recovered_vs_zero"));
  }
  if (!r->warning.empty() && json)
    std::fprintf(stderr, "molt-eval: warning: %s\n", r->warning.c_str());
  return 0;
}
