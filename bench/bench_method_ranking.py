"""Does the ranking of KD methods hold across datasets? Kendall's τ between two sweep reports.

Reads two or more report.json files (``recpress report``; or bench_distill.py's distill.json,
whose means are validation-selected), orders the methods both report at
one student dim by their mean test metric under one selection, and computes Kendall's τ-b
(scipy.stats.kendalltau) between each pair of orders over the methods they share, with its
two-sided p-value (exact for small n). Writes JSON.

    python bench/bench_method_ranking.py runs/kd-d20-citeulike/report.json \\
        runs/kd-d20-ml100k/report.json --dim 20 --out bench/results/method_ranking.json
"""

from __future__ import annotations

import argparse
import itertools
import json
from pathlib import Path


def main(argv=None) -> dict:
    from scipy import stats

    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("reports", type=Path, nargs="+")
    p.add_argument("--dim", type=int, default=20)
    p.add_argument("--selection", default="best_valid")
    p.add_argument(
        "--add", action="append", help="REPORT.json:METHOD, a method of another report of the "
        "same data added to the first report's means (e.g. FTD from the reference sweep)",
    )  # fmt: skip
    p.add_argument("--out", type=Path, default=None)
    args = p.parse_args(argv)

    means: dict[str, dict[str, float]] = {}
    for path in args.reports:
        data = json.loads(path.read_text())
        if "methods" in data:  # bench_distill.py's distill.json: validation-selected means
            means[str(path)] = {m: e["recall@50"]["mean"] for m, e in data["methods"].items()}
            continue
        means[str(path)] = {
            key.partition("/")[2]: entry[args.selection]["mean"]
            for key, entry in data["table"].items()
            if key.partition("/")[0] == str(args.dim) and args.selection in entry
        }
    for extra in args.add or []:  # "file.json:method": one method of another report
        path, _, method = extra.rpartition(":")
        table = json.loads(Path(path).read_text())["table"]
        means[str(args.reports[0])][method] = table[f"{args.dim}/{method}"][args.selection]["mean"]
    orders = {name: sorted(values, key=values.get, reverse=True) for name, values in means.items()}
    pairs = []
    for a, b in itertools.combinations(means, 2):
        common = sorted(set(means[a]) & set(means[b]))
        res = stats.kendalltau([means[a][m] for m in common], [means[b][m] for m in common])
        pairs.append(
            {"a": a, "b": b, "methods": common, "kendall_tau": float(res.statistic),
             "p": float(res.pvalue), "n": len(common)}
        )  # fmt: skip
        print(f"{a} vs {b}: tau = {res.statistic:+.3f} (p = {res.pvalue:.3g}, n = {len(common)})")
    for name, order in orders.items():
        print(f"{name}: " + " > ".join(f"{m} {means[name][m]:.4f}" for m in order))
    out = {
        "benchmark": "method_ranking",
        "dim": args.dim,
        "selection": args.selection,
        "means": means,
        "orders": orders,
        "pairs": pairs,
    }
    if args.out:
        args.out.write_text(json.dumps(out, indent=2) + "\n")
    return out


if __name__ == "__main__":
    main()
