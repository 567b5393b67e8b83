"""The whole pipeline through the real `dvc` binary, on a tiny grid in a temporary repo."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pandas as pd
import pytest
import yaml

from pipeline.spec import environment

ROOT = Path(__file__).resolve().parents[1]
BIN = Path(sys.executable).parent

pytestmark = pytest.mark.slow

TINY = {
    "grid": {"variants": ["center_detached", "bn"], "datasets": ["synthetic"]},
    "datasets": {"synthetic": {"kind": "synthetic", "input_mean": 3.0, "dim": 6, "classes": 3, "samples": 200}},
    "model": {"depth": 2, "width": 8},
    "optim": {"lrs": [0.1, 1.0], "seeds": [0, 1], "batch_size": 16},
    "train": {"steps": 30, "log_every": 5, "eval_every": 10, "threads": 1},
    "tracking": {"log_every": 10, "flush_every": 10},
}


def _params(over: dict) -> dict:
    params = yaml.safe_load((ROOT / "params.yaml").read_text())
    for key, value in over.items():
        params[key] = {**params[key], **value} if isinstance(value, dict) and key != "datasets" else value
    return params


def _make_repo(d: Path) -> Path:
    shutil.copytree(ROOT / "pipeline", d / "pipeline", ignore=shutil.ignore_patterns("__pycache__"))
    shutil.copytree(ROOT / "data", d / "data")
    shutil.copy(ROOT / "dvc.yaml", d / "dvc.yaml")
    shutil.copy(ROOT / ".dvcignore", d / ".dvcignore")
    (d / "params.yaml").write_text(yaml.safe_dump(_params(TINY), sort_keys=False))
    (d / ".gitignore").write_text("mlflow.db\nmlflow.db.init-lock\nmlruns/\n")
    env = _env(d)
    for cmd in (["git", "init", "-q"], ["dvc", "init", "-q"]):  # DVC's analytics: off by _env (spec/environment.py)
        subprocess.run(cmd, cwd=d, env=env, check=True, capture_output=True)
    shutil.copytree(ROOT / ".dvc" / "plots", d / ".dvc" / "plots")  # the project's plot templates
    for cmd in (["git", "add", "-A"], ["git", "-c", "user.name=t", "-c", "user.email=t@t", "commit", "-qm", "init"]):
        subprocess.run(cmd, cwd=d, env=env, check=True, capture_output=True)
    return d


@pytest.fixture(scope="module")
def repo(tmp_path_factory):
    return _make_repo(tmp_path_factory.mktemp("repo"))


def _env(d: Path) -> dict:
    return environment.child_env(
        PATH=f"{BIN}:{os.environ['PATH']}",
        MLFLOW_TRACKING_URI=f"sqlite:///{d / 'mlflow.db'}",
        GIT_AUTHOR_NAME="t",
        GIT_AUTHOR_EMAIL="t@t",
        GIT_COMMITTER_NAME="t",
        GIT_COMMITTER_EMAIL="t@t",
    )


def dvc(repo: Path, *args) -> str:
    proc = subprocess.run(["dvc", *args], cwd=repo, env=_env(repo), capture_output=True, text=True, timeout=900)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    return proc.stdout + proc.stderr


def ran(output: str) -> set[str]:
    return {line.split("'")[1] for line in output.splitlines() if line.startswith("Running stage")}


def edit(repo: Path, fn) -> None:
    p = yaml.safe_load((repo / "params.yaml").read_text())
    fn(p)
    (repo / "params.yaml").write_text(yaml.safe_dump(p, sort_keys=False))


def test_repro_runs_every_cell_then_the_report(repo):
    out = dvc(repo, "repro")
    assert ran(out) == {"train@center_detached-synthetic", "train@bn-synthetic", "report"}
    for f in (
        "report.md",
        "report.html",
        "metrics.json",
        "tables/members.csv",
        "tables/status.csv",
        "tables/largest_trained_lr.csv",
        "tables/verdicts.csv",
        "tables/endpoints.csv",
        "figures/b_norm_synthetic.png",
        "figures/member_status.png",
        "figures/loss_synthetic.png",
        "figures/weight_norm_synthetic.png",
    ):
        assert (repo / "reports" / f).exists(), f
    # the tables hold the cells' own numbers
    members = pd.read_csv(repo / "reports" / "tables" / "members.csv")
    for cell in ("center_detached-synthetic", "bn-synthetic"):
        s = json.loads((repo / "runs" / cell / "summary.json").read_text())
        got = members[members["cell"] == cell].sort_values(["lr", "seed"])
        want = sorted(s["members"], key=lambda m: (m["lr"], m["seed"]))
        assert len(got) == len(want) == 4
        assert got["final_loss"].tolist() == pytest.approx([m["final_loss"] for m in want], rel=1e-9)
        assert got["diverged"].tolist() == [m["diverged"] for m in want]
    html = (repo / "reports" / "report.html").read_text()
    assert "data:image/png;base64," in html and "<table>" in html
    md = (repo / "reports" / "report.md").read_text()
    assert "## Verdicts" in md and "## The answer" in md and "figures/b_norm_synthetic.png" in md


def test_every_run_carries_the_git_commit_and_entry_point_on_the_warm_path(tmp_path):
    """Issue 20: with the default warm start only the first cell's runs carried MLflow's source tags.
    The warm server is started (and waited for) first, so every cell below runs in a forked child."""
    from mlflow.tracking import MlflowClient

    repo = _make_repo(tmp_path / "repo")
    env = _env(repo)
    env.pop("NORMLAB_WARM", None)  # the default path
    warm = [sys.executable, "-m", "pipeline.warm"]
    subprocess.run([*warm, "start", "--wait"], cwd=repo, env=env, check=True, capture_output=True, timeout=300)
    try:
        proc = subprocess.run(
            ["dvc", "repro", "train@center_detached-synthetic", "train@bn-synthetic"],
            cwd=repo,
            env=env,
            capture_output=True,
            text=True,
            timeout=900,
        )
        assert proc.returncode == 0, proc.stdout + proc.stderr
        assert subprocess.run([*warm, "status"], cwd=repo, env=env, capture_output=True).returncode == 0
    finally:
        subprocess.run([*warm, "stop"], cwd=repo, env=env, capture_output=True, timeout=300)
    head = subprocess.run(
        ["git", "rev-parse", "HEAD"], cwd=repo, capture_output=True, text=True, check=True
    ).stdout.strip()
    client = MlflowClient(f"sqlite:///{repo / 'mlflow.db'}")
    runs = client.search_runs([client.get_experiment_by_name("normlab").experiment_id], max_results=1000)
    assert len(runs) == 2 * (1 + 4)  # two cells, each a parent and 2 lrs x 2 seeds
    assert {r.data.tags.get("mlflow.source.git.commit") for r in runs} == {head}
    names = {r.data.tags.get("mlflow.source.name", "") for r in runs}
    assert {Path(n).parts[-2:] == ("pipeline", "train.py") for n in names} == {True}, names


def test_second_repro_does_nothing(repo):
    assert ran(dvc(repo, "repro")) == set()
    assert "up to date" in dvc(repo, "status") or dvc(repo, "status").strip().startswith(
        "Data and pipelines are up to date"
    )


def test_variant_setting_reruns_only_that_variant_and_the_report(repo):
    edit(repo, lambda p: p["variants"]["center_detached"].update(affine=True))
    assert ran(dvc(repo, "repro")) == {"train@center_detached-synthetic", "report"}


def test_report_option_reruns_only_the_report(repo):
    edit(repo, lambda p: p["report"].update(alpha_unbounded=0.45))
    assert ran(dvc(repo, "repro")) == {"report"}


def test_metrics_and_plots_show(repo):
    metrics = dvc(repo, "metrics", "show", "--json")
    assert '"claims"' in metrics and '"datasets"' in metrics
    out = dvc(repo, "plots", "show", "--json")
    assert "b_norm" in out and "loss" in out


def test_exp_run_with_set_param(repo):
    subprocess.run(["git", "add", "-A"], cwd=repo, check=True, env=_env(repo))
    subprocess.run(["git", "commit", "-qm", "state"], cwd=repo, check=True, env=_env(repo))
    dvc(repo, "exp", "run", "-S", "optim.lrs=[0.1,0.5]")
    shown = json.loads(dvc(repo, "exp", "show", "--json"))
    text = json.dumps(shown)
    assert "0.5" in text and "claims" in text


def test_removing_a_variant_removes_it_from_the_report(repo):
    edit(repo, lambda p: p["grid"].update(variants=["center_detached"]))
    assert ran(dvc(repo, "repro")) == {"report"}
    members = pd.read_csv(repo / "reports" / "tables" / "members.csv")
    assert set(members["variant"]) == {"center_detached"}
    assert "bn-synthetic" not in (repo / "reports" / "report.md").read_text()
    assert (repo / "runs" / "bn-synthetic").exists()  # the stale folder is there, and ignored


def test_parallel_cells_give_the_same_outputs_and_lock_as_sequential(tmp_path):
    from mlflow.tracking import MlflowClient

    seq, par = _make_repo(tmp_path / "seq"), _make_repo(tmp_path / "par")
    dvc(seq, "repro")
    proc = subprocess.run(
        [sys.executable, "-m", "pipeline.grid", "--jobs", "2"],
        cwd=par,
        env=_env(par),
        capture_output=True,
        text=True,
        timeout=900,
    )
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "with 2 job(s)" in proc.stdout
    assert ran(dvc(par, "repro")) == set()  # everything recorded: a later repro is a no-op
    lock_seq = yaml.safe_load((seq / "dvc.lock").read_text())
    lock_par = yaml.safe_load((par / "dvc.lock").read_text())
    assert lock_seq == lock_par  # same deps, params and output hashes, the report's included
    client = MlflowClient(f"sqlite:///{par / 'mlflow.db'}")
    runs = client.search_runs([client.get_experiment_by_name("normlab").experiment_id])
    members = [r for r in runs if r.data.tags.get("normlab.kind") == "member"]
    assert len(members) == 8 and {r.info.status for r in runs} == {"FINISHED"}
    for r in members:  # no write lost to concurrent SQLite access
        steps = [m.step for m in client.get_metric_history(r.info.run_id, "loss")]
        if r.data.tags["diverged"] == "false":
            assert steps == [0, 10, 20, 29]  # every tracking.log_every steps, and the last
        else:  # logged up to the divergence step, which is always sent
            assert steps[-1] == int(r.data.tags["diverged_step"])
