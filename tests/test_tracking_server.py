"""The tracking server's PostgreSQL refuses other local users (no trust authentication)."""

import os
import shutil
import stat
import subprocess
from pathlib import Path

import pytest

from pipeline.tracking import server as ts
from tests.listening import listening


def _have_pg():
    try:
        ts.postgres_bin()
        return True
    except ts.ServerError:
        return False


@pytest.mark.skipif(
    not _have_pg() or not shutil.which("setpriv") or not shutil.which("psql") or os.geteuid() != 0,
    reason="needs PostgreSQL, psql, setpriv and root (to act as nobody)",
)
def test_tracking_server_postgres_refuses_other_local_users():
    import tempfile

    import mlflow

    # pytest's tmp_path is inside root's private 0700 folder, which postgres cannot enter: a folder it can traverse
    base = Path(tempfile.mkdtemp(prefix="normlab-ts-test-"))
    os.chmod(base, 0o711)
    try:
        _check_server(mlflow, base / "server")
    finally:
        shutil.rmtree(base, ignore_errors=True)


def _check_server(mlflow, folder):
    with ts.TrackingServer(folder, workers=1) as server:
        assert stat.S_IMODE(folder.stat().st_mode) & 0o077 in (0, 0o011)
        for name in ("postgres.log", "mlflow.log", ts.PASSWORD_FILE):
            assert stat.S_IMODE((folder / name).stat().st_mode) == 0o600, name
        password = (folder / ts.PASSWORD_FILE).read_text().strip()
        assert len(password) >= 32
        hba = (folder / "pg" / "pg_hba.conf").read_text()
        assert not ts._hba_has_trust(folder / "pg") and "scram-sha-256" in hba
        for db in ("mlflow", "postgres"):
            r = subprocess.run(
                [
                    "setpriv",
                    "--reuid",
                    "nobody",
                    "--regid",
                    "nogroup",
                    "--clear-groups",
                    "psql",
                    "-w",
                    "-h",
                    "127.0.0.1",
                    "-p",
                    str(server.pg_port),
                    "-U",
                    ts.PG_USER,
                    "-d",
                    db,
                    "-c",
                    "select 1",
                ],
                capture_output=True,
                text=True,
                timeout=60,
                cwd="/",
                env={"PATH": os.environ["PATH"], "HOME": "/nonexistent"},
            )
            assert r.returncode != 0, r.stdout
            assert "password" in r.stderr.lower(), r.stderr  # "no password supplied" / "authentication failed"
        # no Unix socket for our PostgreSQL at all, and its local lines would ask for a password too
        for sockdir in ("/tmp", "/var/run/postgresql", "/run/postgresql"):
            assert not os.path.exists(f"{sockdir}/.s.PGSQL.{server.pg_port}")
        local = [line.split() for line in hba.splitlines() if line.strip() and not line.lstrip().startswith("#")]
        assert local and all(fields[-1] == "scram-sha-256" for fields in local), hba
        ps = subprocess.run(["ps", "-eww", "-o", "args"], capture_output=True, text=True, check=True).stdout
        assert password not in ps
        cmdline = Path(f"/proc/{server.mlflow.pid}/cmdline").read_bytes().decode(errors="replace")
        assert "server" in cmdline and "postgresql" not in cmdline and password not in cmdline
        mlflow.set_tracking_uri(server.uri)
        client = mlflow.MlflowClient(server.uri)
        exp = client.create_experiment("auth-check")
        assert client.get_experiment(exp).name == "auth-check"
        # item 5: both listen on 127.0.0.1 only, as the kernel sees it (each is its own session)
        assert listening(server.mlflow.pid) == {("127.0.0.1", server.port)}
        assert listening(server.postgres.pid) == {("127.0.0.1", server.pg_port)}
        # item 10: the served artifacts are the server's own; the folder is 0711 as root, so before
        # (artifacts/ 0755, files 0644) nobody listed and read them by their path
        run = client.create_run(exp)
        client.log_text(run.info.run_id, "private numbers", "notes/a.txt")
        stored = [p for p in (folder / "artifacts").rglob("a.txt")]
        assert len(stored) == 1 and stored[0].read_text() == "private numbers"
        assert stat.S_IMODE((folder / "artifacts").stat().st_mode) == 0o700
        for path in [stored[0], *stored[0].parents]:
            if path == folder:
                break
            assert stat.S_IMODE(path.stat().st_mode) & 0o077 == 0, path
        for cmd in (["cat", str(stored[0])], ["ls", str(folder / "artifacts")], ["cat", str(folder / "mlflow.log")]):
            r = subprocess.run(
                ["setpriv", "--reuid", "nobody", "--regid", "nogroup", "--clear-groups", *cmd],
                capture_output=True,
                text=True,
                timeout=60,
                cwd="/",
            )
            assert r.returncode != 0 and "Permission denied" in r.stderr, (cmd, r.stdout)
        logs = (folder / "mlflow.log").read_text(errors="replace") + (folder / "postgres.log").read_text(
            errors="replace"
        )
        assert password not in logs
        pids = [server.mlflow.pid, server.postgres.pid]
    for pid in pids:
        assert not os.path.exists(f"/proc/{pid}") or open(f"/proc/{pid}/stat").read().split()[2] == "Z"
    # restart with the same folder reuses the stored password
    with ts.TrackingServer(folder, workers=1) as server:
        assert (folder / ts.PASSWORD_FILE).read_text().strip() == password
        assert mlflow.MlflowClient(server.uri).get_experiment_by_name("auth-check") is not None


def test_trust_data_folder_is_refused(tmp_path, monkeypatch):
    monkeypatch.setattr(ts, "postgres_bin", lambda: tmp_path)
    monkeypatch.setattr(ts, "_run_as", lambda: {})
    folder = tmp_path / "server"
    (folder / "pg").mkdir(parents=True)
    (folder / "pg" / "PG_VERSION").write_text("15\n")
    (folder / "pg" / "pg_hba.conf").write_text("local all all trust\nhost all all 127.0.0.1/32 trust\n")
    with pytest.raises(ts.ServerError, match="trust authentication.*remove"):
        ts.TrackingServer(folder).start()


def test_existing_folder_mode_is_kept_and_uri_masked(tmp_path, monkeypatch):
    monkeypatch.setattr(ts, "postgres_bin", lambda: (_ for _ in ()).throw(ts.ServerError("no pg")))
    folder = tmp_path / "mine"
    folder.mkdir(mode=0o750)
    os.chmod(folder, 0o750)
    with pytest.raises(ts.ServerError):
        ts.TrackingServer(folder).start()
    assert stat.S_IMODE(folder.stat().st_mode) == 0o750
    assert (
        ts._mask("postgresql+psycopg://postgres:s3cr3t@127.0.0.1:5/mlflow")
        == "postgresql+psycopg://postgres:***@127.0.0.1:5/mlflow"
    )


def test_folder_postgres_cannot_enter_is_one_line(tmp_path, monkeypatch):
    import tempfile

    monkeypatch.setattr(ts, "postgres_bin", lambda: tmp_path)
    monkeypatch.setattr(ts, "_run_as", lambda: {"user": 65534, "group": 65534, "extra_groups": []})
    base = Path(tempfile.mkdtemp(prefix="normlab-ts-test-"))
    os.chmod(base, 0o711)
    try:
        private = base / "private"
        private.mkdir(mode=0o700)
        os.chmod(private, 0o700)
        with pytest.raises(ts.ServerError, match="cannot enter .*private"):
            ts.TrackingServer(private / "server").start()
        assert stat.S_IMODE(private.stat().st_mode) == 0o700  # kept, not opened up (item 10)
    finally:
        shutil.rmtree(base, ignore_errors=True)


def test_an_existing_0700_folder_stays_0700(tmp_path, monkeypatch, capsys):
    """Item 10: `normlab server --folder DIR` made an existing 0700 folder 0755. As root, where the
    postgres account cannot enter it, the command says so in one line (exit 1) and the mode stays."""
    import tempfile

    monkeypatch.setattr(ts, "postgres_bin", lambda: tmp_path)
    monkeypatch.setattr(ts, "_run_as", lambda: {"user": 65534, "group": 65534, "extra_groups": []})
    base = Path(tempfile.mkdtemp(prefix="normlab-ts-test-"))
    os.chmod(base, 0o711)
    try:
        mine = base / "mine"
        mine.mkdir(mode=0o700)
        os.chmod(mine, 0o700)
        assert ts.main(["--folder", str(mine)]) == 1
        err = [ln for ln in capsys.readouterr().err.splitlines() if ln.startswith("normlab")]
        assert len(err) == 1 and f"cannot enter {mine}" in err[0], err
        assert stat.S_IMODE(mine.stat().st_mode) == 0o700
        assert list(mine.iterdir()) == []
    finally:
        shutil.rmtree(base, ignore_errors=True)


@pytest.mark.parametrize("dies", ["mlflow", "postgres"])
def test_the_command_exits_1_with_one_line_when_its_server_dies(tmp_path, monkeypatch, capsys, dies):
    """Issue 18 item 4: the MLflow server died under a grid and `normlab server` exited 0 without a word.
    Stand-ins: the process that dies exits 3 at once; the other runs until it is stopped (by pid)."""
    import signal
    import sys

    started = {}

    def start(self):
        self.folder = tmp_path
        for name in ("mlflow", "postgres"):
            code = "import sys; sys.exit(3)" if name == dies else "import time; time.sleep(600)"
            started[name] = subprocess.Popen([sys.executable, "-c", code], start_new_session=True)  # as the real ones
        self.mlflow, self.postgres = started["mlflow"], started["postgres"]
        return "http://127.0.0.1:1"

    monkeypatch.setattr(ts.TrackingServer, "start", start)
    previous = signal.getsignal(signal.SIGTERM)
    try:
        code = ts.main(["--folder", str(tmp_path)])
    finally:
        signal.signal(signal.SIGTERM, previous)  # main() installs its own, as a command does
    err = [line for line in capsys.readouterr().err.splitlines() if line.startswith("normlab")]
    name = {"mlflow": "the MLflow server", "postgres": "PostgreSQL"}[dies]
    assert code == 1 and len(err) == 1, err
    assert err[0].startswith(f"normlab: tracking server: {name} (pid {started[dies].pid}) died (exit code 3; "), err
    assert all(p.poll() is not None for p in started.values())  # the other one stopped, by its pid
