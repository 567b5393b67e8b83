"""Where grid cells run: one interface, two engines. pipeline.grid picks one:

    python -m pipeline.grid --executor local --jobs 2          # warm worker processes on this machine
    python -m pipeline.grid --executor ray --address HOST:PORT # one Ray task per cell, on any cluster

An executor takes Jobs (a cell's settings and its folder) and yields an Outcome per cell as it
finishes; when a cell's Outcome says "ran", its folder is complete (written whole, atomically,
by pipeline.records). `interrupt()` (from the Ctrl-C handler) cancels what is queued and stops
running cells with a KeyboardInterrupt, so their MLflow runs end KILLED; nothing is half-written.

local  N spawned worker processes, each importing torch, Lightning and MLflow once and running
       many cells through pipeline.train.run_cell (each its own session: Ctrl-C reaches them
       from the driver only, as SIGINT). A worker that dies mid-cell (SIGKILL, out of memory)
       is replaced and the cell retried, at most `retries` times. With GPUs, one worker per GPU
       (CUDA_VISIBLE_DEVICES), so one cell per GPU.
ray    one task per cell: `train.threads` CPUs (1 if 0) and one GPU where `train.accelerator`
       asks for one; the code travels in Ray's runtime environment (no shared disk); the task
       writes the cell into a temp folder on its node and returns the files' bytes, which the
       driver writes atomically. Ray retries a task whose worker or node died (`max_retries`).
"""
from __future__ import annotations

import multiprocessing as mp
import os
import shutil
import signal
import socket
import subprocess
import tempfile
import traceback
from dataclasses import dataclass
from multiprocessing.connection import wait as wait_any
from pathlib import Path
from typing import Iterator

QUIET_ENV = {"MLFLOW_DISABLE_TELEMETRY": "true", "DO_NOT_TRACK": "true", "RAY_USAGE_STATS_ENABLED": "0",
             "NORMLAB_WARM": "0"}  # a pool worker is warm already: no warm-start server
# never shipped to Ray workers: environments, records, stores, caches, reports
RAY_EXCLUDES = [".venv", "runs", "mlruns", "mlflow.db", "mlflow.db-journal", "mlflow.db.init-lock", "mlartifacts",
                ".dvc/cache", ".dvc/tmp", "reports", ".git", ".bench", ".mlflow-server", "*.egg-info",
                "__pycache__", ".pytest_cache"]


class ExecutorError(RuntimeError):
    """Cannot start: the one line shown to the user (exit 2 before any work)."""


@dataclass
class Job:
    name: str          # the cell's name, <variant>-<dataset>
    cell: object       # pipeline.config.CellSettings
    out: Path          # its folder (runs/<cell>)


@dataclass
class Outcome:
    job: Job
    status: str        # "ran" | "failed" | "interrupted"
    error: str = ""    # one line (and a traceback tail) for a failed cell
    attempts: int = 1


def wants_gpu(cell, gpus_available: bool) -> bool:
    acc = cell.train.accelerator
    return acc in ("gpu", "cuda") or (acc == "auto" and gpus_available)


def local_gpu_count() -> int:
    """GPUs on this machine, without importing torch in the driver (nvidia-smi; 0 without it)."""
    exe = shutil.which("nvidia-smi")
    if not exe:
        return 0
    try:
        out = subprocess.run([exe, "-L"], capture_output=True, text=True, timeout=20).stdout
    except (OSError, subprocess.SubprocessError):
        return 0
    return sum(line.startswith("GPU ") for line in out.splitlines())


def _one_line(exc: BaseException) -> str:
    text = str(exc).strip()
    return f"{type(exc).__name__}: {text.splitlines()[0][:300]}" if text else type(exc).__name__


# -- local: warm worker processes ------------------------------------------------------------
def _worker_main(conn, env: dict) -> None:
    """A pool worker: import the heavy modules once, then run cells sent over `conn` until None."""
    os.setsid()  # its own session: a terminal's Ctrl-C reaches the driver only, which forwards it once
    os.environ.update(env)

    def _term(signum, frame):
        raise KeyboardInterrupt(f"signal {signum}")

    signal.signal(signal.SIGTERM, _term)
    signal.signal(signal.SIGINT, signal.default_int_handler)
    import mlflow  # noqa: F401 - warm: paid once per worker, not once per cell
    import pytorch_lightning  # noqa: F401
    import torch  # noqa: F401

    from pipeline.train import run_cell

    conn.send(("ready", None, ""))
    while True:
        try:
            job = conn.recv()
        except (EOFError, KeyboardInterrupt):
            return
        if job is None:
            return
        try:
            run_cell(job.cell, job.out, progress=False)
            conn.send(("ran", job.name, ""))
        except KeyboardInterrupt:
            conn.send(("interrupted", job.name, ""))
            return
        except BaseException as exc:  # noqa: BLE001 - a failed cell is reported, the worker goes on
            tail = "".join(traceback.format_exception(exc))[-1500:]
            conn.send(("failed", job.name, f"{_one_line(exc)}\n{tail}"))


@dataclass
class _Worker:
    proc: mp.Process
    conn: object
    ready: bool = False
    job: Job | None = None
    attempts: int = 0


def _clean_partial(out: Path) -> None:
    """Temp folders a killed worker left beside its cell (records.write_cell's .<cell>.tmp-*)."""
    for stray in list(out.parent.glob(f".{out.name}.tmp-*")) + list(out.parent.glob(f".{out.name}.old-*")):
        shutil.rmtree(stray, ignore_errors=True)


class LocalExecutor:
    """A pool of `jobs` warm worker processes on this machine."""

    name = "local"

    def __init__(self, jobs: int, retries: int = 2, gpus: int = 0):
        self.slots, self.retries, self.gpus = (min(jobs, gpus) if gpus else jobs), retries, gpus
        self._ctx = mp.get_context("spawn")  # fresh interpreters: no inherited threads or locks
        self._workers: list[_Worker] = []
        self._stopping = False

    def _spawn(self, index: int) -> _Worker:
        env = dict(QUIET_ENV)
        if self.gpus:
            env["CUDA_VISIBLE_DEVICES"] = str(index % self.gpus)  # one cell per GPU
        parent, child = self._ctx.Pipe()
        proc = self._ctx.Process(target=_worker_main, args=(child, env), name=f"normlab-worker-{index}", daemon=True)
        proc.start()
        child.close()
        return _Worker(proc, parent)

    def run(self, jobs: list[Job]) -> Iterator[Outcome]:
        queue = list(jobs)
        tries: dict[str, int] = {}
        self._workers = [self._spawn(i) for i in range(min(self.slots, len(queue)))]
        while self._workers and (queue or any(w.job for w in self._workers)):
            if self._stopping:
                yield from (Outcome(job, "interrupted", "not started", 0) for job in queue)
                queue.clear()
            for w in self._workers:  # hand queued cells to idle workers
                if w.ready and w.job is None and queue:
                    w.job = queue.pop(0)
                    tries[w.job.name] = tries.get(w.job.name, 0) + 1
                    w.conn.send(w.job)
            wait_any([w.conn for w in self._workers] + [w.proc.sentinel for w in self._workers], timeout=1.0)
            for w in list(self._workers):
                msg = None
                if w.conn.poll():
                    try:
                        msg = w.conn.recv()
                    except (EOFError, OSError):
                        msg = "gone"
                if isinstance(msg, tuple):
                    status, _, error = msg
                    if status == "ready":
                        w.ready = True
                    else:
                        job, w.job = w.job, None
                        yield Outcome(job, status, error, tries[job.name])
                    continue
                if msg is None and w.proc.is_alive():
                    continue
                # the worker is gone without a word about its cell: SIGKILL, out of memory, a crash
                w.proc.join(5)
                slot = self._workers.index(w)
                if not w.ready and not self._stopping:
                    raise ExecutorError(f"a worker process failed to start ({_exit_text(w.proc.exitcode)})")
                job = w.job
                if self._stopping or not (queue or job):
                    self._workers.remove(w)
                else:
                    self._workers[slot] = self._spawn(slot)
                if job is None:
                    continue
                _clean_partial(job.out)
                if tries[job.name] <= self.retries and not self._stopping:
                    print(f"normlab: {job.name}: worker process died ({_exit_text(w.proc.exitcode)}); retrying "
                          f"(attempt {tries[job.name] + 1} of {self.retries + 1})", flush=True)
                    queue.insert(0, job)
                else:
                    yield Outcome(job, "interrupted" if self._stopping else "failed",
                                  f"worker process died ({_exit_text(w.proc.exitcode)}) on each of "
                                  f"{tries[job.name]} attempt(s)", tries[job.name])
        yield from (Outcome(job, "interrupted", "not started", 0) for job in queue)

    def interrupt(self) -> None:
        """Ctrl-C: start nothing more; SIGINT each worker that runs a cell (its runs end KILLED)."""
        sig = signal.SIGKILL if self._stopping else signal.SIGINT  # a second Ctrl-C: stop them now
        self._stopping = True
        for w in self._workers:
            if w.job is not None and w.proc.pid:
                try:
                    os.kill(w.proc.pid, sig)
                except ProcessLookupError:
                    pass

    def close(self) -> None:
        for w in self._workers:
            try:
                if w.proc.is_alive() and w.job is None:
                    w.conn.send(None)
            except (OSError, ValueError):
                pass
        for w in self._workers:
            w.proc.join(10)
            if w.proc.is_alive():  # by pid: only processes this executor started
                w.proc.kill()
                w.proc.join(5)


def _exit_text(code: int | None) -> str:
    if code is None:
        return "still running"
    return f"signal {signal.Signals(-code).name}" if code < 0 else f"exit code {code}"


# -- ray: one task per cell ------------------------------------------------------------------
def ray_cell(cell, name: str) -> dict:
    """Runs on a Ray worker: the cell into a temp folder of its node; its files' bytes go back."""
    from pipeline import records
    from pipeline.train import run_cell

    tmp = Path(tempfile.mkdtemp(prefix="normlab-cell-"))
    try:
        out = tmp / name
        run_cell(cell, out, progress=False)
        meta = records.meta_path(out)
        return {"files": {f: (out / f).read_bytes() for f in (*records.FILES, records.MARKER)},
                "meta": meta.read_bytes() if meta.exists() else None, "node": socket.gethostname()}
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


def write_returned(out: Path, payload: dict) -> None:
    """The driver's side: a returned cell written into `out` whole (records' temp-folder swap);
    its bytes are checked against the outputs hash the worker recorded first."""
    import json

    from pipeline import records

    files = payload["files"]
    if set(files) != {*records.FILES, records.MARKER}:
        raise ExecutorError(f"{out.name}: the worker returned unexpected files {sorted(files)}")

    def build(tmp: Path) -> None:
        folder = tmp / out.name
        folder.mkdir()
        for fname, data in files.items():
            (folder / fname).write_bytes(data)
        if payload.get("meta"):
            meta = json.loads(payload["meta"])
            if meta.get("outputs_hash") != records.outputs_hash(folder):
                raise ExecutorError(f"{out.name}: returned files do not match the worker's outputs hash")
            (tmp / records.meta_path(folder).name).write_bytes(payload["meta"])

    records.write_tree_atomically(out.parent, build)


def check_address(address: str) -> None:
    """An unreachable cluster is one clear line, in seconds, before Ray's own minute of retries."""
    hostport = address.split("://", 1)[-1]
    host, _, port = hostport.rpartition(":")
    if not host or not port.isdigit():
        raise ExecutorError(f"--address: expected HOST:PORT of a Ray head node (got {address!r})")
    try:
        socket.create_connection((host, int(port)), timeout=5).close()
    except OSError as err:
        raise ExecutorError(f"--address {address}: no Ray cluster answers there ({err.strerror or err})") from None


class RayExecutor:
    """One Ray task per cell on the cluster at `address` (None: RAY_ADDRESS, else a local Ray)."""

    name = "ray"

    def __init__(self, address: str | None, code_root: Path, retries: int = 2, excludes: list[str] = (),
                 env: dict | None = None, local_cpus: int | None = None):
        import ray

        address = address or os.environ.get("RAY_ADDRESS") or None
        if address and address not in ("auto", "local"):
            check_address(address)
        self.retries, self._stopping, self._pending = retries, False, {}
        runtime_env = {"working_dir": str(code_root), "excludes": [*RAY_EXCLUDES, *excludes],
                       "env_vars": {**QUIET_ENV, **(env or {})}}
        try:
            ray.init(address=address, runtime_env=runtime_env, log_to_driver=False, logging_level="WARNING",
                     num_cpus=None if address else local_cpus, include_dashboard=False if not address else None)
        except Exception as exc:  # noqa: BLE001 - any failure here: the cluster is not usable
            raise ExecutorError(f"--address {address or '(local Ray)'}: cannot join the Ray cluster "
                                f"({_one_line(exc)})") from None
        res = ray.cluster_resources()
        self.gpus, self.slots = int(res.get("GPU", 0)), int(res.get("CPU", 1))
        self._ray = ray
        self._task = ray.remote(ray_cell)

    def check(self, jobs: list[Job]) -> None:
        """Before any task: a cell asking for a GPU on a cluster without one is one clear line."""
        for job in jobs:
            if wants_gpu(job.cell, self.gpus > 0) and not self.gpus:
                raise ExecutorError(f"train.accelerator: {job.cell.train.accelerator} asks for a GPU and the Ray "
                                    "cluster has none (ray.cluster_resources()); use accelerator: cpu or auto")

    def run(self, jobs: list[Job]) -> Iterator[Outcome]:
        ray = self._ray
        self.check(jobs)
        for job in jobs:
            gpu = wants_gpu(job.cell, self.gpus > 0)
            ref = self._task.options(num_cpus=max(1, job.cell.train.threads), num_gpus=1 if gpu else 0,
                                     max_retries=self.retries, retry_exceptions=False,
                                     name=f"train@{job.name}").remote(job.cell, job.name)
            self._pending[ref] = job
        while self._pending:
            done, _ = ray.wait(list(self._pending), num_returns=1, timeout=1.0)
            for ref in done:
                job = self._pending.pop(ref)
                yield self._outcome(ref, job)

    def _outcome(self, ref, job: Job) -> Outcome:
        from ray import exceptions as rx

        try:
            payload = self._ray.get(ref)
        except (rx.TaskCancelledError, KeyboardInterrupt):
            return Outcome(job, "interrupted")
        except rx.RayTaskError as err:
            cause = err.cause if getattr(err, "cause", None) is not None else err
            if isinstance(cause, KeyboardInterrupt) or self._stopping:
                return Outcome(job, "interrupted")
            return Outcome(job, "failed", f"{_one_line(cause)}\n{str(err)[-1500:]}")
        except rx.RayError as err:  # worker or node died on every allowed attempt
            return Outcome(job, "failed", f"{_one_line(err)} (after {self.retries + 1} attempts)", self.retries + 1)
        write_returned(job.out, payload)
        return Outcome(job, "ran")

    def interrupt(self) -> None:
        """Ctrl-C: queued tasks are cancelled, running ones get a KeyboardInterrupt (runs end KILLED);
        a second Ctrl-C kills their workers (the grid then ends their runs KILLED)."""
        force, self._stopping = self._stopping, True
        for ref in list(self._pending):
            try:
                self._ray.cancel(ref, force=force)
            except Exception:  # noqa: BLE001 - already finished
                pass

    def close(self) -> None:
        self._ray.shutdown()
