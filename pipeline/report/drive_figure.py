"""Claim 2's prediction beside its measurement: b's drive over doubling windows and b's drift.

b_T - b_0 = -lr sum_t G_t exactly (SGD with no momentum), so b is bounded iff sum_t G_t converges. The
module records, per member and layer, the mean drive over the doubling window ending at each record,
D_t = ||sum_[t/2, t) G|| / (t/2) (`drive_half`): a drive decaying faster than 1/t (slope below -1 on
log-log axes) sums to a finite b; at or above -1 it does not. Beside it, b's measured drift ||b_t - b_0||
against the identity's prediction lr ||sum_{s<t} G_s|| (`b_drift_pred`), which must overlay it.
"""

from __future__ import annotations

import numpy as np

from pipeline.report.plotting import Drawn, FigureData, line_style, palette, plain_ticks, plt_, save, variant_legend
from pipeline.spec.records import layer_column

FIGURE = "drive_decay"


def _subjects(data: FigureData) -> list[str]:
    """Claim 2's subject variants present in the history: the detached variants named in report.twins
    that carry b and no beta (members' `affine` column), in params order."""
    m = data.members
    keep = m[m["variant"].isin(list(data.params.report.twins)) & m["has_bias"].astype(bool)]
    if "affine" in keep:
        keep = keep[~keep["affine"].astype(bool)]
    present = set(keep["variant"]) & set(data.hist["variant"])
    return [v for v in data.params.variants if v in present]


def fig_drive_decay(data: FigureData) -> list[Drawn]:
    plt, pal = plt_(), palette(data.params)
    drive, drift, pred = (layer_column(q, 0) for q in ("drive_half", "b_drift", "b_drift_pred"))
    subjects = _subjects(data)
    if not subjects or drive not in data.hist or drift not in data.hist:
        return []
    lrs = sorted(data.hist["lr"].unique())
    lr = lrs[len(lrs) // 2]  # the middle lr: below the largest, where most detached members survive
    d = data.hist[(data.hist["lr"] == lr) & data.hist["variant"].isin(subjects) & (data.hist["step"] > 0)]
    datasets = [x for x in data.params.grid.datasets if x in set(d["dataset"])]
    if not datasets:
        return []
    fig, axes = plt.subplots(len(datasets), 2, figsize=(8.4, 3.2 * len(datasets)), squeeze=False, layout="constrained")
    for (ax_d, ax_b), ds in zip(axes, datasets):
        g = d[d["dataset"] == ds]
        for v in subjects:
            gv = g[g["variant"] == v]
            if gv.empty:
                continue
            a = gv.groupby("step")[drive].median().dropna()
            a = a[a > 0]
            if len(a):
                ax_d.plot(a.index, a.to_numpy(), color=pal[v], ls=line_style(data.params, v), lw=1.1)
            b = gv.groupby("step")[[drift, *([pred] if pred in gv else [])]].median()
            ax_b.plot(b.index, b[drift].to_numpy(), color=pal[v], ls=line_style(data.params, v), lw=1.6)
            if pred in b:
                ax_b.plot(b.index, b[pred].to_numpy(), color="black", lw=0.8, ls=":")
        steps = np.array(sorted(g["step"].unique()), dtype=float)
        level = g[drive].median()
        if len(steps) and np.isfinite(level) and level > 0:
            t0 = steps[len(steps) // 2]
            ax_d.plot(steps, level * t0 / steps, color="grey", ls=":", lw=0.9)  # slope -1: the boundary
        ax_d.set(
            xscale="log", yscale="log", xlabel="step", ylabel="||sum_[t/2,t) G|| / (t/2)", title=f"{ds}: b's drive"
        )
        ax_b.set(xlabel="step", ylabel="||b_t - b_0||", title=f"{ds}: b's drift, measured and predicted")
        plain_ticks(ax_d, x=True)
    variant_legend(
        fig,
        data.params,
        subjects,
        pal,
        extra=[
            ("slope -1: bounded below it", dict(color="grey", ls=":")),
            ("lr ||sum G|| (identity)", dict(color="black", ls=":", lw=0.8)),
        ],
    )
    fig.suptitle(f"Claim 2: is b bounded? Hidden layer 1, lr = {lr:g}, median over seeds", fontsize=9)
    return [
        save(
            fig,
            data,
            FIGURE,
            FIGURE,
            f"Left: b's mean drive over the doubling window ending at each step, ||sum_[t/2,t) G|| / (t/2), "
            f"log-log, hidden layer 1, lr {lr:g}, the detached variants without beta (median over seeds); a "
            f"drive falling faster than the dotted slope -1 sums to a finite b (bounded), at or above it b grows "
            f"without bound. Right: b's measured drift ||b_t - b_0|| (colour) and the identity's prediction "
            f"lr ||sum_s<t G_s|| (black dots), which must overlay it.",
        )
    ]
