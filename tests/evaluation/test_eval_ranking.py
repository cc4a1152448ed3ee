"""Full-ranking evaluate(): hand cases, masking policy, a slow per-user reference, scorers."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest
import torch

from recpress.data.types import Split, to_csr
from recpress.errors import ConfigError
from recpress.evaluation import METRICS, evaluate
from recpress.models import BPRMF


def make_split(n_users, n_items, train, valid, test) -> Split:
    def csr(pairs):
        arr = np.asarray(pairs, dtype=np.int64).reshape(-1, 2)
        return to_csr(arr[:, 0], arr[:, 1], n_users, n_items)

    return Split(
        train=csr(train),
        valid=csr(valid),
        test=csr(test),
        user_ids=np.arange(n_users),
        item_ids=np.arange(n_items),
        dataset="tiny",
        protocol="manual",
    )


def table_scorer(table):
    t = torch.as_tensor(table, dtype=torch.float32)
    return lambda users: t[users]


# 4 users, 6 items. Scores are distinct per row: item i scores 6 - i (item 0 ranks first).
TINY = make_split(
    4,
    6,
    train=[(0, 0), (1, 5), (2, 1), (3, 2)],
    valid=[(0, 1), (1, 0), (3, 3)],
    test=[(0, 2), (0, 4), (1, 1)],  # user 2: no test item; user 3: no test item
)
DESC = [[6, 5, 4, 3, 2, 1]] * 4


def test_hand_case_and_population():
    res = evaluate(table_scorer(DESC), TINY, ks=(1, 2, 3), phase="test", per_user=True)
    # user 0: train {0}, valid {1} masked -> list 2,3,4,5 ; targets {2,4}: hits at ranks 1, 3
    # user 1: train {5}, valid {0} masked -> list 1,2,3,4 ; target {1}: hit at rank 1
    assert res.n_users == 2
    assert res.users.tolist() == [0, 1]
    assert res.n_users_without_targets == 2
    assert res.exclude == ("train", "valid")
    pu = res.per_user
    np.testing.assert_allclose(pu["recall@3"], [1.0, 1.0])
    np.testing.assert_allclose(pu["recall@2"], [0.5, 1.0])
    np.testing.assert_allclose(pu["precision@3"], [2 / 3, 1 / 3])
    np.testing.assert_allclose(pu["hr@1"], [1.0, 1.0])
    idcg2 = 1 + 1 / math.log2(3)
    np.testing.assert_allclose(pu["ndcg@3"], [(1 + 0.5) / idcg2, 1.0])
    np.testing.assert_allclose(pu["mrr@3"], [1.0, 1.0])
    assert res.metrics["recall@2"] == pytest.approx(0.75)
    assert res["ndcg@3"] == pytest.approx(((1.5 / idcg2) + 1.0) / 2)


def test_validation_population_counts_and_default_mask():
    res = evaluate(table_scorer(DESC), TINY, ks=(1,), phase="valid", per_user=True)
    # valid users 0, 1, 3 all have training items; test items are NOT masked at validation
    assert res.users.tolist() == [0, 1, 3]
    assert res.n_users_without_targets == 1
    assert res.exclude == ("train",)
    # user 0: list 1,2,.. -> hit at 1; user 1: list 0,.. -> hit; user 3: list 0,1,3 -> miss@1
    np.testing.assert_allclose(res.per_user["hr@1"], [1.0, 1.0, 0.0])


def test_user_without_training_items_is_excluded():
    split = make_split(3, 4, train=[(0, 0), (1, 1)], valid=[], test=[(0, 1), (1, 2), (2, 3)])
    res = evaluate(table_scorer([[4, 3, 2, 1]] * 3), split, ks=(1,), phase="test")
    assert res.users.tolist() == [0, 1]
    assert res.n_users_without_train == 1
    assert res.n_users_without_targets == 0


def test_masking_train_items_never_ranked():
    # train items get huge scores; with K = number of unmasked items, every target is found
    rng = np.random.default_rng(0)
    n_users, n_items = 6, 12
    train = [(u, i) for u in range(n_users) for i in range(0, 6)]
    test = [(u, 6 + (u % 6)) for u in range(n_users)]
    split = make_split(n_users, n_items, train, [], test)
    table = rng.random((n_users, n_items)).astype(np.float32)
    table[:, :6] += 100.0
    res = evaluate(table_scorer(table), split, ks=(6,), phase="test")
    assert res["recall@6"] == 1.0
    # without masking, train items would fill the top 6
    res_nomask = evaluate(table_scorer(table), split, ks=(6,), phase="test", exclude=())
    assert res_nomask["recall@6"] == 0.0


def test_test_phase_masks_valid_items():
    split = make_split(1, 4, train=[(0, 3)], valid=[(0, 0)], test=[(0, 1)])
    scorer = table_scorer([[4, 3, 2, 1]])
    assert evaluate(scorer, split, ks=(1,), phase="test")["hr@1"] == 1.0
    only_train = evaluate(scorer, split, ks=(1, 2), phase="test", exclude=("train",))
    assert only_train["hr@1"] == 0.0
    assert only_train["mrr@2"] == 0.5
    # loo-full reference rule at validation: mask train + test
    split2 = make_split(1, 4, train=[(0, 3)], valid=[(0, 1)], test=[(0, 0)])
    assert evaluate(scorer, split2, ks=(1,), phase="valid")["hr@1"] == 0.0
    assert (
        evaluate(scorer, split2, ks=(1,), phase="valid", exclude=("train", "test"))["hr@1"] == 1.0
    )


def random_split(seed=0, n_users=40, n_items=30):
    rng = np.random.default_rng(seed)
    train, valid, test = [], [], []
    for u in range(n_users):
        n = int(rng.integers(0, 12))
        items = rng.permutation(n_items)[:n]
        for i in items:
            r = rng.random()
            part = train if r < 0.6 else valid if r < 0.8 else test
            part.append((u, int(i)))
    return make_split(n_users, n_items, train, valid, test)


def reference_evaluate(scores: np.ndarray, split: Split, ks, phase, exclude):
    """Slow, explicit per-user loops; scores are distinct so the ranking is unique."""
    targets = split.part(phase)
    per = {f"{m}@{k}": [] for m in METRICS for k in ks}
    users = []
    for u in range(split.n_users):
        t_items = set(targets.indices[targets.indptr[u] : targets.indptr[u + 1]].tolist())
        n_train = split.train.indptr[u + 1] - split.train.indptr[u]
        if not t_items or n_train == 0:
            continue
        users.append(u)
        masked = set()
        for p in exclude:
            m = split.part(p)
            masked |= set(m.indices[m.indptr[u] : m.indptr[u + 1]].tolist())
        ranked = [i for i in sorted(range(split.n_items), key=lambda i: -scores[u, i])]
        ranked = [i for i in ranked if i not in masked]
        for k in ks:
            top = ranked[:k]
            rel = [1 if i in t_items else 0 for i in top]
            h = sum(rel)
            dcg = sum(r / math.log2(pos + 2) for pos, r in enumerate(rel))
            idcg = sum(1 / math.log2(pos + 2) for pos in range(min(len(t_items), k)))
            first = next((pos + 1 for pos, r in enumerate(rel) if r), None)
            per[f"recall@{k}"].append(h / len(t_items))
            per[f"precision@{k}"].append(h / k)
            per[f"hr@{k}"].append(1.0 if h > 0 else 0.0)
            per[f"ndcg@{k}"].append(dcg / idcg)
            per[f"mrr@{k}"].append(1.0 / first if first else 0.0)
    return np.array(users), {k: np.array(v) for k, v in per.items()}


@pytest.mark.parametrize("phase", ["valid", "test"])
@pytest.mark.parametrize("seed", [0, 1])
def test_matches_slow_reference(phase, seed):
    split = random_split(seed)
    model = BPRMF(embedding_dim=8).build(split, generator=torch.Generator().manual_seed(seed))
    with torch.no_grad():
        scores = model.score(torch.arange(split.n_users)).numpy()
    # well-separated scores (exact float64 products): no kernel's rounding (~1e-7 relative)
    # can reorder two items, so the chunked evaluation must rank exactly like the reference
    exact = model.user_emb.weight.double() @ model.item_emb.weight.double().T
    gaps = torch.diff(torch.sort(exact, dim=1).values, dim=1).min(dim=1).values
    assert (gaps > 1e-5 * exact.abs().max(dim=1).values).all()
    ks = (1, 3, 5)
    excl = ("train",) if phase == "valid" else ("train", "valid")
    ref_users, ref = reference_evaluate(scores, split, ks, phase, excl)
    for bs in (1, 7, None):
        res = evaluate(model, split, ks=ks, phase=phase, per_user=True, batch_size=bs)
        np.testing.assert_array_equal(res.users, ref_users)
        assert res.n_users == len(ref_users) > 0
        for name, vals in ref.items():
            np.testing.assert_allclose(res.per_user[name], vals, rtol=1e-12, atol=1e-12)
            assert res.metrics[name] == pytest.approx(vals.mean(), rel=1e-12)


def test_callable_scorer_equals_model_and_restores_mode():
    split = random_split(3)
    model = BPRMF(embedding_dim=8).build(split, generator=torch.Generator().manual_seed(0))
    model.train()
    res_model = evaluate(model, split, ks=(1, 3, 5), per_user=True)
    assert model.training  # previous mode restored
    P = model.user_emb.weight.detach().numpy().copy()
    Q = model.item_emb.weight.detach().numpy().copy()

    def score_fn(users):  # e.g. factors from another library, as numpy
        return torch.from_numpy(P[users.numpy()] @ Q.T)

    res_fn = evaluate(score_fn, split, ks=(1, 3, 5), per_user=True)
    assert res_fn.metrics == pytest.approx(res_model.metrics)
    for name in res_model.per_user:
        np.testing.assert_allclose(res_fn.per_user[name], res_model.per_user[name])


def test_scorer_output_not_modified_when_it_is_a_view():
    table = torch.arange(24, dtype=torch.float32).reshape(4, 6).flip(1).contiguous()
    before = table.clone()
    evaluate(lambda u: table[: len(u)], TINY, ks=(2,), phase="valid")  # returns a view
    torch.testing.assert_close(table, before)


def test_subset_of_metrics_and_to_dict():
    res = evaluate(table_scorer(DESC), TINY, ks=(2, 1), metrics=("ndcg", "recall"))
    assert list(res.metrics) == ["ndcg@1", "ndcg@2", "recall@1", "recall@2"]
    assert res.per_user is None
    d = json.loads(json.dumps(res.to_dict(per_user=True)))
    assert d["n_users"] == 2 and d["phase"] == "test" and d["users"] == [0, 1]
    assert d["exclude"] == ["train", "valid"]


def test_no_evaluable_users_gives_nan():
    split = make_split(2, 3, train=[(0, 0)], valid=[], test=[(1, 1)])
    res = evaluate(table_scorer([[3, 2, 1]] * 2), split, ks=(1,))
    assert res.n_users == 0 and math.isnan(res["recall@1"])


def test_bad_arguments():
    scorer = table_scorer(DESC)
    with pytest.raises(ConfigError):
        evaluate(scorer, TINY, phase="train")
    with pytest.raises(ConfigError):
        evaluate(scorer, TINY, phase="test", exclude=("test",))
    with pytest.raises(ConfigError):
        evaluate(scorer, TINY, exclude=("nope",))
    with pytest.raises(ConfigError):
        evaluate(scorer, TINY, ks=(7,))
    with pytest.raises(ConfigError):
        evaluate(scorer, TINY, ks=(1,), metrics=("auc",))
    with pytest.raises(ValueError):
        evaluate(lambda u: torch.zeros(len(u), 5), TINY, ks=(1,))
    with pytest.raises(TypeError):
        evaluate(object(), TINY, ks=(1,))


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
def test_cuda_matches_cpu():
    split = random_split(5)
    model = BPRMF(embedding_dim=8).build(split, generator=torch.Generator().manual_seed(0))
    cpu = evaluate(model, split, ks=(1, 3, 5), per_user=True)
    gpu = evaluate(model.to("cuda"), split, ks=(1, 3, 5), per_user=True)
    for name in cpu.per_user:
        np.testing.assert_allclose(gpu.per_user[name], cpu.per_user[name], rtol=1e-6)
