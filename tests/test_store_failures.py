"""Issue 18 item 12: a cell whose tracking store fails mid-cell, or that is stopped while its tracking
process connects, ends with one line and a conventional exit status; nothing is half-written.

- Ctrl-C (SIGINT to the process group, as a terminal sends it) while the tracking process is
  connecting: exit 130, one line, no run left RUNNING, --out not written.
- The SQLite store locked by another connection (`BEGIN EXCLUSIVE`) mid-cell, or its disk full, or
  the disk of the cell's folder full: exit 1, one line naming the store or folder and what to do,
  the earlier cell folder and its meta file as they were. Before: a store failure printed
  MLflow's logged tracebacks around the line, which named neither the store nor a remedy, and a
  full disk under the cell's folder was a Python traceback.

The cells train in this process (pipeline.cell.launch, what the training command runs); the
`tracker_kind` fixture runs each twice: MLflow calls in this process, and in a forked tracking
process (what a cold or warm training command uses).
"""

from __future__ import annotations

import errno
import os
import shutil
import sqlite3
import subprocess
import threading
from pathlib import Path

import pytest
import yaml
from mlflow.tracking import MlflowClient

from pipeline.cell import Launch, launch
from tests.conftest import BASE, merge
from tests.test_tracking import tracker_kind  # noqa: F401  (in this process, and a forked tracking process)

CELL = {
    "optim": {"lrs": [0.05, 0.5], "seeds": [0]},
    "train": {"steps": 30, "log_every": 1, "eval_every": 10, "threads": 1},
    "tracking": {"experiment": "test", "log_every": 1, "flush_every": 5},
}


def _params(folder: Path, **over) -> Path:
    p = folder / "params.yaml"
    p.write_text(yaml.safe_dump(merge(BASE, merge(CELL, over))))
    return p


def _snapshot(out: Path) -> dict[str, bytes]:
    meta = out.parent / f"{out.name}.meta.json"
    return {**{p.name: p.read_bytes() for p in out.iterdir()}, meta.name: meta.read_bytes()}


def _earlier_cell(tmp_path: Path, uri: str, monkeypatch) -> tuple[Path, dict[str, bytes]]:
    """A complete cell written by a first run (20 steps), to be left as it is by the failing one (30)."""
    monkeypatch.setenv("MLFLOW_TRACKING_URI", uri)
    params = _params(tmp_path, train={"steps": 20})
    out = tmp_path / "runs" / "bn-synthetic"
    assert launch(Launch("bn", "synthetic", str(out), str(params))) == 0
    _params(tmp_path)  # the next run: 30 steps, other outputs
    return out, _snapshot(out)


def _the_line(capfd, code: int) -> str:
    err = capfd.readouterr().err
    assert code == 1, err
    assert "Traceback" not in err, err  # MLflow logged the SQL error with its traceback before
    lines = [ln for ln in err.splitlines() if ln.strip()]
    assert len(lines) == 1 and lines[0].startswith("normlab: bn-synthetic: "), err
    return lines[0]


def _around_first_flush(monkeypatch, before, failed=lambda: None) -> None:
    """`before()` runs once, in whichever process records (a forked tracking process inherits this),
    just before the cell's first batch of metrics is written (its runs exist, training is under way);
    `failed()` once that write has failed."""
    real, done = MlflowClient.log_batch, []

    def log_batch(self, run_id, *args, **kwargs):
        if done:
            return real(self, run_id, *args, **kwargs)
        done.append(True)
        before()
        try:
            return real(self, run_id, *args, **kwargs)
        except BaseException:
            failed()
            raise

    monkeypatch.setattr(MlflowClient, "log_batch", log_batch)


def _statuses(db: Path) -> dict[str, list[str]]:
    """train.steps of each attempt -> its runs' statuses (read-only: no MLflow client, no migration). A member
    run carries only what varies across members: its attempt is its parent's train.steps."""
    with sqlite3.connect(f"file:{db}?mode=ro", uri=True) as con:
        rows = con.execute(
            "select coalesce(p.value, pp.value), r.status from runs r "
            "left join params p on p.run_uuid = r.run_uuid and p.key = 'train.steps' "
            "left join tags t on t.run_uuid = r.run_uuid and t.key = 'mlflow.parentRunId' "
            "left join params pp on pp.run_uuid = t.value and pp.key = 'train.steps' "
            "where coalesce(p.value, pp.value) is not null"
        ).fetchall()
    out: dict[str, list[str]] = {}
    for steps, status in rows:
        out.setdefault(steps, []).append(status)
    return {k: sorted(v) for k, v in out.items()}


def test_a_store_locked_mid_cell_is_one_line_naming_it(tmp_path, monkeypatch, capfd):
    """Another connection holds `BEGIN EXCLUSIVE` on mlflow.db from the cell's first flush until that
    write has given up (SQLite's busy timeout, 20 s in MLflow), then lets go: the cell stops, its runs
    end FAILED, one line names the store and the remedy. Through the forked tracking process (the
    training command's path)."""
    import pipeline.tracking.process as tp

    monkeypatch.setattr(tp, "_threads", lambda: 1)
    db = tmp_path / "mlflow.db"
    out, before = _earlier_cell(tmp_path, f"sqlite:///{db}", monkeypatch)
    asked_r, asked_w = os.pipe()
    held_r, held_w = os.pipe()
    gave_up_r, gave_up_w = os.pipe()

    def holder():  # another connection, in this process: BEGIN EXCLUSIVE until the write has failed
        if os.read(asked_r, 1):
            con = sqlite3.connect(db, isolation_level=None)
            con.execute("BEGIN EXCLUSIVE")
            os.write(held_w, b"h")
            os.read(gave_up_r, 1)
            con.execute("ROLLBACK")
            con.close()

    def lock_now():  # in the recording process: asks for the lock and waits until it is held
        os.write(asked_w, b"a")
        os.read(held_r, 1)

    thread = threading.Thread(target=holder, daemon=True)
    thread.start()
    _around_first_flush(monkeypatch, lock_now, lambda: os.write(gave_up_w, b"g"))
    capfd.readouterr()
    try:
        code = launch(Launch("bn", "synthetic", str(out), str(tmp_path / "params.yaml")))
    finally:
        for fd in (asked_w, gave_up_w):  # EOF: the holder returns whatever happened
            os.close(fd)
        thread.join(timeout=120)
        for fd in (asked_r, held_r, held_w, gave_up_r):
            os.close(fd)
    line = _the_line(capfd, code)
    assert (
        line.startswith(
            f"normlab: bn-synthetic: recording into MLflow failed: the tracking store sqlite:///{db} "
            "is locked by another connection ("
        )
        and "end the process holding it" in line
    ), line
    assert line.endswith(f"and run the cell again; its runs ended FAILED; {out} not written"), line
    assert _statuses(db) == {"20": ["FINISHED"] * 3, "30": ["FAILED"] * 3}  # no run left RUNNING
    assert _snapshot(out) == before
    assert not [p.name for p in out.parent.iterdir() if ".tmp-" in p.name or ".old-" in p.name]


# -- a full disk: a small tmpfs (root mounts it), filled to the last byte at the moment of the test ----
@pytest.fixture
def small_disk(tmp_path):
    if os.geteuid() != 0 or not shutil.which("mount"):
        pytest.skip("mounting a small tmpfs needs root")
    disk = tmp_path / "disk"
    disk.mkdir()
    r = subprocess.run(
        ["mount", "-t", "tmpfs", "-o", "size=24m,mode=0700", "tmpfs", str(disk)], capture_output=True, text=True
    )
    if r.returncode:
        pytest.skip(f"cannot mount a tmpfs here ({r.stderr.strip()})")
    try:
        yield disk
    finally:
        subprocess.run(["umount", "-l", str(disk)], capture_output=True)  # lazy: a store handle may linger


def _fill(disk: Path) -> None:
    """Write into `disk` until it has no byte left (ENOSPC), as a disk fills up under a running cell."""
    with open(disk / "filler", "ab", buffering=0) as fh:
        block = b"\0" * (1 << 16)
        while True:
            try:
                fh.write(block)
            except OSError as exc:
                assert exc.errno == errno.ENOSPC, exc
                if len(block) == 1:
                    return
                block = block[: len(block) // 2]


@pytest.mark.usefixtures("tracker_kind")
def test_a_full_disk_under_the_store_mid_cell_is_one_line_naming_it(tmp_path, small_disk, monkeypatch, capfd):
    """The store (and its artifacts) on a disk that fills up at the cell's first flush and stays full."""
    db = small_disk / "mlflow.db"
    out, before = _earlier_cell(tmp_path, f"sqlite:///{db}", monkeypatch)
    _around_first_flush(monkeypatch, lambda: _fill(small_disk))
    capfd.readouterr()
    code = launch(Launch("bn", "synthetic", str(out), str(tmp_path / "params.yaml")))
    line = _the_line(capfd, code)
    assert f"the disk holding the tracking store sqlite:///{db} is full (" in line, line
    assert line.endswith(f"free space there and run the cell again; {out} not written"), line
    (small_disk / "filler").unlink()
    assert _statuses(db)["20"] == ["FINISHED"] * 3 and "FINISHED" not in _statuses(db).get("30", [])
    assert _snapshot(out) == before


def test_a_full_disk_under_the_cells_folder_is_one_line(tmp_path, small_disk, monkeypatch, capfd):
    """The cell's folder on a disk that fills up as its files are written (the store elsewhere): before,
    a Python traceback out of pyarrow. Its runs end FAILED, the earlier folder stays."""
    from pipeline import records

    db = tmp_path / "mlflow.db"
    out = small_disk / "runs" / "bn-synthetic"
    monkeypatch.setenv("MLFLOW_TRACKING_URI", f"sqlite:///{db}")
    assert launch(Launch("bn", "synthetic", str(out), str(_params(tmp_path, train={"steps": 20})))) == 0
    before = _snapshot(out)
    _params(tmp_path)
    real = records.stage_cell

    def stage_on_a_full_disk(*args, **kwargs):
        _fill(small_disk)
        return real(*args, **kwargs)

    monkeypatch.setattr(records, "stage_cell", stage_on_a_full_disk)
    capfd.readouterr()
    code = launch(Launch("bn", "synthetic", str(out), str(tmp_path / "params.yaml")))
    line = _the_line(capfd, code)
    assert line == (
        f"normlab: bn-synthetic: cannot write {out.parent} (No space left on device): free space on "
        f"that disk and run the cell again; {out} not written"
    ), line
    assert _snapshot(out) == before
    assert sorted(p.name for p in out.parent.iterdir()) == ["bn-synthetic", "bn-synthetic.meta.json"]
    assert _statuses(db) == {"20": ["FINISHED"] * 3, "30": ["FAILED"] * 3}


# -- Ctrl-C while the tracking process connects --------------------------------------------------------
class GatedProxy:
    """A TCP proxy on 127.0.0.1 to `upstream_port` that holds every connection until `go` is set;
    `reached` is set by the first one: the tracking process is connecting to the store right then."""

    def __init__(self, upstream_port: int):
        import socket

        self.upstream = upstream_port
        self.listener = socket.create_server(("127.0.0.1", 0))
        self.port = self.listener.getsockname()[1]
        self.reached, self.go = threading.Event(), threading.Event()
        threading.Thread(target=self._accept, daemon=True).start()

    def _accept(self) -> None:
        while True:
            try:
                conn, _ = self.listener.accept()
            except OSError:
                return  # closed
            self.reached.set()
            threading.Thread(target=self._relay, args=(conn,), daemon=True).start()

    def _relay(self, conn) -> None:
        import socket

        self.go.wait()
        with conn, socket.create_connection(("127.0.0.1", self.upstream)) as up:

            def pump(src, dst):
                try:
                    while data := src.recv(65536):
                        dst.sendall(data)
                    dst.shutdown(socket.SHUT_WR)
                except OSError:
                    pass

            back = threading.Thread(target=pump, args=(up, conn), daemon=True)
            back.start()
            pump(conn, up)
            back.join()

    def close(self) -> None:
        self.go.set()
        self.listener.close()


def test_ctrl_c_while_the_tracking_process_connects_is_130_and_one_line(tmp_path, mlflow_server):
    """SIGINT to the command's process group (a terminal's Ctrl-C reaches the cell and its tracking
    process) while the tracking process waits for the store's first answer; the store then answers."""
    import signal
    import sys

    from pipeline.spec import environment

    _params(tmp_path)
    proxy = GatedProxy(int(mlflow_server.uri.rsplit(":", 1)[1]))
    env = {
        **os.environ,
        **environment.NO_TELEMETRY,
        "MLFLOW_TRACKING_URI": f"http://127.0.0.1:{proxy.port}",
        "NORMLAB_WARM": "0",
        "PYTHONPATH": str(Path(__file__).resolve().parents[1]),
    }
    proc = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "pipeline.train",
            "--params",
            "params.yaml",
            "--variant",
            "bn",
            "--dataset",
            "synthetic",
            "--out",
            "runs/bn-synthetic",
        ],
        cwd=tmp_path,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        start_new_session=True,
        preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL),
    )  # as in a terminal
    try:
        assert proxy.reached.wait(timeout=300), "the cell never connected"
        os.killpg(proc.pid, signal.SIGINT)  # the group this test started, by its id
        proxy.go.set()  # the store answers from now on
        out, err = proc.communicate(timeout=300)
    finally:
        proxy.close()
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    assert proc.returncode == 130, err
    assert "Traceback" not in err, err
    assert [ln for ln in err.splitlines() if ln.strip()] == [
        "normlab: interrupted: bn-synthetic not written, its MLflow runs ended KILLED"
    ], err
    assert not (tmp_path / "runs").exists() or not list((tmp_path / "runs").iterdir())
    with sqlite3.connect(f"file:{mlflow_server.db}?mode=ro", uri=True) as con:
        statuses = [s for (s,) in con.execute("select status from runs")]
    assert "RUNNING" not in statuses, statuses  # stopped before any run was made, or those made ended KILLED
