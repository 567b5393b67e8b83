"""A team's MLflow tracking server on this machine: PostgreSQL for the runs, served artifacts.

    python -m pipeline.tracking.server                  # temp folder, dropped at exit
    python -m pipeline.tracking.server --folder .mlflow-server --port 5000   # kept across restarts
    make server

Starts PostgreSQL (the Debian `postgresql` package's initdb/postgres, as the `postgres` user
when run as root: PostgreSQL refuses root) on 127.0.0.1 with a free port, then
`mlflow server --backend-store-uri postgresql+psycopg://... --artifacts-destination <folder>/artifacts`
on 127.0.0.1, prints `MLFLOW_TRACKING_URI=http://127.0.0.1:<port>` and waits; Ctrl-C or SIGTERM
stops the MLflow server, then PostgreSQL, each by its pid (exit 0). If either dies on its own, the
other is stopped and the command exits 1 with one line saying which died and how. Loopback only,
no Unix socket; PostgreSQL uses scram-sha-256 password authentication for every connection, with a
random password generated at first start and kept (mode 0600) in <folder>/pg-password, so a restart
with the same folder reuses it. The folder is created 0700 (an existing one keeps its mode), its logs
0600, and the served artifacts are private to the server (artifacts/ 0700, written under umask 077);
MLflow's variables that add listening addresses are dropped (pipeline/tracking/loopback.py). A data folder
initialised by an older version with trust authentication is refused: remove it and start again.
The MLflow server itself has no authentication: put `mlflow server --app-name basic-auth` or
a reverse proxy in front when others share the machine.

`TrackingServer` is the same as a context manager, for tests and benchmarks.
"""

from __future__ import annotations

import argparse
import os
import pwd
import secrets
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path

from pipeline.spec import environment
from pipeline.tracking.loopback import server_env

PG_USER = "postgres"  # the account PostgreSQL runs as when we are root


class ServerError(RuntimeError):
    """The one line shown to the user: what is missing or what failed to start."""


def free_port(host: str = "127.0.0.1") -> int:
    with socket.socket() as s:
        s.bind((host, 0))
        return s.getsockname()[1]


def postgres_bin() -> Path:
    """The folder holding initdb and postgres: $NORMLAB_PG_BIN, the newest /usr/lib/postgresql/*/bin, or PATH."""
    if os.environ.get("NORMLAB_PG_BIN"):
        candidates = [Path(os.environ["NORMLAB_PG_BIN"])]
    else:
        versions = sorted(
            Path("/usr/lib/postgresql").glob("*/bin"),
            key=lambda p: int(p.parent.name) if p.parent.name.isdigit() else 0,
            reverse=True,
        )
        on_path = shutil.which("initdb")
        candidates = versions + ([Path(on_path).parent] if on_path else [])
    for folder in candidates:
        if (folder / "initdb").is_file() and (folder / "postgres").is_file():
            return folder
    raise ServerError(
        "PostgreSQL not found (no initdb/postgres in /usr/lib/postgresql/*/bin or on PATH; "
        "Debian: apt-get install postgresql, or set NORMLAB_PG_BIN)"
    )


def _run_as() -> dict:
    """Popen arguments that drop root to the postgres account (PostgreSQL refuses to run as root)."""
    if os.geteuid() != 0:
        return {}
    try:
        pw = pwd.getpwnam(PG_USER)
    except KeyError:
        raise ServerError(f"running as root and there is no {PG_USER!r} user to run PostgreSQL as") from None
    return {"user": pw.pw_uid, "group": pw.pw_gid, "extra_groups": []}


def _stop(proc: subprocess.Popen | None, sig: int, grace: float, group: bool = False) -> None:
    """Signal one process we started (or its process group), wait, then SIGKILL it if still there."""
    if proc is None or proc.poll() is not None:
        return
    kill = (lambda s: os.killpg(proc.pid, s)) if group else proc.send_signal
    try:
        kill(sig)
        proc.wait(grace)
    except subprocess.TimeoutExpired:
        kill(signal.SIGKILL)
        proc.wait(10)
    except ProcessLookupError:
        pass


PASSWORD_FILE = "pg-password"


def _mask(uri: str) -> str:
    """The URI with its password replaced by ***, for printing."""
    head, sep, tail = uri.rpartition("@")
    if not sep or "://" not in head:
        return uri
    scheme, _, cred = head.partition("://")
    user = cred.split(":", 1)[0]
    return f"{scheme}://{user}:***@{tail}" if ":" in cred else uri


def _open_private(path: Path) -> int:
    """Append-open a log file, mode 0600 (an existing one is narrowed to 0600)."""
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o600)
    os.fchmod(fd, 0o600)
    return fd


def _hba_has_trust(data: Path) -> bool:
    try:
        text = (data / "pg_hba.conf").read_text(errors="replace")
    except OSError:
        return False
    return any("trust" in line.split() for line in (raw.split("#", 1)[0] for raw in text.splitlines()))


def _initdb(pg_bin: Path, data: Path, password: str, as_pg: dict) -> subprocess.CompletedProcess:
    """initdb with scram-sha-256 for local and host lines and `password` for the superuser role.

    initdb reads the password from a file; as root it runs as postgres, which cannot read our 0600
    file (nor enter root's private temp folders), so it gets a copy in a fresh 0700 folder owned by
    postgres, removed as soon as initdb is done."""
    tmp = Path(tempfile.mkdtemp(prefix="normlab-initdb-"))  # 0700
    try:
        pw = tmp / "pw"
        fd = os.open(pw, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        with os.fdopen(fd, "w") as f:
            f.write(password + "\n")
        if as_pg:
            os.chown(pw, as_pg["user"], as_pg["group"])
            os.chown(tmp, as_pg["user"], as_pg["group"])
        return subprocess.run(
            [
                str(pg_bin / "initdb"),
                "-D",
                str(data),
                "-U",
                PG_USER,
                "--auth-local=scram-sha-256",
                "--auth-host=scram-sha-256",
                f"--pwfile={pw}",
                "-E",
                "UTF8",
                "--no-instructions",
            ],
            capture_output=True,
            text=True,
            cwd=tempfile.gettempdir(),
            **as_pg,
        )
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


def _unreachable_for(folder: Path, uid: int, gid: int) -> Path | None:
    """The first folder on the way to `folder` (itself included) that uid/gid cannot enter, or None."""
    for part in [*reversed(folder.parents), folder]:
        try:
            st = part.stat()
        except OSError:
            return part
        bit = 0o100 if st.st_uid == uid else 0o010 if st.st_gid == gid else 0o001
        if not st.st_mode & bit:
            return part
    return None


class TrackingServer:
    """PostgreSQL + `mlflow server` on loopback; `uri` once started. Stops both, by pid, on exit."""

    def __init__(
        self, folder: str | Path | None = None, port: int | None = None, workers: int = 2, start_timeout: float = 120.0
    ):
        self.keep = folder is not None
        self.folder = Path(folder).resolve() if folder else None
        self.port, self.workers, self.start_timeout = port, workers, start_timeout
        self.pg_port: int | None = None
        self.postgres: subprocess.Popen | None = None
        self.mlflow: subprocess.Popen | None = None
        self.uri: str | None = None

    # -- PostgreSQL ------------------------------------------------------------------------
    def _start_postgres(self) -> str:
        pg_bin = postgres_bin()
        as_pg = _run_as()
        data = self.folder / "pg"
        pwfile = self.folder / PASSWORD_FILE
        if as_pg:
            blocked = _unreachable_for(self.folder, as_pg["user"], as_pg["group"])
            if blocked:
                raise ServerError(
                    f"the {PG_USER} account (PostgreSQL refuses root) cannot enter {blocked}: "
                    f"use a --folder it can reach, or chmod o+x {blocked}"
                )
        if not (data / "PG_VERSION").exists():
            data.mkdir(parents=True, exist_ok=True)
            if as_pg:
                os.chown(data, as_pg["user"], as_pg["group"])
            os.chmod(data, 0o700)
            password = secrets.token_urlsafe(32)
            pwfile.unlink(missing_ok=True)
            fd = os.open(pwfile, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)  # ours (root's), 0600
            with os.fdopen(fd, "w") as f:
                f.write(password + "\n")
            init = _initdb(pg_bin, data, password, as_pg)
            if init.returncode:
                raise ServerError(f"initdb failed: {(init.stderr or init.stdout).strip().splitlines()[-1:]}")
        elif _hba_has_trust(data):
            raise ServerError(
                f"{data} was initialised with trust authentication by an older version "
                f"(any local user is superuser); remove {self.folder} and start again"
            )
        try:
            password = pwfile.read_text().strip()
        except OSError:
            raise ServerError(
                f"{pwfile} is missing: the database password is lost; remove {self.folder} and start again"
            ) from None
        self.pg_port = free_port()
        log = _open_private(self.folder / "postgres.log")
        # TCP on 127.0.0.1 only, no Unix socket: nothing else on the machine is touched
        self.postgres = subprocess.Popen(
            [
                str(pg_bin / "postgres"),
                "-D",
                str(data),
                "-p",
                str(self.pg_port),
                "-c",
                "listen_addresses=127.0.0.1",
                "-c",
                "unix_socket_directories=",
                "-c",
                "max_connections=200",
            ],
            stdout=log,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
            cwd=tempfile.gettempdir(),
            start_new_session=True,
            **as_pg,
        )
        os.close(log)
        import psycopg  # start() checked it is installed (the server extra)

        conninfo = dict(host="127.0.0.1", port=self.pg_port, user=PG_USER, password=password)
        deadline = time.monotonic() + self.start_timeout
        while True:
            if self.postgres.poll() is not None:
                raise ServerError(f"PostgreSQL exited at start ({self._tail('postgres.log')})")
            try:
                with psycopg.connect(dbname="postgres", **conninfo, autocommit=True, connect_timeout=2) as conn:
                    if not conn.execute("select 1 from pg_database where datname = 'mlflow'").fetchone():
                        conn.execute("create database mlflow")
                break
            except psycopg.OperationalError:
                if time.monotonic() > deadline:
                    raise ServerError(f"PostgreSQL did not answer within {self.start_timeout:.0f} s") from None
                time.sleep(0.2)
        from urllib.parse import quote

        return f"postgresql+psycopg://{PG_USER}:{quote(password, safe='')}@127.0.0.1:{self.pg_port}/mlflow"

    # -- MLflow ----------------------------------------------------------------------------
    def _start_mlflow(self, backend: str) -> str:
        self.port = self.port or free_port()
        artifacts = self.folder / "artifacts"
        artifacts.mkdir(mode=0o700, exist_ok=True)
        os.chmod(artifacts, 0o700)  # the server's own (as root the folder above is 0711: traversable)
        exe = Path(sys.executable).parent / "mlflow"
        cmd = [str(exe)] if exe.exists() else [sys.executable, "-m", "mlflow"]
        log = _open_private(self.folder / "mlflow.log")
        self.mlflow = subprocess.Popen(
            [
                *cmd,
                "server",
                "--artifacts-destination",
                str(artifacts),
                "--host",
                "127.0.0.1",
                "--port",
                str(self.port),
                "--workers",
                str(self.workers),
            ],
            stdout=log,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
            # the backend URI not on argv (ps shows argv); nothing that would listen beyond 127.0.0.1
            env={**server_env(environment.child_env(), "server"), "MLFLOW_BACKEND_STORE_URI": backend},
            umask=0o077,  # the artifacts it writes (served artifacts: clients upload through it) are its own
            start_new_session=True,
        )  # its own group: uvicorn's workers stop with it, Ctrl-C reaches us only
        os.close(log)
        uri = f"http://127.0.0.1:{self.port}"
        deadline = time.monotonic() + self.start_timeout
        while True:
            if self.mlflow.poll() is not None:
                raise ServerError(f"mlflow server exited at start ({self._tail('mlflow.log')})")
            try:
                with urllib.request.urlopen(f"{uri}/health", timeout=2) as r:
                    if r.status == 200:
                        return uri
            except OSError:
                pass
            if time.monotonic() > deadline:
                raise ServerError(
                    f"mlflow server did not answer within {self.start_timeout:.0f} s ({self._tail('mlflow.log')})"
                )
            time.sleep(0.3)

    def died(self) -> str:
        """What stopped on its own, with its exit status and its log's last lines (one line)."""
        for name, proc, log in (
            ("the MLflow server", self.mlflow, "mlflow.log"),
            ("PostgreSQL", self.postgres, "postgres.log"),
        ):
            if proc is not None and proc.poll() is not None:
                code = proc.returncode
                how = f"signal {signal.Signals(-code).name}" if code < 0 else f"exit code {code}"
                return f"{name} (pid {proc.pid}) died ({how}; {self._tail(log)}); the other is stopped"
        return "stopped"

    def _tail(self, name: str) -> str:
        try:
            lines = (self.folder / name).read_text(errors="replace").strip().splitlines()
        except OSError:
            return "no log"
        return " | ".join(lines[-3:])[-400:] or "empty log"

    # -- both ------------------------------------------------------------------------------
    def start(self) -> str:
        from pipeline.spec.extras import require

        require("psycopg", "server", "the tracking server", ServerError)  # before a folder or process exists
        if self.folder is None:
            self.folder = Path(tempfile.mkdtemp(prefix="normlab-server-"))  # 0700
            created = True
        else:
            created = not self.folder.exists()
            self.folder.mkdir(mode=0o700, parents=True, exist_ok=True)
        if created:
            # as root, the postgres account must traverse (not list) the folder to reach pg/ inside
            os.chmod(self.folder, 0o711 if _run_as() else 0o700)
        try:
            self.uri = self._start_mlflow(self._start_postgres())
        except BaseException:
            self.stop()
            raise
        return self.uri

    def stop(self) -> None:
        _stop(self.mlflow, signal.SIGTERM, 20, group=True)
        _stop(self.postgres, signal.SIGINT, 30)  # SIGINT = PostgreSQL's "fast" shutdown
        self.mlflow = self.postgres = None
        if not self.keep and self.folder and self.folder.exists():
            shutil.rmtree(self.folder, ignore_errors=True)

    def __enter__(self) -> TrackingServer:
        self.start()
        return self

    def __exit__(self, *exc) -> None:
        self.stop()


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(
        prog=environment.command_name("pipeline.tracking.server"), description=__doc__.splitlines()[0]
    )
    ap.add_argument("--folder", help="keep the database and artifacts here (default: a temp folder, dropped at exit)")
    ap.add_argument("--port", type=int, help="MLflow server port on 127.0.0.1 (default: a free one)")
    ap.add_argument("--workers", type=int, default=2, help="MLflow server worker processes (default 2)")
    args = ap.parse_args(argv)
    if args.port is not None and not 0 < args.port < 65536:
        print(f"normlab: --port: must be 1..65535 (got {args.port})", file=sys.stderr)
        return 2
    if args.workers < 1:
        print(f"normlab: --workers: must be >= 1 (got {args.workers})", file=sys.stderr)
        return 2
    environment.apply()
    stop = []
    signal.signal(signal.SIGTERM, lambda s, f: stop.append(s))
    server = TrackingServer(args.folder, args.port, args.workers)
    try:
        uri = server.start()
        print(f"MLFLOW_TRACKING_URI={uri}", flush=True)
        print(
            f"  export MLFLOW_TRACKING_URI={uri}   # then: python -m pipeline.grid ...; Ctrl-C here stops the "
            f"server (data in {server.folder}{'' if args.folder else ', dropped at exit'})",
            file=sys.stderr,
            flush=True,
        )
        while not stop and server.mlflow.poll() is None and server.postgres.poll() is None:
            time.sleep(0.5)
        if not stop:  # one of them died on its own: every client's records fail from now on
            raise ServerError(server.died())
    except ServerError as err:
        print(f"normlab: tracking server: {err}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        pass
    finally:
        server.stop()
    return 0


if __name__ == "__main__":
    sys.exit(main())
