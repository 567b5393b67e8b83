"""b shadows beta (pipeline/claims/shadow.py, docs/science.md): the gradient algebra where it is exact, the
recorded prediction, the judge on crafted member tables and histories, and the rule that claims 1b and 2
read the detached variants without beta by config, never by name."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
import torch
import torch.nn.functional as F

from pipeline.claims.base import FAILS, HOLDS, NEGLIGIBLE, NOT_SHOWN
from pipeline.claims.shadow import (
    CORR,
    EXCESS_DIV,
    KEY,
    LATE_B,
    LATE_BETA,
    LATE_NOBETA,
    RATIO_BETA,
    RATIO_PRED,
    RATIO_SUM,
    SHADOW,
    beta_siblings,
    judge_shadow,
    shadow_clause,
)
from pipeline.config import ReportSettings
from pipeline.module import NormLabModule
from pipeline.nets.mlp import StackedMLP
from pipeline.nets.norms import make_norm
from tests.conftest import make_cell

S = ReportSettings()
ORIG = torch.get_default_dtype()


# -- the algebra, exact in float64 ------------------------------------------------------------------------
def _one_layer(norm: str, seed: int = 0):
    """x = u W + b -> norm (gamma, beta random, not 1 and 0) -> a random loss of y; float64, 3 members."""
    torch.set_default_dtype(torch.float64)
    try:
        g = torch.Generator().manual_seed(seed)
        m, n, d, f = 3, 32, 5, 7
        u = torch.randn(m, n, d, generator=g) + 2.0
        w = torch.randn(m, d, f, generator=g).requires_grad_()
        b = torch.randn(m, 1, f, generator=g).requires_grad_()
        layer = make_norm(norm, members=m, features=f, affine=True)
        with torch.no_grad():
            layer.gamma.copy_(torch.randn(m, 1, f, generator=g) + 1.5)
            layer.beta.copy_(torch.randn(m, 1, f, generator=g))
        x = torch.baddbmm(b, u, w)
        y = layer(x)
        target = torch.randn(m, n, f, generator=g)
        (torch.tanh(y) * target).sum().backward()
        sigma = torch.sqrt(x.detach().var(dim=1, unbiased=False, keepdim=True) + layer.eps)
        return b.grad, layer.gamma.detach(), layer.beta.grad, sigma
    finally:
        torch.set_default_dtype(ORIG)


def test_b_gradient_is_gamma_times_beta_gradient_under_detached_centering():
    gb, gamma, gbeta, _ = _one_layer("center_detached")
    assert gbeta.abs().min() > 1e-6  # beta's gradient is not trivially 0
    torch.testing.assert_close(gb, gamma * gbeta, rtol=1e-12, atol=1e-14)


def test_b_gradient_is_gamma_over_sigma_times_beta_gradient_under_detached_standardizing():
    gb, gamma, gbeta, sigma = _one_layer("standardize_detached")
    assert (sigma - 1).abs().max() > 0.1  # sigma is not 1: the 1/sigma factor is seen
    torch.testing.assert_close(gb, gamma / sigma * gbeta, rtol=1e-12, atol=1e-14)
    assert not torch.allclose(gb, gamma * gbeta, rtol=1e-3)


@pytest.mark.parametrize("norm", ["center", "bn"])
def test_the_relation_fails_where_the_gradient_goes_through_the_statistics(norm):
    """The control: with the gradient through mu_B, b's gradient is 0 while gamma * beta's is not."""
    gb, gamma, gbeta, _ = _one_layer(norm)
    assert gb.abs().max() < 1e-12 and (gamma * gbeta).abs().max() > 1e-3


def test_sgd_moves_b_by_gamma_times_beta_step_in_a_deep_net():
    """b_T - b_0 = sum_t gamma_t * (beta_{t+1} - beta_t) in every layer of a 2-layer net under SGD, with gamma
    trained (float64): the prediction is exact; b_T - b_0 = gamma_T * beta_T is not, once gamma has moved."""
    cell = make_cell("center_detached", model={"depth": 2, "width": 8})
    cell = cell.model_copy(update={"variant": cell.variant.model_copy(update={"affine": True})})
    torch.manual_seed(0)
    model = StackedMLP(6, 3, [0], cell.model, cell.variant).double()
    hidden = model.hidden
    b0 = [lin.bias.detach().clone() for lin, _ in hidden]
    shadow = [torch.zeros_like(b) for b in b0]
    g = torch.Generator().manual_seed(1)
    lr = 0.3
    for _ in range(40):
        x = (torch.randn(1, 32, 6, generator=g) + 2).double()
        y = torch.randint(0, 3, (1, 32), generator=g)
        loss = F.cross_entropy(model(x)[0], y[0])
        model.zero_grad()
        loss.backward()
        before = [(norm.gamma.detach().clone(), norm.beta.detach().clone()) for _, norm in hidden]
        with torch.no_grad():
            for p in model.parameters():
                p -= lr * p.grad
        for i, (_, norm) in enumerate(hidden):
            gamma, beta = before[i]
            shadow[i] += gamma * (norm.beta.detach() - beta)
    for i, (lin, norm) in enumerate(hidden):
        drift = lin.bias.detach() - b0[i]
        assert drift.norm() > 1e-2
        torch.testing.assert_close(drift, shadow[i], rtol=1e-10, atol=1e-12)
        assert (norm.gamma - 1).abs().max() > 1e-3  # gamma moved, so the frozen-gamma form is only approximate
        assert not torch.allclose(drift, norm.gamma.detach() * norm.beta.detach(), rtol=1e-6, atol=1e-9)


# -- the recorded prediction -------------------------------------------------------------------------------
def test_the_module_records_gamma_beta_over_sigma_where_the_statistics_are_detached():
    lin = torch.nn.Module()
    lin.bias = torch.nn.Parameter(torch.zeros(2, 1, 4))
    g = torch.Generator().manual_seed(0)
    for norm, scales in (
        ("center_detached", False),
        ("standardize_detached", True),
        ("running_detached", True),
        ("population_detached", True),
    ):
        layer = make_norm(norm, members=2, features=4, affine=True)
        with torch.no_grad():
            layer.gamma.copy_(torch.rand(2, 1, 4, generator=g) + 0.5)
            layer.beta.copy_(torch.randn(2, 1, 4, generator=g))
            sigma = torch.rand(2, 1, 4, generator=g) + 0.5
            if hasattr(layer, "running_var"):
                layer.running_var.copy_(sigma**2 - layer.eps)
            if hasattr(layer, "pop_sigma"):
                layer.pop_sigma.copy_(sigma)
        want = (layer.gamma * layer.beta / (sigma if scales else 1.0)).flatten(1).norm(dim=1)
        torch.testing.assert_close(NormLabModule._shadow_prediction(lin, layer), want)
    for norm in ("bn", "center", "layernorm"):  # the gradient goes through the statistics: b's gradient is 0
        assert NormLabModule._shadow_prediction(lin, make_norm(norm, members=2, features=4, affine=True)) is None
    lin.bias = None
    assert NormLabModule._shadow_prediction(lin, make_norm("center_detached", members=2, features=4)) is None


def _trained(tmp_path, variant, momentum=0.0):
    from pipeline.cell import run_cell

    params = dict(
        variants={
            "cda": {"norm": "center_detached", "affine": True},
            "sda": {"norm": "standardize_detached", "affine": True},
            "bn_": {"norm": "bn", "affine": True},
        },
        optim={"lrs": [0.1, 0.5], "seeds": [0], "momentum": momentum},
        train={"steps": 30, "log_every": 5, "eval_every": 10},
        tracking={"log_every": 5},
    )
    out = tmp_path / f"{variant}-{momentum}"
    run_cell(make_cell(variant, **params), out, track=False, progress=False)
    return pd.read_parquet(out / "history.parquet")


@pytest.mark.parametrize("variant", ["cda", "sda"])
def test_a_trained_cell_sums_b_steps_from_beta_steps_exactly_under_sgd(tmp_path, variant):
    """The recorded sum of gamma_t / sigma_t (beta_t+1 - beta_t) equals b's drift at every logged step under
    plain SGD (float32 rounding), in every layer, for the detached centering and standardizing with gamma,
    beta; with momentum it does not (b's and beta's momentum buffers hold gains gamma_s / sigma_s of earlier
    steps): the check can fail. Fails if the module used another sigma than the forward's (the running
    sigma for standardize_detached) or left out gamma."""
    h = _trained(tmp_path, variant).dropna(subset=["shadow_cum/l0"])
    for i in range(2):
        assert h[f"b_drift/l{i}"].iloc[-1] > 1e-3 and h[f"shadow_pred/l{i}"].iloc[-1] > 0
        np.testing.assert_allclose(h[f"b_drift/l{i}"], h[f"shadow_cum/l{i}"], rtol=2e-4, atol=1e-7)
    m = _trained(tmp_path, variant, momentum=0.9).dropna(subset=["shadow_cum/l0"])
    gap = (m["b_drift/l0"] - m["shadow_cum/l0"]).abs() / m["b_drift/l0"].clip(lower=1e-12)
    assert gap.max() > 1e-3


def test_no_shadow_is_recorded_where_the_gradient_goes_through_the_statistics(tmp_path):
    h = _trained(tmp_path, "bn_")
    assert "beta_norm/l0" in h and "shadow_pred/l0" not in h and "shadow_cum/l0" not in h


# -- the judge on crafted member tables ---------------------------------------------------------------------
NORM = {
    "cd": "center_detached",
    "cd_beta": "center_detached",
    "sd": "standardize_detached",
    "sd_beta": "standardize_detached",
    "center": "center",
}
BETA = {"cd_beta", "sd_beta"}
DATASETS = {"synthetic": 3.0, "digits": 2.5, "synthetic_zero_mean": 0.0}


def _settings(**kw):
    return S.model_copy(update={"blowup_deciders": ["cd"], **kw})


def _members(div_without=(5, 5), div_with=(0, 0), datasets=("synthetic", "digits"), lrs=(0.3,), extra=()):
    """cd (no beta) and cd_beta (the same norm, affine on) on each data set: the first k seeds diverged."""
    rows = []
    for ds, kw, kb in zip(datasets, div_without, div_with):
        for lr in lrs:
            for v, k in (("cd", kw), ("cd_beta", kb), *extra):
                for seed in range(5):
                    st = "diverged" if seed < k else "trained"
                    rows.append(
                        dict(
                            variant=v,
                            norm=NORM[v],
                            affine=v in BETA,
                            trainable="all",
                            has_bias=True,
                            refresh_every=np.nan,
                            dataset=ds,
                            input_mean_norm=DATASETS[ds],
                            lr=lr,
                            seed=seed,
                            status=st,
                            diverged=st == "diverged",
                            depth=2,
                            steps=100,
                            **{"b_drift/l0": 1.0, "b_drift/l1": 1.0},
                        )
                    )
    return pd.DataFrame(rows)


def _verdict(m, hist=None, settings=None):
    return SHADOW.evaluate(m, hist, settings or _settings())


def test_the_verdict_follows_the_divergence_with_and_without_beta():
    assert _verdict(_members((5, 5), (0, 0))).status == HOLDS  # beta stops the blow-up
    assert _verdict(_members((0, 0), (5, 5))).status == FAILS  # beta makes it worse
    assert _verdict(_members((3, 3), (3, 3))).status == NOT_SHOWN  # every pair agrees: nothing to size
    assert _verdict(_members((5, 0), (0, 0))).status == NOT_SHOWN  # one data set of 5 seeds cannot decide
    v = _verdict(_members((5, 5), (0, 0)))
    r = v.tests[0]
    assert r.key == KEY and r.effect == 1.0 and r.n == 10 and r.clusters == 10 and r.by_variant[0].dataset == "cd"
    ex = [e for e in v.endpoints if e.measure == EXCESS_DIV]
    assert {(e.variant, e.twin, e.dataset) for e in ex} == {("cd", "cd_beta", "synthetic"), ("cd", "cd_beta", "digits")}
    assert "pooled data sets: cd 10 of 10 diverged, cd_beta 0 of 10" in v.evidence


def test_a_small_excess_is_negligible():
    """1 pair in 20 on each side of every data set: effect 0, interval inside +/- 0.3 (declared smallest)."""
    m = _members((1, 1), (1, 1), lrs=(0.1, 0.3, 1.0, 3.0))
    m.loc[(m["variant"] == "cd_beta") & (m["seed"] == 0) & (m["lr"] == 0.1), ["status", "diverged"]] = [
        "trained",
        False,
    ]
    m.loc[(m["variant"] == "cd_beta") & (m["seed"] == 1) & (m["lr"] == 0.1), ["status", "diverged"]] = [
        "diverged",
        True,
    ]
    primary = {**S.primary, KEY: S.primary[KEY].model_copy(update={"smallest_effect": 0.3})}
    assert _verdict(m, settings=_settings(primary=primary)).status == NEGLIGIBLE


def test_the_zero_mean_data_set_is_a_control_not_pooled():
    m = _members((0, 0, 5), (0, 0, 0), datasets=("synthetic", "digits", "synthetic_zero_mean"))
    v = _verdict(m)
    r = v.tests[0]
    assert r.effect == 0.0 and {d.dataset: d.role for d in r.by_dataset}["synthetic_zero_mean"] == "control"


def test_siblings_are_found_by_config_never_by_name():
    m = _members()
    assert beta_siblings(m) == [("cd", "cd_beta")]
    renamed = m.replace({"variant": {"cd": "alpha", "cd_beta": "omega"}})
    assert beta_siblings(renamed) == [("alpha", "omega")]
    # a name that looks like a sibling but is another norm, or other settings, is not one
    other = m.assign(norm=np.where(m["variant"] == "cd_beta", "standardize_detached", m["norm"]))
    assert beta_siblings(other) == []
    assert beta_siblings(m.assign(has_bias=m["variant"] != "cd_beta")) == []
    # no decider among the siblings: the test has no comparison
    v = _verdict(m, settings=_settings(blowup_deciders=["center_detached"]))
    assert v.status == NOT_SHOWN and v.tests[0].n == 0


def test_claims_1b_and_2_read_the_detached_variants_without_beta_by_config():
    from pipeline.claims.growth import judge_b_grows
    from pipeline.claims.inference import judge_inference_leak

    m = _members((0, 0), (0, 0)).assign(
        loss_gap=0.1, acc_gap=0.0, **{"alpha/l0": 0.7, "alpha/l1": 0.7, "kappa/l0": 0.5, "kappa/l1": 0.5}
    )
    twin = m[m["variant"] == "cd"].assign(variant="center", norm="center", affine=False)
    m = pd.concat([m, twin], ignore_index=True)
    s = _settings(twins={"cd": ["center"], "cd_beta": ["center"]})
    c2 = judge_b_grows(m, None, s).comparisons["claim2"]
    c1b = judge_inference_leak(m, None, s).comparisons["claim1b"]
    assert set(c2["variant"]) == {"cd"} and set(c1b["variant"]) == {"cd"}
    flipped = m.assign(affine=m["variant"] == "cd")  # now cd has beta and cd_beta has not
    assert set(judge_b_grows(flipped, None, s).comparisons["claim2"]["variant"]) == {"cd_beta"}


# -- the descriptive half, from a crafted history ----------------------------------------------------------
def _history(m, late_flat: bool):
    """Logged steps 0..100 every 10: beta grows like sqrt(t) then (late_flat) stops at t = 50; b = 0.8 beta
    (gamma 0.8 standing still: the prediction is exact); the sibling without beta drifts linearly."""
    rows = []
    steps = np.arange(0, 101, 10)
    for r in m.itertuples():
        beta = np.sqrt(np.minimum(steps, 50) if late_flat else steps) * (1 + 0.1 * r.seed)
        for i, t in enumerate(steps):
            row = dict(variant=r.variant, dataset=r.dataset, lr=r.lr, seed=r.seed, step=t)
            for layer in (0, 1):
                if r.variant == "cd_beta":
                    row.update(
                        {
                            f"b_drift/l{layer}": 0.8 * beta[i],
                            f"beta_norm/l{layer}": beta[i],
                            f"shadow_pred/l{layer}": 0.8 * beta[i],
                            f"shadow_cum/l{layer}": 0.8 * beta[i],
                        }
                    )
                else:
                    row[f"b_drift/l{layer}"] = 0.05 * t
            rows.append(row)
    return pd.DataFrame(rows)


def test_b_drift_against_beta_drift_prediction_beside_measurement():
    m = _members((0, 0), (0, 0))
    v = _verdict(m, _history(m, late_flat=True))
    by = {}
    for e in v.endpoints:
        by.setdefault(e.measure, []).append(e)
    assert all(e.effect == pytest.approx(0.8) for e in by[RATIO_BETA])
    assert all(e.effect == pytest.approx(1.0) for e in by[RATIO_PRED] + by[RATIO_SUM])
    assert all(e.effect == pytest.approx(1.0) for e in by[CORR])
    assert all(e.effect == pytest.approx(0.0) for e in by[LATE_B] + by[LATE_BETA])  # flat after t = 50
    assert all(e.effect == pytest.approx(0.5) for e in by[LATE_NOBETA])  # linear without beta
    growing = _verdict(m, _history(m, late_flat=False))
    late = [e.effect for e in growing.endpoints if e.measure == LATE_B]
    assert late and all(x == pytest.approx(1 - np.sqrt(0.5)) for x in late)  # sqrt growth: 0.29
    assert {(e.variant, e.dataset, e.lr) for e in by[RATIO_PRED]} == {
        ("cd_beta", d, 0.3) for d in ("synthetic", "digits")
    }
    assert all(e.n == 5 for e in by[RATIO_BETA]) and "median 0.8" in v.evidence


def test_a_diverged_member_leaves_the_descriptive_half():
    m = _members((0, 0), (1, 0))
    h = _history(m, late_flat=True)
    blew = (h["variant"] == "cd_beta") & (h["seed"] == 0) & (h["dataset"] == "synthetic")
    h.loc[blew, "b_drift/l0"] = 1e9  # what a blow-up would leave
    v = _verdict(m, h)
    assert max(e.effect for e in v.endpoints if e.measure == RATIO_BETA) == pytest.approx(0.8)


# -- the null simulator knows the test -------------------------------------------------------------------
def test_the_planted_effect_moves_only_the_pairs_without_beta():
    import copy

    from pipeline.stats import null_members as NM

    rng = np.random.default_rng(3)
    state = copy.deepcopy(rng)
    null = NM.simulate(NM.Skeleton(), rng, S)
    planted = NM.simulate(NM.Skeleton(), state, S, plant=KEY)
    changed = null["diverged"].to_numpy() != planted["diverged"].to_numpy()
    assert changed.any() and set(planted.loc[changed, "variant"]) == {"center_detached"}
    assert (planted.loc[changed, "input_mean_norm"] > S.nonzero_mean).all()
    a = judge_shadow(null, None, S).comparisons[KEY]
    b = judge_shadow(planted, None, S).comparisons[KEY]
    assert b["diff"].mean() > a["diff"].mean()


# -- the answer paragraph --------------------------------------------------------------------------------
@pytest.mark.parametrize(
    "without, with_, said",
    [
        ((5, 5), (0, 0), "with beta diverged less often than without beta"),
        ((0, 0), (5, 5), "with beta diverged more often than without beta"),
        ((3, 3), (3, 3), "could not be told apart"),
    ],
)
def test_the_answer_says_what_b_is_for_within_six_sentences(without, with_, said):
    """The answer's b-is-redundant sentence carries the shadow clause, follows its status and links its
    verdict; the paragraph stays within six sentences; without a shadow verdict the sentence is as before."""
    from pipeline.claims import answer_text
    from tests.test_claims import S as SC
    from tests.test_claims import _answer, _claim4_rows, _claim5_rows, _sentences

    base, verdicts = _answer()
    m = _members(without, with_)
    shadow = _verdict(m, _history(m, late_flat=True))
    text = answer_text(verdicts + [shadow], pd.DataFrame(_claim4_rows(5, 0) + _claim5_rows()), SC)
    sentences = _sentences(text)
    assert len(sentences) <= 6 and len(sentences) == len(_sentences(base))
    hit = [x for x in sentences if "(#claim_shadow-what-b-is-for-b-shadows-beta)" in x]
    assert len(hit) == 1 and "(#claim5-" in hit[0] and said in hit[0] and "b only shadows beta" in hit[0]
    assert ("0.8 x beta's" in hit[0]) == (with_ != (5, 5))  # no member with beta survived: no drift to quote
    assert "shadows" not in base
    assert shadow_clause(None, "", 0.5) == ""
