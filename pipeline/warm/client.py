"""Warm start: a per-user server with torch, Lightning and MLflow already imported.

A grid is many short processes, and each would spend ~8 s importing before its first
step. The first `python -m pipeline.train` of a checkout starts this server in the
background (and trains cold itself); later calls hand their parsed arguments (a
pipeline.cell.Launch), working folder, environment, umask and stdin/stdout/stderr to it, and it
forks a child that runs `pipeline.cell.launch` (nothing else) exactly as the cold path would,
writing straight to the caller's terminal. The caller waits for the child's exit code and forwards SIGINT/SIGTERM
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

This module is the client side (what `python -m pipeline.train` calls), the helpers both sides
share and the command line; the server itself (its poll loop, the fork, the child) is
pipeline/warm/server.py.
"""

from __future__ import annotations

import hashlib
import json
import os
import signal
import socket
import stat
import struct
import subprocess
import sys
import time
from collections.abc import Sequence
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
ENTRY = "pipeline.cell"  # the only module a child may run (its launch(), with a Launch from the request)
MAX_REQUEST = 1 << 20  # bytes of JSON
REQUEST_S = 10.0  # a client has this long to send its whole request
REPLY_S = 30.0  # the client waits this long for the server to fork (or answer a ping)
STOP_GRACE_S = 5.0  # SIGTERM -> SIGKILL, for `stop`
HANGUP_GRACE_S = 10.0  # SIGINT -> SIGKILL, when a caller went away
IN_CHILD = False  # set in a forked child: it must not try to reach a server itself


class Unsafe(Exception):
    """The socket or folder is not provably ours: do not use it."""


def enabled() -> bool:
    return (
        os.environ.get("NORMLAB_WARM", "1") != "0"
        and hasattr(socket, "AF_UNIX")
        and hasattr(os, "fork")
        and hasattr(socket, "SO_PEERCRED")
    )


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
    """Changes when a training module, the interpreter, or an installed package changes. The
    interpreter is named by what it is -- its resolved binary and its environment (sys.prefix) -- not
    by the name it was started under: `python` (DVC's stages) and `python3` (`normlab`) of one venv are
    one server."""
    h = hashlib.sha1(f"{os.path.realpath(sys.executable)}\0{sys.prefix}\0{ROOT}\0".encode())
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


def _send(conn: socket.socket, req: dict, fds: Sequence[int] = ()) -> None:
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
def _is_launch(launch) -> bool:
    from pipeline.cell import Launch

    try:
        Launch.from_json(launch)
    except ValueError:
        return False
    return True


def run_warm(launch: dict) -> int | None:
    """Run a cell (a pipeline.cell.Launch's JSON form: the training command's parsed arguments) in a
    warm child and return its exit code; None means run cold (no server yet: one is started for the
    next call; anything that is not a launch; or any doubt)."""
    if IN_CHILD or not enabled() or not _is_launch(launch):
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
        start_server()
        return None
    with conn:
        return _run_in_child(conn, launch)


def _run_in_child(conn: socket.socket, launch: dict) -> int | None:
    umask = os.umask(0o077)
    os.umask(umask)
    try:  # argv: the caller's own, as the child's sys.argv (what MLflow's source tag and messages show)
        req = {
            "op": "run",
            "module": ENTRY,
            "launch": launch,
            "argv": list(sys.argv),
            "cwd": os.getcwd(),
            "umask": umask,
            "env": {**os.environ, "NORMLAB_T0": os.environ.get("NORMLAB_T0", str(_T_START))},
        }
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
        subprocess.Popen(
            [sys.executable, "-m", "pipeline.warm.server"],
            cwd=ROOT,
            start_new_session=True,
            stdin=subprocess.DEVNULL,
            stdout=log_file,
            stderr=log_file,
            umask=0o077,
            env={k: v for k, v in os.environ.items() if k != "NORMLAB_T0"},
        )


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
    import argparse

    ap = argparse.ArgumentParser(
        prog="normlab warm",
        description="The warm-start server: one process per user and "
        "interpreter that keeps torch, Lightning and MLflow imported, so a cell starts fast.",
    )
    ap.add_argument(
        "command",
        nargs="?",
        default="status",
        choices=("status", "start", "stop"),
        help="status (default): is it up, and its pid; start: start it if it is down; stop: stop it",
    )
    ap.add_argument("--wait", action="store_true", help="with start: return only when it answers")
    args = ap.parse_args(sys.argv[1:] if argv is None else argv)  # --help: exit 0; a bad word: usage, exit 2
    if args.wait and args.command != "start":
        ap.error("--wait goes with start")
    cmd = args.command
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
        for _ in range(240 if args.wait else 0):
            time.sleep(0.5)
            pid = _ask(path, "ping", REPLY_S)
            if pid:
                break
    state = f"up (pid {pid})" if pid else f"starting (pid {holder})" if holder else "down"
    print(f"warm server {state} at {path}")
    return 0 if pid or (cmd == "start" and not args.wait) else 1


if __name__ == "__main__":
    from pipeline.warm import client as warm  # run as the importable module, so IN_CHILD is the flag others read

    sys.exit(warm.main())
