#!/usr/bin/env python3
"""Compiles randomly drawn valid rank schedules with molt-compile and checks the bundles.

Each spec gets a random d_model, 1-5 buckets of distinct ranks <= d, random counts, a random
gate and penalty; every bucket must appear as its own specialised kernels with its rank,
count and offset as constants. With --verify-nvrtc every kernel is compiled by NVRTC too.
"""
import argparse
import json
import os
import random
import subprocess
import sys


def spec_text(rng, name):
    d = rng.choice([16, 24, 32, 48, 64, 96, 128])
    ranks = sorted(rng.sample(range(1, d + 1), rng.randint(1, min(5, d))), reverse=True)
    counts = [rng.randint(1, 9) for _ in ranks]
    gate = rng.choice(["#molt.gate<jumprelu threshold = 0.05, bandwidth = 0.1>", "#molt.gate<relu>"])
    penalty = rng.choice(["#molt.penalty<tanh c = 2.0, lambda = 0.02, warmup = 0.5>",
                          "#molt.penalty<l1 lambda = 0.001, warmup = 0.0>"])
    text = (f"module {{\n  molt.layer @{name} {{d_model = {d}, element_type = f32,\n"
            f"    schedule = #molt.schedule<ranks = {ranks}, counts = {counts}>,\n"
            f"    gate = {gate}, penalty = {penalty}, decoder_bias = {rng.choice(['true', 'false'])}}}\n}}\n")
    return text, d, list(zip(ranks, counts))


def main():
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--out", required=True)
    ap.add_argument("--seed", type=int, default=1)
    ap.add_argument("--count", type=int, default=4)
    ap.add_argument("--verify-nvrtc", action="store_true")
    args = ap.parse_args()
    rng = random.Random(args.seed)
    os.makedirs(args.out, exist_ok=True)
    for i in range(args.count):
        name = f"random{i}"
        text, d, buckets = spec_text(rng, name)
        spec = os.path.join(args.out, name + ".mlir")
        with open(spec, "w") as f:
            f.write(text)
        bundle = os.path.join(args.out, name)
        cmd = ["molt-compile", spec, "-o", bundle] + (["--verify-nvrtc"] if args.verify_nvrtc else [])
        run = subprocess.run(cmd, capture_output=True, text=True)
        if run.returncode != 0:
            sys.exit(f"random_schedules: error: {spec}: {run.stderr.strip()}")
        kernels = {k["name"]: k for k in json.load(open(os.path.join(bundle, "manifest.json")))["kernels"]}
        offset = 0
        for k, (rank, count) in enumerate(buckets):
            for stem in ("bucket_apply", "bucket_apply_bwd", "frob_norm", "frob_norm_bwd"):
                attrs = kernels[f"{stem}_{k}"]["attrs"]
                want = {"D": d, "R": rank, "N": count, "OFF": offset}
                if attrs != want:
                    sys.exit(f"random_schedules: error: {name} {stem}_{k} has {attrs}, want {want}")
                src = open(os.path.join(bundle, f"{stem}_{k}.cu")).read()
                if f"R = {rank}LL;" not in src:
                    sys.exit(f"random_schedules: error: {name} {stem}_{k}.cu lacks R = {rank}")
            offset += count
        print(f"ok {name} d={d} buckets={buckets}")


if __name__ == "__main__":
    main()
