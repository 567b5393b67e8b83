"""The grid's cell records, checked against the current params, as the report reads them.

    from pipeline.report.load import load_grid
    grid = load_grid(params, Path("runs"))   # grid.cells, grid.excluded, grid.histories

A cell of the current grid is used only when its records were made by the current params:
its summary's config_hash must equal the hash of the cell settings params.yaml gives now.
A cell trained under other params, or never trained, is excluded and named (the report lists
it under "Cells excluded", and so does stderr). A corrupt or half-missing record is not
skipped: records.RecordError (one line naming the file) stops the report before any work.
Each cell is read as one consistent snapshot (records.read_cell: summary, history and config from
one write, even while a grid rewrites the cell; the CellRecord carries the outputs hash of exactly
the bytes read, which the report uses to find the cell's MLflow run).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import pandas as pd

from pipeline import records
from pipeline.config import ConfigError, Params, cell_settings
from pipeline.spec.names import cell_name


@dataclass
class Grid:
    cells: list[records.CellRecord]  # included, in grid order
    excluded: list[tuple[str, str]] = field(default_factory=list)  # (cell name, why), in grid order
    histories: pd.DataFrame | None = None  # long: every included cell's history

    @property
    def summaries(self) -> list[records.CellSummary]:
        return [c.summary for c in self.cells]

    @property
    def by_cell(self) -> dict[str, pd.DataFrame]:
        return {c.summary.cell: c.history for c in self.cells}

    @property
    def configs(self) -> dict[str, dict]:
        return {c.summary.cell: c.config for c in self.cells}

    @property
    def datasets(self) -> list[str]:
        return list(dict.fromkeys(c.summary.dataset for c in self.cells))


def load_grid(params: Params, runs: Path) -> Grid:
    runs = Path(runs)
    cells, excluded = [], []
    for v in params.grid.variants:
        for d in params.grid.datasets:
            name = cell_name(v, d)
            folder = runs / name
            if not folder.exists():
                excluded.append((name, f"{folder}: missing (not trained; run `dvc repro`)"))
                continue
            rec = records.read_cell(folder)  # RecordError on a missing/corrupt file: not a skip
            want = records.config_hash(cell_settings(params, v, d))
            got = rec.summary.config_hash
            if got != want:
                excluded.append(
                    (
                        name,
                        f"{folder}: trained under other params (config hash {got}, "
                        f"params.yaml gives {want}); run `dvc repro`",
                    )
                )
                continue
            cells.append(rec)
    if not cells:
        raise ConfigError(
            f"{runs}: no cell of the current grid has records made by the current params "
            f"({len(excluded)} excluded, e.g. {excluded[0][1]})"
        )
    return Grid(cells, excluded, long_history(cells))


def long_history(cells: list[records.CellRecord]) -> pd.DataFrame:
    """One frame for all cells: each history with its cell, variant and data set."""
    frames = []
    for c in cells:
        s = c.summary
        frames.append(c.history.assign(cell=s.cell, variant=s.variant, dataset=s.dataset))
    return pd.concat(frames, ignore_index=True)
