"""The training command: one grid cell, from the command line (the cell itself: pipeline/cell.py).

    python -m pipeline.train --variant center_detached --dataset synthetic --out runs/center_detached-synthetic

Parses the arguments, then hands the cell (a pipeline.cell.Launch) to the warm server when one is
up (pipeline/warm/client.py: a forked child runs it with torch & co. already imported; the first call
starts one for the next) and otherwise runs it here, cold (pipeline.cell.launch): the params file
read and validated (one error line and exit 2 on a bad setting, before any work), every member
trained, recorded in MLflow and written atomically into --out. This is the only module that knows
about warm start; the cell does not know how it was launched.
"""

from __future__ import annotations

import argparse
import sys

from pipeline.cell import Launch, launch

# only the standard library at import (and pipeline.cell / pipeline.warm.client, which import nothing
# heavy): the warm path must not pay for torch, pandas or Lightning
from pipeline.spec import environment


def parser() -> argparse.ArgumentParser:
    ap = argparse.ArgumentParser(prog=environment.command_name("pipeline.train"), description=__doc__.splitlines()[0])
    ap.add_argument("--variant", required=True, help="a name under `variants:` in params.yaml")
    ap.add_argument("--dataset", required=True, help="a name under `datasets:` in params.yaml")
    ap.add_argument("--out", required=True, help="output folder: new, or a normlab cell folder (replaced whole)")
    ap.add_argument(
        "--params",
        default="params.yaml",
        help="the params file (default params.yaml): grid, variants, data sets, model, optim, train, tracking",
    )
    ap.add_argument("--no-track", action="store_true", help="skip MLflow (outputs are still written)")
    return ap


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    args = parser().parse_args(argv)  # --help and a missing option end here, before any server
    req = Launch(args.variant, args.dataset, args.out, args.params, args.no_track)
    from pipeline.repo_lock import Held, hold_for_dvc_stage

    try:  # under `dvc repro`: never beside a grid training the same cells (pipeline/repo_lock.py)
        hold_for_dvc_stage()
    except Held as err:
        print(f"normlab: {err}", file=sys.stderr)
        return 2
    from pipeline.warm.client import run_warm

    code = run_warm(req.to_json())  # a forked child of the warm server, if one is up
    if code is not None:
        return code
    return launch(req)


if __name__ == "__main__":
    sys.exit(main())
