"""Failure modes of issue 7: the user's files, runs never left RUNNING, Ctrl-C, and records made by
`dvc exp run --temp` landing in the workspace's store."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import yaml
from mlflow.tracking import MlflowClient

from pipeline.spec import environment
from pipeline.tracking.runs import CellTracker, close_orphans, process_tag, workspace_root
from tests.conftest import BASE, make_cell, merge

ROOT = Path(__file__).resolve().parents[1]


def _params_file(d: Path, **over) -> Path:
    p = d / "params.yaml"
    p.write_text(yaml.safe_dump(merge(BASE, over)))
    return p


def _env(uri: str) -> dict:
    return {
        **os.environ,
        "MLFLOW_TRACKING_URI": uri,
        "NORMLAB_WARM": "0",
        "PYTHONPATH": str(ROOT),
        **environment.NO_TELEMETRY,
    }


def _interactive_sigint() -> None:
    # a job started in the background (CI, nohup) inherits SIGINT ignored, and Python then keeps it
    # ignored; a terminal's Ctrl-C reaches a foreground process whose SIGINT is the default
    signal.signal(signal.SIGINT, signal.SIG_DFL)


def _train(d: Path, uri: str, out: str, **kw) -> subprocess.Popen:
    cmd = [
        sys.executable,
        "-m",
        "pipeline.train",
        "--params",
        str(d / "params.yaml"),
        "--variant",
        "bn",
        "--dataset",
        "synthetic",
        "--out",
        out,
    ]
    return subprocess.Popen(
        cmd,
        cwd=d,
        env=_env(uri),
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        preexec_fn=_interactive_sigint,
        **kw,
    )


def _runs(uri: str):
    client = MlflowClient(uri)
    exps = [e.experiment_id for e in client.search_experiments()]
    return client.search_runs(exps) if exps else []


def _run_count(db: Path) -> int:
    """Runs in the store, read-only: an MlflowClient here would migrate a new store while the cell
    does (a race that is the test's, not the program's)."""
    import sqlite3

    try:
        with sqlite3.connect(f"file:{db}?mode=ro", uri=True, timeout=1) as con:
            return con.execute("select count(*) from runs").fetchone()[0]
    except sqlite3.Error:
        return 0


def _wait_for_runs(uri: str, proc: subprocess.Popen, timeout: float = 120) -> None:
    t0, db = time.time(), Path(uri[len("sqlite:///") :])
    while time.time() - t0 < timeout:
        assert proc.poll() is None, proc.communicate()
        if db.exists() and _run_count(db) >= 5:  # parent + 4 members: training has started
            return
        time.sleep(0.3)
    raise AssertionError("cell never started")


@pytest.mark.parametrize("target", ["user_folder", "file", "dot", "under_a_file"])
def test_out_never_touches_what_normlab_did_not_create(tmp_path, target):
    _params_file(tmp_path)
    (tmp_path / "mine").mkdir()
    (tmp_path / "mine" / "thesis.tex").write_text("years of work")
    (tmp_path / "notes.txt").write_text("notes")
    out = {"user_folder": "mine", "file": "notes.txt", "dot": ".", "under_a_file": "notes.txt/cell"}[target]
    uri = f"sqlite:///{tmp_path / 'm.db'}"
    proc = _train(tmp_path, uri, out)
    _, err = proc.communicate(timeout=120)
    assert proc.returncode == 2, err
    assert err.startswith("normlab: --out") and err.count("\n") == 1, err
    assert (tmp_path / "mine" / "thesis.tex").read_text() == "years of work"
    assert (tmp_path / "notes.txt").read_text() == "notes"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["mine", "notes.txt", "params.yaml"]  # no run store either


def _long_cell(tmp_path: Path) -> str:
    _params_file(
        tmp_path,
        train={"steps": 20000, "log_every": 1000, "eval_every": 10000, "threads": 1},
        tracking={"experiment": "test", "log_every": 1000, "flush_every": 1000},
    )
    return f"sqlite:///{tmp_path / 'm.db'}"


def _statuses_settle(uri: str, timeout: float = 60) -> set[str]:
    t0 = time.time()
    while time.time() - t0 < timeout:
        statuses = {r.info.status for r in _runs(uri)}
        if "RUNNING" not in statuses:
            return statuses
        time.sleep(0.3)
    return statuses


@pytest.mark.slow
def test_sigkilled_cell_its_tracking_process_ends_the_runs_killed(tmp_path):
    """The cell alone is SIGKILLed: the process that writes its records sees it go and closes them."""
    uri = _long_cell(tmp_path)
    proc = _train(tmp_path, uri, "runs/bn-synthetic")
    try:
        _wait_for_runs(uri, proc)
    finally:
        proc.kill()
        proc.wait()
    assert _statuses_settle(uri) == {"KILLED"}
    assert len(_runs(uri)) == 5
    assert not (tmp_path / "runs" / "bn-synthetic").exists()


@pytest.mark.slow
def test_sigkilled_cell_runs_are_closed_killed_next_time(tmp_path):
    """The cell and its tracking process both SIGKILLed (its process group): the next sweep closes them."""
    uri = _long_cell(tmp_path)
    proc = _train(tmp_path, uri, "runs/bn-synthetic", start_new_session=True)
    try:
        _wait_for_runs(uri, proc)
    finally:
        os.killpg(proc.pid, signal.SIGKILL)
        proc.wait()
    time.sleep(1.0)
    assert {r.info.status for r in _runs(uri)} == {"RUNNING"}  # the failure: nobody closes them
    client = MlflowClient(uri)
    closed = close_orphans(client, [e.experiment_id for e in client.search_experiments()])
    assert len(closed) == 5
    runs = _runs(uri)
    assert {r.info.status for r in runs} == {"KILLED"}
    assert all(r.data.tags["normlab.closed_by"].startswith("orphan sweep") for r in runs)
    assert not (tmp_path / "runs" / "bn-synthetic").exists()


def test_runs_of_live_or_foreign_processes_are_left_alone(tmp_path, mlflow_uri):
    tracker = CellTracker(make_cell("bn", optim={"lrs": [0.1], "seeds": [0]}), [(0.1, 0)], "train@x")
    tracker.start()  # this process: alive
    client = MlflowClient(mlflow_uri)
    other = client.create_run(tracker.experiment_id, tags={"normlab.kind": "cell", "normlab.proc": "elsewhere:1:5"})
    assert close_orphans(client, [tracker.experiment_id]) == []
    tracker.finish("FINISHED")
    assert client.get_run(other.info.run_id).info.status == "RUNNING"


def test_a_signal_while_closing_waits_until_every_run_is_closed(mlflow_uri):
    # Python's own Ctrl-C handler, as in a terminal (a background job may start with SIGINT ignored)
    previous = signal.signal(signal.SIGINT, signal.default_int_handler)
    try:
        _signal_while_closing(mlflow_uri)
    finally:
        signal.signal(signal.SIGINT, previous)


def _signal_while_closing(mlflow_uri):
    cell = make_cell("bn")
    tracker = CellTracker(cell, cell.members(), "train@x")
    tracker.start()
    real = tracker.client.set_terminated
    calls = []

    def interrupted_close(run_id, status):
        if not calls:
            os.kill(os.getpid(), signal.SIGINT)  # Ctrl-C arrives while the first run is being closed
        calls.append(run_id)
        real(run_id, status=status)

    tracker.client.set_terminated = interrupted_close
    with pytest.raises(KeyboardInterrupt):
        tracker.finish("KILLED")
    assert len(calls) == 1 + len(cell.members())
    assert {r.info.status for r in _runs(mlflow_uri)} == {"KILLED"}


@pytest.mark.slow
def test_ctrl_c_exits_130_with_one_line_and_runs_killed(tmp_path):
    uri = _long_cell(tmp_path)
    proc = _train(tmp_path, uri, "runs/bn-synthetic")
    _wait_for_runs(uri, proc)
    time.sleep(1.0)
    proc.send_signal(signal.SIGINT)
    _, err = proc.communicate(timeout=120)
    assert proc.returncode == 130, err
    lines = [ln for ln in err.splitlines() if ln.startswith("normlab:")]
    assert lines == ["normlab: interrupted: bn-synthetic not written, its MLflow runs ended KILLED"], err
    assert {r.info.status for r in _runs(uri)} == {"KILLED"}
    assert not (tmp_path / "runs" / "bn-synthetic").exists()


def test_workspace_root_of_a_dvc_temp_experiment_is_the_users_checkout(tmp_path):
    assert workspace_root(tmp_path / ".dvc" / "tmp" / "exps" / "tmpab12") == tmp_path
    assert workspace_root(tmp_path / "a") == tmp_path / "a"


def test_under_dvc_a_csv_outside_data_is_refused(tmp_path, monkeypatch):
    from pipeline.config import ConfigError, cell_settings
    from tests.conftest import make_params

    f = tmp_path / "d.csv"
    f.write_text("a,label\n1,0\n2,1\n3,0\n")
    params = make_params(datasets={"mine": {"kind": "csv", "path": str(f)}})
    cell_settings(params, "bn", "mine")  # outside DVC: any path
    monkeypatch.setenv("DVC_STAGE", "train@bn-mine")
    with pytest.raises(ConfigError, match=r"datasets\.mine\.path: under `dvc repro` a csv must lie in data/"):
        cell_settings(params, "bn", "mine")


def test_a_dead_unreaped_process_counts_as_gone():
    """A zombie (dead, its parent has not reaped it: a tracking process whose cell was SIGKILLed, under
    an init that does not reap) still has /proc/<pid>/stat with its start time; its runs are orphans."""
    import socket

    from pipeline.tracking.runs import ProcessId, _proc_start, _process_gone

    proc = subprocess.Popen(["sleep", "60"])
    tagged = ProcessId(socket.gethostname(), proc.pid, _proc_start(proc.pid))
    assert tagged.start is not None and not _process_gone(tagged)
    proc.kill()
    os.waitid(os.P_PID, proc.pid, os.WEXITED | os.WNOWAIT)  # returns once it is dead; leaves it unreaped
    assert Path(f"/proc/{proc.pid}/stat").exists()
    assert _process_gone(tagged)
    proc.wait()


# -- issue 18: the sweeps page through every leftover and never close a live process's runs --------------
def _leftovers(client, exp: str, n: int, proc: dict, **tags) -> list[str]:
    return [
        client.create_run(exp, tags={"normlab.kind": "member", "cell": "bn-synthetic", **proc, **tags}).info.run_id
        for _ in range(n)
    ]


def test_the_orphan_sweep_pages_through_every_leftover(mlflow_uri):
    """Item 6: the sweep closed one page (5,000 runs) per call: 44,308 runs were still RUNNING after
    four starts. A store that answers 3 runs a page stands in for that backlog."""
    import socket

    from pipeline.tracking.runs import ProcessId

    client = MlflowClient(mlflow_uri)
    exp = client.create_experiment("sweep")
    gone = ProcessId(socket.gethostname(), os.getpid(), "0").tags("normlab.proc")  # this pid, another start: gone
    orphans = _leftovers(client, exp, 8, gone)
    live = _leftovers(client, exp, 2, process_tag())
    real = client.search_runs

    def three_a_page(experiment_ids, filter_string="", *args, max_results=1000, **kwargs):
        return real(experiment_ids, filter_string, *args, max_results=min(max_results, 3), **kwargs)

    client.search_runs = three_a_page
    assert sorted(close_orphans(client, [exp])) == sorted(orphans)
    assert {client.get_run(r).info.status for r in orphans} == {"KILLED"}
    assert {client.get_run(r).info.status for r in live} == {"RUNNING"}


def test_the_grids_last_sweep_closes_only_its_own_dead_attempts(mlflow_uri):
    """Item 8: a grid's last sweep ended KILLED the runs of a live `dvc repro` cell (any RUNNING run of
    its cells started since the grid began), tagged "its attempt's worker died". Now only runs of its
    own attempts (tagged with the grid) whose process is not alive here."""
    import socket

    from pipeline.grid import close_dead_attempts
    from pipeline.tracking.runs import GRID_TAG, ProcessId

    client = MlflowClient(mlflow_uri)
    exp = client.create_experiment("normlab")
    gone = ProcessId(socket.gethostname(), os.getpid(), "0").tags("normlab.proc")
    remote = ProcessId("another-node", 4242, "17").tags("normlab.proc")  # a Ray node that died with its attempt
    grid = "this-host:1234:99"
    dead = _leftovers(client, exp, 2, gone, **{GRID_TAG: grid}) + _leftovers(client, exp, 1, remote, **{GRID_TAG: grid})
    closing = _leftovers(client, exp, 1, process_tag(), **{GRID_TAG: grid})  # its tracking process still closing it
    repro = _leftovers(client, exp, 2, process_tag())  # a `dvc repro` cell training beside the grid
    other = _leftovers(client, exp, 1, gone, **{GRID_TAG: "this-host:999:1"})  # another grid's
    assert close_dead_attempts(client, "normlab", grid) == 3
    assert {client.get_run(r).info.status for r in dead} == {"KILLED"}
    assert {client.get_run(r).info.status for r in closing + repro + other} == {"RUNNING"}
    assert all("normlab.closed_by" not in client.get_run(r).data.tags for r in closing + repro + other)
