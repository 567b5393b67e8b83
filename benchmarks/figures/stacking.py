"""Figure 2, stacking: fit seconds of the default cell (tracking off) against the sum of fit
seconds of its members trained one at a time by normlab. ratio = alone / stacked, >= 4. In process.
"""

from __future__ import annotations

from benchmarks.common import Context, Table, problem, sized, stats


def measure(ctx: Context) -> dict:
    from pipeline.cell import run_cell

    cell, tmp = ctx.cell, ctx.tmp / "stacking"
    stacked, alone = [], []
    for r in range(ctx.repeats):
        s = run_cell(cell, tmp / f"stacked{r}", track=False, progress=False)
        stacked.append(s.meta.timing["fit_s"])
        total = 0.0
        for j, (lr, seed) in enumerate(cell.members()):
            s = run_cell(sized(cell, lrs=[lr], seeds=[seed]), tmp / f"alone{r}-{j}", track=False, progress=False)
            total += s.meta.timing["fit_s"]
        alone.append(total)
    st, al = stats(stacked), stats(alone)
    return {
        "stacked_fit_s": st,
        "alone_fit_s": al,
        "ratio": al["median"] / st["median"],
        "members": len(cell.members()),
        "steps": cell.train.steps,
    }


def rows(s: dict, table: Table) -> None:
    if problem(s):
        table.add("2 stacking fit s: stacked vs one at a time", problem(s))
    else:
        table.add(
            f"2 stacking fit s: {s['members']} stacked vs alone",
            s["stacked_fit_s"],
            s["alone_fit_s"],
            s["ratio"],
            "ratio >= 4",
            s["ratio"] >= 4,
        )
