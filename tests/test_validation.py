"""Every bad input is one line naming the key or file and what is allowed, exit 2, before any
MLflow run exists and before anything is written.

    .venv/bin/python -m pytest -q tests/test_validation.py

Each case goes through the training command's `main(argv)` in this process (the path of
`python -m pipeline.train`, without paying torch's import once per case); a few go through a
real `python -m pipeline.train` subprocess to pin the exit status and the single stderr line.
"""

from __future__ import annotations

import math
import os
import re
import signal
import sqlite3
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
import yaml

from pipeline.config import ConfigError, check_tracking_uri, load_params
from pipeline.data.sets import StackedBatches, StackedDataModule, load_arrays, preflight, split
from tests.conftest import BASE, make_cell, merge

ROOT = Path(__file__).resolve().parents[1]
GOOD_CSV = "a,b,label\n" + "".join(f"{i % 5}.5,{(i * 7) % 3},{'yes' if i % 2 else 'no'}\n" for i in range(40))

# id -> (params overrides, csv file text or None, environment, expected start of the message);
# "{csv}" in an expected message is the csv file's path, "«TEXT»" the 1-based line where TEXT first is
CASES = {
    "lr_inf": (
        {"optim": {"lrs": [0.1, math.inf]}},
        None,
        {},
        "params.yaml: optim.lrs.1: Input should be a finite number (got inf)",
    ),
    "lr_nan": (
        {"optim": {"lrs": [math.nan]}},
        None,
        {},
        "params.yaml: optim.lrs.0: Input should be a finite number (got nan)",
    ),
    "lrs_duplicate": (
        {"optim": {"lrs": [0.1, 0.3, 0.1]}},
        None,
        {},
        "params.yaml: optim.lrs.2: 0.1 is listed twice (also at index 0); list each value once",
    ),
    "seeds_duplicate": (
        {"optim": {"seeds": [0, 1, 1]}},
        None,
        {},
        "params.yaml: optim.seeds.2: 1 is listed twice (also at index 1)",
    ),
    "seed_negative": (
        {"optim": {"seeds": [0, -1]}},
        None,
        {},
        "params.yaml: optim.seeds.1: must be an integer in [0, 2**32) (got -1)",
    ),
    "seed_2_70": (
        {"optim": {"seeds": [2**70]}},
        None,
        {},
        f"params.yaml: optim.seeds.0: must be an integer in [0, 2**32) (got {2**70})",
    ),
    "data_seed_2_32": (
        {"datasets": {"synthetic": {"seed": 2**32}}},
        None,
        {},
        "params.yaml: datasets.synthetic.seed: must be an integer in [0, 2**32) (got 4294967296)",
    ),
    "yaml_duplicate_key": (
        "  batch_size: 16\n  batch_size: 32\n",
        None,
        {},
        "params.yaml: line «  batch_size: 32», column 3: duplicate key optim.batch_size "
        "(first at line «  batch_size: 16», column 3); write each key once",
    ),
    "yaml_duplicate_section": (
        "  batch_size: 16\ntrain: {steps: 5}\n",
        None,
        {},
        "params.yaml: line «train:\n», column 1: duplicate key train (first at line «train: {steps: 5}», column 1)",
    ),
    "yaml_syntax": (
        "  batch_size 16\n  momentum: 0.0\n",
        None,
        {},
        "params.yaml: line «  momentum: 0.0», column 3: could not find expected ':'",
    ),
    "accelerator_tpu": (
        {"train": {"accelerator": "tpu"}},
        None,
        {},
        "params.yaml: train.accelerator: Input should be 'auto', 'cpu', 'gpu', 'cuda' or 'mps' (got 'tpu')",
    ),
    "accelerator_gpus": (
        {"train": {"accelerator": "gpus"}},
        None,
        {},
        "params.yaml: train.accelerator: Input should be 'auto', 'cpu', 'gpu'",
    ),
    "experiment_empty": (
        {"tracking": {"experiment": ""}},
        None,
        {},
        "params.yaml: tracking.experiment: must be a non-empty experiment name (got '')",
    ),
    "experiment_blank": (
        {"tracking": {"experiment": "  "}},
        None,
        {},
        "params.yaml: tracking.experiment: must be a non-empty experiment name (got '  ')",
    ),
    "grid_duplicate": (
        {"grid": {"variants": ["bn", "none", "bn"]}},
        None,
        {},
        "params.yaml: grid.variants.2: 'bn' is listed twice (also at index 0)",
    ),
    # needs the data set's size: the training split of 20 samples at val_fraction 0.2 is 16
    "batch_over_train_split": (
        {"datasets": {"synthetic": {"samples": 20}}, "optim": {"batch_size": 17}},
        None,
        {},
        "optim.batch_size: must be at most the 16 examples of datasets.synthetic's training split (got 17)",
    ),
    "csv_nan": (
        {},
        "a,b,label\n1,2,x\n3,,y\n4,5,x\n",
        {},
        "datasets.mine.path: {csv}: column 'b' has a missing or non-finite value (line 3)",
    ),
    "csv_inf": (
        {},
        "a,b,label\n1,2,x\n3,inf,y\n4,5,x\n",
        {},
        "datasets.mine.path: {csv}: column 'b' has a missing or non-finite value (line 3)",
    ),
    "csv_target_missing_value": (
        {},
        "a,label\n1,x\n2,\n3,y\n",
        {},
        "datasets.mine.path: {csv}: column 'label' has a missing or non-finite value (line 3)",
    ),
    "csv_single_class": (
        {},
        "a,label\n1,x\n2,x\n3,x\n",
        {},
        "datasets.mine.path: {csv}: column 'label' has a single class ('x'); needs at least 2",
    ),
    "csv_non_numeric": (
        {},
        "a,colour,label\n1,2,x\n2,red,y\n",
        {},
        "datasets.mine.path: {csv}: column 'colour' is not numeric (line 3: 'red')",
    ),
    "csv_no_target": ({}, "a,b\n1,2\n3,4\n", {}, "datasets.mine.target: no column 'label' in {csv} (columns: a, b)"),
    "csv_empty": ({}, "", {}, "datasets.mine.path: {csv}: is empty"),
    "csv_header_only": ({}, "a,label\n", {}, "datasets.mine.path: {csv}: has 0 data rows; needs at least 2"),
    "csv_one_row": ({}, "a,label\n1,x\n", {}, "datasets.mine.path: {csv}: has 1 data row; needs at least 2"),
    "csv_only_target": ({}, "label\nx\ny\n", {}, "datasets.mine.path: {csv}: has no feature column"),
    "csv_ragged": ({}, "a,label\n1,x\n2,y,3\n", {}, "datasets.mine.path: {csv}: not a readable csv file"),
    "csv_folder": ({}, "<folder>", {}, "datasets.mine.path: {csv}: is a folder; give a csv file"),
    "csv_no_train_left": (
        {"datasets": {"mine": {"val_fraction": 0.9}}},
        "a,label\n1,x\n2,y\n",
        {},
        "datasets.mine.val_fraction: leaves no training example (2 examples, 2 for validation)",
    ),
    "csv_batch_over_train_split": (
        {"optim": {"batch_size": 33}},
        GOOD_CSV,
        {},
        "optim.batch_size: must be at most the 32 examples of datasets.mine's",
    ),
    "tracking_uri_scheme": (
        {},
        None,
        {"MLFLOW_TRACKING_URI": "foo://x"},
        "MLFLOW_TRACKING_URI: unknown scheme 'foo' (got 'foo://x'); allowed: sqlite:///",
    ),
    "tracking_uri_no_scheme": (
        {},
        None,
        {"MLFLOW_TRACKING_URI": "http//x"},
        "MLFLOW_TRACKING_URI: has no scheme (got 'http//x')",
    ),
}
if not torch.cuda.is_available():  # the check is against this machine, so only where there is no GPU
    CASES["gpu_without_cuda"] = (
        {"train": {"accelerator": "gpu"}},
        None,
        {},
        "train.accelerator: gpu needs a CUDA GPU, and torch sees none on this machine",
    )


def _prepare(tmp_path: Path, case: str) -> tuple[list[str], dict, str]:
    """Write the case's params (and csv); returns (argv, environment, expected message)."""
    over, data, env, expected = CASES[case]
    dataset = "synthetic"
    base = BASE
    if data is not None:
        csv = tmp_path / "data.csv"
        if data == "<folder>":
            csv.mkdir()
        else:
            csv.write_text(data)
        base = merge(BASE, {"datasets": {"mine": {"kind": "csv", "path": str(csv), "target": "label"}}})
        dataset, expected = "mine", expected.replace("{csv}", str(csv))
    if isinstance(over, str):  # raw text appended after the `optim:` section's last line
        text = yaml.safe_dump(base, sort_keys=False).replace("  batch_size: 16\n", over)
    else:
        text = yaml.safe_dump(merge(base, over), sort_keys=False)
    expected = re.sub("«(.*?)»", lambda m: str(text[: text.index(m[1])].count("\n") + 1), expected, flags=re.S)
    params = tmp_path / "params.yaml"
    params.write_text(text)
    argv = ["--variant", "bn", "--dataset", dataset, "--out", str(tmp_path / "cell"), "--params", str(params)]
    store = f"sqlite:///{tmp_path / 'mlflow.db'}"
    return argv, {"NORMLAB_WARM": "0", "MLFLOW_TRACKING_URI": store, **env}, expected


def _assert_nothing_created(tmp_path: Path) -> None:
    assert not (tmp_path / "cell").exists()
    assert not [p.name for p in tmp_path.iterdir() if p.name.startswith(".cell")]  # no half-written folder
    db = tmp_path / "mlflow.db"
    if db.exists():  # a store may be opened, but no run may be in it
        with sqlite3.connect(db) as con:
            assert con.execute("select count(*) from runs").fetchone()[0] == 0


@pytest.mark.parametrize("case", list(CASES))
def test_bad_input_is_one_line_exit_2_before_any_run(tmp_path, monkeypatch, capsys, case):
    from pipeline.train import main

    argv, env, expected = _prepare(tmp_path, case)
    for k, v in env.items():
        monkeypatch.setenv(k, v)
    term = signal.getsignal(signal.SIGTERM)
    try:
        with pytest.raises(SystemExit) as exit_:
            main(argv)
    finally:
        signal.signal(signal.SIGTERM, term)
    err = capsys.readouterr().err.strip()
    assert exit_.value.code == 2, err
    assert err.splitlines() == [err], err
    assert err.startswith("normlab: " + expected), err
    _assert_nothing_created(tmp_path)


@pytest.mark.parametrize(
    "case", ["lr_inf", "yaml_duplicate_key", "csv_nan", "batch_over_train_split", "tracking_uri_scheme"]
)
def test_bad_input_through_a_real_process(tmp_path, case):
    """The same through `python -m pipeline.train`: the exit status and stderr as DVC sees them."""
    argv, env, expected = _prepare(tmp_path, case)
    proc = subprocess.run(
        [sys.executable, "-m", "pipeline.train", *argv],
        cwd=ROOT,
        capture_output=True,
        text=True,
        env={**os.environ, **env},
        timeout=120,
    )
    assert proc.returncode == 2, proc.stderr
    assert proc.stderr.strip() == proc.stderr.strip().splitlines()[0], proc.stderr
    assert proc.stderr.startswith("normlab: " + expected), proc.stderr
    _assert_nothing_created(tmp_path)


@pytest.mark.parametrize(
    "uri",
    [
        "sqlite:////abs/mlflow.db",
        "sqlite:///mlflow.db",
        "file:/abs/mlruns",
        "file:///abs/mlruns",
        "http://127.0.0.1:5000",
        "https://mlflow.example.org/x",
        "postgresql://me@db:5432/mlflow",
        "postgresql+psycopg2://me:pw@db/mlflow",
        "postgresql:///mlflow?host=/tmp/pg",
        "databricks",
        "databricks://profile",
    ],
)
def test_tracking_uri_forms_mlflow_takes(uri):
    check_tracking_uri(uri)


@pytest.mark.parametrize(
    "uri, why",
    [
        ("foo://x", "unknown scheme 'foo'"),
        ("http//x", "has no scheme"),
        ("mlruns", "has no scheme"),
        ("", "is empty"),
        ("sqlite:/relative", "a SQLite store is sqlite:/// followed by"),
        ("sqlite://", "a SQLite store"),
        ("http://", "an http server needs a host"),
        ("http://host:port", "an http server needs a host and an optional numeric port"),
        ("http://host:70000", "an http server"),
        ("postgresql://db", "a postgresql store needs a database name"),
        ("file://otherhost/x", "a file store is file: followed by a local folder's path"),
    ],
)
def test_malformed_tracking_uri(uri, why):
    with pytest.raises(ConfigError) as err:
        check_tracking_uri(uri)
    assert str(err.value).startswith(f"MLFLOW_TRACKING_URI: {why}"), err.value
    assert "allowed: sqlite:///path/to/mlflow.db, file:/abs/path/mlruns, http(s)://host[:port]" in str(err.value)


def _csv_cell(tmp_path, text: str, **optim):
    (tmp_path / "d.csv").write_text(text)
    return make_cell(
        "bn",
        "mine",
        datasets={"mine": {"kind": "csv", "path": str(tmp_path / "d.csv")}},
        optim={**BASE["optim"], **optim},
    )


def test_a_good_csv_passes_and_loads_as_written(tmp_path):
    cell = _csv_cell(tmp_path, GOOD_CSV, batch_size=32)
    preflight(cell)
    x, y = load_arrays(cell.dataset)
    assert x.shape == (40, 2) and x.dtype.name == "float32"
    assert sorted(set(y.tolist())) == [0, 1]  # 'no' -> 0, 'yes' -> 1
    assert x[1].tolist() == [1.5, 1.0]


def test_the_data_module_refuses_what_preflight_refuses(tmp_path):
    """One checked loader: training itself never reads a file preflight would refuse."""
    cell = _csv_cell(tmp_path, "a,b,label\n1,2,x\n3,,y\n4,5,x\n")
    with pytest.raises(ConfigError) as first:
        preflight(cell)
    with pytest.raises(ConfigError) as again:
        StackedDataModule(cell.dataset, [0], 1, 5, key="datasets.mine").setup()
    assert str(first.value) == str(again.value)


def test_batches_are_never_clamped():
    x, y = torch.zeros(10, 2), torch.zeros(10, dtype=torch.long)
    assert next(iter(StackedBatches(x, y, [0], 10, 3)))[0].shape == (1, 10, 2)
    with pytest.raises(ConfigError, match=r"^optim\.batch_size: must be at most the 10 examples .* \(got 11\)$"):
        next(iter(StackedBatches(x, y, [0], 11, 3)))


def test_split_is_the_one_training_always_used():
    """Refactoring the split into a function must not move a single example between the sets."""
    cfg = make_cell("bn", "synthetic").dataset
    order = np.random.default_rng(cfg.seed + 1).permutation(200)
    train, val = split(cfg, 200)
    assert val.tolist() == order[:40].tolist() and train.tolist() == order[40:].tolist()


def test_load_params_reads_the_good_file_as_before(tmp_path):
    (tmp_path / "params.yaml").write_text(yaml.safe_dump(BASE, sort_keys=False))
    assert load_params(tmp_path / "params.yaml").optim.seeds == [0, 1]
