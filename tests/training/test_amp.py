"""``train.amp``: "off" is the float32 loop unchanged; "bf16" autocasts the forward pass (here
on the CPU, where bfloat16 autocast exists too) and still learns."""

from __future__ import annotations

import numpy as np
import torch

from recpress.models import NeuMF
from recpress.training import TrainConfig, Trainer
from tests.models.clustered import clustered_split


def _fit(amp: str | None):
    extra = {} if amp is None else {"amp": amp}
    config = TrainConfig(
        epochs=4, lr=1e-2, weight_decay=0.0, batch_size=64, eval_every=4, patience=None,
        ks=[10], selection_metric="recall@10", seed=1, device="cpu", **extra,
    )  # fmt: skip
    model = NeuMF(8, layers=2)
    result = Trainer(config).fit(model, clustered_split(), progress=False)
    return model, result


def test_amp_off_is_the_default_loop():
    default, r_default = _fit(None)
    off, r_off = _fit("off")
    assert [row["loss"] for row in r_off.history] == [row["loss"] for row in r_default.history]
    for (name, a), (_, b) in zip(
        default.state_dict().items(), off.state_dict().items(), strict=True
    ):
        assert torch.equal(a, b), name


def test_bf16_autocast_trains_in_float32_weights():
    model, result = _fit("bf16")
    losses = [row["loss"] for row in result.history]
    assert np.isfinite(losses).all() and losses[-1] < losses[0], losses
    assert all(p.dtype == torch.float32 for p in model.parameters())
    _, fp32 = _fit("off")
    assert result.test["recall@10"] > 0.5 * fp32.test["recall@10"]
    assert result.test["recall@10"] > 2 * 10 / 40  # well above random on the clustered split
