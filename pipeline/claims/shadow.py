"""What b is for: b shadows beta (measurement) -- the detached variants with gamma, beta against the same
variants without them, and b's drift against beta's.

    from pipeline.claims.shadow import SHADOW, judge_shadow, beta_siblings

The algebra (docs/science.md, "b shadows beta"): with statistics detached from the step, x = uW + b,
x_hat = (x - sg(mu)) / sg(sigma) (sigma = 1 for a centering) and y = gamma * x_hat + beta, the gradient
of b per unit is dl/db = sum_i dl/dx_i = gamma / sigma * sum_i dl/dy_i = gamma / sigma * dl/dbeta. Under
SGD b therefore moves by gamma_t / sigma_t times beta's step, exactly: b_T - b_0 = sum_t gamma_t / sigma_t
* (beta_{t+1} - beta_t), which is gamma * beta_T / sigma (beta starts at 0) while gamma and sigma stand
still. b is a shadow of beta: it moves only while beta moves and stops when beta does. Without beta the
same gradient has nothing to settle it (Ioffe's drift, claims 2 and 4).

Primary test (report.primary.claim_shadow): per deciding detached centering (report.blowup_deciders)
that has a sibling with gamma, beta in the grid -- found by config, never by name: the same norm,
trainable, bias and refresh interval, `affine` off against on -- and per data set, lr and seed, the
0/1 divergence without beta minus with beta (+ = beta stops the blow-up). Pooled over the data sets
with non-zero input mean (the mechanism needs E[u] != 0), the zero-mean ones shown as controls.

Descriptive (from the logged history, when the judge gets it): per detached variant with beta and data
set, over its surviving members, lrs and layers: ||b_T - b_0|| / ||beta_T||; measured over predicted
drift, ||b_T - b_0|| / ||gamma_T beta_T / sigma_T|| (1 where gamma and sigma stood still; the module
records the prediction as shadow_pred/l<i>); measured over the exact sum ||sum_t gamma_t / sigma_t
(beta_t+1 - beta_t)|| (shadow_cum/l<i>, summed at every step: 1 by algebra under plain SGD -- a check of
the implementation, not evidence; under momentum, Adam or weight decay a measurement); the correlation
over logged steps of b's drift with beta's; the late share of b's drift, of beta's and of b's without
beta (the part of the final drift gained after report.alpha_from x T: 0 = flat, 1/2 = linear); and the
excess divergence rate without beta over with it per (data set, lr).
"""

from __future__ import annotations

import math

import numpy as np
import pandas as pd

from pipeline.claims.base import (
    FAILS,
    HOLDS,
    NEGLIGIBLE,
    NOT_SHOWN,
    Claim,
    Endpoint,
    Judgement,
    _g,
    _has_beta,
    _layers,
    _paired,
    excess_rate_interval,
    interval,
)
from pipeline.outcomes import ci
from pipeline.spec.records import layer_column
from pipeline.spec.variants import names_where

KEY = "claim_shadow"
RATIO_BETA, RATIO_PRED, RATIO_SUM, CORR = (
    "||b_T - b_0|| / ||beta_T||",
    "b's drift, measured / predicted ||gamma_T beta_T / sigma_T||",
    "b's drift / ||sum_t gamma_t / sigma_t (beta_t+1 - beta_t)|| (1 under plain SGD: identity)",
    "correlation over logged steps of ||b_t - b_0|| and ||beta_t||",
)
LATE_B, LATE_BETA, LATE_NOBETA = (
    "late share of b's drift, with beta",
    "late share of beta's drift",
    "late share of b's drift, without beta (the sibling)",
)
EXCESS_DIV = "excess divergence rate, without beta minus with beta"
MEASURES = (RATIO_BETA, RATIO_PRED, RATIO_SUM, CORR, LATE_B, LATE_BETA, LATE_NOBETA)
CONFIG = ["norm", "trainable", "has_bias", "refresh_every"]  # what must match between siblings, besides affine


def beta_siblings(m: pd.DataFrame) -> list[tuple[str, str]]:
    """(variant without beta, the same variant with gamma and beta) for every detached norm of the member
    table with b: matched by config (CONFIG equal, the `affine` column off against on), never by name."""
    detached = names_where(lambda spec: spec.detached)
    rows = m[m["norm"].isin(detached) & m["has_bias"].astype(bool) & (m["trainable"] == "all")]
    v = rows[["variant", *CONFIG]].assign(beta=_has_beta(rows)).drop_duplicates("variant")
    v = v.assign(refresh_every=v["refresh_every"].astype(float).fillna(-1.0))  # NaN never equals NaN
    pairs = v[~v["beta"]].merge(v[v["beta"]], on=CONFIG, suffixes=("", "_beta"))
    return list(zip(pairs["variant"], pairs["variant_beta"]))


def _late_share(steps: np.ndarray, drift: np.ndarray, start: float) -> float:
    """1 - d(t_s) / d(T): the part of the final drift gained after the last logged step t_s <= start
    (0 = flat since then; a linear drift gives 1 - start / T). NaN without a positive final drift."""
    end = drift[-1]
    before = drift[steps <= start]
    if not (np.isfinite(end) and end > 0) or not len(before) or not np.isfinite(before[-1]):
        return float("nan")
    return float(1.0 - before[-1] / end)


def _corr(a: np.ndarray, b: np.ndarray) -> float:
    ok = np.isfinite(a) & np.isfinite(b)
    if ok.sum() < 3 or np.std(a[ok]) == 0 or np.std(b[ok]) == 0:
        return float("nan")
    return float(np.corrcoef(a[ok], b[ok])[0, 1])


def per_member(m: pd.DataFrame, hist: pd.DataFrame | None, pairs, s) -> pd.DataFrame:
    """One row per surviving member of a variant with beta and hidden layer: the final drifts, the
    prediction, their ratios, correlation and late shares, and the late share of b's drift of its
    sibling without beta (same data set, lr, seed and layer). Empty without a history."""
    cols = [
        "variant",
        "sibling",
        "dataset",
        "lr",
        "seed",
        "layer",
        "b_drift",
        "beta_drift",
        "predicted",
        "summed",
        *MEASURES,
    ]
    if hist is None or not pairs:
        return pd.DataFrame(columns=cols)
    alive = m.loc[m["status"] != "diverged", ["variant", "dataset", "lr", "seed"]]
    with_beta = {w: wo for wo, w in pairs}
    out = []
    for layer in _layers(m, "b_drift"):
        b, beta, pred, summed = (layer_column(q, layer) for q in ("b_drift", "beta_norm", "shadow_pred", "shadow_cum"))
        if b not in hist:
            continue
        h = hist[hist["variant"].isin([*with_beta, *with_beta.values()]) & hist[b].notna()]
        h = h.merge(alive, on=["variant", "dataset", "lr", "seed"])
        rows = []
        for (v, ds, lr, seed), g in h.groupby(["variant", "dataset", "lr", "seed"], sort=False):
            g = g.sort_values("step")
            steps, d = g["step"].to_numpy(float), g[b].to_numpy(float)
            start = s.alpha_from * steps[-1]
            row = dict(
                variant=v, dataset=ds, lr=lr, seed=seed, layer=layer, b_drift=d[-1], late_b=_late_share(steps, d, start)
            )
            if v in with_beta and beta in g:
                bt = g[beta].to_numpy(float)
                row.update(
                    beta_drift=bt[-1],
                    late_beta=_late_share(steps, bt, start),
                    corr=_corr(d, bt),
                    predicted=g[pred].to_numpy(float)[-1] if pred in g else np.nan,
                    summed=g[summed].to_numpy(float)[-1] if summed in g else np.nan,
                )
            rows.append(row)
        if not rows:
            continue
        t = pd.DataFrame(rows)
        mine = t[t["variant"].isin(with_beta)].assign(sibling=lambda x: x["variant"].map(with_beta))
        theirs = t[~t["variant"].isin(with_beta)][["variant", "dataset", "lr", "seed", "late_b"]].rename(
            columns={"variant": "sibling", "late_b": LATE_NOBETA}
        )
        mine = mine.merge(theirs, on=["sibling", "dataset", "lr", "seed"], how="left")
        for c in ("beta_drift", "predicted", "summed", "late_beta", "corr"):
            if c not in mine:
                mine[c] = np.nan
        with np.errstate(divide="ignore", invalid="ignore"):
            mine[RATIO_BETA] = np.where(mine["beta_drift"] > 0, mine["b_drift"] / mine["beta_drift"], np.nan)
            mine[RATIO_PRED] = np.where(mine["predicted"] > 0, mine["b_drift"] / mine["predicted"], np.nan)
            mine[RATIO_SUM] = np.where(mine["summed"] > 0, mine["b_drift"] / mine["summed"], np.nan)
        out.append(mine.rename(columns={"corr": CORR, "late_b": LATE_B, "late_beta": LATE_BETA}))
    return pd.concat(out, ignore_index=True)[cols] if out else pd.DataFrame(columns=cols)


def judge_shadow(m, hist, s) -> Judgement:
    pairs = beta_siblings(m)
    m = m.assign(diverged_=(m["status"] == "diverged").astype(float))
    eps, rows, div = [], [], []
    mean_norm = m.groupby("dataset")["input_mean_norm"].max().fillna(0.0)
    for without, with_ in pairs:
        p = _paired(m, without, with_, ["diverged_"])
        if without in s.blowup_deciders:  # the primary test: claim 4's deciding centering, with vs without beta
            rows.append(
                pd.DataFrame(
                    {
                        "diff": p["diverged__a"] - p["diverged__b"],
                        "dataset": p["dataset"],
                        "seed": p["seed"],
                        "variant": without,
                        "twin": with_,
                        "lr": p["lr"],
                    }
                )
            )
        for (ds, lr), g in p.groupby(["dataset", "lr"], sort=False):
            eps.append(
                Endpoint(
                    measure=EXCESS_DIV,
                    **excess_rate_interval(g["diverged__a"], g["diverged__b"], s.ci_level),
                    n=len(g),
                    unit="fraction",
                    variant=without,
                    twin=with_,
                    dataset=ds,
                    lr=lr,
                )
            )
            div.append(
                dict(
                    variant=with_,
                    sibling=without,
                    dataset=ds,
                    lr=lr,
                    pairs=len(g),
                    diverged_with_beta=int(g["diverged__b"].sum()),
                    diverged_without_beta=int(g["diverged__a"].sum()),
                    pooled=bool(mean_norm.get(ds, 0.0) > s.nonzero_mean),
                )
            )
    per = per_member(m, hist, pairs, s)
    # prediction beside measurement per (variant with beta, data set, lr): a member's layers averaged first, the
    # interval over its surviving seeds
    for (v, sib, ds, lr), g in per.groupby(["variant", "sibling", "dataset", "lr"], sort=False):
        for measure in MEASURES:
            x = g[["seed", measure]].dropna()
            if x.empty:
                continue
            seeds_ = x.groupby("seed")[measure].mean()
            eps.append(
                Endpoint(
                    measure=measure,
                    **interval(ci(seeds_, level=s.ci_level)),
                    n=len(seeds_),
                    unit="" if measure == CORR else "ratio" if measure.startswith(("||", "b's")) else "share",
                    variant=v,
                    twin=sib if measure == LATE_NOBETA else None,
                    dataset=ds,
                    lr=lr,
                    over="surviving members, mean over layers",
                )
            )
    comp = pd.concat(rows, ignore_index=True) if rows else pd.DataFrame(columns=["diff", "dataset", "seed"])
    return Judgement(eps, _evidence(pairs, per, div, s), comparisons={KEY: comp})


def _evidence(pairs, per: pd.DataFrame, div: list[dict], s) -> str:
    if not pairs:
        return (
            "No detached variant of this grid has a sibling with gamma, beta (same norm and settings, affine on): "
            "nothing to compare."
        )
    d = pd.DataFrame(div)
    counts = (
        "; ".join(
            f"{'pooled data sets' if pooled else 'zero-mean controls'}: {g['sibling'].iloc[0]} "
            f"{int(g['diverged_without_beta'].sum())} of {int(g['pairs'].sum())} diverged, {v} "
            f"{int(g['diverged_with_beta'].sum())} of {int(g['pairs'].sum())}"
            for (v, pooled), g in d.groupby(["variant", "pooled"], sort=False)
        )
        if len(d)
        else "no paired members"
    )
    ev = f"Sibling pairs without / with beta (by config): {', '.join(f'{a} / {b}' for a, b in pairs)}. {counts}."
    if per.empty:
        return ev + " The logged history was not read here: b's drift against beta's is not reported."
    parts = []
    for v, g in per.groupby("variant", sort=False):
        med = g[list(MEASURES)].median()
        parts.append(
            f"{v}: ||b_T - b_0|| / ||beta_T|| median {_g(med[RATIO_BETA])}, measured / predicted "
            f"(gamma_T beta_T / sigma_T) {_g(med[RATIO_PRED])}, measured / the summed steps "
            f"{_g(med[RATIO_SUM])} (1 by algebra under plain SGD; under momentum or Adam an approximation), "
            f"correlation with beta's drift over steps "
            f"{_g(med[CORR])}; late share "
            f"(after {s.alpha_from:g} T) of b's drift {_g(med[LATE_B])} against beta's {_g(med[LATE_BETA])}, and "
            f"{_g(med[LATE_NOBETA])} for b without beta"
        )
    return ev + " Surviving members, medians over lrs, layers and seeds: " + "; ".join(parts) + "."


# -- the answer paragraph's clause (pipeline/claims/answer.py) ------------------------------------------
def _mean(v, measure: str) -> float:
    es = [e for e in v.endpoints if e.measure == measure and e.n and math.isfinite(e.effect)]
    n = sum(e.n for e in es)
    return sum(e.effect * e.n for e in es) / n if n else float("nan")


def shadow_clause(v, link: str, late_from: float) -> str:
    """ "with the statistics detached and beta present, b only shadows beta ...": the answer's words on what
    b is for, from this claim's verdict ('' without one or without a comparison). `late_from`: the fraction
    of the run after which a drift counts as late (report.alpha_from)."""
    if v is None or not v.tests or not v.tests[0].n:
        return ""
    r = v.tests[0]
    ratio, pred, summed, late_b, late_beta = (
        _mean(v, x) for x in (RATIO_BETA, RATIO_PRED, RATIO_SUM, LATE_B, LATE_BETA)
    )
    # the exact prediction sums gamma_t / sigma_t times beta's steps (1 by algebra under plain SGD: it checks
    # the code); the end-point one, gamma_T beta_T / sigma_T, assumes gamma and sigma stood still
    late = ""
    if math.isfinite(late_b) and math.isfinite(late_beta):
        # "together" only where the late shares are close (within 0.1 of the run's drift); else both are shown
        together = ", so the two drift together" if abs(late_b - late_beta) <= 0.1 else ""
        late = (
            f"; b gained {late_b:.2g} of its drift after {late_from:g} T and beta {late_beta:.2g} of its own{together}"
        )
    drift = (
        f": b's final drift was {ratio:.2g} x beta's and {summed:.2g} x the sum of gamma_t / sigma_t times "
        f"beta's steps (the exact prediction; 1 by algebra under plain SGD, so this checks the code, not the "
        f"claim), {pred:.2g} x gamma_T beta_T / sigma_T (which assumes gamma and sigma stood still){late}"
        if math.isfinite(ratio) and math.isfinite(pred) and math.isfinite(summed)
        else ""
    )
    said = {
        HOLDS: "diverged less often than without beta",
        FAILS: "diverged more often than without beta",
        NEGLIGIBLE: "diverged as often as without beta (within the smallest effect that matters)",
    }.get(v.status, "could not be told apart from the same centering without beta")
    names = [d.dataset for d in r.by_variant]  # by_variant's `dataset` holds the variant's name
    who = names[0] if len(names) == 1 else "the detached centering"
    return (
        f"where the statistics are detached but beta is learned, b's gradient is gamma / sigma times beta's, so b "
        f"only shadows beta{drift}; whether beta changes the blow-up is a separate question: {who} with beta "
        f"{said}: {r.interval_text()} (p {r.p:.2g}, Holm p {r.p_holm:.2g}, {link})"
    )


SHARED = (
    "Descriptive intervals: {ci_level_text} over seeds (Student t for means of per-seed values, Newcombe's "
    "paired score interval for an excess rate); they describe, the primary test decides."
)

SHADOW = Claim(
    key=KEY,
    title="What b is for: b shadows beta",
    statement="(Not in the paper, whose thought experiment has no beta) With the statistics outside the gradient "
    "step and a learned beta, dl/db = gamma / sigma * dl/dbeta per unit: b follows beta, stops when beta "
    "does, and the detached centering no longer blows up.",
    kind="measurement",
    endpoints=(
        (EXCESS_DIV, "diverged, without beta minus with beta, per sibling pair, data set and lr"),
        (RATIO_BETA, "||b_T - b_0|| / ||beta_T||, surviving members of a detached variant with beta"),
        (RATIO_PRED, "||b_T - b_0|| over its prediction ||gamma_T beta_T / sigma_T|| (1: gamma, sigma stood still)"),
        (
            RATIO_SUM,
            "||b_T - b_0|| over the norm of sum_t gamma_t / sigma_t (beta_t+1 - beta_t), summed at every "
            "step: 1 by algebra under plain SGD (a check of the implementation, not evidence)",
        ),
        (CORR, "Pearson correlation of ||b_t - b_0|| and ||beta_t|| over the logged steps of a member and layer"),
        (LATE_B, "1 - ||b_t - b_0|| at report.alpha_from x T over the same at T, with beta"),
        (LATE_BETA, "the same for ||beta_t||"),
        (LATE_NOBETA, "the same for b of the sibling without beta (same data set, lr, seed, layer)"),
    ),
    tests=(KEY,),
    controls="Siblings by config (the same norm, trainable, bias and refresh interval; affine off against on), "
    "paired by data set, lr and seed; deciding: {blowup_deciders_text} with their siblings. Twins of the "
    "variants with beta (gradient through the statistics): {twins_text}. Data sets with input mean norm "
    "||E[u]|| > {nonzero_mean} pooled, the zero-mean ones are the control.",
    rule="The primary test: diverged (0/1) without beta minus with beta per deciding pair, data set, lr and seed; + = "
    "beta stops the blow-up. Late share = the part of a final drift gained after {alpha_from} x T. Ratios, "
    "correlations and late shares over surviving members only, from the logged history. " + SHARED,
    figure="shadow_drift",
    answers={
        HOLDS: "With a learned beta the detached centering diverged less often than without it: {t} (Holm p {p}), "
        "carried by {carried}; control {control}. b shadows beta.",
        FAILS: "With a learned beta the detached centering diverged MORE often than without it: {t} (Holm p {p}).",
        NEGLIGIBLE: "A learned beta changed the detached centering's divergence rate by less than the smallest "
        "effect that matters: {t}.",
        NOT_SHOWN: "Whether a learned beta stops the detached centering's blow-up could not be told from seed "
        "noise: {t} (Holm p {p}).",
    },
    judge=judge_shadow,
)
