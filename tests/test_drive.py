"""b's drive and its predictions (pipeline/drive.py, issue 19 items 1a, 1d): each estimator checked where it
is exact -- closed forms, the bias-only toy on the full batch (G constant, b linear in t) -- and each with the
result that would fail it."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from pipeline.cell import run_cell
from pipeline.drive import (
    drive_decay,
    ema_lag_linear,
    half_start,
    lag_prediction,
    leak_prediction,
    window_alphas,
    window_moments,
)
from pipeline.stats import null_drift as ND
from tests.conftest import make_cell


# -- the estimators on closed forms ------------------------------------------------------------------------
def test_half_start_opens_the_doubling_window_at_a_record_step():
    assert [half_start(t, 10) for t in (10, 20, 30, 40, 45, 500)] == [0, 10, 10, 20, 20, 250]
    assert all(half_start(t, 7) % 7 == 0 and half_start(t, 7) <= t / 2 < half_start(t, 7) + 7 for t in range(1, 300))


@pytest.mark.parametrize("k", [0.0, 0.5, 1.0, 1.5, 2.0])
def test_kappa_recovers_the_decay_of_a_systematic_drive(k):
    """G_t = a (t+1)^-k u exactly (no noise), recorded as the module records it: kappa = k (to the discreteness of
    the record grid). A per-window mean instead of the doubling window, or the slope's sign, would miss it."""
    model = ND.DriveModel("exact", k, nu=0.0, sigma=0.0, spread=0.0)
    sim = ND.simulate(model, np.random.default_rng(0), np.zeros(2, int), 1, 2000, 10)
    kappa = drive_decay(sim["step"][None], sim["drive_half"][:, 0], 2000, 0.25, 5)
    assert np.allclose(kappa, k, atol=0.03), kappa


@pytest.mark.parametrize("nu", [0.0, 0.5, 1.0])
def test_kappa_of_zero_mean_noise_is_nu_plus_one_half(nu):
    """Noise of size (t+1)^-nu alone: the doubling-window mean decays as t^-(nu + 1/2), so kappa's threshold 1 is
    the random walk's (sum of variances converges iff nu > 1/2). Mean over 400 members within 0.05."""
    model = ND.DriveModel("noise", None, nu=nu, spread=0.0)
    sim = ND.simulate(model, np.random.default_rng(1), np.arange(400), 1, 2000, 10)
    kappa = drive_decay(sim["step"][None], sim["drive_half"][:, 0], 2000, 0.25, 5)
    assert abs(np.nanmean(kappa) - (nu + 0.5)) < 0.05, np.nanmean(kappa)


def test_window_alphas_read_each_doubling_window():
    t = np.arange(0, 801, 10.0)
    d = np.where(t < 200, t, 200 + 0 * t) + 1e-9 * t  # linear, then flat from T/4: alpha 1, then ~0
    a = window_alphas(t, d, 800, 3, 5)[0]
    assert a[0] < 0.01 and a[1] < 0.01 and abs(a[2] - 1) < 1e-6, a


def test_window_moments_split_mean_from_noise_without_bias():
    """Over many windows the unbiased ||Gbar||^2 estimate averages to the truth; the naive ||mean G||^2 is high by
    tr(Sigma) / n (what the estimator corrects)."""
    rng = np.random.default_rng(2)
    gbar, sd, n, units = np.array([0.3, 0.0, 0.4]), 1.0, 10, 3
    g = gbar + sd * rng.normal(size=(20000, n, units))
    mean_norm = np.linalg.norm(g.mean(1), axis=-1)
    mean_sq, var = window_moments(mean_norm, (g**2).sum((1, 2)), n)
    assert abs(mean_sq.mean() - 0.25) < 0.01 and abs(var.mean() - units * sd**2) < 0.03
    assert (mean_norm**2).mean() - 0.25 > 0.2  # the naive estimate: + units sd^2 / n = 0.3


def test_ema_lag_closed_form_equals_the_recursion():
    b0, v, m = np.array([0.5, -1.0]), np.array([0.02, 0.03]), 0.1
    e, b = np.zeros(2), lambda k: b0 + v * k
    for n in range(1, 120):
        e = (1 - m) * e + m * b(n - 1)
        for ahead in (0, 1):
            assert np.allclose(ema_lag_linear(b0, v, n, m, ahead), b(n - 1 + ahead) - e, rtol=1e-12, atol=1e-12)
    assert np.allclose(ema_lag_linear(0 * b0, v, 400, m), v / m)  # steady state: the drive over 1/m steps


def test_lag_and_leak_predictions():
    assert np.isclose(lag_prediction(0.1, 0.1, 0.04, 0.0), 0.1 * 0.2 / 0.1)
    assert np.isclose(lag_prediction(0.1, 0.1, 0.0, 0.19), 0.1)  # noise: weights (1-m)^age squared sum to 1/0.19
    assert np.isclose(leak_prediction(0.1, 0.1, 0.04), -0.04)


# -- the module's records, where the drive is exact: the bias-only toy on the full batch -------------------------
def _toy(tmp_path, lr, steps=200, name="toy"):
    cell = make_cell(
        "bias_only_toy",
        optim={"lrs": [lr], "seeds": [0], "batch_size": 160},
        train={"steps": steps, "log_every": 10, "eval_every": 100},
        tracking={"log_every": 10},
    )
    out = tmp_path / name
    run_cell(cell, out, track=False, progress=False)
    from pipeline.records import read_cell

    rec = read_cell(out)
    return rec.history, rec.summary.members[0]


def test_the_toy_drive_is_constant_and_b_lags_its_ema_exactly(tmp_path):
    """Full batch, only b trains, detached centering: G_t = G for every t. So every window's mean drive is ||G||,
    sum ||G_t||^2 = t ||G||^2, the unbiased ||Gbar||^2 is ||G||^2 with no noise, kappa = 0, b's drift is linear
    (alpha 1 in every window), and b_T - EMA(b) is the closed form of a constant drive."""
    lr = 0.5
    h, member = _toy(tmp_path, lr)
    rows = h.dropna(subset=["gsq_cum/l0"])
    for i in range(2):
        g = h[f"grad_b/l{i}"].dropna().iloc[0]
        win, half = rows[f"drive_win/l{i}"].dropna(), rows[f"drive_half/l{i}"].dropna()
        np.testing.assert_allclose(win, g, rtol=1e-4)
        np.testing.assert_allclose(half, g, rtol=1e-4)
        np.testing.assert_allclose(rows[f"gsq_cum/l{i}"], rows["step"] * g**2, rtol=1e-4)
        assert drive_decay(rows["step"], rows[f"drive_half/l{i}"], 200, 0.25, 5)[0] == pytest.approx(0, abs=1e-3)
        assert np.allclose(window_alphas(rows["step"], rows[f"b_drift/l{i}"], 200, 2, 5), 1, atol=1e-3)
        layer = member.layers[i]
        assert layer.drive_end_sq == pytest.approx(g**2, rel=1e-3) and abs(layer.drive_end_var) < 1e-3 * g**2
        lag = np.linalg.norm(ema_lag_linear(0.0, lr * g, 200, layer.ema_momentum, ahead=1))
        assert layer.b_lag == pytest.approx(lag, rel=1e-4)
        assert layer.b_lag == pytest.approx(float(lag_prediction(lr, layer.ema_momentum, g**2, 0.0)), rel=1e-4)


def test_the_inference_leak_is_predicted_to_first_order_in_lr(tmp_path):
    """b's share of the eval-mode gap, eval(b_T) - eval(EMA(b)), against -(lr / m) sum_l ||Gbar_l||^2: the toy's
    W is frozen (the statistics' lag is 0) and eval-mode x_hat with EMA(b) is train-mode x_hat, so the prediction
    is exact to first order -- the relative error shrinks ~10x when lr does. A prediction with the wrong power of
    lr or m, or the wrong sign, fails both checks."""
    from pipeline.outcomes import _predictions

    err = []
    for lr in (0.01, 0.001):
        h, member = _toy(tmp_path, lr, name=f"toy{lr}")
        measured = member.full_loss_eval - member.full_loss_eval_bema
        row: dict = {}
        _predictions(member, row)
        assert measured < 0 and row["loss_gap_b_pred"] < 0  # inference fits better: b descended the loss
        err.append(abs(measured / row["loss_gap_b_pred"] - 1))
    assert err[0] < 0.2 and err[1] < err[0] / 5, err


# -- the report's tables: predictions beside measurements (pipeline/report/bounded.py) ------------------------
def test_the_report_reads_kappa_interval_as_the_prediction():
    from pipeline.report.bounded import reading

    assert [reading(*ci, 0.1) for ci in ((1.1, 1.5), (0.2, 0.9), (0.95, 1.05), (0.5, 1.5), (float("nan"),) * 2)] == [
        "bounded",
        "unbounded",
        "edge (log growth)",
        "undecided",
        "undecided",
    ]


def test_the_report_tables_put_each_prediction_beside_its_measurement():
    """One row per claim-2 subject (variant, data set, lr, layer) with kappa's interval over seeds and its reading; one
    row per detached batch variant, data set and lr with the leak measured and predicted. A subject with beta, a twin
    and a diverged member do not make rows of the claim-2 table (the diverged one is counted)."""

    from pipeline.config import ReportSettings
    from pipeline.report.bounded import bounded_table, leak_table

    rows = []
    for v, norm, kappa in (("center_detached", "center_detached", 0.3), ("center", "center", 1.5)):
        for seed in range(3):
            rows.append(
                {
                    "variant": v,
                    "norm": norm,
                    "dataset": "digits",
                    "lr": 0.1,
                    "seed": seed,
                    "depth": 1,
                    "status": "trained",
                    "trainable": "all",
                    "has_bias": True,
                    "affine": False,
                    "kappa/l0": kappa + 0.01 * seed,
                    "alpha_w0/l0": 0.7,
                    "gsum_persist/l0": 0.5,
                    "b_drift/l0": 3.0,
                    "loss_gap_b": -0.01 * (1 + seed),
                    "loss_gap_b_pred": -0.01,
                    "b_lag/l0": 0.2,
                    "b_lag_pred/l0": 0.21,
                }
            )
    rows.append({**rows[0], "seed": 3, "status": "diverged"})
    t = bounded_table(pd.DataFrame(rows), ReportSettings())
    assert list(t["variant"]) == ["center_detached"] and t["n"].iloc[0] == 3 and t["diverged"].iloc[0] == 1
    assert t["predicted"].iloc[0] == "unbounded" and t["kappa [CI]"].iloc[0].startswith("0.31 [")
    leak = leak_table(pd.DataFrame(rows), ReportSettings())
    assert list(leak["variant"]) == ["center_detached"] and leak["n"].iloc[0] == 3
    assert leak["b's share, measured (nats)"].iloc[0].startswith("-0.02 [")
    assert leak["predicted -(lr/m) sum ||Gbar||^2"].iloc[0] == "-0.01 [-0.01, -0.01]"
    # the Markdown's condensed forms: counts per reading, and measured / predicted (share, then lag in brackets)
    from pipeline.report.bounded import claim2_summary, leak_summary

    c2 = claim2_summary(t)
    assert c2[["unbounded", "bounded", "diverged members"]].iloc[0].tolist() == [1, 0, 1]
    assert leak_summary(leak)["lr 0.1"].iloc[0] == "2 (0.952)"  # -0.02 / -0.01; 0.2 / 0.21
