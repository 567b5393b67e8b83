"""A verdict's answer sentence: its claim's template for its status, filled from the claim's primary test
results and the report settings. Imports nothing from pipeline.claims (the Claim uses it; the answer
paragraph reuses its wording helpers).

    from pipeline.claims.templates import claim_answer
"""

from __future__ import annotations

import math


def _datasets(effects) -> str:
    return (
        ", ".join(f"{d.dataset} ({d.effect:+.3g} [{d.lo:+.3g}, {d.hi:+.3g}])" for d in effects if math.isfinite(d.lo))
        or "no single data set"
    )


def _controls(effects) -> str:
    """Each control data set: whether it showed nothing (its interval covers 0) or an effect."""
    return (
        ", ".join(
            f"{d.dataset} showed "
            + ("nothing" if d.lo <= 0 <= d.hi else "an effect")
            + f" ({d.effect:+.3g} [{d.lo:+.3g}, {d.hi:+.3g}])"
            for d in effects
            if math.isfinite(d.lo)
        )
        or "no control could be read"
    )


SIDE_WORD = {
    "holds": "worse",
    "does not hold": "better",
    "negligible": "no different (negligible)",
    "not shown": "not distinguishable",
}


def test_fields(results) -> dict:
    """Template fields from a claim's primary test results: {t}, {p}, {plus}, {carried}, {control}
    of the first; {<side>} and {<side>_status} of each side (claim 3: {fit}, {stability})."""
    if not results:
        return {}
    r = results[0]
    out = {
        "t": r.interval_text(),
        "p": f"{r.p_holm:.2g}",
        "plus": r.plus,
        "carried": _datasets(r.carried_by()),
        "control": _controls(r.controls()) if r.controls() else "none in this grid",
    }
    for x in results:
        if x.side:
            out[x.side] = f"{x.interval_text()} ({x.plus} if +; Holm p {x.p_holm:.2g}: {x.status})"
            out[f"{x.side}_status"] = x.status
            out[f"{x.side}_word"] = SIDE_WORD.get(x.status, x.status)
    return out


def claim_answer(claim, status: str, results, settings) -> str:
    """The claim's answer template for `status`, filled from its test results and the report settings."""
    template = claim.answers.get(status, "")
    fields = {**settings.model_dump(), **test_fields(results)}
    try:
        return template.format(**fields)
    except (KeyError, IndexError):
        return template
