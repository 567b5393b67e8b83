"""Member outcomes: one row per member of every cell, its status and what the claims measure on it.

    from pipeline.outcomes import member_table, largest_trained_lr, ci
    members = member_table(summaries, histories, params.report, configs)  # configs: cell -> config.json
    largest = largest_trained_lr(members)

A member is judged against baselines fixed before it trained -- chance (loss ln C, accuracy 1/C)
and its own full-training-set loss at initialization -- never against its own early mini-batches
(an early spike would make any later loss look like progress). Status, first match wins:
  diverged  the run's non-finite/huge-loss flag, or an infinite final full-set loss
  fixed_loss  the loss cannot move by construction (only b trains under detached batch centering:
            the bias-only toy), so "trained" means nothing
  blew_up   finite, but some layer's ||W_T|| / ||W_0|| > report.blowup_w_factor, or its
            ||b_T - b_0|| / sqrt(units) (rms drift per unit or channel) > report.blowup_b_rms
  failed    final full-set training-mode loss > trained_loss_ratio * min(initial full-set loss, ln C),
            or training-mode accuracy < 1/C + trained_acc_margin: at or near chance (a missing
            final evaluation also counts: no evidence of training is not training)
  trained   none of the above
"""
from __future__ import annotations

import math

import numpy as np
import pandas as pd

STATUSES = ("trained", "failed", "blew_up", "diverged", "fixed_loss")
# training-mode x_hat is independent of b for these (batch statistics, detached): the toy's loss is fixed
DETACHED_BATCH_CENTERING = ("center_detached", "standardize_detached")
CELL_KEYS = ("cell", "variant", "dataset", "norm", "steps", "classes", "chance_loss", "input_mean_norm")


# -- statistics ----------------------------------------------------------------------------
def ci(values, paired=None, *, n_boot: int = 2000, level: float = 0.95, method: str | None = None
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


def steps_to_target(steps, loss, target: float, window: int) -> float:
    """First step at which the trailing mean of `window` mini-batch losses (training mode) is
    below `target`; NaN if it never is (or the target is unknown)."""
    if not np.isfinite(target):
        return float("nan")
    s = pd.Series(np.asarray(loss, float), index=np.asarray(steps, float)).dropna().sort_index()
    below = s.rolling(window, min_periods=window).mean() < target
    return float(below.index[below.to_numpy()][0]) if below.any() else float("nan")


# -- the status rule ---------------------------------------------------------------------------
def classify(t: pd.DataFrame, settings) -> pd.Series:
    """The status of every row of a member table (columns: diverged, loss_fixed, full_loss_train,
    full_acc_train, init_full_loss_train, chance_loss, classes, w_growth_max, b_rms_max)."""
    diverged = t["diverged"].astype(bool) | np.isinf(t["full_loss_train"].astype(float))
    blew_up = (t["w_growth_max"] > settings.blowup_w_factor) | (t["b_rms_max"] > settings.blowup_b_rms)
    baseline = np.fmin(t["init_full_loss_train"].astype(float), t["chance_loss"].astype(float))
    # written as not(ok) so a missing number fails: NaN compares False
    failed = ~(t["full_loss_train"] <= settings.trained_loss_ratio * baseline) \
        | ~(t["full_acc_train"] >= 1.0 / t["classes"] + settings.trained_acc_margin)
    status = np.select([diverged, t["loss_fixed"].astype(bool), blew_up, failed],
                       ["diverged", "fixed_loss", "blew_up", "failed"], "trained")
    return pd.Series(status, index=t.index, name="status")


# -- the table ---------------------------------------------------------------------------------
def _layers(member: dict) -> list[str]:
    return sorted({k.split("/")[1] for k in member if k.startswith("W_norm/")}, key=lambda s: int(s[1:]))


def _config(s: dict, configs: dict | None) -> dict:
    cfg = (configs or {}).get(s["cell"]) or s.get("config")
    if not cfg:
        raise ValueError(f"{s['cell']}: no config.json given (pass configs={{cell: config}} or summary['config'])")
    return cfg


def _from_history(h: pd.DataFrame, row: dict, layers: list[str], width: float, settings) -> dict:
    out: dict = {}
    h = h.sort_values("step")
    steps_total = row["steps"]
    for layer in layers:
        col = f"b_drift/{layer}"
        out[f"alpha/{layer}"] = (growth_exponent(h["step"], h[col], steps_total, settings.alpha_from,
                                                 settings.alpha_min_points) if col in h else float("nan"))
        gb, gw = f"grad_b/{layer}", f"grad_W/{layer}"
        if gb in h and gw in h:
            both = h[[gb, gw]].dropna()
            both = both[both[gw] > 0]
            out[f"grad_b_rel/{layer}"] = float((both[gb] / both[gw]).max()) if len(both) else float("nan")
    rels = [out[k] for k in out if k.startswith("grad_b_rel/")]
    out["grad_b_rel_max"] = float(np.nanmax(rels)) if rels and np.isfinite(rels).any() else float("nan")
    out["steps_to_target"] = steps_to_target(h["step"], h["loss"], settings.target_loss_frac
                                             * row.get("init_full_loss_train", float("nan")), settings.target_smooth)
    # claim 1's identity check, scaled by the float-rounding allowance that grows with ||b||:
    # |loss(b) - loss(b_0)| / |loss| / (1 + rms of b per unit), worst evaluation of the run
    out["b_sens_scaled"] = float("nan")
    bcols = [f"b_norm/{layer}" for layer in layers if f"b_norm/{layer}" in h]
    if "b_sensitivity" in h and "full_loss_train" in h and bcols:
        filled = h[bcols].ffill()
        ev = h[h["b_sensitivity"].notna() & h["full_loss_train"].notna()]
        if len(ev):
            b0 = max((row.get(f"b_norm0/{layer}", 0.0) or 0.0) for layer in layers)
            rms = np.maximum(filled.loc[ev.index].max(axis=1).fillna(0.0), b0) / math.sqrt(width)
            rel = ev["b_sensitivity"] / ev["full_loss_train"].abs().clip(lower=1e-30)
            out["b_sens_scaled"] = float((rel / (1.0 + rms)).max())
    return out


def _nobias_gaps(t: pd.DataFrame, summaries, histories, early_steps: int) -> pd.DataFrame:
    """For a variant V whose twin V_nobias (the same without b) is in the grid: per member, the
    max |loss_V - loss_V_nobias| / |loss at step 0| over the first `early_steps` steps and over the run."""
    t["loss_gap_nobias_early"] = np.nan
    t["loss_gap_nobias"] = np.nan
    by_name = {(s["variant"], s["dataset"]): s for s in summaries}
    for (v, ds), s in by_name.items():
        twin = by_name.get((f"{v}_nobias", ds))
        if twin is None:
            continue
        a, b = histories[s["cell"]], histories[twin["cell"]]
        tb = {(m["lr"], m["seed"]): m["member"] for m in twin["members"]}
        for m in s["members"]:
            if (m["lr"], m["seed"]) not in tb:
                continue
            la = a[a["member"] == m["member"]].set_index("step")["loss"]
            lb = b[b["member"] == tb[(m["lr"], m["seed"])]].set_index("step")["loss"]
            both = pd.concat([la, lb], axis=1, join="inner").dropna()
            if both.empty:
                continue
            gap = (both.iloc[:, 0] - both.iloc[:, 1]).abs() / max(abs(both.iloc[0, 0]), 1e-12)
            sel = (t["cell"] == s["cell"]) & (t["member"] == m["member"])
            t.loc[sel, "loss_gap_nobias"] = float(gap.max())
            t.loc[sel, "loss_gap_nobias_early"] = float(gap[gap.index < early_steps].max())
    return t


def member_table(summaries: list[dict], histories: dict[str, pd.DataFrame], settings,
                 configs: dict[str, dict] | None = None) -> pd.DataFrame:
    """One row per member of every cell: the summary's numbers, derived quantities and status.
    `configs` maps a cell name to its config.json (else each summary's "config" key is used)."""
    rows = []
    for s in summaries:
        cfg = _config(s, configs)
        # units per hidden layer: b has one entry per unit (mlp) or per channel (cnn)
        mcfg = cfg["model"]
        var, width = cfg["variant"], float(mcfg["channels"] if mcfg.get("kind") == "cnn" else mcfg["width"])
        hist = dict(tuple(histories[s["cell"]].groupby("member"))) if s["cell"] in histories else {}
        cell = {k: s.get(k, float("nan")) for k in CELL_KEYS}
        if not np.isfinite(cell["chance_loss"]) and np.isfinite(cell["classes"]):
            cell["chance_loss"] = math.log(cell["classes"])
        cell.update(width=width, trainable=var.get("trainable", "all"), has_bias=bool(var.get("bias", True)),
                    refresh_every=float(var["refresh_every"]) if str(var.get("norm", "")).startswith("population")
                    else float("nan"),
                    loss_fixed=var.get("trainable", "all") == "bias" and s["norm"] in DETACHED_BATCH_CENTERING)
        for m in s["members"]:
            row = {**cell, **m}
            layers = _layers(m)
            for layer in layers:
                w0 = m.get(f"W_norm0/{layer}", float("nan"))
                row[f"w_growth/{layer}"] = m.get(f"W_norm/{layer}", float("nan")) / w0 if w0 else float("nan")
                if f"b_drift/{layer}" in m:
                    row[f"b_rms/{layer}"] = m[f"b_drift/{layer}"] / math.sqrt(width)
            growth = [row[f"w_growth/{layer}"] for layer in layers]
            rms = [row[k] for k in row if k.startswith("b_rms/")]
            row["w_growth_max"] = float(np.nanmax(growth)) if np.isfinite(growth).any() else float("nan")
            row["b_rms_max"] = float(np.nanmax(rms)) if rms and np.isfinite(rms).any() else float("nan")
            row["loss_gap"] = row.get("full_loss_eval", np.nan) - row.get("full_loss_train", np.nan)
            row["acc_gap"] = row.get("full_acc_train", np.nan) - row.get("full_acc_eval", np.nan)
            h = hist.get(m["member"])
            if h is not None and len(h):
                row.update(_from_history(h, row, layers, width, settings))
            rows.append(row)
    t = pd.DataFrame(rows)
    for col in ("full_loss_train", "full_acc_train", "init_full_loss_train", "full_loss_eval", "full_acc_eval",
                "steps_to_target", "b_sens_scaled", "grad_b_rel_max", "diverged_step"):
        if col not in t:
            t[col] = np.nan
        t[col] = t[col].astype(float)
    t["blowup_w"] = t["w_growth_max"] > settings.blowup_w_factor
    t["blowup_b"] = t["b_rms_max"] > settings.blowup_b_rms
    t["status"] = classify(t, settings)
    t["blown"] = t["status"].isin(["diverged", "blew_up"])  # claim 4's "blows up": either reading
    t["trained"] = t["status"] == "trained"
    return _nobias_gaps(t, summaries, histories, settings.trajectory_steps)


def largest_trained_lr(table: pd.DataFrame) -> pd.DataFrame:
    """Per variant x data set: the largest lr at which EVERY seed is "trained" (NaN: none is);
    a variant whose loss cannot move gets NaN and a note, never a number read from noise."""
    out = []
    for (v, ds), g in table.groupby(["variant", "dataset"], sort=False):
        if (g["status"] == "fixed_loss").all():
            out.append({"variant": v, "dataset": ds, "largest_trained_lr": float("nan"),
                        "note": "n/a: the loss cannot move (only b trains, detached centering)"})
            continue
        ok = g.groupby("lr")["status"].agg(lambda s: bool((s == "trained").all()))
        lrs = ok.index[ok.to_numpy()]
        out.append({"variant": v, "dataset": ds, "largest_trained_lr": float(lrs.max()) if len(lrs) else float("nan"),
                    "note": "" if len(lrs) else "no lr at which every seed trained"})
    return pd.DataFrame(out, columns=["variant", "dataset", "largest_trained_lr", "note"])
