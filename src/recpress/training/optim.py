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

import logging
import math
from collections.abc import Callable, Iterable

import torch
from torch import nn

OPTIMIZERS = ("lazy", "reference")
FUSED_MODES = ("auto", "on", "off")
#: under ``fused="auto"`` a row-sparse parameter gets the compiled update from this many elements
FUSED_MIN_ELEMENTS = 2**19

log = logging.getLogger(__name__)


def _decay(base: float, k: torch.Tensor) -> torch.Tensor:
    """base**k, set to exactly 0 once below 1e-30 (no denormal floats; see bench/README.md,
    section "Training: optimisers")."""
    log_value = k * math.log(base)
    return torch.where(log_value < -69.0, torch.zeros_like(k), torch.exp(log_value))


def _fused_rows_update(
    p: torch.Tensor,
    exp_avg: torch.Tensor,
    exp_avg_sq: torch.Tensor,
    last_step: torch.Tensor,
    rows: torch.Tensor,
    grad: torch.Tensor,
    scalars: torch.Tensor,
    lr: float,
    b1: float,
    b2: float,
    eps: float,
    wd: float,
) -> None:
    """`LazyAdam`'s row-sparse step (catch-up, then Adam) as one function for ``torch.compile``.

    The same arithmetic as the eager branch of `LazyAdam.step`, written out of place so the
    compiler fuses gather, update and scatter into one pass over the rows. p, exp_avg,
    exp_avg_sq: (n, d), updated in place on `rows` (R,) (unique); grad: (R, d) the summed
    gradient of those rows; last_step: (n,) int64; scalars: (3,) float64 [t, bc1, sqrt(bc2)]
    (a tensor, so a new step does not recompile).
    """
    t, bc1, bc2_sqrt = scalars[0], scalars[1], scalars[2]
    k = (t - 1 - last_step[rows]).to(p.dtype).unsqueeze(1)
    m, v, theta = exp_avg[rows], exp_avg_sq[rows], p[rows]
    r = b1 / math.sqrt(b2)
    series = (-lr * r / (1.0 - r)) * (1.0 - _decay(r, k)) / bc1
    theta = theta + m * series / (v.sqrt() / bc2_sqrt + eps)
    g = grad + wd * theta
    m = m * (_decay(b1, k) * b1) + (1 - b1) * g
    v = v * (_decay(b2, k) * b2) + (1 - b2) * g * g
    theta = theta - (lr / bc1) * m / (v.sqrt() / bc2_sqrt + eps)
    exp_avg[rows] = m
    exp_avg_sq[rows] = v
    p[rows] = theta
    last_step[rows] = t.to(last_step.dtype)


_compiled_update: Callable | None = None
_compile_failed = False


def _compiled_rows_update() -> Callable | None:
    """`_fused_rows_update` compiled once per process (dynamic shapes); None if unavailable."""
    global _compiled_update
    if _compiled_update is None and not _compile_failed:
        _compiled_update = torch.compile(_fused_rows_update, dynamic=True)
    return _compiled_update


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

    ``fused``: "on" runs the row-sparse step as one ``torch.compile``-d kernel
    (`_fused_rows_update`; needs a C++ compiler, compiles once per process; speed in
    bench/README.md, section "Training: optimisers"), "off" runs it eagerly, "auto" (default)
    fuses parameters of at least `FUSED_MIN_ELEMENTS` elements. If compiling fails, the eager
    step is used, with a warning. Both give the same values up to float rounding.
    """

    def __init__(
        self,
        params: Iterable[torch.Tensor] | Iterable[dict],
        lr: float = 1e-3,
        betas: tuple[float, float] = (0.9, 0.999),
        eps: float = 1e-8,
        weight_decay: float = 0.0,
        fused: str = "auto",
    ) -> None:
        if fused not in FUSED_MODES:
            raise ValueError(f"fused must be one of {', '.join(FUSED_MODES)}, got {fused!r}")
        super().__init__(params, dict(lr=lr, betas=betas, eps=eps, weight_decay=weight_decay))
        self.fused = fused

    def _fused_update(self, p: torch.Tensor) -> Callable | None:
        if self.fused == "off" or (self.fused == "auto" and p.numel() < FUSED_MIN_ELEMENTS):
            return None
        return _compiled_rows_update()

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
                    if self._try_fused(p, state, grad, t, lr, b1, b2, eps, wd, bc1, bc2_sqrt):
                        continue
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

    def _try_fused(self, p, state, grad, t, lr, b1, b2, eps, wd, bc1, bc2_sqrt) -> bool:
        """Run the compiled row update if this parameter uses it; False to run the eager one."""
        global _compile_failed
        update = self._fused_update(p)
        if update is None:
            return False
        # duplicate rows summed by unique + index_add (coalesce() would also sort the values)
        rows, inverse = torch.unique(grad._indices()[0], return_inverse=True)
        values = grad._values()
        summed = values.new_zeros(rows.shape[0], values.shape[1]).index_add_(0, inverse, values)
        scalars = torch.tensor([t, bc1, bc2_sqrt], dtype=torch.float64, device=p.device)
        try:
            update(
                p, state["exp_avg"], state["exp_avg_sq"], state["last_step"], rows,
                summed, scalars, lr, b1, b2, eps, wd,
            )  # fmt: skip
        except Exception as exc:  # no compiler / unsupported backend: eager from now on
            if self.fused == "on":
                raise
            _compile_failed = True
            log.warning("fused LazyAdam step unavailable (%s); using the eager step", exc)
            return False
        return True

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
    """PyTorch Adam with coupled weight decay; sparse gradients are densified first (reference).

    Uses PyTorch's fused multi-tensor kernel (``fused=True``: the same update as the
    per-parameter loop) where the parameters allow it, else ``foreach``.
    """

    def __init__(self, params, lr: float = 1e-3, weight_decay: float = 0.0, **kwargs) -> None:
        params = list(params)
        try:
            super().__init__(params, lr=lr, weight_decay=weight_decay, fused=True, **kwargs)
        except (RuntimeError, ValueError):  # a device or dtype the fused kernel does not take
            super().__init__(params, lr=lr, weight_decay=weight_decay, foreach=True, **kwargs)

    @torch.no_grad()
    def step(self, closure=None):  # noqa: D102
        for group in self.param_groups:
            for p in group["params"]:
                if p.grad is not None and p.grad.is_sparse:
                    p.grad = p.grad.to_dense()
        return super().step(closure)


def make_optimizer(
    kind: str,
    params: Iterable[nn.Parameter],
    lr: float,
    weight_decay: float,
    fused: str = "auto",
) -> torch.optim.Optimizer:
    """Build the optimiser named `kind` ("lazy" or "reference"); `fused` applies to lazy."""
    params = [p for p in params if p.requires_grad]
    if kind == "lazy":
        return LazyAdam(params, lr=lr, weight_decay=weight_decay, fused=fused)
    if kind == "reference":
        return DenseAdam(params, lr=lr, weight_decay=weight_decay)
    raise ValueError(f"unknown optimizer {kind!r}; known: {', '.join(OPTIMIZERS)}")
