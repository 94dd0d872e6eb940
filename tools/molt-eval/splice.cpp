#include "splice.h"

#include "molt/config.h"

#include <cerrno>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <string>
#include <vector>

#include <sys/wait.h>
#include <unistd.h>

namespace molt::tool {
namespace {

std::string orDefault(const std::string &value, const char *fallback) {
  return value.empty() ? fallback : value;
}

} // namespace

SpliceResult runSplice(const std::string &run, const std::string &harvest, int sequences) {
  std::string python = orDefault(config::python(), MOLT_EVAL_PYTHON);
  std::string stage = orDefault(config::pyStage(), MOLT_EVAL_PY_STAGE);
  std::vector<std::string> argv = {python, "-m", "molt.splice", run, "--data", harvest,
                                   "--sequences", std::to_string(sequences), "--json",
                                   "--prog", "molt-eval"};
  int pipeFd[2];
  SpliceResult result;
  if (pipe(pipeFd) != 0) {
    std::fprintf(stderr, "molt-eval: error: pipe: %s\n", std::strerror(errno));
    result.exitCode = 1;
    return result;
  }
  std::fflush(nullptr);
  pid_t pid = fork();
  if (pid == 0) {
    dup2(pipeFd[1], STDOUT_FILENO);
    close(pipeFd[0]);
    close(pipeFd[1]);
    std::string old = config::pythonPath();
    std::string path = stage + (old.empty() ? "" : ":" + old);
    setenv("PYTHONPATH", path.c_str(), 1);
    std::vector<char *> args;
    for (std::string &a : argv)
      args.push_back(a.data());
    args.push_back(nullptr);
    execvp(args[0], args.data());
    std::fprintf(stderr, "molt-eval: error: --splice needs Python (%s): %s\n", python.c_str(),
                 std::strerror(errno));
    _exit(1);
  }
  close(pipeFd[1]);
  if (pid < 0) {
    close(pipeFd[0]);
    std::fprintf(stderr, "molt-eval: error: fork: %s\n", std::strerror(errno));
    result.exitCode = 1;
    return result;
  }
  char buf[4096];
  ssize_t n;
  while ((n = read(pipeFd[0], buf, sizeof buf)) > 0 || (n < 0 && errno == EINTR))
    if (n > 0)
      result.stdout_.append(buf, static_cast<size_t>(n));
  close(pipeFd[0]);
  int status = 0;
  while (waitpid(pid, &status, 0) < 0 && errno == EINTR) {
  }
  result.exitCode = WIFEXITED(status) ? WEXITSTATUS(status) : 1;
  if (!WIFEXITED(status))
    std::fprintf(stderr, "molt-eval: error: the spliced evaluation (python -m molt.splice) was "
                         "killed by signal %d\n", WTERMSIG(status));
  return result;
}

} // namespace molt::tool
