#!/usr/bin/env python3
"""Prints the results of `cargo bench -p weir-engine --bench plan` as a Markdown table.

    python3 bench/report.py [CRITERION_DIR]

CRITERION_DIR defaults to $CARGO_TARGET_DIR/criterion (or target/criterion). Times are
criterion's mean per iteration (flat sampling, 10 samples); the ratios divide by the YAML-events
baseline measured in the same run. Goals: 10k steps under 100 ms, 100k steps under 1 s.
"""

import json
import os
import sys

SHAPES = ["chain", "fanout", "matrix"]
FUNCS = ["yaml_events", "load", "load_plan"]


def estimate(base, shape, func, size):
    path = os.path.join(base, shape, func, size, "new", "estimates.json")
    try:
        with open(path) as f:
            d = json.load(f)
    except FileNotFoundError:
        return None
    return (d.get("slope") or d["mean"])["point_estimate"] / 1e9  # seconds


def fmt_time(s):
    return f"{s * 1e3:.1f} ms" if s < 1 else f"{s:.2f} s"


def goal(steps, s):
    if 9_000 <= steps <= 11_000:
        limit = 0.1
    elif 90_000 <= steps <= 110_000:
        limit = 1.0
    else:
        return "-"
    return ("met" if s < limit else "**missed**") + f" (< {fmt_time(limit)})"


def main():
    target = os.environ.get("CARGO_TARGET_DIR", os.path.join(os.path.dirname(__file__), "..", "target"))
    base = sys.argv[1] if len(sys.argv) > 1 else os.path.join(target, "criterion")
    rows = []
    for shape in SHAPES:
        d = os.path.join(base, shape, "load")
        if not os.path.isdir(d):
            continue
        for size in sorted(os.listdir(d), key=int):
            t = {f: estimate(base, shape, f, size) for f in FUNCS}
            if None in t.values():
                continue
            rows.append((shape, int(size), t))
    if not rows:
        sys.exit(f"no criterion results under {base}")
    print("| shape | steps | YAML events | load | load+plan | load / events | load+plan / events "
          "| load+plan steps/s | goal (load+plan) |")
    print("|---|---:|---:|---:|---:|---:|---:|---:|---|")
    for shape, steps, t in rows:
        ev, ld, lp = t["yaml_events"], t["load"], t["load_plan"]
        print(f"| {shape} | {steps:,} | {fmt_time(ev)} | {fmt_time(ld)} | {fmt_time(lp)} | {ld / ev:.1f}x "
              f"| {lp / ev:.1f}x | {steps / lp:,.0f} | {goal(steps, lp)} |")


if __name__ == "__main__":
    main()
