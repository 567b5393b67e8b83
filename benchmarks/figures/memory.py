"""Figure 7, memory: peak resident memory of a cold CLI run of the default cell (figure 5's runs),
beside one naive run's (figure 3's, when it ran): each is that child's own ru_maxrss, from wait4
in benchmarks/reap.py (see benchmarks.common.run_proc: read here directly, every child would show
this process's peak). And this process's resident memory after each of 12 cells (--quick 3)
trained in it by run_cell, as a local executor's worker trains them: the growth from the second
cell to the last (a leak grows with every cell).
"""

from __future__ import annotations

import os
import shutil
from pathlib import Path

from benchmarks.common import Context, Table, num, problem, stats

NEEDS = ("startup",)  # its cold CLI runs


def rss_mib() -> float:
    """This process's resident memory now (Linux /proc), MiB."""
    return int(Path("/proc/self/statm").read_text().split()[1]) * os.sysconf("SC_PAGE_SIZE") / 2**20


def memory_growth(cell, n: int, tmp: Path) -> dict:
    """Resident memory after each of n cells trained in this process by run_cell (tracking on), as
    a local executor's worker runs them: a leak shows as a rise from the second cell on."""
    import gc

    from pipeline.cell import run_cell

    after = []
    for i in range(n):
        run_cell(cell, tmp / f"growth{i}", track=True, progress=False)
        shutil.rmtree(tmp / f"growth{i}", ignore_errors=True)
        gc.collect()
        after.append(rss_mib())
    return {
        "cells": n,
        "rss_after_each_mib": after,
        "growth_mib": after[-1] - after[min(1, n - 1)],
        "growth_per_cell_mib": (after[-1] - after[min(1, n - 1)]) / max(1, n - 2),
    }


def measure(ctx: Context) -> dict:
    n = stats(r["maxrss_mib"] for r in ctx.cli["cold"])
    out = {"normlab_maxrss_mib": n}
    naive = ctx.res.get("naive_grid", {}).get("naive_maxrss_mib")
    if naive:
        out.update(naive_maxrss_mib=naive, ratio=n["median"] / naive["median"])
    out["growth"] = memory_growth(ctx.cell, ctx.cfg["growth_cells"], ctx.tmp / "growth")
    return out


def rows(s: dict, table: Table) -> None:
    if problem(s):
        table.add("7 peak RSS MiB: cold cell vs naive run", problem(s))
        return
    table.add(
        "7 peak RSS MiB: cold cell vs naive run", s["normlab_maxrss_mib"], s.get("naive_maxrss_mib"), s.get("ratio")
    )
    g = s.get("growth")
    if g:
        table.add(
            f"7 RSS growth MiB over {g['cells']} cells in one process (per cell)",
            g["growth_mib"],
            f"{num(g['rss_after_each_mib'][0])} -> {num(g['rss_after_each_mib'][-1])}",
            g["growth_per_cell_mib"],
        )
