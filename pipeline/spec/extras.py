"""The optional parts of normlab and the pip extra that installs each (pyproject.toml's
[project.optional-dependencies]): Ray for the ray executor, psycopg for the PostgreSQL-backed
tracking server. A plain `pip install normlab` trains, tracks (SQLite), reports and runs the local
executor; using a part whose extra is missing stops with one line saying what to install.

    ray = require("ray", "ray", "--executor ray", ExecutorError)   # the module, or ExecutorError(one line)
"""

from __future__ import annotations

import importlib
from types import ModuleType

# module -> the extra that installs it
EXTRAS = {"ray": "ray", "psycopg": "server"}


def missing_line(module: str, extra: str, what: str) -> str:
    """The one line shown when `what` needs `module` and it is not installed."""
    return f"{what} needs {module}, which is not installed: pip install 'normlab[{extra}]'"


def require(module: str, extra: str, what: str, error: type[Exception] = RuntimeError) -> ModuleType:
    """`module` imported, or `error` raised with missing_line() when it (or a module it needs) is absent."""
    try:
        return importlib.import_module(module)
    except ImportError:  # ModuleNotFoundError, or sys.modules[module] = None (how the tests hide it)
        raise error(missing_line(module, extra, what)) from None
