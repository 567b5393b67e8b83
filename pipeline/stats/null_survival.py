"""Calibration of claim 4's time-to-divergence test on simulated member tables (pipeline.stats.null_members:
the real grid's structure, seeds shared by every lr of a data set, a seed x arm effect, the same hazard in
both arms under the null), beside claim 4's primary test read on the same grids.

    python -m pipeline.stats.null_survival --grids 400 --seed 20261205

Per grid: the pooled stratified log-rank of claim 4's deciding pairs (pipeline.claims.divergence_time) with its
two p-values (arms swapped within (data set, seed) clusters; members independent) and the primary test's own p
(pipeline.stats.null_members.judge, before Holm). Null, then with claim 4's declared smallest effect planted
(null_members' `plant`: +0.1 excess divergence rate on the deciding detached variants, after step K).
Rates of p <= 0.05 with 95% Clopper-Pearson intervals (docs/statistics.md).
"""

from __future__ import annotations

import argparse
import time

import numpy as np

SEED = 20261205
READINGS = ("log-rank, arms swapped by seed", "log-rank, members independent", "primary test (own p)")


def rates(grids: int, seed: int, plant: str | None = None) -> tuple[dict[str, int], float]:
    """(reading -> grids with p <= 0.05, CPU seconds per grid)."""
    from pipeline.claims.divergence_time import divergence_time_tests
    from pipeline.config import ReportSettings
    from pipeline.stats import null_members as NM

    settings = ReportSettings()
    rng = np.random.default_rng(seed)
    hits = dict.fromkeys(READINGS, 0)
    c0 = time.process_time()
    for _ in range(grids):
        m = NM.simulate(NM.Skeleton(), rng, settings, plant=plant)
        r = next(t for t in divergence_time_tests(m, settings) if t.role == "pooled").result
        primary = NM.judge(m, settings)[0]["claim4"]
        for name, p in zip(READINGS, (r.p_flip, r.p_normal, primary.p)):
            hits[name] += p <= 0.05
    return hits, (time.process_time() - c0) / grids


def report(grids: int = 400, seed: int = SEED) -> str:
    from pipeline.stats.inference import clopper_pearson

    null, cpu = rates(grids, seed)
    alt, _ = rates(grids, seed + 1, plant="claim4")
    lines = ["| reading | null: p <= 0.05 | planted claim-4 effect: p <= 0.05 |", "|---|---|---|"]
    for name in READINGS:
        cells = []
        for k in (null[name], alt[name]):
            lo, hi = clopper_pearson(k, grids)
            cells.append(f"{k / grids:.3f} [{lo:.3f}, {hi:.3f}]")
        lines.append(f"| {name} | {cells[0]} | {cells[1]} |")
    lines.append(f"\nCPU time: {cpu:.2f} s per grid (simulation, survival test, the primary tests).")
    return "\n".join(lines)


def main(argv=None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--grids", type=int, default=400)
    ap.add_argument("--seed", type=int, default=SEED)
    a = ap.parse_args(argv)
    print(
        f"python -m pipeline.stats.null_survival --grids {a.grids} --seed {a.seed}; rates of p <= 0.05 with 95% "
        f"Clopper-Pearson intervals"
    )
    print(report(a.grids, a.seed))


if __name__ == "__main__":
    main()
