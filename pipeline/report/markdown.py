"""Markdown cells and tables: the one formatting the report and its sections share (render, mechanism)."""

from __future__ import annotations

import math

import pandas as pd


def num_text(x, digits: int = 3) -> str:
    """A number as the report prints it: 3 significant digits, an en dash where there is none."""
    if x is None or (isinstance(x, float) and not math.isfinite(x)):
        return "–"
    return f"{x:.{digits}g}" if isinstance(x, float) else str(x)


def cell_text(x) -> str:
    if isinstance(x, float):
        x = num_text(x)
    return str(x).replace("|", "\\|").replace("\n", " ")  # a pipe would split the cell


def md_table(frame: pd.DataFrame) -> str:
    cols = list(frame.columns)
    lines = ["| " + " | ".join(map(cell_text, cols)) + " |", "|" + "---|" * len(cols)]
    lines += ["| " + " | ".join(cell_text(r[c]) for c in cols) + " |" for _, r in frame.iterrows()]
    return "\n".join(lines)
