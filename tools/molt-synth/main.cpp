// molt-synth: writes a teacher MLP (random, or rank groups) and x/y shards on clustered inputs,
// and prints the NMSE of the best single linear map (the bar a trained layer should beat).
#include <cstdio>

#include "../common/cli.h"

#include "molt/synth.h"

int main(int argc, char **argv) {
  molt::SynthOptions o;
  std::string groups;
  CLI::App app{"Writes OUT/teacher.safetensors, OUT/train/ and OUT/val/ (x/y shards) from a\n"
               "random MLP on clustered inputs, or with --rank-groups from an MLP whose local\n"
               "Jacobian at each cluster has a chosen rank (docs/tuning.md); prints the best\n"
               "linear map's NMSE.",
               "molt-synth"};
  app.add_option("--out", o.out, "output directory")->required();
  app.add_option("--d", o.d, "model width")->capture_default_str();
  CLI::Option *hidden =
      app.add_option("--hidden", o.hidden, "teacher hidden width")->capture_default_str();
  CLI::Option *clusters =
      app.add_option("--clusters", o.clusters, "number of input clusters")->capture_default_str();
  CLI::Option *gain = app.add_option("--gain", o.gain, "teacher input-weight scale (larger: less linear)")
      ->capture_default_str();
  app.add_option("--rank-groups", groups,
                 "RANK:COUNT,... one cluster per group; at a cluster the teacher is linear of that "
                 "rank (e.g. 32:2,16:4,8:8,4:16; needs d >= groups + largest rank; hidden = 2 x "
                 "sum of ranks)")
      ->excludes(hidden)
      ->excludes(clusters)
      ->excludes(gain);
  app.add_option("--noise", o.noise, "within-cluster standard deviation")->capture_default_str();
  app.add_option("--rows", o.trainRows, "training rows")->capture_default_str();
  app.add_option("--val-rows", o.valRows, "validation rows")->capture_default_str();
  app.add_option("--shard-rows", o.shardRows, "rows per shard")->capture_default_str();
  app.add_option("--seed", o.seed, "seed")->capture_default_str();
  app.add_option("--activation", o.activation, "gelu, gelu_tanh or relu")->capture_default_str();
  if (int rc = molt::tool::parse(app, argc, argv); rc >= 0)
    return rc;
  if (!groups.empty()) {
    auto ranks = molt::parseRankGroups(groups);
    if (!ranks)
      return molt::tool::fail("molt-synth", ranks.status().message());
    o.groupRanks = *ranks;
  }
  molt::StatusOr<molt::SynthReport> r = molt::synthesize(o);
  if (!r)
    return molt::tool::fail("molt-synth", r.status().message());
  std::printf("best linear map: nmse %.5f (train fit), %.5f (val)\n", r->linearNmseTrain,
              r->linearNmseVal);
  return 0;
}
