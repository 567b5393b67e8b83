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
2 seeds, 30 steps). `--sections grid,overhead` measures only those. The figures:

0 grid        the one that counts (benchmarks/grid_floor.py): wall time of `dvc repro -f` of the default
              grid (--quick: 2 cells, 4 members, 30 steps) in a temporary copy of the project, over the
              grid's bare-compute floor (benchmarks.reference.bare_loop summed over every cell, same run),
              <= 2; the split (training, tracking, start-up & closing, report, DVC and process overhead:
              seconds and shares; tracking <= 10%), the per-cell fixed cost (<= 0.5 s), the warm server's
              and each warm cell's peak RSS, and `python -m pipeline.grid --executor local --jobs 2` on a
              second copy (--no-parallel skips it). The no-op `dvc repro` and the report of figure 6
              are then measured on that copy (the default grid, every cell there).

1 overhead    ms per training step of the default cell through pipeline.cell.run_cell (Lightning,
              measurement hooks, interval evaluation, MLflow tracking on): timing.fit_s / steps;
              against a bare PyTorch loop over the same StackedMLP, stacked optimizer, batches
              and loss (no Lightning, no tracking, no measurements). ratio = normlab / bare, <= 1.3.
              Beside it the same cell evaluated only at step 0 and the end: the difference is the cost
              of the interval evaluations on the full sets (ms per evaluation).
2 stacking    fit seconds of the default cell (tracking off) against the sum of fit seconds of
              its members trained one at a time by normlab. ratio = alone / stacked, >= 4.
3 naive grid  wall seconds of a grid subset (one default cell's members: bn on digits x 5 lrs x
              3 seeds = 15 runs, one repeat; --quick: bn x 1 lr x 1 seed, 20 steps) run as one process per run of benchmarks/naive_run.py
              (plain LightningModule + MLFlowLogger, five metrics every step), against normlab's
              `python -m pipeline.train` per cell (members stacked), both with the same steps and
              their own temporary SQLite store, start-up included; normlab cold (NORMLAB_WARM=0)
              and warm (default, server up). ratio = naive / normlab, >= 20.
4 tracking    share of a default cell's wall time spent in MLflow calls, run through the CLI:
              timing.tracking_s over the process's wall time (launch to exit), cold and warm, <= 10%.
              (tracking_s / (startup_s + fit_s) is in the JSON too; it leaves out the post-fit
              part of tracking_s and so overstates the share.)
5 start-up    seconds from launching `python -m pipeline.train` (NORMLAB_T0 is set just before the
              launch, so interpreter start counts) to the call of trainer.fit: timing.startup_s,
              cold (NORMLAB_WARM=0) and warm (after `python -m pipeline.warm status` says up). <= 4 s.
6 dvc         (a) a no-op `dvc repro`, <= 3 s, and (b) `python -m pipeline.report --no-track` into a
              temp folder, <= 10 s: on the copy figure 0 reproduced; without figure 0, (a) in the repo
              only if `dvc status` says up to date (stopped if a stage starts) and (b) on the repo's
              runs/ when every cell is there (not in --quick), after a report-only params change.
7 memory      peak resident memory (ru_maxrss from wait4) of a cold CLI run of the default cell,
              beside one naive run's; and this process's resident memory after each of 12 cells
              (--quick 3) trained in it by run_cell, as a local executor's worker trains them: the
              growth from the second cell to the last (a leak grows with every cell).
8 scaling     ms per step of run_cell (tracking off, 100 steps, --quick 20; the cell's evaluation
              and measurements included) as members grow (1 lr x N seeds) and as width grows, and
              the achieved FLOP/s of the training matmuls, 6 x members x batch x sum(d_in*d_out)
              per step (a lower bound on matmul efficiency: everything else is in the time too),
              beside this machine's torch.bmm float32 FLOP/s with the same thread count.
"""
from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import traceback
from pathlib import Path

from benchmarks.reference import bare_loop, init_store
from pipeline.spec import environment
from pipeline.spec.names import cell_name

ROOT = Path(__file__).resolve().parents[1]
PY = sys.executable
DEFAULT_CELL = ("center_detached", "synthetic")
SECTIONS = ("grid", "overhead", "stacking", "naive_grid", "tracking", "startup", "dvc", "memory", "scaling")
QUICK_GRID = {"grid": {"variants": ["bn", "center_detached"], "datasets": ["synthetic"]},
              "optim": {"lrs": [0.1, 1.0], "seeds": [0, 1]}, "train": {"steps": 30}}

FULL = {"lrs": None, "seeds": None, "steps": None,  # None: as in params.yaml
        "grid_variants": ("bn",), "grid_lrs": 5, "grid_seeds": 3, "grid_steps": None, "grid_repeats": 1,
        "scaling_steps": 100, "scaling_members": (1, 4, 16, 64), "scaling_widths": (32, 128, 512),
        "scaling_width_members": 16, "bmm": (16, 512, 512), "growth_cells": 12}
QUICK = {"lrs": 2, "seeds": 2, "steps": 30,
         "grid_variants": ("bn",), "grid_lrs": 1, "grid_seeds": 1, "grid_steps": 20, "grid_repeats": 1,
         "scaling_steps": 20, "scaling_members": (1, 4), "scaling_widths": (32, 64),
         "scaling_width_members": 4, "bmm": (4, 256, 256), "growth_cells": 3}


# -- small helpers -----------------------------------------------------------------------------
def stats(values) -> dict:
    vals = [float(v) for v in values]
    return {"median": statistics.median(vals), "min": min(vals), "max": max(vals), "runs": vals}


def log(msg: str) -> None:
    print(msg, file=sys.stderr, flush=True)  # progress on stderr; the table goes to stdout


def run_proc(cmd: list[str], env: dict, cwd: Path = ROOT, timeout: float = 600) -> dict:
    """Run a child to completion: wall seconds, exit code, its own peak RSS and its output.

    os.wait4 gives this child's rusage alone (RUSAGE_CHILDREN would be the max over every
    child so far)."""
    with tempfile.TemporaryFile("w+") as out:
        env = {**env, "NORMLAB_T0": repr(time.time())}  # pipeline.train's start-up clock starts here
        t0 = time.perf_counter()
        proc = subprocess.Popen(cmd, cwd=cwd, env=env, stdin=subprocess.DEVNULL, stdout=out, stderr=subprocess.STDOUT)
        timer = threading.Timer(timeout, proc.kill)
        timer.start()
        try:
            _, status, usage = os.wait4(proc.pid, 0)
        finally:
            timer.cancel()
        wall = time.perf_counter() - t0
        proc.returncode = os.waitstatus_to_exitcode(status)  # already reaped: Popen must not wait
        out.seek(0)
        text = out.read()
    if proc.returncode != 0:
        tail = "\n".join(text.strip().splitlines()[-15:])
        raise RuntimeError(f"{' '.join(map(str, cmd))} exited {proc.returncode}:\n{tail}")
    return {"wall_s": wall, "maxrss_mib": usage.ru_maxrss / 1024, "output": text}  # Linux: KiB


def write_params(params, path: Path, **over) -> Path:
    """params (validated Params) with sections overridden, written as YAML and checked by load_params."""
    import yaml

    from pipeline.config import load_params

    raw = params.model_dump(mode="json", exclude_unset=True)  # exactly what params.yaml set
    for section, values in over.items():
        raw[section] = {**raw.get(section, {}), **values}
    path.write_text(yaml.safe_dump(raw, sort_keys=False))
    load_params(path)  # fail here, not inside a timed child
    return path


def sized(cell, lrs=None, seeds=None, steps=None, width=None):
    """The cell with fewer/more members, steps or width (CellSettings.model_copy, as documented)."""
    update = {}
    if lrs is not None or seeds is not None:
        update["optim"] = cell.optim.model_copy(update={k: v for k, v in (("lrs", lrs), ("seeds", seeds)) if v is not None})
    if steps is not None:
        update["train"] = cell.train.model_copy(update={"steps": steps})
    if width is not None:
        update["model"] = cell.model.model_copy(update={"width": width})
    return cell.model_copy(update=update)


def warm_status(env: dict) -> bool:
    out = subprocess.run([PY, "-m", "pipeline.warm.client", "status"], cwd=ROOT, env=env, capture_output=True, text=True)
    return out.returncode == 0 and " up " in out.stdout


_WARM_KICKED = [0.0]  # when start_warm last launched a server


def start_warm(env: dict) -> None:
    """If no warm server is up, start one in the background (`python -m pipeline.warm start`;
    pipeline.train starts one only for a runnable training command, never for `--help`)."""
    if not warm_status(env):
        run_proc([PY, "-m", "pipeline.warm.client", "start"], env)
        _WARM_KICKED[0] = time.time()


def ensure_warm(env: dict) -> bool:
    """A warm server for this checkout is up: started if need be, waited for up to 60 s."""
    if warm_status(env):
        return True
    if time.time() - _WARM_KICKED[0] > 60:  # not one already on its way up
        start_warm(env)
    deadline = time.time() + 60
    while time.time() < deadline:
        if warm_status(env):
            return True
        time.sleep(0.5)
    return False


# -- 1 and 2: in-process -----------------------------------------------------------------------
def overhead(cell, repeats: int, tmp: Path) -> dict:
    from pipeline.cell import run_cell

    steps = cell.train.steps
    run_cell(sized(cell, steps=5), tmp / "warmup", progress=False)  # first-call costs out of the figures
    bare_loop(sized(cell, steps=5))
    # the same cell evaluated only at step 0 and at the end (train.eval_every past the last step):
    # the difference is what the interval evaluations on the full sets cost
    few_evals = cell.model_copy(update={"train": cell.train.model_copy(update={"eval_every": steps + 1})})
    evals = len(range(0, steps, cell.train.eval_every)) + 1  # evaluations in the default cell
    normlab, no_eval, bare = [], [], []
    for r in range(repeats):  # interleaved, so a change in machine load hits both sides
        s = run_cell(cell, tmp / f"overhead{r}", track=True, progress=False)
        normlab.append(1e3 * s.meta.timing["fit_s"] / steps)
        s = run_cell(few_evals, tmp / f"overhead-noeval{r}", track=True, progress=False)
        no_eval.append(1e3 * s.meta.timing["fit_s"] / steps)
        bare.append(1e3 * bare_loop(cell) / steps)
    n, ne, b = stats(normlab), stats(no_eval), stats(bare)
    return {"normlab_ms_per_step": n, "bare_ms_per_step": b, "ratio": n["median"] / b["median"],
            "normlab_2_evals_ms_per_step": ne, "ratio_2_evals": ne["median"] / b["median"],
            "evaluations": evals, "eval_ms_each": (n["median"] - ne["median"]) * steps / max(1, evals - 2),
            "steps": steps, "members": len(cell.members())}


def stacking(cell, repeats: int, tmp: Path) -> dict:
    from pipeline.cell import run_cell

    stacked, alone = [], []
    for r in range(repeats):
        s = run_cell(cell, tmp / f"stacked{r}", track=False, progress=False)
        stacked.append(s.meta.timing["fit_s"])
        total = 0.0
        for j, (lr, seed) in enumerate(cell.members()):
            s = run_cell(sized(cell, lrs=[lr], seeds=[seed]), tmp / f"alone{r}-{j}", track=False, progress=False)
            total += s.meta.timing["fit_s"]
        alone.append(total)
    st, al = stats(stacked), stats(alone)
    return {"stacked_fit_s": st, "alone_fit_s": al, "ratio": al["median"] / st["median"],
            "members": len(cell.members()), "steps": cell.train.steps}


# -- 3, 4, 5, 7: through the CLI ---------------------------------------------------------------
def cli_timing(out: Path) -> dict:
    """A CLI run's timing: pipeline.train writes it beside the cell's folder, in <out>.meta.json."""
    from pipeline.records import meta_path

    return json.loads(meta_path(out).read_text())["timing"]


def cli_cell(variant: str, dataset: str, params_path: Path, out: Path, env: dict) -> dict:
    r = run_proc([PY, "-m", "pipeline.train", "--variant", variant, "--dataset", dataset,
                  "--out", str(out), "--params", str(params_path)], env)
    r["timing"] = cli_timing(out)
    return r


def cli_default(params_path: Path, repeats: int, env: dict, tmp: Path) -> dict:
    """The default cell through `python -m pipeline.train`, cold then warm (figures 4, 5, 7)."""
    v, d = DEFAULT_CELL
    cold_env = {**env, "NORMLAB_WARM": "0"}
    cold = [cli_cell(v, d, params_path, tmp / f"cold{r}", cold_env) for r in range(repeats)]
    warm = []
    for r in range(repeats):
        if not ensure_warm(env):  # each time: an edit of pipeline/ retires the server it finds
            break
        warm.append(cli_cell(v, d, params_path, tmp / f"warm{r}", env))
    return {"cold": cold, "warm": warm}


def tracking_share(runs: list[dict]) -> dict:
    """tracking_s over the cell's wall time. The figure is over the whole process (launch to exit):
    tracking_s also counts tracker.finish (artifacts, tags, closing runs), which comes after
    fit_s, so over startup_s + fit_s alone it can pass 100% on a short cell; that ratio is kept too."""
    t = [r["timing"] for r in runs]
    return {"share": stats(x["tracking_s"] / r["wall_s"] for x, r in zip(t, runs)),
            "share_of_startup_plus_fit": stats(x["tracking_s"] / (x["startup_s"] + x["fit_s"]) for x in t),
            "tracking_s": stats(x["tracking_s"] for x in t), "wall_s": stats(r["wall_s"] for r in runs)}


def naive_grid(params, cfg: dict, repeats: int, env: dict, tmp: Path) -> dict:
    variants, dataset = cfg["grid_variants"], "digits"
    lrs, seeds = list(params.optim.lrs[:cfg["grid_lrs"]]), list(params.optim.seeds[:cfg["grid_seeds"]])
    steps = cfg["grid_steps"] or params.train.steps
    repeats = min(repeats, cfg["grid_repeats"])  # the naive side is minutes per repeat
    tmp.mkdir(parents=True)
    p = write_params(params, tmp / "grid_params.yaml", optim={"lrs": lrs, "seeds": seeds}, train={"steps": steps})
    naive_env = {**env, "MLFLOW_TRACKING_URI": init_store(tmp / "naive_store")}
    normlab_env = {**env, "MLFLOW_TRACKING_URI": init_store(tmp / "normlab_store")}
    naive_cwd = tmp / "naive_cwd"  # MLflow and Lightning may write beside the cwd: not in the repo
    naive_cwd.mkdir()
    naive, cold, warm, rss = [], [], [], []
    for r in range(repeats):
        total = 0.0
        for v, lr, seed in ((v, lr, seed) for v in variants for lr in lrs for seed in seeds):
            res = run_proc([PY, str(ROOT / "benchmarks" / "naive_run.py"), "--lr", str(lr), "--seed", str(seed),
                            "--steps", str(steps), "--width", str(params.model.width),
                            "--depth", str(params.model.depth), "--norm", v, "--threads", str(params.train.threads),
                            "--tracking-uri", naive_env["MLFLOW_TRACKING_URI"]], naive_env, cwd=naive_cwd)
            total += res["wall_s"]
            rss.append(res["maxrss_mib"])
        naive.append(total)
        cold.append(sum(cli_cell(v, dataset, p, tmp / f"cold{r}" / cell_name(v, dataset), {**normlab_env, "NORMLAB_WARM": "0"})
                        ["wall_s"] for v in variants))
        if ensure_warm(normlab_env):
            warm.append(sum(cli_cell(v, dataset, p, tmp / f"warm{r}" / cell_name(v, dataset), normlab_env)["wall_s"]
                            for v in variants))
    na, co = stats(naive), stats(cold)
    out = {"runs": len(variants) * len(lrs) * len(seeds), "variants": list(variants), "dataset": dataset,
           "lrs": lrs, "seeds": seeds, "repeats": repeats,
           "steps": steps, "naive_wall_s": na, "normlab_cold_wall_s": co,
           "ratio_cold": na["median"] / co["median"], "naive_maxrss_mib": stats(rss)}
    if warm:
        wa = stats(warm)
        out.update(normlab_warm_wall_s=wa, ratio_warm=na["median"] / wa["median"])
    else:
        out["normlab_warm"] = "skipped: the warm server did not come up within 60 s"
    return out


def rss_mib() -> float:
    """This process's resident memory now (Linux /proc), MiB."""
    return int(Path("/proc/self/statm").read_text().split()[1]) * os.sysconf("SC_PAGE_SIZE") / 2**20


def memory_growth(cell, n: int, tmp: Path) -> dict:
    """Resident memory after each of n cells trained in this process by run_cell (tracking on), as
    a local executor's worker runs them: a leak shows as a rise from the second cell on."""
    import gc

    from pipeline.cell import run_cell

    after = []
    for i in range(n):
        run_cell(cell, tmp / f"growth{i}", track=True, progress=False)
        shutil.rmtree(tmp / f"growth{i}", ignore_errors=True)
        gc.collect()
        after.append(rss_mib())
    return {"cells": n, "rss_after_each_mib": after, "growth_mib": after[-1] - after[min(1, n - 1)],
            "growth_per_cell_mib": (after[-1] - after[min(1, n - 1)]) / max(1, n - 2)}


# -- 6: dvc ------------------------------------------------------------------------------------
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
    proc = subprocess.Popen([dvc, "repro"], cwd=ROOT, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                            text=True, start_new_session=True)
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
    p = write_params(params, tmp / "report_params.yaml", report={"alpha_unbounded": round(params.report.alpha_unbounded * 0.99, 4)})
    walls = [run_proc([PY, "-m", "pipeline.report", "--runs", str(runs), "--out", str(tmp / f"report{r}"),
                       "--params", str(p), "--no-track"], env)["wall_s"] for r in range(repeats)]
    return {"wall_s": stats(walls), "cells": len(cells)}


# -- 8: scaling --------------------------------------------------------------------------------
def bmm_flops(shape: tuple[int, int, int], repeats: int = 10) -> float:
    import torch

    b, n, _ = shape
    x, y = torch.randn(b, n, n), torch.randn(b, n, n)
    for _ in range(3):
        torch.bmm(x, y)
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        torch.bmm(x, y)
        times.append(time.perf_counter() - t0)
    return 2 * b * n ** 3 / statistics.median(times)


def scaling(cell, cfg: dict, repeats: int, tmp: Path) -> dict:
    from pipeline.data.sets import StackedDataModule
    from pipeline.cell import run_cell

    steps, lr = cfg["scaling_steps"], cell.optim.lrs[0]
    d_in, d_out = StackedDataModule(cell.dataset, [0], 1, 1).dims
    peak = bmm_flops(cfg["bmm"])
    configs = [(m, cell.model.width) for m in cfg["scaling_members"]]
    configs += [(cfg["scaling_width_members"], w) for w in cfg["scaling_widths"]]
    rows = []
    for m, w in dict.fromkeys(configs):  # ordered, without the repeated (16, 32)
        c = sized(cell, lrs=[lr], seeds=list(range(m)), steps=steps, width=w)
        ms = stats(1e3 * run_cell(c, tmp / f"scale{m}x{w}-{r}", track=False, progress=False).meta.timing["fit_s"] / steps
                   for r in range(repeats))
        dims = [d_in] + [w] * c.model.depth + [d_out]
        flop = 6 * m * c.optim.batch_size * sum(a * b for a, b in zip(dims[:-1], dims[1:]))
        achieved = flop / (ms["median"] / 1e3)
        rows.append({"members": m, "width": w, "ms_per_step": ms, "flop_per_step": flop,
                     "achieved_flops": achieved, "share_of_bmm": achieved / peak})
    return {"bmm_shape": list(cfg["bmm"]), "bmm_flops": peak, "steps": steps, "rows": rows}


# -- the table ---------------------------------------------------------------------------------
def num(x: float) -> str:
    return f"{x:.0f}" if abs(x) >= 100 else f"{x:.1f}" if abs(x) >= 10 else f"{x:.3g}"


def fmt(x) -> str:
    if x is None:
        return "—"
    if isinstance(x, str):
        return x
    if isinstance(x, dict):  # stats(): median (min–max)
        return f"{num(x['median'])} ({num(x['min'])}–{num(x['max'])})"
    return num(x)


def scaled(s: dict, k: float) -> dict:
    return {"median": s["median"] * k, "min": s["min"] * k, "max": s["max"] * k}


def table_rows(res: dict) -> list[dict]:
    rows = []

    def add(figure, normlab=None, reference=None, ratio=None, target=None, met=None):
        rows.append({"figure": figure, "normlab": fmt(normlab), "reference": fmt(reference), "ratio": fmt(ratio),
                     "target": target or "—", "met": {True: "yes", False: "no", None: "—"}[met]})

    def problem(s: dict):  # why a (sub)section has no figure, or None
        return s.get("error") or s.get("skipped") or (None if s else "not run (--sections)")

    s = res.get("grid", {})
    if problem(s):
        add("0 grid wall s: dvc repro -f vs bare floor", problem(s))
    else:
        add(f"0 grid wall s ({s['cells']} cells): dvc repro -f vs bare floor", s["wall_s"], s["floor_s"],
            s["ratio"], "ratio <= 2", s["ratio"] <= 2)
        if "parallel" in s:
            p = s["parallel"]
            add(f"0 grid wall s: pipeline.grid local -j {p['jobs']} vs bare floor", p["wall_s"], s["floor_s"], p["ratio"],
                "ratio <= 2", p["ratio"] <= 2)
        sp = s["split"]
        for part, sec in sp["seconds"].items():
            add(f"0   {part} s (share of the grid wall)", sec, None, f"{100 * sp['shares'][part]:.0f}%")
        add("0   tracking s: cells waiting for MLflow (share)", sp["tracking_s"], None,
            f"{100 * sp['tracking_share']:.0f}%", "<= 10%", sp["tracking_share"] <= 0.10)
        if sp.get("tracking_process_s"):
            add("0   tracking processes' MLflow s (beside training)", sp["tracking_process_s"])
        add("0   per-cell fixed cost s (launch, start-up, closing, DVC)", sp["fixed_per_cell_s"],
            target="<= 0.5 s", met=sp["fixed_per_cell_s"] <= 0.5)
        add("0   training (sum fit_s) vs bare floor", sp["seconds"]["training"], s["floor_s"], s["fit_over_floor"])
        mem = s.get("memory", {})
        if "server_VmRSS_mib" in mem:
            add("0   warm server RSS / peak MiB after the grid", mem["server_VmRSS_mib"], mem.get("server_VmHWM_mib"))
        if "cell_peak_rss_mib" in mem:
            c = mem["cell_peak_rss_mib"]
            add(f"0   warm cell peak RSS MiB ({c['cells']} cells; first vs last)", c, f"{num(c['first'])} vs {num(c['last'])}")
    s = res.get("overhead", {})
    if problem(s):
        add("1 overhead ms/step: normlab vs bare torch", problem(s))
    else:
        add("1 overhead ms/step: normlab vs bare torch", s["normlab_ms_per_step"], s["bare_ms_per_step"],
            s["ratio"], "ratio <= 1.3", s["ratio"] <= 1.3)
        add(f"1 overhead ms/step, 2 evaluations instead of {s['evaluations']}", s["normlab_2_evals_ms_per_step"],
            s["bare_ms_per_step"], s["ratio_2_evals"])
        add("1   one full-set evaluation ms", s["eval_ms_each"])
    s = res.get("stacking", {})
    if problem(s):
        add("2 stacking fit s: stacked vs one at a time", problem(s))
    else:
        add(f"2 stacking fit s: {s['members']} stacked vs alone", s["stacked_fit_s"], s["alone_fit_s"],
            s["ratio"], "ratio >= 4", s["ratio"] >= 4)
    s = res.get("naive_grid", {})
    if problem(s):
        add("3 grid wall s: normlab vs naive", problem(s))
    else:
        add(f"3 {s['runs']}-run grid wall s: cold vs naive", s["normlab_cold_wall_s"], s["naive_wall_s"],
            s["ratio_cold"], "ratio >= 20", s["ratio_cold"] >= 20)
        if "ratio_warm" in s:
            add(f"3 {s['runs']}-run grid wall s: warm vs naive", s["normlab_warm_wall_s"], s["naive_wall_s"],
                s["ratio_warm"], "ratio >= 20", s["ratio_warm"] >= 20)
        else:
            add("3 grid wall s: warm vs naive", s["normlab_warm"])
    s = res.get("tracking", {})
    for mode in ("cold", "warm"):
        if problem(s) or mode not in s:
            add(f"4 tracking % of cell wall time ({mode})", problem(s) or s.get(f"{mode}_skipped"))
        else:
            share = s[mode]["share"]
            add(f"4 tracking % of cell wall time ({mode})", scaled(share, 100), target="<= 10%", met=share["median"] <= 0.10)
    s = res.get("startup", {})
    for mode in ("cold", "warm"):
        if problem(s) or mode not in s:
            add(f"5 start-up s ({mode})", problem(s) or s.get(f"{mode}_skipped"))
        else:
            add(f"5 start-up s ({mode})", s[mode], target="<= 4 s", met=s[mode]["median"] <= 4)
    s = res.get("dvc", {})
    for key, label, limit in (("noop", "6a no-op dvc repro s", 3), ("report", "6b report regeneration s", 10)):
        sub = s.get(key, {})
        if problem(s) or problem(sub):
            add(label, problem(s) or problem(sub))
        else:
            wall = sub["wall_s"]
            med = wall["median"] if isinstance(wall, dict) else wall
            add(label, wall, target=f"<= {limit} s", met=med <= limit)
    s = res.get("memory", {})
    if problem(s):
        add("7 peak RSS MiB: cold cell vs naive run", problem(s))
    else:
        add("7 peak RSS MiB: cold cell vs naive run", s["normlab_maxrss_mib"], s.get("naive_maxrss_mib"), s.get("ratio"))
        g = s.get("growth")
        if g:
            add(f"7 RSS growth MiB over {g['cells']} cells in one process (per cell)", g["growth_mib"],
                f"{num(g['rss_after_each_mib'][0])} -> {num(g['rss_after_each_mib'][-1])}", g["growth_per_cell_mib"])
    s = res.get("scaling", {})
    if problem(s):
        add("8 scaling", problem(s))
    else:
        for r in s["rows"]:
            add(f"8 {r['members']} members x width {r['width']} ms/step; GFLOP/s vs bmm", r["ms_per_step"],
                f"{num(r['achieved_flops'] / 1e9)} vs {num(s['bmm_flops'] / 1e9)}", r["share_of_bmm"])
    return rows


def print_table(rows: list[dict]) -> None:
    cols = ("figure", "normlab", "reference", "ratio", "target", "met")
    heads = ("figure", "normlab", "reference", "ratio", "target", "met?")
    widths = [max(len(h), *(len(str(r[c])) for r in rows)) for c, h in zip(cols, heads)]
    line = "  ".join(h.ljust(w) for h, w in zip(heads, widths))
    print(line)
    print("-" * len(line))
    for r in rows:
        print("  ".join(str(r[c]).ljust(w) for c, w in zip(cols, widths)))


# -- main --------------------------------------------------------------------------------------
def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m benchmarks.run", description=__doc__.splitlines()[0])
    ap.add_argument("--repeats", type=int, default=3, help="runs per figure; the median is reported (default 3)")
    ap.add_argument("--quick", action="store_true", help="tiny settings: a smoke test, not figures")
    ap.add_argument("--out", default=str(ROOT / ".bench" / "benchmark.json"))
    ap.add_argument("--sections", default=",".join(SECTIONS),
                    help=f"comma-separated, from {','.join(SECTIONS)} (default: all; grid alone is ~10 min on 2 cores)")
    ap.add_argument("--no-parallel", action="store_true", help="grid: skip pipeline.grid --executor local --jobs 2")
    args = ap.parse_args(argv)
    if args.repeats < 1:
        ap.error(f"--repeats: must be >= 1 (got {args.repeats})")
    wanted = [x.strip() for x in args.sections.split(",") if x.strip()]
    if not wanted or set(wanted) - set(SECTIONS):
        ap.error(f"--sections: {args.sections!r}: give names from {', '.join(SECTIONS)}")
    cfg = QUICK if args.quick else FULL

    from pipeline.config import cell_settings, load_params

    params = load_params(ROOT / "params.yaml")
    cell = cell_settings(params, *DEFAULT_CELL)
    cell = sized(cell, lrs=list(cell.optim.lrs[:cfg["lrs"]]) if cfg["lrs"] else None,
                 seeds=list(cell.optim.seeds[:cfg["seeds"]]) if cfg["seeds"] else None, steps=cfg["steps"])

    tmp = Path(tempfile.mkdtemp(prefix="normlab-bench-"))
    # nothing of the benchmark goes to the repo's mlflow.db, in this process or in its children
    os.environ["MLFLOW_TRACKING_URI"] = init_store(tmp / "store")
    environment.apply()  # no telemetry (MLflow, Ray, DVC) here or in the children: pipeline/spec/environment.py
    env = {**os.environ, "PATH": f"{Path(PY).parent}{os.pathsep}{os.environ.get('PATH', '')}"}

    import torch

    if cell.train.threads:  # as run_cell does; both sides of figures 1, 2, 8 run in this process
        torch.set_num_threads(cell.train.threads)
    res: dict = {"meta": {"quick": args.quick, "repeats": args.repeats, "cell": cell.name,
                          "members": len(cell.members()), "steps": cell.train.steps,
                          "threads": torch.get_num_threads(), "torch": torch.__version__,
                          "python": platform.python_version(), "machine": platform.platform(),
                          "cpus": os.cpu_count(), "loadavg_start": os.getloadavg(), "started": time.ctime()}}
    failed = []

    def measure(name: str, fn):
        if name not in wanted:
            return
        log(f"[bench] {name} ...")
        t0 = time.perf_counter()
        try:
            res[name] = fn()
        except Exception as exc:  # noqa: BLE001 - one broken figure must not hide the others
            traceback.print_exc()
            res[name] = {"error": f"{type(exc).__name__}: {str(exc).splitlines()[0] if str(exc) else ''}"[:300]}
            failed.append(name)
        log(f"[bench] {name}: {time.perf_counter() - t0:.1f} s")

    try:
        params_path = write_params(params, tmp / "cell_params.yaml", optim={"lrs": list(cell.optim.lrs),
                                   "seeds": list(cell.optim.seeds)}, train={"steps": cell.train.steps})
        def grid():
            from benchmarks.grid_floor import grid_floor

            text = None
            if args.quick:  # a 2-cell grid of 4 members x 30 steps
                text = write_params(params, tmp / "quick_grid.yaml", **QUICK_GRID).read_text()
            return grid_floor(text, env, tmp / "grid_floor", args.repeats, parallel=not args.no_parallel,
                              prestart=args.quick)

        measure("grid", grid)  # first: on a machine the other figures have not warmed or loaded
        if args.quick and wanted != ["grid"]:  # the server's imports overlap the cold runs: --quick times are not figures
            start_warm(env)
        cli = {}  # figures 4, 5 and 7 read the same CLI runs of the default cell
        if {"memory", "tracking"} & set(wanted):
            wanted.append("startup")  # they read its CLI runs

        def startup():
            cli.update(cli_default(params_path, args.repeats, env, tmp / "cli"))
            out = {"cold": stats(r["timing"]["startup_s"] for r in cli["cold"])}
            if cli["warm"]:
                out["warm"] = stats(r["timing"]["startup_s"] for r in cli["warm"])
            else:
                out["warm_skipped"] = "skipped: the warm server did not come up within 60 s"
            return out

        def tracking():
            out = {"cold": tracking_share(cli["cold"])}
            if cli["warm"]:
                out["warm"] = tracking_share(cli["warm"])
            else:
                out["warm_skipped"] = "skipped: the warm server did not come up within 60 s"
            return out

        measure("startup", startup)
        measure("tracking", tracking)
        measure("naive_grid", lambda: naive_grid(params, cfg, args.repeats, env, tmp / "grid"))

        def memory():
            n = stats(r["maxrss_mib"] for r in cli["cold"])
            out = {"normlab_maxrss_mib": n}
            naive = res.get("naive_grid", {}).get("naive_maxrss_mib")
            if naive:
                out.update(naive_maxrss_mib=naive, ratio=n["median"] / naive["median"])
            out["growth"] = memory_growth(cell, cfg["growth_cells"], tmp / "growth")
            return out

        measure("memory", memory)
        measure("overhead", lambda: overhead(cell, args.repeats, tmp / "overhead"))
        measure("stacking", lambda: stacking(cell, args.repeats, tmp / "stacking"))
        measure("scaling", lambda: scaling(cell, cfg, args.repeats, tmp / "scaling"))
        def dvc():
            g = res.get("grid", {})
            if "noop_s" in g:  # measured on the grid's own copy, right after its `dvc repro -f`
                return {"noop": {"wall_s": g["noop_s"], "where": "the grid's copy"},
                        "report": {"wall_s": g["report_s"], "cells": g["cells"], "where": "the grid's copy"}}
            return {"noop": dvc_noop(env), "report": report_regen(params, args.quick, args.repeats, env, tmp / "report")}

        measure("dvc", dvc)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)

    res["meta"]["loadavg_end"] = os.getloadavg()
    res["table"] = table_rows(res)
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(res, indent=2, allow_nan=False))
    print(f"\nnormlab benchmark ({'QUICK: tiny settings, not figures' if args.quick else 'full'}; "
          f"median (min–max) of {args.repeats}; load average {res['meta']['loadavg_start'][0]:.2f} at start)\n")
    print_table(res["table"])
    print(f"\nwritten to {out}")
    if failed:
        print(f"failed: {', '.join(failed)}", file=sys.stderr)
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
