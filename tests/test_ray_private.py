"""A local Ray cluster started by the Ray executor keeps its sessions, sockets, logs and the
shipped code package out of other local users' reach (issue 18: under /tmp/ray they were 0777,
and another user swapped the package a worker's retry then imported).

Ray chmods its own temp folder 0777, so the executor gives it a folder one level inside a 0700
folder of ours; this test acts as another user (`nobody`, via setpriv) against a real local Ray.
The cluster's token auth uses a fresh token kept in that folder (pipeline/executors/ray_auth.py).
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from pipeline.spec import environment

ROOT = Path(__file__).resolve().parents[1]

PROBE = r"""
import os, stat, subprocess, sys
from pathlib import Path
from pipeline.executors.ray_cluster import RayExecutor
ex = RayExecutor(None, Path(sys.argv[1]), local_cpus=1)
token = ex.token.path
try:
    d = ex.temp_dir
    print("parent_mode", oct(stat.S_IMODE(os.lstat(d).st_mode)))
    print("token", token.parent == d, oct(stat.S_IMODE(os.lstat(token).st_mode)), os.environ["RAY_AUTH_MODE"])
    print("task", ex._ray.get(ex._ray.remote(lambda: 6 * 7).remote()))  # its workers authenticate too
    sess = next(Path(d).rglob("session_2*"))
    as_nobody = ["setpriv", "--reuid", "nobody", "--regid", "nogroup", "--clear-groups"]
    for cmd in (["ls", str(sess / "runtime_resources")], ["touch", str(sess / "planted")], ["cat", str(token)]):
        r = subprocess.run(as_nobody + cmd, capture_output=True, text=True)
        print("nobody", cmd[0], r.returncode)
finally:
    ex.close()
print("after", token.exists(), [k for k in os.environ if k.startswith("RAY_AUTH")], (Path.home() / ".ray").exists())
"""


def _reason() -> str | None:
    if os.geteuid() != 0:
        return "acting as another user (setpriv) needs root"
    if not all(shutil.which(t) for t in ("unshare", "ip", "setpriv")):
        return "unshare, ip or setpriv not installed"
    probe = subprocess.run(["unshare", "-n", "ip", "link", "set", "lo", "up"], capture_output=True, text=True)
    return f"cannot make a network namespace here: {probe.stderr.strip()[:120]}" if probe.returncode else None


@pytest.mark.skipif(_reason() is not None, reason=str(_reason()))
def test_local_ray_files_are_private_to_their_user(tmp_path):
    home = tmp_path / "home"  # no ~/.ray state of the machine's user
    home.mkdir()
    env = environment.child_env(HOME=str(home), PYTHONPATH=str(ROOT))  # telemetry off: pipeline/spec/environment.py
    for key in (
        "RAY_ADDRESS",
        "RAY_AUTH_MODE",
        "RAY_AUTH_TOKEN",
        "RAY_AUTH_TOKEN_PATH",
    ):  # the machine user's Ray settings
        env.pop(key, None)
    script = tmp_path / "probe.py"
    script.write_text(PROBE)
    run = subprocess.run(
        ["unshare", "-n", "bash", "-c", f'ip link set lo up && exec "{sys.executable}" "{script}" "{ROOT}"'],
        capture_output=True,
        text=True,
        env=env,
        cwd=ROOT,
        timeout=300,
    )
    out = run.stdout.splitlines()
    assert run.returncode == 0, run.stderr[-2000:]
    assert "parent_mode 0o700" in out, out
    assert "nobody ls 0" not in out and any(line.startswith("nobody ls ") for line in out), out
    assert "nobody touch 0" not in out and any(line.startswith("nobody touch ") for line in out), out
    # token auth on, its token in a 0600 file in that folder (Ray's default wrote ~/.ray/auth_token, which
    # outlived the grid); gone with the cluster, the environment as it was, no ~/.ray written
    assert "token True 0o600 token" in out and "task 42" in out, out
    assert "nobody cat 0" not in out and any(line.startswith("nobody cat ") for line in out), out
    assert "after False [] False" in out, out
