"""Issue 18 item 5: the report links a cell to the run that produced the bytes it read, and a tag
another local user forges through the (unauthenticated) MLflow server cannot relink it.

The store is a real MLflow server over SQLite (tests/mlflow_loopback.py); the forger is `nobody`
(setpriv), speaking MLflow's REST API with the system Python, as any local user can. Before: the
report linked the latest FINISHED run carrying the cell's `normlab.outputs_hash`, whoever made it.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess

import pytest
import yaml
from mlflow.tracking import MlflowClient

from pipeline import records
from pipeline.config import cell_settings, load_params
from tests.test_report import grid, report, trained  # noqa: F401  (the tiny trained grid, copied per test)

pytestmark = pytest.mark.skipif(
    os.geteuid() != 0 or not shutil.which("setpriv") or not os.path.exists("/usr/bin/python3"),
    reason="acting as another user (setpriv) needs root and a system python3",
)

FORGER = r"""
import json, sys, time, urllib.request
base, op = sys.argv[1], json.loads(sys.argv[2])
def call(path, body):
    req = urllib.request.Request(f"{base}/api/2.0/mlflow/{path}", json.dumps(body).encode(),
                                 {"Content-Type": "application/json"})
    with urllib.request.urlopen(req, timeout=60) as r:
        return json.load(r)
if op["kind"] == "copy":  # a new run carrying every tag of the genuine one, FINISHED
    run = call("runs/create", {"experiment_id": op["experiment_id"], "start_time": op["start_time"],
                               "tags": [{"key": k, "value": v} for k, v in op["tags"].items()]})["run"]
    call("runs/update", {"run_id": run["info"]["run_id"], "status": "FINISHED", "end_time": op["start_time"] + 1})
    print(run["info"]["run_id"])
else:  # the genuine hash written on some other run
    call("runs/set-tag", {"run_id": op["run_id"], "key": "normlab.outputs_hash", "value": op["value"]})
"""


def _as_nobody(uri: str, op: dict) -> str:
    r = subprocess.run(
        [
            "setpriv",
            "--reuid",
            "nobody",
            "--regid",
            "nogroup",
            "--clear-groups",
            "/usr/bin/python3",
            "-c",
            FORGER,
            uri,
            json.dumps(op),
        ],
        capture_output=True,
        text=True,
        timeout=120,
        cwd="/",
        env={"PATH": "/usr/bin:/bin"},
    )
    assert r.returncode == 0, r.stderr  # the server accepts writes from any local user: why a tag is no proof
    return r.stdout.strip()


@pytest.fixture
def tracked(grid, mlflow_server, monkeypatch):  # noqa: F811
    """The grid copy with tracking on, against the loopback server; train(variant) trains one cell into it."""
    monkeypatch.setenv("MLFLOW_TRACKING_URI", mlflow_server.uri)
    p = yaml.safe_load((grid / "params.yaml").read_text())
    p["tracking"]["enabled"] = True
    (grid / "params.yaml").write_text(yaml.safe_dump(p, sort_keys=False))
    params = load_params(grid / "params.yaml")
    client = MlflowClient(mlflow_server.uri)

    def train(variant: str):
        from pipeline.cell import run_cell

        run = run_cell(
            cell_settings(params, variant, "synthetic"), grid / "runs" / f"{variant}-synthetic", progress=False
        )
        return client.get_run(run.meta.mlflow["parent_run_id"])

    return grid, client, train, mlflow_server.uri


def _linked(client, exp: str) -> str:
    runs = client.search_runs(
        [exp], "tags.`normlab.kind` = 'report'", order_by=["attributes.start_time DESC"], max_results=1
    )
    return runs[0].data.tags["cell_runs"]


def test_a_forged_copy_of_the_cells_run_does_not_relink_it(tracked, capsys):
    """A later FINISHED run with every tag of the genuine one (hash and identity): the old report linked
    it. The cell's own meta file names the genuine run; without it (DVC restored the cell, a fresh
    clone), two candidates are linked to none, both named."""
    root, client, train, uri = tracked
    genuine = train("center")
    exp = genuine.info.experiment_id
    forged = _as_nobody(
        uri,
        {"kind": "copy", "experiment_id": exp, "tags": genuine.data.tags, "start_time": genuine.info.end_time + 60_000},
    )
    assert client.get_run(forged).data.tags["normlab.outputs_hash"] == genuine.data.tags["normlab.outputs_hash"]
    assert report(root) == 0
    assert _linked(client, exp) == genuine.info.run_id  # before: the forged run
    records.meta_path(root / "runs" / "center-synthetic").unlink()
    capsys.readouterr()
    assert report(root) == 0
    assert _linked(client, exp) == ""  # before: the forged run
    err = [ln for ln in capsys.readouterr().err.splitlines() if ln.startswith("report: center-synthetic:")]
    assert len(err) == 1 and "2 FINISHED cell runs carry its outputs hash" in err[0], err
    assert genuine.info.run_id in err[0] and forged in err[0] and "none linked" in err[0], err


def test_a_forged_hash_on_another_cells_run_is_ignored(tracked, capsys):
    """The center cell's hash written onto the bn cell's (later) run: the old report linked that run to
    the center cell. Its identity is bn's, so the center cell keeps its own run, even with no meta file;
    the bn cell, whose run no longer carries its hash, is linked to none and says so."""
    root, client, train, uri = tracked
    center, bn = train("center"), train("bn")
    for cell in ("center-synthetic", "bn-synthetic"):
        records.meta_path(root / "runs" / cell).unlink()  # only the store to go by
    _as_nobody(uri, {"kind": "tag", "run_id": bn.info.run_id, "value": center.data.tags["normlab.outputs_hash"]})
    assert report(root) == 0
    assert _linked(client, center.info.experiment_id) == center.info.run_id  # before: bn's run
    err = capsys.readouterr().err
    assert (
        "report: center-synthetic: the one run with its outputs hash and identity (1 run(s) with its hash "
        "name another cell or config: ignored)" in err
    ), err
    assert "report: bn-synthetic: no MLflow run found with its outputs hash\n" in err, err
