"""Run provenance under normal DVC use: `dvc exp run --temp` records land in the workspace's store,
tagged with the experiment's name; a cell's parent run carries the hash of the outputs it wrote."""
from __future__ import annotations

import json
import os
import subprocess

import pytest
from mlflow.tracking import MlflowClient

from pipeline import records
from tests.test_dvc_pipeline import _env, _make_repo, dvc

pytestmark = pytest.mark.slow


def _env_without_tracking_uri(repo):
    env = _env(repo)
    env.pop("MLFLOW_TRACKING_URI")  # the embedded default: sqlite at the checkout's root
    return env


def test_exp_run_temp_records_in_the_workspace_store(tmp_path):
    repo = _make_repo(tmp_path / "repo")
    env = _env_without_tracking_uri(repo)
    proc = subprocess.run(["dvc", "exp", "run", "--temp", "-n", "tmp-exp", "-S", "optim.lrs=[0.2]",
                           "train@bn-synthetic"], cwd=repo, env=env, capture_output=True, text=True, timeout=900)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    store = repo / "mlflow.db"
    assert store.exists(), "the runs were recorded inside DVC's throw-away copy"
    client = MlflowClient(f"sqlite:///{store}")
    runs = client.search_runs([client.get_experiment_by_name("normlab").experiment_id])
    assert len(runs) == 3 and {r.info.status for r in runs} == {"FINISHED"}  # parent + 2 seeds
    assert {r.data.tags.get("dvc_experiment") for r in runs} == {"tmp-exp"}
    assert {r.data.params.get("optim.lr") for r in runs if r.data.tags["normlab.kind"] == "member"} == {"0.2"}
    parent = next(r for r in runs if r.data.tags["normlab.kind"] == "cell")
    assert len(parent.data.tags["normlab.outputs_hash"]) == 20
    assert parent.data.tags["mlflow.source.git.commit"]  # MLflow's own context tags


def test_changing_a_tracking_setting_retrains_nothing(tmp_path):
    repo = _make_repo(tmp_path / "repo")
    dvc(repo, "repro", "train@bn-synthetic")
    params = (repo / "params.yaml").read_text().replace("experiment: normlab", "experiment: renamed")
    (repo / "params.yaml").write_text(params)
    out = dvc(repo, "status", "--json")
    assert "bn-synthetic" not in json.loads(out.strip().splitlines()[-1] if out.strip() else "{}")
    h = records.outputs_hash(repo / "runs" / "bn-synthetic")
    assert records.read_meta(repo / "runs" / "bn-synthetic")["outputs_hash"] == h
