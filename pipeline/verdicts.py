"""The verdict on each claim of the seed question, computed from the measurements.

Every verdict is a function of the per-member table built by `pipeline.report` (one row
per variant x dataset x lr x seed) and returns a `Verdict`: a status (holds / does not
hold / not shown at this scale), the criterion in words, and the numbers that decided it.
Nothing here is written in advance: change the data and the verdicts follow.

Columns used (see report.member_table): variant, norm, dataset, lr, seed, diverged,
diverged_step, b_drift_final, b_slope, b_r2, b_late_early, b_slope_pred, b_sens_rel,
grad_b_rel, loss_gap_nobias, input_mean.
"""
from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
import pandas as pd

HOLDS, FAILS, NOT_SHOWN = "holds", "does not hold", "not shown at this scale"

DETACHED_CENTERING = ("center_detached", "standardize_detached")  # x_hat does not depend on b
DETACHED = ("center_detached", "standardize_detached", "population_detached", "running_detached")
FLOAT_TOL = 1e-4  # "does not depend" = relative change of the loss below this (float32 rounding)


@dataclass
class Verdict:
    claim: str
    status: str
    criterion: str
    evidence: str
    figure: str | None = None
    numbers: dict = field(default_factory=dict)


def _fmt(x, digits=3) -> str:
    if x is None or (isinstance(x, float) and not np.isfinite(x)):
        return "n/a"
    return f"{x:.{digits}g}"


def _rows(t: pd.DataFrame, norms=None, variants=None, mean_nonzero=None, alive=None) -> pd.DataFrame:
    m = pd.Series(True, index=t.index)
    if norms is not None:
        m &= t["norm"].isin(norms)
    if variants is not None:
        m &= t["variant"].isin(variants)
    if mean_nonzero is not None:
        m &= (t["input_mean"] > 1e-6) == mean_nonzero
    if alive is not None:
        m &= ~t["diverged"] if alive else t["diverged"]
    return t[m]


def loss_independent_of_b(t: pd.DataFrame, cfg) -> Verdict:
    """(1) With statistics outside the step, the loss does not depend on b."""
    claim = "With the statistics outside the gradient step, the loss does not depend on b"
    crit = (f"median over detached-centering members ({', '.join(DETACHED_CENTERING)}, bias-only toy) of "
            f"|loss(b) - loss(b_0)| / loss on the full training set below {FLOAT_TOL:g}, while b moved "
            f"(median ||b_T - b_0|| > {cfg.redundant_tol:g}); the plain network (`none`) must show a "
            f"dependence above {FLOAT_TOL:g} for the measurement to count")
    det = _rows(t, norms=DETACHED_CENTERING, alive=True).dropna(subset=["b_sens_rel"])
    ctrl = _rows(t, norms=["none"], alive=True).dropna(subset=["b_sens_rel"])
    if det.empty:
        return Verdict(claim, NOT_SHOWN, crit, "no surviving detached-centering member in the grid")
    sens, moved = float(det["b_sens_rel"].median()), float(det["b_drift_final"].median())
    ctrl_sens = float(ctrl["b_sens_rel"].median()) if not ctrl.empty else float("nan")
    ev = (f"detached centering: median relative |loss(b) - loss(b_0)| = {_fmt(sens)} (n = {len(det)}, "
          f"max {_fmt(float(det['b_sens_rel'].max()))}) with median ||b_T - b_0|| = {_fmt(moved)}; "
          f"plain network: {_fmt(ctrl_sens)} (n = {len(ctrl)})")
    nums = {"sensitivity": sens, "drift": moved, "control_sensitivity": ctrl_sens}
    if moved <= cfg.redundant_tol or not (ctrl_sens > FLOAT_TOL):
        return Verdict(claim, NOT_SHOWN, crit, ev, "figures/toy_drift.png", nums)
    return Verdict(claim, HOLDS if sens < FLOAT_TOL else FAILS, crit, ev, "figures/toy_drift.png", nums)


def b_grows_without_bound(t: pd.DataFrame, cfg) -> Verdict:
    """(2) b grows without bound: linear drift at the predicted rate, no saturation."""
    claim = "b grows without bound"
    crit = (f"in surviving detached-centering members, ||b_t - b_0|| fits a line with R^2 >= {cfg.drift_r2} "
            f"in most members, the slope in the second half is at least half that of the first (no "
            f"saturation), and the measured slope is within 10% of the predicted lr * ||mean sum_i g_i||")
    det = _rows(t, norms=DETACHED_CENTERING, alive=True).dropna(subset=["b_slope"])
    if det.empty:
        return Verdict(claim, NOT_SHOWN, crit, "no surviving detached-centering member in the grid")
    linear = float((det["b_r2"] >= cfg.drift_r2).mean())
    no_sat = float((det["b_late_early"] >= 0.5).mean())
    ratio = (det["b_slope"] / det["b_slope_pred"]).replace([np.inf, -np.inf], np.nan).dropna()
    match = float(((ratio - 1).abs() <= 0.1).mean()) if len(ratio) else 0.0
    ev = (f"{len(det)} members: {linear:.0%} linear (R^2 >= {cfg.drift_r2}), {no_sat:.0%} without saturation, "
          f"{match:.0%} at the predicted rate (median measured/predicted slope {_fmt(float(ratio.median()) if len(ratio) else None)}); "
          f"median final ||b_T - b_0|| = {_fmt(float(det['b_drift_final'].median()))}")
    nums = {"frac_linear": linear, "frac_no_saturation": no_sat, "frac_predicted": match}
    if float(det["b_drift_final"].median()) <= cfg.redundant_tol:
        return Verdict(claim, NOT_SHOWN, crit, ev, "figures/b_norm.png", nums)
    ok = linear > 0.5 and no_sat > 0.5 and match > 0.5
    return Verdict(claim, HOLDS if ok else FAILS, crit, ev, "figures/b_norm.png", nums)


def _largest_stable(t: pd.DataFrame, cfg) -> dict[str, float]:
    """Per data set, the report's own "largest stable lr" (pipeline.report.largest_stable_lr)."""
    from pipeline.report import largest_stable_lr

    table = largest_stable_lr(t, cfg.stable_loss_ratio)
    return {d: (float(x) if pd.notna(x) else 0.0) for d, x in zip(table["dataset"], table["largest_stable_lr"])}


def worse_when_scaling(t: pd.DataFrame, cfg) -> Verdict:
    """(3) It is worse when the normalization also scales."""
    claim = "It is worse when the normalization also scales"
    crit = ("on inputs with non-zero mean, `standardize_detached` diverges in more members than "
            "`center_detached` (same lrs, seeds, data), or has a smaller largest stable lr on some data set "
            "(and a larger on none); the reverse is 'does not hold'; equal on both counts is 'not shown'")
    t = _rows(t, mean_nonzero=True)
    c, s = t[t["variant"] == "center_detached"], t[t["variant"] == "standardize_detached"]
    if c.empty or s.empty:
        return Verdict(claim, NOT_SHOWN, crit, "center_detached and standardize_detached are not both in the grid")
    nc, ns = int(c["diverged"].sum()), int(s["diverged"].sum())
    lc, ls = _largest_stable(c, cfg), _largest_stable(s, cfg)
    stable = "; ".join(f"{d} {_fmt(lc.get(d))} vs {_fmt(ls.get(d))}" for d in lc)
    ev = (f"diverged members: center_detached {nc}/{len(c)}, standardize_detached {ns}/{len(s)}; "
          f"largest stable lr (center vs standardize): {stable}")
    nums = {"diverged_center": nc, "diverged_standardize": ns, "stable_center": lc, "stable_standardize": ls}
    smaller = any(ls.get(d, 0.0) < x for d, x in lc.items())
    larger = any(ls.get(d, 0.0) > x for d, x in lc.items())
    if ns > nc or (ns == nc and smaller and not larger):
        status = HOLDS
    elif ns < nc or (ns == nc and larger and not smaller):
        status = FAILS
    else:
        status = NOT_SHOWN
    return Verdict(claim, status, crit, ev, "figures/heatmap_final_loss.png", nums)


def model_blows_up(t: pd.DataFrame, cfg) -> Verdict:
    """(4) The model blows up when the statistics are computed outside the step."""
    claim = "The model blows up when the normalization is computed outside the gradient step"
    crit = ("on inputs with non-zero mean, some detached variant diverges in at least half its seeds at an "
            "lr where the same normalization with the gradient through it (`center` for centering, `bn` "
            "for standardizing) diverges in none")
    t = _rows(t, mean_nonzero=True)
    through = {"center_detached": "center", "standardize_detached": "bn", "population_detached": "bn",
               "running_detached": "bn"}
    found, matched = [], 0
    for det, ref in through.items():
        d, r = t[t["variant"] == det], t[t["variant"] == ref]
        if d.empty or r.empty:
            continue
        for (ds, lr), grp in d.groupby(["dataset", "lr"]):
            ref_grp = r[(r["dataset"] == ds) & (r["lr"] == lr)]
            if grp["diverged"].mean() < 0.5 or not len(ref_grp):
                continue
            if ref_grp["diverged"].any():
                matched += 1  # the twin blows up too: not the detaching's doing
                continue
            steps = grp.loc[grp["diverged"], "diverged_step"]
            found.append((det, ds, lr, ref, float(grp["diverged"].mean()), float(steps.median())))
    if not found:
        n_div = int(t[t["variant"].isin(through)]["diverged"].sum())
        return Verdict(claim, FAILS if matched else NOT_SHOWN, crit,
                       f"no (variant, lr) where a detached variant diverged in most seeds and its gradient-through "
                       f"twin in none ({matched} where both did; {n_div} detached members diverged in all)",
                       "figures/heatmap_final_loss.png")
    first = sorted(found, key=lambda f: f[2])
    ev = "; ".join(f"{d} on {ds} at lr {_fmt(lr)}: {frac:.0%} of seeds diverged (median step {_fmt(st)}), "
                   f"{ref} none" for d, ds, lr, ref, frac, st in first[:6])
    if len(first) > 6:
        ev += f"; and {len(first) - 6} more"
    return Verdict(claim, HOLDS, crit, ev, "figures/heatmap_final_loss.png", {"cases": len(found)})


def bn_makes_b_redundant(t: pd.DataFrame, cfg) -> Verdict:
    """(5) With real BN the bias is redundant; its role is taken by beta."""
    claim = "With real BN the bias is redundant and its role is taken by beta"
    crit = (f"under `bn`: max |dl/db| / |dl/dW| below 1e-5 and max ||b_T - b_0|| below {cfg.redundant_tol:g} "
            f"in every member; and `bn` and `bn_nobias` (same seeds) give the same losses step by step: "
            f"|loss gap| / initial loss below 1e-3 at every step of the first 10% in every pair, and over the "
            f"whole run in most pairs (float rounding, which differs between the two, is amplified by the "
            f"dynamics at large lr)")
    bn = _rows(t, variants=["bn"])
    if bn.empty:
        return Verdict(claim, NOT_SHOWN, crit, "`bn` is not in the grid")
    g, drift = float(bn["grad_b_rel"].max()), float(bn["b_drift_final"].max())
    gap = bn["loss_gap_nobias"].dropna()
    early = bn.get("loss_gap_early", gap).dropna()
    agree = float((gap < 1e-3).mean()) if len(gap) else 0.0
    ev = (f"bn: max |dl/db|/|dl/dW| = {_fmt(g)}, max ||b_T - b_0|| = {_fmt(drift)} over {len(bn)} members; "
          + (f"bn vs bn_nobias over {len(gap)} member pairs: max gap in the first 10% of steps "
             f"{_fmt(float(early.max()))}, median gap over the run {_fmt(float(gap.median()))}, "
             f"{agree:.0%} of pairs within 1e-3 throughout" if len(gap) else "bn_nobias not in the grid"))
    nums = {"grad_b_rel": g, "drift": drift, "loss_gap": float(gap.max()) if len(gap) else None}
    if not len(gap):
        return Verdict(claim, NOT_SHOWN, crit, ev, "figures/loss.png", nums)
    ok = g < 1e-5 and drift < cfg.redundant_tol and float(early.max()) < 1e-3 and agree > 0.5
    return Verdict(claim, HOLDS if ok else FAILS, crit, ev, "figures/loss.png", nums)


CLAIMS = (loss_independent_of_b, b_grows_without_bound, worse_when_scaling, model_blows_up, bn_makes_b_redundant)


def all_verdicts(members: pd.DataFrame, cfg) -> list[Verdict]:
    return [claim(members, cfg) for claim in CLAIMS]
