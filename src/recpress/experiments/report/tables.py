"""Sweep report tables: the runs read from a sweep directory, their summary and the markdown.

`collect` reads the finished runs (and lists the missing ones), `summarize` gives mean/std/n per
(dim, method, selection), `paired_tests` the per-user paired t-tests vs the no-KD student and
`measure_latency` the serving-path top-k latency; the `_Report` sections render the markdown
tables (one per student dim, timing, claims, the authors' logged cells, missing runs).
"""

from __future__ import annotations

import csv
import math
import time
from collections import defaultdict
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from recpress.evaluation.stats import one_sided_ttest_below
from recpress.experiments.reference import Reference
from recpress.experiments.report.claims import (
    check_claims,
    claim_arms,
    claims_reference,
    teacher_dim,
)
from recpress.experiments.sweep import SweepConfig, plan
from recpress.runs import METRICS, read_json
from recpress.training.trainer import CHECKPOINT, HISTORY

SELECTION_LABEL = {
    "fixed_epochs": "fixed epochs (last)",
    "best_valid": "validation-selected",
    "fixed_epoch": "at a fixed epoch",
}
#: a reference cell is "not reached" when our mean is below the log at this one-sided level
REFERENCE_ALPHA = 0.05


def selection_label(sel: str, fixed_epoch: int | None = None) -> str:
    """The column title of a selection ("at epoch 100" for ``fixed_epoch``)."""
    if sel == "fixed_epoch" and fixed_epoch is not None:
        return f"at epoch {fixed_epoch}"
    return SELECTION_LABEL[sel]


PER_USER_FILE = "per_user_test.npz"


@dataclass
class RunResult:
    """What the report reads from one finished run directory."""

    dim: int | None
    method: str
    seed: int | None
    path: Path
    curve_epochs: list[int] = field(default_factory=list)
    curve: list[float] = field(default_factory=list)
    results: dict[str, dict[str, float]] = field(default_factory=dict)  # selection → test metrics
    selected_epoch: dict[str, int] = field(default_factory=dict)
    seconds_per_epoch: float = float("nan")
    parameters: int = 0
    aux_parameters: int = 0
    epochs_run: int | None = None


def _float(x: str) -> float:
    try:
        return float(x)
    except (TypeError, ValueError):
        return float("nan")


def read_run(
    path: Path, metric: str, dim, method, seed, fixed_epoch: int | None = None
) -> RunResult:
    """The selections and the test curve of a finished run, from history.csv + metrics.json.

    ``fixed_epochs`` is the last evaluation, ``best_valid`` the evaluation with the best
    validation `metric`, ``fixed_epoch`` (when `fixed_epoch` is given and the run evaluated
    test at that epoch) the evaluation at epoch `fixed_epoch`."""
    metrics = read_json(path / METRICS)
    with open(path / HISTORY, newline="") as fh:
        rows = [r for r in csv.DictReader(fh) if r.get(f"valid_{metric}") not in (None, "")]
    res = RunResult(dim, method, seed, path)
    res.seconds_per_epoch = float(metrics.get("seconds_per_epoch", float("nan")))
    res.parameters = int(metrics.get("parameters", 0))
    res.aux_parameters = int(metrics.get("aux_parameters", 0))
    if metrics.get("epochs_run") is not None:
        res.epochs_run = int(metrics["epochs_run"])
    test_rows = [r for r in rows if r.get(f"test_{metric}") not in (None, "")]
    res.curve_epochs = [int(r["epoch"]) for r in test_rows]
    res.curve = [_float(r[f"test_{metric}"]) for r in test_rows]

    def tests(row) -> dict[str, float]:
        return {k[5:]: _float(v) for k, v in row.items() if k.startswith("test_") and v != ""}

    if test_rows:
        last = test_rows[-1]
        res.results["fixed_epochs"] = tests(last)
        res.selected_epoch["fixed_epochs"] = int(last["epoch"])
        best = max(test_rows, key=lambda r: (_float(r[f"valid_{metric}"]), -int(r["epoch"])))
        res.results["best_valid"] = tests(best)
        res.selected_epoch["best_valid"] = int(best["epoch"])
        at = [r for r in test_rows if int(r["epoch"]) == fixed_epoch]
        if fixed_epoch is not None and at:
            res.results["fixed_epoch"] = tests(at[0])
            res.selected_epoch["fixed_epoch"] = int(fixed_epoch)
    return res


def _mean_std(values: list[float]) -> tuple[float, float]:
    arr = np.asarray(values, dtype=np.float64)
    return float(arr.mean()), float(arr.std(ddof=1)) if arr.size > 1 else float("nan")


def _fmt(mean: float, std: float, n: int) -> str:
    if n <= 1 or math.isnan(std):
        return f"{mean:.4f}"
    return f"{mean:.4f} ± {std:.4f}"


# ---------------------------------------------------------------------------------------------
def collect(cfg: SweepConfig, sweep_dir: Path) -> tuple[dict, list[dict]]:
    """Finished runs by (dim, method) (teacher under (None, "teacher")) and the missing runs."""
    metric = cfg.report.metric
    found: dict[tuple[int | None, str], list[RunResult]] = defaultdict(list)
    missing: list[dict] = []
    runs = plan(cfg, sweep_dir)
    for spec in runs:
        main = spec.is_teacher and spec.path == runs[0].path  # the main teacher: "teacher"
        name = ("teacher" if main else spec.label) if spec.is_teacher else spec.method
        key = (spec.dim, name)
        if (spec.path / METRICS).is_file() and (spec.path / HISTORY).is_file():
            found[key].append(
                read_run(spec.path, metric, spec.dim, key[1], spec.seed, cfg.report.fixed_epoch)
            )
            continue
        state = "not started"
        if (spec.path / CHECKPOINT).is_file() or (spec.path / HISTORY).is_file():
            done = 0
            if (spec.path / HISTORY).is_file():
                with open(spec.path / HISTORY) as fh:
                    done = max(sum(1 for _ in fh) - 1, 0)
            state = f"interrupted after {done} epochs (rerun the sweep to resume)"
        missing.append({"run": spec.label, "path": str(spec.path), "state": state})
    return dict(found), missing


def _per_user(run: RunResult, metric: str, split) -> np.ndarray | None:
    """Per-user test values of the saved weights (cached in the run directory)."""
    cache = run.path / PER_USER_FILE
    if cache.is_file():
        with np.load(cache) as z:
            if metric in z.files:
                return z[metric]
    try:
        import torch

        from recpress.evaluation import evaluate
        from recpress.runs import load_run

        loaded = load_run(run.path, split=split)
        model, split = loaded.model, loaded.split
        k = int(metric.partition("@")[2])
        with torch.no_grad():
            res = evaluate(model, split, ks=[k], phase="test", per_user=True)
        values = np.asarray(res.per_user[metric], dtype=np.float64)
        tmp = run.path / f".{PER_USER_FILE}.tmp.npz"
        np.savez(tmp, **{metric: values, "users": np.asarray(res.users)})
        tmp.replace(cache)
        return values
    except Exception:  # a run without weights, or data not found: skip its test
        return None


def _paired(a_runs: list, b_runs: list, metric: str, split, cache: dict) -> dict | None:
    """Two-sided paired t-test of per-user values (averaged over the seeds both have), a − b."""
    from recpress.evaluation.stats import paired_ttest

    def values(run: RunResult) -> np.ndarray | None:
        if run.path not in cache:
            cache[run.path] = _per_user(run, metric, split)
        return cache[run.path]

    base = {r.seed: r for r in b_runs}
    a, b = [], []
    for r in a_runs:
        if r.seed not in base:
            continue
        va, vb = values(r), values(base[r.seed])
        if va is None or vb is None or va.shape != vb.shape:
            continue
        a.append(va)
        b.append(vb)
    if not a:
        return None
    t = paired_ttest(np.mean(a, axis=0), np.mean(b, axis=0))
    return {"t": t.t, "p": t.p, "diff": t.mean_diff, "n_users": t.n, "seeds": len(a)}


def paired_tests(
    found: dict, metric: str, split, best: dict[int, str] | None = None
) -> dict[tuple[int, str], dict]:
    """Paired t-tests (per-user values averaged over common seeds) of each method vs "none".

    With `best` (dim → the best method of that dim) each other method is also tested against
    it, under ``"vs_best"`` (``{"method", "t", "p", "diff", "n_users", "seeds"}``).
    """
    out: dict[tuple[int, str], dict] = {}
    cache: dict[Path, np.ndarray | None] = {}
    dims = sorted({d for d, _ in found if d is not None})
    for dim in dims:
        base = found.get((dim, "none"), [])
        top = (best or {}).get(dim)
        for (d, method), runs in found.items():
            if d != dim:
                continue
            entry = {}
            if base and method != "none":
                entry = _paired(runs, base, metric, split, cache) or {}
            if top is not None and method != top and (dim, top) in found:
                vs = _paired(runs, found[(dim, top)], metric, split, cache)
                if vs is not None:
                    entry["vs_best"] = {"method": top, **vs}
            if entry:
                out[(dim, method)] = entry
    return out


def best_methods(table: dict, methods: list[str], sel: str) -> dict[int, str]:
    """dim → the method with the highest mean under selection `sel` (first in `methods` on ties)."""
    out: dict[int, str] = {}
    for dim in sorted({d for d, _ in table if d is not None}):
        cells = [(table[(dim, m)][sel]["mean"], -i, m) for i, m in enumerate(methods)
                 if sel in table.get((dim, m), {})]  # fmt: skip
        if cells:
            out[dim] = max(cells)[2]
    return out


def measure_latency(found: dict, split, n_users: int = 1024, k: int = 50) -> dict[int, dict]:
    """Top-k latency per student dim and of the teacher (key -1), in ms per batch of users.

    Timed on the serving path a practitioner gets (`TopKRecommender` on the run's artifact:
    chunked scoring, seen-item masking and the exact top-k), median of 3 after a warm-up.
    """
    import torch

    from recpress.serving.artifact import Artifact
    from recpress.serving.recommender import TopKRecommender

    out: dict[int, dict] = {}
    keys = sorted({d for d, _ in found if d is not None}) + [None]
    for dim in keys:
        runs = [r for (d, _), rs in found.items() if d == dim for r in rs]
        if not runs:
            continue
        try:
            artifact = Artifact.from_run(runs[0].path, split=split)
        except Exception:
            continue
        recommender = TopKRecommender(artifact)
        recommender.warm_up()
        users = torch.arange(min(n_users, artifact.n_users))
        times = []
        for rep in range(4):
            t0 = time.perf_counter()
            recommender.topk_internal(users, k)
            if rep:
                times.append(time.perf_counter() - t0)
        out[dim if dim is not None else -1] = {
            "ms_per_batch": 1e3 * float(np.median(times)),
            "batch_users": int(users.numel()),
            "parameters": artifact.num_parameters(),
            "threads": torch.get_num_threads(),
        }
    return out


# ---------------------------------------------------------------------------------------------
def summarize(cfg: SweepConfig, found: dict) -> dict:
    """Mean/std/n per (dim, method, selection) of the report metric, and timing."""
    metric = cfg.report.metric
    table: dict = {}
    for (dim, method), runs in found.items():
        entry: dict[str, Any] = {"seeds": sorted(r.seed for r in runs if r.seed is not None)}
        for sel in SELECTION_LABEL:
            vals = [r.results[sel][metric] for r in runs if sel in r.results]
            if vals:
                m, s = _mean_std(vals)
                entry[sel] = {"mean": m, "std": s, "n": len(vals), "values": vals}
                entry[f"{sel}_epochs"] = [r.selected_epoch.get(sel) for r in runs]
        entry["stopping"] = [
            f"{r.selected_epoch['best_valid']}/{r.curve_epochs[-1]}"
            for r in sorted(runs, key=lambda r: r.seed if r.seed is not None else -1)
            if "best_valid" in r.selected_epoch
        ]
        entry["epochs_run"] = [r.epochs_run for r in runs]
        entry["seconds_per_epoch"] = float(np.mean([r.seconds_per_epoch for r in runs]))
        entry["parameters"] = runs[0].parameters
        entry["aux_parameters"] = runs[0].aux_parameters
        table[(dim, method)] = entry
    return table


def _get(table, dim, method, sel):
    e = table.get((dim, method), {}).get(sel)
    return e


# ---------------------------------------------------------------------------------------------
@dataclass
class _Report:
    """What the report sections read: the config, the summary table and the side results."""

    cfg: SweepConfig
    table: dict
    sels: list[str]
    reference: Reference | None
    tests: dict = field(default_factory=dict)
    reference_cells: list[dict] = field(default_factory=list)
    best: dict[int, str] = field(default_factory=dict)  # dim → best method (first selection)

    @property
    def dims(self) -> list[int]:
        return sorted({d for d, _ in self.table if d is not None})


def _intro(r: _Report, sweep_dir: Path, n_done: int, n_total: int) -> list[str]:
    """Title, what the columns mean, the teacher and KD settings, the teacher's result."""
    cfg, sels, metric, reference, table = r.cfg, r.sels, r.cfg.report.metric, r.reference, r.table
    fixed_epoch = cfg.report.fixed_epoch
    weights = (
        "the validation-selected epoch's (the students stop early)"
        if _early_stopping(cfg)
        else "the final weights"
    )
    md: list[str] = [f"# Sweep report: {cfg.name}", ""]
    md += [
        f"Sweep directory `{sweep_dir}`; {n_done} of {n_total} runs finished. "
        f"Metric: test {metric}, mean ± std over seeds {cfg.students.seeds}. "
        "Selections: "
        + ", ".join(
            {
                "fixed_epochs": "**fixed epochs** = the last evaluation (the authors' protocol)",
                "best_valid": f"**validation-selected** = the evaluation with the best validation "
                f"{metric} (same run)",
                "fixed_epoch": f"**at epoch {fixed_epoch}** = the evaluation at epoch "
                f"{fixed_epoch} of the same run (the fixed-epoch protocol's value; a run that "
                "stopped earlier has none)",
            }[s]
            for s in sels
        )
        + ". Best mean per column in bold. Δ and p: difference to the no-KD student (and to the "
        "best method of the table, by the first selection's mean) and a two-sided paired t-test "
        f"on per-user test values of the saved weights ({weights}), averaged over seeds.",
        "",
    ]
    kd = cfg.students
    md += [
        f"Teacher: {cfg.main_teacher().model.name} d={teacher_dim(cfg)}. "
        f"KD weights λ (sum reduction, as the references): {kd.weights or 'method defaults'}; "
        f"params: {kd.params or 'defaults'}; arms: "
        f"{ {k: v.model_dump() for k, v in kd.arms.items()} or 'none' }.",
        "",
    ]
    t = table.get((None, "teacher"))
    if t:
        parts = [f"{selection_label(s, fixed_epoch)} {t[s]['mean']:.4f}" for s in sels if s in t]
        logged = reference.log.final(None, "teacher") if reference else None
        ref = f" (authors' log: {logged:.4f})" if logged is not None else ""
        md += [f"**Teacher**: test {metric} " + ", ".join(parts) + ref, ""]
    return md + _teachers_table(r)


def _teachers_table(r: _Report) -> list[str]:
    """Every teacher of a multi-teacher sweep: model, width, epochs run, test metric per
    selection (best in bold), seconds per epoch and parameters; nothing for a single teacher."""
    specs = r.cfg.teacher_specs()
    if len(specs) < 2:
        return []
    fixed_epoch, metric = r.cfg.report.fixed_epoch, r.cfg.report.metric
    entries = {
        name: r.table.get((None, "teacher" if i == 0 else f"teacher {name}"))
        for i, name in enumerate(specs)
    }
    best = {
        s: max((e[s]["mean"] for e in entries.values() if e and s in e), default=None)
        for s in r.sels
    }
    header = ["teacher", "model", "width", "epochs"]
    header += [f"test {metric} ({selection_label(s, fixed_epoch)})" for s in r.sels]
    header += ["s/epoch", "parameters"]
    md = ["## Teachers", "", "| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    for name, spec in specs.items():
        width = spec.model.model_dump().get("embedding_dim")
        cells = [name, spec.model.name, str(width) if width else "—"]
        e = entries[name]
        if e is None:
            md.append("| " + " | ".join(cells + ["not finished"] * (len(header) - 3)) + " |")
            continue
        cells.append(", ".join(str(n) for n in e.get("epochs_run", []) if n is not None) or "—")
        for s in r.sels:
            value = f"{e[s]['mean']:.4f}" if s in e else "—"
            cells.append(f"**{value}**" if s in e and e[s]["mean"] == best[s] else value)
        cells += [f"{e['seconds_per_epoch']:.3f}", f"{e['parameters']:,}"]
        md.append("| " + " | ".join(cells) + " |")
    return md + [""]


def _early_stopping(cfg: SweepConfig) -> bool:
    """Whether the students stop on validation (then the table shows the epochs)."""
    t = cfg.students.train
    return t.selection == "best_valid" and t.patience is not None


def _student_table(r: _Report, dim: int) -> list[str]:
    """The table of one student dim (one row per grid method)."""
    cfg, sels, table, tests, reference = r.cfg, r.sels, r.table, r.tests, r.reference
    kd, fixed_epoch = cfg.students, cfg.report.fixed_epoch
    md = [f"## Student d = {dim} (φ = {dim / teacher_dim(cfg):.2f})", ""]
    header = ["method", "seeds"] + [selection_label(s, fixed_epoch) for s in sels]
    header += ["Δ vs none", "p"]
    top = r.best.get(dim)
    if top is not None and any("vs_best" in tests.get((dim, m), {}) for m in kd.methods):
        header += [f"Δ vs best ({top})", "p vs best"]
    if _early_stopping(cfg):
        header += ["selected / last epoch per seed"]
    if reference:
        epoch = reference.log.epochs[-1]
        header += [f"authors' log (ep. {epoch})", "not below log? (one-sided t-test)"]
    teacher = table.get((None, "teacher"), {}).get(sels[0])
    if teacher:
        header += [f"% of teacher ({selection_label(sels[0], fixed_epoch)})"]
    header += ["s/epoch", "aux params"]
    md += ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    best = {
        s: max(
            (table[(dim, m)][s]["mean"] for m in kd.methods if s in table.get((dim, m), {})),
            default=None,
        )
        for s in sels
    }
    for m in kd.methods:
        e = table.get((dim, m))
        if not e:
            md.append(f"| {m} | 0 | " + " | ".join("—" for _ in header[2:]) + " |")
            continue
        cells = [m, str(len(e["seeds"]))]
        for s in sels:
            if s not in e:
                cells.append("—")
                continue
            text = _fmt(e[s]["mean"], e[s]["std"], e[s]["n"])
            if e[s]["n"] < len(e["seeds"]):
                text += f" ({e[s]['n']} seeds)"
            cells.append(f"**{text}**" if e[s]["mean"] == best[s] else text)
        tt = tests.get((dim, m))
        cells += _delta_cells(table, tt, dim, m, sels[0])
        if "p vs best" in header:
            vs = (tt or {}).get("vs_best")
            cells += [f"{vs['diff']:+.4f}", _p_text(vs["p"])] if vs else ["—", "—"]
        if _early_stopping(cfg):
            cells.append(", ".join(e.get("stopping") or ["—"]))
        if reference:
            cells += _log_cells(r, dim, m, e.get("fixed_epochs"))
        if teacher:
            ours = e.get(sels[0])
            cells.append(f"{100 * ours['mean'] / teacher['mean']:.1f}%" if ours else "—")
        cells += [f"{e['seconds_per_epoch']:.3f}", f"{e['aux_parameters']:,}"]
        md.append("| " + " | ".join(cells) + " |")
    return md + [""]


def _p_text(p: float) -> str:
    return "—" if math.isnan(p) else f"{p:.2g}"


def _delta_cells(table: dict, tt: dict | None, dim: int, m: str, sel: str) -> list[str]:
    """Δ vs the no-KD student (paired test, else difference of means) and its p-value."""
    e = table[(dim, m)]
    base = table.get((dim, "none"), {}).get(sel)
    tt = tt if tt and "diff" in tt else None
    if tt:
        delta = f"{tt['diff']:+.4f}"
    elif m != "none" and base and sel in e:
        delta = f"{e[sel]['mean'] - base['mean']:+.4f} (means)"
    else:
        delta = "—"
    return [delta, _p_text(tt["p"]) if tt else "—"]


def reference_cell(dim: int, method: str, fixed: dict, log: float) -> dict:
    """One logged cell against our seeds: the one-sided test H0 μ ≥ log vs H1 μ < log.

    ``reached`` is True unless p < `REFERENCE_ALPHA` (our mean significantly below the single
    logged run), None with one seed (untestable); ``verdict`` says it in words.
    """
    values = fixed.get("values") or [fixed["mean"]] * int(fixed["n"])
    res = one_sided_ttest_below(values, log)
    if res.n < 2:
        reached, verdict = None, "untestable (one seed)"
    elif math.isnan(res.p):  # every seed exactly at the log
        reached, verdict = True, "reached"
    else:
        reached = res.p >= REFERENCE_ALPHA
        verdict = "reached" if reached else "NOT reached"
    return {
        "dim": dim, "method": method, "ours": fixed["mean"], "std": fixed.get("std"),
        "n": res.n, "log": log, "t": res.t, "p": res.p, "reached": reached, "verdict": verdict,
    }  # fmt: skip


def _log_cells(r: _Report, dim: int, m: str, fixed: dict | None) -> list[str]:
    """The logged final value and whether our fixed-epoch seeds reach it (recorded in `r`)."""
    log = r.reference.log.final(dim, m) if r.reference else None
    if log is None or not fixed:
        return ["—", "—"]
    cell = reference_cell(dim, m, fixed, log)
    r.reference_cells.append(cell)
    if cell["reached"] is None:
        return [f"{log:.4f}", cell["verdict"]]
    verdict = "yes" if cell["reached"] else "**no**"
    return [f"{log:.4f}", f"{verdict} ({_t_text(cell)})"]


def _timing(r: _Report) -> list[str]:
    """Training seconds per epoch per method and dim."""
    table, dims, kd = r.table, r.dims, r.cfg.students
    t = table.get((None, "teacher"))
    md = ["## Training time per epoch (s, mean over seeds)", ""]
    md += [
        "| method | " + " | ".join(f"d={d}" for d in dims) + " |",
        "|" + "---|" * (len(dims) + 1),
    ]
    for m in kd.methods:
        row = [
            f"{table[(d, m)]['seconds_per_epoch']:.3f}" if (d, m) in table else "—" for d in dims
        ]
        md.append(f"| {m} | " + " | ".join(row) + " |")
    if t:
        md.append(f"\nTeacher: {t['seconds_per_epoch']:.3f} s/epoch.")
    md.append("")

    return md


def _claims(r: _Report) -> tuple[list[str], dict[str, list[dict]]]:
    """The claims section: each claim per arm and selection, with its evidence."""
    cfg, table, sels, kd = r.cfg, r.table, r.sels, r.cfg.students
    claims_ref = claims_reference(cfg) if cfg.report.claims else None
    md: list[str] = []
    claims: dict[str, list[dict]] = {}
    arms = claim_arms(cfg, claims_ref) if claims_ref is not None else []
    if claims_ref is not None and claims_ref.claims.rules and arms:
        md += [f"## Claims ({claims_ref.name})", ""]
        if len(cfg.students.seeds) < 2:
            md += [
                "One seed: the claims' seed-noise parts (margins over the pooled std, |Δ| "
                "within noise) cannot be tested with one seed; the orders and gaps are shown "
                "and tested. Run more seeds (`--seeds 0,1,2`) to decide them.",
                "",
            ]
        base = claims_ref.claims.arms_of
        for arm in arms:
            for s in sels:
                res = check_claims(cfg, table, arm, s, claims_ref)
                claims[f"{arm}/{s}" if arm else s] = res
                if arm is not None:
                    flags = kd.arms[arm].params.get(base) if arm in kd.arms else kd.params.get(base)
                    title = f"{base.upper()} arm `{arm}` (params {flags or 'defaults'}), "
                else:
                    title = ""
                md += [f"### {title}{selection_label(s, cfg.report.fixed_epoch)}", ""]
                for c in res:
                    md.append(f"* **{c['claim']}: {c['verdict'].upper()}**")
                    md += [f"  * {line}" for line in c["evidence"]]
                md.append("")
    return md, claims


def _missing(missing: list[dict]) -> list[str]:
    md = ["## Missing runs", ""]
    if missing:
        md += [f"* {m['run']} — {m['state']} (`{m['path']}`)" for m in missing]
        md += [
            "",
            "Rerun the same `recpress sweep` command to train them (finished runs are skipped).",
        ]
    else:
        md.append("None: the sweep is complete.")
    md.append("")
    return md


def _t_text(cell: dict) -> str:
    """ "t = +0.69, p = 0.72" (p one-sided), or "" when untestable."""
    if cell["reached"] is None or math.isnan(cell["t"]):
        return ""
    return f"t = {cell['t']:+.2f}, p = {cell['p']:.2g}"


def _reference_bullets(cells: list[dict]) -> list[str]:
    """Markdown bullets, one per logged cell: our mean vs the log, t, p and the verdict."""
    lines = []
    for c in cells:
        t_text = _t_text(c)
        lines.append(
            f"* d={c['dim']} {c['method']}: ours {c['ours']:.4f} ({c['n']} seeds) vs log "
            f"{c['log']:.4f}: {c['verdict']}" + (f" ({t_text})" if t_text else "")
        )
    return lines + [""]


def _reference_summary(cells: list[dict]) -> list[str]:
    """Markdown lines: the test in words, and how many logged cells it counts as reached."""
    lines = [
        "Each logged cell is decided by a one-sample one-sided t-test of our seeds' fixed-epoch "
        "values against the authors' single run: H0 μ ≥ log vs H1 μ < log, "
        "t = (mean − log) / (s / √n), p = P(T(n−1) ≤ t). A cell is reached unless p < "
        f"{REFERENCE_ALPHA:g} (our mean significantly below the log); one seed has no spread "
        "and is untestable."
    ]
    testable = [c for c in cells if c["reached"] is not None]
    n_ok = sum(bool(c["reached"]) for c in testable)
    lines.append(f"{n_ok} of {len(testable)} testable logged cells reached.")
    missed = [c for c in testable if not c["reached"]]
    if missed:
        lines.append(
            "Significantly below the log: "
            + ", ".join(f"d={c['dim']} {c['method']} (p = {c['p']:.2g})" for c in missed)
            + "."
        )
    untestable = [c for c in cells if c["reached"] is None]
    if untestable:
        below = sum(c["ours"] < c["log"] for c in untestable)
        lines.append(
            f"Untestable (one seed): {len(untestable)} cells, {below} of them below the log; "
            "run more seeds (`--seeds 0,1,2`) to decide them."
        )
    return [" ".join(lines), ""]
