"""What a verdict's endpoint is: a measure, where it was measured (typed fields), its effect and
interval over seeds. The display text (`detail`, `text()`) is derived from the fields, never
parsed back; endpoints are matched by `key`, the tuple of the fields that identify them.

    from pipeline.spec.endpoints import Endpoint, TABLE_COLUMNS
    e = Endpoint(measure="excess blow-up rate (detached minus twin)", effect=0.2, lo=0.0, hi=0.6, n=5,
                 unit="fraction", variant="center_detached", twin="center", dataset="digits", lr=1.0)
    e.detail  # 'center_detached vs center, digits, lr 1'

A claim's table (`tables/<claim>.csv`) has one row per endpoint, `TABLE_COLUMNS`, built by
`Endpoint.row()` and read back by `Endpoint.from_row()`; the DataFrame side of that contract is
`pipeline.claims.endpoint_table` (this module is torch-free and pandas-free).
"""

from __future__ import annotations

import math
from dataclasses import dataclass, fields
from numbers import Real

NAN = float("nan")

# where an endpoint was measured: the fields of its identity, after `measure` (see Endpoint.key)
WHERE = (
    "variant",
    "twin",
    "minus_variant",
    "minus_twin",
    "group",
    "variants",
    "dataset",
    "lr",
    "layer",
    "refresh_every",
    "over",
)
# tables/<claim>.csv: one row per endpoint, these columns in this order (the derived `detail` last)
TABLE_COLUMNS = ("measure", *WHERE, "effect", "ci_lo", "ci_hi", "n", "unit", "note", "decides", "primary", "detail")
STR_COLUMNS = (
    "measure",
    "variant",
    "twin",
    "minus_variant",
    "minus_twin",
    "group",
    "dataset",
    "over",
    "unit",
    "note",
    "detail",
)
VARIANTS_SEP = " "  # the `variants` column: names joined (variant names are [A-Za-z0-9_]+)


def number_text(x) -> str:
    """3 significant digits, 'n/a' for a missing or non-finite number."""
    return f"{x:.3g}" if isinstance(x, Real) and not isinstance(x, bool) and math.isfinite(x) else "n/a"


def layer_text(layer: int) -> str:
    """A hidden layer as the tables and evidence name it: 'l0' is the first (0-based, as in the
    per-layer columns of pipeline.spec.records.layer_column)."""
    return f"l{layer}"


def _missing(x) -> bool:
    """None, NaN, a missing value as a table reader gives it (pandas' NA), or an empty text."""
    if x is None or (isinstance(x, str) and x == ""):
        return True
    if isinstance(x, (str, tuple, list)):
        return False
    try:
        return bool(x != x)  # NaN
    except TypeError:  # pandas' NA has no truth value
        return True


@dataclass(frozen=True, kw_only=True)
class Endpoint:
    """One effect with its interval over seeds, and where it was measured.

    measure        what is measured ("growth exponent alpha"); declared by the claim in advance
    effect, lo, hi the estimate and its interval at report.ci_level (NaN lo/hi: none, e.g. an
                   identity's worst case)
    n              members (or pairs) it is computed from
    unit           of the effect
    variant        the variant measured (the detached one of a pair)
    twin           the variant it is compared against, per seed (detached minus twin), or None
    minus_variant, minus_twin   a second (variant, twin) pair whose excess is subtracted (claim 3's
                   difference of excesses), or None
    group, variants  a named set of variants measured together ("detached batch centering" and its
                   members; or just the members: the controls "none and frozen")
    dataset        None: pooled over data sets
    lr             None: pooled or averaged over lrs (the measure says how)
    layer          hidden layer, 0-based; None: not per layer
    refresh_every  the refresh interval K of a population variant (claim 4's sweep), or None
    over           how it is pooled, when that is part of what it is ("max over members and evaluations")
    note           descriptive, not identifying (counts seen in the data)
    decides        whether the claim's rule counted it
    primary        whether it is the claim's primary endpoint (Claim.primary names the measure; set
                   by Claim.evaluate)
    """

    measure: str
    effect: float
    lo: float = NAN
    hi: float = NAN
    n: int
    unit: str = ""
    variant: str | None = None
    twin: str | None = None
    minus_variant: str | None = None
    minus_twin: str | None = None
    group: str | None = None
    variants: tuple[str, ...] = ()
    dataset: str | None = None
    lr: float | None = None
    layer: int | None = None
    refresh_every: float | None = None
    over: str | None = None
    note: str = ""
    decides: bool = False
    primary: bool = False

    def __post_init__(self):
        put = object.__setattr__  # frozen: normalize the types once, so keys compare across sources
        for f in ("effect", "lo", "hi"):
            put(self, f, NAN if _missing(getattr(self, f)) else float(getattr(self, f)))
        put(self, "n", int(self.n))
        for f in ("lr", "refresh_every"):
            put(self, f, None if _missing(getattr(self, f)) else float(getattr(self, f)))
        put(self, "layer", None if _missing(self.layer) else int(self.layer))
        for f in ("variant", "twin", "minus_variant", "minus_twin", "group", "dataset", "over"):
            put(self, f, None if _missing(getattr(self, f)) else str(getattr(self, f)))
        v = self.variants
        put(
            self,
            "variants",
            tuple(v.split(VARIANTS_SEP))
            if isinstance(v, str) and v
            else ()
            if _missing(v) or isinstance(v, str)
            else tuple(map(str, v)),
        )
        put(self, "unit", "" if _missing(self.unit) else str(self.unit))
        put(self, "note", "" if _missing(self.note) else str(self.note))
        put(self, "decides", bool(self.decides))
        put(self, "primary", bool(self.primary))
        if (self.minus_variant is None) != (self.minus_twin is None):
            raise ValueError(f"{self.measure}: minus_variant and minus_twin go together")
        if not self.measure:
            raise ValueError("an endpoint needs a measure")

    # -- identity ---------------------------------------------------------------------------------
    @property
    def key(self) -> tuple:
        """What the endpoint is: its measure and where it was measured (not its numbers, its unit,
        its note or its display text). Two endpoints match across setups when their keys are equal."""
        return (self.measure, *(getattr(self, f) for f in WHERE))

    # -- display (derived) ------------------------------------------------------------------------
    def _who(self) -> str:
        if self.minus_variant is not None:
            return f"({self.variant} - {self.twin}) - ({self.minus_variant} - {self.minus_twin})"
        if self.twin is not None:
            return f"{self.variant} vs {self.twin}"
        members = (
            (", ".join(self.variants[:-1]) + " and " + self.variants[-1])
            if len(self.variants) > 1
            else "".join(self.variants)
        )
        if self.group is not None:
            return f"{self.group} ({', '.join(self.variants)})" if self.variants else self.group
        return members or (self.variant or "")

    @property
    def detail(self) -> str:
        """Where, as text: 'center_detached vs center, digits, lr 1', 'center_detached, synthetic,
        lr 0.1, layer l0', 'synthetic: (a - a_twin) - (b - b_twin)', 'population_detached, K = 10,
        digits, lr 0.1'; then ': note'. Derived from the fields: change a field, the text follows."""
        who = self._who()
        if self.minus_variant is not None and self.dataset is not None:
            head, rest = f"{self.dataset}: {who}", []
        else:
            head, rest = who, [self.dataset]
        rest = [
            *([f"K = {self.refresh_every:g}"] if self.refresh_every is not None else []),
            *rest,
            f"lr {self.lr:g}" if self.lr is not None else None,
            f"layer {layer_text(self.layer)}" if self.layer is not None else None,
            self.over,
        ]
        text = ", ".join(p for p in (head, *rest) if p)
        return f"{text}: {self.note}" if self.note else text

    def text(self) -> str:
        iv = f" [{number_text(self.lo)}, {number_text(self.hi)}]" if math.isfinite(self.lo) else ""
        return f"{self.measure} ({self.detail}): {number_text(self.effect)}{iv} {self.unit}, n = {self.n}".replace(
            " ,", ","
        )

    # -- the table row (tables/<claim>.csv) ---------------------------------------------------------
    def row(self) -> dict:
        """This endpoint as one row of TABLE_COLUMNS (None where a field is unset; lo/hi as ci_lo/ci_hi)."""
        r = {f: getattr(self, f) for f in ("measure", *WHERE, "effect", "n", "unit", "note", "decides", "primary")}
        r.update(variants=VARIANTS_SEP.join(self.variants) or None, ci_lo=self.lo, ci_hi=self.hi, detail=self.detail)
        return {c: r[c] for c in TABLE_COLUMNS}

    @classmethod
    def from_row(cls, row: dict) -> Endpoint:
        """The endpoint a TABLE_COLUMNS row holds (missing values, as a CSV reader gives them, are None)."""
        names = {f.name for f in fields(cls)}
        kw = {k: v for k, v in row.items() if k in names}
        kw.update(lo=row["ci_lo"], hi=row["ci_hi"])
        return cls(**kw)
