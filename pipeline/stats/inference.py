"""Inference for one primary endpoint per claim: paired tests clustered by seed, exact intervals for
rates, Holm across claims, and the decision rule with a declared smallest effect that matters.

    from pipeline.stats.inference import cluster_signflip, decide, holm, rule_text, Rule

Why not count intervals (pipeline.claims.base.beyond_chance): comparisons share seeds, twins and
layers, so their intervals miss 0 together and a binomial tail over "independent" misses is
anti-conservative (see tests/test_calibration.py). Here each claim gets ONE test whose resampling
unit is the cluster that carries the dependence -- (data set, seed): a seed's initial weights and
data order are shared by every cell of a data set, so all its comparisons flip together.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from scipy import stats

HOLDS, FAILS, NEGLIGIBLE, NOT_SHOWN = "holds", "does not hold", "negligible", "not shown"
EXACT_MAX_CLUSTERS = 16  # 2**16 sign patterns enumerated exactly; more: Monte-Carlo flips


# -- exact intervals for rates -----------------------------------------------------------------
def clopper_pearson(k: int, n: int, level: float = 0.95) -> tuple[float, float]:
    """Exact (Clopper-Pearson) interval for a binomial rate k/n: 5/5 at 95% -> (0.478, 1)."""
    a = (1 - level) / 2
    lo = 0.0 if k == 0 else float(stats.beta.ppf(a, k, n - k + 1))
    hi = 1.0 if k == n else float(stats.beta.ppf(1 - a, k + 1, n - k))
    return lo, hi


def wilson(k: int, n: int, level: float = 0.95) -> tuple[float, float]:
    """Wilson score interval for k/n (the building block of Newcombe's hybrid score intervals)."""
    z = float(stats.norm.ppf(0.5 + level / 2))
    p = k / n
    mid = (p + z * z / (2 * n)) / (1 + z * z / n)
    half = z * np.sqrt(p * (1 - p) / n + z * z / (4 * n * n)) / (1 + z * z / n)
    return float(mid - half), float(mid + half)


def newcombe_independent(k1: int, n1: int, k2: int, n2: int, level: float = 0.95) -> tuple[float, float, float]:
    """p1 - p2 for two INDEPENDENT samples with Newcombe's hybrid score interval (1998, method 10):
    Wilson limits of each rate combined by square-and-add. Returns (difference, lo, hi)."""
    p1, p2 = k1 / n1, k2 / n2
    l1, u1 = wilson(k1, n1, level)
    l2, u2 = wilson(k2, n2, level)
    d = p1 - p2
    return d, d - float(np.hypot(p1 - l1, u2 - p2)), d + float(np.hypot(u1 - p1, p2 - l2))


def newcombe_paired(a: int, b: int, c: int, d: int, level: float = 0.95) -> tuple[float, float, float]:
    """p1 - p2 for PAIRED 0/1 outcomes (a: both 1, b: first only, c: second only, d: neither) with
    Newcombe's hybrid score interval for paired data (1998, method 10), with his continuity-corrected
    correlation phi. This is the interval to print for an excess rate over seeds (never a percentile
    bootstrap, which is "[1, 1]" at 5/5). Returns (difference, lo, hi)."""
    n = a + b + c + d
    p1, p2 = (a + b) / n, (a + c) / n
    l1, u1 = wilson(a + b, n, level)
    l2, u2 = wilson(a + c, n, level)
    den = (a + b) * (c + d) * (a + c) * (b + d)
    num: float = a * d - b * c
    # Newcombe's phi*: ad - bc shrunk by n/2 towards 0 when positive (a continuity correction)
    num = max(num - n / 2, 0.0) if num > 0 else num
    phi = num / np.sqrt(den) if den > 0 else 0.0
    diff = p1 - p2
    dl = np.sqrt(max((p1 - l1) ** 2 - 2 * phi * (p1 - l1) * (u2 - p2) + (u2 - p2) ** 2, 0.0))
    du = np.sqrt(max((u1 - p1) ** 2 - 2 * phi * (u1 - p1) * (p2 - l2) + (p2 - l2) ** 2, 0.0))
    return diff, float(max(diff - dl, -1.0)), float(min(diff + du, 1.0))


# -- tests ------------------------------------------------------------------------------------------
def stratified_sign_test(up, down) -> float:
    """Exact two-sided sign test on discordant pairs pooled over strata (cells): up[i], down[i] are
    the pairs of cell i where only the detached / only the twin arm had the outcome. Under no effect
    each discordant pair points either way with probability 1/2 (McNemar), so the pooled count is
    exactly Binomial(sum up + sum down, 1/2). Chosen over Mantel-Haenszel because with 5 pairs per
    cell the strata are tiny and concordant pairs carry no information: pooling the discordant pairs
    is the exact conditional test. It assumes pairs independent ACROSS cells; where cells share seeds
    use cluster_signflip on the per-pair signs instead (the same statistic, flipped by seed)."""
    u, dn = int(np.sum(up)), int(np.sum(down))
    return 1.0 if u + dn == 0 else float(stats.binomtest(u, u + dn, 0.5).pvalue)


def _cluster_sums(diff, cluster) -> np.ndarray:
    d = np.asarray(diff, float)
    _, idx = np.unique(np.asarray(cluster), return_inverse=True)
    ok = np.isfinite(d)
    return np.bincount(idx[ok], weights=d[ok], minlength=idx.max() + 1)


def signflip_p(sums: np.ndarray, n_flip: int = 20000, seed: int = 0) -> float:
    """Two-sided p of the total of cluster sums under random sign flips of whole clusters (exact
    enumeration up to EXACT_MAX_CLUSTERS informative clusters; clusters summing to 0 cannot move the
    total and are left out). Exact under the null that the two arms are exchangeable within a cluster."""
    s = np.asarray(sums, float)
    s = s[s != 0]
    if len(s) == 0:
        return 1.0
    obs = abs(s.sum())
    if len(s) <= EXACT_MAX_CLUSTERS:
        signs = 1 - 2 * ((np.arange(2 ** len(s))[:, None] >> np.arange(len(s))) & 1)
    else:
        signs = np.random.default_rng(seed).choice([-1.0, 1.0], size=(n_flip, len(s)))
        signs[0] = 1  # the observed pattern counts once (a valid Monte-Carlo p, never 0)
    tot = np.abs(signs @ s)
    return float(np.mean(tot >= obs * (1 - 1e-12)))


def cluster_bootstrap_ci(
    diff, cluster, level: float = 0.95, n_boot: int = 4000, seed: int = 0
) -> tuple[float, float, float]:
    """(mean, lo, hi): the mean paired difference over all comparisons, with a percentile interval
    that resamples CLUSTERS (data set x seed) with replacement, each bringing all its comparisons."""
    d = np.asarray(diff, float)
    ok = np.isfinite(d)
    _, idx = np.unique(np.asarray(cluster)[ok], return_inverse=True)
    sums = np.bincount(idx, weights=d[ok])
    counts = np.bincount(idx).astype(float)
    k = len(sums)
    draw = np.random.default_rng(seed).integers(0, k, size=(n_boot, k))
    means = sums[draw].sum(axis=1) / counts[draw].sum(axis=1)
    lo, hi = np.quantile(means, [0.5 - level / 2, 0.5 + level / 2])
    return float(d[ok].mean()), float(lo), float(hi)


def cluster_signflip(diff, cluster, level: float = 0.95, seed: int = 0) -> tuple[float, float, float, float]:
    """The primary test of a claim: diff = detached minus twin per comparison (one per cell and seed;
    0/1 outcomes give -1/0/+1, so this is the stratified sign test with seeds flipped together),
    cluster = (data set, seed) label. Returns (mean, lo, hi, p): cluster-bootstrap interval and the
    exact sign-flip p of the total."""
    mean, lo, hi = cluster_bootstrap_ci(diff, cluster, level, seed=seed)
    return mean, lo, hi, signflip_p(_cluster_sums(diff, cluster), seed=seed)


def holm(pvalues) -> np.ndarray:
    """Holm's step-down adjusted p-values (family-wise error across claims): the i-th smallest p is
    multiplied by (m - i + 1), then made monotone; capped at 1."""
    p = np.asarray(pvalues, float)
    order = np.argsort(p)
    m = len(p)
    adj = np.maximum.accumulate((m - np.arange(m)) * p[order])
    out = np.empty(m)
    out[order] = np.minimum(adj, 1.0)
    return out


# -- the decision rule ----------------------------------------------------------------------------
@dataclass(frozen=True)
class Rule:
    """The settings the decision applies and the rule text prints (one place for both)."""

    smallest_effect: float  # declared before the data, in the endpoint's unit
    unit: str = ""
    alpha: float = 0.05  # family-wise, across claims (Holm)
    level: float = 0.95  # interval for the effect
    resamples: int = 4000  # cluster-bootstrap resamples of that interval


def decide(lo: float, hi: float, p_adjusted: float, rule: Rule) -> str:
    """negligible: the interval lies inside (-smallest, +smallest) -- whatever p says, the effect is
    too small to matter; holds / does not hold: Holm-adjusted p <= alpha and the interval lies above /
    below 0; otherwise not shown."""
    if not (np.isfinite(lo) and np.isfinite(hi)):
        return NOT_SHOWN
    if -rule.smallest_effect < lo and hi < rule.smallest_effect:
        return NEGLIGIBLE
    if p_adjusted <= rule.alpha and lo > 0:
        return HOLDS
    if p_adjusted <= rule.alpha and hi < 0:
        return FAILS
    return NOT_SHOWN


def rule_text(rule: Rule) -> str:
    """The paragraph the report prints, generated from the same Rule that decide() applies."""
    u = f" {rule.unit}" if rule.unit else ""
    return (
        f"One primary endpoint per claim: the detached variant minus its gradient-through twin, paired within "
        f"cell and seed, averaged over the claim's cells. Its p-value is an exact sign-flip test in which all "
        f"comparisons sharing a (data set, seed) flip together (for 0/1 outcomes: a stratified sign test on "
        f"discordant pairs); its {rule.level:.0%} interval resamples (data set, seed) clusters ({rule.resamples} "
        f"resamples, RNG seed 0). p-values are "
        f"Holm-adjusted across claims (the tests this grid can run). Negligible if the interval lies within "
        f"+/-{rule.smallest_effect:g}{u} (the smallest effect declared to matter) and could have excluded it "
        f"(enough clusters for the exact test to reach {rule.alpha:g}, not every comparison equal) -- this takes "
        f"precedence over a small p; holds if the adjusted p <= {rule.alpha:g} and the interval "
        f"lies above 0; does not hold if the adjusted p <= {rule.alpha:g} and it lies below 0; otherwise not shown."
    )
