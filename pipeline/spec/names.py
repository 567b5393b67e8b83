"""The one owner of what things are called: cells, DVC stages, MLflow runs.

A cell is one (variant, data set) of the grid; its folder, its DVC stage and its MLflow parent run
are all named from the two names here.
"""
from __future__ import annotations


def cell_name(variant: str, dataset: str) -> str:
    """`<variant>-<dataset>`: variant and data-set names hold no `-` (params validation), so it is unambiguous."""
    return f"{variant}-{dataset}"


def stage_name(cell: str) -> str:
    """The DVC stage that trains a cell (dvc.yaml's `train` matrix)."""
    return f"train@{cell}"
