"""The statistics the verdicts are to be decided by (issue 17), calibrated before they decide
anything: exact and cluster-level inference (inference) and a simulator of null grids with the
real grid's structure (null_grid; `python -m pipeline.stats.null_grid --report`). Not yet wired into
pipeline/claims: docs/statistics.md says what each claim will call."""
