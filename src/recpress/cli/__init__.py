"""The `recpress` command line: thin; parses options and calls the packages.

`app` is defined in `recpress.cli.app`; each area registers its commands in its own module
(core: datasets/train/evaluate; distill; experiments: sweep/report; serving: profile/export/
recommend/serve), imported here.
"""

from __future__ import annotations

import signal
import sys
import threading

import typer
from rich.text import Text

from recpress.cli import core  # noqa: F401,E402  (registers commands)
from recpress.cli.app import app, err_console
from recpress.errors import RecPressError

for _name in ("distill", "experiments", "serving", "compress", "trajectories"):
    try:
        __import__(f"recpress.cli.{_name}")
    except ModuleNotFoundError as _err:  # an area not present in this build
        if _err.name != f"recpress.cli.{_name}":
            raise


class Terminated(KeyboardInterrupt):
    """SIGTERM received: unwinds like Ctrl-C (open work is stopped, saved state is kept)."""


#: exit code of a command stopped by Ctrl-C (typer returns it in place of KeyboardInterrupt)
INTERRUPTED = 128 + signal.SIGINT
#: exit code of a command stopped by SIGTERM
TERMINATED = 128 + signal.SIGTERM


def main(argv: list[str] | None = None) -> None:
    """Entry point: user errors become one message and exit code 2, never a traceback.

    Ctrl-C exits with 130 and SIGTERM with 143, both after the same clean-up (a sweep stops its
    worker processes) and with one line saying that the same command resumes.
    """
    terminated = []

    def on_sigterm(signum: int, frame: object) -> None:
        terminated.append(signum)
        raise Terminated()

    in_main_thread = threading.current_thread() is threading.main_thread()
    previous = signal.signal(signal.SIGTERM, on_sigterm) if in_main_thread else None
    try:
        # standalone_mode=False: typer returns the exit code (130 for KeyboardInterrupt)
        code = app(args=argv, standalone_mode=False)
    except RecPressError as err:
        message = Text("error: ", style="bold red") + Text(str(err))
        err_console.print(message, highlight=False, soft_wrap=True)
        sys.exit(err.exit_code)
    except (typer.Abort, KeyboardInterrupt):
        code = INTERRUPTED
    except Exception as exc:
        # usage errors of the bundled click (unknown option, bad type) know how to show themselves
        if hasattr(exc, "show") and hasattr(exc, "exit_code"):
            exc.show()
            sys.exit(exc.exit_code)
        raise
    finally:
        if in_main_thread:
            signal.signal(signal.SIGTERM, previous)
    if code == INTERRUPTED:
        err_console.print("interrupted; rerun the same command to resume")
        sys.exit(TERMINATED if terminated else INTERRUPTED)
    if isinstance(code, int) and code:
        sys.exit(code)


if __name__ == "__main__":
    main()
