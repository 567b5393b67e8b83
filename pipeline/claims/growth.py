"""Claim 2 (measurement): b grows without bound, read from the growth exponent alpha per layer.

    from pipeline.claims.growth import judge_b_grows

Primary test (report.primary.claim2): per surviving detached member of a real network (all
parameters train, b present) and layer, alpha - report.alpha_unbounded (alpha of ||b_t - b_0|| ~ t^alpha
over the later part of the run; 1/2 is a random walk's): + = faster than a random walk. A finite
run cannot show "without bound"; the exponent is what it can show. Descriptive: alpha per (variant,
data set, lr, layer) with intervals over seeds, the mean-gradient persistence, the twin's drift and
the bias-only toy apart.
"""
from __future__ import annotations

import pandas as pd

from pipeline.claims.base import Endpoint, Judgement, _alive, _g, _has_beta, _layers, interval, layer_text
from pipeline.claims.legacy import HOLDS, FAILS, MIXED, NOT_SHOWN, beyond_chance
from pipeline.outcomes import ci
from pipeline.spec.records import layer_column
from pipeline.spec.variants import names_where

ALPHA, PERSIST, TWIN_DRIFT = ("growth exponent alpha", "mean-gradient persistence ||sum G|| / sum ||G||",
                              "twin's drift ||b_T - b_0||")
TOY = "growth exponent alpha (toy: identity, linear by construction)"


def judge_b_grows(m, hist, s) -> Judgement:
    live = _alive(m)
    layers = _layers(m, "alpha")
    detached = names_where(lambda spec: spec.detached)  # statistics re-estimated outside the gradient step
    # without beta: with it b shadows beta (claim_shadow), which is not Ioffe's drift
    real = live[live["norm"].isin(detached) & (live["trainable"] == "all") & live["has_bias"] & ~_has_beta(live)]
    eps, rows, up, down = [], [], 0, 0
    for (v, ds, lr), g in real.groupby(["variant", "dataset", "lr"], sort=False):
        twin = s.twins.get(v, [None])[0]
        tg = live[(live["variant"] == twin) & (live["dataset"] == ds) & (live["lr"] == lr)]
        for layer in layers:
            a = g[layer_column("alpha", layer)]
            rows.append(pd.DataFrame({"diff": a - s.alpha_unbounded, "dataset": ds, "seed": g["seed"], "variant": v,
                                      "lr": lr, "layer": layer}))
            mean, lo, hi = ci(a, level=s.ci_level)
            n, where = int(a.notna().sum()), dict(variant=v, dataset=ds, lr=lr, layer=layer)
            if n >= s.min_members:  # the retired count: groups whose interval lies on one side of 1/2
                up += lo >= s.alpha_unbounded
                down += hi < s.alpha_unbounded
            eps.append(Endpoint(measure=ALPHA, effect=mean, lo=lo, hi=hi, n=n, **where))
            if layer_column("gsum_persist", layer) in g:
                p = g[layer_column("gsum_persist", layer)]
                eps.append(Endpoint(measure=PERSIST, **interval(ci(p, level=s.ci_level)), n=int(p.notna().sum()),
                                    **where))
            if twin and layer_column("b_drift", layer) in tg and len(tg):
                d = tg[layer_column("b_drift", layer)]  # measured on the twin, in this variant's comparison
                eps.append(Endpoint(measure=TWIN_DRIFT, **interval(ci(d, level=s.ci_level)),
                                    n=int(d.notna().sum()), twin=twin, **where))
    toy = live[live["trainable"] == "bias"]
    toy_alpha = []
    for (v, ds, lr), g in toy.groupby(["variant", "dataset", "lr"], sort=False):
        for layer in [x for x in layers if g[layer_column("alpha", x)].notna().any()]:
            a = g[layer_column("alpha", layer)]
            toy_alpha.append(Endpoint(measure=TOY, **interval(ci(a, level=s.ci_level)), n=int(a.notna().sum()),
                                      variant=v, dataset=ds, lr=lr, layer=layer))
    eps += toy_alpha
    comp = pd.concat(rows, ignore_index=True) if rows else pd.DataFrame(columns=["diff", "dataset", "seed"])
    by_layer = comp.groupby("layer")["diff"].mean() + s.alpha_unbounded if len(comp) else pd.Series(dtype=float)
    by_variant = comp.groupby("variant")["diff"].mean() + s.alpha_unbounded if len(comp) else pd.Series(dtype=float)
    ev = ("Growth exponent alpha of ||b_t - b_0|| over the later part of the run, surviving detached members of "
          "the real networks: mean alpha by layer "
          + (", ".join(f"{layer_text(k)} {_g(x)}" for k, x in by_layer.items()) or "none")
          + "; by variant " + (", ".join(f"{k} {_g(x)}" for k, x in by_variant.items()) or "none") + ".")
    if toy_alpha:
        ev += (f" The bias-only toy (linear by construction) shows alpha between "
               f"{_g(min(e.effect for e in toy_alpha))} and {_g(max(e.effect for e in toy_alpha))}.")
    n_groups = sum(e.measure == ALPHA for e in eps)
    up_sig, down_sig = beyond_chance(up, n_groups, s.ci_level), beyond_chance(down, n_groups, s.ci_level)
    count = MIXED if up_sig and down_sig else HOLDS if up_sig else FAILS if down_sig else NOT_SHOWN
    return Judgement(eps, ev, comparisons={"claim2": comp}, legacy={"count": count})
