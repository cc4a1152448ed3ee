"""The typer application object and shared CLI helpers."""

from __future__ import annotations

from typing import Annotated

import typer
from rich.console import Console

from recpress.errors import ConfigError

app = typer.Typer(
    name="recpress",
    help="Knowledge distillation for recommender systems: train teachers, distil small "
    "students, measure accuracy and cost, export and serve.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
    # help texts as markdown, not rich markup: "recpress[serve]" must stay whole
    rich_markup_mode="markdown",
)
# output is text, not rich markup: ids, paths and messages with brackets print as they are
console = Console(markup=False)
err_console = Console(stderr=True, markup=False)

SetOption = Annotated[
    list[str] | None,
    typer.Option("--set", help="Override any config value: section.key=value (repeatable)."),
]


def parse_ks(text: str) -> list[int]:
    """Parse "10,20,50" into [10, 20, 50]."""
    try:
        ks = [int(k) for k in text.split(",") if k.strip()]
    except ValueError:
        raise ConfigError(
            f"--ks expects comma-separated integers like 10,20,50, got {text!r}"
        ) from None
    if not ks or any(k <= 0 for k in ks):
        raise ConfigError(f"--ks expects positive integers, got {text!r}")
    return ks
