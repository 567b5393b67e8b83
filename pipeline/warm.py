"""Warm start: a per-checkout server with torch, Lightning and MLflow already imported.

A grid is many short processes, and each would spend ~8 s importing before its first
step. The first `python -m pipeline.train` of a checkout starts this server in the
background (and trains cold itself); later calls hand their arguments, working
directory, environment and stdin/stdout/stderr to it, and it forks a child that runs
the cell exactly as the cold path would, writing straight to the caller's terminal. The
caller waits for the child's exit code and forwards SIGINT/SIGTERM to it, so DVC sees an
ordinary process.

The socket's name is derived from the checkout and a fingerprint of the training modules, so
edited training code never runs in an old server; an idle server exits after NORMLAB_WARM_IDLE
seconds (default 300). NORMLAB_WARM=0 turns all of it off; NORMLAB_WARM_DEBUG=N makes a child
dump its stack and exit if it runs longer than N seconds (for diagnosing a hang).

    python -m pipeline.warm status     # is a server up for this checkout?
    python -m pipeline.warm stop
"""
from __future__ import annotations

import hashlib
import json
import os
import signal
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
# the modules a training child runs; editing any of them retires the server (report.py etc. do not)
SERVED = ("config", "data", "model", "module", "norms", "optim", "tracking", "train", "warm")
FD_MSG = 1 << 16
IN_CHILD = False  # set in a forked child: it must not try to reach a server itself


def enabled() -> bool:
    return os.environ.get("NORMLAB_WARM", "1") != "0" and hasattr(socket, "AF_UNIX") and hasattr(os, "fork")


def socket_path() -> str:
    h = hashlib.sha1(f"{sys.executable}\0{ROOT}".encode())
    for name in SERVED:
        f = ROOT / "pipeline" / f"{name}.py"
        st = f.stat()
        h.update(f"{f.name}\0{st.st_mtime_ns}\0{st.st_size}\0".encode())
    return f"/tmp/normlab-{os.getuid()}-{h.hexdigest()[:20]}.sock"


def _recv_exactly(conn: socket.socket, n: int) -> bytes:
    buf = b""
    while len(buf) < n:
        chunk = conn.recv(n - len(buf))
        if not chunk:
            raise ConnectionError("server closed the connection")
        buf += chunk
    return buf


# -- client --------------------------------------------------------------------------------
def run_warm(module: str, argv: list[str]) -> int | None:
    """Run `python -m <module> argv` in a warm child; None when no server answers (then one
    is started for the next call and the caller runs cold)."""
    if IN_CHILD or not enabled():
        return None
    path = socket_path()
    conn = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    try:
        conn.connect(path)
    except OSError:
        conn.close()
        _spawn_server(path)
        return None
    env = {**os.environ, "NORMLAB_T0": os.environ.get("NORMLAB_T0", str(_T_START))}
    req = json.dumps({"module": module, "argv": argv, "cwd": os.getcwd(), "env": env}).encode()
    child = [0]

    def forward(signum, frame):
        if child[0]:
            try:
                os.kill(child[0], signal.SIGINT if signum == signal.SIGHUP else signum)
            except ProcessLookupError:
                pass
        else:  # no child yet: hanging up makes the server stop it as soon as it exists
            conn.close()
            raise KeyboardInterrupt

    for sig in (signal.SIGINT, signal.SIGTERM, signal.SIGHUP):
        signal.signal(sig, forward)
    try:
        socket.send_fds(conn, [len(req).to_bytes(8, "big") + req], [0, 1, 2])
        child[0] = int.from_bytes(_recv_exactly(conn, 8), "big", signed=True)
    except (OSError, ConnectionError):
        conn.close()
        return None
    try:
        return int.from_bytes(_recv_exactly(conn, 8), "big", signed=True)
    except ConnectionError:
        return 1
    finally:
        conn.close()


def _spawn_server(path: str) -> None:
    subprocess.Popen([sys.executable, "-m", "pipeline.warm", "serve", path], cwd=ROOT, start_new_session=True,
                     stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                     env={k: v for k, v in os.environ.items() if k != "NORMLAB_T0"})


# -- server --------------------------------------------------------------------------------
def _child(req: dict, fds: list[int]) -> int:
    """In the forked child: become the caller's process and run its module's main()."""
    global IN_CHILD
    IN_CHILD = True
    for target, fd in enumerate(fds):
        os.dup2(fd, target)
        os.close(fd)
    os.chdir(req["cwd"])
    os.environ.clear()
    os.environ.update(req["env"])
    for sig in (signal.SIGINT, signal.SIGTERM):
        signal.signal(sig, signal.default_int_handler if sig == signal.SIGINT else signal.SIG_DFL)
    sys.argv = [req["module"], *req["argv"]]
    import importlib
    if os.environ.get("NORMLAB_WARM_DEBUG"):
        import faulthandler
        faulthandler.dump_traceback_later(float(os.environ["NORMLAB_WARM_DEBUG"]), exit=True)

    try:
        code = importlib.import_module(req["module"]).main(req["argv"])
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


def serve(path: str) -> None:
    import fcntl

    lock = open(path + ".lock", "a+")
    try:
        fcntl.flock(lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except OSError:
        return  # another server for this code is starting or running
    lock.truncate(0)
    lock.write(str(os.getpid()))
    lock.flush()
    # the imports every cell needs, done once; nothing here may start threads or touch a GPU
    import pipeline.train  # noqa: F401  (torch, pandas, config)
    import pytorch_lightning  # noqa: F401
    import mlflow.tracking  # noqa: F401
    import mlflow.store.tracking.sqlalchemy_store, mlflow.store.db.utils  # noqa: F401,E401 (1.2 s; no engine yet)
    import pipeline.data, pipeline.model, pipeline.module, pipeline.tracking  # noqa: F401,E401
    import sklearn.datasets  # noqa: F401

    if os.path.exists(path):
        os.unlink(path)
    srv = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    srv.bind(path)
    srv.listen(16)
    idle = float(os.environ.get("NORMLAB_WARM_IDLE", "300"))
    srv.settimeout(idle)
    busy = [0]
    active: set[socket.socket] = set()  # connections of running children

    def stop(signum, frame):
        raise SystemExit(0)

    signal.signal(signal.SIGTERM, stop)
    try:
        while True:
            try:
                conn, _ = srv.accept()
            except socket.timeout:
                if busy[0]:
                    continue
                break
            fds: list[int] = []
            try:
                head, fds, _, _ = socket.recv_fds(conn, FD_MSG, 3)
                size = int.from_bytes(head[:8], "big")
                req = json.loads(head[8:] + _recv_exactly(conn, size - len(head[8:])))
            except (OSError, ValueError):
                for fd in fds:
                    os.close(fd)
                conn.close()
                continue
            pid = os.fork()
            if pid == 0:  # the child keeps only the caller's stdin/stdout/stderr
                for sock in (srv, conn, *active):
                    sock.close()
                lock.close()
                signal.signal(signal.SIGTERM, signal.SIG_DFL)
                os._exit(_child(req, fds))
            for fd in fds:
                os.close(fd)
            busy[0] += 1
            active.add(conn)
            conn.sendall(pid.to_bytes(8, "big", signed=True))
            threading.Thread(target=_reap, args=(pid, conn, busy, active), daemon=True).start()
    finally:
        srv.close()
        if os.path.exists(path):
            os.unlink(path)


def _reap(pid: int, conn: socket.socket, busy: list[int], active: set) -> None:
    """Wait for the child; if its caller hangs up first (killed, terminal closed), stop it."""
    told = False
    while True:
        done, status = os.waitpid(pid, os.WNOHANG)
        if done:
            break
        if not told:
            try:
                if conn.recv(1, socket.MSG_PEEK | socket.MSG_DONTWAIT) == b"":
                    os.kill(pid, signal.SIGINT)  # the caller is gone: end the cell as Ctrl-C would
                    told = True
            except BlockingIOError:
                pass
            except OSError:
                told = True
        time.sleep(0.2)
    active.discard(conn)
    code = os.waitstatus_to_exitcode(status)
    code = 128 - code if code < 0 else code  # killed by signal N -> 128 + N, as a shell reports
    try:
        conn.sendall(int(code).to_bytes(8, "big", signed=True))
    except OSError:
        pass
    conn.close()
    busy[0] -= 1


_T_START = time.time()


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    cmd = argv[0] if argv else "status"
    path = argv[1] if len(argv) > 1 else socket_path()
    if cmd == "serve":
        serve(path)
        return 0
    up = os.path.exists(path)
    if cmd == "stop" and up:
        import fcntl

        with open(path + ".lock", "a+") as lock:
            try:  # acquirable = no server holds it: the pid written there is stale
                fcntl.flock(lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
                os.unlink(path)
                print("no warm server was running; removed its stale socket")
                return 0
            except OSError:
                lock.seek(0)
                pid = int(lock.read() or 0)
        os.kill(pid, signal.SIGTERM)
        print(f"stopped the warm server {pid}")
        return 0
    print(f"warm server {'up' if up else 'down'} at {path}")
    return 0


if __name__ == "__main__":
    from pipeline import warm  # run as the importable module, so IN_CHILD is the flag others read

    sys.exit(warm.main())
