"""Run the grid's cells N at a time, still through DVC, then everything else (the report).

    python -m pipeline.grid --jobs 2

`dvc repro` runs stages one after another. DVC does allow separate `dvc repro <stage>`
processes side by side: each releases the repository lock while its command runs, and
`--wait-for-lock` makes the others wait for it instead of failing. So this launches one
`dvc --wait-for-lock repro --single-item train@<cell>` per cell of the current grid, at
most --jobs at once; dvc.lock records every cell as usual, and a final `dvc repro`
builds the report (and is a no-op for the cells). Each cell uses `train.threads` torch
threads (1 by default), so --jobs equal to the core count fills the machine without
oversubscribing it, and the results are bit-identical to a sequential `dvc repro`.
"""
from __future__ import annotations

import argparse
import os
import subprocess
import sys
import time
from concurrent.futures import ThreadPoolExecutor


def _dvc(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run(["dvc", "--wait-for-lock", *args], capture_output=True, text=True)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m pipeline.grid", description=__doc__.splitlines()[0])
    ap.add_argument("-j", "--jobs", type=int, default=os.cpu_count() or 1, help="cells at once (default: cores)")
    ap.add_argument("--params", default="params.yaml")
    args = ap.parse_args(argv)
    from pipeline.config import ConfigError, die, load_params

    if args.jobs < 1:
        die(f"--jobs: must be >= 1 (got {args.jobs})")
    try:
        params = load_params(args.params)
    except ConfigError as err:
        die(str(err))
    stages = [f"train@{v}-{d}" for v in params.grid.variants for d in params.grid.datasets]
    t0 = time.perf_counter()
    failed: list[str] = []

    def one(stage: str) -> None:
        proc = _dvc("repro", "--single-item", stage)
        ran = "Running stage" in proc.stdout
        print(f"{stage}: {'ran' if ran else 'up to date'}" if proc.returncode == 0 else f"{stage}: FAILED", flush=True)
        if proc.returncode:
            failed.append(stage)
            sys.stderr.write(proc.stdout[-2000:] + proc.stderr[-2000:])

    with ThreadPoolExecutor(max_workers=args.jobs) as pool:
        list(pool.map(one, stages))
    if failed:
        print(f"{len(failed)} cell(s) failed: {', '.join(failed)}", file=sys.stderr)
        return 1
    final = _dvc("repro")  # the report, and a check that nothing else is left
    sys.stdout.write(final.stdout)
    sys.stderr.write(final.stderr)
    print(f"grid of {len(stages)} cells with {args.jobs} job(s): {time.perf_counter() - t0:.1f} s")
    return final.returncode


if __name__ == "__main__":
    sys.exit(main())
