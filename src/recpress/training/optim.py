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
    rows (the trainer calls it at the end of every epoch, so evaluated and saved weights are up
    to date). Dense gradients (KD auxiliary modules) get the exact Adam update.
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
    def _init_state(state: dict, p: torch.Tensor) -> None:
        state["step"] = torch.zeros((), dtype=torch.float64)
        state["exp_avg"] = torch.zeros_like(p, memory_format=torch.preserve_format)
        state["exp_avg_sq"] = torch.zeros_like(p, memory_format=torch.preserve_format)
        if p.dim() >= 1:
            state["last_step"] = torch.zeros(p.shape[0], dtype=torch.int64, device=p.device)

    @staticmethod
    def _catch_up(p, m, v, rows, skipped, lr, b1, b2, eps, bc1, bc2_sqrt) -> tuple:
        """Apply k skipped momentum-only steps to `rows`; returns (theta, m_rows, v_rows)."""
        theta = p.index_select(0, rows)
        m_rows = m.index_select(0, rows)
        v_rows = v.index_select(0, rows)
        k = skipped.to(p.dtype).unsqueeze(1)
        r = b1 / math.sqrt(b2)
        series = r * (1.0 - _decay(r, k)) / (1.0 - r)
        denom = v_rows.sqrt().div_(bc2_sqrt).add_(eps)
        theta.addcdiv_(m_rows * series, denom, value=-lr / bc1)
        m_rows.mul_(_decay(b1, k))
        v_rows.mul_(_decay(b2, k))
        return theta, m_rows, v_rows

    @torch.no_grad()
    def step(self, closure=None):  # noqa: D102
        for group in self.param_groups:
            lr, (b1, b2), eps, wd = group["lr"], group["betas"], group["eps"], group["weight_decay"]
            for p in group["params"]:
                if p.grad is None:
                    continue
                state = self.state[p]
                if not state:
                    self._init_state(state, p)
                state["step"] += 1
                t = float(state["step"])
                bc1 = 1.0 - b1**t
                bc2_sqrt = math.sqrt(1.0 - b2**t)
                m, v = state["exp_avg"], state["exp_avg_sq"]
                grad = p.grad
                if grad.is_sparse:
                    grad = grad.coalesce()
                    rows = grad.indices()[0]
                    g = grad.values()
                    last = state["last_step"]
                    skipped = (int(t) - 1 - last.index_select(0, rows)).clamp_(min=0)
                    theta, m_rows, v_rows = self._catch_up(
                        p, m, v, rows, skipped, lr, b1, b2, eps, bc1, bc2_sqrt
                    )
                    if wd:
                        g = g.add(theta, alpha=wd)
                    m_rows.mul_(b1).add_(g, alpha=1 - b1)
                    v_rows.mul_(b2).addcmul_(g, g, value=1 - b2)
                    m.index_copy_(0, rows, m_rows)
                    v.index_copy_(0, rows, v_rows)
                    denom = v_rows.sqrt_().div_(bc2_sqrt).add_(eps)
                    theta.addcdiv_(m_rows, denom, value=-lr / bc1)
                    p.index_copy_(0, rows, theta)
                    last.index_fill_(0, rows, int(t))
                else:
                    if wd:
                        grad = grad.add(p, alpha=wd)
                    m.mul_(b1).add_(grad, alpha=1 - b1)
                    v.mul_(b2).addcmul_(grad, grad, value=1 - b2)
                    denom = v.sqrt().div_(bc2_sqrt).add_(eps)
                    p.addcdiv_(m, denom, value=-lr / bc1)
                    if "last_step" in state:
                        state["last_step"].fill_(int(t))

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
                skipped = t - last
                rows = torch.nonzero(skipped > 0).squeeze(1)
                if rows.numel() == 0:
                    continue
                bc1 = 1.0 - b1**t
                bc2_sqrt = math.sqrt(1.0 - b2**t)
                m, v = state["exp_avg"], state["exp_avg_sq"]
                theta, m_rows, v_rows = self._catch_up(
                    p, m, v, rows, skipped.index_select(0, rows), lr, b1, b2, eps, bc1, bc2_sqrt
                )
                p.index_copy_(0, rows, theta)
                m.index_copy_(0, rows, m_rows)
                v.index_copy_(0, rows, v_rows)
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
