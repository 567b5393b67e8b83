"""Claim 2 (measurement): does b grow without bound? Decided on boundedness, not an exponent threshold.

    from pipeline.claims.growth import judge_b_grows

b_t - b_0 = -lr sum_{s<t} G_s is SGD's own rule (an identity), so b is bounded exactly when that sum
converges. pipeline/drive.py reads it from the recorded drive over doubling windows: D_t = ||sum_{[t/2,
t)} G|| / (t/2) ~ t^-kappa, and b's increments over successive doubling windows shrink geometrically iff
kappa > 1 (a systematic drive ||Gbar|| ~ t^-k has kappa = k, zero-mean noise sigma_t ~ t^-nu has kappa =
nu + 1/2: one threshold for both).

Primary test (report.primary.claim2), endpoint
  drive_decay   per surviving detached member of a real network (all parameters train, b present) and
                layer, 1 - kappa: + = the drive decays no faster than 1/t (unbounded), - = faster (bounded);
  alpha_excess  the rule it replaced (pipeline/claims/ledger.py): alpha - report.alpha_unbounded, alpha of
                ||b_t - b_0|| ~ t^alpha over t >= alpha_from x T.
With drive_decay, b's own path over the last doubling window [T/2, T] must agree before a verdict stands
(Judgement.withhold): "holds" (unbounded) needs the pooled last-window alpha's interval above 0 (b still
moving away from b_0); "does not hold" (bounded) needs it below report.bounded_alpha (b has settled). A
guard only withholds a verdict (-> not shown), never makes one, so the test's calibration carries over
(tests/test_calibration.py). Descriptive, per (variant, data set, lr, layer) over seeds: kappa, alpha per
doubling window and over the later run, the persistence ||sum G|| / sum ||G|| (systematic drive ~1 or
noise ~1/sqrt(steps): it says what carries the drive, not whether b is bounded), b's drift and the twin's,
and the bias-only toy apart.
"""

from __future__ import annotations

import numpy as np
import pandas as pd

from pipeline.claims.base import Endpoint, Judgement, _alive, _g, _has_beta, _layers, interval, layer_text
from pipeline.claims.legacy import FAILS, HOLDS, MIXED, NOT_SHOWN, beyond_chance
from pipeline.drive import windows
from pipeline.outcomes import alpha_window, ci
from pipeline.spec.records import layer_column
from pipeline.spec.variants import names_where
from pipeline.stats.inference import cluster_bootstrap_ci

ALPHA, PERSIST, TWIN_DRIFT = (
    "growth exponent alpha",
    "mean-gradient persistence ||sum G|| / sum ||G||",
    "twin's drift ||b_T - b_0||",
)
TOY = "growth exponent alpha (toy: identity, linear by construction)"
KAPPA = "drive decay exponent kappa"
ALPHA_WINDOW = "growth exponent alpha per doubling window"
DRIFT = "b's drift ||b_T - b_0||"
NAN = float("nan")
LEGACY_KEY = "alpha_excess"  # Verdict.legacy: the status under the rule drive_decay replaced


def window_text(k: int) -> str:
    """The k-th doubling window before the end, as the tables name it (0: 'steps [T/2, T]')."""
    lo, hi = windows(1.0, k + 1)[k]
    frac = lambda x: "T" if x == 1 else f"T/{round(1 / x)}"  # noqa: E731
    return f"steps [{frac(lo)}, {frac(hi)}]"


def subjects(m: pd.DataFrame) -> pd.DataFrame:
    """Claim 2's subjects: surviving detached members of the real networks (every parameter trains, b present),
    without beta: with it b shadows beta (claim_shadow), which is not Ioffe's drift."""
    live = _alive(m)
    detached = names_where(lambda spec: spec.detached)  # statistics re-estimated outside the gradient step
    return live[live["norm"].isin(detached) & (live["trainable"] == "all") & live["has_bias"] & ~_has_beta(live)]


def comparisons(real: pd.DataFrame, layers: list[int], quantity: str, offset: float, sign: float) -> pd.DataFrame:
    """One row per member and layer: diff = sign x (quantity - offset), dataset, seed, variant, lr, layer."""
    cols = {layer: layer_column(quantity, layer) for layer in layers if layer_column(quantity, layer) in real}
    if not cols or real.empty:
        return pd.DataFrame(columns=["diff", "dataset", "seed"])
    keys = real[["dataset", "seed", "variant", "lr"]]
    return pd.concat(
        [
            keys.assign(diff=sign * (real[c].astype(float) - offset), layer=layer)[
                ["diff", "dataset", "seed", "variant", "lr", "layer"]
            ]
            for layer, c in cols.items()
        ],
        ignore_index=True,
    )


def group_intervals(frame: pd.DataFrame, keys: list[str], value: str, level: float) -> pd.DataFrame:
    """Per group of `keys`: mean, lo, hi, n of `value` -- pipeline.outcomes.ci's Student-t interval over the
    group's finite values (NaN bounds with fewer than 2), for every group at once."""
    from scipy import stats

    f = frame[np.isfinite(frame[value].astype(float))]
    g = f.groupby(keys, sort=False)[value].agg(["mean", "std", "count"]).reset_index()
    half = stats.t.ppf(0.5 + level / 2, np.maximum(g["count"] - 1, 1)) * g["std"] / np.sqrt(g["count"])
    half = np.where(g["count"] >= 2, half, np.nan)
    return g.assign(lo=g["mean"] - half, hi=g["mean"] + half, n=g["count"].astype(int))


def last_window_alpha(real: pd.DataFrame, layers: list[int], level: float, n_boot: int) -> tuple[float, float, float]:
    """The pooled alpha over the last doubling window [T/2, T], every subject member and layer, with a
    percentile interval resampling (data set, seed) clusters -- the clusters of the primary test."""
    c = comparisons(real, [x for x in layers if layer_column(alpha_window(0), x) in real], alpha_window(0), 0.0, 1.0)
    c = c[np.isfinite(c["diff"].astype(float))] if len(c) else c
    if c.empty or c[["dataset", "seed"]].drop_duplicates().shape[0] < 2:
        return float("nan"), float("nan"), float("nan")
    return cluster_bootstrap_ci(
        c["diff"].to_numpy(float),
        (c["dataset"].astype(str) + "/" + c["seed"].astype(str)).to_numpy(),
        level,
        n_boot=n_boot,
    )


def guard(real: pd.DataFrame, layers: list[int], s) -> tuple[dict[str, str], str]:
    """({status: why it is withheld}, the sentence on b's last window) for the drive_decay rule."""
    a, lo, hi = last_window_alpha(real, layers, s.ci_level, s.bootstrap)
    where = (
        f"alpha over the last doubling window [T/2, T], pooled: {_g(a)} [{_g(lo)}, {_g(hi)}]"
        if np.isfinite(lo)
        else "alpha over the last doubling window: not measured"
    )
    withhold = {}
    if not (np.isfinite(lo) and lo > 0):
        withhold[HOLDS] = f"b's distance from b_0 was not shown still growing at the end ({where})"
    if not (np.isfinite(hi) and hi < s.bounded_alpha):
        withhold[FAILS] = f"b was not shown settled at the end ({where}; bounded needs it below {s.bounded_alpha:g})"
    return withhold, where


def _legacy_alpha_status(comp_alpha: pd.DataFrame, s) -> str:
    """The status under the replaced rule (alpha - alpha_unbounded) read as pipeline.claims.primary.run_tests
    reads a test -- sign flip by (data set, seed), cluster-bootstrap interval, the declared smallest effect --
    with its own p (Holm over this test alone: the other tests' p-values are not known to a judge)."""
    from pipeline.claims.primary import could_decide
    from pipeline.stats.inference import NEGLIGIBLE, Rule, decide, signflip_p

    f = comp_alpha[np.isfinite(comp_alpha["diff"].astype(float))] if len(comp_alpha) else comp_alpha
    cl = (f["dataset"].astype(str) + "/" + f["seed"].astype(str)).to_numpy() if len(f) else np.array([])
    clusters = len(set(cl))
    if clusters < 2:
        return NOT_SHOWN
    d = f["diff"].to_numpy(float)
    _, lo, hi = cluster_bootstrap_ci(d, cl, s.ci_level, n_boot=s.bootstrap)
    p = signflip_p(pd.Series(d).groupby(cl).sum().to_numpy())
    status = decide(
        lo, hi, p, Rule(smallest_effect=s.primary["claim2"].smallest_effect, alpha=s.family_alpha, level=s.ci_level)
    )
    if status == NEGLIGIBLE and not could_decide(
        {"min_p": min(1.0, 2.0 / 2**clusters), "lo": lo, "hi": hi}, s.family_alpha
    ):
        return NOT_SHOWN
    return status


def judge_b_grows(m, hist, s) -> Judgement:
    live = _alive(m)
    layers = _layers(m, "alpha")
    real = subjects(m)
    eps, up, down = [], 0, 0
    # per (variant, data set, lr, layer) over seeds: every descriptive quantity at once
    quantities = [
        ("alpha", ALPHA, ""),
        ("kappa", KAPPA, ""),
        *((alpha_window(k), ALPHA_WINDOW, window_text(k)) for k in range(s.alpha_windows)),
        ("gsum_persist", PERSIST, ""),
        ("b_drift", DRIFT, ""),
    ]
    parts = [
        comparisons(real, layers, q, 0.0, 1.0).assign(measure=measure, over=over) for q, measure, over in quantities
    ]
    long = pd.concat([x for x in parts if len(x)], ignore_index=True) if any(len(x) for x in parts) else None
    keys = ["variant", "dataset", "lr", "layer"]
    order = {k: i for i, k in enumerate(real[["variant", "dataset", "lr"]].drop_duplicates().itertuples(index=False))}
    if long is not None:
        long["count"] = 1  # groups with no finite value still report n = 0
        every = (
            long.groupby(keys + ["measure", "over"], sort=False)["count"]
            .sum()
            .reset_index()[keys + ["measure", "over"]]
        )
        got = every.merge(
            group_intervals(long, keys + ["measure", "over"], "diff", s.ci_level),
            how="left",
            on=keys + ["measure", "over"],
        )
        rank = {(m_, o): i for i, (_, m_, o) in enumerate(quantities)}
        got["_o"] = [order[(r.variant, r.dataset, r.lr)] for r in got.itertuples()]
        got["_m"] = [rank[(r.measure, r.over)] for r in got.itertuples()]
        for r in got.sort_values(["_o", "layer", "_m"], kind="stable").itertuples():
            n = 0 if not np.isfinite(r.n) else int(r.n)
            eps.append(
                Endpoint(
                    measure=r.measure,
                    effect=float(r.mean) if n else NAN,
                    lo=float(r.lo) if n else NAN,
                    hi=float(r.hi) if n else NAN,
                    n=n,
                    variant=r.variant,
                    dataset=r.dataset,
                    lr=r.lr,
                    layer=int(r.layer),
                    **({"over": r.over} if r.over else {}),
                )
            )
            if r.measure == ALPHA and n >= s.min_members:  # the retired count: intervals on one side of 1/2
                up += r.lo >= s.alpha_unbounded
                down += r.hi < s.alpha_unbounded
    for (v, ds, lr), _members in real.groupby(["variant", "dataset", "lr"], sort=False):
        twin = s.twins.get(v, [None])[0]
        tg = live[(live["variant"] == twin) & (live["dataset"] == ds) & (live["lr"] == lr)]
        for layer in layers:
            if twin and layer_column("b_drift", layer) in tg and len(tg):
                d = tg[layer_column("b_drift", layer)]  # measured on the twin, in this variant's comparison
                eps.append(
                    Endpoint(
                        measure=TWIN_DRIFT,
                        **interval(ci(d, level=s.ci_level)),
                        n=int(d.notna().sum()),
                        twin=twin,
                        variant=v,
                        dataset=ds,
                        lr=lr,
                        layer=layer,
                    )
                )
    toy = live[live["trainable"] == "bias"]
    toy_alpha = []
    for (v, ds, lr), g in toy.groupby(["variant", "dataset", "lr"], sort=False):
        for layer in [x for x in layers if g[layer_column("alpha", x)].notna().any()]:
            a = g[layer_column("alpha", layer)]
            toy_alpha.append(
                Endpoint(
                    measure=TOY,
                    **interval(ci(a, level=s.ci_level)),
                    n=int(a.notna().sum()),
                    variant=v,
                    dataset=ds,
                    lr=lr,
                    layer=layer,
                )
            )
    eps += toy_alpha
    comp_alpha = comparisons(real, layers, "alpha", s.alpha_unbounded, 1.0)
    kappa_layers = _layers(m, "kappa")
    declared = s.primary["claim2"].endpoint
    comp = comparisons(real, kappa_layers, "kappa", 1.0, -1.0) if declared == "drive_decay" else comp_alpha
    last_layers = [x for x in layers if layer_column(alpha_window(0), x) in m]
    withhold, last = guard(real, last_layers, s) if declared == "drive_decay" else ({}, "")
    ev = _evidence(real, comp_alpha, comp if declared == "drive_decay" else None, kappa_layers, s) + (
        f" b's own path: {last}." if last else ""
    )
    if toy_alpha:
        ev += (
            f" The bias-only toy (linear by construction) shows alpha between "
            f"{_g(min(e.effect for e in toy_alpha))} and {_g(max(e.effect for e in toy_alpha))}."
        )
    n_groups = sum(e.measure == ALPHA for e in eps)
    up_sig, down_sig = beyond_chance(up, n_groups, s.ci_level), beyond_chance(down, n_groups, s.ci_level)
    legacy = {"count": MIXED if up_sig and down_sig else HOLDS if up_sig else FAILS if down_sig else NOT_SHOWN}
    if declared == "drive_decay":
        legacy[LEGACY_KEY] = _legacy_alpha_status(comp_alpha, s)
    return Judgement(eps, ev, comparisons={"claim2": comp}, legacy=legacy, withhold=withhold)


def _evidence(real, comp_alpha, comp_kappa, kappa_layers, s) -> str:
    mean_by = lambda c, col, off: (c.groupby(col)["diff"].mean() + off) if len(c) else pd.Series(dtype=float)  # noqa: E731

    def text(sr) -> str:  # a def, not a lambda: its noqa would not survive `ruff format` wrapping it
        return (
            ", ".join(f"{layer_text(int(k)) if isinstance(k, (int, np.integer)) else k} {_g(x)}" for k, x in sr.items())
            or "none"
        )

    ev = ""
    if comp_kappa is not None:
        k_layer, k_var = -mean_by(comp_kappa, "layer", -1.0), -mean_by(comp_kappa, "variant", -1.0)
        ev = (
            "Decay exponent kappa of b's drive over doubling windows (||sum_{[t/2, t)} G|| / (t/2) ~ t^-kappa, "
            f"t >= {s.kappa_from:g} T; > 1: bounded, <= 1: unbounded), surviving detached members of the real "
            f"networks: mean kappa by layer {text(k_layer)}; by variant {text(k_var)}. "
        )
    return ev + (
        "Growth exponent alpha of ||b_t - b_0|| over the later part of the run: mean alpha by layer "
        + text(mean_by(comp_alpha, "layer", s.alpha_unbounded))
        + "; by variant "
        + text(mean_by(comp_alpha, "variant", s.alpha_unbounded))
        + "."
    )
