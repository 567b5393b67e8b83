"""Verdict logic on crafted member tables: each verdict flips when the evidence does."""
from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from pipeline.config import ReportSettings
from pipeline.verdicts import (FAILS, HOLDS, NOT_SHOWN, b_grows_without_bound, bn_makes_b_redundant,
                               loss_independent_of_b, model_blows_up, worse_when_scaling)

CFG = ReportSettings()
NORM = {"bias_only_toy": "center_detached", "bn_nobias": "bn"}


def member(variant, lr=0.1, seed=0, dataset="synthetic", **kw):
    row = dict(variant=variant, norm=NORM.get(variant, variant), dataset=dataset, lr=lr, seed=seed,
               diverged=False, diverged_step=np.nan, input_mean=3.0, b_drift_final=0.0, b_slope=np.nan,
               b_r2=np.nan, b_late_early=np.nan, b_slope_pred=np.nan, b_sens_rel=np.nan, grad_b_rel=np.nan,
               loss_gap_nobias=np.nan, initial_loss=2.0, final_loss=0.5)
    row.update(kw)
    return row


def table(*rows):
    return pd.DataFrame(list(rows))


# (1) loss independent of b -------------------------------------------------------------
def _claim1(sens, ctrl=0.2, drift=4.0):
    return loss_independent_of_b(table(
        member("center_detached", b_sens_rel=sens, b_drift_final=drift),
        member("bias_only_toy", b_sens_rel=sens, b_drift_final=drift),
        member("none", b_sens_rel=ctrl, b_drift_final=1.0)), CFG)


def test_claim1_flips_with_the_sensitivity():
    assert _claim1(1e-7).status == HOLDS
    assert _claim1(3e-2).status == FAILS
    assert _claim1(1e-7, ctrl=0.0).status == NOT_SHOWN       # the probe cannot see a dependence at all
    assert _claim1(1e-7, drift=0.0).status == NOT_SHOWN      # b never moved


# (2) b grows without bound -------------------------------------------------------------
def _claim2(r2=0.99, late_early=1.0, slope=0.01, pred=0.01, drift=5.0):
    rows = [member("center_detached", seed=s, b_r2=r2, b_late_early=late_early, b_slope=slope,
                   b_slope_pred=pred, b_drift_final=drift) for s in range(3)]
    return b_grows_without_bound(table(*rows), CFG)


def test_claim2_flips_with_linearity_saturation_and_rate():
    assert _claim2().status == HOLDS
    assert _claim2(r2=0.3).status == FAILS
    assert _claim2(late_early=0.1).status == FAILS           # it saturates
    assert _claim2(pred=0.02).status == FAILS                 # not at the predicted rate
    assert _claim2(drift=0.0).status == NOT_SHOWN


# (3) worse when it also scales ---------------------------------------------------------
def _claim3(div_center, div_standardize):
    rows = [member("center_detached", lr=1.0, seed=s, diverged=s < div_center) for s in range(3)]
    rows += [member("standardize_detached", lr=1.0, seed=s, diverged=s < div_standardize) for s in range(3)]
    rows += [member("center_detached", lr=0.1, seed=s) for s in range(3)]
    rows += [member("standardize_detached", lr=0.1, seed=s) for s in range(3)]
    return worse_when_scaling(table(*rows), CFG)


def test_claim3_flips_with_the_divergence_counts():
    assert _claim3(0, 2).status == HOLDS
    assert _claim3(2, 0).status == FAILS
    assert _claim3(0, 0).status == NOT_SHOWN


def test_claim3_ignores_zero_mean_inputs():
    rows = [member("standardize_detached", lr=1.0, seed=s, diverged=True, input_mean=0.0) for s in range(3)]
    rows += [member("center_detached", lr=1.0, seed=s, input_mean=0.0) for s in range(3)]
    rows += [member("center_detached", lr=1.0, seed=s) for s in range(3)]
    rows += [member("standardize_detached", lr=1.0, seed=s) for s in range(3)]
    assert worse_when_scaling(table(*rows), CFG).status == NOT_SHOWN


# (4) the model blows up ----------------------------------------------------------------
def _claim4(detached_div, through_div):
    rows = [member("center_detached", lr=1.0, seed=s, diverged=s < detached_div, diverged_step=40.0)
            for s in range(3)]
    rows += [member("center", lr=1.0, seed=s, diverged=s < through_div) for s in range(3)]
    return model_blows_up(table(*rows), CFG)


def test_claim4_flips_when_the_gradient_through_twin_also_diverges():
    assert _claim4(3, 0).status == HOLDS
    assert _claim4(3, 3).status == FAILS                      # both blow up: not the detaching
    assert _claim4(0, 0).status == NOT_SHOWN
    assert _claim4(1, 0).status == NOT_SHOWN                  # one seed of three is not "blows up"


# (5) BN makes b redundant --------------------------------------------------------------
def _claim5(grad=1e-9, drift=1e-8, gap=1e-7):
    rows = [member("bn", seed=s, grad_b_rel=grad, b_drift_final=drift, loss_gap_nobias=gap) for s in range(3)]
    return bn_makes_b_redundant(table(*rows), CFG)


def test_claim5_flips_with_gradient_drift_and_twin_gap():
    assert _claim5().status == HOLDS
    assert _claim5(grad=1e-2).status == FAILS
    assert _claim5(drift=0.5).status == FAILS
    assert _claim5(gap=0.2).status == FAILS
    assert _claim5(gap=np.nan).status == NOT_SHOWN            # bn_nobias not in the grid


@pytest.mark.parametrize("fn", [loss_independent_of_b, b_grows_without_bound, worse_when_scaling,
                                model_blows_up, bn_makes_b_redundant])
def test_every_verdict_states_its_criterion_and_evidence(fn):
    v = fn(table(member("none")), CFG)
    assert v.status == NOT_SHOWN and v.criterion and v.evidence
