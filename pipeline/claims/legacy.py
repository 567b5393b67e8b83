"""The retired decision rules, kept only so the report can show each verdict under the rule as
first declared and as used before issue 17 (pipeline/claims/ledger.py prints both). Nothing here
decides a verdict any more.

    from pipeline.claims.legacy import count_status

The count rule: per comparison, an interval over seeds (pipeline.outcomes.ci); the number of
intervals lying above 0 (below 0) judged against a binomial tail, each comparison missing 0 on one
side with probability (1 - level) / 2 under no effect. It treats comparisons that share seeds as
independent and is anti-conservative (tests/test_calibration.py measures by how much).
"""

from __future__ import annotations

from pipeline.spec.endpoints import Endpoint

HOLDS, FAILS, MIXED, NOT_SHOWN = "holds", "does not hold", "mixed", "not shown"


def beyond_chance(k: int, n: int, level: float) -> bool:
    """k of n intervals missing 0 on one given side is beyond chance if the binomial tail
    P(X >= k | n, (1 - level) / 2) is below 1 - level (one comparison: k = 1 counts; twenty: 3)."""
    from scipy.stats import binom

    return k > 0 and float(binom.sf(k - 1, n, (1 - level) / 2)) < 1 - level


def informative(e: Endpoint) -> bool:
    """A comparison whose every pair agreed exactly (interval [0, 0])."""
    return not (e.lo == 0 and e.hi == 0)


def count_status(decided: list[Endpoint], level: float, only_informative: bool = True) -> str:
    """The count rule on intervals oriented + = the claim's direction. only_informative: the family
    is the comparisons whose pairs did not all agree (the revision of ffaf633); False: all of them
    (the rule as first declared)."""
    n = sum(informative(e) for e in decided) if only_informative else len(decided)
    up = sum(e.lo > 0 for e in decided)
    down = sum(e.hi < 0 for e in decided)
    up_sig, down_sig = beyond_chance(up, n, level), beyond_chance(down, n, level)
    return MIXED if up_sig and down_sig else HOLDS if up_sig else FAILS if down_sig else NOT_SHOWN


def any_side_status(decided: list[Endpoint]) -> str:
    """Claim 3 as first declared (docs/science.md): holds if at least one endpoint's interval shows
    standardizing worse and none better, mixed if both, with no chance correction."""
    up = any(e.lo > 0 for e in decided)
    down = any(e.hi < 0 for e in decided)
    return MIXED if up and down else HOLDS if up else FAILS if down else NOT_SHOWN
