"""LazyAdam against PyTorch's dense Adam (coupled weight decay)."""

from __future__ import annotations

import torch
from torch import nn

from recpress.training.optim import DenseAdam, LazyAdam, make_optimizer


def _sparse_grad(rows: torch.Tensor, values: torch.Tensor, shape) -> torch.Tensor:
    return torch.sparse_coo_tensor(rows.unsqueeze(0), values, shape, check_invariants=True)


def test_dense_gradients_match_torch_adam_exactly():
    torch.manual_seed(0)
    a = nn.Parameter(torch.randn(5, 3))
    b = nn.Parameter(a.detach().clone())
    lazy = LazyAdam([a], lr=1e-2, weight_decay=1e-2)
    ref = torch.optim.Adam([b], lr=1e-2, weight_decay=1e-2)
    for _ in range(20):
        g = torch.randn(5, 3)
        a.grad, b.grad = g.clone(), g.clone()
        lazy.step()
        ref.step()
    torch.testing.assert_close(a, b, rtol=1e-6, atol=1e-7)


def test_sparse_rows_touched_every_step_match_dense_adam():
    """With every row in every batch there is nothing to catch up: exactly dense Adam."""
    torch.manual_seed(1)
    a = nn.Parameter(torch.randn(6, 4))
    b = nn.Parameter(a.detach().clone())
    lazy = LazyAdam([a], lr=1e-2, weight_decay=1e-3)
    ref = torch.optim.Adam([b], lr=1e-2, weight_decay=1e-3)
    rows = torch.tensor([0, 1, 2, 3, 4, 5, 2])  # duplicates are summed, as embedding grads are
    for _ in range(25):
        vals = torch.randn(len(rows), 4)
        a.grad = _sparse_grad(rows, vals, a.shape)
        b.grad = _sparse_grad(rows, vals, a.shape).to_dense()
        lazy.step()
        ref.step()
    torch.testing.assert_close(a, b, rtol=1e-5, atol=1e-6)


def test_momentum_catch_up_tracks_dense_adam_without_decay():
    """Rows absent from a batch keep moving with their momentum in dense Adam; lazy catches up.

    With wd = 0 the only differences are the bias corrections and eps of the skipped steps, so
    after the first hundred steps the two trajectories agree closely. A lazy Adam without the
    catch-up would move rarely-used rows about 10x less.
    """
    torch.manual_seed(2)
    n, d = 40, 3
    a = nn.Parameter(torch.randn(n, d))
    b = nn.Parameter(a.detach().clone())
    start = a.detach().clone()
    lazy = LazyAdam([a], lr=1e-2)
    ref = torch.optim.Adam([b], lr=1e-2)
    gen = torch.Generator().manual_seed(0)
    for _ in range(400):
        rows = torch.randperm(n, generator=gen)[:5]
        vals = torch.randn(5, d, generator=gen) + 1.0
        a.grad = _sparse_grad(rows, vals, a.shape)
        b.grad = _sparse_grad(rows, vals, a.shape).to_dense()
        lazy.step()
        ref.step()
    lazy.flush()
    moved_lazy, moved_ref = a.detach() - start, b.detach() - start
    rel = (moved_lazy - moved_ref).norm() / moved_ref.norm()
    assert rel < 0.05, rel


def test_flush_is_idempotent_and_touched_rows_only():
    p = nn.Parameter(torch.ones(4, 2))
    opt = LazyAdam([p], lr=0.1)
    p.grad = _sparse_grad(torch.tensor([1]), torch.ones(1, 2), p.shape)
    opt.step()
    p.grad = _sparse_grad(torch.tensor([2]), torch.ones(1, 2), p.shape)
    opt.step()
    untouched = p.detach()[[0, 3]].clone()
    opt.flush()
    after = p.detach().clone()
    opt.flush()
    torch.testing.assert_close(p.detach(), after)
    torch.testing.assert_close(after[[0, 3]], untouched)  # never-touched rows have no momentum
    assert after[1, 0] < 0.9  # row 1 kept moving with its momentum during step 2


def test_reference_optimizer_densifies_sparse_grads():
    emb = nn.Embedding(5, 2, sparse=True)
    opt = make_optimizer("reference", emb.parameters(), lr=1e-2, weight_decay=1e-3)
    assert isinstance(opt, DenseAdam)
    before = emb.weight.detach().clone()
    emb(torch.tensor([0, 1])).sum().backward()
    opt.step()
    # coupled decay moves every row, also rows 2..4 absent from the batch
    assert not torch.equal(emb.weight.detach()[2:], before[2:])


def test_unknown_optimizer():
    import pytest

    with pytest.raises(ValueError, match="lazy, reference"):
        make_optimizer("sgdx", [nn.Parameter(torch.zeros(1))], 1e-3, 0.0)


def test_fused_compiled_step_matches_the_eager_step():
    """The torch.compile-d row update (fused="on") follows the eager arithmetic step by step:
    duplicate rows summed, rows skipped for many steps caught up, weight decay on."""
    torch.manual_seed(3)
    n, d = 50, 8
    a = nn.Parameter(torch.randn(n, d))
    b = nn.Parameter(a.detach().clone())
    fused = LazyAdam([a], lr=1e-2, weight_decay=1e-2, fused="on")
    eager = LazyAdam([b], lr=1e-2, weight_decay=1e-2, fused="off")
    gen = torch.Generator().manual_seed(1)
    for step in range(60):
        size = 3 + step % 7  # a different number of rows each step: one dynamic-shape kernel
        rows = torch.randint(0, n // (1 + step % 3), (size,), generator=gen)
        vals = torch.randn(size, d, generator=gen)
        a.grad = _sparse_grad(rows, vals, a.shape)
        b.grad = _sparse_grad(rows, vals, a.shape)
        fused.step()
        eager.step()
    for opt in (fused, eager):
        opt.flush()
    torch.testing.assert_close(a, b, rtol=1e-5, atol=1e-6)
    sa, sb = fused.state[a], eager.state[b]
    torch.testing.assert_close(sa["exp_avg"], sb["exp_avg"], rtol=1e-5, atol=1e-7)
    torch.testing.assert_close(sa["exp_avg_sq"], sb["exp_avg_sq"], rtol=1e-5, atol=1e-9)
    assert torch.equal(sa["last_step"], sb["last_step"])


def test_fused_auto_uses_the_compiled_step_only_for_large_tables():
    from recpress.training.optim import FUSED_MIN_ELEMENTS

    small = nn.Parameter(torch.zeros(4, 2))
    large = nn.Parameter(torch.zeros(FUSED_MIN_ELEMENTS // 8, 8))
    opt = LazyAdam([small, large], fused="auto")
    assert opt._fused_update(small) is None
    assert opt._fused_update(large) is not None
    assert LazyAdam([large], fused="off")._fused_update(large) is None
    import pytest

    with pytest.raises(ValueError, match="fused must be one of"):
        LazyAdam([small], fused="yes")


def test_dense_reference_adam_matches_pytorch_adam_step_by_step():
    """DenseAdam (fused kernel, sparse gradients densified) follows torch.optim.Adam's default
    loop with coupled weight decay, on every row, touched or not."""
    torch.manual_seed(4)
    a = nn.Parameter(torch.randn(30, 6))
    b = nn.Parameter(a.detach().clone())
    dense = DenseAdam([a], lr=1e-2, weight_decay=1e-2)
    ref = torch.optim.Adam([b], lr=1e-2, weight_decay=1e-2, foreach=False)
    assert dense.defaults.get("fused") or dense.defaults.get("foreach")
    gen = torch.Generator().manual_seed(2)
    for _ in range(40):
        rows = torch.randint(0, 30, (7,), generator=gen)
        vals = torch.randn(7, 6, generator=gen)
        a.grad = _sparse_grad(rows, vals, a.shape)
        b.grad = _sparse_grad(rows, vals, a.shape).to_dense()
        dense.step()
        ref.step()
    torch.testing.assert_close(a, b, rtol=1e-5, atol=1e-6)
