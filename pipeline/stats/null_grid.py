"""Null (and planted-effect) grids with the real grid's dependence structure, the OLD and NEW rules
applied to them, and the calibration/power table of docs/statistics.md.

    python -m pipeline.stats.null_grid --report [--grids 400] [--seed 20261204]

A grid: detached variants x data sets x lrs x seeds (x layers for continuous endpoints). Each
comparison is a detached member minus its twin in the same cell and seed. Dependence, as in the
real grid: a seed's effect is shared by every cell of its data set (cluster = data set x seed),
separately for each arm (a seed x arm effect: what makes comparisons sharing a seed miss 0 together);
a per-cell level shared by both arms (so many 0/1 cells have every pair equal); two endpoints of one
cell (loss and accuracy gap) correlated ~0.5 through a shared latent. Arms are exchangeable under
the null. A planted effect moves only the detached arm.
"""

from __future__ import annotations

import argparse
from dataclasses import dataclass

import numpy as np
from scipy import stats

from pipeline.stats.inference import NOT_SHOWN, Rule, cluster_signflip, decide

SEED = 20261204


@dataclass(frozen=True)
class Shape:
    """The grid's shape; defaults: claim 1b's real family (2 detached batch variants x 3 data sets x
    4 lrs x 2 endpoints = 48 comparisons), 5 seeds shared by every cell of a data set."""

    variants: int = 2
    datasets: int = 3
    lrs: int = 4
    layers: int = 1
    endpoints: int = 2
    seeds: int = 5

    @property
    def cells(self) -> int:
        return self.variants * self.datasets * self.lrs * self.layers * self.endpoints


def arm_latent(
    rng: np.random.Generator,
    cells: tuple[int, ...],
    endpoints: int,
    seeds: int,
    rho: float = 0.3,
    endpoint_corr: float = 0.5,
    level=0.0,
) -> np.ndarray:
    """ONE arm's latent, shape cells + (endpoints, seeds): `level` (the cell's level, shared by both arms,
    broadcast) plus a unit-variance, mean-0 part (the owner of the latent
    model: `draw` and pipeline.stats.null_members both call it). cells[1] is the data-set axis. Three
    parts: a (data set, seed) effect of variance rho shared by every cell, lr and endpoint of this arm in
    that data set and seed (what makes comparisons sharing a seed move together); a member effect shared
    by the member's endpoints (latent endpoint correlation endpoint_corr); a part of its own per endpoint.
    Arms drawn by separate calls are independent and identically distributed: exchangeable under the null."""
    d = cells[1]
    w = rng.normal(size=(1, d) + (1,) * (len(cells) - 2) + (1, seeds)) * np.sqrt(rho)  # seed x arm, whole data set
    z1 = rng.normal(size=cells + (1, seeds))  # shared by a member's endpoints
    z2 = rng.normal(size=cells + (endpoints, seeds))
    return level + w + np.sqrt(1 - rho) * (np.sqrt(endpoint_corr) * z1 + np.sqrt(1 - endpoint_corr) * z2)


def draw(
    shape: Shape,
    rng: np.random.Generator,
    kind: str = "continuous",
    rho: float = 0.3,
    effect: float = 0.0,
    endpoint_corr: float = 0.5,
) -> tuple[np.ndarray, np.ndarray]:
    """One grid: (diff, cluster), diff of shape (cells, seeds) = detached minus twin; cluster the
    (data set, seed) label of each entry. rho: the latent seed x arm variance share (latent correlation
    of two comparisons sharing a seed); realised with rho 0.3 (Shape(), 3000 draws): continuous 0.24
    between cells sharing a seed, 0.61 between a cell's two endpoints; binary (thresholding attenuates)
    0.05 and 0.36. kind "binary" thresholds a latent (0/1), "continuous" is
    lognormal (skewed). effect: added to the detached arm (continuous, natural scale) or, for binary,
    the probability that a detached member whose twin stayed 0 turns 1 (an excess rate)."""
    v, d, l, k, e, s = shape.variants, shape.datasets, shape.lrs, shape.layers, shape.endpoints, shape.seeds  # noqa: E741 (axis letters)
    base = rng.normal(size=(v, d, l, k, 1, 1)) * (1.5 if kind == "binary" else 0.5)  # cell level, both arms
    det, twin = (arm_latent(rng, (v, d, l, k), e, s, rho, endpoint_corr, level=base) for _ in range(2))
    if kind == "binary":
        thr = 1.5  # most cells far from the threshold: all pairs equal, as in the real grid
        yd, yt = (det > thr).astype(float), (twin > thr).astype(float)
        if effect:
            yd = np.where((yd == 0) & (yt == 0) & (rng.random(yd.shape) < effect), 1.0, yd)
        diff = yd - yt
    else:
        diff = np.exp(0.5 * det) - np.exp(0.5 * twin) + effect
    cluster = np.broadcast_to(
        np.arange(d)[None, :, None, None, None, None] * s + np.arange(s)[None, None, None, None, None, :], diff.shape
    )
    return diff.reshape(-1, s), cluster.reshape(-1, s)


# -- the two rules ------------------------------------------------------------------------------------
def old_rule_intervals(diff: np.ndarray, kind: str, level: float = 0.95) -> tuple[np.ndarray, np.ndarray]:
    """Per comparison (row) the old report's interval: Student t for continuous differences, the
    percentile bootstrap over seeds for 0/1 (computed exactly: its limit with infinitely many resamples,
    by enumerating the multinomial draws of -1/0/+1 among n pairs)."""
    n = diff.shape[1]
    if kind != "binary":
        m, sd = diff.mean(1), diff.std(1, ddof=1)
        half = stats.t.ppf(0.5 + level / 2, n - 1) * sd / np.sqrt(n)
        return m - half, m + half
    a = (diff > 0).sum(1)
    c = (diff < 0).sum(1)
    # all (i, j) = (+1 count, -1 count) of a resample of n; probability from the multinomial
    ij = np.array([(i, j) for i in range(n + 1) for j in range(n + 1 - i)])
    pa, pc = a[:, None] / n, c[:, None] / n
    prob = stats.multinomial.pmf(
        np.stack(
            [
                np.broadcast_to(ij[:, 0], (len(a), len(ij))),
                np.broadcast_to(ij[:, 1], (len(a), len(ij))),
                n - ij.sum(1)[None, :].repeat(len(a), 0),
            ],
            -1,
        ),
        n,
        np.stack(
            [
                np.broadcast_to(pa, (len(a), len(ij))),
                np.broadcast_to(pc, (len(a), len(ij))),
                np.broadcast_to(1 - pa - pc, (len(a), len(ij))),
            ],
            -1,
        ),
    )
    mean = (ij[:, 0] - ij[:, 1]) / n
    order = np.argsort(mean, kind="stable")
    cdf = np.cumsum(prob[:, order], 1)
    q = 0.5 - level / 2
    lo = mean[order][np.argmax(cdf >= q - 1e-12, axis=1)]
    hi = mean[order][np.argmax(cdf >= 1 - q - 1e-12, axis=1)]
    return lo, hi


def old_rule(diff: np.ndarray, kind: str, level: float = 0.95) -> str:
    """The report's reading before issue 17 (pipeline.claims.legacy.count_status): count the
    intervals above / below 0 among the informative comparisons, binomial tail against chance."""
    lo, hi = old_rule_intervals(diff, kind, level)
    n = int(np.sum(~((lo == 0) & (hi == 0))))
    tail = lambda k: k > 0 and stats.binom.sf(k - 1, n, (1 - level) / 2) < 1 - level  # noqa: E731
    up, down = tail(int((lo > 0).sum())), tail(int((hi < 0).sum()))
    return "mixed" if up and down else "holds" if up else "does not hold" if down else NOT_SHOWN


def new_rule(diff: np.ndarray, cluster: np.ndarray, rule: Rule, p_multiplier: float = 1.0) -> str:
    """The new reading: one cluster sign-flip test of the mean difference over the family (first
    endpoint row block is the primary endpoint: the caller passes only it), p times a Holm factor."""
    _, lo, hi, p = cluster_signflip(diff.ravel(), cluster.ravel(), rule.level)
    return decide(lo, hi, min(1.0, p * p_multiplier), rule)


def primary(diff: np.ndarray, cluster: np.ndarray, shape: Shape) -> tuple[np.ndarray, np.ndarray]:
    """The rows of the primary endpoint (endpoint 0) only: one declared endpoint per claim."""
    keep = (np.arange(diff.shape[0]) % shape.endpoints) == 0
    return diff[keep], cluster[keep]


def rates(
    shape: Shape, kind: str, grids: int, rng: np.random.Generator, rule: Rule, effect: float = 0.0, rho: float = 0.3
) -> dict[str, int]:
    """Counts over `grids` simulated grids: old rule says holds/does-not-hold/mixed (a verdict), new
    rule says holds / does not hold."""
    old = new = new_holds = old_holds = 0
    for _ in range(grids):
        diff, cl = draw(shape, rng, kind, rho, effect)
        o = old_rule(diff, kind, rule.level)
        n = new_rule(*primary(diff, cl, shape), rule)
        old += o != NOT_SHOWN
        old_holds += o == "holds"
        new += n in ("holds", "does not hold")
        new_holds += n == "holds"
    return {"grids": grids, "old_verdict": old, "new_verdict": new, "old_holds": old_holds, "new_holds": new_holds}


def _ci(k: int, n: int) -> str:
    from pipeline.stats.inference import clopper_pearson

    lo, hi = clopper_pearson(k, n)
    return f"{k / n:.3f} [{lo:.3f}, {hi:.3f}]"


def report(grids: int = 400, seed: int = SEED) -> str:
    """The Markdown table of docs/statistics.md: false-verdict rates on the correlated null (rho 0.3)
    and power at the declared effect, old rule vs new, per outcome type and family size."""
    rng = np.random.default_rng(seed)
    shapes = {
        "16 (claim 3-like)": Shape(variants=1, datasets=2, lrs=1, layers=1, endpoints=8),
        "48 (claim 1b)": Shape(),
        "225 (claim 2-like)": Shape(variants=5, datasets=3, lrs=5, layers=3, endpoints=1),
        "45 (claim 4's deciding cells)": Shape(variants=3, datasets=3, lrs=5, layers=1, endpoints=1),
    }
    effects = {"continuous": 0.5, "binary": 0.3}
    lines = [
        "| outcome | comparisons | null: old rule verdicts | null: new rule verdicts | "
        "power at declared effect: old (holds) | new (holds) |",
        "|---|---|---|---|---|---|",
    ]
    for kind, eff in effects.items():
        rule = Rule(smallest_effect=eff / 5)
        for name, sh in shapes.items():
            if kind == "continuous" and name.startswith("45"):
                continue  # claim 4's outcome is 0/1
            null = rates(sh, kind, grids, rng, rule)
            alt = rates(sh, kind, grids, rng, rule, effect=eff)
            lines.append(
                f"| {kind} (effect {eff:g}) | {name} | {_ci(null['old_verdict'], grids)} | "
                f"{_ci(null['new_verdict'], grids)} | {_ci(alt['old_holds'], grids)} | "
                f"{_ci(alt['new_holds'], grids)} |"
            )
    return "\n".join(lines)


def main(argv=None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--report", action="store_true")
    ap.add_argument("--grids", type=int, default=400)
    ap.add_argument("--seed", type=int, default=SEED)
    a = ap.parse_args(argv)
    if a.report:
        print(
            f"python -m pipeline.stats.null_grid --report --grids {a.grids} --seed {a.seed}; rho 0.3, "
            f"endpoint correlation 0.5, 5 seeds, rates with 95% Clopper-Pearson intervals"
        )
        print(report(a.grids, a.seed))


if __name__ == "__main__":
    main()
