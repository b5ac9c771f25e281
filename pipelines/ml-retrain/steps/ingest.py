"""Ingestion: take the given data file, or generate a synthetic, deliberately dirty dataset.

Given data (--data, else the one file of --trigger-files, i.e. $WEIR_TRIGGER_FILES of a run
started by new data) is checked for the columns below and copied byte for byte to --out,
so raw.csv has the file's digest and lineage reaches it. Otherwise:

Four numeric features describe a customer; the target mixes linear terms with a
U-shaped (quadratic) effect of tenure and a mild quadratic effect of monthly
charges, so a model with squared features should beat a purely linear one.
Gaussian noise of std --noise is added to the target.

A small fraction (--dirty) of rows is then spoiled on purpose: empty cells,
'NaN', non-numeric text, or an extreme outlier, so preprocessing has real work.
Everything is drawn from random.Random(--seed): the same flags give the same file.
--shift S moves every feature's distribution by S of its standard deviations (covariate
drift: the target still follows the same function), to make drifted samples.

Usage: python3 steps/ingest.py --rows 2000 --noise 0.3 --seed 7 --out "$WEIR_OUTPUTS/raw.csv"
       python3 steps/ingest.py --data /data/new.csv --out "$WEIR_OUTPUTS/raw.csv"
"""
import argparse
import csv
import os
import random
import shutil
import sys

COLUMNS = ["tenure", "monthly_charges", "support_calls", "usage", "target"]
JUNK_TEXT = ["n/a", "unknown", "?", "null", "twelve"]


def clean_row(rng, noise, shift=0.0):
    tenure = rng.uniform(1.0, 72.0) + shift * 20.5                   # months
    charges = min(120.0 + shift * 25.0, max(18.0, rng.gauss(70.0 + shift * 25.0, 25.0)))  # currency/month
    calls = max(0, round(rng.gauss(3.0 + shift * 1.5, 1.5)))         # count
    usage = max(0.0, rng.gauss(50.0 + shift * 15.0, 15.0))           # GB/month
    t = (tenure - 36.5) / 20.5   # roughly unit-scale versions of each feature
    c = (charges - 70.0) / 25.0
    s = (calls - 3.0) / 1.5
    u = (usage - 50.0) / 15.0
    target = 1.0 + 0.9 * t * t - 0.6 * c + 0.3 * c * c + 0.4 * s + 0.5 * u
    target += rng.gauss(0.0, noise)
    return [round(tenure, 3), round(charges, 2), calls, round(usage, 3), round(target, 5)]


def spoil(rng, row):
    col = rng.randrange(len(row))
    kind = rng.choice(["empty", "nan", "text", "outlier"])
    if kind == "empty":
        row[col] = ""
    elif kind == "nan":
        row[col] = "NaN"
    elif kind == "text":
        row[col] = rng.choice(JUNK_TEXT)
    else:
        row[col] = rng.choice([-1.0, 1.0]) * rng.uniform(1e3, 1e5)
    return kind


def take_data(path, out):
    """Copies the CSV at `path` to `out` after checking its header names every column."""
    try:
        with open(path, newline="") as f:
            header = [h.strip() for h in next(csv.reader(f), [])]
    except (OSError, UnicodeDecodeError, csv.Error) as e:
        sys.exit("ingest: error: cannot read data file %s: %s" % (path, e))
    missing = [c for c in COLUMNS if c not in header]
    if missing:
        sys.exit("ingest: error: %s, line 1: the header %r lacks column(s) %s; expected the columns %s"
                 % (path, header, ", ".join(missing), ", ".join(COLUMNS)))
    try:
        if os.path.dirname(out):
            os.makedirs(os.path.dirname(out), exist_ok=True)
        shutil.copyfile(path, out)
    except OSError as e:
        sys.exit("ingest: error: cannot copy %s to %s: %s" % (path, out, e))
    print("ingest: took %s (%d bytes) as %s" % (path, os.path.getsize(out), out))


def main():
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--rows", type=int, default=2000, help="number of rows to generate")
    p.add_argument("--noise", type=float, default=0.3, help="std of gaussian noise on the target")
    p.add_argument("--seed", type=int, default=7, help="random seed")
    p.add_argument("--dirty", type=float, default=0.03, help="fraction of rows to spoil")
    p.add_argument("--shift", type=float, default=0.0,
                   help="move each feature's distribution by this many standard deviations (drift)")
    p.add_argument("--data", default="", help="a CSV to take instead of generating one (empty: none)")
    p.add_argument("--trigger-files", default="",
                   help="the run's new data, one path a line ($WEIR_TRIGGER_FILES); used without --data")
    p.add_argument("--out", default=None, help="CSV file to write (default: $WEIR_OUTPUTS/raw.csv)")
    a = p.parse_args()

    if a.rows < 10:
        sys.exit("ingest: error: --rows must be at least 10, got %d" % a.rows)
    if not a.noise >= 0:
        sys.exit("ingest: error: --noise must be >= 0, got %r" % a.noise)
    if not 0 <= a.dirty <= 0.5:
        sys.exit("ingest: error: --dirty must be within [0, 0.5], got %r" % a.dirty)
    out = a.out
    if out is None:
        if not os.environ.get("WEIR_OUTPUTS"):
            sys.exit("ingest: error: no --out given and WEIR_OUTPUTS is not set")
        out = os.path.join(os.environ["WEIR_OUTPUTS"], "raw.csv")

    data = a.data.strip()
    if not data:
        files = [f for f in a.trigger_files.splitlines() if f.strip()]
        if len(files) > 1:
            sys.exit("ingest: error: the run brought %d files (%s); give the one to train on with "
                     "-p data=PATH" % (len(files), ", ".join(files)))
        data = files[0] if files else ""
    if data:
        take_data(data, out)
        return

    rng = random.Random(a.seed)
    rows, spoiled = [], {}
    for _ in range(a.rows):
        row = clean_row(rng, a.noise, a.shift)
        if rng.random() < a.dirty:
            kind = spoil(rng, row)
            spoiled[kind] = spoiled.get(kind, 0) + 1
        rows.append(row)

    try:
        if os.path.dirname(out):
            os.makedirs(os.path.dirname(out), exist_ok=True)
        with open(out, "w", newline="") as f:
            w = csv.writer(f)
            w.writerow(COLUMNS)
            w.writerows(rows)
    except OSError as e:
        sys.exit("ingest: error: cannot write %s: %s" % (out, e))
    print("ingest: wrote %d rows (%d spoiled: %s) to %s" % (
        len(rows), sum(spoiled.values()),
        ", ".join("%s=%d" % kv for kv in sorted(spoiled.items())) or "none", out))


if __name__ == "__main__":
    main()
