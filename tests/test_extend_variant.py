"""Adding a variant is one spec row and one layer class, and neither lives in a project file.

This test defines `rms_detached` (x / sg(rms_B(x)): batch statistics, detached, scales, does not
center), registers its row (pipeline.spec.variants.register_spec) and its class
(pipeline.nets.norms.implements) at runtime, trains it through a real cell and reads it back through
the report's member table and claims. What the pipeline does with it must follow the row, so the
row is registered twice with properties flipped, and every assertion is written against the row:
detached -> claim 2 measures it; mode_free -> one full-set pass serves both modes. The fixture
removes both registrations, so no other test sees the variant.
"""

from __future__ import annotations

import ast
import dataclasses
import json
from pathlib import Path

import pytest
import torch
from pydantic import ValidationError

from pipeline.cell import run_cell
from pipeline.claims import evaluate_all
from pipeline.config import Params
from pipeline.nets.norms import NORMS, StackedNorm, implements, make_norm, unregister_norm
from pipeline.outcomes import member_table
from pipeline.params_yaml import error_line
from pipeline.records import read_cell
from pipeline.report.load import long_history
from pipeline.spec.variants import (
    NORM_SPECS,
    NormSpec,
    loss_fixed,
    names_where,
    refresh_interval,
    register_spec,
    unregister_spec,
)
from tests.conftest import BASE, make_cell, make_params, merge

ROOT = Path(__file__).resolve().parents[1]
NAME = "rms_detached"
ROW = NormSpec(
    NAME,
    "batch",
    detached=True,
    scales=True,
    centers=False,
    summary="x / sg(rms_B(x)): scales by the batch's root mean square, detached, no centering",
)
# the two registrations: the paper's case as it is, and one with `detached` and `mode_free` flipped
ROWS = {"as_is": ROW, "flipped": dataclasses.replace(ROW, detached=False, mode_free=True)}
VARIANTS = {NAME: {"norm": NAME, "affine": False}}


class RmsDetached(StackedNorm):
    """`rms_detached`: x_hat = x / sg(sqrt(mean_B(x^2) + eps)); inference mode divides by the EMA of
    the mean square (so training and inference forward differ: not mode-free)."""

    def __init__(self, members, features, **kw):
        super().__init__(members, features, **kw)
        self.register_buffer("running_ms", torch.ones(members, 1, features))

    def normalize(self, x):
        if not self.training:
            return x / torch.sqrt(self.running_ms + self.eps)
        ms = (x.detach() * x.detach()).mean(dim=1, keepdim=True)
        self.running_ms.lerp_(ms, self.momentum)
        return x / torch.sqrt(ms + self.eps)


@pytest.fixture(params=sorted(ROWS))
def row(request):
    """The row and its layer registered for one test, then removed (the other tests never see them)."""
    spec = register_spec(ROWS[request.param])
    implements(NAME)(RmsDetached)
    try:
        yield spec
    finally:
        unregister_norm(NAME)
        unregister_spec(NAME)
    assert NAME not in NORM_SPECS and NAME not in NORMS


def test_an_unregistered_norm_is_one_line_naming_the_key_and_the_rows():
    with pytest.raises(ValidationError) as err:
        make_params(variants=VARIANTS)
    line = error_line(err.value, Params, "params.yaml")
    assert line.startswith(f"params.yaml: variants.{NAME}.norm: Input should be 'none', 'bn', ") and "\n" not in line
    assert line.endswith(f"(got {NAME!r})")


def test_the_row_is_read_by_every_rule(row):
    assert make_params(variants=VARIANTS).variants[NAME].norm == NAME  # params validation reads the live table
    assert (NAME in names_where(lambda s: s.detached)) == row.detached  # claim 2's subjects
    # it does not center: b is not cancelled in training mode, so claim 1 and the toy's fixed loss exclude it
    assert NAME not in names_where(lambda s: s.cancels_b_in_training)
    assert not loss_fixed({"norm": NAME, "trainable": "bias"})
    assert refresh_interval({"norm": NAME, "refresh_every": 7}) is None  # it reads no refresh_every
    layer = make_norm(NAME, 2, 3)
    assert isinstance(layer, RmsDetached) and layer.spec is row


def test_a_new_variant_trains_and_is_judged_by_its_row(tmp_path, row):
    cell = make_cell(NAME, variants=VARIANTS, train={"steps": 20, "log_every": 1, "eval_every": 5})
    run_cell(cell, tmp_path / cell.name, track=False, progress=False)
    rec = read_cell(tmp_path / cell.name)
    assert json.loads((tmp_path / cell.name / "config.json").read_text())["variant"]["norm"] == NAME

    # mode_free (module.py): one pass serves both modes, else inference mode runs on the EMA statistics
    same = [m.full_loss_eval == m.full_loss_train for m in rec.summary.members]
    assert all(same) if row.mode_free else not any(same)

    # the report's path (pipeline/report/cli.py evaluate): member table, then every claim
    settings = make_params(variants=VARIANTS).report
    members = member_table([rec.summary], {cell.name: rec.history}, settings, {cell.name: rec.config})
    assert len(members) == len(cell.members()) and (members["norm"] == NAME).all()
    assert members["refresh_every"].isna().all() and not members["loss_fixed"].any()
    verdicts = {v.key: v for v in evaluate_all(members, long_history([rec]), settings)}  # Holm across claims
    measured = [e for e in verdicts["claim2"].endpoints if e.variant == NAME]
    assert bool(measured) == row.detached  # claim 2 measures b's growth on exactly the detached rows
    assert (verdicts["claim2"].tests[0].n > 0) == row.detached  # ... and its primary test pools exactly those
    assert not [
        e for e in verdicts["claim1"].endpoints if NAME in (e.variant, *e.variants)
    ]  # no centering: not claim 1's subject


def test_no_project_file_names_the_new_variant():
    """The variant lives in this file only, and this file reaches the pipeline through public names."""
    here = Path(__file__).resolve()
    for path in [*ROOT.joinpath("pipeline").rglob("*.py"), ROOT / "params.yaml", ROOT / "dvc.yaml"]:
        assert NAME not in path.read_text(), path
    imported = [
        (node.module, alias.name)
        for node in ast.walk(ast.parse(here.read_text()))
        if isinstance(node, ast.ImportFrom) and (node.module or "").startswith("pipeline")
        for alias in node.names
    ]
    assert imported and all(not name.startswith("_") for _, name in imported), imported


def test_the_whole_report_runs_on_the_new_variant(tmp_path, row):
    """The report command itself (params file, cell folders, tables, figures, verdicts), not only its
    parts: the new variant's cell is read, not excluded, and its claim 2 rows follow the row."""
    import pandas as pd
    import yaml

    from pipeline.config import cell_settings
    from pipeline.report.cli import main as report

    over = {
        "variants": VARIANTS,
        "grid": {"variants": [NAME], "datasets": ["synthetic"]},
        "train": {"steps": 20, "log_every": 1, "eval_every": 5},
    }
    params = make_params(**over)
    cell = cell_settings(params, NAME, "synthetic")
    run_cell(cell, tmp_path / "runs" / cell.name, track=False, progress=False)
    (tmp_path / "params.yaml").write_text(yaml.safe_dump(merge(BASE, over)))  # what make_params validated
    assert report(
        [
            "--runs",
            str(tmp_path / "runs"),
            "--out",
            str(tmp_path / "reports"),
            "--params",
            str(tmp_path / "params.yaml"),
            "--no-track",
        ]
    ) in (0, None)
    members = pd.read_csv(tmp_path / "reports" / "tables" / "members.csv")
    assert set(members["variant"]) == {NAME} and len(members) == len(cell.members())
    growth = pd.read_csv(tmp_path / "reports" / "tables" / "claim2.csv")
    assert (growth["variant"] == NAME).any() == row.detached
    assert NAME in (tmp_path / "reports" / "report.md").read_text()
