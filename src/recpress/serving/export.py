"""Export a run as an artifact, optionally with an ONNX / TorchScript scorer and quantisation.

Formats:
    * ``npz``: the data-only artifact (manifest, safetensors weights, npz id maps and seen CSR).
    * ``onnx``: the same plus ``scorer.onnx``, a graph ``users (B,) int64 -> scores (B, n_items)``
      (Gather + MatMul), run with ONNX Runtime.
    * ``torchscript``: the same plus ``scorer.torchscript.pt`` (a scripted module, same
      signature). Loading TorchScript runs its program: `load_artifact` never loads it, only
      callers who ask for it do.

Every exported scorer is checked for parity on every user of the split before anything is
written: masked top-K ids equal to the PyTorch path (a differing id must be a tie, i.e. its
PyTorch score equals the PyTorch score at that rank within tolerance) and scores within
``atol + rtol * |score|``. Quantisation (``fp16`` or ``int8`` per-row) is measured with the same
evaluation code (`recpress.evaluation.evaluate`) on the split's test phase, before and after.

A model without a dot-product form (NeuMF) is exported in model form (`recpress.serving.artifact`:
its own weights, served by its ``score``): ``npz`` without quantisation only; ONNX, TorchScript
and quantisation are refused before anything is written (they need ``scores = U @ I.T``).
"""

from __future__ import annotations

import tempfile
import time
import warnings
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import torch

from recpress.errors import ConfigError
from recpress.serving.artifact import (
    MODEL_WEIGHTS,
    ONNX_FILE,
    QUANTISATIONS,
    TORCHSCRIPT_FILE,
    WEIGHTS,
    Artifact,
    ArtifactError,
    load_artifact,
    model_form_refusal,
)

FORMATS = ("npz", "onnx", "torchscript")
ScoreFn = Callable[[np.ndarray], np.ndarray]


# -- scorers -----------------------------------------------------------------------------------
class DotScorer(torch.nn.Module):
    """scores = U[users] @ I.T, the model-level scorer that is exported."""

    def __init__(self, user_emb: torch.Tensor, item_emb: torch.Tensor) -> None:
        super().__init__()
        self.register_buffer("user_emb", user_emb.detach().float().contiguous())
        self.register_buffer("item_emb_t", item_emb.detach().float().T.contiguous())

    def forward(self, users: torch.Tensor) -> torch.Tensor:
        return self.user_emb[users] @ self.item_emb_t


def write_onnx(user_emb: torch.Tensor, item_emb: torch.Tensor, path: Path) -> Path:
    """Write the ONNX graph ``scores = MatMul(Gather(U, users), I^T)`` (opset 17)."""
    import onnx
    from onnx import TensorProto, helper, numpy_helper

    u = numpy_helper.from_array(user_emb.detach().float().numpy(), name="user_emb")
    it = numpy_helper.from_array(
        np.ascontiguousarray(item_emb.detach().float().numpy().T), name="item_emb_t"
    )
    graph = helper.make_graph(
        [
            helper.make_node("Gather", ["user_emb", "users"], ["user_vec"], axis=0),
            helper.make_node("MatMul", ["user_vec", "item_emb_t"], ["scores"]),
        ],
        "recpress_dot_scorer",
        [helper.make_tensor_value_info("users", TensorProto.INT64, ["batch"])],
        [
            helper.make_tensor_value_info(
                "scores", TensorProto.FLOAT, ["batch", int(item_emb.shape[0])]
            )
        ],
        initializer=[u, it],
    )
    model = helper.make_model(
        graph, opset_imports=[helper.make_opsetid("", 17)], producer_name="recpress"
    )
    model.ir_version = min(model.ir_version, 9)
    onnx.checker.check_model(model)
    onnx.save(model, str(path))
    return path


def onnx_scorer(path: Path, threads: int | None = None) -> ScoreFn:
    """An ONNX Runtime session on CPU as ``fn(users int64 (B,)) -> scores (B, n_items)``."""
    import onnxruntime as ort

    opts = ort.SessionOptions()
    if threads:
        opts.intra_op_num_threads = int(threads)
        opts.inter_op_num_threads = 1
    sess = ort.InferenceSession(str(path), opts, providers=["CPUExecutionProvider"])

    def score(users: np.ndarray) -> np.ndarray:
        return sess.run(["scores"], {"users": np.asarray(users, dtype=np.int64)})[0]

    return score


def write_torchscript(user_emb: torch.Tensor, item_emb: torch.Tensor, path: Path) -> Path:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        scripted = torch.jit.script(DotScorer(user_emb, item_emb))
        torch.jit.save(scripted, str(path))
    return path


def torchscript_scorer(path: Path) -> ScoreFn:
    """Load a TorchScript scorer (this runs its TorchScript program: only for trusted files)."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        module = torch.jit.load(str(path), map_location="cpu")
    module.eval()

    def score(users: np.ndarray) -> np.ndarray:
        with torch.no_grad():
            return module(torch.as_tensor(users, dtype=torch.int64)).numpy()

    return score


def torch_scorer(user_emb: torch.Tensor, item_emb: torch.Tensor) -> ScoreFn:
    """The PyTorch CPU reference path, same signature as the exported scorers."""
    it = item_emb.detach().float().T.contiguous()
    u = user_emb.detach().float()

    def score(users: np.ndarray) -> np.ndarray:
        with torch.no_grad():
            return (u[torch.as_tensor(users, dtype=torch.int64)] @ it).numpy()

    return score


# -- parity ------------------------------------------------------------------------------------
def _masked_topk(scores: np.ndarray, art: Artifact, users: np.ndarray, k: int):
    s = torch.from_numpy(np.array(scores, dtype=np.float32, copy=True))
    indptr = art.seen_indptr
    starts, ends = indptr[users], indptr[users + 1]
    counts = ends - starts
    rows = np.repeat(np.arange(len(users)), counts)
    pos = (
        np.arange(counts.sum())
        - np.repeat(np.cumsum(counts) - counts, counts)
        + np.repeat(starts, counts)
    )
    s[torch.from_numpy(rows), torch.from_numpy(art.seen_indices[pos])] = float("-inf")
    v, t = torch.topk(s, k, dim=1)
    return s, v.numpy(), t.numpy()


def check_parity(
    reference: ScoreFn,
    candidate: ScoreFn,
    artifact: Artifact,
    k: int = 50,
    rtol: float = 1e-4,
    atol: float = 1e-5,
    batch_users: int = 512,
) -> dict[str, Any]:
    """Compare two scorers on every user of `artifact`: raw scores and masked top-`k` lists.

    Returns a report with ``ok``; ``tie_swaps`` counts top-K positions whose ids differ but whose
    reference scores are equal within tolerance (ties broken differently), ``id_mismatches`` the
    positions that differ otherwise. Also the seconds each scorer spent (scoring only).
    """
    k = min(int(k), artifact.n_items)
    max_abs = 0.0
    max_rel_excess = 0.0
    tie_swaps = 0
    mismatches = 0
    t_ref = t_cand = 0.0
    for start in range(0, artifact.n_users, batch_users):
        users = np.arange(start, min(start + batch_users, artifact.n_users), dtype=np.int64)
        t0 = time.perf_counter()
        ref = reference(users)
        t1 = time.perf_counter()
        cand = candidate(users)
        t2 = time.perf_counter()
        t_ref += t1 - t0
        t_cand += t2 - t1
        if cand.shape != ref.shape:
            raise ArtifactError(
                f"exported scorer returned shape {cand.shape}, expected {ref.shape}"
            )
        diff = np.abs(cand.astype(np.float64) - ref)
        max_abs = max(max_abs, float(diff.max(initial=0.0)))
        max_rel_excess = max(
            max_rel_excess, float((diff - (atol + rtol * np.abs(ref))).max(initial=-1.0))
        )
        ref_masked, ref_v, ref_t = _masked_topk(ref, artifact, users, k)
        _, _, cand_t = _masked_topk(cand, artifact, users, k)
        differ = ref_t != cand_t
        if differ.any():
            r, c = np.nonzero(differ)
            # the reference score of the candidate's item at that rank vs the reference value there
            at_cand = ref_masked.numpy()[r, cand_t[r, c]]
            tol = atol + rtol * np.abs(ref_v[r, c])
            same = np.abs(at_cand - ref_v[r, c]) <= tol
            tie_swaps += int(same.sum())
            mismatches += int((~same).sum())
    return {
        "ok": bool(max_rel_excess <= 0 and mismatches == 0),
        "users": artifact.n_users,
        "k": k,
        "max_abs_score_diff": max_abs,
        "rtol": rtol,
        "atol": atol,
        "tie_swaps": tie_swaps,
        "id_mismatches": mismatches,
        "seconds_reference": round(t_ref, 4),
        "seconds_exported": round(t_cand, 4),
    }


# -- quantisation accuracy ---------------------------------------------------------------------
def dot_score_fn(user_emb: torch.Tensor, item_emb: torch.Tensor):
    it = item_emb.float().T.contiguous()
    return lambda users: user_emb[users.cpu()] @ it


def quantisation_report(
    artifact: Artifact, split, quantisation: str, ks=(10, 20, 50), phase: str = "test"
) -> dict[str, Any]:
    """Metrics of the fp32 and the quantised embeddings on `split`, and the relative change."""
    from recpress.evaluation import evaluate

    base = evaluate(dot_score_fn(artifact.user_emb, artifact.item_emb), split, ks=ks, phase=phase)
    q = artifact.quantised(quantisation)
    quant = evaluate(dot_score_fn(q.user_emb, q.item_emb), split, ks=ks, phase=phase)
    rel = {name: (quant.metrics[name] - v) / v if v else 0.0 for name, v in base.metrics.items()}
    return {
        "quantisation": quantisation,
        "phase": phase,
        "n_users": base.n_users,
        "fp32": base.metrics,
        "quantised": quant.metrics,
        "relative_change": rel,
        "max_abs_weight_error": float(
            max(
                (q.user_emb - artifact.user_emb).abs().max(),
                (q.item_emb - artifact.item_emb).abs().max(),
            )
        ),
    }


# -- the export command ------------------------------------------------------------------------
def export_run(
    run_dir: str | Path,
    out: str | Path,
    format: str = "npz",
    quantisation: str = "none",
    overwrite: bool = False,
    parity_k: int = 50,
    ks=(10, 20, 50),
    split=None,
) -> dict[str, Any]:
    """Export the run at `run_dir` as an artifact folder `out`; returns the export report.

    The report holds the form ("dot" or "model"), the files and bytes, the parity check of
    an exported scorer and, with quantisation, the measured metric change on the test phase.
    A model-form run (no dot-product form, e.g. NeuMF) with a `format` other than "npz" or a
    quantisation is a ConfigError, raised before anything is written.
    """
    from recpress.runs import load_run

    if format not in FORMATS:
        raise ConfigError(f"--format must be one of {', '.join(FORMATS)}, got {format!r}")
    if quantisation not in QUANTISATIONS:
        raise ConfigError(
            f"--quantise must be one of {', '.join(QUANTISATIONS)}, got {quantisation!r}"
        )
    out = Path(out)
    if out.exists() and not overwrite:
        raise ConfigError(f"{out} exists; choose another --out or pass --overwrite")
    run_dir = Path(run_dir)
    run = load_run(run_dir, split=split)
    model, split = run.model, run.split
    base = Artifact.from_model(
        model, split, config=dict(run.config), metrics=run.metrics or {}, source=str(run_dir)
    )
    if base.form == "model" and (format != "npz" or quantisation != "none"):
        what = [f"--format {format}"] if format != "npz" else []
        what += [f"--quantise {quantisation}"] if quantisation != "none" else []
        raise ConfigError(model_form_refusal(base.manifest["model"], " and ".join(what)))
    report: dict[str, Any] = {
        "run_dir": str(run_dir),
        "form": base.form,
        "format": format,
        "quantisation": quantisation,
    }
    if quantisation != "none":
        report["accuracy"] = quantisation_report(base, split, quantisation, ks=ks)
    served = base.quantised(quantisation)
    extra: dict[str, Path] = {}
    with tempfile.TemporaryDirectory() as tmp:
        if format != "npz":
            writer, loader, name = {
                "onnx": (write_onnx, onnx_scorer, ONNX_FILE),
                "torchscript": (write_torchscript, torchscript_scorer, TORCHSCRIPT_FILE),
            }[format]
            path = writer(served.user_emb, served.item_emb, Path(tmp) / name)
            parity = check_parity(
                torch_scorer(served.user_emb, served.item_emb), loader(path), served, k=parity_k
            )
            report["parity"] = parity
            if not parity["ok"]:
                raise ArtifactError(
                    f"{format} scorer failed the parity check (max |Δscore| "
                    f"{parity['max_abs_score_diff']:.3g}, {parity['id_mismatches']} top-{parity_k} "
                    "id mismatches); nothing was written"
                )
            extra[name] = path
        base.save(out, quantisation=quantisation, extra_files=extra, overwrite=overwrite)
    loaded = load_artifact(out)
    if base.form == "model":
        want = {k: v.detach().cpu() for k, v in base.model.state_dict().items()}
        got = loaded.model.state_dict()
        same = want.keys() == got.keys() and all(torch.equal(got[k], want[k]) for k in want)
    else:
        same = torch.equal(loaded.user_emb, served.user_emb) and torch.equal(
            loaded.item_emb, served.item_emb
        )
    if not same:
        raise ArtifactError(f"{out}: reloaded weights differ from the exported ones")
    weights = MODEL_WEIGHTS if base.form == "model" else WEIGHTS
    report["artifact"] = str(out)
    report["files"] = {k: v["bytes"] for k, v in loaded.manifest["files"].items()}
    report["bytes"] = loaded.disk_bytes()
    report["weights_bytes"] = loaded.manifest["files"][weights]["bytes"]
    return report
