"""`RecommenderContract`: the tests every registered model passes (subclass it, set the model).

A test class inherits the contract and provides the ``model_name`` fixture; the registry-wide
class in ``test_model_contract.py`` does so for every entry of ``MODELS``.
"""

from __future__ import annotations

import copy

import pytest
import torch
import yaml
from safetensors.torch import load_file, save_file

from recpress.models import (
    MODELS,
    ModelConfig,
    Recommender,
    TripletBatch,
    UserBatch,
    build_model,
)
from recpress.training import TrainConfig, Trainer
from tests.conftest import random_split

N_USERS, N_ITEMS = 30, 40

TRAIN = dict(
    epochs=2,
    batch_size=64,
    eval_every=1,
    patience=None,
    selection="fixed_epochs",
    ks=[5],
    selection_metric="recall@5",
    device="cpu",
    checkpoint_every=1,
)


def tiny_split():
    return random_split(N_USERS, N_ITEMS, per_user=5, seed=3)


def built(name: str, seed: int = 0, device: str = "cpu") -> Recommender:
    model = build_model(ModelConfig(name=name), tiny_split(), torch.Generator().manual_seed(seed))
    return model.to(device)


def a_batch(
    seed: int = 0, size: int = 16, device: str = "cpu", kind: str = "triplets"
) -> TripletBatch | UserBatch:
    """A random batch of `size` of the model's batch kind ("triplets" or "users")."""
    g = torch.Generator().manual_seed(seed)
    if kind == "users":
        return UserBatch(torch.randint(0, N_USERS, (size,), generator=g)).to(device)
    return TripletBatch(
        torch.randint(0, N_USERS, (size,), generator=g),
        torch.randint(0, N_ITEMS, (size,), generator=g),
        torch.randint(0, N_ITEMS, (size,), generator=g),
    ).to(device)


def states_close(a: dict, b: dict, exact: bool = False) -> None:
    assert a.keys() == b.keys()
    for k in a:
        x, y = a[k].detach().cpu(), b[k].detach().cpu()
        if exact:
            assert torch.equal(x, y), k
        else:
            torch.testing.assert_close(x, y, rtol=1e-5, atol=1e-6, msg=k)


class RecommenderContract:
    """Contract tests; subclasses provide the ``model_name`` fixture (a key of MODELS)."""

    def test_params_round_trip(self, model_name):
        cls = MODELS[model_name]
        params = cls().get_params()
        assert cls(**params).get_params() == params
        config = ModelConfig(name=model_name)
        assert config.params == params
        text = yaml.safe_dump(config.model_dump(mode="json"), sort_keys=False)
        assert ModelConfig.model_validate(yaml.safe_load(text)) == config
        assert config.with_params(**params) == config

    def test_unknown_param_names_the_allowed_ones(self, model_name):
        from recpress.errors import ConfigError
        from recpress.experiments.config import RunConfig, parse_config

        with pytest.raises(ConfigError, match="unknown key for model") as err:
            parse_config(RunConfig, {"model": {"name": model_name, "no_such_param": 1}})
        for key in MODELS[model_name]().get_params():
            assert key in str(err.value)

    def test_forward_is_finite_per_triple(self, model_name):
        model = built(model_name)
        twin = copy.deepcopy(model)  # the same state, random-number streams included
        batch = a_batch(kind=model.batch_kind)
        out = model(batch)
        assert out.shape == (16,) and torch.isfinite(out).all()
        torch.testing.assert_close(twin.loss(batch), out)

    def test_score_and_score_items_agree(self, model_name):
        model = built(model_name).eval()
        users = torch.tensor([0, 7, 29])
        items = torch.tensor([[0, 39, 5], [1, 2, 3], [10, 10, 20]])
        with torch.no_grad():
            full = model.score(users)
            assert full.shape == (3, N_ITEMS)
            torch.testing.assert_close(
                model.score_items(users, items), full.gather(1, items), rtol=1e-5, atol=1e-6
            )

    def test_dot_form_ranks_as_score(self, model_name):
        model = built(model_name).eval()
        form = model.dot_form() if hasattr(model, "dot_form") else None
        if form is None:
            assert not hasattr(model, "dot_form") or model.dot_form() is None
            return
        users, items = form
        assert users.shape[0] == N_USERS and items.shape[0] == N_ITEMS
        with torch.no_grad():
            gap = model.score(torch.arange(N_USERS)) - users @ items.T
        # equal up to one constant per user (CML drops −‖u‖²): the same ranking
        torch.testing.assert_close(gap, gap[:, :1].expand_as(gap), rtol=1e-5, atol=1e-5)

    def test_embeddings_match_the_flag(self, model_name):
        model = built(model_name)
        if model.has_embeddings:
            assert model.user_embeddings() is not None and model.item_embeddings() is not None
            assert model.user_embeddings().shape[0] == N_USERS
            assert model.item_embeddings().shape[0] == N_ITEMS
        else:
            assert model.user_embeddings() is None

    def test_same_seed_same_parameters(self, model_name):
        states_close(built(model_name, 5).state_dict(), built(model_name, 5).state_dict(), True)

    def test_state_dict_save_and_load(self, model_name, tmp_path):
        a, b = built(model_name, 1), built(model_name, 2)
        state = {k: v.detach().contiguous() for k, v in a.state_dict().items()}
        save_file(state, str(tmp_path / "m.safetensors"))
        b.load_state_dict(load_file(str(tmp_path / "m.safetensors")))
        users = torch.arange(N_USERS)
        with torch.no_grad():
            assert torch.equal(a.eval().score(users), b.eval().score(users))

    def test_exact_resume(self, model_name, tmp_path):
        split = tiny_split()
        straight = MODELS[model_name]()
        Trainer(TrainConfig(**TRAIN)).fit(straight, split, progress=False)
        resumed = MODELS[model_name]()
        Trainer(TrainConfig(**{**TRAIN, "epochs": 1})).fit(
            resumed, split, run_dir=tmp_path, progress=False
        )
        resumed = MODELS[model_name]()
        Trainer(TrainConfig(**TRAIN)).fit(resumed, split, run_dir=tmp_path, progress=False)
        states_close(straight.state_dict(), resumed.state_dict())

    @pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
    def test_cuda_matches_cpu(self, model_name):
        cpu, gpu = built(model_name, 4), built(model_name, 4, device="cuda")
        states_close(cpu.state_dict(), gpu.state_dict(), exact=True)  # same draws, on CPU
        torch.testing.assert_close(
            cpu(a_batch(kind=cpu.batch_kind)),
            gpu(a_batch(device="cuda", kind=gpu.batch_kind)).cpu(),
            rtol=1e-4,
            atol=1e-5,
        )
        users = torch.arange(N_USERS)
        with torch.no_grad():
            torch.testing.assert_close(
                cpu.eval().score(users), gpu.eval().score(users.cuda()).cpu(), rtol=1e-4, atol=1e-5
            )
