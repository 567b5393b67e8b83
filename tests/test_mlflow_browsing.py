"""Issue 20 items 5 and 3: MLflow browsing that scales, and one name per claim everywhere.

    .venv/bin/python -m pytest -q tests/test_mlflow_browsing.py

Through the real MLflow client on a temporary SQLite store: the cells' link `normlab ui` prints,
member runs' params, the report's MLflow section as links (searched by outputs hash, no run id),
the report run's params and description, and the claim keys shared by the report's headings,
metrics.json, tables/*.csv and the report run's tags and metrics.
"""

from __future__ import annotations

import json
import re
import shutil
from pathlib import Path
from urllib.parse import parse_qs, urlsplit

import pytest
import yaml
from mlflow.tracking import MlflowClient

from pipeline import records
from pipeline.cell import run_cell
from pipeline.config import cell_settings, load_params
from pipeline.tracking.links import CELL_FILTER, runs_url
from tests.conftest import make_cell
from tests.test_report import grid, report, trained  # noqa: F401  (the tiny trained grid, copied per test)


def _filter_of(url: str) -> tuple[str, str]:
    """(experiment id, search filter) of a runs-table address, read back as MLflow's UI reads it:
    the route after '#', its query parsed by URLSearchParams' rules."""
    route = urlsplit(url).fragment  # /experiments/<id>/runs?searchFilter=...
    path, _, query = route.partition("?")
    m = re.fullmatch(r"/experiments/([^/]+)/runs", path)
    assert m, url
    return m.group(1), parse_qs(query)["searchFilter"][0]


def _tracked(grid):  # noqa: F811
    p = yaml.safe_load((grid / "params.yaml").read_text())
    p["tracking"]["enabled"] = True
    (grid / "params.yaml").write_text(yaml.safe_dump(p, sort_keys=False))
    return load_params(grid / "params.yaml")


# -- (b) member runs' params -------------------------------------------------------------------------
def test_member_runs_carry_what_varies_and_the_variants_own_settings(tmp_path, mlflow_uri):
    """Fails if a member run gets a setting shared by all members (model.depth, train.steps ...) or
    a variant field params.yaml does not state for it, or if the parent loses the full config."""
    cell = make_cell(
        "population_detached",
        optim={"lrs": [0.05, 0.1], "seeds": [0]},
        train={"steps": 4, "log_every": 1, "eval_every": 2},
        tracking={"experiment": "test", "log_every": 2, "flush_every": 2},
    )
    run_cell(cell, tmp_path / "cell", progress=False)
    client = MlflowClient(mlflow_uri)
    runs = client.search_runs([client.get_experiment_by_name("test").experiment_id])
    parent = next(r for r in runs if r.data.tags["normlab.kind"] == "cell")
    members = sorted(
        (r for r in runs if r.data.tags["normlab.kind"] == "member"), key=lambda r: r.data.params["optim.lr"]
    )
    own = {f"variant.{k}" for k in cell.variant.model_fields_set}
    assert own >= {"variant.norm", "variant.refresh_every"} and "variant.groups" not in own  # as params.yaml states it
    for member, lr in zip(members, ("0.05", "0.1")):
        assert set(member.data.params) == own | {"optim.lr", "seed"}
        assert member.data.params["optim.lr"] == lr and member.data.params["variant.refresh_every"] == str(
            cell.variant.refresh_every
        )
    assert set(cell.flat()) - {"variant", "dataset"} <= set(parent.data.params)  # the parent keeps every setting


# -- (a) the cells' link of `normlab ui` ---------------------------------------------------------------
def test_normlab_ui_prints_the_runs_table_filtered_to_the_cells(tmp_path, monkeypatch, capsys):
    """The printed address opens the experiment's runs table with the cell filter; the filter, run by
    the MLflow client, finds the cells' parent runs only. Fails on a wrong experiment id, a filter
    that lets member runs through, or no address printed."""
    from pipeline import cli
    from pipeline.tracking.runs import experiment_id

    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    monkeypatch.setenv("MLFLOW_TRACKING_URI", uri)
    monkeypatch.chdir(tmp_path)  # no params.yaml here: the default experiment name, "normlab"
    assert cli.cells_link(uri, 5000) is None  # no store yet: no address, and no store made by asking
    assert not (tmp_path / "mlflow.db").exists()
    client = MlflowClient(uri)
    client.create_experiment("other")  # the project's experiment is not the store's first
    exp = experiment_id(client, "normlab", uri)
    cell = client.create_run(exp, run_name="bn-synthetic", tags={"normlab.kind": "cell"}).info.run_id
    client.create_run(
        exp, run_name="bn-synthetic lr=0.1 seed=0", tags={"normlab.kind": "member", "mlflow.parentRunId": cell}
    )
    client.create_run(exp, run_name="report", tags={"normlab.kind": "report"})
    execs = []
    monkeypatch.setattr(cli.os, "execve", lambda *a: execs.append(a))
    cli.ui(["--port", "5077"])
    assert execs and execs[0][1][1] == "ui"
    line = next(ln for ln in capsys.readouterr().err.splitlines() if ln.startswith("the cells"))
    url = line.split(": ", 1)[1]
    assert url.startswith("http://127.0.0.1:5077/#/experiments/")
    shown, text = _filter_of(url)
    assert (shown, text) == (exp, CELL_FILTER)
    assert [r.info.run_id for r in client.search_runs([shown], text)] == [cell]


# -- (d), (e) the report's MLflow section and its own run ----------------------------------------------
def test_report_links_each_cell_by_its_outputs_hash_and_logs_its_params(grid, mlflow_uri):  # noqa: F811
    """Each cell's link, opened as the UI reads it, finds the run that wrote its bytes; report.md holds
    no run id and is the same after a second report; the report run has its params and description.
    Fails on a link to the wrong run or experiment, a run id in report.md, or a missing param/note."""
    params = _tracked(grid)
    run_cell(cell_settings(params, "center", "synthetic"), grid / "runs" / "center-synthetic", progress=False)
    assert report(grid) == 0
    md = (grid / "reports" / "report.md").read_text()
    client = MlflowClient(mlflow_uri)
    exp = client.get_experiment_by_name("test").experiment_id
    section = md.split("## MLflow runs of the cells", 1)[1].split("\n## ", 1)[0]
    links = dict(re.findall(r"^\| ([\w-]+) \| [0-9a-f]+ \| \[runs with its hash\]\(([^)]+)\) \|$", section, re.M))
    assert set(links) == {f"{v}-synthetic" for v in ("center_detached", "center", "bn", "bn_nobias", "bias_only_toy")}
    parent = client.search_runs([exp], "tags.`normlab.kind` = 'cell'")
    assert len(parent) == 1
    for cell, url in links.items():
        shown, text = _filter_of(url)
        assert shown == exp and records.outputs_hash(grid / "runs" / cell) in text
        found = [r.info.run_id for r in client.search_runs([shown], text)]
        assert found == ([parent[0].info.run_id] if cell == "center-synthetic" else []), cell
    assert runs_url("http://127.0.0.1:5000", exp, CELL_FILTER) in section  # every cell at once
    report_runs = client.search_runs([exp], "tags.`normlab.kind` = 'report'")
    assert all(r.info.run_id not in md for r in [*parent, *report_runs])
    # (e) the report run: its thresholds and grid as params, a description with each verdict
    run = report_runs[0]
    assert run.data.params["report.trained_loss_ratio"] == str(params.report.trained_loss_ratio)
    assert run.data.params["grid.variants"] == ",".join(params.grid.variants)
    note = run.data.tags["mlflow.note.content"]
    assert note.startswith("normlab report over 5 cell(s)") and "1 with their MLflow run found" in note
    for key in (k for k in run.data.tags if k.startswith("verdict.")):
        assert f"- {key[len('verdict.') :]}: {run.data.tags[key]} (" in note
    assert report(grid) == 0  # deterministic: a second report over the same bytes and store writes the same text
    assert (grid / "reports" / "report.md").read_text() == md


def test_report_without_a_store_gives_the_search_to_paste(grid):  # noqa: F811
    """--no-track: no store, so no experiment id: the section gives each cell's search text instead.
    Fails if a link with an invented experiment id appears."""
    assert report(grid, "--no-track") == 0
    section = (grid / "reports" / "report.md").read_text().split("## MLflow runs of the cells", 1)[1]
    digest = records.outputs_hash(grid / "runs" / "bn-synthetic")
    assert f"| bn-synthetic | {digest} | `` tags.`normlab.outputs_hash` = '{digest}' `` |" in section
    assert "#/experiments/" not in section


# -- item 3: one name per claim --------------------------------------------------------------------------
def test_one_name_per_claim_in_headings_metrics_tables_and_mlflow(grid, mlflow_uri):  # noqa: F811
    """The report's claim headings, metrics.json, tables/<key>.csv and the report run's verdict tags and
    metric names all use the same keys (claim1, claim1b, claim2 ...). Fails if any of them numbers or
    names a claim differently (issue 20 item 3: the report numbered claims 1-6 while the rest used keys)."""
    _tracked(grid)
    assert report(grid) == 0
    out = grid / "reports"
    md = (out / "report.md").read_text()
    headings = set(re.findall(r"^### (\w+): ", md.split("## Verdicts", 1)[1].split("\n## ", 1)[0], re.M))
    metrics = set(json.loads((out / "metrics.json").read_text())["claims"])
    client = MlflowClient(mlflow_uri)
    run = client.search_runs([client.get_experiment_by_name("test").experiment_id], "tags.`normlab.kind` = 'report'")[0]
    tags = {k.split(".", 1)[1] for k in run.data.tags if k.startswith("verdict.")}
    logged = {k.split("/")[1] for k in run.data.metrics if k.startswith("claims/")}
    assert headings and headings == metrics == tags == logged, (headings, metrics, tags, logged)
    verdicts = md.split("## Verdicts", 1)[1].split("\n## ", 1)[0]
    linked = 0
    for part in verdicts.split("\n### ")[1:]:  # each claim's section links only tables named by its own key
        key = part.split(":", 1)[0]
        for table in re.findall(r"\(tables/(claim\w*)\.csv\)", part):
            assert table == key or table.startswith(f"{key}_"), (key, table)
            assert (out / "tables" / f"{table}.csv").exists(), table
            linked += 1
    assert linked  # the check above saw tables (a report linking none would pass it vacuously)


# -- (c) denser member curves ---------------------------------------------------------------------------
def test_default_member_curves_have_enough_points_to_read():
    """params.yaml's tracking.log_every gives each member curve at least 25 points over train.steps
    (issue 20 item 5: 6 points over 500 steps at log_every 100). Fails if the default is set back."""
    params = load_params(Path(__file__).resolve().parents[1] / "params.yaml")
    steps, every = params.train.steps, params.tracking.log_every
    points = len(range(0, steps, every)) + int((steps - 1) % every != 0)  # every log_every steps, and the last
    assert points >= 25, (steps, every, points)


# -- (a) in the browser -------------------------------------------------------------------------------
@pytest.mark.slow
@pytest.mark.skipif(
    not any(shutil.which(b) for b in ("chromium", "chromium-browser", "google-chrome")),
    reason="needs headless Chromium (Debian: apt-get install chromium)",
)
def test_the_cells_link_opens_a_runs_table_of_cells_only(tmp_path):
    """`normlab ui`'s address, opened in headless Chromium against a loopback `mlflow ui`: the table
    counts the cells' parent runs and shows no member run. Fails if MLflow ignores the address's
    filter (then "9 matching runs": the UI nests members under their parents but counts them) or the
    page does not draw."""
    import sys

    from pipeline.tracking.links import ui_base
    from pipeline.tracking.runs import experiment_id

    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    client = MlflowClient(uri)
    exp = experiment_id(client, "normlab", uri)
    for cell in ("bn-synthetic", "center-synthetic", "none-synthetic"):
        parent = client.create_run(exp, run_name=cell, tags={"normlab.kind": "cell"}).info.run_id
        for seed in (0, 1):
            client.create_run(
                exp,
                run_name=f"{cell} lr=0.1 seed={seed}",
                tags={"normlab.kind": "member", "mlflow.parentRunId": parent},
            )
    root = Path(__file__).resolve().parents[1]
    sys.path.insert(0, str(root / "scripts"))
    try:
        from screenshot_runs import screenshot
    finally:
        sys.path.remove(str(root / "scripts"))
    query = runs_url(ui_base(), exp, CELL_FILTER).split("/runs", 1)[1]  # the port is the script's own
    screenshot(
        uri,
        "normlab",
        tmp_path / "runs.png",
        width=1600,
        height=900,
        wait_ms=15000,
        query=query,
        dom=tmp_path / "runs.html",
    )
    page = (tmp_path / "runs.html").read_text(errors="replace")
    assert "<strong>3</strong> matching runs" in page, page[-2000:]
    assert "none-synthetic" in page and "lr=0.1" not in page
