"""Optimisers: exact dense Adam (the reference preset) and a lazy row-sparse Adam (the default).

Both use *coupled* L2 weight decay, g ← ∇L + wd·θ, followed by the Adam update (PyTorch's
``Adam(weight_decay=...)``, not AdamW).

``reference``: every parameter is updated at every step. Embedding rows absent from the batch
still receive the decay gradient wd·θ and keep moving with their first moment. This is what the
DE-RRD / Topology Distillation releases do, and costs O((n_users + n_items)·d) per step.

``lazy`` (default): parameters whose gradient is row-sparse (``nn.Embedding(sparse=True)``) are
updated only on the rows present in the batch, after a closed-form catch-up of the momentum steps
the row missed (see `LazyAdam`). Rows absent from a batch are not decayed. Dense parameters
(KD auxiliary modules) get the exact Adam update. Cost per step is O(rows in batch · d).
"""

from __future__ import annotations

import math
from collections.abc import Iterable

import torch
from torch import nn

OPTIMIZERS = ("lazy", "reference")


def _decay(base: float, k: torch.Tensor) -> torch.Tensor:
    """base**k, set to exactly 0 once below 1e-30 (denormal floats slow CPUs down ~100x)."""
    log_value = k * math.log(base)
    return torch.where(log_value < -69.0, torch.zeros_like(k), torch.exp(log_value))


class LazyAdam(torch.optim.Optimizer):
    """Adam with coupled weight decay; row-sparse gradients update only their rows, lazily.

    A row-sparse gradient (rows R, values G of shape (|R|, d)) is applied in two parts:

    1. *Momentum catch-up* for the k steps since row r was last touched. In dense Adam those
       steps would have moved the row by its decaying first moment:
       θ_r −= lr/bc1 · m_r / (sqrt(v_r/bc2) + eps) · Σ_{j=1..k} (β1/√β2)^j,
       m_r ← β1^k·m_r, v_r ← β2^k·v_r. This is done in closed form (geometric series).
    2. The Adam step on the rows of the batch: g = G + wd·θ[R], then the usual moment updates
       and θ[R] −= lr · (m/bc1) / (sqrt(v/bc2) + eps), bc = 1 − β^t with the global step t.

    What differs from dense Adam: the weight-decay gradient wd·θ of rows absent from a batch is
    not applied (rows are decayed only when they are used), and the bias corrections of the
    skipped steps are taken at the current step. ``flush()`` applies the pending catch-up to all
    rows (the trainer calls it before every evaluation, and after every epoch when distillers
    read the student, so evaluated and saved weights are up to date). Dense gradients (KD
    auxiliary modules) get the exact Adam update.
    """

    def __init__(
        self,
        params: Iterable[torch.Tensor] | Iterable[dict],
        lr: float = 1e-3,
        betas: tuple[float, float] = (0.9, 0.999),
        eps: float = 1e-8,
        weight_decay: float = 0.0,
    ) -> None:
        super().__init__(params, dict(lr=lr, betas=betas, eps=eps, weight_decay=weight_decay))

    @staticmethod
    def _init_state(state: dict, p: torch.Tensor, sparse: bool) -> None:
        state["step"] = torch.zeros((), dtype=torch.float64)
        state["exp_avg"] = torch.zeros_like(p, memory_format=torch.preserve_format)
        state["exp_avg_sq"] = torch.zeros_like(p, memory_format=torch.preserve_format)
        if sparse:
            state["last_step"] = torch.zeros(p.shape[0], dtype=torch.int64, device=p.device)

    @staticmethod
    def _catch_up(m, v, skipped, lr, b1, b2, eps, bc1, bc2_sqrt) -> tuple:
        """Catch-up of k skipped momentum-only steps on gathered rows m, v (R, d).

        Returns the displacement of θ (R, d) and the per-row decays β1^k, β2^k (R, 1) that the
        caller applies to m and v (folded into its next multiplication to save a pass).
        """
        k = skipped.to(m.dtype).view(-1, *([1] * (m.dim() - 1)))
        r = b1 / math.sqrt(b2)
        series = (-lr / bc1 * r / (1.0 - r)) * (1.0 - _decay(r, k))
        displacement = (m * series).div_(v.sqrt().div_(bc2_sqrt).add_(eps))
        return displacement, _decay(b1, k), _decay(b2, k)

    @torch.no_grad()
    def step(self, closure=None):  # noqa: D102
        for group in self.param_groups:
            lr, (b1, b2), eps, wd = group["lr"], group["betas"], group["eps"], group["weight_decay"]
            for p in group["params"]:
                if p.grad is None:
                    continue
                grad = p.grad
                state = self.state[p]
                if not state:
                    self._init_state(state, p, grad.is_sparse)
                state["step"] += 1
                t = int(state["step"])
                bc1 = 1.0 - b1**t
                bc2_sqrt = math.sqrt(1.0 - b2**t)
                if grad.is_sparse:
                    grad = grad.coalesce()
                    rows = grad.indices()[0]
                    g = grad.values()
                    last = state["last_step"]
                    m = state["exp_avg"].index_select(0, rows)
                    v = state["exp_avg_sq"].index_select(0, rows)
                    skipped = (t - 1) - last.index_select(0, rows)
                    displacement, decay1, decay2 = self._catch_up(
                        m, v, skipped, lr, b1, b2, eps, bc1, bc2_sqrt
                    )
                    if wd:
                        theta = p.index_select(0, rows).add_(displacement)
                        g = g.add(theta, alpha=wd)
                    m.mul_(decay1.mul_(b1)).add_(g, alpha=1 - b1)
                    v.mul_(decay2.mul_(b2)).addcmul_(g, g, value=1 - b2)
                    denom = v.sqrt().div_(bc2_sqrt).add_(eps)
                    displacement.addcdiv_(m, denom, value=-lr / bc1)
                    state["exp_avg"].index_copy_(0, rows, m)
                    state["exp_avg_sq"].index_copy_(0, rows, v)
                    p.index_add_(0, rows, displacement)
                    last.index_fill_(0, rows, t)
                else:
                    m, v = state["exp_avg"], state["exp_avg_sq"]
                    if wd:
                        grad = grad.add(p, alpha=wd)
                    m.mul_(b1).add_(grad, alpha=1 - b1)
                    v.mul_(b2).addcmul_(grad, grad, value=1 - b2)
                    denom = v.sqrt().div_(bc2_sqrt).add_(eps)
                    p.addcdiv_(m, denom, value=-lr / bc1)

    @torch.no_grad()
    def flush(self) -> None:
        """Apply every row's pending momentum catch-up up to the current step."""
        for group in self.param_groups:
            lr, (b1, b2), eps = group["lr"], group["betas"], group["eps"]
            for p in group["params"]:
                state = self.state.get(p)
                if not state or "last_step" not in state:
                    continue
                t = int(state["step"])
                last = state["last_step"]
                rows = torch.nonzero(last < t).squeeze(1)
                if rows.numel() == 0:
                    continue
                bc1 = 1.0 - b1**t
                bc2_sqrt = math.sqrt(1.0 - b2**t)
                m = state["exp_avg"].index_select(0, rows)
                v = state["exp_avg_sq"].index_select(0, rows)
                skipped = t - last.index_select(0, rows)
                displacement, decay1, decay2 = self._catch_up(
                    m, v, skipped, lr, b1, b2, eps, bc1, bc2_sqrt
                )
                state["exp_avg"].index_copy_(0, rows, m.mul_(decay1))
                state["exp_avg_sq"].index_copy_(0, rows, v.mul_(decay2))
                p.index_add_(0, rows, displacement)
                last.fill_(t)


class DenseAdam(torch.optim.Adam):
    """PyTorch Adam with coupled weight decay; sparse gradients are densified first (reference)."""

    @torch.no_grad()
    def step(self, closure=None):  # noqa: D102
        for group in self.param_groups:
            for p in group["params"]:
                if p.grad is not None and p.grad.is_sparse:
                    p.grad = p.grad.to_dense()
        return super().step(closure)


def make_optimizer(
    kind: str, params: Iterable[nn.Parameter], lr: float, weight_decay: float
) -> torch.optim.Optimizer:
    """Build the optimiser named `kind` ("lazy" or "reference")."""
    params = [p for p in params if p.requires_grad]
    if kind == "lazy":
        return LazyAdam(params, lr=lr, weight_decay=weight_decay)
    if kind == "reference":
        return DenseAdam(params, lr=lr, weight_decay=weight_decay)
    raise ValueError(f"unknown optimizer {kind!r}; known: {', '.join(OPTIMIZERS)}")
