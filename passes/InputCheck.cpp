// Pre-parse checks of spec text: blank files and runaway bracket nesting (InputCheck.h).
#include "passes/InputCheck.h"

namespace molt {

std::optional<SpecTextProblem> checkSpecText(llvm::StringRef text) {
  int line = 1, col = 1, depth = 0;
  bool blank = true;
  for (size_t i = 0; i < text.size(); ++i, ++col) {
    char c = text[i];
    if (c == '\n') {
      ++line;
      col = 0;
      continue;
    }
    if (c == '/' && text.substr(i).starts_with("//")) { // comment: skip to end of line
      size_t end = text.find('\n', i);
      col += int((end == llvm::StringRef::npos ? text.size() : end) - i) - 1;
      i = (end == llvm::StringRef::npos ? text.size() : end) - 1;
      continue;
    }
    if (c != ' ' && c != '\t' && c != '\r')
      blank = false;
    if (c == '"') { // string literal: brackets inside do not nest
      for (++i, ++col; i < text.size() && text[i] != '"' && text[i] != '\n'; ++i, ++col)
        if (text[i] == '\\' && i + 1 < text.size() && text[i + 1] != '\n')
          ++i, ++col;
      if (i < text.size() && text[i] == '\n')
        --i, --col; // let the newline be counted above
      continue;
    }
    bool open = c == '[' || c == '{' || c == '(' || c == '<';
    bool close = c == ']' || c == '}' || c == ')' || (c == '>' && !(i > 0 && text[i - 1] == '-'));
    if (open && ++depth > kMaxNesting)
      return SpecTextProblem{line, col,
                             "brackets nested more than " + std::to_string(kMaxNesting) + " deep"};
    if (close && depth > 0)
      --depth;
  }
  if (blank)
    return SpecTextProblem{1, 1, "empty input: expected a module of molt spec ops"};
  return std::nullopt;
}

} // namespace molt
