"""The summary figure right after the report's answer paragraph: does b drift and the model blow
up when the centering statistics leave the gradient step, against its gradient-through twin and
real BN, per learning rate?

    from pipeline.report.summary_figure import summary_frame, fig_answer_summary
    frame = summary_frame(members, params)      # the tidy numbers the figure plots
    drawn = fig_answer_summary(data)            # [] when the grid has no detached variant to show

The variants: the detached centering variant that decides claim 4 (report.blowup_deciders[0]),
its first gradient-through twin (report.twins[that][0]) and BN_VARIANT, the subject of claim 5.
Per data set (non-zero input mean first, the zero-mean controls last) two panels against lr:
the divergence rate (the members' `diverged` flag) with exact Clopper-Pearson intervals, and
b's rms drift per unit (`b_rms_max`), median over the seeds that did not diverge.
"""

from __future__ import annotations

import numpy as np
import pandas as pd

from pipeline.config import Params
from pipeline.report.plotting import Drawn, FigureData, line_style, palette, plain_ticks, plt_, save
from pipeline.stats.inference import clopper_pearson

FIGURE = "answer_summary"
BN_VARIANT = "bn"  # claim 5's subject (pipeline/claims/identity.py): real BN, b kept so its zero gradient shows
COLUMNS = [
    "dataset",
    "control",
    "input_mean_norm",
    "variant",
    "role",
    "lr",
    "n",
    "k",
    "rate",
    "lo",
    "hi",
    "survivors",
    "b_rms_median",
]


def summary_variants(params: Params, present) -> list[tuple[str, str]]:
    """(variant, role) of the figure, those in the grid and in `present`; [] when the detached
    variant that decides claim 4 is not there (nothing to compare the others with)."""
    s, present = params.report, set(present)
    if not s.blowup_deciders:
        return []
    detached = s.blowup_deciders[0]
    twin = next(iter(s.twins.get(detached) or []), None)
    roles = [(detached, "statistics outside the step"), (twin, "gradient through them"), (BN_VARIANT, "real BN")]
    shown: dict[str, str] = {}
    for v, r in roles:
        if v and v in params.grid.variants and v in present:
            shown.setdefault(v, r)  # a twin that is also BN_VARIANT keeps its first role
    return list(shown.items()) if detached in shown else []


def summary_frame(members: pd.DataFrame, params: Params) -> pd.DataFrame:
    """One row per data set x variant x lr: n seeds, k diverged, rate = k/n with its exact
    (Clopper-Pearson, report.ci_level) interval [lo, hi], and the median of b_rms_max over the
    survivors (NaN when none survived). Data sets in grid order, those with ||E[u]|| above
    report.nonzero_mean first, the zero-mean controls (control=True) last. Empty (COLUMNS only)
    when the detached variant is not in the grid."""
    from pipeline.claims.primary import pooled_datasets  # claim 4's split into non-zero mean and controls

    if members.empty:
        return pd.DataFrame(columns=COLUMNS)
    shown = summary_variants(params, members["variant"].unique())
    m = members[members["variant"].isin([v for v, _ in shown]) & members["dataset"].isin(params.grid.datasets)]
    if not shown or m.empty:
        return pd.DataFrame(columns=COLUMNS)
    nonzero = set(pooled_datasets(members, params.report, "nonzero_mean"))
    in_grid = [d for d in params.grid.datasets if d in set(m["dataset"])]
    datasets = [d for d in in_grid if d in nonzero] + [d for d in in_grid if d not in nonzero]
    mean_norm = members.groupby("dataset")["input_mean_norm"].max()
    role, rows = dict(shown), []
    m = m.assign(_div=m["diverged"].eq(True))  # the run's own flag; `status` is not read
    groups = dict(tuple(m.groupby(["dataset", "variant", "lr"])))
    for ds in datasets:
        for v, _ in shown:
            for lr in sorted({k[2] for k in groups if k[:2] == (ds, v)}):
                g = groups[(ds, v, lr)]
                n, k = len(g), int(g["_div"].sum())
                lo, hi = clopper_pearson(k, n, params.report.ci_level)
                alive = g.loc[~g["_div"], "b_rms_max"].astype(float).dropna()
                rows.append(
                    {
                        "dataset": ds,
                        "control": ds not in nonzero,
                        "input_mean_norm": float(mean_norm.get(ds, np.nan)),
                        "variant": v,
                        "role": role[v],
                        "lr": float(lr),
                        "n": n,
                        "k": k,
                        "rate": k / n,
                        "lo": lo,
                        "hi": hi,
                        "survivors": len(alive),
                        "b_rms_median": float(alive.median()) if len(alive) else np.nan,
                    }
                )
    return pd.DataFrame(rows, columns=COLUMNS)


def fig_answer_summary(data: FigureData) -> list[Drawn]:
    """Columns: data sets (non-zero input mean, then the controls); rows: divergence rate with its
    exact interval, b's rms drift per unit (median over surviving seeds, log), both against lr."""
    t = summary_frame(data.members, data.params)
    if t.empty:
        return []
    plt, pal = plt_(), palette(data.params)
    datasets, variants = list(dict.fromkeys(t["dataset"])), list(dict.fromkeys(t["variant"]))
    role = dict(zip(t["variant"], t["role"]))
    lrs = sorted(t["lr"].unique())
    dodge = {v: 10 ** (0.06 * (i - (len(variants) - 1) / 2)) for i, v in enumerate(variants)}  # intervals side by side
    fig, axes = plt.subplots(
        2,
        len(datasets),
        figsize=(3.2 * len(datasets) + 0.6, 5.4),
        sharex=True,
        sharey="row",
        squeeze=False,
        layout="constrained",
    )
    for j, ds in enumerate(datasets):
        top, bottom = axes[0][j], axes[1][j]
        for v in variants:
            d = t[(t["dataset"] == ds) & (t["variant"] == v)]
            x = d["lr"].to_numpy(float) * dodge[v]
            top.errorbar(
                x,
                d["rate"],
                yerr=[d["rate"] - d["lo"], d["hi"] - d["rate"]],
                color=pal[v],
                marker="o",
                ms=4,
                lw=1.2,
                ls=line_style(data.params, v),
                elinewidth=0.8,
                capsize=2,
            )
            b = d[d["b_rms_median"].notna()]
            bottom.plot(
                b["lr"],
                b["b_rms_median"].clip(lower=1e-12),
                color=pal[v],
                marker="o",
                ms=4,
                lw=1.2,
                ls=line_style(data.params, v),
            )
        row = t[t["dataset"] == ds].iloc[0]
        top.set_title(f"{ds}{' (control)' if row.control else ''}\n||E[u]|| = {row.input_mean_norm:.2g}", fontsize=8)
        top.set(ylim=(-0.05, 1.05), xscale="log")
        bottom.set(xscale="log", yscale="log", xlabel="learning rate")
        for ax in (top, bottom):
            plain_ticks(ax, lrs)
            ax.tick_params(labelsize=7)
    level = data.params.report.ci_level
    axes[0][0].set_ylabel(f"share of seeds diverged\n(exact {level:.0%} CI)", fontsize=8)
    axes[1][0].set_ylabel("b's rms drift per unit\n(median, surviving seeds)", fontsize=8)
    handles = [
        plt.Line2D([], [], color=pal[v], marker="o", lw=1.5, ls=line_style(data.params, v), label=f"{v} ({role[v]})")
        for v in variants
    ]
    fig.legend(handles=handles, loc="outside lower center", ncol=len(handles), fontsize=7, frameon=False)
    fig.suptitle(
        "Do the statistics outside the gradient step make the model blow up? (dashed: detached statistics)", fontsize=9
    )
    caption = (
        f"Top: share of seeds that diverged (training-mode mini-batch loss non-finite or above "
        f"train.diverge_loss), exact {level:.0%} Clopper-Pearson intervals; bottom: b's rms drift per unit "
        f"||b_T - b_0||/sqrt(width), max over layers, median over surviving seeds (log; a parameter, no mode; "
        f"no point where none survived); per lr for {', '.join(f'{v} ({role[v]})' for v in variants)}; "
        f"data sets with non-zero input mean first, the zero-mean control(s) last."
    )
    return [save(fig, data, FIGURE, FIGURE, caption)]
