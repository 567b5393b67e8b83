"""Claim 4's mechanism in the report: the tables (CSV and the Markdown section shown under claim 4's verdict)
and the two figures, W's growth along the input mean over steps and the Kaplan-Meier curves of divergence.

    from pipeline.report import mechanism
    written.update(mechanism.write_tables(tabdir, histories, members, params.report))   # cli.build
    md += mechanism.section(ctx)                                                          # render, under claim4

tables/mechanism_members.csv    per member: W along the mean (level, growth, drift, its rank-1 prediction),
                                radial share of dl/dW per layer, predicted divergence step
tables/mechanism_growth.csv     per detached variant vs its twin, data set, depth, lr (mechanism.growth_table)
tables/mechanism_radial.csv     per variant and data set: radial vs tangential share of dl/dW
tables/divergence_prediction.csv  predicted vs measured divergences (mechanism.prediction_table)
tables/divergence_tests.csv     the stratified log-rank readings (pipeline.claims.divergence_time)
tables/divergence_times.csv     every pair member's time and event (the Kaplan-Meier curves' input)
"""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pandas as pd

from pipeline.claims import divergence_time as dt
from pipeline.claims import mechanism as mech
from pipeline.report.plotting import Drawn, FigureData, line_style, palette, plain_ticks, plt_, save, variant_legend

GROWTH_FIGURE, SURVIVAL_FIGURE, RADIAL_FIGURE = "mean_dir_growth", "divergence_survival", "radial_share"


def test_rows(tests) -> pd.DataFrame:
    rows = []
    for t in tests:
        r = t.result
        lo, hi = r.hazard_ratio_interval()
        rows.append(
            {
                "role": t.role,
                "variants": " ".join(t.variants),
                "twin": t.twin,
                "datasets": " ".join(t.datasets),
                "members": r.n,
                "events_detached": r.observed,
                "events_twin": r.observed_other,
                "o_minus_e": r.o_minus_e,
                "var": r.var,
                "hazard_ratio": r.hazard_ratio,
                "hr_lo": lo,
                "hr_hi": hi,
                "p_cluster_swap": r.p_flip,
                "exact": r.exact,
                "clusters": r.clusters,
                "p_normal": r.p_normal,
            }
        )
    return pd.DataFrame(rows)


def write_tables(tabdir: Path, histories: pd.DataFrame | None, members: pd.DataFrame, settings) -> dict:
    """Compute and write the mechanism's tables; returns name -> frame (for the section)."""
    tabdir.mkdir(parents=True, exist_ok=True)
    m = mech.member_mechanism(histories, members)
    pred = mech.predict_divergence(histories, m, settings.twins)
    out = {
        "mechanism_members": pred,
        "mechanism_growth": mech.growth_table(m, settings.twins),
        "mechanism_radial": mech.radial_table(m),
        "divergence_prediction": mech.prediction_table(pred, settings.twins),
        "divergence_tests": test_rows(dt.divergence_time_tests(members, settings)),
        "divergence_times": dt.km_table(members, settings),
    }
    for name, frame in out.items():
        frame.to_csv(tabdir / f"{name}.csv", index=False)
    return out


def _n(x, digits: int = 3) -> str:
    return f"{x:.{digits}g}" if isinstance(x, (int, float)) and math.isfinite(x) else "–"


def _iv(x, lo, hi) -> str:
    return f"{_n(x)} [{_n(lo)}, {_n(hi)}]" if math.isfinite(lo) else _n(x)


def section(ctx) -> list[str]:
    """The Markdown under claim 4's verdict; [] where the report wrote no mechanism tables."""
    from pipeline.report.markdown import md_table

    t = ctx.tables
    if "mechanism_growth" not in t:
        return []
    s = ctx.params.report
    det = s.blowup_deciders[0] if s.blowup_deciders else None
    twin = s.twins.get(det, [None])[0] if det else None
    md = [
        "#### claim4's mechanism: W along the input mean, and time to divergence",
        "",
        "Theory (docs/science.md): for every variant dl/dW = (u - u_bar_B)^T d + u_bar_B (dl/db)^T; with the gradient "
        "through a centering dl/db = 0 and the rank-1 term is gone, without it the term moves W along the input-mean "
        "direction m = E[u]/||E[u]|| by ||u_bar|| |db| per SGD step, so ||m^T (W_t - W_0)|| ~ ||E[u]|| ||b_t - b_0||. "
        "In training mode b cancels (claim 1) and cannot make the net diverge; W's component along m multiplies the "
        "inputs' spread along m and does not cancel. Descriptive: claim 4 is decided by its primary test above.",
        "",
    ]
    g = t["mechanism_growth"]
    shown = g[(g["variant"] == det)] if det else g
    if len(shown):
        rows = [
            {
                "pair": f"{r.variant} vs {r.twin}",
                "data set": r.dataset,
                "depth": r.depth,
                "lr": f"{r.lr:g}",
                "growth, detached": _iv(r.growth, r.growth_lo, r.growth_hi),
                "growth, twin": _iv(r.twin_growth, r.twin_growth_lo, r.twin_growth_hi),
                "drift / rank-1 prediction": f"{_n(r.drift)} / {_n(r.drift_pred)} = {_n(r.drift_ratio, 2)}",
                "diverged (det / twin)": f"{r.diverged} / {r.twin_diverged} of {r.n}",
            }
            for r in shown.itertuples()
        ]
        md += [
            "Growth of W along the input mean, ||m^T W_T|| / ||m^T W_0|| (first layer; T = the last logged step "
            "before divergence; geometric mean over seeds, 95% t interval on the logs), and W's drift along m "
            "against its rank-1 prediction ||E[u]|| ||b_T - b_0|| (medians over seeds); every pair: "
            "[tables/mechanism_growth.csv](tables/mechanism_growth.csv).",
            "",
            md_table(pd.DataFrame(rows)),
            "",
        ]
    elif g.empty:
        md += ["_No history records W along the input mean (conv nets, or records older than mean_dir_drift)._", ""]
    tests = t["divergence_tests"]
    if len(tests):
        live = tests[tests["events_detached"] + tests["events_twin"] > 0]
        rows = [
            {
                "reading": r.role,
                "detached vs twin": f"{r.variants.replace(' ', ' + ')} vs {r.twin}",
                "data sets": r.datasets.replace(" ", ", "),
                "members": r.members,
                "diverged (det / twin)": f"{r.events_detached} / {r.events_twin}",
                "O - E": _n(r.o_minus_e),
                "hazard ratio [95% CI]": _iv(r.hazard_ratio, r.hr_lo, r.hr_hi),
                "p, arms swapped by seed": f"{r.p_cluster_swap:.2g}" + ("" if r.exact else " (MC)"),
                "p, members independent": f"{r.p_normal:.2g}",
            }
            for r in live.itertuples()
        ]
        quiet = len(tests) - len(live)
        md += [
            "Time to divergence as survival data: each member's divergence step, censored at the run's last step; "
            "stratified log-rank by (pair, data set, lr); Peto's hazard ratio (its interval assumes independent "
            "members). The p that holds here swaps the arms within whole (data set, seed) clusters: the members "
            "independent p ignores that every lr reuses a seed, and is shown to be too small on null grids "
            "(docs/statistics.md). Kaplan-Meier curves: figure below; inputs: "
            "[tables/divergence_times.csv](tables/divergence_times.csv).",
            "",
            md_table(pd.DataFrame(rows)) if rows else "_No member diverged in any pair._",
            "",
        ]
        if quiet:
            md += [
                f"_{quiet} readings without a divergence in either arm: [tables/divergence_tests.csv]"
                "(tables/divergence_tests.csv)._",
                "",
            ]
    p = t["divergence_prediction"]
    shown = p[p["variant"].isin([v for v in (det, twin) if v])] if det else p
    shown = shown[(shown["diverged"] > 0) | (shown["predicted"] > 0)]
    if len(shown):
        rows = [
            {
                "variant": r.variant,
                "data set": r.dataset,
                "depth": r.depth,
                "lr": f"{r.lr:g}",
                "lr x L at divergence": _n(r.eta_level),
                "c (other lrs)": _n(r.c),
                "diverged / predicted / right, of n": f"{r.diverged} / {r.predicted} / {_n(r.agree)} of {r.n}",
                "median step: measured / predicted": f"{_n(r.median_step)} / {_n(r.median_step_pred)}",
                "median log(predicted / measured)": _n(r.log_ratio, 2),
            }
            for r in shown.itertuples()
        ]
        md += [
            "Predicted time to divergence (docs/science.md: L_t = ||E[u]|| ||b_t - b_0||, the level the rank-1 term "
            "gives W along m; a member diverges when lr x L_t reaches c, one constant per data set and depth, read "
            "from the OTHER lrs' divergences). Equal `lr x L at divergence` across lrs supports the assumption; a "
            "twin's divergence is never predicted (its b does not move): it fails by another route. Every row: "
            "[tables/divergence_prediction.csv](tables/divergence_prediction.csv).",
            "",
            md_table(pd.DataFrame(rows)),
            "",
        ]
    r = t["mechanism_radial"]
    if len(r):
        piv = r.assign(
            text=[f"{_n(a, 2)} (max {_n(b, 2)})" for a, b in zip(r["radial_share"], r["radial_share_max"])]
        ).pivot(index="variant", columns="dataset", values="text")
        piv = piv.reindex(index=[v for v in ctx.params.grid.variants if v in piv.index])
        md += [
            "Radial share of dl/dW, sqrt(sum <W, grad W>^2 / ||W||^2 / sum ||grad W||^2) over the logged steps, median "
            "over members and layers (max in brackets); the tangential share is sqrt(1 - radial^2). 0 under bn and "
            "standardize by scale invariance (here eps = 1e-5 leaves rounding-size residues), first order under "
            "standardize_detached: [tables/mechanism_radial.csv](tables/mechanism_radial.csv).",
            "",
            md_table(piv.fillna("–").reset_index()),
            "",
        ]
    hits = [f for f in ctx.figures if f.figure in (GROWTH_FIGURE, SURVIVAL_FIGURE, RADIAL_FIGURE)]
    for f in hits:
        md += [f"![{f.key}]({f.path})", "", f"_{f.caption}_", ""]
    return md


# -- figures ----------------------------------------------------------------------------------------------
def _pairs(data: FigureData) -> dict[str, str]:
    present = set(data.members["variant"])
    s = data.params.report
    return {d: s.twins[d][0] for d in s.blowup_deciders if d in present and s.twins.get(d) and s.twins[d][0] in present}


def fig_mean_dir_growth(data: FigureData) -> list[Drawn]:
    """||m^T W_t|| / ||m^T W_0|| over steps (median over seeds still alive), per data set (row) and lr (column):
    each deciding detached variant against its twin (dashed: detached statistics, solid: gradient through); log y."""
    h, pairs = data.hist, _pairs(data)
    if mech.LEVEL not in h or not pairs or h[mech.LEVEL].isna().all():
        return []
    plt, pal = plt_(), palette(data.params)
    shown = list(dict.fromkeys([*pairs, *pairs.values()]))
    d = h[h["variant"].isin(shown)][["cell", "member", "variant", "dataset", "lr", "step", mech.LEVEL]].dropna()
    d = d.assign(growth=d[mech.LEVEL] / d.groupby(["cell", "member"])[mech.LEVEL].transform("first"))
    datasets = [x for x in data.params.grid.datasets if x in set(d["dataset"])]
    lrs = sorted(d["lr"].unique())
    fig, axes = plt.subplots(
        len(datasets),
        len(lrs),
        figsize=(2.4 * len(lrs) + 1.6, 2.3 * len(datasets)),
        sharex=True,
        sharey=True,
        squeeze=False,
        layout="constrained",
    )
    agg = d.groupby(["dataset", "lr", "variant", "step"])["growth"].median()
    for row, ds in zip(axes, datasets):
        for ax, lr in zip(row, lrs):
            for v in shown:
                if (ds, lr, v) in agg.index.droplevel("step"):
                    a = agg.loc[(ds, lr, v)]
                    ax.plot(a.index, a.to_numpy(), color=pal[v], lw=1.1, ls=line_style(data.params, v))
            ax.set(yscale="log", title=f"{ds}, lr {lr:g}")
            plain_ticks(ax)
        row[0].set_ylabel("||m^T W_t|| / ||m^T W_0||")
    for ax in axes[-1]:
        ax.set_xlabel("step")
    variant_legend(fig, data.params, shown, pal)
    fig.suptitle(
        "W along the input mean, first layer (median over the seeds still alive): detached vs twin "
        "(dashed: detached statistics)",
        fontsize=9,
    )
    return [
        save(
            fig,
            data,
            GROWTH_FIGURE,
            GROWTH_FIGURE,
            "Growth of W's first-layer component along the input mean m = E[u]/||E[u]||, ||m^T W_t|| / ||m^T W_0||, "
            "per data set and lr (median over the seeds still alive at each step; log scale): claim 4's deciding "
            "detached variants against their twin (dashed: detached statistics, solid: gradient through). The rank-1 term u_bar (dl/db)^T moves it; "
            "with the gradient through the mean it is absent.",
        )
    ]


def fig_divergence_survival(data: FigureData) -> list[Drawn]:
    """Kaplan-Meier curves of the share of members not yet diverged, per data set (row) and lr (column)."""
    pairs = _pairs(data)
    m = data.members
    if not pairs or "status" not in m:
        return []
    rows = pd.concat([dt.survival_data(m, d, t) for d, t in pairs.items()], ignore_index=True)
    if rows.empty or not rows["event"].any():
        return []
    plt, pal = plt_(), palette(data.params)
    datasets = [x for x in data.params.grid.datasets if x in set(rows["dataset"])]
    lrs = sorted(rows["lr"].unique())
    fig, axes = plt.subplots(
        len(datasets),
        len(lrs),
        figsize=(2.4 * len(lrs) + 1.6, 2.3 * len(datasets)),
        sharex=True,
        sharey=True,
        squeeze=False,
        layout="constrained",
    )
    for row, ds in zip(axes, datasets):
        for ax, lr in zip(row, lrs):
            here = rows[(rows["dataset"] == ds) & (rows["lr"] == lr)]
            curves = [(v, here[(here["variant"] == v) & (here["arm"] == 1)]) for v in pairs]
            twin = here[here["arm"] == 0].drop_duplicates(["twin", "seed"])
            curves += [(t, twin[twin["twin"] == t]) for t in dict.fromkeys(pairs.values())]
            for v, g in curves:
                if len(g):
                    x, y = dt_km(g)
                    ax.step(x, y, where="post", color=pal[v], lw=1.1, ls=line_style(data.params, v))
            ax.set(ylim=(-0.03, 1.03), title=f"{ds}, lr {lr:g}")
        row[0].set_ylabel("share not diverged")
    for ax in axes[-1]:
        ax.set_xlabel("step")
    shown = list(dict.fromkeys([*pairs, *pairs.values()]))
    variant_legend(fig, data.params, shown, pal)
    fig.suptitle(
        "Time to divergence, Kaplan-Meier (censored at the run's last step): detached vs twin (dashed: detached statistics)",
        fontsize=9,
    )
    return [
        save(
            fig,
            data,
            SURVIVAL_FIGURE,
            SURVIVAL_FIGURE,
            "Kaplan-Meier estimate of the share of members not yet diverged, per data set and lr: claim 4's deciding "
            "detached variants and their twin (dashed: detached statistics, solid: gradient through); a member that survived the run is censored at its "
            "last step; a population variant's members (both arms) that diverged before its first refresh are left "
            "out (the landmark).",
        )
    ]


def dt_km(g: pd.DataFrame) -> tuple[np.ndarray, np.ndarray]:
    from pipeline.stats.survival import kaplan_meier

    x, y = kaplan_meier(g["time"].to_numpy(float), g["event"].to_numpy(bool))
    end = float(g["steps"].max())
    return np.r_[x, end], np.r_[y, y[-1]]


def fig_radial_share(data: FigureData) -> list[Drawn]:
    """The radial share of dl/dW per variant (median over members and layers; one marker per data set, the bar
    to its largest), log x: prediction (c) -- 0 under bn and standardize by scale invariance (float rounding
    here), first order where the statistics are detached."""
    r = mech.radial_table(mech.member_mechanism(data.hist, data.members))
    if r.empty:
        return []
    plt, pal = plt_(), palette(data.params)
    order = [v for v in data.params.grid.variants if v in set(r["variant"])]
    datasets = [d for d in data.params.grid.datasets if d in set(r["dataset"])]
    fig, ax = plt.subplots(figsize=(6.4, 0.26 * len(order) + 1.4), layout="constrained")
    floor = 1e-9  # a share of exactly 0 (float64 algebra) drawn at the axis' floor
    for k, ds in enumerate(datasets):
        g = r[r["dataset"] == ds]
        y = np.array([order.index(v) for v in g["variant"]]) + (k - (len(datasets) - 1) / 2) * 0.22
        med, top = g["radial_share"].clip(lower=floor), g["radial_share_max"].clip(lower=floor)
        ax.hlines(y, med, top, colors=[pal[v] for v in g["variant"]], lw=0.8)
        ax.scatter(med, y, color=[pal[v] for v in g["variant"]], marker="os^Dv"[k % 5], s=18, label=ds, zorder=3)
    ax.set_yticks(range(len(order)), order, fontsize=7)
    ax.invert_yaxis()
    ax.set_xscale("log")
    ax.set_xlabel("radial share of dl/dW: |<W, dl/dW>| / (||W|| ||dl/dW||), median (bar: largest)")
    fig.legend(
        *ax.get_legend_handles_labels(),
        title="data set",
        fontsize=7,
        title_fontsize=7,
        loc="outside right center",
        frameon=False,
    )
    return [
        save(
            fig,
            data,
            RADIAL_FIGURE,
            RADIAL_FIGURE,
            "Prediction (c): the radial part of dl/dW per variant and data set (median over members, layers and "
            "logged steps; the bar reaches the largest). With the gradient through the scaling statistics (bn, "
            "standardize, batch_renorm) the loss is invariant to W's scale, so the radial part is 0 -- float "
            "rounding here; where they are detached it is of first order.",
        )
    ]
