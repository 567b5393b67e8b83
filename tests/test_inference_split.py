"""Claim 1b's inference-mode gap split into b's share and the lag of W's statistics (pipeline/module.py).

    .venv/bin/python -m pytest -q tests/test_inference_split.py

A layer whose running mean is an EMA from 0 of its batch means holds EMA(mean(W u)) + EMA(b);
the module follows EMA(b) as b_ema and evaluates once more with b -> b_ema (full_loss_eval_bema).
Then loss_gap = full_loss_eval - full_loss_train = loss_gap_b + loss_gap_lag, with
loss_gap_b = full_loss_eval - full_loss_eval_bema and loss_gap_lag = full_loss_eval_bema - full_loss_train.
"""

from __future__ import annotations

import math

import pytest

from pipeline.cell import run_cell
from pipeline.config import ReportSettings
from pipeline.data.sets import load_split
from pipeline.outcomes import member_table
from pipeline.records import read_cell
from pipeline.spec.records import MemberSummary
from tests.conftest import make_cell, member_dict

CNN = {"model": {"kind": "cnn", "depth": 2, "channels": 4}}


def trained(tmp_path, variant, dataset="synthetic", **over):
    """(summary, history, member table) of a freshly trained cell."""
    cell = make_cell(variant, dataset, **over)
    run_cell(cell, tmp_path / cell.name, track=False, progress=False)
    rec = read_cell(tmp_path / cell.name)
    table = member_table([rec.summary], {cell.name: rec.history}, ReportSettings(), {cell.name: rec.config})
    return rec.summary, rec.history, table


@pytest.mark.parametrize("variant", ["center_detached", "standardize_detached"])
def test_the_split_sums_to_the_gap_and_is_measured_at_every_evaluation(tmp_path, variant):
    over = dict(train={"steps": 40, "log_every": 10, "eval_every": 10}, tracking={"log_every": 10})
    summary, hist, t = trained(tmp_path, variant, **over)
    # every interval evaluation (steps 0, 10, .., 40) has the pass without b's lag, and only those
    evals = hist[hist["full_loss_eval"].notna()]
    assert sorted(evals["step"].unique()) == [0, 10, 20, 30, 40]
    assert evals["full_loss_eval_bema"].notna().all()
    assert hist.loc[hist["full_loss_eval"].isna(), "full_loss_eval_bema"].isna().all()
    alive = t[~t["diverged"].astype(bool)]
    assert len(alive) and alive["full_loss_eval_bema"].notna().all()
    # float32 losses subtracted in double: the two shares add up to the gap to double rounding
    assert (alive["loss_gap_b"] + alive["loss_gap_lag"]).tolist() == pytest.approx(
        alive["loss_gap"].tolist(), rel=0, abs=1e-12
    )
    # not vacuous: b moved under detached statistics, so b's share is not zero in every member
    assert (alive["loss_gap_b"].abs() > 0).any()
    assert [m.full_loss_eval_bema for m in summary.members] == pytest.approx(alive["full_loss_eval_bema"].tolist())


@pytest.mark.parametrize("dataset, over", [("synthetic", {}), ("digits_images", CNN)], ids=["mlp", "cnn"])
def test_with_w_frozen_and_the_whole_set_as_one_batch_the_gap_is_all_b(tmp_path, dataset, over):
    # the bias-only toy (W fixed, only b trains, detached centering) on batches that are the whole
    # training set: every batch mean is the full-set mean, so the running mean's W part is the full-set
    # mean x (1 - 0.9^T) -- at T = 300, equal to it to float precision -- and all that is left of the
    # inference-mode gap is b's lag: b_T against the EMA of a b that drifts linearly
    cell = make_cell("bias_only_toy", dataset, **over)
    n = len(load_split(cell.dataset)[0])
    steps = 300
    assert (1 - 0.1) ** steps < 1e-12  # the norm's momentum (0.1): the EMA's start from 0 has faded
    summary, _, t = trained(
        tmp_path,
        "bias_only_toy",
        dataset,
        optim={"lrs": [0.5, 3.0], "seeds": [0, 1], "batch_size": n},
        train={"steps": steps, "log_every": 50, "eval_every": 100},
        tracking={"log_every": 50},
        **over,
    )
    assert not t["diverged"].any()
    assert t["loss_gap_lag"].abs().max() < 1e-4  # the statistics' lag: 0 to float precision
    assert t["loss_gap_b"].abs().min() > 1e-2  # a real gap, all of it b's
    assert t["loss_gap_b"].tolist() == pytest.approx(t["loss_gap"].tolist(), abs=1e-4)


@pytest.mark.parametrize(
    "variant", ["none", "layernorm", "population_detached", "bn_nobias", "running_detached", "batch_renorm"]
)
def test_no_split_where_it_is_not_defined(tmp_path, variant):
    # mode-free variants (no inference-mode gap at all), a net without b, and EMAs that copy their first
    # batch (running_*, batch_renorm: not an EMA from 0, so b's EMA is not followed): NaN, not recorded
    summary, hist, t = trained(tmp_path, variant, train={"steps": 12, "eval_every": 6})
    assert "full_loss_eval_bema" not in hist
    assert all(math.isnan(m.full_loss_eval_bema) for m in summary.members)
    assert t["loss_gap_b"].isna().all() and t["loss_gap_lag"].isna().all()


def test_under_bn_b_never_moves_so_the_whole_gap_is_the_statistics_lag(tmp_path):
    # bn's gradient through mu_B makes dl/db 0: b stays at b_0 = 0 (bias_init 0), its EMA too, and
    # b's share of bn's inference-mode gap is 0; the gap is the lag of W's running statistics
    summary, _, t = trained(tmp_path, "bn", train={"steps": 30, "eval_every": 10})
    alive = t[~t["diverged"].astype(bool)]
    assert len(alive) and alive["full_loss_eval_bema"].notna().all()
    assert alive["loss_gap_b"].abs().max() <= 1e-6
    assert (alive["loss_gap"].abs() > 1e-6).any()  # a gap there is, and it is the lag's
    assert alive["loss_gap_lag"].tolist() == pytest.approx(alive["loss_gap"].tolist(), abs=1e-6)


def test_a_summary_written_before_the_split_still_loads():
    old = member_dict()
    assert "full_loss_eval_bema" not in old
    assert math.isnan(MemberSummary.model_validate(old).full_loss_eval_bema)
    assert MemberSummary.model_validate({**old, "full_loss_eval_bema": 0.4}).full_loss_eval_bema == 0.4
    with pytest.raises(ValueError):
        MemberSummary.model_validate({**old, "full_loss_eval_bema": "0.4"})  # strict: a string is not a number
