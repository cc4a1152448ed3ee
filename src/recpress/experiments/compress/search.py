"""The budgeted search of `recpress compress`: the smallest student that meets a target.

Stage 1 trains cheap proxies (``proxy_epochs``) over dims × methods and ranks the methods by
their proxy validation metric; stage 2 trains the best ``finalists`` methods fully (early
stopping on validation) in a bisection over the dims, smallest first, until the smallest dim
that meets the target on validation is known. Every trial is a run directory under
``OUT/trials/``; the search state is ``OUT/compress.json`` (rewritten atomically after each
trial), so the same call on the same ``OUT`` resumes and reuses every finished trial.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from recpress.distill.registry import DISTILLERS, parse_method
from recpress.errors import ConfigError
from recpress.experiments.compress.pareto import front_of, write_pareto
from recpress.experiments.compress.target import Budget, Target, check_budget
from recpress.experiments.config import RunConfig, load_yaml, student_config
from recpress.runs import CONFIG, METRICS, read_json, write_json

#: student widths searched by default and the default candidate methods (fast, strong ones;
#: a slow method is left out when one full trial of it would exceed the budget's run share)
DEFAULT_DIMS = (8, 10, 16, 20, 32, 64)
DEFAULT_METHODS = ("none", "kd", "rrd", "rce-kd", "pckd", "ftd")
STATE = "compress.json"
TRIALS_DIR = "trials"
ARTIFACT_DIR = "artifact"
#: fraction of the budget stage 1 (the proxies) may spend
PROXY_SHARE = 0.15
#: exit code of a search whose target is not met (the best found is still reported + exported)
NOT_MET = 3

TrainFn = Callable[[RunConfig, Path], dict]
ProfileFn = Callable[[Path], dict]
ExportFn = Callable[[Path, Path], dict]


@dataclass(frozen=True)
class TeacherInfo:
    """What the search needs of the teacher run: its metrics, size and speed."""

    run_dir: str
    valid: dict[str, float]
    test: dict[str, float]
    params: int
    dim: int
    seconds_per_epoch: float
    ks: list[int]


def read_teacher(path: str | Path) -> TeacherInfo:
    """The teacher run at `path` (ConfigError when it is not a finished run directory)."""
    p = Path(path)
    if not (p / CONFIG).is_file() or not (p / METRICS).is_file():
        raise ConfigError(
            f"teacher {p} is not a finished run directory (needs {CONFIG} and {METRICS}); "
            "train one with `recpress train`",
            field="TEACHER",
        )
    metrics = read_json(p / METRICS)
    config = load_yaml(p / CONFIG)
    dim = int((config.get("model") or {}).get("embedding_dim") or 1)
    ks = list((config.get("train") or {}).get("ks") or [10, 20, 50])
    return TeacherInfo(
        run_dir=str(p),
        valid=dict(metrics.get("valid") or {}),
        test=dict(metrics.get("test") or {}),
        params=int(metrics.get("parameters") or 0),
        dim=dim,
        seconds_per_epoch=float(metrics.get("seconds_per_epoch") or 1.0),
        ks=ks,
    )


def check_methods(methods: Sequence[str]) -> list[str]:
    """Unique method names, each registered (or a ``+`` composition, or ``none``)."""
    out: list[str] = []
    for m in methods:
        name = str(m).strip().lower()
        parse_method(name)  # ConfigError naming the known ones
        if name not in out:
            out.append(name)
    if not out:
        raise ConfigError("--methods names no method (e.g. none,kd,rrd)", field="--methods")
    return out


def check_dims(dims: Sequence[int]) -> list[int]:
    out = sorted({int(d) for d in dims})
    if not out or out[0] < 1:
        raise ConfigError(f"--dims must be positive integers, got {list(dims)}", field="--dims")
    return out


def method_cost(method: str) -> float:
    """Relative cost of one epoch of `method` to a plain epoch (its terms' ``epoch_cost``)."""
    return max(1.0, sum(DISTILLERS[n].epoch_cost for n in parse_method(method)))


def _scale(dim: int) -> float:
    """Growth of the epoch time with the width (as the sweep's cost model)."""
    return 1.0 + dim / 100


def default_train(progress: bool = False) -> TrainFn:
    """`train_run` with the split loaded once for all trials."""
    from recpress.experiments.run import load_split_for, train_run

    cache: dict[str, Any] = {}

    def train(config: RunConfig, run_dir: Path) -> dict:
        if "split" not in cache:
            cache["split"] = load_split_for(config)
        return train_run(config, run_dir, progress=progress, split=cache["split"])

    return train


def default_profile(run_dir: Path) -> dict:
    from recpress.serving.profile import profile_run

    return profile_run(run_dir, write=True, n_requests=200)


def default_export(run_dir: Path, out: Path) -> dict:
    from recpress.serving.export import export_run

    report = export_run(run_dir, out, format="npz", overwrite=True)
    write_json(out / "export_report.json", report)
    return report


class Search:
    """One compress search over `dims` × `methods` into `out` (see the module docstring)."""

    def __init__(
        self,
        teacher: str | Path,
        target: Target,
        out: str | Path,
        dims: Sequence[int] = DEFAULT_DIMS,
        methods: Sequence[str] = DEFAULT_METHODS,
        budget: Budget | None = None,
        train_fn: TrainFn | None = None,
        profile_fn: ProfileFn | None = None,
        export_fn: ExportFn | None = None,
        log: Callable[[str], None] | None = None,
    ) -> None:
        self.teacher = read_teacher(teacher)
        self.teacher_path = Path(teacher)
        self.target = target
        self.out = Path(out)
        self.dims = check_dims(dims)
        self.methods = check_methods(methods)
        self.budget = check_budget(budget or Budget())
        self.valid_threshold = target.threshold(self.teacher.valid)
        self.test_threshold = target.threshold(self.teacher.test)
        self.train_fn = train_fn or default_train()
        self.profile_fn = profile_fn or default_profile
        self.export_fn = export_fn or default_export
        self.log = log or (lambda msg: None)
        self.notes: list[str] = []
        self.trained = 0
        self.reused = 0
        self.started = time.perf_counter()
        self.state = self._load_state()

    # -- state ---------------------------------------------------------------------------------
    def _load_state(self) -> dict[str, Any]:
        path = self.out / STATE
        settings = {"teacher": str(self.teacher_path.resolve()), **self.budget.trial_settings()}
        if not path.is_file():
            if self.out.exists() and not self.out.is_dir():
                raise ConfigError(f"{self.out} exists and is not a directory; choose another --out")
            return {"version": 1, "settings": settings, "trials": {}, "latency": {},
                    "spent_seconds": 0.0}  # fmt: skip
        state = read_json(path)
        old = state.get("settings") or {}
        changed = [k for k in settings if old.get(k) != settings[k]]
        if changed:
            was = ", ".join(f"{k}={old.get(k)!r} (now {settings[k]!r})" for k in changed)
            raise ConfigError(
                f"{path} is a search with other trial settings: {was}; rerun with the same "
                "ones to resume, or choose another --out",
                field="--out",
            )
        return state

    def _save(self) -> None:
        self.out.mkdir(parents=True, exist_ok=True)
        write_json(self.out / STATE, self.state)

    def spent(self) -> float:
        return float(self.state["spent_seconds"])

    def left(self) -> float:
        return self.budget.minutes * 60 - self.spent()

    # -- cost model ----------------------------------------------------------------------------
    def epoch_seconds(self, method: str, dim: int) -> float:
        """Estimated wall seconds per epoch (with evaluations) of `method` at `dim`: measured
        trials of the method, else a plain epoch (measured, or the teacher's) × its cost."""
        done = list(self.state["trials"].values())

        def per_unit(recs: list[dict]) -> float:
            return sum(r["wall_seconds"] / max(1, r["epochs_run"]) / _scale(r["dim"])
                       for r in recs) / len(recs)  # fmt: skip

        own = [r for r in done if r["method"] == method and r.get("wall_seconds")]
        if own:
            return per_unit(own) * _scale(dim)
        plain = [r for r in done if r["method"] == "none" and r.get("wall_seconds")]
        base = (
            per_unit(plain) if plain else self.teacher.seconds_per_epoch / _scale(self.teacher.dim)
        )
        return base * method_cost(method) * _scale(dim)

    def estimate(self, method: str, dim: int, stage: str) -> float:
        epochs = self.budget.proxy_epochs if stage == "proxy" else self.budget.full_epochs
        return self.epoch_seconds(method, dim) * epochs

    # -- trials --------------------------------------------------------------------------------
    def trial_config(self, method: str, dim: int, stage: str) -> RunConfig:
        b = self.budget
        values: dict[str, Any] = {
            "profile": False,
            "train.selection_metric": self.target.metric,
            "train.ks": sorted(set(self.teacher.ks) | {self.target.k}),
            "train.eval_test_every_eval": False,
        }
        if stage == "proxy":
            values.update({"train.epochs": b.proxy_epochs, "train.selection": "fixed_epochs",
                           "train.eval_every": b.proxy_epochs, "train.patience": None})  # fmt: skip
        else:
            values.update({"train.epochs": b.full_epochs, "train.selection": "best_valid",
                           "train.patience": b.patience})  # fmt: skip
        return student_config(self.teacher_path, method, dim, values=values)

    def trial(self, method: str, dim: int, stage: str, profile: bool) -> dict | None:
        """The record of one trial: reused, or trained now (None: it does not fit the budget)."""
        name = f"{stage}-{method}-d{dim}"
        rec = self.state["trials"].get(name)
        if rec is not None:
            self.reused += 1
            return rec
        est = self.estimate(method, dim, stage)
        if est > self.left():
            self.notes.append(
                f"{name} not trained: estimated {est / 60:.1f} min, {max(0, self.left()) / 60:.1f} "
                "budget minutes left"
            )
            return None
        run_dir = self.out / TRIALS_DIR / name
        self.log(f"training {name} (estimated {est / 60:.1f} min)")
        t0 = time.perf_counter()
        metrics = self.train_fn(self.trial_config(method, dim, stage), run_dir)
        wall = time.perf_counter() - t0
        rec = {
            "name": name,
            "run_dir": str(run_dir),
            "method": method,
            "dim": dim,
            "stage": stage,
            "valid_metric": float(metrics["valid"][self.target.metric]),
            "test_metric": _get(metrics.get("test"), self.target.metric),
            "best_epoch": metrics.get("best_epoch"),
            "epochs_run": int(metrics.get("epochs_run") or 1),
            "seconds_per_epoch": metrics.get("seconds_per_epoch"),
            "wall_seconds": round(wall, 2),
            "params": int(metrics.get("parameters") or self.params_of(dim)),
        }
        if profile:
            t1 = time.perf_counter()
            prof = self.profile_fn(run_dir)
            rec.update(
                params=int(prof.get("parameters", rec["params"])),
                bytes=prof.get("bytes_on_disk"),
                latency_p50_ms=prof["latency_ms"]["p50"],
                latency_p95_ms=prof["latency_ms"]["p95"],
            )
            wall += time.perf_counter() - t1
        self.state["trials"][name] = rec
        self.state["spent_seconds"] = round(self.spent() + wall, 2)
        self.trained += 1
        self._save()
        self.log(
            f"  {name}: valid {self.target.metric} {rec['valid_metric']:.4f} "
            f"(target {self.valid_threshold:.4f}), {wall:.0f} s"
        )
        return rec

    def params_of(self, dim: int) -> int:
        """Inference parameters of a student of width `dim` (embedding tables grow with d)."""
        return int(round(self.teacher.params * dim / max(1, self.teacher.dim)))

    def meets(self, rec: dict) -> bool:
        b = self.budget
        lat = rec.get("latency_p50_ms")
        return (
            rec["valid_metric"] >= self.valid_threshold
            and (b.max_params is None or rec["params"] <= b.max_params)
            and (b.max_latency_ms is None or lat is None or lat <= b.max_latency_ms)
        )

    # -- stages --------------------------------------------------------------------------------
    def admitted_methods(self, dims: list[int]) -> list[str]:
        """Methods whose estimated full trial at the middle dim fits the budget's run share."""
        mid = dims[len(dims) // 2]
        limit = self.budget.run_share * self.budget.minutes * 60
        out = []
        for m in self.methods:
            est = self.estimate(m, mid, "full")
            if est <= limit or any(r["method"] == m for r in self.state["trials"].values()):
                out.append(m)
            else:
                self.notes.append(
                    f"{m} left out: one full trial at d={mid} is estimated at {est / 60:.1f} min, "
                    f"more than {self.budget.run_share:g} of the {self.budget.minutes:g}-minute "
                    "budget (raise --budget-minutes or run_share to include it)"
                )
        return out

    def stage1(self, dims: list[int], methods: list[str]) -> dict[tuple[str, int], float]:
        """Proxy metric per (method, dim); the first proxy of each dim is profiled (latency)."""
        proxy_left = PROXY_SHARE * self.budget.minutes * 60
        order = sorted(methods, key=lambda m: (m != "none", methods.index(m)))
        scores: dict[tuple[str, int], float] = {}
        anchor = dims[len(dims) // 2]  # every method at the middle dim first
        for dim in [anchor] + [d for d in dims if d != anchor]:
            for m in order:
                name = f"proxy-{m}-d{dim}"
                if name not in self.state["trials"] and self.estimate(m, dim, "proxy") > (
                    proxy_left - self._proxy_spent()
                ):
                    self.notes.append(f"{name} not trained: over the proxy stage's budget share")
                    continue
                profile = str(dim) not in self.state["latency"]
                rec = self.trial(m, dim, "proxy", profile=profile)
                if rec is None:
                    continue
                if profile and rec.get("latency_p50_ms") is not None:
                    self.state["latency"][str(dim)] = {
                        "p50": rec["latency_p50_ms"], "p95": rec["latency_p95_ms"]
                    }  # fmt: skip
                    self._save()
                scores[(m, dim)] = rec["valid_metric"]
        return scores

    def _proxy_spent(self) -> float:
        return sum(r["wall_seconds"] for r in self.state["trials"].values()
                   if r["stage"] == "proxy")  # fmt: skip

    @staticmethod
    def rank_methods(scores: dict[tuple[str, int], float], methods: list[str]) -> list[str]:
        """Methods by mean proxy metric over the dims every ranked method has a proxy at (all
        their dims when there is none in common); methods without proxies last."""
        have = [m for m in methods if any(k[0] == m for k in scores)]
        dim_sets = [{d for (mm, d) in scores if mm == m} for m in have]
        common = set.intersection(*dim_sets) if dim_sets else set()

        def mean(m: str) -> float:
            vals = [v for (mm, d), v in scores.items() if mm == m and (not common or d in common)]
            return sum(vals) / len(vals)

        ranked = sorted(have, key=lambda m: (-mean(m), methods.index(m)))
        return ranked + [m for m in methods if m not in have]

    def stage2(self, dims: list[int], ranked: list[str], scores: dict) -> bool:
        """Bisection over `dims` for each finalist; returns False when the budget ran out.

        The first finalist searches all dims (`next_dim`: bisection guided by its proxies). A
        later one is first tried at the largest dim below the smallest that met the target so
        far: when it misses there, no smaller dim of it is tried (accuracy grows with the
        width); when it meets, the search goes on below.
        """
        best = len(dims)  # index of the smallest dim known to meet the target
        for n, method in enumerate(ranked[: self.budget.finalists]):
            lo, hi = -1, best
            known = [
                (dims.index(r["dim"]), self.meets(r))
                for r in self.state["trials"].values()
                if r["stage"] == "full" and r["method"] == method and r["dim"] in dims
            ]
            lo = max([i for i, ok in known if not ok and i < hi], default=lo)  # a resumed search
            hi = min([i for i, ok in known if ok and i > lo], default=hi)
            first = n > 0 and not known
            while hi - lo > 1:
                mid = hi - 1 if first else self.next_dim(method, dims, lo, hi, scores)
                first = False
                rec = self.trial(method, dims[mid], "full", profile=True)
                if rec is None:
                    return False
                if self.meets(rec):
                    hi = mid
                elif n > 0 and mid == best - 1:
                    break  # a later finalist that misses just below the best: done with it
                else:
                    lo = mid
            best = min(best, hi)
        return True

    def next_dim(self, method: str, dims: list[int], lo: int, hi: int, scores: dict) -> int:
        """Index of the next full trial strictly between `lo` (misses) and `hi` (meets).

        Once the method has full trials, its full ÷ proxy ratio (mean over the dims with both)
        predicts the full metric of each dim from its proxy: the smallest dim predicted to meet
        the target is tried next. Without a prediction that meets, the middle (bisection).
        """
        ratios = [
            r["valid_metric"] / scores[(method, r["dim"])]
            for r in self.state["trials"].values()
            if r["stage"] == "full" and r["method"] == method and scores.get((method, r["dim"]))
        ]
        if ratios:
            ratio = sum(ratios) / len(ratios)
            for i in range(lo + 1, hi):
                proxy = scores.get((method, dims[i]))
                if proxy is not None and ratio * proxy >= self.valid_threshold:
                    return i
        return (lo + hi) // 2

    # -- the whole search ----------------------------------------------------------------------
    def run(self) -> dict[str, Any]:
        """Run (or resume) the search, write the reports and the artifact; returns the result
        (``result["met"]``: whether a student meets the target on validation)."""
        self.out.mkdir(parents=True, exist_ok=True)
        self._save()
        b = self.budget
        dims = [d for d in self.dims if b.max_params is None or self.params_of(d) <= b.max_params]
        if not dims:
            raise ConfigError(
                f"no dim in {self.dims} fits --max-params {b.max_params:,}: d={self.dims[0]} "
                f"has {self.params_of(self.dims[0]):,} parameters",
                field="--max-params",
            )
        if len(dims) < len(self.dims):
            over = sorted(set(self.dims) - set(dims))
            self.notes.append(f"dims over --max-params left out: {over}")
        methods = self.admitted_methods(dims)
        scores = self.stage1(dims, methods)
        ranked = self.rank_methods(scores, methods)
        if b.max_latency_ms is not None:
            lat = self.state["latency"]
            slow = [d for d in dims if lat.get(str(d), {}).get("p50", 0) > b.max_latency_ms]
            dims = [d for d in dims if d not in slow]
            if slow:
                limit = f"--max-latency-ms {b.max_latency_ms:g}"
                self.notes.append(f"dims over {limit} left out: {slow}")
        complete = self.stage2(dims, ranked, scores) if dims else True
        result = self.result(ranked, complete)
        write_pareto(self.out, result)
        self.state["result"] = {k: result[k] for k in ("met", "decision", "chosen")}
        self._save()
        return result

    def result(self, ranked: list[str], complete: bool) -> dict[str, Any]:
        full = sorted((r for r in self.state["trials"].values() if r["stage"] == "full"),
                      key=lambda r: (r["dim"], r["method"]))  # fmt: skip
        cands = []
        for r in full:
            row = {k: r.get(k) for k in ("method", "dim", "valid_metric", "test_metric", "params",
                   "bytes", "latency_p50_ms", "latency_p95_ms", "best_epoch", "epochs_run",
                   "run_dir")}  # fmt: skip
            row["meets"] = self.meets(r)
            row["meets_test"] = (r.get("test_metric") or 0) >= self.test_threshold
            row["test_ratio"] = _ratio(r.get("test_metric"), self.teacher.test, self.target.metric)
            cands.append(row)
        for row, on in zip(cands, front_of(cands), strict=True):
            row["front"] = on
        feasible = [c for c in cands if c["meets"]]
        chosen = min(feasible, key=lambda c: (c["dim"], -c["valid_metric"])) if feasible else None
        best = chosen or (max(cands, key=lambda c: c["valid_metric"]) if cands else None)
        decision = self.decision(chosen, best, complete)
        if best is not None:
            decision["artifact"] = self.export(best)
        proxies = [
            {k: r[k] for k in ("method", "dim", "valid_metric", "wall_seconds")}
            for r in self.state["trials"].values()
            if r["stage"] == "proxy"
        ]
        m = self.target.metric
        elapsed = time.perf_counter() - self.started
        return {
            "target": {
                "text": str(self.target),
                **asdict(self.target),
                "valid": self.valid_threshold,
                "test": self.test_threshold,
            },  # fmt: skip
            "teacher": {
                "run_dir": self.teacher.run_dir,
                "dim": self.teacher.dim,
                "params": self.teacher.params,
                "valid": self.teacher.valid.get(m),
                "test": self.teacher.test.get(m),
            },  # fmt: skip
            "budget": asdict(self.budget),
            "dims": self.dims,
            "methods": self.methods,
            "method_ranking": ranked,
            "met": chosen is not None,
            "chosen": chosen,
            "best": best,
            "decision": decision,
            "candidates": cands,
            "proxies": proxies,
            "latency_by_dim": self.state["latency"],
            "notes": self.notes,
            "spent": {
                "minutes": round(self.spent() / 60, 2),
                "session_wall_minutes": round(elapsed / 60, 2),
                "trials_trained": self.trained,
                "trials_reused": self.reused,
            },  # fmt: skip
        }

    def decision(self, chosen: dict | None, best: dict | None, complete: bool) -> dict[str, Any]:
        m = self.target.metric
        if chosen is not None:
            smaller = [c for c in self.state["trials"].values()
                       if c["stage"] == "full" and c["dim"] < chosen["dim"]]  # fmt: skip
            tried = ", ".join(sorted({f"{c['method']} d={c['dim']}" for c in smaller}))
            why = (
                "the smallest dim that meets the target on validation; smaller dims tried fully "
                f"missed it: {tried}"
                if smaller
                else "the smallest dim searched that meets the target on validation"
            )
            test_ok = chosen["meets_test"]
            text = (
                f"Chosen: **{chosen['method']} d={chosen['dim']}** ({chosen['params']:,} "
                f"parameters, {self.teacher.params / max(1, chosen['params']):.1f}× fewer than "
                f"the teacher): validation {m} {chosen['valid_metric']:.4f} >= "
                f"{self.valid_threshold:.4f}; test {_num(chosen['test_metric'])} "
                f"({'meets' if test_ok else 'misses'} the test threshold "
                f"{self.test_threshold:.4f}). Why: {why}."
            )
            return {"met": True, "text": text, "met_on_test": test_ok}
        reason = "the budget ran out" if not complete else "no dim × method searched reaches it"
        if best is None:
            text = f"Target not met: {reason}, and no student was trained fully."
            return {"met": False, "text": text, "reason": reason}
        gap = self.valid_threshold - best["valid_metric"]
        rel = gap / self.valid_threshold if self.valid_threshold else float("nan")
        text = (
            f"Target not met ({reason}). Best found: {best['method']} d={best['dim']} with "
            f"validation {m} {best['valid_metric']:.4f}, missing the target "
            f"{self.valid_threshold:.4f} by {gap:.4f} absolute ({rel:.1%} relative); test "
            f"{_num(best['test_metric'])} vs {self.test_threshold:.4f}. It is exported as the "
            "best found."
        )
        return {"met": False, "text": text, "reason": reason, "missed_by": round(gap, 6),
                "missed_by_relative": round(rel, 6)}  # fmt: skip

    def export(self, cand: dict) -> dict[str, Any]:
        """Export `cand`'s run as OUT/artifact (kept when it already holds that run)."""
        out = self.out / ARTIFACT_DIR
        done = self.state.get("artifact") or {}
        if done.get("source") == cand["run_dir"] and out.is_dir():
            return done
        self.log(f"exporting {cand['run_dir']} to {out}")
        report = self.export_fn(Path(cand["run_dir"]), out)
        self.state["artifact"] = {"path": str(out), "source": cand["run_dir"],
                                  "bytes": report.get("bytes")}  # fmt: skip
        self._save()
        return self.state["artifact"]


def _get(d: dict | None, key: str) -> float | None:
    return None if not d or key not in d else float(d[key])


def _ratio(x: float | None, teacher: dict, key: str) -> float | None:
    t = teacher.get(key)
    return None if x is None or not t else x / t


def _num(x: float | None) -> str:
    return "n/a" if x is None else f"{x:.4f}"


def compress(
    teacher: str | Path,
    target: Target,
    out: str | Path,
    dims: Sequence[int] = DEFAULT_DIMS,
    methods: Sequence[str] = DEFAULT_METHODS,
    budget: Budget | None = None,
    **hooks: Any,
) -> dict[str, Any]:
    """Find the smallest student of `teacher` that meets `target` (see `Search`); returns the
    result written to OUT/pareto.json (``met``, ``chosen``, ``decision``, ``candidates``)."""
    return Search(teacher, target, out, dims, methods, budget, **hooks).run()
