"""Aggregate the grid's cells into tables, figures and a verdict on each claim.

    python -m pipeline.report --runs runs --out reports

Reads params.yaml (the current grid and the `report:` options) and the cells of that grid
only (runs/<variant>-<dataset>/), writes:
  reports/report.md        renders on GitHub; figures linked from reports/figures/
  reports/report.html      self-contained: figures embedded, opens with no server
  reports/figures/*.png    seaborn figures, one colour per variant throughout
  reports/tables/*.csv     members, per variant x data set x lr over seeds, stable lrs, verdicts
  reports/metrics.json     headline numbers for `dvc metrics show`
  reports/plots/           per-variant CSVs for `dvc plots show`
and logs the report as an MLflow run tagged with the cell runs it was built from.
"""
from __future__ import annotations

import argparse
import base64
import json
import re
import shutil
import sys
import time
from pathlib import Path

import numpy as np
import pandas as pd

from pipeline.config import ConfigError, Params, die, load_params
from pipeline.verdicts import HOLDS, all_verdicts

NONZERO_MEAN = 0.5  # a data set whose training-input mean has norm above this is "non-zero mean"


# -- loading ------------------------------------------------------------------------------
def load_cells(params: Params, runs: Path) -> tuple[list[dict], dict[str, pd.DataFrame]]:
    summaries, histories = [], {}
    for v in params.grid.variants:
        for d in params.grid.datasets:
            cell = runs / f"{v}-{d}"
            if not (cell / "summary.json").exists():
                raise ConfigError(f"{cell}: missing (cell of the current grid not trained; run `dvc repro`)")
            s = json.loads((cell / "summary.json").read_text())
            meta = runs / f"{v}-{d}.meta.json"  # MLflow ids and timings of the run that made it
            if meta.exists():
                s.update({k: val for k, val in json.loads(meta.read_text()).items() if k in ("mlflow", "timing")})
            summaries.append(s)
            histories[s["cell"]] = pd.read_parquet(cell / "history.parquet")
    return summaries, histories


def _fit(t: np.ndarray, y: np.ndarray) -> tuple[float, float]:
    """Slope and R^2 of a least-squares line."""
    if len(t) < 3 or not np.all(np.isfinite(y)):
        return float("nan"), float("nan")
    slope, icpt = np.polyfit(t, y, 1)
    ss = ((y - y.mean()) ** 2).sum()
    r2 = 1 - ((y - (slope * t + icpt)) ** 2).sum() / ss if ss > 0 else float("nan")
    return float(slope), float(r2)


def _member_row(s: dict, m: dict, h: pd.DataFrame) -> dict:
    """Everything the tables and verdicts need about one member, from its history."""
    logged = h.dropna(subset=["W_norm/l0"]) if "W_norm/l0" in h else h.iloc[:0]
    logged = logged.reindex(columns=sorted(set(logged.columns) | {  # absent when frozen (the toy) or no b
        "b_norm/l0", "b_drift/l0", "b_drift_pred/l0", "grad_b/l0", "grad_W/l0", "radial/l0"}))
    row = {k: s[k] for k in ("variant", "dataset", "norm", "cell")}
    row.update({k: m[k] for k in ("lr", "seed", "diverged", "diverged_step", "initial_loss", "final_loss",
                                  "train_full_loss", "train_full_acc", "val_loss", "val_acc")})
    row["input_mean"] = s.get("input_mean_norm", float("nan"))
    if "b_drift/l0" in logged and logged["b_drift/l0"].notna().any():
        t, y = logged["step"].to_numpy(float), logged["b_drift/l0"].to_numpy(float)
        row["b_norm_final"] = float(logged["b_norm/l0"].iloc[-1])
        row["b_drift_final"] = float(y[-1])
        row["b_slope"], row["b_r2"] = _fit(t, y)
        half = len(t) // 2
        early, _ = _fit(t[:half + 1], y[:half + 1])
        late, _ = _fit(t[half:], y[half:])
        row["b_late_early"] = late / early if early and np.isfinite(early) and early > 0 else float("nan")
        row["b_slope_pred"], _ = _fit(t, logged["b_drift_pred/l0"].to_numpy(float))
        gb, gw = logged["grad_b/l0"].dropna(), logged["grad_W/l0"].dropna()
        row["grad_b_median"] = float(gb.median()) if len(gb) else float("nan")
        row["grad_b_rel"] = float((gb / gw.reindex(gb.index)).max()) if len(gb) and len(gw) else float("nan")
    w = logged["W_norm/l0"].dropna()
    row["w_growth"] = float(w.iloc[-1] / w.iloc[0] - 1) if len(w) > 1 else float("nan")
    cos = (logged["radial/l0"] / logged["grad_W/l0"]).abs().replace([np.inf], np.nan).dropna()
    row["radial_share"] = float(cos.median()) if len(cos) else float("nan")
    if "b_sensitivity" in h:
        ev = h.dropna(subset=["b_sensitivity", "train_full_loss"])
        row["b_sens_rel"] = float((ev["b_sensitivity"] / ev["train_full_loss"].abs()).iloc[-1]) if len(ev) else float("nan")
    return row


def member_table(summaries: list[dict], histories: dict[str, pd.DataFrame]) -> pd.DataFrame:
    rows = []
    for s in summaries:
        by_member = dict(tuple(histories[s["cell"]].groupby("member")))
        for m in s["members"]:
            rows.append(_member_row(s, m, by_member[m["member"]]))
    t = pd.DataFrame(rows)
    # bn vs bn_nobias, the same (dataset, lr, seed): max relative gap of the loss, step by step
    t["loss_gap_nobias"] = np.nan   # max |loss_bn - loss_bn_nobias| / initial loss, whole run
    t["loss_gap_early"] = np.nan    # the same over the first 10% of steps
    for s in summaries:
        if s["variant"] != "bn":
            continue
        twin = next((o for o in summaries if o["variant"] == "bn_nobias" and o["dataset"] == s["dataset"]), None)
        if twin is None:
            continue
        a, b = histories[s["cell"]], histories[twin["cell"]]
        for m in s["members"]:
            mb = next((x for x in twin["members"] if x["lr"] == m["lr"] and x["seed"] == m["seed"]), None)
            if mb is None:
                continue
            la = a[a["member"] == m["member"]].set_index("step")["loss"]
            lb = b[b["member"] == mb["member"]].set_index("step")["loss"]
            both = pd.concat([la, lb], axis=1, join="inner").dropna()
            gap = (both.iloc[:, 0] - both.iloc[:, 1]).abs() / max(abs(both.iloc[0, 0]), 1e-12)
            sel = (t["cell"] == s["cell"]) & (t["lr"] == m["lr"]) & (t["seed"] == m["seed"])
            t.loc[sel, "loss_gap_nobias"] = float(gap.max())
            t.loc[sel, "loss_gap_early"] = float(gap[gap.index <= max(1, s["steps"] // 10)].max())
    return t


# -- tables -------------------------------------------------------------------------------
SUMMARY_COLS = {  # column -> header in the markdown tables
    "final_loss": "final train loss", "val_loss": "val loss", "val_acc": "val acc",
    "b_norm_final": "final ||b||", "b_slope": "||b-b0|| per step", "b_r2": "R^2",
    "b_slope_pred": "predicted per step", "grad_b_median": "median |dl/db|",
    "w_growth": "||W|| growth", "radial_share": "radial share",
}


def by_variant_lr(t: pd.DataFrame) -> pd.DataFrame:
    g = t.groupby(["variant", "dataset", "lr"], sort=False)
    out = g.size().rename("n").to_frame()
    for col in SUMMARY_COLS:
        if col in t:
            out[f"{col}_mean"] = g[col].mean()
            out[f"{col}_sd"] = g[col].std()
    out["frac_diverged"] = g["diverged"].mean()
    out["median_diverged_step"] = g["diverged_step"].median()
    return out.reset_index()


def largest_stable_lr(t: pd.DataFrame, ratio: float) -> pd.DataFrame:
    def stable(grp):
        return (not grp["diverged"].any()) and grp["final_loss"].mean() <= ratio * grp["initial_loss"].mean()

    ok = t.groupby(["variant", "dataset", "lr"], sort=False).apply(stable, include_groups=False).rename("stable")
    ok = ok.reset_index()
    best = ok[ok["stable"]].groupby(["variant", "dataset"], sort=False)["lr"].max()
    table = ok[["variant", "dataset"]].drop_duplicates().set_index(["variant", "dataset"])
    table["largest_stable_lr"] = best
    return table.reset_index()


def _pm(mean, sd) -> str:
    if not np.isfinite(mean):
        return "–"
    return f"{mean:.3g} ± {sd:.2g}" if np.isfinite(sd) else f"{mean:.3g}"


def _cell(x) -> str:
    return str(x).replace("|", "\\|")  # a pipe inside a cell would split it


def _md_table(frame: pd.DataFrame) -> str:
    cols = list(frame.columns)
    lines = ["| " + " | ".join(map(_cell, cols)) + " |", "|" + "---|" * len(cols)]
    for _, r in frame.iterrows():
        lines.append("| " + " | ".join(_cell(r[c]) for c in cols) + " |")
    return "\n".join(lines)


def pretty_dataset_table(agg: pd.DataFrame, dataset: str) -> str:
    sub = agg[agg["dataset"] == dataset]
    out = pd.DataFrame({"variant": sub["variant"], "lr": sub["lr"], "n": sub["n"]})
    for col, head in SUMMARY_COLS.items():
        if f"{col}_mean" in sub:
            out[head] = [_pm(m, s) for m, s in zip(sub[f"{col}_mean"], sub[f"{col}_sd"])]
    out["diverged"] = [f"{f:.0%}" for f in sub["frac_diverged"]]
    out["median div. step"] = [f"{x:.0f}" if np.isfinite(x) else "–" for x in sub["median_diverged_step"]]
    return _md_table(out)


# -- figures ------------------------------------------------------------------------------
def palette(params: Params) -> dict[str, tuple]:
    import seaborn as sns

    names = list(params.variants)  # order of definition: a variant keeps its colour across grids
    colours = sns.color_palette("tab10") + sns.color_palette("Dark2") + sns.color_palette("Set1")
    return {n: colours[i % len(colours)] for i, n in enumerate(names)}


def long_history(summaries, histories) -> pd.DataFrame:
    frames = []
    for s in summaries:
        h = histories[s["cell"]].copy()
        h["variant"], h["dataset"] = s["variant"], s["dataset"]
        frames.append(h)
    return pd.concat(frames, ignore_index=True)


def make_figures(params: Params, hist: pd.DataFrame, t: pd.DataFrame, figdir: Path) -> dict[str, str]:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import seaborn as sns

    sns.set_theme(style="whitegrid", context="paper")
    pal = palette(params)
    figs: dict[str, str] = {}
    lrs = params.report.figure_lrs or sorted(hist["lr"].unique())
    logged = hist.dropna(subset=["W_norm/l0"])
    logged = logged[logged["lr"].isin(lrs)]
    variants = [v for v in params.grid.variants if v in set(logged["variant"])]

    def save(fig, name, title):
        fig.suptitle(title, fontsize=10)
        fig.savefig(figdir / f"{name}.png", dpi=90)
        plt.close(fig)
        figs[name] = f"figures/{name}.png"

    for ds in params.grid.datasets:
        d = logged[logged["dataset"] == ds]
        if d.empty:
            continue

        def lines(y, ylabel, log=True, overlay=None):
            # median and min-max band over seeds, aggregated once by pandas and drawn with plain
            # matplotlib (seaborn's estimator and FacetGrid's repeated layout passes took ~100 s)
            agg = (d.assign(_y=d[y].clip(lower=1e-12) if log else d[y])
                   .groupby(["lr", "variant", "step"])["_y"].agg(["median", "min", "max"]))
            lrs_here = sorted(d["lr"].unique())
            fig, axes = plt.subplots(1, len(lrs_here), figsize=(2.7 * len(lrs_here) + 1.6, 2.9),
                                     sharey=True, squeeze=False)
            for ax, lr in zip(axes[0], lrs_here):
                for v in variants:
                    if (lr, v) in agg.index.droplevel("step"):
                        a = agg.loc[(lr, v)]
                        ax.plot(a.index, a["median"], color=pal[v], lw=1.2, label=v)
                        ax.fill_between(a.index, a["min"], a["max"], color=pal[v], alpha=0.2, lw=0)
                ax.set(title=f"lr = {lr:g}", xlabel="step", yscale="log" if log else "linear")
            axes[0][0].set_ylabel(ylabel)
            if overlay:
                overlay(axes[0], lrs_here)
            handles = [plt.Line2D([], [], color=pal[v], lw=2, label=v) for v in variants]
            fig.legend(handles=handles, loc="center right", fontsize=7, frameon=False)
            fig.subplots_adjust(left=0.06, right=0.86, bottom=0.16, top=0.80, wspace=0.06)
            return fig

        if "b_norm/l0" in d:
            save(lines("b_norm/l0", "||b|| (layer 1), log"), f"b_norm_{ds}",
                 f"{ds}: bias norm of the first hidden layer per variant (median, band = all seeds)")
        save(lines("loss", "mini-batch loss (nats), log"), f"loss_{ds}",
             f"{ds}: training loss per variant (median, band = all seeds)")
        save(lines("grad_norm", "||grad|| (all parameters), log"), f"grad_norm_{ds}",
             f"{ds}: gradient norm per variant (median, band = all seeds)")
        save(lines("W_norm/l0", "||W|| (layer 1, Frobenius)", log=False,
                   overlay=lambda axes, lrs_: _overlay_scale_invariance(axes, lrs_, d, params.train.log_every)),
             f"weight_norm_{ds}", f"{ds}: weight norm; dashed black = bn's prediction "
                                  f"sqrt(||W_0||^2 + sum_t lr^2 ||grad W_t||^2)")
        heat = _heatmap(t[t["dataset"] == ds], variants, ds)
        path = figdir / f"heatmap_final_loss_{ds}.png"
        heat.savefig(path, dpi=90, bbox_inches="tight")
        plt.close(heat)
        figs[f"heatmap_final_loss_{ds}"] = f"figures/heatmap_final_loss_{ds}.png"

    toy = logged[logged["variant"].isin([v for v, s in params.variants.items() if s.trainable == "bias"])]
    if not toy.empty:
        figs["toy_drift"] = _toy_figure(toy, figdir)
    return figs


def _overlay_scale_invariance(axes, lrs, d: pd.DataFrame, log_every: int) -> None:
    """Arora et al.: ||W_T||^2 = ||W_0||^2 + sum_t lr^2 ||grad_t||^2 (gradients sampled every log_every)."""
    for lr, ax in zip(lrs, axes):
        bn = d[(d["variant"] == "bn") & (d["lr"] == lr)]
        if bn.empty:
            continue
        preds = []
        for _, m in bn.groupby("member"):
            m = m.sort_values("step")
            g2 = (lr * m["grad_W/l0"].fillna(0)) ** 2 * log_every
            preds.append(pd.Series(np.sqrt(m["W_norm/l0"].iloc[0] ** 2 + g2.cumsum().shift(fill_value=0)).to_numpy(),
                                   index=m["step"].to_numpy()))
        pred = pd.concat(preds, axis=1).median(axis=1)
        ax.plot(pred.index, pred.to_numpy(), "k--", lw=1, label="bn prediction")


def _heatmap(t: pd.DataFrame, variants: list[str], ds: str):
    import matplotlib.pyplot as plt
    import seaborn as sns

    mean = t.pivot_table(index="variant", columns="lr", values="final_loss", aggfunc="mean").reindex(variants)
    div = t.pivot_table(index="variant", columns="lr", values="diverged", aggfunc="sum").reindex(variants)
    n = t.pivot_table(index="variant", columns="lr", values="diverged", aggfunc="size").reindex(variants)
    shown = mean.where(div == 0)
    fig, ax = plt.subplots(figsize=(1.2 * len(mean.columns) + 2.5, 0.38 * len(mean) + 1.2))
    sns.heatmap(np.log10(shown.clip(lower=1e-4)), annot=shown.map(lambda x: f"{x:.2g}"), fmt="",
                cmap="viridis_r", ax=ax, cbar_kws={"label": "log10 final train loss (mean over seeds)"},
                mask=shown.isna())
    ax.set_facecolor("#d62728")  # diverged cells show through in red
    ax.grid(False)
    for i, v in enumerate(mean.index):
        for j, lr in enumerate(mean.columns):
            if div.loc[v, lr] > 0:
                ax.text(j + 0.5, i + 0.5, f"{int(div.loc[v, lr])}/{int(n.loc[v, lr])} div", ha="center",
                        va="center", color="white", fontsize=8, fontweight="bold")
    ax.set(xlabel="learning rate", ylabel="variant",
           title=f"{ds}: final training loss; red = k/n seeds diverged")
    return fig


def _toy_figure(toy: pd.DataFrame, figdir: Path) -> str:
    import matplotlib.pyplot as plt
    import seaborn as sns

    datasets = list(toy["dataset"].unique())
    fig, axes = plt.subplots(1, len(datasets), figsize=(4 * len(datasets), 3.2), squeeze=False)
    colours = dict(zip(sorted(toy["lr"].unique()), sns.color_palette("rocket", toy["lr"].nunique())))
    for ax, ds in zip(axes[0], datasets):
        d = toy[toy["dataset"] == ds]
        for (lr, _), m in d.groupby(["lr", "member"]):
            m = m.sort_values("step")
            first = m[m["step"] <= max(m["step"].max() * 0.1, m["step"].iloc[min(2, len(m) - 1)])]
            slope = np.polyfit(first["step"], first["b_drift/l0"], 1)[0] if len(first) >= 2 else np.nan
            ax.plot(m["step"], m["b_drift/l0"], color=colours[lr], lw=1.2)
            ax.plot(m["step"], m["b_drift_pred/l0"], color="k", lw=0.6, ls=":")
            ax.plot(m["step"], slope * m["step"], color=colours[lr], lw=0.8, ls="--")
        ax.set(title=ds, xlabel="step", ylabel="||b_t - b_0|| (layer 1)")
    handles = [plt.Line2D([], [], color=c, label=f"lr {lr:g}") for lr, c in colours.items()]
    handles += [plt.Line2D([], [], color="k", ls=":", label="lr * ||sum_t sum_i g_i|| (item 2)"),
                plt.Line2D([], [], color="grey", ls="--", label="line fitted on the first 10% of steps")]
    axes[0][-1].legend(handles=handles, fontsize=7, loc="upper left")
    fig.suptitle("Bias-only toy (only b trains, detached centering): measured drift vs prediction", y=1.02)
    path = figdir / "toy_drift.png"
    fig.savefig(path, dpi=90, bbox_inches="tight")
    plt.close(fig)
    return "figures/toy_drift.png"


# -- the report ---------------------------------------------------------------------------
def answer_text(verdicts) -> str:
    parts = []
    sens, drift, worse, blow, bn = verdicts
    if sens.status == HOLDS:
        parts.append(f"With the mean subtracted outside the gradient step, moving b did not change the loss "
                     f"(relative change {sens.numbers['sensitivity']:.1g} while b moved by "
                     f"{sens.numbers['drift']:.3g}), exactly the paper's thought experiment.")
    else:
        parts.append(f"Claim 1 (loss independent of b) {sens.status} here: {sens.evidence}.")
    parts.append(f"That b grows without bound {drift.status}: {drift.evidence}.")
    parts.append(f"That the model blows up {blow.status}: {blow.evidence}.")
    parts.append(f"That it is worse when the normalization also scales {worse.status}: {worse.evidence}.")
    parts.append(f"With real BN the bias is redundant: {bn.status} ({bn.evidence}). "
                 f"BN's gradient flows through the batch statistics, so the component of the gradient that "
                 f"would move b is projected out; b can be dropped and beta takes its role.")
    return " ".join(parts)


def write_report(params: Params, summaries, histories, out: Path) -> dict:
    out = Path(out)
    for sub in ("figures", "tables", "plots"):
        shutil.rmtree(out / sub, ignore_errors=True)
        (out / sub).mkdir(parents=True)
    t = member_table(summaries, histories)
    for col in ("b_sens_rel", "b_slope", "b_r2", "b_late_early", "b_slope_pred", "b_drift_final", "grad_b_rel"):
        if col not in t:
            t[col] = np.nan
    t["input_mean"] = t["input_mean"].fillna(0.0)
    agg = by_variant_lr(t)
    stable = largest_stable_lr(t, params.report.stable_loss_ratio)
    verdicts = all_verdicts(t.assign(input_mean=np.where(t["input_mean"] > NONZERO_MEAN, t["input_mean"], 0.0)),
                            params.report)
    hist = long_history(summaries, histories)
    figs = make_figures(params, hist, t, out / "figures")
    main_ds = next((s["dataset"] for s in summaries if s.get("input_mean_norm", 0) > NONZERO_MEAN),
                   params.grid.datasets[0])

    def fig_link(name):
        for key in (f"{name}_{main_ds}", name):
            if key in figs:
                return figs[key]
        return None

    t.to_csv(out / "tables" / "members.csv", index=False)
    agg.to_csv(out / "tables" / "by_variant_lr.csv", index=False)
    stable.to_csv(out / "tables" / "largest_stable_lr.csv", index=False)
    vt = pd.DataFrame([{"claim": v.claim, "verdict": v.status, "evidence": v.evidence, "criterion": v.criterion}
                       for v in verdicts])
    vt.to_csv(out / "tables" / "verdicts.csv", index=False)
    _dvc_plots(hist, out / "plots", params)

    stable_pivot = stable.pivot(index="variant", columns="dataset", values="largest_stable_lr")
    stable_pivot = stable_pivot.reindex(index=[v for v in params.grid.variants], columns=params.grid.datasets)
    stable_md = stable_pivot.map(lambda x: f"{x:g}" if np.isfinite(x) else "none").reset_index()

    n_members = len(t) // max(1, len(summaries))
    md = [f"# normlab report: what happens when normalization statistics leave the gradient step",
          "",
          f"{len(summaries)} cells ({len(params.grid.variants)} variants x {len(params.grid.datasets)} data sets), "
          f"{n_members} members each (lrs {', '.join(f'{x:g}' for x in params.optim.lrs)} x seeds "
          f"{', '.join(map(str, params.optim.seeds))}), {params.train.steps} {params.optim.name.upper()} steps, "
          f"batch {params.optim.batch_size}, MLP {params.model.depth}x{params.model.width} {params.model.activation}.",
          "",
          "## The answer",
          "",
          answer_text(verdicts),
          "",
          "## Verdicts",
          "",
          "| # | claim (Ioffe & Szegedy 2015, sec. 2) | verdict | the numbers that decide it | figure |",
          "|---|---|---|---|---|"]
    for i, v in enumerate(verdicts, 1):
        link = fig_link(v.figure.split("/")[-1].removesuffix(".png")) if v.figure else None
        md.append(f"| {i} | {v.claim} | **{v.status}** | {_cell(v.evidence)} | {f'[figure]({link})' if link else ''} |")
    md += ["", "How each verdict is decided (computed in `pipeline/verdicts.py` from `tables/members.csv`):", ""]
    md += [f"{i}. {v.criterion}." for i, v in enumerate(verdicts, 1)]
    md += ["", "## Largest stable learning rate",
           "",
           f"Largest lr at which no seed diverged and the final training loss is at most "
           f"{params.report.stable_loss_ratio:g} x the initial one (`none` = no lr in the grid qualifies).",
           "", _md_table(stable_md), ""]
    md += ["## Figures", ""]
    captions = {
        "toy_drift": "Bias-only toy: the measured drift ||b_t - b_0|| (solid), the identity lr * ||sum_t G_t|| "
                     "(dotted) and a line fitted on the first 10% of steps (dashed): linear growth, no saturation.",
        "b_norm": "||b|| per variant against step (log scale), columns = learning rate.",
        "loss": "Training loss per variant against step, columns = learning rate.",
        "grad_norm": "Gradient norm per variant against step.",
        "weight_norm": "||W|| against step; dashed black: bn's scale-invariance prediction.",
        "heatmap_final_loss": "Final training loss, variant x learning rate; red cells diverged.",
    }
    for name, path in figs.items():
        base = next((c for c in captions if name == c or name.startswith(c + "_")), name)
        md += [f"### {name.replace('_', ' ')}", "", captions.get(base, ""), "", f"![{name}]({path})", ""]
    md += ["## Tables", "",
           "Per variant x learning rate over seeds: mean ± sd. `||b-b0|| per step` is the slope of a linear fit "
           "of the drift of the first hidden layer's bias, `predicted per step` the slope of lr * ||sum_t G_t|| "
           "(SCIENCE.md item 2), `radial share` the median |cos(W, grad W)|. CSVs: `tables/`.", ""]
    for ds in params.grid.datasets:
        md += [f"<details><summary>{ds}</summary>", "", pretty_dataset_table(agg, ds), "", "</details>", ""]
    md += ["## Reproduce", "", "`make repro` (or `dvc repro`) regenerates this report from `params.yaml`; "
           "`mlflow ui` shows every member's run (see the README)."]
    text = "\n".join(md) + "\n"
    (out / "report.md").write_text(text)
    (out / "report.html").write_text(to_html(text, out))

    metrics = {"verdicts": {f"claim{i}": v.status for i, v in enumerate(verdicts, 1)},
               "largest_stable_lr": {f"{r.variant}/{r.dataset}": (float(r.largest_stable_lr)
                                                                  if np.isfinite(r.largest_stable_lr) else 0.0)
                                     for r in stable.itertuples()},
               "frac_diverged": {f"{v}/{d}": float(g["diverged"].mean())
                                 for (v, d), g in t.groupby(["variant", "dataset"], sort=False)}}
    (out / "metrics.json").write_text(json.dumps(metrics, indent=2))
    return {"verdicts": verdicts, "members": t, "figures": figs, "metrics": metrics}


def _dvc_plots(hist: pd.DataFrame, plots: Path, params: Params) -> None:
    """One CSV per variant (first data set, median over seeds, per lr column) for `dvc plots`."""
    ds = params.grid.datasets[0]
    d = hist[(hist["dataset"] == ds)].dropna(subset=["W_norm/l0"])
    for metric, col in (("b_norm", "b_norm/l0"), ("loss", "loss")):
        (plots / metric).mkdir(parents=True, exist_ok=True)
        for v, g in d.groupby("variant"):
            if col not in g:
                continue
            wide = g.pivot_table(index="step", columns="lr", values=col, aggfunc="median")
            wide.columns = [f"lr={c:g}" for c in wide.columns]
            wide[metric] = wide.median(axis=1)  # the series dvc plots draws: median over lrs and seeds
            wide.reset_index().to_csv(plots / metric / f"{v}.csv", index=False)


def to_html(markdown_text: str, base: Path) -> str:
    """Markdown -> one self-contained HTML page (figures inlined as data URIs)."""
    from markdown_it import MarkdownIt

    body = MarkdownIt("commonmark", {"html": True}).enable("table").render(markdown_text)

    def inline(m):
        path = base / m.group(1)
        data = base64.b64encode(path.read_bytes()).decode() if path.exists() else ""
        return f'src="data:image/png;base64,{data}"'

    body = re.sub(r'src="(figures/[^"]+\.png)"', inline, body)
    style = ("body{font-family:system-ui,sans-serif;max-width:1200px;margin:2em auto;padding:0 1em;line-height:1.45}"
             "table{border-collapse:collapse;font-size:12px;margin:1em 0}td,th{border:1px solid #ccc;padding:3px 6px}"
             "th{background:#f3f3f3}img{max-width:100%}code{background:#f6f6f6;padding:1px 3px}")
    return (f"<!doctype html><html><head><meta charset='utf-8'><title>normlab report</title>"
            f"<style>{style}</style></head><body>{body}</body></html>\n")


def log_report_run(params: Params, out: Path, summaries: list[dict], result: dict) -> str | None:
    """The report as an MLflow run: its files as artifacts, tagged with the cell runs."""
    from mlflow.entities import Metric, RunTag

    from pipeline.tracking import connect, experiment_id, git_commit, tracking_uri

    uri = tracking_uri()
    client = connect(uri)
    exp = experiment_id(client, params.tracking.experiment, uri)
    cells = [s["mlflow"]["parent_run_id"] for s in summaries if s.get("mlflow")]
    run = client.create_run(exp, run_name="report", tags={
        "normlab.kind": "report", "git_commit": git_commit(), "dvc_stage": "report",
        "cell_runs": ",".join(cells), "grid.variants": ",".join(params.grid.variants),
        "grid.datasets": ",".join(params.grid.datasets)})
    rid = run.info.run_id
    try:
        now = int(time.time() * 1000)
        tags = [RunTag(f"verdict.claim{i}", v.status) for i, v in enumerate(result["verdicts"], 1)]
        metrics = [Metric(f"stable_lr/{k}", v, now, 0) for k, v in result["metrics"]["largest_stable_lr"].items()]
        client.log_batch(rid, metrics=metrics[:1000], tags=tags)
        for name in ("report.md", "report.html", "metrics.json"):
            client.log_artifact(rid, str(out / name))
        client.log_artifacts(rid, str(out / "figures"), "figures")
        client.log_artifacts(rid, str(out / "tables"), "tables")
        client.set_terminated(rid, "FINISHED")
    except BaseException:
        client.set_terminated(rid, "FAILED")
        raise
    return rid


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m pipeline.report", description=__doc__.splitlines()[0])
    ap.add_argument("--runs", default="runs", help="folder holding the cells' outputs")
    ap.add_argument("--out", default="reports", help="report folder")
    ap.add_argument("--params", default="params.yaml")
    ap.add_argument("--no-track", action="store_true", help="do not log the report to MLflow")
    args = ap.parse_args(argv)
    try:
        params = load_params(args.params)
        summaries, histories = load_cells(params, Path(args.runs))
        if params.tracking.enabled and not args.no_track:
            from pipeline.tracking import connect

            connect()  # an unreachable store is reported before any work
    except ConfigError as err:
        die(str(err))
    result = write_report(params, summaries, histories, Path(args.out))
    rid = None
    if params.tracking.enabled and not args.no_track:
        rid = log_report_run(params, Path(args.out), summaries, result)
    for i, v in enumerate(result["verdicts"], 1):
        print(f"claim {i}: {v.status:>24}  {v.claim}")
    print(f"wrote {args.out}/report.md, report.html" + (f"; MLflow run {rid}" if rid else ""))
    return 0


if __name__ == "__main__":
    sys.exit(main())
