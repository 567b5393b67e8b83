"""The report as an MLflow run, and the cell runs found by the content of the cells it read.

    from pipeline.report.mlflow_run import open_store, find_cell_runs, log_cell_metrics, log_report_run

A cell's parent run carries the tag `normlab.outputs_hash` = records.outputs_hash(folder) (a
hash of the cell's output files, set by pipeline.tracking.runs). The report looks up, for each
cell it read, the latest FINISHED parent run with that tag: the run that produced exactly
these bytes, wherever DVC restored them from. No side file is trusted.

The report, not the training stage, judges: it logs each cell's headline numbers (tables/cells.csv,
computed at the report's own thresholds) onto the parent run it found, with the rule it used as the
tag `normlab.outcome_rule`; a later report under other thresholds overwrites them.
"""
from __future__ import annotations

import sys
import time
from pathlib import Path

from pipeline import records

HASH_TAG = "normlab.outputs_hash"
RULE_TAG = "normlab.outcome_rule"


def open_store(params):
    """(client, experiment id) of the configured store; a ConfigError if it does not answer."""
    from pipeline.spec.environment import tracking_uri
    from pipeline.tracking.runs import close_orphans, connect, experiment_id

    uri = tracking_uri()
    client = connect(uri)
    exp = experiment_id(client, params.tracking.experiment, uri)
    closed = close_orphans(client, [exp])  # runs of a killed process (cell, grid or report): end KILLED
    if closed:
        print(f"report: ended KILLED {len(closed)} MLflow run(s) left RUNNING by a killed process", file=sys.stderr)
    return client, exp


def find_cell_runs(client, exp_id: str, cells: dict[str, "Path | str"]) -> dict[str, str | None]:
    """cell name -> id of the latest FINISHED parent run tagged with the cell's outputs hash, or None.
    Each cell is given by its folder, or by the outputs hash of the bytes already read from it
    (records.read_cell: CellRecord.outputs_hash, so the run found is the one behind what was read)."""
    found = {}
    for name, cell in cells.items():
        digest = cell if isinstance(cell, str) else records.outputs_hash(cell)
        if not all(c in "0123456789abcdef" for c in digest):  # hex digits only: safe inside the filter string
            raise ValueError(f"{name}: not an outputs hash: {digest!r}")
        runs = client.search_runs([exp_id], max_results=1, order_by=["attributes.start_time DESC"],
                                  filter_string=f"tags.`{HASH_TAG}` = '{digest}' and tags.`normlab.kind` = 'cell' "
                                                f"and attributes.status = 'FINISHED'")
        found[name] = runs[0].info.run_id if runs else None
    return found


def outcome_rule(settings) -> str:
    """The member-outcome thresholds (params.yaml's `report:`) as one line, beside the numbers."""
    s = settings
    return (f"trained: final full-set loss <= {s.trained_loss_ratio:g} x min(init loss, ln C) and accuracy >= "
            f"max(the data set's best median accuracy - {s.trained_acc_gap:g}, 1/C + {s.trained_acc_margin:g}); "
            f"flag w_grew: ||W_T||/||W_0|| > {s.blowup_w_factor:g}; flag b_grew: b rms drift > {s.blowup_b_rms:g}")


def log_cell_metrics(client, cell_runs: dict[str, str | None], cells, settings) -> int:
    """Each found parent run gets its cell's row of `cells` (tables.cell_table) as metrics (a value
    that does not exist is left out, never written as 0) and the rule as a tag; the runs logged."""
    import math

    from mlflow.entities import Metric, RunTag

    from pipeline.report.tables import CELL_METRICS

    now, rule, n = int(time.time() * 1000), outcome_rule(settings), 0
    for row in cells.itertuples(index=False):
        run_id = cell_runs.get(row.cell)
        if run_id is None:
            continue
        values = {k: float(getattr(row, k)) for k in CELL_METRICS}
        client.log_batch(run_id, metrics=[Metric(k, v, now, 0) for k, v in values.items() if math.isfinite(v)],
                         tags=[RunTag(RULE_TAG, rule)])
        n += 1
    return n


def _flat(prefix: str, d: dict) -> dict[str, float]:
    out = {}
    for k, v in d.items():
        key = f"{prefix}/{k}" if prefix else k
        out.update(_flat(key, v) if isinstance(v, dict) else {key: float(v)})
    return out


def log_report_run(client, exp_id: str, params, out: Path, verdicts, metrics: dict,
                   cell_runs: dict[str, str | None], excluded: list[tuple[str, str]]) -> str:
    """One FINISHED run named `report`: tags verdict.<key> = status, cell_runs; metrics.json as
    metrics; report.md/html, metrics.json, figures/ and tables/ as artifacts."""
    from mlflow.entities import Metric, RunTag
    from mlflow.tracking.context.registry import resolve_tags

    from pipeline.spec.names import REPORT_RUN, REPORT_STAGE
    from pipeline.tracking.runs import process_tag, signals_deferred

    run = client.create_run(exp_id, run_name=REPORT_RUN, tags={
        **resolve_tags(),  # MLflow's context tags: source, git commit, user
        "normlab.kind": "report", **process_tag(), "dvc_stage": REPORT_STAGE,
        "cell_runs": ",".join(r for r in cell_runs.values() if r),
        "cells_without_run": ",".join(c for c, r in cell_runs.items() if r is None),
        "cells_excluded": ",".join(c for c, _ in excluded),
        "grid.variants": ",".join(params.grid.variants), "grid.datasets": ",".join(params.grid.datasets)})
    rid = run.info.run_id
    try:
        now = int(time.time() * 1000)
        tags = [RunTag(f"verdict.{v.key}", v.status) for v in verdicts]
        values = [Metric(k, v, now, 0) for k, v in _flat("", metrics).items()]
        client.log_batch(rid, tags=tags)
        for i in range(0, len(values), 1000):  # MLflow's limit per request
            client.log_batch(rid, metrics=values[i:i + 1000])
        for name in ("report.md", "report.html", "metrics.json"):
            client.log_artifact(rid, str(out / name))
        client.log_artifacts(rid, str(out / "figures"), "figures")
        client.log_artifacts(rid, str(out / "tables"), "tables")
        with signals_deferred():  # a Ctrl-C now must not leave the run RUNNING
            client.set_terminated(rid, "FINISHED")
    except BaseException as exc:
        with signals_deferred():
            client.set_terminated(rid, "KILLED" if isinstance(exc, KeyboardInterrupt) else "FAILED")
        raise
    return rid
