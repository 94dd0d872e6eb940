// The kernel-op table (molt/ops.def) rendered for readers outside C++: JSON for the Python
// fixtures and checks, Markdown for docs/bundle.md.
#pragma once

#include <string>

namespace molt::ops_table {

/// {"ops": [{"name", "kind", "header", "attrs", "work", "scratch", "grid", "tiles",
/// "args": [{"name", "role", "dtype", "shape"}]}]}, in table order; work, scratch, grid and
/// tiles are the rows' expressions as written in ops.def.
std::string json();

/// The generated table of docs/bundle.md (between its molt-ops markers), newline-terminated.
std::string markdown();

} // namespace molt::ops_table
