"""Studies: one grid under several setups (depth, architecture, optimizer) and their comparison."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pandas as pd
import pytest

from pipeline.spec import environment

ROOT = Path(__file__).resolve().parents[1]
TINY = """params: {root}/params.yaml
overrides:
  grid: {{variants: [none, bn, bn_nobias, center, center_detached], datasets: [digits]}}
  optim: {{lrs: [0.1, 1.0], seeds: [0, 1, 2]}}
  train: {{steps: 20, eval_every: 10}}
  tracking: {{enabled: false}}
setups:
  mlp3_sgd: {{}}
  mlp4_adam: {{model: {{depth: 4}}, optim: {{name: adam, lrs: [0.01, 0.03]}}}}
  cnn2_sgd: {{model: {{kind: cnn, depth: 2, channels: 4}}, grid: {{datasets: [digits_images]}}}}
"""


def _run(args, cwd):
    env = {**os.environ, "NORMLAB_WARM": "0", "PYTHONPATH": str(ROOT), **environment.NO_TELEMETRY}
    return subprocess.run([sys.executable, "-m", *args], cwd=cwd, env=env, capture_output=True, text=True, timeout=900)


@pytest.mark.slow
def test_study_runs_every_setup_and_compares_them(tmp_path):
    (tmp_path / "tiny.yaml").write_text(TINY.format(root=ROOT))
    proc = _run(["pipeline.study", "tiny.yaml", "--jobs", "2"], tmp_path)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    out = tmp_path / "reports" / "tiny"
    for setup in ("mlp3_sgd", "mlp4_adam", "cnn2_sgd"):
        assert (out / setup / "report.md").exists()
        assert (tmp_path / "runs" / "tiny" / setup / "params.yaml").exists()
    md = (out / "report.md").read_text()
    assert "| claim | mlp 3x32, sgd | mlp 4x32, adam | cnn 2x4, sgd |" in md
    table = pd.read_csv(out / "tables" / "by_setup.csv")
    verdicts = pd.read_csv(out / "cnn2_sgd" / "tables" / "verdicts.csv")
    got = table[table["setup"] == "cnn2_sgd"].set_index("claim")["status"]
    assert got.to_dict() == verdicts.set_index("key")["status"].to_dict()  # statuses are the setups' own
    # the compared numbers are each setup's own primary tests, matched by test key and endpoint
    from pipeline.claims import REGISTRY

    tests = {k: c.key for c in REGISTRY for k in c.tests}
    matched = pd.read_csv(out / "tables" / "primary_by_setup.csv")
    assert {"claim", "test", "endpoint", "unit"} <= set(matched.columns)
    assert set(matched["test"]) <= set(tests) and all(matched["claim"] == matched["test"].map(tests))
    for setup, label in (("mlp3_sgd", "mlp 3x32, sgd"), ("cnn2_sgd", "cnn 2x4, sgd")):
        own = pd.read_csv(out / setup / "tables" / "primary_tests.csv")
        own = own[own["role"] == "test"].set_index("test")
        for r in matched.itertuples(index=False):
            if r.test in own.index:  # the setup's own numbers, not recomputed
                row = matched[matched["test"] == r.test].iloc[0]
                assert row[f"p_holm {label}"] == pytest.approx(own.loc[r.test, "p_holm"], nan_ok=True)
                assert row[f"status {label}"] == own.loc[r.test, "status"]
    assert matched.filter(like="status ").notna().all().all()  # every setup decided every test somehow
    # a second run finds every cell up to date and trains nothing
    again = _run(["pipeline.study", "tiny.yaml", "--jobs", "2"], tmp_path)
    assert again.returncode == 0 and "ran" not in again.stdout.replace("ran ", "")


@pytest.mark.parametrize(
    "text, message",
    [
        ("setups: {{}}\n", "setups: needs at least one setup"),
        ("params: {root}/params.yaml\nsetup: {{a: {{}}}}\n", "setup: unknown key"),
        ("params: {root}/params.yaml\nsetups: {{a: {{model: {{depth: 0}}}}}}\n", "setups.a: model.depth"),
        ("params: {root}/params.yaml\nsetups: {{figures: {{}}}}\n", "setups.figures: a setup name"),
    ],
)
def test_a_bad_study_file_is_one_line_before_any_work(tmp_path, text, message):
    (tmp_path / "bad.yaml").write_text(text.format(root=ROOT))
    proc = _run(["pipeline.study", "bad.yaml"], tmp_path)
    assert proc.returncode == 2 and message in proc.stderr and proc.stderr.count("\n") == 1, proc.stderr
    assert not (tmp_path / "runs").exists() and not (tmp_path / "reports").exists()


def test_every_study_store_is_outside_what_the_default_report_hashes():
    # A study writes runs/<study>/ inside the default report stage's `runs` dependency: unless DVC ignores
    # it, running `make beta` makes `dvc status` call the shipped report stale. Asked of the real dvc.
    studies = sorted(p.stem for p in (ROOT / "studies").glob("*.yaml"))
    assert {"beta", "deep", "horizon", "long", "mnist"} <= set(studies)
    probes = [f"runs/{s}/setup/cell/history.parquet" for s in studies] + ["runs/center-digits/history.parquet"]
    dvc = Path(sys.executable).with_name("dvc")
    proc = subprocess.run(
        [str(dvc), "check-ignore", *probes],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=300,
        env={**os.environ, **environment.NO_TELEMETRY},
    )
    ignored = set(proc.stdout.split())
    assert ignored == set(probes[:-1]), proc.stdout + proc.stderr


def test_a_study_with_jobs_below_one_is_one_line_before_any_work(tmp_path):
    (tmp_path / "s.yaml").write_text(TINY.format(root=ROOT))
    proc = _run(["pipeline.study", "s.yaml", "--jobs", "0"], tmp_path)
    assert proc.returncode == 2 and "--jobs: must be >= 1 (got 0)" in proc.stderr, proc.stderr
    assert proc.stderr.count("\n") == 1 and not (tmp_path / "runs").exists()
