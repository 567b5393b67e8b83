"""Figure 8, scaling: ms per step of run_cell (tracking off, 100 steps, --quick 20; the cell's
evaluation and measurements included) as members grow (1 lr x N seeds) and as width grows, and
the achieved FLOP/s of the training matmuls, 6 x members x batch x sum(d_in*d_out) per step (a
lower bound on matmul efficiency: everything else is in the time too), beside this machine's
torch.bmm float32 FLOP/s with the same thread count. In process.
"""

from __future__ import annotations

import statistics
import time

from benchmarks.common import Context, Table, num, problem, sized, stats


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
    return 2 * b * n**3 / statistics.median(times)


def measure(ctx: Context) -> dict:
    from pipeline.cell import run_cell
    from pipeline.data.sets import StackedDataModule

    cell, cfg, repeats, tmp = ctx.cell, ctx.cfg, ctx.repeats, ctx.tmp / "scaling"
    steps, lr = cfg["scaling_steps"], cell.optim.lrs[0]
    d_in, d_out = StackedDataModule(cell.dataset, [0], 1, 1).dims
    peak = bmm_flops(cfg["bmm"])
    configs = [(m, cell.model.width) for m in cfg["scaling_members"]]
    configs += [(cfg["scaling_width_members"], w) for w in cfg["scaling_widths"]]
    lines = []
    for m, w in dict.fromkeys(configs):  # ordered, without the repeated (16, 32)
        c = sized(cell, lrs=[lr], seeds=list(range(m)), steps=steps, width=w)
        ms = stats(
            1e3 * run_cell(c, tmp / f"scale{m}x{w}-{r}", track=False, progress=False).meta.timing["fit_s"] / steps
            for r in range(repeats)
        )
        dims = [d_in] + [w] * c.model.depth + [d_out]
        flop = 6 * m * c.optim.batch_size * sum(a * b for a, b in zip(dims[:-1], dims[1:]))
        achieved = flop / (ms["median"] / 1e3)
        lines.append(
            {
                "members": m,
                "width": w,
                "ms_per_step": ms,
                "flop_per_step": flop,
                "achieved_flops": achieved,
                "share_of_bmm": achieved / peak,
            }
        )
    return {"bmm_shape": list(cfg["bmm"]), "bmm_flops": peak, "steps": steps, "rows": lines}


def rows(s: dict, table: Table) -> None:
    if problem(s):
        table.add("8 scaling", problem(s))
        return
    for r in s["rows"]:
        table.add(
            f"8 {r['members']} members x width {r['width']} ms/step; GFLOP/s vs bmm",
            r["ms_per_step"],
            f"{num(r['achieved_flops'] / 1e9)} vs {num(s['bmm_flops'] / 1e9)}",
            r["share_of_bmm"],
        )
