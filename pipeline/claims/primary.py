"""The primary tests: each measurement claim is decided by ONE paired comparison (claim 3 by two, its
two sides), named with its smallest effect that matters in `report.primary` before the data.

    from pipeline.claims.primary import Comparisons, TestResult, run_tests
    results = run_tests({"claim4": comparisons, ...}, members, settings)   # Holm across all of them

A comparison is one row: `diff` (the claim's subject minus its matched control, paired within cell,
lr and seed; + in the claim's direction), `dataset`, `seed`. The test (pipeline.stats.inference):
every comparison that shares a (data set, seed) flips sign together -- a seed's initial weights and
data order are shared by every cell and lr of a data set, so its comparisons are not independent --
exact sign-flip p-value of the total; a cluster-bootstrap interval for the mean difference; Holm
across every primary test of the report; negligible when the interval lies inside +/- the declared
smallest effect. The data sets a test pools are declared per test (pipeline.spec.primaries:
"nonzero_mean" for the claims whose mechanism needs E[u] != 0); the others are shown as controls,
each data set with its own effect and interval (which data sets carry the effect).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pandas as pd

from pipeline.outcomes import ci
from pipeline.spec.endpoints import Endpoint
from pipeline.spec.primaries import primary_test
from pipeline.stats.inference import (
    FAILS,
    HOLDS,
    NEGLIGIBLE,
    NOT_SHOWN,
    Rule,
    cluster_bootstrap_ci,
    decide,
    holm,
    signflip_p,
)

NAN = float("nan")
MIXED = "mixed"  # a claim with two sides (claim 3) whose tests point opposite ways


@dataclass(frozen=True)
class DatasetEffect:
    """The same comparison on one data set: pooled in the test, or a control shown beside it; its
    effect is the mean over its seeds of each seed's mean comparison, its interval Student's t over
    those seeds."""

    dataset: str
    role: str  # "pooled" | "control"
    effect: float
    lo: float
    hi: float
    p: float  # sign flip over this data set's seeds, unadjusted (descriptive)
    n: int  # comparisons
    seeds: int


@dataclass(frozen=True)
class TestResult:
    key: str  # report.primary key
    claim: str
    side: str
    endpoint: str  # the endpoint id named in params
    text: str  # what one comparison is
    unit: str
    plus: str  # what + means
    smallest_effect: float
    effect: float
    lo: float
    hi: float
    p: float  # exact sign-flip p, clusters (data set, seed)
    p_holm: float  # Holm-adjusted across every primary test of the report
    n: int  # comparisons pooled
    clusters: int  # (data set, seed) clusters pooled
    min_p: float  # the smallest p this many clusters can give (2 / 2^clusters): below alpha or not
    status: str
    by_dataset: tuple[DatasetEffect, ...]
    by_variant: tuple[DatasetEffect, ...] = ()  # the pooled comparisons split by the claim's subject variant
    #                                            (its `dataset` field holds the variant's name)

    @property
    def measure(self) -> str:
        return primary_measure(self.key, self.endpoint)

    def interval_text(self) -> str:
        if not np.isfinite(self.effect):
            return "no comparison"
        ci = f" [{self.lo:+.3g}, {self.hi:+.3g}]" if np.isfinite(self.lo) else ""
        return f"{self.effect:+.3g}{ci} {self.unit}"

    def carried_by(self) -> list[DatasetEffect]:
        """The pooled data sets whose own interval excludes 0 in the test's direction of effect."""
        sign = np.sign(self.effect) if np.isfinite(self.effect) else 0
        return [
            d
            for d in self.by_dataset
            if d.role == "pooled" and np.isfinite(d.lo) and ((sign > 0 and d.lo > 0) or (sign < 0 and d.hi < 0))
        ]

    def controls(self) -> list[DatasetEffect]:
        return [d for d in self.by_dataset if d.role == "control"]

    def endpoint_row(self) -> Endpoint:
        """The test as the claim's primary endpoint (tables/<claim>.csv, the study comparison)."""
        return Endpoint(
            measure=self.measure,
            effect=self.effect,
            lo=self.lo,
            hi=self.hi,
            n=self.n,
            unit=self.unit,
            over=f"{self.clusters} (data set, seed) clusters",
            note=f"p {self.p:.3g}, Holm {self.p_holm:.3g}: {self.status}",
            decides=True,
            primary=True,
        )


def primary_measure(key: str, endpoint: str) -> str:
    return f"primary {key}: {endpoint}"


def _cluster(frame: pd.DataFrame) -> np.ndarray:
    return (frame["dataset"].astype(str) + "/" + frame["seed"].astype(str)).to_numpy()


def _one(
    frame: pd.DataFrame, level: float, n_boot: int, t_interval: bool = False
) -> tuple[float, float, float, float, int, int]:
    """(effect, lo, hi, p, comparisons, clusters) of the finite diffs of `frame`. t_interval: the
    effect is the mean of the cluster means and its interval Student's t over them (one data set: its
    5-10 seeds are too few clusters for a percentile bootstrap, which comes out too narrow)."""
    f = frame[np.isfinite(frame["diff"].astype(float))]
    if f.empty:
        return NAN, NAN, NAN, 1.0, 0, 0
    cl = _cluster(f)
    clusters = len(set(cl))
    if clusters < 2:
        return float(f["diff"].mean()), NAN, NAN, 1.0, len(f), clusters
    sums = pd.Series(f["diff"].to_numpy(float)).groupby(cl).sum().to_numpy()
    if t_interval:
        effect, lo, hi = ci(pd.Series(f["diff"].to_numpy(float)).groupby(cl).mean().to_numpy(), level=level)
    else:
        effect, lo, hi = cluster_bootstrap_ci(f["diff"].to_numpy(float), cl, level, n_boot=n_boot)
    return effect, lo, hi, signflip_p(sums), len(f), clusters


def pooled_datasets(members: pd.DataFrame, settings, which: str) -> list[str]:
    """The data sets a test pools: "all", or "nonzero_mean" (||E[u]|| > report.nonzero_mean)."""
    every = list(dict.fromkeys(members["dataset"]))
    if which == "all":
        return every
    big = members.groupby("dataset", sort=False)["input_mean_norm"].max().fillna(0)
    return [d for d in every if big.get(d, 0) > settings.nonzero_mean]


def run_tests(comparisons: dict[str, pd.DataFrame], members: pd.DataFrame, settings) -> list[TestResult]:
    """Every primary test of `comparisons` (report.primary key -> rows diff, dataset, seed), p-values
    Holm-adjusted together, each decided by pipeline.stats.inference.decide."""
    raw = []
    for key, frame in comparisons.items():
        spec, chosen = primary_test(key), settings.primary[key]
        choice = spec.endpoints[chosen.endpoint]
        pooled = set(pooled_datasets(members, settings, spec.datasets))
        frame = frame if len(frame) else pd.DataFrame(columns=["diff", "dataset", "seed"])
        effect, lo, hi, p, n, clusters = _one(
            frame[frame["dataset"].isin(pooled)], settings.ci_level, settings.bootstrap
        )
        per = []
        for ds, g in frame.groupby("dataset", sort=False):
            e, dlo, dhi, dp, dn, ds_seeds = _one(g, settings.ci_level, settings.bootstrap, t_interval=True)
            per.append(DatasetEffect(str(ds), "pooled" if ds in pooled else "control", e, dlo, dhi, dp, dn, ds_seeds))
        inside = frame[frame["dataset"].isin(pooled)]
        by_variant = (
            tuple(
                DatasetEffect(str(v), "pooled", *_one(g, settings.ci_level, settings.bootstrap, t_interval=True))
                for v, g in inside.groupby("variant", sort=False)
            )
            if "variant" in inside
            else ()
        )
        raw.append(
            dict(
                key=key,
                claim=spec.claim,
                side=spec.side,
                endpoint=chosen.endpoint,
                text=choice.text,
                by_variant=by_variant,
                unit=choice.unit,
                plus=choice.plus,
                smallest_effect=chosen.smallest_effect,
                effect=effect,
                lo=lo,
                hi=hi,
                p=p,
                n=n,
                clusters=clusters,
                min_p=min(1.0, 2.0 / 2**clusters) if clusters else 1.0,
                by_dataset=tuple(per),
            )
        )
    # the family: the tests that have comparisons (a test this grid cannot run costs the others nothing)
    run = [r for r in raw if r["n"]]
    adjusted = dict(zip([r["key"] for r in run], holm([r["p"] for r in run]))) if run else {}
    out = []
    for r in raw:
        p_holm = float(adjusted.get(r["key"], NAN))
        rule = Rule(
            smallest_effect=r["smallest_effect"], unit=r["unit"], alpha=settings.family_alpha, level=settings.ci_level
        )
        status = decide(r["lo"], r["hi"], p_holm, rule) if r["n"] else NOT_SHOWN
        if status == NEGLIGIBLE and not could_decide(r, settings.family_alpha):
            status = NOT_SHOWN
        out.append(TestResult(**r, p_holm=p_holm, status=status))
    return out


def could_decide(r: dict, alpha: float) -> bool:
    """'Negligible' needs an interval that could have excluded it: enough clusters for the exact test to
    reach alpha at all, and not every comparison equal (pairs that all agree -- nothing diverged, or
    everything did -- give a [0, 0] interval that says nothing about the effect's size)."""
    return r["min_p"] <= alpha and np.isfinite(r["lo"]) and r["hi"] > r["lo"]


def combine(results: list[TestResult]) -> str:
    """A claim's status from its tests: one test -> its status; two sides (claim 3) -> the one
    decided side's status, "mixed" when they point opposite ways, "negligible" if both are."""
    st = [r.status for r in results]
    if len(st) == 1:
        return st[0]
    decided = {s for s in st if s in (HOLDS, FAILS)}
    if decided == {HOLDS, FAILS}:
        return MIXED
    if decided:
        return decided.pop()
    return NEGLIGIBLE if all(s == NEGLIGIBLE for s in st) else NOT_SHOWN
