"""Time to divergence as survival data: Kaplan-Meier curves and a stratified log-rank test whose p comes
from flipping the arms within (data set, seed) clusters.

    from pipeline.stats.survival import kaplan_meier, stratified_logrank
    t, s = kaplan_meier(time, event)                      # scipy.stats.ecdf on CensoredData
    r = stratified_logrank(time, event, arm, stratum, cluster, n_flip=2000)
    r.o_minus_e, r.hazard_ratio, r.p_normal, r.p_flip

A member is one subject: `time` is the step it diverged at, or the last step of its run where it did not
(`event` False: right-censored). `arm` 1 = the detached variant, 0 = its gradient-through twin.

The log-rank statistic of one stratum is the observed minus the expected events of arm 1 (O - E, summed
over the event times with the hypergeometric variance V); a stratified test sums O - E and V over strata
(here a stratum is a (pair, data set, lr): hazards may differ freely between strata, the test compares
arms within each) and reads Z = sum(O - E) / sqrt(sum V). + = the detached arm diverges sooner or more often.

Two p-values, both two-sided:
  p_normal  Z against N(0, 1): valid when members are independent. Here they are not: every lr of a data
            set reuses the same seeds (initial weights, data order), and a seed that is fragile in one arm
            tends to be fragile at every lr, so the strata's O - E are correlated and their summed variance
            understates Z's (pipeline/stats/null_members.py's latent model has exactly that seed x arm effect).
  p_flip    the same Z recomputed with the arm labels swapped within whole (data set, seed) clusters (every
            stratum of a cluster swaps together: 2**clusters patterns, enumerated up to EXACT_MAX_CLUSTERS,
            Monte-Carlo above). Exact when the two arms are exchangeable within a cluster, whatever the
            dependence across lrs -- the primary tests' principle (pipeline/stats/inference.py). Where several
            detached variants share one twin the swap is approximate (as for claim 4's primary test).
tests/test_survival.py shows both on simulated null grids with the real grid's structure.

Peto's one-step hazard ratio exp(sum(O - E) / sum V), with the interval exp(... +/- z / sqrt(sum V)),
describes the size; it is asymptotic (independent members) and biased away from 1 for large effects.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

EXACT_MAX_CLUSTERS = 12  # 4096 swap patterns enumerated exactly; more clusters: Monte-Carlo swaps


def kaplan_meier(time, event) -> tuple[np.ndarray, np.ndarray]:
    """(times, survival) of the Kaplan-Meier estimate, a step function starting at (0, 1): scipy.stats.ecdf
    on CensoredData (right-censored at `time` where `event` is False). No event: survival 1 throughout."""
    from scipy import stats

    t, e = np.asarray(time, float), np.asarray(event, bool)
    if len(t) == 0:
        return np.array([0.0]), np.array([1.0])
    if not e.any():
        return np.array([0.0, t.max()]), np.array([1.0, 1.0])
    sf = stats.ecdf(stats.CensoredData(uncensored=t[e], right=t[~e])).sf
    return np.r_[0.0, sf.quantiles], np.r_[1.0, sf.probabilities]


def _stratum(time: np.ndarray, event: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(R, D): at risk / failing at each distinct event time (rows) per member (columns). A member censored
    at t is at risk at t."""
    times = np.unique(time[event])
    at_risk = (time[None, :] >= times[:, None]).astype(float)
    fails = ((time[None, :] == times[:, None]) & event[None, :]).astype(float)
    return at_risk, fails


def _o_minus_e_var(at_risk: np.ndarray, fails: np.ndarray, arm: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """O - E of arm 1 and its hypergeometric variance in one stratum; `arm` is (members,) or (members,
    patterns) of 0/1, so every swap pattern is one column."""
    n = at_risk.sum(1)[:, None]
    d = fails.sum(1)[:, None]
    n1, d1 = at_risk @ arm.reshape(len(arm), -1), fails @ arm.reshape(len(arm), -1)
    share = n1 / n
    var = d * share * (1 - share) * (n - d) / np.maximum(n - 1, 1)
    return (d1 - d * share).sum(0), var.sum(0)


@dataclass(frozen=True)
class LogRank:
    o_minus_e: float  # summed over strata: observed - expected events of arm 1 (+ = arm 1 fails sooner)
    var: float  # summed hypergeometric variance
    observed: int  # events in arm 1
    observed_other: int  # events in arm 0
    n: int  # members (both arms)
    strata: int  # strata with at least one event
    clusters: int  # (data set, seed) clusters swapped
    z: float
    p_normal: float  # Z against N(0, 1) (members independent)
    p_flip: float  # arms swapped within clusters
    exact: bool  # p_flip enumerated every swap pattern
    level: float = 0.95

    @property
    def hazard_ratio(self) -> float:
        """Peto's one-step estimate exp(sum(O - E) / sum V) (1 where no event)."""
        return math.exp(self.o_minus_e / self.var) if self.var > 0 else float("nan")

    def hazard_ratio_interval(self) -> tuple[float, float]:
        if not self.var > 0:
            return float("nan"), float("nan")
        from scipy import stats

        half = stats.norm.ppf(0.5 + self.level / 2) / math.sqrt(self.var)
        centre = self.o_minus_e / self.var
        return math.exp(centre - half), math.exp(centre + half)


def stratified_logrank(
    time, event, arm, stratum, cluster, n_flip: int = 2000, seed: int = 0, level: float = 0.95
) -> LogRank:
    """The stratified log-rank test of arm 1 against arm 0 (module docstring): Z and both p-values."""
    from scipy import stats

    t, e = np.asarray(time, float), np.asarray(event, bool)
    a = np.asarray(arm, float)
    strata = np.unique(np.asarray(stratum), return_inverse=True)[1]
    cl_names, cl = np.unique(np.asarray(cluster), return_inverse=True)
    k = len(cl_names)
    exact = k <= EXACT_MAX_CLUSTERS
    if exact:
        swap = ((np.arange(2**k)[:, None] >> np.arange(k)) & 1).astype(float)  # (patterns, clusters)
    else:
        swap = np.random.default_rng(seed).integers(0, 2, size=(n_flip, k)).astype(float)
        swap[0] = 0  # the observed labelling counts once (a valid Monte-Carlo p, never 0)
    oe, var = np.zeros(len(swap)), np.zeros(len(swap))
    used = 0
    for s in range(strata.max() + 1 if len(strata) else 0):
        idx = np.flatnonzero(strata == s)
        if not e[idx].any():
            continue
        used += 1
        at_risk, fails = _stratum(t[idx], e[idx])
        labels = np.abs(a[idx][:, None] - swap[:, cl[idx]].T)  # (members, patterns)
        o, v = _o_minus_e_var(at_risk, fails, labels)
        oe, var = oe + o, var + v
    z_all = np.divide(oe, np.sqrt(var), out=np.zeros_like(oe), where=var > 0)
    pattern0 = 0  # both the enumeration and the Monte-Carlo draw put the observed labelling first
    z = float(z_all[pattern0])
    p_flip = float(np.mean(np.abs(z_all) >= abs(z) * (1 - 1e-12))) if var[pattern0] > 0 else 1.0
    p_normal = float(2 * stats.norm.sf(abs(z))) if var[pattern0] > 0 else 1.0
    return LogRank(
        o_minus_e=float(oe[pattern0]),
        var=float(var[pattern0]),
        observed=int((e & (a > 0)).sum()),
        observed_other=int((e & (a == 0)).sum()),
        n=len(t),
        strata=used,
        clusters=k,
        z=z,
        p_normal=p_normal,
        p_flip=p_flip,
        exact=exact,
        level=level,
    )
