"""The predictions-beside-measurements sections under claims 2 and 1b (issue 19 items 1a, 1d, 2): per claim-2 subject, what
b's own drive predicts (bounded or unbounded, from its decay kappa) beside what b did; and claim 1b's inference
leak predicted from lr, the drive and the EMA momentum beside the measured split. pipeline/drive.py holds the
estimators and the algebra; this module only tabulates and draws.

    from pipeline.report.bounded import FIGURES, claim1b_section, claim2_section
    lines = claim2_section(ctx)                  # Markdown under claim 2's verdict (pipeline/report/render.py)

Figure (registered in pipeline/report/figures.py): leak_prediction, per member b's share of the inference gap,
predicted -(lr/m) sum ||Gbar||^2 against measured. Claim 2's drive and drift on log-log: pipeline/report/
drive_figure.py (drive_decay).
"""

from __future__ import annotations

import math

import numpy as np
import pandas as pd

from pipeline.claims.growth import subjects, window_text
from pipeline.outcomes import alpha_window, ci
from pipeline.report.plotting import Drawn, FigureData, palette, plain_ticks, plt_, save
from pipeline.spec.records import layer_column


def _fmt(m: float, lo: float = float("nan"), hi: float = float("nan")) -> str:
    if not math.isfinite(m):
        return "–"
    return f"{m:.3g}" + (f" [{lo:.3g}, {hi:.3g}]" if math.isfinite(lo) else "")


def reading(lo: float, hi: float, smallest: float) -> str:
    """The prediction from kappa's interval over seeds: bounded (above 1), unbounded (below 1), the edge (inside
    1 +/- the declared smallest effect: logarithmic growth), undecided otherwise."""
    if not (math.isfinite(lo) and math.isfinite(hi)):
        return "undecided"
    if lo > 1:
        return "bounded"
    if hi < 1:
        return "unbounded"
    if 1 - smallest < lo and hi < 1 + smallest:
        return "edge (log growth)"
    return "undecided"


def bounded_table(members: pd.DataFrame, settings) -> pd.DataFrame:
    """One row per claim-2 subject (surviving detached member of a real network) group: variant, data set, lr,
    layer; kappa with its interval over seeds and the reading it predicts; alpha per doubling window; persistence;
    the measured drift ||b_T - b_0||; and how many of the group's members diverged (they leave claim 2)."""
    real = subjects(members)
    if real.empty or not any(c.startswith("kappa/") for c in real.columns):
        return pd.DataFrame()
    level, smallest = settings.ci_level, settings.primary["claim2"].smallest_effect
    depth = int(real["depth"].max())
    rows = []
    for (v, ds, lr), g in real.groupby(["variant", "dataset", "lr"], sort=False):
        every = members[(members["variant"] == v) & (members["dataset"] == ds) & (members["lr"] == lr)]
        for layer in range(depth):
            col = lambda q: layer_column(q, layer)  # noqa: E731, B023 (used within the iteration)
            if col("kappa") not in g or g[col("kappa")].isna().all():
                continue
            k, lo, hi = ci(g[col("kappa")], level=level)
            row = {
                "variant": v,
                "data set": ds,
                "lr": lr,
                "layer": f"l{layer}",
                "n": int(g[col("kappa")].notna().sum()),
                "diverged": int((every["status"] == "diverged").sum()),
                "kappa [CI]": _fmt(k, lo, hi),
                "predicted": reading(lo, hi, smallest),
            }
            for w in range(settings.alpha_windows):
                if col(alpha_window(w)) in g:
                    row[f"alpha {window_text(w)}"] = _fmt(*ci(g[col(alpha_window(w))], level=level))
            row["persistence"] = _fmt(*ci(g[col("gsum_persist")], level=level)) if col("gsum_persist") in g else "–"
            row["drift ||b_T - b_0||"] = _fmt(*ci(g[col("b_drift")], level=level)) if col("b_drift") in g else "–"
            rows.append(row)
    return pd.DataFrame(rows)


def leak_table(members: pd.DataFrame, settings) -> pd.DataFrame:
    """Per detached batch variant, data set and lr (members whose running mean holds EMA(b)): b's share of the
    inference gap measured and predicted, and ||b_T - EMA(b)|| of the first layer measured and predicted."""
    from pipeline.spec.variants import names_where

    if "loss_gap_b_pred" not in members:
        return pd.DataFrame()
    batch = names_where(lambda spec: spec.detached_batch)
    m = members[
        members["norm"].isin(batch)
        & (members["status"] != "diverged")
        & members["loss_gap_b_pred"].notna()
        & (members["trainable"] == "all")
    ]
    rows = []
    for (v, ds, lr), g in m.groupby(["variant", "dataset", "lr"], sort=False):
        lag, pred = layer_column("b_lag", 0), layer_column("b_lag_pred", 0)
        rows.append(
            {
                "variant": v,
                "data set": ds,
                "lr": lr,
                "n": len(g),
                "b's share, measured (nats)": _fmt(*ci(g["loss_gap_b"], level=settings.ci_level)),
                "predicted -(lr/m) sum ||Gbar||^2": _fmt(*ci(g["loss_gap_b_pred"], level=settings.ci_level)),
                "||b_T - EMA(b)|| l0, measured": _fmt(*ci(g[lag], level=settings.ci_level)) if lag in g else "–",
                "predicted": _fmt(*ci(g[pred], level=settings.ci_level)) if pred in g else "–",
                "share": g["loss_gap_b"].mean(),
                "share_pred": g["loss_gap_b_pred"].mean(),
                "lag": g[lag].mean() if lag in g else float("nan"),
                "lag_pred": g[pred].mean() if pred in g else float("nan"),
            }
        )
    return pd.DataFrame(rows)


IDENTITY = (
    "**Identity, not evidence:** b_T - b_0 = -lr sum_t G_t is SGD's update rule (the `b_drift_pred` record "
    "equals `b_drift` to float rounding), so the question is whether that sum converges."
)


def claim2_summary(b: pd.DataFrame) -> pd.DataFrame:
    """The bounded table condensed per variant and data set: how many (lr, layer) subjects each reading got, the
    median kappa and the largest median drift -- the Markdown's table; every subject is in the CSV."""
    rows = []
    for (v, ds), g in b.groupby(["variant", "data set"], sort=False):
        counts = g["predicted"].value_counts()
        kappa = pd.to_numeric(g["kappa [CI]"].str.split(" ").str[0], errors="coerce")
        rows.append(
            {
                "variant": v,
                "data set": ds,
                "subjects (lr x layer)": len(g),
                **{r: int(counts.get(r, 0)) for r in ("unbounded", "edge (log growth)", "undecided", "bounded")},
                "median kappa": _fmt(float(kappa.median())),
                "lrs": ", ".join(f"{x:g}" for x in sorted(g["lr"].unique())),
                "diverged members": int(g.drop_duplicates("lr")["diverged"].sum()),
            }
        )
    return pd.DataFrame(rows)


def write_tables(tabdir, members: pd.DataFrame, settings) -> dict:
    """tables/claim2_prediction.csv (every claim-2 subject group) and tables/claim1b_prediction.csv (every
    detached batch variant, data set and lr); returns name -> frame for the sections."""
    out = {"claim2_prediction": bounded_table(members, settings), "claim1b_prediction": leak_table(members, settings)}
    for name, frame in out.items():
        if not frame.empty:
            frame.to_csv(tabdir / f"{name}.csv", index=False)
    return {k: v for k, v in out.items() if not v.empty}


def claim2_section(ctx) -> list[str]:
    """The Markdown under claim 2's verdict: per variant and data set, what b's drive predicts (counts of subjects
    per reading); [] where the records carry no drive (cells written before it)."""
    from pipeline.report.markdown import md_table

    s = ctx.params.report
    b = ctx.tables.get("claim2_prediction", pd.DataFrame())
    if b.empty:
        return []
    return [
        "#### claim2's prediction beside its measurement: bounded or not, per subject",
        "",
        IDENTITY + " "
        "**Prediction:** the drive over doubling windows, ||sum_[t/2,t) G|| / (t/2) ~ t^-kappa: kappa > 1 -- b's "
        "increments over successive doubling windows shrink geometrically, b is bounded; kappa <= 1 -- unbounded "
        "(a systematic drive ||Gbar|| ~ t^-k gives kappa = k; zero-mean mini-batch noise ~ t^-nu gives kappa = "
        "nu + 1/2: one threshold). Each subject (variant, data set, lr, layer) is read from kappa's "
        f"{s.ci_level:.0%} interval over seeds: above 1 bounded, below 1 unbounded, inside 1 +/- "
        f"{s.primary['claim2'].smallest_effect:g} the edge (log growth), else undecided. **Measured** beside it "
        "(every subject, in [tables/claim2_prediction.csv](tables/claim2_prediction.csv)): alpha of ||b_t - b_0|| "
        "~ t^alpha per doubling window (alpha > 0 in the last: b still moving away), the persistence "
        "||sum G|| / sum ||G|| (systematic ~1, noise ~1/sqrt(steps)) and the drift itself. Diverged members leave "
        "claim 2 (claim 4 reads them). Figure `drive_decay`: b's drift with the identity, and its drive on "
        "log-log against 1/t.",
        "",
        md_table(claim2_summary(b)),
        "",
    ]


def leak_summary(leak: pd.DataFrame) -> pd.DataFrame:
    """Per variant and data set, one column per lr: measured / predicted for b's share of the inference gap and,
    in brackets, for the first layer's lag ||b_T - EMA(b)|| (ratios of the means over seeds)."""

    def ratio(a, b):
        return _fmt(a / b) if math.isfinite(a) and math.isfinite(b) and b != 0 else "–"

    cells = leak.assign(
        text=[f"{ratio(r.share, r.share_pred)} ({ratio(r.lag, r.lag_pred)})" for r in leak.itertuples()]
    )
    piv = cells.pivot_table(index=["variant", "data set"], columns="lr", values="text", aggfunc="first", sort=False)
    piv.columns = [f"lr {c:g}" for c in piv.columns]
    return piv.fillna("–").reset_index()


def claim1b_section(ctx) -> list[str]:
    """The Markdown under claim 1b's verdict: b's share of the inference gap predicted from lr, the drive and the
    EMA momentum, beside the measured split; [] where the records carry no drive."""
    from pipeline.report.markdown import md_table

    leak = ctx.tables.get("claim1b_prediction", pd.DataFrame())
    if leak.empty:
        return []
    small = leak[leak["lr"] == leak["lr"].min()]
    err = lambda a, b: (a / b - 1).abs().median()  # noqa: E731
    lag_ratio = (leak["lag"] / leak["lag_pred"]).replace([np.inf, -np.inf], np.nan).dropna()
    return [
        "#### claim1b's prediction beside its measurement: b's share of the inference gap",
        "",
        "The running mean is an EMA (momentum m) of the batch means, so it holds EMA(b); inference adds b_T. The "
        "lag b_T - EMA(b) = -lr sum_s (1-m)^age G_s: for a drive steady over the EMA's ~1/m steps, lr ||Gbar|| / m "
        "plus noise of variance lr^2 tr(Sigma) / (1 - (1-m)^2); the loss it adds at inference is, to first order, "
        "<dl/db, lag> = -(lr / m) sum_layers ||Gbar||^2 (negative: b descends the loss with the statistics held). "
        "||Gbar||^2 and tr(Sigma) are the unbiased estimates over the last logged window "
        "(pipeline.drive.window_moments); exact for a constant drive (tests/test_drive.py). Below: measured / "
        "predicted for b's share of the gap, and in brackets for the lag of the first layer (1 = the prediction; "
        "ratios of means over surviving seeds; values, intervals: "
        "[tables/claim1b_prediction.csv](tables/claim1b_prediction.csv)). At the smallest lr "
        f"({small['lr'].iloc[0]:g}) the median |measured / predicted - 1| was {err(small['share'], small['share_pred']):.2g} "
        f"for the share and {err(small['lag'], small['lag_pred']):.2g} for the lag; over every lr "
        f"{err(leak['share'], leak['share_pred']):.2g} and {err(leak['lag'], leak['lag_pred']):.2g} (lag ratios "
        f"{lag_ratio.min():.2g} to {lag_ratio.max():.2g}): the lag follows its steady-drive prediction, the share "
        "only to first order in lr -- at larger lr both are near 0 and their ratio is noise. "
        "Figure `leak_prediction`: every member, predicted against measured.",
        "",
        md_table(leak_summary(leak)),
        "",
    ]


# -- figure ---------------------------------------------------------------------------------------------------
def fig_leak_prediction(data: FigureData) -> list[Drawn]:
    m = data.members
    if "loss_gap_b_pred" not in m:
        return []
    m = m[
        (m["status"] != "diverged") & m["loss_gap_b_pred"].notna() & m["loss_gap_b"].notna() & (m["trainable"] == "all")
    ]
    if m.empty:
        return []
    plt, pal = plt_(), palette(data.params)
    fig, ax = plt.subplots(figsize=(4.6, 4.0), layout="constrained")
    for v, g in m.groupby("variant", sort=False):
        ax.scatter(g["loss_gap_b_pred"], g["loss_gap_b"], s=10, color=pal[v], label=v)
    lim = np.nanmax(np.abs(np.r_[m["loss_gap_b_pred"], m["loss_gap_b"]]))
    ax.plot([-lim, lim], [-lim, lim], color="k", lw=0.6, ls=":")
    lin = max(lim * 1e-3, 1e-9)  # symlog: linear only within 1/1000 of the largest value
    ax.set_xscale("symlog", linthresh=lin)
    ax.set_yscale("symlog", linthresh=lin)
    ax.set(xlabel="predicted -(lr/m) sum ||Gbar||^2 (nats)", ylabel="measured eval(b_T) - eval(EMA(b)) (nats)")
    plain_ticks(ax, x=True)
    # ticks at 0 and every other decade past the linear part: the default ones at +-linthresh and 0
    # printed on top of each other
    decades = 10.0 ** np.arange(np.ceil(np.log10(lin)) + 1, np.ceil(np.log10(lim)) + 1, 2)
    ticks = [*(-decades[::-1]), 0.0, *decades]
    ax.set_xticks(ticks)
    ax.set_yticks(ticks)
    ax.tick_params(axis="x", labelrotation=45)
    ax.legend(fontsize=6, loc="center left", bbox_to_anchor=(1.02, 0.5), frameon=False)
    caption = (
        "b's share of the inference-mode gap per member: predicted from lr, the EMA momentum m and the drive "
        "over the last logged window, against measured; dotted = equality (first order in lr)."
    )
    return [save(fig, data, "leak_prediction", "leak_prediction", caption)]


FIGURES = {"leak_prediction": fig_leak_prediction}
