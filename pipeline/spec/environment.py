"""The one owner of the environment every normlab process runs in: no usage telemetry, and where
the MLflow runs go. Standard library only (the `normlab` command and the warm client import it).

    from pipeline.spec import environment
    environment.apply()                     # this process: telemetry off unless the user said otherwise
    env = environment.child_env(base, X=1)  # a child process's environment, the same rule applied
    environment.tracking_uri()              # MLFLOW_TRACKING_URI, else sqlite:///<workspace>/mlflow.db

The workspace is the source checkout this package was loaded from (`pip install -e .`, `python -m`
in the repository, DVC's stages) or, for a normlab installed into site-packages, the current
working folder: records never land beside the installed package.

Telemetry: MLflow (MLFLOW_DISABLE_TELEMETRY, DO_NOT_TRACK), Ray (RAY_USAGE_STATS_ENABLED) and DVC
(DVC_NO_ANALYTICS; the repository's .dvc/config also says `analytics = false`) send nothing unless
the user set the variable first (setdefault: a user who opts in keeps the choice, and so do the
processes normlab starts). `pipeline/__init__.py` applies it at the first import of any normlab
module; processes started with an environment of their own (pool workers, Ray workers, the
tracking server, test and benchmark projects) get `child_env()`. The Makefile exports the same
three MLflow/Ray variables for the tools make starts itself (dvc, mlflow, pytest).
"""

from __future__ import annotations

import os
from collections.abc import Mapping, MutableMapping
from pathlib import Path

PACKAGE_PARENT = Path(__file__).resolve().parents[2]  # the folder holding `pipeline/`: a checkout or site-packages


def is_checkout(folder: Path) -> bool:
    """A normlab source checkout (or DVC's copy of one for `dvc exp run --temp`): the project's
    pyproject.toml and dvc.yaml side by side. site-packages, where pip installs the package, has neither."""
    return (folder / "pyproject.toml").is_file() and (folder / "dvc.yaml").is_file()


def project_root() -> Path:
    """The checkout this package runs from, else the current working folder (an installed normlab
    keeps its store, runs and reports where the user runs it, never inside site-packages)."""
    return PACKAGE_PARENT if is_checkout(PACKAGE_PARENT) else Path.cwd()


# the root at import: data paths and the report's docs link resolve against it (pipeline.config)
REPO_ROOT = project_root()

NO_TELEMETRY = {
    "MLFLOW_DISABLE_TELEMETRY": "true",
    "DO_NOT_TRACK": "true",
    "RAY_USAGE_STATS_ENABLED": "0",
    "DVC_NO_ANALYTICS": "true",
}


def apply(environ: MutableMapping[str, str] | None = None) -> None:
    """Telemetry off in `environ` (this process's by default) where the user has not chosen."""
    environ = os.environ if environ is None else environ
    for key, value in NO_TELEMETRY.items():
        environ.setdefault(key, value)


def telemetry_env() -> dict[str, str]:
    """The telemetry variables as this process has them (the defaults where unset): what a process
    started with an environment of its own (a Ray worker, a pool worker) must be given."""
    return {key: os.environ.get(key, value) for key, value in NO_TELEMETRY.items()}


def child_env(base: Mapping[str, str] | None = None, **extra: str) -> dict[str, str]:
    """A child process's environment: `base` (this process's by default) with telemetry off where
    `base` does not say otherwise, then `extra`."""
    env = dict(os.environ if base is None else base)
    apply(env)
    env.update(extra)
    return env


def workspace_root(root: Path | None = None) -> Path:
    """The user's checkout (project_root() unless given). `dvc exp run --temp` / `--queue` run stages
    in a throw-away copy under <workspace>/.dvc/tmp/exps/: records made there must land in the
    workspace's store, not the copy's."""
    root = project_root() if root is None else root
    parts = Path(root).parts
    for i in range(len(parts) - 3):
        if parts[i : i + 3] == (".dvc", "tmp", "exps"):
            return Path(*parts[:i])
    return Path(root)


def default_store(root: Path | None = None) -> str:
    """The runs store when MLFLOW_TRACKING_URI is not set: SQLite in the workspace (the checkout, or
    the current folder for an installed normlab); MLflow's artifacts go beside it (mlruns/)."""
    return f"sqlite:///{workspace_root(root) / 'mlflow.db'}"


def tracking_uri() -> str:
    """Where every normlab process records: MLFLOW_TRACKING_URI if set, else default_store()."""
    return os.environ.get("MLFLOW_TRACKING_URI") or default_store()


def command_name(module: str) -> str:
    """What a command's usage and --help call it: `normlab <cmd>` when started by the normlab CLI
    (pipeline/cli.py sets sys.argv[0] so), else the `python -m` form it was started with."""
    import sys

    return sys.argv[0] if sys.argv and sys.argv[0].startswith("normlab ") else f"python -m {module}"
