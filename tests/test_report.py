"""The report package: checked inputs, atomic output, every registry verdict rendered, numeric metrics.

    .venv/bin/python -m pytest -q tests/test_report.py

A tiny real grid (5 cells, 20 steps, trained once per module with pipeline.cell.run_cell)
is copied into each test that changes it.
"""

from __future__ import annotations

import dataclasses
import json
import math
import re
import shutil
from pathlib import Path

import pandas as pd
import pytest
import yaml

from pipeline import records
from pipeline.claims import REGISTRY
from pipeline.config import cell_settings, load_params
from pipeline.report import cli, figures
from pipeline.report.load import load_grid
from pipeline.report.render import cell_text
from tests.conftest import BASE, merge

CLAIMS = {c.key: c for c in REGISTRY}
VARIANTS = ["center_detached", "center", "bn", "bn_nobias", "bias_only_toy"]
TINY = {
    "grid": {"variants": VARIANTS, "datasets": ["synthetic"]},
    "train": {"steps": 20, "log_every": 1, "eval_every": 5, "threads": 1},
    "tracking": {"enabled": False, "experiment": "test", "log_every": 1, "flush_every": 7},
}


@pytest.fixture(scope="module")
def trained(tmp_path_factory) -> Path:
    from pipeline.cell import run_cell

    root = tmp_path_factory.mktemp("grid")
    (root / "params.yaml").write_text(yaml.safe_dump(merge(BASE, TINY), sort_keys=False))
    params = load_params(root / "params.yaml")
    for v in VARIANTS:
        run_cell(cell_settings(params, v, "synthetic"), root / "runs" / f"{v}-synthetic", track=False, progress=False)
    return root


@pytest.fixture
def grid(trained, tmp_path) -> Path:
    """A private copy of the trained grid (runs/, params.yaml) to change."""
    shutil.copytree(trained / "runs", tmp_path / "runs")
    shutil.copy(trained / "params.yaml", tmp_path / "params.yaml")
    return tmp_path


def report(root: Path, *extra: str) -> int:
    return cli.main(
        ["--runs", str(root / "runs"), "--out", str(root / "reports"), "--params", str(root / "params.yaml"), *extra]
    )


@pytest.fixture(scope="module")
def built(trained, tmp_path_factory) -> Path:
    """One good report of the trained grid, for the tests that only read it."""
    root = tmp_path_factory.mktemp("built")
    shutil.copytree(trained / "runs", root / "runs")
    shutil.copy(trained / "params.yaml", root / "params.yaml")
    assert report(root) == 0
    return root


def snapshot(folder: Path) -> dict[str, bytes]:
    return {str(p.relative_to(folder)): p.read_bytes() for p in sorted(folder.rglob("*")) if p.is_file()}


def verdicts_of(root: Path):
    params = load_params(root / "params.yaml")
    grid = load_grid(params, root / "runs")
    return cli.evaluate(params, grid)


# -- content -------------------------------------------------------------------------------------
def test_report_md_has_every_registry_verdict_with_rule_endpoints_and_status(built):
    from pipeline import claims

    md = (built / "reports" / "report.md").read_text()
    _, _, verdicts, answer = verdicts_of(built)
    assert len(verdicts) == len(claims.REGISTRY) and len({v.key for v in verdicts}) == len(verdicts)
    sections = re.split(r"^### (?=claim\w*: )", md, flags=re.M)[1:]  # one section per verdict, "<key>: <title>"
    assert len(sections) == len(verdicts)
    for i, v in enumerate(verdicts):
        sec = sections[i]
        assert sec.startswith(f"{v.key}: {v.title}")
        for r in v.tests:  # a measurement's primary tests: pooled row with its interval, p and status
            row = next(line for line in sec.splitlines() if line.startswith(f"| {r.key} |"))
            assert r.interval_text() in row and f"**{r.status}**" in row and f"{r.p_holm:.3g}" in row
        assert v.rule in sec and f"**Status:** **{v.status}**" in sec and v.statement in sec
        from pipeline.report.render import MAX_ENDPOINT_ROWS, listed_endpoints

        listed = listed_endpoints(v)  # ratios of a claim with its own section (claim 4) are shown there
        if len(listed) > MAX_ENDPOINT_ROWS:  # the markdown lists those whose interval excludes 0
            missing0 = [e for e in listed if e.lo > 0 or e.hi < 0]
            assert f"of {len(listed)} endpoints" in sec
            listed = sorted(missing0, key=lambda e: -abs(e.effect))[:MAX_ENDPOINT_ROWS]
            assert len(pd.read_csv(built / "reports" / "tables" / f"{v.key}.csv")) == len(v.endpoints)
        for e in listed:  # each endpoint is a row: name, effect, CI, n, detail
            name, detail = cell_text(e.measure), cell_text(e.detail)  # a | in a cell is escaped
            row = next(line for line in sec.splitlines() if line.startswith(f"| {name} |") and detail in line)
            assert f"| {e.n} |" in row
        if v.kind == "identity":  # an identity is never shown as evidence
            assert "check of the implementation" in sec and "not evidence" in sec
    assert answer in md
    from pipeline.claims import STATUSES

    for v in verdicts:  # the verdict table: one row per claim, linked to its section, with its status
        assert v.status in STATUSES
        sides = "; ".join(f"{r.side} {r.status}" for r in v.tests if r.side)  # claim 3: each side's own status
        shown = re.escape(f"**{v.status}**" + (f" ({sides})" if sides else ""))
        assert re.search(rf"^\| \[{v.key}\]\(#{v.key}-[^)]*\) \| .* \| {shown} \|$", md, flags=re.M), v.key


def test_tables_hold_the_cells_numbers(built):
    tab = built / "reports" / "tables"
    members, largest, verdicts, _ = verdicts_of(built)
    got = pd.read_csv(tab / "members.csv")
    assert len(got) == len(VARIANTS) * 4 and set(got["variant"]) == set(VARIANTS)
    for v in verdicts:
        assert (tab / f"{v.key}.csv").exists() == (v.table is not None)
    # the endpoints tables are the owner's: typed fields back as written, the primary endpoint marked
    from pipeline.claims.endpoint_table import endpoints_of, read_endpoint_table

    every = read_endpoint_table(tab / "endpoints.csv")  # with a `claim` column first
    assert every is not None and len(every) == sum(len(v.endpoints) for v in verdicts)
    for v in verdicts:
        t = read_endpoint_table(tab / f"{v.key}.csv")
        if v.key == "claim1":  # its own table (member groups); its endpoints are in endpoints.csv
            assert t is None
            continue
        assert t is not None, v.key
        assert [e.key for e in endpoints_of(t)] == [e.key for e in v.endpoints]
        assert t["detail"].tolist() == [e.detail for e in v.endpoints]
        # primary: a measurement claim's test rows (one per primary test, named as in report.primary), an
        # identity's deciding endpoint
        want = {r.measure for r in v.tests} if v.kind == "measurement" else {CLAIMS[v.key].primary}
        assert t["primary"].tolist() == [e.measure in want for e in v.endpoints]
        assert int(t["primary"].sum()) == (len(v.tests) if v.kind == "measurement" else 1)
        mine = every[every["claim"] == v.key]
        assert mine["detail"].tolist() == t["detail"].tolist() and mine["decides"].tolist() == t["decides"].tolist()
    status = pd.read_csv(tab / "status.csv")
    # counts per variant x data set x lr: equal to the member table's, every member counted once
    want = members.groupby(["variant", "dataset", "lr"]).size()
    assert status.set_index(["variant", "dataset", "lr"])["members"].sort_index().tolist() == want.sort_index().tolist()
    for s in ("trained", "failed", "diverged", "fixed_loss"):
        assert status[s].sum() == (members["status"] == s).sum()
    assert "blew_up" not in status  # growth is a flag of the member table (w_grew, b_grew), not an outcome
    assert {"w_grew", "b_grew", "acc_bar"} <= set(members.columns)
    assert set(pd.read_csv(tab / "largest_trained_lr.csv")["variant"]) == set(largest["variant"])
    for name in ("b_norm", "loss"):  # dvc.yaml's plots: one CSV per data set, a series per variant and lr
        csv = pd.read_csv(built / "reports" / "plots" / name / "synthetic.csv")
        assert {"step", "variant", "lr", name} <= set(csv.columns) and csv[name].notna().all()
        assert {"center_detached", "center"} <= set(csv["variant"])


def test_largest_lr_table_prints_the_accuracy_beside_the_lr():
    from types import SimpleNamespace

    from pipeline.report.render import _largest_lr

    t = pd.DataFrame(
        {
            "variant": ["bn", "center_detached", "bias_only_toy"],
            "dataset": ["synthetic"] * 3,
            "largest_trained_lr": [0.3, float("nan"), float("nan")],
            "acc_at_largest": [0.9712, float("nan"), float("nan")],
            "note": ["", "none", "n/a"],
        }
    )
    grid = SimpleNamespace(variants=["bn", "center_detached", "bias_only_toy"], datasets=["synthetic"])
    text = _largest_lr(SimpleNamespace(tables={"largest_trained_lr": t}, params=SimpleNamespace(grid=grid)))
    rows = {line.split("|")[1].strip(): line.split("|")[2].strip() for line in text.splitlines()[2:]}
    assert rows == {"bn": "0.3 (acc 0.97)", "center_detached": "none", "bias_only_toy": "none"}


def test_metrics_json_is_numbers_only(built):
    metrics = json.loads((built / "reports" / "metrics.json").read_text())
    members, largest, verdicts, _ = verdicts_of(built)

    def leaves(d, path=""):
        for k, v in d.items():
            yield from leaves(v, f"{path}/{k}") if isinstance(v, dict) else [(f"{path}/{k}", v)]

    for path, value in leaves(metrics):
        assert isinstance(value, (int, float)) and not isinstance(value, bool), (path, value)
        assert math.isfinite(value), path
    for v in verdicts:
        entry = metrics["claims"][v.key]
        assert ("status" in entry) == (v.status not in ("not shown", "negligible"))
        assert entry["shown"] == (0.0 if v.status == "not shown" else 1.0)
        for r in v.tests:  # each primary test's numbers, where they exist (a test without comparisons: no p)
            if math.isfinite(r.p_holm):
                assert entry[r.key]["p_holm"] == pytest.approx(r.p_holm)
            else:
                assert "p_holm" not in entry[r.key]
    ds = metrics["datasets"]["synthetic"]  # a few headline shares per data set (dvc exp show stays narrow)
    assert set(ds) == {"frac_trained", "frac_diverged", "frac_w_grew"}
    assert ds["frac_trained"] == (members[members["dataset"] == "synthetic"]["status"] == "trained").mean()


def test_html_is_self_contained_and_links_stay_inside(built):
    out = built / "reports"
    html = (out / "report.html").read_text()
    assert "data:image/png;base64," in html and 'src="figures/' not in html
    md = (out / "report.md").read_text()
    for target in re.findall(r"\]\(([^)]+)\)", md):
        assert not re.match(r"[a-z]+:", target) and not target.startswith("/"), target
        if target.startswith("#"):  # a link within the page: a heading with that anchor (GitHub's slug)
            assert f'id="{target[1:]}"' in html, target
            continue
        assert (out / target).resolve().is_relative_to(out.resolve()), target  # outside the repo: no docs link
        assert (out / target).exists(), target
    assert "training mode" in md and "inference mode" in md


# -- checked inputs --------------------------------------------------------------------------------
def test_cell_from_other_params_is_excluded_and_named(grid, capsys):
    p = yaml.safe_load((grid / "params.yaml").read_text())
    p["variants"]["center"]["affine"] = True  # center-synthetic was trained without: its hash differs now
    (grid / "params.yaml").write_text(yaml.safe_dump(p, sort_keys=False))
    shutil.rmtree(grid / "runs" / "bias_only_toy-synthetic")  # a grid cell never trained
    assert report(grid) == 0
    err = capsys.readouterr().err
    assert "excluded center-synthetic" in err and "trained under other params" in err
    assert "excluded bias_only_toy-synthetic" in err and "missing" in err
    md = (grid / "reports" / "report.md").read_text()
    excluded = md.split("## Cells excluded")[1].split("\n## ")[0]
    assert "`center-synthetic`: " in excluded and "trained under other params" in excluded
    assert "`bias_only_toy-synthetic`: " in excluded
    assert set(pd.read_csv(grid / "reports" / "tables" / "members.csv")["variant"]) == {
        "center_detached",
        "bn",
        "bn_nobias",
    }
    assert json.loads((grid / "reports" / "metrics.json").read_text())["cells_excluded"] == 2


@pytest.mark.parametrize(
    "name, garbage",
    [
        ("summary.json", b'{"cell": "center-synth'),
        ("history.parquet", b"PAR1 not a parquet file"),
        ("summary.json", b'{"cell": "x"}'),
    ],
)
def test_corrupt_record_is_one_line_exit_2_and_previous_report_untouched(grid, capsys, name, garbage):
    assert report(grid) == 0
    before = snapshot(grid / "reports")
    (grid / "runs" / "center-synthetic" / name).write_bytes(garbage)
    capsys.readouterr()
    with pytest.raises(SystemExit) as exc:
        report(grid)
    assert exc.value.code == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 2 and err[0].startswith("report: loading")  # the step line, then the error
    assert err[1].startswith("normlab: ") and f"center-synthetic/{name}" in err[1]
    assert snapshot(grid / "reports") == before


def test_failing_report_leaves_the_previous_one_and_foreign_entries_as_they_were(grid, monkeypatch):
    records.claim_report_out(grid / "reports")  # a report folder normlab made (.normlab-report)
    (grid / "reports" / "long").mkdir(parents=True)  # another report's folder, and a user's file
    (grid / "reports" / "long" / "report.md").write_text("the long study")
    (grid / "reports" / "notes.txt").write_text("mine")
    assert report(grid) == 0
    before = snapshot(grid / "reports")
    assert {"report.md", "metrics.json", "long/report.md", "notes.txt"} <= set(before)
    assert any(k.startswith("figures/") for k in before) and any(k.startswith("plots/") for k in before)

    def broken(data):
        raise RuntimeError("figure failed")

    monkeypatch.setitem(figures.FIGURES, "loss", broken)  # fails after tables and metrics are written
    with pytest.raises(RuntimeError, match="figure failed"):
        report(grid)
    assert snapshot(grid / "reports") == before
    assert [p.name for p in grid.iterdir() if p.name.startswith(".reports")] == []  # no temp folder left
    monkeypatch.undo()
    (grid / "reports" / "figures" / "stale.png").write_bytes(b"old")
    assert report(grid) == 0  # a good report replaces only its own entries
    after = snapshot(grid / "reports")
    assert after["long/report.md"] == b"the long study" and after["notes.txt"] == b"mine"
    assert "figures/stale.png" not in after


def test_a_figure_no_drawer_knows_is_said_not_crashed(grid, monkeypatch):
    real = cli.evaluate

    def with_unknown_figure(params, g):
        members, largest, verdicts, answer = real(params, g)
        return members, largest, [dataclasses.replace(verdicts[0], figure="no_such_figure"), *verdicts[1:]], answer

    monkeypatch.setattr(cli, "evaluate", with_unknown_figure)
    assert report(grid) == 0
    md = (grid / "reports" / "report.md").read_text()
    assert "Figure `no_such_figure` is declared by this claim but not drawn by the report" in md


def test_every_figure_a_claim_declares_is_drawn(built):
    _, _, verdicts, _ = verdicts_of(built)
    for v in verdicts:
        if v.figure:
            assert v.figure in figures.FIGURES, v.figure
    names = {p.stem for p in (built / "reports" / "figures").glob("*.png")}
    assert {
        "answer_summary",
        "member_status",
        "b_drift_per_layer",
        "drive_decay",
        "train_eval_gap",
        "b_norm_synthetic",
        "loss_synthetic",
    } <= names
    md = (built / "reports" / "report.md").read_text()
    answer = md[md.index("## The answer") : md.index("## Verdicts")]  # the summary figure comes right after the answer
    assert "![answer_summary](figures/answer_summary.png)" in answer and md.count("figures/answer_summary.png") == 1


# -- the summary figure under the answer (pipeline/report/summary_figure.py) -------------------------
def _summary_members(variants=("center_detached", "center", "bn"), lrs=(0.05, 0.5), seeds=range(5)) -> pd.DataFrame:
    """A crafted member table: the detached variant diverges at the top lr on every data set, nothing else does."""
    rows = []
    for ds, mean in (("synthetic_zero_mean", 0.07), ("synthetic", 3.0)):
        for v in variants:
            for lr in lrs:
                for seed in seeds:
                    div = v == "center_detached" and lr == max(lrs)
                    rows.append(
                        {
                            "variant": v,
                            "dataset": ds,
                            "lr": lr,
                            "seed": seed,
                            "diverged": div,
                            "b_rms_max": 0.0 if div else (0.1 + seed if v == "center_detached" else 1e-9),
                            "input_mean_norm": mean,
                            "norm": v,
                            "has_bias": True,
                            "status": "diverged" if div else "trained",
                        }
                    )
    return pd.DataFrame(rows)


def _summary_params(variants=("center_detached", "center", "bn")):
    from tests.conftest import make_params

    # the zero-mean data set listed first: the figure still puts it last, as the control
    return make_params(grid={"variants": list(variants), "datasets": ["synthetic_zero_mean", "synthetic"]})


def test_answer_summary_figure_plots_divergence_rates_with_exact_intervals(tmp_path):
    from pipeline.report.summary_figure import summary_frame

    params, members = _summary_params(), _summary_members()
    t = summary_frame(members, params)
    assert list(dict.fromkeys(t["dataset"])) == ["synthetic", "synthetic_zero_mean"]
    assert t.set_index("dataset")["control"].groupby(level=0).all().to_dict() == {
        "synthetic": False,
        "synthetic_zero_mean": True,
    }
    assert list(dict.fromkeys(t["variant"])) == ["center_detached", "center", "bn"]
    top = t[(t["lr"] == 0.5)].set_index(["dataset", "variant"])
    for ds in ("synthetic", "synthetic_zero_mean"):
        det, twin = top.loc[(ds, "center_detached")], top.loc[(ds, "center")]
        assert (det["k"], det["n"], det["rate"], twin["rate"]) == (5, 5, 1.0, 0.0)
        assert (det["lo"], det["hi"]) == (pytest.approx(0.478, abs=5e-4), 1.0)  # Clopper-Pearson for 5/5
        assert (twin["lo"], twin["hi"]) == (0.0, pytest.approx(0.522, abs=5e-4))
        assert math.isnan(det["b_rms_median"]) and det["survivors"] == 0  # no seed survived: no drift point
    low = t[(t["lr"] == 0.05) & (t["variant"] == "center_detached")]
    assert low["b_rms_median"].tolist() == [2.1, 2.1] and low["survivors"].tolist() == [5, 5]  # median of 0.1..4.1

    drawn, unknown = figures.draw(
        ["answer_summary"], figures.FigureData(params, pd.DataFrame(), members, pd.DataFrame(), tmp_path), jobs=1
    )
    assert unknown == [] and [(d.key, d.figure) for d in drawn] == [("answer_summary", "answer_summary")]
    png = tmp_path / "answer_summary.png"
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert (
        "\n" not in drawn[0].caption and "training-mode" in drawn[0].caption and "Clopper-Pearson" in drawn[0].caption
    )


def test_answer_summary_figure_without_the_detached_variant_draws_nothing_and_the_report_says_so(tmp_path):
    from pipeline.report import render
    from pipeline.report.plotting import Drawn
    from pipeline.report.summary_figure import summary_frame

    params = _summary_params(("center", "bn"))
    members = _summary_members(("center", "bn"))
    assert summary_frame(members, params).empty
    drawn, unknown = figures.draw(
        ["answer_summary"], figures.FigureData(params, pd.DataFrame(), members, pd.DataFrame(), tmp_path), jobs=1
    )
    assert drawn == [] and unknown == [] and not list(tmp_path.glob("*.png"))

    def md(figs) -> str:
        ctx = render.ReportContext(
            params, tmp_path, [], [], [], "The answer paragraph.", {"largest_trained_lr": pd.DataFrame()}, figs, []
        )
        text = render.markdown(ctx)
        return text[text.index("The answer paragraph.") : text.index("## Verdicts")]

    assert "nothing to draw" in md([]) and "`center_detached`" in md([])
    shown = md([Drawn("answer_summary", "answer_summary", "figures/answer_summary.png", "Top: rates; bottom: drift.")])
    assert "![answer_summary](figures/answer_summary.png)" in shown and "_Top: rates; bottom: drift._" in shown


def _figure_data(root: Path, figdir: Path):
    params = load_params(root / "params.yaml")
    g = load_grid(params, root / "runs")
    members, largest, verdicts, _ = cli.evaluate(params, g)
    names = [*figures.ALWAYS, *(v.figure for v in verdicts if v.figure)]
    return names, figures.FigureData(params, g.histories, members, largest, figdir, verdicts)


def test_forked_drawers_draw_the_same_files_in_the_same_order(trained, tmp_path):
    names, serial = _figure_data(trained, tmp_path / "serial")
    _, forked = _figure_data(trained, tmp_path / "forked")
    one, _ = figures.draw(names, serial, jobs=1)
    two, _ = figures.draw(names, forked, jobs=2)
    assert [(d.key, d.figure, d.caption) for d in one] == [(d.key, d.figure, d.caption) for d in two]
    assert len(one) >= 7
    assert snapshot(tmp_path / "serial") == snapshot(tmp_path / "forked")


def test_a_hung_drawer_is_stopped_and_the_figures_drawn_here(trained, tmp_path, monkeypatch, capsys):
    import os
    import time

    names, data = _figure_data(trained, tmp_path / "figs")
    parent, real = os.getpid(), figures.FIGURES["member_status"]

    def hangs_when_forked(d):
        if os.getpid() != parent:
            time.sleep(600)
        return real(d)

    import signal

    monkeypatch.setitem(figures.FIGURES, "member_status", hangs_when_forked)
    monkeypatch.setattr(figures, "DRAW_TIMEOUT_S", 5)
    monkeypatch.setattr(figures.threading, "active_count", lambda: 1)  # as in the report's own process
    # a Python SIGTERM handler in the parent (a test runner's, the grid's): inherited by a drawer, it would
    # resume the sleep after pool.terminate()'s SIGTERM and the report would wait forever -- the drawers
    # reset it (figures._drawer_start)
    old = signal.signal(signal.SIGTERM, lambda *a: None)
    try:
        drawn, _ = figures.draw(names, data, jobs=2)
    finally:
        signal.signal(signal.SIGTERM, old)
    assert "member_status" in [d.key for d in drawn] and (tmp_path / "figs" / "member_status.png").exists()
    assert "figure drawers still busy after 5 s; drawing here instead" in capsys.readouterr().err


# -- MLflow: cell runs found by content -------------------------------------------------------------
def test_report_run_finds_cell_runs_by_outputs_hash(grid, mlflow_uri, capsys):
    from mlflow.tracking import MlflowClient

    p = yaml.safe_load((grid / "params.yaml").read_text())
    p["tracking"]["enabled"] = True
    (grid / "params.yaml").write_text(yaml.safe_dump(p, sort_keys=False))
    client = MlflowClient(mlflow_uri)
    exp = client.create_experiment("test")

    def parent(cell: str, digest: str, status: str, identity: str | None = None) -> str:
        s = records.read_summary(grid / "runs" / (identity or cell))  # the tags a cell's run carries (its identity)
        run = client.create_run(
            exp,
            run_name=cell,
            tags={
                "normlab.kind": "cell",
                "normlab.outputs_hash": digest,
                "cell": s.cell,
                "variant": s.variant,
                "dataset": s.dataset,
                "normlab.config_hash": s.config_hash,
            },
        )
        client.set_terminated(run.info.run_id, status)
        return run.info.run_id

    digest = records.outputs_hash(grid / "runs" / "center-synthetic")
    latest = parent("center-synthetic", digest, "FINISHED")
    parent("center-synthetic", digest, "FAILED")  # newer, but not FINISHED
    parent("center-synthetic", "0" * 20, "FINISHED")  # other bytes (other params)
    parent("center-synthetic", digest, "FINISHED", identity="bn-synthetic")  # the hash on another cell's run
    toy = parent("bias_only_toy-synthetic", records.outputs_hash(grid / "runs" / "bias_only_toy-synthetic"), "FINISHED")
    assert report(grid) == 0
    err = capsys.readouterr().err
    for word in ("loading", "tables", "figures", "rendering", "MLflow"):
        assert f"report: {word}" in err
    assert "center_detached-synthetic: no MLflow run found" in err
    assert (
        "center-synthetic: the one run with its outputs hash and identity (1 run(s) with its hash name "
        "another cell or config: ignored)" in err
    )
    runs = client.search_runs([exp], filter_string="tags.`normlab.kind` = 'report'")
    assert len(runs) == 1 and runs[0].info.status == "FINISHED"
    tags = runs[0].data.tags
    assert tags["cell_runs"].split(",") == [latest, toy]
    assert tags["cells_without_run"] == "center_detached-synthetic,bn-synthetic,bn_nobias-synthetic"
    _, _, verdicts, _ = verdicts_of(grid)
    assert {f"verdict.{v.key}": v.status for v in verdicts}.items() <= tags.items()
    md = (grid / "reports" / "report.md").read_text()
    # run ids are facts of one store, not of the outputs: report.md names the outputs hash instead
    assert f"| center-synthetic | {digest} |" in md and latest not in md
    artifacts = {a.path for a in client.list_artifacts(runs[0].info.run_id)}
    assert {"report.md", "report.html", "metrics.json", "figures", "tables"} <= artifacts


def test_a_tracked_cell_run_is_found_by_its_outputs(grid, mlflow_uri):
    """The real chain: training tags its parent run with the hash of what it wrote; the report finds it."""
    from mlflow.tracking import MlflowClient

    from pipeline.cell import run_cell

    p = yaml.safe_load((grid / "params.yaml").read_text())
    p["tracking"]["enabled"] = True
    (grid / "params.yaml").write_text(yaml.safe_dump(p, sort_keys=False))
    params = load_params(grid / "params.yaml")
    run_cell(cell_settings(params, "center", "synthetic"), grid / "runs" / "center-synthetic", progress=False)
    assert report(grid) == 0
    client = MlflowClient(mlflow_uri)
    exp = client.get_experiment_by_name("test").experiment_id
    cell = client.search_runs([exp], filter_string="tags.`normlab.kind` = 'cell' and tags.cell = 'center-synthetic'")
    rep = client.search_runs([exp], filter_string="tags.`normlab.kind` = 'report'")
    assert len(cell) == 1 and len(rep) == 1
    assert rep[0].data.tags["cell_runs"] == cell[0].info.run_id


def test_parent_runs_get_the_cell_numbers_at_the_reports_thresholds(grid, mlflow_uri, capsys):
    """Training does not judge its members; the report logs each found parent run's numbers, the
    same as its tables/cells.csv (and its members.csv), at the thresholds it judged by."""
    from mlflow.tracking import MlflowClient

    from pipeline.cell import run_cell
    from pipeline.report.tables import CELL_METRICS

    p = yaml.safe_load((grid / "params.yaml").read_text())
    p["tracking"]["enabled"] = True
    p.setdefault("report", {})["trained_loss_ratio"] = 0.95  # not the default (0.75): the training cannot know it
    (grid / "params.yaml").write_text(yaml.safe_dump(p, sort_keys=False))
    params = load_params(grid / "params.yaml")
    tracked = ["center-synthetic", "bn-synthetic"]
    for cell in tracked:
        run_cell(cell_settings(params, cell.split("-")[0], "synthetic"), grid / "runs" / cell, progress=False)
    client = MlflowClient(mlflow_uri)
    exp = client.get_experiment_by_name("test").experiment_id

    def parents():
        runs = client.search_runs([exp], filter_string="tags.`normlab.kind` = 'cell'")
        return {r.data.tags["cell"]: r for r in runs}

    assert not any(set(CELL_METRICS) & set(r.data.metrics) for r in parents().values())  # nothing judged yet
    assert report(grid) == 0
    assert "the cell numbers on 2 parent run(s)" in capsys.readouterr().err
    cells = pd.read_csv(grid / "reports" / "tables" / "cells.csv").set_index("cell")
    members = pd.read_csv(grid / "reports" / "tables" / "members.csv")
    assert list(cells.index) == [f"{v}-synthetic" for v in VARIANTS]
    for cell, run in parents().items():
        row, mine = cells.loc[cell], members[members["cell"] == cell]
        assert row["frac_trained"] == pytest.approx((mine["status"] == "trained").mean())
        assert row["frac_w_grew"] == pytest.approx(mine["w_grew"].mean())
        for key in CELL_METRICS:
            if pd.isna(row[key]):
                assert key not in run.data.metrics, (cell, key)  # absent, never 0
            else:
                assert run.data.metrics[key] == pytest.approx(row[key]), (cell, key)
        assert "<= 0.95 x min(init loss, ln C)" in run.data.tags["normlab.outcome_rule"]
    assert set(parents()) == set(tracked)


def test_figures_fork_only_without_other_threads_and_their_drawers_die_of_sigterm(tmp_path, monkeypatch):
    """A drawer forked while another thread held a lock waited on it forever, and the test runner's SIGTERM
    handler (inherited) kept pool.terminate() from ending it: the suite hung. With another thread alive the
    figures are drawn here; a drawer's SIGTERM and SIGINT are the default (the kernel ends it)."""
    import signal
    import threading

    from pipeline.report import figures

    forks = []
    real_ctx = figures.multiprocessing.get_context
    monkeypatch.setattr(figures.multiprocessing, "get_context", lambda m: forks.append(m) or real_ctx(m))
    monkeypatch.setattr(figures, "FIGURES", {"one": lambda d: [], "two": lambda d: []})
    data = figures.FigureData(_summary_params(), pd.DataFrame(), _summary_members(), pd.DataFrame(), tmp_path)
    real_count = figures.threading.active_count
    monkeypatch.setattr(figures.threading, "active_count", lambda: 1)  # as in the report's own process
    # The report's own process has SIGTERM's default. The suite's may not (an earlier test's library left a
    # handler): a drawer that pool.terminate() signalled before its initializer ran caught SIGTERM with the
    # inherited handler, lived on, and pool.join() waited on it forever (the suite hung here under load).
    term = signal.signal(signal.SIGTERM, signal.SIG_DFL)
    try:
        assert figures.draw(["one", "two"], data, jobs=2) == ([], []) and forks == ["fork"]  # alone: forked drawers
    finally:
        signal.signal(signal.SIGTERM, term)
    monkeypatch.setattr(figures.threading, "active_count", real_count)
    forks.clear()
    stop = threading.Event()
    other = threading.Thread(target=stop.wait)
    other.start()
    try:
        assert figures.draw(["one", "two"], data, jobs=2) == ([], [])
    finally:
        stop.set()
        other.join()
    assert forks == []  # another thread alive: drawn here
    old = signal.signal(signal.SIGTERM, lambda *a: None)
    old_int = signal.getsignal(signal.SIGINT)
    try:
        figures._drawer_start()
        assert signal.getsignal(signal.SIGTERM) == signal.SIG_DFL and signal.getsignal(signal.SIGINT) == signal.SIG_DFL
    finally:
        signal.signal(signal.SIGTERM, old)
        signal.signal(signal.SIGINT, old_int)
