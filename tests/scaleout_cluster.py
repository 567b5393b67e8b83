"""A loopback scale-out session for tests/test_scaleout.py: run inside a network namespace that has
only loopback, so Ray (which binds the machine's address) and every server stay on 127.0.0.1:

    unshare -n bash -c 'ip link set lo up && python tests/scaleout_cluster.py --repo R --out result.json --kill'

Starts PostgreSQL + an MLflow server (pipeline.tracking.server), a two-node Ray cluster (a head
and a second node, `--num-cpus 1` each), runs `python -m pipeline.grid --executor ray` in the
repo R, and with --kill SIGKILLs the process of the first cell seen training (its pid is in the
runs' `normlab.cell_proc` tag). Writes what the tests check into --out (JSON): the grid's exit code
and output, the killed cell, every MLflow run of the experiment. Stops everything it started, by pid.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

BIN = Path(sys.executable).parent


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def stop(proc: subprocess.Popen, grace: float = 30) -> None:
    """SIGTERM the `ray start --block` process (it stops the Ray processes it started), then SIGKILL."""
    if proc.poll() is None:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(grace)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait(10)


def start_ray(tmp: Path, env: dict, procs: list[subprocess.Popen]) -> str:
    """A head and a second node; `procs` gets each `ray start --block` as it starts (so it is stopped)."""
    port = free_port()
    common = [
        "--block",
        "--num-cpus",
        "1",
        "--node-ip-address",
        "127.0.0.1",
        "--disable-usage-stats",
        "--object-store-memory",
        str(100 * 2**20),
    ]
    procs.append(
        subprocess.Popen(
            [
                str(BIN / "ray"),
                "start",
                "--head",
                "--port",
                str(port),
                "--include-dashboard",
                "false",
                "--temp-dir",
                str(tmp),
                *common,
            ],
            env=env,
            start_new_session=True,
            stdout=open(tmp.parent / "ray-head.log", "w"),
            stderr=subprocess.STDOUT,
        )
    )
    address = f"127.0.0.1:{port}"
    deadline = time.monotonic() + 120
    while True:
        try:
            socket.create_connection(("127.0.0.1", port), 1).close()
            break
        except OSError:
            if time.monotonic() > deadline or procs[0].poll() is not None:
                raise RuntimeError("the Ray head did not start") from None
            time.sleep(0.2)
    procs.append(
        subprocess.Popen(
            [str(BIN / "ray"), "start", "--address", address, *common],
            env=env,
            start_new_session=True,
            stdout=open(tmp.parent / "ray-node.log", "w"),
            stderr=subprocess.STDOUT,
        )
    )
    import ray

    ray.init(address=address, logging_level="ERROR", log_to_driver=False)
    try:
        while sum(n["Alive"] for n in ray.nodes()) < 2:
            if time.monotonic() > deadline:
                raise RuntimeError("the second Ray node did not join")
            time.sleep(0.2)
    finally:
        ray.shutdown()
    return address


def runs_of(client, experiment: str) -> list[dict]:
    exp = client.get_experiment_by_name(experiment)
    if exp is None:
        return []
    return [
        {"id": r.info.run_id, "status": r.info.status, "name": r.info.run_name, "tags": dict(r.data.tags)}
        for r in client.search_runs([exp.experiment_id], max_results=5000)
    ]


def leftovers(work: Path, sessions: set[int]) -> list[str]:
    """Processes still alive that we started: a command line naming our folder, or in one of our sessions."""
    found = []
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()
            sid = int(fields[3])
            if fields[0] == "Z":  # a zombie is dead already, only not yet reaped by its new parent
                continue
            cmd = (stat.parent / "cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
        except (OSError, IndexError, ValueError):
            continue
        if int(stat.parent.name) != os.getpid() and (sid in sessions or str(work) in cmd):
            found.append(f"{stat.parent.name}: {cmd[:120]}")
    return found


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--repo", required=True)
    ap.add_argument("--out", required=True)
    ap.add_argument("--kill", action="store_true")
    args = ap.parse_args()
    from pipeline.spec import environment

    os.environ.update({**environment.NO_TELEMETRY, "NORMLAB_WARM": "0"})  # telemetry off, whatever the caller had
    from mlflow.tracking import MlflowClient

    from pipeline.tracking.server import TrackingServer

    result: dict = {"killed": None}
    work = Path(tempfile.mkdtemp(prefix="so-", dir="/tmp"))  # short: Ray's socket paths have a length limit
    os.chmod(work, 0o755)  # the postgres account reaches its data folder inside
    ray_procs: list[subprocess.Popen] = []
    server = TrackingServer(work / "server", workers=2)
    sessions: set[int] = set()
    grid = None
    server_pids = lambda: {p.pid for p in (server.mlflow, server.postgres) if p is not None}  # noqa: E731
    try:
        t0 = time.monotonic()
        try:
            uri = server.start()
        finally:
            sessions |= server_pids()
        result["server_start_s"] = time.monotonic() - t0
        t0 = time.monotonic()
        # a private HOME for Ray and the grid: Ray keeps user state in ~/.ray (e.g. an auth token file that made
        # this test fail with InvalidAuthToken on a machine whose user had one); the test reads none of it
        home = work / "home"
        home.mkdir(mode=0o700, exist_ok=True)
        env = {**os.environ, "MLFLOW_TRACKING_URI": uri, "HOME": str(home)}
        address = start_ray(work / "r", env, ray_procs)
        result["ray_start_s"] = time.monotonic() - t0
        client = MlflowClient(uri)
        t0 = time.monotonic()
        grid = subprocess.Popen(
            [sys.executable, "-m", "pipeline.grid", "--executor", "ray", "--address", address],
            cwd=args.repo,
            env={**env, "PATH": f"{BIN}:{os.environ['PATH']}"},
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        while args.kill and grid.poll() is None and result["killed"] is None:
            exp = client.get_experiment_by_name("normlab")
            running = (
                client.search_runs(
                    [exp.experiment_id], "attributes.status = 'RUNNING' and tags.`normlab.kind` = 'member'"
                )
                if exp
                else []
            )
            for run in running:
                host, pid, _ = run.data.tags["normlab.cell_proc"].rsplit(":", 2)
                os.kill(int(pid), signal.SIGKILL)  # the Ray worker process training this cell
                result["killed"] = {"cell": run.data.tags["cell"], "pid": int(pid)}
                break
            time.sleep(0.1)
        out, err = grid.communicate(timeout=900)
        result.update(
            rc=grid.returncode, stdout=out, stderr=err, grid_s=time.monotonic() - t0, runs=runs_of(client, "normlab")
        )
    finally:
        if grid is not None and grid.poll() is None:  # the test failed midway: the driver goes first
            grid.kill()
            grid.wait(30)
        sessions |= {p.pid for p in ray_procs}
        for proc in reversed(ray_procs):
            stop(proc)
        server.stop()
        time.sleep(1)
        result["leftovers"] = leftovers(work, sessions)
        shutil.rmtree(work, ignore_errors=True)
        Path(args.out).write_text(json.dumps(result, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
