"""Claim 2's sentence of the report's opening answer under the boundedness rule (endpoint drive_decay):
bounded or unbounded, and why -- b's drive decays faster or slower than 1/t, and what carries it.

    from pipeline.claims.bounded_text import claim2_sentence

pipeline/claims/answer.py assembles the paragraph and passes its wording helpers in (this module
imports nothing from it). Under the replaced rule (alpha_excess) answer.py keeps its own sentence.
"""

from __future__ import annotations

import math

from pipeline.claims.growth import PERSIST
from pipeline.stats.inference import FAILS, HOLDS, NEGLIGIBLE


def _kappa(r) -> str:
    """The pooled kappa with its interval (the test reads 1 - kappa)."""
    if not math.isfinite(r.effect):
        return "kappa not measured"
    ci = f" [{1 - r.hi:.3g}, {1 - r.lo:.3g}]" if math.isfinite(r.lo) else ""
    return f"kappa {1 - r.effect:.3g}{ci}"


def _carrier(v2, steps: float) -> str:
    """What carries the drive: persistence ||sum G|| / sum ||G|| (member-weighted mean over the subjects)
    against ~1/sqrt(steps), its value for zero-mean noise."""
    es = [e for e in v2.endpoints if e.measure == PERSIST and e.n and math.isfinite(e.effect)]
    n = sum(e.n for e in es)
    if not n or not math.isfinite(steps) or steps <= 0:
        return ""
    p, noise = sum(e.effect * e.n for e in es) / n, 1 / math.sqrt(steps)
    kind = "a systematic mean gradient" if p > 3 * noise else "mostly mini-batch noise"
    return f"; the drive was {kind} (persistence ||sum G|| / sum ||G|| {p:.2g}, noise alone ~{noise:.2g})"


def claim2_sentence(v2, ident: str, link: str, status_clause, steps: float) -> str:
    """The sentence for claim 2's verdict `v2` decided by drive_decay. `ident`: the clause on claim 1's identity;
    `status_clause(v, holds, fails, negligible, not_shown)`: answer.py's interval-and-p clause."""
    r = v2.tests[0]
    head = f"There {ident}, and b moves by -lr times the sum of its gradients (SGD's rule, an identity): "
    why = {
        HOLDS: "b grows without bound -- its drive, the mean of dl/db over doubling windows, decayed no faster "
        f"than 1/t ({_kappa(r)}), so the sum that moves b diverges",
        FAILS: f"b stays bounded -- its drive decayed faster than 1/t ({_kappa(r)}), so the sum that moves b "
        "converges, and b had settled over the last doubling window",
        NEGLIGIBLE: f"b's drive decayed like 1/t ({_kappa(r)}): logarithmic growth, at the edge between bounded and "
        "unbounded, which this horizon cannot tell apart",
    }
    if v2.status in why:
        body = (
            why[v2.status]
            + "; 1 - kappa "
            + status_clause(
                v2, "was above 0", "was below 0", "was within the smallest effect of 0", "could not be told from 0"
            )
        )
    elif r.status in (HOLDS, FAILS):  # the test decided, b's own path over the last window did not agree
        said = "decay no faster than 1/t (unbounded)" if r.status == HOLDS else "decay faster than 1/t (bounded)"
        body = (
            f"its drive's decay said {said} ({_kappa(r)}, 1 - kappa {r.interval_text()}, Holm p {r.p_holm:.2g}), "
            f"but b's distance from b_0 over the last doubling window did not agree, so neither is claimed ({link})"
        )
    else:
        body = f"whether b is bounded could not be told: {_kappa(r)}, 1 - kappa " + status_clause(
            v2, "was above 0", "was below 0", "was within the smallest effect of 0", "could not be told from 0"
        )
    return head + body + _carrier(v2, steps) + "."
