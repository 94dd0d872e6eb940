// Graceful stop of a training loop: one process-wide flag that SIGTERM / SIGINT (what cluster
// schedulers send before preempting) or the embedding code sets, and that every training loop
// polls between steps. The loop finishes the step in flight, writes its checkpoint atomically
// and returns Code::Cancelled; molt-train then exits with kExitStopped. docs/reliability.md.
#pragma once

namespace molt {

/// molt-train's exit status after a requested stop with the checkpoint written (EX_TEMPFAIL of
/// sysexits.h: "try again later" — repeat the same command, with --resume, to continue).
constexpr int kExitStopped = 75;

/// Asks every training loop in the process to stop after its current step. Async-signal-safe.
void requestStop();
/// Whether a stop was requested (and not cleared since).
bool stopRequested();
/// Forgets a request (a loop started afterwards runs normally).
void clearStopRequest();

/// While alive, SIGTERM and SIGINT call requestStop(); a second one while the first is pending
/// ends the process at once with 128 + the signal (every file molt writes is renamed into place
/// atomically, so nothing is left half-written; a stray `<file>.tmp-<pid>` is removed by the next
/// start). The destructor restores the previous handlers. Not nestable across threads.
class StopOnSignals {
public:
  StopOnSignals();
  ~StopOnSignals();
  StopOnSignals(const StopOnSignals &) = delete;
  StopOnSignals &operator=(const StopOnSignals &) = delete;

private:
  struct Saved;
  Saved *saved_;
};

} // namespace molt
