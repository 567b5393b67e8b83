"""A tiny cell end to end into a temporary SQLite MLflow store."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest
from mlflow.tracking import MlflowClient

from pipeline.cell import run_cell
from pipeline.module import NormLabModule
from tests.conftest import make_cell

CELL = dict(
    optim={"lrs": [0.05, 1e4], "seeds": [0]},
    train={"steps": 20, "log_every": 1, "eval_every": 5},
    tracking={"log_every": 2, "flush_every": 7},
)


@pytest.fixture(params=["in_process", "process"])
def tracker_kind(request, monkeypatch):
    """A test using this runs twice: MLflow calls made in the cell's process, and by a forked tracking
    process (pipeline.tracking.process: what a single-threaded cell, warm or cold, uses)."""
    import pipeline.tracking.process

    monkeypatch.setattr(pipeline.tracking.process, "_threads", lambda: 1 if request.param == "process" else 2)
    return request.param


def _runs(uri):
    client = MlflowClient(uri)
    exp = client.get_experiment_by_name("test")
    runs = client.search_runs([exp.experiment_id])
    parents = [r for r in runs if r.data.tags.get("normlab.kind") == "cell"]
    children = sorted(
        (r for r in runs if r.data.tags.get("normlab.kind") == "member"), key=lambda r: float(r.data.tags["lr"])
    )
    return client, parents, children


def test_cell_records_parent_child_runs_params_tags_metrics(tmp_path, mlflow_uri, tracker_kind):
    summary = run_cell(make_cell("none", **CELL), tmp_path / "cell", progress=False).summary
    client, parents, children = _runs(mlflow_uri)
    assert len(parents) == 1 and len(children) == 2
    parent = parents[0]
    assert {r.info.status for r in parents + children} == {"FINISHED"}
    assert all(c.data.tags["mlflow.parentRunId"] == parent.info.run_id for c in children)
    assert parent.data.params["model.width"] == "8" and parent.data.params["optim.lrs"] == "[0.05, 10000.0]"
    assert parent.data.params["model.depth"] == "2"
    ok, bad = children
    for c, lr in ((ok, "0.05"), (bad, "10000.0")):
        assert c.data.params["optim.lr"] == lr and c.data.params["seed"] == "0"
        # a member shows what varies and its variant's own settings; the shared config is on the parent
        assert c.data.params["variant.norm"] == "none" and "model.depth" not in c.data.params
        tags = c.data.tags
        assert (tags["variant"], tags["dataset"], tags["seed"], tags["lr"]) == ("none", "synthetic", "0", lr)
        assert tags["dvc_stage"] == "train@none-synthetic"
        # MLflow's own context tags stand for the source (no custom git_commit tag any more)
        assert tags["mlflow.source.name"] and "git_commit" not in tags
    # the healthy member: loss every tracking.log_every steps, norms, evaluations
    loss = client.get_metric_history(ok.info.run_id, "loss")
    assert [m.step for m in loss] == list(range(0, 20, 2)) + [19]  # and the last step's loss
    assert len(client.get_metric_history(ok.info.run_id, "b_norm/l0")) == 12  # steps 0,2,..,18, the last 19, final 20
    # evaluations at init, every eval_every steps and of the final state
    assert [m.step for m in client.get_metric_history(ok.info.run_id, "val_acc_eval")] == [0, 10, 20]
    assert ok.data.tags["diverged"] == "false"
    # the diverging member: recorded, tagged, its history stops at the divergence step
    assert bad.data.tags["diverged"] == "true"
    step = int(bad.data.tags["diverged_step"])
    assert summary.members[1].diverged and summary.members[1].diverged_step == step
    assert bad.data.metrics["diverged_step"] == step
    assert max(m.step for m in client.get_metric_history(bad.info.run_id, "loss")) <= step
    assert parent.data.tags["diverged_members"] == "1"
    arts = {a.path for a in client.list_artifacts(parent.info.run_id)}
    assert {"history.parquet", "summary.json", "config.json"} <= arts
    meta = json.loads((tmp_path / "cell.meta.json").read_text())  # run-specific facts, outside the cell's folder
    assert meta["mlflow"]["parent_run_id"] == parent.info.run_id
    assert meta["mlflow"]["member_run_ids"] == [ok.info.run_id, bad.info.run_id]
    assert meta["timing"]["tracking_s"] > 0
    # the records were written by the process the fixture chose (its pid in every run's tag)
    pids = {r.data.tags["normlab.proc"].split(":")[1] for r in parents + children}
    assert (pids == {str(os.getpid())}) == (tracker_kind == "in_process"), pids
    assert {r.data.tags["normlab.cell_proc"].split(":")[1] for r in parents + children} == {str(os.getpid())}
    assert (meta["timing"]["tracking_process_s"] is None) == (tracker_kind == "in_process")
    assert "mlflow" not in json.loads((tmp_path / "cell" / "summary.json").read_text())


@pytest.mark.usefixtures("tracker_kind")
def test_a_crash_marks_runs_failed_and_writes_nothing(tmp_path, mlflow_uri, monkeypatch):
    original = NormLabModule.step

    def crash(self, x, y, t):
        if t == 3:
            raise RuntimeError("boom")
        return original(self, x, y, t)

    monkeypatch.setattr(NormLabModule, "step", crash)
    with pytest.raises(RuntimeError, match="boom"):
        run_cell(make_cell("bn", **CELL), tmp_path / "cell", progress=False)
    _, parents, children = _runs(mlflow_uri)
    assert {r.info.status for r in parents + children} == {"FAILED"}
    assert not (tmp_path / "cell").exists()


@pytest.mark.usefixtures("tracker_kind")
def test_an_interrupt_marks_runs_killed(tmp_path, mlflow_uri, monkeypatch):
    def interrupt(self, x, y, t):
        raise KeyboardInterrupt

    monkeypatch.setattr(NormLabModule, "step", interrupt)
    with pytest.raises((KeyboardInterrupt, SystemExit)):
        run_cell(make_cell("bn", **CELL), tmp_path / "cell", progress=False)
    _, parents, children = _runs(mlflow_uri)
    assert {r.info.status for r in parents + children} == {"KILLED"}


@pytest.mark.usefixtures("tracker_kind")
def test_only_the_listed_metrics_go_to_mlflow(tmp_path, mlflow_uri):
    cell = make_cell("bn", **{**CELL, "tracking": {**CELL["tracking"], "metrics": ["loss", "val_*"]}})
    run_cell(cell, tmp_path / "cell", progress=False)
    _, _, children = _runs(mlflow_uri)
    assert set(children[0].data.metrics) == {"loss", "val_loss_eval", "val_acc_eval"}
    # the Parquet history keeps everything
    import pandas as pd

    assert "b_norm/l0" in pd.read_parquet(tmp_path / "cell" / "history.parquet").columns


@pytest.mark.usefixtures("tracker_kind")
def test_an_unreachable_store_stops_the_cell_before_training(tmp_path, monkeypatch):
    monkeypatch.setenv("MLFLOW_TRACKING_URI", "http://127.0.0.1:9")  # nothing listens on port 9
    from pipeline.config import ConfigError

    with pytest.raises(ConfigError, match="MLFLOW_TRACKING_URI: tracking store http://127.0.0.1:9 is not reachable"):
        run_cell(make_cell("bn", **CELL), tmp_path / "cell", progress=False)
    assert not (tmp_path / "cell").exists()


def _content(uri):
    """Every run's name, status, params, tags and metric histories, minus what names a process or a time."""
    client, parents, children = _runs(uri)
    out = {}
    for r in parents + children:
        tags = {
            k: v
            for k, v in r.data.tags.items()
            if not k.startswith(("normlab.proc", "normlab.cell_proc")) and k != "mlflow.parentRunId"
        }
        hist = {k: [(m.step, m.value) for m in client.get_metric_history(r.info.run_id, k)] for k in r.data.metrics}
        out[r.info.run_name] = (
            r.info.status,
            r.data.params,
            tags,
            hist,
            sorted(a.path for a in client.list_artifacts(r.info.run_id)),
        )
    return out


def test_both_trackers_write_the_same_records(tmp_path, monkeypatch):
    import pipeline.tracking.process

    stores = {}
    for kind in ("in_process", "process"):
        monkeypatch.setattr(pipeline.tracking.process, "_threads", lambda k=kind: 1 if k == "process" else 2)
        uri = f"sqlite:///{tmp_path / kind / 'mlflow.db'}"
        monkeypatch.setenv("MLFLOW_TRACKING_URI", uri)
        run_cell(make_cell("bn", **CELL), tmp_path / kind / "cell", progress=False)
        stores[kind] = _content(uri)
    assert len(stores["process"]) == 3
    assert stores["process"] == stores["in_process"]


# -- issue 18: a tracking store that fails is a failed cell; the cell's stop reaches its tracking process ----
@pytest.mark.usefixtures("tracker_kind")
def test_runs_that_cannot_be_closed_fail_the_cell_and_leave_its_folder_as_it_was(tmp_path, mlflow_uri, monkeypatch):
    """Item 4: the store died while the runs were being closed; the failures were swallowed, the cell
    counted as done (the grid `dvc commit`ed it) with its runs RUNNING. Now it is a TrackingError, and
    the folder an earlier run wrote is left as it was (the new outputs are never swapped in)."""
    from mlflow.exceptions import MlflowException

    from pipeline.tracking.runs import TrackingError

    out = tmp_path / "cell"
    run_cell(make_cell("bn", **CELL), out, progress=False)  # an earlier, complete cell
    before = {p.name: p.read_bytes() for p in out.iterdir()}
    meta = (tmp_path / "cell.meta.json").read_bytes()
    real, calls = MlflowClient.set_terminated, []

    def dying(self, run_id, status=None, end_time=None):  # inherited by a forked tracking process
        calls.append(run_id)
        if len(calls) > 1:  # the store dies after the first run is closed
            raise MlflowException("API request to http://127.0.0.1:9/api/2.0/mlflow/runs/update failed: refused")
        return real(self, run_id, status=status, end_time=end_time)

    monkeypatch.setattr(MlflowClient, "set_terminated", dying)
    longer = make_cell("bn", **{**CELL, "train": {**CELL["train"], "steps": 25}})  # other outputs than the earlier cell
    with pytest.raises(
        TrackingError,
        match=r"^bn-synthetic: 2 of 3 MLflow run\(s\) left RUNNING, a later sweep ends "
        r"them KILLED: the tracking store sqlite:///.*mlflow.db failed \(API "
        r"request .* refused\): check that it answers and run the cell again$",
    ):
        run_cell(longer, out, progress=False)
    monkeypatch.setattr(MlflowClient, "set_terminated", real)
    assert {p.name: p.read_bytes() for p in out.iterdir()} == before
    assert (tmp_path / "cell.meta.json").read_bytes() == meta
    assert not [p.name for p in tmp_path.iterdir() if ".tmp-" in p.name]  # the new outputs are gone, not left aside
    _, parents, children = _runs(mlflow_uri)
    newer = {r.info.run_id for r in parents if r.data.params.get("train.steps") == "25"}  # members: no train.steps
    new = [r for r in parents + children if r.info.run_id in newer or r.data.tags.get("mlflow.parentRunId") in newer]
    assert len(new) == 3 and sorted(r.info.status for r in new) == ["FINISHED", "RUNNING", "RUNNING"]


@pytest.mark.slow
def test_training_command_on_a_server_that_dies_mid_cell_is_one_line_and_writes_nothing(tmp_path, mlflow_server):
    """Item 4 by the default path (NORMLAB_WARM unset, as `dvc repro` runs it), through a warm
    server's child: the server dies while the cell trains; the command stops with one line, exit 1,
    and --out is not written (before: a traceback, and the folder written beside runs left RUNNING)."""
    import shutil
    import signal
    import subprocess
    import sys
    import tempfile

    import yaml

    from pipeline.spec import environment
    from tests.conftest import BASE, merge
    from tests.test_safety import ROOT, _wait_for_runs

    (tmp_path / "params.yaml").write_text(
        yaml.safe_dump(
            merge(
                BASE,
                {
                    "train": {"steps": 20000, "log_every": 100, "eval_every": 10000, "threads": 1},
                    "tracking": {"experiment": "test", "log_every": 100, "flush_every": 100},
                },
            )
        )
    )
    private = Path(tempfile.mkdtemp(prefix="nw", dir="/tmp"))  # the warm server's own folder (a short socket path)
    env = {k: v for k, v in os.environ.items() if k not in ("NORMLAB_WARM", "XDG_RUNTIME_DIR")}
    env.update(
        {
            "MLFLOW_TRACKING_URI": mlflow_server.uri,
            "PYTHONPATH": str(ROOT),
            "TMPDIR": str(private),
            "NORMLAB_WARM_IDLE": "120",
            **environment.NO_TELEMETRY,
        }
    )
    warm = [sys.executable, "-m", "pipeline.warm"]
    try:
        up = subprocess.run([*warm, "start", "--wait"], cwd=ROOT, env=env, capture_output=True, text=True, timeout=300)
        assert up.returncode == 0, up.stdout + up.stderr
        log = Path(up.stdout.strip().rsplit(" at ", 1)[1]).with_suffix(".log")
        proc = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "pipeline.train",
                "--params",
                "params.yaml",
                "--variant",
                "bn",
                "--dataset",
                "synthetic",
                "--out",
                "runs/bn-synthetic",
            ],
            cwd=tmp_path,
            env=env,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
            preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL),
        )
        try:
            _wait_for_runs(f"sqlite:///{mlflow_server.db}", proc)  # the parent and its 4 members: training has started
            mlflow_server.kill()
            out, err = proc.communicate(timeout=600)
        finally:
            if proc.poll() is None:
                proc.kill()
        assert log.read_text().count(" started") == 1  # the cell ran in a warm child
    finally:
        subprocess.run([*warm, "stop"], cwd=ROOT, env=env, capture_output=True, timeout=120)
        shutil.rmtree(private, ignore_errors=True)
    assert proc.returncode == 1, out + err
    lines = err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith(
        "normlab: bn-synthetic: 5 of 5 MLflow run(s) left RUNNING, a later "
        f"sweep ends them KILLED: the tracking store {mlflow_server.uri} "
        "failed ("
    ), err
    assert lines[0].endswith("; runs/bn-synthetic not written"), err
    assert not (tmp_path / "runs").exists() or not list((tmp_path / "runs").iterdir())  # no folder, no temp folder


def test_the_tracking_process_stops_on_the_cells_signal(mlflow_uri, monkeypatch):
    """Item 6: the tracking process ignored every signal, so a cell stopped while its runs were being
    created waited until every one existed (SIGTERM ignored > 400 s with 100,000 members). Now the
    cell's stop reaches it: no more runs are made, and those made end KILLED."""
    import pipeline.tracking.process as tp

    monkeypatch.setattr(tp, "_threads", lambda: 1)
    started_r, started_w = os.pipe()
    real = MlflowClient.create_run

    def create_run(self, *args, **kwargs):  # in the forked tracking process: says when the members begin
        run = real(self, *args, **kwargs)
        if kwargs.get("tags", {}).get("normlab.kind") == "member":
            os.write(started_w, b"m")
        return run

    monkeypatch.setattr(MlflowClient, "create_run", create_run)
    cell = make_cell("bn", optim={"lrs": [round(0.01 * (i + 1), 2) for i in range(200)], "seeds": [0]})
    tracker = tp.TrackerProcess(cell, cell.members(), "train@bn-synthetic")
    tracker.start()
    try:
        os.read(started_r, 1)  # the first member run exists: the child is in its loop of 200
        tracker.finish("KILLED")  # what run_cell does on Ctrl-C or SIGTERM
    finally:
        os.close(started_r)
        os.close(started_w)
    _, parents, children = _runs(mlflow_uri)
    assert len(parents) == 1 and 1 <= len(children) < 200, len(children)
    assert {r.info.status for r in parents + children} == {"KILLED"}
    assert tracker.child_ids == [r.info.run_id for r in sorted(children, key=lambda r: float(r.data.tags["lr"]))]


# -- issue 21: a long-lived process warms MLflow once for the tracking processes it forks --------------------
WARM_SCRIPT = """
import json, os, sys
from tests.conftest import make_cell
from tests.test_tracking import CELL
import pipeline.tracking.process as tp
from pipeline.cell import run_cell

def fds():
    out = set()
    for f in os.listdir("/proc/self/fd"):
        try:
            out.add(os.readlink(f"/proc/self/fd/{f}"))
        except OSError:
            pass
    return out

def threads():
    return len(os.listdir("/proc/self/task"))

POOL = ("MLFLOW_SQLALCHEMYSTORE_POOLCLASS", "MLFLOW_SQLALCHEMYSTORE_POOL_SIZE")
before = (threads(), fds(), [os.environ.get(k) for k in POOL])
tp.warm_tracking()
tp.warm_tracking()  # idempotent
after = (threads(), fds(), [os.environ.get(k) for k in POOL])
from mlflow.tracking.context.registry import _run_context_provider_registry
facts = {
    "threads": [before[0], after[0]],
    "new_fds": sorted(after[1] - before[1]),
    "pool_env": [before[2], after[2]],
    "context_cached": [type(p).__name__ for p in _run_context_provider_registry if getattr(p, "_cache", None)],
    "tmp_left": os.listdir(os.environ["TMPDIR"]),
    "store_made_by_warm_up": os.path.exists(sys.argv[2]),
}
# a grid worker runs cell after cell: each must leave the process single-threaded for the next to fork
facts["tracking_process_s"], facts["threads_after_cells"] = [], []
for i in range(2):
    run = run_cell(make_cell("bn", **CELL), sys.argv[1] + str(i), progress=False)
    facts["tracking_process_s"].append(run.meta.timing.get("tracking_process_s"))
    facts["threads_after_cells"].append(threads())
print(json.dumps(facts))
"""


def test_warm_tracking_leaves_nothing_behind_and_changes_no_record(tmp_path, monkeypatch):
    """warm_tracking (the warm server, grid and Ray workers) exercises MLflow on a scratch store: no
    thread, no open file, no folder, no change to the user's store or environment are left; the
    records a tracking process forked after it writes are those of one forked without it."""
    import json
    import subprocess
    import sys

    import pipeline.tracking.process

    root = Path(__file__).resolve().parents[1]
    scratch_tmp = tmp_path / "tmp"
    scratch_tmp.mkdir()
    db = tmp_path / "warm" / "mlflow.db"
    env = {
        **os.environ,
        "TMPDIR": str(scratch_tmp),
        "MLFLOW_TRACKING_URI": f"sqlite:///{db}",
        # a user's own pool settings (NullPool, which the scratch store uses, refuses a pool size): kept as they were
        "MLFLOW_SQLALCHEMYSTORE_POOLCLASS": "QueuePool",
        "MLFLOW_SQLALCHEMYSTORE_POOL_SIZE": "5",
        "PYTHONPATH": str(root),
    }
    done = subprocess.run(
        [sys.executable, "-c", WARM_SCRIPT, str(tmp_path / "warm" / "cell"), str(db)],
        cwd=root,
        env=env,
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert done.returncode == 0, done.stderr[-3000:]
    facts = json.loads(done.stdout.strip().splitlines()[-1])
    assert "warm-up skipped" not in done.stderr, done.stderr[-2000:]  # it ran, with the user's pool size set
    assert facts["threads"] == [1, 1]  # the process can still fork its tracking processes
    # no connection to the scratch store crosses a fork (matplotlib's font files may stay open, read-only)
    assert [f for f in facts["new_fds"] if f.startswith(str(scratch_tmp)) or ".db" in f] == []
    assert facts["pool_env"] == [["QueuePool", "5"], ["QueuePool", "5"]]
    assert facts["context_cached"] == []  # no git commit of the warm-up's time for later cells to inherit
    assert facts["tmp_left"] == [] and facts["store_made_by_warm_up"] is False
    # every cell's MLflow calls were made by a forked process, the second cell's too (a cell that left
    # threads behind, e.g. pyarrow's pool after reading Parquet, made the next one record in-process)
    assert None not in facts["tracking_process_s"] and facts["threads_after_cells"] == [1, 1]

    monkeypatch.setattr(pipeline.tracking.process, "_threads", lambda: 1)
    cold = f"sqlite:///{tmp_path / 'cold' / 'mlflow.db'}"
    monkeypatch.setenv("MLFLOW_TRACKING_URI", cold)
    for i in range(2):
        run_cell(make_cell("bn", **CELL), tmp_path / "cold" / f"cell{i}", progress=False)
    assert _content(f"sqlite:///{db}") == _content(cold)


def test_the_cells_figure_drawn_beside_the_closing_runs_is_the_one_the_tracking_process_draws(tmp_path, monkeypatch):
    """The forked tracker's cell draws the parent run's figure while its tracking process closes the member
    runs; the PNG logged is byte for byte the one the tracking process draws when the cell cannot, and the
    cell's scratch folder is gone afterwards."""
    import tempfile

    import pipeline.tracking.process as tp

    monkeypatch.setattr(tp, "_threads", lambda: 1)
    scratch = tmp_path / "tmp"
    scratch.mkdir()
    monkeypatch.setattr(tempfile, "tempdir", str(scratch))
    drawn: list = []
    real = tp.TrackerProcess._draw_figure

    def spy(self, history):
        out = real(self, history)
        drawn.append(out[1])
        return out

    pngs = {}
    for where, draw in (("cell", spy), ("tracking process", lambda self, history: (None, None))):
        monkeypatch.setattr(tp.TrackerProcess, "_draw_figure", draw)
        uri = f"sqlite:///{tmp_path / where / 'mlflow.db'}"
        monkeypatch.setenv("MLFLOW_TRACKING_URI", uri)
        run_cell(make_cell("bn", **CELL), tmp_path / where / "cell", progress=False)
        client, parents, _ = _runs(uri)
        local = client.download_artifacts(parents[0].info.run_id, "figures/b_norm_loss.png", str(tmp_path / where))
        pngs[where] = Path(local).read_bytes()
    assert len(drawn) == 1 and drawn[0] is not None and drawn[0].endswith("b_norm_loss.png")
    assert not Path(drawn[0]).exists() and os.listdir(scratch) == []  # the cell's scratch folder is removed
    assert pngs["cell"][:8] == b"\x89PNG\r\n\x1a\n" and pngs["cell"] == pngs["tracking process"]


def test_a_failed_warm_up_is_one_line_and_leaves_nothing(tmp_path, monkeypatch, capsys):
    """warm_tracking is best effort: a failure (here: the scratch store's calls) is one line on stderr, the
    scratch folder is removed, and the process goes on (its tracking processes pay the costs themselves)."""
    import tempfile

    import pipeline.tracking.process as tp

    scratch = tmp_path / "tmp"
    scratch.mkdir()
    monkeypatch.setattr(tempfile, "tempdir", str(scratch))
    monkeypatch.setattr(tp, "_WARM", False)

    def fail(folder):
        raise RuntimeError("the scratch store failed")

    monkeypatch.setattr(tp, "_exercise", fail)
    tp.warm_tracking()
    err = capsys.readouterr().err
    assert "MLflow warm-up skipped (RuntimeError: the scratch store failed)" in err
    assert os.listdir(scratch) == []


def test_a_figure_the_cell_cannot_draw_is_drawn_by_its_tracking_process(tmp_path, mlflow_uri, monkeypatch):
    """The cell's own drawing failing (here: no temporary folder in the cell, after its tracking process was
    forked) neither fails the cell nor loses the figure: the tracking process draws it from the history."""
    import tempfile

    import pipeline.tracking.process as tp

    monkeypatch.setattr(tp, "_threads", lambda: 1)
    real = tp.TrackerProcess.finish

    def finish(self, *args, **kwargs):  # the tracking process is forked by now: only the cell is affected
        def no_folder(*a, **kw):
            raise OSError(28, "No space left on device")

        with monkeypatch.context() as m:
            m.setattr(tempfile, "mkdtemp", no_folder)
            return real(self, *args, **kwargs)

    monkeypatch.setattr(tp.TrackerProcess, "finish", finish)
    run_cell(make_cell("bn", **CELL), tmp_path / "cell", progress=False)
    client, parents, children = _runs(mlflow_uri)
    assert {r.info.status for r in parents + children} == {"FINISHED"}
    assert "figures/b_norm_loss.png" in [a.path for a in client.list_artifacts(parents[0].info.run_id, "figures")]
    assert (tmp_path / "cell" / "summary.json").exists()
