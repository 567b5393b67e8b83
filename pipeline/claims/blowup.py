"""Claim 4 (measurement): the model blows up -- excess blow-ups of each detached variant over its
twin, paired by seed, and the refresh-interval (K) sweep.

    from pipeline.claims.blowup import judge_blows_up
"""
from __future__ import annotations

from pipeline.claims.base import FAILS, HOLDS, NOT_SHOWN, Endpoint, _paired, _table, beyond_chance
from pipeline.outcomes import ci


# -- claim 4: the model blows up ------------------------------------------------------------------
def judge_blows_up(m, hist, s):
    # a population_* member that diverged before its first refresh was a fixed affine map (= frozen)
    early = m["diverged"].astype(bool) & (m["diverged_step"] < m["refresh_every"])
    m = m.assign(blown=m["blown"].astype(float), attributable=(m["blown"] & ~early).astype(float),
                 before_refresh=early.astype(float))
    eps, decided = [], set()
    for det, twins in s.twins.items():
        for twin in twins:
            decides = det in s.blowup_deciders and twin == twins[0]
            col = "attributable" if decides else "blown"
            p = _paired(m, det, twin, list(dict.fromkeys([col, "blown"])))
            for (ds, lr), g in p.groupby(["dataset", "lr"], sort=False):
                mean, lo, hi = ci(g[f"{col}_a"].to_numpy(), paired=g["blown_b"].to_numpy(),
                                  n_boot=s.bootstrap, level=s.ci_level)
                if decides and len(g) >= s.min_members:
                    decided.add(len(eps))
                eps.append(Endpoint("excess blow-up rate (detached minus twin)", mean, lo, hi, len(g), "fraction",
                                    f"{det} vs {twin}, {ds}, lr {lr:g}"))
    for v in s.k_sweep:
        for (ds, lr), g in m[m["variant"] == v].groupby(["dataset", "lr"], sort=False):
            eps.append(Endpoint(f"blow-up rate at K = {g['refresh_every'].iloc[0]:g}",
                                *ci(g["blown"], n_boot=s.bootstrap, level=s.ci_level, method="bootstrap"),
                                len(g), "fraction", f"{v}, {ds}, lr {lr:g}"))
    up = [eps[i] for i in decided if eps[i].lo > 0]
    none_above = bool(decided) and all(eps[i].effect <= 0 for i in decided)
    status = HOLDS if beyond_chance(len(up), len(decided), s.ci_level) else FAILS if none_above else NOT_SHOWN
    pop = m[m["refresh_every"].notna() & (m["blown"] > 0)]
    notes = [f"{v}: {int(g['before_refresh'].sum())} of {len(g)} blow-ups before the first refresh "
             f"(step < K = {g['refresh_every'].iloc[0]:g}: the frozen map's failure, not detaching's)"
             for v, g in pop.groupby("variant", sort=False) if g["before_refresh"].sum() > 0]
    ev = (f"Blow-up (diverged, or ||W||/||b|| growth past the declared factors) of each detached variant in "
          f"excess of its twin, paired by seed, per data set and lr; deciding pairs ({', '.join(s.blowup_deciders)} "
          f"vs their first twin): {len(up)} of {len(decided)} cells with an interval above 0"
          + (": " + "; ".join(e.text() for e in up[:4]) if up else "") + ". " + "; ".join(notes))
    return status, eps, ev.strip(), _table(eps, decided)
