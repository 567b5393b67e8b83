"""Shared pieces of the report's figures: the data they draw from, the saved-figure record,
matplotlib set-up, the variant palette (hue per family, a shade per variant, everywhere), the line
style (dashed = detached) and small helpers.

    from pipeline.report.plotting import FigureData, Drawn, palette
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import pandas as pd

from pipeline.config import Params
from pipeline.spec.records import layer_column

DPI = 80


@dataclass
class FigureData:
    params: Params
    hist: pd.DataFrame  # the logged rows (every train.log_every steps) of every included cell
    members: pd.DataFrame  # pipeline.outcomes.member_table
    largest: pd.DataFrame  # pipeline.outcomes.largest_trained_lr
    figdir: Path
    verdicts: list = field(default_factory=list)  # pipeline.claims Verdicts (endpoint figures)


@dataclass
class Drawn:
    key: str  # file stem, e.g. b_norm_synthetic
    figure: str  # the registry name, e.g. b_norm
    path: str  # relative to the report folder
    caption: str


def twins(params: Params) -> dict[str, list[str]]:
    """Detached variant -> its matched controls (params' report.twins, shared with pipeline.claims)."""
    return {k: list(v) for k, v in params.report.twins.items()}


def layers(data: FigureData, quantity: str) -> list[int]:
    """The hidden layers (0-based) whose `quantity` the history has a column for, out of the
    deepest cell's (the member table's depth); the column is layer_column(quantity, layer)."""
    depth = int(data.members["depth"].max()) if len(data.members) and "depth" in data.members else 0
    return [i for i in range(depth) if layer_column(quantity, i) in data.hist]


_THEMED: list = []  # set_theme rewrites every rcParam (~0.1 s): once per process


def plt_():
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    if not _THEMED:
        import seaborn as sns

        sns.set_theme(style="whitegrid", context="paper")
        _THEMED.append(True)
    return plt


def palette(params: Params) -> dict[str, tuple]:
    """variant -> colour: hue per family (pipeline.report.style, from the variant's NormSpec), a
    distinct shade per variant, fixed across grids."""
    from pipeline.report import style

    return style.palette(params)


def line_style(params: Params, variant: str) -> str:
    """ "--" for detached statistics, "-" for gradient-through (pipeline.report.style)."""
    from pipeline.report import style

    return style.line_style(params, variant)


def variant_legend(fig, params: Params, variants, pal=None, extra=(), **kw):
    """The figure's variant legend outside on the right, grouped by family with the line-style key,
    then `extra` (label, Line2D keyword) reference lines; placed "outside" so constrained layout
    keeps room for it (the figure needs layout="constrained")."""
    from pipeline.report import style

    plt = plt_()
    handles = style.legend_handles(plt, params, variants, pal)
    if extra:
        handles += [plt.Line2D([], [], ls="none", label="REFERENCE")]
        handles += [plt.Line2D([], [], label=f"  {label}", **line) for label, line in extra]
    kw = {"loc": "outside right center", "fontsize": 7, "frameon": False, **kw}
    return fig.legend(handles=handles, **kw)


def plain_ticks(ax, xs=None, x: bool = False) -> None:
    """Numbers as 0.3, not 3x10^-1 on log/symlog axes (mathtext labels dominate drawing time);
    x ticks at `xs` (the grid's lrs) or, with x=True, plain x labels too. No minor ticks: the
    theme draws neither their marks nor their grid, yet each one is built and laid out (a log
    axis has 8 per decade), which was most of a figure's drawing time."""
    from matplotlib.ticker import FuncFormatter, NullLocator

    fmt = FuncFormatter(lambda y, _: f"{y:g}")
    axes = [ax.yaxis, ax.xaxis] if (x or xs is not None) else [ax.yaxis]
    for axis in axes:
        axis.set_major_formatter(fmt)
        axis.set_minor_locator(NullLocator())
    if xs is not None:
        ax.set_xticks(list(xs))


def save(fig, data: FigureData, key: str, figure: str, caption: str) -> Drawn:
    """The figure cropped to what it draws (legends and titles outside the axes included), as
    bbox_inches="tight" would crop it, but laid out once: "tight" lays the whole figure out in a
    dry-run draw first and then draws it again. A figure with a layout engine (constrained) is laid
    out by one draw without rendering first, so the crop sees the axes where they end up."""
    import matplotlib

    fig.set_dpi(DPI)
    if fig.get_layout_engine() is not None:
        fig.draw_without_rendering()  # constrained layout moves the axes at draw time: crop what it laid out
    bbox = fig.get_tightbbox(fig.canvas.get_renderer()).padded(matplotlib.rcParams["savefig.pad_inches"])
    fig.savefig(data.figdir / f"{key}.png", dpi=DPI, bbox_inches=bbox)
    plt_().close(fig)
    return Drawn(key, figure, f"figures/{key}.png", caption)


def variants_in(data: FigureData, frame: pd.DataFrame) -> list[str]:
    present = set(frame["variant"])
    return [v for v in data.params.grid.variants if v in present]
