"""A cell's MLflow records written by a forked process, beside training (issue 11).

    from pipeline.tracking.process import make_tracker
    tracker = make_tracker(cell, members, stage)   # a TrackerProcess, or a CellTracker in-process

MLflow costs ~5-10 ms a call on SQLite, ~1 s for a cell's 26 runs: run in this process, that second
adds to the cell's wall time (and MLflow's Python competes with training's for the GIL). A
TrackerProcess forks a child that owns a pipeline.tracking.runs.CellTracker and does every MLflow call,
on another core, while the cell trains; the cell waits for it twice: at start, until the store has
answered (an unreachable one is still a ConfigError before any training), and at finish, until
every run is closed and the child has exited -- so no record is lost once the cell's stage ends.

The child ignores SIGINT (a Ctrl-C reaches the whole process group): the cell tells it how the runs
end (finish(KILLED) on an interrupt), and signals it (SIGTERM) first, so that a child busy sweeping
orphans or creating runs stops there and closes at once what it made. If the cell dies without a
word (SIGKILL), the child sees its pipe close and ends every run KILLED itself. A failure to record
(the store is gone) is sent to the cell at once, which stops at its next flush; a cell whose runs
could not all be written and closed gets a TrackingError from finish() (it is then not written).
Runs carry the child's normlab.proc tag (normlab.cell_proc names the cell's process), so if both
die, the next orphan sweep (pipeline.tracking.runs.close_orphans) closes them.

Only a single-threaded process forks (as the warm server's cells are): forking a threaded one can
deadlock the child; elsewhere (and where fork does not exist) the CellTracker runs in-process.
"""

from __future__ import annotations

import gc
import multiprocessing
import os
import shutil
import signal
import sys
import time
from collections.abc import Sequence
from pathlib import Path

from pipeline.config import CellSettings, ConfigError
from pipeline.spec.environment import tracking_uri
from pipeline.tracking.runs import CellTracker, ProcessId, TrackingError, dataset_inputs, first_line, signals_deferred


def _threads() -> int:
    try:
        return len(os.listdir("/proc/self/task"))
    except OSError:
        return 2  # unknown: do not fork


_WARM = False


def warm_tracking() -> None:
    """Pay once, in a long-lived process that forks cells (the warm server, a grid worker), the first-call
    costs that every tracking process it forks would otherwise pay again: MLflow's SQLAlchemy store
    built and checked, its mappers and statements set up, the lazy imports behind experiments, searches,
    runs, batches, dataset inputs and artifacts, and matplotlib's first drawing of the cell's figure.
    Measured on a default cell (CPU of the forked tracking process): connecting ~250 -> ~60 ms, closing
    the runs ~580 -> ~190 ms, both time the cell waits for.

    Done on a scratch SQLite store in a private temporary folder, removed after, not on the user's
    store: a store cached across cells would outlive a user's `rm mlflow.db`. Its engine keeps no
    connection open (MLflow's NullPool setting, for this engine only; the user's pool-size settings,
    which NullPool refuses, are set aside meanwhile), so nothing crosses a fork, and no thread is started
    (a forking process must stay single-threaded). MLflow's cached run context (the git commit) is
    emptied after, so a cell forked later reads its own. Best effort: a failure only means the tracking
    processes pay these costs themselves. Idempotent per process."""
    global _WARM
    if _WARM:
        return
    _WARM = True  # tried once per process, whatever happens
    import logging
    import tempfile

    from mlflow import environment_variables as ev

    # set aside while the scratch engine is made: NullPool for it, and no pool options NullPool refuses
    pool_env = {
        ev.MLFLOW_SQLALCHEMYSTORE_POOLCLASS.name: "NullPool",
        ev.MLFLOW_SQLALCHEMYSTORE_POOL_SIZE.name: None,
        ev.MLFLOW_SQLALCHEMYSTORE_MAX_OVERFLOW.name: None,
        ev.MLFLOW_SQLALCHEMYSTORE_POOL_RECYCLE.name: None,
        ev.MLFLOW_SQLALCHEMYSTORE_ECHO.name: None,
    }
    saved = {k: os.environ.get(k) for k in pool_env}
    quiet = logging.getLogger("mlflow")
    level = quiet.level
    scratch = None
    try:
        quiet.setLevel(logging.WARNING)  # its "creating tables" lines are about the scratch store
        for k, v in pool_env.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v
        scratch = Path(tempfile.mkdtemp(prefix="normlab-warm-"))  # 0700, ours: removed below
        _exercise(scratch)
    except Exception as exc:  # noqa: BLE001 - best effort: the tracking processes still work, only slower
        print(f"normlab: MLflow warm-up skipped ({type(exc).__name__}: {first_line(exc)})", file=sys.stderr)
    finally:
        for k, v in saved.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v
        quiet.setLevel(level)
        if scratch is not None:
            shutil.rmtree(scratch, ignore_errors=True)
        _forget_run_context()


def _exercise(scratch: Path) -> None:
    """What a cell's tracking process does, once, on a scratch store in `scratch`."""
    import numpy as np
    import pandas as pd
    import sqlalchemy.orm
    from mlflow.entities import Metric, Param, RunTag
    from mlflow.store.tracking.dbmodels import models  # noqa: F401  (MLflow's tables, mapped)

    from pipeline.tracking.cell_figure import COLUMNS, cell_figure
    from pipeline.tracking.runs import close_orphans, connect, experiment_id

    sqlalchemy.orm.configure_mappers()
    uri = f"sqlite:///{scratch / 'warm.db'}"
    client = connect(uri)
    exp = experiment_id(client, "warm-up", uri)
    close_orphans(client, [exp], "warm-up")
    parent = client.create_run(exp, tags={"normlab.kind": "cell"}).info.run_id
    child = client.create_run(exp, tags={"mlflow.parentRunId": parent, "normlab.kind": "member"}).info.run_id
    client.log_batch(child, metrics=[Metric("loss", 1.0, 0, 0)], params=[Param("seed", "0")], tags=[RunTag("a", "b")])
    client.log_inputs(child, datasets=dataset_inputs("warm-up", np.zeros((2, 2)), np.zeros(2)))
    rows = pd.DataFrame({c: [0.0, 10.0] if c == "step" else [1.0, 2.0] for c in COLUMNS})  # two points per column
    client.log_figure(parent, cell_figure(rows, "warm-up"), "figure.png")  # draws it: matplotlib's first figure
    (scratch / "artifact.txt").write_text("warm-up")
    client.log_artifact(parent, str(scratch / "artifact.txt"))
    for run in (child, parent):
        client.set_terminated(run, status="FINISHED")


def _forget_run_context() -> None:
    """Empty the caches of MLflow's run-context providers (its git provider keeps the commit it found, and
    dataset inputs consult it): cells forked from this process later must read the commit of their own
    time, not of the warm-up. MLflow has no public call for this; its registry is iterable and each
    provider keeps a `_cache` dict. The git lookups' objects are collected here, before a gc.freeze()."""
    import gc

    from mlflow.tracking.context.registry import _run_context_provider_registry

    for provider in _run_context_provider_registry:
        cache = getattr(provider, "_cache", None)
        if isinstance(cache, dict):
            cache.clear()
    gc.collect()


def make_tracker(cell: CellSettings, members, stage: str):
    if _threads() == 1 and hasattr(os, "fork"):
        return TrackerProcess(cell, members, stage)
    return CellTracker(cell, members, stage)


def _serve(conn, cells_end, cell: CellSettings, members, stage: str, uri: str, cell_proc: ProcessId) -> None:
    """The child: connect, answer, create the runs, then log what the cell sends until finish."""
    tracker = CellTracker(cell, members, stage, uri)

    def stop(signum, frame):  # the cell is being stopped (TrackerProcess.finish): skip the long loops
        tracker.stopped = True

    signal.signal(signal.SIGINT, signal.SIG_IGN)  # a Ctrl-C reaches the group: the cell decides, then signals
    signal.signal(signal.SIGTERM, stop)
    cells_end.close()  # the cell's end, inherited: only then does the cell's death close the pipe
    gc.freeze()  # the inherited heap (torch, pandas ...) out of the collector: a full collection of it took ~0.4 s
    tracker.asynchronous = False  # this process is the one beside training: no writer thread needed
    tracker.cell_proc = cell_proc
    try:
        tracker.connect()
    except Exception as exc:  # noqa: BLE001 - the cell raises it
        conn.send(("error", _describe(exc)))
        return
    conn.send(("connected", tracker.experiment_id))
    error = None
    try:
        tracker.create_runs()
    except Exception as exc:  # noqa: BLE001 - reported at finish, after closing what exists
        error = exc
        _tell(conn, ("failed", _describe(tracker.failure(error))))  # the cell stops at its first flush
    status, finish = "KILLED", None
    while True:
        try:
            kind, *args = conn.recv()
        except (EOFError, OSError):  # the cell is gone without a word: its runs end KILLED
            break
        if kind == "finish":
            status, finish = args[0], args
            break
        if error is not None:
            continue
        try:
            if kind == "rows":
                tracker.log_rows(*args)
            elif kind == "inputs":
                tracker.log_inputs(*args)
        except Exception as exc:  # noqa: BLE001
            error = exc
        if error is not None:  # the cell stops at its next flush instead of training for nothing
            _tell(conn, ("failed", _describe(error if isinstance(error, TrackingError) else tracker.failure(error))))
    closing = None
    try:
        if error is not None:
            tracker.finish("FAILED" if status == "FINISHED" else status)
        elif finish is not None:
            tracker.finish(*finish)
        else:
            tracker.finish("KILLED")
    except Exception as exc:  # noqa: BLE001
        closing = exc
    # a run left RUNNING says more than the failure before it; else the failure that ended the runs FAILED
    ended = "FAILED" if status == "FINISHED" else status
    error = closing or (
        error
        and (
            TrackingError(f"{error}; its runs ended {ended}")
            if isinstance(error, TrackingError)
            else tracker.failure(error, ended=ended)
        )
    )
    _tell(
        conn,
        ("done", tracker.parent_id, tracker.child_ids, tracker.seconds, None if error is None else _describe(error)),
    )


def _tell(conn, message) -> None:
    try:
        conn.send(message)
    except (OSError, ValueError):
        pass  # the cell is gone: its runs are closed all the same


def _describe(exc: Exception) -> tuple[bool, str]:
    """(a ConfigError?, its one line): what crosses the pipe (exceptions need not pickle)."""
    if isinstance(exc, (ConfigError, TrackingError)):
        return isinstance(exc, ConfigError), str(exc) or type(exc).__name__
    return False, f"{type(exc).__name__}: {first_line(exc)}"


def _raise(error: tuple[bool, str]):
    """Anything the tracking process reports, but a bad store at connect, is a tracking failure."""
    config, message = error
    raise (ConfigError if config else TrackingError)(message)


class TrackerProcess:
    """CellTracker's interface (start, log_dataset, log_rows, finish, parent_id, child_ids, seconds),
    its MLflow calls made by a forked child. `seconds` is the time the cell waited for tracking;
    `child_seconds` the child's own time in MLflow calls."""

    def __init__(self, cell: CellSettings, members, stage: str, uri: str | None = None):
        self.cell, self.members, self.stage = cell, members, stage
        self.uri = uri or tracking_uri()
        self.seconds, self.child_seconds = 0.0, 0.0
        self.experiment_id: str | None = None
        self.parent_id: str | None = None
        self.child_ids: list[str] = []
        self._pid: int | None = None

    def start(self) -> None:
        t0 = time.perf_counter()
        self._conn, child = multiprocessing.Pipe()
        cell_proc = ProcessId.current()
        # os.fork, not multiprocessing.Process: a pool's daemonic worker (pipeline/executors/local.py)
        # may not start a Process, and this child needs nothing of multiprocessing's bootstrap
        pid = os.fork()
        if pid == 0:  # the child: never returns into the cell's code
            code = 1
            try:
                _serve(child, self._conn, self.cell, self.members, self.stage, self.uri, cell_proc)
                code = 0
            finally:
                os._exit(code)
        self._pid = pid
        child.close()
        try:
            kind, value = self._conn.recv()
        except EOFError:
            kind, value = (
                "error",
                (True, f"MLFLOW_TRACKING_URI: the tracking process for {self.uri} exited before connecting"),
            )
        finally:
            self.seconds += time.perf_counter() - t0
        if kind == "error":  # no runs exist: nothing for finish() to close
            self._conn.close()
            os.waitpid(pid, 0)
            self._pid = None
            _raise(value)
        self.experiment_id = value

    def _send(self, *message) -> None:
        t0 = time.perf_counter()
        try:
            if self._conn.poll():  # while the cell trains, the child speaks only when it failed to record
                kind, *rest = self._conn.recv()
                if kind == "failed":
                    _raise(rest[0])
            self._conn.send(message)
        except (OSError, ValueError, EOFError):
            pass  # the child is gone: finish() reports it
        finally:
            self.seconds += time.perf_counter() - t0

    def log_dataset(self, features, targets) -> None:
        t0 = time.perf_counter()
        inputs = dataset_inputs(self.cell.dataset_name, features, targets)  # the digest: here, not pickled arrays
        self.seconds += time.perf_counter() - t0
        self._send("inputs", inputs)

    def log_rows(self, rows: dict[int, list], final: bool = False, diverged: dict[int, int] | None = None) -> None:
        self._send("rows", {m: [(int(s), k, float(v)) for s, k, v in r] for m, r in rows.items()}, final, diverged)

    def finish(
        self,
        status: str,
        summary=None,
        artifacts: Sequence[Path] = (),
        outputs_hash: str | None = None,
        history=None,
    ) -> None:
        """Tell the child how the runs end, and wait until it has closed them and exited. A cell being
        stopped signals the child first, so that it leaves a long sweep or run creation at once.
        `history`: the cell's history frame, from which this process draws the cell's figure."""
        if self._pid is None:
            return
        scratch = None
        with signals_deferred():  # a Ctrl-C now waits until every run is closed
            if status == "KILLED":
                os.kill(self._pid, signal.SIGTERM)  # our own child, not yet reaped: its pid is its own
            # drawn here, while the tracking process is still closing the member runs (it was the longest
            # step after them there); if drawing fails here, the tracking process draws it. Not counted as
            # waiting for MLflow (`seconds`): the clock starts after it.
            scratch, figure = self._draw_figure(history) if status == "FINISHED" and summary else (None, None)
            t0 = time.perf_counter()
            try:
                self._conn.send(("finish", status, summary, [str(p) for p in artifacts], outputs_hash, figure))
                while True:  # "connected" or "failed" may still be unread (a cell stopped early)
                    kind, *rest = self._conn.recv()
                    if kind == "done":
                        self.parent_id, self.child_ids, self.child_seconds, error = rest
                        break
                    if kind == "error":  # it never connected: no run exists (the cell stopped before)
                        error = None
                        break
            except (EOFError, OSError):
                error = (
                    False,
                    f"{self.cell.name}: the tracking process died; its runs are ended KILLED by the next orphan sweep",
                )
            finally:
                self._conn.close()
                os.waitpid(self._pid, 0)
                self._pid = None
                if scratch is not None:  # ours: the figure's folder, logged (copied) by now
                    shutil.rmtree(scratch, ignore_errors=True)
                self.seconds += time.perf_counter() - t0
        if error is not None:
            _raise(error)

    def _draw_figure(self, history) -> tuple[str | None, str | None]:
        """(a private folder, the cell's figure drawn from its history frame as a PNG in it, named as
        runs.FIGURE's file), or (None, None) without a frame or where drawing fails (the tracking process
        then draws it from the history artifact). From the frame in memory, not the Parquet file: reading
        Parquet starts pyarrow's thread pool, and a threaded cell process (a grid worker's next cell)
        could no longer fork its tracking process."""
        import tempfile

        from pipeline.tracking.cell_figure import cell_figure
        from pipeline.tracking.runs import FIGURE

        if history is None:
            return None, None
        scratch = None
        try:
            scratch = tempfile.mkdtemp(prefix="normlab-figure-")  # inside: an unwritable TMPDIR is a failure here
            path = Path(scratch) / Path(FIGURE).name
            cell_figure(history, self.cell.name).savefig(path)
            return scratch, str(path)
        except Exception:  # noqa: BLE001 - the tracking process draws it, and reports what fails there
            if scratch is not None:
                shutil.rmtree(scratch, ignore_errors=True)
            return None, None
