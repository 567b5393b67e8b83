"""Addresses in MLflow's UI: the runs table of an experiment with a search filter applied.

    from pipeline.tracking.links import CELL_FILTER, runs_url, hash_filter, ui_base, find_experiment_id

MLflow 3's UI is a hash-routed page: `#/experiments/<id>/runs` is an experiment's runs table, and
its query `searchFilter` is the search box's text (the names the UI keeps in its address:
searchFilter, orderByKey, orderByAsc, startTime, lifecycleFilter, ... in mlflow/server/js's
experiment page). Opening such an address shows the table already filtered.

Standard library only (no MLflow import) except find_experiment_id.
"""

from __future__ import annotations

from urllib.parse import quote

KIND_TAG = "normlab.kind"  # the tag pipeline.tracking.runs gives every run: cell, member, report
HASH_TAG = "normlab.outputs_hash"  # a cell parent run's hash of the files it wrote (records.outputs_hash)
CELL_FILTER = f"tags.`{KIND_TAG}` = 'cell'"  # the cells' parent runs only: one row per cell, no members
DEFAULT_PORT = 5000  # `normlab ui`'s port unless --port


def ui_base(port: int = DEFAULT_PORT) -> str:
    """Where `normlab ui` serves MLflow's UI."""
    return f"http://127.0.0.1:{int(port)}"


def hash_filter(digest: str) -> str:
    """The search that finds the cell parent run(s) that wrote the files with this outputs hash."""
    if not digest or not all(c in "0123456789abcdef" for c in digest):  # safe inside the filter string
        raise ValueError(f"not an outputs hash: {digest!r}")
    return f"tags.`{HASH_TAG}` = '{digest}'"


# MLflow 3's UI keeps a per-browser switch, GenAI (its default) or model training, which the
# experiment's mlflow.experimentKind tag does not move: this query opens the page on the latter
TRAINING_VIEW = "workflowType=machine_learning"


def runs_url(base: str, experiment_id: str, search_filter: str = "") -> str:
    """The experiment's runs table (model-training view) with `search_filter` in its search box
    (none: every run)."""
    url = f"{base.rstrip('/')}/#/experiments/{quote(str(experiment_id), safe='')}/runs?{TRAINING_VIEW}"
    return f"{url}&searchFilter={quote(search_filter, safe='')}" if search_filter else url


def find_experiment_id(uri: str, name: str) -> str | None:
    """The id of experiment `name` in the store at `uri`, or None when there is none yet (a store not
    made yet is not made here: a SQLite file that does not exist is None)."""
    from pathlib import Path

    if uri.startswith("sqlite:///") and not Path(uri[len("sqlite:///") :]).exists():
        return None
    from mlflow.tracking import MlflowClient

    exp = MlflowClient(uri).get_experiment_by_name(name)
    return exp.experiment_id if exp is not None else None
