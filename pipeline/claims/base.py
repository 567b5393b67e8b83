"""What every claim shares: the Verdict, Judgement and Claim records (the Endpoint is
pipeline.spec.endpoints', re-exported), the statuses, and the reading helpers the judges use
(pairing by seed, the layers of a per-layer quantity).

    from pipeline.claims.base import HOLDS, Endpoint, Judgement

A measurement claim's status is its primary tests' (pipeline.claims.primary: one paired comparison
per claim, named in report.primary, Holm across claims); an identity claim's status is its judge's
check. Every judge also returns its descriptive endpoints, evidence and table.
"""

from __future__ import annotations

import string
from collections.abc import Callable
from dataclasses import dataclass, field, replace

import numpy as np
import pandas as pd

from pipeline.claims.endpoint_table import endpoint_frame
from pipeline.claims.primary import MIXED, combine, primary_measure, run_tests
from pipeline.claims.templates import claim_answer
from pipeline.spec.endpoints import Endpoint, layer_text, number_text  # noqa: F401  (re-exported)
from pipeline.spec.primaries import primary_tests
from pipeline.spec.records import layer_column
from pipeline.stats.inference import FAILS, HOLDS, NEGLIGIBLE, NOT_SHOWN, clopper_pearson, newcombe_paired

PASSED, CHECK_FAILED = "check passed", "check failed"
STATUSES = (HOLDS, FAILS, MIXED, NEGLIGIBLE, NOT_SHOWN, PASSED, CHECK_FAILED)
NAN = float("nan")
SAME_AS_NOW = "same as now"  # a Judgement.legacy value: the replaced rule reads the very same comparisons


@dataclass
class Judgement:
    """What a judge reads from the member table."""

    endpoints: list[Endpoint]  # descriptive (and, for identities, deciding) endpoints
    evidence: str
    status: str | None = None  # identity checks only: measurement claims are decided
    #                                                by their primary tests
    table: pd.DataFrame | None = None  # None: the verdict's table is its endpoints table
    comparisons: dict[str, pd.DataFrame] = field(default_factory=dict)  # primary test key -> rows diff,
    #                                                dataset, seed (+ where): the paired comparisons
    legacy: dict[str, str] = field(default_factory=dict)  # ledger commit -> the status under the rule that
    #                                                commit replaced (pipeline/claims/ledger.py)
    withhold: dict[str, str] = field(default_factory=dict)  # status -> why the claim's rule withholds it (the
    #                                                verdict reads "not shown"): a guard that can only remove a
    #                                                verdict, never make one, so the test's calibration carries over


def guarded(status: str, j: Judgement) -> str:
    """The claim's status from its tests' (pipeline.claims.primary.combine), with the judge's guard applied."""
    return NOT_SHOWN if status in j.withhold else status


@dataclass
class Verdict:
    key: str
    title: str
    statement: str
    kind: str  # "measurement" | "identity"
    status: str
    rule: str
    controls: str
    endpoints: list[Endpoint]
    evidence: str
    answer: str
    table: pd.DataFrame | None = None
    figure: str | None = None
    settings_used: dict = field(default_factory=dict)
    tests: list = field(default_factory=list)  # pipeline.claims.primary.TestResult, measurement claims
    legacy: dict[str, str] = field(default_factory=dict)


Judge = Callable[[pd.DataFrame, "pd.DataFrame | None", object], Judgement]


@dataclass(frozen=True, kw_only=True)
class Claim:
    """One claim, built by keyword. `endpoints` declares every descriptive measure the judge may
    report: (measure, how it is measured). A measurement claim names its primary tests (`tests`:
    keys of report.primary / pipeline.spec.primaries) and is decided by them; an identity claim names
    its deciding endpoint (`primary`, one of `endpoints`) and is decided by its judge's check."""

    key: str
    title: str
    statement: str  # the paper's words (Ioffe & Szegedy 2015, sec. 2)
    kind: str  # "measurement" | "identity"
    endpoints: tuple  # ((measure, how it is measured), ...)
    tests: tuple = ()  # measurement claims: their primary tests' keys
    primary: str | None = None  # identity claims: the measure their check reads
    controls: str  # template
    rule: str  # template, filled from ReportSettings
    figure: str | None = None
    answers: dict  # status -> the answer sentence (a template: pipeline.claims.answer)
    judge: Judge

    def __post_init__(self):
        declared = [m for m, _ in self.endpoints]
        if len(set(declared)) != len(declared):
            raise ValueError(f"{self.key}: an endpoint is declared twice")
        if self.kind == "measurement":
            mine = [t.key for t in primary_tests() if t.claim == self.key]
            if not self.tests or sorted(self.tests) != sorted(mine):
                raise ValueError(
                    f"{self.key}: a measurement claim is decided by its primary tests "
                    f"(pipeline.spec.primaries declares {mine}; the claim names {list(self.tests)})"
                )
        elif self.primary not in declared:
            raise ValueError(f"{self.key}: primary endpoint {self.primary!r} is not declared (declared: {declared})")

    def measures(self) -> list[str]:
        return [measure for measure, _ in self.endpoints]

    def placeholders(self) -> set[str]:
        names = {f for text in (self.rule, self.controls) for _, f, _, _ in string.Formatter().parse(text) if f}
        return {n.split(":")[0].split(".")[0].removesuffix("_text") for n in names}

    def verdict(self, j: Judgement, results: list, settings) -> Verdict:
        """The verdict from the judge's reading and this claim's primary test results (already
        Holm-adjusted with the report's other tests)."""
        undeclared = {e.measure for e in j.endpoints} - set(self.measures())
        if undeclared:
            raise ValueError(f"{self.key}: the judge reported undeclared endpoints {sorted(undeclared)}")
        if self.kind == "measurement":
            missing = [k for k in self.tests if k not in j.comparisons]
            if missing:
                raise ValueError(f"{self.key}: the judge built no comparisons for primary test(s) {missing}")
            mine = [r for r in results if r.key in self.tests]
            status = guarded(combine(mine), j)
            endpoints = [r.endpoint_row() for r in mine] + [
                replace(e, primary=False, decides=False) for e in j.endpoints
            ]
            assert all(e.measure == primary_measure(r.key, r.endpoint) for e, r in zip(endpoints, mine))
        else:
            mine, status = [], j.status  # type: ignore[assignment]  # an identity judge always sets it
            # the declared deciding endpoint; where the judge fell back to another (records older than it, e.g.
            # claim 5 without the float64 probe), the first endpoint that decides
            measures = [e.measure for e in j.endpoints]
            deciding = (
                self.primary
                if self.primary in measures
                else next((e.measure for e in j.endpoints if e.decides), self.primary)
            )
            endpoints = [replace(e, primary=e.measure == deciding) for e in j.endpoints]
        table = j.table if j.table is not None else endpoint_frame(endpoints)
        ctx = _context(settings)
        return Verdict(
            key=self.key,
            title=self.title,
            statement=self.statement,
            kind=self.kind,
            status=status,
            rule=self.rule.format(**ctx),
            controls=self.controls.format(**ctx),
            endpoints=endpoints,
            evidence=j.evidence
            + "".join(
                f" Withheld: {why} (the tests alone say {st})." for st, why in j.withhold.items() if st == combine(mine)
            ),
            answer=claim_answer(self, status, mine, settings),
            table=table,
            figure=self.figure,
            settings_used={k: getattr(settings, k) for k in sorted(self.placeholders()) if hasattr(settings, k)},
            tests=mine,
            legacy={k: (f"{status} (the same comparisons)" if x == SAME_AS_NOW else x) for k, x in j.legacy.items()},
        )

    def evaluate(self, members: pd.DataFrame, histories, settings) -> Verdict:
        """This claim alone: its primary tests Holm-adjusted among themselves only (the report
        adjusts every claim's tests together: pipeline.claims.registry.evaluate_all)."""
        j = self.judge(members, histories, settings)
        results = run_tests({k: j.comparisons[k] for k in self.tests if k in j.comparisons}, members, settings)
        return self.verdict(j, results, settings)


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


def rate_interval(x, level: float) -> dict:
    """A rate of 0/1 outcomes with its exact (Clopper-Pearson) interval, as Endpoint keywords: 5/5 is
    [0.478, 1] at 95%, never a bootstrap's "[1, 1]"."""
    x = pd.Series(x, dtype=float).dropna()
    if x.empty:
        return dict(effect=NAN, lo=NAN, hi=NAN)
    lo, hi = clopper_pearson(int(x.sum()), len(x), level)
    return dict(effect=float(x.mean()), lo=lo, hi=hi)


def excess_rate_interval(a, b, level: float) -> dict:
    """The excess rate of paired 0/1 outcomes a - b (same seeds, same order) with Newcombe's hybrid
    score interval for paired proportions, as Endpoint keywords."""
    a, b = pd.Series(a, dtype=float).to_numpy(), pd.Series(b, dtype=float).to_numpy()
    if a.shape != b.shape:
        raise ValueError(f"excess_rate_interval: {a.size} outcomes against {b.size}: pairs need the same members")
    both = ~(np.isnan(a) | np.isnan(b))  # pairs with both outcomes (numpy: called per comparison, in every null grid)
    if not both.any():
        return dict(effect=NAN, lo=NAN, hi=NAN)
    a_, b_ = a[both] > 0, b[both] > 0
    d, lo, hi = newcombe_paired(
        int((a_ & b_).sum()), int((a_ & ~b_).sum()), int((~a_ & b_).sum()), int((~a_ & ~b_).sum()), level
    )
    return dict(effect=d, lo=lo, hi=hi)


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
    return m.loc[m["variant"] == a, keys + cols].merge(
        m.loc[m["variant"] == b, keys + cols], on=keys, suffixes=("_a", "_b")
    )


def _nonzero_mean(m: pd.DataFrame, s) -> list[str]:
    return list(dict.fromkeys(m.loc[m["input_mean_norm"].fillna(0) > s.nonzero_mean, "dataset"]))


def _has_beta(m: pd.DataFrame) -> pd.Series:
    """Per row: the variant has gamma, beta (its config's `affine`, the member table's `affine` column;
    a table without the column -- crafted or simulated -- has none). Ioffe's drift of b needs a layer
    without beta: with it, b shadows beta (pipeline/claims/shadow.py), so claims 1b and 2 read the
    detached variants without beta."""
    return m["affine"].astype(bool) if "affine" in m.columns else pd.Series(False, index=m.index)
