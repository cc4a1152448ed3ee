"""Typed training configuration (the `train:` section of a run config)."""

from __future__ import annotations

from typing import Literal

from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    field_validator,
    model_serializer,
    model_validator,
)

#: settings added after run configs were first stored: dumped only when not at their default,
#: so the config.yaml of every earlier run (and its comparison with a new one) stays the same
_OPTIONAL_DEFAULTS: dict[str, object] = {
    "trajectory_epochs": [],
    "trajectory_k": 100,
    "keep_checkpoints": [],
    "amp": "off",
}


class TrainConfig(BaseModel):
    """Hyperparameters of the one training loop.

    ``reduction_base`` says how the base loss is reduced over the B triples of a batch ("sum",
    as the references; "mean" divides by B). ``optimizer`` is "lazy" (row-sparse Adam, default)
    or "reference" (dense Adam, exactly the reference implementations); both use coupled weight
    decay. ``fused_optimizer`` ("auto" | "on" | "off") runs the lazy step of large embedding
    tables as one compiled kernel (see `LazyAdam`). ``selection``: "best_valid" keeps the epoch
    with the best validation ``selection_metric`` (one epoch for all K) and stops after
    ``patience`` evaluations without improvement; "fixed_epochs" trains all epochs and keeps the
    final weights (reproduces the Topology Distillation log). ``amp="bf16"`` runs each batch's
    forward pass (student and distillers) under bfloat16 autocast; "off" (default) keeps float32.
    Under torchrun ``batch_size`` is the global batch (docs/distributed.md).

    Teacher trajectories (HetComp, docs/methods.md): at the end of each 0-based epoch in
    ``trajectory_epochs`` the per-user top-``trajectory_k`` unobserved lists of the current model
    are stored in the run's ``trajectories.safetensors``; the weights at each epoch in
    ``keep_checkpoints`` are kept as ``checkpoints/epoch_XXXX.safetensors`` (so lists of
    those epochs can be made later with ``recpress trajectories``).
    """

    model_config = ConfigDict(extra="forbid")

    epochs: int = Field(100, ge=1, description="number of passes over the training data")
    lr: float = Field(1e-3, gt=0)
    weight_decay: float = Field(1e-3, ge=0)
    batch_size: int = Field(1024, ge=1)
    optimizer: Literal["lazy", "reference"] = "lazy"
    fused_optimizer: Literal["auto", "on", "off"] = "auto"
    reduction_base: Literal["sum", "mean"] = "sum"
    eval_every: int = Field(10, ge=1)
    patience: int | None = Field(5, ge=1)
    selection: Literal["best_valid", "fixed_epochs"] = "best_valid"
    selection_metric: str = "recall@50"
    ks: list[int] = Field(default_factory=lambda: [10, 20, 50])
    eval_test_every_eval: bool = Field(
        True, description="also evaluate the test set at every evaluation (for curves)"
    )
    seed: int = 0
    device: str = "auto"
    checkpoint_every: int = Field(1, ge=1, description="epochs between resume checkpoints")
    amp: Literal["off", "bf16"] = Field(
        "off", description="autocast the training forward pass to bfloat16 (docs/distributed.md)"
    )
    trajectory_epochs: list[int] = Field(
        default_factory=list, description="0-based epochs whose per-user top-K lists are stored"
    )
    trajectory_k: int = Field(100, ge=1, description="length of the stored trajectory lists")
    keep_checkpoints: list[int] = Field(
        default_factory=list, description="0-based epochs whose weights are kept"
    )

    @field_validator("ks")
    @classmethod
    def _ks_positive(cls, ks: list[int]) -> list[int]:
        if not ks or any(k <= 0 for k in ks):
            raise ValueError("ks must be a non-empty list of positive integers")
        return sorted(set(ks))

    @field_validator("selection_metric")
    @classmethod
    def _metric_name(cls, name: str) -> str:
        base, _, k = name.partition("@")
        if base not in {"recall", "ndcg", "hr", "precision", "mrr"} or not k.isdigit():
            raise ValueError(
                "selection_metric must look like recall@50 (metrics: recall, ndcg, hr, "
                "precision, mrr)"
            )
        return name

    @field_validator("device")
    @classmethod
    def _device(cls, device: str) -> str:
        if device not in ("auto", "cpu") and not device.startswith("cuda"):
            raise ValueError("device must be auto, cpu, cuda or cuda:N")
        return device

    @field_validator("trajectory_epochs", "keep_checkpoints")
    @classmethod
    def _epoch_list(cls, epochs: list[int], info) -> list[int]:
        if any(e < 0 for e in epochs):
            raise ValueError(f"{info.field_name} are 0-based epochs (>= 0), got {epochs}")
        return sorted(set(epochs))

    @model_validator(mode="after")
    def _epochs_are_trained(self) -> TrainConfig:
        for name in ("trajectory_epochs", "keep_checkpoints"):
            late = [e for e in getattr(self, name) if e >= self.epochs]
            if late:
                raise ValueError(
                    f"{name} {late} are not trained: epochs are 0-based, 0..{self.epochs - 1} "
                    f"with epochs={self.epochs}"
                )
        return self

    @model_serializer(mode="wrap")
    def _dump(self, handler) -> dict:
        data = handler(self)
        for name, default in _OPTIONAL_DEFAULTS.items():
            if name in data and data[name] == default:
                del data[name]
        return data

    @model_validator(mode="after")
    def _metric_k_is_evaluated(self) -> TrainConfig:
        k = int(self.selection_metric.partition("@")[2])
        if k not in self.ks:
            raise ValueError(
                f"selection_metric {self.selection_metric} needs K={k} in ks (ks = {self.ks})"
            )
        return self
