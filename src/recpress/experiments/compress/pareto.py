"""Pareto front of compressed students (accuracy up, parameters and latency down) and the
report files: ``pareto.md``, ``pareto.json`` and ``pareto.png``."""

from __future__ import annotations

import io
import json
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from recpress.runs import write_json, write_text


def pareto_front(points: np.ndarray | Sequence[Sequence[float]]) -> np.ndarray:
    """Mask of the non-dominated rows of `points` (n, m), every column to be maximised.

    Row a dominates row b when a >= b in every column and a > b in at least one; the front is
    the rows no other row dominates (equal rows are all on it). Negate a column to minimise it.
    Returns (n,) bool.
    """
    p = np.asarray(points, dtype=float)
    if p.ndim != 2:
        raise ValueError(f"points must be (n, m), got shape {p.shape}")
    if len(p) == 0:
        return np.zeros(0, dtype=bool)
    ge = (p[:, None, :] >= p[None, :, :]).all(axis=2)  # ge[a, b]: a >= b everywhere
    gt = (p[:, None, :] > p[None, :, :]).any(axis=2)
    dominated = (ge & gt).any(axis=0)  # some a dominates b
    return ~dominated


def front_of(rows: list[dict[str, Any]], metric_key: str = "valid_metric") -> list[bool]:
    """Front membership of candidate rows: max `metric_key`, min ``params``, min latency p50
    (rows without a measured latency are compared on accuracy and parameters only)."""
    if not rows:
        return []
    lat = [r.get("latency_p50_ms") for r in rows]
    cols = [[r[metric_key] for r in rows], [-r["params"] for r in rows]]
    if all(x is not None for x in lat):
        cols.append([-x for x in lat])
    return pareto_front(np.array(cols, dtype=float).T).tolist()


# -- report files ------------------------------------------------------------------------------
def _pct(x: float | None) -> str:
    return "" if x is None else f"{100 * x:.1f}%"


def _num(x: float | None, fmt: str = ".4f") -> str:
    return "" if x is None else format(x, fmt)


def render_markdown(result: dict[str, Any]) -> str:
    """pareto.md: the decision, the fully trained candidates (front marked) and the proxies."""
    t = result["target"]
    metric = t["metric"]
    teacher = result["teacher"]
    lines = [
        f"# recpress compress: {t['text']}",
        "",
        f"Teacher `{teacher['run_dir']}`: d={teacher.get('dim')}, "
        f"{teacher['params']:,} parameters, validation {metric} {teacher['valid']:.4f}, "
        f"test {teacher['test']:.4f}.",
        f"Target on validation (selection): {metric} >= {t['valid']:.4f}; "
        f"the same rule on test: >= {t['test']:.4f}.",
        "",
        "## Decision",
        "",
        result["decision"]["text"],
        "",
        "## Fully trained candidates",
        "",
        "Early stopping on validation; ★ = on the Pareto front (validation "
        f"{metric} up, parameters down, p50 latency down); ✓ = meets the target on validation.",
        "",
        f"| method | dim | valid {metric} | test {metric} | test ÷ teacher | params | "
        "bytes | p50 ms | p95 ms | epochs | target | front |",
        "|---|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for r in result["candidates"]:
        lines.append(
            f"| {r['method']} | {r['dim']} | {r['valid_metric']:.4f} | "
            f"{_num(r.get('test_metric'))} | {_pct(r.get('test_ratio'))} | {r['params']:,} | "
            f"{'' if r.get('bytes') is None else format(r['bytes'], ',')} | "
            f"{_num(r.get('latency_p50_ms'), '.3f')} | {_num(r.get('latency_p95_ms'), '.3f')} | "
            f"{r.get('best_epoch', '')}/{r.get('epochs_run', '')} | "
            f"{'✓' if r['meets'] else ''} | {'★' if r['front'] else ''} |"
        )
    if not result["candidates"]:
        lines.append("| (none trained) | | | | | | | | | | | |")
    proxies = result.get("proxies") or []
    if proxies:
        lines += [
            "",
            f"## Stage 1: proxies ({result['budget']['proxy_epochs']} epochs, validation {metric})",
            "",
            "| method | " + " | ".join(f"d={d}" for d in result["dims"]) + " | rank |",
            "|---|" + "---|" * (len(result["dims"]) + 1),
        ]
        by = {(p["method"], p["dim"]): p["valid_metric"] for p in proxies}
        for rank, m in enumerate(result["method_ranking"], 1):
            cells = [_num(by.get((m, d))) for d in result["dims"]]
            lines.append(f"| {m} | " + " | ".join(cells) + f" | {rank} |")
    notes = result.get("notes") or []
    if notes:
        lines += ["", "## Notes", ""] + [f"- {n}" for n in notes]
    s = result["spent"]
    lines += [
        "",
        f"Spent {s['minutes']:.1f} of {result['budget']['minutes']:g} budget minutes on "
        f"{s['trials_trained']} trained trials ({s['trials_reused']} reused from earlier "
        "sessions).",
        "",
        "![accuracy vs size and latency](pareto.png)",
        "",
    ]
    return "\n".join(lines)


def plot_pareto(result: dict[str, Any]) -> bytes | None:
    """pareto.png: validation metric vs parameters and vs p50 latency, front joined."""
    rows = result["candidates"]
    if not rows:
        return None
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    metric = result["target"]["metric"]
    has_lat = all(r.get("latency_p50_ms") is not None for r in rows)
    xs = [("params", "inference parameters")]
    if has_lat:
        xs.append(("latency_p50_ms", "p50 latency per request (ms)"))
    fig, axes = plt.subplots(1, len(xs), figsize=(5.2 * len(xs), 3.8), squeeze=False)
    methods = list(dict.fromkeys(r["method"] for r in rows))
    colours = {m: f"C{i % 10}" for i, m in enumerate(methods)}
    for ax, (key, label) in zip(axes[0], xs, strict=True):
        for m in methods:
            pts = [r for r in rows if r["method"] == m]
            ax.scatter([r[key] for r in pts], [r["valid_metric"] for r in pts],
                       color=colours[m], label=m, s=28, zorder=3)  # fmt: skip
            for r in pts:
                ax.annotate(f"d={r['dim']}", (r[key], r["valid_metric"]), fontsize=7,
                            xytext=(3, 3), textcoords="offset points")  # fmt: skip
        front = sorted((r for r in rows if r["front"]), key=lambda r: r[key])
        ax.plot([r[key] for r in front], [r["valid_metric"] for r in front], color="grey",
                lw=1, ls="--", zorder=2, label="Pareto front")  # fmt: skip
        ax.axhline(result["target"]["valid"], color="red", lw=1, ls=":", label="target")
        values = [r[key] for r in rows]
        if key == "params" and max(values) > 10 * min(values) > 0:
            from matplotlib.ticker import NullFormatter

            ax.set_xscale("log")
            ax.xaxis.set_minor_formatter(NullFormatter())
        ax.set_xlabel(label)
        ax.set_ylabel(f"validation {metric}")
        ax.grid(alpha=0.3)
    axes[0][0].legend(fontsize=7)
    fig.suptitle(f"recpress compress: {result['target']['text']}", fontsize=9)
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=110, bbox_inches="tight")
    plt.close(fig)
    return buf.getvalue()


def write_pareto(out: Path, result: dict[str, Any]) -> list[Path]:
    """Write pareto.json, pareto.md and (with candidates) pareto.png into `out`."""
    out = Path(out)
    write_json(out / "pareto.json", json.loads(json.dumps(result)))
    write_text(out / "pareto.md", render_markdown(result))
    paths = [out / "pareto.json", out / "pareto.md"]
    png = plot_pareto(result)
    if png is not None:
        tmp = out / "pareto.png.tmp"
        tmp.write_bytes(png)
        tmp.replace(out / "pareto.png")
        paths.append(out / "pareto.png")
    return paths
