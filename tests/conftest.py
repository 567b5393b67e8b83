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
