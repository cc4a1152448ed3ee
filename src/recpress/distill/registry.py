"""Registry of distillers and the parser of composed methods such as ``de+rrd``.

Composition: ``make_distillers("de+rrd", weights, params)`` returns
``[(DE(...), λ_DE), (RRD(...), λ_RRD)]``; the Trainer adds ``Σ_m λ_m · loss_m`` to the base
loss. Each method's ``loss`` is already reduced with its own ``reduction`` parameter ("sum" by
default: the references sum over the batch's KD terms, so the papers' λ keep their meaning when
the base loss is also summed, ``train.reduction_base = "sum"``; see docs/methods.md §1.5).
"""

from __future__ import annotations

import inspect
import math
from collections.abc import Mapping
from typing import Any

from recpress.distill.base import Distiller
from recpress.errors import ConfigError

DISTILLERS: dict[str, type[Distiller]] = {}

#: the method name meaning "no distillation" (a plain student trained the same way)
NO_KD = "none"


def register(cls: type[Distiller]) -> type[Distiller]:
    """Class decorator: make a distiller available by its ``name``."""
    if not cls.name:
        raise ValueError(f"{cls.__name__} has no name")
    DISTILLERS[cls.name] = cls
    return cls


def method_params(cls: type[Distiller]) -> dict[str, Any]:
    """Constructor hyperparameters of a distiller and their defaults."""
    out: dict[str, Any] = {}
    for p in inspect.signature(cls.__init__).parameters.values():
        if p.name == "self" or p.kind in (p.VAR_POSITIONAL, p.VAR_KEYWORD):
            continue
        out[p.name] = None if p.default is inspect.Parameter.empty else p.default
    return out


def parse_method(method: str) -> list[str]:
    """ "de+rrd" → ["de", "rrd"]; "none" → []. Unknown names raise ConfigError listing the known."""
    text = str(method).strip().lower()
    if text in ("", NO_KD):
        return []
    names = [p.strip() for p in text.split("+")]
    known = sorted(DISTILLERS)
    for n in names:
        if n not in DISTILLERS:
            raise ConfigError(
                f"unknown distillation method {n!r}; known: {', '.join(known + [NO_KD])} "
                "(compose with +, e.g. de+rrd)",
                field="distill.method",
            )
    if len(set(names)) != len(names):
        raise ConfigError(f"method {method!r} names a method twice", field="distill.method")
    return names


def check_weight(name: str, value: Any) -> float:
    try:
        w = float(value)
    except (TypeError, ValueError):
        raise ConfigError(
            f"KD weight of {name!r} must be a finite number, got {value!r}",
            field=f"distill.weights.{name}",
        ) from None
    if not math.isfinite(w) or isinstance(value, bool):
        raise ConfigError(
            f"KD weight of {name!r} must be a finite number, got {value!r}",
            field=f"distill.weights.{name}",
        )
    return w


def make_distillers(
    method: str,
    weights: Mapping[str, float] | None = None,
    params: Mapping[str, Mapping[str, Any]] | None = None,
) -> list[tuple[Distiller, float]]:
    """Build the weighted distillers of a (composed) method; every bad input is a ConfigError."""
    names = parse_method(method)
    weights = dict(weights or {})
    params = {k: dict(v or {}) for k, v in (params or {}).items()}
    for section, given in (("weights", weights), ("params", params)):
        extra = sorted(set(given) - set(names))
        if extra:
            raise ConfigError(
                f"{section} given for {', '.join(extra)}, which method {method!r} does not use "
                f"(its parts: {', '.join(names) or 'none'})",
                field=f"distill.{section}",
            )
    out: list[tuple[Distiller, float]] = []
    for n in names:
        cls = DISTILLERS[n]
        allowed = method_params(cls)
        given = params.get(n, {})
        if not isinstance(given, Mapping):
            raise ConfigError(f"params of {n!r} must be a mapping", field=f"distill.params.{n}")
        bad = sorted(set(given) - set(allowed))
        if bad:
            raise ConfigError(
                f"unknown parameter(s) {', '.join(bad)} for method {n!r}; its parameters: "
                f"{', '.join(f'{k}={v!r}' for k, v in allowed.items()) or '(none)'}",
                field=f"distill.params.{n}",
            )
        try:
            d = cls(**given)
        except ConfigError:
            raise
        except (TypeError, ValueError) as err:
            raise ConfigError(
                f"bad parameter for method {n!r}: {err}", field=f"distill.params.{n}"
            ) from None
        w = check_weight(n, weights.get(n, cls.default_weight))
        out.append((d, w))
    return out


def describe(distillers: list[tuple[Distiller, float]]) -> dict[str, Any]:
    """What was actually used: method, weights and params (defaults included), reduction."""
    return {
        "method": "+".join(d.name for d, _ in distillers) or NO_KD,
        "weights": {d.name: w for d, w in distillers},
        "params": {d.name: d.get_params() for d, _ in distillers},
        "reduction": {d.name: getattr(d, "reduction", "sum") for d, _ in distillers},
    }


def prepare_distillers(
    distillers: list[tuple[Distiller, float]],
    knowledge,
    split,
    student=None,
    seed: int = 0,
) -> None:
    """Check what each method needs from the teacher, bind the student, then ``prepare``.

    `knowledge` is one `Knowledge` for every distiller, or a list of one per distiller (each
    method learning from its own teacher). A multi-teacher distiller (``multi_teacher``) takes
    a list of Knowledge as its entry (a single one is its only teacher) and is prepared with
    ``teacher=None``.

    Distillers that create auxiliary modules sized by the student implement
    ``bind_student(student, seed)``; it is called before ``prepare``.
    """
    per = list(knowledge) if isinstance(knowledge, (list, tuple)) else [knowledge] * len(distillers)
    for pair, k in zip(distillers, per, strict=True):
        check_requires([pair], k)
    for i, ((d, _), k) in enumerate(zip(distillers, per, strict=True)):
        if student is not None and hasattr(d, "bind_student"):
            d.bind_student(student, seed=seed + 7919 * (i + 1))
        if getattr(d, "multi_teacher", False):
            d.prepare(None, split, list(k) if isinstance(k, (list, tuple)) else [k])
        else:
            d.prepare(k.teacher, split, k)


def check_requires(distillers: list[tuple[Distiller, float]], knowledge) -> None:
    """ConfigError naming the method when the teacher cannot give what it needs (`knowledge`:
    one teacher, or a list of teachers every method must be able to use)."""
    if isinstance(knowledge, (list, tuple)):
        for k in knowledge:
            check_requires(distillers, k)
        return
    for d, _ in distillers:
        missing = sorted(set(d.requires) - set(knowledge.provides))
        if missing:
            raise ConfigError(
                f"method {d.name!r} needs teacher {' and '.join(missing)}, but the teacher given "
                f"({knowledge.source or 'lists'}) provides only "
                f"{', '.join(sorted(knowledge.provides))}; use a teacher run directory or an "
                ".npz with user_embeddings and item_embeddings",
                field="distill.teacher",
            )


def check_student(distillers: list[tuple[Distiller, float]], student) -> None:
    """ConfigError when a method needs student embeddings and the student is score-only.

    A method needs them when its ``requires`` holds "embeddings" (it matches or aligns user and
    item representations, e.g. DE, FTD, HTD) or its ``student_requires`` does. Every method
    needs a student trained on triplet batches (``batch_kind == "triplets"``).
    """
    kind = getattr(student, "batch_kind", "triplets")
    if distillers and kind != "triplets":
        raise ConfigError(
            f"the student model {student.name!r} trains on batches of whole user rows "
            f"(batch_kind = {kind!r}), but the distillation losses are defined on "
            "(user, positive, negative) triplet batches; distil into a triplet model (bpr, "
            "lightgcn, neumf, cml) and use this model as a teacher instead",
            field="model.name",
        )
    if getattr(student, "has_embeddings", True):
        return
    for d, _ in distillers:
        if "embeddings" in d.requires or "embeddings" in d.student_requires:
            raise ConfigError(
                f"method {d.name!r} works on user/item embeddings (it matches representations "
                f"or their topology), but the student model {student.name!r} is score-only "
                "(has_embeddings = False); use a student with embeddings or a response-based "
                "method",
                field="distill.method",
            )
