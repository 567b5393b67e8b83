"""Aggregate the grid's cells into tables, figures and a verdict on each claim.

    python -m pipeline.report --runs runs --out reports [--params params.yaml] [--no-track]

Reads params.yaml and the records of the current grid's cells (runs/<variant>-<dataset>/),
checked against the current params (load.py), evaluates pipeline.claims.REGISTRY on
pipeline.outcomes' member table, and writes, all at once or not at all (a failing report
leaves the previous one as it was; other entries of --out are never touched):
  report.md      renders on GitHub; figures linked from figures/
  report.html    self-contained: figures embedded, opens with no server
  figures/*.png  figures.py
  tables/*.csv   tables.py: members, largest trained lr, outcome counts, one per verdict
  metrics.json   numbers only, for `dvc metrics show`
  plots/         b_norm/<variant>.csv, loss/<variant>.csv for `dvc plots show`
then logs the report as an MLflow run (mlflow_run.py) tagged with the cell runs found by content.

Modules: load (records -> checked cells), tables (CSVs, metrics.json, dvc plots), figures
(the registry of figures by name, overview figures), claim_figures (the figures claims name),
plotting (shared figure pieces), render (markdown, html), mlflow_run, cli (the steps, in order).
"""
