"""Shared fixtures: tiny settings built in code, and a throw-away MLflow store."""

from __future__ import annotations

import copy
import os

import pytest

from pipeline.config import Params, cell_settings

BASE = {
    "grid": {"variants": ["bn"], "datasets": ["synthetic"]},
    "variants": {
        "none": {"norm": "none", "affine": False},
        "bn": {"norm": "bn", "affine": True},
        "bn_nobias": {"norm": "bn", "affine": True, "bias": False},
        "center": {"norm": "center", "affine": False},
        "center_detached": {"norm": "center_detached", "affine": False},
        "standardize_detached": {"norm": "standardize_detached", "affine": False},
        "population_detached": {"norm": "population_detached", "affine": False, "refresh_every": 3},
        "population_detached_k1": {"norm": "population_detached", "affine": False, "refresh_every": 1},
        "population_center_detached": {"norm": "population_center_detached", "affine": False, "refresh_every": 3},
        "running_detached": {"norm": "running_detached", "affine": False},
        "running_center_detached": {"norm": "running_center_detached", "affine": False},
        "frozen": {"norm": "frozen", "affine": False},
        "batch_renorm": {"norm": "batch_renorm", "affine": True},
        # hold, ramp and the limits all fall inside the tests' 15-20 steps
        "batch_renorm_ramp": {"norm": "batch_renorm", "affine": True, "renorm_hold": 3, "renorm_ramp": 6},
        "layernorm": {"norm": "layernorm", "affine": True},
        "groupnorm": {"norm": "groupnorm", "affine": True, "groups": 2},
        "weightnorm": {"norm": "weightnorm", "affine": False},
        "bias_only_toy": {"norm": "center_detached", "affine": False, "trainable": "bias"},
    },
    "datasets": {
        "synthetic": {"kind": "synthetic", "input_mean": 3.0, "dim": 6, "classes": 3, "samples": 200, "seed": 0},
        "synthetic_zero_mean": {"kind": "synthetic", "input_mean": 0.0, "dim": 6, "classes": 3, "samples": 200},
        "digits": {"kind": "digits"},
        "digits_images": {"kind": "digits_images", "subset": 200},  # 1x8x8 images, for model.kind cnn
    },
    "model": {"depth": 2, "width": 8},
    "optim": {"lrs": [0.05, 0.5], "seeds": [0, 1], "batch_size": 16},
    "train": {"steps": 20, "log_every": 1, "eval_every": 5, "threads": 1},
    "tracking": {"experiment": "test", "log_every": 1, "flush_every": 7},
}

# warm-start servers started by the tests' CLI calls go away soon after the suite ends
os.environ.setdefault("NORMLAB_WARM_IDLE", "30")

ALL_VARIANTS = [v for v in BASE["variants"] if v != "bias_only_toy"]


def merge(base: dict, over: dict) -> dict:
    out = copy.deepcopy(base)
    for k, v in over.items():
        out[k] = merge(out[k], v) if isinstance(v, dict) and isinstance(out.get(k), dict) else v
    return out


def make_params(**over) -> Params:
    return Params.model_validate(merge(BASE, over))


def make_cell(variant: str, dataset: str = "synthetic", **over):
    return cell_settings(make_params(**over), variant, dataset)


@pytest.fixture
def mlflow_uri(tmp_path, monkeypatch):
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    monkeypatch.setenv("MLFLOW_TRACKING_URI", uri)
    return uri


class LoopbackServer:
    """An MLflow server process on 127.0.0.1 (tests/mlflow_loopback.py) over `db`; kill() is its death."""

    def __init__(self, folder):
        import subprocess
        import sys
        from pathlib import Path

        from pipeline.spec import environment

        Path(folder).mkdir(parents=True, exist_ok=True)
        self.db = Path(folder) / "server.db"
        script = Path(__file__).with_name("mlflow_loopback.py")
        self.proc = subprocess.Popen(
            [sys.executable, str(script), str(self.db), str(Path(folder) / "artifacts")],
            stdout=subprocess.PIPE,
            stderr=subprocess.DEVNULL,
            text=True,
            env={**os.environ, **environment.NO_TELEMETRY},
        )
        line = self.proc.stdout.readline()  # "port N" once the store is migrated and the socket listens
        if not line.startswith("port "):
            self.kill()
            raise RuntimeError(f"the loopback MLflow server did not start (exit {self.proc.returncode})")
        self.uri = f"http://127.0.0.1:{int(line.split()[1])}"

    def kill(self) -> None:
        """SIGKILL by pid, as a server dies; returns once it is gone (its port refuses from then on)."""
        if self.proc.poll() is None:
            self.proc.kill()
        self.proc.wait()


@pytest.fixture
def mlflow_server(tmp_path):
    """A live MLflow server on loopback (HTTP), killed by the test when it wants it dead; always gone after."""
    server = LoopbackServer(tmp_path / "mlflow-server")
    try:
        yield server
    finally:
        server.kill()


# -- hand-built cell records (the shape of summary.json: pipeline.spec.records) ------------------
def layer_dict(layer: int = 0, **over) -> dict:
    """One hidden layer's LayerStats as summary.json holds it (a layer with b, by default)."""
    return {
        "layer": layer,
        "W_norm": 6.0,
        "W_norm0": 4.0,
        "b_norm": 2.0,
        "b_norm0": 0.0,
        "b_drift": 2.0,
        "gsum_persist": 0.9,
        **over,
    }


def member_dict(j: int = 0, lr: float = 0.1, seed: int = 0, layers: list | None = None, **over) -> dict:
    """One MemberSummary as summary.json holds it: a member that trained well, one hidden layer."""
    return {
        "member": j,
        "lr": lr,
        "seed": seed,
        "diverged": False,
        "diverged_step": None,
        "initial_loss": 1.4,
        "final_loss": 0.3,
        "init_full_loss_train": 1.4,
        "init_full_acc_train": 0.25,
        "full_loss_train": 0.2,
        "full_acc_train": 0.95,
        "full_loss_eval": 0.5,
        "full_acc_eval": 0.8,
        "val_loss_eval": 0.3,
        "val_acc_eval": 0.9,
        "layers": [layer_dict(0)] if layers is None else layers,
        **over,
    }


def summary_dict(cell: str = "bn-synthetic", members: list | None = None, **over) -> dict:
    """A whole summary.json (CellSummary) as a dict: 4 classes, one member by default."""
    variant, dataset = cell.rsplit("-", 1)
    return {
        "cell": cell,
        "variant": variant,
        "dataset": dataset,
        "norm": variant,
        "steps": 500,
        "input_mean_norm": 3.0,
        "classes": 4,
        "chance_loss": 1.3862943611198906,
        "config_hash": "x",
        "members": [member_dict()] if members is None else members,
        **over,
    }


def summary_record(cell: str = "bn-synthetic", members: list | None = None, **over):
    """summary_dict validated: the typed CellSummary a reader gets."""
    from pipeline.spec.records import CellSummary

    return CellSummary.model_validate(summary_dict(cell, members, **over))
