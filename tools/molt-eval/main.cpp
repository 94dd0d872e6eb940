// molt-eval: measures a trained run on held-out activation data.
#include <cstdio>
#include <string>

#include "../common/cli.h"

#include "molt/run.h"

int main(int argc, char **argv) {
  std::string run, data, device = "cpu", teacher;
  int64_t batch = 1024, jacobianRows = 2000;
  std::string jacobianMethod = "exact";
  int probes = 64;
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
  if (int rc = molt::tool::parse(app, argc, argv); rc >= 0)
    return rc;
  if (batch <= 0)
    return molt::tool::fail("molt-eval", "--batch must be positive");
  if (probes < 2)
    return molt::tool::fail("molt-eval", "--probes must be at least 2");
  molt::JacobianOptions jacobian;
  jacobian.method = jacobianMethod == "random"     ? molt::JacobianMethod::Random
                    : jacobianMethod == "compiled" ? molt::JacobianMethod::Compiled
                                                   : molt::JacobianMethod::Exact;
  jacobian.probes = probes;
  molt::StatusOr<molt::EvalReport> r =
      molt::evaluateRun(run, data, batch, device, teacher, jacobianRows, jacobian);
  if (!r)
    return molt::tool::fail("molt-eval", r.status().message());
  if (json)
    std::printf("%s\n", r->toJson().c_str());
  else
    std::fputs(r->toText().c_str(), stdout);
  if (!r->warning.empty() && json)
    std::fprintf(stderr, "molt-eval: warning: %s\n", r->warning.c_str());
  return 0;
}
