"""Claim 4's mechanism (pipeline/claims/mechanism.py): the predictions checked where they are exact, and the
readings of the trainer's records they rest on.

Exact case of (b): one hidden layer, float64 SGD on one constant batch whose inputs vary only orthogonally to
their mean. Then the centred part of dl/dW has no component along m, and under detached centering
m^T (W_t - W_0) == ||u_bar|| (b_t - b_0) step by step, each step's increment lr ||u_bar|| ||G_t||; under
`center` (the gradient through the mean) m^T W does not move at all. The same run with inputs that also vary
along m must break the equality (the prediction is then approximate, and the test can tell).
Exact case of (c): with eps -> 0 (1e-30), bn and standardize are scale invariant per unit: <W, dl/dW> = 0 to float64
rounding; standardize_detached's radial part is first order.
"""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
import torch
import torch.nn.functional as F

from pipeline.claims.mechanism import growth_table, member_mechanism, predict_divergence, prediction_table
from pipeline.nets.mlp import StackedMLP
from tests.conftest import make_cell

D_IN, WIDTH, CLASSES, BATCH = 6, 5, 3, 24


def _batch(along_mean: float, seed: int = 4):
    """u = u_bar + v with ||u_bar|| = 3 along m; v has batch mean 0 and, unless `along_mean`, no part along m."""
    g = torch.Generator().manual_seed(seed)
    m = torch.randn(D_IN, generator=g, dtype=torch.float64)
    m = m / m.norm()
    v = torch.randn(BATCH, D_IN, generator=g, dtype=torch.float64)
    v = v - v.mean(0, keepdim=True)
    v = v - (v @ m)[:, None] * m[None, :] * (1 - along_mean)  # remove (or keep a share of) v's part along m
    u = 3.0 * m + v
    y = torch.randint(0, CLASSES, (BATCH,), generator=g)
    return u[None], y[None], m


def _sgd(variant: str, along_mean: float = 0.0, lr: float = 0.4, steps: int = 30):
    """Plain float64 SGD on one constant batch; per step m^T W, b, and b's gradient before the step."""
    cell = make_cell(variant, model={"depth": 1, "width": WIDTH})
    model = StackedMLP(D_IN, CLASSES, [0], cell.model, cell.variant).double()
    u, y, m = _batch(along_mean)
    lin = model.linears[0]
    mw, b, gb = [], [], []
    for _ in range(steps):
        mw.append((m @ lin.weight[0]).detach().clone())
        b.append(lin.bias[0, 0].detach().clone())
        loss = F.cross_entropy(model(u)[0], y[0])
        model.zero_grad()
        loss.backward()
        gb.append(lin.bias.grad[0, 0].clone())
        with torch.no_grad():
            for p in model.parameters():
                p -= lr * p.grad
    return torch.stack(mw), torch.stack(b), torch.stack(gb), float(u[0].mean(0).norm()), lin.weight


def test_detached_centering_moves_W_along_the_mean_exactly_as_the_rank_one_term_predicts():
    mw, b, gb, ubar, _ = _sgd("center_detached")
    assert (b[-1] - b[0]).norm() > 0.1  # b drifted: there is something to predict
    torch.testing.assert_close(mw - mw[0], ubar * (b - b[0]), rtol=1e-10, atol=1e-12)
    step = (mw[1:] - mw[:-1]).norm(dim=1)  # per step: lr ||u_bar|| ||G_t||
    torch.testing.assert_close(step, 0.4 * ubar * gb[:-1].norm(dim=1), rtol=1e-10, atol=1e-12)


def test_gradient_through_the_mean_leaves_W_along_the_mean_where_it_was():
    mw, b, _, _, w = _sgd("center")
    torch.testing.assert_close(mw, mw[:1].expand_as(mw), rtol=0, atol=1e-12)
    torch.testing.assert_close(b, b[:1].expand_as(b), rtol=0, atol=1e-12)
    assert w.grad.norm() > 1e-3  # ... while W did learn (orthogonally to m)


def test_the_prediction_is_only_approximate_when_inputs_vary_along_their_mean():
    """The control: with a share of the inputs' spread along m, the centred term moves m^T W too."""
    mw, b, _, ubar, _ = _sgd("center_detached", along_mean=1.0)
    gap = ((mw - mw[0]) - ubar * (b - b[0])).norm(dim=1).max()
    assert gap > 1e-3 * (ubar * (b[-1] - b[0]).norm())


@pytest.mark.parametrize("variant, zero", [("bn", True), ("standardize", True), ("standardize_detached", False)])
def test_radial_part_of_the_weight_gradient(variant, zero):
    """<W, dl/dW> / (||W|| ||dl/dW||): 0 under scale invariance (bn, standardize with eps -> 0), else not."""
    cell = make_cell(
        variant, model={"depth": 1, "width": WIDTH}, variants={"standardize": {"norm": "bn", "affine": False}}
    )
    model = StackedMLP(D_IN, CLASSES, [0], cell.model, cell.variant).double()
    for norm in model.norms:
        norm.eps = 1e-30  # torch refuses 0; far below float64 rounding of var ~ 1
    u, y, _ = _batch(along_mean=1.0)
    F.cross_entropy(model(u)[0], y[0]).backward()
    w = model.linears[0].weight
    cos = float((w * w.grad).sum() / (w.norm() * w.grad.norm()))
    radial = float((w * w.grad).sum() / w.norm())
    tangential = float(np.sqrt(max(float(w.grad.norm()) ** 2 - radial**2, 0.0)))
    assert tangential > 1e-3
    if zero:
        assert abs(cos) < 1e-12
    else:
        assert abs(cos) > 1e-3


# -- the trainer's records and the tables built from them ----------------------------------------------
def _cell(tmp_path, variant, **over):
    from pipeline.cell import run_cell
    from pipeline.outcomes import member_table
    from pipeline.records import read_cell

    over = {"optim": {"lrs": [0.3], "seeds": [0, 1]}, "train": {"steps": 30, "log_every": 1, "eval_every": 10}, **over}
    cell = make_cell(variant, **over)
    out = tmp_path / variant
    run_cell(cell, out, track=False, progress=False)
    rec = read_cell(out)
    from tests.conftest import make_params

    members = member_table(
        [rec.summary], {rec.summary.cell: rec.history}, make_params().report, {rec.summary.cell: rec.config}
    )
    return rec.history.assign(cell=rec.summary.cell, variant=rec.summary.variant, dataset=rec.summary.dataset), members


def test_trainer_records_W_drift_along_the_mean(tmp_path):
    """mean_dir_drift/l0 = ||m^T (W_t - W_0)||: 0 at init, 0 throughout when W is frozen (the bias-only toy,
    whose b drifts), and between | ||m^T W_t|| - ||m^T W_0|| | and their sum when W trains."""
    h, members = _cell(tmp_path, "center_detached")
    lg = h[h["mean_dir_W/l0"].notna()].sort_values(["member", "step"])
    first = lg.groupby("member").head(1)
    assert (first["mean_dir_drift/l0"] == 0).all()
    level0 = lg["member"].map(first.set_index("member")["mean_dir_W/l0"])
    assert (lg["mean_dir_drift/l0"] >= (lg["mean_dir_W/l0"] - level0).abs() - 1e-5).all()
    assert (lg["mean_dir_drift/l0"] <= lg["mean_dir_W/l0"] + level0 + 1e-5).all()
    assert lg["mean_dir_drift/l0"].max() > 0
    assert {"mean_dir_W/l0", "mean_dir_W0/l0", "mean_dir_drift/l0"} <= set(members.columns)  # in the summary too
    toy, _ = _cell(tmp_path, "bias_only_toy")
    lt = toy[toy["mean_dir_W/l0"].notna()]
    assert lt["b_drift/l0"].max() > 0 and lt["mean_dir_drift/l0"].abs().max() == 0


def test_member_mechanism_reads_before_divergence_and_the_growth_table_pairs_twins(tmp_path):
    h1, m1 = _cell(tmp_path, "center_detached")
    h2, m2 = _cell(tmp_path, "center")
    hist, members = pd.concat([h1, h2], ignore_index=True), pd.concat([m1, m2], ignore_index=True)
    mech = member_mechanism(hist, members)
    assert len(mech) == 4 and mech["growth"].notna().all() and mech["radial_share/l0"].between(0, 1).all()
    det = mech["variant"] == "center_detached"  # no member diverged: the last logged row is the final state
    np.testing.assert_allclose(
        mech.loc[det, "drift_pred"], members.loc[det, "input_mean_norm"] * members.loc[det, "b_drift/l0"], rtol=1e-6
    )
    np.testing.assert_allclose(mech["growth"], members["mean_dir_W/l0"] / members["mean_dir_W0/l0"], rtol=1e-6)
    table = growth_table(mech, {"center_detached": ["center"]})
    assert list(table["variant"]) == ["center_detached"] and table["twin_growth"].notna().all()


def _crafted(lrs=(0.3, 1.0), seeds=4, ubar=2.0, c=10.0, steps=2000, every=10, rate=0.1):
    """A member table and history where b's drift grows linearly (b_drift = rate x lr x t) and each
    rank-1 member diverges at the first step where lr x ||u_bar|| x b_drift >= c: the assumptions exact."""
    rows, hist = [], []
    for lr in lrs:
        for s in range(seeds):
            r = rate * (1 + 0.1 * s)
            t = np.arange(0, steps, every, dtype=float)
            drift = r * lr * t
            hit = np.flatnonzero(lr * ubar * drift >= c)
            div = float(t[hit[0]] + 1) if len(hit) else np.nan  # diverges just after crossing
            cell, member = "center_detached-x", len(rows)
            rows.append(
                {
                    "cell": cell,
                    "member": member,
                    "variant": "center_detached",
                    "dataset": "x",
                    "norm": "center_detached",
                    "lr": lr,
                    "seed": s,
                    "depth": 1,
                    "input_mean_norm": ubar,
                    "status": "diverged" if np.isfinite(div) else "trained",
                    "diverged_step": div,
                    "steps": steps,
                    "loss_fixed": False,
                }
            )
            keep = t <= div if np.isfinite(div) else np.ones(len(t), bool)
            hist.append(
                pd.DataFrame(
                    {
                        "cell": cell,
                        "member": member,
                        "step": t[keep],
                        "W_norm/l0": 1.0,
                        "mean_dir_W/l0": 1.0 + ubar * drift[keep],
                        "b_drift/l0": drift[keep],
                    }
                )
            )
    return pd.concat(hist, ignore_index=True), pd.DataFrame(rows)


def test_predicted_time_to_divergence_from_the_other_lrs():
    """Where the assumptions hold the threshold read at one lr predicts the other lr's divergences within a
    logged step; with one lr alone there is nothing to read the threshold from."""
    hist, members = _crafted()
    pred = predict_divergence(hist, member_mechanism(hist, members))
    assert pred["c"].notna().all() and pred["diverged"].all() and pred["predicted"].all()
    assert np.abs(np.log(pred["t_pred"] / pred["time"])).max() < 0.1  # within 10 %: the threshold's overshoot
    table = prediction_table(pred)
    assert (table["agree"] == table["n"]).all() and (table["log_ratio"].abs() < 0.1).all()
    hist1, members1 = _crafted(lrs=(1.0,))
    one = predict_divergence(hist1, member_mechanism(hist1, members1))
    assert one["c"].isna().all() and not one["predicted"].any()


def test_a_threshold_that_does_not_hold_across_lrs_is_shown_as_misses():
    """The control: members at lr 1 diverge at a 4x lower level than those at lr 0.3 (A2 false): the other lr's
    threshold misses them."""
    h1, m1 = _crafted(lrs=(0.3,), c=10.0)
    h2, m2 = _crafted(lrs=(1.0,), c=2.5)
    m2["member"] += len(m1)
    h2["member"] += len(m1)
    hist, members = pd.concat([h1, h2], ignore_index=True), pd.concat([m1, m2], ignore_index=True)
    table = prediction_table(predict_divergence(hist, member_mechanism(hist, members)))
    assert (table["log_ratio"].abs() > 0.5).all()  # both lrs predicted far off (early / late)
    assert table["eta_level"].max() > 2 * table["eta_level"].min()  # ... and the table shows why


def test_the_radial_share_figure_draws_each_variant_and_nothing_without_the_records(tmp_path, monkeypatch):
    """Prediction (c)'s figure: one marker per variant and data set from the radial table; a grid whose records
    carry no radial share (conv nets, older cells) draws nothing rather than an empty axis."""
    from pipeline.report import mechanism as rm
    from pipeline.report.plotting import FigureData
    from tests.conftest import make_params

    params = make_params(grid={"variants": ["bn", "center_detached"], "datasets": ["synthetic"]})
    rows = [
        {"variant": v, "dataset": "synthetic", "radial_share/l0": s}
        for v, s in (("bn", 2e-7), ("center_detached", 0.1))
    ]
    monkeypatch.setattr(rm.mech, "member_mechanism", lambda hist, members: pd.DataFrame(rows))
    data = FigureData(params, pd.DataFrame(), pd.DataFrame(), pd.DataFrame(), tmp_path)
    drawn = rm.fig_radial_share(data)
    assert [(d.key, d.figure) for d in drawn] == [("radial_share", "radial_share")]
    assert (tmp_path / "radial_share.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    monkeypatch.setattr(
        rm.mech, "member_mechanism", lambda hist, members: pd.DataFrame([{"variant": "bn", "dataset": "synthetic"}])
    )
    assert rm.fig_radial_share(data) == []
