"""b's drift under SGD, momentum and Adam against pipeline.nets.drift's closed forms, on the bias-only toy
trained on the full batch (its gradient is then constant: the theory is exact)."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
import torch.nn.functional as F

from pipeline.cell import run_cell
from pipeline.data.sets import StackedDataModule
from pipeline.nets.build import build_model
from pipeline.nets.drift import displacement
from tests.conftest import make_cell

FULL = 160  # the train split of the 200-sample synthetic set: one batch is the whole set


def _constant_gradient(cell) -> list[np.ndarray]:
    """dl/db of every hidden layer at init, on the full training set (training mode)."""
    dm = StackedDataModule(cell.dataset, list(cell.optim.seeds), cell.optim.batch_size, cell.train.steps)
    dm.setup()
    model = build_model(dm.input_shape, dm.num_classes, list(cell.optim.seeds), cell.model, cell.variant).train()
    logits = model(dm.x_train.expand(1, -1, -1))
    F.cross_entropy(logits[0], dm.y_train).backward()
    return [lin.bias.grad[0].flatten().numpy().astype(np.float64) for lin, _ in model.hidden]


@pytest.mark.parametrize(
    "optim", [{"name": "sgd"}, {"name": "sgd", "momentum": 0.9}, {"name": "adam"}], ids=["sgd", "momentum", "adam"]
)
def test_toy_drift_follows_the_optimizers_closed_form(tmp_path, optim):
    lr, steps = 0.05, 40
    cell = make_cell(
        "bias_only_toy",
        optim={"lrs": [lr], "seeds": [0], "batch_size": FULL, **optim},
        train={"steps": steps, "log_every": 1, "eval_every": 20},
    )
    run_cell(cell, tmp_path / "toy", track=False, progress=False)
    h = pd.read_parquet(tmp_path / "toy" / "history.parquet").dropna(subset=["b_drift/l0"])
    grads = _constant_gradient(cell)
    for i, g in enumerate(grads):
        assert np.count_nonzero(g) > 0
        want = [
            np.linalg.norm(displacement(g, lr, int(t), optim["name"], optim.get("momentum", 0.0))) for t in h["step"]
        ]
        np.testing.assert_allclose(h[f"b_drift/l{i}"], want, rtol=2e-4, atol=1e-6)
    if optim["name"] == "adam":  # every coordinate with G != 0 moves lr per step, whatever its size
        t = h["step"].to_numpy()
        np.testing.assert_allclose(h["b_drift/l0"], lr * t * np.sqrt(np.count_nonzero(grads[0])), rtol=1e-3)


def test_momentum_drift_tends_to_lr_g_over_one_minus_mu_per_step():
    g = np.array([0.3, -0.4])
    late = displacement(g, 0.1, 2001, "sgd", 0.9) - displacement(g, 0.1, 2000, "sgd", 0.9)
    np.testing.assert_allclose(late, -0.1 * g / (1 - 0.9), rtol=1e-9)
    np.testing.assert_allclose(displacement(g, 0.1, 7, "sgd"), -0.7 * g)
    with pytest.raises(ValueError):
        displacement(g, 0.1, 7, "rmsprop")
