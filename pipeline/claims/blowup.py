"""Claim 4 (measurement): the model blows up -- excess blow-ups of each detached variant over its
twin, paired by seed, and the refresh-interval (K) sweep.

    from pipeline.claims.blowup import judge_blows_up
"""
from __future__ import annotations

from pipeline.claims.base import FAILS, HOLDS, MIXED, NOT_SHOWN, Endpoint, _paired, beyond_chance, informative, interval
from pipeline.outcomes import ci


# -- claim 4: the model blows up ------------------------------------------------------------------
def judge_blows_up(m, hist, s):
    # a population_* member that diverged before its statistics were first recomputed (step < K) was a
    # fixed affine map (like `frozen`): its pair is dropped from the deciding comparisons
    early = m["diverged"].astype(bool) & (m["diverged_step"] < m["refresh_every"])
    m = m.assign(blown=m["blown"].astype(float), before_refresh=early.astype(float))
    eps = []
    for det, twins in s.twins.items():
        for twin in twins:
            decides = det in s.blowup_deciders and twin == twins[0]
            p = _paired(m, det, twin, ["blown", "before_refresh"])
            if decides:  # such a pair says nothing about detaching either way: it leaves the comparison
                p = p[p["before_refresh_a"] == 0]
            for (ds, lr), g in p.groupby(["dataset", "lr"], sort=False):
                eps.append(Endpoint(measure="excess blow-up rate (detached minus twin)",
                                    **interval(ci(g["blown_a"].to_numpy(), paired=g["blown_b"].to_numpy(),
                                                  n_boot=s.bootstrap, level=s.ci_level)),
                                    n=len(g), unit="fraction", variant=det, twin=twin, dataset=ds, lr=lr,
                                    decides=decides and len(g) >= s.min_members))
    for v in s.k_sweep:
        for (ds, lr), g in m[m["variant"] == v].groupby(["dataset", "lr"], sort=False):
            eps.append(Endpoint(measure="blow-up rate",
                                **interval(ci(g["blown"], n_boot=s.bootstrap, level=s.ci_level, method="bootstrap")),
                                n=len(g), unit="fraction", variant=v, refresh_every=g["refresh_every"].iloc[0],
                                dataset=ds, lr=lr))
    decided = [e for e in eps if e.decides]
    up = [e for e in decided if e.lo > 0]
    down = [e for e in decided if e.hi < 0]
    n = sum(informative(e) for e in decided)
    up_sig, down_sig = beyond_chance(len(up), n, s.ci_level), beyond_chance(len(down), n, s.ci_level)
    none_above = bool(decided) and all(e.effect <= 0 for e in decided)
    status = (MIXED if up_sig and down_sig else HOLDS if up_sig else FAILS if down_sig or none_above
              else NOT_SHOWN)
    pop = m[m["refresh_every"].notna() & (m["blown"] > 0)]
    notes = [f"{v}: {int(g['before_refresh'].sum())} of {len(g)} blow-ups before the statistics were first "
             f"recomputed (step < K = {g['refresh_every'].iloc[0]:g}: a fixed affine map like `frozen` then; "
             f"such pairs leave the deciding comparisons)"
             for v, g in pop.groupby("variant", sort=False) if g["before_refresh"].sum() > 0]
    ev = (f"Blow-up (diverged, or ||W||/||b|| growth past the declared factors) of each detached variant in "
          f"excess of its twin, paired by seed, per data set and lr; deciding pairs ({', '.join(s.blowup_deciders)} "
          f"vs their first twin): of {len(decided)} decided cells ({n} informative: not every pair agreed), "
          f"{len(up)} with an interval above 0"
          + (" (" + "; ".join(e.text() for e in up[:4]) + ")" if up else "")
          + f" and {len(down)} below 0 (the twin blew up more)"
          + (" (" + "; ".join(e.text() for e in down[:4]) + ")" if down else "") + ". " + "; ".join(notes))
    return status, eps, ev.strip(), None
