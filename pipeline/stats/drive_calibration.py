"""Claim 2's calibration and power through the report's code path: member tables whose detached members'
b follows a known drive (pipeline/stats/null_drift.py), simulated by pipeline/stats/null_members.py and
read by claim 2's judge, primary test and guard.

    python -m pipeline.stats.drive_calibration --report [--grids 200] [--seed 20261206]
"""

from __future__ import annotations

import argparse

import numpy as np

from pipeline.stats import null_members as NM
from pipeline.stats.null_drift import MODELS, SEED, DriveModel


# -- the rule on simulated grids ---------------------------------------------------------------------------
def claim2_skeleton():
    """null_members' grid restricted to the variants claim 2 reads (its detached subjects): 4 variants x 3 data
    sets x 4 lrs x 5 seeds, depth 2, 500 steps."""
    return NM.Skeleton(variants=tuple(v for v in NM.VARIANTS if v.arm == "detached"))


def verdicts(model: DriveModel, grids: int, rng: np.random.Generator, settings, skeleton=None) -> dict[str, float]:
    """Over `grids` simulated member tables whose detached members' b follows `model`
    (pipeline.stats.null_members.simulate), claim 2 read as the report reads it -- its judge, its primary
    test (own p: Holm over this test alone), the guard: counts of "claim: <status>" (after the guard) and
    "test: <status>" (the test alone), and "kappa_sum" (the pooled kappa, summed over grids)."""
    from pipeline.claims.base import guarded
    from pipeline.claims.growth import judge_b_grows
    from pipeline.claims.primary import run_tests

    sk = skeleton or claim2_skeleton()
    counts: dict[str, float] = {}
    for _ in range(grids):
        m = NM.simulate(sk, rng, settings, drive=model)
        j = judge_b_grows(m, None, settings)
        r = run_tests({"claim2": j.comparisons["claim2"]}, m, settings)[0]
        for key in (f"claim: {guarded(r.status, j)}", f"test: {r.status}"):
            counts[key] = counts.get(key, 0) + 1
        counts["kappa_sum"] = counts.get("kappa_sum", 0) + (1 - r.effect)
    return counts


def report(grids: int = 200, seed: int = SEED) -> str:
    """The Markdown table of docs/statistics.md (claim 2's calibration and power): per drive model, the rate of
    each reading of claim 2 through the report's code path, with 95% Clopper-Pearson intervals."""
    from pipeline.config import ReportSettings
    from pipeline.stats.inference import FAILS, HOLDS, NEGLIGIBLE, NOT_SHOWN, clopper_pearson

    settings = ReportSettings()
    rng = np.random.default_rng(seed)
    ci = lambda k: "{:.3f} [{:.3f}, {:.3f}]".format(k / grids, *clopper_pearson(k, grids))  # noqa: E731
    lines = [
        "| drive model (k, nu, t0) | b is | mean kappa | unbounded (holds) | bounded (does not hold) | negligible | "
        "not shown | test alone: holds / does not hold |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for model in MODELS.values():
        c = verdicts(model, grids, rng, settings)
        g = lambda st: c.get(f"claim: {st}", 0)  # noqa: E731, B023 (used within the iteration)
        lines.append(
            f"| {model.name} ({model.k}, {model.nu}, {model.t0:g}) | {'bounded' if model.bounded else 'unbounded'} | "
            f"{c['kappa_sum'] / grids:.3g} | {ci(g(HOLDS))} | {ci(g(FAILS))} | {ci(g(NEGLIGIBLE))} | "
            f"{ci(g(NOT_SHOWN))} | {c.get(f'test: {HOLDS}', 0)} / {c.get(f'test: {FAILS}', 0)} |"
        )
    return "\n".join(lines)


def main(argv=None) -> None:
    ap = argparse.ArgumentParser(prog="python -m pipeline.stats.drive_calibration", description=__doc__.splitlines()[0])
    ap.add_argument("--report", action="store_true")
    ap.add_argument("--grids", type=int, default=200)
    ap.add_argument("--seed", type=int, default=SEED)
    a = ap.parse_args(argv)
    if a.report:
        print(
            f"python -m pipeline.stats.drive_calibration --report --grids {a.grids} --seed {a.seed}; rates with 95% "
            "Clopper-Pearson intervals"
        )
        print(report(a.grids, a.seed))


if __name__ == "__main__":
    main()
