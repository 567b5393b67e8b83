"""MLflow's UI and tracking server listen on 127.0.0.1 only (`normlab ui`, `normlab server`).

    from pipeline.tracking.loopback import loopback_env
    env = loopback_env(environment.child_env(), "server")   # the server's environment, said in one line

MLflow has no authentication of its own: whoever reaches the port reads, writes and deletes every
run. Loopback keeps other machines out (not other users of this one: docs/scale-out.md says how to
put authentication in front). `mlflow server` also takes extra options for its web server from
the environment, after which it adds `--host 127.0.0.1`: gunicorn's `-b` is cumulative, so
MLFLOW_GUNICORN_OPTS='-b 0.0.0.0:5001' made a second socket on every address; uvicorn's `--uds`
or `--fd` serve a socket the host does not govern. Those variables are left out of the server's
environment, with one line saying why.
"""

from __future__ import annotations

import sys
from collections.abc import Mapping

# mlflow server's options read from the environment that can add listening addresses
SERVER_OPTION_VARIABLES = ("MLFLOW_GUNICORN_OPTS", "MLFLOW_UVICORN_OPTS")


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
