"""Run directories: moved to :mod:`recpress.runs` (its one owner); these names stay importable."""

from recpress.runs import (
    CHECKPOINT,
    CONFIG,
    METRICS,
    SPLIT,
    is_finished,
    prepare_run_dir,
    read_json,
    same_config,
    write_json,
    write_text,
)

__all__ = [
    "CHECKPOINT",
    "CONFIG",
    "METRICS",
    "SPLIT",
    "is_finished",
    "prepare_run_dir",
    "read_json",
    "same_config",
    "write_json",
    "write_text",
]
