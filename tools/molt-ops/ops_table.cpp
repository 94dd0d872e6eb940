// molt-ops' renderings of molt/ops.def (tools/molt-ops/ops_table.h).
#include "ops_table.h"

#include <nlohmann/json.hpp>

#include "molt/ops.h"

namespace molt::ops_table {

namespace {

// The per-row expressions as ops.def spells them (the typed table holds only their values).
struct RowText {
  const char *work, *scratch, *gridX, *gridY, *tileM, *tileN, *tileK;
};
const RowText kRowText[] = {
#define MOLT_OP(name, kind, header, attrs, work, scratch, gx, gy, tm, tn, tk)                      \
  {#work, #scratch, #gx, #gy, #tm, #tn, #tk},
#include "molt/ops.def"
};
static_assert(sizeof(kRowText) / sizeof(RowText) == size_t(OpId::Count));

std::string joined(const std::vector<std::string> &words, const char *sep) {
  std::string s;
  for (size_t i = 0; i < words.size(); ++i)
    s += (i ? sep : "") + words[i];
  return s;
}

} // namespace

std::string json() {
  nlohmann::ordered_json ops = nlohmann::ordered_json::array();
  for (const OpSignature &s : opSignatures()) {
    const RowText &t = kRowText[size_t(s.id)];
    nlohmann::ordered_json args = nlohmann::ordered_json::array();
    for (const OpArg &a : s.arguments)
      args.push_back({{"name", a.name},
                      {"role", argRoleName(a.role)},
                      {"dtype", argDTypeName(a.dtype)},
                      {"shape", argShapeName(a.shape)}});
    ops.push_back({{"name", s.op},
                   {"kind", opKindName(s.kind)},
                   {"header", s.header},
                   {"attrs", s.attrs},
                   {"work", t.work},
                   {"scratch", t.scratch},
                   {"grid", {t.gridX, t.gridY}},
                   {"tiles", {t.tileM, t.tileN, t.tileK}},
                   {"args", args}});
  }
  return nlohmann::ordered_json{{"ops", ops}}.dump(1) + "\n";
}

std::string markdown() {
  std::string s = "| op | kind | attrs | args: role dtype shape, canonical order | device header | "
                  "work | scratch words | default grid |\n|---|---|---|---|---|---|---|---|\n";
  for (const OpSignature &sig : opSignatures()) {
    const RowText &t = kRowText[size_t(sig.id)];
    std::vector<std::string> args;
    for (const OpArg &a : sig.arguments) {
      std::string dtype = a.dtype == ArgDType::F32 ? "" : std::string(" ") + argDTypeName(a.dtype);
      args.push_back("`" + std::string(a.name) + "` " + argRoleName(a.role) + dtype + " " +
                     argShapeName(a.shape));
    }
    s += "| `" + std::string(sig.op) + "` | " + opKindName(sig.kind) + " | " +
         (sig.attrs.empty() ? "—" : joined(sig.attrs, ", ")) + " | " + joined(args, "; ") + " | " +
         sig.header + " | `" + t.work + "` | `" + t.scratch + "` | `" + t.gridX + "`, `" + t.gridY +
         "` |\n";
  }
  return s;
}

} // namespace molt::ops_table
