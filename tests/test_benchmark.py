"""benchmarks/run.py end to end on tiny settings: every section is there and every figure it
measured is a positive, finite number. No timing thresholds: this checks the benchmark, not
the machine."""

from __future__ import annotations

import json
import math
import os
import subprocess
import sys
from pathlib import Path

import pytest

from benchmarks.run import SECTIONS

ROOT = Path(__file__).resolve().parents[1]

pytestmark = pytest.mark.slow


def numbers(node, path="") -> list[tuple[str, float]]:
    """Every number in a JSON tree with where it is (booleans are not figures)."""
    if isinstance(node, dict):
        return [n for k, v in node.items() for n in numbers(v, f"{path}.{k}")]
    if isinstance(node, list):
        return [n for i, v in enumerate(node) for n in numbers(v, f"{path}[{i}]")]
    if isinstance(node, (int, float)) and not isinstance(node, bool):
        return [(path, node)]
    return []


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
    assert grid["cells"] == 2 and grid["ratio"] == grid["wall_s"] / grid["floor_s"]
    parts = grid["split"]["seconds"]
    assert set(parts) == {"training", "start-up", "closing", "report", "DVC and process overhead"}
    assert sum(parts.values()) == pytest.approx(grid["wall_s"])  # the split is the whole wall time
    assert 0 < grid["split"]["tracking_s"] < grid["wall_s"]
    assert set(grid["per_cell"]) == {"bn-synthetic", "center_detached-synthetic"}
    assert grid["memory"]["cell_peak_rss_mib"]["cells"] >= 1  # the warm server logged its children's peaks
    assert "parallel" in grid and "noop_s" in grid and "report_s" in grid
    assert res["dvc"]["noop"]["where"] == "the grid's copy"
    assert len(res["memory"]["growth"]["rss_after_each_mib"]) == 3
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
