"""Issue 18 item 5: `normlab ui` and `normlab server` listen on 127.0.0.1 only, read from the kernel
(tests/listening.py) while they run, not from their command lines. MLflow has no authentication, so
an address beyond loopback would hand every run to anyone who reaches it; MLflow's own variables
that add listening addresses (MLFLOW_GUNICORN_OPTS='-b 0.0.0.0:N' bound a second, public socket
before) are dropped with one line saying why."""

from __future__ import annotations

import os
import selectors
import signal
import subprocess
import sys
import time
from pathlib import Path

from pipeline.spec import environment
from pipeline.tracking.loopback import JOB_EXECUTION, server_env
from pipeline.tracking.server import free_port
from tests.listening import listening

ROOT = Path(__file__).resolve().parents[1]
SERVING = ("Uvicorn running on", "Listening at:")  # uvicorn's and gunicorn's line once their sockets listen


def _wait_until_serving(proc: subprocess.Popen, timeout: float = 180) -> list[str]:
    """stderr lines up to the server's 'listening' line (select on the pipe: no polling sleep)."""
    lines, buf, deadline = [], b"", time.monotonic() + timeout
    with selectors.DefaultSelector() as sel:
        sel.register(proc.stderr, selectors.EVENT_READ)
        while time.monotonic() < deadline:
            if not sel.select(deadline - time.monotonic()):
                break
            chunk = os.read(proc.stderr.fileno(), 65536)
            if not chunk:
                raise AssertionError(f"exited {proc.wait()} before serving: {lines + [buf.decode(errors='replace')]}")
            buf += chunk
            *done, buf = buf.split(b"\n")
            lines += [ln.decode(errors="replace") for ln in done]
            if any(s in ln for ln in lines for s in SERVING):
                return lines
    raise AssertionError(f"not serving within {timeout} s: {lines}")


def test_normlab_ui_listens_on_loopback_only(tmp_path):
    """With MLFLOW_GUNICORN_OPTS='-b 0.0.0.0:N' set: before, a second socket on every address."""
    port, other = free_port(), free_port()
    env = {**environment.child_env(), "PYTHONPATH": str(ROOT), "MLFLOW_TRACKING_URI": f"sqlite:///{tmp_path / 'm.db'}"}
    env.pop("MLFLOW_GUNICORN_OPTS", None)
    env.pop("MLFLOW_UVICORN_OPTS", None)
    env["MLFLOW_GUNICORN_OPTS"] = f"-b 0.0.0.0:{other}"
    env.pop(JOB_EXECUTION, None)  # MLflow's default: its job runner on
    proc = subprocess.Popen(
        [sys.executable, "-m", "pipeline.cli", "ui", "--port", str(port)],
        cwd=tmp_path,
        env=env,
        stdin=subprocess.DEVNULL,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        start_new_session=True,
    )  # its own session: every process it starts is found, and stopped
    try:
        lines = _wait_until_serving(proc)
        bound = listening(proc.pid)
        # MLflow launches its job runner right after the web server's process, before that serves
        # -ww: whole command lines, whatever COLUMNS says (a cut line could hide the runner's module name)
        started = subprocess.run(
            ["ps", "-ww", "-o", "args=", "-s", str(proc.pid)], capture_output=True, text=True
        ).stdout
    finally:
        os.killpg(proc.pid, signal.SIGTERM)  # the group this test started, by its id
        proc.wait(timeout=60)
        proc.stderr.close()
    assert bound == {("127.0.0.1", port)}, bound  # before: ('0.0.0.0', other) as well
    assert "uvicorn" in started or "gunicorn" in started, started  # the listing sees the UI's own processes
    # ... and none of MLflow's job runner (a _job_runner and huey consumers, polling all day: normlab has no jobs)
    assert "mlflow.server.jobs" not in started and "huey" not in started, started  # its _job_runner or _executor_runner
    said = [ln for ln in lines if ln.startswith("normlab")]
    assert len(said) == 1 and "MLFLOW_GUNICORN_OPTS ignored" in said[0] and "no authentication" in said[0], lines


def test_server_env_turns_mlflows_job_runner_off_unless_the_user_sets_it():
    base = {"PATH": "/usr/bin"}
    assert server_env(base, "ui")[JOB_EXECUTION] == "false"
    assert server_env({**base, JOB_EXECUTION: "true"}, "ui")[JOB_EXECUTION] == "true"  # the user's choice stays
    assert JOB_EXECUTION not in base  # a copy: the caller's environment is left as it was
