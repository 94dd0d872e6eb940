#!/usr/bin/env python3
"""Smoke test of scripts/compare: its matched-L0 interpolation on synthetic rows, then tiny
molt-synth data, two budgets, a few steps per model; checks that the CSV names every model at
every budget with finite metrics, and that the PNGs are PNGs."""
import argparse
import csv
import importlib.machinery
import importlib.util
import json
import math
import os
import shutil
import subprocess
import sys

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.realpath(__file__))))
SKIP = 77


def check(cond, what):
    if not cond:
        print(f"compare_smoke: FAIL: {what}", file=sys.stderr)
        sys.exit(1)


def load_compare():
    path = os.path.join(ROOT, "scripts", "compare")  # no .py suffix, so an explicit loader
    loader = importlib.machinery.SourceFileLoader("compare", path)
    module = importlib.util.module_from_spec(importlib.util.spec_from_loader("compare", loader))
    loader.exec_module(module)
    return module


def check_matched():
    """Interpolation linear in log L0 between a kind's bracketing runs, "-" outside them."""
    compare = load_compare()
    def row(model, lam, l0, rank, nmse, cos):
        return {"budget": 1, "model": model, "u_init": "", "lambda": lam, "l0": l0,
                "active_rank": rank, "nmse": nmse, "jacobian_cosine": cos}
    rows = [row("molt", 0.01, 10, 100, 0.30, 0.40), row("molt", 0.001, 40, 400, 0.20, 0.50),
            row("uniform", 0.001, 15, 240, 0.22, 0.45),
            row("transcoder", 1, 5, 5, 0.40, 0.20), row("transcoder", 0.1, 20, 20, 0.30, 0.30),
            row("transcoder", 0.01, 80, 80, 0.25, 0.35)]
    mrows, notes = compare.matched(rows, "l0")
    got = {(r["target"], r["model"]): (r["nmse"], r["jacobian_cosine"]) for r in mrows}
    # Targets: every run's L0 inside [10, 40], where both the MOLT and the transcoder have runs.
    # Each target between two runs sits halfway in log L0 (10 of 5..20, 20 of 10..40, 40 of
    # 20..80), so it gets the mean of their metrics; the single uniform run matches only itself.
    check(sorted({t for t, _ in got}) == [10, 15, 20, 40], f"targets {sorted(got)}")
    want = {(10, "molt"): (0.30, 0.40), (10, "transcoder"): (0.35, 0.25), (10, "uniform"): None,
            (15, "uniform"): (0.22, 0.45), (20, "molt"): (0.25, 0.45),
            (20, "transcoder"): (0.30, 0.30), (40, "transcoder"): (0.275, 0.325),
            (40, "molt"): (0.20, 0.50), (40, "uniform"): None}
    for key, value in want.items():
        if value is None:
            check(got[key] == ("", ""), f"{key} extrapolated: {got[key]}")
        else:
            check(all(math.isclose(a, b, abs_tol=1e-12) for a, b in zip(got[key], value)),
                  f"{key}: {got[key]} != {value}")
    check(notes == [], f"unexpected notes {notes}")
    # On active rank the MOLT spans 100-400 and the transcoder 5-80: nothing to match.
    mrows, notes = compare.matched(rows, "active_rank")
    check(mrows == [] and len(notes) == 1 and "no common active rank" in notes[0], f"{notes}")


def main():
    p = argparse.ArgumentParser(description=__doc__)
    p.add_argument("--bin", required=True, help="folder with molt-synth, molt-opt, molt-train, molt-eval")
    p.add_argument("--work", required=True, help="scratch folder (emptied first)")
    args = p.parse_args()
    venv = os.path.join(ROOT, "build", ".venv", "bin", "python")
    python = venv if os.access(venv, os.X_OK) else sys.executable
    if subprocess.run([python, "-c", "import matplotlib"], capture_output=True).returncode:
        print("compare_smoke: matplotlib is missing (scripts/bootstrap installs it); skipped")
        return SKIP

    check_matched()
    shutil.rmtree(args.work, ignore_errors=True)
    data, out = os.path.join(args.work, "data"), os.path.join(args.work, "out")
    subprocess.run([os.path.join(args.bin, "molt-synth"), "--out", data, "--d", "32",
                    "--hidden", "128", "--rows", "2048", "--val-rows", "256"],
                   check=True, stdout=subprocess.DEVNULL)
    cmd = [python, os.path.join(ROOT, "scripts", "compare"), "--data", data, "--out", out,
           "--bin", args.bin, "--budgets", "1,2", "--steps", "6", "--batch", "64",
           "--lambdas", "0.001", "--transcoder-lambdas", "0.01", "--molt-u-init", "1,0.5", "--jacobian-rows", "32",
           "--device", "cpu"]
    r = subprocess.run(cmd, capture_output=True, text=True)
    check(r.returncode == 0, f"scripts/compare exited {r.returncode}: {r.stderr.strip()[-400:]}")

    with open(os.path.join(out, "compare.csv")) as f:
        rows = list(csv.DictReader(f))
    seen = {(row["budget"], row["model"]) for row in rows}
    want = {(b, m) for b in ("1", "2") for m in ("molt", "uniform", "transcoder")}
    check(seen == want, f"CSV rows {sorted(seen)} != {sorted(want)}")
    check(len(rows) == 10, f"{len(rows)} rows, want 2 budgets x (2 MOLTs x 2 U inits + 1 transcoder)")
    for row in rows:
        for key in ("nmse", "l0", "active_rank", "jacobian_cosine", "parameters"):
            check(math.isfinite(float(row[key])), f"{row['model']} N={row['budget']}: {key} = {row[key]}")
        check(-1.0 <= float(row["jacobian_cosine"]) <= 1.0, f"cosine out of range: {row}")
        check(float(row["nmse"]) >= 0 and float(row["l0"]) >= 0, f"negative metric: {row}")
    # Same budget → nearly the same size: the uniform MOLT and the transcoder never exceed the
    # reference MOLT and stay within 10% of it (the tiny d=32 budget is coarse).
    for b in ("1", "2"):
        size = {row["model"]: int(row["parameters"]) for row in rows if row["budget"] == b}
        for m in ("uniform", "transcoder"):
            check(0.9 * size["molt"] <= size[m] <= size["molt"], f"N={b} {m} has {size[m]} "
                  f"parameters vs the MOLT's {size['molt']}")
    for model in ("MOLT (reference schedule)", "MOLT (uniform rank)", "transcoder (matched)"):
        check(model in r.stdout, f"table lacks {model}")
    # --molt-u-init 0.5 halves the initial std of every U factor and nothing else.
    def inits(run):
        with open(os.path.join(out, "runs", run, "bundle", "manifest.json")) as f:
            return {p["name"]: p["init"] for p in json.load(f)["params"]}
    plain, scaled = inits("N1-molt-lam0.001"), inits("N1-molt-lam0.001-u0.5")
    check(plain.keys() == scaled.keys(), "the scaled bundle has other params")
    for name, init in plain.items():
        if name.startswith("u"):
            check(math.isclose(scaled[name]["std"], 0.5 * init["std"]), f"{name}: {scaled[name]}")
        else:
            check(scaled[name] == init, f"{name} changed: {init} -> {scaled[name]}")
    for png in ("compare.png", "compare-rank.png"):
        with open(os.path.join(out, png), "rb") as f:
            check(f.read(8) == b"\x89PNG\r\n\x1a\n", f"{png} is not a PNG")
    with open(os.path.join(out, "compare-matched.csv")) as f:
        check(next(csv.reader(f))[:3] == ["budget", "axis", "target"], "compare-matched.csv header")
    check("Matched L0" in r.stdout and "Matched active rank" in r.stdout, "matched tables missing")

    # Rerunning finds every run finished (eval.json) and trains nothing again.
    r2 = subprocess.run(cmd, capture_output=True, text=True)
    check(r2.returncode == 0, f"rerun exited {r2.returncode}")
    with open(os.path.join(out, "compare.csv")) as f:
        check(list(csv.DictReader(f)) == rows, "a rerun changed the CSV")
    # --finished-only with a λ never trained: the table keeps the finished runs, trains nothing.
    r4 = subprocess.run(cmd + ["--finished-only", "--transcoder-lambdas", "0.01,0.02"],
                        capture_output=True, text=True)
    check(r4.returncode == 0 and "left out 2 unfinished run(s)" in r4.stderr, f"{r4.stderr!r}")
    check(not os.path.exists(os.path.join(out, "runs", "N1-transcoder-lam0.02")),
          "--finished-only trained a model")
    with open(os.path.join(out, "compare.csv")) as f:
        check(list(csv.DictReader(f)) == rows, "--finished-only changed the CSV")
    # Other settings on the same --out: refused in one line, the finished runs left alone.
    r3 = subprocess.run([a if a != "6" else "7" for a in cmd], capture_output=True, text=True)
    check(r3.returncode == 1 and r3.stderr.splitlines()[-1].startswith("compare: error:")
          and "other settings" in r3.stderr, f"changed --steps: exit {r3.returncode}, {r3.stderr!r}")
    check(os.path.isfile(os.path.join(out, "runs", "N1-molt-lam0.001", "eval.json")),
          "a refused rerun removed a finished run")
    print("compare_smoke: ok")
    return 0


if __name__ == "__main__":
    sys.exit(main())
