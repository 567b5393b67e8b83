"""The one owner of what things are called: cells, DVC stages, MLflow runs.

A cell is one (variant, data set) of the grid; its folder, its DVC stage and its MLflow parent run
are all named from the names here, and nothing else spells them out:

    cell_name("bn", "synthetic")          -> "bn-synthetic"            (runs/<cell>, tags.cell)
    stage_name("bn-synthetic")            -> "train@bn-synthetic"      (dvc.yaml's train matrix)
    cell_of_stage("train@bn-synthetic")   -> "bn-synthetic"            (dvc status --json keys)
    parent_run_name("bn-synthetic")       -> "bn-synthetic"            (the cell's MLflow parent run)
    member_run_name("bn-synthetic", 0.1, 3) -> "bn-synthetic lr=0.1 seed=3"   (one child run per member)
    REPORT_STAGE, REPORT_RUN              -> "report"                  (the report's stage and run)
"""

from __future__ import annotations

TRAIN_STAGE = "train"  # dvc.yaml's matrix stage: one `train@<cell>` per cell
REPORT_STAGE = "report"  # dvc.yaml's report stage
REPORT_RUN = "report"  # the MLflow run the report logs
TRAIN_ENTRY = "pipeline/train.py"  # a cell's entry point, relative to the checkout: MLflow's source of its runs


def cell_name(variant: str, dataset: str) -> str:
    """`<variant>-<dataset>`: variant and data-set names hold no `-` (params validation), so it is unambiguous."""
    return f"{variant}-{dataset}"


def stage_name(cell: str) -> str:
    """The DVC stage that trains a cell (dvc.yaml's `train` matrix)."""
    return f"{TRAIN_STAGE}@{cell}"


def cell_of_stage(stage: str) -> str | None:
    """The cell a `train@<cell>` stage trains; None for any other stage (the report)."""
    head, sep, cell = stage.partition("@")
    return cell if sep and head == TRAIN_STAGE else None


def parent_run_name(cell: str) -> str:
    """The cell's MLflow parent run: the cell's own name (the runs table lists cells by it)."""
    return cell


def member_run_name(cell: str, lr: float, seed: int) -> str:
    """One member's MLflow child run."""
    return f"{cell} lr={lr} seed={seed}"
