"""GPU check (run on a machine with a CUDA GPU): `train.accelerator: auto` trains on the GPU, and
the GPU's members end as the CPU's do.

    python scripts/gpu_check.py OUT_DIR

For a few variants of params.yaml on `digits` (MLP) and `digits_images` (a small CNN), every member
is trained twice, accelerator auto (the GPU) and cpu, untracked. Reported per cell: the device
the cell ran on, seconds, and, member by member, whether the status agrees and the relative gap
of the final full-set training loss. Float sums run in another order on a GPU, so early losses
agree to rounding and chaotic large-lr members may part later: the gaps are reported, not hidden.
"""

from __future__ import annotations

import json
import sys
import time
import types
from pathlib import Path

_stub = types.ModuleType("pipeline.tracking.process")  # run untracked: the GPU machine has no MLflow
_stub.make_tracker = None
sys.modules.setdefault("pipeline.tracking.process", _stub)

from pipeline.config import cell_settings, load_params  # noqa: E402

VARIANTS = [
    "bn",
    "center",
    "center_detached",
    "standardize_detached",
    "population_detached",
    "running_detached",
    "batch_renorm",
    "layernorm",
]


def main(out: Path) -> None:
    import torch

    from pipeline.cell import run_cell

    out.mkdir(parents=True, exist_ok=True)
    base = load_params("params.yaml")
    cnn = base.model_copy(update={"model": base.model.model_copy(update={"kind": "cnn", "depth": 3, "channels": 16})})
    rows = []
    for params, dataset in ((base, "digits"), (cnn, "digits_images")):
        for variant in VARIANTS:
            result = {"variant": variant, "dataset": dataset, "model": params.model.kind}
            for acc in ("auto", "cpu"):
                p = params.model_copy(update={"train": params.train.model_copy(update={"accelerator": acc})})
                cell = cell_settings(p, variant, dataset)
                folder = out / "runs" / f"{variant}-{dataset}-{acc}"
                t0 = time.perf_counter()
                run = run_cell(cell, folder, track=False, progress=False)
                result[f"{acc}_s"] = round(time.perf_counter() - t0, 2)
                result[f"{acc}_device"] = run.meta.timing["device"]
                result[acc] = run.summary.members
            pairs = []
            for g, c in zip(result.pop("auto"), result.pop("cpu")):
                gap = abs(g.full_loss_train - c.full_loss_train) / max(abs(c.full_loss_train), 1e-12)
                pairs.append(
                    {
                        "lr": g.lr,
                        "seed": g.seed,
                        "diverged_gpu": g.diverged,
                        "diverged_cpu": c.diverged,
                        "loss_rel_gap": gap,
                    }
                )
            result["members"] = pairs
            rows.append(result)
            print(json.dumps({k: v for k, v in result.items() if k != "members"}), flush=True)
            print(json.dumps(pairs), flush=True)
    (out / "gpu_check.json").write_text(
        json.dumps({"torch": torch.__version__, "gpu": torch.cuda.get_device_name(0), "cells": rows}, indent=1)
    )


if __name__ == "__main__":
    main(Path(sys.argv[1]))
