"""Run provenance under normal DVC use: `dvc exp run --temp` records land in the workspace's store,
tagged with the experiment's name; a cell's parent run carries the hash of the outputs it wrote."""

from __future__ import annotations

import json
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
    proc = subprocess.run(
        ["dvc", "exp", "run", "--temp", "-n", "tmp-exp", "-S", "optim.lrs=[0.2]", "train@bn-synthetic"],
        cwd=repo,
        env=env,
        capture_output=True,
        text=True,
        timeout=900,
    )
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


def test_after_a_cache_restore_the_report_links_the_run_that_made_those_bytes(tmp_path):
    repo = _make_repo(tmp_path / "repo")
    env = _env(repo)

    def params(lrs):
        text = (repo / "params.yaml").read_text()
        import yaml

        p = yaml.safe_load(text)
        p["grid"]["variants"] = ["bn"]
        p["optim"]["lrs"] = lrs
        (repo / "params.yaml").write_text(yaml.safe_dump(p, sort_keys=False))

    def report_tags():
        client = MlflowClient(env["MLFLOW_TRACKING_URI"])
        exp = client.get_experiment_by_name("normlab").experiment_id
        runs = client.search_runs([exp], "tags.`normlab.kind` = 'report'", order_by=["attributes.start_time DESC"])
        return client, exp, runs[0].data.tags

    params([0.1])
    dvc(repo, "repro")
    client, exp, _ = report_tags()
    first = client.search_runs([exp], "tags.`normlab.kind` = 'cell'")
    assert len(first) == 1
    params([0.2])
    dvc(repo, "repro")
    params([0.1])  # back: DVC restores the cell from its run cache, nothing trains
    out = dvc(repo, "repro")
    assert "train@bn-synthetic" not in {ln.split("'")[1] for ln in out.splitlines() if ln.startswith("Running stage")}
    client, exp, tags = report_tags()
    cells = client.search_runs([exp], "tags.`normlab.kind` = 'cell'")
    assert len(cells) == 2  # one per trained setting: the restore trained nothing
    assert tags["cell_runs"] == first[0].info.run_id  # the run that wrote the restored bytes
    assert json.loads((repo / "runs" / "bn-synthetic" / "summary.json").read_text())["members"][0]["lr"] == 0.1
