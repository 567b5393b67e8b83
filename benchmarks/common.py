"""What the figures of benchmarks/run.py share: the run's context, statistics, child processes,
params files, sized cells, the warm server, CLI runs of a cell, and the table's formatting."""

from __future__ import annotations

import json
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
PY = sys.executable
DEFAULT_CELL = ("center_detached", "synthetic")
REAP = Path(__file__).resolve().parent / "reap.py"


@dataclass
class Context:
    """One benchmark run: its settings, the default cell, the children's environment and what is measured so far."""

    quick: bool
    repeats: int
    parallel: bool  # grid: also pipeline.grid --executor local --jobs 2
    cfg: dict  # run.QUICK or run.FULL
    params: object  # params.yaml, validated
    cell: object  # the default cell, sized by cfg
    params_path: Path  # the default cell's settings as a params file, for CLI runs
    env: dict  # the children's environment (temporary tracking store, no telemetry)
    tmp: Path  # removed at the end of the run
    res: dict  # every section measured so far, by name
    cli: dict = field(default_factory=dict)  # the default cell's CLI runs (figures 4, 5 and 7 read them)


# -- small helpers -----------------------------------------------------------------------------
def stats(values) -> dict:
    vals = [float(v) for v in values]
    return {"median": statistics.median(vals), "min": min(vals), "max": max(vals), "runs": vals}


def log(msg: str) -> None:
    print(msg, file=sys.stderr, flush=True)  # progress on stderr; the table goes to stdout


def run_proc(cmd: list[str], env: dict, cwd: Path = ROOT, timeout: float = 600) -> dict:
    """Run a child to completion: wall seconds, exit code, its own peak RSS and its output.

    The child is started by benchmarks/reap.py, a small process that reads the child's wait4
    rusage: started from this process directly, its ru_maxrss would be at least this process's
    peak (exec records the replaced address space's), the same for every child. The launcher sets
    NORMLAB_T0 (pipeline.train's start-up clock) just before the launch and times the child alone."""
    with tempfile.TemporaryFile("w+") as out, tempfile.TemporaryDirectory() as d:
        result = Path(d) / "rusage.json"
        proc = subprocess.Popen(
            [PY, "-S", str(REAP), str(result), *map(str, cmd)],
            cwd=cwd,
            env=env,
            stdin=subprocess.DEVNULL,
            stdout=out,
            stderr=subprocess.STDOUT,
        )
        timer = threading.Timer(timeout, proc.terminate)  # the launcher kills the child, then exits
        timer.start()
        try:
            proc.wait()
        finally:
            timer.cancel()
        out.seek(0)
        text = out.read()
        usage = json.loads(result.read_text()) if result.exists() else None
    if proc.returncode != 0 or usage is None:
        tail = "\n".join(text.strip().splitlines()[-15:])
        raise RuntimeError(f"{' '.join(map(str, cmd))} exited {proc.returncode}:\n{tail}")
    return {"wall_s": usage["wall_s"], "maxrss_mib": usage["maxrss_kib"] / 1024, "output": text}  # Linux: KiB


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
        update["optim"] = cell.optim.model_copy(
            update={k: v for k, v in (("lrs", lrs), ("seeds", seeds)) if v is not None}
        )
    if steps is not None:
        update["train"] = cell.train.model_copy(update={"steps": steps})
    if width is not None:
        update["model"] = cell.model.model_copy(update={"width": width})
    return cell.model_copy(update=update)


# -- the warm server ---------------------------------------------------------------------------
def warm_status(env: dict) -> bool:
    out = subprocess.run(
        [PY, "-m", "pipeline.warm.client", "status"], cwd=ROOT, env=env, capture_output=True, text=True
    )
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


# -- a cell through the CLI (figures 3, 4, 5, 7) ------------------------------------------------
def cli_timing(out: Path) -> dict:
    """A CLI run's timing: pipeline.train writes it beside the cell's folder, in <out>.meta.json."""
    from pipeline.records import meta_path

    return json.loads(meta_path(out).read_text())["timing"]


def cli_cell(variant: str, dataset: str, params_path: Path, out: Path, env: dict) -> dict:
    r = run_proc(
        [
            PY,
            "-m",
            "pipeline.train",
            "--variant",
            variant,
            "--dataset",
            dataset,
            "--out",
            str(out),
            "--params",
            str(params_path),
        ],
        env,
    )
    r["timing"] = cli_timing(out)
    return r


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


def problem(s: dict):
    """Why a (sub)section has no figure, or None."""
    return s.get("error") or s.get("skipped") or (None if s else "not run (--sections)")


class Table:
    """The table's rows, in order: each figure's module adds its own (`rows(s, table)`)."""

    def __init__(self):
        self.rows: list[dict] = []

    def add(self, figure, normlab=None, reference=None, ratio=None, target=None, met=None) -> None:
        self.rows.append(
            {
                "figure": figure,
                "normlab": fmt(normlab),
                "reference": fmt(reference),
                "ratio": fmt(ratio),
                "target": target or "—",
                "met": {True: "yes", False: "no", None: "—"}[met],
            }
        )


def print_table(rows: list[dict]) -> None:
    cols = ("figure", "normlab", "reference", "ratio", "target", "met")
    heads = ("figure", "normlab", "reference", "ratio", "target", "met?")
    widths = [max(len(h), *(len(str(r[c])) for r in rows)) for c, h in zip(cols, heads)]
    line = "  ".join(h.ljust(w) for h, w in zip(heads, widths))
    print(line)
    print("-" * len(line))
    for r in rows:
        print("  ".join(str(r[c]).ljust(w) for c, w in zip(cols, widths)))
