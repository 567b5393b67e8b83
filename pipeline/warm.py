"""Warm start: a per-user server with torch, Lightning and MLflow already imported.

A grid is many short processes, and each would spend ~8 s importing before its first
step. The first `python -m pipeline.train` of a checkout starts this server in the
background (and trains cold itself); later calls hand their arguments, working folder,
environment, umask and stdin/stdout/stderr to it, and it forks a child that runs
`pipeline.train` (nothing else) exactly as the cold path would, writing straight to the
caller's terminal. The caller waits for the child's exit code and forwards SIGINT/SIGTERM
to it, so DVC sees an ordinary process; a caller that goes away stops its child.

Safety: socket, lock and log live in a private folder ($XDG_RUNTIME_DIR/normlab, else
$TMPDIR or /tmp + /normlab-<uid>), checked with lstat (ours, mode 0700, no symlink) before
every use; on any doubt the caller runs cold after one warning line. The client checks the
socket's owner and the server's uid (SO_PEERCRED), the server each client's uid. Requests
are at most 1 MiB and must arrive within 10 s; the server is one thread (a poll loop), so no
client can block another and no fork happens while threads run (it refuses to fork, and the
caller runs cold, if an import ever starts one). `stop` ends running children (SIGTERM, then
SIGKILL) before it answers; a child dies with its server. The socket's name carries a
fingerprint of every module under pipeline/, the interpreter and the installed packages, so
edited code or a `pip install` never runs in an old server; an idle server exits after
NORMLAB_WARM_IDLE seconds (default 300). NORMLAB_WARM=0 turns all of it off;
NORMLAB_WARM_DEBUG=N makes a child dump its stack and exit after N seconds (to find a hang).

    python -m pipeline.warm status         # up (answers a ping) or down; exit 0 / 1
    python -m pipeline.warm start [--wait] # start one now (e.g. before a benchmark)
    python -m pipeline.warm stop           # stops running cells first, then the server
"""
from __future__ import annotations

import hashlib
import json
import os
import select
import signal
import socket
import stat
import struct
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
ENTRY = "pipeline.train"  # the only module a child may run
MAX_REQUEST = 1 << 20  # bytes of JSON
REQUEST_S = 10.0  # a client has this long to send its whole request
REPLY_S = 30.0  # the client waits this long for the server to fork (or answer a ping)
STOP_GRACE_S = 5.0  # SIGTERM -> SIGKILL, for `stop`
HANGUP_GRACE_S = 10.0  # SIGINT -> SIGKILL, when a caller went away
IN_CHILD = False  # set in a forked child: it must not try to reach a server itself


class Unsafe(Exception):
    """The socket or folder is not provably ours: do not use it."""


def enabled() -> bool:
    return (os.environ.get("NORMLAB_WARM", "1") != "0" and hasattr(socket, "AF_UNIX") and hasattr(os, "fork")
            and hasattr(socket, "SO_PEERCRED"))


def _warn(msg: str) -> None:
    print(f"normlab: warm start off: {msg}; running cold", file=sys.stderr)


def _problem(path: Path | str) -> str | None:
    """Why `path` is not a private folder of ours (lstat: never through a symlink), or None."""
    try:
        st = os.lstat(path)
    except OSError as err:
        return f"cannot be read ({err.strerror})"
    if stat.S_ISLNK(st.st_mode):
        return "is a symlink"
    if not stat.S_ISDIR(st.st_mode):
        return "is not a folder"
    if st.st_uid != os.getuid():
        return f"is owned by uid {st.st_uid}"
    if st.st_mode & 0o077:
        return f"has mode {stat.S_IMODE(st.st_mode):04o}"
    return None


def private_dir() -> Path | None:
    """The per-user folder for socket, lock and log, made 0700 if missing; None (after one
    warning line) unless it is a folder of ours that nobody else can enter."""
    xdg = os.environ.get("XDG_RUNTIME_DIR", "")
    if os.path.isabs(xdg) and _problem(xdg) is None:
        folder = Path(xdg) / "normlab"
    else:
        tmp = os.environ.get("TMPDIR", "")
        folder = Path(tmp if os.path.isabs(tmp) else "/tmp") / f"normlab-{os.getuid()}"
    try:
        os.mkdir(folder, 0o700)  # never follows a symlink planted at `folder`
    except FileExistsError:
        pass
    except OSError as err:
        _warn(f"cannot create {folder} ({err.strerror})")
        return None
    problem = _problem(folder)
    if problem:
        _warn(f"{folder} {problem} (must be a folder of uid {os.getuid()} with mode 0700)")
        return None
    return folder


def _site_dirs() -> list[Path]:
    import sysconfig

    paths = sysconfig.get_paths()
    return sorted({Path(paths["purelib"]), Path(paths["platlib"])})


def fingerprint() -> str:
    """Changes when a training module, the interpreter, or an installed package changes."""
    h = hashlib.sha1(f"{sys.executable}\0{ROOT}\0".encode())
    files = sorted((ROOT / "pipeline").rglob("*.py"))  # every module a child may import
    for site in _site_dirs():  # a pip install touches the folder and the packages' dist-info
        files.append(site)
        try:
            files += sorted(p for p in site.iterdir() if p.name.endswith((".dist-info", ".egg-link", ".pth")))
        except OSError:
            pass
    for f in files:
        try:
            st = f.stat()
            h.update(f"{f}\0{st.st_mtime_ns}\0{st.st_size}\0".encode())
        except OSError:
            h.update(f"{f}\0missing\0".encode())
    return h.hexdigest()[:20]


def socket_path() -> Path | None:
    folder = private_dir()
    return None if folder is None else folder / f"{fingerprint()}.sock"


def _open_private(path: Path, flags: int) -> int:
    """Open a file in the private folder, never through a symlink; it must be ours."""
    fd = os.open(path, flags | os.O_NOFOLLOW | os.O_CLOEXEC, 0o600)
    st = os.fstat(fd)
    if not stat.S_ISREG(st.st_mode) or st.st_uid != os.getuid():
        os.close(fd)
        raise Unsafe(f"{path} is not a plain file of uid {os.getuid()}")
    return fd


def _peer_uid(conn: socket.socket) -> int:
    return struct.unpack("3i", conn.getsockopt(socket.SOL_SOCKET, socket.SO_PEERCRED, struct.calcsize("3i")))[1]


def _connect(path: Path, timeout: float) -> socket.socket | None:
    """A connection to our own server at `path`; None if nothing listens; Unsafe if the socket
    or the process behind it is not ours."""
    try:
        st = os.lstat(path)
    except FileNotFoundError:
        return None
    if not stat.S_ISSOCK(st.st_mode) or st.st_uid != os.getuid() or st.st_mode & 0o077:
        raise Unsafe(f"{path} is not a private socket of uid {os.getuid()}")
    conn = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    conn.settimeout(timeout)
    try:
        conn.connect(str(path))
        uid = _peer_uid(conn)
    except OSError:
        conn.close()
        return None
    if uid != os.getuid():
        conn.close()
        raise Unsafe(f"the server at {path} runs as uid {uid}")
    return conn


def _send(conn: socket.socket, req: dict, fds: list[int] = ()) -> None:
    data = json.dumps(req).encode()
    data = len(data).to_bytes(8, "big") + data
    sent = socket.send_fds(conn, [data], list(fds)) if fds else 0
    conn.sendall(data[sent:])


def _recv_int(conn: socket.socket) -> int:
    buf = b""
    while len(buf) < 8:
        chunk = conn.recv(8 - len(buf))
        if not chunk:
            raise ConnectionError("the warm server closed the connection")
        buf += chunk
    return int.from_bytes(buf, "big", signed=True)


# -- client --------------------------------------------------------------------------------
def _asks_help(argv: list[str]) -> bool:
    args = argv[:argv.index("--")] if "--" in argv else argv
    return any(a == "-h" or (len(a) > 2 and "--help".startswith(a)) for a in args)


def _runnable(argv: list[str]) -> bool:
    """Worth starting a server for: the training command's required options are there."""
    return all(any(a == opt or a.startswith(opt + "=") for a in argv) for opt in ("--variant", "--dataset", "--out"))


def run_warm(module: str, argv: list[str]) -> int | None:
    """Run `python -m pipeline.train argv` in a warm child and return its exit code; None means
    run cold (no server yet: one is started for the next call; `--help`; or any doubt)."""
    if IN_CHILD or not enabled() or module != ENTRY or _asks_help(argv):
        return None
    path = socket_path()
    if path is None:
        return None
    try:
        conn = _connect(path, REPLY_S)
    except Unsafe as err:
        _warn(str(err))
        return None
    if conn is None:
        if _runnable(argv):
            start_server()
        return None
    with conn:
        return _run_in_child(conn, argv)


def _run_in_child(conn: socket.socket, argv: list[str]) -> int | None:
    umask = os.umask(0o077)
    os.umask(umask)
    try:
        req = {"op": "run", "module": ENTRY, "argv": argv, "cwd": os.getcwd(), "umask": umask,
               "env": {**os.environ, "NORMLAB_T0": os.environ.get("NORMLAB_T0", str(_T_START))}}
    except OSError:
        return None
    started = [False]

    def forward(signum, frame):
        if not started[0]:  # no child yet: hanging up makes the server stop it if one is forked
            raise KeyboardInterrupt
        try:  # the server signals the child; a hang-up (terminal closed) ends it as Ctrl-C would
            conn.send(bytes([signal.SIGINT if signum == signal.SIGHUP else signum]))
        except OSError:
            pass

    old = {sig: signal.signal(sig, forward) for sig in (signal.SIGINT, signal.SIGTERM, signal.SIGHUP)}
    try:
        try:
            _send(conn, req, [0, 1, 2])
            if _recv_int(conn) <= 0:
                return None  # refused (the server says why in its log): run cold
        except (OSError, ConnectionError):
            return None
        started[0] = True
        conn.settimeout(None)
        try:
            return _recv_int(conn)
        except (OSError, ConnectionError):
            print("normlab: the warm server went away; the cell was stopped", file=sys.stderr)
            return 1
    except KeyboardInterrupt:
        return 130
    finally:
        for sig, handler in old.items():
            signal.signal(sig, handler)


def start_server() -> None:
    """Start a server in the background (it exits at once if one for this code is up)."""
    path = socket_path()
    if path is None:
        return
    try:
        log = _open_private(path.with_suffix(".log"), os.O_WRONLY | os.O_CREAT | os.O_APPEND)
    except (OSError, Unsafe) as err:
        _warn(str(err))
        return
    with os.fdopen(log, "ab") as log_file:
        subprocess.Popen([sys.executable, "-m", "pipeline.warm", "serve"], cwd=ROOT, start_new_session=True,
                         stdin=subprocess.DEVNULL, stdout=log_file, stderr=log_file, umask=0o077,
                         env={k: v for k, v in os.environ.items() if k != "NORMLAB_T0"})


# -- server --------------------------------------------------------------------------------
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
    import pipeline.train  # noqa: F401  (torch, pandas, config)
    import pytorch_lightning  # noqa: F401
    import mlflow.tracking  # noqa: F401
    import mlflow.store.tracking.sqlalchemy_store, mlflow.store.db.utils  # noqa: F401,E401 (1.2 s; no engine yet)
    import pipeline.data, pipeline.model, pipeline.module, pipeline.tracking  # noqa: F401,E401
    import sklearn.datasets  # noqa: F401

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
        for sock in (self.srv, conn, *self.stoppers, *(p[0] for p in self.pending.values()),
                     *(r[0] for r in self.running.values() if r[0])):
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
                pid, status = os.waitpid(-1, os.WNOHANG)
            except ChildProcessError:
                return
            if pid == 0:
                return
            code = os.waitstatus_to_exitcode(status)
            code = 128 - code if code < 0 else code  # killed by signal N -> 128 + N, as a shell says
            conn = self.running.pop(pid, [None])[0]
            self.last = time.monotonic()
            _log(f"child {pid} exited {code}")
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
    if (len(fds) != 3 or not isinstance(argv, list) or not all(isinstance(a, str) for a in argv)
            or not isinstance(env, dict) or not all(isinstance(v, str) for v in env.values())
            or not isinstance(umask, int) or not 0 <= umask <= 0o777 or not isinstance(cwd, str)):
        return "malformed run request"
    if not os.path.isabs(cwd) or not os.path.isdir(cwd):
        return f"working folder {cwd[:200]!r} is not a folder"
    if _threads() > 1:  # forking a threaded process can deadlock the child
        return f"{_threads()} threads are running; no fork"
    return None


def _child(req: dict, fds: list[int], server_pid: int) -> int:
    """In the forked child: become the caller's process and run pipeline.train's main()."""
    global IN_CHILD
    IN_CHILD = True
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
    sys.stdout.reconfigure(line_buffering=sys.stdout.isatty())  # as a fresh process on this fd would be
    os.umask(req["umask"])
    os.environ.clear()
    os.environ.update(req["env"])
    try:
        os.chdir(req["cwd"])
    except OSError as err:
        print(f"normlab: warm start: cannot enter {req['cwd']} ({err.strerror})", file=sys.stderr)
        return 1
    sys.argv = [ENTRY, *req["argv"]]
    if os.environ.get("NORMLAB_WARM_DEBUG"):
        import faulthandler

        faulthandler.dump_traceback_later(float(os.environ["NORMLAB_WARM_DEBUG"]), exit=True)
    from pipeline.train import main as train_main

    try:
        code = train_main(req["argv"])
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




_T_START = time.time()


def _lock_holder(path: Path) -> int | None:
    """The pid of the server holding this socket's lock, or None when no server holds it."""
    import fcntl

    fd = _open_private(path.with_suffix(".lock"), os.O_RDWR | os.O_CREAT)
    with os.fdopen(fd, "r+") as lock:
        try:
            fcntl.flock(lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError:
            return int(lock.read().strip() or 0) or None
        if os.path.exists(path):  # our stale socket (checked by _connect); nothing can be binding now
            os.unlink(path)
        return None


def _ask(path: Path, op: str, timeout: float) -> int | None:
    conn = _connect(path, timeout)
    if conn is None:
        return None
    with conn:
        try:
            _send(conn, {"op": op})
            return _recv_int(conn)
        except (OSError, ConnectionError):
            return None


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    cmd = argv[0] if argv else "status"
    if cmd not in ("serve", "status", "start", "stop") or argv[1:] not in ([], ["--wait"]):
        print("usage: python -m pipeline.warm status|start [--wait]|stop", file=sys.stderr)
        return 2
    if cmd == "serve":
        return serve()
    path = socket_path()
    if path is None:
        return 1
    try:
        pid = _ask(path, "stop" if cmd == "stop" else "ping", STOP_GRACE_S + 60 if cmd == "stop" else REPLY_S)
        holder = None if pid else _lock_holder(path)
    except (Unsafe, OSError, ValueError) as err:
        print(f"normlab: warm server at {path}: {err}", file=sys.stderr)
        return 1
    if cmd == "stop":
        if holder:  # starting up (not listening yet): it has no children
            os.kill(holder, signal.SIGTERM)
        for _ in range(200):  # until it has let go of its lock (it exits right after)
            if not (pid or holder) or _lock_holder(path) is None:
                break
            time.sleep(0.05)
        print(f"stopped the warm server {pid or holder}" if pid or holder else "no warm server was running")
        return 0
    if cmd == "start" and not pid:
        start_server()
        for _ in range(240 if "--wait" in argv else 0):
            time.sleep(0.5)
            pid = _ask(path, "ping", REPLY_S)
            if pid:
                break
    state = f"up (pid {pid})" if pid else f"starting (pid {holder})" if holder else "down"
    print(f"warm server {state} at {path}")
    return 0 if pid or (cmd == "start" and "--wait" not in argv) else 1


if __name__ == "__main__":
    from pipeline import warm  # run as the importable module, so IN_CHILD is the flag others read

    sys.exit(warm.main())
