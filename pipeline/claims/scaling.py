"""Claim 3 (measurement): worse when the normalization also scales -- the endpoints C3, each read
per seed (_per_seed) as standardize_detached's excess over its twin minus center_detached's.

    from pipeline.claims.scaling import C3, judge_worse_scaling
"""
from __future__ import annotations

import numpy as np
import pandas as pd

from pipeline.claims.base import Endpoint, _count, _nonzero_mean, _read_signs
from pipeline.outcomes import ci


# -- claim 3: worse when the normalization also scales -------------------------------------------
C3 = (  # endpoint, member column, how per seed, sign (+1: a larger value is worse), unit
    ("blow-up rate (diverged or blew_up)", "blown", "rate", 1, "fraction"),
    ("failure rate (not trained)", "failed_", "rate", 1, "fraction"),
    ("final full-set loss, train mode, matched lr", "full_loss_train", "mean", 1, "nats"),
    ("final full-set accuracy deficit, train mode, matched lr", "full_acc_train", "mean", -1, "accuracy"),
    ("final full-set loss, train mode, each variant's best lr", "full_loss_train", "best", 1, "nats"),
    ("final full-set accuracy deficit, train mode, each variant's best lr", "full_acc_train", "best", -1, "accuracy"),
    ("log10 W growth factor (largest layer), matched lr", "log_w_growth", "mean", 1, "log10"),
    ("steps to target loss (censored at T), matched lr", "steps_censored", "mean", 1, "steps"),
)


def _per_seed(sub: pd.DataFrame, col: str, how: str, four: list[str]) -> pd.DataFrame:
    """seed x variant: the mean over lrs (rows where all four members have a value), or the value
    at each variant's best lr (lowest mean train-mode loss among lrs where no seed diverged)."""
    wide = sub.set_index(["lr", "seed", "variant"])[col].unstack("variant").reindex(columns=four)
    if how != "best":
        return wide.dropna().groupby(level="seed").mean()
    out = {}
    for v in four:
        g = sub[sub["variant"] == v]
        ok = g.groupby("lr").filter(lambda x: not x["diverged"].any())
        if ok.empty:
            return pd.DataFrame(columns=four)
        best = ok.groupby("lr")["full_loss_train"].mean().idxmin()
        out[v] = g[g["lr"] == best].set_index("seed")[col]
    return pd.DataFrame(out).reindex(columns=four).dropna()


def judge_worse_scaling(m, hist, s):
    sd, cd = "standardize_detached", "center_detached"
    four = [sd, s.twins.get(sd, [""])[0], cd, s.twins.get(cd, [""])[0]]
    m = m.assign(failed_=(~m["trained"]).astype(float), blown=m["blown"].astype(float),
                 # a diverged member's last finite ||W|| says nothing about its growth
                 log_w_growth=np.log10(m["w_growth_max"].where((m["w_growth_max"] > 0) & ~m["diverged"].astype(bool))),
                 steps_censored=m["steps_to_target"].fillna(m["steps"].astype(float)))
    eps = []
    for ds in _nonzero_mean(m, s):
        sub = m[(m["dataset"] == ds) & m["variant"].isin(four)]
        if sub["variant"].nunique() < 4:
            continue
        for name, col, how, sign, unit in C3:
            w = _per_seed(sub, col, how, four)
            a, b = sign * (w[four[0]] - w[four[1]]), sign * (w[four[2]] - w[four[3]])
            if how == "rate":
                mean, lo, hi = ci(a.to_numpy(), paired=b.to_numpy(), n_boot=s.bootstrap, level=s.ci_level)
            else:
                mean, lo, hi = ci((a - b).to_numpy(), level=s.ci_level)
            eps.append(Endpoint(measure=name, effect=mean, lo=lo, hi=hi, n=len(w),
                                unit=f"{unit} (+ = standardizing worse)", variant=four[0], twin=four[1],
                                minus_variant=four[2], minus_twin=four[3], dataset=ds,
                                decides=len(w) >= s.min_members))
    decided = [e for e in eps if e.decides]
    status, up, down = _read_signs(decided, s.ci_level)
    ev = ("Excess of standardize_detached over its twin minus the excess of center_detached over its twin, "
          f"paired by seed, data sets with non-zero input mean: "
          f"{_count(up, down, len(decided), 'show standardizing worse', 'show it better')}"
          + ("; " + "; ".join(e.text() for e in decided if e.lo > 0 or e.hi < 0)
             if up or down else "") + ".")
    return status, eps, ev, None
