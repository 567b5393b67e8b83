"""The repository lock: one grid at a time on a cell folder, and no `dvc repro` training beside it.

    lock = grid_lock(Path("runs"), with_dvc=True)  # pipeline.grid, before its first sweep; lock.release()
    hold_for_dvc_stage()                           # pipeline.train under `dvc repro`: held until it exits

Two grids on one folder trained every cell twice, and a `dvc repro` beside a grid trained the cells
the grid was training. DVC's own locks cannot stop that: its repository lock (.dvc/tmp/lock) is
released while a stage's command runs (dvc.stage.run.unlocked_repo), and its rwlock
(.dvc/tmp/rwlock) is taken on the stages' paths by every `dvc status`, `dvc commit` and `dvc repro`,
the grid's own among them (it runs DVC as subprocesses), so holding either for a grid's hours
would lock the grid out of its own DVC calls. So normlab keeps its own lock, an flock (the
kernel drops it when its holder dies, however it dies: it is never stale):

  - the grid takes it exclusively, before its orphan sweep, and keeps it through its cells, its
    `dvc commit`s, its last sweep and its report; a second grid gets one line naming the first
    and exit 2 -- it does not wait: a grid takes hours, and a queue nobody sees is worse than a
    line saying what runs;
  - the training command takes it shared while its cell runs when `dvc repro` (or `dvc exp run`
    in the workspace) started it, so `dvc repro` stops with one line (exit 2) at the first cell
    while a grid runs, and a grid does not start while a `dvc repro` is training a cell. The
    grid's own `dvc repro` (its report; any cell left stale) passes: its environment names the
    grid that holds the lock.

Where: in DVC's scratch folder, `.dvc/tmp/normlab-grid.<digest of the runs folder>.lock`, when the
grid runs in a DVC repository (ignored by git and by DVC's hashing); else beside the runs folder,
`.<name>.grid-lock`. Standard library only: the training command imports it before torch.
"""

from __future__ import annotations

import fcntl
import hashlib
import json
import os
import socket
import sys
from pathlib import Path

GRID_ENV = "NORMLAB_GRID"  # the id of the grid whose cells and DVC calls these are (host:pid:start)
_held: list[int] = []  # descriptors held until the process exits (the training command's hold)


class Held(RuntimeError):
    """The lock is taken: the message is the one line shown (exit 2)."""


def _start(pid: int) -> str | None:
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[19]
    except (OSError, IndexError):
        return None


def process_id() -> str:
    """host:pid:start of this process (as pipeline.tracking.runs.ProcessId writes it)."""
    return f"{socket.gethostname()}:{os.getpid()}:{_start(os.getpid()) or '?'}"


def _alive(ident: str) -> bool:
    host, _, rest = ident.partition(":")
    pid, _, start = rest.partition(":")
    return host == socket.gethostname() and pid.isdigit() and start != "?" and _start(int(pid)) == start


def lock_path(runs_dir: Path, root: Path | None = None) -> Path:
    """The lock of the cells under `runs_dir`; `root`: the DVC repository the grid runs in, if any."""
    runs = Path(runs_dir).resolve()
    if root is not None and (Path(root) / ".dvc").is_dir():
        digest = hashlib.sha256(str(runs).encode()).hexdigest()[:12]
        return Path(root) / ".dvc" / "tmp" / f"normlab-grid.{digest}.lock"
    return runs.parent / f".{runs.name}.grid-lock"


def _open(path: Path) -> int:
    path.parent.mkdir(parents=True, exist_ok=True)
    return os.open(path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o644)


def _holder(fd: int) -> dict:
    try:
        return json.loads(os.pread(fd, 4096, 0) or b"{}")
    except ValueError:
        return {}


class GridLock:
    def __init__(self, fd: int, path: Path):
        self.fd, self.path = fd, path

    def release(self) -> None:
        if self.fd < 0:
            return
        os.ftruncate(self.fd, 0)  # no holder named once it is free
        os.close(self.fd)  # closing drops the flock
        self.fd = -1


def grid_lock(runs_dir: Path, root: Path | None = None) -> GridLock:
    """Take the lock of `runs_dir` exclusively for this grid, or raise Held naming who has it."""
    path = lock_path(runs_dir, root)
    fd = _open(path)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        holder = _holder(fd)
        os.close(fd)
        if holder.get("grid") and _alive(holder["grid"]):
            raise Held(
                f"{runs_dir}: another grid (pid {holder.get('pid')}: {holder.get('argv', '?')}) is training "
                f"these cells; wait until it ends (lock {path})"
            ) from None
        raise Held(
            f"{runs_dir}: `dvc repro` is training a cell here; run the grid when it has ended (lock {path})"
        ) from None
    os.ftruncate(fd, 0)
    os.pwrite(fd, json.dumps({"grid": process_id(), "pid": os.getpid(), "argv": " ".join(sys.argv)[:300]}).encode(), 0)
    return GridLock(fd, path)


def hold_for_dvc_stage() -> None:
    """Under `dvc repro` (DVC_ROOT and a train@ DVC_STAGE set): hold the study's lock shared until this
    process exits; Held when a grid other than the one that started this `dvc repro` holds it."""
    root, stage = os.environ.get("DVC_ROOT"), os.environ.get("DVC_STAGE", "")
    if not root or not stage.startswith("train@"):
        return
    path = lock_path(Path(root) / "runs", Path(root))  # dvc.yaml's cells are runs/<cell>
    try:
        fd = _open(path)
    except OSError:
        return  # no lock can be held where none can be made (a read-only checkout)
    try:
        fcntl.flock(fd, fcntl.LOCK_SH | fcntl.LOCK_NB)
    except BlockingIOError:
        holder = _holder(fd)
        os.close(fd)
        if holder.get("grid") and holder["grid"] == os.environ.get(GRID_ENV):
            return  # the grid's own `dvc repro`: the grid holds the lock for it
        who = f"a grid (pid {holder['pid']})" if holder.get("pid") else "a grid"
        raise Held(
            f"{stage}: {who} is training this repository's cells (lock {path}); run `dvc repro` again when it has ended"
        ) from None
    _held.append(fd)
