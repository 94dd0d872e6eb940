#!/usr/bin/env python3
"""Compares a compiled bundle with the hand-written plan of tests/fixtures/make_fixture.py.

The fixture writes docs/bundle.md's entry points by hand; the compiler derives them (the
backward from the ops' gradient rules). Params, kernels (op and attrs) and every invocation
must agree, up to the names of internal buffers (which the contract leaves free) and the
order of independent kernels in train_step and the caller-seeded gradient entries.
"""
import json
import os
import sys

sys.path.insert(0, os.path.join(os.path.dirname(__file__), "..", "..", "fixtures"))
import make_fixture  # noqa: E402

# c is meaningless for an l1 penalty; the compiler records 0 (the model omits it).
# Internal buffers the compiler names after their primal ("d_<name>"), the fixture otherwise.
RENAME = {"d_pair_gate": "pair_dgate"}


def fail(msg):
    sys.exit(f"compare_fixture: error: {msg}")


def calls(manifest, entry):
    kernels = {k["name"]: k for k in manifest["kernels"]}
    out = []
    for c in manifest["entry_points"][entry]:
        k = kernels[c["kernel"]]
        args = tuple(sorted((a, RENAME.get(v, v)) for a, v in c["args"].items()))
        out.append((k["name"], k["op"], json.dumps(k["attrs"], sort_keys=True), args))
    return out


def main(bundle, kind):
    compiled = json.load(open(os.path.join(bundle, "manifest.json")))
    m = compiled["model"]
    if kind == "molt":
        g, p = m["gate"], m["penalty"]
        fixture = make_fixture.molt_manifest(
            m["name"], m["d_model"], [(b["rank"], b["count"]) for b in m["buckets"]],
            gate=g["kind"], threshold=g.get("threshold", 0.1), bandwidth=g.get("bandwidth", 0.05),
            penalty=p["kind"], c=p.get("c", 0.0), lam=p["lambda"], warmup=p["warmup"],
            decoder_bias=m["decoder_bias"])
    else:
        g, p = m["gate"], m["penalty"]
        fixture = make_fixture.transcoder_manifest(
            m["name"], m["d_model"], m["features"], gate=g["kind"],
            threshold=g.get("threshold", 0.1), bandwidth=g.get("bandwidth", 0.05), k=g.get("k", 0),
            skip=m["skip"], penalty=p["kind"], c=p.get("c", 0.0), lam=p["lambda"],
            warmup=p["warmup"], decoder_bias=m["decoder_bias"])
    if compiled["model"] != fixture["model"]:
        fail(f"model {compiled['model']} != {fixture['model']}")
    strip = lambda ps: [(q["name"], q["shape"], q["init"]["kind"]) for q in ps]  # noqa: E731
    if strip(compiled["params"]) != strip(fixture["params"]):
        fail(f"params {strip(compiled['params'])} != {strip(fixture['params'])}")
    ordered = ("forward", "eval", "jvp")
    for entry in ("forward", "eval", "train_step", "jvp", "backward", "input_grad", "vjp"):
        a, b = calls(compiled, entry), calls(fixture, entry)
        same = a == b if entry in ordered else sorted(a) == sorted(b)
        if not same:
            extra = [x for x in a if x not in b]
            missing = [x for x in b if x not in a]
            fail(f"{entry} differs: compiled only {extra}; fixture only {missing}")
        print(f"{entry}: {len(a)} invocations match")


if __name__ == "__main__":
    main(sys.argv[1], sys.argv[2])
