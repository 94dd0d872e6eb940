#!/usr/bin/env python3
"""Every environment knob is read in one place and documented in one table.

  check_config.py SRC            fails (exit 1, one line per finding) when
    * C++ outside core/src/config.cpp calls getenv: for any name under core/, runtime/, study/,
      kernels/, dialect/, passes/, tools/, python/, bench/, fuzz/; for a MOLT_ name in tests/
      too (tests may read their harness's own variables, e.g. TEST_TMPDIR). The one exception
      is a reader that core/include/molt/config.def names by its file (code that links no molt
      library: the emulated kernel module's simt.h),
    * a MOLT_ variable read anywhere (C++ getenv or config::raw, Python os.environ / os.getenv,
      a shell script's ${MOLT_X:-...}) has no row in config.def,
    * a row's knob is read nowhere (its accessor unused and its name read by no script),
    * docs/config.md's generated table differs from config.def.
  check_config.py SRC --write    rewrites docs/config.md's table.
  check_config.py --self-test    plants each kind of finding in a scratch tree and fails unless
                                 every one is reported.
"""
import os
import re
import shutil
import sys
import tempfile

DEF = os.path.join("core", "include", "molt", "config.def")
READER = os.path.join("core", "src", "config.cpp")
DOC = os.path.join("docs", "config.md")
BEGIN = "<!-- BEGIN config table: generated from core/include/molt/config.def by " \
        "tests/check_config.py --write; do not edit -->\n"
END = "<!-- END config table -->\n"
CXX_EXT = (".h", ".cpp", ".cuh", ".cu", ".inc", ".def", ".cc")
STRICT = ("core", "runtime", "study", "kernels", "dialect", "passes", "tools", "python", "bench",
          "fuzz")
SKIP_DIRS = {".git", "node_modules", "__pycache__"}

GETENV = re.compile(r"\b(?:std::)?(?:secure_)?getenv\s*\(\s*([^)]*)\)")
RAW = re.compile(r"\bconfig::raw\s*\(\s*\"([A-Z0-9_]+)\"")
PY_READ = re.compile(r"\b(?:os\.)?(?:environ(?:\.get|\.setdefault|\.pop)?\s*[\[(]|getenv\s*\()\s*"
                     r"[\"']([A-Z0-9_]+)[\"']")
SH_READ = re.compile(r"\$\{(MOLT_[A-Z0-9_]+)(?::?[-+=?]|\})|\$(MOLT_[A-Z0-9_]+)\b")


def strip_cxx_comments(text):
    """Blanks // and /* */ comments (keeping line numbers) so prose that names getenv is not a call."""
    out, i, n = [], 0, len(text)
    while i < n:
        c = text[i]
        if c == '"':
            j = i + 1
            while j < n and text[j] != '"':
                j += 2 if text[j] == "\\" else 1
            out.append(text[i:j + 1])
            i = j + 1
        elif text.startswith("//", i):
            j = text.find("\n", i)
            i = n if j < 0 else j
        elif text.startswith("/*", i):
            j = text.find("*/", i + 2)
            j = n if j < 0 else j + 2
            out.append("\n" * text.count("\n", i, j))
            i = j
        else:
            out.append(c)
            i += 1
    return "".join(out)


def split_args(body):
    """Top-level comma-separated fields of a macro call; adjacent string literals joined."""
    fields, cur, depth, i = [], [], 0, 0
    while i < len(body):
        c = body[i]
        if c == '"':
            j = i + 1
            while body[j] != '"':
                j += 2 if body[j] == "\\" else 1
            cur.append(body[i:j + 1])
            i = j + 1
            continue
        if c in "([{":
            depth += 1
        elif c in ")]}":
            depth -= 1
        elif c == "," and depth == 0:
            fields.append("".join(cur).strip())
            cur = []
            i += 1
            continue
        cur.append(c)
        i += 1
    fields.append("".join(cur).strip())
    return [literal(f) for f in fields]


def literal(field):
    parts = re.findall(r'"((?:[^"\\]|\\.)*)"', field)
    if parts and re.fullmatch(r'(\s*"(?:[^"\\]|\\.)*"\s*)+', field):
        return "".join(parts)
    return field


def parse_table(root):
    text = strip_cxx_comments(open(os.path.join(root, DEF), encoding="utf-8").read())
    rows = []
    for m in re.finditer(r"^\s*MOLT_CONFIG\(", text, re.M):
        depth, i = 1, m.end()
        while depth:
            if text[i] == '"':
                i = text.index('"', i + 1)
            elif text[i] == "(":
                depth += 1
            elif text[i] == ")":
                depth -= 1
            i += 1
        f = split_args(text[m.end():i - 1])
        if len(f) != 6:
            raise SystemExit(f"check_config: error: {DEF}: a row with {len(f)} fields, not 6")
        rows.append(dict(id=f[0], env=f[1], type=f[2], fallback=f[3], readers=f[4], doc=f[5]))
    return rows


def render(rows):
    out = ["| variable | type | unset or empty | read by | what it sets |\n",
           "|---|---|---|---|---|\n"]
    for r in rows:
        fallback = {"Text": lambda v: f"`{v}`" if v else "—", "Flag": lambda v: "on" if v == "true" else "off",
                    "Int": lambda v: v}[r["type"]](r["fallback"])
        doc = r["doc"].replace("|", "\\|")
        out.append(f"| `{r['env']}` | {r['type'].lower()} | {fallback} | {r['readers']} | {doc} |\n")
    return "".join(out)


def walk(root):
    for d, dirs, files in os.walk(root):
        rel_d = os.path.relpath(d, root)
        top = rel_d.split(os.sep)[0]
        dirs[:] = [x for x in dirs if x not in SKIP_DIRS and not (rel_d == "." and x.startswith("build"))
                   and not (rel_d == "." and x == "out")]
        if top.startswith("build"):
            continue
        for f in files:
            yield os.path.normpath(os.path.join(rel_d, f))


def first_line(path, root):
    try:
        with open(os.path.join(root, path), "rb") as f:
            return f.readline()
    except OSError:
        return b""


def is_python(path, root):
    if path.endswith(".py"):
        return True
    first = first_line(path, root)
    return first.startswith(b"#!") and b"python" in first


def is_shell(path, root):
    if path.endswith(".sh"):
        return True
    if path.split(os.sep)[0] not in ("scripts", ".ci"):
        return False
    first = first_line(path, root)
    return first.startswith(b"#!") and b"sh" in first and b"python" not in first


def check(root):
    rows = parse_table(root)
    by_env = {r["env"]: r for r in rows}
    findings, read_names, cxx_text = [], set(), []
    for rel in walk(root):
        path = os.path.join(root, rel)
        top = rel.split(os.sep)[0]
        if rel.endswith(CXX_EXT):
            try:
                text = strip_cxx_comments(open(path, encoding="utf-8", errors="replace").read())
            except OSError:
                continue
            if rel not in (DEF, os.path.join("core", "include", "molt", "config.h")):
                cxx_text.append(text)
            for m in RAW.finditer(text):
                read_names.add(m.group(1))
            if rel == READER:
                continue
            for m in GETENV.finditer(text):
                arg = m.group(1).strip()
                name = arg[1:-1] if re.fullmatch(r'"[A-Za-z0-9_]+"', arg) else None
                line = text.count("\n", 0, m.start()) + 1
                if name:
                    read_names.add(name)
                row = by_env.get(name) if name else None
                if row and rel.replace(os.sep, "/") in [x.strip() for x in row["readers"].split(",")]:
                    continue  # a reader the table names (it links no molt library)
                if top == "tests" and name and not name.startswith("MOLT_"):
                    continue  # the test harness's own variable
                if top not in STRICT and top != "tests":
                    continue
                what = name or f"a name computed at run time ({arg})"
                findings.append(f"{rel}:{line}: getenv of {what} outside {READER}: add a row to "
                                f"{DEF} and call its molt::config accessor")
        elif is_python(rel, root) and rel != os.path.join("tests", "check_config.py"):
            text = open(path, encoding="utf-8", errors="replace").read()
            read_names.update(m.group(1) for m in PY_READ.finditer(text))
        elif is_shell(rel, root):
            text = open(path, encoding="utf-8", errors="replace").read()
            for m in SH_READ.finditer(text):
                read_names.add(m.group(1) or m.group(2))
    for name in sorted(read_names):
        if name.startswith("MOLT_") and name not in by_env:
            findings.append(f"{name} is read but has no row in {DEF}")
    all_cxx = "\n".join(cxx_text)
    for r in rows:
        used = re.search(r"\b" + re.escape(r["id"]) + r"\s*\(\s*\)", all_cxx)
        if not used and r["env"] not in read_names:
            findings.append(f"{DEF}: {r['env']} is read nowhere (accessor config::{r['id']}() "
                            f"unused and no script reads it): drop the row or read it")
    doc = os.path.join(root, DOC)
    text = open(doc, encoding="utf-8").read() if os.path.exists(doc) else ""
    start, end = text.find(BEGIN), text.find(END)
    if start < 0 or end < start:
        findings.append(f"{DOC} lacks the generated table's markers")
    elif text[start + len(BEGIN):end] != render(rows):
        findings.append(f"{DOC} is stale: run tests/check_config.py {root} --write")
    return findings


def write(root):
    rows = parse_table(root)
    doc = os.path.join(root, DOC)
    text = open(doc, encoding="utf-8").read()
    start, end = text.find(BEGIN), text.find(END)
    if start < 0 or end < start:
        raise SystemExit(f"check_config: error: {DOC} lacks the generated table's markers")
    with open(doc, "w", encoding="utf-8") as f:
        f.write(text[:start + len(BEGIN)] + render(rows) + text[end:])


def self_test():
    here = os.path.normpath(os.path.join(os.path.dirname(os.path.abspath(__file__)), ".."))
    scratch = tempfile.mkdtemp(prefix="check-config-")
    try:
        for rel in (DEF, READER, DOC, os.path.join("core", "include", "molt", "config.h")):
            os.makedirs(os.path.dirname(os.path.join(scratch, rel)), exist_ok=True)
            shutil.copy(os.path.join(here, rel), os.path.join(scratch, rel))
        # Every accessor used once, as the real tree does.
        rows = parse_table(scratch)
        os.makedirs(os.path.join(scratch, "runtime", "src"))
        with open(os.path.join(scratch, "runtime", "src", "uses.cpp"), "w") as f:
            f.write("// getenv in a comment is no call\n" +
                    "".join(f"auto v{i} = molt::config::{r['id']}();\n" for i, r in enumerate(rows)))
        clean = check(scratch)
        if clean:
            print("check_config: self-test: the clean scratch tree has findings:\n  " +
                  "\n  ".join(clean))
            return 1
        plants = {
            os.path.join("runtime", "src", "planted.cpp"):
                ('const char *d = std::getenv("MOLT_KERNEL_DIR");\n', "runtime/src/planted.cpp:1"),
            os.path.join("study", "src", "computed.cpp"):
                ("const char *v = getenv(name);\n", "a name computed at run time"),
            os.path.join("python", "molt", "planted.py"):
                ('import os\nx = os.environ.get("MOLT_UNLISTED_KNOB")\n', "MOLT_UNLISTED_KNOB"),
            os.path.join("scripts", "planted"):
                ('#!/bin/bash\nx=${MOLT_UNLISTED_SCRIPT_KNOB:-1}\n', "MOLT_UNLISTED_SCRIPT_KNOB"),
        }
        missed = []
        for rel, (text, expect) in plants.items():
            os.makedirs(os.path.dirname(os.path.join(scratch, rel)), exist_ok=True)
            with open(os.path.join(scratch, rel), "w") as f:
                f.write(text)
            if not any(expect in x for x in check(scratch)):
                missed.append(f"{rel} ({expect})")
            os.remove(os.path.join(scratch, rel))
        with open(os.path.join(scratch, DOC), "a") as f:
            f.write("")
        text = open(os.path.join(scratch, DOC)).read()
        with open(os.path.join(scratch, DOC), "w") as f:
            f.write(text.replace("| `MOLT_KERNEL_DIR` |", "| `MOLT_KERNEL_DIRS` |"))
        if not any("stale" in x for x in check(scratch)):
            missed.append("a stale docs/config.md")
        shutil.copy(os.path.join(here, DOC), os.path.join(scratch, DOC))
        with open(os.path.join(scratch, "runtime", "src", "uses.cpp"), "w") as f:
            f.write("int x;\n")
        if not any("read nowhere" in x for x in check(scratch)):
            missed.append("a row read nowhere")
        if missed:
            print("check_config: self-test: not reported: " + ", ".join(missed))
            return 1
        print("check_config: self-test: every planted finding reported")
        return 0
    finally:
        shutil.rmtree(scratch, ignore_errors=True)


def main(argv):
    if argv[1:2] in (["-h"], ["--help"]):
        print(__doc__)
        return 0
    if argv[1:] == ["--self-test"]:
        return self_test()
    if len(argv) not in (2, 3) or (len(argv) == 3 and argv[2] != "--write"):
        print("check_config: error: usage: check_config.py SRC [--write] | --self-test",
              file=sys.stderr)
        return 1
    root = argv[1]
    if len(argv) == 3:
        write(root)
        return 0
    findings = check(root)
    for f in findings:
        print(f)
    return 1 if findings else 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
