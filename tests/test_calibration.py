"""Calibration of the decision rules on simulated grids with the real grid's dependence (seeds shared
by every cell of a data set, correlated endpoints), and the statistics' known values.

Criterion for "calibrated" (a): with G grids and k false verdicts, the exact (Clopper-Pearson) 99%
one-sided LOWER bound of the false-verdict rate must not exceed 0.05 -- a rule whose true rate is 8%
fails it with 400 grids about 9 times in 10, one at 10% almost always. Criterion for "miscalibrated"
(b): the same lower bound lies ABOVE 0.05 -- so the simulator provably detects the old rule's excess,
and the same check would catch the new rule if it had one.
"""
import numpy as np
import pytest
from scipy import stats

from pipeline.stats import inference as S
from pipeline.stats.null_grid import Shape, draw, new_rule, old_rule, primary, rates

GRIDS = 400
RULE = S.Rule(smallest_effect=0.05)
C1B = Shape()                                                              # 48 comparisons, claim 1b's family
C2 = Shape(variants=5, datasets=3, lrs=5, layers=3, endpoints=1)           # 225, claim 2-like
C4 = Shape(variants=3, datasets=3, lrs=5, layers=1, endpoints=1)           # claim 4's deciding cells


def lower99(k: int, n: int) -> float:
    return 0.0 if k == 0 else float(stats.beta.ppf(0.01, k, n - k + 1))


# -- (a) the new rule on correlated null grids ------------------------------------------------------
@pytest.mark.parametrize("kind,shape", [("continuous", C1B), ("binary", C1B), ("continuous", C2), ("binary", C2)])
def test_new_rule_calibrated_on_null(kind, shape):
    r = rates(shape, kind, GRIDS, np.random.default_rng(17), RULE)
    assert lower99(r["new_verdict"], GRIDS) <= 0.05, r


# -- (b) the old rule (binomial count of intervals) on the same null -----------------------------
@pytest.mark.parametrize("kind,shape", [("continuous", C1B), ("continuous", C2), ("binary", C2)])
def test_old_rule_miscalibrated_on_null(kind, shape):
    r = rates(shape, kind, GRIDS, np.random.default_rng(17), RULE)
    assert lower99(r["old_verdict"], GRIDS) > 0.05, r


def test_old_rule_matches_the_report_code():
    """null_grid's re-implementation of the old count agrees with pipeline.claims.base (read-only)."""
    from pipeline.claims.base import Endpoint, _read_signs
    from pipeline.stats.null_grid import old_rule_intervals
    rng = np.random.default_rng(3)
    for _ in range(30):
        diff, _ = draw(C1B, rng, "continuous", 0.3, effect=float(rng.choice([0.0, 0.5, -0.5])))
        lo, hi = old_rule_intervals(diff, "continuous")
        status, _, _ = _read_signs([Endpoint(measure="e", effect=0.0, lo=a, hi=b, n=5) for a, b in zip(lo, hi)], 0.95)
        assert status.split(" at ")[0] == old_rule(diff, "continuous").split(" at ")[0]


# -- (c) power: claim 4 under Adam, and a planted effect of the declared size ----------------------
def _claim4_adam() -> tuple[np.ndarray, np.ndarray]:
    """45 deciding cells x 5 seeds, all pairs equal except 6 cells with 10 discordant pairs, all with
    the detached arm blown: 4 cells with 2, 2 with 1, over the three data sets."""
    diff = np.zeros((45, 5))
    cells = {0: [0, 1], 1: [2, 3], 15: [0, 4], 16: [1, 2], 30: [3], 31: [4]}  # row // 15 = data set
    for row, seeds in cells.items():
        diff[row, seeds] = 1.0
    cluster = (np.arange(45)[:, None] // 15) * 5 + np.arange(5)[None, :]
    return diff, cluster


def test_claim4_under_adam_new_rule_decides_old_does_not():
    diff, cluster = _claim4_adam()
    up, down = (diff > 0).sum(1), (diff < 0).sum(1)
    assert (up > 0).sum() == 6 and up.sum() == 10
    assert S.stratified_sign_test(up, down) == pytest.approx(2 * 0.5 ** 10)
    assert old_rule(diff, "binary") == S.NOT_SHOWN   # no cell's bootstrap interval can exclude 0
    assert new_rule(diff, cluster, S.Rule(smallest_effect=0.01)) == S.HOLDS
    # the cluster flip cannot be fooled by one seed: the same 10 pairs all in one data set's seed 0
    one = np.zeros((45, 5))
    one[:10, 0] = 1.0
    assert new_rule(one, cluster, S.Rule(smallest_effect=0.01)) == S.NOT_SHOWN


def test_power_at_declared_effect_new_above_old():
    """Claim 4's deciding shape, 0/1 blow-ups, a planted excess rate of 0.2 (the declared smallest
    effect that matters): the new rule holds more often than the old."""
    r = rates(C4, "binary", 200, np.random.default_rng(5), S.Rule(smallest_effect=0.04), effect=0.2)
    assert r["new_holds"] > r["old_holds"] + 20, r


# -- (d) known values ----------------------------------------------------------------------------
def test_clopper_pearson_five_of_five():
    lo, hi = S.clopper_pearson(5, 5)
    assert lo == pytest.approx(0.4782, abs=5e-4) and hi == 1.0
    assert S.clopper_pearson(0, 5)[0] == 0.0


def test_newcombe_published_examples():
    # Newcombe (1998) Stat Med 17:873, method 10: 56/70 - 48/80 -> 0.0524 to 0.3339
    d, lo, hi = S.newcombe_independent(56, 70, 48, 80)
    assert (d, lo, hi) == pytest.approx((0.2, 0.0524, 0.3339), abs=5e-4)
    # Newcombe (1998) Stat Med 17:2635, paired, method 10: a, b, c, d = 36, 12, 2, 0 -> 0.0569 to 0.3404
    d, lo, hi = S.newcombe_paired(36, 12, 2, 0)
    assert (d, lo, hi) == pytest.approx((0.2, 0.0569, 0.3404), abs=5e-4)


def test_holm_textbook():
    # p = (0.01, 0.04, 0.03, 0.005): sorted 0.005 x 4, 0.01 x 3, 0.03 x 2, 0.04 x 1, made monotone
    assert S.holm([0.01, 0.04, 0.03, 0.005]) == pytest.approx([0.03, 0.06, 0.06, 0.02])
    assert S.holm([0.5, 0.9]) == pytest.approx([1.0, 1.0])  # 0.5 x 2 = 1 carries to 0.9
    assert S.holm([0.001, 0.9]) == pytest.approx([0.002, 0.9])


def test_signflip_exact_and_decision_rule():
    assert S.signflip_p(np.ones(5)) == pytest.approx(2 / 32)     # 5 clusters: two-sided p never below 1/16
    assert S.signflip_p(np.ones(10)) == pytest.approx(2 / 1024)
    r = S.Rule(smallest_effect=0.1, unit="nats")
    assert S.decide(0.2, 0.5, 0.01, r) == S.HOLDS
    assert S.decide(-0.5, -0.2, 0.01, r) == S.FAILS
    assert S.decide(-0.05, 0.08, 0.01, r) == S.NEGLIGIBLE
    assert S.decide(0.2, 0.5, 0.2, r) == S.NOT_SHOWN
    assert S.decide(-0.2, 0.5, 0.01, r) == S.NOT_SHOWN
    assert "0.1 nats" in S.rule_text(r) and "0.05" in S.rule_text(r)


def test_criterion_catches_a_test_that_ignores_shared_seeds():
    """The same sign-flip with each comparison as its own unit (seeds not flipped together) is what the
    calibration check must reject on this null: it does (~2 in 3 null grids give a verdict)."""
    rng, k = np.random.default_rng(17), 0
    for _ in range(100):
        d, _ = primary(*draw(C2, rng, "continuous", 0.3), C2)
        _, lo, hi, p = S.cluster_signflip(d.ravel(), np.arange(d.size))
        k += S.decide(lo, hi, p, RULE) in (S.HOLDS, S.FAILS)
    assert lower99(k, 100) > 0.05, k


def test_simulator_has_the_dependence_it_claims():
    """The null is only hostile if comparisons sharing a seed and a cell's two endpoints do correlate."""
    rng = np.random.default_rng(0)
    rows = np.array([draw(C1B, rng, "continuous", 0.3)[0][[0, 1, 2], 0] for _ in range(1500)])
    across, endpoints = np.corrcoef(rows[:, 0], rows[:, 2])[0, 1], np.corrcoef(rows[:, 0], rows[:, 1])[0, 1]
    assert 0.15 < across < 0.35 and 0.45 < endpoints < 0.75, (across, endpoints)
    independent = np.array([draw(C1B, rng, "continuous", 0.0)[0][[0, 2], 0] for _ in range(1500)])
    assert abs(np.corrcoef(independent.T)[0, 1]) < 0.1
