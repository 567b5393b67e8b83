"""What every executor shares: the Executor protocol pipeline.grid drives, a Job (a cell and its
folder), an Outcome, the grid's Options, the one-line error.

An executor is a class with the class-level part of `ExecutorKind` (its name, whether it takes
--address, `check_store` and `create`) whose instances are `Executor`s. pipeline.grid knows
executors only through these two protocols and the EXECUTORS registry (pipeline/executors/__init__.py).
"""

from __future__ import annotations

import os
import shutil
import subprocess
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import ClassVar, Protocol, runtime_checkable

from pipeline.repo_lock import GRID_ENV
from pipeline.spec import environment


def worker_env() -> dict[str, str]:
    """What a worker process (pool or Ray) is given: telemetry as this process has it
    (pipeline.spec.environment), no warm-start server (a worker is warm already), and the grid's id."""
    grid = {GRID_ENV: os.environ[GRID_ENV]} if os.environ.get(GRID_ENV) else {}  # the grid's tag on its runs
    return {**environment.telemetry_env(), "NORMLAB_WARM": "0", **grid}


class ExecutorError(RuntimeError):
    """Cannot start: the one line shown to the user (exit 2 before any work)."""


@dataclass
class Job:
    name: str  # the cell's name, <variant>-<dataset>
    cell: object  # pipeline.config.CellSettings
    out: Path  # its folder (runs/<cell>)


@dataclass
class Outcome:
    job: Job
    status: str  # "ran" | "failed" | "interrupted"
    error: str = ""  # one line (and a traceback tail) for a failed cell
    attempts: int = 1


@dataclass
class Options:
    """What the grid's command line says about where cells run (each executor reads what it needs)."""

    jobs: int  # local: worker processes; ray without an address: CPUs of a local Ray
    retries: int = 2  # tries again for a cell whose worker or node died
    address: str | None = None  # an executor that takes one (ray: HOST:PORT of a cluster's head)
    runs_dir: Path = Path("runs")  # where the cells' folders go (never shipped to a remote worker)
    cells: Sequence = field(default_factory=list)  # every cell of the grid (CellSettings)


@runtime_checkable
class Executor(Protocol):
    """A running executor, as pipeline.grid drives it: check, run (Outcomes as cells finish),
    interrupt (from the Ctrl-C handler), close."""

    name: ClassVar[str]
    slots: int  # cells at once

    def check(self, jobs: list[Job]) -> None:
        """Before any cell: what these jobs need and this executor lacks, as an ExecutorError."""

    def run(self, jobs: list[Job]) -> Iterator[Outcome]:
        """One Outcome per job as it finishes ("ran": its folder is complete)."""

    def interrupt(self) -> None:
        """Ctrl-C: start nothing more, stop running cells (their runs end KILLED); again: stop now."""

    def close(self) -> None:
        """Release workers or the cluster connection; nothing of ours keeps running."""


@runtime_checkable
class ExecutorKind(Protocol):
    """The class of an executor: what pipeline.grid asks before one exists, and how to make one."""

    name: ClassVar[str]
    takes_address: ClassVar[bool]  # whether --address means something to it

    def check_store(self, options: Options, tracking_uri: str) -> None:
        """Before any work: an ExecutorError if its workers cannot record into `tracking_uri`."""

    def create(self, options: Options) -> Executor:
        """An executor ready to run; an ExecutorError (one line) when it cannot start."""


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


def one_line(exc: BaseException) -> str:
    text = str(exc).strip()
    return f"{type(exc).__name__}: {text.splitlines()[0][:300]}" if text else type(exc).__name__


def failure_text(exc: BaseException, traceback_text: str) -> str:
    """A failed cell as the grid shows it: a bad setting or record, or a tracking store that failed
    (a server that died), is its own one line; anything else, one line and the traceback's tail."""
    from pipeline.config import ConfigError
    from pipeline.records import RecordError
    from pipeline.tracking.runs import TrackingError

    if isinstance(exc, (ConfigError, RecordError, TrackingError)):
        return str(exc).strip().splitlines()[0][:500] if str(exc).strip() else type(exc).__name__
    return f"{one_line(exc)}\n{traceback_text[-1500:]}"
