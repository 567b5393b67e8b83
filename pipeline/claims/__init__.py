"""The seed question's claims as a registry: each states its endpoints, controls and rule before
the data, and reads the member table (pipeline.outcomes) into a Verdict.

    from pipeline.claims import REGISTRY, answer_text
    verdicts = evaluate_all(members, histories, params.report)   # primary tests Holm-adjusted together
    print(answer_text(verdicts, members, params.report))

A claim's rule and controls are templates filled from the same ReportSettings object its logic
reads (`{alpha_unbounded}` in the text is `settings.alpha_unbounded` in the code), so the printed
rule cannot drift from the one applied. Adding a claim is adding one entry to REGISTRY (built by
keyword, declaring every endpoint measure its judge reports and naming the primary one) and its judge.
Measurements need an interval over seeds that excludes no-effect to "hold"; identities are
checks of the implementation (with a control on which the same check must fail), never evidence.
"""

from pipeline.claims.answer import answer_text, claim_answer  # noqa: F401
from pipeline.claims.base import (  # noqa: F401  (the names callers import from pipeline.claims)
    CHECK_FAILED,
    FAILS,
    HOLDS,
    MIXED,
    NAN,
    NEGLIGIBLE,
    NOT_SHOWN,
    PASSED,
    STATUSES,
    Claim,
    Endpoint,
    Judge,
    Judgement,
    Verdict,
    _alive,
    _context,
    _g,
    _nonzero_mean,
    _paired,
    interval,
)
from pipeline.claims.blowup import judge_blows_up  # noqa: F401
from pipeline.claims.growth import judge_b_grows  # noqa: F401
from pipeline.claims.identity import judge_bn_redundant, judge_loss_independent  # noqa: F401
from pipeline.claims.inference import judge_inference_leak  # noqa: F401
from pipeline.claims.registry import REGISTRY, evaluate_all  # noqa: F401
from pipeline.claims.scaling import C3, _per_seed, judge_worse_scaling  # noqa: F401
