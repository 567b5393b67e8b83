"""Member outcomes: one row per member of every cell, its status and what the claims measure on it.

    from pipeline.outcomes import member_table, largest_trained_lr, ci
    members = member_table(summaries, histories, params.report, configs)  # CellSummary list; configs: cell -> config.json
    largest = largest_trained_lr(members)

A member is judged against baselines fixed before it trained -- chance (loss ln C, accuracy 1/C)
and its own full-training-set loss at initialization -- never against its own early mini-batches
(an early spike would make any later loss look like progress), and its accuracy against what the
grid reached on the same data set. Status, first match wins:
  diverged    the run's non-finite/huge-loss flag, or an infinite final full-set loss
  fixed_loss  the loss cannot move by construction (only b trains under detached batch centering:
              the bias-only toy), so "trained" means nothing
  failed      final full-set training-mode loss > trained_loss_ratio * min(initial full-set loss, ln C),
              or training-mode accuracy below the row's `acc_bar` (a missing final evaluation also
              counts: no evidence of training is not training)
  trained     none of the above
acc_bar = max(best - trained_acc_gap, 1/C + trained_acc_margin), where `best` is the data set's best
accuracy: over every (variant, lr) group of that data set in the table, the median over seeds of the
final full-set training-mode accuracy, the highest (fixed_loss variants and diverged members left
out; no such accuracy at all: the floor alone). The gap keeps a network at 53 % on 10 classes from
counting as trained beside one at 97 %; the floor keeps a grid of only broken variants from calling
chance "trained".

Growth of the parameters is a flag beside the status, not an outcome: a net that fits with ||W||
40x larger is trained, and says so in its flags.
  w_grew      some layer's ||W_T|| / ||W_0|| > report.blowup_w_factor
  b_grew      some layer's ||b_T - b_0|| / sqrt(units) (rms drift per unit or channel) > report.blowup_b_rms
  blown       diverged or w_grew or b_grew: claim 4's "the model blows up", either reading

Claim 1b's inference-mode gap loss_gap = full_loss_eval - full_loss_train is split exactly into
loss_gap_b = full_loss_eval - full_loss_eval_bema (b's own lag: eval adds b_T while the running mean
holds an EMA of b_t) and loss_gap_lag = full_loss_eval_bema - full_loss_train (the lag of W's
statistics); NaN where the pass without b's lag is not measured (pipeline/module.py).
"""

from __future__ import annotations

import math

import numpy as np
import pandas as pd

from pipeline.drive import drive_decay, lag_prediction, leak_prediction, window_alphas
from pipeline.spec.records import CellSummary, layer_column
from pipeline.spec.variants import loss_fixed, refresh_interval

STATUSES = ("trained", "failed", "diverged", "fixed_loss")
CELL_KEYS = ("cell", "variant", "dataset", "norm", "steps", "classes", "chance_loss", "input_mean_norm")


# -- statistics ----------------------------------------------------------------------------
def ci(
    values, paired=None, *, n_boot: int = 2000, level: float = 0.95, method: str | None = None
) -> tuple[float, float, float]:
    """(mean, lo, hi): a `level` interval for the mean over seeds.

    paired=None: Student-t interval of mean(values) (method "t"), or a percentile bootstrap over
    seeds (method "bootstrap", for a proportion of 0/1 outcomes).
    paired=array (same seeds, same order): the mean of values - paired, by a percentile bootstrap
    that resamples seeds (pairs stay together), RNG numpy default_rng(0) so a report is repeatable.
    Pairs or values with a NaN are dropped; fewer than 2 left: (mean, nan, nan)."""
    x = np.asarray(values, float)
    if paired is not None:
        y = np.asarray(paired, float)
        if y.shape != x.shape:
            raise ValueError(f"ci: paired has {y.shape} values, values has {x.shape}")
        x = x - y
        method = "bootstrap"
    x = x[np.isfinite(x)]
    if len(x) == 0:
        return float("nan"), float("nan"), float("nan")
    mean = float(x.mean())
    if len(x) < 2:
        return mean, float("nan"), float("nan")
    if (method or "t") == "t":
        from scipy import stats

        half = float(stats.t.ppf(0.5 + level / 2, len(x) - 1) * x.std(ddof=1) / math.sqrt(len(x)))
        return mean, mean - half, mean + half
    if method != "bootstrap":
        raise ValueError(f"ci: method must be 't' or 'bootstrap' (got {method!r})")
    rng = np.random.default_rng(0)
    means = x[rng.integers(0, len(x), size=(n_boot, len(x)))].mean(axis=1)
    lo, hi = np.quantile(means, [0.5 - level / 2, 0.5 + level / 2])
    return mean, float(lo), float(hi)


def growth_exponent(steps, drift, horizon: float, start_frac: float, min_points: int) -> float:
    """alpha in ||b_t - b_0|| ~ t^alpha: least-squares slope of log drift on log t over
    t >= start_frac * horizon (t = 0 and zero drift skipped). 1 = a persistent mean gradient,
    1/2 = zero-mean noise (random walk), -> 0 = the drive dies out. NaN with < min_points."""
    t, d = np.asarray(steps, float), np.asarray(drift, float)
    keep = (t >= start_frac * horizon) & (t > 0) & np.isfinite(d) & (d > 0)
    if keep.sum() < min_points:
        return float("nan")
    return float(np.polyfit(np.log(t[keep]), np.log(d[keep]), 1)[0])


def alpha_window(k: int) -> str:
    """The member-table quantity of alpha in the k-th doubling window before the end (0: [T/2, T],
    1: [T/4, T/2], ...; pipeline.drive.window_alphas)."""
    return f"alpha_w{k}"


def _predictions(m, row: dict) -> None:
    """Claim 1b's predicted lag and leak from the member's own drive (pipeline.drive): per layer whose running
    mean holds EMA(b), b_lag_pred = the predicted ||b_T - EMA(b)|| beside the measured b_lag; per member,
    loss_gap_b_pred = -(lr / m) sum_l ||Gbar_l||^2 beside the measured loss_gap_b."""
    sq, mom = [], None
    for ls in m.layers:
        if ls.ema_momentum is None or ls.drive_end_sq is None:
            continue
        mom = ls.ema_momentum
        row[layer_column("b_lag_pred", ls.layer)] = float(lag_prediction(m.lr, mom, ls.drive_end_sq, ls.drive_end_var))
        sq.append(ls.drive_end_sq)
    row["loss_gap_b_pred"] = float(leak_prediction(m.lr, mom, sum(sq))) if sq else float("nan")


def steps_to_target(steps, loss, target: float, window: int) -> float:
    """First step at which the trailing mean of `window` mini-batch losses (training mode) is
    below `target`; NaN if it never is (or the target is unknown)."""
    if not np.isfinite(target):
        return float("nan")
    s = pd.Series(np.asarray(loss, float), index=np.asarray(steps, float)).dropna().sort_index()
    below = s.rolling(window, min_periods=window).mean() < target
    return float(below.index[below.to_numpy()][0]) if below.any() else float("nan")


# -- the status rule ---------------------------------------------------------------------------
def best_accuracy(t: pd.DataFrame) -> pd.Series:
    """Per row: the best accuracy its data set reached -- over the (variant, lr) groups of that data
    set, the highest median over seeds of the final full-set training-mode accuracy (columns:
    dataset, variant, lr, loss_fixed, diverged, full_acc_train). Rows of a fixed_loss variant and
    diverged members do not count (their accuracy is chance by construction, or NaN); NaN where
    nothing is left."""
    diverged = t["diverged"].astype(bool) | np.isinf(t["full_loss_train"].astype(float))
    counted = t[~t["loss_fixed"].astype(bool) & ~diverged]
    best = counted.groupby(["dataset", "variant", "lr"])["full_acc_train"].median().groupby(level="dataset").max()
    return t["dataset"].map(best).astype(float)


def accuracy_bar(t: pd.DataFrame, settings) -> pd.Series:
    """Per row: the accuracy a trained member must reach, max(best on its data set - trained_acc_gap,
    1/C + trained_acc_margin) (best_accuracy; NaN best: the floor alone)."""
    floor = 1.0 / t["classes"].astype(float) + settings.trained_acc_margin
    return pd.Series(np.fmax(best_accuracy(t) - settings.trained_acc_gap, floor), index=t.index, name="acc_bar")


def classify(t: pd.DataFrame, settings) -> pd.Series:
    """The status of every row of a member table (columns: dataset, variant, lr, diverged, loss_fixed,
    full_loss_train, full_acc_train, init_full_loss_train, chance_loss, classes; acc_bar if already
    computed, else accuracy_bar(t) -- the bar reads the whole table, so classify the whole table)."""
    diverged = t["diverged"].astype(bool) | np.isinf(t["full_loss_train"].astype(float))
    bar = t["acc_bar"] if "acc_bar" in t else accuracy_bar(t, settings)
    baseline = np.fmin(t["init_full_loss_train"].astype(float), t["chance_loss"].astype(float))
    # written as not(ok) so a missing number fails: NaN compares False
    failed = ~(t["full_loss_train"] <= settings.trained_loss_ratio * baseline) | ~(t["full_acc_train"] >= bar)
    status = np.select(
        [diverged, t["loss_fixed"].astype(bool), failed], ["diverged", "fixed_loss", "failed"], "trained"
    )
    return pd.Series(status, index=t.index, name="status")


def grew(t: pd.DataFrame, settings) -> tuple[pd.Series, pd.Series]:
    """(w_grew, b_grew) per row: flags, not outcomes (NaN growth compares False: not flagged)."""
    return t["w_growth_max"] > settings.blowup_w_factor, t["b_rms_max"] > settings.blowup_b_rms


# -- the table ---------------------------------------------------------------------------------
def _config(s: CellSummary, configs: dict | None) -> dict:
    cfg = (configs or {}).get(s.cell)
    if not cfg:
        raise ValueError(f"{s.cell}: no config.json given (pass configs={{cell: config}})")
    return cfg


def _nanmax(x: np.ndarray) -> float:
    """pandas' max: NaN skipped, NaN when nothing is left."""
    x = x[~np.isnan(x)]
    return float(x.max()) if len(x) else float("nan")


def _ffill(x: np.ndarray) -> np.ndarray:
    """pandas' ffill down the rows of a 2-D array (leading NaNs stay NaN)."""
    rows = np.where(np.isnan(x), 0, np.arange(len(x))[:, None])
    return np.take_along_axis(x, np.maximum.accumulate(rows, axis=0), axis=0)


class _Member:
    """One member's history rows as numpy columns, sorted by step (a cell is split once, not per member)."""

    def __init__(self, columns: dict[str, np.ndarray]):
        self.columns = columns

    def __contains__(self, col: str) -> bool:
        return col in self.columns

    def __getitem__(self, col: str) -> np.ndarray:
        return self.columns[col]


def _split_members(h: pd.DataFrame, window: int) -> dict:
    """member -> _Member, the rows in step order (as h.groupby("member") then sort_values("step")),
    with "_loss_mean": steps_to_target's trailing mean of `window` mini-batch losses, computed for
    the whole cell at once (pandas' grouped rolling mean restarts at each member: the same sums)."""
    order = np.lexsort((h["step"].to_numpy(), h["member"].to_numpy()))
    members = h["member"].to_numpy()[order]
    cols = {c: h[c].to_numpy()[order] for c in h.columns}
    cols = {c: (v.astype(float) if c != "member" and v.dtype != object else v) for c, v in cols.items()}
    if "loss" in cols:
        ok = ~np.isnan(cols["loss"])  # steps_to_target drops missing losses before the rolling mean
        rolled = pd.Series(cols["loss"][ok]).groupby(members[ok], sort=True).rolling(window, min_periods=window).mean()
        mean = np.full(len(members), np.nan)
        mean[ok] = rolled.reset_index(level=0, drop=True).sort_index().to_numpy()
        cols["_loss_mean"] = mean
    cuts = np.flatnonzero(np.diff(members)) + 1
    bounds = zip(np.r_[0, cuts], np.r_[cuts, len(members)])
    return {members[a].item(): _Member({c: v[a:b] for c, v in cols.items()}) for a, b in bounds}


def _from_history(h: _Member, row: dict, layers: range, width: float, settings) -> dict:
    """The history-derived numbers of one member (numpy on its columns: the same float operations
    as pandas' dropna / max / ffill, without a DataFrame per member)."""
    out: dict = {}
    steps_total = row["steps"]
    step = h["step"]
    rels = []
    for layer in layers:
        col = layer_column("b_drift", layer)
        out[layer_column("alpha", layer)] = (
            growth_exponent(step, h[col], steps_total, settings.alpha_from, settings.alpha_min_points)
            if col in h
            else float("nan")
        )
        # claim 2's boundedness (pipeline/drive.py): kappa of the drive over doubling windows, alpha per window
        half = layer_column("drive_half", layer)
        if half in h:
            out[layer_column("kappa", layer)] = float(
                drive_decay(step, h[half], steps_total, settings.kappa_from, settings.alpha_min_points)[0]
            )
        if col in h:
            per = window_alphas(step, h[col], steps_total, settings.alpha_windows, settings.alpha_min_points)[0]
            for k, a in enumerate(per):
                out[layer_column(alpha_window(k), layer)] = float(a)
        gb, gw = layer_column("grad_b", layer), layer_column("grad_W", layer)
        if gb in h and gw in h:
            b, w = h[gb], h[gw]
            keep = ~np.isnan(b) & ~np.isnan(w)
            keep[keep] = w[keep] > 0
            out[layer_column("grad_b_rel", layer)] = _nanmax(b[keep] / w[keep])
            rels.append(out[layer_column("grad_b_rel", layer)])
    out["grad_b_rel_max"] = float(np.nanmax(rels)) if rels and np.isfinite(rels).any() else float("nan")
    # claim 5's identity in float64, measured once on the final state (module._grad_ratio_float64)
    rel64_cols = [h[c] for layer in layers if (c := layer_column("grad_b_rel64", layer)) in h]
    rel64 = np.concatenate([np.asarray(col, dtype=float) for col in rel64_cols]) if rel64_cols else np.empty(0)
    rel64 = rel64[np.isfinite(rel64)]  # one value per layer, on the final row: no loop over the history
    out["grad_b_rel64_max"] = float(rel64.max()) if rel64.size else float("nan")
    # steps_to_target(step, loss, target, target_smooth) on the cell's precomputed trailing means
    target = settings.target_loss_frac * row.get("init_full_loss_train", float("nan"))
    below = np.flatnonzero(h["_loss_mean"] < target) if np.isfinite(target) else np.empty(0, dtype=int)
    out["steps_to_target"] = float(step[below[0]]) if len(below) else float("nan")
    # claim 1's identity check, scaled by the float-rounding allowance that grows with ||b||:
    # |loss(b) - loss(b_0)| / max(|loss|, 1 nat) / (1 + rms of b per unit), worst evaluation of the run:
    # below 1 nat the rounding of a float32 cross-entropy is absolute (set by the logits' size), not
    # relative to the loss -- a member fitted to a loss of 5e-6 rounds at ~1e-10, 1e-5 of its loss
    out["b_sens_scaled"] = out["b_sens_rel"] = float("nan")
    bcols = [layer_column("b_norm", layer) for layer in layers if layer_column("b_norm", layer) in h]
    if "b_sensitivity" in h and "full_loss_train" in h and bcols:
        sens, full = h["b_sensitivity"], h["full_loss_train"]
        ev = ~np.isnan(sens) & ~np.isnan(full)
        if ev.any():
            filled = _ffill(np.stack([h[c] for c in bcols], axis=1))[ev]
            b0 = max((row.get(layer_column("b_norm0", layer), 0.0) or 0.0) for layer in layers)
            rms = np.maximum(
                np.where(np.isnan(filled).all(axis=1), 0.0, np.fmax.reduce(filled, axis=1)), b0
            ) / math.sqrt(width)
            rel = sens[ev] / np.maximum(np.abs(full[ev]), 1.0)
            out["b_sens_scaled"] = _nanmax(rel / (1.0 + rms))
            # claim 1's tolerance as first declared (before 9baab89): relative to the loss itself; the
            # rule ledger prints the verdict under it
            out["b_sens_rel"] = _nanmax(sens[ev] / np.abs(full[ev]) / (1.0 + rms))
    return out


def _nobias_gaps(t: pd.DataFrame, summaries, histories, early_steps: int) -> pd.DataFrame:
    """For a variant V whose twin V_nobias (the same without b) is in the grid: per member, the
    max |loss_V - loss_V_nobias| / |loss at step 0| over the first `early_steps` steps and over the run
    (steps where both losses are there; "step 0" is the first such step)."""
    t["loss_gap_nobias_early"] = np.nan
    t["loss_gap_nobias"] = np.nan
    by_name = {(s.variant, s.dataset): s for s in summaries}
    found = []
    for (v, ds), s in by_name.items():
        twin = by_name.get((f"{v}_nobias", ds))
        if twin is None:
            continue
        tb = {(m.lr, m.seed): m.member for m in twin.members}
        pairs = pd.DataFrame(
            [(m.member, tb[(m.lr, m.seed)]) for m in s.members if (m.lr, m.seed) in tb],
            columns=["member", "twin_member"],
        )
        if pairs.empty:
            continue
        a = histories[s.cell][["member", "step", "loss"]].merge(pairs, on="member")
        b = histories[twin.cell][["member", "step", "loss"]].rename(columns={"member": "twin_member"})
        both = a.merge(b, on=["twin_member", "step"], suffixes=("_a", "_b")).dropna(subset=["loss_a", "loss_b"])
        if both.empty:
            continue
        both = both.sort_values(["member", "step"], kind="stable")
        first = both.groupby("member")["loss_a"].transform("first").abs().to_numpy()
        gap = np.abs(both["loss_a"].to_numpy() - both["loss_b"].to_numpy()) / np.maximum(first, 1e-12)
        g = both[["member", "step"]].assign(gap=gap)
        per = g.groupby("member")["gap"].max().rename("loss_gap_nobias").to_frame()
        per["loss_gap_nobias_early"] = g[g["step"] < early_steps].groupby("member")["gap"].max()
        found.append(per.reset_index().assign(cell=s.cell))
    if found:
        gaps = pd.concat(found, ignore_index=True).set_index(["cell", "member"])
        key = pd.MultiIndex.from_arrays([t["cell"], t["member"]])
        hit = key.isin(gaps.index)
        for col in ("loss_gap_nobias", "loss_gap_nobias_early"):
            t.loc[hit, col] = gaps[col].reindex(key[hit]).to_numpy(dtype=float)
    return t


def member_table(
    summaries: list[CellSummary], histories: dict[str, pd.DataFrame], settings, configs: dict[str, dict] | None = None
) -> pd.DataFrame:
    """One row per member of every cell: the summary's numbers, derived quantities and status.
    `configs` maps a cell name to its config.json (required). Per-layer columns are named
    layer_column(quantity, layer) for layer in range(row["depth"]) (the number of hidden layers)."""
    rows = []
    for s in summaries:
        cfg = _config(s, configs)
        # units per hidden layer: b has one entry per unit (mlp) or per channel (cnn)
        mcfg = cfg["model"]
        var, width = cfg["variant"], float(mcfg["channels"] if mcfg.get("kind") == "cnn" else mcfg["width"])
        hist = _split_members(histories[s.cell], settings.target_smooth) if s.cell in histories else {}
        cell = {k: getattr(s, k) for k in CELL_KEYS}
        if not np.isfinite(cell["chance_loss"]) and np.isfinite(cell["classes"]):
            cell["chance_loss"] = math.log(cell["classes"])
        k = refresh_interval(var)  # the spec row decides whether the variant reads refresh_every
        # affine: the variant's gamma, beta switch (config): with beta, b shadows beta (pipeline/claims/shadow.py)
        cell.update(
            width=width,
            trainable=var.get("trainable", "all"),
            has_bias=bool(var.get("bias", True)),
            affine=bool(var.get("affine", True)),
            refresh_every=float(k) if k is not None else float("nan"),
            loss_fixed=loss_fixed({**var, "norm": s.norm}),
        )
        for m in s.members:
            row = {**cell, **m.scalars(), "depth": m.depth, **m.layer_columns()}
            layers = range(m.depth)
            growth, rms = [], []
            for ls in m.layers:
                w0 = ls.W_norm0
                growth.append(ls.W_norm / w0 if w0 else float("nan"))
                row[layer_column("w_growth", ls.layer)] = growth[-1]
                if ls.b_drift is not None:
                    rms.append(ls.b_drift / math.sqrt(width))
                    row[layer_column("b_rms", ls.layer)] = rms[-1]
            row["w_growth_max"] = float(np.nanmax(growth)) if np.isfinite(growth).any() else float("nan")
            row["b_rms_max"] = float(np.nanmax(rms)) if rms and np.isfinite(rms).any() else float("nan")
            row["loss_gap"] = row.get("full_loss_eval", np.nan) - row.get("full_loss_train", np.nan)
            # the gap split exactly (pipeline/module.py): b's own lag in the running mean, and the lag of
            # W's statistics (NaN where the b-lag-free pass is not measured)
            bema = row.get("full_loss_eval_bema", np.nan)
            row["loss_gap_b"] = row.get("full_loss_eval", np.nan) - bema
            row["loss_gap_lag"] = bema - row.get("full_loss_train", np.nan)
            row["acc_gap"] = row.get("full_acc_train", np.nan) - row.get("full_acc_eval", np.nan)
            _predictions(m, row)
            h = hist.get(m.member)
            if h is not None and len(h["step"]):
                row.update(_from_history(h, row, layers, width, settings))
            rows.append(row)
    t = pd.DataFrame(rows)
    for col in (
        "full_loss_train",
        "full_acc_train",
        "init_full_loss_train",
        "full_loss_eval",
        "full_acc_eval",
        "full_loss_eval_bema",
        "loss_gap",
        "loss_gap_b",
        "loss_gap_lag",
        "loss_gap_b_pred",
        "steps_to_target",
        "b_sens_scaled",
        "b_sens_rel",
        "grad_b_rel_max",
        "grad_b_rel64_max",
        "diverged_step",
    ):
        if col not in t:
            t[col] = np.nan
        t[col] = t[col].astype(float)
    t["w_grew"], t["b_grew"] = grew(t, settings)
    t["acc_bar"] = accuracy_bar(t, settings)
    t["status"] = classify(t, settings)
    # claim 4's "blows up", either reading: a loss that left the finite range, or parameters that did
    t["blown"] = (t["status"] == "diverged") | t["w_grew"] | t["b_grew"]
    t["trained"] = t["status"] == "trained"
    return _nobias_gaps(t, summaries, histories, settings.trajectory_steps)


LARGEST_COLUMNS = ["variant", "dataset", "largest_trained_lr", "acc_at_largest", "note"]


def largest_trained_lr(table: pd.DataFrame) -> pd.DataFrame:
    """Per variant x data set: the largest lr at which EVERY seed is "trained" (NaN: none is), and
    acc_at_largest, the median over seeds of the final full-set training-mode accuracy at that lr
    (so a large lr is read beside what it reached); a variant whose loss cannot move gets NaN and a
    note, never a number read from noise."""
    out = []
    for (v, ds), g in table.groupby(["variant", "dataset"], sort=False):
        if (g["status"] == "fixed_loss").all():
            out.append(
                {
                    "variant": v,
                    "dataset": ds,
                    "largest_trained_lr": float("nan"),
                    "acc_at_largest": float("nan"),
                    "note": "n/a: the loss cannot move (only b trains, detached centering)",
                }
            )
            continue
        ok = g.groupby("lr")["status"].agg(lambda s: bool((s == "trained").all()))
        lrs = ok.index[ok.to_numpy()]
        lr = float(lrs.max()) if len(lrs) else float("nan")
        acc = float(g.loc[g["lr"] == lr, "full_acc_train"].astype(float).median()) if len(lrs) else float("nan")
        out.append(
            {
                "variant": v,
                "dataset": ds,
                "largest_trained_lr": lr,
                "acc_at_largest": acc,
                "note": "" if len(lrs) else "no lr at which every seed trained",
            }
        )
    return pd.DataFrame(out, columns=LARGEST_COLUMNS)
