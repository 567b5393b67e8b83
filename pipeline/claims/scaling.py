"""Claim 3 (measurement): worse when the normalization also scales -- the endpoints C3, each read
per seed (_per_seed) as standardize_detached's excess over its twin minus center_detached's.

    from pipeline.claims.scaling import C3, judge_worse_scaling

Two primary tests, the claim's two sides, named before the report reads the data: fit
(report.primary.claim3_fit: final loss or accuracy deficit at matched lr) and stability
(report.primary.claim3_stability: the divergence rate over the lrs). + = standardizing worse on
both; the verdict and the answer say which way each goes.
"""

from __future__ import annotations

from dataclasses import replace

import numpy as np
import pandas as pd

from pipeline.claims.base import Endpoint, Judgement, _nonzero_mean
from pipeline.claims.legacy import any_side_status, count_status
from pipeline.outcomes import ci

# -- claim 3: worse when the normalization also scales -------------------------------------------
C3 = (  # endpoint, member column, how per seed, sign (+1: a larger value is worse), unit
    ("blow-up rate (diverged, or W or b grew)", "blown", "rate", 1, "fraction"),
    ("failure rate (not trained)", "failed_", "rate", 1, "fraction"),
    ("final full-set loss, train mode, matched lr", "full_loss_train", "mean", 1, "nats"),
    ("final full-set accuracy deficit, train mode, matched lr", "full_acc_train", "mean", -1, "accuracy"),
    ("final full-set loss, train mode, each variant's best lr", "full_loss_train", "best", 1, "nats"),
    ("final full-set accuracy deficit, train mode, each variant's best lr", "full_acc_train", "best", -1, "accuracy"),
    ("log10 W growth factor (largest layer), matched lr", "log_w_growth", "mean", 1, "log10"),
    ("steps to target loss (censored at T), matched lr", "steps_censored", "mean", 1, "steps"),
    ("divergence rate", "diverged_", "mean", 1, "fraction"),
)
PRIMARY = {  # report.primary endpoint id -> the C3 row it reads
    "loss_matched_lr": "final full-set loss, train mode, matched lr",
    "acc_deficit_matched_lr": "final full-set accuracy deficit, train mode, matched lr",
    "divergence_rate": "divergence rate",
}


def _per_seed(sub: pd.DataFrame, col: str, how: str, four: list[str]) -> pd.DataFrame:
    """seed x variant: the mean over lrs (rows where all four members have a value), or the value
    at each variant's best lr (lowest mean train-mode loss among lrs where no seed diverged)."""
    wide = sub.set_index(["lr", "seed", "variant"])[col].unstack("variant").reindex(columns=four)
    if how != "best":
        return wide.dropna().groupby(level="seed").mean()
    out = {}
    for v in four:
        g = sub[sub["variant"] == v]
        per_lr = g.groupby("lr").agg(diverged=("diverged", "any"), loss=("full_loss_train", "mean"))
        ok = per_lr.loc[~per_lr["diverged"].astype(bool), "loss"]  # the lrs where no seed diverged
        if ok.empty:
            return pd.DataFrame(columns=four)
        best = ok.idxmin()
        out[v] = g[g["lr"] == best].set_index("seed")[col]
    return pd.DataFrame(out).reindex(columns=four).dropna()


def judge_worse_scaling(m, hist, s) -> Judgement:
    sd, cd = "standardize_detached", "center_detached"
    four = [sd, s.twins.get(sd, [""])[0], cd, s.twins.get(cd, [""])[0]]
    m = m.assign(
        failed_=(~m["trained"]).astype(float),
        blown=m["blown"].astype(float),
        diverged_=(m["status"] == "diverged").astype(float),
        # a diverged member's last finite ||W|| says nothing about its growth
        log_w_growth=np.log10(m["w_growth_max"].where((m["w_growth_max"] > 0) & ~m["diverged"].astype(bool))),
        steps_censored=m["steps_to_target"].fillna(m["steps"].astype(float)),
    )
    reads = {PRIMARY[s.primary[k].endpoint]: k for k in ("claim3_fit", "claim3_stability")}
    rows: dict[str, list] = {k: [] for k in reads.values()}
    eps = []
    for ds in list(dict.fromkeys(m["dataset"])):
        sub = m[(m["dataset"] == ds) & m["variant"].isin(four)]
        if sub["variant"].nunique() < 4:
            continue
        for name, col, how, sign, unit in C3:
            w = _per_seed(sub, col, how, four)
            a, b = sign * (w[four[0]] - w[four[1]]), sign * (w[four[2]] - w[four[3]])
            if name in reads:  # a primary test's comparisons: one per data set and seed
                rows[reads[name]].append(
                    pd.DataFrame({"diff": (a - b).to_numpy(), "dataset": ds, "seed": w.index.to_numpy()})
                )
            if how == "rate":
                mean, lo, hi = ci(a.to_numpy(), paired=b.to_numpy(), n_boot=s.bootstrap, level=s.ci_level)
            else:
                mean, lo, hi = ci((a - b).to_numpy(), level=s.ci_level)
            eps.append(
                Endpoint(
                    measure=name,
                    effect=mean,
                    lo=lo,
                    hi=hi,
                    n=len(w),
                    unit=f"{unit} (+ = standardizing worse)",
                    variant=four[0],
                    twin=four[1],
                    minus_variant=four[2],
                    minus_twin=four[3],
                    dataset=ds,
                    decides=len(w) >= s.min_members,
                )
            )
    # the retired rules read the first eight endpoints on the data sets with non-zero input mean
    nonzero = set(_nonzero_mean(m, s))
    old = [e for e in eps if e.decides and e.dataset in nonzero and e.measure != "divergence rate"]
    legacy = {"ffaf633": any_side_status(old), "count": count_status(old, s.ci_level)}
    shown = [e for e in eps if e.dataset in nonzero and (e.lo > 0 or e.hi < 0)]
    ev = (
        "Excess of standardize_detached over its twin minus the excess of center_detached over its twin, "
        "paired by seed; intervals excluding 0 on data sets with non-zero input mean: "
        + ("; ".join(e.text() for e in shown) if shown else "none")
        + "."
    )
    comparisons = {
        k: (pd.concat(v, ignore_index=True) if v else pd.DataFrame(columns=["diff", "dataset", "seed"]))
        for k, v in rows.items()
    }
    return Judgement([replace(e, decides=False) for e in eps], ev, comparisons=comparisons, legacy=legacy)
