"""bench/bench_distill.py on a tiny ml-100k sweep: it trains through the sweep, and its table,
statements and must-reach checks agree with the run directories."""

from __future__ import annotations

import importlib.util
import json
import statistics
from pathlib import Path

import pytest
import yaml

from recpress.experiments.report import read_run

ROOT = Path(__file__).resolve().parents[2]
TRAIN = {
    "epochs": 2,
    "eval_every": 1,
    "selection": "fixed_epochs",
    "patience": None,
    "ks": [10, 20, 50],
    "lr": 0.01,
    "batch_size": 4096,
}


def load_bench():
    spec = importlib.util.spec_from_file_location(
        "bench_distill", ROOT / "bench" / "bench_distill.py"
    )
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_bench_distill_summarises_the_sweep(data_root, tmp_path, monkeypatch):
    monkeypatch.setenv("RECPRESS_DATA", str(data_root))
    monkeypatch.setenv("RECPRESS_CACHE", str(tmp_path / "cache"))
    cfg = {
        "name": "tiny-derrd",
        "data": {"dataset": "ml-100k", "min_rating": 4},
        "teacher": {"model": {"name": "bpr", "embedding_dim": 8}, "train": TRAIN},
        "students": {
            "dims": [4],
            "methods": ["none", "de", "rrd", "de+rrd"],
            "seeds": [0, 1],
            "train": TRAIN,
            "params": {"de": {"n_experts": 3, "expert_precision": "bf16"}},
            "topn": 50,
        },
        "report": {"claims": False},
    }
    path = tmp_path / "c.yaml"
    path.write_text(yaml.safe_dump(cfg))
    bench = load_bench()
    out = tmp_path / "distill.json"
    # first call trains only the no-KD students and DE seed 0: the rest is listed as missing
    bench.main(["--config", str(path), "--sweep", str(tmp_path / "s"), "--out", str(out),
                "--only", "none", "--only", "d=4 de seed 0"])  # fmt: skip
    partial = json.loads(out.read_text())
    assert set(partial["methods"]) == {"none", "de"}
    assert len(partial["missing"]) == 5
    assert "de+rrd >= max(de, rrd)" not in partial["checks"]
    bench.main(["--config", str(path), "--sweep", str(tmp_path / "s"), "--out", str(out)])
    result = json.loads(out.read_text())
    assert not result["missing"] and set(result["methods"]) == {"none", "de", "rrd", "de+rrd"}
    for method, row in result["methods"].items():
        runs = [
            read_run(tmp_path / "s" / "runs" / "4" / method / f"seed{s}", "recall@50", 4, method, s)
            for s in (0, 1)
        ]
        values = [r.results["best_valid"]["recall@50"] for r in runs]
        assert row["recall@50"]["values"] == pytest.approx(values)
        assert row["recall@50"]["mean"] == pytest.approx(statistics.fmean(values))
        assert row["seeds"] == [0, 1]
        if method != "none":
            assert row["paired_vs_none"]["n_users"] > 0
    means = {m: r["recall@50"]["mean"] for m, r in result["methods"].items()}
    assert result["checks"]["de+rrd >= max(de, rrd)"] == (
        means["de+rrd"] >= max(means["de"], means["rrd"])
    )
    assert result["checks"]["rrd beats no-KD"] == (means["rrd"] > means["none"])
    md = out.with_suffix(".md").read_text()
    assert "## Which methods helped" in md and "| teacher (BPR d=8) |" in md
    assert sum(line.startswith("- **") for line in md.splitlines()) == 3
    for method, row in result["methods"].items():
        if method == "none":
            continue
        line = next(x for x in md.splitlines() if x.startswith(f"- **{method}**"))
        p, better = row["paired_vs_none"]["p"], means[method] > means["none"]
        verdict = "made no clear difference" if p >= 0.05 else ("helped" if better else "hurt")
        assert f"**{method}** {verdict}:" in line
