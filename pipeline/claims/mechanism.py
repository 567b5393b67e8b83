"""Claim 4's mechanism, measured beside its predictions: W's growth along the input-mean direction, the
radial part of dl/dW, and a predicted time to divergence.

    from pipeline.claims.mechanism import member_mechanism, growth_table, radial_table, prediction_table
    mech = member_mechanism(histories, members)            # one row per member (NaN where not recorded)

The theory (docs/science.md, "Claim 4's mechanism"). A layer x = uW + b whose normalization's gradient
ignores its statistics has dl/dW = u^T d and dl/db = sum_i d_i (d = dl/dx per example), so

    dl/dW = (u - u_bar_B)^T d + u_bar_B (dl/db)^T

for EVERY variant; with the gradient through a centering (center, bn) dl/db = 0 and the rank-1 term is gone.
Under SGD (with or without momentum: W and b see the same linear filter) the rank-1 term moves W along the
input-mean direction m = E[u]/||E[u]|| by m^T dW = (m . u_bar_B) db ~ ||u_bar|| db at every step, so

    ||m^T (W_t - W_0)||  ~  ||u_bar|| ||b_t - b_0||  =  lr ||u_bar|| ||sum_s G_s||,    G_s = dl/db_s,

its per-step increment is lr (m . u_bar_B) ||G_t||, and the prediction is exact when the batch is constant
and the inputs vary only orthogonally to their mean (then the centred term has no component along m:
tests/test_mechanism.py). Elsewhere the centred term adds to it, and `drift_ratio` = measured / predicted says
how much of W's drift along m the rank-1 term accounts for. In training mode b cancels (claim 1) and cannot
make a net diverge; W's component along m does not cancel: it multiplies the inputs' spread along m, ((u_i -
u_bar_B) . m) (m^T W), and grows the layer's output, the next layers' inputs and their curvature.

Predicted time to divergence (assumptions stated, each checkable in the table): (A1) the level W reaches along
m is the rank-1 prediction L_t = ||u_bar|| ||b_t - b_0|| (the drift_ratio column checks it); (A2) a member
diverges when lr x L_t reaches a constant c of its data set, the same at every lr (a step of size lr along a
direction whose curvature grows with L); c is read, per data set, from the OTHER lrs: the median of lr x L at
the last logged step before divergence over the detached-centering members that diverged there (members that
diverged before their first logged step after init carry no level, and lrs at which the twin itself diverges
in half its seeds or more are too large for the data set whatever the gradient does: both are left out). The predicted step is
the first logged step with lr x L_t >= c, or, where the record ends below c, where a line through its last
quarter reaches c (`crossing`); later than the run's end: predicted to survive it. With a steady drive (||b_t -
b_0|| = lr g t, claim 2's alpha = 1) this is the closed form t* = c / (lr^2 ||u_bar|| g): the time to
divergence falls as 1/lr^2. For the twins b does not move, L_t ~ 0 and nothing is predicted: a twin that
diverges does so by another route (a learning rate too large for the data set from the start). Adam rescales
W's and b's steps per coordinate differently: the prediction is for SGD.

Radial part of dl/dW: <W, grad W> / ||W|| per layer (recorded as radial/l<i>), tangential^2 = ||grad W||^2 -
radial^2. Under bn and standardize (statistics with the gradient through, eps aside) the layer is scale
invariant per unit and the radial part is 0 exactly; under standardize_detached it is not. Per member and
layer `radial_share` = sqrt(sum radial^2 / sum ||grad W||^2) over the logged steps before divergence.
"""

from __future__ import annotations

import math

import numpy as np
import pandas as pd

from pipeline.spec.records import layer_column
from pipeline.spec.variants import NORM_SPECS

LEVEL, LEVEL0, DRIFT, B_DRIFT = (
    layer_column("mean_dir_W", 0),
    layer_column("mean_dir_W0", 0),
    layer_column("mean_dir_drift", 0),
    layer_column("b_drift", 0),
)


def rank_one_variants(norms) -> set[str]:
    """Norm names whose gradient ignores a mean they subtract (the rank-1 term's variants), by spec."""
    return {n for n in norms if (spec := NORM_SPECS.get(n)) is not None and spec.detached and spec.centers}


def _logged(h: pd.DataFrame) -> pd.DataFrame:
    w0 = layer_column("W_norm", 0)
    return h[h[w0].notna()] if w0 in h else h.iloc[0:0]


def member_mechanism(hist: pd.DataFrame | None, members: pd.DataFrame) -> pd.DataFrame:
    """One row per member: cell, member, variant, dataset, lr, seed, depth, input_mean_norm, status, diverged,
    time (divergence step, or the run's steps); from its logged rows before divergence: `level0` and
    `level` (||m^T W|| at init and at the last such row, `t_level` its step), `growth` = level / level0,
    `drift` (||m^T (W - W_0)||), `drift_pred` (||u_bar|| ||b - b_0||) and `drift_ratio` = drift /
    drift_pred there, `radial_share/l<i>` per hidden layer. NaN where the history lacks the column (conv
    nets, records written before mean_dir_drift, no b)."""
    keys = [
        "cell",
        "member",
        "variant",
        "dataset",
        "norm",
        "lr",
        "seed",
        "depth",
        "input_mean_norm",
        "status",
        "diverged_step",
        "steps",
        "loss_fixed",
    ]
    base = members[[k for k in keys if k in members]].copy()
    out: dict[str, list] = {k: [] for k in ("level0", "level", "t_level", "drift", "drift_pred")}
    depth = int(members["depth"].max()) if len(members) else 0
    radial: dict[int, list] = {i: [] for i in range(depth)}
    groups = (
        dict(tuple(_logged(hist).groupby(["cell", "member"], sort=False))) if hist is not None and len(hist) else {}
    )
    for r in base.itertuples(index=False):
        h = groups.get((r.cell, r.member))
        if h is not None and math.isfinite(r.diverged_step):
            h = h[h["step"] < r.diverged_step]
        if h is None or h.empty:
            for v in out.values():
                v.append(float("nan"))
            for v in radial.values():
                v.append(float("nan"))
            continue
        h = h.sort_values("step")
        last = h.iloc[-1]
        out["level0"].append(float(h[LEVEL].iloc[0]) if LEVEL in h else float("nan"))
        out["level"].append(float(last[LEVEL]) if LEVEL in h else float("nan"))
        out["t_level"].append(float(last["step"]))
        out["drift"].append(float(last[DRIFT]) if DRIFT in h else float("nan"))
        out["drift_pred"].append(float(r.input_mean_norm * last[B_DRIFT]) if B_DRIFT in h else float("nan"))
        for i in radial:
            rc, gc = layer_column("radial", i), layer_column("grad_W", i)
            if rc in h and gc in h:
                rr, gg = h[rc].to_numpy(float), h[gc].to_numpy(float)
                ok = np.isfinite(rr) & np.isfinite(gg)
                g2 = float((gg[ok] ** 2).sum())
                radial[i].append(math.sqrt(float((rr[ok] ** 2).sum()) / g2) if g2 > 0 else float("nan"))
            else:
                radial[i].append(float("nan"))
    t = base.assign(**out, **{layer_column("radial_share", i): v for i, v in radial.items()})
    t["diverged"] = t["status"] == "diverged"
    t["time"] = np.where(t["diverged"] & t["diverged_step"].notna(), t["diverged_step"], t["steps"]).astype(float)
    # a member that diverged before its first logged step after init has no level to read
    nothing = t["t_level"] <= 0
    t.loc[nothing, ["level", "drift", "drift_pred"]] = np.nan
    t["growth"] = t["level"] / t["level0"]
    t["drift_ratio"] = t["drift"] / t["drift_pred"]
    return t


def _geo(x) -> tuple[float, float, float]:
    """Geometric mean over seeds with a Student-t interval on the logs (growth factors are skewed)."""
    from pipeline.outcomes import ci

    x = np.asarray(x, float)
    x = x[np.isfinite(x) & (x > 0)]
    if not len(x):
        return float("nan"), float("nan"), float("nan")
    m, lo, hi = ci(np.log(x))
    return (
        math.exp(m),
        math.exp(lo) if math.isfinite(lo) else float("nan"),
        math.exp(hi) if math.isfinite(hi) else float("nan"),
    )


GROWTH_COLUMNS = [
    "variant",
    "twin",
    "dataset",
    "depth",
    "lr",
    "n",
    "growth",
    "growth_lo",
    "growth_hi",
    "twin_growth",
    "twin_growth_lo",
    "twin_growth_hi",
    "drift",
    "drift_pred",
    "drift_ratio",
    "twin_drift",
    "diverged",
    "twin_diverged",
]


def growth_table(mech: pd.DataFrame, twins: dict) -> pd.DataFrame:
    """Per detached variant vs its first twin (report.twins), data set, depth and lr: the geometric mean over
    seeds of ||m^T W|| / ||m^T W_0|| (at the last logged step before divergence) with its interval, for both;
    the median drift along m, its rank-1 prediction and their ratio (detached), the twin's drift; divergences."""
    rows = []
    present = set(mech["variant"])
    for det, ts in twins.items():
        if det not in present or not ts or ts[0] not in present:
            continue
        twin = ts[0]
        for (ds, depth, lr), g in mech[mech["variant"] == det].groupby(["dataset", "depth", "lr"], sort=False):
            tw = mech[
                (mech["variant"] == twin) & (mech["dataset"] == ds) & (mech["depth"] == depth) & (mech["lr"] == lr)
            ]
            gm, glo, ghi = _geo(g["growth"])
            tm, tlo, thi = _geo(tw["growth"])
            rows.append(
                {
                    "variant": det,
                    "twin": twin,
                    "dataset": ds,
                    "depth": depth,
                    "lr": lr,
                    "n": len(g),
                    "growth": gm,
                    "growth_lo": glo,
                    "growth_hi": ghi,
                    "twin_growth": tm,
                    "twin_growth_lo": tlo,
                    "twin_growth_hi": thi,
                    "drift": g["drift"].median(),
                    "drift_pred": g["drift_pred"].median(),
                    "drift_ratio": g["drift_ratio"].median(),
                    "twin_drift": tw["drift"].median(),
                    "diverged": int(g["diverged"].sum()),
                    "twin_diverged": int(tw["diverged"].sum()),
                }
            )
    return pd.DataFrame(rows, columns=GROWTH_COLUMNS)


def radial_table(mech: pd.DataFrame) -> pd.DataFrame:
    """Per variant and data set: the median over members and layers of the radial share of dl/dW (and the
    largest), with the tangential share sqrt(1 - radial^2) at that median."""
    cols = [c for c in mech.columns if c.startswith("radial_share/")]
    if not cols:
        return pd.DataFrame(
            columns=["variant", "dataset", "members", "radial_share", "radial_share_max", "tangential_share"]
        )
    long = mech.melt(id_vars=["variant", "dataset"], value_vars=cols, value_name="share").dropna(subset=["share"])
    agg = long.groupby(["variant", "dataset"], sort=False)["share"].agg(["median", "max", "size"]).reset_index()
    return pd.DataFrame(
        {
            "variant": agg["variant"],
            "dataset": agg["dataset"],
            "members": agg["size"],
            "radial_share": agg["median"],
            "radial_share_max": agg["max"],
            "tangential_share": np.sqrt(np.clip(1 - agg["median"] ** 2, 0, 1)),
        }
    )


# -- the predicted time to divergence -------------------------------------------------------------------
def _rank1(mech: pd.DataFrame) -> pd.Series:
    return mech["norm"].isin(rank_one_variants(set(mech["norm"]))) & ~mech["loss_fixed"].astype(bool)


def _twin_fails(mech: pd.DataFrame, twins: dict | None) -> pd.Series:
    """Per row: whether, at its (data set, depth, lr), at least half of its first twin's members diverged."""
    if not twins:
        return pd.Series(False, index=mech.index)
    rate = mech.groupby(["variant", "dataset", "depth", "lr"])["diverged"].mean()
    keys = zip([(twins.get(v) or [None])[0] for v in mech["variant"]], mech["dataset"], mech["depth"], mech["lr"])
    return pd.Series([bool(rate.get(k, 0.0) >= 0.5) for k in keys], index=mech.index)


def divergence_level(mech: pd.DataFrame, twins: dict | None = None) -> pd.DataFrame:
    """lr x L (L = drift_pred, the rank-1 prediction of W's level along m) at the last logged step before
    divergence, per diverged member of a rank-1 variant that has such a step after init and whose twin (first
    of `twins`) mostly survived that lr: the thresholds. Where the twin itself diverges the lr is too large for
    the data set whatever the gradient does, and such a divergence says nothing about this route."""
    d = mech[
        _rank1(mech) & mech["diverged"] & (mech["t_level"] > 0) & mech["drift_pred"].notna() & ~_twin_fails(mech, twins)
    ]
    return d.assign(eta_level=d["lr"] * d["drift_pred"])[["dataset", "depth", "lr", "variant", "seed", "eta_level"]]


def predict_divergence(hist: pd.DataFrame | None, mech: pd.DataFrame, twins: dict | None = None) -> pd.DataFrame:
    """Per member: `c` (the median lr x L at divergence over the rank-1 members of its data set and depth that
    diverged at OTHER lrs; NaN: none did), `t_pred`, the step at which lr x ||u_bar|| ||b_t - b_0|| reaches c
    (`crossing`, from the logged steps before it diverged; NaN: no c, a level not growing, or a variant without
    the rank-1 term -- a twin), and `predicted` = t_pred within the run. `twins`: report.twins (the thresholds
    leave out lrs where the first twin diverged in half its members or more)."""
    levels = divergence_level(mech, twins)
    c = []
    for r in mech.itertuples(index=False):
        other = levels[(levels["dataset"] == r.dataset) & (levels["depth"] == r.depth) & (levels["lr"] != r.lr)]
        c.append(float(other["eta_level"].median()) if len(other) else float("nan"))
    out = mech.assign(c=c)
    t_pred = np.full(len(out), np.nan)
    rank1 = _rank1(out).to_numpy()
    if hist is not None and len(hist) and B_DRIFT in hist:
        lg = _logged(hist)
        groups = dict(tuple(lg[["cell", "member", "step", B_DRIFT]].groupby(["cell", "member"], sort=False)))
        for j, r in enumerate(out.itertuples(index=False)):
            h = groups.get((r.cell, r.member))
            if h is None or not math.isfinite(r.c) or not rank1[j]:  # a twin: no rank-1 term, nothing predicted
                continue
            if math.isfinite(r.diverged_step):  # predicted from what was there before the member diverged
                h = h[h["step"] < r.diverged_step]
            h = h.sort_values("step")
            t_pred[j] = crossing(h["step"].to_numpy(float), r.lr * r.input_mean_norm * h[B_DRIFT].to_numpy(float), r.c)
    return out.assign(t_pred=t_pred, predicted=t_pred <= out["steps"].astype(float).to_numpy())


def crossing(steps: np.ndarray, level: np.ndarray, c: float) -> float:
    """The first logged step with level >= c; if the record ends below c (the run ended, or the member
    diverged first), the step a straight line through the last quarter of the logged levels (at least two)
    reaches c -- so a member that diverged a little before its predicted level is read as predicted a little
    late, not as missed. NaN: no finite level, or a level that is not growing at the end."""
    ok = np.isfinite(level)
    steps, level = steps[ok], level[ok]
    hit = np.flatnonzero(level >= c)
    if len(hit):
        return float(steps[hit[0]])
    k = max(2, len(steps) // 4)
    if len(steps) < 2:
        return float("nan")
    slope = np.polyfit(steps[-k:], level[-k:], 1)[0]
    return float(steps[-1] + (c - level[-1]) / slope) if slope > 0 else float("nan")


PREDICTION_COLUMNS = [
    "variant",
    "dataset",
    "depth",
    "lr",
    "n",
    "eta_level",
    "c",
    "diverged",
    "predicted",
    "agree",
    "median_step",
    "median_step_pred",
    "log_ratio",
]


def prediction_table(pred: pd.DataFrame, twins: dict | None = None) -> pd.DataFrame:
    """Per variant, data set, depth and lr: members; `eta_level`, the median lr x L at divergence of this
    group's own diverged members (A2 holds if it is the same at every lr); the threshold c read from the other
    lrs; measured and predicted divergences within the run and how many members the prediction classed right;
    the median measured and predicted step among those that diverged / were predicted to; `log_ratio`, the
    median of log(t_pred / t) over the members that diverged (0: on time; + predicted late)."""
    rows = []
    levels = divergence_level(pred, twins)
    for (v, ds, depth, lr), g in pred.groupby(["variant", "dataset", "depth", "lr"], sort=False):
        own = levels[
            (levels["variant"] == v) & (levels["dataset"] == ds) & (levels["depth"] == depth) & (levels["lr"] == lr)
        ]
        hit = g[g["diverged"] & g["t_pred"].notna() & (g["time"] > 0)]
        rows.append(
            {
                "variant": v,
                "dataset": ds,
                "depth": depth,
                "lr": lr,
                "n": len(g),
                "eta_level": own["eta_level"].median(),
                "c": g["c"].median(),
                "diverged": int(g["diverged"].sum()),
                "predicted": int(g["predicted"].sum()),
                "agree": int((g["diverged"] == g["predicted"]).sum()) if g["c"].notna().any() else np.nan,
                "median_step": g.loc[g["diverged"], "time"].median(),
                "median_step_pred": g.loc[g["predicted"], "t_pred"].median(),
                "log_ratio": float(np.median(np.log(hit["t_pred"] / hit["time"]))) if len(hit) else np.nan,
            }
        )
    return pd.DataFrame(rows, columns=PREDICTION_COLUMNS)


# -- claim 4's descriptive endpoints ---------------------------------------------------------------------
GROWTH = "W along the input mean: ||m^T W_T|| / ||m^T W_0||, first layer (geometric mean over seeds)"
DRIFT_RATIO = "W's drift along the input mean over its rank-1 prediction ||u_bar|| ||b_T - b_0|| (median over seeds)"


def growth_endpoints(m: pd.DataFrame, hist: pd.DataFrame | None, settings) -> list:
    """Per report.twins pair (first twin), data set and lr: the growth factor of each arm and the detached arm's
    drift ratio; nothing where the history has no mean_dir_W (conv nets) or no history is given."""
    from pipeline.spec.endpoints import Endpoint

    if hist is None or LEVEL not in hist:
        return []
    table = growth_table(member_mechanism(hist, m), settings.twins)
    out = []
    for r in table.itertuples(index=False):
        where = dict(dataset=r.dataset, lr=r.lr, layer=0)
        out.append(
            Endpoint(
                measure=GROWTH,
                effect=r.growth,
                lo=r.growth_lo,
                hi=r.growth_hi,
                n=r.n,
                unit="x",
                variant=r.variant,
                note=f"{r.diverged} diverged",
                **where,
            )
        )
        out.append(
            Endpoint(
                measure=GROWTH,
                effect=r.twin_growth,
                lo=r.twin_growth_lo,
                hi=r.twin_growth_hi,
                n=r.n,
                unit="x",
                variant=r.twin,
                over=f"twin of {r.variant}",
                note=f"{r.twin_diverged} diverged",
                **where,
            )
        )
        out.append(
            Endpoint(
                measure=DRIFT_RATIO,
                effect=r.drift_ratio,
                n=r.n,
                variant=r.variant,
                note=f"drift {r.drift:.3g}, predicted {r.drift_pred:.3g}",
                **where,
            )
        )
    return out
