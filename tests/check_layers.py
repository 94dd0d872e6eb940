#!/usr/bin/env python3
"""The layering rules of docs/architecture.md §2, checked on the source tree and the build.

  check_layers.py SRC [--build DIR]   fails (exit 1, one line per violation) when
    * a file includes a header of a layer it may not see (every header is spelled
      `molt/<name>.h`; the folder holding <name>.h says its layer),
    * a file outside runtime/ reaches a runtime-private header (runtime/src/...); tests and
      benchmarks may, to reach the float64 executor and per-kernel timings,
    * core/, kernels/, runtime/ or study/ include an MLIR or LLVM header,
    * (with --build) a compiler-only binary (molt-opt, molt-compile) links molt_runtime or
      molt_study.
  check_layers.py --self-test          plants each kind of violation in a scratch tree and
    fails unless every one is reported, so the check itself can fail.
"""
import os
import re
import shutil
import sys
import tempfile

# Who may include whom. Tools, python, tests, bench, fuzz and examples sit on top.
ALLOWED = {
    "core": {"core"},
    "kernels": {"kernels", "core"},
    "runtime": {"runtime", "kernels", "core"},
    "study": {"study", "runtime", "kernels", "core"},
    "dialect": {"dialect", "core", "mlir"},
    "passes": {"passes", "dialect", "core", "mlir"},
}
NO_MLIR = {"core", "kernels", "runtime", "study"}
TOP = {"tools", "python", "tests", "bench", "fuzz", "examples"}
SOURCE_EXT = (".h", ".cpp", ".cuh", ".cu", ".def", ".inc")
INCLUDE = re.compile(r'^\s*#\s*include\s*([<"])([^>"]+)[>"]')


def public_headers(root):
    """name -> layer, for every molt/<name> under <layer>/include/molt."""
    table = {}
    for layer in ("core", "runtime", "study"):
        d = os.path.join(root, layer, "include", "molt")
        if os.path.isdir(d):
            for name in os.listdir(d):
                table[name] = layer
    return table


def layer_of_include(inc, angle, headers, root, src_dir):
    """The layer an include names, or None for system and third-party headers."""
    top = inc.split("/", 1)[0]
    if top in ("mlir", "llvm", "llvm-c"):
        return "mlir"
    if inc.startswith("molt/"):
        return headers.get(inc[len("molt/"):], "unknown-molt")
    if top == "molt_kernels" or top == "kernels":
        return "kernels"
    if top in ("dialect", "passes"):
        return top
    if angle:
        return None
    # A quoted relative include: beside the file, or (runtime-private) under runtime/src.
    if os.path.exists(os.path.join(src_dir, inc)):
        rel = os.path.relpath(os.path.join(src_dir, inc), root)
        return "runtime-private" if rel.startswith("runtime" + os.sep + "src") else None
    if os.path.exists(os.path.join(root, "runtime", "src", inc)):
        return "runtime-private"
    return None


def check_tree(root):
    problems = []
    headers = public_headers(root)
    for layer in list(ALLOWED) + sorted(TOP):
        base = os.path.join(root, layer)
        for dirpath, dirnames, files in os.walk(base):
            dirnames[:] = [d for d in dirnames if d not in ("__pycache__", "corpus")]
            for f in files:
                if not f.endswith(SOURCE_EXT):
                    continue
                path = os.path.join(dirpath, f)
                rel = os.path.relpath(path, root)
                with open(path, encoding="utf-8", errors="replace") as fh:
                    for lineno, line in enumerate(fh, 1):
                        m = INCLUDE.match(line)
                        if not m:
                            continue
                        angle, inc = m.group(1) == "<", m.group(2)
                        seen = layer_of_include(inc, angle, headers, root, dirpath)
                        if seen is None:
                            continue
                        where = f"{rel}:{lineno}: includes {inc}"
                        if seen == "unknown-molt":
                            problems.append(f"{where}, which no layer's include/molt/ holds")
                        elif seen == "runtime-private" and layer not in ("runtime", "tests", "bench"):
                            problems.append(f"{where}, a runtime-private header (only runtime/, tests/ and bench/ may reach them)")
                        elif seen == "mlir" and layer in NO_MLIR:
                            problems.append(f"{where}: {layer}/ must build without MLIR/LLVM")
                        elif layer in ALLOWED and seen not in ALLOWED[layer] and seen != "runtime-private":
                            problems.append(f"{where}: {layer}/ may not see {seen}/ (docs/architecture.md §2)")
    return problems


def check_links(build):
    """Compiler-only binaries must not link the runtime or the study library."""
    ninja = os.path.join(build, "build.ninja")
    if not os.path.exists(ninja):
        return [f"{ninja}: missing (configure the build first)"]
    problems, found = [], set()
    with open(ninja, encoding="utf-8", errors="replace") as fh:
        text = fh.read()
    for block in re.split(r"\n(?=build )", text):
        m = re.match(r"build (\S*bin/(molt-opt|molt-compile))\s*:", block)
        if not m:
            continue
        found.add(m.group(2))
        for lib in ("libmolt_runtime.a", "libmolt_study.a"):
            if lib in block:
                problems.append(f"{m.group(2)} links {lib}: the compiler may link molt_core only")
    if not found:
        problems.append("no molt-opt/molt-compile link rule in build.ninja (is the compiler built?)")
    return problems


def self_test():
    """Each planted violation must be reported; a clean copy must pass."""
    src = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    plants = {
        "core/src/planted.cpp": '#include "molt/backend.h"\n',          # floor sees runtime
        "kernels/cpu/planted.cpp": '#include "molt/trainer.h"\n',       # kernels see study
        "runtime/src/planted.cpp": '#include "molt/run.h"\n',           # runtime sees study
        "study/src/planted.cpp": '#include "mlir/IR/Builders.h"\n',     # MLIR below the compiler
        "passes/planted.cpp": '#include "molt/evaluator.h"\n',          # compiler sees study
        "tools/molt-tune/planted.cpp": '#include "cpu/cpu_executor.h"\n',  # runtime-private
    }
    with tempfile.TemporaryDirectory() as tmp:
        for layer in list(ALLOWED) + sorted(TOP):
            if os.path.isdir(os.path.join(src, layer)):
                shutil.copytree(os.path.join(src, layer), os.path.join(tmp, layer),
                                ignore=shutil.ignore_patterns("__pycache__", "corpus", "*.safetensors"))
        clean = check_tree(tmp)
        if clean:
            print("self-test: the clean tree already fails:\n" + "\n".join(clean))
            return 1
        for rel, text in plants.items():
            with open(os.path.join(tmp, rel), "w") as fh:
                fh.write(text)
        found = check_tree(tmp)
        missed = [rel for rel in plants if not any(p.startswith(rel + ":") for p in found)]
        if missed:
            print("self-test: planted violations not reported: " + ", ".join(missed))
            return 1
        # A compiler binary that links the runtime.
        fake = os.path.join(tmp, "build")
        os.makedirs(fake)
        with open(os.path.join(fake, "build.ninja"), "w") as fh:
            fh.write("build bin/molt-opt: CXX_EXECUTABLE_LINKER a.o | lib/libmolt_runtime.a\n"
                     "  LINK_LIBRARIES = lib/libmolt_core.a lib/libmolt_runtime.a\n")
        if not check_links(fake):
            print("self-test: a compiler binary linking molt_runtime was not reported")
            return 1
    print(f"self-test: all {len(plants) + 1} planted violations reported")
    return 0


def main(argv):
    if argv[1:] == ["--self-test"]:
        return self_test()
    if len(argv) not in (2, 4) or (len(argv) == 4 and argv[2] != "--build"):
        print("usage: check_layers.py SRC [--build DIR] | --self-test", file=sys.stderr)
        return 2
    problems = check_tree(argv[1])
    if len(argv) == 4:
        problems += check_links(argv[3])
    for p in problems:
        print(p)
    if problems:
        print(f"{len(problems)} layering violation(s)")
        return 1
    print("layers: every include and link respects docs/architecture.md §2")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
