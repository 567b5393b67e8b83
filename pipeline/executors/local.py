"""The local executor: a pool of warm worker processes on this machine (see pipeline/executors/__init__.py)."""

from __future__ import annotations

import multiprocessing as mp
import os
import shutil
import signal
import traceback
from collections.abc import Iterator
from dataclasses import dataclass
from multiprocessing.connection import wait as wait_any
from pathlib import Path

from pipeline.executors.base import (
    ExecutorError,
    Job,
    Options,
    Outcome,
    failure_text,
    local_gpu_count,
    wants_gpu,
    worker_env,
)


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

    from pipeline.cell import run_cell
    from pipeline.tracking.process import warm_tracking

    warm_tracking()  # MLflow's first-call costs once per worker, not once per cell's tracking process
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
            conn.send(("failed", job.name, failure_text(exc, "".join(traceback.format_exception(exc)))))


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
    takes_address = False

    @classmethod
    def check_store(cls, options: Options, tracking_uri: str) -> None:
        """Workers on this machine reach whatever store the driver reaches."""

    @classmethod
    def create(cls, options: Options) -> LocalExecutor:
        """A pool sized by --jobs; with GPUs here and cells that want one, one worker per GPU."""
        cells = options.cells
        gpus = local_gpu_count() if any(c.train.accelerator in ("auto", "gpu", "cuda") for c in cells) else 0
        if not gpus and any(c.train.accelerator in ("gpu", "cuda") for c in cells):
            acc = next(c.train.accelerator for c in cells if c.train.accelerator in ("gpu", "cuda"))
            raise ExecutorError(
                f"train.accelerator: {acc} asks for a GPU and this machine has none "
                "(nvidia-smi lists no GPU); use accelerator: cpu or auto"
            )
        return cls(options.jobs, options.retries, gpus if any(wants_gpu(c, gpus > 0) for c in cells) else 0)

    def __init__(self, jobs: int, retries: int = 2, gpus: int = 0):
        self.slots, self.retries, self.gpus = (min(jobs, gpus) if gpus else jobs), retries, gpus
        self._ctx = mp.get_context("spawn")  # fresh interpreters: no inherited threads or locks
        self._workers: list[_Worker] = []
        self._stopping = False

    def _spawn(self, index: int) -> _Worker:
        env = worker_env()
        if self.gpus:
            env["CUDA_VISIBLE_DEVICES"] = str(index % self.gpus)  # one cell per GPU
        parent, child = self._ctx.Pipe()
        proc = self._ctx.Process(target=_worker_main, args=(child, env), name=f"normlab-worker-{index}", daemon=True)
        proc.start()
        child.close()
        return _Worker(proc, parent)

    def check(self, jobs: list[Job]) -> None:
        """Nothing to check beyond create(): the pool runs any cell this machine can."""

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
                    print(
                        f"normlab: {job.name}: worker process died ({_exit_text(w.proc.exitcode)}); retrying "
                        f"(attempt {tries[job.name] + 1} of {self.retries + 1})",
                        flush=True,
                    )
                    queue.insert(0, job)
                else:
                    yield Outcome(
                        job,
                        "interrupted" if self._stopping else "failed",
                        f"worker process died ({_exit_text(w.proc.exitcode)}) on each of {tries[job.name]} attempt(s)",
                        tries[job.name],
                    )
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
