"""The ray executor: one Ray task per cell on any cluster (see pipeline/executors/__init__.py)."""

from __future__ import annotations

import os
import shutil
import socket
import tempfile
from collections.abc import Iterator, Sequence
from pathlib import Path

from pipeline.executors.base import ExecutorError, Job, Options, Outcome, failure_text, one_line, wants_gpu, worker_env
from pipeline.executors.ray_auth import LocalToken, check_token
from pipeline.spec.names import stage_name

# never shipped to Ray workers: environments, records, stores, caches, reports
RAY_EXCLUDES = [
    ".venv",
    "runs",
    "mlruns",
    "mlflow.db",
    "mlflow.db-journal",
    "mlflow.db.init-lock",
    "mlartifacts",
    ".dvc/cache",
    ".dvc/tmp",
    "reports",
    ".git",
    ".bench",
    ".mlflow-server",
    "*.egg-info",
    "__pycache__",
    ".pytest_cache",
]


def ray_cell(cell, name: str) -> dict:
    """Runs on a Ray worker: the cell into a temp folder of its node; its files' bytes go back."""
    from pipeline import records
    from pipeline.cell import run_cell

    tmp = Path(tempfile.mkdtemp(prefix="normlab-cell-"))
    try:
        out = tmp / name
        run_cell(cell, out, progress=False)
        meta = records.meta_path(out)
        return {
            "files": {f: (out / f).read_bytes() for f in (*records.FILES, records.MARKER)},
            "meta": meta.read_bytes() if meta.exists() else None,
            "node": socket.gethostname(),
        }
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


def private_dir(path: Path) -> Path:
    """`path` must be a real folder (no symlink), owned by us, mode 0700; else ExecutorError."""
    import stat

    st = os.lstat(path)
    if stat.S_ISLNK(st.st_mode) or not stat.S_ISDIR(st.st_mode):
        raise ExecutorError(f"Ray temp folder {path} is not a plain folder (symlink?): refused")
    if st.st_uid != os.getuid() or stat.S_IMODE(st.st_mode) != 0o700:
        raise ExecutorError(
            f"Ray temp folder {path} is not ours with mode 0700 "
            f"(uid {st.st_uid}, mode {oct(stat.S_IMODE(st.st_mode))}): refused"
        )
    return path


def ray_temp_dir() -> Path:
    """A private, short per-user root for a local Ray cluster's sessions, sockets and logs:
    $XDG_RUNTIME_DIR/normlab-ray when that runtime folder is ours and 0700, else a fresh mkdtemp (0700).
    Short on purpose: Ray's Unix sockets live under it (sun_path is about 107 bytes)."""
    import stat

    runtime = os.environ.get("XDG_RUNTIME_DIR")
    if runtime and os.path.isabs(runtime):
        try:
            st = os.lstat(runtime)
            if stat.S_ISDIR(st.st_mode) and st.st_uid == os.getuid() and stat.S_IMODE(st.st_mode) == 0o700:
                path = Path(runtime) / "normlab-ray"
                try:
                    os.mkdir(path, 0o700)
                except FileExistsError:
                    pass
                return private_dir(path)
        except (OSError, ExecutorError):
            pass
    return private_dir(Path(tempfile.mkdtemp(prefix=f"normlab-ray-{os.getuid()}-")))


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
    takes_address = True

    @classmethod
    def check_store(cls, options: Options, tracking_uri: str) -> None:
        """Ray is installed (the ray extra), and on a cluster (an address) every node must reach the
        store: a tracking server."""
        from pipeline.spec.extras import require

        require("ray", "ray", "--executor ray", ExecutorError)
        remote = options.address or os.environ.get("RAY_ADDRESS")
        if remote and not tracking_uri.startswith(("http://", "https://")):
            raise ExecutorError(
                f"MLFLOW_TRACKING_URI: the ray executor on a cluster needs a tracking server every "
                f"node reaches (http://host:port; `make server` starts one), got {tracking_uri}"
            )

    @classmethod
    def create(cls, options: Options) -> RayExecutor:
        """Joins the cluster (or starts a local Ray); the code ships from the repository root, without
        the cells' folder; the workers record where the driver does."""
        from pipeline.spec.environment import project_root, tracking_uri
        from pipeline.spec.extras import require

        require("ray", "ray", "--executor ray", ExecutorError)  # before anything is started: one line
        root, excludes = project_root(), []
        try:
            excludes.append(str(Path(options.runs_dir).resolve().relative_to(root)))
        except ValueError:
            pass
        return cls(
            options.address,
            root,
            options.retries,
            excludes,
            env={"MLFLOW_TRACKING_URI": tracking_uri()},
            local_cpus=options.jobs,
        )

    def __init__(
        self,
        address: str | None,
        code_root: Path,
        retries: int = 2,
        excludes: Sequence[str] = (),
        env: dict | None = None,
        local_cpus: int | None = None,
    ):
        from pipeline.spec.extras import require

        ray = require("ray", "ray", "--executor ray", ExecutorError)

        address = address or os.environ.get("RAY_ADDRESS") or None
        if address and address not in ("auto", "local"):
            check_address(address)
            if "://" not in address:  # a GCS address (ray:// is Ray Client's own protocol)
                check_token(address)  # a refused or missing token: one line, not 20 s of retries
        self.retries, self._stopping, self._pending = retries, False, {}
        runtime_env = {
            "working_dir": str(code_root),
            "excludes": [*RAY_EXCLUDES, *excludes],
            "env_vars": {**worker_env(), **(env or {})},
        }
        extra, old_umask, self.temp_dir, self.token = {}, None, None, None
        if not address:  # a local cluster: its files in a private folder, created private (umask 077)
            self.temp_dir = ray_temp_dir()
            self.token = LocalToken(self.temp_dir)  # its token auth: a fresh token in that folder, not ~/.ray
            # Ray chmods its own temp folder 0777: it goes one level down, so this 0700 parent
            # is what keeps other users out of its sessions, sockets and shipped code
            extra["_temp_dir"] = str(self.temp_dir / "r")
            old_umask = os.umask(0o077)
        try:
            ray.init(
                address=address,
                runtime_env=runtime_env,
                log_to_driver=False,
                logging_level="WARNING",
                num_cpus=None if address else local_cpus,
                include_dashboard=False if not address else None,
                **extra,
            )
        except Exception as exc:  # noqa: BLE001 - any failure here: the cluster is not usable
            if self.token:
                self.token.close()
            raise ExecutorError(
                f"--address {address or '(local Ray)'}: cannot join the Ray cluster ({one_line(exc)})"
            ) from None
        finally:
            if old_umask is not None:
                os.umask(old_umask)
        res = ray.cluster_resources()
        self.gpus, self.slots = int(res.get("GPU", 0)), int(res.get("CPU", 1))
        self._ray = ray
        self._task = ray.remote(ray_cell)

    def check(self, jobs: list[Job]) -> None:
        """Before any task: a cell asking for a GPU on a cluster without one is one clear line."""
        for job in jobs:
            if wants_gpu(job.cell, self.gpus > 0) and not self.gpus:
                raise ExecutorError(
                    f"train.accelerator: {job.cell.train.accelerator} asks for a GPU and the Ray "
                    "cluster has none (ray.cluster_resources()); use accelerator: cpu or auto"
                )

    def run(self, jobs: list[Job]) -> Iterator[Outcome]:
        ray = self._ray
        self.check(jobs)
        for job in jobs:
            gpu = wants_gpu(job.cell, self.gpus > 0)
            ref = self._task.options(
                num_cpus=max(1, job.cell.train.threads),
                num_gpus=1 if gpu else 0,
                max_retries=self.retries,
                retry_exceptions=False,
                name=stage_name(job.name),
            ).remote(job.cell, job.name)
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
            return Outcome(job, "failed", failure_text(cause, str(err)))
        except rx.RayError as err:  # worker or node died on every allowed attempt
            return Outcome(job, "failed", f"{one_line(err)} (after {self.retries + 1} attempts)", self.retries + 1)
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
        if self.token:  # after the cluster: its processes read the token file until they stop
            self.token.close()
