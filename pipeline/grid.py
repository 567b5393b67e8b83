"""Run the grid's stale cells on an executor, record them, then build the report.

    python -m pipeline.grid --jobs 2                                  # 2 warm worker processes here
    python -m pipeline.grid --executor ray --address 10.0.0.5:6379    # a Ray cluster (or RAY_ADDRESS)
    python -m pipeline.grid --params studies/long.yaml --runs runs/long --report reports/long --jobs 2

The DVC study (params.yaml): `dvc status --json` says which `train@<cell>` stages are stale; the
executor (pipeline/executors/, through its Executor protocol) runs them outside DVC's lock; each finished cell is written whole
into runs/<cell> as it completes, DVC's `commit -f train@<cell>` records it (pipeline/dvc_commit.py: in batches, beside the
training), so dvc.lock is what a sequential `dvc repro` writes; then `dvc repro` builds the report.
Another params file (a study beside the default one): no DVC; a cell whose folder under --runs
holds records of the same settings (config hash) is skipped, and the report goes to --report.

One grid at a time on a cell folder: the grid holds pipeline/repo_lock.py's lock from before its
first orphan sweep to its report; a second grid, or `dvc repro` reaching a train stage meanwhile,
is one line and exit 2 (neither waits). Its cells' runs are tagged with the grid (normlab.grid), and
its last sweep ends KILLED only those, never one whose process is alive.
A cell that fails is reported by name and the others go on (exit 1); a tracking store that dies
mid-grid fails each cell with one line, and none of them is written or committed. A worker or node lost
mid-cell: the cell is retried (--retries). Ctrl-C cancels what is queued, stops running cells
with SIGINT (their MLflow runs end KILLED), records the cells already finished, exits 130.
The Ray executor needs a tracking server every node reaches (MLFLOW_TRACKING_URI=http://...,
`make server`), unless Ray runs on this machine only (no --address).
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

from pipeline import repo_lock
from pipeline.spec import environment
from pipeline.spec.names import cell_of_stage, stage_name

BIN = Path(sys.executable).parent


def _dvc(*args: str) -> subprocess.CompletedProcess:
    exe = BIN / "dvc"
    # its own session: a Ctrl-C meant for the cells never cuts DVC off mid-write
    return subprocess.run(
        [str(exe) if exe.exists() else "dvc", *args], capture_output=True, text=True, start_new_session=True
    )


# a warm worker's peak resident memory training a default cell is ~0.6 GiB (benchmark figure 0); one
# worker per GiB available leaves room for the tracking processes and whatever else the machine runs
WORKER_MEMORY = 1 << 30


def default_jobs(meminfo: Path = Path("/proc/meminfo")) -> int:
    """Worker processes when --jobs is not given: every core this process may run on (its CPU affinity,
    which Slurm, taskset and cgroup cpusets set; not the machine's count), at most one per GiB available."""
    try:
        cores = len(os.sched_getaffinity(0))
    except AttributeError:  # no affinity call (macOS)
        cores = os.cpu_count() or 1
    try:
        fields = dict(line.split(":", 1) for line in meminfo.read_text().splitlines())
        available = int(fields["MemAvailable"].split()[0]) * 1024
    except (OSError, KeyError, ValueError):
        return cores
    return max(1, min(cores, available // WORKER_MEMORY))


def stale_cells(names: list[str]) -> set[str]:
    """The cells whose `train@<cell>` stage DVC would run (DVC's own hashing, through `dvc status`)."""
    proc = _dvc("status", "--json", *map(stage_name, names))
    if proc.returncode:
        raise RuntimeError(f"dvc status failed: {(proc.stderr or proc.stdout).strip()[-300:]}")
    status = json.loads(proc.stdout or "{}")
    return {cell for cell in map(cell_of_stage, status) if cell}


class Committer:
    """DVC's `commit -f` of finished cells' `train@...` stages (pipeline/dvc_commit.py), in a background
    thread, in batches at least `every` seconds apart (DVC's start-up is seconds; the cells go on meanwhile)."""

    def __init__(self, every: float = 30.0):
        self.every = every
        self.pending: list[str] = []
        self.errors: list[str] = []
        self._cv = threading.Condition()
        self._closed = False
        self._thread = threading.Thread(target=self._loop, daemon=True)
        self._thread.start()

    def add(self, cell: str) -> None:
        with self._cv:
            self.pending.append(cell)
            self._cv.notify()

    def _commit(self, cells: list[str]) -> None:
        # DVC's commit for the whole batch in one pass (pipeline/dvc_commit.py: `dvc commit -f` with
        # several targets re-reads dvc.lock per target); its own session, as _dvc's
        proc = subprocess.run(
            [sys.executable, "-m", "pipeline.dvc_commit", *map(stage_name, cells)],
            capture_output=True,
            text=True,
            start_new_session=True,
        )
        if proc.returncode:
            self.errors.append(f"dvc commit {' '.join(cells)}: {(proc.stderr or proc.stdout).strip()[-400:]}")

    def _loop(self) -> None:
        last = time.monotonic()
        while True:
            with self._cv:
                self._cv.wait_for(
                    lambda: self._closed or (self.pending and time.monotonic() - last >= self.every),  # noqa: B023
                    timeout=1.0,
                )
                if self._closed:
                    return
                if not self.pending or time.monotonic() - last < self.every:
                    continue
                batch, self.pending = self.pending, []
            self._commit(batch)
            last = time.monotonic()

    def close(self) -> list[str]:
        """Commit what is left; the errors, if any."""
        with self._cv:
            self._closed = True
            self._cv.notify()
        self._thread.join()
        if self.pending:
            self._commit(self.pending)
            self.pending = []
        return self.errors


def _up_to_date(folder: Path, cell) -> bool:
    from pipeline import records

    try:
        return records.read_summary(folder).config_hash == records.config_hash(cell)
    except records.RecordError:
        return False


def _open_store(experiment: str):
    """(client, experiment id or None) of the tracking store; runs a SIGKILLed process left RUNNING end KILLED."""
    from pipeline.config import ConfigError
    from pipeline.tracking.runs import close_orphans, connect, first_line

    client = connect()  # a ConfigError (one line) when the store does not answer
    try:
        exp = client.get_experiment_by_name(experiment)
        closed = close_orphans(client, [exp.experiment_id]) if exp is not None else []
    except Exception as exc:  # noqa: BLE001 - the store went away after answering
        raise ConfigError(f"MLFLOW_TRACKING_URI: the tracking store failed ({first_line(exc)})") from None
    if closed:
        print(f"closed {len(closed)} MLflow run(s) left RUNNING by a killed process (now KILLED)", file=sys.stderr)
    return client


def close_dead_attempts(client, experiment: str, grid: str) -> int:
    """After the grid: its runs (tagged normlab.grid = `grid`) still RUNNING belong to attempts whose
    worker or node died (on any host: the orphan sweep sees this host only); they end KILLED. Never
    a run whose process still runs on this host, nor another grid's or a `dvc repro`'s (no such tag)."""
    from pipeline.tracking.runs import GRID_TAG, ProcessId, process_alive, search_all

    exp = client.get_experiment_by_name(experiment)
    if exp is None:
        return 0
    n = 0
    for run in search_all(
        client, [exp.experiment_id], f"attributes.status = 'RUNNING' and tags.`{GRID_TAG}` = '{grid}'"
    ):
        if process_alive(ProcessId.from_tags(run.data.tags, "normlab.proc")):
            continue  # e.g. a tracking process still closing its cell's runs itself
        client.set_tag(run.info.run_id, "normlab.closed_by", "grid: its attempt's worker died; cell retried")
        client.set_terminated(run.info.run_id, status="KILLED")
        n += 1
    return n


def main(argv: list[str] | None = None) -> int:
    from pipeline.executors import EXECUTORS

    ap = argparse.ArgumentParser(prog=environment.command_name("pipeline.grid"), description=__doc__.splitlines()[0])
    ap.add_argument("--executor", default="local", help=" | ".join(EXECUTORS) + " (pipeline/executors/)")
    ap.add_argument(
        "-j",
        "--jobs",
        type=int,
        default=None,
        help="local: worker processes (default: the cores this process may use, at most one per GiB of "
        "available memory); ray without --address: CPUs of the local Ray",
    )
    ap.add_argument("--address", help="ray: HOST:PORT of the cluster's head (default: RAY_ADDRESS, else a local Ray)")
    ap.add_argument("--retries", type=int, default=2, help="tries again for a cell whose worker died (default 2)")
    ap.add_argument("--params", default="params.yaml", help="params file (default: the DVC study's params.yaml)")
    ap.add_argument("--runs", default="runs", help="cell folders (another params file only)")
    ap.add_argument("--report", default="reports", help="report folder (another params file only)")
    args = ap.parse_args(argv)
    from pipeline.config import ConfigError, cell_settings, die, load_params

    # bad input: one line, exit 2, before any work
    if args.executor not in EXECUTORS:
        die(f"--executor: must be {' or '.join(EXECUTORS)} (got {args.executor!r})")
    kind = EXECUTORS[args.executor]
    if args.jobs is None:
        args.jobs = default_jobs()
    if args.jobs < 1:
        die(f"--jobs: must be >= 1 (got {args.jobs})")
    if args.retries < 0:
        die(f"--retries: must be >= 0 (got {args.retries})")
    if args.address and not kind.takes_address:
        die(f"--address: only with --executor {' or '.join(n for n, k in EXECUTORS.items() if k.takes_address)}")
    try:
        params = load_params(args.params)
        cells = [cell_settings(params, v, d) for v in params.grid.variants for d in params.grid.datasets]
    except ConfigError as err:
        die(str(err))
    with_dvc = Path(args.params).resolve() == Path("params.yaml").resolve()
    runs_dir = Path("runs") if with_dvc else Path(args.runs)
    if not with_dvc and Path(args.runs).resolve() == Path("runs").resolve():
        die(f"--runs: another params file ({args.params}) needs its own runs folder, not the DVC study's runs/")
    try:  # before the first sweep: one grid at a time on these cells, no `dvc repro` beside it
        lock = repo_lock.grid_lock(runs_dir, Path.cwd())
    except repo_lock.Held as err:
        die(str(err))
    except OSError as err:
        die(f"{runs_dir}: cannot take the grid's lock ({err})")
    os.environ[repo_lock.GRID_ENV] = repo_lock.process_id()  # its cells' runs and its DVC calls carry it
    try:
        return _grid(args, params, cells, kind, with_dvc, runs_dir)
    finally:
        os.environ.pop(repo_lock.GRID_ENV, None)
        lock.release()


def _grid(args, params, cells, kind, with_dvc: bool, runs_dir: Path) -> int:
    """The grid, under its lock: sweep, run the stale cells, commit them, last sweep, report."""
    from pipeline import records
    from pipeline.config import ConfigError, die
    from pipeline.executors import ExecutorError, Job, Options
    from pipeline.spec.environment import tracking_uri
    from pipeline.tracking.runs import first_line

    options = Options(args.jobs, args.retries, args.address, runs_dir, cells)
    client = None
    if params.tracking.enabled:
        try:
            kind.check_store(options, tracking_uri())  # e.g. a cluster's nodes must reach the store
            client = _open_store(params.tracking.experiment)
        except (ConfigError, ExecutorError) as err:
            die(str(err))
    names = [c.name for c in cells]
    try:
        stale = stale_cells(names) if with_dvc else {c.name for c in cells if not _up_to_date(runs_dir / c.name, c)}
    except RuntimeError as err:
        die(str(err))
    jobs = [Job(c.name, c, runs_dir / c.name) for c in cells if c.name in stale]
    for job in jobs:  # never replace what normlab did not write
        try:
            records.check_out(job.out)
        except records.RecordError as err:
            die(str(err))
    if not with_dvc:  # the report folder too, before any cell is trained
        try:
            records.check_report_out(args.report, "--report")
        except records.RecordError as err:
            die(str(err))
    try:
        executor = kind.create(options) if jobs else None
        if executor:
            try:
                executor.check(jobs)
            except ExecutorError:
                executor.close()
                raise
    except ExecutorError as err:
        die(str(err))
    t0 = time.perf_counter()
    slots = executor.slots if executor else args.jobs
    print(
        f"{len(cells) - len(jobs)} of {len(cells)} cells up to date; running {len(jobs)} on the "
        f"{args.executor} executor ({slots} at once)",
        flush=True,
    )
    failed, interrupted, done = [], False, 0
    committer = Committer() if with_dvc and jobs else None

    def on_signal(signum, frame):
        nonlocal interrupted
        interrupted = True
        executor.interrupt()

    old = {s: signal.signal(s, on_signal) for s in (signal.SIGINT, signal.SIGTERM)} if executor else {}
    try:
        for outcome in executor.run(jobs) if executor else ():
            done += 1
            elapsed = time.perf_counter() - t0
            eta = elapsed / done * (len(jobs) - done)
            retried = f", attempt {outcome.attempts}" if outcome.attempts > 1 else ""
            status = {"ran": "ran", "interrupted": "interrupted"}.get(outcome.status, "FAILED")
            print(
                f"[{done}/{len(jobs)}] {outcome.job.name}: {status}{retried}  ({elapsed:.0f} s, ETA {eta:.0f} s)",
                flush=True,
            )
            if outcome.status == "ran" and committer:
                committer.add(outcome.job.name)
            elif outcome.status == "failed":
                failed.append(outcome.job.name)
                error = outcome.error.strip().removeprefix(f"{outcome.job.name}: ")  # a TrackingError names its cell
                print(f"  {outcome.job.name}: {error}", file=sys.stderr, flush=True)
    except ExecutorError as err:
        print(f"normlab: {err}", file=sys.stderr)
        failed.append("(executor)")
    finally:
        for s, h in old.items():
            signal.signal(s, h)
        if executor:
            executor.close()
        errors = committer.close() if committer else []
        if client is not None and jobs:
            try:
                closed = close_dead_attempts(client, params.tracking.experiment, os.environ[repo_lock.GRID_ENV])
            except Exception as exc:  # noqa: BLE001 - a store that died mid-grid: said once, no traceback
                closed = 0
                errors.append(
                    f"MLflow: runs of dead attempts not closed, the tracking store failed "
                    f"({first_line(exc)}); the next sweep ends those of this host KILLED"
                )
            if closed:
                print(f"ended KILLED {closed} MLflow run(s) of attempts whose worker died", file=sys.stderr)
    for line in errors:
        print(f"normlab: {line}", file=sys.stderr)
    if interrupted:
        print(
            "normlab: interrupted: cells not finished were stopped or not started (their MLflow runs ended "
            "KILLED); finished cells are recorded",
            file=sys.stderr,
        )
        return 130
    if failed or errors:
        if failed:
            print(f"{len(failed)} cell(s) failed: {', '.join(failed)}", file=sys.stderr)
        return 1
    if with_dvc:
        final = _dvc("--wait-for-lock", "repro")  # the report, and a check that nothing else is left
    else:
        final = subprocess.run(
            [
                sys.executable,
                "-m",
                "pipeline.report",
                "--params",
                args.params,
                "--runs",
                args.runs,
                "--out",
                args.report,
            ],
            capture_output=True,
            text=True,
        )
    sys.stdout.write(final.stdout)
    sys.stderr.write(final.stderr)
    print(
        f"grid of {len(cells)} cells with {slots} job(s) ({args.executor} executor): {time.perf_counter() - t0:.1f} s"
    )
    return final.returncode


if __name__ == "__main__":
    sys.exit(main())
