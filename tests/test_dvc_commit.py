"""pipeline.dvc_commit: DVC's `commit -f` for a batch of stages in one pass (issue 21), through the real
dvc: the same dvc.lock and cache as the CLI, a clean `dvc status`, and an unknown stage refused."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

from pipeline.spec import environment

ROOT = Path(__file__).resolve().parents[1]
DVC = str(Path(sys.executable).with_name("dvc"))
DVC_YAML = """stages:
  make:
    matrix:
      name: [a, b, c]
      size: [1, 2]
    cmd: python -c "open('out/${item.name}-${item.size}.txt', 'w').write('x')"
    deps:
      - src.txt
    outs:
      - out/${item.name}-${item.size}.txt
"""
STAGES = ["make@a-1", "make@b-2", "make@c-1"]


def _env():
    return {**os.environ, **environment.NO_TELEMETRY, "PYTHONPATH": str(ROOT)}


def _repo(d: Path) -> Path:
    d.mkdir()
    subprocess.run([DVC, "init", "--no-scm", "-q"], cwd=d, check=True, env=_env())
    (d / "dvc.yaml").write_text(DVC_YAML)
    (d / "src.txt").write_text("source")
    (d / "out").mkdir()
    for name in ("a-1", "b-2", "c-1"):  # the outputs, made outside DVC (as the grid's workers do)
        (d / "out" / f"{name}.txt").write_text("x" * int(name[-1]))
    return d


def _cache(repo: Path) -> dict[str, bytes]:
    files = (repo / ".dvc" / "cache").rglob("*")
    return {str(p.relative_to(repo)): p.read_bytes() for p in files if p.is_file()}


def test_one_pass_commit_writes_what_dvc_commit_writes(tmp_path):
    cli, batch = _repo(tmp_path / "cli"), _repo(tmp_path / "batch")
    subprocess.run([DVC, "commit", "-f", "-q", *STAGES], cwd=cli, check=True, env=_env())
    proc = subprocess.run(
        [sys.executable, "-m", "pipeline.dvc_commit", *STAGES], cwd=batch, env=_env(), capture_output=True, text=True
    )
    assert proc.returncode == 0, proc.stderr
    assert (batch / "dvc.lock").read_text() == (cli / "dvc.lock").read_text()
    assert all(f"make@{n}" in (batch / "dvc.lock").read_text() for n in ("a-1", "b-2", "c-1"))
    cached = _cache(batch)
    assert cached == _cache(cli) and {b"x", b"xx"} <= set(cached.values())  # outputs and run cache as the CLI
    status = subprocess.run([DVC, "status", *STAGES], cwd=batch, env=_env(), capture_output=True, text=True)
    assert "up to date" in status.stdout, status.stdout + status.stderr
    stale = subprocess.run([DVC, "status", "make@a-2"], cwd=batch, env=_env(), capture_output=True, text=True)
    assert "up to date" not in stale.stdout  # a stage it was not asked to commit stays uncommitted


def test_an_unknown_stage_is_one_line_and_nothing_is_committed(tmp_path):
    d = _repo(tmp_path / "r")
    proc = subprocess.run(
        [sys.executable, "-m", "pipeline.dvc_commit", "make@a-1", "make@z-9"],
        cwd=d,
        env=_env(),
        capture_output=True,
        text=True,
    )
    assert proc.returncode == 2 and proc.stderr == "normlab: dvc.yaml defines no stage 'make@z-9'; nothing committed\n"
    assert not (d / "dvc.lock").exists() and _cache(d) == {}
