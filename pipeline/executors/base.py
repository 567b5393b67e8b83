"""What every executor shares: a Job (a cell and its folder), an Outcome, the one-line error."""
from __future__ import annotations

import shutil
import subprocess
from dataclasses import dataclass
from pathlib import Path

from pipeline.spec import environment


def worker_env() -> dict[str, str]:
    """What a worker process (pool or Ray) is given: telemetry as this process has it
    (pipeline.spec.environment), and no warm-start server (a worker is warm already)."""
    return {**environment.telemetry_env(), "NORMLAB_WARM": "0"}


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


def one_line(exc: BaseException) -> str:
    text = str(exc).strip()
    return f"{type(exc).__name__}: {text.splitlines()[0][:300]}" if text else type(exc).__name__


