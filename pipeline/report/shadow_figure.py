"""The figure of claim_shadow (what b is for: b shadows beta): b's drift against beta's over the steps,
for each detached variant with gamma, beta and its sibling without them.

    from pipeline.report.shadow_figure import FIGURE, fig_shadow_drift   # registered in figures.FIGURES
"""

from __future__ import annotations

from pipeline.claims.shadow import beta_siblings
from pipeline.report.plotting import Drawn, FigureData, line_style, palette, plain_ticks, plt_, save
from pipeline.spec.records import layer_column

FIGURE = "shadow_drift"
LAYER = 0  # hidden layer 1: every variant has it


def fig_shadow_drift(data: FigureData) -> list[Drawn]:
    """Per data set (rows) and lr (columns), hidden layer 1, median over seeds: ||b_t - b_0|| with beta (solid),
    ||beta_t|| (dashed), the prediction ||gamma_t beta_t / sigma_t|| (dotted, black) and ||b_t - b_0|| of the
    sibling without beta (thin, its own colour), log y."""
    pairs = beta_siblings(data.members)
    b, beta, pred = (layer_column(q, LAYER) for q in ("b_drift", "beta_norm", "shadow_pred"))
    h = data.hist
    if not pairs or b not in h or beta not in h:
        return []
    plt, pal = plt_(), palette(data.params)
    names = [v for pair in pairs for v in pair]
    h = h[h["variant"].isin(names) & (h["step"] > 0)]
    lrs = data.params.report.figure_lrs or sorted(h["lr"].unique())
    datasets = [d for d in data.params.grid.datasets if d in set(h["dataset"])]
    if h.empty or not datasets:
        return []
    cols = [c for c in (b, beta, pred) if c in h]
    agg = h[h["lr"].isin(lrs)].groupby(["dataset", "lr", "variant", "step"])[cols].median()
    fig, axes = plt.subplots(
        len(datasets),
        len(lrs),
        figsize=(2.7 * len(lrs) + 1.8, 2.6 * len(datasets)),
        sharex=True,
        sharey="row",
        squeeze=False,
        layout="constrained",
    )
    ls = {v: line_style(data.params, v) for v in names}  # b's lines: the variant's style; beta: dash-dot
    for row, ds in zip(axes, datasets):
        for ax, lr in zip(row, lrs):
            for without, with_ in pairs:
                for v, quantity, style in (
                    (with_, b, dict(color=pal[with_], lw=1.4, ls=ls[with_])),
                    (with_, beta, dict(color=pal[with_], lw=1.0, ls="-.")),
                    (with_, pred, dict(color="k", lw=0.8, ls=":")),
                    (without, b, dict(color=pal[without], lw=0.9, ls=ls[without])),
                ):
                    key = (ds, lr, v)
                    if quantity in agg and key in agg.index.droplevel("step"):
                        a = agg.loc[key, quantity].dropna().clip(lower=1e-9)
                        ax.plot(a.index, a.to_numpy(), **style)
            ax.set(yscale="log", title=f"{ds}, lr {lr:g}", xlabel="step")
            plain_ticks(ax)
        row[0].set_ylabel("drift, hidden layer 1")
    handles = []
    for without, with_ in pairs:
        handles += [
            plt.Line2D([], [], color=pal[with_], lw=1.4, ls=ls[with_], label=f"{with_}: ||b_t - b_0||"),
            plt.Line2D([], [], color=pal[with_], lw=1.0, ls="-.", label=f"{with_}: ||beta_t||"),
            plt.Line2D([], [], color=pal[without], lw=0.9, ls=ls[without], label=f"{without} (no beta): ||b_t - b_0||"),
        ]
    handles.append(plt.Line2D([], [], color="k", lw=0.8, ls=":", label="prediction ||gamma_t beta_t / sigma_t||"))
    fig.legend(handles=handles, loc="outside right center", fontsize=7, frameon=False)
    fig.suptitle(
        "b shadows beta: b's drift with beta follows beta's and stops with it; without beta it does not "
        "(median over seeds, log scale)",
        fontsize=9,
    )
    return [
        save(
            fig,
            data,
            FIGURE,
            FIGURE,
            "b's drift ||b_t - b_0|| (the variant's line style: dashed = detached) against beta's ||beta_t|| (dash-dot) and the prediction "
            "||gamma_t beta_t / sigma_t|| (dotted) for each detached variant with gamma, beta, and b's drift of "
            "the same variant without them (thin), hidden layer 1, per data set and lr; median over seeds "
            "(a member's line ends where it diverged).",
        )
    ]
