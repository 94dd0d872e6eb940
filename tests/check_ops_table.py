#!/usr/bin/env python3
"""Checks that the committed renderings of the op table match core/include/molt/ops.def.

`molt-ops` prints the table; tests/fixtures/ops.json (read by the Python fixtures and checks)
and the section of docs/bundle.md between the molt-ops markers must equal its output. With
--write, rewrites both instead (run it after editing ops.def).
"""
import argparse
import os
import subprocess
import sys

ROOT = os.path.normpath(os.path.join(os.path.dirname(__file__), ".."))
JSON = os.path.join(ROOT, "tests", "fixtures", "ops.json")
DOC = os.path.join(ROOT, "docs", "bundle.md")
BEGIN = "<!-- BEGIN molt-ops --markdown: generated from core/include/molt/ops.def by " \
        "tests/check_ops_table.py --write; do not edit -->\n"
END = "<!-- END molt-ops -->\n"


def fail(msg):
    sys.exit(f"check_ops_table: error: {msg}")


def run(tool, *args):
    r = subprocess.run([tool, *args], capture_output=True, text=True)
    if r.returncode != 0:
        fail(f"{tool} {' '.join(args)} failed: {r.stderr.strip()}")
    return r.stdout


def doc_with(section):
    text = open(DOC, encoding="utf-8").read()
    start, end = text.find(BEGIN), text.find(END)
    if start < 0 or end < start:
        fail(f"{DOC} lacks the molt-ops markers")
    return text[:start + len(BEGIN)] + section + text[end:], text


def main():
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--molt-ops", required=True, help="the built molt-ops tool")
    p.add_argument("--write", action="store_true", help="rewrite the renderings")
    a = p.parse_args()
    want_json = run(a.molt_ops)
    want_doc, have_doc = doc_with(run(a.molt_ops, "--markdown"))
    if a.write:
        with open(JSON, "w", encoding="utf-8") as f:
            f.write(want_json)
        with open(DOC, "w", encoding="utf-8") as f:
            f.write(want_doc)
        return
    stale = []
    if not os.path.exists(JSON) or open(JSON, encoding="utf-8").read() != want_json:
        stale.append(os.path.relpath(JSON, ROOT))
    if have_doc != want_doc:
        stale.append(os.path.relpath(DOC, ROOT) + " (molt-ops section)")
    if stale:
        fail(f"{', '.join(stale)} stale against core/include/molt/ops.def; run "
             f"tests/check_ops_table.py --molt-ops {a.molt_ops} --write")
    print("op table renderings current")


if __name__ == "__main__":
    main()
