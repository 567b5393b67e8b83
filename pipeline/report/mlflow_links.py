"""The report's section "MLflow runs of the cells": one link per cell into MLflow's runs table.

    from pipeline.report.mlflow_links import section   # used by pipeline.report.render

Each link is the runs table (pipeline.tracking.links.runs_url, at `normlab ui`'s address) searched
for the cell's outputs hash: the parent run that wrote exactly the bytes the report read. The link
holds no run id (a run id is a fact of one run in one store: a re-run or a restored cache would
change the committed report); it holds the hash, which depends only on the files, and the
experiment's id, which a store gives once and keeps. Without a store (`--no-track`) the section
gives the search text to paste instead of a link: the report stays the same for the same inputs.
"""

from __future__ import annotations

import pandas as pd

from pipeline.tracking.links import CELL_FILTER, hash_filter, runs_url, ui_base


def _code(text: str) -> str:
    """`text` as a Markdown code span (the filter holds backticks: a longer fence, padded)."""
    return f"`` {text} ``"


def section(hashes: dict[str, str], experiment: str | None, experiment_id: str | None) -> list[str]:
    """Markdown lines: cell -> outputs hash -> a link to its run(s) (or the search to paste)."""
    from pipeline.report.markdown import md_table

    base = ui_base()
    if experiment_id is not None:
        intro = (
            f"Each cell's parent run is tagged `normlab.outputs_hash` with the hash of the files it wrote. "
            f"The links open the runs table of experiment `{experiment}` (id {experiment_id} in the store "
            f"this report was built against) in `normlab ui` ({base}), searched for that hash: the run "
            f"that wrote exactly the bytes this report read. All cells at once, one row each: "
            f"[the cells' parent runs]({runs_url(base, experiment_id, CELL_FILTER)}). The `report` run's tag "
            f"`cell_runs` lists the runs found."
        )
        rows = [
            {
                "cell": c,
                "outputs hash": h,
                "MLflow": f"[runs with its hash]({runs_url(base, experiment_id, hash_filter(h))})",
            }
            for c, h in hashes.items()
        ]
    else:
        intro = (
            "Each cell's parent run is tagged `normlab.outputs_hash` with the hash of the files it wrote. "
            "This report was built without a tracking store (`--no-track`): in `normlab ui`'s runs table, "
            f"search {_code(CELL_FILTER)} for the cells, or a row's search for the run that wrote its files."
        )
        rows = [{"cell": c, "outputs hash": h, "search": _code(hash_filter(h))} for c, h in hashes.items()]
    return ["## MLflow runs of the cells", "", intro, "", md_table(pd.DataFrame(rows)), ""]
