"""The cell records' owner: output paths it refuses, atomic writes, corrupt records named in one line,
and the typed records (pipeline.spec.records) that go in and come back."""

from __future__ import annotations

import json
import math

import pandas as pd
import pytest

from pipeline import records
from pipeline.cell import run_cell
from pipeline.spec.records import CellSummary, LayerStats, MemberSummary, layer_column
from tests.conftest import layer_dict, make_cell, member_dict, summary_dict, summary_record


def _summary(name="bn-synthetic"):
    return summary_record(name)


def test_check_out_refuses_what_normlab_did_not_create(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    user = tmp_path / "mine"
    user.mkdir()
    (user / "notes.txt").write_text("keep me")
    afile = tmp_path / "file.txt"
    afile.write_text("keep me too")
    for bad, why in [
        (user, "did not create"),
        (afile, "existing file"),
        (tmp_path, "working directory"),
        (tmp_path.parent, "working directory"),
        (afile / "sub", "cannot write"),
    ]:
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
    assert rec.summary.cell == "bn-synthetic" and rec.history["loss"].tolist() == [1.0]


BREAKS = {  # how a summary breaks the schema -> the place the one-line error names
    "layer_typo": (lambda s: s["members"][0]["layers"][0].update(W_nrom=1.0), "members.0.layers.0.W_nrom"),
    "layer_wrong_type": (lambda s: s["members"][0]["layers"][0].update(b_drift="2.0"), "members.0.layers.0.b_drift"),
    "layer_missing_norm": (lambda s: s["members"][0]["layers"][0].pop("W_norm"), "members.0.layers.0.W_norm"),
    "member_typo": (lambda s: s["members"][0].update(finale_loss=0.3), "members.0.finale_loss"),
    "member_wrong_type": (lambda s: s["members"][0].update(diverged="no"), "members.0.diverged"),
    "member_missing_seed": (lambda s: s["members"][0].pop("seed"), "members.0.seed"),
    "old_flat_layer_key": (lambda s: s["members"][0].update({"W_norm/l0": 6.0}), "members.0.W_norm/l0"),
    "layers_out_of_order": (lambda s: s["members"][0].update(layers=[layer_dict(1), layer_dict(0)]), "members.0"),
    "cell_typo": (lambda s: s.update(stepz=3), "stepz"),
    "two_depths": (
        lambda s: s["members"].append(member_dict(1, layers=[layer_dict(0), layer_dict(1)])),
        "different numbers of layers",
    ),
}


@pytest.mark.parametrize("how", sorted(BREAKS))
def test_write_cell_refuses_a_summary_that_breaks_the_schema_in_one_line(tmp_path, how):
    damage, where = BREAKS[how]
    bad = summary_dict()
    damage(bad)
    with pytest.raises(records.RecordError) as err:
        records.write_cell(tmp_path / "c", pd.DataFrame({"a": [1]}), bad, {})
    msg = str(err.value)
    assert "\n" not in msg and str(tmp_path / "c" / "summary.json") in msg and where in msg, msg
    assert not (tmp_path / "c").exists() and list(tmp_path.iterdir()) == []  # nothing written, no temp folder


def test_write_cell_validates_a_model_again(tmp_path):
    # a model changed after it was built (pydantic does not check assignments) is refused all the same
    s = _summary()
    s.members[0].layers[0].b_drift = "far"
    with pytest.raises(records.RecordError, match=r"summary\.json: refused.*members\.0\.layers\.0\.b_drift"):
        records.write_cell(tmp_path / "c", pd.DataFrame({"a": [1]}), s, {})
    assert not (tmp_path / "c").exists()


def test_read_cell_returns_models_whose_layers_round_trip(tmp_path):
    want = summary_record(
        "center_detached-synthetic",
        members=[
            member_dict(0, 0.1, 0, layers=[layer_dict(0, gsum_persist=float("nan")), layer_dict(1, b_drift=7.5)]),
            member_dict(
                1,
                3.0,
                0,
                diverged=True,
                diverged_step=12,
                full_loss_train=float("nan"),
                layers=[
                    layer_dict(0, b_norm=None, b_norm0=None, b_drift=None, gsum_persist=None),
                    layer_dict(1, W_norm=60.0),
                ],
            ),
        ],
    )
    records.write_cell(tmp_path / "c", pd.DataFrame({"member": [0], "step": [0], "loss": [1.0]}), want, {"a": 1})
    rec = records.read_cell(tmp_path / "c")
    got = rec.summary
    assert isinstance(got, CellSummary) and isinstance(got.members[0], MemberSummary)
    assert all(isinstance(s, LayerStats) for m in got.members for s in m.layers)
    assert got.model_dump_json() == want.model_dump_json()  # NaN != NaN, so compared as JSON (NaN -> null)
    assert got.depth == 2 and [s.layer for s in got.members[1].layers] == [0, 1]
    assert math.isnan(got.members[0].layers[0].gsum_persist) and got.members[0].layers[1].b_drift == 7.5
    assert got.members[1].layers[0].b_norm is None and got.members[1].layers[1].W_norm == 60.0  # absent, not NaN
    assert got.members[1].diverged_step == 12 and math.isnan(got.members[1].full_loss_train)
    assert rec.config == {"a": 1}
    # summary.json carries the per-layer numbers as a list, never as "quantity/lN" keys
    raw = json.loads((tmp_path / "c" / "summary.json").read_text())
    assert [s["layer"] for s in raw["members"][0]["layers"]] == [0, 1]
    assert raw["members"][1]["layers"][0]["b_norm"] is None
    assert not [k for m in raw["members"] for k in m if "/" in k]


def test_layer_columns_are_built_from_the_typed_layers():
    m = MemberSummary.model_validate(member_dict(layers=[layer_dict(0, b_norm=None), layer_dict(1, b_drift=9.0)]))
    cols = m.layer_columns()
    assert cols[layer_column("b_drift", 1)] == 9.0 and cols[layer_column("W_norm0", 0)] == 4.0
    assert layer_column("b_norm", 0) not in cols and cols[layer_column("b_norm", 1)] == 2.0  # None left out
    assert layer_column("W_norm", 1) == "W_norm/l1"  # the history / MLflow name, unchanged
    assert list(cols)[:2] == ["W_norm/l0", "W_norm/l1"]  # quantity by quantity
    assert "layers" not in m.scalars() and m.scalars()["final_loss"] == 0.3


@pytest.mark.parametrize(
    "damage", ["summary_garbage", "summary_schema", "summary_layer_typo", "parquet_garbage", "parquet_missing"]
)
def test_corrupt_records_are_one_line_naming_the_file(tmp_path, damage):
    out = tmp_path / "bn-synthetic"
    records.write_cell(out, pd.DataFrame({"member": [0], "step": [0], "loss": [1.0]}), _summary(), {})
    target = "summary.json" if damage.startswith("summary") else "history.parquet"
    if damage == "summary_garbage":
        (out / target).write_text("{not json")
    elif damage == "summary_schema":
        (out / target).write_text(json.dumps({"cell": "x"}))
    elif damage == "summary_layer_typo":
        s = summary_dict()
        s["members"][0]["layers"][0]["b_dirft"] = 1.0
        (out / target).write_text(json.dumps(s))
    elif damage == "parquet_garbage":
        (out / target).write_bytes(b"PAR1 nonsense")
    else:
        (out / target).unlink()
    with pytest.raises(records.RecordError) as err:
        records.read_cell(out)
    msg = str(err.value)
    assert target in msg and "\n" not in msg
    if damage == "summary_layer_typo":
        assert "members.0.layers.0.b_dirft" in msg  # the place, not just "1 validation error"


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


def test_a_trained_cell_summarizes_every_hidden_layer_from_its_history(tmp_path):
    cell = make_cell("bn_nobias", model={"depth": 3}, train={"steps": 6}, optim={"lrs": [0.05]})
    run = run_cell(cell, tmp_path / "c", track=False, progress=False)
    rec = records.read_cell(tmp_path / "c")
    assert rec.summary.model_dump_json() == run.summary.model_dump_json() and rec.summary.depth == 3
    for m in rec.summary.members:
        h = rec.history[rec.history["member"] == m.member]
        for s in m.layers:
            w = h[layer_column("W_norm", s.layer)].dropna()
            assert (s.W_norm, s.W_norm0) == (w.iloc[-1], w.iloc[0])
            assert s.b_norm is None and s.b_drift is None and s.gsum_persist is None  # no b in bn_nobias
    assert run.meta.outputs_hash == records.outputs_hash(tmp_path / "c") and run.meta.timing["fit_s"] > 0


def test_history_frame_equals_the_long_pivot_it_replaced():
    # issue 21 rebuilt history_frame from per-key arrays instead of one Python tuple per value and a
    # pivot_table; the cell's Parquet must stay the same bits. The reference below is the old code: a
    # step recorded twice keeps each member's last non-NaN value, a key missing at a step stays NaN,
    # rows after a member's divergence are dropped.
    import types

    import numpy as np
    import torch

    from pipeline.cell import history_frame

    rng = np.random.default_rng(0)
    m, steps = 3, 12
    records_ = []
    for i, t in enumerate((0, 4, 4, 8, 11, 11)):
        d = {"b_norm/l0": torch.tensor(rng.normal(size=m), dtype=torch.float32)}
        if t != 8:  # the second record of step 11 has NaN for member 0: the first one's value stays
            d["full_loss_train"] = torch.tensor([np.nan if (i == 5 and j == 0) else rng.normal() for j in range(m)])
        if t == 4:
            d["zz_only_once"] = torch.tensor(rng.normal(size=m), dtype=torch.float32)
        records_.append((t, d))
    module = types.SimpleNamespace(
        loss_hist=torch.tensor(rng.normal(size=(steps, m)), dtype=torch.float32),
        records=records_,
        diverged_step=torch.tensor([-1, 9, -1]),
    )
    members = [(0.1, 0), (0.1, 1), (1.0, 0)]

    def reference():
        losses = module.loss_hist.numpy()
        frame = pd.DataFrame(
            {
                "member": np.repeat(np.arange(m), steps),
                "step": np.tile(np.arange(steps), m),
                "loss": losses.T.reshape(-1),
            }
        )
        long = [(j, t, k, float(v.numpy()[j])) for t, d in module.records for k, v in d.items() for j in range(m)]
        rec = pd.DataFrame(long, columns=["member", "step", "key", "value"])
        wide = rec.pivot_table(
            index=["member", "step"], columns="key", values="value", aggfunc="last", dropna=False
        ).reset_index()
        wide.columns.name = None
        frame = frame.merge(wide, on=["member", "step"], how="outer")
        frame.insert(1, "lr", [members[j][0] for j in frame["member"]])
        frame.insert(2, "seed", [members[j][1] for j in frame["member"]])
        last = np.where(module.diverged_step.numpy() >= 0, module.diverged_step.numpy(), np.iinfo(np.int64).max)
        keep = frame["step"].to_numpy() <= last[frame["member"].to_numpy()]
        return frame[keep].sort_values(["member", "step"]).reset_index(drop=True)

    new, old = history_frame(module, members), reference()
    pd.testing.assert_frame_equal(new, old, check_exact=True)
    assert list(new.columns) == list(old.columns) and new["step"].max() == steps - 1
    kept = new.query("member == 0 and step == 11")["full_loss_train"].iloc[0]
    assert kept == float(records_[4][1]["full_loss_train"][0]) and not (new["member"].eq(1) & new["step"].gt(9)).any()
    assert new.query("step == 8")["full_loss_train"].isna().all() and new["zz_only_once"].notna().sum() == m
