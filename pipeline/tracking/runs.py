"""MLflow records of a cell: one parent run per cell, one child run per member.

    from pipeline.tracking.runs import CellTracker   # used by pipeline.cell.run_cell (via pipeline.tracking.process)

Every run carries MLflow's own context tags (mlflow.source.name/type, mlflow.source.git.commit,
mlflow.user) and the cell's (variant, dataset, lr, seed ...). Each run records the cell's training
split as a dataset input (name = the data set's name, MLflow's digest of the arrays). A finished
parent run carries the tag diverged_members and one figure, figures/b_norm_loss.png (||b|| and loss
per lr, log scales). Training does not judge its members: the cell's numbers (frac_trained,
frac_diverged, frac_w_grew, best_full_loss_train, best_full_acc_train, largest_trained_lr) are
logged onto this run by the report, at the report's thresholds (pipeline/report/mlflow_run.py). The experiment is tagged
mlflow.experimentKind = custom_model_development, so the UI treats it as model training.
The store is `MLFLOW_TRACKING_URI` if set, else `sqlite:///<repo>/mlflow.db` (pipeline.spec.environment). Metrics go
through `MlflowClient.log_batch` (one SQLite transaction each, ~0.05 ms a value instead of ~7 ms
per `log_metric`), flushed by a Lightning callback every `tracking.flush_every` steps; a run's
params, last metrics and closing tags share one request. Runs always end FINISHED, FAILED or
KILLED, never RUNNING.
"""

from __future__ import annotations

import contextlib
import os
import signal
import socket
import threading
import time
from dataclasses import dataclass
from pathlib import Path

from pipeline.config import CellSettings, ConfigError
from pipeline.repo_lock import GRID_ENV
from pipeline.spec import names
from pipeline.spec.environment import tracking_uri, workspace_root  # noqa: F401 (the rule's owner; re-exported)

# no usage telemetry from MLflow in anything that records runs: importing `pipeline` applied
# pipeline.spec.environment (a user opts in by setting MLFLOW_DISABLE_TELEMETRY=false DO_NOT_TRACK=false)
BATCH_LIMIT = 1000  # MLflow's limit of metrics per log_batch request
PAGE = 1000  # runs per search request of a sweep (it pages through all of them)
EXPERIMENT_KIND_TAG = "mlflow.experimentKind"  # the UI's experiment type (its own selector sets this tag)
EXPERIMENT_KIND = "custom_model_development"  # "model training": runs table, not the GenAI overview
FIGURE = "figures/b_norm_loss.png"  # the cell's own figure, on its parent run
GRID_TAG = "normlab.grid"  # the grid that ran a cell (its GRID_ENV, host:pid:start): its last sweep closes only these


def _proc_start(pid: int) -> str | None:
    """Start time of a live process (clock ticks since boot, /proc), to tell a live pid from a reused
    one; None for a process that is gone or a zombie (dead, not yet reaped by its parent)."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except (OSError, IndexError):
        return None
    return None if fields[0] in ("Z", "X") else fields[19]


class TrackingError(RuntimeError):
    """The tracking store failed while a cell recorded itself (a server that died, a full disk): the
    message is the one line shown. A cell whose records are incomplete is not written."""


def first_line(exc: BaseException, limit: int = 200) -> str:
    text = str(exc).strip()
    return text.splitlines()[0][:limit] if text else type(exc).__name__


@dataclass(frozen=True)
class ProcessId:
    """A process as the orphan sweep needs it: host, pid, and its start time (a reused pid differs)."""

    host: str
    pid: int
    start: str | None  # clock ticks since boot (/proc); None where it could not be read

    @classmethod
    def current(cls) -> ProcessId:
        return cls(socket.gethostname(), os.getpid(), _proc_start(os.getpid()))

    def tags(self, name: str) -> dict[str, str]:
        """`name` for people to read (host:pid:start) and one tag per field for the sweep to read."""
        start = self.start or "?"
        return {
            name: f"{self.host}:{self.pid}:{start}",
            f"{name}.host": self.host,
            f"{name}.pid": str(self.pid),
            f"{name}.start": start,
        }

    @classmethod
    def from_tags(cls, tags: dict, name: str) -> ProcessId | None:
        """The process recorded under `name` by tags(); None where the run has no such fields."""
        try:
            start = tags[f"{name}.start"]
            return cls(tags[f"{name}.host"], int(tags[f"{name}.pid"]), None if start == "?" else start)
        except (KeyError, ValueError):
            return None


def process_tag() -> dict[str, str]:
    """The `normlab.proc` tags of this process: the one that closes the runs it tags."""
    return ProcessId.current().tags("normlab.proc")


def _process_gone(proc: ProcessId | None) -> bool:
    """True only when the tagged process ran on this host and is not running any more."""
    if proc is None or proc.host != socket.gethostname() or proc.start is None:
        return False
    return _proc_start(proc.pid) != proc.start


def process_alive(proc: ProcessId | None) -> bool:
    """True when the tagged process ran on this host and still runs (the same pid and start time)."""
    return (
        proc is not None
        and proc.host == socket.gethostname()
        and proc.start is not None
        and _proc_start(proc.pid) == proc.start
    )


def search_all(client, experiment_ids: list[str], query: str) -> list:
    """Every run `query` matches, page by page (MLflow's page tokens). All pages are read before the
    caller changes any run: the SQL store's token is an offset, so closing runs that match
    `attributes.status = 'RUNNING'` between pages would skip as many others."""
    runs, token = {}, None
    while True:  # oldest first: runs started meanwhile join the end instead of shifting the pages
        page = client.search_runs(
            experiment_ids, query, max_results=PAGE, order_by=["attributes.start_time ASC"], page_token=token
        )
        runs.update((run.info.run_id, run) for run in page)
        token = page.token
        if not token or not page:
            return list(runs.values())


def close_orphans(client, experiment_ids: list[str], cell: str | None = None, stop=lambda: False) -> list[str]:
    """End KILLED every normlab run left RUNNING by a process of this host that is gone (SIGKILL,
    power loss): it can never close them itself. Runs of other hosts or live processes are left.
    `stop()` true ends the sweep early (a cell being stopped; the next sweep goes on)."""
    query = "attributes.status = 'RUNNING' and tags.`normlab.kind` != ''"
    if cell:
        query += f" and tags.cell = '{cell}'"
    closed = []
    for run in search_all(client, experiment_ids, query):
        if stop():
            break
        if _process_gone(ProcessId.from_tags(run.data.tags, "normlab.proc")):
            client.set_tag(run.info.run_id, "normlab.closed_by", "orphan sweep: its process is gone")
            client.set_terminated(run.info.run_id, status="KILLED")
            closed.append(run.info.run_id)
    return closed


@contextlib.contextmanager
def signals_deferred():
    """Hold SIGINT/SIGTERM while runs are being closed; they are delivered right after.
    (Python runs signal handlers in the main thread, so a recording handler is enough.)"""
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    pending: list[int] = []
    old = {s: signal.signal(s, lambda signum, frame: pending.append(signum)) for s in (signal.SIGINT, signal.SIGTERM)}
    try:
        yield
    finally:
        for s, handler in old.items():
            signal.signal(s, handler)
        if pending:
            signal.raise_signal(pending[0])


def connect(uri: str | None = None):
    """An MlflowClient for a store that answers, or a ConfigError naming the URI."""
    uri = uri or tracking_uri()
    from pipeline.config import check_tracking_uri

    check_tracking_uri(uri)  # before importing MLflow: a malformed URI is a one-line error in a second
    if uri.startswith("http"):
        # fail fast on an unreachable server instead of MLflow's minutes of retries
        os.environ.setdefault("MLFLOW_HTTP_REQUEST_MAX_RETRIES", "0")
        os.environ.setdefault("MLFLOW_HTTP_REQUEST_TIMEOUT", "5")
    _probe_database(uri)
    from mlflow.tracking import MlflowClient

    try:
        with _sqlite_init_lock(uri):  # cells started side by side must not migrate a new store twice
            client = MlflowClient(uri)
            client.search_experiments(max_results=1)
    except Exception as exc:  # noqa: BLE001 - any failure here means "store not usable"
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise ConfigError(f"MLFLOW_TRACKING_URI: tracking store {uri} is not reachable ({first[:160]})") from None
    return client


DB_CONNECT_TIMEOUT_S = 10  # one connection attempt to a database store (PostgreSQL, MySQL), at most this long


def _probe_database(uri: str) -> None:
    """One connection to a database store, before MLflow makes its own: MLflow's SQLAlchemy store
    retries an engine that cannot connect 10 times with backoff (mlflow.store.db.utils, MAX_RETRY_COUNT:
    ~100 s, not configurable by any setting), so an unreachable PostgreSQL took 108 s and a page of
    warnings before its one line. A ConfigError naming the URI (password masked) instead; a store that
    answers is left to MLflow. The URI's own connect_timeout, if it has one, is kept."""
    dialect = uri.split(":", 1)[0].split("+")[0].lower()
    if dialect not in ("postgresql", "mysql", "mssql"):
        return
    import sqlalchemy
    from sqlalchemy.pool import NullPool

    try:
        url = sqlalchemy.engine.make_url(uri)
        shown = url.render_as_string(hide_password=True)
    except Exception:  # noqa: BLE001 - check_tracking_uri passed it; MLflow will word what it dislikes
        return
    args = {} if dialect == "mssql" or "connect_timeout" in url.query else {"connect_timeout": DB_CONNECT_TIMEOUT_S}
    try:
        engine = sqlalchemy.create_engine(url, poolclass=NullPool, connect_args=args)
        with engine.connect():
            pass
        engine.dispose()
    except ModuleNotFoundError as exc:
        from pipeline.spec.extras import EXTRAS

        how = (
            f"pip install 'normlab[{EXTRAS[exc.name]}]'"
            if exc.name in EXTRAS
            else "install it, or use postgresql+psycopg:// (pip install 'normlab[server]')"
        )
        raise ConfigError(
            f"MLFLOW_TRACKING_URI: the {dialect} driver for {shown} is not installed ({exc.name}); {how}"
        ) from None
    except Exception as exc:  # noqa: BLE001 - any failure to connect means "store not usable"
        first = str(getattr(exc, "orig", None) or exc).strip().splitlines()
        raise ConfigError(
            f"MLFLOW_TRACKING_URI: tracking store {shown} is not reachable "
            f"({(first[0] if first else type(exc).__name__)[:160]})"
        ) from None


@contextlib.contextmanager
def _sqlite_init_lock(uri: str):
    if not uri.startswith("sqlite:///"):
        yield
        return
    import fcntl

    db = Path(uri[len("sqlite:///") :])
    db.parent.mkdir(parents=True, exist_ok=True)
    with open(db.with_name(db.name + ".init-lock"), "w") as fh:
        fcntl.flock(fh, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(fh, fcntl.LOCK_UN)


def experiment_id(client, name: str, uri: str) -> str:
    exp = client.get_experiment_by_name(name)
    if exp is not None:
        if EXPERIMENT_KIND_TAG not in (exp.tags or {}):  # a kind the user chose in the UI stays
            client.set_experiment_tag(exp.experiment_id, EXPERIMENT_KIND_TAG, EXPERIMENT_KIND)
        return exp.experiment_id
    # a SQLite store keeps its artifacts beside the .db file, whatever the working directory;
    # a server decides for itself
    location = None
    if uri.startswith("sqlite:///"):
        location = (Path(uri[len("sqlite:///") :]).resolve().parent / "mlruns").as_uri()
    try:
        return client.create_experiment(name, artifact_location=location, tags={EXPERIMENT_KIND_TAG: EXPERIMENT_KIND})
    except Exception:  # another cell created it a moment ago
        return client.get_experiment_by_name(name).experiment_id


def dataset_inputs(name: str, features, targets) -> list:
    """MLflow's DatasetInput of a training split (its digest computed here, from the arrays)."""
    import mlflow.data
    from mlflow.entities import DatasetInput, InputTag
    from mlflow.utils.mlflow_tags import MLFLOW_DATASET_CONTEXT

    entity = mlflow.data.from_numpy(features, targets=targets, name=name)._to_mlflow_entity()
    return [DatasetInput(entity, tags=[InputTag(MLFLOW_DATASET_CONTEXT, "train")])]


def source_tags(context: dict[str, str]) -> dict[str, str]:
    """MLflow's context tags with the cell's entry point (names.TRAIN_ENTRY) as the source, however the
    cell was launched: MLflow reads sys.argv[0], which is `normlab train`, a grid worker or DVC's
    `python -m` path; its git helpers then find the commit of the checkout the code ran from."""
    from mlflow.utils.git_utils import get_git_branch, get_git_commit, get_git_repo_url
    from mlflow.utils.mlflow_tags import MLFLOW_GIT_BRANCH, MLFLOW_GIT_COMMIT, MLFLOW_GIT_REPO_URL, MLFLOW_SOURCE_NAME

    entry = str(Path(__file__).resolve().parents[2] / names.TRAIN_ENTRY)
    source = context.get(MLFLOW_SOURCE_NAME, "")
    if context.get(MLFLOW_GIT_COMMIT) and os.path.isfile(source) and os.path.realpath(source) == entry:
        return context  # launched as `python -m pipeline.train`: MLflow already read this file's checkout
    git = {
        MLFLOW_GIT_COMMIT: get_git_commit(entry),
        MLFLOW_GIT_BRANCH: get_git_branch(entry),
        MLFLOW_GIT_REPO_URL: get_git_repo_url(entry),
    }
    return {**context, MLFLOW_SOURCE_NAME: entry, **{k: v for k, v in git.items() if v}}


def member_params(cell: CellSettings, lr: float, seed: int) -> dict[str, str]:
    """A member run's params: what varies across a cell's members (lr, seed) and the settings its
    variant states in params.yaml (`norm`, `affine`, `refresh_every` ...; pydantic's fields set).
    Every other setting is the same for all members and is on the parent run: ~50 params per member
    run buried the few that tell members apart (issue 20 item 5)."""
    own = {f"variant.{k}": str(getattr(cell.variant, k)) for k in sorted(cell.variant.model_fields_set)}
    return {**own, "optim.lr": str(lr), "seed": str(seed)}


class CellTracker:
    """Parent + child runs of one cell, and the time spent in MLflow calls.

    Calls per run (issue 11: each MLflow call costs ~5-10 ms on SQLite, whatever it carries):
    create_run with its tags; one log_batch with its params, the metrics of the last flush and the
    final tags (earlier flushes, when `tracking.flush_every` < steps, go asynchronously during
    training and carry the params instead); log_inputs; set_terminated."""

    def __init__(self, cell: CellSettings, members: list[tuple[float, int]], stage: str, uri: str | None = None):
        self.cell, self.members, self.stage = cell, members, stage
        self.uri = uri or tracking_uri()
        self.seconds = 0.0
        self.parent_id: str | None = None
        self.child_ids: list[str] = []
        self._pending: list = []  # RunOperations of asynchronous log_batch calls
        self._params: dict[str, list] = {}  # run id -> Params not sent yet (they go with its first batch)
        self._final: dict[int, list] = {}  # member -> Metrics of the last flush (sent by finish)
        # flushes during training go through MLflow's writer thread (overlapping training in this
        # process); a tracking process of its own (pipeline.tracking.process) writes them at once
        self.asynchronous = True
        self._members_closed = False
        self.cell_proc: ProcessId | None = None  # the training process, when another process tracks
        # set (by a tracking process's signal handler) when the cell is being stopped: the long loops
        # (the orphan sweep, creating the runs) end early, so the cell's signal is obeyed at once
        self.stopped = False

    def _timed(self, fn, *a, **kw):
        t0 = time.perf_counter()
        try:
            return fn(*a, **kw)
        finally:
            self.seconds += time.perf_counter() - t0

    def start(self) -> None:
        """Connect (an unreachable store raises ConfigError here, before any training), then the runs."""
        self.connect()
        self.create_runs()

    def connect(self) -> None:
        from pipeline.tracking.failures import quiet_store_errors

        t0 = time.perf_counter()
        quiet_store_errors()  # a store failure is said once, in the cell's line, not in MLflow's tracebacks
        self.client = connect(self.uri)
        self.experiment_id = experiment_id(self.client, self.cell.tracking.experiment, self.uri)
        close_orphans(
            self.client,
            [self.experiment_id],
            self.cell.name,  # runs of a killed earlier try
            stop=lambda: self.stopped,
        )
        self.seconds += time.perf_counter() - t0

    def create_runs(self) -> None:
        from mlflow.entities import Param
        from mlflow.tracking.context.registry import resolve_tags

        from pipeline.records import config_hash

        if self.stopped:  # stopped while connecting: the cell trains nothing, so no run is made
            return
        t0 = time.perf_counter()
        # MLflow's own context tags (source, git commit, user), then the cell's
        common = {
            **source_tags(resolve_tags()),
            "variant": self.cell.variant_name,
            "dataset": self.cell.dataset_name,
            "norm": self.cell.variant.norm,
            "dvc_stage": self.stage,
            "cell": self.cell.name,
            **process_tag(),  # the process that closes these runs (orphan sweep)
            **(self.cell_proc or ProcessId.current()).tags("normlab.cell_proc"),  # the one that trains them
            "normlab.config_hash": config_hash(self.cell),
        }
        if os.environ.get("DVC_EXP_NAME"):
            common["dvc_experiment"] = os.environ["DVC_EXP_NAME"]
        if os.environ.get(GRID_ENV):  # the grid that runs this cell: its last sweep closes only its own runs
            common[GRID_TAG] = os.environ[GRID_ENV]
        flat = {k: v for k, v in self.cell.flat().items() if k not in ("optim.lrs", "optim.seeds")}
        parent = self.client.create_run(
            self.experiment_id, run_name=names.parent_run_name(self.cell.name), tags={**common, "normlab.kind": "cell"}
        )
        self.parent_id = parent.info.run_id
        self._params[self.parent_id] = [
            Param(k, v)
            for k, v in {
                **flat,
                "optim.lrs": str(list(self.cell.optim.lrs)),
                "optim.seeds": str(list(self.cell.optim.seeds)),
            }.items()
        ]
        for lr, seed in self.members:
            if self.stopped:  # the cell is being stopped: the runs made so far are closed KILLED
                break
            tags = {
                **common,
                "normlab.kind": "member",
                "mlflow.parentRunId": self.parent_id,
                "seed": str(seed),
                "lr": str(lr),
                "diverged": "false",
            }
            run = self.client.create_run(
                self.experiment_id, run_name=names.member_run_name(self.cell.name, lr, seed), tags=tags
            )
            self.child_ids.append(run.info.run_id)
            self._params[run.info.run_id] = [Param(k, v) for k, v in member_params(self.cell, lr, seed).items()]
        self.seconds += time.perf_counter() - t0

    def _batch(self, run_id: str, metrics=(), tags=(), synchronous: bool = True) -> None:
        """One log_batch (more only past MLflow's per-request limits: 100 params, 100 tags, 1000
        entities) with the run's params not sent yet, `metrics` and `tags`."""
        params, metrics, tags = self._params.pop(run_id, []), list(metrics), list(tags)
        while params or metrics or tags:
            p, t = params[:100], tags[:100]
            m = metrics[: BATCH_LIMIT - len(p) - len(t)]
            params, tags, metrics = params[len(p) :], tags[len(t) :], metrics[len(m) :]
            try:
                op = self.client.log_batch(run_id, metrics=m, params=p, tags=t, synchronous=synchronous)
            except Exception:
                self._params[run_id] = p + params  # not sent: they go with the run's closing request
                raise
            if not synchronous:  # MLflow's writer thread overlaps the SQLite work with training
                self._pending.append(op)

    def log_dataset(self, features, targets) -> None:
        """The cell's training split (the arrays the members train on) as a dataset input of every
        run: name = the data set's name, digest = MLflow's hash of the arrays (a changed data set
        shows as a new digest), context "train"."""
        self.log_inputs(dataset_inputs(self.cell.dataset_name, features, targets))

    def log_inputs(self, inputs: list) -> None:
        t0 = time.perf_counter()
        try:
            with self._recording():
                for run_id in [self.parent_id, *self.child_ids]:
                    self.client.log_inputs(run_id, datasets=inputs)
        finally:
            self.seconds += time.perf_counter() - t0

    @contextlib.contextmanager
    def _recording(self):
        """A store failing during training is a TrackingError (one line), which stops the cell."""
        try:
            yield
        except Exception as exc:  # noqa: BLE001 - whatever MLflow or the network raised
            raise self.failure(exc) from exc

    def failure(self, exc: BaseException, ended: str | None = None) -> TrackingError:
        """The store failed: one line naming it, what happened and what to do (and how the runs ended)."""
        from pipeline.tracking.failures import store_failure

        runs = f"; its runs ended {ended}" if ended else ""
        return TrackingError(f"{self.cell.name}: recording into MLflow failed: {store_failure(self.uri, exc)}{runs}")

    def log_rows(
        self, rows: dict[int, list[tuple[int, str, float]]], final: bool = False, diverged: dict[int, int] | None = None
    ) -> None:
        """rows: member -> (step, key, value); `diverged`: member -> the step it diverged at (the final
        flush). A flush during training is sent now; the final one goes with each run's closing tags
        in one request: at once in a tracking process of its own, else by finish()."""
        from mlflow.entities import Metric

        now = int(time.time() * 1000)
        for member, member_rows in rows.items():
            if member >= len(self.child_ids):  # its run was never made (the cell was stopped meanwhile)
                continue
            metrics = [Metric(k, float(v), now, int(s)) for s, k, v in member_rows]
            if final:
                self._final.setdefault(member, []).extend(metrics)
            else:
                with self._recording():
                    self._timed(self._batch, self.child_ids[member], metrics=metrics, synchronous=not self.asynchronous)
        if final and not self.asynchronous:
            with self._recording():
                self._close_members(diverged or {})

    def _close_members(self, diverged: dict[int, int]) -> None:
        """Each member run's last request: its final metrics, unsent params, and divergence tags."""
        from mlflow.entities import Metric, RunTag

        now = int(time.time() * 1000)
        for j, run_id in enumerate(self.child_ids):
            metrics, tags = self._final.pop(j, []), [RunTag("diverged", str(j in diverged).lower())]
            if j in diverged:
                tags.append(RunTag("diverged_step", str(diverged[j])))
                metrics.append(Metric("diverged_step", float(diverged[j]), now, 0))
            self._batch(run_id, metrics=metrics, tags=tags)
        self._members_closed = True

    def finish(
        self,
        status: str,
        summary=None,
        artifacts: list[Path] = (),
        outputs_hash: str | None = None,
        figure: str | None = None,
        history=None,
    ) -> None:
        """Tag divergence, attach artifacts, and close every run with `status`; Ctrl-C or SIGTERM
        arriving meanwhile waits until every run is closed. The cell's figure: `figure`, a PNG already
        drawn (named as FIGURE's file), else drawn here from `history` (the cell's history frame, in
        memory), else from the history artifact."""
        if self.parent_id is None:
            return
        with signals_deferred():
            self._finish(status, summary, artifacts, outputs_hash, figure, history)

    def _finish(self, status, summary, artifacts, outputs_hash, figure=None, history_frame=None) -> None:
        """Raises TrackingError when a record could not be written (the runs then end FAILED, not
        FINISHED) or a run could not be closed (it stays RUNNING until a later sweep ends it KILLED)."""
        from mlflow.entities import RunTag

        t0 = time.perf_counter()
        error = None
        try:
            for op in self._pending:  # every metric is stored before a run is closed
                op.wait()
            self._pending.clear()
            if summary is not None and not self._members_closed:
                self._close_members({m.member: m.diverged_step for m in summary.members if m.diverged})
            for run_id in self.child_ids:  # a run that ended early still gets its params
                if self._params.get(run_id):
                    self._batch(run_id)
            tags = []
            if outputs_hash:  # the report finds the run behind a cell's outputs by this
                tags.append(RunTag("normlab.outputs_hash", outputs_hash))
            if summary is not None:  # a count, not a judgement: the report logs the cell's numbers
                tags.append(RunTag("diverged_members", str(sum(m.diverged for m in summary.members))))
            self._batch(self.parent_id, tags=tags)
            history = next((p for p in artifacts if Path(p).name == "history.parquet"), None)
            if summary is not None and figure is not None and Path(figure).exists():
                self.client.log_artifact(self.parent_id, str(figure), str(Path(FIGURE).parent))
            elif summary is not None and history_frame is not None:
                self._log_figure(history_frame)
            elif summary is not None and history is not None and Path(history).exists():
                self._log_figure(read_figure_columns(history))
            for path in artifacts:
                if Path(path).exists():
                    self.client.log_artifact(self.parent_id, str(path))
        except Exception as exc:  # noqa: BLE001 - the runs are still closed below, as FAILED
            error = exc
            status = "FAILED" if status == "FINISHED" else status  # incomplete records are no finished run
        finally:
            from pipeline.tracking.failures import is_locked

            runs, unclosed = [*self.child_ids, self.parent_id], 0
            for i, run_id in enumerate(runs):
                if run_id == self.parent_id and unclosed and status == "FINISHED":
                    status = "FAILED"  # a cell whose member runs stay RUNNING is not a finished cell
                try:
                    self.client.set_terminated(run_id, status=status)
                except Exception as exc:  # noqa: BLE001 - closing the others matters more
                    unclosed += 1
                    error = error or exc
                    if is_locked(exc):  # each would wait SQLite's 20 s busy timeout in turn: the sweep closes them
                        unclosed += len(runs) - i - 1
                        break
            self.seconds += time.perf_counter() - t0
        if unclosed:
            from pipeline.tracking.failures import store_failure

            raise TrackingError(
                f"{self.cell.name}: {unclosed} of {len(runs)} MLflow run(s) left RUNNING, a later "
                f"sweep ends them KILLED: {store_failure(self.uri, error)}"
            )
        if error is not None:
            raise self.failure(error, ended=status)

    def _log_figure(self, history) -> None:
        from pipeline.tracking.cell_figure import cell_figure

        self.client.log_figure(self.parent_id, cell_figure(history, self.cell.name), FIGURE)


def read_figure_columns(history_file):
    """The columns of a history artifact the cell's figure reads (pipeline.tracking.cell_figure)."""
    import pandas as pd
    import pyarrow.parquet as pq

    from pipeline.tracking.cell_figure import COLUMNS

    have = set(pq.read_schema(history_file).names)
    return pd.read_parquet(history_file, columns=[c for c in COLUMNS if c in have])
