"""The grid's executors on real engines: local worker processes, and a two-node Ray cluster with an
MLflow server on PostgreSQL, on loopback only. Each is checked against a sequential `dvc repro` of
the same 4-cell grid (2 members per cell): the same cell bytes, the same dvc.lock for every train
stage, `dvc status` clean, each cell's runs FINISHED exactly once, the report linking them.

    .venv/bin/python -m pytest -q tests/test_scaleout.py              # all (a few minutes)
    .venv/bin/python -m pytest -q tests/test_scaleout.py -m "not slow"
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import pandas as pd
import pytest
import yaml

from pipeline import records
from pipeline.spec import environment
from tests import test_dvc_pipeline as dvcp
from tests.conftest import summary_record

ROOT = Path(__file__).resolve().parents[1]
BIN = Path(sys.executable).parent
QUIET = {**environment.NO_TELEMETRY, "NORMLAB_WARM": "0"}  # telemetry off: pipeline/spec/environment.py
CELLS = ["center_detached-synthetic", "center_detached-shifted", "bn-synthetic", "bn-shifted"]
GRID = {  # 4 cells x 2 members; long enough (300 steps: its runs RUNNING for a second or more) that a cell is caught mid-training
    "grid": {"variants": ["center_detached", "bn"], "datasets": ["synthetic", "shifted"]},
    "datasets": {
        "synthetic": {"kind": "synthetic", "input_mean": 3.0, "dim": 6, "classes": 3, "samples": 200},
        "shifted": {"kind": "synthetic", "input_mean": 1.0, "dim": 6, "classes": 3, "samples": 200},
    },
    "model": {"depth": 2, "width": 8},
    "optim": {"lrs": [0.1, 1.0], "seeds": [0], "batch_size": 16},
    "train": {"steps": 300, "log_every": 5, "eval_every": 50, "threads": 1},
    "tracking": {"log_every": 10, "flush_every": 50},
}


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def make_repo(d: Path, over: dict = GRID) -> Path:
    dvcp._make_repo(d)
    (d / "params.yaml").write_text(yaml.safe_dump(dvcp._params(over), sort_keys=False))
    return d


def env(d: Path, **extra) -> dict:
    return {**dvcp._env(d), **QUIET, **extra}


def grid(d: Path, *args, **kw) -> subprocess.Popen:
    return subprocess.Popen(
        [sys.executable, "-m", "pipeline.grid", *args],
        cwd=d,
        env=kw.pop("env", env(d)),
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        **kw,
    )


def cell_bytes(d: Path, cell: str) -> dict[str, bytes]:
    return {f: (d / "runs" / cell / f).read_bytes() for f in (*records.FILES, records.MARKER)}


def assert_same_as_sequential(seq: Path, par: Path) -> None:
    """Same cell bytes; dvc.lock: each train stage identical, the report's deps and params identical
    (report.md/html hold MLflow run ids, which differ between any two runs); `dvc status` clean."""
    for cell in CELLS:
        assert cell_bytes(par, cell) == cell_bytes(seq, cell), cell
    assert not [p.name for p in (par / "runs").iterdir() if ".tmp-" in p.name or ".old-" in p.name]
    lock_s, lock_p = (yaml.safe_load((d / "dvc.lock").read_text())["stages"] for d in (seq, par))
    assert set(lock_s) == set(lock_p) == {*(f"train@{c}" for c in CELLS), "report"}
    for cell in CELLS:
        assert lock_p[f"train@{cell}"] == lock_s[f"train@{cell}"], cell
    assert lock_p["report"]["deps"] == lock_s["report"]["deps"]
    assert lock_p["report"]["params"] == lock_s["report"]["params"]

    def outs(lock):
        return [o for o in lock["report"]["outs"] if o["path"] not in ("reports/report.md", "reports/report.html")]

    assert outs(lock_p) == outs(lock_s)
    assert "Data and pipelines are up to date" in dvcp.dvc(par, "status")


def assert_runs_once(runs: list[dict], par: Path, killed_cell: str | None) -> None:
    """Every cell: one FINISHED cell run tagged with its outputs' hash and 2 FINISHED members; no run
    RUNNING; a killed attempt's runs KILLED; the report run links exactly the FINISHED cell runs."""
    assert not [r for r in runs if r["status"] == "RUNNING"]
    finished = [r for r in runs if r["status"] == "FINISHED"]
    linked = set()
    for cell in CELLS:
        parents = [r for r in finished if r["tags"].get("cell") == cell and r["tags"]["normlab.kind"] == "cell"]
        members = [r for r in finished if r["tags"].get("cell") == cell and r["tags"]["normlab.kind"] == "member"]
        assert len(parents) == 1 and len(members) == 2, (cell, len(parents), len(members))
        assert parents[0]["tags"]["normlab.outputs_hash"] == records.outputs_hash(par / "runs" / cell)
        assert {m["tags"]["mlflow.parentRunId"] for m in members} == {parents[0]["id"]}
        linked.add(parents[0]["id"])
    report = [r for r in finished if r["tags"].get("normlab.kind") == "report"]
    assert len(report) == 1 and set(report[0]["tags"]["cell_runs"].split(",")) == linked
    dead = [r for r in runs if r["status"] not in ("FINISHED",)]
    if killed_cell:
        assert dead and {r["tags"]["cell"] for r in dead} == {killed_cell}
        assert {r["status"] for r in dead} == {"KILLED"}
    else:
        assert not dead


def sqlite_runs(d: Path) -> list[dict]:
    from mlflow.tracking import MlflowClient

    client = MlflowClient(f"sqlite:///{d / 'mlflow.db'}")
    exp = client.get_experiment_by_name("normlab")
    return [
        {"id": r.info.run_id, "status": r.info.status, "tags": dict(r.data.tags)}
        for r in client.search_runs([exp.experiment_id], max_results=1000)
    ]


def kill_first_training_cell(d: Path, proc: subprocess.Popen, sig=signal.SIGKILL) -> dict:
    """Wait for a member run RUNNING in the repo's SQLite store; signal the process that trains it."""
    from pipeline.tracking.runs import connect

    client = None
    deadline = time.monotonic() + 300
    while proc.poll() is None and time.monotonic() < deadline:
        if client is None and (d / "mlflow.db").exists():
            # under normlab's own init lock: never creating the store's tables beside the grid doing so
            client = connect(f"sqlite:///{d / 'mlflow.db'}")
        exp = client.get_experiment_by_name("normlab") if client else None
        for run in (
            client.search_runs([exp.experiment_id], "attributes.status = 'RUNNING' and tags.`normlab.kind` = 'member'")
            if exp
            else []
        ):
            pid = int(run.data.tags["normlab.cell_proc"].rsplit(":", 2)[1])
            assert pid != proc.pid  # a worker process, not the driver
            os.kill(pid if sig == signal.SIGKILL else proc.pid, sig)
            return {"cell": run.data.tags["cell"], "pid": pid}
        time.sleep(0.1)
    ended = (
        ""
        if proc.poll() is None
        else f" (the grid ended, exit {proc.returncode}: {''.join(proc.communicate())[-3000:]})"
    )
    raise AssertionError("no cell was seen training" + ended)


@pytest.fixture(scope="module")
def template(tmp_path_factory):
    """One snapshot of the code: the sequential and the parallel repos are copies of it (the working
    tree may change while the tests run)."""
    return make_repo(tmp_path_factory.mktemp("template") / "repo")


def clone(template: Path, d: Path) -> Path:
    shutil.copytree(template, d, symlinks=True)
    return d


@pytest.fixture(scope="module")
def sequential(template, tmp_path_factory):
    d = clone(template, tmp_path_factory.mktemp("seq") / "repo")
    dvcp.dvc(d, "repro")
    return d


# -- bad input: one line, exit 2, before any work ------------------------------------------------
@pytest.mark.parametrize(
    "args,needle",
    [
        (["--executor", "spark"], "--executor: must be local or ray"),
        (["--jobs", "0"], "--jobs: must be >= 1"),
        (["--retries", "-1"], "--retries: must be >= 0"),
        (["--address", "127.0.0.1:1"], "--address: only with --executor ray"),
    ],
)
def test_bad_arguments_are_one_line_exit_2(args, needle, capsys):
    from pipeline.grid import main

    with pytest.raises(SystemExit) as exc:
        main(args)
    assert exc.value.code == 2
    err = capsys.readouterr().err.strip()
    assert needle in err and len(err.splitlines()) == 1


def _study(tmp_path: Path, **over) -> Path:
    params = dvcp._params({**GRID, **over})
    (tmp_path / "study.yaml").write_text(yaml.safe_dump(params, sort_keys=False))
    return tmp_path


def _fails_fast(tmp_path: Path, args: list[str], **envs) -> str:
    t0 = time.monotonic()
    proc = subprocess.run(
        [sys.executable, "-m", "pipeline.grid", "--params", "study.yaml", "--runs", "r", *args],
        cwd=tmp_path,
        env={**os.environ, **QUIET, **envs},
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert proc.returncode == 2, proc.stdout + proc.stderr
    assert not any((tmp_path / "r").glob("*")) and time.monotonic() - t0 < 60  # before any work
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1, proc.stderr
    return lines[0]


def test_unreachable_tracking_server_is_one_line(tmp_path):
    line = _fails_fast(_study(tmp_path), [], MLFLOW_TRACKING_URI=f"http://127.0.0.1:{free_port()}")
    assert "MLFLOW_TRACKING_URI: tracking store http://127.0.0.1:" in line and "not reachable" in line


def test_ray_on_a_cluster_needs_a_tracking_server(tmp_path):
    line = _fails_fast(
        _study(tmp_path),
        ["--executor", "ray", "--address", "127.0.0.1:1"],
        MLFLOW_TRACKING_URI=f"sqlite:///{tmp_path / 'm.db'}",
    )
    assert "needs a tracking server every node reaches" in line and "make server" in line


def test_unreachable_ray_address_is_one_line(tmp_path):
    port = free_port()
    line = _fails_fast(
        _study(tmp_path, tracking={"enabled": False}), ["--executor", "ray", "--address", f"127.0.0.1:{port}"]
    )
    assert line.startswith(f"normlab: --address 127.0.0.1:{port}: no Ray cluster answers there")


def test_tracking_server_without_postgres_is_one_line(monkeypatch, tmp_path):
    from pipeline.tracking.server import ServerError, TrackingServer

    monkeypatch.setenv("NORMLAB_PG_BIN", str(tmp_path))
    with pytest.raises(ServerError, match="PostgreSQL not found"):
        TrackingServer(tmp_path / "s").start()


# -- the driver's side of a returned cell ---------------------------------------------------------
def _payload(tmp_path: Path) -> tuple[dict, Path]:
    src = tmp_path / "src" / "a-b"
    src.parent.mkdir()
    summary = summary_record("a-b", config_hash="0" * 16)
    records.write_cell(src, pd.DataFrame({"member": [0], "step": [0], "loss": [1.0]}), summary, {"x": 1})
    meta = json.dumps({"cell": "a-b", "timing": {}, "outputs_hash": records.outputs_hash(src)}).encode()
    return {"files": {f: (src / f).read_bytes() for f in (*records.FILES, records.MARKER)}, "meta": meta}, src


def test_returned_cell_is_written_whole_with_its_meta(tmp_path):
    from pipeline.executors import write_returned

    payload, src = _payload(tmp_path)
    out = tmp_path / "runs" / "a-b"
    out.parent.mkdir()
    (out.parent / "other-cell").mkdir()  # left alone
    write_returned(out, payload)
    assert {f: (out / f).read_bytes() for f in payload["files"]} == payload["files"]
    assert records.read_meta(out)["outputs_hash"] == records.outputs_hash(out) == records.outputs_hash(src)
    assert sorted(p.name for p in out.parent.iterdir()) == ["a-b", "a-b.meta.json", "other-cell"]
    assert not [p for p in tmp_path.iterdir() if ".tmp-" in p.name]


def test_returned_cell_with_wrong_bytes_or_names_is_refused_and_nothing_written(tmp_path):
    from pipeline.executors import ExecutorError, write_returned

    payload, _ = _payload(tmp_path)
    out = tmp_path / "runs" / "a-b"
    out.parent.mkdir()
    bad = {**payload, "files": {**payload["files"], "summary.json": payload["files"]["summary.json"] + b" "}}
    with pytest.raises(ExecutorError, match="do not match the worker's outputs hash"):
        write_returned(out, bad)
    extra = {**payload, "files": {**payload["files"], "../evil": b"x"}}
    with pytest.raises(ExecutorError, match="unexpected files"):
        write_returned(out, extra)
    assert list(out.parent.iterdir()) == [] and not [p for p in tmp_path.iterdir() if ".tmp-" in p.name]


# -- local executor: warm worker processes ------------------------------------------------------------
@pytest.mark.slow
def test_local_executor_matches_sequential_repro_with_a_worker_killed(template, sequential, tmp_path):
    par = clone(template, tmp_path / "par")
    proc = grid(par, "--jobs", "2")
    killed = kill_first_training_cell(par, proc)
    out, err = proc.communicate(timeout=900)
    assert proc.returncode == 0, out + err
    assert f"{killed['cell']}: worker process died (signal SIGKILL); retrying (attempt 2 of 3)" in out
    assert f"{killed['cell']}: ran, attempt 2" in out and "with 2 job(s) (local executor)" in out
    assert_same_as_sequential(sequential, par)
    assert_runs_once(sqlite_runs(par), par, killed["cell"])


@pytest.mark.slow
def test_local_executor_a_failing_cell_is_named_and_the_others_go_on(tmp_path):
    study = {
        **GRID,
        "grid": {"variants": ["bn"], "datasets": ["synthetic", "tiny"]},
        "datasets": {
            **GRID["datasets"],
            "tiny": {"kind": "synthetic", "input_mean": 1.0, "dim": 6, "classes": 3, "samples": 10},
        },  # fewer examples than a batch: fails in the cell
        "tracking": {"enabled": False},
    }
    (tmp_path / "study.yaml").write_text(yaml.safe_dump(dvcp._params(study), sort_keys=False))
    proc = subprocess.run(
        [
            sys.executable,
            "-m",
            "pipeline.grid",
            "--params",
            "study.yaml",
            "--runs",
            "r",
            "--report",
            "rep",
            "--jobs",
            "2",
        ],
        cwd=tmp_path,
        env={**os.environ, **QUIET},
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert proc.returncode == 1, proc.stdout + proc.stderr
    assert "bn-tiny: FAILED" in proc.stdout and "bn-synthetic: ran" in proc.stdout
    assert "1 cell(s) failed: bn-tiny" in proc.stderr and "datasets.tiny" in proc.stderr
    records.read_cell(tmp_path / "r" / "bn-synthetic")
    assert sorted(p.name for p in (tmp_path / "r").iterdir()) == ["bn-synthetic", "bn-synthetic.meta.json"]


@pytest.mark.slow
def test_local_executor_ctrl_c_stops_cells_killed_and_writes_nothing_half(tmp_path):
    study = {
        **GRID,
        "grid": {"variants": ["center_detached", "bn", "none"], "datasets": ["synthetic"]},
        "train": {**GRID["train"], "steps": 2000},
    }
    d = _study(tmp_path, **study)
    e = {**os.environ, **QUIET, "MLFLOW_TRACKING_URI": f"sqlite:///{d / 'mlflow.db'}"}
    proc = grid(d, "--params", "study.yaml", "--runs", "r", "--report", "rep", "--jobs", "1", env=e)
    kill_first_training_cell(d, proc, sig=signal.SIGINT)  # Ctrl-C reaches the driver only
    out, err = proc.communicate(timeout=300)
    assert proc.returncode == 130, out + err
    assert "interrupted" in err and "grid of" not in out
    runs = sqlite_runs(d)
    assert runs and not [r for r in runs if r["status"] == "RUNNING"]
    assert {r["status"] for r in runs if r["tags"]["cell"] == "center_detached-synthetic"} == {"KILLED"}
    left = sorted(p.name for p in (d / "r").iterdir()) if (d / "r").exists() else []
    assert left == []  # the interrupted cell is not there, half or whole; nothing else started


# -- ray: a two-node cluster and an MLflow server on PostgreSQL, in a loopback-only namespace ---------
def _netns_reason() -> str | None:
    from pipeline.tracking.server import ServerError, postgres_bin

    try:
        postgres_bin()
    except ServerError as err:
        return str(err)
    if not shutil.which("unshare") or not shutil.which("ip"):
        return "unshare or ip (util-linux, iproute2) not installed: no loopback-only network namespace"
    probe = subprocess.run(["unshare", "-n", "ip", "link", "set", "lo", "up"], capture_output=True, text=True)
    if probe.returncode:
        return f"cannot make a network namespace here (unshare -n: {probe.stderr.strip()[:120]}; needs root)"
    return None


@pytest.mark.slow
def test_ray_two_nodes_postgres_server_worker_killed(template, sequential, tmp_path):
    reason = _netns_reason()
    if reason:
        pytest.skip(reason)
    par = clone(template, tmp_path / "par")
    result_file = tmp_path / "result.json"
    cmd = (
        f"ip link set lo up && exec {sys.executable} {ROOT / 'tests' / 'scaleout_cluster.py'} "
        f"--repo {par} --out {result_file} --kill"
    )
    proc = subprocess.run(
        ["unshare", "-n", "bash", "-c", cmd],
        env={**os.environ, **QUIET, "PYTHONPATH": str(ROOT)},
        capture_output=True,
        text=True,
        timeout=1500,
    )
    assert proc.returncode == 0 and result_file.exists(), proc.stdout[-3000:] + proc.stderr[-3000:]
    result = json.loads(result_file.read_text())
    assert result["rc"] == 0, result["stdout"][-3000:] + result["stderr"][-3000:]
    assert result["killed"], "no cell was seen training"
    assert "will be retried" in result["stdout"] + result["stderr"]  # Ray's own retry of the lost task
    assert "with 2 job(s) (ray executor)" in result["stdout"]
    assert result["leftovers"] == []  # PostgreSQL, the MLflow server, both Ray nodes: stopped by pid
    assert_same_as_sequential(sequential, par)
    assert_runs_once(result["runs"], par, result["killed"]["cell"])


# -- issue 18: a tracking server that dies mid-grid; two grids, or a grid and `dvc repro`, on one repo ----------
def _runs_in(db: Path) -> int:
    """Runs in a SQLite store, read-only (never an MlflowClient beside the cells migrating it)."""
    from tests.test_safety import _run_count

    return _run_count(db)


def _wait_until_training(db: Path, proc: subprocess.Popen, runs: int) -> None:
    deadline = time.monotonic() + 300
    while _runs_in(db) < runs:
        assert proc.poll() is None, proc.communicate()
        assert time.monotonic() < deadline, "no cell was seen training"
        time.sleep(0.1)


@pytest.mark.slow
def test_local_executor_survives_a_tracking_server_that_dies(tmp_path, mlflow_server):
    """Item 4: the server died mid-grid: one cell reported "ran" with its runs RUNNING, the other failed
    but wrote its folder, and the grid crashed in its last sweep with a traceback. Now every cell is
    FAILED with one line, none is written, and the grid ends with one line about the sweep, exit 1."""
    study = {
        **GRID,
        "grid": {"variants": ["bn"], "datasets": ["synthetic", "shifted"]},
        "train": {**GRID["train"], "steps": 5000},
    }
    d = _study(tmp_path, **study)
    e = {**os.environ, **QUIET, "MLFLOW_TRACKING_URI": mlflow_server.uri}
    proc = grid(d, "--params", "study.yaml", "--runs", "r", "--report", "rep", "--jobs", "1", env=e)
    try:
        _wait_until_training(mlflow_server.db, proc, 3)  # the first cell's parent and 2 members exist
        mlflow_server.kill()
        out, err = proc.communicate(timeout=600)
    finally:
        if proc.poll() is None:
            proc.kill()
    assert proc.returncode == 1, out + err
    assert "Traceback" not in err and "Traceback" not in out, err
    progress = sorted(ln.split("] ", 1)[1].split("  (")[0] for ln in out.splitlines() if ln.startswith("["))
    assert progress == ["bn-shifted: FAILED", "bn-synthetic: FAILED"], out
    lines = [ln for ln in err.splitlines() if ln.strip()]
    for cell in ("bn-synthetic", "bn-shifted"):
        assert len([ln for ln in lines if ln.startswith(f"  {cell}: ")]) == 1, err
    first = [ln for ln in lines if ln.startswith("  bn-synthetic: ")][0]
    assert "MLflow run(s) left RUNNING, a later sweep ends them KILLED: the tracking store http" in first, err
    assert any(ln.startswith("normlab: MLflow: runs of dead attempts not closed") for ln in lines), err
    assert "2 cell(s) failed: " in err
    assert not (d / "r").exists() or not list((d / "r").iterdir())  # nothing written, not even a temp folder


@pytest.mark.slow
def test_a_second_grid_or_dvc_repro_beside_a_grid_stops_with_one_line(tmp_path):
    """Item 8: two grids on one repo both trained every cell, and the grid's last sweep ended KILLED the
    runs of a cell trained beside it. Now the repository lock (pipeline/repo_lock.py) stops a second grid
    and `dvc repro` with one line, and the grid's sweep leaves the runs of a live process alone."""
    from pipeline.tracking.runs import CellTracker
    from tests.conftest import make_cell

    d = make_repo(tmp_path / "repo", {**GRID, "train": {**GRID["train"], "steps": 3000}})
    first = grid(d, "--jobs", "1")
    beside = None
    try:
        _wait_until_training(d / "mlflow.db", first, 3)
        # a cell of the grid trained beside it (by `normlab train` outside DVC): its runs, of this live process
        beside = CellTracker(
            make_cell("bn", tracking={"experiment": "normlab"}),
            [(0.1, 0)],
            "train@bn-synthetic",
            uri=f"sqlite:///{d / 'mlflow.db'}",
        )
        beside.start()
        second = subprocess.run(
            [sys.executable, "-m", "pipeline.grid", "--jobs", "1"],
            cwd=d,
            env=env(d),
            capture_output=True,
            text=True,
            timeout=600,
        )
        assert second.returncode == 2, second.stdout + second.stderr
        assert (
            second.stderr.startswith(f"normlab: runs: another grid (pid {first.pid}: ")
            and second.stderr.count("\n") == 1
        ), second.stderr
        repro = subprocess.run(
            [str(BIN / "dvc"), "--wait-for-lock", "repro"],
            cwd=d,
            env=env(d),
            capture_output=True,
            text=True,
            timeout=600,
        )
        assert repro.returncode != 0, repro.stdout + repro.stderr
        ours = [ln for ln in repro.stderr.splitlines() if ln.startswith("normlab: ")]
        assert len(ours) == 1, repro.stderr
        assert f"a grid (pid {first.pid}) is training this repository's cells" in ours[0], repro.stderr
        out, err = first.communicate(timeout=900)
    finally:
        if first.poll() is None:
            first.kill()
    assert first.returncode == 0, out + err
    runs = sqlite_runs(d)
    mine = {beside.parent_id, *beside.child_ids}
    assert {r["status"] for r in runs if r["id"] in mine} == {"RUNNING"}
    assert all("normlab.closed_by" not in r["tags"] for r in runs if r["id"] in mine)
    beside.finish("KILLED")
    assert_runs_once([r for r in runs if r["id"] not in mine], d, None)  # every cell trained once
    assert "Data and pipelines are up to date" in dvcp.dvc(d, "status")


# -- issue 21: `make repro` trains on every core -------------------------------------------------
@pytest.mark.parametrize(
    "cores,available_kib,expected",
    [
        (4, 10 * 1024 * 1024, 4),  # cores bind
        (4, 2 * 1024 * 1024 + 512 * 1024, 2),  # memory binds: one worker per GiB available
        (4, 300 * 1024, 1),  # never fewer than one
        (1, 64 * 1024 * 1024, 1),
    ],
)
def test_default_jobs_are_the_usable_cores_at_most_one_per_gib(cores, available_kib, expected, tmp_path, monkeypatch):
    from pipeline.grid import default_jobs

    monkeypatch.setattr(os, "sched_getaffinity", lambda pid: set(range(cores)))
    meminfo = tmp_path / "meminfo"
    meminfo.write_text(f"MemTotal:       99999999 kB\nMemAvailable:   {available_kib} kB\nCached:  1 kB\n")
    assert default_jobs(meminfo) == expected
    assert default_jobs(tmp_path / "absent") == cores  # no /proc/meminfo: the cores alone


def test_make_repro_runs_the_grid_on_every_core_unless_told(tmp_path):
    # The README's command is the parallel grid (DVC records each cell; tested above to equal a sequential
    # `dvc repro`), its worker count left to pipeline.grid's default unless JOBS is given.
    def dry(*extra):
        proc = subprocess.run(
            ["make", "-n", "-o", ".venv/.installed", "repro", *extra], cwd=ROOT, capture_output=True, text=True
        )
        assert proc.returncode == 0, proc.stderr
        return proc.stdout

    default, one = dry(), dry("JOBS=1")
    assert "-m pipeline.grid" in default and "--jobs" not in default and "dvc repro" not in default
    assert "-m pipeline.grid --jobs 1" in one
