// What every tool's main shares: CLI11 parsing with molt's error convention (one line
// "tool: error: cause" on stderr, exit 1; --help exits 0).
#pragma once

#include <cstdio>
#include <string>

#include <CLI/CLI.hpp>

namespace molt::tool {

/// Prints "tool: error: message" as one line: a message that spans several (a library's
/// error text) has its line breaks turned into "; ", so scripts can rely on one line.
inline int fail(const std::string &tool, const std::string &message) {
  std::string line;
  for (char c : message)
    if (c == '\n')
      line += line.empty() || line.back() == ' ' ? "" : "; ";
    else if (c != '\r')
      line += c;
  while (!line.empty() && (line.back() == ' ' || line.back() == ';'))
    line.pop_back();
  std::fprintf(stderr, "%s: error: %s\n", tool.c_str(), line.c_str());
  return 1;
}

/// Parses argv; returns -1 to go on, or the exit code to return from main.
inline int parse(CLI::App &app, int argc, char **argv) {
  try {
    app.parse(argc, argv);
  } catch (const CLI::CallForHelp &e) {
    return app.exit(e);
  } catch (const CLI::ParseError &e) {
    return fail(app.get_name(), e.what());
  }
  return -1;
}

} // namespace molt::tool
