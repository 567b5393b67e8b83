"""The claims registry on crafted member tables: each verdict flips when its evidence flips (the test
that would make it come out the other way), and the printed rule is the one applied."""
from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from pipeline.claims import (CHECK_FAILED, FAILS, HOLDS, MIXED, NOT_SHOWN, PASSED, REGISTRY, STATUSES, Claim,
                             answer_text)
from pipeline.config import ReportSettings

S = ReportSettings()
CLAIMS = {c.key: c for c in REGISTRY}
NORM = {"bias_only_toy": "center_detached", "bn_nobias": "bn", "standardize": "bn",
        "population_detached_k1": "population_detached", "population_detached_k100": "population_detached"}
REFRESH = {"population_detached": 10.0, "population_detached_k1": 1.0, "population_detached_k100": 100.0,
           "population_center_detached": 10.0}
MEAN = {"synthetic": 3.0, "synthetic_zero_mean": 0.0, "digits": 2.5}
SEEDS = range(5)


def member(variant, seed=0, lr=1.0, dataset="synthetic", status="trained", **kw):
    """One row of pipeline.outcomes.member_table with every column the claims read."""
    row = dict(variant=variant, norm=NORM.get(variant, variant), dataset=dataset, input_mean_norm=MEAN[dataset],
               lr=lr, seed=seed, steps=500, depth=2, status=status, diverged=status == "diverged", diverged_step=np.nan,
               trainable="bias" if variant == "bias_only_toy" else "all", has_bias=variant != "bn_nobias",
               refresh_every=REFRESH.get(variant, np.nan), b_sens_scaled=np.nan, b_rms_max=1.0, loss_gap=0.0,
               acc_gap=0.0, full_loss_train=0.3, full_acc_train=0.9, w_growth_max=1.5, steps_to_target=100.0,
               grad_b_rel_max=np.nan, loss_gap_nobias_early=np.nan,
               **{"alpha/l0": np.nan, "alpha/l1": np.nan, "gsum_persist/l0": 0.9, "b_drift/l0": 0.0})
    row.update(kw)
    row["blown"] = row["status"] in ("diverged", "blew_up")
    row["trained"] = row["status"] == "trained"
    return row


def seeds(variant, values=None, **kw):
    """One member per seed; `values` maps a column to one value per seed."""
    return [member(variant, seed=s, **kw, **{k: v[s] for k, v in (values or {}).items()}) for s in SEEDS]


def judge(key, rows, settings=S):
    return CLAIMS[key].evaluate(pd.DataFrame(rows), None, settings)


def noise(center, sd=0.02, seed=0):
    return list(center + np.random.default_rng(seed).normal(0, sd, len(SEEDS)))


# -- claim 1: identity check with a control that can fail ------------------------------------------
def _claim1(subject_sens, control_sens=0.1, b_rms=5.0):
    rows = seeds("center_detached", b_sens_scaled=subject_sens, b_rms_max=b_rms)
    rows += seeds("bias_only_toy", b_sens_scaled=subject_sens, b_rms_max=b_rms, status="fixed_loss")
    rows += seeds("none", b_sens_scaled=control_sens)
    return judge("claim1", rows)


def test_claim1_is_a_check_that_can_fail():
    assert _claim1(1e-8).status == PASSED
    assert _claim1(1e-3).status == CHECK_FAILED                  # the loss moved with b beyond rounding
    assert _claim1(1e-8, control_sens=0.0).status == NOT_SHOWN   # the probe sees no dependence where there is one
    assert _claim1(1e-8, b_rms=0.0).status == NOT_SHOWN          # b never moved: equality is trivial
    assert CLAIMS["claim1"].kind == "identity"


def test_claim1_ignores_diverged_members():
    rows = seeds("center_detached", b_sens_scaled=1e-8, b_rms_max=5.0)
    rows += [member("center_detached", seed=9, status="diverged", b_sens_scaled=1.0, b_rms_max=5.0)]
    rows += seeds("none", b_sens_scaled=0.1)
    assert judge("claim1", rows).status == PASSED


# -- claim 1b: the train/eval gap against the twin ---------------------------------------------------
def _claim1b(det_gap, twin_gap=0.0, variant="center_detached", twin="center", **kw):
    return seeds(variant, {"loss_gap": noise(det_gap, seed=1), "acc_gap": noise(det_gap / 5, seed=3)}, **kw) + \
        seeds(twin, {"loss_gap": noise(twin_gap, seed=2), "acc_gap": noise(twin_gap / 5, seed=4)}, **kw)


def test_claim1b_flips_with_the_excess_gap():
    assert judge("claim1b", _claim1b(0.5)).status == HOLDS
    assert judge("claim1b", _claim1b(0.0)).status == NOT_SHOWN
    assert judge("claim1b", _claim1b(-0.5)).status == HOLDS                 # inference better: b still leaks
    assert judge("claim1b", _claim1b(0.0, twin_gap=0.5)).status == FAILS
    both = _claim1b(0.5) + _claim1b(0.0, twin_gap=0.5, variant="standardize_detached", twin="standardize")
    assert judge("claim1b", both).status == MIXED
    v = judge("claim1b", _claim1b(0.5))
    assert v.figure == "train_eval_gap" and "eval mode" in v.evidence and "train mode" in v.evidence
    assert all(e.n == 5 for e in v.endpoints)


def test_a_lone_hit_among_many_comparisons_is_not_beyond_chance():
    from pipeline.claims import beyond_chance

    assert beyond_chance(1, 1, 0.95) and not beyond_chance(0, 1, 0.95)
    assert not beyond_chance(1, 20, 0.95) and beyond_chance(3, 20, 0.95)  # P(X >= 3 | 20, 0.025) = 0.014
    # claim 1b on six lrs (12 decided comparisons) where only one shows an excess: chance could do that
    def lrs(hits):
        rows = []
        for i, lr in enumerate([0.01, 0.03, 0.1, 0.3, 1.0, 3.0]):
            # no effect but informative: |gap| differs pair by pair, averaging to the twin's
            gap = noise(0.5, seed=i) if i < hits else [0.01, -0.02, 0.0, 0.03, -0.01]
            rows += seeds("center_detached", {"loss_gap": gap}, lr=lr) + \
                seeds("center", {"loss_gap": [0.02, 0.01, -0.01, 0.02, 0.01]}, lr=lr)
        return rows
    assert judge("claim1b", lrs(1)).status == NOT_SHOWN
    assert judge("claim1b", lrs(2)).status == HOLDS
    # comparisons whose pairs all agree exactly cannot miss 0 by chance: they do not dilute the family
    from pipeline.claims.base import Endpoint, _read_signs
    hit = Endpoint(measure="e", effect=1.0, lo=0.5, hi=1.5, n=5)
    flat = Endpoint(measure="e", effect=0.0, lo=0.0, hi=0.0, n=5)
    assert _read_signs([hit] + [flat] * 30, 0.95)[0] == HOLDS


def test_claim1b_compares_only_variants_trained_on_batch_statistics():
    # a population variant uses the same statistics in both modes: its zero gap is not evidence either way
    rows = _claim1b(0.0, twin_gap=0.5, variant="population_center_detached", twin="center")
    assert judge("claim1b", rows).status == NOT_SHOWN


def test_claim1b_needs_enough_paired_seeds():
    rows = [r for r in _claim1b(0.5) if r["seed"] < S.min_members - 1]
    assert judge("claim1b", rows).status == NOT_SHOWN


# -- claim 2: growth exponent on the real networks ----------------------------------------------------
def _claim2(alpha_l0, alpha_l1=None, variant="center_detached", **kw):
    vals = {"alpha/l0": noise(alpha_l0)}
    if alpha_l1 is not None:
        vals["alpha/l1"] = noise(alpha_l1, seed=3)
    return seeds(variant, vals, **kw)


def test_claim2_flips_with_the_growth_exponent():
    assert judge("claim2", _claim2(1.0)).status == HOLDS
    assert judge("claim2", _claim2(0.1)).status == FAILS                  # saturates
    assert judge("claim2", _claim2(0.5)).status == NOT_SHOWN              # a random walk: on the line
    v = judge("claim2", _claim2(1.0, alpha_l1=0.1))
    assert v.status == MIXED and "(by layer: l0 1;" in v.evidence and "saturate (by layer: l1 1;" in v.evidence


def test_claim2_excludes_the_toy_and_diverged_members():
    toy = _claim2(1.0, variant="bias_only_toy", status="fixed_loss")
    v = judge("claim2", toy + _claim2(0.1))
    assert v.status == FAILS                                              # the toy's linear drift is not evidence
    assert any("toy" in e.measure and e.effect == pytest.approx(1.0, abs=0.05) for e in v.endpoints)
    assert judge("claim2", _claim2(1.0, status="diverged")).status == NOT_SHOWN


def test_claim2_reports_the_twins_drift():
    rows = _claim2(1.0) + seeds("center", {"b_drift/l0": [0.0] * 5})
    twin = [e for e in judge("claim2", rows).endpoints if e.measure.startswith("twin")]
    assert twin and twin[0].effect == 0.0 and twin[0].n == 5
    assert (twin[0].variant, twin[0].twin, twin[0].layer) == ("center_detached", "center", 0)


# -- claim 3: excess of standardizing over its twin vs centering over its twin -------------------------
FOUR = ("standardize_detached", "standardize", "center_detached", "center")


def _claim3(blown=(), lossy=None, dataset="synthetic", acc=None):
    """All four variants at lrs 0.1 and 3; `blown` variants diverge at lr 3; `lossy` has +0.3 loss."""
    rows = []
    for v in FOUR:
        for lr in (0.1, 3.0):
            st = "diverged" if v in blown and lr == 3.0 else "trained"
            loss = noise(0.3 + (0.3 if v == lossy else 0.0), seed=hash(v) % 7)
            a = [0.9 - (0.2 if v == acc else 0.0)] * 5
            rows += seeds(v, {"full_loss_train": loss, "full_acc_train": a}, lr=lr, dataset=dataset, status=st)
    return judge("claim3", rows)


def test_claim3_flips_with_the_declared_endpoints():
    assert _claim3().status == NOT_SHOWN
    assert _claim3(blown=["standardize_detached"]).status == HOLDS
    assert _claim3(blown=["center_detached"]).status == FAILS
    assert _claim3(lossy="standardize_detached").status == HOLDS         # worse final train-mode loss
    assert _claim3(acc="center_detached").status == FAILS                 # centering's accuracy is the worse
    assert _claim3(blown=["center_detached"], lossy="standardize_detached").status == MIXED


def test_claim3_counts_only_the_excess_over_each_twin():
    assert _claim3(blown=["standardize_detached", "standardize"]).status == NOT_SHOWN
    assert _claim3(blown=["center"]).status == HOLDS  # centering's twin blows up: centering-detached looks better


def test_claim3_ignores_zero_mean_inputs_and_states_every_endpoint():
    assert _claim3(blown=["standardize_detached"], dataset="synthetic_zero_mean").status == NOT_SHOWN
    v = _claim3(blown=["standardize_detached"])
    assert len(v.endpoints) == 8 and all(e.n == 5 for e in v.endpoints)
    assert "train mode" in " ".join(e.measure for e in v.endpoints)


# -- claim 4: blow-ups in excess of the twin ------------------------------------------------------------
def _claim4(n_det, n_twin, det="center_detached", twin="center", step=300.0):
    rows = seeds(det, {"status": ["diverged"] * n_det + ["trained"] * (5 - n_det)}, diverged_step=step)
    rows += seeds(twin, {"status": ["diverged"] * n_twin + ["trained"] * (5 - n_twin)}, diverged_step=step)
    return judge("claim4", rows)


def test_claim4_flips_with_the_excess_over_the_twin():
    assert _claim4(5, 0).status == HOLDS
    assert _claim4(5, 5).status == FAILS                                    # the twin blows up alike
    assert _claim4(0, 0).status == FAILS
    assert _claim4(1, 0).status == NOT_SHOWN                                # one seed of five: within noise
    assert _claim4(0, 5).status == FAILS                                    # only the twin blows up


def test_claim4_is_mixed_when_detaching_blows_up_more_in_one_cell_and_less_in_another():
    def cell(n_det, n_twin, lr):
        rows = seeds("center_detached", {"status": ["diverged"] * n_det + ["trained"] * (5 - n_det)}, lr=lr,
                     diverged_step=300.0)
        return rows + seeds("center", {"status": ["diverged"] * n_twin + ["trained"] * (5 - n_twin)}, lr=lr,
                            diverged_step=300.0)
    assert judge("claim4", cell(5, 0, 1.0) + cell(0, 5, 3.0)).status == MIXED
    assert judge("claim4", cell(5, 0, 1.0) + cell(5, 5, 3.0)).status == HOLDS


def test_claim4_does_not_blame_detaching_for_a_blow_up_before_the_first_refresh():
    early = _claim4(5, 0, det="population_center_detached", step=4.0)     # K = 10: the frozen map diverged
    assert early.status == NOT_SHOWN and "before the statistics were first recomputed" in early.evidence
    assert _claim4(5, 0, det="population_center_detached", step=40.0).status == HOLDS
    # the twin blowing up beside a detached member that was dropped is not evidence against detaching
    assert _claim4(5, 5, det="population_center_detached", step=4.0).status == NOT_SHOWN


def test_claim4_is_decided_by_the_centering_pairs_only():
    v = _claim4(5, 0, det="population_detached", twin="frozen")
    assert v.status == NOT_SHOWN and any((e.variant, e.twin) == ("population_detached", "frozen") and not e.decides
                                         for e in v.endpoints)
    assert _claim4(5, 0, det="standardize_detached", twin="standardize").status == NOT_SHOWN


def test_claim4_reports_the_refresh_interval_sweep():
    rows = []
    for v, n in (("population_detached_k1", 0), ("population_detached", 3), ("population_detached_k100", 5)):
        rows += seeds(v, {"status": ["diverged"] * n + ["trained"] * (5 - n)}, diverged_step=50.0)
    eps = {e.refresh_every: e for e in judge("claim4", rows).endpoints if e.measure == "blow-up rate"}
    assert [eps[k].effect for k in (1, 10, 100)] == [0.0, 0.6, 1.0]
    assert eps[10].detail == "population_detached, K = 10, synthetic, lr 1"


# -- claim 5: identity check with controls that can fail ---------------------------------------------------
def _claim5(grad=1e-8, gap=1e-6, control=0.3):
    rows = seeds("bn", grad_b_rel_max=grad, loss_gap_nobias_early=gap)
    rows += seeds("bn_nobias")
    rows += seeds("none", grad_b_rel_max=control) + seeds("frozen", grad_b_rel_max=control)
    return judge("claim5", rows)


def test_claim5_is_a_check_that_can_fail():
    assert _claim5().status == PASSED
    assert _claim5(grad=1e-2).status == CHECK_FAILED
    # the bn/bn_nobias loss gap is amplified rounding (both forwards are one function): reported, not decisive
    v = _claim5(gap=0.1)
    assert v.status == PASSED and "5 of 5 pairs above" in v.endpoints[2].detail
    assert _claim5(control=0.0).status == NOT_SHOWN      # the probe cannot see b's gradient where it exists
    assert _claim5(gap=np.nan).status == NOT_SHOWN       # bn_nobias not in the grid


def test_claim5_reports_status_agreement_of_bn_and_bn_nobias():
    rows = seeds("bn", grad_b_rel_max=1e-8, loss_gap_nobias_early=1e-6) + \
        seeds("bn_nobias", {"status": ["trained"] * 4 + ["failed"]}) + seeds("none", grad_b_rel_max=0.3)
    same = [e for e in judge("claim5", rows).endpoints if e.measure.startswith("same member status")][0]
    assert same.effect == pytest.approx(0.8) and same.n == 5


# -- the registry -------------------------------------------------------------------------------------------
def test_every_claim_declares_its_parts_and_fills_its_rule_from_settings():
    fields = set(ReportSettings.model_fields)
    assert [c.key for c in REGISTRY] == ["claim1", "claim1b", "claim2", "claim3", "claim4", "claim5"]
    for c in REGISTRY:
        assert isinstance(c, Claim) and c.endpoints and c.controls and c.statement
        assert c.kind in ("measurement", "identity") and c.placeholders() <= fields
        v = c.evaluate(pd.DataFrame([member("none")]), None, S)
        assert v.status == NOT_SHOWN and "{" not in v.rule and v.rule and v.evidence and v.answer
        assert set(v.settings_used) == c.placeholders()


class Recorder:
    """ReportSettings that remembers which fields the logic read."""

    def __init__(self, settings):
        self._s, self.read = settings, set()

    def __getattr__(self, name):
        self.read.add(name)
        return getattr(self._s, name)


@pytest.mark.parametrize("claim", REGISTRY, ids=lambda c: c.key)
def test_the_logic_reads_only_settings_its_rule_prints(claim):
    rows = (_claim1b(0.5) + _claim2(1.0, variant="standardize_detached") + seeds("standardize")
            + seeds("none", b_sens_scaled=0.1, grad_b_rel_max=0.3) + seeds("population_detached_k1")
            + seeds("bn", grad_b_rel_max=1e-8, loss_gap_nobias_early=1e-6) + seeds("bn_nobias"))
    rec = Recorder(S)
    claim.judge(pd.DataFrame(rows), None, rec)
    assert rec.read  # every claim has thresholds
    assert rec.read <= claim.placeholders(), rec.read - claim.placeholders()


def test_a_changed_threshold_changes_both_the_rule_text_and_the_verdict():
    strict = S.model_copy(update={"alpha_unbounded": 1.2})
    assert judge("claim2", _claim2(1.0)).status == HOLDS
    v = judge("claim2", _claim2(1.0), strict)
    assert v.status == FAILS and "1.2" in v.rule and v.settings_used["alpha_unbounded"] == 1.2


def test_answer_text_follows_the_statuses():
    passed, not_shown = _claim5(), _claim5(control=0.0)
    assert "beta takes its role" in answer_text([passed]) and "1 check passed" in answer_text([passed])
    assert "beta takes its role" not in answer_text([not_shown])
    text = answer_text([_claim4(5, 0), _claim4(5, 5)])
    assert "1 holds" in text and "1 does not hold" in text
    for c in REGISTRY:
        assert set(c.answers) <= set(STATUSES)


def test_every_endpoint_of_a_verdict_is_told_apart_by_its_fields():
    # three detached variants share the twin `center`: the twin's drift is one endpoint per comparison
    rows = (_claim2(1.0) + _claim2(1.0, variant="population_center_detached")
            + _claim2(1.0, variant="running_center_detached") + seeds("center", {"b_drift/l0": [0.0] * 5})
            + _claim1b(0.5, lr=0.3) + _claim1b(0.5, variant="standardize_detached", twin="standardize", lr=0.3)
            + seeds("none", b_sens_scaled=0.1, grad_b_rel_max=0.3) + seeds("population_detached_k1")
            + seeds("bn", grad_b_rel_max=1e-8, loss_gap_nobias_early=1e-6) + seeds("bn_nobias")
            + seeds("frozen", grad_b_rel_max=0.3))
    for c in REGISTRY:
        v = c.evaluate(pd.DataFrame(rows), None, S)
        keys = [e.key for e in v.endpoints]
        assert len(keys) == len(set(keys)), c.key
        assert all(e.primary == (e.measure == c.primary) for e in v.endpoints)
        if c.key in ("claim1b", "claim2", "claim4", "claim5"):
            assert any(e.primary for e in v.endpoints), c.key
    drift = [e for e in judge("claim2", rows).endpoints if e.measure.startswith("twin") and e.twin == "center"]
    assert {(e.variant, e.twin, e.layer) for e in drift} == {
        (v, "center", 0) for v in ("center_detached", "population_center_detached", "running_center_detached")}


def test_layers_come_from_the_depth_or_the_built_column_names_never_parsed_ones():
    from pipeline.claims.base import _layers

    m = pd.DataFrame([member("center_detached", **{"alpha/l1": 0.5})])
    assert _layers(m, "alpha") == [0, 1] and _layers(m, "gsum_persist") == [0] and _layers(m, "nope") == []
    assert _layers(m.assign(depth=3, **{"alpha/l2": 0.1}), "alpha") == [0, 1, 2]
    assert _layers(m.assign(depth=1), "alpha") == [0]  # the cell's depth bounds the layers read
