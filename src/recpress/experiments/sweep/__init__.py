"""Sweeps: one teacher, then students over dims × methods × seeds, one run directory each.

`schema` (the config), `plan` (runs, paths, run configs, the sweep directory) and `runner`
(training the plan); the names below are the public interface.
"""

from recpress.experiments.sweep.plan import (
    RunSpec,
    expected_cost,
    grid_change,
    parallel_order,
    plan,
    prepare_sweep_dir,
    read_sweep,
    run_path,
    student_run_config,
    teacher_path,
)
from recpress.experiments.sweep.runner import (
    PARENT_POLL_SECONDS,
    _SweepProgress,
    profile_once,
    run_sweep,
)
from recpress.experiments.sweep.schema import (
    RUNS_DIR,
    SELECTIONS,
    SWEEP_FILE,
    TEACHER_DIR,
    TEACHERS_DIR,
    ArmSpec,
    GridSpec,
    ReportSpec,
    StudentsSpec,
    SweepConfig,
    TeacherSpec,
    load_sweep_config,
    method_settings,
)

__all__ = [
    "PARENT_POLL_SECONDS",
    "RUNS_DIR",
    "SELECTIONS",
    "SWEEP_FILE",
    "TEACHER_DIR",
    "TEACHERS_DIR",
    "ArmSpec",
    "GridSpec",
    "ReportSpec",
    "RunSpec",
    "StudentsSpec",
    "SweepConfig",
    "TeacherSpec",
    "_SweepProgress",
    "expected_cost",
    "grid_change",
    "load_sweep_config",
    "method_settings",
    "parallel_order",
    "plan",
    "prepare_sweep_dir",
    "profile_once",
    "read_sweep",
    "run_path",
    "run_sweep",
    "student_run_config",
    "teacher_path",
]
