"""A Ray head with token authentication and the grid against it, for tests/test_ray_token.py; run
inside a network namespace that has only loopback (Ray binds the machine's address):

    unshare -n bash -c 'ip link set lo up && python tests/ray_token_cluster.py --study DIR --out result.json'

Writes a token (0600) into a private work folder, starts `ray start --head` with RAY_AUTH_MODE=token
and RAY_AUTH_TOKEN_PATH pointing at it, and a loopback MLflow server (tests/mlflow_loopback.py); then
runs `python -m pipeline.grid --executor ray --address HEAD` in DIR (its study.yaml) once per client
setting: no RAY_AUTH_MODE, a wrong token, RAY_AUTH_MODE=token with no token, the right token (by
RAY_AUTH_TOKEN_PATH). Ray and the grids run with a private HOME (no ~/.ray of the machine's user).
Writes into --out (JSON) each grid's exit code, output and seconds, every MLflow run's params and
tags, every byte the right-token grid wrote (cells, report) and the token itself, for the test to
look for it. Stops everything it started, by pid.
"""

from __future__ import annotations

import argparse
import json
import os
import secrets
import shutil
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from tests.scaleout_cluster import BIN, free_port, leftovers, stop  # noqa: E402

AUTH = ("RAY_AUTH_MODE", "RAY_AUTH_TOKEN", "RAY_AUTH_TOKEN_PATH")


def start_head(work: Path, env: dict, procs: list[subprocess.Popen]) -> str:
    """`ray start --head --block`; returns its address once it says the runtime started (its own line)."""
    port = free_port()
    head = subprocess.Popen(
        [
            str(BIN / "ray"),
            "start",
            "--head",
            "--block",
            "--port",
            str(port),
            "--num-cpus",
            "1",
            "--node-ip-address",
            "127.0.0.1",
            "--disable-usage-stats",
            "--include-dashboard",
            "false",
            "--object-store-memory",
            str(100 * 2**20),
            "--temp-dir",
            str(work / "r"),
        ],
        env={**env, "PYTHONUNBUFFERED": "1"},
        start_new_session=True,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    procs.append(head)
    seen = []
    for line in head.stdout:
        seen.append(line)
        if "Ray runtime started" in line:
            break
    else:
        raise RuntimeError("the Ray head did not start:\n" + "".join(seen[-20:]))
    log = open(work / "ray-head.log", "w")  # the rest of its output, so its pipe never fills
    threading.Thread(target=lambda: shutil.copyfileobj(head.stdout, log), daemon=True).start()
    return f"127.0.0.1:{port}"


def start_mlflow(work: Path, env: dict, procs: list[subprocess.Popen]) -> str:
    script = Path(__file__).with_name("mlflow_loopback.py")
    proc = subprocess.Popen(
        [sys.executable, str(script), str(work / "mlflow.db"), str(work / "artifacts")],
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.DEVNULL,
        text=True,
        start_new_session=True,
    )
    procs.append(proc)
    line = proc.stdout.readline()  # "port N" once the store is migrated and the socket listens
    if not line.startswith("port "):
        raise RuntimeError(f"the loopback MLflow server did not start (exit {proc.poll()})")
    return f"http://127.0.0.1:{int(line.split()[1])}"


def files_under(folder: Path) -> dict[str, str]:
    """Every file's bytes (latin-1, so any byte string survives JSON)."""
    return {
        str(p.relative_to(folder)): p.read_bytes().decode("latin-1") for p in sorted(folder.rglob("*")) if p.is_file()
    }


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--study", required=True)
    ap.add_argument("--out", required=True)
    args = ap.parse_args()
    from pipeline.spec import environment

    study = Path(args.study)
    work = Path(tempfile.mkdtemp(prefix="tok-", dir="/tmp"))  # short: Ray's socket paths have a length limit
    home = work / "home"
    home.mkdir()
    token = secrets.token_hex(32)
    token_file = work / "token"
    token_file.touch(mode=0o600)
    token_file.write_text(token)
    base = {k: v for k, v in os.environ.items() if k not in AUTH and k != "RAY_ADDRESS"}
    base.update(
        {**environment.NO_TELEMETRY, "NORMLAB_WARM": "0", "HOME": str(home), "PATH": f"{BIN}:{os.environ['PATH']}"}
    )
    procs: list[subprocess.Popen] = []
    result: dict = {"token": token, "grids": {}}
    try:
        uri = start_mlflow(work, base, procs)
        t0 = time.monotonic()
        address = start_head(work, {**base, "RAY_AUTH_MODE": "token", "RAY_AUTH_TOKEN_PATH": str(token_file)}, procs)
        result["ray_start_s"] = time.monotonic() - t0
        clients = {
            "no_mode": {},
            "wrong_token": {"RAY_AUTH_MODE": "token", "RAY_AUTH_TOKEN": secrets.token_hex(32)},
            "no_token": {"RAY_AUTH_MODE": "token", "RAY_AUTH_TOKEN_PATH": str(work / "absent")},
            "right_token": {"RAY_AUTH_MODE": "token", "RAY_AUTH_TOKEN_PATH": str(token_file)},
        }
        for name, auth in clients.items():
            t0 = time.monotonic()
            run = subprocess.run(
                [
                    sys.executable,
                    "-m",
                    "pipeline.grid",
                    "--executor",
                    "ray",
                    "--address",
                    address,
                    "--params",
                    "study.yaml",
                    "--runs",
                    "r",
                    "--report",
                    "rep",
                ],
                cwd=study,
                env={**base, "MLFLOW_TRACKING_URI": uri, **auth},
                capture_output=True,
                text=True,
                timeout=600,
            )
            result["grids"][name] = {
                "rc": run.returncode,
                "stdout": run.stdout,
                "stderr": run.stderr,
                "s": time.monotonic() - t0,
                "given": auth.get("RAY_AUTH_TOKEN", ""),
            }
        from mlflow.tracking import MlflowClient

        client = MlflowClient(uri)
        exps = [e.experiment_id for e in client.search_experiments()]
        result["runs"] = (
            [
                {"status": r.info.status, "params": dict(r.data.params), "tags": dict(r.data.tags)}
                for r in client.search_runs(exps, max_results=5000)
            ]
            if exps
            else []
        )
        result["written"] = {**files_under(study / "r"), **files_under(study / "rep")} if (study / "r").exists() else {}
        result["home"] = sorted(str(p.relative_to(home)) for p in home.rglob("*"))
    finally:
        for proc in reversed(procs):
            stop(proc)
        result["leftovers"] = leftovers(work, {p.pid for p in procs})
        shutil.rmtree(work, ignore_errors=True)
        Path(args.out).write_text(json.dumps(result, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
