"""The report's tables (CSV), its numeric metrics.json and the CSVs `dvc plots` draws.

    from pipeline.report.tables import write_tables, metrics, write_dvc_plots

tables/members.csv            one row per member (pipeline.outcomes.member_table)
tables/largest_trained_lr.csv per variant x data set (pipeline.outcomes.largest_trained_lr)
tables/status.csv             members per variant x data set x lr and outcome
tables/verdicts.csv           one row per claim: key, kind, status, rule
tables/<key>.csv              each verdict's own table, where it has one
plots/b_norm/<variant>.csv, plots/loss/<variant>.csv   for dvc.yaml's plots section
"""
from __future__ import annotations

import math
from pathlib import Path

import pandas as pd

# member outcomes (pipeline.outcomes), in the order the tables show them
STATUSES = ("trained", "failed", "blew_up", "diverged", "fixed_loss")
# a verdict's status as a number for metrics.json; "not shown at this scale" has none (shown = 0)
STATUS_CODE = {"holds": 1.0, "check passed": 1.0, "mixed": 0.5, "does not hold": 0.0, "check failed": 0.0}


def status_table(members: pd.DataFrame) -> pd.DataFrame:
    """Members per variant x data set x lr and outcome (one column per outcome, zeros kept)."""
    counts = (members.groupby(["variant", "dataset", "lr", "status"], sort=False).size()
              .unstack("status", fill_value=0))
    cols = [s for s in STATUSES] + [s for s in counts.columns if s not in STATUSES]
    counts = counts.reindex(columns=cols, fill_value=0)
    counts.columns.name = None
    counts["members"] = counts.sum(axis=1)
    return counts.reset_index()


def verdict_rows(verdicts) -> pd.DataFrame:
    return pd.DataFrame([{"key": v.key, "title": v.title, "kind": v.kind, "status": v.status, "rule": v.rule,
                          "figure": v.figure or ""} for v in verdicts])


def endpoint_rows(verdicts) -> pd.DataFrame:
    return pd.DataFrame([{"claim": v.key, "endpoint": e.name, "effect": e.effect, "ci_lo": e.lo, "ci_hi": e.hi,
                          "n": e.n, "unit": e.unit, "detail": e.detail}
                         for v in verdicts for e in v.endpoints],
                        columns=["claim", "endpoint", "effect", "ci_lo", "ci_hi", "n", "unit", "detail"])


def write_tables(tabdir: Path, members: pd.DataFrame, largest: pd.DataFrame, verdicts) -> dict[str, pd.DataFrame]:
    """Write every CSV; returns name -> frame of what was written (the renderer shows some)."""
    tabdir.mkdir(parents=True, exist_ok=True)
    out = {"members": members, "largest_trained_lr": largest, "status": status_table(members),
           "verdicts": verdict_rows(verdicts), "endpoints": endpoint_rows(verdicts)}
    for v in verdicts:
        if v.table is not None:
            if v.key in out:  # a claim key must not overwrite a report table
                raise ValueError(f"claim key {v.key!r} collides with the report's table {v.key}.csv")
            out[v.key] = v.table
    for name, frame in out.items():
        frame.to_csv(tabdir / f"{name}.csv", index=False)
    return out


def _num(x) -> float | None:
    """A finite float, or None (the caller omits the key: metrics.json holds numbers only)."""
    try:
        x = float(x)
    except (TypeError, ValueError):
        return None
    return x if math.isfinite(x) else None


def metrics(verdicts, members: pd.DataFrame, largest: pd.DataFrame, n_excluded: int) -> dict:
    """metrics.json for `dvc metrics show`: numbers only, a missing value is an absent key."""
    claims = {}
    for v in verdicts:
        entry = {"shown": 0.0 if v.status == "not shown at this scale" else 1.0,
                 "identity": 1.0 if v.kind == "identity" else 0.0, "endpoints": float(len(v.endpoints))}
        if v.status in STATUS_CODE:
            entry["status"] = STATUS_CODE[v.status]
        claims[v.key] = entry
    datasets = {}
    for ds, g in members.groupby("dataset", sort=False):
        entry = {"members": float(len(g))}
        for s in STATUSES:
            entry[f"frac_{s.replace('/', '')}"] = float((g["status"] == s).mean())
        lr_col = "largest_trained_lr"
        if lr_col in largest:
            for r in largest[largest["dataset"] == ds].itertuples():
                val = _num(getattr(r, lr_col))
                if val is not None:  # no lr trained: no key (never 0.0 for "none")
                    entry[f"largest_trained_lr/{r.variant}"] = val
        datasets[ds] = entry
    return {"claims": claims, "datasets": datasets, "cells_excluded": float(n_excluded)}


def write_dvc_plots(hist: pd.DataFrame, plots: Path, dataset: str) -> None:
    """One CSV per variant (one data set): step, one column per lr (median over seeds), and the
    series dvc plots draws (b_norm = ||b|| of the first hidden layer, loss = mini-batch loss in
    training mode), the median over lrs and seeds."""
    d = hist[hist["dataset"] == dataset]
    if "W_norm/l0" in d:
        d = d[d["W_norm/l0"].notna()]  # the logged steps (every train.log_every)
    for metric, col in (("b_norm", "b_norm/l0"), ("loss", "loss")):
        (plots / metric).mkdir(parents=True, exist_ok=True)
        if col not in d:
            continue
        for v, g in d.groupby("variant", sort=False):
            if g[col].isna().all():
                continue
            wide = g.pivot_table(index="step", columns="lr", values=col, aggfunc="median")
            wide.columns = [f"lr={c:g}" for c in wide.columns]
            wide[metric] = wide.median(axis=1)
            wide.reset_index().to_csv(plots / metric / f"{v}.csv", index=False)
