"""A screenshot of MLflow's runs table as a user's browser shows it (headless Chromium).

    .venv/bin/python scripts/screenshot_runs.py --store sqlite:///mlflow.db --experiment normlab --out /tmp/runs.png

Starts `mlflow ui` on 127.0.0.1 (a free port) over --store, waits until it answers, opens
http://127.0.0.1:<port>/#/experiments/<id>/runs in headless Chromium (Debian: `apt-get install
chromium`), writes the PNG and stops the UI it started. Telemetry stays off (MLflow's, DO_NOT_TRACK).
Exit 0: written; 1: no chromium, the UI did not come up, or no screenshot; 2: bad arguments.
"""

from __future__ import annotations

import argparse
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from pipeline.spec import environment  # noqa: E402
from pipeline.tracking.loopback import server_env  # noqa: E402

BROWSERS = ("chromium", "chromium-browser", "google-chrome")


def find_browser() -> str | None:
    return next((path for path in map(shutil.which, BROWSERS) if path), None)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def experiment_id(store: str, name: str) -> str | None:
    from mlflow.tracking import MlflowClient

    exp = MlflowClient(store).get_experiment_by_name(name)
    return exp.experiment_id if exp else None


def wait_until_up(url: str, proc: subprocess.Popen, timeout_s: float) -> bool:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline and proc.poll() is None:
        try:
            with urllib.request.urlopen(url, timeout=2) as reply:
                if reply.status == 200:
                    return True
        except OSError:
            time.sleep(0.5)
    return False


# MLflow 3's UI keeps a per-browser switch, GenAI (its default) or model training; this query selects
# the latter for the page opened (the experiment's mlflow.experimentKind tag does not move the switch)
# (append &orderByKey=metrics.%60largest_trained_lr%60&orderByAsc=false to rank runs by a parent-run metric)
TRAINING_VIEW = "?workflowType=machine_learning"


def screenshot(
    store: str,
    experiment: str,
    out: Path,
    *,
    width: int = 2200,
    height: int = 1000,
    wait_ms: int = 20000,
    up_timeout_s: float = 180,
    query: str = TRAINING_VIEW,
    dom: Path | None = None,
) -> str:
    """Write the PNG (and, given `dom`, the page's DOM as the browser drew it: what a test reads);
    returns the URL shot. Raises RuntimeError with one line on any failure."""
    browser = find_browser()
    if browser is None:
        raise RuntimeError(f"no headless browser found ({', '.join(BROWSERS)}): apt-get install chromium")
    exp = experiment_id(store, experiment)
    if exp is None:
        raise RuntimeError(f"--experiment: no experiment {experiment!r} in {store}")
    env = server_env(environment.child_env(), "ui")  # telemetry and MLflow's job runner off, loopback only
    port = free_port()
    mlflow = Path(sys.executable).parent / "mlflow"
    ui = subprocess.Popen(
        [str(mlflow), "ui", "--backend-store-uri", store, "--host", "127.0.0.1", "--port", str(port)],
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        start_new_session=True,
    )
    try:
        if not wait_until_up(f"http://127.0.0.1:{port}/health", ui, up_timeout_s):
            err = ui.stderr.read().decode(errors="replace")[-400:] if ui.poll() is not None else "no answer"
            raise RuntimeError(f"mlflow ui on 127.0.0.1:{port} did not come up: {err}")
        url = f"http://127.0.0.1:{port}/#/experiments/{exp}/runs{query}"
        out.parent.mkdir(parents=True, exist_ok=True)
        out.unlink(missing_ok=True)
        # --virtual-time-budget lets the single-page app fetch and draw the runs before the shot
        subprocess.run(
            [
                browser,
                "--headless=new",
                "--no-sandbox",
                "--disable-gpu",
                "--hide-scrollbars",
                "--no-first-run",
                "--disable-extensions",
                f"--window-size={width},{height}",
                f"--virtual-time-budget={wait_ms}",
                f"--screenshot={out}",
                url,
            ],
            env=env,
            capture_output=True,
            timeout=wait_ms / 1000 + 120,
        )
        if not out.exists() or out.stat().st_size == 0:
            raise RuntimeError(f"{browser} wrote no screenshot of {url}")
        if dom is not None:
            drawn = subprocess.run(
                [
                    browser,
                    "--headless=new",
                    "--no-sandbox",
                    "--disable-gpu",
                    "--no-first-run",
                    "--disable-extensions",
                    f"--window-size={width},{height}",
                    f"--virtual-time-budget={wait_ms}",
                    "--dump-dom",
                    url,
                ],
                env=env,
                capture_output=True,
                timeout=wait_ms / 1000 + 120,
            )
            Path(dom).write_bytes(drawn.stdout)
        return url
    finally:
        if ui.poll() is None:
            os.killpg(ui.pid, signal.SIGTERM)  # the UI's own session: mlflow ui and its server workers
            try:
                ui.wait(timeout=20)
            except subprocess.TimeoutExpired:
                os.killpg(ui.pid, signal.SIGKILL)
                ui.wait()


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="scripts/screenshot_runs.py", description=__doc__.splitlines()[0])
    ap.add_argument(
        "--store",
        default=environment.tracking_uri(),
        help="tracking store (default: MLFLOW_TRACKING_URI, else the project's mlflow.db)",
    )
    ap.add_argument("--experiment", default="normlab")
    ap.add_argument("--out", default="/tmp/normlab-runs.png")
    ap.add_argument("--query", default=TRAINING_VIEW, help=f"after the runs page's address (default {TRAINING_VIEW})")
    ap.add_argument("--wait-ms", type=int, default=20000, help="browser time for the page to load its runs")
    args = ap.parse_args(argv)
    if args.store.startswith(("http://", "https://")):
        print(
            "normlab: --store: give a database store (sqlite:///...); a tracking server is its own UI", file=sys.stderr
        )
        return 2
    try:
        url = screenshot(args.store, args.experiment, Path(args.out), wait_ms=args.wait_ms, query=args.query)
    except RuntimeError as err:
        print(f"normlab: screenshot: {err}", file=sys.stderr)
        return 1
    print(f"wrote {args.out} ({url})")
    return 0


if __name__ == "__main__":
    sys.exit(main())
