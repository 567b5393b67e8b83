"""Calibration through the report's code path: simulated MEMBER TABLES with the real grid's structure,
read by the same judges and primary tests the report runs (pipeline.claims.registry.evaluate_all).

    python -m pipeline.stats.null_members --report [--grids 400] [--seed 20261205]

pipeline.stats.null_grid calibrates the rule on simulated arrays of differences; this module builds the
member table itself (the columns of pipeline.outcomes.member_table that the judges read) so that the
judges' pairing, filtering (diverged members, early population blow-ups, lrs where all four claim-3
members survive, data sets pooled vs controls) and run_tests' clusters, bootstrap and Holm are all
exercised as the report exercises them.

The latent model is null_grid.arm_latent's (one owner): per arm (detached / twin) a (data set, seed)
effect shared by every cell, lr and endpoint of that arm in that data set and seed; a member effect
shared by the member's endpoints (loss, accuracy, train/eval gap, divergence, W growth; alpha per layer
has a latent of its own, its layers correlated); a part of each endpoint's own. A level per (family,
data set, lr, endpoint) is shared by a detached variant and its twin (family: the twin and every
detached variant compared with it), so under the null the two arms are exchangeable within a
(data set, seed). Outcomes: lognormal losses (skewed), logistic
accuracies, a skewed signed train/eval gap, divergence by thresholding a latent (0/1), alpha per layer
correlated across layers. Statuses come from pipeline.outcomes.classify, as in the real table.

Claim 2 has no twin: its comparison is alpha - 1/2 of each detached member. Its null is "alpha's
distribution is symmetric about 1/2 in every cell" (no cell level): the sign flip needs symmetry there,
which exchangeable arms give the other tests for free.

A planted effect (`plant`) moves only the detached arm of one primary test, by that test's declared
smallest effect (report.primary.<key>.smallest_effect, in its unit).
"""

from __future__ import annotations

import argparse
import time
from dataclasses import dataclass, field

import numpy as np
import pandas as pd

from pipeline.stats.inference import FAILS, HOLDS, NOT_SHOWN, Rule, clopper_pearson, decide
from pipeline.stats.null_grid import arm_latent

SEED = 20261205
VERDICTS = (HOLDS, FAILS)


@dataclass(frozen=True)
class V:
    """One variant of the skeleton as the member table shows it."""

    name: str
    norm: str
    arm: str  # "detached" | "twin" | "control" (not in a primary test)
    family: str  # members of one family share the cell level (a detached variant and its twin)
    trainable: str = "all"
    has_bias: bool = True
    refresh: bool = False  # reads refresh_every (population statistics)
    affine: bool = False  # has gamma, beta (the config's `affine`)


# only the variants the judges read: the primary tests' detached variants and twins; the identity claims'
# subjects and controls (claims 1, 5: evaluate_all reads them; the toy is a descriptive row of claims 1b, 2)
VARIANTS: tuple[V, ...] = (
    V("center_detached", "center_detached", "detached", "center"),
    V("running_center_detached", "running_center_detached", "detached", "center"),
    V("population_center_detached", "population_center_detached", "detached", "center", refresh=True),
    V("standardize_detached", "standardize_detached", "detached", "standardize"),
    V("center", "center", "twin", "center"),
    V("standardize", "bn", "twin", "standardize"),
    # center_detached's sibling with gamma, beta (claim_shadow: without minus with beta): in the twin arm of
    # the centering family, so under the null it is exchangeable with center_detached
    V("center_detached_affine", "center_detached", "twin", "center", affine=True),
    V("none", "none", "control", "none"),
    V("bn", "bn", "control", "bn"),
    V("bn_nobias", "bn", "control", "bn", has_bias=False),
    V("frozen", "frozen", "control", "frozen"),
    V("bias_only_toy", "center_detached", "control", "toy", trainable="bias"),
)
ENDPOINTS = ("loss", "acc", "gap", "div", "wgrow")  # sharing a member latent (alpha: a latent of its own)


@dataclass(frozen=True)
class Skeleton:
    """The grid's shape: variants, data sets (name, ||E[u]||), lrs, seeds shared by every cell of a data
    set, depth (hidden layers), steps, K of the population variant."""

    variants: tuple[V, ...] = VARIANTS
    datasets: tuple[tuple[str, float], ...] = (("synthetic", 3.0), ("digits", 3.2), ("synthetic_zero_mean", 0.0))
    lrs: tuple[float, ...] = (0.1, 0.3, 1.0, 3.0)
    seeds: int = 5
    depth: int = 2
    steps: int = 500
    refresh_every: int = 10
    log_every: int = 10  # the drive's record steps (claim 2's columns: pipeline/stats/null_drift.py)


@dataclass(frozen=True)
class Scales:
    """The latent model's knobs (latent = level + unit-variance arm_latent part). Each outcome is a fixed
    monotone map of its latent, so exchangeable latents give exchangeable outcomes."""

    rho: float = 0.3  # (data set, seed) x arm share of the latent variance
    endpoint_corr: float = 0.5  # latent correlation of a member's endpoints (beyond the seed effect)
    loss_log: tuple = (-2.0, 0.35, 4.0)  # full-set loss = exp(a + b X), X = level + latent, level sd c
    acc_logit: tuple = (3.0, 0.5)  # accuracy = expit(a - b X), X = the loss's level + its own latent
    gap: tuple = (0.05, 0.8, 0.5)  # signed eval-train gap = a (exp(b X) - 1): skewed, nats
    div_level_sd: float = 1.5  # diverged = X > div_threshold, X = level + latent
    div_lr_slope: float = 2.0  # level += slope log10(lr): divergence at large lrs, as in the real grid
    div_threshold: float = 1.5
    div_step_median: float = 10.0  # diverged_step lognormal (same law in both arms)
    div_step_log_sd: float = 1.2
    alpha_sd: float = 0.1  # alpha = 1/2 + alpha_sd x latent (no level: the null of claim 2)
    alpha_layer_corr: float = 0.8  # latent correlation of a member's layers (beyond the seed effect)


def _expit(x):
    return 1.0 / (1.0 + np.exp(-x))


def simulate(
    skeleton: Skeleton,
    rng: np.random.Generator,
    settings,
    plant: str | None = None,
    scales: Scales = Scales(),
    drive=None,
) -> pd.DataFrame:
    """One member table (one row per variant x data set x lr x seed), null unless `plant` names a
    primary test key whose detached arm gets that test's declared smallest effect. Claim 2's columns of the
    detached members: with `drive` (a pipeline.stats.null_drift.DriveModel) -- or by default when claim 2
    reads drive_decay, the model at the rule's threshold ("boundary") -- from simulated b processes read by
    the report's estimators; otherwise (alpha_excess) alpha from its latent, symmetric about 1/2."""
    from pipeline.stats import null_drift

    if drive is None and settings.primary["claim2"].endpoint == "drive_decay":
        drive = null_drift.MODELS["boundary"]
    sk, sc = skeleton, scales
    d, l, s, depth = len(sk.datasets), len(sk.lrs), sk.seeds, sk.depth  # noqa: E741 (axis letters)
    names = list(ENDPOINTS)
    e = len(names)
    ix = {n: i for i, n in enumerate(names)}
    variants = sk.variants
    families = list(dict.fromkeys(v.family for v in variants))
    # the cell level per (family, data set, lr, endpoint), shared by every arm of the family
    level = np.zeros((len(families), d, l, e))
    level[..., ix["loss"]] = rng.normal(size=(len(families), d, l)) * sc.loss_log[2]
    level[..., ix["acc"]] = level[..., ix["loss"]]  # a cell that fits worse is less accurate
    level[..., ix["gap"]] = rng.normal(size=(len(families), d, l)) * sc.gap[2]
    level[..., ix["div"]] = (
        rng.normal(size=(len(families), d, l)) * sc.div_level_sd
        + sc.div_lr_slope * np.log10(np.asarray(sk.lrs, float))[None, None, :]
    )
    X, A = {}, {}
    for arm in ("detached", "twin", "control"):
        mine = [v for v in variants if v.arm == arm]
        if not mine:
            continue
        lev = np.stack([level[families.index(v.family)] for v in mine])[..., None]  # (v, d, l, e, 1)
        lat = arm_latent(rng, (len(mine), d, l), e, s, sc.rho, sc.endpoint_corr, level=lev)
        # alpha per layer: its own latent (the layers of a member correlated by alpha_layer_corr), no level
        # (claim 2's null: symmetric about 1/2 in every cell), independent of divergence -- claim 2 reads the
        # surviving members, and an alpha tied to survival would not be symmetric among them
        alat = arm_latent(rng, (len(mine), d, l), depth, s, sc.rho, sc.alpha_layer_corr)
        for i, v in enumerate(mine):
            X[v.name], A[v.name] = lat[i], alat[i]  # (d, l, e | depth, s)
    steps = np.clip(
        np.round(np.exp(np.log(sc.div_step_median) + sc.div_step_log_sd * rng.normal(size=(len(variants), d, l, s)))),
        1,
        sk.steps - 1,
    )
    rows = []
    grid = np.stack(np.meshgrid(np.arange(d), np.arange(l), np.arange(s), indexing="ij"), -1).reshape(-1, 3)
    di, li, si = grid.T
    for vi, v in enumerate(variants):
        x = X[v.name][di, li, :, si]  # (members, e)
        diverged = x[:, ix["div"]] > sc.div_threshold
        alpha = 0.5 + sc.alpha_sd * A[v.name][di, li, :, si]  # (members, depth)
        t = pd.DataFrame(
            {
                "variant": v.name,
                "norm": v.norm,
                "trainable": v.trainable,
                "has_bias": v.has_bias,
                "affine": v.affine,
                "dataset": [sk.datasets[i][0] for i in di],
                "input_mean_norm": [sk.datasets[i][1] for i in di],
                "lr": np.asarray(sk.lrs, float)[li],
                "seed": si,
                "depth": depth,
                "steps": sk.steps,
                "classes": 3,
                "chance_loss": np.log(3.0),
                "init_full_loss_train": np.log(3.0) + 0.1,
                "width": 8.0,
                "refresh_every": float(sk.refresh_every) if v.refresh else np.nan,
                "loss_fixed": v.trainable == "bias",
                "diverged": diverged,
                "diverged_step": np.where(diverged, steps[vi, di, li, si], np.nan),
                "full_loss_train": np.exp(sc.loss_log[0] + sc.loss_log[1] * x[:, ix["loss"]]),
                "full_acc_train": _expit(sc.acc_logit[0] - sc.acc_logit[1] * x[:, ix["acc"]]),
                "loss_gap": sc.gap[0] * (np.exp(sc.gap[1] * x[:, ix["gap"]]) - 1.0),
                "w_growth_max": 1.0 + np.exp(-1.0 + 0.8 * x[:, ix["wgrow"]]),
            }
        )
        t["acc_gap"] = -0.3 * t["loss_gap"]
        detached = v.arm == "detached" or v.trainable == "bias"
        for k in range(depth):
            t[f"alpha/l{k}"] = alpha[:, k] if v.arm == "detached" else (1.0 if v.trainable == "bias" else np.nan)
            t[f"b_drift/l{k}"] = np.exp(x[:, ix["wgrow"]]) if detached else 1e-6
            t[f"gsum_persist/l{k}"] = _expit(x[:, ix["wgrow"]]) if detached else np.nan
        if drive is not None and v.arm == "detached":  # claim 2's columns from simulated b processes
            sim = null_drift.simulate(drive, rng, di * s + si, depth, sk.steps, sk.log_every)
            for q, val in null_drift.columns(sim, settings, sk.steps).items():
                for k in range(depth):
                    t[f"{q}/l{k}"] = val[:, k]
        t["b_rms_max"] = np.exp(x[:, ix["wgrow"]]) if detached else 1e-6
        t["b_sens_scaled"] = {"none": 1e-2}.get(v.name, 1e-7 if detached else np.nan)
        t["grad_b_rel_max"] = {"bn": 1e-7, "bn_nobias": np.nan}.get(v.name, 0.1)
        t["loss_gap_nobias_early"] = 1e-6 if v.name == "bn" else np.nan
        t["steps_to_target"] = np.round(10 * np.exp(0.5 * x[:, ix["loss"]].clip(-5, 5)))
        rows.append(t)
    m = pd.concat(rows, ignore_index=True)
    if plant:
        _plant(m, plant, settings, rng, sk)
    return finish(m, settings)


def finish(m: pd.DataFrame, settings) -> pd.DataFrame:
    """The derived columns as pipeline.outcomes.member_table writes them: a diverged member has no final
    numbers; status from pipeline.outcomes.classify; blown, trained; cell and member names."""
    from pipeline.outcomes import classify

    dv = m["diverged"].astype(bool)
    cols = ["full_loss_train", "full_acc_train", "loss_gap", "acc_gap", "steps_to_target"] + [
        c for c in m.columns if c.startswith(("alpha/", "alpha_w", "kappa/"))
    ]
    m.loc[dv, cols] = np.nan
    m["cell"] = m["variant"] + "-" + m["dataset"]
    m["member"] = m["seed"]
    m["status"] = classify(m, settings)
    m["blown"] = m["status"].isin(["diverged", "blew_up"])
    m["trained"] = m["status"] == "trained"
    return m


def _plant(m: pd.DataFrame, key: str, settings, rng: np.random.Generator, sk: Skeleton) -> None:
    """The declared smallest effect of test `key`, in its unit, on the detached arm only (in place)."""
    from pipeline.spec.variants import names_where

    eff = settings.primary[key].smallest_effect
    endpoint = settings.primary[key].endpoint
    if key == "claim1b":  # + eff on the (signed or absolute) gap of the detached batch variants
        on = m["norm"].isin(names_where(lambda spec: spec.detached_batch)) & (m["trainable"] == "all")
        g = m.loc[on, "loss_gap"]
        m.loc[on, "loss_gap"] = g + eff if endpoint == "signed_gap" else np.sign(g) * (g.abs() + eff)
    elif key == "claim2":  # + eff on the endpoint, every layer, every detached member: alpha up, or kappa down
        on = m["variant"].isin([v.name for v in sk.variants if v.arm == "detached"])
        kappa = endpoint == "drive_decay"
        for c in [c for c in m.columns if c.startswith("kappa/" if kappa else "alpha/")]:
            m.loc[on, c] += -eff if kappa else eff
    elif key == "claim3_fit":
        on = m["variant"] == "standardize_detached"
        if endpoint == "loss_matched_lr":
            m.loc[on, "full_loss_train"] += eff
        else:
            m.loc[on, "full_acc_train"] -= eff
    elif key == "claim3_stability":
        _more_divergence(m, m["variant"] == "standardize_detached", eff, rng, sk)
    elif key == "claim_shadow":  # more divergence without beta: the deciders that have a sibling with beta
        from pipeline.claims.shadow import beta_siblings

        without = [a for a, _ in beta_siblings(m) if a in settings.blowup_deciders]
        _more_divergence(m, m["variant"].isin(without) & (m["input_mean_norm"] > settings.nonzero_mean), eff, rng, sk)
    elif key == "claim4":
        deciders = m["variant"].isin(settings.blowup_deciders)
        pooled = m["input_mean_norm"] > settings.nonzero_mean
        if endpoint == "excess_divergence":
            _more_divergence(m, deciders & pooled, eff, rng, sk)
        else:  # blown by W growth, not divergence
            on = deciders & pooled & (m["w_growth_max"] <= settings.blowup_w_factor) & ~m["diverged"].astype(bool)
            q = min(1.0, eff * (deciders & pooled).sum() / max(on.sum(), 1))
            hit = on & (rng.random(len(m)) < q)
            m.loc[hit, "w_growth_max"] = 2 * settings.blowup_w_factor
    else:
        raise KeyError(f"plant: no planted effect defined for {key!r}")


def _more_divergence(m: pd.DataFrame, on: pd.Series, eff: float, rng, sk: Skeleton) -> None:
    """An excess divergence rate `eff` over the members `on`: each that did not diverge does with
    probability eff / (its share of non-diverged), at a step after the first refresh (uniform in [K, T)),
    so a population member's planted blow-up is not an early one."""
    alive = on & ~m["diverged"].astype(bool)
    q = min(1.0, eff * on.sum() / max(alive.sum(), 1))
    hit = alive & (rng.random(len(m)) < q)
    m.loc[hit, "diverged"] = True
    m.loc[hit, "diverged_step"] = rng.integers(sk.refresh_every, sk.steps, size=int(hit.sum())).astype(float)


# -- the report's code path --------------------------------------------------------------------------
def judge(members: pd.DataFrame, settings) -> tuple[dict, dict, dict]:
    """The report's path for the measurement claims, as pipeline.claims.registry.evaluate_all runs it:
    each claim's judge (REGISTRY), its comparisons, run_tests (Holm across every primary test) and the
    claim's status by pipeline.claims.primary.combine. Returns (test key -> TestResult, test key ->
    comparisons, claim key -> status). The identity claims (1, 5) and the verdict texts are left out: they
    decide no primary test (tests/test_calibration.py checks that this agrees with evaluate_all)."""
    from pipeline.claims.base import guarded
    from pipeline.claims.primary import combine, run_tests
    from pipeline.claims.registry import REGISTRY

    claims = [c for c in REGISTRY if c.kind == "measurement"]
    judged = [(c, c.judge(members, None, settings)) for c in claims]
    comparisons = {k: j.comparisons[k] for c, j in judged for k in c.tests if k in j.comparisons}
    results = {r.key: r for r in run_tests(comparisons, members, settings)}
    return results, comparisons, {c.key: guarded(combine([results[k] for k in c.tests]), j) for c, j in judged}


def unadjusted(r, settings) -> str:
    """A test's status read with its own p (no Holm): the per-test size."""
    rule = Rule(smallest_effect=r.smallest_effect, alpha=settings.family_alpha, level=settings.ci_level)
    return decide(r.lo, r.hi, r.p, rule) if r.n else NOT_SHOWN


@dataclass
class Tally:
    """Counts over grids: per test key, verdicts (holds or does not hold) after Holm (the report's status)
    and with the test's own p; holds and does-not-hold apart; family-wise: any test with a verdict. Also the
    pooled effect of every grid per test, and per (test, variant) the mean comparison over the pooled data
    sets: under the null each has mean 0 -- the symmetry the sign flip needs."""

    grids: int = 0
    holm: dict = field(default_factory=dict)
    raw: dict = field(default_factory=dict)
    holds: dict = field(default_factory=dict)
    fails: dict = field(default_factory=dict)
    family: int = 0
    claims: dict = field(default_factory=dict)  # claim key -> grids with a verdict (holds, does not hold, mixed)
    effects: dict = field(default_factory=dict)  # test key -> [pooled effect per grid]
    by_variant: dict = field(default_factory=dict)  # (test key, variant) -> [mean pooled comparison per grid]
    seconds: float = 0.0  # wall clock
    cpu: float = 0.0  # process CPU time

    def add(self, tests: dict, comparisons: dict, claims: dict, members: pd.DataFrame, settings) -> None:
        from pipeline.claims.primary import pooled_datasets
        from pipeline.spec.primaries import primary_test

        self.grids += 1
        for k, r in tests.items():
            self.holm[k] = self.holm.get(k, 0) + (r.status in VERDICTS)
            self.raw[k] = self.raw.get(k, 0) + (unadjusted(r, settings) in VERDICTS)
            self.holds[k] = self.holds.get(k, 0) + (r.status == HOLDS)
            self.fails[k] = self.fails.get(k, 0) + (r.status == FAILS)
            self.effects.setdefault(k, []).append(r.effect)
            c = comparisons[k]
            if "variant" in c.columns and len(c):
                c = c[c["dataset"].isin(pooled_datasets(members, settings, primary_test(k).datasets))]
                for v, g in c.groupby("variant", sort=False):
                    self.by_variant.setdefault((k, v), []).append(float(g["diff"].astype(float).mean()))
        self.family += any(r.status in VERDICTS for r in tests.values())
        for k, st in claims.items():
            self.claims[k] = self.claims.get(k, 0) + (st in VERDICTS + ("mixed",))

    @staticmethod
    def z(values) -> float:
        """Mean over grids in units of its Monte-Carlo standard error (grids without a value left out)."""
        x = np.asarray(values, float)
        x = x[np.isfinite(x)]
        return float(x.mean() / (x.std(ddof=1) / np.sqrt(len(x)))) if len(x) > 1 and x.std() > 0 else 0.0


def tally(
    skeleton: Skeleton,
    grids: int,
    rng: np.random.Generator,
    settings,
    plant: str | None = None,
    scales: Scales = Scales(),
) -> Tally:
    """Simulate `grids` member tables and read each through the report's judges and primary tests."""
    t, t0, c0 = Tally(), time.perf_counter(), time.process_time()
    for _ in range(grids):
        m = simulate(skeleton, rng, settings, plant, scales)
        tests, comparisons, claims = judge(m, settings)
        t.add(tests, comparisons, claims, m, settings)
    t.seconds, t.cpu = time.perf_counter() - t0, time.process_time() - c0
    return t


def _ci(k: int, n: int) -> str:
    lo, hi = clopper_pearson(k, n)
    return f"{k / n:.3f} [{lo:.3f}, {hi:.3f}]"


def report(grids: int = 400, seed: int = SEED, skeleton: Skeleton = Skeleton(), scales: Scales = Scales()) -> str:
    """The Markdown table of docs/statistics.md ("Calibration through the report's code path"): per
    primary test, the null rate of a verdict with its own p and after Holm (the report's status), the
    spread of its pooled effect over null grids and its mean in Monte-Carlo standard errors (0 if the
    comparisons are sign-symmetric), and the power at its declared smallest effect (planted in the
    detached arm of that test alone; the other tests null, Holm across all of them as in the report)."""
    from pipeline.config import ReportSettings

    settings = ReportSettings()
    rng = np.random.default_rng(seed)
    null = tally(skeleton, grids, rng, settings, scales=scales)
    lines = [
        "| primary test (endpoint, smallest effect) | null: verdict, own p | null: verdict, Holm (the report) "
        "| null: holds / does not hold (Holm) | pooled effect over null grids: sd; mean in MC s.e. | "
        "power at the declared effect: holds (Holm) |",
        "|---|---|---|---|---|---|",
    ]
    for k in null.holm:
        alt = tally(skeleton, grids, rng, settings, plant=k, scales=scales)
        ch = settings.primary[k]
        eff = np.asarray(null.effects[k], float)
        lines.append(
            f"| {k} ({ch.endpoint}, {ch.smallest_effect:g}) | {_ci(null.raw[k], grids)} | "
            f"{_ci(null.holm[k], grids)} | {null.holds[k]} / {null.fails[k]} | "
            f"{np.nanstd(eff, ddof=1):.3g}; {null.z(eff):+.1f} | {_ci(alt.holds[k], grids)} |"
        )
    lines.append(f"| family-wise: any of the {len(null.holm)} tests (Holm) | | {_ci(null.family, grids)} | | | |")
    lines.append(
        f"| claim 3 (two sides: holds, does not hold or mixed) | | {_ci(null.claims['claim3'], grids)} | | | |"
    )
    by = "; ".join(f"{k} {v}: {np.nanmean(x):+.3g} ({null.z(x):+.1f} s.e.)" for (k, v), x in null.by_variant.items())
    lines += [
        "",
        f"Mean comparison per detached variant over the null grids (pooled data sets): {by}.",
        f"CPU time: {null.cpu / grids:.2f} s per grid (simulation, {len(null.claims)} judges, run_tests).",
    ]
    return "\n".join(lines)


def main(argv=None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--report", action="store_true")
    ap.add_argument("--grids", type=int, default=400)
    ap.add_argument("--seed", type=int, default=SEED)
    a = ap.parse_args(argv)
    if a.report:
        print(
            f"python -m pipeline.stats.null_members --report --grids {a.grids} --seed {a.seed}; "
            f"{Skeleton()}; {Scales()}; rates with 95% Clopper-Pearson intervals"
        )
        print(report(a.grids, a.seed))


if __name__ == "__main__":
    main()
