"""Figure 9, MLflow at its own floor: the CPU the project's tracking process spends per run, against
MLflow's minimum for the same runs on the same kind of store, <= 1.2x; and what MLflow itself costs,
with the knobs that move it.

  project    the default cell (run.py's sizes) trained by pipeline.cell.run_cell with tracking into a
             fresh SQLite store, in a fresh process (single-threaded, so run_cell forks its tracking
             process, pipeline/tracking/process.py, as a CLI or warm cell does). That forked process's
             own CPU (getrusage(RUSAGE_SELF) user + system at the end of its _serve, wrapped here) /
             its runs (the parent and one per member). Beside it the project's own measure of it,
             timing.tracking_process_s (wall seconds inside its MLflow calls, CellTracker.seconds).
  floor      the same runs' params, metrics (every value, step and timestamp) and tags, read from the
             project's store, written by a bare MlflowClient loop on a fresh store of the same kind:
             per run create_run, one log_batch (more only past MLflow's 100 params / 100 tags / 1000
             values per request) and set_terminated. Like for like, it runs in a process forked from one
             that imported what run_cell has imported when it forks its tracker, and freezes the
             inherited heap (gc.freeze) as the tracking process does; its CPU is that process's whole
             (MLflow's import, the client, the experiment and the loop) / its runs, and its wall from
             the fork to the last call is set against tracking_process_s. The loop's own CPU
             and wall per run are MLflow's minimum per run; the rest is its fixed cost per process.
  knobs      the floor again with one knob each: SQLite `PRAGMA synchronous=OFF`, `journal_mode=WAL`
             (both through a SQLAlchemy connect event, before MLflow makes its engine), and MLflow's
             asynchronous logging (every run's log_batch(synchronous=False) queued, waited for once,
             then every run closed: waiting for each run's before closing it costs MLflow's ~1 s flush):
             the loop's CPU and wall per run against the plain floor's.
  interleaved  project, floor and knobs are each a fresh process per repeat, their order reversed every
             other repeat; ratios are per repeat (the arms beside each other), median [min, max].

The project's extra cost over the floor is what it records besides the params, metrics and tags
(dataset inputs, the parent's figure and artifacts), its searches (store check, orphan sweep) and
its requests beyond one per run (flushes during training).

    python -m benchmarks.run --sections mlflow_floor [--quick]
"""

from __future__ import annotations

import gc
import json
import os
import resource
import sqlite3
import sys
import time
from pathlib import Path

from benchmarks.common import (
    DEFAULT_CELL,
    PY,
    ROOT,
    Context,
    Table,
    interleave,
    pair_ratios,
    problem,
    run_proc,
    stats,
)
from benchmarks.reference import init_store

KNOBS = {
    "sync_off": "SQLite PRAGMA synchronous=OFF",
    "wal": "SQLite PRAGMA journal_mode=WAL",
    "async": "MLflow async log_batch",
}
LIMITS = {"params": 100, "tags": 100, "all": 1000}  # MLflow's per-request limits of log_batch


def cpu_s() -> float:
    u = resource.getrusage(resource.RUSAGE_SELF)
    return u.ru_utime + u.ru_stime


# -- the runs, read back from a store ----------------------------------------------------------
def read_runs(db: Path) -> list[dict]:
    """Every run of a SQLite MLflow store, oldest first (a cell's parent first): its name, params,
    tags (MLflow's run name aside) and every metric value with its timestamp and step."""
    con = sqlite3.connect(db)
    try:
        runs = []
        for run_id, name in con.execute("SELECT run_uuid, name FROM runs ORDER BY start_time, rowid"):
            runs.append(
                {
                    "id": run_id,
                    "name": name,
                    "params": dict(con.execute("SELECT key, value FROM params WHERE run_uuid = ?", (run_id,))),
                    "tags": {
                        k: v
                        for k, v in con.execute("SELECT key, value FROM tags WHERE run_uuid = ?", (run_id,))
                        if k != "mlflow.runName"
                    },
                    "metrics": [
                        [k, float("nan") if nan else v, ts, step]
                        for k, v, ts, step, nan in con.execute(
                            "SELECT key, value, timestamp, step, is_nan FROM metrics WHERE run_uuid = ?", (run_id,)
                        )
                    ],
                }
            )
        return runs
    finally:
        con.close()


def batches(params: list, metrics: list, tags: list):
    """The fewest log_batch requests MLflow's limits allow (one for a run that fits)."""
    while params or metrics or tags:
        p, t = params[: LIMITS["params"]], tags[: LIMITS["tags"]]
        m = metrics[: LIMITS["all"] - len(p) - len(t)]
        params, tags, metrics = params[len(p) :], tags[len(t) :], metrics[len(m) :]
        yield p, m, t


# -- the arms, each in a process of its own ----------------------------------------------------
def cell_imports() -> None:
    """What run_cell has imported when it forks its tracking process (pipeline/cell.py)."""
    import pytorch_lightning  # noqa: F401
    import torch  # noqa: F401

    import pipeline.cell  # noqa: F401
    from pipeline import records  # noqa: F401
    from pipeline.data.sets import StackedDataModule  # noqa: F401
    from pipeline.module import NormLabModule  # noqa: F401
    from pipeline.nets.build import build_model  # noqa: F401
    from pipeline.tracking.callback import TrackingCallback  # noqa: F401
    from pipeline.tracking.process import make_tracker  # noqa: F401


def bare_runs(runs: list[dict], uri: str, knob: str | None) -> dict:
    """The floor, in the forked process: MLflow's minimum for `runs` (knob: one of KNOBS, or None)."""
    wall0 = time.perf_counter()
    gc.freeze()  # as the tracking process: the inherited heap out of the collector
    if knob in ("sync_off", "wal"):
        from sqlalchemy import event
        from sqlalchemy.engine import Engine

        pragma = {"sync_off": "PRAGMA synchronous=OFF", "wal": "PRAGMA journal_mode=WAL"}[knob]

        @event.listens_for(Engine, "connect")
        def _pragma(dbapi_connection, record):
            cur = dbapi_connection.cursor()
            cur.execute(pragma)
            cur.close()

    from mlflow.entities import Metric, Param, RunTag
    from mlflow.tracking import MlflowClient

    client = MlflowClient(uri)
    artifacts = (Path(uri[len("sqlite:///") :]).parent / "mlruns").as_uri()  # beside the store, as the project's
    experiment = client.create_experiment("floor", artifact_location=artifacts)
    cpu0, loop0 = cpu_s(), time.perf_counter()
    ids: dict[str, str] = {}
    pending = []  # async: every run's batches queued, waited for once, then every run closed
    for run in runs:
        run_id = client.create_run(experiment, run_name=run["name"]).info.run_id
        ids[run["id"]] = run_id
        tags = [RunTag(k, ids.get(v, v) if k == "mlflow.parentRunId" else v) for k, v in run["tags"].items()]
        params = [Param(k, v) for k, v in run["params"].items()]
        metrics = [Metric(k, v, ts, step) for k, v, ts, step in run["metrics"]]
        for p, m, t in batches(params, metrics, tags):
            op = client.log_batch(run_id, metrics=m, params=p, tags=t, synchronous=knob != "async")
            if op is not None:
                pending.append(op)
        if knob != "async":
            client.set_terminated(run_id)
    if knob == "async":
        for op in pending:
            op.wait()
        for run_id in ids.values():
            client.set_terminated(run_id)
    end = time.perf_counter()
    return {
        "cpu_s": cpu_s(),
        "wall_s": end - wall0,
        "loop_cpu_s": cpu_s() - cpu0,
        "loop_wall_s": end - loop0,
        "runs": len(runs),
        "values": sum(len(r["metrics"]) for r in runs),
    }


def floor_main(spec: Path, uri: str, out: Path, knob: str | None) -> None:
    """A process shaped like a cell's: its imports, then a fork that writes the runs (bare_runs)."""
    runs = json.loads(spec.read_text())
    cell_imports()
    r, w = os.pipe()
    pid = os.fork()
    if pid == 0:
        code = 1
        try:
            os.close(r)
            os.write(w, json.dumps(bare_runs(runs, uri, knob)).encode())
            code = 0
        finally:
            os._exit(code)
    os.close(w)
    with os.fdopen(r) as f:
        text = f.read()
    _, status = os.waitpid(pid, 0)
    if status != 0 or not text:
        raise SystemExit(f"the floor's process exited with status {status}")
    out.write_text(text)


def project_main(params_path: Path, cell_out: Path, out: Path) -> None:
    """The default cell through run_cell with tracking on; its tracking process reports its own CPU."""
    import pipeline.tracking.process as tp
    from pipeline.config import cell_settings, load_params

    mine = out.with_suffix(".tracker.json")
    serve = tp._serve

    def measured_serve(*args, **kw):  # runs in the forked tracking process, which then exits
        try:
            serve(*args, **kw)
        finally:
            mine.write_text(json.dumps({"cpu_s": cpu_s()}))

    tp._serve = measured_serve
    from pipeline.cell import run_cell

    cell = cell_settings(load_params(params_path), *DEFAULT_CELL)
    run = run_cell(cell, cell_out, track=True, progress=False)
    if not mine.exists():
        raise SystemExit("run_cell tracked in-process (its process had threads): no tracking process to measure")
    timing = run.meta.timing
    out.write_text(
        json.dumps(
            {
                "cpu_s": json.loads(mine.read_text())["cpu_s"],
                "tracking_process_s": timing.get("tracking_process_s"),
                "tracking_s": timing.get("tracking_s"),
                "runs": 1 + len(cell.members()),
            }
        )
    )


# -- as figure 9 of benchmarks/run.py ----------------------------------------------------------
def measure(ctx: Context) -> dict:
    tmp = ctx.tmp / "mlflow_floor"
    tmp.mkdir(parents=True)
    me = [PY, "-m", "benchmarks.figures.mlflow_floor"]
    spec = tmp / "runs.json"
    count = iter(range(10**6))

    def project() -> dict:
        i = next(count)
        store = tmp / f"store{i}"
        uri = init_store(store)
        out = tmp / f"project{i}.json"
        run_proc([*me, "project", ctx.params_path, tmp / f"cell{i}", out], {**ctx.env, "MLFLOW_TRACKING_URI": uri})
        if not spec.exists():  # the floor writes the first project run's runs
            spec.write_text(json.dumps(read_runs(store / "mlflow.db")))
        return json.loads(out.read_text())

    def floor(knob: str | None) -> dict:
        i = next(count)
        uri = init_store(tmp / f"store{i}")
        out = tmp / f"floor{i}.json"
        run_proc([*me, "floor", spec, uri, out, knob or "none"], ctx.env)
        return json.loads(out.read_text())

    arms = {"project": project, "floor": lambda: floor(None), **{k: (lambda k=k: floor(k)) for k in KNOBS}}
    got = interleave(arms, ctx.repeats)  # project first: the floor writes its runs
    values = sum(len(r["metrics"]) for r in json.loads(spec.read_text()))
    wrote = {r["values"] for name in ("floor", *KNOBS) for r in got[name]}
    if wrote != {values}:
        raise RuntimeError(f"the floor wrote {sorted(wrote)} metric values, the project's runs have {values}")
    p, f = got["project"], got["floor"]
    runs = p[0]["runs"]
    ms = lambda rs, key: [1e3 * r[key] / r["runs"] for r in rs]  # noqa: E731 - per run, ms
    out = {
        "runs_per_cell": runs,
        "repeats": ctx.repeats,
        "values_per_run": values / runs,
        "project_cpu_ms_per_run": stats(ms(p, "cpu_s")),
        "floor_cpu_ms_per_run": stats(ms(f, "cpu_s")),
        "ratio_spread": pair_ratios(ms(p, "cpu_s"), ms(f, "cpu_s")),
        "floor_wall_ms_per_run": stats(ms(f, "wall_s")),
        "floor_loop_cpu_ms_per_run": stats(ms(f, "loop_cpu_s")),
        "floor_loop_wall_ms_per_run": stats(ms(f, "loop_wall_s")),
        "floor_fixed_cpu_ms": stats(1e3 * (r["cpu_s"] - r["loop_cpu_s"]) for r in f),
        "knobs": {},
    }
    out["ratio"] = out["ratio_spread"]["median"]
    if all(r.get("tracking_process_s") is not None for r in p):
        out["project_tracking_process_ms_per_run"] = stats(ms(p, "tracking_process_s"))
        out["tracking_wall_ratio"] = pair_ratios(ms(p, "tracking_process_s"), ms(f, "wall_s"))
    for knob, label in KNOBS.items():
        k = got[knob]
        out["knobs"][knob] = {
            "label": label,
            "loop_cpu_ms_per_run": stats(ms(k, "loop_cpu_s")),
            "loop_wall_ms_per_run": stats(ms(k, "loop_wall_s")),
            "cpu_ratio": pair_ratios(ms(k, "loop_cpu_s"), ms(f, "loop_cpu_s")),
            "wall_ratio": pair_ratios(ms(k, "loop_wall_s"), ms(f, "loop_wall_s")),
        }
    return out


def rows(s: dict, table: Table) -> None:
    label = "9 MLflow CPU ms per run: tracking process vs bare MlflowClient"
    if problem(s):
        table.add(label, problem(s))
        return
    add = table.add
    table.ratio(label, s["project_cpu_ms_per_run"], s["floor_cpu_ms_per_run"], s["ratio_spread"], "<=", 1.2)
    if "project_tracking_process_ms_per_run" in s:
        add(
            "9   wall ms per run: tracking_process_s (in its calls) vs floor process",
            s["project_tracking_process_ms_per_run"],
            s["floor_wall_ms_per_run"],
            s["tracking_wall_ratio"],
            floor=1,
        )
    add("9   MLflow's minimum per run, CPU ms (create_run, log_batch, set_terminated)", s["floor_loop_cpu_ms_per_run"])
    add("9   MLflow's fixed CPU ms per process (import, client, experiment)", s["floor_fixed_cpu_ms"])
    for k in s["knobs"].values():
        add(
            f"9   knob {k['label']}: loop CPU ms/run vs plain",
            k["loop_cpu_ms_per_run"],
            s["floor_loop_cpu_ms_per_run"],
            k["cpu_ratio"],
        )
        add(
            f"9   knob {k['label']}: loop wall ms/run vs plain",
            k["loop_wall_ms_per_run"],
            s["floor_loop_wall_ms_per_run"],
            k["wall_ratio"],
        )


def main(argv: list[str]) -> None:
    """python -m benchmarks.figures.mlflow_floor project PARAMS CELL_OUT OUT.json
    python -m benchmarks.figures.mlflow_floor floor RUNS.json URI OUT.json none|sync_off|wal|async"""
    if argv[:1] == ["project"] and len(argv) == 4:
        project_main(Path(argv[1]), Path(argv[2]), Path(argv[3]))
    elif argv[:1] == ["floor"] and len(argv) == 5 and argv[4] in ("none", *KNOBS):
        floor_main(Path(argv[1]), argv[2], Path(argv[3]), None if argv[4] == "none" else argv[4])
    else:
        raise SystemExit(main.__doc__)


if __name__ == "__main__":
    sys.path.insert(0, str(ROOT))
    main(sys.argv[1:])
