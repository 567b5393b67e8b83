"""The figures the claims name: b's drift per layer, the inference-mode leak, the bias-only toy,
each verdict's endpoints with their intervals, bn against bn_nobias.

    from pipeline.report import claim_figures   # drawers registered in figures.FIGURES
"""

from __future__ import annotations

import numpy as np

from pipeline.report.plotting import (
    Drawn,
    FigureData,
    layers,
    line_style,
    palette,
    plain_ticks,
    plt_,
    save,
    twins,
    variant_legend,
)
from pipeline.spec.records import layer_column


def _reference_lr(lrs) -> float:
    lrs = sorted(lrs)
    return lrs[len(lrs) // 2]


def fig_b_drift_per_layer(data: FigureData) -> list[Drawn]:
    """||b_t - b_0|| per hidden layer for the detached variants, log-log: alpha in t^alpha is the slope."""
    plt, pal = plt_(), palette(data.params)
    detached = [v for v in twins(data.params) if v in set(data.hist["variant"])]
    lays = layers(data, "b_drift")
    if not detached or not lays:
        return []
    lr = _reference_lr(data.hist["lr"].unique())
    d = data.hist[(data.hist["lr"] == lr) & data.hist["variant"].isin(detached) & (data.hist["step"] > 0)]
    datasets = [x for x in data.params.grid.datasets if x in set(d["dataset"])]
    fig, axes = plt.subplots(
        len(datasets),
        len(lays),
        figsize=(3 * len(lays) + 1.8, 2.7 * len(datasets)),
        sharex=True,
        squeeze=False,
        layout="constrained",
    )
    for row, ds in zip(axes, datasets):
        for ax, lay in zip(row, lays):
            agg = d[d["dataset"] == ds].groupby(["variant", "step"])[layer_column("b_drift", lay)].median().dropna()
            for v in detached:
                if v in agg.index.get_level_values(0):
                    a = agg.loc[v].clip(lower=1e-12)
                    ax.plot(a.index, a.to_numpy(), color=pal[v], ls=line_style(data.params, v), lw=1.1)
            steps = np.array(sorted(d["step"].unique()), dtype=float)
            if len(agg) and len(steps):
                y0, t0 = float(agg.median()), steps[len(steps) // 2]
                for alpha, ls in ((1.0, "-."), (0.5, ":")):  # not "--": dashed is a detached variant
                    ax.plot(steps, y0 * (steps / t0) ** alpha, color="grey", ls=ls, lw=0.8)
            ax.set(xscale="log", yscale="log", title=f"{ds}, hidden layer {lay + 1}", xlabel="step")
            plain_ticks(ax, x=True)
        row[0].set_ylabel("||b_t - b_0||")
    variant_legend(
        fig,
        data.params,
        detached,
        pal,
        extra=[("slope 1 (t)", dict(color="grey", ls="-.")), ("slope 1/2 (sqrt t)", dict(color="grey", ls=":"))],
    )
    fig.suptitle(
        f"Drift of b per hidden layer, detached variants, lr = {lr:g} (median over seeds), log-log", fontsize=9
    )
    return [
        save(
            fig,
            data,
            "b_drift_per_layer",
            "b_drift_per_layer",
            f"||b_t - b_0|| per hidden layer for the detached variants at lr {lr:g} (median over seeds), "
            f"log-log axes: the growth exponent alpha of ||b_t - b_0|| ~ t^alpha is the slope (grey dash-dot: 1, dotted: 1/2).",
        )
    ]


def fig_train_eval_gap(data: FigureData) -> list[Drawn]:
    """Inference-mode minus training-mode full-train-set loss at the end, per detached variant
    (dashed) and its gradient-through twin (solid), against lr."""
    plt, pal = plt_(), palette(data.params)
    m = data.members
    if not {"full_loss_eval", "full_loss_train"} <= set(m.columns):
        return []
    pairs = {
        v: [t for t in ts if t in set(m["variant"])] for v, ts in twins(data.params).items() if v in set(m["variant"])
    }
    if not pairs:
        return []
    gap = m.assign(gap=m["full_loss_eval"] - m["full_loss_train"])
    agg = gap.groupby(["dataset", "variant", "lr"])["gap"].agg(["median", "min", "max"]).dropna()
    datasets = [x for x in data.params.grid.datasets if x in set(m["dataset"])]
    fig, axes = plt.subplots(
        1, len(datasets), figsize=(4 * len(datasets) + 1.8, 3.4), sharey=True, squeeze=False, layout="constrained"
    )
    shown = list(dict.fromkeys([*pairs, *[t for ts in pairs.values() for t in ts]]))
    for ax, ds in zip(axes[0], datasets):
        for v in shown:
            if (ds, v) in agg.index.droplevel("lr"):
                a = agg.loc[(ds, v)]
                ax.errorbar(
                    a.index,
                    a["median"],
                    yerr=[a["median"] - a["min"], a["max"] - a["median"]],
                    color=pal[v],
                    ls=line_style(data.params, v),
                    marker="o",
                    ms=3,
                    lw=1.1,
                    capsize=2,
                )
        ax.axhline(0, color="k", lw=0.6)
        ax.set(xscale="log", title=ds, xlabel="learning rate")
        ax.set_yscale("symlog", linthresh=0.01)  # gaps span 1e-3 (twins) to 1e2 (lagging statistics)
        plain_ticks(ax, sorted(m["lr"].unique()))
    axes[0][0].set_ylabel("inference - training mode\nfull-train-set loss at the end")
    variant_legend(fig, data.params, shown, pal)
    fig.suptitle(
        "What b's drift leaks into inference: loss with running/population statistics minus loss "
        "with batch statistics (median, bars = seed range)",
        fontsize=9,
    )
    return [
        save(
            fig,
            data,
            "train_eval_gap",
            "train_eval_gap",
            "Full-train-set loss in inference mode (running/population statistics) minus the same in training "
            "mode (batch statistics), at the end, per detached variant (dashed) and its gradient-through twin "
            "(solid), against lr; median over seeds, bars = range.",
        )
    ]


def fig_toy_drift(data: FigureData) -> list[Drawn]:
    """Bias-only toy: measured ||b_t - b_0|| against lr * ||sum_s G_s|| (SGD's update, exact)."""
    plt = plt_()
    import seaborn as sns

    toys = [v for v, s in data.params.variants.items() if s.trainable == "bias"]
    toy = data.hist[data.hist["variant"].isin(toys)]
    if toy.empty or layer_column("b_drift", 0) not in toy:
        return []
    datasets = [x for x in data.params.grid.datasets if x in set(toy["dataset"])]
    colours = dict(zip(sorted(toy["lr"].unique()), sns.color_palette("rocket", toy["lr"].nunique())))
    fig, axes = plt.subplots(1, len(datasets), figsize=(4 * len(datasets), 3.2), squeeze=False, layout="constrained")
    for ax, ds in zip(axes[0], datasets):
        for (lr, _), g in toy[toy["dataset"] == ds].groupby(["lr", "member"]):
            g = g.sort_values("step")
            ax.plot(g["step"], g[layer_column("b_drift", 0)], color=colours[lr], lw=1.1)
            if layer_column("gsum_cum", 0) in g:
                ax.plot(g["step"], lr * g[layer_column("gsum_cum", 0)], color="k", lw=0.6, ls=":")
        ax.set(title=ds, xlabel="step", ylabel="||b_t - b_0|| (hidden layer 1)")
    handles = [plt.Line2D([], [], color=c, label=f"lr {lr:g}") for lr, c in colours.items()]
    handles.append(plt.Line2D([], [], color="k", ls=":", label="lr * ||sum_s G_s|| (SGD's update)"))
    fig.legend(handles=handles, fontsize=7, loc="outside right center", frameon=False)  # not over the lines
    fig.suptitle("Bias-only toy (only b trains, detached centering): the exact case, not evidence", fontsize=9)
    return [
        save(
            fig,
            data,
            "toy_drift",
            "toy_drift",
            "Bias-only toy: measured drift ||b_t - b_0|| (solid) and lr * ||sum_s G_s|| (dotted): equal by "
            "SGD's update rule, shown as the exact case, not as evidence about real networks.",
        )
    ]


def endpoints_figure(name: str):
    """A drawer for the verdict that names `name`: each endpoint's effect and interval over seeds,
    one row per endpoint x detail (a forest plot; 0 = no effect)."""

    def draw(data: FigureData) -> list[Drawn]:
        v = next((v for v in data.verdicts if v.figure == name), None)
        if v is None or not v.endpoints:
            return []
        import textwrap

        plt = plt_()
        eps = v.endpoints
        # every label whole, wrapped: a cut label hides which data set / comparison the row is
        labels = [textwrap.fill(f"{e.measure} | {e.detail}", 80) for e in eps]
        lines = sum(lab.count("\n") + 1 for lab in labels)
        fig, ax = plt.subplots(figsize=(9.0, 0.11 * lines + 0.14 * len(eps) + 1.2), layout="constrained")
        y = np.arange(len(eps))[::-1]
        eff = np.array([e.effect for e in eps], float)
        lo = np.array([e.lo for e in eps], float)
        hi = np.array([e.hi for e in eps], float)
        sure = np.isfinite(lo) & ((lo > 0) | (hi < 0))  # the interval excludes no-effect
        ax.errorbar(
            eff,
            y,
            xerr=[np.where(np.isfinite(lo), eff - lo, 0), np.where(np.isfinite(hi), hi - eff, 0)],
            fmt="none",
            ecolor="grey",
            lw=1,
            capsize=2,
        )
        ax.scatter(eff, y, c=np.where(sure, "#d62728", "#555555"), s=14, zorder=3)
        ax.axvline(0, color="k", lw=0.7)
        ax.set_yticks(y, labels, fontsize=6)
        ax.set_ylim(-0.6, len(eps) - 0.4)
        ax.set_xscale("symlog", linthresh=0.01)
        ax.set(xlabel="effect (interval over seeds; red: excludes 0)")
        fig.suptitle(f"{v.key}: {v.title} -- {v.status}", fontsize=9)
        return [
            save(
                fig,
                data,
                name,
                name,
                f"{v.key} ({v.title}): every endpoint's effect with its interval over "
                f"seeds; red where the interval excludes no effect. Units: "
                f"{'; '.join(sorted({e.unit for e in eps if e.unit})) or 'see the table'}.",
            )
        ]

    return draw


def blowup_cells(endpoints):
    """Claim 4's endpoints as heatmap cells, read from their fields: kind ("excess": a detached
    variant over its twin; "sweep": the rate at a refresh interval K), row, column (data set, lr),
    effect, and whether the interval excludes 0."""
    import pandas as pd

    from pipeline.claims.mechanism import DRIFT_RATIO, GROWTH

    rows = []
    for e in endpoints:
        if e.dataset is None or e.lr is None or e.measure in (GROWTH, DRIFT_RATIO):  # the mechanism: its own figure
            continue
        kind = "excess" if e.twin is not None else "sweep"
        row = (
            f"{e.variant} vs {e.twin}"
            if kind == "excess"
            else f"K = {e.refresh_every:g}"
            if e.refresh_every is not None
            else e.variant
        )
        ds = e.dataset.replace("synthetic_zero_mean", "zero mean")
        rows.append(
            {
                "kind": kind,
                "row": row,
                "col": f"{ds} lr {e.lr:g}",
                "effect": e.effect,
                "sure": bool(np.isfinite(e.lo) and (e.lo > 0 or e.hi < 0)),
            }
        )
    return pd.DataFrame(rows, columns=["kind", "row", "col", "effect", "sure"])


def fig_blowup_excess(data: FigureData) -> list[Drawn]:
    """Claim 4 as heatmaps: the excess blow-up rate of each detached variant over its twin, and the
    blow-up rate against the refresh interval K; * where the interval over seeds excludes 0."""
    v = next((v for v in data.verdicts if v.figure == "blowup_excess"), None)
    if v is None or not v.endpoints:
        return []
    t = blowup_cells(v.endpoints)
    if t.empty:
        return []
    plt = plt_()
    kinds = [k for k in ("excess", "sweep") if k in set(t["kind"])]
    heights = [max(2.0, 0.32 * t[t["kind"] == k]["row"].nunique() + 1.2) for k in kinds]
    fig, axes = plt.subplots(
        len(kinds),
        1,
        figsize=(11, sum(heights) + 1.2 * len(kinds)),
        gridspec_kw={"height_ratios": heights},
        squeeze=False,
        layout="constrained",
    )
    for ax, k in zip(axes[:, 0], kinds):
        d = t[t["kind"] == k]
        cols = list(dict.fromkeys(d["col"]))
        eff = d.pivot_table(index="row", columns="col", values="effect", sort=False).reindex(columns=cols)
        sure = d.pivot_table(index="row", columns="col", values="sure", aggfunc="max", sort=False).reindex(columns=cols)
        lim = (-1, 1) if k == "excess" else (0, 1)
        ax.imshow(
            eff.to_numpy(float), cmap="RdBu_r" if k == "excess" else "Reds", vmin=lim[0], vmax=lim[1], aspect="auto"
        )
        for (i, j), x in np.ndenumerate(eff.to_numpy(float)):
            if np.isfinite(x):
                ax.text(
                    j,
                    i,
                    f"{x:.1f}" + ("*" if sure.iloc[i, j] else ""),
                    ha="center",
                    va="center",
                    fontsize=6,
                    color="white" if abs(x) > 0.6 else "black",
                )
        ax.set_xticks(range(len(cols)), cols, fontsize=6, rotation=45, ha="right")
        ax.set_yticks(range(len(eff.index)), eff.index, fontsize=7)
        ax.set_title(
            "excess blow-up rate, detached minus twin (paired by seed)"
            if k == "excess"
            else "blow-up rate against the refresh interval K (population_detached)",
            fontsize=8,
        )
    fig.suptitle(f"{v.key}: {v.title} -- {v.status}", fontsize=9)
    return [
        save(
            fig,
            data,
            "blowup_excess",
            "blowup_excess",
            f"{v.key} ({v.title}): blow-up (diverged or parameters past the declared factors) of each detached "
            "variant in excess of its twin, per data set and lr, and the rate against K; * = the interval "
            "over seeds excludes 0.",
        )
    ]


def fig_bn_vs_nobias(data: FigureData) -> list[Drawn]:
    """|loss_bn - loss_bn_nobias| / loss at step 0 per step (paired by data set, lr and seed),
    training-mode mini-batch loss at the logged steps, log scale."""
    h = data.hist[data.hist["variant"].isin(["bn", "bn_nobias"])]
    if h["variant"].nunique() < 2:
        return []
    plt = plt_()
    import seaborn as sns

    wide = h.pivot_table(index=["dataset", "lr", "seed", "step"], columns="variant", values="loss").dropna()
    first = wide.groupby(level=["dataset", "lr", "seed"])["bn"].transform("first").abs().clip(lower=1e-12)
    gap = ((wide["bn"] - wide["bn_nobias"]).abs() / first).clip(lower=1e-12).rename("gap").reset_index()
    datasets = [d for d in data.params.grid.datasets if d in set(gap["dataset"])]
    fig, axes = plt.subplots(
        1, len(datasets), figsize=(3.6 * len(datasets) + 1.5, 3.2), sharey=True, squeeze=False, layout="constrained"
    )
    colours = dict(zip(sorted(gap["lr"].unique()), sns.color_palette("rocket", gap["lr"].nunique())))
    for ax, ds in zip(axes[0], datasets):
        agg = gap[gap["dataset"] == ds].groupby(["lr", "step"])["gap"].max()
        for lr in sorted(agg.index.get_level_values(0).unique()):
            ax.plot(agg.loc[lr].index, agg.loc[lr].to_numpy(), color=colours[lr], lw=1.1, label=f"lr {lr:g}")
        ax.axhline(data.params.report.trajectory_rtol, color="k", ls="--", lw=0.8)
        ax.axvline(data.params.report.trajectory_steps, color="grey", ls=":", lw=0.8)
        ax.set(yscale="log", title=ds, xlabel="step")
    axes[0][0].set_ylabel("|loss bn - loss bn_nobias| / loss_0\n(mini-batch, training mode)")
    fig.legend(*axes[0][-1].get_legend_handles_labels(), fontsize=7, loc="outside right center", frameon=False)
    fig.suptitle(
        "bn against bn_nobias, same data set, lr and seed (max over seeds); dashed: tolerance, "
        "dotted: end of the checked window",
        fontsize=9,
    )
    return [
        save(
            fig,
            data,
            "bn_vs_nobias",
            "bn_vs_nobias",
            "Relative gap between bn's and bn_nobias's mini-batch losses (training mode) at the same data set, "
            "lr and seed, max over seeds: float rounding, amplified later in the run.",
        )
    ]
