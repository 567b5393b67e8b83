"""What every claim shares: the Endpoint, Verdict and Claim records, the statuses, the reading
helpers the judges use (pairing by seed, counting intervals against chance: beyond_chance,
_read_signs), and the SHARED and SIGNS rule texts the registry appends.

    from pipeline.claims.base import HOLDS, Endpoint, beyond_chance
"""
from __future__ import annotations

import string
from dataclasses import dataclass, field
from typing import Callable

import numpy as np
import pandas as pd

HOLDS, FAILS, MIXED, NOT_SHOWN = "holds", "does not hold", "mixed", "not shown at this scale"
PASSED, CHECK_FAILED = "check passed", "check failed"
STATUSES = (HOLDS, FAILS, MIXED, NOT_SHOWN, PASSED, CHECK_FAILED)
NAN = float("nan")


@dataclass
class Endpoint:
    name: str
    effect: float
    lo: float          # interval over seeds at report.ci_level (NaN: none, e.g. an identity's worst case)
    hi: float
    n: int
    unit: str = ""
    detail: str = ""   # where: data set, lr, layer, pair

    def text(self) -> str:
        iv = f" [{_g(self.lo)}, {_g(self.hi)}]" if np.isfinite(self.lo) else ""
        return f"{self.name} ({self.detail}): {_g(self.effect)}{iv} {self.unit}, n = {self.n}".replace(" ,", ",")


@dataclass
class Verdict:
    key: str
    title: str
    statement: str
    kind: str                      # "measurement" | "identity"
    status: str
    rule: str
    controls: str
    endpoints: list[Endpoint]
    evidence: str
    answer: str
    table: pd.DataFrame | None = None
    figure: str | None = None
    settings_used: dict = field(default_factory=dict)


Judge = Callable[[pd.DataFrame, "pd.DataFrame | None", object], tuple]


@dataclass(frozen=True)
class Claim:
    key: str
    title: str
    statement: str                 # the paper's words (Ioffe & Szegedy 2015, sec. 2)
    kind: str
    endpoints: tuple               # declared in advance: (name, how it is measured)
    controls: str                  # template
    rule: str                      # template, filled from ReportSettings
    figure: str | None
    answers: dict                  # status -> the answer sentence
    judge: Judge                   # (members, histories, settings) -> (status, endpoints, evidence, table)

    def placeholders(self) -> set[str]:
        names = {f for text in (self.rule, self.controls) for _, f, _, _ in string.Formatter().parse(text) if f}
        return {n.split(":")[0].split(".")[0].removesuffix("_text") for n in names}

    def evaluate(self, members: pd.DataFrame, histories, settings) -> Verdict:
        status, endpoints, evidence, table = self.judge(members, histories, settings)
        ctx = _context(settings)
        return Verdict(self.key, self.title, self.statement, self.kind, status, self.rule.format(**ctx),
                       self.controls.format(**ctx), endpoints, evidence, self.answers.get(status, ""), table,
                       self.figure,
                       {k: getattr(settings, k) for k in sorted(self.placeholders())})


def _context(s) -> dict:
    ctx = dict(s.model_dump()) if hasattr(s, "model_dump") else dict(vars(s))
    ctx["twins_text"] = "; ".join(f"{d} vs {' and '.join(t)}" for d, t in s.twins.items())
    ctx["blowup_deciders_text"] = ", ".join(s.blowup_deciders)
    ctx["k_sweep_text"] = ", ".join(s.k_sweep)
    ctx["ci_level_text"] = f"{s.ci_level:.0%}"
    return ctx


# -- shared reading ---------------------------------------------------------------------------
def _g(x) -> str:
    return f"{x:.3g}" if isinstance(x, (int, float, np.floating)) and np.isfinite(x) else "n/a"


def _alive(m: pd.DataFrame) -> pd.DataFrame:
    return m[m["status"] != "diverged"]


def _paired(m: pd.DataFrame, a: str, b: str, cols: list[str]) -> pd.DataFrame:
    """Members of variants a and b with the same data set, lr and seed, side by side (col_a, col_b)."""
    keys = ["dataset", "lr", "seed"]
    return m.loc[m["variant"] == a, keys + cols].merge(m.loc[m["variant"] == b, keys + cols], on=keys,
                                                       suffixes=("_a", "_b"))


def _nonzero_mean(m: pd.DataFrame, s) -> list[str]:
    return list(dict.fromkeys(m.loc[m["input_mean_norm"].fillna(0) > s.nonzero_mean, "dataset"]))


def beyond_chance(k: int, n: int, level: float) -> bool:
    """Among n comparisons with no effect, each interval misses 0 on one given side with probability
    (1 - level) / 2; k such misses count only if that many would arise by chance with probability
    below 1 - level (binomial tail). One comparison: k = 1 counts; twenty: it takes 3."""
    from scipy.stats import binom

    return k > 0 and float(binom.sf(k - 1, n, (1 - level) / 2)) < 1 - level


def informative(e: Endpoint) -> bool:
    """A comparison whose every pair agreed exactly (interval [0, 0]) cannot miss 0 by chance:
    it does not count in the family a count of hits is judged against."""
    return not (e.lo == 0 and e.hi == 0)


def _read_signs(decided: list[Endpoint], level: float) -> tuple[str, int, int]:
    """Effects are oriented so that + is the claim's direction: holds if more intervals lie above 0
    than chance would put there among the informative comparisons (beyond_chance), does not hold if
    the same is true below 0, mixed if both, not shown if neither."""
    n = sum(informative(e) for e in decided)
    up = sum(e.lo > 0 for e in decided)
    down = sum(e.hi < 0 for e in decided)
    up_sig, down_sig = beyond_chance(up, n, level), beyond_chance(down, n, level)
    status = MIXED if up_sig and down_sig else HOLDS if up_sig else FAILS if down_sig else NOT_SHOWN
    return status, up, down


def _table(eps: list[Endpoint], decided: set[int]) -> pd.DataFrame:
    return pd.DataFrame([{"endpoint": e.name, "detail": e.detail, "effect": e.effect, "ci_lo": e.lo, "ci_hi": e.hi,
                          "n": e.n, "unit": e.unit, "decides": i in decided} for i, e in enumerate(eps)])


def _count(n_up: int, n_down: int, n: int, up: str, down: str) -> str:
    return f"of {n} decided comparisons, {n_up} {up} and {n_down} {down} (interval excluding 0)"


# rule texts shared by the registry's claims
SHARED = ("Intervals: {ci_level_text} over seeds (Student t for means, paired bootstrap with "
          "{bootstrap} resamples for rates); a comparison with fewer than {min_members} paired seeds is not "
          "decided; each interval is per comparison, the count of comparisons is judged against chance (above), "
          "and with 5 seeds the intervals are wide.")
SIGNS = ("holds if more decided intervals lie above 0 than chance would put there (with no effect, each "
         "misses 0 on one side with probability (1 - {ci_level_text}) / 2: the count must have a binomial tail "
         "below 1 - {ci_level_text} among the informative comparisons -- those whose pairs did not all agree "
         "exactly; one comparison alone counts, of twenty it takes three), does not hold if the "
         "same is true below 0, mixed if both, not shown at this scale if neither. ")
