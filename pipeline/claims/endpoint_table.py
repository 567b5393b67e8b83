"""The endpoints table, `tables/<claim>.csv`: the one writer (endpoints -> DataFrame) and the one
reader (CSV -> typed DataFrame, or back to Endpoints). Its columns are
pipeline.spec.endpoints.TABLE_COLUMNS: the typed fields (measure, variant, twin, dataset, lr,
layer, ...), the numbers (effect, ci_lo, ci_hi, n, unit), decides, primary, and `detail`, the
display text derived from the fields (for readers; nothing parses it).

    from pipeline.claims.endpoint_table import endpoint_frame, read_endpoint_table, endpoints_of
"""

from __future__ import annotations

from pathlib import Path

import pandas as pd

from pipeline.spec.endpoints import STR_COLUMNS, TABLE_COLUMNS, Endpoint

DTYPES = {
    **{c: "object" for c in STR_COLUMNS},
    "variants": "object",
    "lr": "float64",
    "refresh_every": "float64",
    "layer": "Int64",
    "effect": "float64",
    "ci_lo": "float64",
    "ci_hi": "float64",
    "n": "int64",
    "decides": "bool",
    "primary": "bool",
}


def _typed(frame: pd.DataFrame) -> pd.DataFrame:
    frame = frame.astype(DTYPES)
    for c in (*STR_COLUMNS, "variants"):  # a missing text is None, not NaN or ""
        frame[c] = frame[c].where(frame[c].notna() & (frame[c] != ""), None)
    for c in ("unit", "note", "detail"):
        frame[c] = frame[c].fillna("")
    return frame


def endpoint_frame(endpoints) -> pd.DataFrame:
    """The table of these endpoints, one row each, TABLE_COLUMNS (header only when there are none)."""
    return _typed(pd.DataFrame([e.row() for e in endpoints], columns=list(TABLE_COLUMNS)))


def is_endpoint_table(frame: pd.DataFrame) -> bool:
    return set(TABLE_COLUMNS) <= set(frame.columns)


def read_endpoint_table(path: Path) -> pd.DataFrame | None:
    """tables/<claim>.csv (or tables/endpoints.csv) as the typed endpoints table; None where the file
    is missing or is not an endpoints table (a claim may write its own table instead: claim 1's
    member groups). Columns beyond the schema's come first, as read. A table in the layout before
    the typed fields (display text only) is refused (ValueError): nothing parses that text."""
    try:
        frame = pd.read_csv(
            path,
            dtype={c: "object" for c in (*STR_COLUMNS, "variants")},
            keep_default_na=False,
            na_values={c: [""] for c in TABLE_COLUMNS},
        )
    except (FileNotFoundError, pd.errors.EmptyDataError):
        return None
    if not is_endpoint_table(frame):
        if {"endpoint", "detail", "decides"} <= set(frame.columns):  # the layout before the typed fields
            raise ValueError(
                f"{path}: an endpoints table in the old layout (display text only, no typed "
                f"fields): rebuild that report (python -m pipeline.report)"
            )
        return None
    extra = [c for c in frame.columns if c not in TABLE_COLUMNS]  # e.g. endpoints.csv's `claim`, kept first
    return _typed(frame[extra + list(TABLE_COLUMNS)])


def endpoints_of(frame: pd.DataFrame) -> list[Endpoint]:
    """The endpoints a table holds (the inverse of endpoint_frame)."""
    return [Endpoint.from_row({k: (None if pd.isna(v) else v) for k, v in r.items()}) for r in frame.to_dict("records")]


def with_keys(frame: pd.DataFrame) -> pd.DataFrame:
    """The table with a `key` column: each row's Endpoint.key (what matching across setups compares)."""
    return frame.assign(key=[e.key for e in endpoints_of(frame)])
