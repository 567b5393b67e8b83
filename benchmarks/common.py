"""What the figures of benchmarks/run.py share: the run's context, statistics, child processes,
params files, sized cells, the warm server, CLI runs of a cell, and the table's formatting."""

from __future__ import annotations

import json
import math
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import TypeVar

T = TypeVar("T")
ROOT = Path(__file__).resolve().parents[1]
PY = sys.executable
DEFAULT_CELL = ("center_detached", "synthetic")
REAP = Path(__file__).resolve().parent / "reap.py"


@dataclass
class Context:
    """One benchmark run: its settings, the default cell, the children's environment and what is measured so far."""

    quick: bool
    repeats: int
    parallel: bool  # grid: the make repro arm (pipeline.grid --executor local --jobs <cores>)
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


# -- interleaved arms: ratios that hold under load drift ---------------------------------------
def interleave(arms: dict[str, Callable[[], T]], repeats: int) -> dict[str, list[T]]:
    """Each arm once per repeat, the order reversed every other repeat (A B, B A, A B ...), so a
    change of the machine's load hits every arm alike. Returns each arm's results, in repeat order."""
    out: dict[str, list[T]] = {name: [] for name in arms}
    names = list(arms)
    for r in range(repeats):
        for name in names if r % 2 == 0 else names[::-1]:
            out[name].append(arms[name]())
    return out


def pair_ratios(arm: list[float], floor: list[float]) -> dict:
    """Median and [min, max] of arm[i] / floor[i]: each arm run over the floor measured beside it."""
    if len(arm) != len(floor) or not arm:
        raise ValueError(f"pair_ratios: {len(arm)} arm runs vs {len(floor)} floor runs")
    return stats(a / f for a, f in zip(arm, floor))


def bracket_ratios(runs: list[tuple[float, float, float]]) -> dict:
    """runs: (arm, floor just before it, floor just after it). Median and [min, max] of the 2 x len(runs)
    ratios arm / floor, so the spread carries the load drift between the floor's measurements."""
    if not runs:
        raise ValueError("bracket_ratios: no runs")
    return stats(r for a, before, after in runs for r in (a / before, a / after))


def judge(value, op: str, limit: float) -> str | None:
    """'yes' / 'no' for value (a number, or stats(): its median) against `op limit` ('<=' or '>='), with
    ', spread crosses target' when the [min, max] spread lies on both sides of the limit."""
    if value is None:
        return None
    ok = (lambda x: x <= limit) if op == "<=" else (lambda x: x >= limit)
    if not isinstance(value, dict):
        return "yes" if ok(value) else "no"
    verdict = "yes" if ok(value["median"]) else "no"
    if ok(value["min"]) != ok(value["max"]):
        verdict += ", spread crosses target"
    return verdict


def impossible(normlab=None, reference=None, ratio=None, *, floor=0, signed=False, distinct=False) -> str | None:
    """Why a row's figures cannot be a result, or None: every figure is a cost, a duration, a size or
    a ratio of them, so a negative (or non-finite) one is impossible unless the row says `signed` (a
    measured difference); an arm over its own floor (`floor`: the cores the arm may use, the floor
    being one core's) cannot take less than 1 / floor of it: below that the two were timed under
    different load; `distinct` quantities (two processes' peaks) exactly equal were most likely
    one quantity measured twice."""

    def numbers(x):
        if isinstance(x, dict):
            return [x[k] for k in ("median", "min", "max") if k in x]
        return [x] if isinstance(x, (int, float)) and not isinstance(x, bool) else []

    for name, x in (("normlab", normlab), ("reference", reference), ("ratio", ratio)):
        for v in numbers(x):
            if not math.isfinite(v):
                return f"{name} is {v}"
            if v < 0 and not signed:
                return f"negative {name} ({num(v)})"
    r = numbers(ratio)
    if floor and r and r[0] < 1 / floor:
        return f"faster than its floor allows ({num(r[0])}x on {floor} core{'s' if floor > 1 else ''})"
    a, b = numbers(normlab), numbers(reference)
    if distinct and a and b and a[0] == b[0]:
        return f"both sides {num(a[0])}: one quantity measured twice?"
    return None


def log(msg: str) -> None:
    print(msg, file=sys.stderr, flush=True)  # progress on stderr; the table goes to stdout


def run_proc(cmd: list[str], env: dict, cwd: Path = ROOT, timeout: float = 600) -> dict:
    """Run a child to completion: wall seconds, its own peak RSS (hwm_mib, VmHWM), the largest of
    it and its reaped children (maxrss_mib, wait4) and its output.

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
    hwm = usage.get("hwm_kib")
    return {
        "wall_s": usage["wall_s"],
        "maxrss_mib": usage["maxrss_kib"] / 1024,  # Linux: KiB; the child's and its reaped children's
        "hwm_mib": None if hwm is None else hwm / 1024,  # the child's own (VmHWM)
        "output": text,
    }


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
    """The table's rows, in order: each figure's module adds its own (`rows(s, table)`).

    Every row goes through `impossible` (the rule is here so every figure gets it): a row with an
    impossible figure is FLAGGED in the met? column, never judged yes/no, and carries `flag`.
    `met`: True / False / None, or judge()'s text (which says when the spread crosses the target)."""

    def __init__(self):
        self.rows: list[dict] = []

    def add(
        self,
        figure,
        normlab=None,
        reference=None,
        ratio=None,
        target=None,
        met=None,
        *,
        floor: int = 0,
        signed: bool = False,
        distinct: bool = False,
    ) -> None:
        flag = impossible(normlab, reference, ratio, floor=floor, signed=signed, distinct=distinct)
        row = {
            "figure": figure,
            "normlab": fmt(normlab),
            "reference": fmt(reference),
            "ratio": fmt(ratio),
            "target": target or "—",
            "met": met if isinstance(met, str) else {True: "yes", False: "no", None: "—"}[met],
        }
        if flag:
            row["met"] = f"FLAGGED: {flag}"
            row["flag"] = flag
        self.rows.append(row)

    def ratio(self, figure, normlab, reference, spread, op: str, limit: float, *, floor: int = 1) -> None:
        """A row whose ratio is judged against a target: the target's text and its judgement come from
        the same `op` and `limit` (judge: yes / no, and whether the spread crosses it)."""
        self.add(figure, normlab, reference, spread, f"ratio {op} {limit}", judge(spread, op, limit), floor=floor)


def print_table(rows: list[dict]) -> None:
    cols = ("figure", "normlab", "reference", "ratio", "target", "met")
    heads = ("figure", "normlab", "reference", "ratio", "target", "met?")
    widths = [max(len(h), *(len(str(r[c])) for r in rows)) for c, h in zip(cols, heads)]
    line = "  ".join(h.ljust(w) for h, w in zip(heads, widths))
    print(line)
    print("-" * len(line))
    for r in rows:
        print("  ".join(str(r[c]).ljust(w) for c, w in zip(cols, widths)).rstrip())
    flagged = [r["figure"] for r in rows if r.get("flag")]
    if flagged:
        print(f"\n{len(flagged)} row(s) FLAGGED: impossible values, not results (benchmarks.common.impossible)")
