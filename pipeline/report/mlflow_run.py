"""The report as an MLflow run, and the cell runs found by the content of the cells it read.

    from pipeline.report.mlflow_run import open_store, find_cell_runs, log_cell_metrics, log_report_run

A cell's parent run carries the tag `normlab.outputs_hash` = records.outputs_hash(folder) (a
hash of the cell's output files, set by pipeline.tracking.runs). The report links, for each cell
it read, the FINISHED parent run that produced exactly these bytes, wherever DVC restored them
from (link_cell_runs). A tag is no proof: MLflow has no authentication, so any local user who
reaches the store (a server, `normlab ui`) can write one on any run (issue 18 item 5). So a
candidate must carry the hash of the bytes read AND the cell's identity from those bytes (cell,
variant, data set, config hash); the run the cell's own `<cell>.meta.json` names is linked when it
is one of them (the meta file counts only when its outputs hash is the bytes read: DVC does not
restore it); otherwise a single candidate is linked, and several are linked to none, each named,
because a tag cannot choose between them (a forged copy and a real re-run look alike).

The report, not the training stage, judges: it logs each cell's headline numbers (tables/cells.csv,
computed at the report's own thresholds) onto the parent run it found, with the rule it used as the
tag `normlab.outcome_rule`; a later report under other thresholds overwrites them.
"""

from __future__ import annotations

import sys
import time
from dataclasses import dataclass
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


@dataclass(frozen=True)
class CellLink:
    """The parent run linked to one cell the report read (None: no run is), and how, or why not."""

    run_id: str | None
    why: str
    ignored: int = 0  # runs carrying the cell's hash under another cell's identity (a stray or forged tag)


IDENTITY = ("cell", "variant", "dataset", "config_hash")  # CellSummary fields = the parent run's tags
IDENTITY_TAGS = {"cell": "cell", "variant": "variant", "dataset": "dataset", "config_hash": "normlab.config_hash"}


def _same_cell(run, summary) -> bool:
    tags = run.data.tags
    return all(tags.get(IDENTITY_TAGS[f]) == str(getattr(summary, f)) for f in IDENTITY)


def _meta_run(rec: records.CellRecord) -> str | None:
    """The parent run id the cell's own meta.json names, if that file describes the bytes read."""
    meta = records.read_meta(rec.folder)
    if not isinstance(meta, dict) or meta.get("outputs_hash") != rec.outputs_hash:
        return None  # absent, or beside other bytes (DVC restored the cell; the meta file stays)
    mlflow = meta.get("mlflow")
    return mlflow.get("parent_run_id") if isinstance(mlflow, dict) else None


def link_cell_run(client, exp_id: str, name: str, rec: records.CellRecord) -> CellLink:
    """The parent run behind the bytes of `rec` (records.read_cell: its outputs hash is of what was read)."""
    from pipeline.tracking.runs import search_all

    digest = rec.outputs_hash or ""
    if not digest or not all(c in "0123456789abcdef" for c in digest):  # safe inside the filter string
        raise ValueError(f"{name}: not an outputs hash: {digest!r}")
    runs = search_all(
        client,
        [exp_id],
        f"tags.`{HASH_TAG}` = '{digest}' and tags.`normlab.kind` = 'cell' and attributes.status = 'FINISHED'",
    )
    mine = [r for r in runs if _same_cell(r, rec.summary)]
    others = len(runs) - len(mine)
    foreign = f" ({others} run(s) with its hash name another cell or config: ignored)" if others else ""
    named = _meta_run(rec)
    for run in mine:
        if run.info.run_id == named:
            return CellLink(run.info.run_id, f"named by {records.meta_path(rec.folder).name}{foreign}", others)
    if len(mine) == 1:
        return CellLink(mine[0].info.run_id, f"the one run with its outputs hash and identity{foreign}", others)
    if not mine:
        return CellLink(None, f"no MLflow run found with its outputs hash{foreign}", others)
    ids = ", ".join(r.info.run_id for r in mine[:5]) + (", ..." if len(mine) > 5 else "")
    return CellLink(
        None,
        f"{len(mine)} FINISHED cell runs carry its outputs hash and identity ({ids}); none "
        f"linked: a tag cannot tell a re-run from a forged copy, and its meta file names none",
        others,
    )


def link_cell_runs(client, exp_id: str, cells: dict[str, records.CellRecord]) -> dict[str, CellLink]:
    return {name: link_cell_run(client, exp_id, name, rec) for name, rec in cells.items()}


def find_cell_runs(client, exp_id: str, cells: dict[str, records.CellRecord | Path]) -> dict[str, str | None]:
    """cell name -> id of its linked parent run (link_cell_run), or None. Each cell is given by the
    record read from it (records.read_cell), or by its folder (read here)."""
    recs = {n: c if isinstance(c, records.CellRecord) else records.read_cell(c) for n, c in cells.items()}
    return {name: link.run_id for name, link in link_cell_runs(client, exp_id, recs).items()}


def outcome_rule(settings) -> str:
    """The member-outcome thresholds (params.yaml's `report:`) as one line, beside the numbers."""
    s = settings
    return (
        f"trained: final full-set loss <= {s.trained_loss_ratio:g} x min(init loss, ln C) and accuracy >= "
        f"max(the data set's best median accuracy - {s.trained_acc_gap:g}, 1/C + {s.trained_acc_margin:g}); "
        f"flag w_grew: ||W_T||/||W_0|| > {s.blowup_w_factor:g}; flag b_grew: b rms drift > {s.blowup_b_rms:g}"
    )


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
        client.log_batch(
            run_id,
            metrics=[Metric(k, v, now, 0) for k, v in values.items() if math.isfinite(v)],
            tags=[RunTag(RULE_TAG, rule)],
        )
        n += 1
    return n


def _flat(prefix: str, d: dict) -> dict[str, float]:
    out: dict[str, float] = {}
    for k, v in d.items():
        key = f"{prefix}/{k}" if prefix else k
        out.update(_flat(key, v) if isinstance(v, dict) else {key: float(v)})
    return out


def report_params(params) -> dict[str, str]:
    """The report run's params: its thresholds (params.yaml's `report:`, every rule it judged by) and
    the grid it read (variants, data sets, the member axes, the steps)."""
    out = {f"report.{k}": str(v) for k, v in params.report.model_dump().items()}
    return {
        **out,
        "grid.variants": ",".join(params.grid.variants),
        "grid.datasets": ",".join(params.grid.datasets),
        "optim.lrs": str(list(params.optim.lrs)),
        "optim.seeds": str(list(params.optim.seeds)),
        "train.steps": str(params.train.steps),
    }


def report_description(params, verdicts, cell_runs: dict[str, str | None], excluded) -> str:
    """The run's description (MLflow's `mlflow.note.content`, shown on the run's page): what it is
    and each claim's verdict, one line each."""
    found = sum(r is not None for r in cell_runs.values())
    lines = [
        f"normlab report over {len(cell_runs)} cell(s) ({len(params.grid.variants)} variants x "
        f"{len(params.grid.datasets)} data sets; {found} with their MLflow run found, {len(excluded)} excluded). "
        "Artifacts: report.md / report.html (the answer first), metrics.json, tables/, figures/.",
        "",
    ]
    lines += [f"- {v.key}: {v.status} ({v.title})" for v in verdicts]
    return "\n".join(lines)


def log_report_run(
    client,
    exp_id: str,
    params,
    out: Path,
    verdicts,
    metrics: dict,
    cell_runs: dict[str, str | None],
    excluded: list[tuple[str, str]],
) -> str:
    """One FINISHED run named `report`: tags verdict.<key> = status, cell_runs, a description
    (report_description); params (report_params); metrics.json as metrics; report.md/html,
    metrics.json, figures/ and tables/ as artifacts."""
    from mlflow.entities import Metric, Param, RunTag
    from mlflow.tracking.context.registry import resolve_tags
    from mlflow.utils.mlflow_tags import MLFLOW_RUN_NOTE

    from pipeline.spec.names import REPORT_RUN, REPORT_STAGE
    from pipeline.tracking.runs import process_tag, signals_deferred

    run = client.create_run(
        exp_id,
        run_name=REPORT_RUN,
        tags={
            **resolve_tags(),  # MLflow's context tags: source, git commit, user
            "normlab.kind": "report",
            **process_tag(),
            "dvc_stage": REPORT_STAGE,
            "cell_runs": ",".join(r for r in cell_runs.values() if r),
            "cells_without_run": ",".join(c for c, r in cell_runs.items() if r is None),
            "cells_excluded": ",".join(c for c, _ in excluded),
            "grid.variants": ",".join(params.grid.variants),
            "grid.datasets": ",".join(params.grid.datasets),
        },
    )
    rid = run.info.run_id
    try:
        now = int(time.time() * 1000)
        tags = [RunTag(f"verdict.{v.key}", v.status) for v in verdicts]
        tags.append(RunTag(MLFLOW_RUN_NOTE, report_description(params, verdicts, cell_runs, excluded)))
        values = [Metric(k, v, now, 0) for k, v in _flat("", metrics).items()]
        named = [Param(k, v) for k, v in report_params(params).items()]
        for i in range(0, len(named), 100):  # MLflow's limit of params per request
            client.log_batch(rid, params=named[i : i + 100])
        client.log_batch(rid, tags=tags)
        for i in range(0, len(values), 1000):  # MLflow's limit per request
            client.log_batch(rid, metrics=values[i : i + 1000])
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
