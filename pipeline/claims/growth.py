"""Claim 2 (measurement): b grows without bound, read from the growth exponent alpha per layer.

    from pipeline.claims.growth import judge_b_grows
"""
from __future__ import annotations

from collections import Counter

from pipeline.claims.base import FAILS, HOLDS, MIXED, NOT_SHOWN, Endpoint, _alive, _g, _table, beyond_chance
from pipeline.outcomes import ci
from pipeline.spec.records import layer_column


# -- claim 2: b grows without bound -------------------------------------------------------------
def judge_b_grows(m, hist, s):
    live = _alive(m)
    layers = [f"l{i}" for i in range(int(m["depth"].max()) if len(m) else 0) if layer_column("alpha", i) in m]
    real = live[live["norm"].str.endswith("_detached") & (live["trainable"] == "all") & live["has_bias"]]
    eps, decided, tally = [], set(), Counter()  # tally[(reading, variant or layer)]
    for (v, ds, lr), g in real.groupby(["variant", "dataset", "lr"], sort=False):
        twin = s.twins.get(v, [None])[0]
        tg = live[(live["variant"] == twin) & (live["dataset"] == ds) & (live["lr"] == lr)]
        for layer in layers:
            a = g[f"alpha/{layer}"]
            mean, lo, hi = ci(a, level=s.ci_level)
            n, where = int(a.notna().sum()), f"{v}, {ds}, lr {lr:g}, layer {layer}"
            if n >= s.min_members and (lo >= s.alpha_unbounded or hi < s.alpha_unbounded):
                decided.add(len(eps))
                reading = "grows" if lo >= s.alpha_unbounded else "saturates"
                tally[(reading, v)] += 1
                tally[(reading, layer)] += 1
            eps.append(Endpoint("growth exponent alpha", mean, lo, hi, n, "", where))
            if f"gsum_persist/{layer}" in g:
                p = g[f"gsum_persist/{layer}"]
                eps.append(Endpoint("mean-gradient persistence ||sum G|| / sum ||G||", *ci(p, level=s.ci_level),
                                    int(p.notna().sum()), "", where))
            if twin and f"b_drift/{layer}" in tg and len(tg):
                d = tg[f"b_drift/{layer}"]
                eps.append(Endpoint("twin's drift ||b_T - b_0||", *ci(d, level=s.ci_level),
                                    int(d.notna().sum()), "", f"{twin}, {ds}, lr {lr:g}, layer {layer}"))
    toy = live[live["trainable"] == "bias"]
    toy_alpha = []
    for (v, ds, lr), g in toy.groupby(["variant", "dataset", "lr"], sort=False):
        for layer in [x for x in layers if g[f"alpha/{x}"].notna().any()]:
            a = g[f"alpha/{layer}"]
            toy_alpha.append(Endpoint("growth exponent alpha (toy: identity, linear by construction)",
                                      *ci(a, level=s.ci_level), int(a.notna().sum()), "",
                                      f"{v}, {ds}, lr {lr:g}, layer {layer}"))
    eps += toy_alpha
    n_up = sum(c for (r, k), c in tally.items() if r == "grows" and k in layers)
    n_down = sum(c for (r, k), c in tally.items() if r == "saturates" and k in layers)
    n_alpha_groups = sum(1 for e in eps if e.name == "growth exponent alpha")
    up_sig = beyond_chance(n_up, n_alpha_groups, s.ci_level)
    down_sig = beyond_chance(n_down, n_alpha_groups, s.ci_level)
    status = MIXED if up_sig and down_sig else HOLDS if up_sig else FAILS if down_sig else NOT_SHOWN

    def where(reading, keys):
        return ", ".join(f"{k} {tally[(reading, k)]}" for k in keys if tally[(reading, k)]) or "none"

    variants = list(dict.fromkeys(real["variant"]))
    n_alpha = sum(1 for e in eps if e.name == "growth exponent alpha")
    ev = (f"Growth exponent alpha of ||b_t - b_0|| over the later part of the run, surviving detached members "
          f"of the real networks: of {len(decided)} decided (variant, data set, lr, layer) groups "
          f"({n_alpha - len(decided)} undecided), {n_up} grow at least like a random walk (by layer: "
          f"{where('grows', layers)}; by variant: {where('grows', variants)}) and {n_down} saturate (by layer: "
          f"{where('saturates', layers)}; by variant: {where('saturates', variants)}).")
    if toy_alpha:
        ev += (f" The bias-only toy (linear by construction) shows alpha between "
               f"{_g(min(e.effect for e in toy_alpha))} and {_g(max(e.effect for e in toy_alpha))}.")
    return status, eps, ev, _table(eps, decided)
