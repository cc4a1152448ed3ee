"""Config parsing shared by every stage: YAML files and pydantic models, one error per bad field."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import yaml
from pydantic import BaseModel, ValidationError

from recpress.errors import ConfigError


def validation_message(err: ValidationError, source: str = "config") -> str:
    """Turn a pydantic error into one line per bad field: `field: problem (allowed ...)`."""
    lines = []
    for e in err.errors():
        where = ".".join(str(x) for x in e["loc"]) or "(root)"
        msg = e["msg"]
        if e["type"] == "extra_forbidden":
            msg = "unknown key"
        if e["type"] == "literal_error" and "expected" in e.get("ctx", {}):
            msg = f"must be one of {e['ctx']['expected']}"
        lines.append(f"{where}: {msg}")
    return f"invalid {source}: " + "; ".join(lines)


def parse_config(cls: type[BaseModel], data: dict[str, Any], source: str = "config"):
    """Validate `data` into `cls`, raising ConfigError that names each bad field."""
    try:
        return cls.model_validate(data)
    except ValidationError as err:
        raise ConfigError(validation_message(err, source)) from None


def load_yaml(path: str | Path) -> dict[str, Any]:
    """Read a YAML mapping; errors name the file."""
    p = Path(path)
    if not p.is_file():
        raise ConfigError(f"config file {p} does not exist")
    try:
        data = yaml.safe_load(p.read_text())
    except yaml.YAMLError as err:
        raise ConfigError(f"{p}: not valid YAML ({err})") from None
    if data is None:
        data = {}
    if not isinstance(data, dict):
        raise ConfigError(f"{p}: the top level must be a mapping of sections")
    return data
