"""The serving commands end to end: export, recommend (single and batch), profile, serve."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest

from recpress.cli import main


def run_cli(args: list[str], capsys) -> tuple[int, str, str]:
    try:
        main([str(a) for a in args])
        code = 0
    except SystemExit as exc:
        code = int(exc.code or 0)
    out, err = capsys.readouterr()
    return code, out, err


def test_export_recommend_profile(ml_run: Path, tmp_path: Path, capsys) -> None:
    art = tmp_path / "art"
    code, out, _ = run_cli(["export", ml_run, "--out", art, "--format", "onnx",
                            "--quantise", "int8"], capsys)  # fmt: skip
    assert code == 0 and "parity on 943 users" in out and "recall@50" in out
    assert json.loads((art / "export_report.json").read_text())["parity"]["ok"]

    code, out, _ = run_cli(["recommend", art, "--user", "1", "--user", "424242", "-k", "5"], capsys)
    rows = [json.loads(line) for line in out.splitlines()]
    assert code == 0 and [r["user"] for r in rows] == [1, 424242]
    assert [r["fallback"] for r in rows] == [False, True] and len(rows[0]["items"]) == 5

    users = tmp_path / "users.txt"
    users.write_text("user\n1\n2\n\n3\n")
    for suffix in ("csv", "jsonl"):
        dest = tmp_path / f"recs.{suffix}"
        code, _, _ = run_cli(["recommend", art, "--users-file", users, "-k", "4", "--out", dest],
                             capsys)  # fmt: skip
        assert code == 0
        lines = dest.read_text().splitlines()
        assert len(lines) == (1 + 12 if suffix == "csv" else 3)
    assert lines and json.loads(lines[2])["user"] == 3

    code, _, err = run_cli(["recommend", art, "--user", "424242", "--unknown", "error"], capsys)
    assert code == 2 and "unknown user id(s): 424242" in err

    code, out, _ = run_cli(["profile", ml_run, "--requests", "20", "--json"], capsys)
    assert code == 0 and json.loads(out)["flops_per_user"] == 2 * 8 * 1682


@pytest.mark.parametrize(
    "args, message",
    [
        (["recommend", "{tmp}/missing", "--user", "1"], "not found"),
        (["recommend", "{art}", "-k", "0", "--user", "1"], "-k must be a positive"),
        (["recommend", "{art}"], "--user"),
        (["export", "{tmp}/not-a-run", "--out", "{tmp}/x"], "not a run directory"),
        (["serve", "{art}", "--port", "0"], "--port"),
    ],
)
def test_user_errors_exit_2(small_artifact: Path, tmp_path: Path, capsys, args, message) -> None:
    args = [a.format(tmp=tmp_path, art=small_artifact) for a in args]
    code, _, err = run_cli(args, capsys)
    assert code == 2 and message in err and "Traceback" not in err


def test_tampered_artifact_cli_error(small_artifact: Path, capsys) -> None:
    (small_artifact / "ids.npz").write_bytes(b"tampered")
    code, _, err = run_cli(["recommend", small_artifact, "--user", "u1"], capsys)
    assert code == 2 and "checksum mismatch for ids.npz" in err


def test_serve_command_in_a_subprocess(small_artifact: Path) -> None:
    httpx = pytest.importorskip("httpx")
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    cmd = [sys.executable, "-c", "from recpress.cli import main; main()", "serve",
           str(small_artifact), "--port", str(port), "--max-k", "10"]  # fmt: skip
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    proc = subprocess.Popen(cmd, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    try:
        deadline = time.monotonic() + 90  # a fresh clone compiles the kernels here
        while True:
            try:
                r = httpx.get(f"http://127.0.0.1:{port}/health", timeout=1)
                break
            except httpx.TransportError:
                assert proc.poll() is None, proc.stderr.read().decode()
                assert time.monotonic() < deadline, "server did not start"
                time.sleep(0.1)
        assert r.json()["status"] == "ok"
        r = httpx.get(f"http://127.0.0.1:{port}/recommend", params={"user": "u1", "k": 11})
        assert r.status_code == 422 and "less than or equal to 10" in r.json()["detail"]
    finally:
        proc.terminate()
        proc.wait(10)


def test_serve_threads_per_worker() -> None:
    from recpress.cli.serving import worker_threads

    assert worker_threads(1, None, 16) is None  # one worker: torch's default (all cores)
    assert worker_threads(4, None, 16) == 4  # cores shared out between the workers
    assert worker_threads(3, None, 2) == 1  # never below one
    assert worker_threads(4, 2, 16) == 2  # an explicit --threads wins
    assert worker_threads(2, None, None) == 1  # unknown core count
