"""Run the grid's cells N at a time, then the report.

    python -m pipeline.grid --jobs 2                      # the DVC study (params.yaml), same dvc.lock as `dvc repro`
    python -m pipeline.grid --params studies/long.yaml --runs runs/long --report reports/long --jobs 2

With the default params file, each cell is `dvc --wait-for-lock repro --single-item train@<cell>`
(DVC releases its lock while a stage's command runs), and a final `dvc repro` builds the report.
With another params file (a study beside the default one, e.g. studies/long.yaml), cells run as
plain `python -m pipeline.train` processes into --runs, and the report goes to --report; a cell
whose folder already holds records of the same settings (config hash) is skipped.

Ctrl-C stops every running cell (their MLflow runs end KILLED), starts nothing more, exits 130.
Each cell uses `train.threads` torch threads (1 by default): --jobs equal to the core count fills
the machine without oversubscribing it.
"""
from __future__ import annotations

import argparse
import os
import signal
import subprocess
import sys
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

_stopping = threading.Event()
_live: set[subprocess.Popen] = set()
_lock = threading.Lock()


def _run(cmd: list[str]) -> subprocess.CompletedProcess:
    """Run a command in its own process group, so Ctrl-C here reaches it exactly once, from us."""
    if _stopping.is_set():
        return subprocess.CompletedProcess(cmd, 130, "", "not started: interrupted")
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, start_new_session=True)
    with _lock:
        _live.add(proc)
    try:
        out, err = proc.communicate()
    finally:
        with _lock:
            _live.discard(proc)
    return subprocess.CompletedProcess(cmd, proc.returncode, out, err)


def _interrupt_all() -> None:
    _stopping.set()
    with _lock:
        procs = list(_live)
    for proc in procs:  # SIGINT: the cell closes its runs KILLED and writes nothing
        try:
            os.killpg(proc.pid, signal.SIGINT)
        except ProcessLookupError:
            pass


def _up_to_date(folder: Path, cell) -> bool:
    from pipeline import records

    try:
        return records.read_summary(folder)["config_hash"] == records.config_hash(cell)
    except records.RecordError:
        return False


def _close_orphans(experiment: str) -> None:
    """Runs left RUNNING by a cell process that was SIGKILLed earlier end KILLED now."""
    from pipeline.config import ConfigError, die
    from pipeline.tracking import close_orphans, connect

    try:
        client = connect()
    except ConfigError as err:
        die(str(err))
    exp = client.get_experiment_by_name(experiment)
    if exp is not None:
        closed = close_orphans(client, [exp.experiment_id])
        if closed:
            print(f"closed {len(closed)} MLflow run(s) left RUNNING by a killed process (now KILLED)", file=sys.stderr)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m pipeline.grid", description=__doc__.splitlines()[0])
    ap.add_argument("-j", "--jobs", type=int, default=os.cpu_count() or 1, help="cells at once (default: cores)")
    ap.add_argument("--params", default="params.yaml", help="params file (default: the DVC study's params.yaml)")
    ap.add_argument("--runs", default="runs", help="cell folders (another params file only)")
    ap.add_argument("--report", default="reports", help="report folder (another params file only)")
    args = ap.parse_args(argv)
    from pipeline import records
    from pipeline.config import ConfigError, cell_settings, die, load_params

    if args.jobs < 1:
        die(f"--jobs: must be >= 1 (got {args.jobs})")
    try:
        params = load_params(args.params)
        cells = [cell_settings(params, v, d) for v in params.grid.variants for d in params.grid.datasets]
    except ConfigError as err:
        die(str(err))
    with_dvc = Path(args.params).resolve() == Path("params.yaml").resolve()
    if not with_dvc and Path(args.runs).resolve() == Path("runs").resolve():
        die(f"--runs: another params file ({args.params}) needs its own runs folder, not the DVC study's runs/")
    if params.tracking.enabled:
        _close_orphans(params.tracking.experiment)
    t0 = time.perf_counter()
    failed: list[str] = []
    done = [0]

    def one(cell) -> None:
        if with_dvc:
            proc = _run(["dvc", "--wait-for-lock", "repro", "--single-item", f"train@{cell.name}"])
            what = "ran" if "Running stage" in proc.stdout else "up to date"
        else:
            folder = Path(args.runs) / records.cell_name(cell.variant_name, cell.dataset_name)
            if _up_to_date(folder, cell):
                proc, what = subprocess.CompletedProcess([], 0, "", ""), "up to date"
            else:
                proc = _run([sys.executable, "-m", "pipeline.train", "--params", args.params, "--variant",
                             cell.variant_name, "--dataset", cell.dataset_name, "--out", str(folder)])
                what = "ran"
        done[0] += 1
        elapsed = time.perf_counter() - t0
        eta = elapsed / done[0] * (len(cells) - done[0])
        status = what if proc.returncode == 0 else ("interrupted" if proc.returncode == 130 else "FAILED")
        print(f"[{done[0]}/{len(cells)}] {cell.name}: {status}  ({elapsed:.0f} s, ETA {eta:.0f} s)", flush=True)
        if proc.returncode:
            failed.append(cell.name)
            if proc.returncode != 130:
                sys.stderr.write(proc.stdout[-2000:] + proc.stderr[-2000:])

    old = signal.signal(signal.SIGINT, lambda s, f: _interrupt_all())
    signal.signal(signal.SIGTERM, lambda s, f: _interrupt_all())
    try:
        with ThreadPoolExecutor(max_workers=args.jobs) as pool:
            list(pool.map(one, cells))
    finally:
        signal.signal(signal.SIGINT, old)
    if _stopping.is_set():
        print(f"normlab: interrupted: {len(cells) - done[0]} cell(s) not started, running ones stopped "
              "(their MLflow runs ended KILLED)", file=sys.stderr)
        return 130
    if failed:
        print(f"{len(failed)} cell(s) failed: {', '.join(failed)}", file=sys.stderr)
        return 1
    if with_dvc:
        final = _run(["dvc", "--wait-for-lock", "repro"])  # the report, and a check that nothing else is left
    else:
        final = _run([sys.executable, "-m", "pipeline.report", "--params", args.params, "--runs", args.runs,
                      "--out", args.report])
    sys.stdout.write(final.stdout)
    sys.stderr.write(final.stderr)
    print(f"grid of {len(cells)} cells with {args.jobs} job(s): {time.perf_counter() - t0:.1f} s")
    return final.returncode


if __name__ == "__main__":
    sys.exit(main())
