"""The `recpress` command line: thin; parses options and calls the packages.

`app` is defined in `recpress.cli.app`; each area registers its commands in its own module
(core: datasets/train/evaluate; distill; experiments: sweep/report; serving: profile/export/
recommend/serve), imported here.
"""

from __future__ import annotations

import sys

import typer
from rich.text import Text

from recpress.cli import core  # noqa: F401,E402  (registers commands)
from recpress.cli.app import app, err_console
from recpress.errors import RecPressError

for _name in ("distill", "experiments", "serving"):
    try:
        __import__(f"recpress.cli.{_name}")
    except ModuleNotFoundError as _err:  # an area not present in this build
        if _err.name != f"recpress.cli.{_name}":
            raise


def main(argv: list[str] | None = None) -> None:
    """Entry point: user errors become one message and exit code 2, never a traceback."""
    try:
        app(args=argv, standalone_mode=False)
    except RecPressError as err:
        message = Text("error: ", style="bold red") + Text(str(err))
        err_console.print(message, highlight=False, soft_wrap=True)
        sys.exit(err.exit_code)
    except (typer.Abort, KeyboardInterrupt):
        err_console.print("interrupted; rerun the same command to resume")
        sys.exit(130)
    except typer.Exit as exc:
        sys.exit(exc.exit_code)
    except Exception as exc:
        # usage errors of the bundled click (unknown option, bad type) know how to show themselves
        if hasattr(exc, "show") and hasattr(exc, "exit_code"):
            exc.show()
            sys.exit(exc.exit_code)
        raise


if __name__ == "__main__":
    main()
