"""The benchmark's own logic (interleaved arms, ratios with their spread, the rule that flags
impossible values, figure 9's bare MLflow loop), and benchmarks/run.py end to end on tiny
settings: every section is there and every figure it measured is a positive, finite number.
No timing thresholds: this checks the benchmark, not the machine."""

from __future__ import annotations

import json
import math
import os
import subprocess
import sys
from pathlib import Path

import pytest

from benchmarks import grid_floor
from benchmarks.common import Table, bracket_ratios, impossible, interleave, judge, pair_ratios, print_table
from benchmarks.figures import memory, mlflow_floor, startup
from benchmarks.run import SECTIONS

ROOT = Path(__file__).resolve().parents[1]


# -- interleaved arms, ratios with their spread ------------------------------------------------
def test_interleave_turns_the_order_every_repeat():
    calls = []
    arms = {name: (lambda name=name: calls.append(name) or len(calls)) for name in ("floor", "normlab")}
    got = interleave(arms, 3)
    assert calls == ["floor", "normlab", "normlab", "floor", "floor", "normlab"]
    assert got == {"floor": [1, 4, 5], "normlab": [2, 3, 6]}  # each arm's results, in repeat order


def test_pair_ratios_divide_each_run_by_the_floor_beside_it():
    r = pair_ratios([2.0, 3.0, 12.0], [1.0, 2.0, 4.0])
    assert r["runs"] == [2.0, 1.5, 3.0]
    assert (r["median"], r["min"], r["max"]) == (2.0, 1.5, 3.0)  # not the ratio of medians (3 / 2)
    with pytest.raises(ValueError):
        pair_ratios([1.0], [1.0, 2.0])


def test_bracket_ratios_use_the_floor_before_and_after_each_arm_run():
    r = bracket_ratios([(10.0, 4.0, 5.0), (9.0, 5.0, 3.0)])
    assert sorted(r["runs"]) == [1.8, 2.0, 2.5, 3.0]
    assert (r["min"], r["median"], r["max"]) == (1.8, 2.25, 3.0)
    with pytest.raises(ValueError):
        bracket_ratios([])


def test_judge_says_when_the_spread_crosses_the_target():
    assert judge(0.9, "<=", 1.0) == "yes"
    assert judge(1.1, "<=", 1.0) == "no"
    assert judge({"median": 1.1, "min": 0.9, "max": 1.3}, "<=", 1.2) == "yes, spread crosses target"
    assert judge({"median": 1.25, "min": 1.1, "max": 1.3}, "<=", 1.2) == "no, spread crosses target"
    assert judge({"median": 1.5, "min": 1.3, "max": 1.7}, "<=", 1.2) == "no"
    assert judge({"median": 25, "min": 18, "max": 30}, ">=", 20) == "yes, spread crosses target"
    assert judge(None, "<=", 1) is None


# -- impossible values are flagged, not printed as results -------------------------------------
def test_impossible_values_are_flagged():
    assert "negative" in impossible(-76.4)  # one full-set evaluation: -76.4 ms
    assert "negative" in impossible({"median": 3.0, "min": -1.0, "max": 5.0})  # a negative run in the spread
    assert "floor" in impossible(2.0, 2.1, 0.955, floor=1)  # training at 0.955x its own floor
    assert "floor" in impossible(10.0, 30.0, {"median": 0.4, "min": 0.3, "max": 0.5}, floor=2)
    assert "twice" in impossible(767.0, 767.0, 1.0, distinct=True)  # two processes' peaks, one quantity
    assert impossible(float("nan")) is not None


def test_possible_values_are_not_flagged():
    assert impossible(-2.5, signed=True) is None  # a measured difference (RSS given back)
    assert impossible(2.0, 1.9, 1.05, floor=1) is None
    assert impossible(10.0, 30.0, {"median": 0.6, "min": 0.45, "max": 0.7}, floor=2) is None  # 2 cores: >= 0.5
    assert impossible(767.0, 672.0, 1.14, distinct=True) is None
    assert impossible(585.0, 585.0) is None  # not declared distinct (VmRSS and VmHWM may be equal)
    assert impossible("skipped: no warm server") is None


def test_table_flags_a_row_instead_of_judging_it(capsys):
    t = Table()
    t.add("1 overhead", 2.0, 2.1, 0.955, "ratio <= 1.3", True, floor=1)
    t.add("1   one evaluation ms", -76.4)
    t.add("7 peak RSS", 767.0, 767.0, 1.0, distinct=True)
    t.add("0 make repro", 90.0, 100.0, 0.9, "ratio <= 1.0", judge(0.9, "<=", 1.0), floor=2)
    flagged, good = t.rows[:3], t.rows[3]
    for row in flagged:
        assert row["met"].startswith("FLAGGED") and row["flag"], row
    assert good["met"] == "yes" and "flag" not in good
    print_table(t.rows)
    out = capsys.readouterr().out
    assert "3 row(s) FLAGGED" in out and "FLAGGED: negative" in out


# -- the figures' rows -------------------------------------------------------------------------
def test_figure_7_rows_split_the_quantities_and_flag_one_peak_twice():
    s = {
        "normlab_hwm_mib": {"median": 767.0, "min": 767.0, "max": 767.0},
        "naive_hwm_mib": {"median": 767.0, "min": 767.0, "max": 767.0},
        "ratio": 1.0,
        "growth": {"cells": 3, "rss_after_each_mib": [600.0, 610.0, 605.0], "growth_per_cell_mib": -5.0},
    }
    t = Table()
    memory.rows(s, t)
    peak, second, last, growth = t.rows
    assert peak["met"].startswith("FLAGGED")  # equal by construction, not a result
    assert (second["normlab"], last["normlab"]) == ("610", "605")  # two quantities, two rows
    assert growth["normlab"] == "-5" and "flag" not in growth  # a difference may be negative


def test_figure_5_judges_start_up_against_the_issues_2_s():
    """Issue 21's target is 2 s from launch to trainer.fit: 3.85 s cold (the `2c33de1` run, whose row said met
    against an older 4 s) is a miss, 0.18 s warm is met."""
    t = Table()
    startup.rows(
        {"cold": {"median": 3.85, "min": 3.83, "max": 3.93}, "warm": {"median": 0.18, "min": 0.17, "max": 0.2}}, t
    )
    cold, warm = t.rows
    assert (cold["target"], cold["met"], warm["met"]) == ("<= 2 s", "no", "yes")


def test_figure_0_headline_is_make_repro_with_its_spread():
    spread = {"median": 0.98, "min": 0.9, "max": 1.1, "runs": [0.9, 1.1, 0.95, 1.0]}
    dvc = {"median": 1.9, "min": 1.8, "max": 2.0, "runs": [1.8, 2.0]}
    s = {
        "cells": 57,
        "wall_s": {"median": 200.0, "min": 195.0, "max": 205.0},
        "floor_s": {"median": 105.0, "min": 100.0, "max": 110.0},
        "ratio": 1.9,
        "ratio_spread": dvc,
        "fit_over_floor": {"median": 0.95, "min": 0.9, "max": 1.0},
        "parallel": {"jobs": 2, "wall_s": {"median": 103.0, "min": 99.0, "max": 110.0}, "ratio_spread": spread},
        "split": {
            "seconds": {"training": 100.0},
            "shares": {"training": 0.5},
            "tracking_s": 10.0,
            "tracking_share": 0.05,
            "fixed_per_cell_s": 0.4,
        },
    }
    t = Table()
    grid_floor.rows(s, t)
    head, dvc_row = t.rows[:2]
    assert "make repro" in head["figure"] and head["target"] == "ratio <= 1.0"
    assert head["met"] == "yes, spread crosses target" and head["ratio"] == "0.98 (0.9–1.1)"
    assert "dvc repro -f" in dvc_row["figure"] and dvc_row["met"] == "yes"
    training = next(r for r in t.rows if "training (sum fit_s)" in r["figure"])
    assert training["met"].startswith("FLAGGED")  # training faster than its own floor


# -- figure 9: the bare MLflow loop writes the same runs ---------------------------------------
def test_batches_keep_within_mlflow_limits():
    params, tags, metrics = list(range(250)), list(range(30)), list(range(1500))
    got = list(mlflow_floor.batches(params, metrics, tags))
    assert len(got) == 3
    assert [len(p) for p, _, _ in got] == [100, 100, 50]
    assert all(len(p) + len(m) + len(t) <= 1000 and len(t) <= 100 for p, m, t in got)
    assert sum(len(m) for _, m, _ in got) == 1500 and sum(len(t) for _, _, t in got) == 30


@pytest.mark.slow
def test_floor_loop_writes_the_same_runs(tmp_path):
    from benchmarks.reference import init_store

    runs = [
        {"id": "p", "name": "cell", "params": {"a": "1"}, "tags": {"kind": "cell"}, "metrics": []},
        {
            "id": "m",
            "name": "member",
            "params": {"lr": "0.1", "seed": "0"},
            "tags": {"kind": "member", "mlflow.parentRunId": "p"},
            "metrics": [["loss", 2.0, 1000, 0], ["loss", 1.5, 1001, 10], ["acc", 0.5, 1001, 10]],
        },
    ]
    spec = tmp_path / "runs.json"
    spec.write_text(json.dumps(runs))
    uri = init_store(tmp_path / "store")
    out = tmp_path / "out.json"
    env = {**os.environ, "MLFLOW_TRACKING_URI": uri}
    proc = subprocess.run(
        [sys.executable, "-m", "benchmarks.figures.mlflow_floor", "floor", str(spec), uri, str(out), "sync_off"],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    res = json.loads(out.read_text())
    assert res["runs"] == 2 and res["values"] == 3 and res["cpu_s"] >= res["loop_cpu_s"] > 0
    back = mlflow_floor.read_runs(tmp_path / "store" / "mlflow.db")
    assert [r["name"] for r in back] == ["cell", "member"]
    assert back[1]["params"] == runs[1]["params"]
    assert back[1]["tags"]["mlflow.parentRunId"] == back[0]["id"]  # the new parent's id, not the old one
    assert sorted(map(tuple, back[1]["metrics"])) == sorted(map(tuple, runs[1]["metrics"]))


# -- the whole benchmark on tiny settings ------------------------------------------------------


def numbers(node, path="") -> list[tuple[str, float]]:
    """Every number in a JSON tree with where it is (booleans are not figures)."""
    if isinstance(node, dict):
        return [n for k, v in node.items() for n in numbers(v, f"{path}.{k}")]
    if isinstance(node, list):
        return [n for i, v in enumerate(node) for n in numbers(v, f"{path}[{i}]")]
    if isinstance(node, (int, float)) and not isinstance(node, bool):
        return [(path, node)]
    return []


@pytest.mark.slow
def test_quick_benchmark_measures_every_section(tmp_path):
    out = tmp_path / "b.json"
    env = {**os.environ, "MLFLOW_TRACKING_URI": f"sqlite:///{tmp_path / 'mlflow.db'}"}
    proc = subprocess.run(
        [sys.executable, "-m", "benchmarks.run", "--quick", "--repeats", "1", "--out", str(out)],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    res = json.loads(out.read_text())
    for section in SECTIONS:
        assert section in res, section
        assert "error" not in res[section], (section, res[section])
    # the figures that need nothing outside the benchmark are always measured
    for section in ("grid", "overhead", "stacking", "naive_grid", "tracking", "startup", "memory", "scaling"):
        assert "skipped" not in res[section], (section, res[section])
    assert "cold" in res["startup"] and "cold" in res["tracking"]
    assert len(res["scaling"]["rows"]) >= 2
    grid = res["grid"]  # the figure that counts: the whole grid against its bare-compute floor
    assert grid["cells"] == 2 and grid["ratio"] == grid["ratio_spread"]["median"]
    spread = grid["ratio_spread"]
    assert len(spread["runs"]) == 2  # one dvc repro -f over the floor before it and the one after it
    assert spread["min"] <= spread["median"] <= spread["max"]
    assert len(grid["floor_s"]["runs"]) == 3  # F dvc F grid F
    assert sorted(spread["runs"]) == sorted([grid["wall_s"]["runs"][0] / f for f in grid["floor_s"]["runs"][:2]])
    make_repro = grid["parallel"]  # the headline: pipeline.grid on every core
    assert make_repro["jobs"] == os.cpu_count() and f"--jobs {os.cpu_count()}" in make_repro["command"]
    assert make_repro["ratio"] == make_repro["ratio_spread"]["median"]
    assert make_repro["cells_timed"] == 2 and make_repro["fixed_per_cell_s"] > 0  # its workers' cells, timed
    head = res["table"][0]
    assert head["figure"].startswith("0 make repro") and head["target"] == "ratio <= 1.0"
    parts = grid["split"]["seconds"]
    assert set(parts) == {"training", "start-up", "closing", "report", "DVC and process overhead"}
    first = grid["wall_s"]["runs"][0]  # the split is the first dvc repro -f's whole wall time
    assert sum(parts.values()) == pytest.approx(first)
    assert 0 < grid["split"]["tracking_s"] < first
    assert set(grid["per_cell"]) == {"bn-synthetic", "center_detached-synthetic"}
    assert grid["memory"]["cell_peak_rss_mib"]["cells"] >= 1  # the warm server logged its children's peaks
    assert "parallel" in grid and "noop_s" in grid and "report_s" in grid
    assert grid["best_case"]["wall_s"] == pytest.approx(grid["best_case"]["work_s"] / grid["jobs"])
    assert res["dvc"]["noop"]["where"] == "the grid's copy"
    assert len(res["memory"]["growth"]["rss_after_each_mib"]) == 3
    mem = res["memory"]  # each peak its own process's: read, and not one number twice
    assert mem["normlab_hwm_mib"]["median"] != mem["naive_hwm_mib"]["median"]
    mf = res["mlflow_floor"]  # figure 9: a default-settings cell's runs, 2 lrs x 2 seeds + the parent
    assert mf["runs_per_cell"] == 5 and mf["values_per_run"] > 0
    assert mf["ratio"] == mf["ratio_spread"]["median"] and set(mf["knobs"]) == set(mlflow_floor.KNOBS)
    assert mf["floor_cpu_ms_per_run"]["median"] > mf["floor_loop_cpu_ms_per_run"]["median"]  # + its fixed cost
    assert any(r["figure"].startswith("9 MLflow CPU") and r["target"] == "ratio <= 1.2" for r in res["table"])
    for row in res["table"]:  # a flagged row is never judged
        assert row["met"].startswith("FLAGGED") == bool(row.get("flag")), row
    differences = ("growth_mib", "growth_per_cell_mib", "eval_ms_each")  # measured differences: any sign
    found = [
        (w, v)
        for w, v in numbers({s: res[s] for s in SECTIONS})
        if ".seeds[" not in w  # the seeds used are settings (0 is one), not figures
        and not w.endswith(differences)
    ]
    assert found
    for where, value in found:
        assert math.isfinite(value) and value > 0, f"{where} = {value}"
    assert {"figure", "normlab", "reference", "ratio", "target", "met"} <= set(res["table"][0])
    assert "figure" in proc.stdout and "normlab" in proc.stdout  # the table was printed


def test_figure_0_says_when_the_headline_is_out_of_reach_of_the_work_itself():
    """The best case spreads the measured work over every core without a pause; above 1.0x the floor, no
    schedule can meet the headline's target, and the row says so (below it, that it is within reach)."""
    base = {
        "cells": 66,
        "wall_s": {"median": 280.0, "min": 280.0, "max": 280.0},
        "floor_s": {"median": 100.0, "min": 95.0, "max": 105.0},
        "ratio": 2.8,
        "ratio_spread": {"median": 2.8, "min": 2.7, "max": 2.9, "runs": [2.7, 2.9]},
        "fit_over_floor": {"median": 1.3, "min": 1.3, "max": 1.3},
        "parallel": {
            "jobs": 2,
            "wall_s": {"median": 200.0, "min": 200.0, "max": 200.0},
            "ratio_spread": {"median": 2.0, "min": 1.9, "max": 2.1, "runs": [1.9, 2.1]},
        },
        "split": {
            "seconds": {"training": 130.0},
            "shares": {"training": 0.5},
            "tracking_s": 10.0,
            "tracking_share": 0.05,
            "fixed_per_cell_s": 0.4,
        },
    }
    said = {}
    for work in (280.0, 180.0):
        t = Table()
        grid_floor.rows({**base, "best_case": {"work_s": work, "jobs": 2, "wall_s": work / 2, "ratio": work / 200}}, t)
        row = next(r for r in t.rows if "best case on 2 cores" in r["figure"])
        said[work] = (row["ratio"], row["met"])
    assert said[280.0] == ("1.4", "headline <= 1.0 out of reach for this work")
    assert said[180.0] == ("0.9", "headline <= 1.0 within reach")


def test_make_repros_cells_are_split_over_the_workers_time():
    """The headline arm's own waits and fixed cost, from its cells' timing: waits over wall x jobs (two
    workers waiting 10 s each in a 100 s grid is 10%, not 20%), fixed = cell_s - fit_s - tracking_s."""
    timings = {
        "a": {"cell_s": 3.0, "fit_s": 2.0, "tracking_s": 0.6},
        "b": {"cell_s": 2.0, "fit_s": 1.5, "tracking_s": 0.2},
        "old": {"fit_s": 1.0, "tracking_s": 0.1},  # a meta file without cell_s is not counted
    }
    got = grid_floor.worker_split(timings, wall=4.0, jobs=2)
    assert got["cells_timed"] == 2 and got["tracking_s"] == pytest.approx(0.8)
    assert got["tracking_share"] == pytest.approx(0.1) and got["fixed_per_cell_s"] == pytest.approx(0.35)
    assert grid_floor.worker_split({"old": timings["old"]}, 4.0, 2) == {}
