"""The ray executor against a Ray cluster with token authentication (issue 18 item 2): a real Ray head
started with RAY_AUTH_MODE=token, on loopback only (tests/ray_token_cluster.py in `unshare -n`), and
the grid as a user runs it.

Before: a client without RAY_AUTH_MODE=token, or with a wrong token, got ~20 s of Ray retrying with a
C++ warning a second on stderr, then "cannot join the Ray cluster (ConnectionError: Failed to connect
to Ray cluster at ...)", which does not say the token was refused. Now each is one line naming what to
set, exit 2; with the right token the cell runs, and the token is in nothing normlab wrote or printed.
"""

from __future__ import annotations

import json
import os
import shutil
import socket
import stat
import subprocess
import sys
import threading
from pathlib import Path

import pytest

from pipeline.executors import ExecutorError
from pipeline.executors.ray_auth import LocalToken, check_token, check_token_file, reload_ray_auth
from pipeline.spec import environment
from tests.test_scaleout import GRID, _study

ROOT = Path(__file__).resolve().parents[1]


AUTH = ("RAY_AUTH_MODE", "RAY_AUTH_TOKEN", "RAY_AUTH_TOKEN_PATH")


@pytest.fixture
def ray_auth(monkeypatch):
    """No Ray auth settings of the machine's user; Ray's cached auth state re-read once they are back."""
    for key in AUTH:
        monkeypatch.delenv(key, raising=False)
    yield monkeypatch
    monkeypatch.undo()
    reload_ray_auth()


def test_a_local_cluster_token_lives_in_its_private_folder_and_goes_with_it(tmp_path, ray_auth):
    """Ray 2.60's default for a local cluster wrote ~/.ray/auth_token, which outlived the grid (and made a
    later `ray start --head` demand it); normlab's is a fresh 0600 file in the cluster's 0700 folder."""
    folder = tmp_path / "private"
    folder.mkdir(mode=0o700)
    ray_auth.setenv("RAY_AUTH_TOKEN", "the-users-own")  # would win over the file while the cluster runs
    token = LocalToken(folder)
    assert token.path is not None and token.path.parent == folder
    assert stat.S_IMODE(token.path.stat().st_mode) == 0o600 and len(token.path.read_text()) == 64
    assert os.environ["RAY_AUTH_MODE"] == "token" and os.environ["RAY_AUTH_TOKEN_PATH"] == str(token.path)
    assert "RAY_AUTH_TOKEN" not in os.environ
    path = token.path
    token.close()
    assert not path.exists() and os.environ.get("RAY_AUTH_TOKEN") == "the-users-own"
    assert "RAY_AUTH_MODE" not in os.environ and "RAY_AUTH_TOKEN_PATH" not in os.environ

    ray_auth.setenv("RAY_AUTH_MODE", "disabled")  # the user's choice: Ray does as they said
    assert LocalToken(folder).path is None and list(folder.iterdir()) == []


def test_a_token_file_other_users_can_read_is_one_line(tmp_path, ray_auth):
    """`ray get-auth-token --generate` writes the token 0644 under umask 022; other local users could
    then use the cluster. Refused before any connection, naming the file, never the token."""
    secret = "f" * 64
    path = tmp_path / "token"
    path.write_text(secret)
    path.chmod(0o644)
    ray_auth.setenv("RAY_AUTH_MODE", "token")
    ray_auth.setenv("RAY_AUTH_TOKEN_PATH", str(path))
    with pytest.raises(ExecutorError) as err:
        check_token("127.0.0.1:1")
    assert str(err.value) == (
        f"the file in RAY_AUTH_TOKEN_PATH ({path}): the Ray token file is readable by other "
        f"users (mode 0o644): chmod 600 {path}"
    )
    assert secret not in str(err.value)
    path.chmod(0o600)  # the same file, private: passes
    check_token_file()


@pytest.mark.slow
def test_a_port_that_is_not_a_ray_head_is_one_line(ray_auth):
    """A port that takes connections and never answers: Ray waits ~40 s per try, and ray.init tries 20
    times; the probe tries once and says so. Ray's own wait is shortened here (py_gcs_connect_timeout_s,
    read by the probe's Config reload; ~11 s instead of ~40 s in all) and restored after: the same path."""
    ray_auth.setenv("RAY_py_gcs_connect_timeout_s", "1")
    listener = socket.socket()
    listener.bind(("127.0.0.1", 0))
    listener.listen(16)
    held = []
    threading.Thread(target=lambda: [held.append(listener.accept()) for _ in range(16)], daemon=True).start()
    port = listener.getsockname()[1]
    try:
        with pytest.raises(ExecutorError) as err:
            check_token(f"127.0.0.1:{port}")
    finally:
        listener.close()
        ray_auth.delenv("RAY_py_gcs_connect_timeout_s")
        reload_ray_auth()  # Ray's config is process-wide: later tests in this worker get the default wait
    assert str(err.value).startswith(
        f"--address 127.0.0.1:{port}: the port takes connections but no Ray head answers there (RpcError: "
    ), err.value


def _reason() -> str | None:
    if not shutil.which("unshare") or not shutil.which("ip"):
        return "unshare or ip (util-linux, iproute2) not installed: no loopback-only network namespace"
    probe = subprocess.run(["unshare", "-n", "ip", "link", "set", "lo", "up"], capture_output=True, text=True)
    return (
        f"cannot make a network namespace here (needs root): {probe.stderr.strip()[:120]}" if probe.returncode else None
    )


def _one_line(grid: dict) -> str:
    assert grid["rc"] == 2, grid["stdout"][-2000:] + grid["stderr"][-3000:]
    lines = grid["stderr"].strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("normlab: "), grid["stderr"][-3000:]  # no Ray retry warnings
    return lines[0]


@pytest.mark.slow
@pytest.mark.skipif(_reason() is not None, reason=str(_reason()))
def test_ray_cluster_with_token_auth(tmp_path):
    (tmp_path / "study").mkdir()
    study = _study(tmp_path / "study", **{**GRID, "grid": {"variants": ["bn"], "datasets": ["synthetic"]}})
    out = tmp_path / "result.json"
    cmd = (
        f'ip link set lo up && exec "{sys.executable}" "{ROOT / "tests" / "ray_token_cluster.py"}" '
        f'--study "{study}" --out "{out}"'
    )
    run = subprocess.run(
        ["unshare", "-n", "bash", "-c", cmd],
        capture_output=True,
        text=True,
        timeout=1500,
        env=environment.child_env(PYTHONPATH=str(ROOT)),
    )  # telemetry off: pipeline/spec/environment.py
    assert run.returncode == 0 and out.exists(), run.stdout[-3000:] + run.stderr[-3000:]
    result = json.loads(out.read_text())
    grids, token = result["grids"], result["token"]

    line = _one_line(grids["no_mode"])
    assert "requires token authentication and RAY_AUTH_MODE is not 'token'" in line, line
    line = _one_line(grids["wrong_token"])
    assert "refused the authentication token from RAY_AUTH_TOKEN: give Ray RAY_AUTH_MODE=token" in line, line
    line = _one_line(grids["no_token"])
    assert line.startswith("normlab: RAY_AUTH_MODE=token but Ray finds no token") and "absent" in line, line

    right = grids["right_token"]
    assert right["rc"] == 0, right["stdout"][-3000:] + right["stderr"][-3000:]
    assert "[1/1] bn-synthetic: ran" in right["stdout"], right["stdout"]
    assert "bn-synthetic/summary.json" in result["written"] and "report.md" in result["written"]
    assert any(r["tags"].get("cell") == "bn-synthetic" and r["status"] == "FINISHED" for r in result["runs"])

    # the token (and the wrong one) in nothing printed, recorded in MLflow, or written
    for name, grid in grids.items():
        for secret in filter(None, (token, grid["given"])):
            assert secret not in grid["stdout"] + grid["stderr"], name
    recorded = json.dumps([[r["params"], r["tags"]] for r in result["runs"]])
    assert token not in recorded
    assert not [f for f, data in result["written"].items() if token in data]
    assert ".ray/auth_token" not in result["home"]  # Ray was given the token; it wrote none of its own
    assert result["leftovers"] == []  # the head, its Ray processes, the MLflow server: stopped by pid
