#!/usr/bin/env python3
"""Feeds molt-opt seeded mutations of the example specs and checks it never crashes or hangs.

Each mutant is a truncation, byte flips, a number swapped for a huge / negative / NaN / inf
value, deleted or repeated tokens, inserted garbage, or plain garbage. molt-opt must exit 0
(the mutant is still a valid spec) or 1 with a `file:line:col: error:` line; a signal, another
exit code, a stack dump or a timeout is a failure, and so is a valid mutant whose printed form
does not print back to itself. Deterministic for a given --seed.
"""
import argparse
import concurrent.futures
import os
import random
import re
import shutil
import subprocess
import sys

NUMBER = re.compile(rb"-?\b\d+(?:\.\d*)?(?:[eE][-+]?\d+)?\b")
TOKEN = re.compile(rb"[A-Za-z_0-9.]+|[^\sA-Za-z_0-9.]")
BAD_NUMBERS = [b"99999999999999999999", b"-99999999999999999999", b"9223372036854775807",
               b"-9223372036854775808", b"9223372036854775808", b"4611686018427387904",
               b"18446744073709551616", b"0", b"-0", b"-1", b"-64", b"1", b"2",
               b"1.0e999", b"-1.0e999", b"1.0e-400", b"nan", b"NaN", b"inf", b"-inf",
               b"0x7FF8000000000000", b"0x7FF0000000000000", b"0xFFF0000000000000",
               b"-0.0", b"0.5", b"3.0", b"1e3", b"0x", b"00000000000000000000000000064"]
GARBAGE = [b"\x00", b"\xff\xfe", b"\xc3\x28", b"\xe2\x82", b"{", b"}", b"<", b">", b"[" * 200,
           b"[" * 5000, b"<" * 5000, b"{(" * 3000,
           b"\"", b"#molt.", b"@", b"%", b"^", b"// -----", b"\n", b"molt.layer @x {}",
           b"#molt.schedule<", "\u00e9\u4e2d".encode()]


def mutate(spec, rng):
    """Returns (kind, mutant bytes)."""
    kind = rng.choice(["truncate", "flip", "number", "delete", "repeat", "insert", "garbage"])
    data = bytearray(spec)
    if kind == "truncate":
        return kind, bytes(data[:rng.randrange(len(data))])
    if kind == "flip":
        for _ in range(rng.randint(1, 4)):
            data[rng.randrange(len(data))] = rng.randrange(256)
        return kind, bytes(data)
    if kind == "number":
        spots = list(NUMBER.finditer(spec))
        out = spec
        for m in sorted(rng.sample(spots, min(len(spots), rng.randint(1, 2))),
                        key=lambda m: -m.start()):
            out = out[:m.start()] + rng.choice(BAD_NUMBERS) + out[m.end():]
        return kind, out
    tokens = list(TOKEN.finditer(spec))
    if kind in ("delete", "repeat"):
        out = spec
        for m in sorted(rng.sample(tokens, rng.randint(1, 3)), key=lambda m: -m.start()):
            repl = b"" if kind == "delete" else m.group(0) * 2
            out = out[:m.start()] + repl + out[m.end():]
        return kind, out
    if kind == "insert":
        at = rng.randrange(len(spec) + 1)
        return kind, spec[:at] + rng.choice(GARBAGE) + spec[at:]
    return kind, bytes(rng.randrange(256) for _ in range(rng.randint(0, 400)))


def run_one(molt_opt, path, timeout):
    """Returns (exit code, None when molt-opt behaved or else a one-line reason)."""
    try:
        proc = subprocess.run([molt_opt, "--molt-describe", path, "-o", os.devnull],
                              capture_output=True, timeout=timeout)
    except subprocess.TimeoutExpired:
        return None, f"timed out after {timeout}s"
    err = proc.stderr.decode("utf-8", "replace")
    rc = proc.returncode
    if rc < 0:
        return rc, f"killed by signal {-rc}"
    if rc not in (0, 1):
        return rc, f"exit code {rc}"
    if "Stack dump" in err or "PLEASE submit a bug report" in err:
        return rc, "printed a stack dump"
    if rc == 1 and not re.search(re.escape(path) + r":\d+:\d+: error: ", err):
        return rc, "exit 1 without a file:line:col error: " + err.strip()[:200]
    if rc == 0:
        return rc, check_round_trip(molt_opt, path, timeout)
    return rc, None


def check_round_trip(molt_opt, path, timeout):
    """A mutant that is still valid must print, parse and print again to the same text."""
    printed = []
    for source in (path, path + ".printed"):
        try:
            proc = subprocess.run([molt_opt, source], capture_output=True, timeout=timeout)
        except subprocess.TimeoutExpired:
            return f"printing timed out after {timeout}s"
        if proc.returncode != 0:
            return "its printed form does not parse: " + proc.stderr.decode("utf-8", "replace")[:200]
        printed.append(proc.stdout)
        with open(path + ".printed", "wb") as f:
            f.write(proc.stdout)
    return None if printed[0] == printed[1] else "printing is not stable under a round trip"


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("specs", nargs="+", help="valid spec files to mutate")
    parser.add_argument("--molt-opt", default=shutil.which("molt-opt"), help="the tool under test")
    parser.add_argument("--work", required=True, help="directory for the mutants (recreated)")
    parser.add_argument("--per-spec", type=int, default=300, help="mutants per spec")
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--timeout", type=float, default=20.0, help="seconds per run")
    args = parser.parse_args()
    if not args.molt_opt:
        sys.exit("mutate.py: error: molt-opt not found (pass --molt-opt)")

    shutil.rmtree(args.work, ignore_errors=True)
    os.makedirs(args.work)
    jobs = []  # (path, kind)
    for s, spec_path in enumerate(args.specs):
        with open(spec_path, "rb") as f:
            spec = f.read()
        rng = random.Random(args.seed * 1000003 + s)
        for i in range(args.per_spec):
            kind, data = mutate(spec, rng)
            path = os.path.join(args.work, f"{os.path.basename(spec_path)}.{i:04d}.{kind}.mlir")
            with open(path, "wb") as f:
                f.write(data)
            jobs.append((path, kind))
    # The empty and blank files, which MLIR alone would accept as an empty module.
    for name, data in (("empty", b""), ("blank", b" \n\t\n// only a comment\n")):
        path = os.path.join(args.work, f"{name}.mlir")
        with open(path, "wb") as f:
            f.write(data)
        jobs.append((path, name))

    workers = max(1, os.cpu_count() or 1)
    with concurrent.futures.ThreadPoolExecutor(workers) as pool:
        results = list(pool.map(lambda job: run_one(args.molt_opt, job[0], args.timeout), jobs))

    failures = [(path, why) for (path, _), (_, why) in zip(jobs, results) if why]
    codes = [rc for rc, _ in results]
    kinds = sorted({kind for _, kind in jobs})
    print(f"mutants: {len(jobs)} ("
          + ", ".join(f"{k} {sum(1 for _, j in jobs if j == k)}" for k in kinds) + ")")
    print(f"still valid (exit 0): {codes.count(0)}, rejected with a located error (exit 1): "
          f"{codes.count(1) - sum(1 for rc, why in results if rc == 1 and why)}")
    for path, why in failures:
        print(f"FAIL {path}: {why}")
    print(f"{len(failures)} failures")
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main())
