"""Sweeps and reports end to end on a tiny ml-100k grid, plus config errors and claim logic."""

from __future__ import annotations

import json
import math
import os
import re
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import yaml

from recpress.errors import ConfigError
from recpress.experiments.report import (
    _reference_summary,
    check_claims,
    read_run,
    reference_cell,
    write_report,
)
from recpress.experiments.sweep import (
    SweepConfig,
    expected_cost,
    load_sweep_config,
    parallel_order,
    plan,
    prepare_sweep_dir,
    run_sweep,
)
from tests.experiments.grids import TRAIN


def tiny_config(**students) -> dict:
    s = {
        "dims": [4],
        "methods": ["none", "ftd", "htd", "htd+rrd"],
        "seeds": [0],
        "train": TRAIN,
        "params": {"htd": {"preset": "reference", "n_groups": 3}},
    }
    s.update(students)
    return {
        "name": "tiny",
        "data": {"dataset": "ml-100k", "min_rating": 4},
        "teacher": {"model": {"name": "bpr", "embedding_dim": 8}, "train": TRAIN},
        "students": s,
        "report": {"curve_methods": ["none", "ftd", "htd"], "claims": "td-citeulike"},
    }


def write_cfg(path: Path, data: dict) -> Path:
    path.write_text(yaml.safe_dump(data))
    return path


@pytest.fixture(scope="module")
def env(data_root, tmp_path_factory):
    mp = pytest.MonkeyPatch()
    mp.setenv("RECPRESS_DATA", str(data_root))
    mp.setenv("RECPRESS_CACHE", str(tmp_path_factory.mktemp("cache")))
    yield
    mp.undo()


@pytest.fixture(scope="module")
def finished_sweep(env, tmp_path_factory):
    root = tmp_path_factory.mktemp("sweep")
    cfg = SweepConfig.model_validate(tiny_config())
    summary = run_sweep(cfg, root / "s", progress=False)
    assert len(summary["trained"]) == 5 and not summary["skipped"]
    return cfg, root / "s"


def test_layout_and_skip_finished(finished_sweep):
    cfg, sweep_dir = finished_sweep
    assert (sweep_dir / "sweep.yaml").is_file()
    assert (sweep_dir / "teacher" / "metrics.json").is_file()
    for m in ("none", "ftd", "htd", "htd+rrd"):
        assert (sweep_dir / "runs" / "4" / m / "seed0" / "metrics.json").is_file()
    again = run_sweep(cfg, sweep_dir, progress=False)
    assert not again["trained"] and len(again["skipped"]) == 5


def test_parallel_jobs_train_the_same_runs_with_the_same_results(finished_sweep, tmp_path):
    """jobs=2: the teacher first, then students in two worker processes; every run seeds
    itself, so each student ends where the sequential sweep's did (up to float summation
    order: the workers use fewer threads)."""
    cfg, sweep_dir = finished_sweep
    parallel = tmp_path / "p"
    parallel.mkdir()
    shutil.copytree(sweep_dir / "teacher", parallel / "teacher")  # reused, not retrained
    shutil.copy(sweep_dir / "sweep.yaml", parallel / "sweep.yaml")
    summary = run_sweep(cfg, parallel, progress=False, jobs=2)
    assert summary["skipped"] == ["teacher"] and len(summary["trained"]) == 4
    for m in ("none", "ftd", "htd", "htd+rrd"):
        a = json.loads((sweep_dir / "runs/4" / m / "seed0/metrics.json").read_text())
        b = json.loads((parallel / "runs/4" / m / "seed0/metrics.json").read_text())
        assert b["test"]["recall@50"] == pytest.approx(a["test"]["recall@50"], abs=0.01), m
    with pytest.raises(ConfigError, match="jobs must be a positive integer"):
        run_sweep(cfg, parallel, progress=False, jobs=0)


def test_student_runs_are_distilled_from_the_sweep_teacher(finished_sweep):
    cfg, sweep_dir = finished_sweep
    runs = {r.method: r for r in plan(cfg, sweep_dir) if not r.is_teacher}
    assert runs["none"].config.distill is None
    d = runs["htd"].config.distill
    assert d.method == "htd" and Path(d.teacher) == (sweep_dir / "teacher").resolve()
    assert d.params["htd"]["preset"] == "reference"
    assert runs["ftd"].config.distill.params == {}
    composed = runs["htd+rrd"].config.distill
    assert composed.method == "htd+rrd" and set(composed.params) == {"htd"}
    metrics = json.loads((runs["htd+rrd"].path / "metrics.json").read_text())
    assert set(metrics["distill"]["weights"]) == {"htd", "rrd"}
    assert metrics["aux_parameters"] > 0


def test_report_complete(finished_sweep):
    _, sweep_dir = finished_sweep
    paths = write_report(sweep_dir, paired=True, latency=True)
    md = paths["md"].read_text()
    assert "## Student d = 4" in md and "None: the sweep is complete." in md
    assert "fixed epochs (last)" in md and "validation-selected" in md
    assert "## Claims" in md and "## Training time per epoch" in md
    assert "## Teachers" not in md  # one teacher: the intro line only
    assert (sweep_dir / "runs/4/ftd/seed0/per_user_test.npz").is_file()  # paired test ran
    page = paths["html"].read_text()
    assert page.count("data:image/png;base64,") == 2  # curves + size, embedded
    assert "report_assets/" not in page  # self-contained
    assert "<table>" in page and "**" not in page


def test_report_fixed_epoch_and_tests_vs_the_best_method(finished_sweep, tmp_path):
    """report.fixed_epoch reads the evaluation at that epoch from the same runs; each method
    is also paired-tested against the best one; early-stopped students show their epochs."""
    cfg, sweep_dir = finished_sweep
    copy = tmp_path / "fixed"
    shutil.copytree(sweep_dir, copy)
    data = yaml.safe_load((copy / "sweep.yaml").read_text())
    data["report"].update(selections=["fixed_epochs", "fixed_epoch"], fixed_epoch=1)
    data["students"]["train"].update(selection="best_valid", patience=2)
    (copy / "sweep.yaml").write_text(yaml.safe_dump(data))
    paths = write_report(copy, paired=True, latency=False)
    md = paths["md"].read_text()
    numbers = json.loads((copy / "report.json").read_text())
    at_1 = numbers["table"]["4/ftd"]["fixed_epoch"]["values"][0]
    history = (copy / "runs/4/ftd/seed0/history.csv").read_text().splitlines()
    header, row = history[0].split(","), history[2].split(",")  # epoch 1
    assert row[0] == "1" and at_1 == pytest.approx(float(row[header.index("test_recall@50")]))
    best = numbers["best"]["4"]
    assert numbers["table"][f"4/{best}"]["fixed_epochs"]["mean"] == max(
        numbers["table"][f"4/{m}"]["fixed_epochs"]["mean"] for m in cfg.students.methods
    )
    others = [m for m in cfg.students.methods if m != best]
    assert all(numbers["paired_tests"][f"4/{m}"]["vs_best"]["method"] == best for m in others)
    assert "vs_best" not in numbers["paired_tests"].get(f"4/{best}", {})
    assert "| at epoch 1 |" in md and f"Δ vs best ({best})" in md
    assert "selected / last epoch per seed" in md and "/2 |" in md
    teacher = numbers["table"]["None/teacher"]["fixed_epochs"]["mean"]
    share = 100 * numbers["table"][f"4/{best}"]["fixed_epochs"]["mean"] / teacher
    assert "% of teacher (fixed epochs (last))" in md and f"| {share:.1f}% |" in md
    with pytest.raises(ValueError, match="needs report.fixed_epoch"):
        SweepConfig.model_validate({"report": {"selections": ["fixed_epoch"]}})


def test_report_incomplete_lists_missing(finished_sweep, tmp_path):
    _, sweep_dir = finished_sweep
    copy = tmp_path / "partial"
    shutil.copytree(sweep_dir, copy)
    (copy / "runs/4/htd/seed0/metrics.json").unlink()
    shutil.rmtree(copy / "runs/4/ftd")
    write_report(copy, paired=False, latency=False)
    md = (copy / "report.md").read_text()
    assert "## Missing runs" in md
    assert "d=4 htd seed 0 — interrupted after" in md
    assert "d=4 ftd seed 0 — not started" in md
    assert "| none | 1 |" in md  # what is there is still reported


def test_different_config_refused_unless_restart(finished_sweep, tmp_path):
    cfg, sweep_dir = finished_sweep
    data = tiny_config()
    data["students"]["weights"] = {"ftd": 0.5}  # changes a finished run's config
    other = SweepConfig.model_validate(data)
    with pytest.raises(ConfigError, match="different config.*--restart"):
        prepare_sweep_dir(other, sweep_dir)
    data = tiny_config()
    data["teacher"]["model"]["embedding_dim"] = 16  # another teacher: every run changes
    with pytest.raises(ConfigError, match="different config"):
        prepare_sweep_dir(SweepConfig.model_validate(data), sweep_dir)
    copy = tmp_path / "restart"
    shutil.copytree(sweep_dir, copy)
    prepare_sweep_dir(other, copy, restart=True)
    assert not (copy / "runs").exists() and not (copy / "teacher").exists()
    assert "ftd: 0.5" in (copy / "sweep.yaml").read_text()


def test_grid_change_keeps_finished_runs(finished_sweep, tmp_path):
    """More seeds, fewer methods: the same experiment, so finished runs stay and count."""
    _, sweep_dir = finished_sweep
    copy = tmp_path / "grown"
    shutil.copytree(sweep_dir, copy)
    before = (copy / "runs/4/none/seed0/metrics.json").read_text()
    grown = SweepConfig.model_validate(
        tiny_config(seeds=[0, 1], methods=["none", "ftd", "htd", "htd+rrd", "rrd"])
    )
    summary = run_sweep(grown, copy, progress=False, only=["d=4 none seed 1"])
    assert summary["grid_change"] == {"added": 6, "dropped": 0}
    assert summary["trained"] == ["d=4 none seed 1"] and "teacher" in summary["skipped"]
    assert (copy / "runs/4/none/seed0/metrics.json").read_text() == before
    assert "- 1" in (copy / "sweep.yaml").read_text()
    shrunk = SweepConfig.model_validate(tiny_config(methods=["none", "ftd"]))
    summary = run_sweep(shrunk, copy, progress=False)
    assert summary["grid_change"] == {"added": 0, "dropped": 8} and not summary["trained"]
    assert (copy / "runs/4/htd/seed0/metrics.json").is_file()  # kept on disk
    md = write_report(copy, paired=False, latency=False)["md"].read_text()
    assert "| none | 1 |" in md and "| htd |" not in md and "None: the sweep is complete." in md


@pytest.mark.parametrize(
    "patch,needle",
    [
        ({"students": {"bogus": 1}}, "students.bogus: unknown key"),
        ({"students": {"methods": ["none", "xtd"]}}, "unknown method 'xtd'.*allowed: .*ftd.*htd"),
        ({"report": {"selections": ["last"]}}, "report.selections.0: must be one of"),
        ({"students": {"dims": [0]}}, "students.dims"),
        ({"teacher": {"train": {"selection": "best"}}}, "teacher.train.selection: must be one"),
        (
            {"students": {"params": {"htd": {"preset": "reference", "layout": "sparse"}}}},
            r"students.params.htd \(method 'htd'\).*layout must be one of auto, grouped, dense",
        ),
        ({"students": {"params": {"hdt": {}}}}, "students.params names hdt, which is not a method"),
        (
            {"students": {"arms": {"x": {"method": "htd", "params": {"htd": {"preset": "b"}}}}}},
            r"students.arms.x.params.htd \(method 'x'\).*preset must be one of",
        ),
    ],
)
def test_bad_config_names_key_and_allowed(tmp_path, patch, needle):
    data = tiny_config()
    for section, values in patch.items():
        if section in data and isinstance(data[section], dict):
            for k, v in values.items():
                if isinstance(v, dict) and isinstance(data[section].get(k), dict):
                    data[section][k] = {**data[section][k], **v}
                else:
                    data[section][k] = v
        else:
            data[section] = values
    if "arms" in patch.get("students", {}):
        data["students"]["methods"].append("x")
    with pytest.raises(ConfigError, match=needle):
        load_sweep_config(write_cfg(tmp_path / "c.yaml", data))


def test_bad_method_param_is_reported_before_anything_trains(env, tmp_path, capsys):
    """A bad KD parameter fails when the config is read: one error line, exit 2, no sweep
    directory and no teacher run."""
    from recpress.cli import main

    data = tiny_config(params={"htd": {"pair_filter": "positive"}})
    path = write_cfg(tmp_path / "c.yaml", data)
    with pytest.raises(ConfigError, match="students.params.htd.*pair_filter"):
        load_sweep_config(path)
    with pytest.raises(SystemExit) as exit_info:
        main(["sweep", str(path), "--out", str(tmp_path / "s"), "--no-progress"])
    err = capsys.readouterr().err
    assert exit_info.value.code == 2 and "pair_filter" in err and "Traceback" not in err
    assert not (tmp_path / "s").exists()
    # settings of a method that the grid does not run are allowed (a config is a palette)
    unused = tiny_config(methods=["none", "ftd"], weights={"de": 0.01})
    assert load_sweep_config(write_cfg(tmp_path / "u.yaml", unused)).students.weights == {
        "de": 0.01
    }


def test_shipped_configs_validate():
    root = Path(__file__).resolve().parents[2] / "configs"
    main = load_sweep_config(root / "td-citeulike.yaml")
    assert main.students.dims == [10, 20, 100, 200] and main.students.seeds == [0]
    assert main.students.methods == ["none", "ftd", "htd"]
    assert len(plan(main, "/nonexistent")) == 13  # the reference experiment as the paper ran it
    td = load_sweep_config(root / "td-citeulike.yaml", grid="full")
    assert {"none", "ftd", "htd", "de", "rrd", "de+rrd", "htd+rrd"} <= set(td.students.methods)
    assert len(plan(td, "/nonexistent")) == 1 + 4 * len(td.students.methods) * 3
    full = {r.label: r.config for r in plan(td, "/s")}  # the one-seed runs resume in --grid full
    assert all(full[r.label] == r.config for r in plan(main, "/s"))
    assert len(plan(main.with_grid(seeds=[0, 1, 2]), "/s")) == 1 + 12 * 3
    with pytest.raises(ConfigError, match="unknown grid 'big'; grids of this config: full"):
        load_sweep_config(root / "td-citeulike.yaml", grid="big")
    load_sweep_config(root / "smoke.yaml")
    derrd = load_sweep_config(root / "derrd-citeulike.yaml")
    issue3 = {"none", "kd", "rd", "cd", "rrd", "ir-rrd", "dcd", "unkd", "de", "de+rrd"}
    assert set(derrd.students.methods) == issue3 and derrd.students.dims == [20]
    assert derrd.teacher == td.teacher  # one teacher serves both experiments
    from recpress.distill import make_distillers

    ((de, weight),) = make_distillers(
        "de", {"de": derrd.students.weights["de"]}, derrd.students.params
    )
    assert de.expert_precision == "bf16" and weight == 0.01


def test_cli_sweep_bad_config_exit_2(tmp_path, capsys):
    from recpress.cli import main

    data = tiny_config()
    data["students"]["colour"] = "red"
    with pytest.raises(SystemExit) as exc:
        main(["sweep", str(write_cfg(tmp_path / "c.yaml", data)), "--out", str(tmp_path / "o")])
    assert exc.value.code == 2
    assert "students.colour: unknown key" in capsys.readouterr().err
    assert not (tmp_path / "o").exists()


def test_read_run_selections(tmp_path):
    (tmp_path / "metrics.json").write_text('{"seconds_per_epoch": 0.5, "parameters": 10}')
    (tmp_path / "history.csv").write_text(
        "epoch,loss,valid_recall@50,test_recall@50\n"
        "0,9,0.1,0.11\n1,8,,\n2,7,0.3,0.25\n3,6,0.2,0.27\n"
    )
    r = read_run(tmp_path, "recall@50", 4, "ftd", 0)
    assert r.curve_epochs == [0, 2, 3] and r.curve == [0.11, 0.25, 0.27]
    assert r.results["fixed_epochs"]["recall@50"] == 0.27 and r.selected_epoch["fixed_epochs"] == 3
    assert r.results["best_valid"]["recall@50"] == 0.25 and r.selected_epoch["best_valid"] == 2


def _cell(mean, std, n=3):
    return {"mean": mean, "std": std, "n": n}


def test_claims_logic():
    cfg = SweepConfig.model_validate(
        {
            "teacher": {"model": {"embedding_dim": 200}},
            "students": {"dims": [10, 20, 100, 200]},
            "report": {"reference": "td-citeulike"},
        }
    )
    s = "fixed_epochs"
    table = {}
    values = {  # dim: (none, ftd, htd)
        10: (0.18, 0.21, 0.23),
        20: (0.23, 0.25, 0.275),
        100: (0.30, 0.312, 0.312),
        200: (0.315, 0.318, 0.319),
    }
    for d, (a, b, c) in values.items():
        for m, v in zip(("none", "ftd", "htd"), (a, b, c), strict=True):
            table[(d, m)] = {s: _cell(v, 0.002)}
    c1, c2 = check_claims(cfg, table, "htd", s)
    assert c1["verdict"] == "holds" and c2["verdict"] == "holds"
    table[(10, "htd")][s]["values"] = [0.228, 0.230, 0.232]  # per-seed values are shown
    assert (
        "HTD 0.2300 (0.2280 / 0.2300 / 0.2320)"
        in check_claims(cfg, table, "htd", s)[0]["evidence"][0]
    )
    table[(20, "htd")] = {s: _cell(0.2505, 0.002)}  # HTD − FTD within noise at d=20
    c1, c2 = check_claims(cfg, table, "htd", s)
    assert c1["verdict"] == "does not hold" and "margin not met" in " ".join(c1["evidence"])
    assert c2["verdict"] == "does not hold"
    # the reason is spelled out: HTD still ahead at d=200, FTD ahead at d=100
    table[(20, "htd")] = {s: _cell(0.275, 0.002)}
    table[(200, "htd")] = {s: _cell(0.330, 0.002)}
    table[(100, "ftd")] = {s: _cell(0.330, 0.002)}
    evidence = " ".join(check_claims(cfg, table, "htd", s)[1]["evidence"])
    assert "HTD still ahead beyond seed noise" in evidence
    assert "FTD ahead of HTD beyond seed noise: the claim's direction" in evidence
    del table[(200, "ftd")]
    assert check_claims(cfg, table, "htd", s)[1]["verdict"] == "undecided"
    # one seed has no spread: the margin (and so the claim) is undecided, not "does not hold"
    table[(200, "ftd")] = {s: _cell(0.318, 0.002)}
    table[(20, "htd")] = {s: {**_cell(0.275, 0.0), "n": 1}}
    c1 = check_claims(cfg, table, "htd", s)[0]
    assert c1["verdict"] == "undecided" and "needs 2+ seeds" in " ".join(c1["evidence"])


def test_one_sided_reference_test_by_hand():
    """H0 μ ≥ log vs H1 μ < log: t = (mean − log)/(s/√n), p = P(T(n−1) ≤ t), by hand."""
    from recpress.evaluation import one_sided_ttest_below

    # values .20, .21, .22: mean .21, s = .01, s/√3 = .0057735; log .22 → t = −1.7321
    # P(T2 ≤ −√3) = (1 + t/√(t² + 2)) / 2 = (1 − √3/√5) / 2 = 0.1127 (closed form for ν = 2)
    res = one_sided_ttest_below([0.20, 0.21, 0.22], 0.22)
    assert res.t == pytest.approx(-math.sqrt(3), rel=1e-9)
    assert res.p == pytest.approx((1 - math.sqrt(3 / 5)) / 2, rel=1e-9)
    assert res.n == 3 and res.mean_diff == pytest.approx(-0.01)
    # far below: log .25 → t = −0.04/.0057735 = −6.928, p = (1 − 6.928/√(48 + 2))/2 = 0.0101
    low = one_sided_ttest_below([0.20, 0.21, 0.22], 0.25)
    assert low.p == pytest.approx((1 - math.sqrt(48) / math.sqrt(50)) / 2, rel=1e-9)
    assert one_sided_ttest_below([0.20, 0.21, 0.22], 0.20).p > 0.5  # above the log
    assert math.isnan(one_sided_ttest_below([0.3], 0.31).p)  # one seed: untestable

    cell = reference_cell(20, "htd", {"mean": 0.21, "std": 0.01, "n": 3,
                                      "values": [0.20, 0.21, 0.22]}, 0.22)  # fmt: skip
    assert cell["reached"] is True and cell["verdict"] == "reached"
    far = reference_cell(20, "ftd", {"mean": 0.21, "n": 3, "values": [0.20, 0.21, 0.22]}, 0.25)
    assert far["reached"] is False and far["verdict"] == "NOT reached"
    one = reference_cell(10, "none", {"mean": 0.3, "n": 1, "values": [0.3]}, 0.31)
    assert one["reached"] is None and one["verdict"] == "untestable (one seed)"
    text = _reference_summary([cell, far, one])[0]
    assert "H0 μ ≥ log vs H1 μ < log" in text and "1 of 2 testable logged cells reached" in text
    assert "d=20 ftd (p = 0.01)" in text and "Untestable (one seed): 1 cells, 1 of them" in text


def test_parallel_sweeps_start_the_costliest_runs_first(tmp_path):
    """--jobs starts runs longest first (expert methods, then wider students), so the longest
    run does not start last; ties keep the plan's order (seeds in order)."""
    cfg = SweepConfig.model_validate(
        tiny_config(dims=[4, 64], methods=["none", "ftd", "htd", "htd+rrd"], seeds=[0, 1])
    )
    students = [r for r in plan(cfg, tmp_path) if not r.is_teacher]
    order = [r.label for r in parallel_order(students)]
    assert order[:4] == [
        "d=64 htd+rrd seed 0", "d=64 htd+rrd seed 1", "d=64 htd seed 0", "d=64 htd seed 1",
    ]  # fmt: skip
    assert order[-2:] == ["d=4 none seed 0", "d=4 none seed 1"]
    costs = [expected_cost(r) for r in parallel_order(students)]
    assert costs == sorted(costs, reverse=True) and sorted(order) == sorted(
        r.label for r in students
    )


def test_sweep_eta_weights_the_runs_left_by_their_expected_cost(tmp_path):
    """ETA = cost of the runs left × seconds per unit of cost so far / jobs: after the cheapest
    run, an HTD run left costs its cost ratio times as long; skipped runs add no time."""
    from recpress.experiments.sweep import _SweepProgress

    cfg = SweepConfig.model_validate(tiny_config(methods=["none", "htd"]))
    teacher, none, htd = plan(cfg, tmp_path)
    for jobs in (1, 2):
        bar = _SweepProgress([teacher, none, htd], enabled=False, jobs=jobs)
        assert bar._eta() == "?"
        bar.advance(teacher, None)  # skipped: finished before
        assert bar._eta() == "?"
        bar.advance(none, 10.0)
        left = 10.0 * expected_cost(htd) / expected_cost(none) / jobs
        h, rest = divmod(int(left), 3600)
        assert bar._eta() == f"{h}:{rest // 60:02d}:{rest % 60:02d}"
        bar.advance(htd, 300.0)
        assert bar._eta() == "0:00:00"


def _processes() -> dict[int, int]:
    """Live (not zombie) processes and their parents: {pid: ppid} (Linux /proc)."""
    table = {}
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            state, ppid = stat.read_text().rsplit(")", 1)[1].split()[:2]
        except (OSError, ValueError):
            continue
        if state != "Z":
            table[int(stat.parent.name)] = int(ppid)
    return table


def _wait_for(condition, seconds: float) -> bool:
    deadline = time.time() + seconds
    while time.time() < deadline:
        if condition():
            return True
        time.sleep(0.1)
    return False


def _start_then_stop(command, env_vars, histories, stop, log: Path) -> tuple[int, str]:
    """Start the sweep, wait until both workers train, send `stop`; return (exit code, stderr)
    once the workers are gone (fails if they outlive the sweep by 20 s)."""
    started = time.time()
    with log.open("w") as err_file:  # a file, not a pipe: orphans would hold a pipe open
        sweep = subprocess.Popen(command, env=env_vars, stderr=err_file)
    workers: set[int] = set()
    try:
        assert _wait_for(
            lambda: all(h.exists() and h.stat().st_mtime > started for h in histories), 240
        ), "no worker trained"
        workers = {pid for pid, ppid in _processes().items() if ppid == sweep.pid}
        assert len(workers) >= 2
        sweep.send_signal(stop)
        code = sweep.wait(timeout=60)
        gone = _wait_for(lambda: not workers & _processes().keys(), 20)
        assert gone, f"workers left after {stop.name}"
    finally:
        if sweep.poll() is None:
            sweep.kill()
        for pid in workers & _processes().keys():  # only if the test failed: no orphans left
            os.kill(pid, signal.SIGKILL)
    return code, log.read_text()


@pytest.mark.skipif(not Path("/proc/self/stat").exists(), reason="reads processes from /proc")
def test_stopping_a_parallel_sweep_stops_its_workers(env, data_root, tmp_path):
    """SIGTERM to `recpress sweep --jobs 2` ends it with 143 and stops both workers (nothing
    keeps writing into the sweep directory); after SIGKILL, which the sweep cannot handle, the
    workers notice and exit by themselves. The runs keep their epochs for a rerun to resume."""
    students = {"methods": ["none"], "seeds": [0, 1], "train": {**TRAIN, "epochs": 400}}
    config = write_cfg(tmp_path / "long.yaml", tiny_config(**students))
    out = tmp_path / "s"
    env_vars = {**os.environ, "RECPRESS_DATA": str(data_root), "OMP_NUM_THREADS": "1"}
    command = [sys.executable, "-m", "recpress", "sweep", str(config), "--out", str(out),
               "--jobs", "2", "--no-progress", "--no-report"]  # fmt: skip
    histories = [out / "runs/4/none" / f"seed{s}" / "history.csv" for s in (0, 1)]

    code, err = _start_then_stop(command, env_vars, histories, signal.SIGTERM, tmp_path / "t")
    assert code == 143 and "rerun the same command to resume" in err and "Traceback" not in err
    _start_then_stop(command, env_vars, histories, signal.SIGKILL, tmp_path / "k")
    assert not any((h.parent / "metrics.json").exists() for h in histories)
    assert all(len(h.read_text().splitlines()) > 1 for h in histories)


CUSTOM_REFERENCE = {
    "name": "my-paper",
    "log": {"metric": "recall@50", "epochs": [0, 1, 2], "students": {4: {"none": [0, 0, 0.01]}}},
    "claims": {
        "rules": [
            {
                "id": "ftd-beats-student",
                "text": "FTD beats the student at φ ≤ 0.5",
                "rule": "order_margin",
                "phi": {"max": 0.5},
                "order": ["ftd", "none"],
                "margin": 0.0,
            }
        ]
    },
}


def test_custom_reference_file_and_claim(finished_sweep, tmp_path):
    """A sweep config names its own reference file: its log fills the reference columns and its
    claim is checked (one seed: the margin is undecided unless 0 × spread is asked)."""
    cfg, sweep_dir = finished_sweep
    ref = tmp_path / "my-paper.yaml"
    ref.write_text(yaml.safe_dump(CUSTOM_REFERENCE))
    copy = tmp_path / "custom"
    shutil.copytree(sweep_dir, copy)
    data = tiny_config()
    data["report"] = {"reference": str(ref), "curve_methods": ["none", "ftd"]}
    custom = load_sweep_config(write_cfg(tmp_path / "c.yaml", data))
    assert custom.report.reference == str(ref.resolve())
    prepare_sweep_dir(custom, copy)  # only the report section changed: same experiment
    md = write_report(copy, paired=False, latency=False)["md"].read_text()
    assert "## Claims (my-paper)" in md and "FTD beats the student at φ ≤ 0.5: " in md
    assert "authors' log (ep. 2)" in md and "0.0100" in md


@pytest.mark.parametrize(
    "patch,needle",
    [
        ({"rule": "bigger"}, "rules.0: .*does not match any of the expected tags"),
        ({"order": ["ftd"]}, r"rules.0.order_margin.order: List should have at least 2"),
        ({"order": ["ftd", "xtd"]}, "unknown method 'xtd' at claim 'ftd-beats-student'"),
        ({"phi": {"min": 0.9, "max": 0.1}}, "phi: Value error, min 0.9 is above max 0.1"),
    ],
)
def test_bad_reference_or_claim_is_one_config_error(tmp_path, patch, needle):
    bad = json.loads(json.dumps(CUSTOM_REFERENCE))
    bad["claims"]["rules"][0].update(patch)
    ref = tmp_path / "bad.yaml"
    ref.write_text(yaml.safe_dump(bad))
    data = tiny_config()
    data["report"] = {"reference": str(ref)}
    with pytest.raises(ConfigError, match=needle):
        load_sweep_config(write_cfg(tmp_path / "c.yaml", data))
    data["report"] = {"reference": str(tmp_path / "missing.yaml")}
    with pytest.raises(
        ConfigError, match="neither a bundled reference .*td-citeulike.* nor a file"
    ):
        load_sweep_config(write_cfg(tmp_path / "c.yaml", data))


def two_teacher_config(**students) -> dict:
    data = tiny_config(methods=["none", "ftd", "htd+rrd"], **students)
    del data["teacher"]
    data["teachers"] = {
        "wide": {"model": {"name": "bpr", "embedding_dim": 8}, "train": TRAIN},
        "narrow": {"model": {"name": "bpr", "embedding_dim": 6}, "train": TRAIN},
    }
    data["students"]["teacher_of"] = {"ftd": "wide", "htd": "wide", "rrd": "narrow"}
    return data


def test_two_teachers_each_trained_once_and_bound_per_term(env, tmp_path):
    """`teachers:` trains each teacher once into teachers/<name>/; every KD term of a student
    distils from the teacher `teacher_of` names; the report shows the first as the teacher."""
    cfg = SweepConfig.model_validate(two_teacher_config())
    out = tmp_path / "two"
    summary = run_sweep(cfg, out, progress=False)
    assert summary["trained"][:2] == ["teacher wide", "teacher narrow"]
    assert len(summary["trained"]) == 5
    for name in ("wide", "narrow"):
        assert (out / "teachers" / name / "metrics.json").is_file()
    assert not (out / "teacher").exists()
    runs = {r.method: r for r in plan(cfg, out) if not r.is_teacher}
    kd = runs["htd+rrd"].config.distill
    assert kd.teacher_of == {"htd": "wide", "rrd": "narrow"}
    assert {n: Path(p) for n, p in kd.teachers.items()} == {
        "wide": (out / "teachers/wide").resolve(),
        "narrow": (out / "teachers/narrow").resolve(),
    }
    assert set(runs["ftd"].config.distill.teachers) == {"wide"}
    metrics = json.loads((runs["htd+rrd"].path / "metrics.json").read_text())
    assert "profile" in metrics  # the runner profiled the finished run (once)
    md = write_report(out, paired=False, latency=False)["md"].read_text()
    assert "**Teacher**" in md and "None: the sweep is complete." in md
    # every teacher gets a row: its own epochs, test metric and parameters
    rows = {line.split(" | ")[0][2:]: line.split(" | ") for line in md.splitlines()
            if line.startswith(("| wide ", "| narrow "))}  # fmt: skip
    assert "## Teachers" in md and set(rows) == {"wide", "narrow"}
    for name, width in (("wide", 8), ("narrow", 6)):
        m = json.loads((out / "teachers" / name / "metrics.json").read_text())
        cells = [c.strip("* |") for c in rows[name]]
        assert cells[1:4] == ["bpr", str(width), str(m["epochs_run"])]
        assert f"{m['test']['recall@50']:.4f}" in cells[4:-2]
        assert cells[-1] == f"{m['parameters']:,}"
    again = run_sweep(cfg, out, progress=False)
    assert not again["trained"]


def test_two_teachers_need_a_teacher_for_every_term(tmp_path):
    data = two_teacher_config()
    data["students"]["teacher_of"] = {"ftd": "wide", "htd": "wide"}
    with pytest.raises(ConfigError, match="term 'rrd' has no teacher; with several teachers"):
        load_sweep_config(write_cfg(tmp_path / "c.yaml", data))
    data["students"]["teacher_of"] = {"ftd": "wide", "htd": "wide", "rrd": "big"}
    with pytest.raises(ConfigError, match="teacher 'big' of 'rrd' is not in"):
        load_sweep_config(write_cfg(tmp_path / "c.yaml", data))
    data["teacher"] = {"model": {"embedding_dim": 8}}
    with pytest.raises(ConfigError, match="either teacher .* or teachers"):
        load_sweep_config(write_cfg(tmp_path / "c.yaml", data))


def test_cli_grid_and_seeds_options(tmp_path, capsys):
    """`--grid NAME` picks a grid of the config's `grids:`; `--seeds` must be integers."""
    from recpress.cli import main

    data = tiny_config(methods=["none"])
    data["grids"] = {"more": {"methods": ["none", "ftd"], "seeds": [0, 1]}}
    path = write_cfg(tmp_path / "c.yaml", data)
    assert len(plan(load_sweep_config(path, grid="more"), tmp_path)) == 1 + 4
    assert load_sweep_config(path, grid="more", seeds=[3]).students.seeds == [3]
    for args, needle in (
        (["--grid", "most"], "unknown grid 'most'; grids of this config: more"),
        (["--seeds", "0,x"], "--seeds: expects integers separated by commas"),
        (["--seeds", "1,1"], "seeds: .*without repeats"),
    ):
        with pytest.raises(SystemExit) as exc:
            main(["sweep", str(path), "--out", str(tmp_path / "o"), *args])
        assert exc.value.code == 2
        assert re.search(needle, capsys.readouterr().err), args
    assert not (tmp_path / "o").exists()
    data["grids"] = {"bad": {"methods": ["none", "xtd"]}}
    with pytest.raises(ConfigError, match="unknown method 'xtd' at grids.bad.methods.1"):
        load_sweep_config(write_cfg(tmp_path / "b.yaml", data))
