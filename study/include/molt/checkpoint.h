// RUN/checkpoint.safetensors: weights, Adam moments and the training state, written
// atomically; the layout is documented in docs/checkpoint.md.
#pragma once

#include <string>

#include "molt/backend.h"
#include "molt/trainer.h"

namespace molt {

/// What a run was started with; checked on resume so a resumed run is the same run.
struct RunConfig {
  int64_t batch = 0;
  int64_t dataRows = 0;
  Schedule schedule;
};

/// Reads every param, m_p and v_p from the executor and writes PATH atomically.
Status saveCheckpoint(const std::string &path, Executor &exec, const TrainState &state,
                      const RunConfig &config);

struct Checkpoint {
  TensorMap tensors; // params, m_<p>, v_<p>
  TrainState state;
  RunConfig config;
};

/// Reads and checks PATH against the plan (every param with its shape; moments optional).
StatusOr<Checkpoint> loadCheckpoint(const std::string &path, const Plan &plan);

} // namespace molt
