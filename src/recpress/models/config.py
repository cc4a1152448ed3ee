"""`ModelConfig`: a model's name and its own hyperparameters, checked against its constructor."""

from __future__ import annotations

import functools
import inspect
import typing
from typing import Any

from pydantic import (
    BaseModel,
    ConfigDict,
    ModelWrapValidatorHandler,
    ValidationError,
    create_model,
    model_validator,
)
from pydantic_core import InitErrorDetails, PydanticCustomError

from recpress.models.base import Recommender
from recpress.models.registry import model_class

DEFAULT_MODEL = "bpr"


def constructor_params(cls: type[Recommender]) -> dict[str, inspect.Parameter]:
    """The hyperparameters of a model class: its constructor's named arguments, in order."""
    return {
        p.name: p
        for p in inspect.signature(cls.__init__).parameters.values()
        if p.name != "self" and p.kind not in (p.VAR_POSITIONAL, p.VAR_KEYWORD)
    }


def param_defaults(cls: type[Recommender]) -> dict[str, Any]:
    """``{name: default}`` of a model's hyperparameters (``None`` for a required one)."""
    return {
        n: None if p.default is inspect.Parameter.empty else p.default
        for n, p in constructor_params(cls).items()
    }


@functools.cache
def _params_schema(cls: type[Recommender]) -> type[BaseModel]:
    """A pydantic model of the constructor's arguments (their annotations are the checks)."""
    try:
        hints = typing.get_type_hints(cls.__init__, include_extras=True)
    except Exception:  # unresolvable annotations: accept any value
        hints = {}
    fields: dict[str, Any] = {}
    for n, p in constructor_params(cls).items():
        default = ... if p.default is inspect.Parameter.empty else p.default
        fields[n] = (hints.get(n, Any), default)
    return create_model(
        f"{cls.__name__}Params", __config__=ConfigDict(extra="forbid", strict=False), **fields
    )


class ModelConfig(BaseModel):
    """Which base model (``name``, a key of ``recpress.models.MODELS``) and its hyperparameters.

    The hyperparameters are flat keys next to ``name`` (``{name: bpr, embedding_dim: 200,
    init_std: 0.01}``), validated against the model's constructor: an unknown key names the
    model's parameters and defaults; missing keys take the constructor's defaults. Dumped, the
    config holds ``name`` then every constructor parameter in constructor order.
    """

    model_config = ConfigDict(extra="allow")

    name: str = DEFAULT_MODEL

    @model_validator(mode="wrap")
    @classmethod
    def _check_params(cls, data: Any, handler: ModelWrapValidatorHandler[ModelConfig]):
        if isinstance(data, ModelConfig) or not isinstance(data, dict):
            return handler(data)
        given = dict(data)
        name = given.pop("name", DEFAULT_MODEL)
        if not isinstance(name, str):
            return handler(data)  # pydantic reports the bad type of `name`
        model = model_class(name)  # ConfigError listing the known models
        allowed = param_defaults(model)
        unknown = [k for k in given if k not in allowed]
        if unknown:
            listing = ", ".join(f"{k}={v!r}" for k, v in allowed.items()) or "(none)"
            raise ValidationError.from_exception_data(
                cls.__name__,
                [
                    InitErrorDetails(
                        type=PydanticCustomError(
                            "unknown_model_param",
                            "unknown key for model {model}; its parameters: {allowed}",
                            {"model": repr(name), "allowed": listing},
                        ),
                        loc=(k,),
                        input=given[k],
                    )
                    for k in unknown
                ],
            )
        params = _params_schema(model).model_validate(given).model_dump()
        return handler({"name": name, **params})

    @property
    def params(self) -> dict[str, Any]:
        """The hyperparameters (every constructor argument), without ``name``."""
        return dict(self.model_extra or {})

    @property
    def model_class(self) -> type[Recommender]:
        return model_class(self.name)

    def with_params(self, **params: Any) -> ModelConfig:
        """A validated copy with some hyperparameters replaced."""
        return ModelConfig.model_validate({"name": self.name, **self.params, **params})
