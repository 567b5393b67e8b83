"""What every claim shares: the Verdict and Claim records (the Endpoint is pipeline.spec.endpoints',
re-exported), the statuses, the reading helpers the judges use (pairing by seed, counting
intervals against chance: beyond_chance, _read_signs; the layers of a per-layer quantity:
_layers), and the SHARED and SIGNS rule texts the registry appends.

    from pipeline.claims.base import HOLDS, Endpoint, beyond_chance
"""
from __future__ import annotations

import string
from dataclasses import dataclass, field, replace
from typing import Callable

import pandas as pd

from pipeline.claims.endpoint_table import endpoint_frame
from pipeline.spec.endpoints import Endpoint, layer_text, number_text
from pipeline.spec.records import layer_column

HOLDS, FAILS, MIXED, NOT_SHOWN = "holds", "does not hold", "mixed", "not shown at this scale"
PASSED, CHECK_FAILED = "check passed", "check failed"
STATUSES = (HOLDS, FAILS, MIXED, NOT_SHOWN, PASSED, CHECK_FAILED)
NAN = float("nan")


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


@dataclass(frozen=True, kw_only=True)
class Claim:
    """One claim, built by keyword. `endpoints` declares, before the data, every measure the judge
    may report: (measure, how it is measured), the measure exactly as the judge's Endpoints name it;
    `primary` is the one of them that the claim is read by (a study compares it across setups), the
    others being decided by the rule too or only descriptive (each endpoint's `decides` says)."""
    key: str
    title: str
    statement: str                 # the paper's words (Ioffe & Szegedy 2015, sec. 2)
    kind: str                      # "measurement" | "identity"
    endpoints: tuple               # declared in advance: ((measure, how it is measured), ...)
    primary: str                   # the measure of the primary endpoint: one of `endpoints`
    controls: str                  # template
    rule: str                      # template, filled from ReportSettings
    figure: str | None = None
    answers: dict                  # status -> the answer sentence
    judge: Judge                   # (members, histories, settings) -> (status, endpoints, evidence, table);
    #                                table None: the verdict's table is its endpoints table (endpoint_frame)

    def __post_init__(self):
        declared = self.measures()
        if self.primary not in declared:
            raise ValueError(f"{self.key}: primary endpoint {self.primary!r} is not declared (declared: {declared})")
        if len(set(declared)) != len(declared):
            raise ValueError(f"{self.key}: an endpoint is declared twice")

    def measures(self) -> list[str]:
        return [measure for measure, _ in self.endpoints]

    def placeholders(self) -> set[str]:
        names = {f for text in (self.rule, self.controls) for _, f, _, _ in string.Formatter().parse(text) if f}
        return {n.split(":")[0].split(".")[0].removesuffix("_text") for n in names}

    def evaluate(self, members: pd.DataFrame, histories, settings) -> Verdict:
        """The judge's verdict, its endpoints marked primary where their measure is `primary`; the
        verdict's table is the judge's own where it returns one, else its endpoints table."""
        status, endpoints, evidence, table = self.judge(members, histories, settings)
        undeclared = {e.measure for e in endpoints} - set(self.measures())
        if undeclared:
            raise ValueError(f"{self.key}: the judge reported undeclared endpoints {sorted(undeclared)}")
        endpoints = [replace(e, primary=e.measure == self.primary) for e in endpoints]
        if table is None:
            table = endpoint_frame(endpoints)
        ctx = _context(settings)
        return Verdict(key=self.key, title=self.title, statement=self.statement, kind=self.kind, status=status,
                       rule=self.rule.format(**ctx), controls=self.controls.format(**ctx), endpoints=endpoints,
                       evidence=evidence, answer=self.answers.get(status, ""), table=table, figure=self.figure,
                       settings_used={k: getattr(settings, k) for k in sorted(self.placeholders())})


def _context(s) -> dict:
    ctx = dict(s.model_dump()) if hasattr(s, "model_dump") else dict(vars(s))
    ctx["twins_text"] = "; ".join(f"{d} vs {' and '.join(t)}" for d, t in s.twins.items())
    ctx["blowup_deciders_text"] = ", ".join(s.blowup_deciders)
    ctx["k_sweep_text"] = ", ".join(s.k_sweep)
    ctx["ci_level_text"] = f"{s.ci_level:.0%}"
    return ctx


# -- shared reading ---------------------------------------------------------------------------
_g = number_text


def interval(t) -> dict:
    """An (effect, lo, hi) triple (pipeline.outcomes.ci) as Endpoint keywords."""
    return dict(zip(("effect", "lo", "hi"), t))


def _layers(m: pd.DataFrame, quantity: str) -> list[int]:
    """The hidden layers (0-based) whose `quantity` the member table has a column for: range(depth)
    over the cells' `depth` column, names built by pipeline.spec.records.layer_column, never parsed."""
    depth = int(m["depth"].max()) if "depth" in m.columns and m["depth"].notna().any() else 0
    return [i for i in range(depth) if layer_column(quantity, i) in m.columns]


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
