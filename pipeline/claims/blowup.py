"""Claim 4 (measurement): the model blows up -- excess blow-ups of each detached variant over its
twin, paired by seed, and the refresh-interval (K) sweep.

    from pipeline.claims.blowup import judge_blows_up
"""
from __future__ import annotations

from pipeline.claims.base import FAILS, HOLDS, MIXED, NOT_SHOWN, Endpoint, _paired, _table, beyond_chance, informative
from pipeline.outcomes import ci


# -- claim 4: the model blows up ------------------------------------------------------------------
def judge_blows_up(m, hist, s):
    # a population_* member that diverged before its statistics were first recomputed (step < K) was a
    # fixed affine map (like `frozen`): its pair is dropped from the deciding comparisons
    early = m["diverged"].astype(bool) & (m["diverged_step"] < m["refresh_every"])
    m = m.assign(blown=m["blown"].astype(float), before_refresh=early.astype(float))
    eps, decided = [], set()
    for det, twins in s.twins.items():
        for twin in twins:
            decides = det in s.blowup_deciders and twin == twins[0]
            p = _paired(m, det, twin, ["blown", "before_refresh"])
            if decides:  # such a pair says nothing about detaching either way: it leaves the comparison
                p = p[p["before_refresh_a"] == 0]
            for (ds, lr), g in p.groupby(["dataset", "lr"], sort=False):
                mean, lo, hi = ci(g["blown_a"].to_numpy(), paired=g["blown_b"].to_numpy(),
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
    down = [eps[i] for i in decided if eps[i].hi < 0]
    n = sum(informative(eps[i]) for i in decided)
    up_sig, down_sig = beyond_chance(len(up), n, s.ci_level), beyond_chance(len(down), n, s.ci_level)
    none_above = bool(decided) and all(eps[i].effect <= 0 for i in decided)
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
    return status, eps, ev.strip(), _table(eps, decided)
