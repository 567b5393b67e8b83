"""Member outcomes: the status rule against baselines fixed before training, the largest trained lr,
the growth exponent, steps to target and the interval helper, on crafted members."""

from __future__ import annotations

import math

import numpy as np
import pandas as pd
import pytest

from pipeline.config import ReportSettings
from pipeline.outcomes import (
    STATUSES,
    accuracy_bar,
    best_accuracy,
    ci,
    classify,
    growth_exponent,
    largest_trained_lr,
    member_table,
    steps_to_target,
)
from pipeline.spec.records import CellSummary
from tests.conftest import layer_dict, member_dict

S = ReportSettings()
LN4 = math.log(4)


def status_row(**kw):
    """One member as classify() reads it: 4 classes, trained well unless told otherwise."""
    row = dict(
        dataset="synthetic",
        variant="v",
        lr=0.1,
        diverged=False,
        loss_fixed=False,
        full_loss_train=0.2,
        full_acc_train=0.95,
        init_full_loss_train=1.5,
        chance_loss=LN4,
        classes=4,
        w_growth_max=1.3,
        b_rms_max=0.5,
    )
    row.update(kw)
    return row


def status_of(**kw) -> str:
    return classify(pd.DataFrame([status_row(**kw)]), S).iloc[0]


def grid_statuses(best_acc: float, acc: float = 0.55, **kw) -> pd.Series:
    """A member at accuracy `acc` in a grid whose best variant ("best", 5 seeds around best_acc) reached
    `best_acc` on the same data set, on 10 classes (chance 0.1); returns every row's status (the member's
    is the last row)."""
    best = [
        status_row(
            variant="best",
            seed=s,
            full_acc_train=best_acc + d,
            classes=10,
            chance_loss=math.log(10),
            init_full_loss_train=2.3,
        )
        for s, d in enumerate((-0.01, 0.0, 0.0, 0.01, 0.02))
    ]
    mine = status_row(
        variant="mine", full_acc_train=acc, classes=10, chance_loss=math.log(10), init_full_loss_train=2.3, **kw
    )
    return classify(pd.DataFrame(best + [mine]), S)


# -- the status rule ------------------------------------------------------------------------------
def test_a_member_that_learned_is_trained():
    assert status_of() == "trained"


@pytest.mark.parametrize("loss, acc", [(LN4, 0.25), (LN4 * 0.95, 0.30), (0.2, 0.3), (1.3, 0.9)])
def test_a_member_at_or_near_chance_is_never_trained(loss, acc):
    # chance loss, a loss barely below it, chance-level accuracy with a low loss, a high loss with good accuracy
    assert status_of(full_loss_train=loss, full_acc_train=acc) == "failed"


def test_the_baseline_is_the_lower_of_the_initial_loss_and_chance():
    # init loss 0.5 (below ln 4): ending at 0.45 is not 0.75 x 0.5 -> not trained although far below chance
    assert status_of(init_full_loss_train=0.5, full_loss_train=0.45) == "failed"
    assert status_of(init_full_loss_train=0.5, full_loss_train=0.3) == "trained"
    assert status_of(init_full_loss_train=float("nan"), full_loss_train=0.3) == "trained"  # chance still anchors


def test_diverged_and_fixed_loss_take_precedence():
    assert status_of(diverged=True, full_loss_train=float("nan")) == "diverged"
    assert status_of(full_loss_train=float("inf")) == "diverged"  # an infinite full-set loss
    assert status_of(loss_fixed=True, full_loss_train=LN4, full_acc_train=0.25) == "fixed_loss"  # the toy
    assert status_of(loss_fixed=True, diverged=True) == "diverged"


def test_grown_weights_are_a_flag_not_an_outcome():
    # ||W|| grew 40x and the net fits at 99 %: trained, flagged w_grew (no "blew_up" status any more)
    s, h = _cell(
        "center_detached-synthetic",
        [_member(0, 0.1, 0, full_acc_train=0.99, layers=[layer_dict(0, W_norm=160.0, W_norm0=4.0)])],
        [_history(0, 0.1, 0)],
    )
    row = member_table([s], {s.cell: h}, S, {s.cell: _config()}).iloc[0]
    assert row["w_growth_max"] == pytest.approx(40.0)
    assert row["status"] == "trained" and row["w_grew"] and not row["b_grew"] and row["blown"]
    assert "blew_up" not in STATUSES


def test_a_drifted_b_is_flagged_and_counts_as_blown():
    drift = S.blowup_b_rms * 2 * 4.0  # rms per unit 2 x the bound, 16 units
    s, h = _cell(
        "center_detached-synthetic",
        [_member(0, 0.1, 0, layers=[layer_dict(0, b_drift=drift, b_norm=drift)]), _member(1, 0.1, 1)],
        [_history(0, 0.1, 0), _history(1, 0.1, 1)],
    )
    t = member_table([s], {s.cell: h}, S, {s.cell: _config(width=16)})
    assert t["b_grew"].tolist() == [True, False] and t["w_grew"].tolist() == [False, False]
    assert t["status"].tolist() == ["trained", "trained"] and t["blown"].tolist() == [True, False]


def test_the_accuracy_bar_is_relative_to_the_data_sets_best():
    # the same member at 0.55 on 10 classes: trained beside a best of 0.6, failed beside a best of 0.97
    assert grid_statuses(best_acc=0.6).iloc[-1] == "trained"
    assert grid_statuses(best_acc=0.97).iloc[-1] == "failed"
    # the bar is the median over seeds of the best (variant, lr) group: one lucky seed does not set it
    rows = [
        status_row(
            variant="best", seed=s, full_acc_train=a, classes=10, chance_loss=math.log(10), init_full_loss_train=2.3
        )
        for s, a in enumerate((0.6, 0.6, 0.6, 0.6, 0.99))
    ]
    rows.append(
        status_row(variant="mine", full_acc_train=0.55, classes=10, chance_loss=math.log(10), init_full_loss_train=2.3)
    )
    t = pd.DataFrame(rows)
    assert accuracy_bar(t, S).iloc[-1] == pytest.approx(0.6 - S.trained_acc_gap)
    assert classify(t, S).iloc[-1] == "trained"


def test_the_best_accuracy_leaves_out_the_toy_diverged_members_and_other_data_sets():
    rows = [status_row(variant="a", seed=s, full_acc_train=0.6) for s in range(3)]
    rows += [status_row(variant="toy", seed=s, loss_fixed=True, full_acc_train=0.99) for s in range(3)]
    rows += [status_row(variant="b", seed=s, diverged=True, full_acc_train=0.99) for s in range(3)]
    rows += [status_row(dataset="other", variant="a", seed=s, full_acc_train=0.99) for s in range(3)]
    t = pd.DataFrame(rows)
    assert best_accuracy(t).tolist() == [0.6] * 9 + [0.99] * 3


def test_the_floor_still_applies():
    # a grid of only broken variants (best 0.3 on 4 classes): 0.3 >= 0.3 - gap, but below 1/4 + margin
    rows = [status_row(variant="broken", seed=s, full_acc_train=0.3, full_loss_train=0.2) for s in range(3)]
    t = pd.DataFrame(rows)
    assert accuracy_bar(t, S).tolist() == pytest.approx([0.25 + S.trained_acc_margin] * 3)
    assert (classify(t, S) == "failed").all()


def test_a_missing_final_evaluation_is_not_trained():
    assert status_of(full_loss_train=float("nan"), full_acc_train=float("nan")) == "failed"


# -- member_table from crafted records ----------------------------------------------------------------
def _config(trainable="all", norm="center_detached", width=16):
    return {
        "variant": {"norm": norm, "bias": True, "trainable": trainable, "refresh_every": 10},
        "model": {"width": width},
    }


def _member(j, lr, seed, **kw):
    """One member (summary.json's shape): ||W|| 4 -> 6, b 0 -> 2 in its one hidden layer."""
    return member_dict(j, lr, seed, **kw)


def _history(j, lr, seed, drift=lambda t: 0.01 * t, loss=None, sens_rel=0.0, b_norm=None, steps=500):
    t = np.arange(0, steps + 1)
    loss = np.full(len(t), 1.0) if loss is None else loss
    h = pd.DataFrame({"member": j, "lr": lr, "seed": seed, "step": t, "loss": loss})
    logged = t % 10 == 0
    h.loc[logged, "b_drift/l0"] = drift(t[logged])
    h.loc[logged, "b_norm/l0"] = drift(t[logged]) if b_norm is None else b_norm
    h.loc[logged, "W_norm/l0"] = 4.0
    h.loc[logged, "grad_W/l0"], h.loc[logged, "grad_b/l0"] = 1.0, 1e-3
    ev = t % 100 == 0
    h.loc[ev, "full_loss_train"] = 1.0
    h.loc[ev, "b_sensitivity"] = sens_rel
    return h


def _cell(name, members, histories, variant=None, norm="center_detached"):
    s = {
        "cell": name,
        "variant": variant or name.split("-")[0],
        "dataset": "synthetic",
        "norm": norm,
        "steps": 500,
        "classes": 4,
        "chance_loss": LN4,
        "input_mean_norm": 3.0,
        "config_hash": "x",
        "members": members,
    }
    return CellSummary.model_validate(s), pd.concat(histories, ignore_index=True)


def test_member_table_derives_status_growth_and_target_from_the_records():
    spike = np.r_[np.full(20, 40.0), np.full(481, LN4)]  # an early spike, then back at chance
    fall = np.linspace(1.4, 0.1, 501)  # reaches 0.5 x 1.4 = 0.7 at step 269 (smoothed)
    s, h = _cell(
        "center_detached-synthetic",
        [_member(0, 0.1, 0), _member(1, 3.0, 0, full_loss_train=LN4, full_acc_train=0.26)],
        [_history(0, 0.1, 0, loss=fall), _history(1, 3.0, 0, loss=spike, drift=lambda t: np.sqrt(t))],
    )
    t = member_table([s], {s.cell: h}, S, {s.cell: _config()})
    good, spiked = t.iloc[0], t.iloc[1]
    assert good["status"] == "trained" and spiked["status"] == "failed"
    assert good["alpha/l0"] == pytest.approx(1.0, abs=1e-6) and spiked["alpha/l0"] == pytest.approx(0.5, abs=1e-3)
    assert good["w_growth/l0"] == pytest.approx(1.5) and good["b_rms/l0"] == pytest.approx(2.0 / 4.0)
    assert 265 <= good["steps_to_target"] <= 275 and np.isnan(spiked["steps_to_target"])
    assert good["loss_gap"] == pytest.approx(0.3) and good["acc_gap"] == pytest.approx(0.15)
    assert good["grad_b_rel/l0"] == pytest.approx(1e-3)


def test_the_identity_tolerance_grows_with_b():
    # the same relative sensitivity 5e-5 is scaled by (1 + rms b): with rms b = 9 it is 5e-6
    s, h = _cell(
        "center_detached-synthetic",
        [_member(0, 0.1, 0), _member(1, 0.1, 1)],
        [_history(0, 0.1, 0, sens_rel=5e-5, b_norm=0.0), _history(1, 0.1, 1, sens_rel=5e-5, b_norm=36.0)],
    )
    t = member_table([s], {s.cell: h}, S, {s.cell: _config(width=16)})
    assert t["b_sens_scaled"].tolist() == pytest.approx([5e-5, 5e-6])


def test_below_one_nat_the_identity_tolerance_is_absolute():
    # a member fitted to a loss of 5e-6 whose probe moved by 7e-11 nats (float32 noise of its logits):
    # relative to its loss that is 1.4e-5, relative to max(loss, 1 nat) 7e-11
    s, h = _cell("center_detached-synthetic", [_member(0, 0.1, 0)], [_history(0, 0.1, 0, sens_rel=7e-11, b_norm=0.0)])
    h["full_loss_train"] = h["full_loss_train"].where(h["full_loss_train"].isna(), 5e-6)
    t = member_table([s], {s.cell: h}, S, {s.cell: _config(width=16)})
    assert t["b_sens_scaled"].iloc[0] == pytest.approx(7e-11)


def test_the_bias_only_toy_is_na_and_gets_no_largest_lr():
    s, h = _cell(
        "bias_only_toy-synthetic", [_member(0, 0.1, 0), _member(1, 3.0, 0)], [_history(0, 0.1, 0), _history(1, 3.0, 0)]
    )
    t = member_table([s], {s.cell: h}, S, {s.cell: _config(trainable="bias")})
    assert (t["status"] == "fixed_loss").all()
    row = largest_trained_lr(t).iloc[0]
    assert np.isnan(row["largest_trained_lr"]) and "n/a" in row["note"]


def test_bn_vs_nobias_loss_gap_is_paired_by_lr_and_seed():
    a, ha = _cell("bn-synthetic", [_member(0, 0.1, 0)], [_history(0, 0.1, 0, loss=np.linspace(2, 1, 501))], norm="bn")
    loss_b = np.linspace(2, 1, 501)
    loss_b[5] += 0.02  # an early gap of 1% of the initial loss (within the first trajectory_steps)
    loss_b[300] += 0.06  # a late one of 3%: counted over the run, not in the early check
    b, hb = _cell("bn_nobias-synthetic", [_member(0, 0.1, 0)], [_history(0, 0.1, 0, loss=loss_b)], norm="bn")
    cfgs = {"bn-synthetic": _config(norm="bn"), "bn_nobias-synthetic": _config(norm="bn")}
    t = member_table([a, b], {"bn-synthetic": ha, "bn_nobias-synthetic": hb}, S, cfgs)
    bn = t[t["variant"] == "bn"].iloc[0]
    assert bn["loss_gap_nobias_early"] == pytest.approx(0.01) and bn["loss_gap_nobias"] == pytest.approx(0.03)
    assert np.isnan(t[t["variant"] == "bn_nobias"].iloc[0]["loss_gap_nobias"])


def test_member_table_builds_per_layer_columns_from_the_typed_layers():
    # two hidden layers: the second grew ||W|| 4 -> 20 and drifted b by 8; a twin cell has no b at all
    deep = _member(0, 0.1, 0, layers=[layer_dict(0), layer_dict(1, W_norm=20.0, b_drift=8.0)])
    s, h = _cell("center_detached-synthetic", [deep], [_history(0, 0.1, 0)])
    flat = [layer_dict(i, b_norm=None, b_norm0=None, b_drift=None, gsum_persist=None) for i in range(2)]
    nb, hb = _cell("center_detached_nobias-synthetic", [_member(0, 0.1, 0, layers=flat)], [_history(0, 0.1, 0)])
    t = member_table([s, nb], {s.cell: h, nb.cell: hb}, S, {s.cell: _config(width=16), nb.cell: _config(width=16)})
    row, bare = t.iloc[0], t.iloc[1]
    assert t["depth"].tolist() == [2, 2]
    assert row["W_norm/l1"] == 20.0 and row["W_norm0/l1"] == 4.0 and row["b_drift/l1"] == 8.0
    assert row["w_growth/l0"] == pytest.approx(1.5) and row["w_growth/l1"] == pytest.approx(5.0)
    assert row["b_rms/l1"] == pytest.approx(8.0 / 4.0) and row["b_rms_max"] == pytest.approx(2.0)
    assert row["w_growth_max"] == pytest.approx(5.0) and row["gsum_persist/l0"] == 0.9
    assert np.isnan(bare["b_rms/l0"]) and np.isnan(bare["b_rms_max"]) and np.isnan(bare["b_norm/l1"])
    assert bare["w_growth_max"] == pytest.approx(1.5)
    # a grid without b anywhere gets no b columns at all (None is "absent", not a NaN column)
    t2 = member_table([nb], {nb.cell: hb}, S, {nb.cell: _config(width=16)})
    assert not [c for c in t2.columns if c.startswith(("b_rms/", "b_norm/", "b_drift/", "gsum_persist/"))]


def test_member_table_needs_the_cell_config():
    s, h = _cell("center_detached-synthetic", [_member(0, 0.1, 0)], [_history(0, 0.1, 0)])
    with pytest.raises(ValueError, match="center_detached-synthetic: no config.json"):
        member_table([s], {s.cell: h}, S)


# -- largest trained lr ---------------------------------------------------------------------------------
def test_largest_trained_lr_never_counts_a_chance_level_member():
    rows = [
        dict(variant="none", dataset="digits", lr=lr, seed=seed, status=st, full_acc_train=0.9)
        for lr, sts in ((0.1, ["trained"] * 3), (1.0, ["trained", "failed", "trained"]), (3.0, ["diverged"] * 3))
        for seed, st in enumerate(sts)
    ]
    rows += [
        dict(variant="bn", dataset="digits", lr=0.1, seed=s, status="failed", full_acc_train=0.3) for s in range(3)
    ]
    out = largest_trained_lr(pd.DataFrame(rows)).set_index("variant")
    assert out.loc["none", "largest_trained_lr"] == 0.1  # lr 1 has one seed at chance: not counted
    assert np.isnan(out.loc["bn", "largest_trained_lr"]) and out.loc["bn", "note"]
    assert np.isnan(out.loc["bn", "acc_at_largest"])  # no such lr: no accuracy either


def test_largest_trained_lr_carries_the_median_accuracy_at_that_lr():
    accs = {0.1: [0.97, 0.98, 0.99], 0.3: [0.96, 0.90, 0.97], 1.0: [0.6, 0.7, 0.2]}
    rows = [
        dict(
            variant="bn", dataset="digits", lr=lr, seed=s, status="failed" if lr == 1.0 else "trained", full_acc_train=a
        )
        for lr, acc in accs.items()
        for s, a in enumerate(acc)
    ]
    row = largest_trained_lr(pd.DataFrame(rows)).iloc[0]
    assert row["largest_trained_lr"] == 0.3 and row["acc_at_largest"] == pytest.approx(0.96)  # median at lr 0.3


# -- growth exponent, steps to target, intervals ------------------------------------------------------
@pytest.mark.parametrize(
    "f, lo, hi",
    [(lambda t: 0.02 * t, 0.99, 1.01), (lambda t: 0.3 * np.sqrt(t), 0.49, 0.51), (lambda t: np.log1p(t), 0.0, 0.3)],
)
def test_growth_exponent_recovers_linear_random_walk_and_saturating_growth(f, lo, hi):
    t = np.arange(0, 501, 10)
    assert lo <= growth_exponent(t, f(t), 500, 0.5, 5) <= hi


def test_growth_exponent_skips_zero_drift_and_needs_enough_points():
    t = np.arange(0, 501, 10)
    assert np.isnan(growth_exponent(t, np.zeros(len(t)), 500, 0.5, 5))
    assert np.isnan(growth_exponent(t[-4:], t[-4:] * 1.0, 500, 0.5, 5))


def test_steps_to_target_uses_the_trailing_mean():
    loss = np.r_[np.full(50, 2.0), 0.1, np.full(49, 2.0), np.full(100, 0.5)]  # one lucky batch at step 50
    # step 100 + k: (0.5 (k + 1) + 2 (9 - k)) / 10 < 1 first at k = 6; the lucky batch alone never is
    assert steps_to_target(np.arange(200), loss, 1.0, 10) == 106
    assert np.isnan(steps_to_target(np.arange(200), loss, 0.1, 10))


def test_t_interval_matches_the_closed_form():
    mean, lo, hi = ci([1, 2, 3, 4, 5])
    half = 2.7764451051977987 * math.sqrt(2.5) / math.sqrt(5)  # t_{0.975, 4} * sd / sqrt(n)
    assert (mean, lo, hi) == pytest.approx((3.0, 3.0 - half, 3.0 + half))
    assert ci([2.0, 2.0, 2.0]) == (2.0, 2.0, 2.0)
    assert np.isnan(ci([1.0])[1]) and np.isnan(ci([np.nan, np.nan])[0])


def test_paired_bootstrap_is_repeatable_and_keeps_pairs():
    det, twin = np.ones(5), np.zeros(5)
    assert ci(det, paired=twin) == (1.0, 1.0, 1.0)  # excess in 5/5 seeds
    assert ci(det, paired=det) == (0.0, 0.0, 0.0)  # the twin blows up alike: no excess
    one = ci([1, 0, 0, 0, 0], paired=np.zeros(5), n_boot=4000)
    assert one == ci([1, 0, 0, 0, 0], paired=np.zeros(5), n_boot=4000)  # fixed RNG seed
    assert one[0] == pytest.approx(0.2) and one[1] == 0.0 and one[2] > 0.2  # 1 seed of 5: includes 0
    with pytest.raises(ValueError, match="paired"):
        ci([1, 2], paired=[1])
