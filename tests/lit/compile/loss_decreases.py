#!/usr/bin/env python3
"""Fails unless the last logged training loss in METRICS (metrics.jsonl) is below the first."""
import json
import sys

rows = [json.loads(line) for line in open(sys.argv[1]) if line.strip()]
losses = [r["loss"] for r in rows if "loss" in r]
if len(losses) < 2 or not losses[-1] < losses[0]:
    sys.exit(f"loss_decreases: error: losses {losses} do not go down")
print(f"loss {losses[0]:.4g} -> {losses[-1]:.4g}")
