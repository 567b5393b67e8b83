"""Claim 4's time to divergence as survival data (descriptive: claim 4 is decided by its primary test,
report.primary.claim4, declared before the data; this reads the same divergences with their timing).

    from pipeline.claims.divergence_time import survival_data, divergence_time_tests
    data = survival_data(members, "center_detached", "center")   # one row per member of the pair's cells
    tests = divergence_time_tests(members, settings)             # list[TimeTest]

A member's time is the step it diverged at (status "diverged"; a diverged member without a step -- an
infinite final full-set loss -- fails at the last step), or its run's last step (censored). Only members
whose (data set, lr, seed) is in both variants' cells are read, so the two arms have the same seeds.
Landmark: a population variant (refresh_every K) is a fixed affine map until its statistics are first
recomputed, so members of BOTH arms that diverged before step K leave its comparison (claim 4's landmark,
61c2b93, applied to survival: conditioning on surviving to K, the same rule for both arms).

The tests (pipeline.stats.survival.stratified_logrank): strata = (detached variant, data set, lr), clusters
= (data set, seed). Pooled: claim 4's deciding pairs (report.blowup_deciders vs their first twin) over the
data sets whose input mean norm is above report.nonzero_mean, as the primary test pools them; beside it each
data set alone (pooled or control) and each deciding variant alone, and every other pair of report.twins
per data set.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pandas as pd

from pipeline.stats.survival import LogRank, stratified_logrank

COLUMNS = ["variant", "twin", "dataset", "lr", "seed", "arm", "time", "event", "steps"]


def member_times(m: pd.DataFrame) -> pd.DataFrame:
    """time (the divergence step, or the last step: censored) and event (diverged) per member row (columns
    status, diverged_step, steps), as a frame on the same index."""
    event = (m["status"] == "diverged").to_numpy()
    step = m["diverged_step"].astype(float).to_numpy()
    steps = m["steps"].astype(float).to_numpy()
    return pd.DataFrame({"time": np.where(event & np.isfinite(step), step, steps), "event": event}, index=m.index)


def survival_data(m: pd.DataFrame, det: str, twin: str) -> pd.DataFrame:
    """One row per member of `det` and `twin` whose (data set, lr, seed) both variants have: arm 1 =
    det, 0 = twin; after the landmark at det's first refresh K (members of either arm that diverged
    before step K left out)."""
    keys = ["dataset", "lr", "seed"]
    a, b = m[m["variant"] == det], m[m["variant"] == twin]
    both = a[keys].merge(b[keys], on=keys)
    if both.empty:
        return pd.DataFrame(columns=COLUMNS)
    k = a["refresh_every"].astype(float).dropna()
    landmark = float(k.iloc[0]) if len(k) else 0.0
    rows = []
    for arm, part in ((1, a), (0, b)):
        part = part[keys + ["status", "diverged_step", "steps"]].merge(both, on=keys)
        part = pd.concat([part, member_times(part)], axis=1)
        rows.append(
            pd.DataFrame(
                {
                    "variant": det,
                    "twin": twin,
                    "dataset": part["dataset"].to_numpy(),
                    "lr": part["lr"].astype(float).to_numpy(),
                    "seed": part["seed"].to_numpy(),
                    "arm": arm,
                    "time": part["time"].to_numpy(),
                    "event": part["event"].to_numpy(),
                    "steps": part["steps"].astype(float).to_numpy(),
                }
            )
        )
    d = pd.concat(rows, ignore_index=True)
    return d[~(d["event"] & (d["time"] < landmark))].reset_index(drop=True)


@dataclass(frozen=True)
class TimeTest:
    """One stratified log-rank reading: which detached variants against which twin, on which data sets."""

    variants: tuple[str, ...]
    twin: str
    datasets: tuple[str, ...]
    role: str  # "pooled" (claim 4's deciding pairs, data sets with E[u] != 0) | "dataset" |
    #                        "control" (a data set with E[u] = 0) | "variant" (one deciding pair) | "pair"
    result: LogRank

    @property
    def label(self) -> str:
        who = " + ".join(self.variants) + f" vs {self.twin}"
        return f"{who}, {' + '.join(self.datasets)}"


def logrank_of(data: pd.DataFrame, settings) -> LogRank:
    """The stratified log-rank of survival_data rows (several pairs may be concatenated)."""
    stratum = data["variant"].astype(str) + "|" + data["dataset"].astype(str) + "|" + data["lr"].map("{:g}".format)
    cluster = data["dataset"].astype(str) + "|" + data["seed"].astype(str)
    return stratified_logrank(
        data["time"].to_numpy(float),
        data["event"].to_numpy(bool),
        data["arm"].to_numpy(float),
        stratum.to_numpy(),
        cluster.to_numpy(),
        n_flip=settings.bootstrap,
        level=settings.ci_level,
    )


def divergence_time_tests(m: pd.DataFrame, settings) -> list[TimeTest]:
    """The pooled deciding-pair test, each data set and deciding variant alone, and every other pair of
    report.twins (its first twin) per data set; readings without any member are left out."""
    from pipeline.claims.base import _nonzero_mean

    present = set(m["variant"])
    pooled_ds = _nonzero_mean(m, settings)
    pairs = {det: twins[0] for det, twins in settings.twins.items() if det in present and twins and twins[0] in present}
    deciders = [d for d in settings.blowup_deciders if d in pairs]
    data = {det: survival_data(m, det, twin) for det, twin in pairs.items()}
    out: list[TimeTest] = []

    def add(dets, twin, datasets, role):
        parts = [data[d][data[d]["dataset"].isin(datasets)] for d in dets]
        rows = pd.concat(parts, ignore_index=True) if parts else pd.DataFrame(columns=COLUMNS)
        if len(rows):
            out.append(TimeTest(tuple(dets), twin, tuple(datasets), role, logrank_of(rows, settings)))

    datasets = list(dict.fromkeys(m["dataset"]))
    by_twin: dict[str, list[str]] = {}
    for d in deciders:
        by_twin.setdefault(pairs[d], []).append(d)
    for twin, dets in by_twin.items():
        add(dets, twin, pooled_ds, "pooled")
        for ds in datasets:
            add(dets, twin, [ds], "dataset" if ds in pooled_ds else "control")
        if len(dets) > 1:
            for d in dets:
                add([d], twin, pooled_ds, "variant")
    for det, twin in pairs.items():
        if det not in deciders:
            for ds in datasets:
                add([det], twin, [ds], "pair")
    return out


def km_table(m: pd.DataFrame, settings) -> pd.DataFrame:
    """Every survival_data row of every report.twins pair (first twin), with the KM curves' inputs:
    tables/divergence_times.csv and the Kaplan-Meier figure read this."""
    present = set(m["variant"])
    parts = [
        survival_data(m, det, twins[0])
        for det, twins in settings.twins.items()
        if det in present and twins and twins[0] in present
    ]
    parts = [p for p in parts if len(p)]
    return pd.concat(parts, ignore_index=True) if parts else pd.DataFrame(columns=COLUMNS)


# -- claim 4's descriptive endpoints ---------------------------------------------------------------------
TIME = "time to divergence: stratified log-rank, detached vs twin (Peto hazard ratio)"


def time_endpoints(m: pd.DataFrame, settings) -> list:
    """One Endpoint per TimeTest: Peto's hazard ratio with its asymptotic interval; the note carries O - E,
    the events per arm and both p-values (cluster swaps: the one that holds with shared seeds)."""
    from pipeline.spec.endpoints import Endpoint

    out = []
    for t in divergence_time_tests(m, settings):
        r = t.result
        lo, hi = r.hazard_ratio_interval()
        note = (
            f"{t.role}; events {r.observed} detached / {r.observed_other} twin, O - E {r.o_minus_e:+.3g}; "
            f"p {r.p_flip:.2g} by swapping arms within {r.clusters} (data set, seed) clusters"
            f"{'' if r.exact else ' (Monte-Carlo)'}; p {r.p_normal:.2g} if members were independent"
        )
        one = len(t.variants) == 1
        out.append(
            Endpoint(
                measure=TIME,
                effect=r.hazard_ratio,
                lo=lo,
                hi=hi,
                n=r.n,
                unit="hazard ratio",
                variant=t.variants[0] if one else None,
                twin=t.twin,
                group=None if one else "deciding pairs",
                variants=() if one else t.variants,
                dataset=t.datasets[0] if len(t.datasets) == 1 else None,
                over=None if len(t.datasets) == 1 else "pooled: " + ", ".join(t.datasets),
                note=note,
            )
        )
    return out
