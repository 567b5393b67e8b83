"""The report's figures, each drawn by name from pandas aggregates (matplotlib, seaborn styling).

    from pipeline.report.figures import FigureData, draw
    drawn, unknown = draw(["b_norm", "b_drift_per_layer"], data)   # PNGs in data.figdir

FIGURES maps a name to its drawer; a claim names its figure from this list. A drawer returns
one Drawn per file (per data set where the figure is per data set). A name with no drawer is
returned in `unknown` and the report says so. SUMMARY (answer_summary, pipeline/report/summary_figure.py)
is the one figure shown right after the answer paragraph. Every loss axis names its mode: training mode
(batch statistics) or inference mode (running / population statistics, torch eval()).
"""

from __future__ import annotations

import multiprocessing
import os
import signal
import sys
import textwrap
import threading

import numpy as np
import pandas as pd

from pipeline.report import bounded
from pipeline.report import claim_figures as cf
from pipeline.report import mechanism as mech
from pipeline.report.drive_figure import FIGURE as DRIVE
from pipeline.report.drive_figure import fig_drive_decay
from pipeline.report.plotting import (
    Drawn,
    FigureData,
    line_style,
    palette,
    plain_ticks,
    plt_,
    save,
    variant_legend,
    variants_in,
)
from pipeline.report.shadow_figure import FIGURE as SHADOW
from pipeline.report.shadow_figure import fig_shadow_drift
from pipeline.report.summary_figure import FIGURE as SUMMARY
from pipeline.report.summary_figure import fig_answer_summary
from pipeline.spec.records import layer_column


def _per_lr_lines(data: FigureData, y: str, ylabel: str, figure: str, caption: str, log=True, overlay=None):
    """Per data set: one panel per lr (seaborn facets), the median over seeds per variant; hue by
    family and dashes for detached statistics (pipeline.report.style)."""
    import seaborn as sns

    plt_()  # the Agg backend and the theme, before seaborn makes a figure
    pal, drawn = palette(data.params), []
    lrs = data.params.report.figure_lrs or sorted(data.hist["lr"].unique())
    for ds in data.params.grid.datasets:
        d = data.hist[(data.hist["dataset"] == ds) & data.hist["lr"].isin(lrs)]
        if y not in d or d[y].isna().all():
            continue
        vals = d[y].clip(lower=1e-12) if log else d[y]
        # median only: bands over 19 variants cost seconds per figure and hide each other
        agg = d.assign(_y=vals).groupby(["lr", "variant", "step"])["_y"].median().dropna().reset_index()
        variants = [v for v in variants_in(data, d) if v in set(agg["variant"])]
        dashes = {v: (4, 1.5) if line_style(data.params, v) == "--" else "" for v in variants}
        g = sns.relplot(
            agg,
            x="step",
            y="_y",
            col="lr",
            hue="variant",
            style="variant",
            hue_order=variants,
            style_order=variants,
            palette={v: pal[v] for v in variants},
            dashes=dashes,
            kind="line",
            estimator=None,
            legend=False,
            lw=1.1,
            height=3.6,
            aspect=0.75,
            facet_kws={"sharey": True},
        )
        fig = g.figure
        fig.set_layout_engine("constrained")  # room for the outside legend and the suptitle
        for lr, ax in g.axes_dict.items():
            ax.set(title=f"lr = {lr:g}", xlabel="step", ylabel="", yscale="log" if log else "linear")
            plain_ticks(ax)  # no mathtext tick labels: they dominate drawing time on log axes
            if overlay:
                overlay(ax, d, lr)
        g.axes.flat[0].set_ylabel(ylabel)
        variant_legend(fig, data.params, variants, pal, fontsize=6)
        fig.suptitle(textwrap.fill(f"{ds}: {caption}", 140), fontsize=9)  # a long caption wraps, not overflows
        drawn.append(save(fig, data, f"{figure}_{ds}", figure, f"{ds}: {caption}"))
    return drawn


def fig_b_norm(data: FigureData) -> list[Drawn]:
    return _per_lr_lines(
        data,
        layer_column("b_norm", 0),
        "||b|| (hidden layer 1), log",
        "b_norm",
        "||b|| of the first hidden layer per variant (log scale; median over seeds)",
    )


def fig_loss(data: FigureData) -> list[Drawn]:
    return _per_lr_lines(
        data,
        "loss",
        "mini-batch loss, training mode (nats)",
        "loss",
        "mini-batch loss in training mode (batch statistics), per variant (log scale; median over seeds)",
    )


def _bn_prediction(ax, d: pd.DataFrame, lr: float, log_every: int) -> None:
    """Arora et al. 2019: ||W_T||^2 = ||W_0||^2 + sum_t lr^2 ||grad W_t||^2 (gradient sampled every log_every)."""
    bn = d[(d["variant"] == "bn") & (d["lr"] == lr)]
    if bn.empty or layer_column("grad_W", 0) not in bn:
        return
    preds = []
    for _, m in bn.groupby(["cell", "member"]):
        m = m.sort_values("step")
        g2 = (lr * m[layer_column("grad_W", 0)].fillna(0)) ** 2 * log_every
        pred = np.sqrt(m[layer_column("W_norm", 0)].iloc[0] ** 2 + g2.cumsum().shift(fill_value=0))
        preds.append(pd.Series(pred.to_numpy(), index=m["step"].to_numpy()))
    ax.plot(*zip(*pd.concat(preds, axis=1).median(axis=1).items()), "k--", lw=1)


def fig_weight_norm(data: FigureData) -> list[Drawn]:
    every = data.params.train.log_every
    return _per_lr_lines(
        data,
        layer_column("W_norm", 0),
        "||W|| (hidden layer 1, Frobenius)",
        "weight_norm",
        "||W|| of the first hidden layer per variant (median over seeds); dashed black = bn's scale-invariance prediction "
        "sqrt(||W_0||^2 + sum_t lr^2 ||grad W_t||^2)",
        log=False,
        overlay=lambda ax, d, lr: _bn_prediction(ax, d, lr, every),
    )


def fig_member_status(data: FigureData) -> list[Drawn]:
    """Per data set: variant x lr, colour = share of seeds that trained, text = outcome counts;
    a black frame marks each variant's largest trained lr."""
    plt = plt_()
    import seaborn as sns

    m, datasets = data.members, [d for d in data.params.grid.datasets if d in set(data.members["dataset"])]
    variants = variants_in(data, m)
    lrs = sorted(m["lr"].unique())
    fig, axes = plt.subplots(
        1,
        len(datasets),
        figsize=(1.0 * len(lrs) * len(datasets) + 3, 0.32 * len(variants) + 1.4),
        sharey=True,
        squeeze=False,
        layout="constrained",
    )
    short = {"trained": "T", "failed": "F", "diverged": "D", "fixed_loss": "fixed"}
    for ax, ds in zip(axes[0], datasets):
        d = m[m["dataset"] == ds]
        frac = (
            d.assign(ok=d["status"] == "trained")
            .pivot_table(index="variant", columns="lr", values="ok", aggfunc="mean")
            .reindex(index=variants, columns=lrs)
        )
        movable = (
            d.assign(mv=d["status"] != "fixed_loss")
            .pivot_table(index="variant", columns="lr", values="mv", aggfunc="max")
            .reindex(index=variants, columns=lrs)
        )
        frac = frac.where(movable.fillna(False).astype(bool))  # all n/a: no colour (grey)
        text = d.groupby(["variant", "lr"])["status"].agg(
            lambda s: " ".join(
                f"{n} {short.get(k, k)}" if k != "fixed_loss" else "fixed loss" for k, n in s.value_counts().items()
            )
        )
        # the w_grew flag (||W|| past the declared factor) beside the outcome counts, e.g. "3 T 2 D, 3 W"
        grown = d.groupby(["variant", "lr"])["w_grew"].sum() if "w_grew" in d else pd.Series(dtype=float)
        annot = pd.DataFrame("", index=variants, columns=lrs)
        for (v, lr), t in text.items():
            n_w = int(grown.get((v, lr), 0))
            annot.loc[v, lr] = t + (f", {n_w} W" if n_w else "")
        sns.heatmap(
            frac.astype(float),
            annot=annot,
            fmt="",
            cmap="RdYlGn",
            vmin=0,
            vmax=1,
            ax=ax,
            cbar=ax is axes[0][-1],
            cbar_kws={"label": "share of seeds trained"},
            annot_kws={"fontsize": 7},
            linewidths=0.5,
        )
        for r in data.largest[data.largest["dataset"] == ds].itertuples():
            lr = getattr(r, "largest_trained_lr", np.nan)
            if r.variant in variants and pd.notna(lr) and lr in lrs:
                ax.add_patch(
                    plt.Rectangle(
                        (lrs.index(lr), variants.index(r.variant)), 1, 1, fill=False, edgecolor="black", lw=1.8
                    )
                )
        ax.set_facecolor("#dddddd")  # n/a cells (no colour) show grey
        ax.set(title=ds, xlabel="learning rate", ylabel="variant" if ax is axes[0][0] else "")
    fig.suptitle(
        "Member outcomes: T trained, F failed to train (short of the accuracy bar), D diverged, "
        "n/a (grey) loss cannot move;\nW = flag w_grew (||W|| grew past the declared factor); frame = largest trained lr",
        fontsize=8,
    )
    return [
        save(
            fig,
            data,
            "member_status",
            "member_status",
            "Outcome of every member per variant x lr (counts over seeds); the frame marks each variant's "
            "largest trained lr.",
        )
    ]


FIGURES = {
    SUMMARY: fig_answer_summary,
    "b_norm": fig_b_norm,
    "loss": fig_loss,
    "weight_norm": fig_weight_norm,
    "member_status": fig_member_status,
    "b_drift_per_layer": cf.fig_b_drift_per_layer,
    "train_eval_gap": cf.fig_train_eval_gap,
    "toy_drift": cf.fig_toy_drift,
    "scaling_excess": cf.endpoints_figure("scaling_excess"),
    "blowup_excess": cf.fig_blowup_excess,
    "bn_vs_nobias": cf.fig_bn_vs_nobias,
    mech.GROWTH_FIGURE: mech.fig_mean_dir_growth,
    mech.SURVIVAL_FIGURE: mech.fig_divergence_survival,
    mech.RADIAL_FIGURE: mech.fig_radial_share,
    SHADOW: fig_shadow_drift,
    DRIVE: fig_drive_decay,
    **bounded.FIGURES,
}
# drawn whatever the claims name (the claims' own figures are added to these)
ALWAYS = (
    SUMMARY,
    "member_status",
    "b_norm",
    "loss",
    "weight_norm",
    "b_drift_per_layer",
    "train_eval_gap",
    "toy_drift",
    mech.GROWTH_FIGURE,
    mech.SURVIVAL_FIGURE,
    mech.RADIAL_FIGURE,
    *bounded.FIGURES,
)


_DATA: list = []  # the FigureData a forked drawer inherits (not pickled: it holds the whole grid)
DRAW_TIMEOUT_S = 300  # forked drawers that have not finished by then are stopped and the figures drawn here


def _draw_one(name: str) -> list[Drawn]:
    return FIGURES[name](_DATA[0])


def _drawer_start() -> None:
    """A forked drawer dies of SIGTERM and SIGINT at once: a Python handler inherited from the parent (the
    grid's, a test runner's) runs only between bytecodes, so a drawer stuck on a lock would outlive
    pool.terminate() and the report would wait for it forever."""
    signal.signal(signal.SIGTERM, signal.SIG_DFL)
    signal.signal(signal.SIGINT, signal.SIG_DFL)


def draw(names, data: FigureData, jobs: int | None = None) -> tuple[list[Drawn], list[str]]:
    """Draw each named figure once; names without a drawer come back in the second list. The
    figures are independent: with more than one core, forked drawers share them (the same files,
    the same list in the same order). pyarrow's idle thread pools are running by now (the records
    were read); a drawer touches neither them nor a lock they hold, and should one ever hang, it is
    stopped after DRAW_TIMEOUT_S and the figures are drawn in this process instead."""
    data.figdir.mkdir(parents=True, exist_ok=True)
    names = list(dict.fromkeys(names))
    known, unknown = [n for n in names if n in FIGURES], [n for n in names if n not in FIGURES]
    jobs = min(len(known), jobs or os.cpu_count() or 1)
    results = None
    # fork only while this process runs no other Python thread: a lock another thread holds at the fork
    # (MLflow's, SQLAlchemy's) stays held in the child, which then waits on it forever (seen under pytest)
    if jobs > 1 and "fork" in multiprocessing.get_all_start_methods() and threading.active_count() == 1:
        _DATA[:] = [data]
        pool = multiprocessing.get_context("fork").Pool(jobs, initializer=_drawer_start)
        try:
            results = pool.map_async(_draw_one, known, chunksize=1).get(DRAW_TIMEOUT_S)
        except multiprocessing.TimeoutError:
            print(f"report: figure drawers still busy after {DRAW_TIMEOUT_S} s; drawing here instead", file=sys.stderr)
        finally:
            pool.terminate()
            pool.join()
            _DATA.clear()
    if results is None:
        results = [FIGURES[n](data) for n in known]
    return [d for r in results for d in r], unknown
