"""Claim 1b (measurement): what of b's drift leaks into inference, detached variant against its twin.

    from pipeline.claims.inference import judge_inference_leak

Primary test (report.primary.claim1b): per detached batch variant, data set, lr and seed, its
full-set (eval-mode - train-mode) loss minus its twin's -- signed (the direction is the finding) or
absolute. Descriptive: the same per (variant, data set, lr) with intervals over seeds, the accuracy
gap, and the bias-only toy apart.
"""

from __future__ import annotations

import pandas as pd

from pipeline.claims.base import Endpoint, Judgement, _alive, _has_beta, _paired, interval
from pipeline.claims.legacy import count_status
from pipeline.outcomes import ci
from pipeline.spec.variants import names_where

ABS, ABS_ACC, SIGNED = (
    "excess |eval-mode - train-mode loss|",
    "excess |train-mode - eval-mode accuracy|",
    "excess signed eval-mode - train-mode loss",
)
TOY = "signed eval-mode - train-mode loss (toy: no twin, only b trains)"
B_SHARE, LAG_SHARE = ("b's share of the eval-mode gap", "the statistics' lag share of the eval-mode gap")


def judge_inference_leak(m, hist, s) -> Judgement:
    live = _alive(m).assign(abs_loss_gap=lambda d: d["loss_gap"].abs(), abs_acc_gap=lambda d: d["acc_gap"].abs())
    # only variants that train on detached batch statistics: population/EMA variants use the same
    # statistics in both modes, so their gap is zero by construction (an identity, not a measurement); and
    # without beta (with it, b shadows beta: claim_shadow)
    batch = set(m.loc[m["norm"].isin(names_where(lambda spec: spec.detached_batch)) & ~_has_beta(m), "variant"])
    signed = s.primary["claim1b"].endpoint == "signed_gap"
    eps, rows, old_family = [], [], []
    for det, twins in s.twins.items():
        if det not in batch:
            continue
        p = _paired(live, det, twins[0], ["abs_loss_gap", "abs_acc_gap", "loss_gap"])
        col = "loss_gap" if signed else "abs_loss_gap"
        rows.append(
            pd.DataFrame(
                {
                    "diff": p[f"{col}_a"] - p[f"{col}_b"],
                    "dataset": p["dataset"],
                    "seed": p["seed"],
                    "variant": det,
                    "twin": twins[0],
                    "lr": p["lr"],
                }
            )
        )
        for (ds, lr), g in p.groupby(["dataset", "lr"], sort=False):
            for col_, name, unit in (
                ("loss_gap", SIGNED, "nats"),
                ("abs_loss_gap", ABS, "nats"),
                ("abs_acc_gap", ABS_ACC, "accuracy"),
            ):
                d = g[f"{col_}_a"] - g[f"{col_}_b"]
                n = int(d.notna().sum())
                e = Endpoint(
                    measure=name,
                    **interval(ci(d, level=s.ci_level)),
                    n=n,
                    unit=unit,
                    variant=det,
                    twin=twins[0],
                    dataset=ds,
                    lr=lr,
                )
                eps.append(e)
                if col_ != "loss_gap" and n >= s.min_members:
                    old_family.append(e)  # the retired count read the two |gap| endpoints
    # the gap split exactly (pipeline/module.py): b's share = eval(b_T) - eval(b's EMA), the statistics'
    # lag = eval(b's EMA) - train; per detached variant and data set, over its surviving members
    split = live[live["variant"].isin([d for d in s.twins if d in batch])]
    shares = []
    if "loss_gap_b" in split:
        for (v, ds), g in split.groupby(["variant", "dataset"], sort=False):
            for col, name in (("loss_gap_b", B_SHARE), ("loss_gap_lag", LAG_SHARE)):
                e = Endpoint(
                    measure=name,
                    **interval(ci(g[col], level=s.ci_level)),
                    n=int(g[col].notna().sum()),
                    unit="nats",
                    variant=v,
                    dataset=ds,
                    over="members of every lr",
                )
                eps.append(e)
                shares.append(e)
    toy = live[live["trainable"] == "bias"]
    for (v, ds, lr), g in toy.groupby(["variant", "dataset", "lr"], sort=False):
        eps.append(
            Endpoint(
                measure=TOY,
                **interval(ci(g["loss_gap"], level=s.ci_level)),
                n=int(g["loss_gap"].notna().sum()),
                unit="nats",
                variant=v,
                dataset=ds,
                lr=lr,
            )
        )
    comp = pd.concat(rows, ignore_index=True) if rows else pd.DataFrame(columns=["diff", "dataset", "seed"])
    carriers = comp.groupby("variant")["diff"].agg(["mean", "size"]) if len(comp) else None
    ev = (
        "Full training set, eval mode (running statistics) minus train mode (batch statistics), detached "
        "variant minus its twin, paired by data set, lr and seed"
        + (
            ": mean excess per pair by variant "
            + "; ".join(f"{v} {r['mean']:+.3g} nats over {int(r['size'])} pairs" for v, r in carriers.iterrows())
            if carriers is not None
            else ""
        )
        + " (the primary test's per-variant rows average per seed first). Negative = inference mode fits the "
        "training set better than training mode does."
        + (
            " Split of the detached variants' own gap (eval - train) into b's lag and the statistics' lag: "
            + "; ".join(e.text() for e in shares)
            + "."
            if shares
            else ""
        )
    )
    legacy = {
        "ffaf633": count_status(old_family, s.ci_level, only_informative=False),
        "count": count_status(old_family, s.ci_level),
    }
    return Judgement(eps, ev, comparisons={"claim1b": comp}, legacy=legacy)
