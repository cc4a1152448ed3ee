"""`recpress compress`: the target grammar, the Pareto front, the search (on a synthetic
accuracy model with known answers, and end to end on tiny generated data), resume, misses."""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import pytest
import yaml

from recpress.errors import ConfigError
from recpress.experiments.compress import (
    NOT_MET,
    Budget,
    compress,
    pareto_front,
    parse_budget,
    parse_target,
)
from tests.run_dirs.tinyruns import tiny_config, write_pairs


# -- target and budget -------------------------------------------------------------------------
def test_target_forms() -> None:
    t = parse_target("recall@50>=0.95xteacher")
    assert (t.metric, t.value, t.relative, t.k) == ("recall@50", 0.95, True, 50)
    assert t.threshold({"recall@50": 0.3}) == pytest.approx(0.285)
    t = parse_target(" NDCG@20 >= 0.9 x Teacher ")
    assert (t.metric, t.relative) == ("ndcg@20", True)
    t = parse_target("hr@10>=0.25")
    assert (t.metric, t.value, t.relative) == ("hr@10", 0.25, False)
    assert t.threshold(None) == 0.25
    assert str(parse_target("recall@50>=0.9*teacher")) == "recall@50>=0.9xteacher"


@pytest.mark.parametrize(
    ("text", "says"),
    [
        ("auc@10>=0.5", "allowed: recall@K, ndcg@K, hr@K, precision@K, mrr@K"),
        ("recall>=0.5", "METRIC>=VALUE or METRIC>=FxTEACHER"),
        ("recall@50<=0.5", "METRIC>=VALUE or METRIC>=FxTEACHER"),
        ("recall@50>=1.5", "must be in [0, 1]"),
        ("recall@50>=0xteacher", "factor must be in (0, 10]"),
    ],
)
def test_bad_targets_say_the_grammar_or_the_allowed_metrics(text: str, says: str) -> None:
    with pytest.raises(ConfigError, match=None) as err:
        parse_target(text)
    assert says in str(err.value)


def test_relative_target_needs_the_teacher_metric() -> None:
    with pytest.raises(ConfigError, match="holds: recall@20"):
        parse_target("recall@50>=0.9xteacher").threshold({"recall@20": 0.2})


def test_budget_keys_and_values() -> None:
    b = parse_budget("minutes=30, max_params=1000,proxy-epochs=5", Budget(patience=7))
    assert (b.minutes, b.max_params, b.proxy_epochs, b.patience) == (30.0, 1000, 5, 7)
    with pytest.raises(ConfigError) as err:
        parse_budget("minuts=3")
    assert "unknown key 'minuts'" in str(err.value) and "allowed: minutes, max_params" in str(
        err.value
    )
    with pytest.raises(ConfigError, match="proxy_epochs must be an integer"):
        parse_budget("proxy_epochs=2.5")
    with pytest.raises(ConfigError, match="minutes must be > 0"):
        parse_budget("minutes=0")


# -- Pareto front ------------------------------------------------------------------------------
def brute_front(p: np.ndarray) -> list[bool]:
    out = []
    for b in range(len(p)):
        dominated = False
        for a in range(len(p)):
            if all(p[a][j] >= p[b][j] for j in range(p.shape[1])) and any(
                p[a][j] > p[b][j] for j in range(p.shape[1])
            ):
                dominated = True
        out.append(not dominated)
    return out


@pytest.mark.parametrize("seed", range(5))
def test_pareto_front_matches_brute_force(seed: int) -> None:
    rng = np.random.default_rng(seed)
    p = rng.integers(0, 4, size=(25, 3)).astype(float)  # small ints: ties and duplicates
    assert pareto_front(p).tolist() == brute_front(p)


def test_pareto_front_known_answer() -> None:
    # (accuracy, -params): a=(0.3,-10) b=(0.2,-5) c=(0.2,-10) dominated by both, d=(0.3,-10)=a
    p = np.array([[0.3, -10], [0.2, -5], [0.2, -10], [0.3, -10]])
    assert pareto_front(p).tolist() == [True, True, False, True]
    assert pareto_front(np.zeros((0, 3))).tolist() == []


# -- the search on a synthetic accuracy model --------------------------------------------------
ACC = {"none": 0.08, "kd": 0.10, "rrd": 0.09}  # full validation metric = ACC[m] * log2(dim)


@pytest.fixture(scope="module")
def fake_teacher(tmp_path_factory) -> Path:
    """A teacher run directory with a config and metrics only (the trials are synthetic)."""
    root = tmp_path_factory.mktemp("teacher")
    cfg = tiny_config(write_pairs(root / "pairs.tsv"), dim=64, epochs=2)
    (root / "t").mkdir()
    (root / "t" / "config.yaml").write_text(cfg.to_yaml())
    metrics = {"valid": {"recall@10": 0.8}, "test": {"recall@10": 0.7}, "parameters": 64 * 140,
               "seconds_per_epoch": 0.001}  # fmt: skip
    (root / "t" / "metrics.json").write_text(json.dumps(metrics))
    return root / "t"


class Fake:
    """Synthetic trials: the validation metric grows with log2(dim), proxies at half of it."""

    def __init__(self, fail_at: int | None = None) -> None:
        self.calls: list[str] = []
        self.fail_at = fail_at
        self.exported: list[str] = []

    def train(self, config, run_dir: Path) -> dict:
        if self.fail_at is not None and len(self.calls) == self.fail_at:
            raise KeyboardInterrupt
        self.calls.append(run_dir.name)
        method = config.distill.method
        dim = config.model.embedding_dim
        value = ACC[method] * math.log2(dim) * (0.5 if config.train.selection == "fixed_epochs"
                                                else 1.0)  # fmt: skip
        m = config.train.selection_metric
        return {"valid": {m: value}, "test": {m: value * 0.9}, "best_epoch": 3, "epochs_run": 4,
                "parameters": 140 * dim, "seconds_per_epoch": 0.0}  # fmt: skip

    def profile(self, run_dir: Path) -> dict:
        dim = int(run_dir.name.rsplit("-d", 1)[1])
        return {"parameters": 140 * dim, "bytes_on_disk": 560 * dim,
                "latency_ms": {"p50": 0.01 * dim, "p95": 0.02 * dim}}  # fmt: skip

    def export(self, run_dir: Path, out: Path) -> dict:
        out.mkdir(parents=True, exist_ok=True)
        self.exported.append(run_dir.name)
        return {"bytes": 1}

    def hooks(self) -> dict:
        return {"train_fn": self.train, "profile_fn": self.profile, "export_fn": self.export}


DIMS = [2, 4, 8, 16, 32, 64]
BUDGET = Budget(proxy_epochs=2, full_epochs=4, patience=1)


def test_search_picks_the_smallest_dim_that_meets_the_target(fake_teacher, tmp_path) -> None:
    # 0.45 absolute: kd meets from d=32 (0.5), rrd from d=64 (0.54), none from d=64 (0.48)
    fake = Fake()
    res = compress(fake_teacher, parse_target("recall@10>=0.45"), tmp_path / "c", DIMS,
                   ["none", "kd", "rrd"], BUDGET, **fake.hooks())  # fmt: skip
    assert res["met"] and (res["chosen"]["method"], res["chosen"]["dim"]) == ("kd", 32)
    assert res["method_ranking"] == ["kd", "rrd", "none"]
    full = [c for c in fake.calls if c.startswith("full-")]
    # bisection for kd (d=8 misses, d=32 meets, d=16 misses), then rrd only just below: d=16
    assert full == ["full-kd-d8", "full-kd-d32", "full-kd-d16", "full-rrd-d16"]
    assert len([c for c in fake.calls if c.startswith("proxy-")]) == 18
    assert fake.exported == ["full-kd-d32"]
    out = tmp_path / "c"
    assert {"pareto.md", "pareto.json", "pareto.png", "compress.json"} <= {
        p.name for p in out.iterdir()
    }
    table = (out / "pareto.md").read_text()
    assert "Chosen: **kd d=32**" in table and "| kd | 32 | 0.5000 |" in table
    front = {(c["method"], c["dim"]): c["front"] for c in res["candidates"]}
    # kd d=8 (smallest), kd d=16, kd d=32 are each best at their size; rrd d=16 < kd d=16
    assert front == {("kd", 8): True, ("kd", 16): True, ("kd", 32): True, ("rrd", 16): False}


def test_relative_target_and_constraints(fake_teacher, tmp_path) -> None:
    fake = Fake()
    # 0.5 x teacher valid 0.8 = 0.4: kd meets from d=16 (0.4), but d=16 is over 1.5 ms
    res = compress(fake_teacher, parse_target("recall@10>=0.5xteacher"), tmp_path / "c", DIMS,
                   ["kd"], Budget(proxy_epochs=2, full_epochs=4, patience=1, max_latency_ms=0.1),
                   **fake.hooks())  # fmt: skip
    assert res["target"]["valid"] == pytest.approx(0.4)
    assert res["target"]["test"] == pytest.approx(0.35)
    assert not res["met"] and res["best"]["dim"] == 8  # d >= 16 left out by latency
    assert any("max-latency-ms" in n for n in res["notes"])
    res = compress(fake_teacher, parse_target("recall@10>=0.3"), tmp_path / "p", DIMS, ["kd"],
                   Budget(proxy_epochs=2, full_epochs=4, patience=1, max_params=140 * 8),
                   **Fake().hooks())  # fmt: skip
    assert res["met"] and res["chosen"]["dim"] == 8  # 0.3 met at d=8; larger dims excluded
    with pytest.raises(ConfigError, match="no dim in"):
        compress(fake_teacher, parse_target("recall@10>=0.3"), tmp_path / "q", DIMS, ["kd"],
                 Budget(max_params=10), **Fake().hooks())  # fmt: skip


def test_unreachable_target_says_by_how_much(fake_teacher, tmp_path) -> None:
    fake = Fake()
    res = compress(fake_teacher, parse_target("recall@10>=0.9"), tmp_path / "c", DIMS,
                   ["none", "kd"], BUDGET, **fake.hooks())  # fmt: skip
    assert not res["met"] and res["chosen"] is None
    best = res["best"]
    assert (best["method"], best["dim"]) == ("kd", 64)
    d = res["decision"]
    assert d["missed_by"] == pytest.approx(0.9 - 0.6, abs=1e-6)
    assert d["missed_by_relative"] == pytest.approx(0.3 / 0.9, abs=1e-6)
    assert "by 0.3000 absolute (33.3% relative)" in d["text"]
    assert fake.exported == ["full-kd-d64"]  # the best found is still exported


def test_interrupted_search_resumes_without_retraining(fake_teacher, tmp_path) -> None:
    out = tmp_path / "c"
    args = (fake_teacher, parse_target("recall@10>=0.45"), out, DIMS, ["none", "kd", "rrd"])
    broken = Fake(fail_at=20)  # 18 proxies and 2 full trials, then Ctrl-C
    with pytest.raises(KeyboardInterrupt):
        compress(*args, BUDGET, **broken.hooks())
    state = json.loads((out / "compress.json").read_text())
    assert len(state["trials"]) == 20
    again = Fake()
    res = compress(*args, BUDGET, **again.hooks())
    assert again.calls == ["full-kd-d16", "full-rrd-d16"]  # only what was not finished
    assert res["chosen"]["dim"] == 32 and res["spent"]["trials_reused"] == 18
    done = Fake()
    compress(*args, BUDGET, **done.hooks())
    assert done.calls == [] and done.exported == []  # finished: nothing retrained or exported
    with pytest.raises(ConfigError, match="other trial settings: proxy_epochs=2"):
        compress(*args, Budget(proxy_epochs=3, full_epochs=4, patience=1), **Fake().hooks())


# -- end to end on tiny generated data, through the CLI ----------------------------------------
def test_cli_compress_end_to_end_and_resume(tmp_path) -> None:
    from recpress.cli import main
    from recpress.experiments.run import train_run
    from recpress.serving.artifact import load_artifact

    cfg = tiny_config(write_pairs(tmp_path / "pairs.tsv"), dim=16, epochs=6)
    cfg.train.ks = [10]
    cfg.train.selection_metric = "recall@10"
    train_run(cfg, tmp_path / "teacher", progress=False)
    out = tmp_path / "c"
    argv = ["compress", str(tmp_path / "teacher"), "--target", "recall@10>=0.01", "--out",
            str(out), "--dims", "2,4", "--methods", "none,kd",
            "--budget", "proxy_epochs=2,full_epochs=3,patience=1"]  # fmt: skip
    main(argv)  # exit 0: met
    res = json.loads((out / "pareto.json").read_text())
    assert res["met"] and res["chosen"]["dim"] == 2
    assert res["chosen"]["latency_p50_ms"] > 0 and res["chosen"]["params"] == 2 * 140
    art = load_artifact(out / "artifact")
    assert art.dim == 2
    cfg_trial = yaml.safe_load((Path(res["chosen"]["run_dir"]) / "config.yaml").read_text())
    assert cfg_trial["train"]["selection"] == "best_valid"
    assert cfg_trial["train"]["epochs"] == 3
    stamp = {p: p.stat().st_mtime_ns for p in (out / "trials").glob("*/metrics.json")}
    main(argv)  # resumed: every trial reused
    assert {p: p.stat().st_mtime_ns for p in (out / "trials").glob("*/metrics.json")} == stamp
    with pytest.raises(SystemExit) as code:  # unreachable absolute target: exit 3
        main([*argv[:3], "recall@10>=1.0", *argv[4:]])
    assert code.value.code == NOT_MET
    with pytest.raises(SystemExit) as code:
        main(["compress", str(tmp_path / "teacher"), "--target", "auc@5>=0.1"])
    assert code.value.code == 2
