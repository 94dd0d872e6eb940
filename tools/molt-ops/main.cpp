// molt-ops: prints the kernel-op table of core/include/molt/ops.def for readers outside C++.
#include <cstdio>

#include "../common/cli.h"

#include "ops_table.h"

int main(int argc, char **argv) {
  bool markdown = false;
  CLI::App app{
      "Prints the kernel-op table (core/include/molt/ops.def): JSON by default (read by\n"
      "tests/fixtures/make_fixture.py and tests/lit/compile/check_bundle.py as\n"
      "tests/fixtures/ops.json), or with --markdown the generated table of docs/bundle.md.",
      "molt-ops"};
  app.add_flag("--markdown", markdown, "print the Markdown table instead of JSON");
  if (int rc = molt::tool::parse(app, argc, argv); rc >= 0)
    return rc;
  const std::string text = markdown ? molt::ops_table::markdown() : molt::ops_table::json();
  std::fputs(text.c_str(), stdout);
  return 0;
}
