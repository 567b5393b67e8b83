"""The cell records' owner: output paths it refuses, atomic writes, corrupt records named in one line."""
from __future__ import annotations

import json

import pandas as pd
import pytest

from pipeline import records
from pipeline.cell import run_cell
from tests.conftest import make_cell


def _summary(name="bn-synthetic"):
    return {"cell": name, "variant": "bn", "dataset": "synthetic", "norm": "bn", "steps": 1, "config_hash": "x",
            "members": [{"member": 0, "lr": 0.1, "seed": 0, "diverged": False, "diverged_step": None,
                         "initial_loss": 1.0, "final_loss": 0.5}]}


def test_check_out_refuses_what_normlab_did_not_create(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    user = tmp_path / "mine"
    user.mkdir()
    (user / "notes.txt").write_text("keep me")
    afile = tmp_path / "file.txt"
    afile.write_text("keep me too")
    for bad, why in [(user, "did not create"), (afile, "existing file"), (tmp_path, "working directory"),
                     (tmp_path.parent, "working directory"), (afile / "sub", "cannot write")]:
        with pytest.raises(records.RecordError, match=why):
            records.check_out(bad)
    assert (user / "notes.txt").read_text() == "keep me" and afile.read_text() == "keep me too"
    link = tmp_path / "link"
    link.symlink_to(user)
    with pytest.raises(records.RecordError, match="symbolic link"):
        records.check_out(link)
    assert records.check_out(tmp_path / "new" / "cell") == tmp_path / "new" / "cell"  # absent: fine


def test_write_cell_marks_its_folder_and_replaces_only_marked_ones(tmp_path):
    out = tmp_path / "bn-synthetic"
    frame = pd.DataFrame({"member": [0], "step": [0], "loss": [1.0]})
    records.write_cell(out, frame, _summary(), {"a": 1})
    assert records.is_cell_folder(out)
    records.check_out(out)  # a normlab folder may be replaced
    records.write_cell(out, frame, _summary(), {"a": 2})
    assert json.loads((out / "config.json").read_text()) == {"a": 2}
    assert sorted(p.name for p in tmp_path.iterdir()) == ["bn-synthetic"]  # no temp folder left behind
    rec = records.read_cell(out)
    assert rec.summary["cell"] == "bn-synthetic" and rec.history["loss"].tolist() == [1.0]


def test_write_cell_refuses_a_summary_that_breaks_the_schema(tmp_path):
    bad = _summary()
    del bad["members"][0]["seed"]
    with pytest.raises(Exception):
        records.write_cell(tmp_path / "c", pd.DataFrame({"a": [1]}), bad, {})
    assert not (tmp_path / "c").exists()


@pytest.mark.parametrize("damage", ["summary_garbage", "summary_schema", "parquet_garbage", "parquet_missing"])
def test_corrupt_records_are_one_line_naming_the_file(tmp_path, damage):
    out = tmp_path / "bn-synthetic"
    records.write_cell(out, pd.DataFrame({"member": [0], "step": [0], "loss": [1.0]}), _summary(), {})
    target = {"summary_garbage": "summary.json", "summary_schema": "summary.json"}.get(damage, "history.parquet")
    if damage == "summary_garbage":
        (out / target).write_text("{not json")
    elif damage == "summary_schema":
        (out / target).write_text(json.dumps({"cell": "x"}))
    elif damage == "parquet_garbage":
        (out / target).write_bytes(b"PAR1 nonsense")
    else:
        (out / target).unlink()
    with pytest.raises(records.RecordError) as err:
        records.read_cell(out)
    msg = str(err.value)
    assert target in msg and "\n" not in msg


def test_write_tree_atomically_keeps_the_old_tree_when_building_fails(tmp_path):
    out = tmp_path / "reports"
    out.mkdir()
    (out / "report.md").write_text("old")
    (out / "long").mkdir()
    (out / "long" / "report.md").write_text("another study")

    def good(d):
        (d / "report.md").write_text("new")
        (d / "figures").mkdir()
        (d / "figures" / "a.png").write_text("png")

    def bad(d):
        (d / "report.md").write_text("half")
        raise RuntimeError("figure failed")

    records.write_tree_atomically(out, good)
    assert (out / "report.md").read_text() == "new" and (out / "figures" / "a.png").exists()
    with pytest.raises(RuntimeError):
        records.write_tree_atomically(out, bad)
    assert (out / "report.md").read_text() == "new" and (out / "figures" / "a.png").exists()
    assert (out / "long" / "report.md").read_text() == "another study"  # not ours: untouched
    assert sorted(p.name for p in tmp_path.iterdir()) == ["reports"]


def test_config_hash_ignores_tracking_but_not_training_settings():
    a = make_cell("bn")
    assert records.config_hash(a) == records.config_hash(make_cell("bn", tracking={"experiment": "other"}))
    assert records.config_hash(a) != records.config_hash(make_cell("bn", optim={"lrs": [0.05]}))


def test_outputs_hash_names_the_bytes_of_a_cell(tmp_path):
    cell = make_cell("center_detached", train={"steps": 6})
    run_cell(cell, tmp_path / "a", track=False)
    run_cell(cell, tmp_path / "b", track=False)
    run_cell(make_cell("center_detached", train={"steps": 6}, optim={"lrs": [0.05]}), tmp_path / "c", track=False)
    assert records.outputs_hash(tmp_path / "a") == records.outputs_hash(tmp_path / "b")
    assert records.outputs_hash(tmp_path / "a") != records.outputs_hash(tmp_path / "c")
    meta = records.read_meta(tmp_path / "a")
    assert meta["outputs_hash"] == records.outputs_hash(tmp_path / "a")
