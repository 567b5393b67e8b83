"""What MLflow, DVC and pip users expect: tags, parent metrics, figures and dataset inputs of a
cell's runs; metrics.json and dvc plots; dvc push/pull on a local remote; the `normlab` command.

    .venv/bin/python -m pytest -q tests/test_ecosystem.py            # the browser check needs chromium
"""

from __future__ import annotations

import json
import math
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pandas as pd
import pytest
import yaml

from pipeline.spec import environment
from tests.conftest import make_cell

ROOT = Path(__file__).resolve().parents[1]
BIN = Path(sys.executable).parent
QUIET = {**environment.NO_TELEMETRY, "NORMLAB_WARM": "0"}  # telemetry off: pipeline/spec/environment.py


# -- MLflow: one tracked cell ------------------------------------------------------------------
@pytest.fixture(scope="module")
def tracked(tmp_path_factory):
    """A cell with a member that trains and one that diverges (lr 1e4), tracked into a new store
    whose experiment exists already without a kind tag."""
    from mlflow.tracking import MlflowClient

    from pipeline.cell import run_cell

    d = tmp_path_factory.mktemp("tracked")
    uri = f"sqlite:///{d / 'mlflow.db'}"
    old = os.environ.get("MLFLOW_TRACKING_URI")
    os.environ["MLFLOW_TRACKING_URI"] = uri
    try:
        MlflowClient(uri).create_experiment("test", artifact_location=(d / "mlruns").as_uri())
        cell = make_cell("center_detached", optim={"lrs": [0.05, 1e4], "seeds": [0, 1]})
        run = run_cell(cell, d / "cell", progress=False)
    finally:
        os.environ.pop("MLFLOW_TRACKING_URI") if old is None else os.environ.__setitem__("MLFLOW_TRACKING_URI", old)
    client = MlflowClient(uri)
    return SimpleNamespace(
        client=client,
        summary=run.summary,
        cell=cell,
        dir=d,
        parent=client.get_run(run.meta.mlflow["parent_run_id"]),
        children=[client.get_run(r) for r in run.meta.mlflow["member_run_ids"]],
    )


def test_runs_carry_mlflow_context_tags(tracked):
    for run in [tracked.parent, *tracked.children]:
        tags = run.data.tags
        assert tags["mlflow.source.type"] == "LOCAL" and tags["mlflow.source.name"]
        assert tags["mlflow.user"]  # the git commit: test_dvc_runs_carry_the_commit_they_ran_at
    exp = tracked.client.get_experiment(tracked.parent.info.experiment_id)
    assert exp.tags["mlflow.experimentKind"] == "custom_model_development"  # set on the existing experiment


def test_a_kind_the_user_chose_is_kept(tmp_path):
    from mlflow.tracking import MlflowClient

    from pipeline.tracking.runs import experiment_id

    uri = f"sqlite:///{tmp_path / 'm.db'}"
    client = MlflowClient(uri)
    new = experiment_id(client, "fresh", uri)  # created by normlab: tagged at creation
    assert client.get_experiment(new).tags["mlflow.experimentKind"] == "custom_model_development"
    mine = client.create_experiment("mine", tags={"mlflow.experimentKind": "genai_development"})
    assert experiment_id(client, "mine", uri) == mine
    assert client.get_experiment(mine).tags["mlflow.experimentKind"] == "genai_development"


def test_training_does_not_judge_its_cell(tracked):
    """Member outcomes depend on the report's thresholds, which a training stage does not read:
    a parent run gets the cell's numbers from the report (test_report: ..._at_the_reports_thresholds)."""
    from pipeline.report.tables import CELL_METRICS

    s = tracked.summary
    assert [m.diverged for m in s.members] == [False, False, True, True]  # both lr 1e4 members
    assert not set(CELL_METRICS) & set(tracked.parent.data.metrics)
    assert "normlab.outcome_rule" not in tracked.parent.data.tags
    assert tracked.parent.data.tags["diverged_members"] == "2"  # a count, not a judgement


def test_the_report_logs_the_cells_numbers_onto_its_parent_run(tracked, tmp_path):
    """What the report does for a parent run it found (pipeline.report.mlflow_run.log_cell_metrics):
    its row of tables/cells.csv, from the member table at the report's thresholds; absent, never 0,
    where a number does not exist."""
    import pandas as pd

    from pipeline.config import ReportSettings
    from pipeline.outcomes import largest_trained_lr, member_table
    from pipeline.records import cell_config, read_cell
    from pipeline.report.mlflow_run import find_cell_runs, log_cell_metrics
    from pipeline.report.tables import CELL_METRICS, cell_table

    s = tracked.summary
    settings = ReportSettings(trained_loss_ratio=0.9)
    rec = read_cell(tracked.dir / "cell")
    table = member_table([rec.summary], {s.cell: rec.history}, settings, {s.cell: cell_config(tracked.cell)})
    cells = cell_table(table, largest_trained_lr(table))
    exp = tracked.parent.info.experiment_id
    runs = find_cell_runs(tracked.client, exp, {s.cell: tracked.dir / "cell"})
    assert runs == {s.cell: tracked.parent.info.run_id}
    assert log_cell_metrics(tracked.client, runs, cells, settings) == 1
    run = tracked.client.get_run(tracked.parent.info.run_id)
    row = cells.iloc[0]
    assert row["frac_diverged"] == 0.5
    assert row["frac_trained"] == pytest.approx((table["status"] == "trained").mean())
    finite = [m.full_loss_train for m in s.members if math.isfinite(m.full_loss_train)]
    assert row["best_full_loss_train"] == pytest.approx(min(finite))
    assert row["best_full_acc_train"] == pytest.approx(np.nanmax([m.full_acc_train for m in s.members]))
    for key in CELL_METRICS:
        if pd.isna(row[key]):
            assert key not in run.data.metrics  # none trained: absent, never 0
        else:
            assert run.data.metrics[key] == pytest.approx(row[key])
    assert "<= 0.9 x min(init loss, ln C)" in run.data.tags["normlab.outcome_rule"]


def test_parent_run_has_the_cells_figure(tracked):
    arts = [a.path for a in tracked.client.list_artifacts(tracked.parent.info.run_id, "figures")]
    assert arts == ["figures/b_norm_loss.png"]
    local = tracked.client.download_artifacts(tracked.parent.info.run_id, arts[0], str(tracked.dir))
    data = Path(local).read_bytes()
    assert data[:8] == b"\x89PNG\r\n\x1a\n" and len(data) > 5000


def test_every_run_records_the_training_split_as_dataset_input(tracked):
    import mlflow.data

    from pipeline.data.sets import load_split

    x, y, _, _ = load_split(tracked.cell.dataset)  # the arrays the members train on (no scaling: synthetic)
    want = mlflow.data.from_numpy(x, targets=y, name="synthetic").digest
    for run in [tracked.parent, *tracked.children]:
        (inp,) = run.inputs.dataset_inputs
        assert inp.dataset.name == "synthetic" and inp.dataset.digest == want
        assert {t.key: t.value for t in inp.tags}["mlflow.data.context"] == "train"
        assert json.loads(inp.dataset.profile)["features_shape"] == list(x.shape)


def test_cell_figure_draws_one_line_per_lr_on_log_axes():
    from pipeline.tracking.cell_figure import cell_figure

    h = pd.DataFrame(
        {
            "lr": [0.1] * 4 + [1.0] * 4,
            "step": [0, 1, 0, 1] * 2,
            "loss": [2.0, 1.0, 2.0, 3.0] * 2,
            "b_norm/l0": [0.0, 1e-3, 0.0, 1e-3, 0.0, 10.0, 0.0, 30.0],
        }
    )
    b_ax, loss_ax = cell_figure(h, "x").axes
    assert b_ax.get_yscale() == loss_ax.get_yscale() == "log"
    assert [ln.get_label() for ln in b_ax.get_lines()] == ["lr=0.1", "lr=1"]
    assert b_ax.get_lines()[1].get_ydata().tolist() == [20.0]  # median over seeds; b = 0 not drawn
    assert loss_ax.get_lines()[0].get_ydata().tolist() == [2.0, 2.0]


def test_telemetry_is_off_unless_the_user_turned_it_on():
    keys = list(environment.NO_TELEMETRY)  # MLflow's, Ray's and DVC's switches, from their one owner
    code = f"import os, pipeline.tracking.runs; print(*[os.environ[k] for k in {keys!r}])"
    env = {k: v for k, v in os.environ.items() if k not in keys}
    out = subprocess.run([sys.executable, "-c", code], cwd=ROOT, env=env, capture_output=True, text=True, check=True)
    assert out.stdout.split() == list(environment.NO_TELEMETRY.values())
    env.update(MLFLOW_DISABLE_TELEMETRY="false", DO_NOT_TRACK="false")
    out = subprocess.run([sys.executable, "-c", code], cwd=ROOT, env=env, capture_output=True, text=True, check=True)
    assert out.stdout.split()[:2] == ["false", "false"]
    assert "analytics = false" in (ROOT / ".dvc" / "config").read_text()  # DVC's, for every clone


# -- metrics.json and the plot CSVs ---------------------------------------------------------------
def _verdict(key, status, tests=()):
    return SimpleNamespace(key=key, status=status, kind="measurement", endpoints=[], tests=list(tests))


def test_metrics_json_is_a_few_numbers_per_claim_and_data_set():
    from pipeline.report.tables import metrics

    members = pd.DataFrame(
        {
            "dataset": ["a"] * 4 + ["b"] * 2,
            "status": ["trained", "trained", "diverged", "failed", "failed", "fixed_loss"],
            "w_grew": [True, False, False, False, False, False],
        }
    )  # a flag beside the outcome
    test = SimpleNamespace(key="claim4", effect=0.2, lo=0.1, hi=float("nan"), p_holm=0.01)  # a number that does
    verdicts = [
        _verdict("claim1", "holds"),
        _verdict("claim2", "mixed"),
        _verdict("claim3", "not shown"),  # not exist:
        _verdict("claim4", "check failed", [test]),
    ]  # an absent key
    m = metrics(
        verdicts, members, pd.DataFrame({"variant": ["v"], "dataset": ["a"], "largest_trained_lr": [float("nan")]}), 1
    )
    assert m == {
        "claims": {
            "claim1": {"shown": 1.0, "status": 1.0},
            "claim2": {"shown": 1.0, "status": 0.5},
            "claim3": {"shown": 0.0},
            "claim4": {"shown": 1.0, "status": 0.0, "claim4": {"effect": 0.2, "lo": 0.1, "p_holm": 0.01}},
        },
        "datasets": {
            "a": {"frac_trained": 0.5, "frac_diverged": 0.25, "frac_w_grew": 0.25},
            "b": {"frac_trained": 0.0, "frac_diverged": 0.0, "frac_w_grew": 0.0},
        },
        "cells_excluded": 1.0,
    }
    json.dumps(m, allow_nan=False)


def test_plot_csvs_one_per_data_set_median_over_seeds_positive_only(tmp_path):
    from pipeline.report.tables import write_dvc_plots

    rows = []
    for ds in ("s1", "s2"):
        for lr in (0.1, 1.0):
            for seed, scale in ((0, 1.0), (1, 3.0)):
                for step in (0, 5, 7):  # step 7 is not a logged step (no W_norm)
                    rows.append(
                        {
                            "dataset": ds,
                            "variant": "v",
                            "lr": lr,
                            "seed": seed,
                            "step": step,
                            "loss": scale * (step + 1),
                            "b_norm/l0": scale * step,
                            "W_norm/l0": 1.0 if step != 7 else np.nan,
                        }
                    )
    write_dvc_plots(pd.DataFrame(rows), tmp_path)
    for ds in ("s1", "s2"):
        b = pd.read_csv(tmp_path / "b_norm" / f"{ds}.csv")
        assert list(b.columns) == ["step", "variant", "lr", "b_norm"]
        assert b.to_dict("records") == [{"step": 5, "variant": "v", "lr": lr, "b_norm": 10.0} for lr in (0.1, 1.0)]
        loss = pd.read_csv(tmp_path / "loss" / f"{ds}.csv")
        assert loss["step"].tolist() == [0, 5, 0, 5] and loss["loss"].tolist() == [2.0, 12.0, 2.0, 12.0]


# -- DVC: a tiny study in a temporary repo, through the real dvc ------------------------------------
TINY = {
    "grid": {"variants": ["center_detached"], "datasets": ["synthetic", "synthetic_zero_mean"]},
    "datasets": {
        "synthetic": {"kind": "synthetic", "input_mean": 3.0, "dim": 6, "classes": 3, "samples": 200},
        "synthetic_zero_mean": {"kind": "synthetic", "input_mean": 0.0, "dim": 6, "classes": 3, "samples": 200},
    },
    "model": {"depth": 2, "width": 8},
    "optim": {"lrs": [0.1, 1.0], "seeds": [0, 1], "batch_size": 16},
    "train": {"steps": 30, "log_every": 5, "eval_every": 10, "threads": 1},
    "tracking": {"log_every": 10, "flush_every": 10},
}


def _env(d: Path) -> dict:
    return {
        **os.environ,
        **QUIET,
        "PATH": f"{BIN}:{os.environ['PATH']}",
        "MLFLOW_TRACKING_URI": f"sqlite:///{d / 'mlflow.db'}",
        "GIT_AUTHOR_NAME": "t",
        "GIT_AUTHOR_EMAIL": "t@t",
        "GIT_COMMITTER_NAME": "t",
        "GIT_COMMITTER_EMAIL": "t@t",
    }


def sh(d: Path, *cmd: str) -> str:
    proc = subprocess.run(cmd, cwd=d, env=_env(d), capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, " ".join(cmd) + "\n" + proc.stdout + proc.stderr
    return proc.stdout


@pytest.fixture(scope="module")
def study(tmp_path_factory):
    d = tmp_path_factory.mktemp("study")
    shutil.copytree(ROOT / "pipeline", d / "pipeline", ignore=shutil.ignore_patterns("__pycache__"))
    shutil.copytree(ROOT / "data", d / "data")
    for f in ("dvc.yaml", ".dvcignore"):
        shutil.copy(ROOT / f, d / f)
    params = yaml.safe_load((ROOT / "params.yaml").read_text())
    for key, value in TINY.items():
        params[key] = {**params[key], **value} if key != "datasets" else value
    (d / "params.yaml").write_text(yaml.safe_dump(params, sort_keys=False))
    (d / ".gitignore").write_text("mlflow.db\nmlflow.db.init-lock\nmlruns/\n")
    sh(d, "git", "init", "-q")
    sh(d, "dvc", "init", "-q")
    shutil.copytree(ROOT / ".dvc" / "plots", d / ".dvc" / "plots")  # the project's plot template
    sh(d, "git", "add", "-A")
    sh(d, "git", "commit", "-qm", "setup")
    sh(d, "dvc", "repro")
    sh(d, "git", "add", "-A")
    sh(d, "git", "commit", "-qm", "tiny study")
    return d


@pytest.mark.slow
def test_dvc_runs_carry_the_commit_they_ran_at(study):
    from mlflow.tracking import MlflowClient

    setup = sh(study, "git", "rev-parse", "HEAD~1").strip()  # repro ran on the "setup" commit
    client = MlflowClient(f"sqlite:///{study / 'mlflow.db'}")
    runs = client.search_runs([client.get_experiment_by_name("normlab").experiment_id])
    assert len(runs) == 2 * 5 + 1  # 2 cells x (parent + 4 members), the report
    for run in runs:
        assert run.data.tags["mlflow.source.git.commit"] == setup
        assert run.data.tags["mlflow.source.name"].endswith(("pipeline/train.py", "pipeline/report/__main__.py"))


@pytest.mark.slow
def test_dvc_metrics_are_numeric_and_narrow(study):
    shown = json.loads(sh(study, "dvc", "metrics", "show", "--json"))
    data = next(iter(shown.values()))["data"]["reports/metrics.json"]["data"]

    def leaves(d, path=""):
        for k, v in d.items():
            yield from leaves(v, f"{path}.{k}") if isinstance(v, dict) else [(f"{path}.{k}", v)]

    flat = dict(leaves(data))
    assert all(isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v) for v in flat.values()), (
        flat
    )
    claims = {p for p in flat if p.startswith(".claims.")}
    assert len(flat) <= 2 * len(claims) + 3 * 2 + 1  # shown/status per claim, 3 per data set, cells_excluded
    assert {p for p in flat if p.startswith(".datasets.")} == {
        f".datasets.{ds}.frac_{s}"
        for ds in ("synthetic", "synthetic_zero_mean")
        for s in ("trained", "diverged", "w_grew")
    }


def _plots(study, *args) -> dict:
    return json.loads(sh(study, "dvc", "plots", *args, "--json"))["data"]


@pytest.mark.slow
def test_dvc_plots_per_data_set_per_lr_on_a_log_scale(study):
    data = _plots(study, "show")
    b_files = sorted(k for k in data if k.startswith("reports/plots/b_norm/"))
    assert b_files == ["reports/plots/b_norm/synthetic.csv", "reports/plots/b_norm/synthetic_zero_mean.csv"]
    for name in (*b_files, "reports/plots/loss/synthetic.csv"):
        spec = data[name][0]["content"]
        enc = spec["spec"]["encoding"]
        assert enc["y"]["scale"]["type"] == "log" and enc["x"]["field"] == "step"
        assert spec["facet"]["field"] == "lr_value" and enc["color"]["field"] == "variant"
        points = spec["data"]["values"]
        assert {p["lr"] for p in points} == {"0.1", "1"}  # a series per lr, not a median over lrs
        assert all(float(p[enc["y"]["field"]]) > 0 for p in points)


@pytest.mark.slow
def test_dvc_plots_diff_tells_revisions_apart(study):
    csv = study / "reports" / "plots" / "b_norm" / "synthetic.csv"
    original = csv.read_text()
    try:
        frame = pd.read_csv(csv)
        frame["b_norm"] *= 2  # another experiment's numbers
        frame.to_csv(csv, index=False)
        spec = _plots(study, "diff", "HEAD")["reports/plots/b_norm/synthetic.csv"][0]["content"]
        assert {p["rev"] for p in spec["data"]["values"]} == {"HEAD", "workspace"}
        assert spec["spec"]["encoding"]["strokeDash"]["field"] == "rev"
    finally:
        csv.write_text(original)


@pytest.mark.slow
def test_dvc_push_then_pull_restores_runs_on_a_clean_clone(study, tmp_path):
    remote = tmp_path / "remote"
    sh(study, "dvc", "remote", "add", "-d", "team", str(remote))
    try:
        sh(study, "git", "commit", "-qam", "a team remote")
        sh(study, "dvc", "push")
        clone = tmp_path / "clone"
        sh(tmp_path, "git", "clone", "-q", str(study), str(clone))
        assert not (clone / "runs" / "center_detached-synthetic").exists()
        sh(clone, "dvc", "pull")
        for cell in ("center_detached-synthetic", "center_detached-synthetic_zero_mean"):
            for f in ("history.parquet", "summary.json", "config.json"):
                assert (clone / "runs" / cell / f).read_bytes() == (study / "runs" / cell / f).read_bytes()
        assert "up to date" in sh(clone, "dvc", "status")
    finally:
        sh(study, "git", "reset", "-q", "--hard", "HEAD~1")


# -- the console command -------------------------------------------------------------------------
def _normlab(*args) -> subprocess.CompletedProcess:
    exe = BIN / "normlab"
    assert exe.exists(), f"{exe} missing: install the project (pip install -e '.[test]', as `make test` does)"
    return subprocess.run(
        [str(exe), *args], cwd=ROOT, env={**os.environ, **QUIET}, capture_output=True, text=True, timeout=300
    )


def test_console_command_lists_and_dispatches():
    top = _normlab("--help")
    assert top.returncode == 0 and all(c in top.stdout for c in ("train", "grid", "report", "ui", "warm"))
    train = _normlab("train", "--help")
    assert train.returncode == 0 and "--variant" in train.stdout and "--dataset" in train.stdout
    bad = _normlab("bogus")
    assert bad.returncode == 2 and bad.stderr.strip().splitlines() == [
        "normlab: unknown command 'bogus' (commands: train, grid, report, ui, warm, server, fetch-data)"
    ]
    port = _normlab("ui", "--port", "0")
    assert port.returncode == 2 and "--port: must be 1..65535" in port.stderr


def _options_without_help(text: str) -> list[str]:
    """Option entries of an argparse help text that carry no description."""
    lines = text.split("options:", 1)[1].splitlines()
    entries: list[list[str]] = []
    for line in lines:
        if line.startswith("  -"):
            entries.append([line])
        elif entries and line.startswith("    "):
            entries[-1].append(line)
    return [e[0].strip() for e in entries if len(e) == 1 and len(re.split(r"\s{2,}", e[0].strip())) < 2]


@pytest.mark.parametrize("command", ["train", "grid", "report", "ui", "warm", "server", "fetch-data"])
def test_every_command_has_help_on_every_option(command):
    """Issue 20 item 9: `normlab <cmd> --help` exits 0, calls itself `normlab <cmd>` and describes every
    option (before: train's usage said `python -m pipeline.train`; --params had no text)."""
    out = _normlab(command, "--help")
    assert out.returncode == 0, out.stderr
    assert out.stdout.startswith(f"usage: normlab {command}"), out.stdout[:80]
    assert _options_without_help(out.stdout) == [], out.stdout


def test_normlab_train_runs_carry_the_entry_point_and_git_commit(tmp_path):
    """Issue 20 item 1: MLflow reads sys.argv[0], which the console command sets to `normlab train`; the
    runs must still name pipeline/train.py as their source and carry the commit of the code that ran."""
    import yaml
    from mlflow.tracking import MlflowClient

    from tests.test_dvc_pipeline import TINY, _params

    params = tmp_path / "params.yaml"
    params.write_text(yaml.safe_dump(_params(TINY), sort_keys=False))
    store = f"sqlite:///{tmp_path / 'mlflow.db'}"
    exe = BIN / "normlab"
    proc = subprocess.run(
        [
            str(exe),
            "train",
            "--variant",
            "bn",
            "--dataset",
            "synthetic",
            "--out",
            str(tmp_path / "cell"),
            "--params",
            str(params),
        ],
        cwd=tmp_path,
        env={**os.environ, **QUIET, "MLFLOW_TRACKING_URI": store},
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert proc.returncode == 0, proc.stderr
    head = subprocess.run(["git", "rev-parse", "HEAD"], cwd=ROOT, capture_output=True, text=True).stdout.strip()
    client = MlflowClient(store)
    runs = client.search_runs([client.get_experiment_by_name("normlab").experiment_id])
    assert len(runs) == 1 + 4
    assert {r.data.tags.get("mlflow.source.name") for r in runs} == {str(ROOT / "pipeline" / "train.py")}
    assert {r.data.tags.get("mlflow.source.git.commit") for r in runs} == {head or None}


def test_normlab_ui_opens_the_projects_store_on_localhost(monkeypatch):
    from pipeline.cli import ui_command
    from pipeline.tracking.runs import tracking_uri

    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    cmd = ui_command(["--port", "5001"])
    assert cmd[1:] == [
        "ui",
        "--backend-store-uri",
        tracking_uri(),
        "--host",
        "127.0.0.1",
        "--port",
        "5001",
        "--workers",
        "1",
    ]
    monkeypatch.setenv("MLFLOW_TRACKING_URI", "http://10.0.0.5:5000")
    assert "http://10.0.0.5:5000" in ui_command([])  # a server is its own UI: no second one


# -- the browser check -----------------------------------------------------------------------------
@pytest.mark.slow
@pytest.mark.skipif(
    not any(shutil.which(b) for b in ("chromium", "chromium-browser", "google-chrome")),
    reason="needs headless Chromium (Debian: apt-get install chromium) for the runs-table screenshot",
)
def test_runs_table_screenshot(study, tmp_path):
    sys.path.insert(0, str(ROOT / "scripts"))
    try:
        from screenshot_runs import screenshot
    finally:
        sys.path.remove(str(ROOT / "scripts"))
    out = tmp_path / "runs.png"
    url = screenshot(f"sqlite:///{study / 'mlflow.db'}", "normlab", out, wait_ms=15000)
    assert "/runs?workflowType=machine_learning" in url
    assert out.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and out.stat().st_size > 20000


def test_progress_bar_counts_steps(tmp_path, capsys):
    """Issue 20 item 9: the bar counted Lightning's batches of 25 steps ("2/2" for 40 steps)."""
    from pipeline.cell import run_cell

    cell = make_cell("bn", optim={"lrs": [0.1], "seeds": [0]}, train={"steps": 40, "eval_every": 20})
    run_cell(cell, tmp_path / "cell", track=False, progress=True)
    shown = capsys.readouterr()
    bar = shown.out + shown.err  # Lightning's bar writes to stdout
    assert "40/40" in bar and "step" in bar, bar[-400:]
