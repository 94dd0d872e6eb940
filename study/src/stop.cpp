// The process-wide stop flag and its signal handlers (study/include/molt/stop.h).
#include "molt/stop.h"

#include <atomic>
#include <csignal>
#include <unistd.h>

namespace molt {
namespace {

std::atomic<int> gStop{0}; // lock-free int: safe to touch from a signal handler
static_assert(std::atomic<int>::is_always_lock_free);

void onStopSignal(int sig) {
  if (gStop.exchange(1) != 0)
    ::_exit(128 + sig); // the second signal: go now (only async-signal-safe calls here)
}

} // namespace

void requestStop() { gStop.store(1); }
bool stopRequested() { return gStop.load() != 0; }
void clearStopRequest() { gStop.store(0); }

struct StopOnSignals::Saved {
  struct sigaction term, intr;
};

StopOnSignals::StopOnSignals() : saved_(new Saved) {
  struct sigaction sa = {};
  sa.sa_handler = onStopSignal;
  sigemptyset(&sa.sa_mask);
  sa.sa_flags = SA_RESTART; // a read or write in flight completes; the loop polls the flag
  sigaction(SIGTERM, &sa, &saved_->term);
  sigaction(SIGINT, &sa, &saved_->intr);
}

StopOnSignals::~StopOnSignals() {
  sigaction(SIGTERM, &saved_->term, nullptr);
  sigaction(SIGINT, &saved_->intr, nullptr);
  delete saved_;
}

} // namespace molt
