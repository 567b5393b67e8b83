"""Claim 4 (measurement): the model blows up -- each deciding detached variant against its twin,
paired by seed, and the refresh-interval (K) sweep.

    from pipeline.claims.blowup import judge_blows_up

Primary test (report.primary.claim4): per deciding pair (report.blowup_deciders vs their first twin:
centering, where the theory's rank-1 term lives), data set, lr and seed, the detached member's 0/1
outcome minus its twin's -- diverged, or (excess_blown) diverged or W/b grew past the declared
factors. Pooled over the data sets with non-zero input mean; the zero-mean ones are the control.
A population member that diverged before its statistics were first recomputed (step < K) was a fixed
affine map like `frozen` then: its pair leaves the comparison, and so does a pair whose twin diverged
before that step K (a landmark at K for both members: removing only the detached member's early
blow-ups biased the comparison towards the twin under no effect).
Descriptive, beside the test: time to divergence as survival data (pipeline/claims/divergence_time.py:
stratified log-rank, p by swapping arms within (data set, seed) clusters) and the mechanism, W's growth
along the input mean against the twin's and its rank-1 prediction (pipeline/claims/mechanism.py).
"""

from __future__ import annotations

import pandas as pd

from pipeline.claims.base import (
    SAME_AS_NOW,
    Endpoint,
    Judgement,
    _paired,
    excess_rate_interval,
    interval,
    rate_interval,
)
from pipeline.claims.divergence_time import time_endpoints
from pipeline.claims.legacy import FAILS, count_status
from pipeline.claims.mechanism import growth_endpoints
from pipeline.outcomes import ci

EXCESS, EXCESS_DIV, RATE = (
    "excess blow-up rate (detached minus twin)",
    "excess divergence rate (detached minus twin)",
    "blow-up rate",
)


def judge_blows_up(m, hist, s) -> Judgement:
    early = m["diverged"].astype(bool) & (m["diverged_step"] < m["refresh_every"])
    m = m.assign(
        blown=m["blown"].astype(float),
        diverged_=(m["status"] == "diverged").astype(float),
        before_refresh=early.astype(float),
        div_step=m["diverged_step"].astype(float),
    )
    outcome = "diverged_" if s.primary["claim4"].endpoint == "excess_divergence" else "blown"
    eps, rows, old_first, old_revised, twin_early = [], [], [], [], {}
    for det, twins in s.twins.items():
        for twin in twins:
            deciding = det in s.blowup_deciders and twin == twins[0]
            every = _paired(m, det, twin, ["blown", "diverged_", "before_refresh", "div_step", "refresh_every"])
            # a landmark at the detached member's first refresh K, for BOTH members: a pair leaves if either
            # diverged before step K (before it, the population variant is a fixed affine map: neither
            # member's blow-up then says anything about detaching). Dropping only the detached member's
            # early blow-ups (as before) keeps the twin's and biases the comparison towards "does not hold"
            # when the arms are exchangeable (pipeline/stats/null_members.py, tests/test_calibration.py).
            before_k = (every["diverged__b"] > 0) & (every["div_step_b"] < every["refresh_every_a"])
            only_twin = before_k & (every["before_refresh_a"] == 0)  # the pairs the landmark adds
            if deciding and only_twin.any():
                twin_early[det] = int(only_twin.sum())
            retired = every[every["before_refresh_a"] == 0]  # the retired count's pairs (revised, ffaf633)
            p = every[(every["before_refresh_a"] == 0) & ~before_k] if deciding else every
            if deciding:
                for (_ds, _lr), g in retired.groupby(["dataset", "lr"], sort=False):  # the retired count read
                    if len(g) >= s.min_members:  # paired-bootstrap intervals
                        old_revised.append(
                            Endpoint(
                                measure=EXCESS,
                                **interval(
                                    ci(
                                        g["blown_a"].to_numpy(),
                                        paired=g["blown_b"].to_numpy(),
                                        n_boot=s.bootstrap,
                                        level=s.ci_level,
                                    )
                                ),
                                n=len(g),
                            )
                        )
                rows.append(
                    pd.DataFrame(
                        {
                            "diff": p[f"{outcome}_a"] - p[f"{outcome}_b"],
                            "dataset": p["dataset"],
                            "seed": p["seed"],
                            "variant": det,
                            "twin": twin,
                            "lr": p["lr"],
                        }
                    )
                )
            for (ds, lr), g in p.groupby(["dataset", "lr"], sort=False):
                for col, name in (("blown", EXCESS), ("diverged_", EXCESS_DIV)):
                    eps.append(
                        Endpoint(
                            measure=name,
                            **excess_rate_interval(g[f"{col}_a"], g[f"{col}_b"], s.ci_level),
                            n=len(g),
                            unit="fraction",
                            variant=det,
                            twin=twin,
                            dataset=ds,
                            lr=lr,
                        )
                    )
            if deciding:  # as first declared: early population pairs stayed, counted as not blown
                first = every.assign(blown_a=every["blown_a"] * (1 - every["before_refresh_a"]))
                for (_ds, _lr), g in first.groupby(["dataset", "lr"], sort=False):
                    if len(g) >= s.min_members:
                        old_first.append(
                            Endpoint(
                                measure=EXCESS,
                                **interval(
                                    ci(
                                        g["blown_a"].to_numpy(),
                                        paired=g["blown_b"].to_numpy(),
                                        n_boot=s.bootstrap,
                                        level=s.ci_level,
                                    )
                                ),
                                n=len(g),
                            )
                        )
    # descriptive: the same divergences with their timing, and the mechanism (W along the input mean)
    eps += time_endpoints(m, s) + growth_endpoints(m, hist, s)
    for v in s.k_sweep:
        for (ds, lr), g in m[m["variant"] == v].groupby(["dataset", "lr"], sort=False):
            eps.append(
                Endpoint(
                    measure=RATE,
                    **rate_interval(g["blown"], s.ci_level),
                    n=len(g),
                    unit="fraction",
                    variant=v,
                    refresh_every=g["refresh_every"].iloc[0],
                    dataset=ds,
                    lr=lr,
                )
            )
    comp = pd.concat(rows, ignore_index=True) if rows else pd.DataFrame(columns=["diff", "dataset", "seed"])
    pop = m[m["refresh_every"].notna() & (m["blown"] > 0)]
    notes = [
        f"{v}: {int(g['before_refresh'].sum())} of {len(g)} blow-ups before the statistics were first "
        f"recomputed (step < K = {g['refresh_every'].iloc[0]:g}: a fixed affine map like `frozen` then; "
        f"such pairs leave the deciding comparisons)"
        for v, g in pop.groupby("variant", sort=False)
        if g["before_refresh"].sum() > 0
    ]
    notes += [
        f"{v}: {n} pairs whose twin alone diverged before step K (they leave the deciding comparisons too)"
        for v, n in twin_early.items()
    ]
    tally = (
        comp.assign(det=comp["diff"] > 0, twin=comp["diff"] < 0).groupby("variant")[["det", "twin"]].sum()
        if len(comp)
        else pd.DataFrame()
    )
    ev = (
        "Deciding pairs (" + ", ".join(s.blowup_deciders) + " vs their first twin), paired by data set, lr and "
        "seed: discordant pairs where only the detached member "
        + ("diverged" if outcome == "diverged_" else "blew up")
        + " / only the twin: "
        + ("; ".join(f"{v} {int(r['det'])} / {int(r['twin'])}" for v, r in tally.iterrows()) or "none")
        + ". "
        + "; ".join(notes)
    )
    # the retired count (revised, ffaf633): cells with every decided excess <= 0 also read "does not hold"
    revised = count_status(old_revised, s.ci_level)
    if revised not in ("holds", "mixed", FAILS) and old_revised and all(e.effect <= 0 for e in old_revised):
        revised = FAILS
    first = count_status(old_first, s.ci_level, only_informative=False)
    # 61c2b93 (the landmark for both members): the test's pairs under the replaced rule differ only where a
    # twin diverged before K while its population member did not; with none, the replaced rule's test is this one
    landmark = SAME_AS_NOW if not twin_early else f"not recomputed ({sum(twin_early.values())} pairs differ)"
    return Judgement(
        eps, ev.strip(), comparisons={"claim4": comp}, legacy={"ffaf633": first, "count": revised, "61c2b93": landmark}
    )
