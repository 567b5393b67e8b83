"""The warm server as a hostile local user and a careless caller would meet it (issue 7, item 1).

    .venv/bin/python -m pytest -q tests/test_warm_security.py

Each test runs in its own short temp folder (TMPDIR, so the private folder is <tmp>/normlab-0)
and stops every server it started by pid. "Another owner" is the real user `nobody`
(setpriv), since the tests run as root.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import socket
import stat
import subprocess
import sys
import tempfile
import textwrap
import time
from pathlib import Path

import pytest
import yaml

from pipeline.spec import environment
from pipeline.warm import client as warm
from tests.conftest import BASE, merge

ROOT = Path(__file__).resolve().parents[1]
PY = sys.executable
NOBODY = ["setpriv", "--reuid=nobody", "--regid=nogroup", "--clear-groups", "/usr/bin/python3", "-c"]
pytestmark = pytest.mark.slow


# -- helpers ---------------------------------------------------------------------------------
def _env(tmp: Path, **extra) -> dict:
    env = {k: v for k, v in os.environ.items() if k not in ("XDG_RUNTIME_DIR", "NORMLAB_T0")}
    return {
        **env,
        "TMPDIR": str(tmp),
        "NORMLAB_WARM": "1",
        "NORMLAB_WARM_IDLE": "120",
        **environment.NO_TELEMETRY,
        **extra,
    }


def _servers(tmp: Path) -> list[int]:
    """Pids of warm servers started with this TMPDIR (found in /proc, so none escapes)."""
    pids = []
    for d in Path("/proc").iterdir():
        try:
            cmd = (d / "cmdline").read_bytes().split(b"\0")
            # the server is `python -m pipeline.warm.server` (pipeline/warm/client.py); it was `... client serve`,
            # and while this matched only that, no server was found: each stayed up until its idle timeout
            is_server = b"pipeline.warm.server" in cmd or (b"pipeline.warm.client" in cmd and b"serve" in cmd)
            if is_server and f"TMPDIR={tmp}".encode() in (d / "environ").read_bytes().split(b"\0"):
                pids.append(int(d.name))
        except (OSError, ValueError):
            pass
    return pids


def _kill_servers(tmp: Path) -> None:
    for pid in _servers(tmp):
        os.kill(pid, signal.SIGTERM)
    for _ in range(200):
        if not _servers(tmp):
            return
        time.sleep(0.05)
    for pid in _servers(tmp):
        os.kill(pid, signal.SIGKILL)


@pytest.fixture
def tmp():
    folder = Path(tempfile.mkdtemp(prefix="nw", dir="/tmp"))  # short: a socket path has 107 bytes
    yield folder
    _kill_servers(folder)
    shutil.rmtree(folder, ignore_errors=True)


def _params(folder: Path, steps: int = 20) -> Path:
    p = folder / f"params-{steps}.yaml"
    over = {"train": {"steps": steps, "log_every": 100, "eval_every": 1000}, "tracking": {"log_every": 100}}
    p.write_text(yaml.safe_dump(merge(BASE, over if steps > 20 else {}), sort_keys=False))
    return p


def _train(env: dict, params: Path, out: Path, variant: str = "bn", **kw) -> subprocess.CompletedProcess:
    return subprocess.run(
        [
            PY,
            "-m",
            "pipeline.train",
            "--params",
            str(params),
            "--dataset",
            "synthetic",
            "--variant",
            variant,
            "--no-track",
            "--out",
            str(out),
        ],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
        **kw,
    )


def _warm(env: dict, *args: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        [PY, "-m", "pipeline.warm.client", *args], cwd=ROOT, env=env, capture_output=True, text=True, timeout=120
    )


def _sock(env: dict) -> Path:
    return Path(_warm(env, "status").stdout.strip().rsplit(" at ", 1)[1])


def _wait_up(env: dict) -> int:
    for _ in range(600):
        out = _warm(env, "status").stdout
        if " up (pid " in out:
            return int(out.split("(pid ")[1].split(")")[0])
        time.sleep(0.5)
    raise AssertionError(f"no warm server came up: {out}")


def _alive(pid: int) -> bool:
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0] != "Z"
    except OSError:
        return False


def _children(pid: int) -> list[int]:
    try:
        return [int(c) for c in Path(f"/proc/{pid}/task/{pid}/children").read_text().split()]
    except OSError:
        return []


def _started(sock: Path) -> int:
    """How many children the server has forked (its log says so)."""
    log = sock.with_suffix(".log")
    return log.read_text().count(" started") if log.exists() else 0


def _raw(sock: Path) -> socket.socket:
    c = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    c.settimeout(60)
    c.connect(str(sock))
    return c


def _frame(obj) -> bytes:
    body = json.dumps(obj).encode()
    return len(body).to_bytes(8, "big") + body


LAUNCH = {
    "variant": "bn",
    "dataset": "synthetic",
    "out": "/nonexistent/o",
    "params": "/nonexistent/p.yaml",
    "no_track": True,
}  # what pipeline.train sends: its parsed arguments (pipeline.cell.Launch)


def _run_request(**over) -> dict:
    return {
        "op": "run",
        "module": "pipeline.cell",
        "launch": LAUNCH,
        "argv": ["pipeline.train"],
        "cwd": str(ROOT),
        "umask": 0o22,
        "env": {"PATH": os.environ["PATH"]},
        **over,
    }


def _nobody(script: str, **kw) -> subprocess.Popen:
    return subprocess.Popen([*NOBODY, textwrap.dedent(script)], **kw)


# -- the private folder and the socket's owner -------------------------------------------------------
def test_a_folder_squatted_by_another_user_is_refused_and_the_squatter_gets_nothing(tmp):
    """Before: the socket sat at a predictable /tmp path and the client connected to whatever
    listened there; a squatter got the caller's environment, argv and terminal."""
    os.chmod(tmp, 0o1777)  # a shared, sticky temp folder, like /tmp
    env = _env(tmp, SECRET_TOKEN="hunter2")
    name = warm.fingerprint() + ".sock"
    spy = _nobody(
        f"""
        import os, socket
        d = '{tmp}/normlab-0'
        os.mkdir(d); os.chmod(d, 0o777)
        s = socket.socket(socket.AF_UNIX); s.bind(d + '/{name}'); os.chmod(d + '/{name}', 0o777); s.listen()
        print('ready', flush=True)
        s.settimeout(60)
        try:
            c, _ = s.accept(); c.settimeout(5)
            got = c.recv(1 << 20)
        except OSError:
            got = b''
        open(d + '/got', 'wb').write(got)
        """,
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        assert spy.stdout.readline() == "ready\n"
        run = _train(env, _params(tmp), tmp / "out")
        assert run.returncode == 0, run.stderr
        assert (tmp / "out" / "summary.json").exists()  # trained, cold
        warnings = [ln for ln in run.stderr.splitlines() if "warm start off" in ln]
        assert len(warnings) == 1 and "is owned by uid 65534" in warnings[0], run.stderr
        assert not _servers(tmp)
    finally:
        spy.kill()
        spy.wait()
    assert not (tmp / "normlab-0" / "got").exists() or (tmp / "normlab-0" / "got").read_bytes() == b""


def test_a_socket_not_owned_by_us_is_never_connected_to(tmp):
    env = _env(tmp)
    sock = _sock(env)  # creates the private folder (0700, ours)
    listener = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    listener.bind(str(sock))
    listener.listen()
    listener.setblocking(False)
    os.chown(sock, 65534, 65534)  # planted by another owner
    try:
        run = _train(env, _params(tmp), tmp / "out", variant="nope")  # fails in validation, cold
        assert run.returncode == 2
        assert f"warm start off: {sock} is not a private socket of uid 0" in run.stderr
        with pytest.raises(BlockingIOError):
            listener.accept()  # nobody knocked
        status = _warm(env, "status")
        assert status.returncode == 1 and "not a private socket" in status.stderr
        assert sock.exists()  # not ours: never removed
    finally:
        listener.close()


def test_a_server_running_as_another_user_is_not_trusted(tmp):
    """The socket file looks right (ours, 0600) but the process behind it is `nobody`:
    the client checks the server's SO_PEERCRED uid and sends nothing."""
    env = _env(tmp)
    sock = _sock(env)
    shared = tmp / "shared"
    shared.mkdir(mode=0o777)
    os.chmod(shared, 0o777)
    os.chmod(tmp, 0o755)
    spy = _nobody(
        f"""
        import os, socket
        s = socket.socket(socket.AF_UNIX); s.bind('{shared}/s'); s.listen()
        print('ready', flush=True)
        c, _ = s.accept(); c.settimeout(10)
        got = b''
        try:
            while chunk := c.recv(1 << 16):
                got += chunk
        except OSError:
            pass
        print(len(got), flush=True)
        """,
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        assert spy.stdout.readline() == "ready\n"
        os.rename(shared / "s", sock)
        os.chown(sock, 0, 0)
        os.chmod(sock, 0o600)
        run = _train(env, _params(tmp), tmp / "out", variant="nope")
        assert run.returncode == 2
        assert f"warm start off: the server at {sock} runs as uid 65534" in run.stderr
        assert spy.stdout.readline() == "0\n"  # it received not one byte
    finally:
        spy.kill()
        spy.wait()


@pytest.mark.parametrize("plant", ["mode 0755", "symlink", "file", "other uid"])
def test_a_private_folder_that_is_not_private_is_refused(tmp, monkeypatch, capsys, plant):
    monkeypatch.setenv("TMPDIR", str(tmp))
    monkeypatch.delenv("XDG_RUNTIME_DIR", raising=False)
    if plant == "other uid":  # the folder is root's; we pretend to be uid 4242
        monkeypatch.setattr(os, "getuid", lambda: 4242)
    folder = tmp / f"normlab-{os.getuid()}"
    real = tmp / "real"
    real.mkdir(mode=0o700)
    if plant == "mode 0755":
        folder.mkdir()
        os.chmod(folder, 0o755)
    elif plant == "symlink":
        folder.symlink_to(real)
    elif plant == "file":
        folder.write_text("")
    else:
        folder.mkdir(mode=0o700)
    assert warm.socket_path() is None
    assert warm.run_warm({**LAUNCH, "dataset": "d", "out": "o"}) is None
    err = capsys.readouterr().err.splitlines()
    expect = {
        "mode 0755": "has mode 0755",
        "symlink": "is a symlink",
        "file": "is not a folder",
        "other uid": "is owned by uid 0",
    }[plant]
    assert len(err) == 2 and all(f"{folder} {expect}" in ln and ln.endswith("running cold") for ln in err)
    assert list(real.iterdir()) == [] and (not folder.is_dir() or folder.is_symlink() or not list(folder.iterdir()))
    assert not _servers(tmp)


def test_xdg_runtime_dir_is_used_only_when_it_is_private(tmp, monkeypatch):
    monkeypatch.setenv("TMPDIR", str(tmp / "t"))
    (tmp / "t").mkdir()
    xdg = tmp / "xdg"
    xdg.mkdir(mode=0o700)
    monkeypatch.setenv("XDG_RUNTIME_DIR", str(xdg))
    assert warm.socket_path().parent == xdg / "normlab"
    assert stat.S_IMODE(os.lstat(xdg / "normlab").st_mode) == 0o700
    os.chmod(xdg, 0o755)
    assert warm.socket_path().parent == tmp / "t" / "normlab-0"


def test_a_symlinked_lock_is_never_followed(tmp):
    """Before: the lock was opened with open(..., "a+") through any symlink and truncated."""
    env = _env(tmp)
    sock = _sock(env)
    victim = tmp / "victim"
    victim.write_text("precious\n")
    os.chmod(victim, 0o600)
    sock.with_suffix(".lock").unlink(missing_ok=True)  # `status` made one
    sock.with_suffix(".lock").symlink_to(victim)
    serve = subprocess.run(
        [PY, "-m", "pipeline.warm.server"], cwd=ROOT, env=env, capture_output=True, text=True, timeout=120
    )
    assert serve.returncode == 1
    assert "refusing to start" in serve.stderr
    for cmd in ("status", "stop"):
        assert _warm(env, cmd).returncode == 1
    assert victim.read_text() == "precious\n"
    assert not sock.exists() and not _servers(tmp)


def test_installed_package_changes_retire_the_server(tmp, monkeypatch):
    site = tmp / "site"
    site.mkdir()
    (site / "torch-2.0.dist-info").mkdir()
    monkeypatch.setattr(warm, "_site_dirs", lambda: [site])
    before = warm.fingerprint()
    assert warm.fingerprint() == before
    os.utime(site / "torch-2.0.dist-info", ns=(1, 1))  # reinstalled
    after = warm.fingerprint()
    (site / "numpy-2.0.dist-info").mkdir()  # a new package
    added = warm.fingerprint()
    monkeypatch.setattr(sys, "executable", "/other/python")
    assert len({before, after, added, warm.fingerprint()}) == 4


def test_help_and_hopeless_argv_start_nothing(tmp):
    """Before: `--help` (any call, really) spawned a server."""
    env = _env(tmp)
    for argv in (["--help"], ["--he"], ["-h"], ["--variant", "bn"]):
        run = subprocess.run(
            [PY, "-m", "pipeline.train", *argv], cwd=ROOT, env=env, capture_output=True, text=True, timeout=120
        )
        assert run.returncode in (0, 2)
        assert "usage:" in run.stdout + run.stderr
        assert not _servers(tmp), argv  # Popen returns after exec: a server would be there by now
    assert warm.run_warm({"module": "pytest", "argv": ["-p", "evil"]}) is None  # the client serves training only


def test_status_on_a_dead_server_says_down_and_clears_its_socket(tmp):
    """Before: `status` said "up" whenever a socket file existed."""
    env = _env(tmp)
    sock = _sock(env)
    dead = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    dead.bind(str(sock))  # a server that died without cleaning up
    os.chmod(sock, 0o600)
    dead.close()
    status = _warm(env, "status")
    assert status.returncode == 1 and status.stdout.startswith("warm server down at "), status.stdout
    assert not sock.exists()


# -- hostile and careless clients of a live server -----------------------------------------------
@pytest.fixture(scope="module")
def server():
    """One server for the hostile-client tests, started by a caller whose umask is 000."""
    folder = Path(tempfile.mkdtemp(prefix="nw", dir="/tmp"))
    env = _env(folder, NORMLAB_WARM_IDLE="600")
    params = _params(folder)
    first = _train(env, params, folder / "first", umask=0)
    assert first.returncode == 0, first.stderr
    pid = _wait_up(env)
    yield {"env": env, "params": params, "tmp": folder, "pid": pid, "sock": _sock(env)}
    _kill_servers(folder)
    shutil.rmtree(folder, ignore_errors=True)


def _still_serves(server, tag: str) -> None:
    env = server["env"]
    status = _warm(env, "status")
    log = server["sock"].with_suffix(".log")
    assert status.returncode == 0 and f"up (pid {server['pid']})" in status.stdout, (
        status.stdout + status.stderr + (log.read_text() if log.exists() else "")
    )
    n = _started(server["sock"])
    run = _train(env, server["params"], server["tmp"] / f"out-{tag}")
    assert run.returncode == 0, run.stderr
    assert _started(server["sock"]) == n + 1  # it ran warm, in a child of the same server
    assert server["sock"].exists()


def test_socket_and_folder_are_private_even_under_umask_000(server):
    sock = server["sock"]
    assert stat.S_IMODE(os.lstat(sock).st_mode) == 0o600 and stat.S_ISSOCK(os.lstat(sock).st_mode)
    assert stat.S_IMODE(os.lstat(sock.parent).st_mode) == 0o700
    for suffix in (".lock", ".log"):
        assert stat.S_IMODE(os.lstat(sock.with_suffix(suffix)).st_mode) == 0o600
    assert "(1 thread)" in sock.with_suffix(".log").read_text()  # imports started no thread: forks are safe


def test_no_fork_while_another_thread_runs():
    """Before: the server forked with OpenBLAS, jemalloc and Lightning threads running."""
    probe = textwrap.dedent(f"""
        import threading
        from pipeline.warm import server as warm
        req = {_run_request()!r}
        print(warm._invalid(req, [0, 1, 2]))
        done = threading.Event()
        threading.Thread(target=done.wait).start()
        print(warm._invalid(req, [0, 1, 2]))
        done.set()
        """)
    out = subprocess.run([PY, "-c", probe], cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert out.stdout.splitlines() == ["None", "2 threads are running; no fork"], out.stderr


@pytest.mark.parametrize(
    "attack", ["garbage", "oversize", "hangup mid-request", "bad cwd", "other module", "not json", "no fds"]
)
def test_a_bad_request_is_refused_and_the_server_lives_on(server, attack):
    """Before: garbage crashed the server, a hang-up crashed it, a bad cwd deleted its socket,
    and any module's main() ran."""
    c = _raw(server["sock"])
    with c:
        if attack == "garbage":
            c.sendall(os.urandom(4096))
        elif attack == "oversize":
            c.sendall((1 << 30).to_bytes(8, "big") + b"{" * 1000)
        elif attack == "hangup mid-request":
            c.sendall(_frame(_run_request())[:20])
            c.close()
        elif attack == "not json":
            c.sendall(len(b"\xff\xfe").to_bytes(8, "big") + b"\xff\xfe")
        elif attack == "no fds":
            c.sendall(_frame(_run_request()))
        else:
            marker = server["tmp"] / "pwned"
            req = (
                _run_request(cwd="/nonexistent")
                if attack == "bad cwd"
                else _run_request(module="pathlib", argv=[str(marker)])
            )
            socket.send_fds(c, [_frame(req)], [0, 1, 2])
            assert int.from_bytes(c.recv(8), "big", signed=True) == -1  # refused: the caller runs cold
            assert not marker.exists()
        if attack != "hangup mid-request":
            try:
                got = c.recv(8)
            except ConnectionResetError:  # closed with our unread bytes in it
                got = b""
            assert got in (b"", (-1).to_bytes(8, "big", signed=True))  # closed, or refused
    _still_serves(server, attack.replace(" ", "-"))


def test_a_stalled_client_blocks_no_one_and_is_dropped(server):
    """Before: one client that connected and sent nothing blocked every other caller."""
    stalled = _raw(server["sock"])
    stalled.sendall(b"\0\0\0")
    _still_serves(server, "stalled")  # served while the stalled client holds its connection
    stalled.settimeout(60)
    assert stalled.recv(1) == b""  # and after its 10 s it is dropped
    stalled.close()


def test_a_client_of_another_uid_is_closed_by_the_server(server):
    """Open the folder and socket as a umask-000 setup would, and knock as `nobody`."""
    sock = server["sock"]
    modes = [(p, stat.S_IMODE(os.lstat(p).st_mode)) for p in (server["tmp"], sock.parent, sock)]
    for p, _ in modes:
        os.chmod(p, 0o777)
    try:
        spy = subprocess.run(
            [
                *NOBODY,
                textwrap.dedent(f"""
            import json, socket
            c = socket.socket(socket.AF_UNIX); c.settimeout(30); c.connect('{sock}')
            body = json.dumps({{"op": "ping"}}).encode()
            try:
                c.sendall(len(body).to_bytes(8, "big") + body)
                print(repr(c.recv(8)))
            except (BrokenPipeError, ConnectionResetError):
                print("b''")
            """),
            ],
            capture_output=True,
            text=True,
            timeout=60,
        )
    finally:
        for p, mode in modes:
            os.chmod(p, mode)
    assert spy.stdout == "b''\n", spy.stderr
    _still_serves(server, "other-uid")


def test_a_caller_that_goes_away_stops_its_child(server):
    """Before: the server crashed on the hang-up and the orphan trained on and wrote outputs."""
    out = server["tmp"] / "out-orphan"
    caller = subprocess.Popen(
        [
            PY,
            "-m",
            "pipeline.train",
            "--params",
            str(_params(server["tmp"], 20000)),
            "--dataset",
            "synthetic",
            "--variant",
            "bn",
            "--no-track",
            "--out",
            str(out),
        ],
        cwd=ROOT,
        env=server["env"],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    child = _wait_child(server["pid"])
    caller.kill()
    caller.wait()
    for _ in range(600):
        if not _alive(child):
            break
        time.sleep(0.1)
    assert not _alive(child)
    assert not out.exists()
    _still_serves(server, "after-orphan")


def test_a_signal_to_the_caller_reaches_its_child(server):
    """DVC cancelling a stage sends SIGTERM to the process it started: the caller."""
    out = server["tmp"] / "out-sigterm"
    caller = subprocess.Popen(
        [
            PY,
            "-m",
            "pipeline.train",
            "--params",
            str(_params(server["tmp"], 20000)),
            "--dataset",
            "synthetic",
            "--variant",
            "bn",
            "--no-track",
            "--out",
            str(out),
        ],
        cwd=ROOT,
        env=server["env"],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        text=True,
    )
    child = _wait_child(server["pid"])
    caller.send_signal(signal.SIGTERM)
    assert caller.wait(timeout=120) == 130  # the child's own exit code, passed through
    assert not _alive(child) and not out.exists()
    _still_serves(server, "after-sigterm")


def _wait_child(server_pid: int) -> int:
    for _ in range(1200):
        kids = _children(server_pid)
        if kids:
            time.sleep(1.0)  # into its training
            return kids[0]
        time.sleep(0.1)
    raise AssertionError("the server never forked a child")


def test_stop_during_a_cell_ends_the_child_before_it_returns(tmp):
    """Before: the caller exited 1 while the orphaned child later wrote complete outputs."""
    env = _env(tmp)
    first = _train(env, _params(tmp), tmp / "first")
    assert first.returncode == 0, first.stderr
    pid = _wait_up(env)
    out = tmp / "out"
    caller = subprocess.Popen(
        [
            PY,
            "-m",
            "pipeline.train",
            "--params",
            str(_params(tmp, 20000)),
            "--dataset",
            "synthetic",
            "--variant",
            "bn",
            "--no-track",
            "--out",
            str(out),
        ],
        cwd=ROOT,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    child = _wait_child(pid)
    stop = _warm(env, "stop")
    assert stop.returncode == 0 and f"stopped the warm server {pid}" in stop.stdout
    assert not _alive(child)  # gone before `stop` returned
    assert not _alive(pid)
    assert caller.wait(timeout=60) != 0
    time.sleep(1.0)
    assert not out.exists() and not any(p.name.startswith(".out") for p in tmp.iterdir())
    assert _warm(env, "status").stdout.startswith("warm server down")
