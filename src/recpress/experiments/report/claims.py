"""Claims of a reference experiment checked on a sweep's table (`experiments.reference`).

Each check returns ``{"claim", "verdict", "evidence"}``; the verdict is ``holds``, ``does not
hold`` or ``undecided``. Missing runs leave a claim undecided; with one seed the parts that need
a spread (margins, seed noise) are undecided, and the claim fails if a part that one seed can
test (an order) fails.
"""

from __future__ import annotations

import math

from recpress.experiments.reference import (
    GapCollapseClaim,
    OrderMarginClaim,
    Reference,
    load_reference,
)
from recpress.experiments.sweep import SweepConfig


def teacher_dim(cfg: SweepConfig) -> int:
    """The teacher's width (φ = student dim / teacher dim)."""
    model = cfg.main_teacher().model
    dim = getattr(model, "embedding_dim", None)
    if dim is None and hasattr(model, "params"):
        dim = model.params.get("embedding_dim")
    return int(dim)


def _pooled_std(a: dict, b: dict) -> float:
    """sqrt((std_a² + std_b²) / 2); nan unless both cells have two seeds or more."""
    if a["n"] < 2 or b["n"] < 2:
        return float("nan")
    return math.sqrt((a["std"] ** 2 + b["std"] ** 2) / 2)


def _per_seed(cell: dict) -> str:
    """ " (a / b / c)": the per-seed values behind a mean."""
    values = cell.get("values") or []
    return " (" + " / ".join(f"{v:.4f}" for v in values) + ")" if len(values) > 1 else ""


def _fmt_spread(pooled: float) -> str:
    return "n/a (needs 2+ seeds of each)" if math.isnan(pooled) else f"{2 * pooled:.4f}"


def _label(method: str) -> str:
    return "student" if method == "none" else method.upper()


def _verdict(missing: bool, failed: bool, unknown: bool) -> str:
    if missing:
        return "undecided"
    if failed:
        return "does not hold"
    return "undecided" if unknown else "holds"


def _order_margin(c: OrderMarginClaim, cell, dims: list[int], t_dim: int, sub) -> dict:
    names = c.order
    small = [d for d in dims if c.phi.contains(d / t_dim)]
    lines, failed, unknown, missing = [], False, False, not small
    for d in small:
        cells = [cell(d, sub(m)) for m in names]
        if not all(cells):
            missing = True
            lines.append(f"d={d}: runs missing")
            continue
        first, second = cells[0], cells[1]
        pooled = _pooled_std(first, second)
        gap = first["mean"] - second["mean"]
        order = all(a["mean"] > b["mean"] for a, b in zip(cells, cells[1:], strict=False))
        margin = gap > c.margin * pooled if not math.isnan(pooled) else False
        failed |= not order or (not margin and not math.isnan(pooled))
        unknown |= math.isnan(pooled)
        vs = " vs ".join(
            f"{_label(m)} {x['mean']:.4f}{_per_seed(x)}" for m, x in zip(names, cells, strict=True)
        )
        lines.append(
            f"d={d} (φ={d / t_dim:.2f}): {vs}; {_label(names[0])}−{_label(names[1])} = "
            f"{gap:+.4f}, {c.margin:g}×pooled std = {_fmt_spread(pooled * c.margin / 2)}"
            f" → order {'kept' if order else 'broken'}, margin "
            + ("undecided" if math.isnan(pooled) else "met" if margin else "not met")
        )
    return {"claim": c.text, "verdict": _verdict(missing, failed, unknown), "evidence": lines}


def _gap_collapse(c: GapCollapseClaim, cell, dims: list[int], t_dim: int, sub) -> dict:
    a, b = c.gap
    small = [d for d in dims if c.small_phi.contains(d / t_dim)]
    large = [d for d in dims if c.large_phi.contains(d / t_dim)]
    deltas, lines, missing, unknown = {}, [], not (small and large), False
    for d in small + large:
        h, f = cell(d, sub(a)), cell(d, sub(b))
        if not (h and f):
            missing = True
            lines.append(f"d={d}: runs missing")
            continue
        pooled = _pooled_std(h, f)
        if math.isnan(pooled) and d in large:
            unknown = True
            lines.append(f"d={d}: one seed only; the seed-noise test needs two or more")
        deltas[d] = (h["mean"] - f["mean"], pooled)
    failed = False
    if not missing:
        small_min = min(deltas[d][0] for d in small)
        large_max = max(deltas[d][0] for d in large)
        collapse = large_max < small_min
        failed |= not collapse
        lines.append(
            f"Δ = {_label(a)} − {_label(b)}: "
            + ", ".join(f"d={d}: {deltas[d][0]:+.4f}" for d in small + large)
            + f"; max Δ(large φ) = {large_max:+.4f} {'<' if collapse else '≥'} min Δ(small φ) = "
            f"{small_min:+.4f}"
        )
        for d in large:
            failed |= _gap_at_large(c, cell, d, deltas[d], sub, lines)
    return {
        "claim": c.text,
        "verdict": _verdict(missing, failed, unknown),
        "evidence": lines,
    }


def _gap_at_large(c: GapCollapseClaim, cell, d: int, delta_pooled, sub, lines) -> bool:
    """Evidence line of one large-φ dim; True if a part that can be tested fails."""
    (a, b), delta, pooled = c.gap, *delta_pooled
    h, f = cell(d, sub(a)), cell(d, sub(b))
    hi, lo = c.floor or (b, b)
    fa, fb = cell(d, sub(hi)), cell(d, sub(lo))
    floor_ok = c.floor is None or (bool(fb) and bool(fa) and fa["mean"] >= fb["mean"])
    unknown = math.isnan(pooled)
    noise = not unknown and abs(delta) <= c.noise * pooled
    why = ""
    if not unknown and not noise and delta < 0:
        why = (
            f" ({_label(b)} ahead of {_label(a)} beyond seed noise: the claim's direction, but "
            "the test asks for |Δ| within noise)"
        )
    elif not unknown and not noise:
        why = f" ({_label(a)} still ahead beyond seed noise: its advantage has not vanished here)"
    floor_text = ""
    if c.floor is not None:
        floor_text = (
            f" {'≥' if floor_ok else '<'} {_label(lo)} {fb['mean'] if fb else float('nan'):.4f}"
        )
    lines.append(
        f"d={d}: {_label(a)} {h['mean']:.4f}{_per_seed(h)}, "
        f"{_label(b)} {f['mean']:.4f}{_per_seed(f)}{floor_text}; |Δ| = {abs(delta):.4f} "
        f"{'≤' if noise else '>'} {c.noise:g}×pooled std {_fmt_spread(pooled * c.noise / 2)}{why}"
    )
    return not floor_ok or (not unknown and not noise)


def claims_reference(cfg: SweepConfig) -> Reference | None:
    """The reference whose claims the sweep's report checks (None: no claims)."""
    source = cfg.report.claims_source()
    return load_reference(source) if source else None


def claim_arms(cfg: SweepConfig, reference: Reference) -> list[str | None]:
    """Grid methods the claims are checked for: the arms of ``arms_of`` ([None] without)."""
    base = reference.claims.arms_of
    if base is None:
        return [None]
    s = cfg.students
    return [m for m in s.methods if m == base or (m in s.arms and s.arms[m].method == base)]


def check_claims(
    cfg: SweepConfig,
    table: dict,
    arm: str | None,
    sel: str,
    reference: Reference | None = None,
) -> list[dict]:
    """The reference's claims under one selection; ``arm`` stands for its ``arms_of`` method.

    `reference` defaults to the sweep's claims reference (`claims_reference`)."""
    reference = reference or claims_reference(cfg)
    if reference is None:
        return []
    base = reference.claims.arms_of
    t_dim = teacher_dim(cfg)
    dims = sorted({d for d, _ in table if d is not None})

    def cell(dim: int, method: str) -> dict | None:
        return table.get((dim, method), {}).get(sel)

    def sub(method: str) -> str:
        return arm if arm is not None and method == base else method

    out = []
    for claim in reference.claims.rules:
        rule = _order_margin if isinstance(claim, OrderMarginClaim) else _gap_collapse
        out.append(rule(claim, cell, dims, t_dim, sub))
    return out
