"""The warm-start server (pipeline/warm/client.py is its client and command line): one thread, one poll loop.

    python -m pipeline.warm start [--wait]   # how it is started (`serve` runs serve() below)

It takes the lock, imports torch, Lightning and MLflow once, listens on the private socket and,
per request, forks a child that runs the cell the request names (pipeline.cell.launch with the
request's Launch: the training command's parsed arguments) as the caller's process (the caller's
stdin/stdout/stderr, working folder, environment and umask). It never imports the training
command (pipeline.train): data flows command -> warm client -> server -> cell, never back. Every
safety rule is in pipeline/warm/client.py's docstring; the checks are here: each client's uid
(SO_PEERCRED), a request size and time limit, no fork while a second thread runs, only a
well-formed Launch of pipeline.cell in a child.
Each child's exit is logged with its peak resident memory (ru_maxrss), which benchmarks/grid_floor.py reads
(a forked child's ru_maxrss starts at what it inherits, so it includes the server's own size).
"""

from __future__ import annotations

import json
import os
import select
import signal
import socket
import stat
import sys
import time
from pathlib import Path

from pipeline.cell import Launch, launch
from pipeline.warm import client as warm
from pipeline.warm.client import (
    ENTRY,
    HANGUP_GRACE_S,
    MAX_REQUEST,
    REQUEST_S,
    STOP_GRACE_S,
    Unsafe,
    _open_private,
    _peer_uid,
    socket_path,
)


def _log(msg: str) -> None:  # the server's stderr is <socket>.log in the private folder
    print(f"{time.strftime('%Y-%m-%d %H:%M:%S')} warm server {os.getpid()}: {msg}", file=sys.stderr, flush=True)


def _threads() -> int:
    try:
        return len(os.listdir("/proc/self/task"))
    except OSError:
        import threading

        return threading.active_count()


def serve() -> int:
    """Take the lock, import once, listen, serve until stopped or idle."""
    import fcntl
    import gc

    os.umask(0o077)  # socket, lock and log are private whatever umask the spawning caller had
    path = socket_path()
    if path is None:
        return 1
    try:
        lock = _open_private(path.with_suffix(".lock"), os.O_RDWR | os.O_CREAT)
    except (OSError, Unsafe) as err:
        _log(f"refusing to start: {path.with_suffix('.lock')}: {err}")
        return 1
    try:
        fcntl.flock(lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except OSError:
        return 0  # another server for this code is starting or running
    os.ftruncate(lock, 0)
    os.write(lock, str(os.getpid()).encode())
    # numpy's OpenBLAS and pyarrow's jemalloc would each start a thread at import, and a fork
    # of a threaded process can deadlock; neither is on the training path (torch has its own)
    os.environ["OPENBLAS_NUM_THREADS"] = "1"
    os.environ["JE_ARROW_MALLOC_CONF"] = "background_thread:false"
    # the imports every cell needs, done once; nothing here may start threads or touch a GPU
    import ctypes  # noqa: F401  (prctl in the child)

    import mlflow.store.db.utils
    import mlflow.store.tracking.sqlalchemy_store  # noqa: F401,E401 (1.2 s; no engine yet)
    import mlflow.tracking  # noqa: F401
    import pytorch_lightning  # noqa: F401
    import sklearn.datasets  # noqa: F401

    import pipeline.cell  # noqa: F401,E401  (pandas, pydantic)
    import pipeline.config
    import pipeline.data.sets  # noqa: F401,E401
    import pipeline.module
    import pipeline.nets.mlp
    import pipeline.records
    import pipeline.tracking.callback
    import pipeline.tracking.process  # noqa: F401,E401

    # MLflow's and matplotlib's first-call costs, once here instead of in every cell's tracking process
    pipeline.tracking.process.warm_tracking()
    # every cell is a fork of this heap: keep the collector off it (a full collection in a cell walked
    # all of torch's, pandas' and MLflow's objects, and its writes copied their pages)
    gc.freeze()

    try:  # we hold the lock, so a socket here is a dead server's
        if stat.S_ISSOCK(os.lstat(path).st_mode):
            os.unlink(path)
    except FileNotFoundError:
        pass
    srv = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    srv.bind(str(path))  # under umask 077, and then made 0600 explicitly
    os.chmod(path, 0o600)
    srv.listen(64)
    srv.setblocking(False)
    _log(f"listening at {path} ({_threads()} thread)")
    code = _Server(srv, path, lock).loop()
    sys.stderr.flush()
    os._exit(code)  # nothing to finalize; tearing down torch & co. would keep `stop` waiting for seconds


class _Server:
    """One thread, one poll loop: accept, read requests (each with a deadline), fork, reap."""

    def __init__(self, srv: socket.socket, path: Path, lock: int):
        self.srv, self.path, self.lock, self.inode = srv, path, lock, os.lstat(path).st_ino
        self.pending: dict[int, list] = {}  # fd -> [conn, deadline, bytes so far, fds]
        self.running: dict[int, list] = {}  # child pid -> [caller's conn or None, SIGKILL deadline or None]
        self.callers: dict[int, int] = {}  # fd of a running child's caller -> child pid
        self.stoppers: list[socket.socket] = []
        self.stopping = False
        self.wake_r, self.wake_w = os.pipe()
        for fd in (self.wake_r, self.wake_w):
            os.set_blocking(fd, False)
        self.poll = select.poll()
        self.poll.register(self.wake_r, select.POLLIN)
        self.poll.register(srv, select.POLLIN)
        signal.set_wakeup_fd(self.wake_w, warn_on_full_buffer=False)  # a signal wakes the poll
        signal.signal(signal.SIGCHLD, lambda *a: None)
        signal.signal(signal.SIGTERM, self._stop)
        signal.signal(signal.SIGINT, self._stop)
        signal.signal(signal.SIGHUP, signal.SIG_IGN)
        self.idle_s = float(os.environ.get("NORMLAB_WARM_IDLE", "300"))
        self.last = time.monotonic()

    def _stop(self, signum, frame) -> None:
        self.stopping = True

    def loop(self) -> int:
        while not self.stopping:
            now = time.monotonic()
            if not self.pending and not self.running and now - self.last > self.idle_s:
                _log("idle: exiting")
                break
            wake = [p[1] for p in self.pending.values()] + [r[1] for r in self.running.values() if r[1]]
            if not self.pending and not self.running:
                wake.append(self.last + self.idle_s)
            timeout = min([*wake, now + 5.0]) - now
            for fd, _ in self.poll.poll(max(0.0, timeout) * 1000 + 1):
                if fd == self.wake_r:  # a signal arrived (SIGCHLD: reaped below)
                    try:
                        os.read(self.wake_r, 4096)
                    except BlockingIOError:
                        pass
                elif fd == self.srv.fileno():
                    self._accept()
                elif fd in self.pending:
                    self._read(fd)
                elif fd in self.callers:
                    self._caller(fd)
            self._reap()
            now = time.monotonic()
            for fd in [fd for fd, p in self.pending.items() if p[1] <= now]:
                self._drop(fd, f"no whole request within {REQUEST_S:g} s")
            for pid, run in self.running.items():
                if run[1] and run[1] <= now:  # its caller went away and it did not stop on SIGINT
                    _kill(pid, signal.SIGKILL)
                    run[1] = None
        self._shutdown()
        return 0

    def _accept(self) -> None:
        try:
            conn, _ = self.srv.accept()
        except OSError:
            return
        self.last = time.monotonic()
        try:
            uid = _peer_uid(conn)
        except OSError:
            uid = -1
        if uid != os.getuid() or len(self.pending) >= 32:
            _log(f"closed a connection from uid {uid} ({len(self.pending)} pending)")
            conn.close()
            return
        conn.setblocking(False)
        self.pending[conn.fileno()] = [conn, self.last + REQUEST_S, b"", []]
        self.poll.register(conn, select.POLLIN)

    def _drop(self, fd: int, why: str) -> None:
        conn, _, _, fds = self.pending.pop(fd)
        self.poll.unregister(fd)
        for f in fds:
            os.close(f)
        conn.close()
        if why:
            _log(f"dropped a request: {why}")

    def _read(self, fd: int) -> None:
        p = self.pending[fd]
        conn, buf = p[0], p[2]
        need = 8 if len(buf) < 8 else 8 + int.from_bytes(buf[:8], "big")
        try:  # never past this request's end
            data, fds, flags, _ = socket.recv_fds(conn, need - len(buf), 3)
        except BlockingIOError:
            return
        except OSError as err:
            return self._drop(fd, f"read failed ({err})")
        p[3] += fds
        if not data:
            return self._drop(fd, "the client hung up mid-request")
        if len(p[3]) > 3 or flags & socket.MSG_CTRUNC:
            return self._drop(fd, "too many file descriptors")
        p[2] = buf = buf + data
        size = int.from_bytes(buf[:8], "big") if len(buf) >= 8 else -1
        if size > MAX_REQUEST:
            return self._drop(fd, f"{size} bytes is over the {MAX_REQUEST} byte limit")
        if len(buf) == 8 + size:
            del self.pending[fd]
            self.poll.unregister(fd)
            self._handle(conn, buf[8:], p[3])

    def _handle(self, conn: socket.socket, body: bytes, fds: list[int]) -> None:
        try:
            req = json.loads(body)
            op = req.get("op")
        except (ValueError, AttributeError):
            req, op = {}, None
        why = _invalid(req, fds) if op == "run" else None if op in ("ping", "stop") and not fds else "not a request"
        if why:
            _log(f"refused a request: {why}")
            for f in fds:
                os.close(f)
            return _reply(conn, -1)
        if op == "ping":
            return _reply(conn, os.getpid())
        if op == "stop":
            self.stoppers.append(conn)
            self.stopping = True
            return
        server_pid = os.getpid()
        pid = os.fork()
        if pid == 0:  # the child: keeps only the caller's stdin/stdout/stderr, never returns here
            code = 1
            try:
                self._forget(conn)
                code = _child(req, fds, server_pid)
            except BaseException:  # noqa: BLE001 - a child must never run the server's loop
                import traceback

                traceback.print_exc()
            finally:
                os._exit(code)
        for f in fds:
            os.close(f)
        self.running[pid] = [conn, None]
        self.callers[conn.fileno()] = pid
        self.poll.register(conn, select.POLLIN)
        conn.send(pid.to_bytes(8, "big", signed=True))
        _log(f"child {pid} started")

    def _forget(self, conn: socket.socket) -> None:
        """In a new child: drop the server's signal handlers and every fd that is not its own."""
        signal.set_wakeup_fd(-1)
        for sig in (signal.SIGCHLD, signal.SIGTERM, signal.SIGHUP):
            signal.signal(sig, signal.SIG_DFL)
        signal.signal(signal.SIGINT, signal.default_int_handler)
        for sock in (
            self.srv,
            conn,
            *self.stoppers,
            *(p[0] for p in self.pending.values()),
            *(r[0] for r in self.running.values() if r[0]),
        ):
            sock.close()
        for fd in (self.wake_r, self.wake_w, self.lock, *(f for p in self.pending.values() for f in p[3])):
            os.close(fd)

    def _caller(self, fd: int) -> None:
        pid = self.callers[fd]
        conn = self.running[pid][0]
        try:
            data = conn.recv(64)
        except BlockingIOError:
            return
        except OSError:
            data = b""
        for b in data:  # signals the caller forwards
            if b in (signal.SIGINT, signal.SIGTERM):
                _kill(pid, b)
        if not data:  # the caller is gone (killed, terminal closed): end the cell as Ctrl-C would
            self.poll.unregister(fd)
            del self.callers[fd]
            conn.close()
            self.running[pid] = [None, time.monotonic() + HANGUP_GRACE_S]
            _kill(pid, signal.SIGINT)
            _log(f"the caller of child {pid} went away: stopping it")

    def _reap(self) -> None:
        while self.running:
            try:
                pid, status, usage = os.wait4(-1, os.WNOHANG)
            except ChildProcessError:
                return
            if pid == 0:
                return
            code = os.waitstatus_to_exitcode(status)
            code = 128 - code if code < 0 else code  # killed by signal N -> 128 + N, as a shell says
            conn = self.running.pop(pid, [None])[0]
            self.last = time.monotonic()
            _log(f"child {pid} exited {code} (peak RSS {usage.ru_maxrss / 1024:.1f} MiB)")  # Linux: KiB
            if conn:
                del self.callers[conn.fileno()]
                self.poll.unregister(conn)
                _reply(conn, code)

    def _shutdown(self) -> None:
        """Close the door, end every child (SIGTERM, then SIGKILL), tell their callers, then
        whoever asked for the stop: after that no child of ours writes anything."""
        self.poll.unregister(self.srv)
        self.srv.close()
        try:
            if os.lstat(self.path).st_ino == self.inode:
                os.unlink(self.path)
        except OSError:
            pass
        for fd in list(self.pending):
            self._drop(fd, "")
        for pid in self.running:
            _kill(pid, signal.SIGTERM)
        end = time.monotonic() + STOP_GRACE_S
        while self.running and time.monotonic() < end:
            self._reap()
            time.sleep(0.05)
        for pid in self.running:
            _kill(pid, signal.SIGKILL)
        while self.running:
            self._reap()
            time.sleep(0.02)
        for conn in self.stoppers:
            _reply(conn, os.getpid())
        _log("stopped")


def _kill(pid: int, sig: int) -> None:
    try:
        os.kill(pid, sig)
    except ProcessLookupError:
        pass


def _reply(conn: socket.socket, n: int) -> None:
    try:
        conn.send(n.to_bytes(8, "big", signed=True))
    except OSError:
        pass
    conn.close()


def _invalid(req: dict, fds: list[int]) -> str | None:
    """Why a run request is refused (the caller then runs cold), or None."""
    if req.get("module") != ENTRY:
        return f"module {str(req.get('module'))[:80]!r}: only {ENTRY} runs here"
    argv, cwd, env, umask = req.get("argv"), req.get("cwd"), req.get("env"), req.get("umask")
    try:
        Launch.from_json(req.get("launch"))
    except ValueError as err:
        return f"malformed run request ({err})"
    if (
        len(fds) != 3
        or not isinstance(argv, list)
        or not all(isinstance(a, str) for a in argv)
        or not isinstance(env, dict)
        or not all(isinstance(v, str) for v in env.values())
        or not isinstance(umask, int)
        or not 0 <= umask <= 0o777
        or not isinstance(cwd, str)
    ):
        return "malformed run request"
    if not os.path.isabs(cwd) or not os.path.isdir(cwd):
        return f"working folder {cwd[:200]!r} is not a folder"
    if _threads() > 1:  # forking a threaded process can deadlock the child
        return f"{_threads()} threads are running; no fork"
    return None


def _child(req: dict, fds: list[int], server_pid: int) -> int:
    """In the forked child: become the caller's process and run the cell it asked for."""
    warm.IN_CHILD = True  # the flag pipeline.warm.client.run_warm reads: a child never asks a server itself
    try:  # PR_SET_PDEATHSIG: if the server dies, so does this child (its caller was told it failed)
        import ctypes

        ctypes.CDLL(None).prctl(1, signal.SIGTERM)
    except (OSError, AttributeError):
        pass
    if os.getppid() != server_pid:
        return 1
    for target, fd in enumerate(fds):
        os.dup2(fd, target)
        os.close(fd)
    sys.stdout.reconfigure(line_buffering=sys.stdout.isatty())  # type: ignore[union-attr]  # as a fresh process on this fd would be
    os.umask(req["umask"])
    os.environ.clear()
    os.environ.update(req["env"])
    try:
        os.chdir(req["cwd"])
    except OSError as err:
        print(f"normlab: warm start: cannot enter {req['cwd']} ({err.strerror})", file=sys.stderr)
        return 1
    sys.argv = list(req["argv"]) or [ENTRY]
    if os.environ.get("NORMLAB_WARM_DEBUG"):
        import faulthandler

        faulthandler.dump_traceback_later(float(os.environ["NORMLAB_WARM_DEBUG"]), exit=True)
    try:
        code = launch(Launch.from_json(req["launch"]))
    except SystemExit as exc:
        code = exc.code if isinstance(exc.code, int) else (0 if exc.code is None else 1)
    except KeyboardInterrupt:
        code = 130
    except BaseException:  # noqa: BLE001 - report like the interpreter would, then fail
        import traceback

        traceback.print_exc()
        code = 1
    sys.stdout.flush()
    sys.stderr.flush()
    return int(code or 0)


if __name__ == "__main__":  # started by pipeline.warm.client's client: python -m pipeline.warm.server
    sys.exit(serve())
