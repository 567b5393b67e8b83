"""MLflow: a cell's runs (runs), the forked process that makes its calls (process), the Lightning
callback feeding it (callback), the cell's own figure (cell_figure), and the PostgreSQL-backed
tracking server (server). Nothing here changes a cell's outputs: tracking settings retrain nothing."""
