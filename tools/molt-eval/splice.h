// molt-eval --splice: the spliced language-model evaluation, which runs in Python.
//
// The causal LM is a PyTorch model (transformers), and the C++ tools link no torch, so
// molt-eval runs `python -m molt.splice RUN --data HARVEST --json` (python/molt/splice.py) as a
// child process and merges the one JSON object it prints into its own report. One evaluator
// (the Python one) serves molt-eval, scripts/compare and Python users alike.
#pragma once

#include <string>

namespace molt::tool {

struct SpliceResult {
  int exitCode = 0;    // the child's; nonzero: it has printed its one-line error on stderr
  std::string stdout_; // one JSON object on success
};

/// Runs the Python evaluator on RUN against HARVEST's held-out sequences. The interpreter is
/// $MOLT_PYTHON, else the one this build was configured with; the package is found on
/// $MOLT_PY_STAGE, else this build's staged python/ folder (prepended to PYTHONPATH).
SpliceResult runSplice(const std::string &run, const std::string &harvest, int sequences);

} // namespace molt::tool
