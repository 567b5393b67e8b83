"""Figure 0 of benchmarks/run.py, the one that counts: the whole grid's wall time over its bare-compute floor.
(`measure` and `rows` at the end are the figure's entry in run.py; the no-op `dvc repro` and the report
measured here are figure 6's, benchmarks/figures/dvc.py.)

    python -m benchmarks.run                       # with every other figure (the default grid)
    python -m benchmarks.run --sections grid       # this figure alone
    python -m benchmarks.run --quick --sections grid   # a 2-cell grid, 30 steps: a smoke test

Two arms, each on a fresh copy of the project (pipeline/, dvc.yaml, params.yaml, data/, .dvcignore;
`dvc init --no-scm`) in a temporary folder, so the repo's runs/, dvc.lock and mlflow.db are never
touched, with tracking into a temporary SQLite store, against one floor:
  make repro `python -m pipeline.grid --executor local --jobs <os.cpu_count()>` (the README's command:
             the stale cells on a warm worker per core, DVC commits them, then the report), against
             the single-core floor: ratio <= 1.0, the headline (skipped with --no-parallel).
  dvc repro  `dvc repro -f` (the default grid one cell at a time, then the report) with the warm
             server on, as a user's shell would: ratio <= 2.0.
  floor      the sum over cells of benchmarks.reference.bare_loop (a bare stacked PyTorch loop: the
             cell's model, members, batches, loss, optimizer; no Lightning, evaluation, measurement
             or tracking) for that cell's members and steps, every cell, one thread, in this process.
  interleaved  the floor is measured before and after every arm run (F dvc F grid F; the arms' order
             turns every repeat: F grid F dvc F ...), and each arm run is divided by both floors beside
             it: the ratio is the median of those, with their [min, max]; a spread on both sides of the
             target says "spread crosses target"; an arm under 1/cores of its floor is flagged.
  split      from the first `dvc repro -f`'s cells' <cell>.meta.json and a `python` shim first on DVC's
             PATH that stamps each process's launch and exit (and sets NORMLAB_T0, so start-up counts the
             interpreter): training = sum fit_s; start-up = sum startup_s (launch to fit); closing =
             sum(process wall) - start-up - training; report = the report process's wall; DVC and
             process overhead = the rest of the wall (these five add up to it). Tracking (sum
             tracking_s, <= 10% of the wall: the time cells waited for MLflow) is beside them: it
             falls inside start-up (the store answering), training (metric hand-offs) and closing
             (waiting until every run is closed). The tracking processes' own MLflow time
             (tracking_process_s, on another core while the cell trains) is printed beside it.
             fixed cost per cell = (wall - report - training - tracking) / cells, <= 0.5 s (DVC's own
             work per stage included; for make repro's arm, from its cells' cell_s: cell_s - fit_s -
             tracking_s per cell, and its waits over the workers' time, wall x jobs). The shim
             adds one `sh` and two `date` per process (a few ms).
  noop       `dvc repro` with nothing changed on that copy, <= 3 s.
  report     `python -m pipeline.report --no-track` on that copy's runs/, into a temp folder, <= 10 s.
  memory     the warm server's resident memory (VmRSS / VmHWM) after that grid, and each warm
             cell's peak RSS (ru_maxrss of the forked child, from the server's log).
"""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
import time
from pathlib import Path

from benchmarks.common import bracket_ratios, num, problem, stats, write_params
from benchmarks.reference import bare_loop, init_store
from pipeline.spec import environment
from pipeline.spec.names import cell_name

ROOT = Path(__file__).resolve().parents[1]
PY = sys.executable
COPIED = ("pipeline", "dvc.yaml", "params.yaml", "data", ".dvcignore")
SHIM = """#!/bin/sh
# benchmarks/grid_floor.py: stamp launch and exit of every `python` DVC starts
start=$(date +%s.%N)
NORMLAB_T0=$start; export NORMLAB_T0
"{python}" "$@"
rc=$?
echo "$start $(date +%s.%N) $rc $*" >> "{log}"
exit $rc
"""


def make_project(dst: Path, source: Path = ROOT, params_text: str | None = None) -> Path:
    """A runnable copy of the project at `dst` (a DVC repo without git)."""
    dst.mkdir(parents=True)
    for name in COPIED:
        src = source / name
        if src.is_dir():
            shutil.copytree(src, dst / name, ignore=shutil.ignore_patterns("__pycache__"))
        elif src.exists():
            shutil.copy(src, dst / name)
    if params_text is not None:
        (dst / "params.yaml").write_text(params_text)
    # DVC's analytics off through the environment every normlab process gets (pipeline/spec/environment.py)
    subprocess.run(
        [str(Path(PY).parent / "dvc"), "init", "--no-scm", "-q"], cwd=dst, check=True, env=environment.child_env()
    )
    return dst


def shim_env(env: dict, folder: Path) -> tuple[dict, Path]:
    """env with a `python` shim first on PATH; the stamps go to folder/stamps.txt."""
    folder.mkdir(parents=True, exist_ok=True)
    log = folder / "stamps.txt"
    shim = folder / "python"
    shim.write_text(SHIM.format(python=PY, log=log))
    shim.chmod(0o755)
    return {**env, "PATH": f"{folder}{os.pathsep}{env['PATH']}"}, log


def read_stamps(log: Path) -> list[dict]:
    out = []
    for line in log.read_text().splitlines() if log.exists() else []:
        start, end, rc, *argv = line.split(" ")
        out.append(
            {"start": float(start), "end": float(end), "wall_s": float(end) - float(start), "rc": int(rc), "argv": argv}
        )
    return out


def timed(cmd: list[str], cwd: Path, env: dict, timeout: float = 7200) -> float:
    t0 = time.perf_counter()
    proc = subprocess.run(cmd, cwd=cwd, env=env, capture_output=True, text=True, timeout=timeout)
    if proc.returncode != 0:
        tail = "\n".join((proc.stdout + proc.stderr).strip().splitlines()[-15:])
        raise RuntimeError(f"{' '.join(cmd)} exited {proc.returncode} in {cwd}:\n{tail}")
    return time.perf_counter() - t0


def cell_timings(project: Path, cells: list[str]) -> dict[str, dict]:
    from pipeline.records import meta_path

    return {c: json.loads(meta_path(project / "runs" / c).read_text())["timing"] for c in cells}


def floor_seconds(params_path: Path, cells: list[tuple[str, str]]) -> dict[str, float]:
    """bare_loop seconds of every cell (the grid's compute floor), at the cells' thread count."""
    import torch

    from pipeline.config import cell_settings, load_params

    params = load_params(params_path)
    if params.train.threads:
        torch.set_num_threads(params.train.threads)
    out = {}
    for v, d in cells:
        cell = cell_settings(params, v, d)
        out[cell_name(v, d)] = bare_loop(cell)
    return out


def warm_memory(project: Path, env: dict) -> dict:
    """The copy's warm server: its pid, VmRSS / VmHWM, and its children's peak RSS from its log."""
    code = "from pipeline.warm import client as warm; p = warm.socket_path(); print(p.with_suffix('.log') if p else '')"
    log = subprocess.run([PY, "-c", code], cwd=project, env=env, capture_output=True, text=True).stdout.strip()
    st = subprocess.run(
        [PY, "-m", "pipeline.warm.client", "status"], cwd=project, env=env, capture_output=True, text=True
    )
    pid = re.search(r"up \(pid (\d+)\)", st.stdout)
    out: dict = {}
    if pid:
        try:
            status = Path(f"/proc/{pid.group(1)}/status").read_text()
            for key in ("VmRSS", "VmHWM"):
                out[f"server_{key}_mib"] = int(re.search(rf"{key}:\s+(\d+)", status).group(1)) / 1024
        except (OSError, AttributeError):
            pass
    peaks = (
        [float(m) for m in re.findall(r"peak RSS ([\d.]+) MiB", Path(log).read_text())]
        if log and Path(log).exists()
        else []
    )
    if peaks:
        out["cell_peak_rss_mib"] = {
            "median": sorted(peaks)[len(peaks) // 2],
            "min": min(peaks),
            "max": max(peaks),
            "cells": len(peaks),
            "first": peaks[0],
            "last": peaks[-1],
        }
    return out


def split(wall: float, stamps: list[dict], timings: dict[str, dict], report_wall: float) -> dict:
    """The grid's wall time as disjoint parts (seconds and shares) that add up to it, tracking beside
    them (its calls fall inside start-up, training and closing), and the per-cell fixed cost."""
    train_procs = [s for s in stamps if "pipeline.train" in s["argv"]]
    fit = sum(t["fit_s"] for t in timings.values())
    startup = sum(t["startup_s"] for t in timings.values())
    tracking = sum(t["tracking_s"] for t in timings.values())
    beside = sum(t.get("tracking_process_s") or 0.0 for t in timings.values())
    procs = sum(s["wall_s"] for s in train_procs)
    parts = {
        "training": fit,
        "start-up": startup,
        "closing": procs - startup - fit,
        "report": report_wall,
        "DVC and process overhead": wall - procs - report_wall,
    }
    n = max(1, len(timings))
    return {
        "seconds": parts,
        "shares": {k: v / wall for k, v in parts.items()},
        "tracking_s": tracking,
        "tracking_share": tracking / wall,
        # MLflow calls made by the cells' tracking processes, beside training on another core
        "tracking_process_s": beside,
        # launch, start-up, closing and DVC's own work per cell: all but training, tracking and the report
        "fixed_per_cell_s": (wall - report_wall - fit - tracking) / n,
        "cells": len(timings),
        "definitions": {
            "training": "sum of fit_s (the asynchronous metric hand-offs included)",
            "start-up": "sum of startup_s: launch to trainer.fit (the tracker's start included)",
            "closing": "fit's end to process exit (history, summary, write, tracker.finish)",
            "report": "the report stage's process",
            "DVC and process overhead": "the rest",
        },
    }


def worker_split(timings: dict[str, dict], wall: float, jobs: int) -> dict:
    """The headline arm's cells as its workers ran them (each cell's meta: cell_s = run_cell's wall until
    its runs are closed): the time cells waited for MLflow over the workers' time (wall x jobs), and the
    fixed cost per cell, cell_s - fit_s - tracking_s (set-up, start-up and closing, MLflow waits apart; the
    metric hand-offs during training fall in both fit_s and tracking_s, milliseconds a cell, as in split())."""
    cells = [t for t in timings.values() if "cell_s" in t]
    if not cells:
        return {}
    waited = sum(t["tracking_s"] for t in cells)
    return {
        "cells_timed": len(cells),
        "cell_s": sum(t["cell_s"] for t in cells),
        "tracking_s": waited,
        "tracking_share": waited / (wall * jobs),
        "fixed_per_cell_s": sum(t["cell_s"] - t["fit_s"] - t["tracking_s"] for t in cells) / len(cells),
    }


def stop_warm(project: Path, env: dict) -> None:
    subprocess.run([PY, "-m", "pipeline.warm.client", "stop"], cwd=project, env=env, capture_output=True)


def grid_floor(
    params_text: str | None,
    env: dict,
    tmp: Path,
    repeats: int,
    parallel: bool = True,
    source: Path = ROOT,
    prestart: bool = False,
    arm_repeats: int = 1,
    jobs: int | None = None,
) -> dict:
    """Everything in this module's docstring: each arm `arm_repeats` times on a fresh copy, the floor
    measured before and after every arm run (F dvc F grid F, then grid F dvc F ...: the order turns
    every repeat), noop and report `repeats` times on the first `dvc repro -f`'s copy.
    `prestart`: the warm server is started (and waited for) before the clock starts (--quick: its few
    short cells would otherwise all finish before it is up); by default the first cell starts it, as
    in a user's first `dvc repro` after an edit."""
    from pipeline.config import load_params

    dvc = str(Path(PY).parent / "dvc")
    jobs = jobs or os.cpu_count() or 1
    params_file = tmp / "params.yaml"  # the grid's settings, for the floor (every copy has the same)
    tmp.mkdir(parents=True, exist_ok=True)
    params_file.write_text(params_text if params_text is not None else (source / "params.yaml").read_text())
    params = load_params(params_file)
    cells = [(v, d) for v in params.grid.variants for d in params.grid.datasets]
    names = [cell_name(v, d) for v, d in cells]
    floors: list[float] = []
    per_cell_floor: dict[str, float] = {}

    def floor() -> float:
        cell_s = floor_seconds(params_file, cells)
        per_cell_floor.update(cell_s if not per_cell_floor else {})
        floors.append(sum(cell_s.values()))
        return floors[-1]

    out: dict = {
        "cells": len(cells),
        "members": len(params.optim.lrs) * len(params.optim.seeds),
        "steps": params.train.steps,
        "jobs": jobs,
        "arm_repeats": arm_repeats,
    }
    walls: dict[str, list[tuple[float, float, float]]] = {"dvc": [], "grid": []}
    grid_cells: dict[str, dict] = {}  # the first grid arm's cells' timing (<cell>.meta.json)

    def dvc_arm(r: int) -> float:
        """`dvc repro -f` on a fresh copy, warm server on; the first one's split, memory, noop and report."""
        project = make_project(tmp / f"project{r}", source, params_text)
        store = tmp / f"store{r}"
        run_env, stamps_log = shim_env({**env, "MLFLOW_TRACKING_URI": init_store(store)}, tmp / f"shim{r}")
        warm_env = {k: v for k, v in run_env.items() if k != "NORMLAB_WARM"}  # the user's default: warm on
        try:
            if prestart:
                timed([PY, "-m", "pipeline.warm.client", "start", "--wait"], project, warm_env)
            wall = timed([dvc, "repro", "-f"], project, warm_env)
            if r == 0:
                stamps = read_stamps(stamps_log)
                out["memory"] = warm_memory(project, warm_env)
        finally:
            stop_warm(project, warm_env)
        if r == 0:
            report_procs = [s for s in stamps if "pipeline.report" in s["argv"]]
            timings = cell_timings(project, names)
            out["split"] = split(wall, stamps, timings, sum(s["wall_s"] for s in report_procs))
            out["per_cell"] = {n: dict(timings[n]) for n in names}
            out["project0"] = project
        return wall

    def grid_arm(r: int) -> float:
        """`make repro`'s command: pipeline.grid on every core, on a fresh copy; the first one's cells' timing."""
        second = make_project(tmp / f"project_grid{r}", source, params_text)
        penv = {**env, "MLFLOW_TRACKING_URI": init_store(tmp / f"store_grid{r}")}
        try:
            wall = timed([PY, "-m", "pipeline.grid", "--executor", "local", "--jobs", str(jobs)], second, penv)
        finally:
            stop_warm(second, penv)
        if r == 0:
            grid_cells.update(cell_timings(second, names))
        return wall

    arms = {"dvc": dvc_arm, **({"grid": grid_arm} if parallel else {})}
    floor()
    for r in range(arm_repeats):
        for name in list(arms) if r % 2 == 0 else list(arms)[::-1]:
            before = floors[-1]
            wall = arms[name](r)
            walls[name].append((wall, before, floor()))
    out["floor_s"] = stats(floors)
    out["floor_measured"] = f"all {len(cells)} cells, {len(floors)} times: before and after every arm run"
    for n in names:
        out["per_cell"][n]["bare_s"] = per_cell_floor[n]
    d = walls["dvc"]
    out["wall_s"] = stats(w for w, _, _ in d)
    out["ratio_spread"] = bracket_ratios(d)
    out["ratio"] = out["ratio_spread"]["median"]
    fit = out["split"]["seconds"]["training"]
    out["fit_over_floor"] = bracket_ratios([(fit, d[0][1], d[0][2])])
    if walls["grid"]:
        g = walls["grid"]
        spread = bracket_ratios(g)
        out["parallel"] = {
            "jobs": jobs,
            "command": f"python -m pipeline.grid --executor local --jobs {jobs}",
            "wall_s": stats(w for w, _, _ in g),
            "ratio": spread["median"],
            "ratio_spread": spread,
            **worker_split(grid_cells, g[0][0], jobs),
        }
    # the work the first dvc repro -f measured (training, the tracking processes beside it, the report),
    # spread over every core without a pause: no schedule of this work on `jobs` cores is faster than this
    sp = out["split"]
    work = sp["seconds"]["training"] + (sp.get("tracking_process_s") or 0.0) + sp["seconds"]["report"]
    out["best_case"] = {
        "work_s": work,
        "jobs": jobs,
        "wall_s": work / jobs,
        "ratio": work / jobs / out["floor_s"]["median"],
        # a bound only where training is single-threaded (train.threads: 1, as params.yaml ships it): with
        # more threads fit_s is wall time over several cores
        "definition": "(sum fit_s + tracking processes' MLflow s + report wall s) / jobs, over the median floor; "
        "a lower bound on the wall when train.threads is 1",
    }
    project = out.pop("project0")
    noop = [timed([dvc, "repro"], project, env) for _ in range(repeats)]
    out["noop_s"] = stats(noop)
    rep = [
        timed(
            [PY, "-m", "pipeline.report", "--runs", "runs", "--out", str(tmp / f"report{r}"), "--no-track"],
            project,
            env,
        )
        for r in range(repeats)
    ]
    out["report_s"] = stats(rep)
    return out


# -- as figure 0 of benchmarks/run.py ----------------------------------------------------------
QUICK_GRID = {
    "grid": {"variants": ["bn", "center_detached"], "datasets": ["synthetic"]},
    "optim": {"lrs": [0.1, 1.0], "seeds": [0, 1]},
    "train": {"steps": 30},
}


def measure(ctx) -> dict:
    """The default grid (--quick: a 2-cell grid of 4 members x 30 steps, the warm server started first)."""
    text = None
    if ctx.quick:
        text = write_params(ctx.params, ctx.tmp / "quick_grid.yaml", **QUICK_GRID).read_text()
    return grid_floor(
        text,
        ctx.env,
        ctx.tmp / "grid_floor",
        ctx.repeats,
        parallel=ctx.parallel,
        prestart=ctx.quick,
        arm_repeats=min(ctx.repeats, ctx.cfg.get("grid_arm_repeats", 1)),
    )


def rows(s: dict, table) -> None:
    if problem(s):
        table.add("0 make repro wall s: pipeline.grid on every core vs single-core floor", problem(s))
        return
    add = table.add
    if "parallel" in s:  # the headline: the README's `make repro`
        p = s["parallel"]
        table.ratio(
            f"0 make repro wall s ({s['cells']} cells): pipeline.grid -j {p['jobs']} vs 1-core floor",
            p["wall_s"],
            s["floor_s"],
            p["ratio_spread"],
            "<=",
            1.0,
            floor=p["jobs"],
        )
    if "parallel" in s and "fixed_per_cell_s" in s["parallel"]:  # the headline arm's cells, as its workers ran them
        p = s["parallel"]
        add(
            "0   make repro: cells waiting for MLflow s (share of the workers' time, wall x jobs)",
            p["tracking_s"],
            None,
            f"{100 * p['tracking_share']:.0f}%",
            "<= 10%",
            p["tracking_share"] <= 0.10,
        )
        add(
            "0   make repro: per-cell fixed cost s (cell wall - training - MLflow waits)",
            p["fixed_per_cell_s"],
            target="<= 0.5 s",
            met=p["fixed_per_cell_s"] <= 0.5,
        )
    if "best_case" in s and "parallel" in s:  # whether the headline's target is within reach of this work at all
        b = s["best_case"]
        table.add(
            f"0   best case on {b['jobs']} cores: (training + tracking processes + report) / {b['jobs']} vs floor",
            b["wall_s"],
            s["floor_s"]["median"],
            b["ratio"],
            "—",
            "headline <= 1.0 within reach" if b["ratio"] <= 1.0 else "headline <= 1.0 out of reach for this work",
        )
    table.ratio(
        f"0 dvc repro -f wall s ({s['cells']} cells) vs 1-core floor",
        s["wall_s"],
        s["floor_s"],
        s["ratio_spread"],
        "<=",
        2.0,
    )
    sp = s["split"]
    for part, sec in sp["seconds"].items():
        add(f"0   {part} s (share of the first dvc repro -f)", sec, None, f"{100 * sp['shares'][part]:.0f}%")
    add(
        "0   tracking s: cells waiting for MLflow (share)",
        sp["tracking_s"],
        None,
        f"{100 * sp['tracking_share']:.0f}%",
        "<= 10%",
        sp["tracking_share"] <= 0.10,
    )
    if sp.get("tracking_process_s"):
        add("0   tracking processes' MLflow s (beside training)", sp["tracking_process_s"])
    add(
        "0   per-cell fixed cost s (launch, start-up, closing, DVC)",
        sp["fixed_per_cell_s"],
        target="<= 0.5 s",
        met=sp["fixed_per_cell_s"] <= 0.5,
    )
    add(
        "0   training (sum fit_s) vs the floors beside it",
        sp["seconds"]["training"],
        s["floor_s"],
        s["fit_over_floor"],
        floor=1,
    )
    mem = s.get("memory", {})
    if "server_VmRSS_mib" in mem:
        add("0   warm server RSS / peak MiB after the grid", mem["server_VmRSS_mib"], mem.get("server_VmHWM_mib"))
    if "cell_peak_rss_mib" in mem:
        c = mem["cell_peak_rss_mib"]
        add(
            f"0   warm cell peak RSS MiB ({c['cells']} cells; first vs last)",
            c,
            f"{num(c['first'])} vs {num(c['last'])}",
        )
