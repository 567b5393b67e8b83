"""The report's tables (CSV), its numeric metrics.json and the CSVs `dvc plots` draws.

    from pipeline.report.tables import write_tables, metrics, write_dvc_plots

tables/members.csv            one row per member (pipeline.outcomes.member_table)
tables/largest_trained_lr.csv per variant x data set (pipeline.outcomes.largest_trained_lr)
tables/cells.csv              one row per cell: its headline numbers (cell_table; also on its MLflow parent run)
tables/status.csv             members per variant x data set x lr and outcome
tables/verdicts.csv           one row per claim: key, kind, status, rule
tables/endpoints.csv          every verdict's endpoints (claim, then the endpoints table's columns)
tables/<key>.csv              each verdict's table: its endpoints (pipeline.claims.endpoint_table), or its own
plots/b_norm/<dataset>.csv, plots/loss/<dataset>.csv   for dvc.yaml's plots section (step, variant, lr, value)
"""

from __future__ import annotations

import math
from pathlib import Path

import pandas as pd

from pipeline.claims.endpoint_table import endpoint_frame
from pipeline.spec.records import layer_column

# member outcomes (pipeline.outcomes), in the order the tables show them
STATUSES = ("trained", "failed", "diverged", "fixed_loss")
# a verdict's status as a number for metrics.json; "not shown at this scale" has none (shown = 0)
STATUS_CODE = {"holds": 1.0, "check passed": 1.0, "mixed": 0.5, "does not hold": 0.0, "check failed": 0.0}


def status_table(members: pd.DataFrame) -> pd.DataFrame:
    """Members per variant x data set x lr and outcome (one column per outcome, zeros kept)."""
    counts = members.groupby(["variant", "dataset", "lr", "status"], sort=False).size().unstack("status", fill_value=0)
    cols = [s for s in STATUSES] + [s for s in counts.columns if s not in STATUSES]
    counts = counts.reindex(columns=cols, fill_value=0)
    counts.columns.name = None
    counts["members"] = counts.sum(axis=1)
    return counts.reset_index()


CELL_METRICS = (
    "frac_trained",
    "frac_diverged",
    "frac_w_grew",
    "best_full_loss_train",
    "best_full_acc_train",
    "largest_trained_lr",
)


def cell_table(members: pd.DataFrame, largest: pd.DataFrame) -> pd.DataFrame:
    """One row per cell, from the member table at the report's own thresholds: frac_trained /
    frac_diverged (shares of its members by outcome), frac_w_grew (share flagged w_grew: ||W|| grew
    past the declared factor, whatever the outcome), best_full_loss_train /
    best_full_acc_train (the best member's final full-training-set loss and accuracy, training
    mode), largest_trained_lr (every seed trained at it). NaN where a value does not exist (no lr
    at which every seed trained, no finite final loss). The report logs these numbers onto each
    cell's MLflow parent run (pipeline.report.mlflow_run.log_cell_metrics)."""
    lr = {(r.variant, r.dataset): r.largest_trained_lr for r in largest.itertuples()}
    rows = []
    for cell, g in members.groupby("cell", sort=False):
        loss, acc = g["full_loss_train"].astype(float), g["full_acc_train"].astype(float)
        finite = loss[loss.map(math.isfinite)]
        row = {"cell": cell, "variant": g["variant"].iloc[0], "dataset": g["dataset"].iloc[0]}
        row.update({f"frac_{s}": float((g["status"] == s).mean()) for s in ("trained", "diverged")})
        row["frac_w_grew"] = float(g["w_grew"].astype(bool).mean())  # a flag beside the outcome, not one
        row.update(
            best_full_loss_train=float(finite.min()) if len(finite) else float("nan"),
            best_full_acc_train=float(acc.max()) if acc.notna().any() else float("nan"),
            largest_trained_lr=float(lr.get((row["variant"], row["dataset"]), float("nan"))),
        )
        rows.append(row)
    return pd.DataFrame(rows, columns=["cell", "variant", "dataset", *CELL_METRICS])


def verdict_rows(verdicts) -> pd.DataFrame:
    return pd.DataFrame(
        [
            {
                "key": v.key,
                "title": v.title,
                "kind": v.kind,
                "status": v.status,
                "rule": v.rule,
                "figure": v.figure or "",
                "legacy": "; ".join(f"{k}: {x}" for k, x in v.legacy.items()),
            }
            for v in verdicts
        ]
    )


def test_rows(verdicts) -> pd.DataFrame:
    """tables/primary_tests.csv: every primary test, pooled and per data set (role pooled / control)."""
    rows = []
    for v in verdicts:
        for r in v.tests:
            base = {
                "claim": v.key,
                "test": r.key,
                "endpoint": r.endpoint,
                "unit": r.unit,
                "smallest_effect": r.smallest_effect,
            }
            rows.append(
                {
                    **base,
                    "dataset": "(pooled)",
                    "role": "test",
                    "effect": r.effect,
                    "ci_lo": r.lo,
                    "ci_hi": r.hi,
                    "p": r.p,
                    "p_holm": r.p_holm,
                    "n": r.n,
                    "clusters": r.clusters,
                    "status": r.status,
                }
            )
            rows += [
                {
                    **base,
                    "dataset": d.dataset,
                    "role": d.role,
                    "effect": d.effect,
                    "ci_lo": d.lo,
                    "ci_hi": d.hi,
                    "p": d.p,
                    "p_holm": float("nan"),
                    "n": d.n,
                    "clusters": d.seeds,
                    "status": "",
                }
                for d in r.by_dataset
            ]
    return pd.DataFrame(
        rows,
        columns=[
            "claim",
            "test",
            "endpoint",
            "unit",
            "smallest_effect",
            "dataset",
            "role",
            "effect",
            "ci_lo",
            "ci_hi",
            "p",
            "p_holm",
            "n",
            "clusters",
            "status",
        ],
    )


def endpoint_rows(verdicts) -> pd.DataFrame:
    """tables/endpoints.csv: every verdict's endpoints, a `claim` column before the endpoints table's
    own columns (pipeline.claims.endpoint_table, the owner of that schema)."""
    frame = endpoint_frame([e for v in verdicts for e in v.endpoints])
    frame.insert(0, "claim", [v.key for v in verdicts for _ in v.endpoints])
    return frame


def write_tables(tabdir: Path, members: pd.DataFrame, largest: pd.DataFrame, verdicts) -> dict[str, pd.DataFrame]:
    """Write every CSV; returns name -> frame of what was written (the renderer shows some)."""
    tabdir.mkdir(parents=True, exist_ok=True)
    out = {
        "members": members,
        "largest_trained_lr": largest,
        "cells": cell_table(members, largest),
        "status": status_table(members),
        "verdicts": verdict_rows(verdicts),
        "endpoints": endpoint_rows(verdicts),
        "primary_tests": test_rows(verdicts),
    }
    for v in verdicts:
        if v.table is not None:
            if v.key in out:  # a claim key must not overwrite a report table
                raise ValueError(f"claim key {v.key!r} collides with the report's table {v.key}.csv")
            out[v.key] = v.table
    for name, frame in out.items():
        frame.to_csv(tabdir / f"{name}.csv", index=False)
    return out


# the member outcomes metrics.json gives per data set (shares of its members): a few headline numbers,
# and the share flagged w_grew (||W|| grew past the declared factor: a flag, not an outcome)
HEADLINE_STATUSES = ("trained", "diverged")
HEADLINE_FLAGS = ("w_grew",)


def metrics(verdicts, members: pd.DataFrame, largest: pd.DataFrame, n_excluded: int) -> dict:
    """metrics.json for `dvc metrics show` / `dvc exp show`: a few numbers, no strings, and a value
    that does not exist is an absent key (never 0.0 for "none").

    claims.<key>.shown    1, or 0 where the claim is "not shown"
    claims.<key>.status   1 holds / check passed, 0.5 mixed, 0 does not hold / check failed (absent: not shown
                          or negligible)
    claims.<key>.<test>.effect / lo / hi / p_holm   each primary test's effect, interval and Holm p
    datasets.<ds>.frac_trained / frac_diverged / frac_w_grew   shares of the data set's members
    cells_excluded        cells the report could not read
    The per-variant largest trained lr stays in tables/largest_trained_lr.csv (`largest` is unused
    here: 19 variants x 3 data sets of it would make `dvc exp show` 57 columns wider)."""
    claims = {}
    for v in verdicts:
        entry: dict[str, float | dict[str, float]] = {"shown": 0.0 if v.status == "not shown" else 1.0}
        if v.status in STATUS_CODE:
            entry["status"] = STATUS_CODE[v.status]
        for r in v.tests:  # a number that does not exist is an absent key
            nums = {"effect": r.effect, "lo": r.lo, "hi": r.hi, "p_holm": r.p_holm}
            entry[r.key] = {k: float(x) for k, x in nums.items() if math.isfinite(x)}
        claims[v.key] = entry
    datasets = {
        ds: {
            **{f"frac_{s}": float((g["status"] == s).mean()) for s in HEADLINE_STATUSES},
            **{f"frac_{f}": float(g[f].astype(bool).mean()) for f in HEADLINE_FLAGS},
        }
        for ds, g in members.groupby("dataset", sort=False)
    }
    return {"claims": claims, "datasets": datasets, "cells_excluded": float(n_excluded)}


PLOT_SERIES = (("b_norm", layer_column("b_norm", 0)), ("loss", "loss"))  # plots/<name>/<dataset>.csv <- history column


def write_dvc_plots(hist: pd.DataFrame, plots: Path, datasets=None) -> None:
    """What `dvc plots show` draws (dvc.yaml's plots, template .dvc/plots/normlab_log_lr.json: one
    panel per lr, one line per variant, log y): per data set, plots/b_norm/<dataset>.csv (||b|| of
    the first hidden layer) and plots/loss/<dataset>.csv (mini-batch loss, training mode), long
    form: step, variant, lr, value = the median over seeds at the logged steps (every
    train.log_every). Rows <= 0 are left out (a log axis has no place for them: b starts at 0).
    `datasets`: a name or names to write (default: every data set in `hist`)."""
    if isinstance(datasets, str):
        datasets = [datasets]
    w0 = layer_column("W_norm", 0)
    logged = hist[hist[w0].notna()] if w0 in hist else hist
    for name, col in PLOT_SERIES:
        (plots / name).mkdir(parents=True, exist_ok=True)
        if col not in logged:
            continue
        for ds in datasets or list(dict.fromkeys(logged["dataset"])):
            d = logged[(logged["dataset"] == ds) & (logged[col] > 0)]  # NaN and <= 0 both drop
            if d.empty:
                continue
            med = d.groupby(["variant", "lr", "step"], sort=False)[col].median().rename(name).reset_index()
            med = med.sort_values(["variant", "lr", "step"], kind="stable")[["step", "variant", "lr", name]]
            med.to_csv(plots / name / f"{ds}.csv", index=False, float_format="%.6g")
