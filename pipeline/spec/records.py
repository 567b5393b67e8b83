"""The typed records of a cell (summary, members, per-layer stats) and the names of per-layer columns.

Per-layer quantities are stored in the history (and sent to MLflow) under one column per layer;
`layer_column` is the only place that builds such a name, and nothing parses one back: readers
know the layer indices from the typed records (or the cell's depth) and build the names.
"""
from __future__ import annotations


def layer_column(quantity: str, layer: int) -> str:
    """The history / member-table / MLflow name of `quantity` on hidden layer `layer` (0-based)."""
    return f"{quantity}/l{layer}"
