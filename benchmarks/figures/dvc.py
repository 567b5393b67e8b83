"""Figure 6, dvc: (a) a no-op `dvc repro`, <= 3 s, and (b) `python -m pipeline.report --no-track`
into a temp folder, <= 10 s: on the copy figure 0 reproduced (benchmarks/grid_floor.py measures
both there); without figure 0, (a) in the repo only if `dvc status` says up to date (stopped if a
stage starts) and (b) on the repo's runs/ when every cell is there (not in --quick), after a
report-only params change.
"""

from __future__ import annotations

import os
import signal
import subprocess
import time
from pathlib import Path

from benchmarks.common import PY, ROOT, Context, Table, problem, run_proc, stats, write_params
from pipeline.spec.names import cell_name


def dvc_noop(env: dict) -> dict:
    dvc = str(Path(PY).parent / "dvc")
    if not (ROOT / "dvc.lock").exists():
        return {"skipped": "grid not reproduced (no dvc.lock)"}
    try:  # a `dvc repro` running beside the benchmark holds the repo lock
        st = subprocess.run([dvc, "status"], cwd=ROOT, env=env, capture_output=True, text=True, timeout=120)
    except subprocess.TimeoutExpired:
        return {"skipped": "grid not reproduced (dvc status took over 120 s)"}
    if st.returncode != 0 or "up to date" not in st.stdout:
        first = (st.stdout + st.stderr).strip().splitlines()[:1]
        return {"skipped": "grid not reproduced" + (f" (dvc status: {first[0][:120]})" if first else "")}
    # a params edit between the status and the repro would start training: stop at the first stage
    t0 = time.perf_counter()
    proc = subprocess.Popen(
        [dvc, "repro"],
        cwd=ROOT,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        start_new_session=True,
    )
    for line in proc.stdout:
        if line.startswith("Running stage"):
            os.killpg(proc.pid, signal.SIGTERM)
            proc.wait()
            return {"skipped": f"aborted: the pipeline changed during the benchmark ({line.strip()[:100]})"}
    proc.wait()
    wall = time.perf_counter() - t0
    if proc.returncode != 0:
        return {"skipped": f"dvc repro exited {proc.returncode}"}
    return {"wall_s": wall}


def report_regen(params, quick: bool, repeats: int, env: dict, tmp: Path) -> dict:
    if quick:
        return {"skipped": "skipped in --quick (the report's imports alone take ~10 s)"}
    runs = ROOT / "runs"
    cells = [cell_name(v, d) for v in params.grid.variants for d in params.grid.datasets]
    have = sum((runs / c / "summary.json").exists() for c in cells)
    if have < len(cells):
        return {"skipped": f"runs/ has {have} of the grid's {len(cells)} cells"}
    # a report-only change, after which `dvc repro` reruns only the report stage
    tmp.mkdir(parents=True)
    p = write_params(
        params, tmp / "report_params.yaml", report={"alpha_unbounded": round(params.report.alpha_unbounded * 0.99, 4)}
    )
    walls = [
        run_proc(
            [
                PY,
                "-m",
                "pipeline.report",
                "--runs",
                str(runs),
                "--out",
                str(tmp / f"report{r}"),
                "--params",
                str(p),
                "--no-track",
            ],
            env,
        )["wall_s"]
        for r in range(repeats)
    ]
    return {"wall_s": stats(walls), "cells": len(cells)}


def measure(ctx: Context) -> dict:
    g = ctx.res.get("grid", {})
    if "noop_s" in g:  # measured on the grid's own copy, right after its `dvc repro -f`
        return {
            "noop": {"wall_s": g["noop_s"], "where": "the grid's copy"},
            "report": {"wall_s": g["report_s"], "cells": g["cells"], "where": "the grid's copy"},
        }
    return {
        "noop": dvc_noop(ctx.env),
        "report": report_regen(ctx.params, ctx.quick, ctx.repeats, ctx.env, ctx.tmp / "report"),
    }


def rows(s: dict, table: Table) -> None:
    for key, label, limit in (("noop", "6a no-op dvc repro s", 3), ("report", "6b report regeneration s", 10)):
        sub = s.get(key, {})
        if problem(s) or problem(sub):
            table.add(label, problem(s) or problem(sub))
        else:
            wall = sub["wall_s"]
            med = wall["median"] if isinstance(wall, dict) else wall
            table.add(label, wall, target=f"<= {limit} s", met=med <= limit)
