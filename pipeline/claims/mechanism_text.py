"""The clauses of claim 4's answer sentence that say how the model blows up: sooner as well as more often
(time to divergence), where the twin itself fails, and what grows (W along the input mean, not b).

    from pipeline.claims.mechanism_text import mechanism_clause
    sentence += mechanism_clause(v4, members, settings)     # "" where nothing could be read

Every number comes from typed fields: the survival test is recomputed from the member table
(pipeline.claims.divergence_time), the growth factors are claim 4's GROWTH endpoints (they need the
histories, which the answer does not get), the twin's failures are the member table's statuses.
"""

from __future__ import annotations

import math

import pandas as pd

from pipeline.claims.divergence_time import divergence_time_tests
from pipeline.claims.mechanism import GROWTH


def _x(v: float) -> str:
    return f"x{v:.2g}" if math.isfinite(v) else "n/a"


def twin_fails_from(members: pd.DataFrame, twin: str) -> dict[str, float]:
    """Per data set: the smallest lr from which, at every larger lr of the grid too, at least half of the twin's
    seeds diverged (absent: no such lr)."""
    out = {}
    t = members[members["variant"] == twin]
    for ds, g in t.groupby("dataset", sort=False):
        rate = g.assign(d=g["status"] == "diverged").groupby("lr")["d"].mean().sort_index()
        failing = (rate >= 0.5).to_numpy()
        if failing.any() and failing[-1]:
            start = len(failing) - 1
            while start > 0 and failing[start - 1]:
                start -= 1
            out[ds] = float(rate.index[start])
    return out


def _time_clause(members, settings) -> str:
    pooled = next((t for t in divergence_time_tests(members, settings) if t.role == "pooled"), None)
    if pooled is None or not pooled.result.var > 0:
        return ""
    r = pooled.result
    lo, hi = r.hazard_ratio_interval()
    return (
        f"; timing read as survival data, the detached arm's hazard of diverging was {r.hazard_ratio:.2g} times "
        f"the twin's [{lo:.2g}, {hi:.2g}] (stratified log-rank, descriptive: p {r.p_flip:.2g} by swapping arms "
        f"within seeds)"
    )


def _twin_clause(members, twin: str) -> str:
    fails = twin_fails_from(members, twin)
    if not fails:
        return ""
    parts = [f"lr >= {lr:g} on {ds}" for ds, lr in fails.items()]
    return (
        f"; {twin} itself diverged (half the seeds or more) at "
        + ", ".join(parts)
        + ", where detaching has little to add"
    )


def _growth_clause(v4, det: str, twin: str, datasets: list[str]) -> str:
    es = [e for e in v4.endpoints if e.measure == GROWTH and math.isfinite(e.effect)]
    parts = []
    for ds in datasets:
        mine = [e.effect for e in es if e.variant == det and e.dataset == ds and e.over is None]
        theirs = [e.effect for e in es if e.variant == twin and e.dataset == ds and e.over == f"twin of {det}"]
        if mine and theirs:
            parts.append(
                f"{_x(min(mine))}-{_x(max(mine))} under {det} against {_x(min(theirs))}-{_x(max(theirs))} "
                f"under {twin} on {ds}"
            )
    if not parts:
        return ""
    return (
        "; what grows is W along the input mean, by the rank-1 term u_bar (dl/db)^T that ignoring the mean "
        "leaves in dl/dW (||m^T W_T|| / ||m^T W_0||, first layer, over the lrs: "
        + "; ".join(parts)
        + "), not b, which cancels in training mode"
    )


def mechanism_clause(v4, members: pd.DataFrame, settings) -> str:
    """The clauses appended to claim 4's answer sentence (each left out where its numbers are missing)."""
    det = settings.blowup_deciders[0] if settings.blowup_deciders else None
    twin = settings.twins.get(det, [None])[0] if det else None
    if v4 is None or det is None or twin is None or "variant" not in members:
        return ""
    ds = list(dict.fromkeys(members.loc[members["input_mean_norm"].fillna(0) > settings.nonzero_mean, "dataset"]))
    return _time_clause(members, settings) + _twin_clause(members, twin) + _growth_clause(v4, det, twin, ds)
