"""Sweep report figures (matplotlib, Agg): test metric vs epoch and accuracy vs size, as PNG.

`palette` gives each name a colour; `_figures` renders the figure sections of the report (with
the latency table) and returns the PNG bytes by file name.
"""

from __future__ import annotations

import io

import numpy as np

from recpress.experiments.reference import Reference
from recpress.experiments.report.tables import _get, _Report, selection_label
from recpress.experiments.sweep import SweepConfig


# ---------------------------------------------------------------------------------------------
def palette(names: list[str]) -> dict[str, str]:
    """A colour per name in order of appearance (tab10 cycle); ``teacher`` is black."""
    cycle = [f"C{i}" for i in range(10)]
    out: dict[str, str] = {}
    for name in names:
        if name not in out:
            out[name] = "black" if name == "teacher" else cycle[len(out) % len(cycle)]
    return out


def _figure_png(fig) -> bytes:
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=110, bbox_inches="tight")
    import matplotlib.pyplot as plt

    plt.close(fig)
    return buf.getvalue()


def plot_curves(cfg: SweepConfig, found: dict, reference: Reference | None) -> bytes | None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    dims = sorted({d for d, _ in found if d is not None})
    if not dims and (None, "teacher") not in found:
        return None
    dims = dims or [None]
    fig, axes = plt.subplots(1, len(dims), figsize=(4.2 * len(dims), 3.6), squeeze=False)
    colors = palette(["teacher", *cfg.report.curve_methods])
    metric = cfg.report.metric
    for ax, dim in zip(axes[0], dims, strict=True):
        series = [(None, "teacher")] + [(dim, m) for m in cfg.report.curve_methods]
        for key in series:
            runs = found.get(key, [])
            label = {"teacher": "teacher", "none": "student"}.get(key[1], key[1].upper())
            color = colors.get(key[1])
            if runs:
                n = min(len(r.curve) for r in runs)
                if n:
                    ys = np.array([r.curve[:n] for r in runs])
                    xs = runs[0].curve_epochs[:n]
                    ax.plot(xs, ys.mean(0), label=f"{label} (ours, n={len(runs)})", color=color)
                    if len(runs) > 1:
                        ax.fill_between(
                            xs,
                            ys.mean(0) - ys.std(0),
                            ys.mean(0) + ys.std(0),
                            color=color,
                            alpha=0.15,
                        )
            log = reference.log.series(key[0], key[1]) if reference else None
            if log is not None:
                ax.plot(
                    reference.log.epochs, log, ls="--", lw=1, color=color, label=f"{label} (log)"
                )
        ax.set_title(f"student d = {dim}" if dim else "teacher")
        ax.set_xlabel("epoch")
        ax.set_ylabel(f"test {metric}")
        ax.grid(alpha=0.3)
    axes[0][0].legend(fontsize=7)
    fig.tight_layout()
    return _figure_png(fig)


def plot_size(cfg: SweepConfig, table: dict, latency: dict, sel: str) -> bytes | None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    methods = cfg.students.methods
    dims = sorted({d for d, _ in table if d is not None})
    if not dims:
        return None
    panels = 2 if latency else 1
    fig, axes = plt.subplots(1, panels, figsize=(5.5 * panels, 3.8), squeeze=False)
    for pi, ax in enumerate(axes[0]):
        for m in methods:
            pts = []
            for d in dims:
                e = _get(table, d, m, sel)
                if not e:
                    continue
                x = (
                    table[(d, m)]["parameters"]
                    if pi == 0
                    else latency.get(d, {}).get("ms_per_batch")
                )
                if x:
                    pts.append((x, e["mean"], e["std"] if e["n"] > 1 else 0.0))
            if pts:
                xs, ys, es = zip(*pts, strict=True)
                ax.errorbar(xs, ys, yerr=es, marker="o", capsize=2, label=m)
        t = _get(table, None, "teacher", sel)
        if t:
            x = (
                table[(None, "teacher")]["parameters"]
                if pi == 0
                else latency.get(-1, {}).get("ms_per_batch")
            )
            if x:
                ax.scatter([x], [t["mean"]], marker="*", s=150, color="black", label="teacher")
        ax.set_xscale("log")
        if pi == 0:
            ax.set_xlabel("inference parameters")
        else:
            n = next(iter(latency.values()))["batch_users"]
            ax.set_xlabel(f"top-50 ms per {n} users (serving path, CPU)")
        ax.set_ylabel(f"test {cfg.report.metric} ({selection_label(sel, cfg.report.fixed_epoch)})")
        ax.grid(alpha=0.3)
    axes[0][0].legend(fontsize=7)
    fig.tight_layout()
    return _figure_png(fig)


def _figures(r: _Report, found: dict, lat: dict) -> tuple[list[str], dict[str, bytes]]:
    """The curves and size figures (PNG bytes) and their sections, with the latency table."""
    cfg, table, sels, reference, metric = r.cfg, r.table, r.sels, r.reference, r.cfg.report.metric
    md: list[str] = []
    figures: dict[str, bytes] = {}
    curves = plot_curves(cfg, found, reference)
    if curves:
        figures["curves.png"] = curves
        md += [
            f"## Test {metric} vs epoch",
            "",
            "Mean over seeds (band: ± std); dashed: the authors' log." if reference else "",
            "",
            "![curves](report_assets/curves.png)",
            "",
        ]
    size = plot_size(cfg, table, lat, sels[0]) if table else None
    if size:
        figures["size.png"] = size
        md += ["## Accuracy vs size", "", "![size](report_assets/size.png)", ""]
        if lat:
            md += [
                "| model | parameters | top-50 ms per batch (serving path) | users per batch "
                "| threads |",
                "|---|---|---|---|---|",
            ]
            for d, v in sorted(lat.items()):
                name = "teacher" if d == -1 else f"student d={d}"
                md.append(
                    f"| {name} | {v['parameters']:,} | {v['ms_per_batch']:.1f} | "
                    f"{v['batch_users']} | {v['threads']} |"
                )
            md.append("")

    return md, figures
