"""A cell's own figure, on its MLflow parent run (pipeline.tracking.runs logs it when the cell ends).

    from pipeline.tracking.cell_figure import cell_figure
    fig = cell_figure(history, cell.name)      # matplotlib Figure: ||b|| and loss per lr, log scales

Facts of the cell's history only: it judges nothing (member outcomes, and the cell numbers derived
from them, are the report's: pipeline/report/tables.py cell_table, logged onto this same run).
"""

from __future__ import annotations

import pandas as pd

from pipeline.spec.records import layer_column


def _plain_log_axis(ax) -> None:
    """Tick labels as plain numbers: mathtext labels on log axes dominate the drawing time."""
    from matplotlib.ticker import FuncFormatter, NullFormatter

    ax.yaxis.set_major_formatter(FuncFormatter(lambda v, _: f"{v:g}"))
    ax.yaxis.set_minor_formatter(NullFormatter())


# the history columns cell_figure reads
COLUMNS = ("member", "step", "lr", "loss", layer_column("b_norm", 0))


def cell_figure(history: pd.DataFrame, title: str):
    """Two panels against step, one line per lr (median over seeds; a member's rows end where it
    diverged): ||b|| of the first hidden layer at the logged steps, and the mini-batch loss in
    training mode; both on log scales (values <= 0 are not drawn). A Figure without pyplot: no
    global state in a worker process."""
    from matplotlib import colormaps
    from matplotlib.figure import Figure

    fig = Figure(figsize=(8, 2.8), dpi=80)  # fixed margins: a layout engine doubles the drawing time
    axes = fig.subplots(1, 2, gridspec_kw=dict(left=0.1, right=0.98, bottom=0.16, top=0.88, wspace=0.3))
    lrs = sorted(history["lr"].unique())
    colour = {lr: colormaps["viridis"](i / max(1, len(lrs) - 1)) for i, lr in enumerate(lrs)}
    panels = (
        (axes[0], layer_column("b_norm", 0), "||b|| (hidden layer 1)"),
        (axes[1], "loss", "mini-batch loss, training mode"),
    )
    for ax, col, label in panels:
        ax.set(xlabel="step", ylabel=label)
        if col not in history or history[col].isna().all():
            ax.text(
                0.5,
                0.5,
                "not recorded (no b in this variant)",
                ha="center",
                va="center",
                transform=ax.transAxes,
                fontsize=8,
            )
            continue
        med = history.dropna(subset=[col]).groupby(["lr", "step"])[col].median()
        for lr in lrs:
            if lr in med.index.get_level_values(0):
                s = med.loc[lr]
                s = s[s > 0]
                ax.plot(s.index.to_numpy(), s.to_numpy(), color=colour[lr], lw=1.1, label=f"lr={lr:g}")
        ax.set_yscale("log")
        _plain_log_axis(ax)
    axes[1].legend(fontsize=7, frameon=False, loc="best")
    fig.suptitle(f"{title}: median over seeds", fontsize=9)
    return fig
