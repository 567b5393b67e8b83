"""The report's steps, in order, each announced on stderr in one line.

    python -m pipeline.report --runs runs --out reports [--params params.yaml] [--no-track]

Exit 2 with one line (before anything is written) on bad params, a corrupt or missing record
file, an unusable --out or an unreachable MLflow store. Everything is built in a temporary
folder beside --out and swapped in only when complete (records.write_tree_atomically).
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from pipeline import records
from pipeline.config import ConfigError, Params, die, load_params
from pipeline.report import bounded, figures, mechanism, render, tables
from pipeline.report.load import Grid, load_grid
from pipeline.spec import environment

OWNED = ("report.md", "report.html", "metrics.json", "figures", "tables", "plots")  # all this report writes


def step(msg: str) -> None:
    print(f"report: {msg}", file=sys.stderr, flush=True)


def evaluate(params: Params, grid: Grid):
    """Member table, largest trained lr, every claim's verdict and the answer paragraph."""
    from pipeline import claims, outcomes

    members = outcomes.member_table(grid.summaries, grid.by_cell, params.report, grid.configs)
    largest = outcomes.largest_trained_lr(members)
    verdicts = claims.evaluate_all(members, grid.histories, params.report)  # primary tests: Holm across claims
    return members, largest, verdicts, claims.answer_text(verdicts, members, params.report)


def build(
    tmp: Path,
    params: Params,
    grid: Grid,
    out: Path,
    members,
    largest,
    verdicts,
    answer,
    cell_runs,
    experiment_id: str | None = None,
) -> dict:
    written = tables.write_tables(tmp / "tables", members, largest, verdicts)
    written.update(mechanism.write_tables(tmp / "tables", grid.histories, members, params.report))  # claim 4's
    written.update(bounded.write_tables(tmp / "tables", members, params.report))  # claims 2's and 1b's predictions
    metrics = tables.metrics(verdicts, members, largest, len(grid.excluded))
    (tmp / "metrics.json").write_text(json.dumps(metrics, indent=2, allow_nan=False))
    tables.write_dvc_plots(grid.histories, tmp / "plots")

    names = [*figures.ALWAYS, *(v.figure for v in verdicts if v.figure)]
    step(f"figures ({len(dict.fromkeys(names))} kinds)")
    logged = grid.histories
    if records.layer_column("W_norm", 0) in logged:
        logged = logged[logged[records.layer_column("W_norm", 0)].notna()]  # the rows every train.log_every steps
    drawn, unknown = figures.draw(
        names, figures.FigureData(params, logged, members, largest, tmp / "figures", verdicts)
    )
    for name in unknown:
        step(f"figure {name!r} declared by a claim has no drawer in pipeline/report/figures.py; the report says so")

    step("rendering report.md, report.html")
    hashes = {c.summary.cell: c.outputs_hash for c in grid.cells}  # of the very bytes the report read
    ctx = render.ReportContext(
        params,
        out,
        grid.summaries,
        grid.excluded,
        verdicts,
        answer,
        written,
        drawn,
        unknown,
        hashes,
        mlflow_experiment_id=experiment_id,
    )
    text = render.markdown(ctx)
    (tmp / "report.md").write_text(text)
    (tmp / "report.html").write_text(render.to_html(text, tmp))
    return metrics


def _check_out(out: Path) -> None:
    if out.exists() and not out.is_dir():
        raise ConfigError(
            f"--out {out}: is an existing file; give a folder (the report writes "
            f"{', '.join(OWNED)} in it and leaves anything else there alone)"
        )
    records.check_report_out(out)  # someone's own folder is refused before any work


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog=environment.command_name("pipeline.report"), description=__doc__.splitlines()[0])
    ap.add_argument("--runs", default="runs", help="folder holding the cells' records")
    ap.add_argument("--out", default="reports", help="report folder (only the report's own entries are replaced)")
    ap.add_argument(
        "--params", default="params.yaml", help="the params file the cells were trained with (default params.yaml)"
    )
    ap.add_argument("--no-track", action="store_true", help="do not log the report to MLflow")
    args = ap.parse_args(argv)
    out = Path(args.out)
    store = None
    try:
        params = load_params(args.params)
        _check_out(out)
        n = len(params.grid.variants) * len(params.grid.datasets)
        step(f"loading {n} cells from {args.runs}/")
        grid = load_grid(params, Path(args.runs))
        for name, why in grid.excluded:
            step(f"excluded {name}: {why}")
        track = params.tracking.enabled and not args.no_track
        if track:
            from pipeline.report.mlflow_run import open_store

            store = open_store(params)  # an unreachable store is reported before any work
    except (ConfigError, records.RecordError) as err:
        die(str(err))
    cell_runs, links = None, {}
    if store:
        from pipeline.report.mlflow_run import link_cell_runs

        links = link_cell_runs(*store, {c.summary.cell: c for c in grid.cells})  # the records read, not a tag alone
        cell_runs = {name: link.run_id for name, link in links.items()}
    step(f"tables ({len(grid.cells)} cells)")
    members, largest, verdicts, answer = evaluate(params, grid)
    result = {}
    records.write_tree_atomically(
        out,
        lambda tmp: result.update(
            metrics=build(
                tmp, params, grid, out, members, largest, verdicts, answer, cell_runs, store[1] if store else None
            ),
            cells=tables.cell_table(members, largest),
        ),
        marker=records.REPORT_MARKER,
    )
    rid = None
    if store:
        from pipeline.report.mlflow_run import log_cell_metrics, log_report_run

        n = log_cell_metrics(store[0], cell_runs, result["cells"], params.report)
        step(f"MLflow: the cell numbers on {n} parent run(s), at the report's thresholds; logging the report run")
        rid = log_report_run(*store, params, out, verdicts, result["metrics"], cell_runs, grid.excluded)
        for name, link in links.items():
            if link.run_id is None or link.ignored:
                step(f"{name}: {link.why}")
    for v in verdicts:
        print(f"{v.key}: {v.status:>24}  {v.title}")
    print(f"wrote {out}/report.md, report.html" + (f"; MLflow run {rid}" if rid else ""))
    return 0
