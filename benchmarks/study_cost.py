"""What a study costs, from a measured step per setup: seconds per step on this machine and FLOPs.

    python -m benchmarks.study_cost studies/paper.yaml [--steps 3]

For each setup it builds the real stacked model (all members of a cell), times a few training steps
(forward, backward, SGD update) on random inputs of the data set's shape, counts their FLOPs with
torch's FlopCounterMode, and multiplies by the study's cells and steps. The GPU line is NOT a
measurement: FLOPs divided by an assumed sustained throughput (--gpu-tflops, stated in the output).
The full-set evaluations and tracking are not included (a few % at eval_every >= 500).
"""
from __future__ import annotations

import argparse
import sys
import time

SHAPES = {"mnist": ((1, 28, 28), 10), "fashion_mnist": ((1, 28, 28), 10), "cifar10": ((3, 32, 32), 10),
          "digits": ((64,), 10), "digits_images": ((1, 8, 8), 10), "synthetic": (None, None)}


def step_cost(params, dataset: str, variant: str, steps: int) -> tuple[float, float]:
    """(seconds per step, FLOPs per step) of one cell of `variant` on `dataset`."""
    import torch
    import torch.nn.functional as F
    from torch.utils.flop_counter import FlopCounterMode

    from pipeline.config import cell_settings
    from pipeline.nets.build import build_model

    cell = cell_settings(params, variant, dataset)
    ds = cell.dataset
    shape, classes = SHAPES.get(ds.kind, (None, None))
    if shape is None:
        shape, classes = (ds.dim,), ds.classes
    if cell.model.kind == "mlp" and len(shape) > 1:
        shape = (int(torch.tensor(shape).prod()),)
    seeds = list(cell.optim.seeds)
    members = len(cell.optim.lrs) * len(seeds)
    model = build_model(shape, classes, [seeds[i % len(seeds)] for i in range(members)], cell.model, cell.variant)
    x = torch.randn(members, cell.optim.batch_size, *shape)
    y = torch.randint(0, classes, (members, cell.optim.batch_size))
    params_ = [p for p in model.parameters() if p.requires_grad]

    def one():
        logits = model(x)
        loss = F.cross_entropy(logits.reshape(-1, classes), y.reshape(-1))
        grads = torch.autograd.grad(loss, params_)
        with torch.no_grad():
            for p, g in zip(params_, grads):
                p.sub_(1e-3 * g)

    with FlopCounterMode(display=False) as counter:
        one()
    one()  # warm-up
    t0 = time.perf_counter()
    for _ in range(steps):
        one()
    return (time.perf_counter() - t0) / steps, float(counter.get_total_flops())


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m benchmarks.study_cost", description=__doc__.splitlines()[0])
    ap.add_argument("study")
    ap.add_argument("--steps", type=int, default=3, help="timed steps per setup")
    ap.add_argument("--variant", default="bn", help="the variant timed (all cost about the same)")
    ap.add_argument("--gpu-tflops", type=float, default=15.0,
                    help="ASSUMED sustained fp32 throughput of one GPU for these small stacked models")
    args = ap.parse_args(argv)
    import torch

    from pipeline.config import Params
    from pipeline.study_file import load_study

    torch.set_num_threads(torch.get_num_threads())
    name, setups = load_study(args.study)
    total_cpu = total_flops = 0.0
    cells_all = 0
    print(f"{name}: {len(setups)} setups; this machine: {torch.get_num_threads()} threads; "
          f"GPU column assumes {args.gpu_tflops:g} TFLOP/s sustained (not measured)")
    for setup, raw in setups.items():
        params = Params.model_validate(raw)
        cells = len(params.grid.variants) * len(params.grid.datasets)
        steps = params.train.steps
        sec, flops = step_cost(params, params.grid.datasets[0], args.variant, args.steps)
        cpu_h, flop_all = sec * steps * cells / 3600, flops * steps * cells
        total_cpu, total_flops, cells_all = total_cpu + cpu_h, total_flops + flop_all, cells_all + cells
        print(f"  {setup:24s} {cells:3d} cells x {steps} steps: {sec * 1e3:9.1f} ms/step here, "
              f"{flops / 1e9:8.2f} GFLOP/step -> {cpu_h:8.1f} CPU-h, {flop_all / args.gpu_tflops / 1e12 / 3600:6.2f} GPU-h")
    print(f"total: {cells_all} cells, {total_cpu:.1f} h on this CPU ({total_cpu / 24:.1f} days), "
          f"{total_flops / 1e15:.1f} PFLOP = {total_flops / args.gpu_tflops / 1e12 / 3600:.1f} h on one GPU at the assumed "
          f"{args.gpu_tflops:g} TFLOP/s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
