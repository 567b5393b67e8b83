"""The warm-start path: a forked child of the server does exactly what a cold process does."""
from __future__ import annotations

import os
import subprocess
import sys
import time
from pathlib import Path

import pytest
import yaml

from tests.conftest import BASE

ROOT = Path(__file__).resolve().parents[1]
pytestmark = pytest.mark.slow


def _cli(args, env):
    return subprocess.run([sys.executable, "-m", "pipeline.train", *args], cwd=ROOT, env=env,
                          capture_output=True, text=True, timeout=300)


def test_warm_child_matches_cold_process_and_passes_errors_through(tmp_path):
    params = tmp_path / "params.yaml"
    params.write_text(yaml.safe_dump(BASE, sort_keys=False))
    env = {**os.environ, "NORMLAB_WARM": "1", "NORMLAB_WARM_IDLE": "30"}
    common = ["--params", str(params), "--dataset", "synthetic", "--no-track"]
    cold = _cli([*common, "--variant", "bn", "--out", str(tmp_path / "cold")], {**env, "NORMLAB_WARM": "0"})
    assert cold.returncode == 0, cold.stderr
    _cli(["--help"], env)  # the first call of a checkout starts the server
    for _ in range(120):
        status = subprocess.run([sys.executable, "-m", "pipeline.warm", "status"], cwd=ROOT, env=env,
                                capture_output=True, text=True).stdout
        if " up " in status:
            break
        time.sleep(0.5)
    assert " up " in status
    warm = _cli([*common, "--variant", "bn", "--out", str(tmp_path / "warm")], env)
    assert warm.returncode == 0, warm.stderr
    for f in ("history.parquet", "summary.json", "config.json"):
        assert (tmp_path / "cold" / f).read_bytes() == (tmp_path / "warm" / f).read_bytes(), f
    bad = _cli([*common, "--variant", "nope", "--out", str(tmp_path / "bad")], env)
    assert bad.returncode == 2
    assert bad.stderr.strip().startswith("normlab: --variant: unknown variant 'nope'")
    assert not (tmp_path / "bad").exists()
