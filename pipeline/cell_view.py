"""What a cell's parent MLflow run shows: its headline numbers and its own figure.

    from pipeline.cell_view import cell_metrics, cell_figure
    numbers = cell_metrics(summary, cell)      # summary: a CellSummary -> {"frac_trained": 0.6, ..., "largest_trained_lr": 0.3}
    fig = cell_figure(history, cell.name)      # matplotlib Figure: ||b|| and loss per lr, log scales

The numbers follow the report's member outcomes (pipeline.outcomes.classify) at the default
thresholds of params.yaml's `report:` section (config.ReportSettings): a training stage does not
read the report's settings (changing them must not retrain anything), so where a study changes
them the report's tables, not these numbers, are the reference. A value that does not exist (no lr
at which every seed trained, no finite final loss) is left out, never written as 0.
"""
from __future__ import annotations

import math

import pandas as pd


def cell_metrics(summary, cell, settings=None) -> dict[str, float]:
    """frac_trained / frac_diverged / frac_blew_up (shares of the cell's members by outcome),
    best_full_loss_train / best_full_acc_train (the best member's final full-training-set loss and
    accuracy, training mode), largest_trained_lr (every seed trained at it). `summary`: the
    cell's pipeline.spec.records.CellSummary."""
    from pipeline.config import ReportSettings
    from pipeline.outcomes import largest_trained_lr, member_table
    from pipeline.records import cell_config

    settings = settings or ReportSettings()
    table = member_table([summary], {}, settings, {summary.cell: cell_config(cell)})
    out = {f"frac_{s}": float((table["status"] == s).mean()) for s in ("trained", "diverged", "blew_up")}
    loss, acc = table["full_loss_train"].astype(float), table["full_acc_train"].astype(float)
    finite = loss[loss.map(math.isfinite)]
    if len(finite):
        out["best_full_loss_train"] = float(finite.min())
    if acc.notna().any():
        out["best_full_acc_train"] = float(acc.max())
    lr = largest_trained_lr(table)["largest_trained_lr"].iloc[0]
    if pd.notna(lr):
        out["largest_trained_lr"] = float(lr)
    return out


def outcome_rule(settings=None) -> str:
    """The thresholds cell_metrics used, as one line (a tag beside the numbers)."""
    from pipeline.config import ReportSettings

    s = settings or ReportSettings()
    return (f"trained: final full-set loss <= {s.trained_loss_ratio:g} x min(init loss, ln C) and accuracy >= "
            f"1/C + {s.trained_acc_margin:g}; blew_up: ||W_T||/||W_0|| > {s.blowup_w_factor:g} or b rms drift > "
            f"{s.blowup_b_rms:g}")


def _plain_log_axis(ax) -> None:
    """Tick labels as plain numbers: mathtext labels on log axes dominate the drawing time."""
    from matplotlib.ticker import FuncFormatter, NullFormatter

    ax.yaxis.set_major_formatter(FuncFormatter(lambda v, _: f"{v:g}"))
    ax.yaxis.set_minor_formatter(NullFormatter())


def cell_figure(history: pd.DataFrame, title: str):
    """Two panels against step, one line per lr (median over seeds; a member's rows end where it
    diverged): ||b|| of the first hidden layer at the logged steps, and the mini-batch loss in
    training mode; both on log scales (values <= 0 are not drawn). A Figure without pyplot: no
    global state in a worker process."""
    from matplotlib import colormaps
    from matplotlib.figure import Figure

    from pipeline.spec.records import layer_column

    fig = Figure(figsize=(8, 2.8), dpi=80)  # fixed margins: a layout engine doubles the drawing time
    axes = fig.subplots(1, 2, gridspec_kw=dict(left=0.1, right=0.98, bottom=0.16, top=0.88, wspace=0.3))
    lrs = sorted(history["lr"].unique())
    colour = {lr: colormaps["viridis"](i / max(1, len(lrs) - 1)) for i, lr in enumerate(lrs)}
    panels = ((axes[0], layer_column("b_norm", 0), "||b|| (hidden layer 1)"), (axes[1], "loss", "mini-batch loss, training mode"))
    for ax, col, label in panels:
        ax.set(xlabel="step", ylabel=label)
        if col not in history or history[col].isna().all():
            ax.text(0.5, 0.5, "not recorded (no b in this variant)", ha="center", va="center",
                    transform=ax.transAxes, fontsize=8)
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
