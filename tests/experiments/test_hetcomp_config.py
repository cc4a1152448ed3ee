"""configs/hetcomp-citeulike.yaml: six heterogeneous teachers recording trajectories, an MF student
d=20, KD and RRD from one teacher, HTD from LightGCN, HetComp from all of them."""

from __future__ import annotations

from pathlib import Path

from recpress.experiments.sweep import load_sweep_config, plan
from recpress.experiments.sweep.plan import expected_cost

CONFIG = Path(__file__).resolve().parents[2] / "configs" / "hetcomp-citeulike.yaml"
TEACHERS = ["bpr", "lightgcn", "neumf", "cml", "multvae", "cdae"]


def test_hetcomp_config_plans_six_teachers_with_trajectories_and_five_students():
    cfg = load_sweep_config(CONFIG)
    assert list(cfg.teachers) == TEACHERS
    for name, spec in cfg.teachers.items():
        assert spec.model.name == name
        kept = spec.train.keep_checkpoints
        # at least 2 checkpoints, the last one the final model
        assert len(kept) >= 2 and kept[-1] == spec.train.epochs - 1, name
        # each kept epoch is evaluated, so the report's curve passes through it
        assert all(e % spec.train.eval_every == 0 or e == kept[-1] for e in kept), name
        # the lists are recorded while the teacher trains: one sweep command makes everything
        assert spec.train.trajectory_epochs == kept, name
    runs = plan(cfg, "/s")
    # the progress bar and --jobs order cost every run, user-row teachers (no width) too
    assert all(expected_cost(r) >= 1.0 for r in runs)
    students = {r.method: r.config for r in runs if not r.is_teacher}
    assert sorted(students) == ["hetcomp", "htd", "kd", "none", "rrd"]
    assert all(
        c.model.name == "bpr" and c.model.params["embedding_dim"] == 20 for c in students.values()
    )
    assert students["none"].distill is None
    assert all(
        not c.train.trajectory_epochs and not c.train.keep_checkpoints for c in students.values()
    )
    assert students["hetcomp"].distill.teacher_of == {"hetcomp": TEACHERS}
    best = students["kd"].distill.teacher_of["kd"]
    assert students["rrd"].distill.teacher_of == {"rrd": best} and best in TEACHERS
    assert students["htd"].distill.teacher_of == {"htd": "lightgcn"}
    assert len(plan(cfg.with_grid("full"), "/s")) == 6 + 5 * 3
