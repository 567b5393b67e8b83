"""The warm-start path: a forked child of the server does exactly what a cold process does.

.venv/bin/python -m pytest -q tests/test_warm.py
"""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import pytest
import yaml

from tests.conftest import BASE

ROOT = Path(__file__).resolve().parents[1]
pytestmark = pytest.mark.slow


def _cli(module, args, env):
    return subprocess.run(
        [sys.executable, "-m", module, *args], cwd=ROOT, env=env, capture_output=True, text=True, timeout=300
    )


def test_warm_child_matches_cold_process_and_passes_errors_through():
    tmp = Path(tempfile.mkdtemp(prefix="nw", dir="/tmp"))  # the server's private folder goes in here
    server = 0
    try:
        params = tmp / "params.yaml"
        params.write_text(yaml.safe_dump(BASE, sort_keys=False))
        env = {
            **{k: v for k, v in os.environ.items() if k != "XDG_RUNTIME_DIR"},
            "TMPDIR": str(tmp),
            "NORMLAB_WARM": "1",
            "NORMLAB_WARM_IDLE": "120",
        }
        common = ["--params", str(params), "--dataset", "synthetic", "--no-track", "--variant", "bn"]
        cold = _cli("pipeline.train", [*common, "--out", str(tmp / "cold")], {**env, "NORMLAB_WARM": "0"})
        assert cold.returncode == 0, cold.stderr
        first = _cli("pipeline.train", [*common, "--out", str(tmp / "first")], env)  # trains cold, starts a server
        assert first.returncode == 0, first.stderr
        for _ in range(600):
            status = _cli("pipeline.warm", ["status"], env)
            if status.returncode == 0:
                break
            time.sleep(0.5)
        assert " up (pid " in status.stdout, status.stdout + status.stderr
        server = int(status.stdout.split("(pid ")[1].split(")")[0])
        log = Path(status.stdout.strip().rsplit(" at ", 1)[1]).with_suffix(".log")
        warm = _cli("pipeline.train", [*common, "--out", str(tmp / "warm")], env)
        assert warm.returncode == 0, warm.stderr
        assert log.read_text().count(" started") == 1  # it really ran in a child of the server
        for f in ("history.parquet", "summary.json", "config.json"):
            cold_bytes = (tmp / "cold" / f).read_bytes()
            assert cold_bytes == (tmp / "first" / f).read_bytes() == (tmp / "warm" / f).read_bytes(), f
        assert oct((tmp / "warm" / "summary.json").stat().st_mode) == oct(
            (tmp / "cold" / "summary.json").stat().st_mode
        )
        bad = _cli("pipeline.train", [*common[:-1], "nope", "--out", str(tmp / "bad")], env)
        assert bad.returncode == 2
        assert bad.stderr.strip().startswith("normlab: --variant: unknown variant 'nope'"), bad.stderr
        assert log.read_text().count(" started") == 2
        assert not (tmp / "bad").exists()
        stop = _cli("pipeline.warm", ["stop"], env)
        assert stop.returncode == 0 and f"stopped the warm server {server}" in stop.stdout
        assert _cli("pipeline.warm", ["status"], env).stdout.startswith("warm server down")
    finally:
        if server:
            try:
                os.kill(server, signal.SIGKILL)
            except ProcessLookupError:
                pass
        shutil.rmtree(tmp, ignore_errors=True)


def test_warm_command_line_help_and_bad_words():
    """`normlab warm --help` prints its options and exits 0; a word it does not know is its usage, exit 2."""
    import subprocess
    import sys

    ok = subprocess.run([sys.executable, "-m", "pipeline.warm", "--help"], capture_output=True, text=True)
    assert ok.returncode == 0 and "status" in ok.stdout and "--wait" in ok.stdout
    for bad in (["restart"], ["stop", "--wait"], ["status", "extra"]):
        r = subprocess.run([sys.executable, "-m", "pipeline.warm", *bad], capture_output=True, text=True)
        assert r.returncode == 2 and "usage: normlab warm" in r.stderr and r.stdout == "", (bad, r.stderr)


def test_one_warm_server_whatever_name_started_the_interpreter():
    """DVC's stages run `python`, `normlab` runs `python3`: the same venv's interpreter under either name
    must find the same server (the socket name), and another environment must not."""
    import subprocess
    import sys
    from pathlib import Path

    code = "from pipeline.warm.client import fingerprint; print(fingerprint())"
    names = [p for p in (Path(sys.executable).parent / n for n in ("python", "python3")) if p.exists()]
    assert len(names) == 2, names
    got = {subprocess.run([str(p), "-c", code], capture_output=True, text=True, check=True).stdout for p in names}
    assert len(got) == 1
    from pipeline.warm import client

    here = client.fingerprint()
    sys_prefix = sys.prefix
    try:  # another environment (venv) on the same interpreter binary: another server
        sys.prefix = "/elsewhere/venv"
        assert client.fingerprint() != here
    finally:
        sys.prefix = sys_prefix
