"""Claim 2 (measurement): b grows without bound, read from the growth exponent alpha per layer.

    from pipeline.claims.growth import judge_b_grows
"""
from __future__ import annotations

from collections import Counter

from pipeline.claims.base import (FAILS, HOLDS, MIXED, NOT_SHOWN, Endpoint, _alive, _g, _layers, beyond_chance,
                                  interval, layer_text)
from pipeline.outcomes import ci
from pipeline.spec.variants import names_where
from pipeline.spec.records import layer_column


# -- claim 2: b grows without bound -------------------------------------------------------------
def judge_b_grows(m, hist, s):
    live = _alive(m)
    layers = _layers(m, "alpha")
    detached = names_where(lambda spec: spec.detached)  # statistics re-estimated outside the gradient step
    real = live[live["norm"].isin(detached) & (live["trainable"] == "all") & live["has_bias"]]
    eps, tally = [], Counter()  # tally[(reading, variant or layer)]
    for (v, ds, lr), g in real.groupby(["variant", "dataset", "lr"], sort=False):
        twin = s.twins.get(v, [None])[0]
        tg = live[(live["variant"] == twin) & (live["dataset"] == ds) & (live["lr"] == lr)]
        for layer in layers:
            a = g[layer_column("alpha", layer)]
            mean, lo, hi = ci(a, level=s.ci_level)
            n, where = int(a.notna().sum()), dict(variant=v, dataset=ds, lr=lr, layer=layer)
            decides = n >= s.min_members and (lo >= s.alpha_unbounded or hi < s.alpha_unbounded)
            if decides:
                reading = "grows" if lo >= s.alpha_unbounded else "saturates"
                tally[(reading, v)] += 1
                tally[(reading, layer)] += 1
            eps.append(Endpoint(measure="growth exponent alpha", effect=mean, lo=lo, hi=hi, n=n, **where,
                                decides=decides))
            if layer_column("gsum_persist", layer) in g:
                p = g[layer_column("gsum_persist", layer)]
                eps.append(Endpoint(measure="mean-gradient persistence ||sum G|| / sum ||G||",
                                    **interval(ci(p, level=s.ci_level)), n=int(p.notna().sum()), **where))
            if twin and layer_column("b_drift", layer) in tg and len(tg):
                d = tg[layer_column("b_drift", layer)]  # measured on the twin, in this variant's comparison
                eps.append(Endpoint(measure="twin's drift ||b_T - b_0||", **interval(ci(d, level=s.ci_level)),
                                    n=int(d.notna().sum()), twin=twin, **where))
    toy = live[live["trainable"] == "bias"]
    toy_alpha = []
    for (v, ds, lr), g in toy.groupby(["variant", "dataset", "lr"], sort=False):
        for layer in [x for x in layers if g[layer_column("alpha", x)].notna().any()]:
            a = g[layer_column("alpha", layer)]
            toy_alpha.append(Endpoint(measure="growth exponent alpha (toy: identity, linear by construction)",
                                      **interval(ci(a, level=s.ci_level)), n=int(a.notna().sum()),
                                      variant=v, dataset=ds, lr=lr, layer=layer))
    eps += toy_alpha
    n_up = sum(c for (r, k), c in tally.items() if r == "grows" and k in layers)
    n_down = sum(c for (r, k), c in tally.items() if r == "saturates" and k in layers)
    n_alpha_groups = sum(1 for e in eps if e.measure == "growth exponent alpha")
    up_sig = beyond_chance(n_up, n_alpha_groups, s.ci_level)
    down_sig = beyond_chance(n_down, n_alpha_groups, s.ci_level)
    status = MIXED if up_sig and down_sig else HOLDS if up_sig else FAILS if down_sig else NOT_SHOWN

    def where(reading, keys, label=str):
        return ", ".join(f"{label(k)} {tally[(reading, k)]}" for k in keys if tally[(reading, k)]) or "none"

    variants = list(dict.fromkeys(real["variant"]))
    n_alpha = sum(1 for e in eps if e.measure == "growth exponent alpha")
    decided = [e for e in eps if e.decides]
    ev = (f"Growth exponent alpha of ||b_t - b_0|| over the later part of the run, surviving detached members "
          f"of the real networks: of {len(decided)} decided (variant, data set, lr, layer) groups "
          f"({n_alpha - len(decided)} undecided), {n_up} grow at least like a random walk (by layer: "
          f"{where('grows', layers, layer_text)}; by variant: {where('grows', variants)}) and {n_down} saturate "
          f"(by layer: {where('saturates', layers, layer_text)}; by variant: {where('saturates', variants)}).")
    if toy_alpha:
        ev += (f" The bias-only toy (linear by construction) shows alpha between "
               f"{_g(min(e.effect for e in toy_alpha))} and {_g(max(e.effect for e in toy_alpha))}.")
    return status, eps, ev, None
