"""Where grid cells run: one protocol, two engines, one registry. pipeline.grid picks one by name:

    python -m pipeline.grid --executor local --jobs 2          # warm worker processes on this machine
    python -m pipeline.grid --executor ray --address HOST:PORT # one Ray task per cell, on any cluster

An executor (pipeline/executors/base.py: the `Executor` protocol of an instance, `ExecutorKind` of
its class) takes Jobs (a cell's settings and its folder) and yields an Outcome per cell as it
finishes; when a cell's Outcome says "ran", its folder is complete (written whole, atomically,
by pipeline.records). `interrupt()` (from the Ctrl-C handler) cancels what is queued and stops
running cells with a KeyboardInterrupt, so their MLflow runs end KILLED; nothing is half-written.
pipeline.grid uses nothing else: a new executor is a module here with one class implementing
both protocols, and one entry in EXECUTORS.

local  N spawned worker processes, each importing torch, Lightning and MLflow once and running
       many cells through pipeline.cell.run_cell (each its own session: Ctrl-C reaches them
       from the driver only, as SIGINT). A worker that dies mid-cell (SIGKILL, out of memory)
       is replaced and the cell retried, at most `retries` times. With GPUs, one worker per GPU
       (CUDA_VISIBLE_DEVICES), so one cell per GPU.
ray    one task per cell: `train.threads` CPUs (1 if 0) and one GPU where `train.accelerator`
       asks for one; the code travels in Ray's runtime environment (no shared disk); the task
       writes the cell into a temp folder on its node and returns the files' bytes, which the
       driver writes atomically. Ray retries a task whose worker or node died (`max_retries`).
       Ray itself is imported only when one is created. Token authentication: ray_auth.py.
"""

from __future__ import annotations

from pipeline.executors.base import (
    Executor,
    ExecutorError,
    ExecutorKind,
    Job,
    Options,
    Outcome,
    local_gpu_count,
    wants_gpu,
    worker_env,
)
from pipeline.executors.local import LocalExecutor
from pipeline.executors.ray_cluster import RayExecutor, check_address, ray_cell, write_returned

EXECUTORS: dict[str, ExecutorKind] = {cls.name: cls for cls in (LocalExecutor, RayExecutor)}

__all__ = [
    "EXECUTORS",
    "Executor",
    "ExecutorError",
    "ExecutorKind",
    "Job",
    "Options",
    "Outcome",
    "local_gpu_count",
    "wants_gpu",
    "worker_env",
    "LocalExecutor",
    "RayExecutor",
    "check_address",
    "ray_cell",
    "write_returned",
]
