#!/usr/bin/env python3
"""Checks a bundle written by molt-compile and prints a summary for FileCheck.

Every kernel's source and every device header must be in the bundle; every invocation must bind
exactly the canonical arguments of its op (the table of tests/fixtures/make_fixture.py, which
mirrors core/include/molt/ops.h); every named buffer must be declared or be a param's
companion; every .cu must carry its attrs as compile-time constants and no loop of its own.
"""
import json
import os
import re
import sys

# Importing from the source tree must not leave a __pycache__ among the fixture folders.
sys.dont_write_bytecode = True
sys.path.insert(0, os.path.join(os.path.dirname(__file__), "..", "..", "fixtures"))
from make_fixture import OPS  # noqa: E402


def fail(msg):
    sys.exit(f"check_bundle: error: {msg}")


def main(bundle):
    with open(os.path.join(bundle, "manifest.json")) as f:
        m = json.load(f)
    params = [p["name"] for p in m["params"]]
    owned = {pre + p for p in params for pre in ("", "d_", "m_", "v_")}
    buffers = {b["name"] for b in m["buffers"]}
    kernels = {k["name"]: k for k in m["kernels"]}
    for k in m["kernels"]:
        path = os.path.join(bundle, k["source"])
        if not os.path.exists(path):
            fail(f"{k['source']} is missing")
        src = open(path).read()
        header = re.search(r'#include "(molt_kernels/[^"]+)"', src)
        if not header or not os.path.exists(os.path.join(bundle, header.group(1))):
            fail(f"{k['source']} includes a header the bundle lacks")
        for name, value in k["attrs"].items():
            if isinstance(value, int) and f"{name} = {value}LL;" not in src:
                fail(f"{k['source']} lacks the constant {name} = {value}")
        if re.search(r"\b(for|while)\s*\(", src):
            fail(f"{k['source']} has a runtime loop in the wrapper")
    for entry, calls in m["entry_points"].items():
        for call in calls:
            k = kernels.get(call["kernel"]) or fail(f"{entry} calls unknown {call['kernel']}")
            if sorted(call["args"]) != sorted(OPS[k["op"]]):
                fail(f"{entry}: {k['name']} binds {sorted(call['args'])}")
            for arg, name in call["args"].items():
                names = name.split(",") if arg == "params" else [name]
                for n in names:
                    if n not in owned and n not in buffers:
                        fail(f"{entry}: {k['name']}.{arg} = {n} is not declared")
    model = m["model"]
    print(f"model {model['kind']} {model['name']} d={model['d_model']}")
    print(f"params {' '.join(params)}")
    print(f"kernels {len(kernels)}")
    for entry in ("forward", "eval", "train_step", "jvp"):
        print(f"{entry}: {' '.join(c['kernel'] for c in m['entry_points'][entry])}")


if __name__ == "__main__":
    main(sys.argv[1])
