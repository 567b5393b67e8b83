"""docs/science.md's predictions, checked on small runs: exact where the theory is exact."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
import torch
import torch.nn.functional as F

from pipeline.cell import run_cell
from pipeline.nets.mlp import StackedMLP
from pipeline.spec.variants import names_where
from tests.conftest import make_cell


def _train(tmp_path, variant, name=None, **over):
    cell = make_cell(variant, **over)
    out = tmp_path / (name or variant)
    run_cell(cell, out, track=False, progress=False)
    return pd.read_parquet(out / "history.parquet")


def _layer_cols(h, prefix):
    return [c for c in h.columns if c.startswith(prefix + "/")]


def test_bn_bias_gradient_is_zero_and_b_stays_at_init(tmp_path):
    h = _train(tmp_path, "bn", optim={"lrs": [0.1, 1.0]})
    gb = h[_layer_cols(h, "grad_b")].to_numpy()
    gw = h[_layer_cols(h, "grad_W")].to_numpy()
    assert np.nanmax(gb) < 1e-6 * np.nanmax(gw)  # dl/db = 0 to float precision
    assert np.nanmax(h[_layer_cols(h, "b_drift")].to_numpy()) < 1e-6  # float32 residue of a zero gradient
    assert np.nanmin(gw) > 0  # ...while W does learn


def test_bn_and_bn_nobias_give_the_same_losses_step_by_step(tmp_path):
    a = _train(tmp_path, "bn")
    b = _train(tmp_path, "bn_nobias")
    np.testing.assert_allclose(a["loss"], b["loss"], rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(a["val_loss_eval"], b["val_loss_eval"], rtol=1e-5, atol=1e-6)


def test_center_detached_b_moves_by_exactly_lr_times_its_summed_gradients(tmp_path):
    h = _train(tmp_path, "center_detached", optim={"lrs": [0.05, 0.3]})
    for i in range(2):
        got, pred = h[f"b_drift/l{i}"].dropna(), h[f"b_drift_pred/l{i}"].dropna()
        assert got.iloc[-1] > 0
        np.testing.assert_allclose(got, pred, rtol=1e-4, atol=1e-7)


def _bare_sgd(variant, lr=0.2, steps=25, freeze_bias=False, dtype=torch.float32):
    """Plain loop (no Lightning): one member, full control over what trains."""
    cell = make_cell(variant, model={"depth": 2, "width": 8})
    torch.manual_seed(0)
    model = StackedMLP(6, 3, [0], cell.model, cell.variant).to(dtype)
    for lin in model.linears[:-1]:
        if freeze_bias and lin.bias is not None:
            lin.bias.requires_grad_(False)
    g = torch.Generator().manual_seed(1)
    mean = torch.randn(6, generator=g) * 2
    losses = []
    for _ in range(steps):
        x = (torch.randn(1, 32, 6, generator=g) + mean).to(dtype)
        y = torch.randint(0, 3, (1, 32), generator=g)
        loss = F.cross_entropy(model(x)[0], y[0])
        model.zero_grad()
        loss.backward()
        with torch.no_grad():
            for p in model.parameters():
                if p.requires_grad:
                    p -= lr * p.grad
        losses.append(loss.item())
    return np.array(losses), model


def test_center_detached_loss_does_not_depend_on_b():
    trained, m1 = _bare_sgd("center_detached")
    frozen, m2 = _bare_sgd("center_detached", freeze_bias=True)
    assert (m1.linears[0].bias - m2.linears[0].bias).norm() > 1e-3  # b did move in one run
    np.testing.assert_allclose(trained, frozen, rtol=1e-5, atol=1e-6)


def test_plain_network_loss_does_depend_on_b():
    """Control for the test above: without the normalization the two runs differ."""
    trained, _ = _bare_sgd("none")
    frozen, _ = _bare_sgd("none", freeze_bias=True)
    assert np.abs(trained - frozen).max() > 1e-3


def test_bias_only_toy_drifts_exactly_linearly_and_loss_stays(tmp_path):
    # full batch (train split of 200 samples = 160): G = sum_i g_i is the same every step
    h = _train(
        tmp_path,
        "bias_only_toy",
        optim={"lrs": [0.5], "seeds": [0], "batch_size": 160},
        train={"steps": 30, "log_every": 1, "eval_every": 10},
    )
    lr = 0.5
    rows = h.dropna(subset=["b_drift/l0"])
    t = rows["step"].to_numpy()
    for i in range(2):
        g0 = h[f"gsum/l{i}"].dropna().iloc[0]
        assert g0 > 0
        np.testing.assert_allclose(rows[f"b_drift/l{i}"], lr * g0 * t, rtol=1e-4, atol=1e-6)
    # the training-mode loss (batch statistics, here the full batch) does not move at all;
    # eval-mode losses use the EMA of mu_B, which lags behind the drifting b, so they may
    assert len(h["loss"].dropna()) == 30 and h["loss"].max() - h["loss"].min() < 1e-6


@pytest.mark.parametrize("variant", ["bn", "standardize_detached"])
def test_scale_invariance_of_the_weight_norm(variant):
    """bn: ||W'||^2 - ||W||^2 == lr^2 ||grad W||^2 exactly (<W, grad W> = 0);
    standardize_detached: the radial part is first order, not zero."""
    cell = make_cell(variant)
    model = StackedMLP(6, 3, [0], cell.model, cell.variant).double()
    g = torch.Generator().manual_seed(2)
    x = (torch.randn(1, 32, 6, generator=g) + 2).double()
    y = torch.randint(0, 3, (1, 32), generator=g)
    F.cross_entropy(model(x)[0], y[0]).backward()
    lr = 0.7
    for lin, _ in model.hidden:
        w, gw = lin.weight.detach(), lin.weight.grad
        cos = (w * gw).sum() / (w.norm() * gw.norm())
        grown = (w - lr * gw).norm() ** 2 - w.norm() ** 2
        if variant == "bn":  # exact but for eps in sqrt(var + eps), which breaks scale invariance slightly
            assert abs(cos) < 1e-5
            torch.testing.assert_close(grown, lr**2 * gw.norm() ** 2, rtol=1e-3, atol=1e-12)
        else:
            assert abs(cos) > 1e-3


@pytest.mark.parametrize("detached", names_where(lambda s: s.detached and s.centers and not s.scales))
def test_detached_centering_adds_the_rank_one_weight_gradient(detached):
    """dl/dW = (u - u_bar)^T g + u_bar (sum_i g_i)^T under detached centering -- with the
    batch mean, the population mean (here of a different, larger set) or the EMA mean --
    and only the first term under center (docs/science.md)."""
    grads = {}
    for variant in ("center", detached):
        cell = make_cell(variant, model={"depth": 1, "width": 5})
        model = StackedMLP(6, 3, [0], cell.model, cell.variant).double()
        g = torch.Generator().manual_seed(3)
        u = (torch.randn(1, 16, 6, generator=g) + 3).double()
        y = torch.randint(0, 3, (1, 16), generator=g)
        if model.uses_population():
            model.refresh_population((torch.randn(1, 100, 6, generator=g) + 3).double())
        captured = {}
        model.norms[0].on_xhat = lambda xh: xh.register_hook(lambda gr: captured.setdefault("g", gr))  # noqa: B023
        F.cross_entropy(model(u)[0], y[0]).backward()
        gmat, u0 = captured["g"][0], u[0]
        ubar = u0.mean(0, keepdim=True)
        centred = (u0 - ubar).T @ gmat
        grads[variant] = model.linears[0].weight.grad[0]
        expected = centred if variant == "center" else centred + ubar.T @ gmat.sum(0, keepdim=True)
        torch.testing.assert_close(grads[variant], expected)


def test_same_params_give_bit_identical_history(tmp_path):
    a = _train(tmp_path, "population_detached", name="a")
    b = _train(tmp_path, "population_detached", name="b")
    pd.testing.assert_frame_equal(a, b, check_exact=True)


@pytest.mark.parametrize("model", [None, {"kind": "cnn", "channels": 4, "depth": 2}], ids=["mlp", "cnn"])
def test_claim5_float64_probe_sees_bn_bias_gradient_zero_and_the_controls_not(tmp_path, model):
    """module._grad_ratio_float64 on the final state: under bn |dl/db| / |dl/dW| is float64 rounding (the
    decisive tolerance is 1e-10), in the MLP and in a conv net whose channels sum batch x H x W terms; under
    `none` b's gradient is real, so the same probe reads a ratio of order 1e-3 or more (else it could not fail)."""
    over = {"model": model} if model else {}
    dataset = "digits_images" if model else "synthetic"
    ratios = {}
    for variant in ("bn", "none"):
        cell = make_cell(
            variant,
            dataset,
            optim={"lrs": [0.1], "seeds": [0, 1]},
            train={"steps": 30, "log_every": 10, "eval_every": 30},
            tracking={"log_every": 10},
            **over,
        )
        out = tmp_path / f"{variant}-{dataset}"
        run_cell(cell, out, track=False, progress=False)
        h = pd.read_parquet(out / "history.parquet")
        cols = _layer_cols(h, "grad_b_rel64")
        assert cols, "the final record carries the float64 probe"
        ratios[variant] = np.nanmax(h[cols].to_numpy())
    assert ratios["bn"] < 1e-10 < 1e-3 < ratios["none"], ratios
