"""Synthetic implicit feedback of any size: power-law item popularity and latent-factor structure.

The generative model (docs/scaling.md, section "Synthetic data"):

* item popularity ``pop_j ∝ (r_j + 1)^(−a)`` with ``r_j`` a random permutation of 0..n_items−1
  (a Zipf law of exponent ``a = popularity_exponent`` over a shuffled catalogue);
* ``dim`` latent factors: each item has a home factor ``h_j`` (uniform) and loadings
  ``w_jk = s · ε_jk + b · [k = h_j]`` with ``ε_jk ~ N(0, 1)`` (``s = affinity_scale``,
  ``b = home_boost``); factor k draws items from ``p_k(j) = softmax_j(w_jk + log pop_j)``;
* user factors ``θ_u ~ Dirichlet(concentration · 1_dim)`` (small concentration: each user leans
  on a few factors), so ``p(j | u) = Σ_k θ_uk · p_k(j)``;
* user activity: ``c_u = min_per_user + Multinomial(N − U·min_per_user, w)`` with lognormal
  weights ``w``, capped at half the catalogue (the excess is redrawn among the others), so the
  counts sum to exactly ``n_interactions``;
* each user's ``c_u`` distinct items are drawn from ``p(· | u)`` without replacement: rounds of
  draws with replacement (factor by per-user inverse CDF, item by per-factor inverse CDF, both
  ``searchsorted`` over a flattened cumulative table), keeping each user's first distinct
  draws; after ``MAX_ROUNDS`` rounds the few still missing are drawn uniformly.

Memory is O(n_interactions + dim · n_items + dim · n_users): no n_users × n_items array.
Deterministic given ``seed`` (one ``numpy.random.default_rng(seed)``, draws in a fixed order).
"""

from __future__ import annotations

import re

import numpy as np

from recpress.data.types import Interactions
from recpress.errors import ConfigError

__all__ = ["GOWALLA_SHAPE", "parse_synthetic_name", "synthetic_interactions"]

#: users, items, interactions of the Gowalla check-in release used by LightGCN (density 0.084%)
GOWALLA_SHAPE: tuple[int, int, int] = (29_858, 40_981, 1_027_370)
#: rounds of draws with replacement before the last missing items are drawn uniformly
MAX_ROUNDS = 30
_NAME = re.compile(r"synthetic:(\d+)x(\d+)x(\d+)(?::(\d+))?")


def parse_synthetic_name(name: str) -> dict[str, int] | None:
    """``"synthetic:USERSxITEMSxNNZ[:SEED]"`` -> the generator's size arguments (and seed);
    None for another name. A malformed ``synthetic:`` name is a ConfigError."""
    if not name.startswith("synthetic:"):
        return None
    m = _NAME.fullmatch(name)
    if m is None:
        raise ConfigError(
            f"dataset {name!r}: write a generated dataset as synthetic:USERSxITEMSxINTERACTIONS "
            "or synthetic:USERSxITEMSxINTERACTIONS:SEED, e.g. synthetic:30000x41000x1000000:0",
            field="dataset",
        )
    out = {"n_users": int(m[1]), "n_items": int(m[2]), "n_interactions": int(m[3])}
    if m[4] is not None:
        out["seed"] = int(m[4])
    return out


def _check(n_users: int, n_items: int, n: int, min_per_user: int) -> int:
    if n_users < 1 or n_items < 2:
        raise ConfigError(
            f"a synthetic dataset needs >= 1 user and >= 2 items, got {n_users} x {n_items}",
            field="dataset",
        )
    cap = max(1, n_items // 2)
    if min_per_user < 1 or min_per_user > cap:
        raise ConfigError(
            f"min_per_user must be in 1..{cap} (half of {n_items} items), got {min_per_user}",
            field="dataset",
        )
    if not n_users * min_per_user <= n <= n_users * cap:
        raise ConfigError(
            f"{n:,} interactions do not fit {n_users:,} users with {min_per_user}..{cap} items "
            f"each; use between {n_users * min_per_user:,} and {n_users * cap:,}",
            field="dataset",
        )
    return cap


def _user_counts(
    rng: np.random.Generator, n_users: int, n: int, low: int, cap: int, sigma: float
) -> np.ndarray:
    """Per-user counts in [low, cap] summing to n (lognormal activity, excess redrawn)."""
    weight = rng.lognormal(0.0, sigma, n_users)
    counts = low + rng.multinomial(n - low * n_users, weight / weight.sum()).astype(np.int64)
    while True:
        excess = int(np.maximum(counts - cap, 0).sum())
        if excess == 0:
            return counts
        counts = np.minimum(counts, cap)
        room = weight * (counts < cap)
        counts += rng.multinomial(excess, room / room.sum())


def _row_inverse_cdf(cum: np.ndarray, rows: np.ndarray, u: np.ndarray) -> np.ndarray:
    """Column drawn in each of `rows` of a row-stochastic table given by its row cumsums
    `cum` (R, C), for uniforms `u`: one searchsorted over the rows laid end to end."""
    n_cols = cum.shape[1]
    flat = (cum + np.arange(cum.shape[0])[:, None]).ravel()
    pos = np.searchsorted(flat, rows + u, side="right")
    return np.minimum(pos - rows * n_cols, n_cols - 1)


def _cumsum_rows(p: np.ndarray) -> np.ndarray:
    cum = np.cumsum(p, axis=1)
    cum /= cum[:, -1:]
    return cum


def synthetic_interactions(
    n_users: int,
    n_items: int,
    n_interactions: int,
    dim: int = 16,
    popularity_exponent: float = 0.8,
    affinity_scale: float = 1.0,
    home_boost: float = 6.0,
    concentration: float = 0.05,
    activity_sigma: float = 1.0,
    min_per_user: int = 5,
    seed: int = 0,
    name: str = "",
) -> Interactions:
    """Generate `n_interactions` distinct (user, item) pairs (see the module docstring).

    Args:
        n_users, n_items: id space sizes; every user gets >= `min_per_user` items (items may
            stay unused).
        n_interactions: exact number of pairs.
        dim: number of latent factors.
        popularity_exponent: Zipf exponent a of the item popularity (0 = uniform).
        affinity_scale: s, the standard deviation of the item loadings.
        home_boost: b, added to each item's loading on its home factor.
        concentration: Dirichlet concentration of the user factors (smaller: fewer factors
            per user, stronger structure).
        activity_sigma: log-standard deviation of the user activity weights.
        seed: the generator's seed.
        name: dataset name (default ``synthetic:UxIxN:seed``).

    Returns:
        Interactions with ids 0..n-1 (original ids = internal ids), pairs grouped by user.
    """
    n_users, n_items, n = int(n_users), int(n_items), int(n_interactions)
    cap = _check(n_users, n_items, n, int(min_per_user))
    rng = np.random.default_rng(seed)
    rank = rng.permutation(n_items)
    log_pop = -float(popularity_exponent) * np.log1p(rank)
    loadings = float(affinity_scale) * rng.standard_normal((dim, n_items))
    home = rng.integers(0, dim, n_items)
    loadings[home, np.arange(n_items)] += float(home_boost)
    logits = loadings + log_pop
    logits -= logits.max(axis=1, keepdims=True)
    item_cum = _cumsum_rows(np.exp(logits))  # (dim, n_items)
    del loadings, logits
    theta = rng.dirichlet(np.full(dim, float(concentration)), size=n_users)
    user_cum = _cumsum_rows(theta)  # (n_users, dim)
    counts = _user_counts(rng, n_users, n, int(min_per_user), cap, float(activity_sigma))

    keys = np.empty(0, dtype=np.int64)  # accepted pairs user * n_items + item, in draw order
    have = np.zeros(n_users, dtype=np.int64)
    round_ = 0
    while (need := counts - have).any():
        # 25% more draws than missing (at least 2), fewer duplicates to top up later
        draws = np.where(need > 0, need + np.maximum(need // 4, 2), 0)
        users = np.repeat(np.arange(n_users, dtype=np.int64), draws)
        if round_ < MAX_ROUNDS:
            factor = _row_inverse_cdf(user_cum, users, rng.random(len(users)))
            items = _row_inverse_cdf(item_cum, factor, rng.random(len(users)))
        else:  # the long tail of a few heavy users: uniform draws have full support
            items = rng.integers(0, n_items, len(users))
        cand = np.concatenate([keys, users * n_items + items])
        _, first = np.unique(cand, return_index=True)
        first.sort()  # distinct pairs in draw order (accepted ones come first)
        cand = cand[first]
        owner = cand // n_items
        order = np.argsort(owner, kind="stable")
        owner_sorted = owner[order]
        start = np.searchsorted(owner_sorted, np.arange(n_users))
        within = np.empty(len(cand), dtype=np.int64)
        within[order] = np.arange(len(cand)) - start[owner_sorted]
        keys = cand[within < counts[owner]]
        have = np.bincount(keys // n_items, minlength=n_users)
        round_ += 1
    keys.sort()
    users, items = np.divmod(keys, n_items)
    if name == "":
        name = f"synthetic:{n_users}x{n_items}x{n}:{seed}"
    return Interactions(
        users=users.astype(np.int64),
        items=items.astype(np.int64),
        n_users=n_users,
        n_items=n_items,
        user_ids=np.arange(n_users, dtype=np.int64),
        item_ids=np.arange(n_items, dtype=np.int64),
        name=name,
    )
