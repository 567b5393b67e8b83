"""Claim 4 (measurement): the model blows up -- each deciding detached variant against its twin,
paired by seed, and the refresh-interval (K) sweep.

    from pipeline.claims.blowup import judge_blows_up

Primary test (report.primary.claim4): per deciding pair (report.blowup_deciders vs their first twin:
centering, where the theory's rank-1 term lives), data set, lr and seed, the detached member's 0/1
outcome minus its twin's -- diverged, or (excess_blown) diverged or W/b grew past the declared
factors. Pooled over the data sets with non-zero input mean; the zero-mean ones are the control.
A population member that diverged before its statistics were first recomputed (step < K) was a fixed
affine map like `frozen` then: its pair leaves the comparison.
"""
from __future__ import annotations

import pandas as pd

from pipeline.claims.base import Endpoint, Judgement, _paired, excess_rate_interval, interval, rate_interval
from pipeline.claims.legacy import FAILS, count_status
from pipeline.outcomes import ci

EXCESS, EXCESS_DIV, RATE = ("excess blow-up rate (detached minus twin)", "excess divergence rate (detached minus twin)",
                            "blow-up rate")


def judge_blows_up(m, hist, s) -> Judgement:
    early = m["diverged"].astype(bool) & (m["diverged_step"] < m["refresh_every"])
    m = m.assign(blown=m["blown"].astype(float), diverged_=(m["status"] == "diverged").astype(float),
                 before_refresh=early.astype(float))
    outcome = "diverged_" if s.primary["claim4"].endpoint == "excess_divergence" else "blown"
    eps, rows, old_first, old_revised = [], [], [], []
    for det, twins in s.twins.items():
        for twin in twins:
            deciding = det in s.blowup_deciders and twin == twins[0]
            every = _paired(m, det, twin, ["blown", "diverged_", "before_refresh"])
            p = every[every["before_refresh_a"] == 0] if deciding else every
            if deciding:
                rows.append(pd.DataFrame({"diff": p[f"{outcome}_a"] - p[f"{outcome}_b"], "dataset": p["dataset"],
                                          "seed": p["seed"], "variant": det, "twin": twin, "lr": p["lr"]}))
            for (ds, lr), g in p.groupby(["dataset", "lr"], sort=False):
                for col, name in (("blown", EXCESS), ("diverged_", EXCESS_DIV)):
                    eps.append(Endpoint(measure=name, **excess_rate_interval(g[f"{col}_a"], g[f"{col}_b"], s.ci_level),
                                        n=len(g), unit="fraction", variant=det, twin=twin, dataset=ds, lr=lr))
                if deciding and len(g) >= s.min_members:  # the retired count read paired-bootstrap intervals
                    old_revised.append(Endpoint(measure=EXCESS, **interval(ci(
                        g["blown_a"].to_numpy(), paired=g["blown_b"].to_numpy(), n_boot=s.bootstrap,
                        level=s.ci_level)), n=len(g)))
            if deciding:  # as first declared: early population pairs stayed, counted as not blown
                first = every.assign(blown_a=every["blown_a"] * (1 - every["before_refresh_a"]))
                for (ds, lr), g in first.groupby(["dataset", "lr"], sort=False):
                    if len(g) >= s.min_members:
                        old_first.append(Endpoint(measure=EXCESS, **interval(ci(
                            g["blown_a"].to_numpy(), paired=g["blown_b"].to_numpy(), n_boot=s.bootstrap,
                            level=s.ci_level)), n=len(g)))
    for v in s.k_sweep:
        for (ds, lr), g in m[m["variant"] == v].groupby(["dataset", "lr"], sort=False):
            eps.append(Endpoint(measure=RATE,
                                **rate_interval(g["blown"], s.ci_level),
                                n=len(g), unit="fraction", variant=v, refresh_every=g["refresh_every"].iloc[0],
                                dataset=ds, lr=lr))
    comp = pd.concat(rows, ignore_index=True) if rows else pd.DataFrame(columns=["diff", "dataset", "seed"])
    pop = m[m["refresh_every"].notna() & (m["blown"] > 0)]
    notes = [f"{v}: {int(g['before_refresh'].sum())} of {len(g)} blow-ups before the statistics were first "
             f"recomputed (step < K = {g['refresh_every'].iloc[0]:g}: a fixed affine map like `frozen` then; "
             f"such pairs leave the deciding comparisons)"
             for v, g in pop.groupby("variant", sort=False) if g["before_refresh"].sum() > 0]
    tally = comp.assign(det=comp["diff"] > 0, twin=comp["diff"] < 0).groupby("variant")[["det", "twin"]].sum() \
        if len(comp) else pd.DataFrame()
    ev = ("Deciding pairs (" + ", ".join(s.blowup_deciders) + " vs their first twin), paired by data set, lr and "
          "seed: discordant pairs where only the detached member " + ("diverged" if outcome == "diverged_" else
                                                                       "blew up") + " / only the twin: "
          + ("; ".join(f"{v} {int(r['det'])} / {int(r['twin'])}" for v, r in tally.iterrows()) or "none") + ". "
          + "; ".join(notes))
    # the retired count (revised, ffaf633): cells with every decided excess <= 0 also read "does not hold"
    revised = count_status(old_revised, s.ci_level)
    if revised not in ("holds", "mixed", FAILS) and old_revised and all(e.effect <= 0 for e in old_revised):
        revised = FAILS
    first = count_status(old_first, s.ci_level, only_informative=False)
    return Judgement(eps, ev.strip(), comparisons={"claim4": comp}, legacy={"ffaf633": first, "count": revised})
