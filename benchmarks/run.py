"""normlab's benchmark: every figure measured side by side, in one run, on this machine.

    python -m benchmarks.run                      # full: several minutes on a 2-core CPU
    python -m benchmarks.run --quick --repeats 1  # tiny settings, a smoke test (tests/test_benchmark.py)
    python -m benchmarks.run --repeats 5 --out .bench/benchmark.json

Run it on an otherwise idle machine: everything here is wall-clock time. Each figure is the
median of --repeats runs with the min-max beside it; ratios are ratios of medians. The table
is printed at the end and written, with every raw run, to --out (default .bench/benchmark.json).
Nothing touches the repo's mlflow.db: MLFLOW_TRACKING_URI points at a temporary SQLite store
(created before any timing, so schema migrations are not counted).

The default cell is center_detached on synthetic, with params.yaml's settings (--quick: 2 lrs x
2 seeds, 30 steps). `--sections grid,overhead` measures only those. The figures, each described
in its own module's docstring (measurement and table rows beside it; helpers in benchmarks/common.py):

0 grid        benchmarks/grid_floor.py          the whole grid over its 1-core floor: make repro <= 1, dvc repro -f <= 2
1 overhead    benchmarks/figures/overhead.py    ms per step, normlab vs a bare PyTorch loop, <= 1.3
2 stacking    benchmarks/figures/stacking.py    members stacked vs trained one at a time, >= 4
3 naive grid  benchmarks/figures/naive_grid.py  one process per run (benchmarks/naive_run.py) vs normlab, >= 20
4 tracking    benchmarks/figures/tracking.py    MLflow's share of a CLI cell's wall time, <= 10%
5 start-up    benchmarks/figures/startup.py     launch to trainer.fit, cold and warm, <= 2 s
6 dvc         benchmarks/figures/dvc.py         no-op `dvc repro` <= 3 s, report regeneration <= 10 s
7 memory      benchmarks/figures/memory.py      peak RSS of a cold cell vs a naive run, each its own; RSS over cells
8 scaling     benchmarks/figures/scaling.py     ms per step as members and width grow; FLOP/s vs torch.bmm
9 mlflow_floor benchmarks/figures/mlflow_floor.py the tracking process's CPU per run vs MLflow's own floor, <= 1.2

This module parses the arguments, runs the sections of REGISTRY and prints/writes the table.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import sys
import tempfile
import time
import traceback
from pathlib import Path
from types import ModuleType
from typing import NamedTuple

from benchmarks import grid_floor
from benchmarks.common import DEFAULT_CELL, PY, ROOT, Context, Table, log, print_table, sized, start_warm, write_params
from benchmarks.figures import dvc, memory, mlflow_floor, naive_grid, overhead, scaling, stacking, startup, tracking
from benchmarks.reference import init_store
from pipeline.spec import environment


class Section(NamedTuple):
    name: str
    module: ModuleType  # measure(ctx) -> dict, rows(s, table), optional NEEDS (benchmarks/figures/__init__.py)
    turn: int  # when it is measured: grid first, on a machine the other figures have not warmed or loaded


REGISTRY = (  # in the table's order
    Section("grid", grid_floor, 0),
    Section("overhead", overhead, 5),
    Section("stacking", stacking, 6),
    Section("naive_grid", naive_grid, 3),
    Section("tracking", tracking, 2),
    Section("startup", startup, 1),
    Section("dvc", dvc, 8),
    Section("memory", memory, 4),
    Section("scaling", scaling, 7),
    Section("mlflow_floor", mlflow_floor, 9),
)
SECTIONS = tuple(s.name for s in REGISTRY)

FULL = {
    "lrs": None,
    "seeds": None,
    "steps": None,  # None: as in params.yaml
    "grid_variants": ("bn",),
    "grid_lrs": 5,
    "grid_seeds": 3,
    "grid_steps": None,
    "grid_repeats": 1,
    "grid_arm_repeats": 2,  # figure 0: each arm twice, the floor before and after every run
    "scaling_steps": 100,
    "scaling_members": (1, 4, 16, 64),
    "scaling_widths": (32, 128, 512),
    "scaling_width_members": 16,
    "bmm": (16, 512, 512),
    "growth_cells": 12,
}
QUICK = {
    "lrs": 2,
    "seeds": 2,
    "steps": 30,
    "grid_variants": ("bn",),
    "grid_lrs": 1,
    "grid_seeds": 1,
    "grid_steps": 20,
    "grid_repeats": 1,
    "grid_arm_repeats": 1,
    "scaling_steps": 20,
    "scaling_members": (1, 4),
    "scaling_widths": (32, 64),
    "scaling_width_members": 4,
    "bmm": (4, 256, 256),
    "growth_cells": 3,
}


def table_rows(res: dict) -> list[dict]:
    table = Table()
    for s in REGISTRY:
        s.module.rows(res.get(s.name, {}), table)
    return table.rows


def parse(argv: list[str] | None) -> argparse.Namespace:
    ap = argparse.ArgumentParser(prog="python -m benchmarks.run", description=__doc__.splitlines()[0])
    ap.add_argument("--repeats", type=int, default=3, help="runs per figure; the median is reported (default 3)")
    ap.add_argument("--quick", action="store_true", help="tiny settings: a smoke test, not figures")
    ap.add_argument("--out", default=str(ROOT / ".bench" / "benchmark.json"))
    ap.add_argument(
        "--sections",
        default=",".join(SECTIONS),
        help=f"comma-separated, from {','.join(SECTIONS)} (default: all; grid alone is ~10 min on 2 cores)",
    )
    ap.add_argument(
        "--no-parallel", action="store_true", help="grid: skip the make repro arm (pipeline.grid --jobs <cores>)"
    )
    args = ap.parse_args(argv)
    if args.repeats < 1:
        ap.error(f"--repeats: must be >= 1 (got {args.repeats})")
    args.wanted = [x.strip() for x in args.sections.split(",") if x.strip()]
    if not args.wanted or set(args.wanted) - set(SECTIONS):
        ap.error(f"--sections: {args.sections!r}: give names from {', '.join(SECTIONS)}")
    return args


def main(argv: list[str] | None = None) -> int:
    args = parse(argv)
    cfg = QUICK if args.quick else FULL

    from pipeline.config import cell_settings, load_params

    params = load_params(ROOT / "params.yaml")
    cell = cell_settings(params, *DEFAULT_CELL)
    cell = sized(
        cell,
        lrs=list(cell.optim.lrs[: cfg["lrs"]]) if cfg["lrs"] else None,
        seeds=list(cell.optim.seeds[: cfg["seeds"]]) if cfg["seeds"] else None,
        steps=cfg["steps"],
    )

    tmp = Path(tempfile.mkdtemp(prefix="normlab-bench-"))
    # nothing of the benchmark goes to the repo's mlflow.db, in this process or in its children
    os.environ["MLFLOW_TRACKING_URI"] = init_store(tmp / "store")
    environment.apply()  # no telemetry (MLflow, Ray, DVC) here or in the children: pipeline/spec/environment.py
    env = {**os.environ, "PATH": f"{Path(PY).parent}{os.pathsep}{os.environ.get('PATH', '')}"}

    import torch

    if cell.train.threads:  # as run_cell does; both sides of figures 1, 2, 8 run in this process
        torch.set_num_threads(cell.train.threads)
    res: dict = {
        "meta": {
            "quick": args.quick,
            "repeats": args.repeats,
            "cell": cell.name,
            "members": len(cell.members()),
            "steps": cell.train.steps,
            "threads": torch.get_num_threads(),
            "torch": torch.__version__,
            "python": platform.python_version(),
            "machine": platform.platform(),
            "cpus": os.cpu_count(),
            "loadavg_start": os.getloadavg(),
            "started": time.ctime(),
        }
    }
    wanted = set(args.wanted)
    for s in REGISTRY:  # a section's NEEDS are measured too: it reads their results
        if s.name in args.wanted:
            wanted.update(getattr(s.module, "NEEDS", ()))
    failed = []
    try:
        params_path = write_params(
            params,
            tmp / "cell_params.yaml",
            optim={"lrs": list(cell.optim.lrs), "seeds": list(cell.optim.seeds)},
            train={"steps": cell.train.steps},
        )
        ctx = Context(
            quick=args.quick,
            repeats=args.repeats,
            parallel=not args.no_parallel,
            cfg=cfg,
            params=params,
            cell=cell,
            params_path=params_path,
            env=env,
            tmp=tmp,
            res=res,
        )
        kicked = False
        for s in sorted(REGISTRY, key=lambda s: s.turn):
            if s.name not in wanted:
                continue
            if s.name != "grid" and args.quick and not kicked:  # after the grid, before the rest
                start_warm(env)  # the server's imports overlap the cold runs: --quick times are not figures
                kicked = True
            log(f"[bench] {s.name} ...")
            t0 = time.perf_counter()
            try:
                res[s.name] = s.module.measure(ctx)
            except Exception as exc:  # noqa: BLE001 - one broken figure must not hide the others
                traceback.print_exc()
                res[s.name] = {"error": f"{type(exc).__name__}: {str(exc).splitlines()[0] if str(exc) else ''}"[:300]}
                failed.append(s.name)
            log(f"[bench] {s.name}: {time.perf_counter() - t0:.1f} s")
    finally:
        shutil.rmtree(tmp, ignore_errors=True)

    res["meta"]["loadavg_end"] = os.getloadavg()
    res["table"] = table_rows(res)
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(res, indent=2, allow_nan=False))
    print(
        f"\nnormlab benchmark ({'QUICK: tiny settings, not figures' if args.quick else 'full'}; "
        f"median (min–max) of {args.repeats}; load average {res['meta']['loadavg_start'][0]:.2f} at start)\n"
    )
    print_table(res["table"])
    print(f"\nwritten to {out}")
    if failed:
        print(f"failed: {', '.join(failed)}", file=sys.stderr)
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
