"""Scale-out figures: the local executor against a sequential `dvc repro`, and the MLflow tracking
server on PostgreSQL against the SQLite file store under concurrent writers. No asserts: numbers.

    python -m benchmarks.tracking_bench                  # both parts, JSON to .bench/scaleout.json
    python -m benchmarks.tracking_bench --part tracking --writers 1 2 4 --runs 20 --batches 10
    python -m benchmarks.tracking_bench --part grid --variants none bn center_detached standardize_detached

grid      a copy of this checkout's code in a temp DVC repo, a reduced grid (--variants x --datasets,
          the default members and steps): `dvc repro train` (every cell, one at a time) then the
          report, against `python -m pipeline.grid --jobs 2` (cells, `dvc commit`, report); each
          on its own SQLite store. The cells are checked bit-identical.
tracking  W writer processes start together; each creates --runs runs (create_run + set_terminated:
          runs/s), then sends --batches log_batch calls of 1000 values to a run of its own
          (values/s); against a SQLite file and an MLflow server on PostgreSQL
          (pipeline.tracking.server, loopback, --server-workers uvicorn workers).
"""

from __future__ import annotations

import argparse
import json
import multiprocessing as mp
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import yaml

from pipeline.spec import environment

ROOT = Path(__file__).resolve().parents[1]
BIN = Path(sys.executable).parent
QUIET = {**environment.telemetry_env(), "NORMLAB_WARM": "0"}  # telemetry: pipeline/spec/environment.py


# -- tracking: concurrent writers ------------------------------------------------------------
def _writer(uri: str, exp_id: str, n_runs: int, n_batches: int, go, done_runs, go_log, out) -> None:
    os.environ.update(QUIET)
    from mlflow.entities import Metric
    from mlflow.tracking import MlflowClient

    client = MlflowClient(uri)
    client.search_experiments(max_results=1)  # connect (and for SQLite, open) before the clock starts
    go.wait()
    t0 = time.perf_counter()
    for i in range(n_runs):
        run = client.create_run(exp_id, run_name=f"bench-{os.getpid()}-{i}")
        client.set_terminated(run.info.run_id)
    t_runs = time.perf_counter() - t0
    done_runs.wait()
    run = client.create_run(exp_id)
    go_log.wait()
    t0 = time.perf_counter()
    now = int(time.time() * 1000)
    for b in range(n_batches):
        client.log_batch(run.info.run_id, metrics=[Metric("loss", float(i), now, b * 1000 + i) for i in range(1000)])
    t_log = time.perf_counter() - t0
    client.set_terminated(run.info.run_id)
    out.put((t_runs, t_log))


def measure_writers(uri: str, writers: int, n_runs: int, n_batches: int) -> dict:
    from mlflow.tracking import MlflowClient

    client = MlflowClient(uri)
    exp_id = client.create_experiment(f"bench-{writers}-{time.time_ns()}")
    ctx = mp.get_context("spawn")
    go, done_runs, go_log = (ctx.Barrier(writers + 1) for _ in range(3))
    out = ctx.Queue()
    procs = [
        ctx.Process(target=_writer, args=(uri, exp_id, n_runs, n_batches, go, done_runs, go_log, out))
        for _ in range(writers)
    ]
    for p in procs:
        p.start()
    go.wait()
    t0 = time.perf_counter()
    done_runs.wait()
    runs_wall = time.perf_counter() - t0
    go_log.wait()
    t0 = time.perf_counter()
    results = [out.get(timeout=600) for _ in procs]
    log_wall = time.perf_counter() - t0
    for p in procs:
        p.join(30)
    return {
        "writers": writers,
        "runs_per_s": writers * n_runs / runs_wall,
        "values_per_s": writers * n_batches * 1000 / log_wall,
        "slowest_writer_runs_s": max(r[0] for r in results),
        "slowest_writer_log_s": max(r[1] for r in results),
    }


def tracking_part(args) -> dict:
    from pipeline.tracking.server import ServerError, TrackingServer

    res = {
        "sqlite": [],
        "server_postgres": [],
        "settings": {"runs": args.runs, "batches": args.batches, "server_workers": args.server_workers},
    }
    with tempfile.TemporaryDirectory() as tmp:
        uri = f"sqlite:///{tmp}/bench.db"
        from mlflow.tracking import MlflowClient

        MlflowClient(uri).search_experiments(max_results=1)  # create the schema before the writers start
        measure_writers(uri, max(args.writers), 3, 1)  # warm-up, not counted
        for w in args.writers:
            try:
                res["sqlite"].append(measure_writers(uri, w, args.runs, args.batches))
            except Exception as exc:  # noqa: BLE001 - SQLite may refuse concurrent writers: that is a result
                res["sqlite"].append({"writers": w, "error": str(exc).splitlines()[0][:200]})
            print("sqlite", res["sqlite"][-1], flush=True)
    try:
        with TrackingServer(workers=args.server_workers) as server:
            measure_writers(server.uri, max(args.writers), 3, 1)  # warm-up: each server worker's first requests
            for w in args.writers:
                res["server_postgres"].append(measure_writers(server.uri, w, args.runs, args.batches))
                print("server+postgres", res["server_postgres"][-1], flush=True)
    except ServerError as err:
        res["server_postgres"] = f"not measured: {err}"
    return res


# -- grid: local executor vs sequential dvc repro --------------------------------------------------
def _repo(d: Path, variants: list[str], datasets: list[str]) -> Path:
    shutil.copytree(ROOT / "pipeline", d / "pipeline", ignore=shutil.ignore_patterns("__pycache__"))
    shutil.copytree(ROOT / "data", d / "data")
    for f in ("dvc.yaml", ".dvcignore"):
        shutil.copy(ROOT / f, d / f)
    params = yaml.safe_load((ROOT / "params.yaml").read_text())
    params["grid"] = {"variants": variants, "datasets": datasets}
    (d / "params.yaml").write_text(yaml.safe_dump(params, sort_keys=False))
    (d / ".gitignore").write_text("mlflow.db\nmlflow.db.init-lock\nmlruns/\n")
    for cmd in (["git", "init", "-q"], ["dvc", "init", "-q"]):  # DVC's analytics: off by _env
        subprocess.run(cmd, cwd=d, env=_env(d), check=True, capture_output=True)
    return d


def _env(d: Path) -> dict:
    return environment.child_env(
        NORMLAB_WARM="0", PATH=f"{BIN}:{os.environ['PATH']}", MLFLOW_TRACKING_URI=f"sqlite:///{d / 'mlflow.db'}"
    )


def _timed(cmd: list[str], d: Path) -> tuple[float, str]:
    t0 = time.perf_counter()
    proc = subprocess.run(cmd, cwd=d, env=_env(d), capture_output=True, text=True)
    if proc.returncode:
        raise RuntimeError(f"{' '.join(cmd)} failed: {proc.stderr[-1000:]}")
    return time.perf_counter() - t0, proc.stdout


def grid_part(args) -> dict:
    with tempfile.TemporaryDirectory() as tmp:
        seq = _repo(Path(tmp) / "seq", args.variants, args.datasets)
        par = _repo(Path(tmp) / "par", args.variants, args.datasets)
        seq_cells, _ = _timed([str(BIN / "dvc"), "repro", "train"], seq)
        seq_report, _ = _timed([str(BIN / "dvc"), "repro"], seq)
        print(f"sequential dvc repro: cells {seq_cells:.1f} s, report {seq_report:.1f} s", flush=True)
        par_total, out = _timed([sys.executable, "-m", "pipeline.grid", "--jobs", str(args.jobs)], par)
        last = [line for line in out.splitlines() if line.startswith("[")][-1]
        par_cells = float(last.rsplit("(", 1)[1].split(" s,")[0])
        cells = sorted(p.name for p in (seq / "runs").iterdir() if p.is_dir())
        same = all(
            (seq / "runs" / c / f).read_bytes() == (par / "runs" / c / f).read_bytes()
            for c in cells
            for f in ("history.parquet", "summary.json", "config.json")
        )
        print(
            f"grid --jobs {args.jobs}: cells {par_cells:.0f} s, total {par_total:.1f} s; identical cells: {same}",
            flush=True,
        )
        return {
            "cells": len(cells),
            "variants": args.variants,
            "datasets": args.datasets,
            "jobs": args.jobs,
            "sequential_cells_s": seq_cells,
            "sequential_total_s": seq_cells + seq_report,
            "local_cells_s": par_cells,
            "local_total_s": par_total,
            "speedup_cells": seq_cells / par_cells,
            "speedup_total": (seq_cells + seq_report) / par_total,
            "identical_cells": same,
        }


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m benchmarks.tracking_bench", description=__doc__.splitlines()[0])
    ap.add_argument("--part", choices=["all", "grid", "tracking"], default="all")
    ap.add_argument("--writers", type=int, nargs="+", default=[1, 2, 4])
    ap.add_argument("--runs", type=int, default=20, help="runs each writer creates")
    ap.add_argument("--batches", type=int, default=10, help="log_batch calls of 1000 values each writer sends")
    ap.add_argument("--server-workers", type=int, default=2)
    ap.add_argument("--variants", nargs="+", default=["none", "bn", "center_detached", "standardize_detached"])
    ap.add_argument("--datasets", nargs="+", default=["synthetic", "digits"])
    ap.add_argument("--jobs", type=int, default=2)
    ap.add_argument("--out", default=".bench/scaleout.json")
    args = ap.parse_args(argv)
    os.environ.update(QUIET)
    result = {"cores": os.cpu_count()}
    if args.part in ("all", "tracking"):
        result["tracking"] = tracking_part(args)
    if args.part in ("all", "grid"):
        result["grid"] = grid_part(args)
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps(result, indent=1))
    print(json.dumps(result, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
