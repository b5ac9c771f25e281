"""Training: fit a ridge / least-squares model in closed form for one matrix setting.

Reads $WEIR_INPUTS/preprocess/features.csv (z-scored features plus the target),
splits it 80/20 into train and holdout with a seeded shuffle (the same split for
every setting, so their scores are comparable), builds the design matrix
(intercept + features, plus their squares for --features quadratic), and solves
    (X^T X + l2 * I') w = X^T y
by Gaussian elimination with partial pivoting; I' is the identity with a zero
for the intercept, which is never penalised.

Writes model.json (terms, weights, settings) and metrics.json (numbers only:
rmse and r2 on the holdout, train_rmse, l2), and explain.json (docs/explainability.md):
the permutation importance of each input feature, i.e. how much the holdout RMSE grows
when that feature's holdout column is shuffled (mean of --repeats seeded shuffles), so
the registry can keep what drives each model and a promotion gate can compare rankings.

While it works it streams a loss curve to $WEIR_METRICS (when set; one JSON line
per epoch, `{"name": "loss", "value": ..., "step": epoch}`): --epochs of
gradient descent on the same objective from zero weights, the training RMSE after
each. The curve is a diagnostic that `weir metrics RUN STEP` and the web UI plot;
the model is the closed-form solution either way.

Usage: python3 steps/train.py --l2 0.0 --features linear|quadratic
"""
import argparse
import csv
import json
import math
import os
import random
import sys


def fail(msg):
    sys.exit("train: error: " + msg)


def solve(a, b):
    """Solve a x = b (a square, lists of floats) by Gaussian elimination with partial pivoting."""
    n = len(a)
    m = [row[:] + [b[i]] for i, row in enumerate(a)]
    for col in range(n):
        piv = max(range(col, n), key=lambda r: abs(m[r][col]))
        if abs(m[piv][col]) < 1e-12:
            fail("normal equations are singular (column %d); try --l2 > 0" % col)
        m[col], m[piv] = m[piv], m[col]
        for r in range(col + 1, n):
            f = m[r][col] / m[col][col]
            for c in range(col, n + 1):
                m[r][c] -= f * m[col][c]
    x = [0.0] * n
    for r in range(n - 1, -1, -1):
        x[r] = (m[r][n] - sum(m[r][c] * x[c] for c in range(r + 1, n))) / m[r][r]
    return x


def design(row, quadratic):
    return [1.0] + row + ([v * v for v in row] if quadratic else [])


def rmse(w, xs, ys):
    return math.sqrt(sum((sum(a * b for a, b in zip(w, x)) - y) ** 2 for x, y in zip(xs, ys)) / len(ys))


def permutation_importance(w, raw, ys, quadratic, names, base, seed, repeats):
    """Mean holdout RMSE increase when each feature's column is shuffled (standard library only)."""
    out = {}
    for j, name in enumerate(names):
        rng = random.Random(seed * 7919 + j)
        rises = []
        for _ in range(repeats):
            column = [row[j] for row in raw]
            rng.shuffle(column)
            xs = [design(row[:j] + [v] + row[j + 1:], quadratic) for row, v in zip(raw, column)]
            rises.append(rmse(w, xs, ys) - base)
        out[name] = sum(rises) / len(rises)
    return out


def loss_curve(xtx, xty, tx, ty, epochs):
    """Gradient descent on the ridge objective from zero, one $WEIR_METRICS line per epoch."""
    path = os.environ.get("WEIR_METRICS")
    if not path or epochs <= 0:
        return
    k = len(xty)
    rate = 1.0 / max(sum(xtx[i][i] for i in range(k)), 1e-12)  # trace >= largest eigenvalue
    w = [0.0] * k
    with open(path, "a", buffering=1) as out:
        for epoch in range(1, epochs + 1):
            grad = [sum(xtx[i][j] * w[j] for j in range(k)) - xty[i] for i in range(k)]
            w = [wi - rate * g for wi, g in zip(w, grad)]
            out.write(json.dumps({"name": "loss", "value": rmse(w, tx, ty), "step": epoch}) + "\n")


def main():
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--l2", type=float, required=True, help="ridge penalty (0 = ordinary least squares)")
    p.add_argument("--features", choices=["linear", "quadratic"], required=True)
    p.add_argument("--data", help="features CSV (default: $WEIR_INPUTS/preprocess/features.csv)")
    p.add_argument("--out", default=os.environ.get("WEIR_OUTPUTS"), help="output dir (default: $WEIR_OUTPUTS)")
    p.add_argument("--target", default="target", help="name of the target column")
    p.add_argument("--holdout", type=float, default=0.2, help="fraction held out for scoring")
    p.add_argument("--split-seed", type=int, default=0, help="seed of the train/holdout shuffle")
    p.add_argument("--epochs", type=int, default=20, help="epochs of the loss curve sent to $WEIR_METRICS")
    p.add_argument("--repeats", type=int, default=5, help="shuffles per feature for the permutation importance")
    a = p.parse_args()
    if not (a.l2 >= 0 and math.isfinite(a.l2)):
        fail("--l2 must be a finite number >= 0, got %r" % a.l2)
    if not 0 < a.holdout < 1:
        fail("--holdout must be within (0, 1), got %r" % a.holdout)
    if not a.out:
        fail("no --out given and WEIR_OUTPUTS is not set")
    data = a.data
    if data is None:
        if not os.environ.get("WEIR_INPUTS"):
            fail("no --data given and WEIR_INPUTS is not set")
        data = os.path.join(os.environ["WEIR_INPUTS"], "preprocess", "features.csv")

    try:
        with open(data, newline="") as f:
            reader = csv.reader(f)
            header = next(reader, [])
            rows = [[float(v) for v in r] for r in reader if r]
    except (OSError, ValueError) as e:
        fail("cannot read %s: %s" % (data, e))
    if a.target not in header:
        fail("%s has no %r column (header: %r)" % (data, a.target, header))
    t = header.index(a.target)
    names = [h for i, h in enumerate(header) if i != t]
    quadratic = a.features == "quadratic"
    terms = ["intercept"] + names + ([h + "^2" for h in names] if quadratic else [])

    random.Random(a.split_seed).shuffle(rows)
    n_hold = int(round(len(rows) * a.holdout))
    if n_hold < 1 or len(rows) - n_hold < len(terms):
        fail("too few rows (%d) for %d terms and a holdout" % (len(rows), len(terms)))
    raw = [[v for i, v in enumerate(r) if i != t] for r in rows]
    xs = [design(r, quadratic) for r in raw]
    ys = [r[t] for r in rows]
    hx, hy, tx, ty = xs[:n_hold], ys[:n_hold], xs[n_hold:], ys[n_hold:]

    k = len(terms)
    xtx = [[sum(x[i] * x[j] for x in tx) + (a.l2 if i == j and i > 0 else 0.0)
            for j in range(k)] for i in range(k)]
    xty = [sum(x[i] * y for x, y in zip(tx, ty)) for i in range(k)]
    loss_curve(xtx, xty, tx, ty, a.epochs)
    w = solve(xtx, xty)

    hold_rmse = rmse(w, hx, hy)
    mean = sum(hy) / len(hy)
    sst = sum((y - mean) ** 2 for y in hy)
    r2 = 1.0 - hold_rmse ** 2 * len(hy) / sst if sst > 0 else 0.0
    metrics = {"rmse": hold_rmse, "r2": r2, "train_rmse": rmse(w, tx, ty), "l2": a.l2,
               "n_train": len(ty), "n_holdout": len(hy)}
    model = {"kind": "ridge", "features": a.features, "l2": a.l2, "target": a.target,
             "terms": terms, "weights": dict(zip(terms, w)), "split_seed": a.split_seed,
             "holdout": a.holdout, "input_features": names}
    os.makedirs(a.out, exist_ok=True)
    with open(os.path.join(a.out, "model.json"), "w") as f:
        json.dump(model, f, indent=2)
    with open(os.path.join(a.out, "metrics.json"), "w") as f:
        json.dump(metrics, f, indent=2)
    importances = permutation_importance(w, raw[:n_hold], hy, quadratic, names, hold_rmse, a.split_seed,
                                         max(a.repeats, 1))
    with open(os.path.join(a.out, "explain.json"), "w") as f:
        json.dump({"format": 1, "method": "permutation", "metric": "holdout rmse increase",
                   "importances": importances}, f, indent=2)
    top = max(importances, key=lambda n: abs(importances[n]))
    print("train: most important feature %s (holdout rmse +%.4f when shuffled)" % (top, importances[top]))
    print("train: features=%s l2=%g on %d rows, %d held out" % (a.features, a.l2, len(ty), len(hy)))
    print("train: holdout rmse=%.4f r2=%.4f, train rmse=%.4f" % (hold_rmse, r2, metrics["train_rmse"]))


if __name__ == "__main__":
    main()
