"""Limits (issue 18, findings 6, 9, 11, 12): what normlab refuses to read or run, each as one line
naming the key or file and what is allowed, exit 2, before any work and before any run is recorded.

    .venv/bin/python -m pytest -q tests/test_limits.py

Settings through the real `python -m pipeline.train` (each stops at the params: torch is never
imported): the declared upper bounds (pipeline/config.py LIMITS), the params reader's bounds (a
FIFO or a device as --params, an alias bomb, nesting, NUL bytes, a file of megabytes), error lines
bounded in length. `--out` is someone's own folder, so a params file the program wrongly accepts
stops there ("--out ... refusing") instead of training: the test then fails on the message, and
nothing trains. Study files through `python -m pipeline.study` / `pipeline.compare` (names that
climb out of runs/ and reports/, a setup that is not a mapping); cell records through
`python -m pipeline.report` (impossible summaries) and read_cell (one consistent snapshot while a
write swaps the folder); image files (a gzip bomb, damaged IDX and CIFAR-10 files); an unreachable
PostgreSQL store.
"""

from __future__ import annotations

import gzip
import json
import os
import pickle
import random
import subprocess
import sys
import tracemalloc
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import yaml

from pipeline import records
from pipeline.config import ConfigError
from pipeline.data.images import DamagedFile, load_images, read_cifar_batch, read_idx
from pipeline.spec import environment
from tests.conftest import BASE, merge, summary_dict

ROOT = Path(__file__).resolve().parents[1]
MAX_LINE = 1000  # pipeline.params_yaml.MAX_LINE (test_the_line_bound_is_the_declared_one)
LINE = len("normlab: ") + MAX_LINE  # the longest error line


def test_the_line_bound_is_the_declared_one():
    from pipeline.params_yaml import MAX_LINE as declared

    assert declared == MAX_LINE


def _env(tmp_path: Path, **extra) -> dict:
    return {
        **os.environ,
        "NORMLAB_WARM": "0",
        "PYTHONPATH": str(ROOT),
        **environment.NO_TELEMETRY,
        "MLFLOW_TRACKING_URI": f"sqlite:///{tmp_path / 'mlflow.db'}",
        **extra,
    }


def _cli(tmp_path: Path, module: str, *args, timeout: int = 300, **env) -> tuple[int, str]:
    proc = subprocess.run(
        [sys.executable, "-m", module, *args],
        cwd=tmp_path,
        env=_env(tmp_path, **env),
        capture_output=True,
        text=True,
        timeout=timeout,
    )
    return proc.returncode, proc.stderr


def _one_line(code: int, err: str, expected: str) -> None:
    assert code == 2, err[-3000:]
    assert err.count("\n") == 1 and err.endswith("\n"), err[-3000:]  # one line, no traceback, no warnings
    assert len(err) <= LINE + 1, f"{len(err)} characters: {err[:300]}"
    assert err.startswith("normlab: " + expected), err[:1500]


def _nothing_trained(tmp_path: Path, mine: Path) -> None:
    assert sorted(p.name for p in mine.iterdir()) == ["thesis.tex"]
    db = tmp_path / "mlflow.db"
    if db.exists():
        import sqlite3

        with sqlite3.connect(db) as con:
            assert con.execute("select count(*) from runs").fetchone()[0] == 0


def _train(tmp_path: Path, params: str | Path, variant: str = "bn", dataset: str = "synthetic", **kw):
    mine = tmp_path / "mine"  # someone's folder: a wrongly accepted params file stops here, untrained
    mine.mkdir(exist_ok=True)
    (mine / "thesis.tex").write_text("years of work")
    code, err = _cli(
        tmp_path,
        "pipeline.train",
        "--params",
        str(params),
        "--variant",
        variant,
        "--dataset",
        dataset,
        "--out",
        "mine",
        **kw,
    )
    _nothing_trained(tmp_path, mine)
    return code, err


def _variants(n: int) -> dict:
    return {f"v{i}": {"norm": "bn"} for i in range(n)}


def _lrs(n: int) -> list[float]:
    return [round(0.001 * (i + 1), 6) for i in range(n)]


# -- declared upper bounds: `key: ... is too large (at most N: why)` -----------------------------
BOUNDS = {  # id -> (params overrides, expected start of the message after "params.yaml: ")
    "members_100000_lrs": (
        {"optim": {"lrs": _lrs(300), "seeds": [0, 1, 2, 3]}},
        "optim.lrs: 300 lrs x 4 seeds = 1200 members per cell is too large (at most 1024: ",
    ),
    "depth_100000": ({"model": {"depth": 100000}}, "model.depth: 100000 is too large (at most 100: "),
    "width_1e6": ({"model": {"width": 10**6}}, "model.width: 1000000 is too large (at most 4096: "),
    "channels_1e6": (
        {"model": {"kind": "cnn", "channels": 10**6}},
        "model.channels: 1000000 is too large (at most 1024: ",
    ),
    "kernel_101": ({"model": {"kind": "cnn", "kernel_size": 101}}, "model.kernel_size: 101 is too large (at most 31: "),
    "dim_1e7": (
        {"datasets": {"synthetic": {"dim": 10**7}}},
        "datasets.synthetic.dim: 10000000 is too large (at most 10000: ",
    ),
    "samples_1e10": (
        {"datasets": {"synthetic": {"samples": 10**10}}},
        "datasets.synthetic.samples: 10000000000 is too large (at most 1000000: ",
    ),
    "samples_x_dim": (
        {"datasets": {"synthetic": {"samples": 200000, "dim": 1000}}},
        "datasets.synthetic.samples: 200000 samples x dim 1000 = 200000000 values is too large (at most 100000000: ",
    ),
    "classes_1e6": (
        {"datasets": {"synthetic": {"classes": 10**6}}},
        "datasets.synthetic.classes: 1000000 is too large (at most 1000: ",
    ),
    "steps_1e7": ({"train": {"steps": 10**7}}, "train.steps: 10000000 is too large (at most 100000: "),
    "history_rows": (
        {"train": {"steps": 100000}, "optim": {"lrs": _lrs(4), "seeds": list(range(32))}},
        "train.steps: 100000 steps x 128 members = 12800000 history rows per cell is too large (at most 10000000: ",
    ),
    "weights_per_cell": (
        {"model": {"depth": 10, "width": 4096}},
        "model: a cell on datasets.synthetic of 604127232 weights (4 members x 151031808 each) is too "
        "large (at most 500000000: ",
    ),
    "cells_1200": (
        {
            "variants": _variants(40),
            "grid": {"variants": [f"v{i}" for i in range(40)], "datasets": [f"d{i}" for i in range(30)]},
            "datasets": {f"d{i}": {"kind": "synthetic", "dim": 4, "samples": 50} for i in range(30)},
        },
        "grid.variants: 40 variants x 30 data sets = 1200 cells is too large (at most 1000: ",
    ),
    "runs_128000": (
        {
            "variants": _variants(500),
            "grid": {"variants": [f"v{i}" for i in range(500)]},
            "optim": {"lrs": _lrs(8), "seeds": list(range(32))},
        },
        "grid: 500 cells x 256 members = 128000 MLflow runs is too large (at most 100000: ",
    ),
    "experiment_20000": (
        {"tracking": {"experiment": "x" * 20000}},
        "tracking.experiment: a name of 20000 characters is too large (at most 500: ",
    ),
    "variant_name_300": (
        {"variants": {"b" * 300: {"norm": "bn"}}},
        "variants.bbbbbbbbbbbbbbbbbb...(300 characters)...bbbbbbbbbbbbbbbbbb: a name of 300 "
        "characters is too large (at most 64: ",
    ),
    "bootstrap_1e9": ({"report": {"bootstrap": 10**9}}, "report.bootstrap: 1000000000 is too large (at most 100000: "),
    "threads_1e6": ({"train": {"threads": 10**6}}, "train.threads: 1000000 is too large (at most 1024: "),
    "renorm_hold_1e30": (
        {"variants": {"bn": {"norm": "bn", "renorm_hold": 10**30}}},
        f"variants.bn.renorm_hold: {10**30} is too large (at most 100000: ",
    ),
    "root_part_300": (
        {"datasets": {"synthetic": {"root": "d" * 300}}},
        "datasets.synthetic.root: a path part of 300 bytes is too large (at most 255: ",
    ),
}


@pytest.mark.parametrize("case", list(BOUNDS))
def test_a_bound_is_one_line_naming_the_key_and_why_exit_2(tmp_path, case):
    over, expected = BOUNDS[case]
    (tmp_path / "params.yaml").write_text(yaml.safe_dump(merge(BASE, over), sort_keys=False))
    code, err = _train(tmp_path, "params.yaml")
    _one_line(code, err, "params.yaml: " + expected)
    key = expected.split(":")[0]
    limit = err.split("(at most ", 1)[1]
    assert limit.split(": ", 1)[1].strip(" )\n"), f"{key}: the bound gives no reason: {err}"


def test_every_bound_admits_the_paper_scale_study():
    """studies/paper.yaml (depth 10, width 128, 8 seeds, 5 lrs, 3000 steps, CIFAR-10 subsets of 20000)
    and every shipped params file validate, cell by cell."""
    from pipeline.config import Params, cell_settings, load_params
    from pipeline.study_file import load_study

    for study in ("studies/paper.yaml", "studies/deep.yaml", "studies/mnist.yaml", "studies/horizon.yaml"):
        _, setups = load_study(ROOT / study)
        for raw in setups.values():
            p = Params.model_validate(raw)
            for v in p.grid.variants:
                for d in p.grid.datasets:
                    cell_settings(p, v, d)
    for f in ("params.yaml", "studies/long.yaml"):
        load_params(ROOT / f)
    from pipeline.config import LIMITS

    assert all(limit.why for limit in LIMITS.values())


# -- the params reader: files that are not settings, alias bombs, nesting, NUL bytes ------------
def _bomb(levels: int) -> str:
    """model.depth as a YAML alias bomb: 10**levels values once expanded, a few hundred bytes."""
    chain = ["&a0 [x, x, x, x, x, x, x, x, x, x]"] + [
        f"&a{i} [{', '.join([f'*a{i - 1}'] * 10)}]" for i in range(1, levels)
    ]
    return yaml.safe_dump(BASE, sort_keys=False).replace("model:\n", "model:\n  depth: [" + ", ".join(chain) + "]\n")


def _line(text: str, needle: str) -> int:
    return text[: text.index(needle)].count("\n") + 1


def _reader_case(case: str, tmp_path: Path) -> str:
    """Write the case's params.yaml; returns the expected start of the message."""
    base = yaml.safe_dump(BASE, sort_keys=False)
    if case == "alias_bomb":  # 10**6 values: validation quoted the value whole (a 522 MB line at 10**8)
        text = _bomb(6)
        at = text.index("&a4")  # the first value past the bound: 111,111 values
        expected = (
            f"line {_line(text, '&a4')}, column {at - text.rfind(chr(10), 0, at)}: this value expands (its "
            "aliases included) to more than 100000 values (at most 100000: "
        )
    elif case == "alias_cycle":
        text = base.replace("model:\n", "model:\n  init_std: &c [1, *c]\n")
        expected = f"line {_line(text, 'init_std')}, column 13: an alias refers to the anchored value that contains it"
    elif case == "nested_5000":
        text = "model: " + "[" * 5000 + "]" * 5000 + "\n"
        expected = "line 1, column 39: nested more than 32 levels deep (at most 32: "
    elif case == "nul_byte":
        text = base + "\0\n"
        expected = f"line {text.count(chr(10))}, column 1: character #x0000 is not allowed in YAML"
    elif case == "nul_in_value":
        text = base.replace("experiment: test", 'experiment: "te\\0st"')
        expected = (
            f"line {_line(text, 'experiment:')}, column 15: tracking.experiment: holds the control character #x0000"
        )
    elif case == "megabytes":
        text = yaml.safe_dump(merge(BASE, {"optim": {"lrs": _lrs(100000)}}))
        expected = f"{len(text)} bytes (at most 1000000: a params file is a few kilobytes)"
    elif case == "key_20000":
        text = yaml.safe_dump(merge(BASE, {"k" * 20000: 1}))
        expected = "kkkkkkkkkkkkkkkkkk...(20000 characters)...kkkkkkkkkkkkkkkkkk: unknown key (allowed: "
    else:  # a FIFO: opening it to read used to block for ever
        os.mkfifo(tmp_path / "params.yaml")
        return "params.yaml: is a FIFO (named pipe), not a params file"
    (tmp_path / "params.yaml").write_text(text)
    return "params.yaml: " + expected


READER = ["alias_bomb", "alias_cycle", "nested_5000", "nul_byte", "nul_in_value", "megabytes", "key_20000", "fifo"]


@pytest.mark.parametrize("case", READER)
def test_the_params_reader_refuses_in_one_line(tmp_path, case):
    expected = _reader_case(case, tmp_path)
    code, err = _train(tmp_path, "params.yaml", timeout=120)  # a FIFO used to block here for ever
    _one_line(code, err, expected)


def test_a_device_as_params_is_refused_unread(tmp_path):
    code, err = _train(tmp_path, "/dev/zero", timeout=120)  # used to read for ever, growing
    _one_line(code, err, "/dev/zero: is a device, not a params file; give a regular file")


# -- study files: names that climb out of runs/ and reports/, setups that are not mappings -------
STUDIES = {  # file name -> (text, expected start of the message)
    "..yaml": ("params: params.yaml\nsetups:\n  a: {}\n", "..yaml: a study name '.' is not allowed: letters, digits,"),
    "...yaml": (
        "params: params.yaml\nsetups:\n  a: {}\n",
        "...yaml: a study name '..' is not allowed: letters, digits,",
    ),
    "int_setup.yaml": (
        "params: params.yaml\nsetups:\n  a: 5\n",
        "int_setup.yaml: setups.a: must be a mapping of what the setup changes",
    ),
    "list_setup.yaml": (
        "params: params.yaml\nsetups:\n  a: [1, 2]\n",
        "list_setup.yaml: setups.a: must be a mapping of what the setup changes",
    ),
    # refused before this change too (its wording changed): kept as a guard
    "escape.yaml": ("params: params.yaml\nsetups:\n  ../x: {}\n", "escape.yaml: setups.../x: a setup name "),
    "overrides.yaml": (
        "params: params.yaml\noverrides: 3\nsetups:\n  a: {}\n",
        "overrides.yaml: overrides: must be a mapping of what every setup changes (got 3)",
    ),
    "base_list.yaml": (
        "params: [params.yaml]\nsetups:\n  a: {}\n",
        "base_list.yaml: params: must be the path of a params file (got ['params.yaml'])",
    ),
    "bound.yaml": (
        "params: params.yaml\nsetups:\n  a: {model: {depth: 100000}}\n",
        "bound.yaml: setups.a: model.depth: 100000 is too large (at most 100: ",
    ),
}


def _study_dir(tmp_path: Path, name: str) -> None:
    (tmp_path / "params.yaml").write_text(yaml.safe_dump(merge(BASE, {"tracking": {"enabled": False}})))
    (tmp_path / name).write_text(STUDIES[name][0])
    # `reports` is a file: a study the program wrongly accepts fails there, before any grid trains
    (tmp_path / "reports").write_text("not a folder")


@pytest.mark.parametrize("name", list(STUDIES))
def test_a_bad_study_file_is_one_line_before_any_work(tmp_path, name):
    _study_dir(tmp_path, name)
    code, err = _cli(tmp_path, "pipeline.study", name)
    _one_line(code, err, STUDIES[name][1])
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted([name, "params.yaml", "reports"])  # no runs/


@pytest.mark.parametrize("name", ["..yaml", "...yaml", "int_setup.yaml"])
def test_the_comparison_refuses_the_same_study_files(tmp_path, name):
    _study_dir(tmp_path, name)
    code, err = _cli(tmp_path, "pipeline.compare", "--study", name, "--reports", "out")
    _one_line(code, err, STUDIES[name][1])


def test_variant_and_data_set_names_cannot_climb_out_of_runs(tmp_path):
    over = {"variants": {"../evil": {"norm": "bn"}}, "grid": {"variants": ["../evil"]}, "tracking": {"enabled": False}}
    (tmp_path / "p.yaml").write_text(yaml.safe_dump(merge(BASE, over)))
    code, err = _cli(tmp_path, "pipeline.grid", "--params", "p.yaml", "--runs", "cells", "--report", "rep")
    _one_line(code, err, "p.yaml: variants.../evil: a name may hold only letters, digits and _")
    over = {"datasets": {"a/../../b": {"kind": "digits"}}, "grid": {"datasets": ["a/../../b"]}}
    (tmp_path / "p.yaml").write_text(yaml.safe_dump(merge(BASE, over)))
    code, err = _cli(tmp_path, "pipeline.grid", "--params", "p.yaml", "--runs", "cells", "--report", "rep")
    _one_line(code, err, "p.yaml: datasets.a/../../b: a name may hold only letters, digits and _")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["p.yaml"]


# -- cell records: impossible summaries refused; one consistent snapshot per cell ---------------
SUMMARIES = {  # id -> (change to a good summary.json, the key the message names)
    "no_members": (lambda s: s.update(members=[]), "members: a cell has at least one member"),
    "lr_negative": (lambda s: s["members"][0].update(lr=-5.0), "members.0.lr: must be a finite number > 0"),
    "lr_string_nan": (lambda s: s["members"][0].update(lr="NaN"), "members.0.lr: Input should be a valid number"),
    "loss_string_nan": (
        lambda s: s["members"][0].update(final_loss="NaN"),
        "members.0.final_loss: Input should be a valid number",
    ),
    "accuracy_1_5": (
        lambda s: s["members"][0].update(full_acc_train=1.5),
        "members.0.full_acc_train: an accuracy is in [0, 1] or NaN",
    ),
    "diverged_without_step": (
        lambda s: s["members"][0].update(diverged=True),
        "members.0.diverged_step: set exactly when diverged is true",
    ),
    "member_twice": (
        lambda s: s.update(members=[s["members"][0], s["members"][0]]),
        "members.1.member: 0 is listed twice",
    ),
    "negative_norm": (
        lambda s: s["members"][0]["layers"][0].update(b_drift=-1.0),
        "members.0.layers.0.b_drift: must not be negative",
    ),
}


def _report_dir(tmp_path: Path, damage=None) -> Path:
    (tmp_path / "params.yaml").write_text(yaml.safe_dump(BASE))
    cell = tmp_path / "runs" / "bn-synthetic"
    cell.parent.mkdir()
    records.write_cell(cell, pd.DataFrame({"member": [0], "step": [0], "loss": [1.0]}), summary_dict(), {})
    if damage:
        s = summary_dict()
        damage(s)
        (cell / "summary.json").write_text(json.dumps(s))
    return cell


@pytest.mark.parametrize("case", list(SUMMARIES))
def test_an_impossible_summary_is_one_line_naming_the_key(tmp_path, case):
    damage, key = SUMMARIES[case]
    cell = _report_dir(tmp_path, damage)
    code, err = _cli(tmp_path, "pipeline.report", "--runs", "runs", "--out", "reports", "--no-track")
    err = "".join(line + "\n" for line in err.splitlines() if not line.startswith("report: "))  # its progress lines
    _one_line(code, err, f"{cell.relative_to(tmp_path) / 'summary.json'}: corrupt ({key}")
    assert not (tmp_path / "reports").exists()


def test_every_summary_the_program_writes_still_loads(tmp_path):
    from pipeline.cell import run_cell
    from tests.conftest import make_cell

    run_cell(
        make_cell("center_detached", train={"steps": 6}, optim={"lrs": [0.05, 50.0]}),
        tmp_path / "c",
        track=False,
        progress=False,
    )  # 50.0 diverges: NaN evaluations, a diverged step
    rec = records.read_cell(tmp_path / "c")
    assert len(rec.summary.members) == 4 and any(m.diverged for m in rec.summary.members)


def _two_writes(folder: Path) -> tuple[dict, dict]:
    """Write 1 (2 members) into `folder`; return write 2's summary (3 members) and history to swap in."""
    one = summary_dict(members=[_member(j) for j in range(2)])
    records.write_cell(folder, pd.DataFrame({"member": [0, 1], "step": [0, 0], "loss": [1.0, 1.0]}), one, {"w": 1})
    two = summary_dict(members=[_member(j) for j in range(3)])
    return two, pd.DataFrame({"member": [0, 1, 2], "step": [0, 0, 0], "loss": [2.0, 2.0, 2.0]})


def _member(j: int) -> dict:
    from tests.conftest import member_dict

    return member_dict(j, 0.1 * (j + 1), 0)


def _consistent(rec: records.CellRecord) -> int:
    n = len(rec.summary.members)
    assert rec.history["member"].nunique() == n, "a summary and a history from different writes"
    assert rec.config == {"w": 1 if n == 2 else 2}
    assert rec.outputs_hash == records.outputs_hash(rec.folder) or n == 2  # the hash of the bytes read
    return n


def test_a_cell_swapped_while_the_report_reads_it_is_one_snapshot(tmp_path, monkeypatch):
    """The report read a summary and a history from different writes (137 of 3,733 reads): a write
    that swaps the folder in between is made here deterministically, once, at the moment the history
    is parsed."""
    folder = tmp_path / "bn-synthetic"
    two, history = _two_writes(folder)
    real, swapped = pd.read_parquet, []

    def read_parquet(*args, **kw):
        if not swapped:
            swapped.append(1)
            records.write_cell(folder, history, two, {"w": 2})
        return real(*args, **kw)

    monkeypatch.setattr(pd, "read_parquet", read_parquet)
    rec = records.read_cell(folder)
    assert swapped and _consistent(rec) == 2  # the write it began to read, whole


def test_a_cell_swapped_between_opening_its_files_is_read_again(tmp_path, monkeypatch):
    folder = tmp_path / "bn-synthetic"
    two, history = _two_writes(folder)
    real, swapped = os.open, []

    def opening(path, flags, *args, **kw):
        if path == "history.parquet" and not swapped:  # summary.json is open: swap the folder now
            swapped.append(1)
            records.write_cell(folder, history, two, {"w": 2})
        return real(path, flags, *args, **kw)

    monkeypatch.setattr(os, "open", opening)
    rec = records.read_cell(folder)
    assert swapped and _consistent(rec) == 3  # read again: the newer write, whole


def test_a_cell_that_never_stops_changing_is_one_line(tmp_path, monkeypatch):
    folder = tmp_path / "bn-synthetic"
    two, history = _two_writes(folder)
    real = os.open

    def opening(path, flags, *args, **kw):
        if path == "history.parquet":
            records.write_cell(folder, history, two, {"w": 2})
        return real(path, flags, *args, **kw)

    monkeypatch.setattr(os, "open", opening)
    with pytest.raises(
        records.RecordError, match=rf"^{folder}: changed {getattr(records, 'SNAPSHOT_TRIES', 50)} times "
    ):
        records.read_cell(folder)


# -- image files: a gzip bomb, damaged IDX and CIFAR-10 files -----------------------------------
def _gzip_bomb(path: Path, mbytes: int) -> None:
    """`mbytes` MB of zeros as a gzip file of ~1 KB per MB: members of 100 MB, repeated."""
    member = gzip.compress(bytes(100 << 20), compresslevel=9)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(member * (mbytes // 100))


def test_a_gzip_bomb_is_refused_before_it_inflates(tmp_path):
    bomb = tmp_path / "train-images-idx3-ubyte.gz"
    _gzip_bomb(bomb, 600)
    assert bomb.stat().st_size < 1 << 20
    tracemalloc.start()
    try:
        with pytest.raises(DamagedFile, match=r"decompresses to more than 200000000 bytes \(at most 200000000: "):
            read_idx(bomb, 3)
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert peak < 400 << 20, f"{peak} bytes held while reading a 600 MB bomb"  # the bound is 200 MB


def test_a_gzip_bomb_through_the_cli_is_one_line(tmp_path):
    raw = tmp_path / "data" / "MNIST" / "raw"
    _gzip_bomb(raw / "train-images-idx3-ubyte.gz", 300)
    over = {"datasets": {"m": {"kind": "mnist", "root": "data"}}, "grid": {"datasets": ["m"]}}
    (tmp_path / "params.yaml").write_text(yaml.safe_dump(merge(BASE, over)))
    code, err = _cli(
        tmp_path, "pipeline.train", "--params", "params.yaml", "--variant", "bn", "--dataset", "m", "--out", "cell"
    )
    _one_line(
        code,
        err,
        "datasets.m: data/MNIST/raw/train-images-idx3-ubyte.gz is damaged (decompresses to more "
        "than 200000000 bytes (at most 200000000: the largest IDX file, MNIST's training images, "
        "has 47040016)); download it again with `python -m pipeline.data.fetch --dataset mnist",
    )
    assert not (tmp_path / "cell").exists()


def _cifar_blob(labels, data=None) -> bytes:
    data = np.zeros((len(labels) if data is None else len(data), 3072), np.uint8) if data is None else data
    return pickle.dumps({b"data": data, b"labels": labels}, protocol=2)


class _Huge:
    """Pickles as numpy.ndarray((10**12,)): a terabyte asked for by a few bytes."""

    def __reduce__(self):
        return (np.ndarray, ((10**12,),))


@pytest.mark.parametrize(
    "case, blob, expected",
    [
        ("ragged_labels", _cifar_blob([[1], [1, 2]]), "data or labels are not arrays"),
        ("negative_label", _cifar_blob([-1, 3]), "labels must be integers 0..9"),
        ("label_255", _cifar_blob([255, 3]), "labels must be integers 0..9"),
        ("terabyte_array", pickle.dumps({b"data": _Huge(), b"labels": [1]}, protocol=2), "not a CIFAR-10 batch"),
        ("cut_short", _cifar_blob([1, 2])[:-40], "not a CIFAR-10 batch"),
    ],
)
def test_a_damaged_cifar_batch_is_one_line(tmp_path, case, blob, expected):
    folder = tmp_path / "cifar-10-batches-py"
    folder.mkdir()
    for name in [f"data_batch_{i}" for i in range(1, 6)] + ["test_batch"]:
        (folder / name).write_bytes(blob)
    from pipeline.config import DatasetSettings

    with pytest.raises(ConfigError) as err:
        load_images(DatasetSettings(kind="cifar10", root=str(tmp_path)), "datasets.c")
    msg = str(err.value)
    assert msg.startswith(f"datasets.c: {folder / 'data_batch_1'} is damaged (") and expected in msg, msg
    assert "\n" not in msg and len(msg) < MAX_LINE


def test_idx_labels_outside_the_ten_classes_are_damage(tmp_path):
    path = tmp_path / "train-labels-idx1-ubyte"
    path.write_bytes(bytes([0, 0, 8, 1]) + (3).to_bytes(4, "big") + bytes([1, 200, 3]))
    with pytest.raises(DamagedFile, match=r"^label 200: the labels are 0\.\.9$"):
        read_idx(path, 1)


def test_damaged_image_files_only_ever_raise_one_line(tmp_path):
    """300 seeded corruptions (bytes flipped, cut, inserted) of a good IDX file (raw and gzipped) and
    a good CIFAR-10 batch: each loads or is DamagedFile, never another exception."""
    rng = random.Random(0)
    x = np.arange(4 * 28 * 28, dtype=np.uint8).reshape(4, 28, 28)
    idx = bytes([0, 0, 8, 3]) + np.asarray(x.shape, ">u4").tobytes() + x.tobytes()
    goods = {
        "i.idx": (idx, lambda p: read_idx(p, 3)),
        "i.idx.gz": (gzip.compress(idx), lambda p: read_idx(p, 3)),
        "c.batch": (_cifar_blob([1, 2, 3], np.zeros((3, 3072), np.uint8)), read_cifar_batch),
    }
    others = []
    for i in range(300):
        name = list(goods)[i % 3]
        good, read = goods[name]
        b = bytearray(good)
        for _ in range(rng.randint(1, 4)):
            at = rng.randrange(len(b))
            op = rng.choice(("flip", "cut", "insert", "header"))
            if op == "flip":
                b[at] = rng.randrange(256)
            elif op == "cut":
                del b[at:]
                if not b:
                    b = bytearray(good[:1])
            elif op == "insert":
                b[at:at] = bytes(rng.randrange(256) for _ in range(rng.randint(1, 8)))
            else:
                b[rng.randrange(min(16, len(b)))] = rng.randrange(256)
        path = tmp_path / f"{i}-{name}"
        path.write_bytes(bytes(b))
        try:
            read(path)
        except DamagedFile as exc:
            assert "\n" not in str(exc) and len(str(exc)) < 400, str(exc)
        except Exception as exc:  # noqa: BLE001 - what the test is looking for
            others.append(f"{name} #{i}: {type(exc).__name__}: {str(exc)[:100]}")
    assert not others, others[:5]


# -- the tracking store: an unreachable PostgreSQL is one line, without MLflow's retries ------------
def test_an_unreachable_postgresql_store_is_one_line_without_retries(tmp_path):
    # port 1 on loopback: nothing listens; MLflow's store retried 10 times with backoff (~100 s) and
    # logged a warning each time before the one line
    (tmp_path / "params.yaml").write_text(yaml.safe_dump(BASE))
    code, err = _cli(
        tmp_path,
        "pipeline.train",
        "--params",
        "params.yaml",
        "--variant",
        "bn",
        "--dataset",
        "synthetic",
        "--out",
        "cell",
        MLFLOW_TRACKING_URI="postgresql+psycopg://me:s3cr3t@127.0.0.1:1/mlflow",
    )
    _one_line(
        code,
        err,
        "MLFLOW_TRACKING_URI: tracking store postgresql+psycopg://me:***@127.0.0.1:1/mlflow is not reachable (",
    )
    assert "s3cr3t" not in err and not (tmp_path / "cell").exists()


def test_fetch_refuses_to_extract_a_gzip_bomb(tmp_path, monkeypatch):
    """The downloads are checked against the official MD5s before extraction; were one to pass (a
    collision, a tampered checksum table), extraction still stops at the declared bound."""
    from pipeline.data import fetch as fetch_data

    folder = tmp_path / "MNIST" / "raw"
    names = list(fetch_data.SETS["mnist"]["gz"])
    _gzip_bomb(folder / f"{names[0]}.gz", 300)
    for name in names[1:]:
        (folder / f"{name}.gz").write_bytes(gzip.compress(b"\0\0\x08\x01\0\0\0\0"))
    monkeypatch.setattr(fetch_data, "verified", lambda path, expected: True)
    with pytest.raises(fetch_data.FetchError, match=r"decompresses to more than 200000000 bytes \(at most 200000000: "):
        fetch_data.fetch("mnist", tmp_path, log=lambda msg: None)
    assert not (folder / names[0]).exists() and not (folder / f"{names[0]}.part").exists()
