"""The seed question's claims as a registry: each states its endpoints, controls and rule before
the data, and reads the member table (pipeline.outcomes) into a Verdict.

    from pipeline.claims import REGISTRY, answer_text
    verdicts = [c.evaluate(members, histories, params.report) for c in REGISTRY]
    print(answer_text(verdicts))

A claim's rule and controls are templates filled from the same ReportSettings object its logic
reads (`{alpha_unbounded}` in the text is `settings.alpha_unbounded` in the code), so the printed
rule cannot drift from the one applied. Adding a claim is adding one entry to REGISTRY.
Measurements need an interval over seeds that excludes no-effect to "hold"; identities are
checks of the implementation (with a control on which the same check must fail), never evidence.
"""
from __future__ import annotations

import string
from collections import Counter
from dataclasses import dataclass, field
from typing import Callable

import numpy as np
import pandas as pd

from pipeline.outcomes import DETACHED_BATCH_CENTERING, ci

HOLDS, FAILS, MIXED, NOT_SHOWN = "holds", "does not hold", "mixed", "not shown at this scale"
PASSED, CHECK_FAILED = "check passed", "check failed"
STATUSES = (HOLDS, FAILS, MIXED, NOT_SHOWN, PASSED, CHECK_FAILED)
NAN = float("nan")


@dataclass
class Endpoint:
    name: str
    effect: float
    lo: float          # interval over seeds at report.ci_level (NaN: none, e.g. an identity's worst case)
    hi: float
    n: int
    unit: str = ""
    detail: str = ""   # where: data set, lr, layer, pair

    def text(self) -> str:
        iv = f" [{_g(self.lo)}, {_g(self.hi)}]" if np.isfinite(self.lo) else ""
        return f"{self.name} ({self.detail}): {_g(self.effect)}{iv} {self.unit}, n = {self.n}".replace(" ,", ",")


@dataclass
class Verdict:
    key: str
    title: str
    statement: str
    kind: str                      # "measurement" | "identity"
    status: str
    rule: str
    controls: str
    endpoints: list[Endpoint]
    evidence: str
    answer: str
    table: pd.DataFrame | None = None
    figure: str | None = None
    settings_used: dict = field(default_factory=dict)


Judge = Callable[[pd.DataFrame, "pd.DataFrame | None", object], tuple]


@dataclass(frozen=True)
class Claim:
    key: str
    title: str
    statement: str                 # the paper's words (Ioffe & Szegedy 2015, sec. 2)
    kind: str
    endpoints: tuple               # declared in advance: (name, how it is measured)
    controls: str                  # template
    rule: str                      # template, filled from ReportSettings
    figure: str | None
    answers: dict                  # status -> the answer sentence
    judge: Judge                   # (members, histories, settings) -> (status, endpoints, evidence, table)

    def placeholders(self) -> set[str]:
        names = {f for text in (self.rule, self.controls) for _, f, _, _ in string.Formatter().parse(text) if f}
        return {n.split(":")[0].split(".")[0].removesuffix("_text") for n in names}

    def evaluate(self, members: pd.DataFrame, histories, settings) -> Verdict:
        status, endpoints, evidence, table = self.judge(members, histories, settings)
        ctx = _context(settings)
        return Verdict(self.key, self.title, self.statement, self.kind, status, self.rule.format(**ctx),
                       self.controls.format(**ctx), endpoints, evidence, self.answers.get(status, ""), table,
                       self.figure,
                       {k: getattr(settings, k) for k in sorted(self.placeholders())})


def _context(s) -> dict:
    ctx = dict(s.model_dump()) if hasattr(s, "model_dump") else dict(vars(s))
    ctx["twins_text"] = "; ".join(f"{d} vs {' and '.join(t)}" for d, t in s.twins.items())
    ctx["blowup_deciders_text"] = ", ".join(s.blowup_deciders)
    ctx["k_sweep_text"] = ", ".join(s.k_sweep)
    ctx["ci_level_text"] = f"{s.ci_level:.0%}"
    return ctx


# -- shared reading ---------------------------------------------------------------------------
def _g(x) -> str:
    return f"{x:.3g}" if isinstance(x, (int, float, np.floating)) and np.isfinite(x) else "n/a"


def _alive(m: pd.DataFrame) -> pd.DataFrame:
    return m[m["status"] != "diverged"]


def _paired(m: pd.DataFrame, a: str, b: str, cols: list[str]) -> pd.DataFrame:
    """Members of variants a and b with the same data set, lr and seed, side by side (col_a, col_b)."""
    keys = ["dataset", "lr", "seed"]
    return m.loc[m["variant"] == a, keys + cols].merge(m.loc[m["variant"] == b, keys + cols], on=keys,
                                                       suffixes=("_a", "_b"))


def _nonzero_mean(m: pd.DataFrame, s) -> list[str]:
    return list(dict.fromkeys(m.loc[m["input_mean_norm"].fillna(0) > s.nonzero_mean, "dataset"]))


def _read_signs(decided: list[Endpoint]) -> tuple[str, int, int]:
    """Effects are oriented so that + is the claim's direction: holds if some interval lies above 0
    and none below; does not hold if the reverse; mixed if both; not shown if neither."""
    up = sum(e.lo > 0 for e in decided)
    down = sum(e.hi < 0 for e in decided)
    status = MIXED if up and down else HOLDS if up else FAILS if down else NOT_SHOWN
    return status, up, down


def _table(eps: list[Endpoint], decided: set[int]) -> pd.DataFrame:
    return pd.DataFrame([{"endpoint": e.name, "detail": e.detail, "effect": e.effect, "ci_lo": e.lo, "ci_hi": e.hi,
                          "n": e.n, "unit": e.unit, "decides": i in decided} for i, e in enumerate(eps)])


def _count(n_up: int, n_down: int, n: int, up: str, down: str) -> str:
    return f"of {n} decided comparisons, {n_up} {up} and {n_down} {down} (interval excluding 0)"


# -- claim 1: the loss does not depend on b (identity) and what leaks at inference (measurement) --
def judge_loss_independent(m, hist, s):
    tol = s.identity_rtol
    live = _alive(m)
    subj = live[live["norm"].isin(DETACHED_BATCH_CENTERING) & live["b_sens_scaled"].notna()
                & (live["b_rms_max"] > tol)]  # b must have moved, or equality is trivial
    ctrl = live[(live["variant"] == "none") & live["b_sens_scaled"].notna()]
    worst = float(subj["b_sens_scaled"].max()) if len(subj) else NAN
    ctrl_med = float(ctrl["b_sens_scaled"].median()) if len(ctrl) else NAN
    eps = [Endpoint("worst |loss(b) - loss(b_0)| / loss / (1 + rms b)", worst, NAN, NAN, len(subj),
                    "relative, train mode", f"detached batch centering ({', '.join(DETACHED_BATCH_CENTERING)}, "
                    f"bias-only toy); max over members and evaluations"),
           Endpoint("median of the same on the control", ctrl_med, NAN, NAN, len(ctrl), "relative, train mode",
                    "none: b is not redundant there")]
    table = pd.concat([subj.assign(role="subject"), ctrl.assign(role="control")]).groupby(
        ["role", "variant", "dataset", "lr"], sort=False).agg(
        n=("seed", "size"), worst=("b_sens_scaled", "max"), median=("b_sens_scaled", "median"),
        b_rms=("b_rms_max", "median")).reset_index() if len(subj) + len(ctrl) else None
    ev = (f"Full training set, training mode: worst scaled |loss(b) - loss(b_0)| / loss = {_g(worst)} over "
          f"{len(subj)} surviving detached-centering members whose b moved (tolerance {tol:g}); the control "
          f"`none` shows {_g(ctrl_med)} (median over {len(ctrl)} members).")
    if len(subj) < s.min_members or len(ctrl) < s.min_members or not ctrl_med > tol:
        return NOT_SHOWN, eps, ev + " The check could not fail here, so it is not shown.", table
    return (PASSED if worst <= tol else CHECK_FAILED), eps, ev, table


def judge_inference_leak(m, hist, s):
    # |gap|: b's drift can make inference worse (stale statistics) or better (b descends the loss with the
    # statistics held fixed, which is what inference computes); either way it reaches the predictions
    live = _alive(m).assign(abs_loss_gap=lambda d: d["loss_gap"].abs(), abs_acc_gap=lambda d: d["acc_gap"].abs())
    eps, decided = [], set()
    # only variants that train on batch statistics: population/EMA variants use the same statistics in
    # both modes, so their gap is zero by construction (an identity, not a measurement)
    batch = set(m.loc[m["norm"].isin(DETACHED_BATCH_CENTERING), "variant"])
    for det, twins in s.twins.items():
        if det not in batch:
            continue
        p = _paired(live, det, twins[0], ["abs_loss_gap", "abs_acc_gap", "loss_gap"])
        for (ds, lr), g in p.groupby(["dataset", "lr"], sort=False):
            for col, name, unit, decides in (
                    ("abs_loss_gap", "excess |eval-mode - train-mode loss|", "nats", True),
                    ("abs_acc_gap", "excess |train-mode - eval-mode accuracy|", "accuracy", True),
                    ("loss_gap", "excess signed eval-mode - train-mode loss (sign only)", "nats", False)):
                d = g[f"{col}_a"] - g[f"{col}_b"]
                n = int(d.notna().sum())
                if decides and n >= s.min_members:
                    decided.add(len(eps))
                eps.append(Endpoint(name, *ci(d, level=s.ci_level), n, unit, f"{det} vs {twins[0]}, {ds}, lr {lr:g}"))
    toy = live[live["trainable"] == "bias"]
    for (ds, lr), g in toy.groupby(["dataset", "lr"], sort=False):
        eps.append(Endpoint("signed eval-mode - train-mode loss (toy: no twin, only b trains)",
                            *ci(g["loss_gap"], level=s.ci_level), int(g["loss_gap"].notna().sum()), "nats",
                            f"{g['variant'].iloc[0]}, {ds}, lr {lr:g}"))
    status, up, down = _read_signs([eps[i] for i in decided])
    top = sorted((eps[i] for i in decided if eps[i].lo > 0), key=lambda e: -e.effect)[:3]
    ev = (f"Full training set, |eval mode (running/population statistics) - train mode (batch statistics)|, "
          f"detached variant minus its twin, paired by seed: {_count(up, down, len(decided), 'larger', 'smaller')}"
          + ("; largest: " + "; ".join(e.text() for e in top) if top else "") + ".")
    return status, eps, ev, _table(eps, decided)


# -- claim 2: b grows without bound -------------------------------------------------------------
def judge_b_grows(m, hist, s):
    live = _alive(m)
    layers = sorted({c.split("/")[1] for c in m.columns if c.startswith("alpha/")})
    real = live[live["norm"].str.endswith("_detached") & (live["trainable"] == "all") & live["has_bias"]]
    eps, decided, tally = [], set(), Counter()  # tally[(reading, variant or layer)]
    for (v, ds, lr), g in real.groupby(["variant", "dataset", "lr"], sort=False):
        twin = s.twins.get(v, [None])[0]
        tg = live[(live["variant"] == twin) & (live["dataset"] == ds) & (live["lr"] == lr)]
        for layer in layers:
            a = g[f"alpha/{layer}"]
            mean, lo, hi = ci(a, level=s.ci_level)
            n, where = int(a.notna().sum()), f"{v}, {ds}, lr {lr:g}, layer {layer}"
            if n >= s.min_members and (lo >= s.alpha_unbounded or hi < s.alpha_unbounded):
                decided.add(len(eps))
                reading = "grows" if lo >= s.alpha_unbounded else "saturates"
                tally[(reading, v)] += 1
                tally[(reading, layer)] += 1
            eps.append(Endpoint("growth exponent alpha", mean, lo, hi, n, "", where))
            if f"gsum_persist/{layer}" in g:
                p = g[f"gsum_persist/{layer}"]
                eps.append(Endpoint("mean-gradient persistence ||sum G|| / sum ||G||", *ci(p, level=s.ci_level),
                                    int(p.notna().sum()), "", where))
            if twin and f"b_drift/{layer}" in tg and len(tg):
                d = tg[f"b_drift/{layer}"]
                eps.append(Endpoint("twin's drift ||b_T - b_0||", *ci(d, level=s.ci_level),
                                    int(d.notna().sum()), "", f"{twin}, {ds}, lr {lr:g}, layer {layer}"))
    toy = live[live["trainable"] == "bias"]
    toy_alpha = []
    for (v, ds, lr), g in toy.groupby(["variant", "dataset", "lr"], sort=False):
        for layer in [x for x in layers if g[f"alpha/{x}"].notna().any()]:
            a = g[f"alpha/{layer}"]
            toy_alpha.append(Endpoint("growth exponent alpha (toy: identity, linear by construction)",
                                      *ci(a, level=s.ci_level), int(a.notna().sum()), "",
                                      f"{v}, {ds}, lr {lr:g}, layer {layer}"))
    eps += toy_alpha
    n_up = sum(c for (r, k), c in tally.items() if r == "grows" and k in layers)
    n_down = sum(c for (r, k), c in tally.items() if r == "saturates" and k in layers)
    status = MIXED if n_up and n_down else HOLDS if n_up else FAILS if n_down else NOT_SHOWN

    def where(reading, keys):
        return ", ".join(f"{k} {tally[(reading, k)]}" for k in keys if tally[(reading, k)]) or "none"

    variants = list(dict.fromkeys(real["variant"]))
    n_alpha = sum(1 for e in eps if e.name == "growth exponent alpha")
    ev = (f"Growth exponent alpha of ||b_t - b_0|| over the later part of the run, surviving detached members "
          f"of the real networks: of {len(decided)} decided (variant, data set, lr, layer) groups "
          f"({n_alpha - len(decided)} undecided), {n_up} grow at least like a random walk (by layer: "
          f"{where('grows', layers)}; by variant: {where('grows', variants)}) and {n_down} saturate (by layer: "
          f"{where('saturates', layers)}; by variant: {where('saturates', variants)}).")
    if toy_alpha:
        ev += (f" The bias-only toy (linear by construction) shows alpha between "
               f"{_g(min(e.effect for e in toy_alpha))} and {_g(max(e.effect for e in toy_alpha))}.")
    return status, eps, ev, _table(eps, decided)


# -- claim 3: worse when the normalization also scales -------------------------------------------
C3 = (  # endpoint, member column, how per seed, sign (+1: a larger value is worse), unit
    ("blow-up rate (diverged or blew_up)", "blown", "rate", 1, "fraction"),
    ("failure rate (not trained)", "failed_", "rate", 1, "fraction"),
    ("final full-set loss, train mode, matched lr", "full_loss_train", "mean", 1, "nats"),
    ("final full-set accuracy deficit, train mode, matched lr", "full_acc_train", "mean", -1, "accuracy"),
    ("final full-set loss, train mode, each variant's best lr", "full_loss_train", "best", 1, "nats"),
    ("final full-set accuracy deficit, train mode, each variant's best lr", "full_acc_train", "best", -1, "accuracy"),
    ("log10 W growth factor (largest layer), matched lr", "log_w_growth", "mean", 1, "log10"),
    ("steps to target loss (censored at T), matched lr", "steps_censored", "mean", 1, "steps"),
)


def _per_seed(sub: pd.DataFrame, col: str, how: str, four: list[str]) -> pd.DataFrame:
    """seed x variant: the mean over lrs (rows where all four members have a value), or the value
    at each variant's best lr (lowest mean train-mode loss among lrs where no seed diverged)."""
    wide = sub.set_index(["lr", "seed", "variant"])[col].unstack("variant").reindex(columns=four)
    if how != "best":
        return wide.dropna().groupby(level="seed").mean()
    out = {}
    for v in four:
        g = sub[sub["variant"] == v]
        ok = g.groupby("lr").filter(lambda x: not x["diverged"].any())
        if ok.empty:
            return pd.DataFrame(columns=four)
        best = ok.groupby("lr")["full_loss_train"].mean().idxmin()
        out[v] = g[g["lr"] == best].set_index("seed")[col]
    return pd.DataFrame(out).reindex(columns=four).dropna()


def judge_worse_scaling(m, hist, s):
    sd, cd = "standardize_detached", "center_detached"
    four = [sd, s.twins.get(sd, [""])[0], cd, s.twins.get(cd, [""])[0]]
    m = m.assign(failed_=(~m["trained"]).astype(float), blown=m["blown"].astype(float),
                 # a diverged member's last finite ||W|| says nothing about its growth
                 log_w_growth=np.log10(m["w_growth_max"].where((m["w_growth_max"] > 0) & ~m["diverged"].astype(bool))),
                 steps_censored=m["steps_to_target"].fillna(m["steps"].astype(float)))
    eps, decided = [], set()
    for ds in _nonzero_mean(m, s):
        sub = m[(m["dataset"] == ds) & m["variant"].isin(four)]
        if sub["variant"].nunique() < 4:
            continue
        for name, col, how, sign, unit in C3:
            w = _per_seed(sub, col, how, four)
            a, b = sign * (w[four[0]] - w[four[1]]), sign * (w[four[2]] - w[four[3]])
            if how == "rate":
                mean, lo, hi = ci(a.to_numpy(), paired=b.to_numpy(), n_boot=s.bootstrap, level=s.ci_level)
            else:
                mean, lo, hi = ci((a - b).to_numpy(), level=s.ci_level)
            if len(w) >= s.min_members:
                decided.add(len(eps))
            eps.append(Endpoint(name, mean, lo, hi, len(w), f"{unit} (+ = standardizing worse)",
                                f"{ds}: ({four[0]} - {four[1]}) - ({four[2]} - {four[3]})"))
    status, up, down = _read_signs([eps[i] for i in decided])
    ev = ("Excess of standardize_detached over its twin minus the excess of center_detached over its twin, "
          f"paired by seed, data sets with non-zero input mean: "
          f"{_count(up, down, len(decided), 'show standardizing worse', 'show it better')}"
          + ("; " + "; ".join(eps[i].text() for i in sorted(decided) if eps[i].lo > 0 or eps[i].hi < 0)
             if up or down else "") + ".")
    return status, eps, ev, _table(eps, decided)


# -- claim 4: the model blows up ------------------------------------------------------------------
def judge_blows_up(m, hist, s):
    # a population_* member that diverged before its first refresh was a fixed affine map (= frozen)
    early = m["diverged"].astype(bool) & (m["diverged_step"] < m["refresh_every"])
    m = m.assign(blown=m["blown"].astype(float), attributable=(m["blown"] & ~early).astype(float),
                 before_refresh=early.astype(float))
    eps, decided = [], set()
    for det, twins in s.twins.items():
        for twin in twins:
            decides = det in s.blowup_deciders and twin == twins[0]
            col = "attributable" if decides else "blown"
            p = _paired(m, det, twin, list(dict.fromkeys([col, "blown"])))
            for (ds, lr), g in p.groupby(["dataset", "lr"], sort=False):
                mean, lo, hi = ci(g[f"{col}_a"].to_numpy(), paired=g["blown_b"].to_numpy(),
                                  n_boot=s.bootstrap, level=s.ci_level)
                if decides and len(g) >= s.min_members:
                    decided.add(len(eps))
                eps.append(Endpoint("excess blow-up rate (detached minus twin)", mean, lo, hi, len(g), "fraction",
                                    f"{det} vs {twin}, {ds}, lr {lr:g}"))
    for v in s.k_sweep:
        for (ds, lr), g in m[m["variant"] == v].groupby(["dataset", "lr"], sort=False):
            eps.append(Endpoint(f"blow-up rate at K = {g['refresh_every'].iloc[0]:g}",
                                *ci(g["blown"], n_boot=s.bootstrap, level=s.ci_level, method="bootstrap"),
                                len(g), "fraction", f"{v}, {ds}, lr {lr:g}"))
    up = [eps[i] for i in decided if eps[i].lo > 0]
    none_above = bool(decided) and all(eps[i].effect <= 0 for i in decided)
    status = HOLDS if up else FAILS if none_above else NOT_SHOWN
    pop = m[m["refresh_every"].notna() & (m["blown"] > 0)]
    notes = [f"{v}: {int(g['before_refresh'].sum())} of {len(g)} blow-ups before the first refresh "
             f"(step < K = {g['refresh_every'].iloc[0]:g}: the frozen map's failure, not detaching's)"
             for v, g in pop.groupby("variant", sort=False) if g["before_refresh"].sum() > 0]
    ev = (f"Blow-up (diverged, or ||W||/||b|| growth past the declared factors) of each detached variant in "
          f"excess of its twin, paired by seed, per data set and lr; deciding pairs ({', '.join(s.blowup_deciders)} "
          f"vs their first twin): {len(up)} of {len(decided)} cells with an interval above 0"
          + (": " + "; ".join(e.text() for e in up[:4]) if up else "") + ". " + "; ".join(notes))
    return status, eps, ev.strip(), _table(eps, decided)


# -- claim 5: with real BN the bias is redundant (identity) ---------------------------------------
def judge_bn_redundant(m, hist, s):
    live = _alive(m)
    bn = live[live["variant"] == "bn"]
    ctrl = live[live["variant"].isin(["none", "frozen"])]
    early = m.loc[m["variant"] == "bn", "loss_gap_nobias_early"].dropna()
    pairs = _paired(m, "bn", "bn_nobias", ["status"])
    same = (pairs["status_a"] == pairs["status_b"]).astype(float)
    eps = [Endpoint("worst |dl/db| / |dl/dW|", float(bn["grad_b_rel_max"].max()) if len(bn) else NAN, NAN, NAN,
                    len(bn), "relative", "bn, max over members, layers and logged steps"),
           Endpoint("median |dl/db| / |dl/dW| on the controls", float(ctrl["grad_b_rel_max"].median())
                    if len(ctrl) else NAN, NAN, NAN, len(ctrl), "relative", "none and frozen: b is not redundant"),
           Endpoint("worst bn vs bn_nobias loss gap, early steps", float(early.max()) if len(early) else NAN,
                    NAN, NAN, len(early), "relative, train mode (mini-batch)", "bn paired with bn_nobias by seed"),
           Endpoint("same member status, bn vs bn_nobias (reported, not decisive)",
                    *ci(same, n_boot=s.bootstrap, level=s.ci_level, method="bootstrap"), len(same), "fraction",
                    "paired by data set, lr, seed")]
    ev = "; ".join(e.text() for e in eps) + "."
    if len(bn) < s.min_members or len(early) < s.min_members or len(ctrl) < s.min_members \
            or not eps[1].effect > s.identity_rtol:
        return NOT_SHOWN, eps, ev + " The check could not fail here, so it is not shown.", _table(eps, set())
    ok = eps[0].effect <= s.identity_rtol and eps[2].effect <= s.trajectory_rtol
    return (PASSED if ok else CHECK_FAILED), eps, ev, _table(eps, {0, 1, 2})


# -- the registry ---------------------------------------------------------------------------------
SHARED = ("Intervals: {ci_level_text} over seeds (Student t for means, paired bootstrap with "
          "{bootstrap} resamples for rates); a comparison with fewer than {min_members} paired seeds is not "
          "decided; intervals are not corrected for the number of cells, and with 5 seeds they are wide.")
SIGNS = ("holds if some decided interval lies above 0 and none below, does not hold if the reverse, "
         "mixed if both, not shown at this scale if neither. ")

REGISTRY: list[Claim] = [
    Claim("claim1", "The loss does not depend on b",
          "If the normalization is computed outside the gradient step, the loss stays fixed while b changes.",
          "identity",
          (("scaled sensitivity", "|loss(b) - loss(b_0)| / loss on the full training set, training mode, at every "
            "evaluation, divided by (1 + ||b|| / sqrt(width))"),),
          "Control: `none` (no normalization), where b matters: the same probe must exceed the tolerance there.",
          "Identity (x - mean(x) cancels b in training mode): check passed if every surviving detached-centering "
          "member whose b moved stays within {identity_rtol} x (1 + rms b) -- float32 rounding, which grows with "
          "||b|| -- and the control `none` exceeds it (else the check could not fail: not shown). "
          "Fewer than {min_members} members on either side: not shown.",
          None,
          {PASSED: "In training mode the loss did not depend on b, as algebra requires: an implementation check, "
                   "not evidence.",
           CHECK_FAILED: "The training-mode loss moved with b beyond float rounding: the implementation does not "
                         "compute the detached statistics it claims to.",
           NOT_SHOWN: "The identity check could not be run with a control that can fail here."},
          judge_loss_independent),
    Claim("claim1b", "At inference, b's drift reaches the predictions",
          "(Consequence of claim 1, not in the paper) b's drift is cancelled by batch statistics but not by the "
          "running or population statistics used at inference.",
          "measurement",
          (("excess loss gap", "|full-set eval-mode loss - train-mode loss|, detached minus twin, per seed"),
           ("excess accuracy gap", "|full-set train-mode - eval-mode accuracy|, detached minus twin, per seed"),
           ("signed loss gap", "eval-mode minus train-mode loss, detached minus twin: the direction, not decisive")),
          "Twins (same cell, lr, seeds): {twins_text}; only the variants trained on detached batch statistics "
          "are compared (population and EMA variants use the same statistics in both modes: no gap by "
          "construction). The bias-only toy is shown apart (no twin).",
          "Per detached variant, data set and lr, the excess of |gap| over the twin's is decided by its "
          "interval (the signed gap is reported, not decisive): " + SIGNS + SHARED,
          "train_eval_gap",
          {HOLDS: "Inference with running/population statistics departs from training mode (in either "
                  "direction: the signed endpoints say which) more for detached variants than for their twins: "
                  "b's drift does reach the predictions.",
           FAILS: "The detached variants' inference-mode predictions stayed closer to their training-mode ones "
                  "than their twins' did.",
           MIXED: "Some detached variants leak b's drift into inference more than their twins, others less.",
           NOT_SHOWN: "No detached variant's inference gap differed from its twin's beyond seed noise."},
          judge_inference_leak),
    Claim("claim2", "b grows without bound",
          "b grows without bound (the normalization cancels every update of b).",
          "measurement",
          (("alpha", "least-squares slope of log ||b_t - b_0|| on log t over t >= report.alpha_from x T, per layer"),
           ("persistence", "||sum_t G_t|| / sum_t ||G_t||, G_t = dl/db (1: persistent drive)"),
           ("twin drift", "||b_T - b_0|| of the twin (the gradient through: 0 expected)")),
          "Twins: {twins_text}. The bias-only toy (linear by construction) is shown apart, labelled identity.",
          "A finite run cannot show 'without bound': the verdict reads the growth exponent alpha over the run "
          "(alpha fitted over steps >= {alpha_from} x T, at least {alpha_min_points} points). Per detached "
          "variant (real networks only), data set, lr and layer: unbounded where alpha's interval lies at or "
          "above {alpha_unbounded} (a random walk's 1/2), saturating where it lies below; holds if some group is "
          "unbounded and none saturates, does not hold if the reverse, mixed if both, else not shown. " + SHARED,
          "b_drift_per_layer",
          {HOLDS: "b kept growing at least like a random walk in every decided group over the run's horizon.",
           FAILS: "b's growth slowed below a random walk's in every decided group: over this horizon it saturates.",
           MIXED: "b grows at least like a random walk in some (variant, lr, layer) groups and saturates in others "
                  "(see which layers carry it).",
           NOT_SHOWN: "The growth exponent could not be told apart from 1/2 at this scale."},
          judge_b_grows),
    Claim("claim3", "It is worse when the normalization also scales",
          "It is worse when the normalization also scales the activations.",
          "measurement",
          tuple((name, f"per seed: (standardize_detached - its twin) - (center_detached - its twin)")
                for name, *_ in C3),
          "Twins (report.twins): {twins_text}; data sets with input mean norm ||E[u]|| > {nonzero_mean} only.",
          "Each endpoint is oriented so + means standardizing is worse (a larger excess over its twin). "
          "Rates average the members' 0/1 outcomes over lrs per seed; losses and accuracies average over lrs "
          "where all four members survive; 'best lr' is each variant's lr of lowest mean train-mode loss with no "
          "diverged seed; steps to the target ({target_loss_frac} x initial full-set loss) count as T when never "
          "reached. The claim " + SIGNS + SHARED,
          "scaling_excess",
          {HOLDS: "Standardizing outside the step was worse than centering outside it, each against its own "
                  "gradient-through twin, on at least one declared endpoint and better on none.",
           FAILS: "Standardizing outside the step was better than centering outside it on the declared endpoints.",
           MIXED: "Standardizing outside the step was worse on some declared endpoints and better on others.",
           NOT_SHOWN: "No declared endpoint separated standardizing from centering beyond seed noise."},
          judge_worse_scaling),
    Claim("claim4", "The model blows up",
          "If the normalization is computed outside the gradient step, the model blows up.",
          "measurement",
          (("excess blow-up rate", "diverged or blew_up, detached minus twin, paired by seed, per data set and lr"),
           ("K sweep", "blow-up rate of population_detached at each refresh interval K")),
          "Twins: {twins_text}; refresh-interval sweep: {k_sweep_text}.",
          "Holds if some deciding pair ({blowup_deciders_text} vs their first twin: centering, where the "
          "theory's rank-1 term lives) has an excess interval above 0 in some cell; does not hold if every "
          "decided cell's excess is <= 0; else not shown. In deciding pairs a population member that diverged "
          "before its first refresh does not count (it was the fixed map `frozen` then). Blown = diverged, or "
          "some ||W_T||/||W_0|| > {blowup_w_factor}, or ||b_T - b_0||/sqrt(width) > {blowup_b_rms}. " + SHARED,
          "blowup_excess",
          {HOLDS: "Computing the centering outside the step made the model blow up more often than the same "
                  "centering with the gradient through it, in the same cells and seeds.",
           FAILS: "The detached variants blew up no more often than their gradient-through twins: the blow-ups "
                  "seen are not detaching's doing.",
           NOT_SHOWN: "Excess blow-ups over the twins were within seed noise at this scale."},
          judge_blows_up),
    Claim("claim5", "With real BN the bias is redundant",
          "With real BN the gradient flows through the statistics, b's gradient is zero and b can be dropped: "
          "z = g(BN(Wu)), its role taken by beta.",
          "identity",
          (("|dl/db| / |dl/dW|", "under bn, max over members, layers, logged steps"),
           ("bn vs bn_nobias", "relative mini-batch loss gap over the first report.trajectory_frac of the steps"),
           ("same status", "bn and bn_nobias members with the same data set, lr and seed")),
          "Controls: `none` and `frozen`, where b is not redundant: their |dl/db| / |dl/dW| must exceed the "
          "tolerance.",
          "Identity: check passed if under bn every |dl/db| / |dl/dW| <= {identity_rtol} and the bn vs bn_nobias "
          "loss gap stays <= {trajectory_rtol} over the first {trajectory_frac} of steps (later, rounding "
          "differences are amplified), while the controls exceed {identity_rtol}; otherwise check failed; fewer "
          "than {min_members} members on any side: not shown. Equal member status is reported, not decisive. "
          + SHARED,
          "bn_vs_nobias",
          {PASSED: "Under real BN b's gradient was zero to float precision and dropping b left the trajectory "
                   "unchanged: b is redundant and beta takes its role (an identity, checked).",
           CHECK_FAILED: "Under real BN b's gradient or the bn/bn_nobias trajectories departed from the identity "
                         "beyond float rounding: the implementation needs checking.",
           NOT_SHOWN: "The redundancy check could not be run with a control that can fail here."},
          judge_bn_redundant),
]


def answer_text(verdicts: list[Verdict]) -> str:
    """The answer paragraph: a tally of the statuses, then each verdict's answer for its status."""
    tally = Counter(v.status for v in verdicts)
    head = "Of {} verdicts: {}.".format(len(verdicts), ", ".join(f"{n} {st}" for st, n in tally.items()))
    return " ".join([head] + [f"{v.title} ({v.status}): {v.answer}" for v in verdicts])
