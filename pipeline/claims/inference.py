"""Claim 1b (measurement): what of b's drift leaks into inference, detached variant against its twin.

    from pipeline.claims.inference import judge_inference_leak
"""
from __future__ import annotations

from pipeline.claims.base import Endpoint, _alive, _count, _paired, _read_signs, interval
from pipeline.outcomes import ci
from pipeline.spec.variants import names_where


# -- claim 1b: what leaks at inference (measurement) -------------------------------------------------
def judge_inference_leak(m, hist, s):
    # |gap|: b's drift can make inference worse (stale statistics) or better (b descends the loss with the
    # statistics held fixed, which is what inference computes); either way it reaches the predictions
    live = _alive(m).assign(abs_loss_gap=lambda d: d["loss_gap"].abs(), abs_acc_gap=lambda d: d["acc_gap"].abs())
    eps = []
    # only variants that train on batch statistics: population/EMA variants use the same statistics in
    # both modes, so their gap is zero by construction (an identity, not a measurement)
    batch = set(m.loc[m["norm"].isin(names_where(lambda spec: spec.detached_batch)), "variant"])
    for det, twins in s.twins.items():
        if det not in batch:
            continue
        p = _paired(live, det, twins[0], ["abs_loss_gap", "abs_acc_gap", "loss_gap"])
        for (ds, lr), g in p.groupby(["dataset", "lr"], sort=False):
            for col, name, unit, decides in (
                    ("abs_loss_gap", "excess |eval-mode - train-mode loss|", "nats", True),
                    ("abs_acc_gap", "excess |train-mode - eval-mode accuracy|", "accuracy", True),
                    ("loss_gap", "excess signed eval-mode - train-mode loss (sign only)", "nats", False)):
                d = g[f"{col}_a"] - g[f"{col}_b"]
                n = int(d.notna().sum())
                eps.append(Endpoint(measure=name, **interval(ci(d, level=s.ci_level)), n=n, unit=unit, variant=det,
                                    twin=twins[0], dataset=ds, lr=lr, decides=decides and n >= s.min_members))
    toy = live[live["trainable"] == "bias"]
    for (v, ds, lr), g in toy.groupby(["variant", "dataset", "lr"], sort=False):
        eps.append(Endpoint(measure="signed eval-mode - train-mode loss (toy: no twin, only b trains)",
                            **interval(ci(g["loss_gap"], level=s.ci_level)), n=int(g["loss_gap"].notna().sum()),
                            unit="nats", variant=v, dataset=ds, lr=lr))
    decided = [e for e in eps if e.decides]
    status, up, down = _read_signs(decided, s.ci_level)
    top = sorted((e for e in decided if e.lo > 0), key=lambda e: -e.effect)[:3]
    ev = (f"Full training set, |eval mode (running/population statistics) - train mode (batch statistics)|, "
          f"detached variant minus its twin, paired by seed: {_count(up, down, len(decided), 'larger', 'smaller')}"
          + ("; largest: " + "; ".join(e.text() for e in top) if top else "") + ".")
    return status, eps, ev, None
