"""MLflow's UI and tracking server listen on 127.0.0.1 only (`normlab ui`, `normlab server`).

    from pipeline.tracking.loopback import server_env
    env = server_env(environment.child_env(), "server")   # the server's environment, said in one line

MLflow has no authentication of its own: whoever reaches the port reads, writes and deletes every
run. Loopback keeps other machines out (not other users of this one: docs/scale-out.md says how to
put authentication in front). `mlflow server` also takes extra options for its web server from
the environment, after which it adds `--host 127.0.0.1`: gunicorn's `-b` is cumulative, so
MLFLOW_GUNICORN_OPTS='-b 0.0.0.0:5001' made a second socket on every address; uvicorn's `--uds`
or `--fd` serve a socket the host does not govern. Those variables are left out of the server's
environment, with one line saying why.

MLflow 3 also starts a job runner beside every `mlflow ui` / `mlflow server` over a database store (a
`_job_runner` and three huey consumers, for its GenAI jobs, polling for as long as the UI runs): normlab
submits no MLflow jobs, so server_env turns it off unless the user's environment says otherwise (MLflow
features that run as its jobs, e.g. SQL trace rollups, then need MLFLOW_SERVER_ENABLE_JOB_EXECUTION=true)
(measured: `mlflow ui --workers 1` over SQLite, its first 25 s: 10 processes and 19 CPU-s with it,
2 and 3 without).
"""

from __future__ import annotations

import sys
from collections.abc import Mapping

# mlflow server's options read from the environment that can add listening addresses
SERVER_OPTION_VARIABLES = ("MLFLOW_GUNICORN_OPTS", "MLFLOW_UVICORN_OPTS")
# MLflow's switch for its job runner (mlflow.environment_variables; default on)
JOB_EXECUTION = "MLFLOW_SERVER_ENABLE_JOB_EXECUTION"


def loopback_env(env: Mapping[str, str], command: str) -> dict[str, str]:
    """`env` without SERVER_OPTION_VARIABLES; one line on stderr for each one that was set."""
    out = dict(env)
    for name in SERVER_OPTION_VARIABLES:
        if out.pop(name, None) is not None:
            print(
                f"normlab {command}: {name} ignored: its options can make the server listen beyond 127.0.0.1, "
                "and MLflow has no authentication (to share it, put authentication in front: docs/scale-out.md)",
                file=sys.stderr,
                flush=True,
            )
    return out


def server_env(env: Mapping[str, str], command: str) -> dict[str, str]:
    """The environment of an MLflow UI or server normlab starts: loopback_env, and MLflow's job runner
    off unless `env` sets JOB_EXECUTION itself."""
    out = loopback_env(env, command)
    out.setdefault(JOB_EXECUTION, "false")
    return out
