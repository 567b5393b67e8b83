"""Figure 7, memory: two different processes' peaks, each in its own process, and in-process growth.

peak      the cold CLI run of the default cell (figure 5's runs) against one naive run (figure 3's,
          when it ran): each the peak resident memory of that process alone, VmHWM read from
          /proc/<pid>/status by benchmarks/reap.py until it exits (run_proc's hwm_mib). Not wait4's
          ru_maxrss: that is the largest of the process and the children it reaped (a cell's
          tracking fork), kept in the JSON as *_maxrss_mib. Two processes of different programs:
          an exactly equal pair is flagged (benchmarks.common.impossible), not printed as a result.
growth    this process's resident memory (VmRSS) after each of 12 cells (--quick 3) trained in it by
          run_cell, as a local executor's worker trains them: three separate quantities, the RSS
          after the second cell, the RSS after the last, and their difference per cell (a leak grows
          with every cell; a negative difference is memory given back).
"""

from __future__ import annotations

import os
import shutil
from pathlib import Path

from benchmarks.common import Context, Table, problem, stats

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


def own_peaks(runs: list[dict]) -> dict | None:
    """stats of the runs' own peaks (hwm_mib), or None where the launcher read none."""
    hwm = [r["hwm_mib"] for r in runs if r.get("hwm_mib") is not None]
    return stats(hwm) if hwm else None


def measure(ctx: Context) -> dict:
    cold = ctx.cli["cold"]
    out: dict = {"normlab_maxrss_mib": stats(r["maxrss_mib"] for r in cold)}
    n = own_peaks(cold)
    if n:
        out["normlab_hwm_mib"] = n
    naive = ctx.res.get("naive_grid", {})
    if naive.get("naive_maxrss_mib"):
        out["naive_maxrss_mib"] = naive["naive_maxrss_mib"]
    if n and naive.get("naive_hwm_mib"):
        out.update(naive_hwm_mib=naive["naive_hwm_mib"], ratio=n["median"] / naive["naive_hwm_mib"]["median"])
    out["growth"] = memory_growth(ctx.cell, ctx.cfg["growth_cells"], ctx.tmp / "growth")
    return out


def rows(s: dict, table: Table) -> None:
    label = "7 peak RSS MiB, each its own process: cold cell vs naive run"
    if problem(s):
        table.add(label, problem(s))
        return
    if "normlab_hwm_mib" in s:
        table.add(label, s["normlab_hwm_mib"], s.get("naive_hwm_mib"), s.get("ratio"), distinct=True)
    else:
        table.add(label, "not read (no /proc VmHWM)")
    g = s.get("growth")
    if g:
        after, n = g["rss_after_each_mib"], g["cells"]
        second = min(1, n - 1)
        table.add(f"7 in-process RSS MiB after cell {second + 1} of {n}", after[second])
        table.add(f"7 in-process RSS MiB after cell {n} of {n}", after[-1])
        table.add(
            f"7 in-process RSS growth MiB per cell (cell {second + 1} -> {n})", g["growth_per_cell_mib"], signed=True
        )
