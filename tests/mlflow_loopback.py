"""An MLflow tracking server for the tests, one process a test can kill by pid as a server dies:

    python tests/mlflow_loopback.py DB_FILE ARTIFACTS_DIR     # prints "port N" once it answers

MLflow's own REST handlers (its Flask app, `mlflow.server.app`) on a SQLite file, served by
werkzeug on 127.0.0.1 from this single process: no uvicorn workers and no job consumers, which
`mlflow server` starts (~50 s under load here, and children that outlive a SIGKILL of the parent).
Each response closes its connection (HTTP/1.0), so once this process is gone every request a client
makes is refused, as with a dead server. The fixture `mlflow_server` (tests/conftest.py) runs it.
"""

from __future__ import annotations

import os
import sys


def main() -> None:
    db, artifacts = sys.argv[1], sys.argv[2]
    os.environ["_MLFLOW_SERVER_FILE_STORE"] = f"sqlite:///{db}"
    os.environ["_MLFLOW_SERVER_ARTIFACT_ROOT"] = artifacts  # clients write artifacts there themselves
    os.environ["_MLFLOW_SERVER_SERVE_ARTIFACTS"] = "false"
    from mlflow.server import app
    from mlflow.server.handlers import _get_tracking_store
    from werkzeug.serving import WSGIRequestHandler, make_server

    _get_tracking_store()  # creates and migrates the store before the port is announced

    class OneRequestPerConnection(WSGIRequestHandler):
        protocol_version = "HTTP/1.0"

        def log_request(self, *args, **kwargs) -> None:  # quiet: the tests read stdout for the port
            pass

    server = make_server("127.0.0.1", 0, app, threaded=True, request_handler=OneRequestPerConnection)
    print(f"port {server.server_port}", flush=True)
    server.serve_forever()


if __name__ == "__main__":
    main()
