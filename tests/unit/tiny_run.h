// The training options the run-level reliability tests start from: tiny-molt (d = 8), a short
// quiet run with frequent checkpoints. Each test changes what it needs.
#pragma once

#include <filesystem>
#include <string>

#include <gtest/gtest.h>

#include "molt/run.h"

/// An empty directory testing::TempDir()/group/name (emptied when it exists).
inline std::string freshTestDir(const std::string &group, const std::string &name) {
  std::string dir = testing::TempDir() + "/" + group + "/" + name;
  std::filesystem::remove_all(dir);
  std::filesystem::create_directories(dir);
  return dir;
}

inline molt::TrainOptions tinyRunOptions(const std::string &data, const std::string &out) {
  molt::TrainOptions o;
  o.bundle = std::string(MOLT_SOURCE_DIR) + "/tests/fixtures/tiny-molt";
  o.data = data;
  o.out = out;
  o.steps = 30;
  o.batch = 16;
  o.seed = 3;
  o.quiet = true;
  o.checkpointEvery = 10;
  o.logEvery = 10;
  return o;
}
