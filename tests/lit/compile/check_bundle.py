#!/usr/bin/env python3
"""Checks a bundle written by molt-compile and prints a summary for FileCheck.

Every kernel's source and every device header must be in the bundle; every kernel must carry
exactly the attrs of its op and include its op's device header, and every invocation must bind
exactly the op's canonical arguments (tests/fixtures/ops.json, molt-ops' rendering of
core/include/molt/ops.def); every named buffer must be declared or be a param's companion;
every .cu must carry its attrs as compile-time constants and no loop of its own.
"""
import json
import os
import re
import sys

with open(os.path.join(os.path.dirname(__file__), "..", "..", "fixtures", "ops.json")) as _f:
    OP_TABLE = {op["name"]: op for op in json.load(_f)["ops"]}


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
        op = OP_TABLE.get(k["op"]) or fail(f"{k['name']}: unknown op {k['op']}")
        header = re.search(r'#include "(molt_kernels/[^"]+)"', src)
        if not header or not os.path.exists(os.path.join(bundle, header.group(1))):
            fail(f"{k['source']} includes a header the bundle lacks")
        if header.group(1) != "molt_kernels/" + op["header"]:
            fail(f"{k['source']} includes {header.group(1)}, op {k['op']} is in {op['header']}")
        if sorted(k["attrs"]) != sorted(op["attrs"]):
            fail(f"{k['name']} has attrs {sorted(k['attrs'])}, op {k['op']} takes {op['attrs']}")
        for name, value in k["attrs"].items():
            if isinstance(value, int) and f"{name} = {value}LL;" not in src:
                fail(f"{k['source']} lacks the constant {name} = {value}")
        if re.search(r"\b(for|while)\s*\(", src):
            fail(f"{k['source']} has a runtime loop in the wrapper")
    for entry, calls in m["entry_points"].items():
        for call in calls:
            k = kernels.get(call["kernel"]) or fail(f"{entry} calls unknown {call['kernel']}")
            if sorted(call["args"]) != sorted(a["name"] for a in OP_TABLE[k["op"]]["args"]):
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
    for entry in ("forward", "eval", "train_step", "jvp", "backward", "input_grad", "vjp"):
        print(f"{entry}: {' '.join(c['kernel'] for c in m['entry_points'][entry])}")


if __name__ == "__main__":
    main(sys.argv[1])
