"""The answer paragraph that opens the report, assembled from the verdicts (each verdict's own answer
sentence is pipeline.claims.templates').

    from pipeline.claims.answer import claim_answer, answer_text
"""

from __future__ import annotations

import math

from pipeline.claims.base import CHECK_FAILED, FAILS, HOLDS, NEGLIGIBLE, PASSED
from pipeline.claims.bounded_text import claim2_sentence
from pipeline.claims.inference import B_SHARE, LAG_SHARE
from pipeline.claims.mechanism_text import mechanism_clause
from pipeline.claims.shadow import KEY as SHADOW_KEY
from pipeline.claims.shadow import shadow_clause
from pipeline.claims.templates import (
    SIDE_WORD,
    _controls,
    _datasets,
    claim_answer,  # noqa: F401  (re-exported: pipeline.claims)
)


# -- the answer paragraph ------------------------------------------------------------------------
def anchor(v) -> str:
    """The verdict section's heading anchor (GitHub's slug of "<key>: <title>"; render adds the same id)."""
    text = f"{v.key}: {v.title}".lower()
    return "#" + "".join(ch for ch in text if ch.isalnum() or ch in " -_").replace(" ", "-")


def _link(v) -> str:
    return f"[{v.key}]({anchor(v)})"


def _largest(members, variant: str) -> str:
    """ "X on data set D" per data set: the largest lr at which every seed trained ("none" where no lr of
    the grid trained; ">= X (the grid's top)" where the largest lr of the grid did: censored)."""
    from pipeline.outcomes import largest_trained_lr

    top = float(members["lr"].max())
    t = largest_trained_lr(members[members["variant"] == variant])
    parts = [
        (
            f">= {r.largest_trained_lr:g} (the grid's top)"
            if r.largest_trained_lr >= top
            else f"{r.largest_trained_lr:g}"
        )
        + f" on {r.dataset}"
        if math.isfinite(r.largest_trained_lr)
        else f"none on {r.dataset}"
        for r in t.itertuples()
    ]
    return ", ".join(parts) or "not in this grid"


def _bn_sentence(v5, v4, members, settings) -> str:
    bn = next((e.variant for e in v5.endpoints if e.primary), None) if v5 else None
    worst = next((e.effect for e in v5.endpoints if e.primary), float("nan")) if v5 else float("nan")
    how = next((" in float64" for e in v5.endpoints if e.primary and "float64" in e.measure), "") if v5 else ""
    if v5 is None or v5.status not in (PASSED, CHECK_FAILED):
        head = (
            "Real BN differentiates through the batch mean and variance, so in theory dl/db = 0 exactly and "
            "the rank-1 term of dl/dW along the input mean cancels; this grid could not check it"
        )
    elif v5.status == PASSED:
        head = (
            f"Real BN differentiates through the batch mean and variance, so dl/db = 0 exactly (and, by the "
            f"same algebra, dl/dW has no rank-1 part along the input mean; not measured here): under {bn} the "
            f"largest |dl/db| / |dl/dW| measured{how} was {worst:.2g}, float rounding ({_link(v5)})"
        )
    else:
        head = (
            f"Real BN should have dl/db = 0 exactly, but under {bn} |dl/db| / |dl/dW| reached {worst:.2g}: the "
            f"implementation needs checking ({_link(v5)})"
        )
    if bn and v4 is not None and "variant" in members:
        det = settings.blowup_deciders[0] if settings.blowup_deciders else None
        twin = settings.twins.get(det, [None])[0] if det else None
        tail = f"; every seed trained at lrs up to: {bn} {_largest(members, bn)}" + "".join(
            f"; {v} {_largest(members, v)}" for v in (twin, det) if v
        )
        return head + tail + _scaling_clause(members, bn, twin, settings) + "."
    return head + "."


def _trains_to_top(members, variant: str) -> bool | None:
    """Whether every seed of `variant` trained at the grid's largest lr on every data set (None: not in the grid)."""
    from pipeline.outcomes import largest_trained_lr

    rows = largest_trained_lr(members[members["variant"] == variant])
    if rows.empty:
        return None
    return bool((rows["largest_trained_lr"] >= float(members["lr"].max())).all())


def _scaling_twin(members, settings, twin: str, bn: str) -> str | None:
    """The gradient-through twin that also divides by sigma -- mini-batch statistics, centers and scales, not
    detached, no gamma/beta -- read from its NormSpec and the members' `affine` ('standardize' in the default
    grid); None where the grid has none."""
    from pipeline.spec.variants import norm_spec

    for twins in settings.twins.values():
        t = twins[0] if twins else None
        rows = members[members["variant"] == t] if t not in (None, twin, bn) else members.iloc[:0]
        if rows.empty or "norm" not in rows or ("affine" in rows and bool(rows["affine"].iloc[0])):
            continue
        try:
            spec = norm_spec(str(rows["norm"].iloc[0]))
        except KeyError:
            continue
        if spec.statistics == "batch" and spec.centers and spec.scales and not spec.detached:
            return t
    return None


def _scaling_clause(members, bn: str, twin: str | None, settings) -> str:
    """Where BN's stability at the top lrs comes from, when the grid shows it: the centering twin (gradient
    through its mean, no division by sigma) failing -- half its seeds or more, from some lr on, the rule the
    claim-4 sentence uses (mechanism_text.twin_fails_from) -- while the standardizing twin (BN without gamma,
    beta: gradient through mean and sigma) trains at every lr on every data set. '' otherwise."""
    from pipeline.claims.mechanism_text import twin_fails_from

    scaler = _scaling_twin(members, settings, twin, bn) if twin else None
    if not twin or not scaler or _trains_to_top(members, bn) is not True or _trains_to_top(members, scaler) is not True:
        return ""
    fails = twin_fails_from(members, twin)
    if not fails:
        return ""
    where = ", ".join(f"lr >= {lr:g} on {ds}" for ds, lr in fails.items())
    return (
        f"; differentiating through the mean is not all of it: {twin}, which does that but does not divide by "
        f"sigma, diverged (half the seeds or more) at {where}, where {scaler} (BN without gamma, beta: the "
        f"gradient through the mean and sigma) trained like {bn}: at large lrs the division by sigma is what "
        f"keeps {bn} trainable"
    )


def _same_outcomes(r, members, settings) -> str:
    """Where a control data set's deciding pairs diverged exactly as a pooled data set's did, member for member
    (same variant, lr and seed), say so: identical numbers in two rows are then the data, not a copy."""
    if not {"variant", "dataset", "lr", "seed", "diverged"} <= set(members):
        return ""
    arms = {
        *settings.blowup_deciders,
        *(settings.twins[d][0] for d in settings.blowup_deciders if settings.twins.get(d)),
    }
    sub = members[members["variant"].isin(arms)]

    def outcomes(dataset):
        return sub[sub["dataset"] == dataset].set_index(["variant", "lr", "seed"])["diverged"].astype(bool).sort_index()

    said = []
    for control in r.controls():
        c = outcomes(control.dataset)
        if c.index.has_duplicates:  # several cells per variant here: members are not matched one for one
            continue
        twin = next(
            (d.dataset for d in r.by_dataset if d.role == "pooled" and len(c) and outcomes(d.dataset).equals(c)),
            None,
        )
        if twin:  # a fact about the rows, not an inference about the input mean (the sets may differ otherwise)
            said.append(f"member for member the same divergences as on {twin}")
    return f" ({'; '.join(said)})" if said else ""


def _deciders(v4, settings) -> str | None:
    """The deciding detached variants claim 4's test pools (report.blowup_deciders with comparisons)."""
    if not v4.tests:
        return None
    parts = {d.dataset for d in v4.tests[0].by_variant if math.isfinite(d.effect)} or {
        v for v in settings.blowup_deciders
    }
    found = [d for d in settings.blowup_deciders if d in parts]
    if not found:
        return None
    return found[0] if len(found) == 1 else f"the detached centerings pooled ({', '.join(found)})"


def _split_clause(v1b) -> str:
    """b's share and the statistics' lag of the detached variants' own inference gap (member-weighted
    means of claim 1b's descriptive split endpoints), where the records have the split."""

    def mean(measure):
        es = [e for e in v1b.endpoints if e.measure == measure and e.n and math.isfinite(e.effect)]
        n = sum(e.n for e in es)
        return sum(e.effect * e.n for e in es) / n if n else float("nan")

    b, lag = mean(B_SHARE), mean(LAG_SHARE)
    if not (math.isfinite(b) and math.isfinite(lag)):
        return ""
    return (
        f"; of the detached variants' own gap, b's lag behind the running mean accounts for {b:+.3g} nats and "
        f"the lag of W's statistics for {lag:+.3g} (mean over members)"
    )


def _status_clause(v, holds: str, fails: str, negligible: str, not_shown: str) -> str:
    r = v.tests[0]
    clause = {HOLDS: holds, FAILS: fails, NEGLIGIBLE: negligible}.get(v.status, not_shown)
    note = ""
    if v.status not in (HOLDS, FAILS) and math.isfinite(r.lo) and (r.lo > 0 or r.hi < 0):
        if v.status == NEGLIGIBLE:
            note = "; within the smallest effect that matters, though not 0"
        else:  # the direction the data lean, with the verdict beside it: "could not be told apart" would deny it
            lean = holds if r.lo > 0 else fails
            if lean:
                clause = f"{lean} in this grid, but that is **not shown**"
                note = ": its bootstrap interval excludes 0, the exact test does not reach the family-wise level"
            else:
                note = "; its bootstrap interval excludes 0, but the exact test does not reach the family-wise level"
    return f"{clause}: {r.interval_text()} (p {r.p:.2g}, Holm p {r.p_holm:.2g}{note}, {_link(v)})"


def _by_variant(r) -> str:
    return f"; by variant {_datasets(r.by_variant)}" if len(r.by_variant) > 1 else ""


def _not_carried(r) -> str:
    """The pooled data sets that do not carry the effect (their own interval covers 0)."""
    quiet = [d for d in r.by_dataset if d.role == "pooled" and math.isfinite(d.lo) and d.lo <= 0 <= d.hi]
    return f"; not on {_datasets(quiet)}" if quiet and r.carried_by() else ""


def answer_text(verdicts, members, settings) -> str:
    """At most six sentences answering the seed question's three parts -- why real BN does not blow up,
    what b is for, how the paper's thought experiment differs -- each from a verdict's status and
    numbers (a sentence per claim and status: other data, other sentences), each its own paragraph
    led by the question it answers in bold."""
    by = {v.key: v for v in verdicts}
    v1, v1b, v2, v3, v4, v5 = (by.get(k) for k in ("claim1", "claim1b", "claim2", "claim3", "claim4", "claim5"))
    out = [("Why real BN does not blow up", _bn_sentence(v5, v4, members, settings))]
    vs = by.get(SHADOW_KEY)  # what b is for where the statistics are detached but beta is learned
    shadow = shadow_clause(vs, _link(vs), settings.alpha_from) if vs is not None else ""
    if v5 is not None and v5.status in (PASSED, CHECK_FAILED):
        same = next((e for e in v5.endpoints if e.measure.startswith("same member status")), None)
        out.append(
            (
                "What b is for",
                "So b has no point in real BN: it never moves and is redundant -- the role of a per-unit offset "
                "is taken by beta, which BN applies after normalizing"
                + (
                    f"; with and without b the same members trained or failed in {same.effect:.0%} of {same.n} pairs"
                    if same and math.isfinite(same.effect)
                    else ""
                )
                + f" ({_link(v5)})"
                + (f"; and {shadow}" if shadow else "")
                + ".",
            )
        )
    elif shadow:
        out.append(("What b is for", shadow[0].upper() + shadow[1:] + "."))
    if v4 is not None and v4.tests:
        det = _deciders(v4, settings) or "the detached centering"
        out.append(
            (
                "How the paper's thought experiment differs from BN",
                f"The paper's thought experiment is its argument for differentiating through the statistics: with "
                f"them computed outside the gradient step, {det} "
                + _status_clause(
                    v4,
                    "diverged more often than the same centering with the gradient through it",
                    "diverged less often than the same centering with the gradient through it",
                    "diverged as often as the same centering with the gradient through it",
                    "could not be told apart from the same centering with the gradient through it",
                )
                + (
                    f", carried by {_datasets(v4.tests[0].carried_by())}{_not_carried(v4.tests[0])}"
                    if v4.status != NEGLIGIBLE
                    else ""
                )
                + _by_variant(v4.tests[0])
                + (
                    f"; on zero-mean inputs (the control) {_controls(v4.tests[0].controls())}"
                    + _same_outcomes(v4.tests[0], members, settings)
                    if v4.tests[0].controls()
                    else ""
                )
                + mechanism_clause(v4, members, settings)
                + ".",
            )
        )
    if v2 is not None and v2.tests and v2.tests[0].endpoint == "drive_decay":  # boundedness (issue 19)
        ident = (
            f"the training loss did not move with b, an identity ({_link(v1)})"
            if v1 is not None and v1.status == PASSED
            else "the training loss should not move with b"
        )
        out.append(
            (
                "Whether b grows without bound",
                claim2_sentence(
                    v2,
                    ident,
                    _link(v2),
                    _status_clause,
                    float(members["steps"].max()) if "steps" in members else float("nan"),
                ),
            )
        )
    elif v2 is not None and v2.tests:
        ident = (
            f"the training loss did not move with b, an identity ({_link(v1)})"
            if v1 is not None and v1.status == PASSED
            else "the training loss should not move with b"
        )
        alpha = v2.tests[0].effect + settings.alpha_unbounded  # the mean exponent: > 0 is a drift still growing
        drift = (
            ("yet b kept drifting" if alpha > 0 else "and b's drift stopped growing")
            if math.isfinite(alpha)
            else "and b's drift could not be measured"
        )
        out.append(
            (
                "Whether b grows without bound",
                f"There {ident}, {drift}; its growth exponent minus a random walk's {settings.alpha_unbounded:g} "
                + _status_clause(
                    v2,
                    "was above 0",
                    "was below 0 (growth that slows over the run, not shown to stop)",
                    "was within the smallest effect of 0 (random-walk growth, which is "
                    "still unbounded; a run this short cannot tell a bound)",
                    "could not be told from 0",
                )
                + _by_variant(v2.tests[0])
                + ".",
            )
        )
    if v1b is not None and v1b.tests:
        out.append(
            (
                "Whether b's drift reaches the predictions",
                "At inference the running statistics no longer cancel b; whether that reached the predictions: "
                "eval-mode minus train-mode loss, detached minus twin, "
                + _status_clause(
                    v1b,
                    "was higher (inference worse)",
                    "was lower (inference better)",
                    "was negligible",
                    "could not be told from 0",
                )
                + (f", carried by {_datasets(v1b.tests[0].carried_by())}" if v1b.status != NEGLIGIBLE else "")
                + _by_variant(v1b.tests[0])
                + _split_clause(v1b)
                + ".",
            )
        )
    if v3 is not None and len(v3.tests) == 2:
        fit, stab = sorted(v3.tests, key=lambda r: r.side)
        word = {**SIDE_WORD, "not shown": "not distinguishable from centering"}

        def side(r) -> str:
            lean = (
                "; its interval lies " + ("above" if r.lo > 0 else "below") + " 0 but the test does not decide"
                if r.status not in ("holds", "does not hold") and math.isfinite(r.lo) and (r.lo > 0 or r.hi < 0)
                else ""
            )
            return f"{word.get(r.status, r.status)} on {r.side} ({r.interval_text()}, Holm p {r.p_holm:.2g}{lean})"

        out.append(
            (
                "Scaling as well as centering",
                f"Standardizing as well as centering outside the step was "
                f"{side(fit)} and {side(stab)}, + meaning worse ({_link(v3)}).",
            )
        )
    # one short paragraph per question, its label in bold (a reader scans the labels)
    return "\n\n".join(f"**{label}:** {sentence}" for label, sentence in out[:6])
