"""The registry: each claim's statement, declared endpoints, primary tests, controls and rule
(templates filled from ReportSettings), figure, answers and judge; evaluate_all, every verdict with
the primary tests Holm-adjusted together.

    from pipeline.claims.registry import REGISTRY, evaluate_all
    verdicts = evaluate_all(members, histories, params.report)

Answers are templates filled from the claim's primary test results (pipeline.claims.answer):
`{t}` the first test's effect and interval, `{p}` its Holm-adjusted p, `{carried}` the data sets
whose own interval carries it, `{control}` the controls' effects; for claim 3 `{fit}` and `{stability}`.
"""

from __future__ import annotations

from pipeline.claims.base import CHECK_FAILED, FAILS, HOLDS, MIXED, NEGLIGIBLE, NOT_SHOWN, PASSED, Claim, Verdict
from pipeline.claims.blowup import EXCESS, EXCESS_DIV, RATE, judge_blows_up
from pipeline.claims.divergence_time import TIME
from pipeline.claims.growth import ALPHA, ALPHA_WINDOW, DRIFT, KAPPA, PERSIST, TWIN_DRIFT, judge_b_grows
from pipeline.claims.growth import TOY as TOY_ALPHA
from pipeline.claims.identity import judge_bn_redundant, judge_loss_independent
from pipeline.claims.inference import ABS, ABS_ACC, B_SHARE, LAG_SHARE, SIGNED, judge_inference_leak
from pipeline.claims.inference import TOY as TOY_GAP
from pipeline.claims.mechanism import DRIFT_RATIO, GROWTH
from pipeline.claims.scaling import C3, judge_worse_scaling
from pipeline.claims.shadow import SHADOW

SHARED = (
    "Descriptive intervals: {ci_level_text} over seeds (Student t for means, Clopper-Pearson for a rate, "
    "Newcombe's paired score interval for an excess rate); they describe, the primary test decides."
)

# -- the registry ---------------------------------------------------------------------------------
REGISTRY: list[Claim] = [
    Claim(
        key="claim1",
        title="The loss does not depend on b",
        statement="If the normalization is computed outside the gradient step, the loss stays fixed while b changes.",
        kind="identity",
        endpoints=(
            (
                "worst |loss(b) - loss(b_0)| / max(loss, 1) / (1 + rms b)",
                "|loss(b) - loss(b_0)| / max(loss, 1 nat) on the full training set, training mode, at every "
                "evaluation, divided by (1 + ||b|| / sqrt(units)); the worst detached-centering member",
            ),
            ("median of the same on the control", "the same probe on `none`, where b matters"),
        ),
        primary="worst |loss(b) - loss(b_0)| / max(loss, 1) / (1 + rms b)",
        controls="Control: `none` (no normalization), where b matters: the same probe must exceed the tolerance there.",
        rule="Identity (x - mean(x) cancels b in training mode): check passed if every surviving detached-centering "
        "member whose b moved stays within {identity_rtol} x max(loss, 1 nat) x (1 + rms b) -- float32 rounding, "
        "relative above 1 nat, absolute below it (set by the logits), growing with ||b|| -- and the control `none` exceeds it (else the check could not fail: not shown). "
        "Fewer than {min_members} members on either side: not shown.",
        figure=None,
        answers={
            PASSED: "In training mode the loss did not depend on b, as algebra requires: an implementation check, "
            "not evidence.",
            CHECK_FAILED: "The training-mode loss moved with b beyond float rounding: the implementation does not "
            "compute the detached statistics it claims to.",
            NOT_SHOWN: "The identity check could not be run with a control that can fail here.",
        },
        judge=judge_loss_independent,
    ),
    Claim(
        key="claim1b",
        title="At inference, b's drift reaches the predictions",
        statement="(Consequence of claim 1, not in the paper) b's drift is cancelled by batch statistics but not by the "
        "running or population statistics used at inference.",
        kind="measurement",
        endpoints=(
            (SIGNED, "eval-mode minus train-mode full-set loss, detached minus twin, per (data set, lr)"),
            (ABS, "|full-set eval-mode - train-mode loss|, detached minus twin, per (data set, lr)"),
            (ABS_ACC, "|full-set train-mode - eval-mode accuracy|, detached minus twin, per (data set, lr)"),
            (TOY_GAP, "the bias-only toy's eval-mode minus train-mode loss, shown apart"),
            (
                B_SHARE,
                "eval-mode loss with b minus with b replaced by its EMA (the running mean's copy of b): "
                "what b's drift adds at inference, per detached variant and data set",
            ),
            (LAG_SHARE, "eval-mode loss with b's EMA minus train-mode loss: the lag of W's statistics"),
        ),
        tests=("claim1b",),
        controls="Twins (same cell, lr, seeds): {twins_text}; only the variants trained on detached batch statistics "
        "are compared (population and EMA variants use the same statistics in both modes: no gap by "
        "construction). The bias-only toy is shown apart (no twin).",
        rule="The primary test pools every detached batch variant, data set and lr. " + SHARED,
        figure="train_eval_gap",
        answers={
            HOLDS: "At inference b's drift reached the predictions ({plus}): {t} (Holm p {p}), carried by {carried}.",
            FAILS: "At inference the detached variants' full-set loss was LOWER than in training mode, relative to "
            "their twins: {t} (Holm p {p}), carried by {carried} -- b's drift reaches the predictions, "
            "and here it helps them.",
            NEGLIGIBLE: "The detached variants' inference gap matched their twins' within the smallest effect "
            "that matters: {t}.",
            NOT_SHOWN: "The detached variants' inference gap could not be told from their twins': {t} (Holm p {p}).",
        },
        judge=judge_inference_leak,
    ),
    Claim(
        key="claim2",
        title="b grows without bound",
        statement="b grows without bound (the normalization cancels every update of b).",
        kind="measurement",
        endpoints=(
            (
                KAPPA,
                "decay exponent of b's drive over doubling windows, ||sum_{[t/2, t)} G|| / (t/2) ~ "
                "t^-kappa, fitted over t >= report.kappa_from x T (> 1: bounded; <= 1: unbounded)",
            ),
            (
                ALPHA_WINDOW,
                "least-squares slope of log ||b_t - b_0|| on log t in each doubling window ending "
                "at T ([T/2, T], [T/4, T/2], ...)",
            ),
            (ALPHA, "least-squares slope of log ||b_t - b_0|| on log t over t >= report.alpha_from x T, per layer"),
            (PERSIST, "||sum_t G_t|| / sum_t ||G_t||, G_t = dl/db (1: a systematic drive; ~1/sqrt(steps): noise)"),
            (DRIFT, "||b_T - b_0|| of the subject"),
            (TWIN_DRIFT, "||b_T - b_0|| of the twin (the gradient through: 0 expected)"),
            (TOY_ALPHA, "alpha of the bias-only toy, shown apart"),
        ),
        tests=("claim2",),
        controls="Twins: {twins_text} (their b does not move: the gradient through the statistics is 0). The "
        "bias-only toy (linear by construction) is shown apart, labelled identity.",
        rule="Boundedness, not an exponent threshold: b_T - b_0 = -lr sum_t G_t (SGD's rule, an identity) is bounded "
        "exactly when that sum converges. The test reads 1 - kappa per surviving detached member of the real "
        "networks and layer, kappa the decay exponent of b's drive over doubling windows (fitted over steps >= "
        "{kappa_from} x T, at least {alpha_min_points} points): kappa > 1 -- the increments of b over successive "
        "doubling windows shrink geometrically, b converges (bounded); kappa <= 1 -- they do not (unbounded); a "
        "systematic drive ||Gbar|| ~ t^-k has kappa = k, zero-mean noise of size t^-nu has kappa = nu + 1/2, so "
        "one threshold serves both. Holds (unbounded) only if, besides the test, alpha of ||b_t - b_0|| over the "
        "last doubling window [T/2, T] (pooled, (data set, seed) cluster interval) lies above 0; does not hold "
        "(bounded) only if that interval lies below {bounded_alpha} (b has settled); otherwise not shown (the "
        "guard can only withhold a verdict). Alpha per window ({alpha_windows} doubling windows) and the "
        "persistence are reported (persistence says whether a systematic gradient or noise carries the drive, "
        "not whether b is bounded). With report.primary.claim2.endpoint alpha_excess the replaced rule applies: "
        "alpha over steps >= {alpha_from} x T against {alpha_unbounded}, no guard. " + SHARED,
        figure="drive_decay",
        answers={
            HOLDS: "b grows without bound: its drive decayed no faster than 1/t, 1 - kappa = {t} (Holm p {p}), and "
            "b was still moving away from b_0 over the last doubling window.",
            FAILS: "b stays bounded: its drive decayed faster than 1/t, 1 - kappa = {t} (Holm p {p}), and b had "
            "settled over the last doubling window.",
            NEGLIGIBLE: "b's drive decayed like 1/t (1 - kappa = {t}): logarithmic growth, at the edge between "
            "bounded and unbounded, which this horizon cannot tell apart.",
            NOT_SHOWN: "Whether b is bounded was not shown: 1 - kappa = {t} (Holm p {p}), or b's own path over the "
            "last doubling window did not agree with the test (see the evidence).",
        },
        judge=judge_b_grows,
    ),
    Claim(
        key="claim3",
        title="It is worse when the normalization also scales",
        statement="It is worse when the normalization also scales the activations.",
        kind="measurement",
        endpoints=tuple(
            (name, "per seed: (standardize_detached - its twin) - (center_detached - its twin)") for name, *_ in C3
        ),
        tests=("claim3_fit", "claim3_stability"),
        controls="Twins (report.twins): {twins_text}; data sets with input mean norm ||E[u]|| > {nonzero_mean} "
        "pooled, the others shown as controls.",
        rule="Two sides, each its own primary test, + = standardizing worse: fit and stability. The claim holds if a "
        "side holds and the other does not point the other way; mixed if one side holds and the other does "
        "not hold. Losses and accuracies average over lrs where all four members survive; rates over every lr; "
        "'best lr' is each variant's lr of lowest mean train-mode loss with no diverged seed. " + SHARED,
        figure="scaling_excess",
        answers={
            HOLDS: "Standardizing outside the step was worse than centering outside it, each against its own "
            "twin: fit {fit}, stability {stability}.",
            FAILS: "Standardizing outside the step was better than centering outside it: fit {fit}, stability "
            "{stability}.",
            MIXED: "Standardizing outside the step was {fit_word} than centering outside it on fit ({fit}) but "
            "{stability_word} on stability ({stability}); each against its own twin.",
            NEGLIGIBLE: "Standardizing and centering outside the step differed by less than the smallest effects "
            "that matter: fit {fit}, stability {stability}.",
            NOT_SHOWN: "Neither side separated standardizing from centering: fit {fit}, stability {stability}.",
        },
        judge=judge_worse_scaling,
    ),
    Claim(
        key="claim4",
        title="The model blows up",
        statement="If the normalization is computed outside the gradient step, the model blows up.",
        kind="measurement",
        endpoints=(
            (EXCESS, "diverged or W/b grew past the declared factors, detached minus twin, per (data set, lr)"),
            (EXCESS_DIV, "diverged, detached minus twin, per (data set, lr)"),
            (RATE, "the refresh-interval sweep: blow-up rate of population_detached at each K"),
            (
                TIME,
                "each member's divergence step (censored at the run's last step), stratified by pair, "
                "data set and lr; p by swapping arms within (data set, seed) clusters (descriptive)",
            ),
            (
                GROWTH,
                "||m^T W|| at the last logged step before divergence over its value at init, m = "
                "E[u]/||E[u]||, per variant and its twin, data set and lr (the mechanism)",
            ),
            (
                DRIFT_RATIO,
                "||m^T (W_T - W_0)|| / (||E[u]|| ||b_T - b_0||): 1 = all of W's drift along "
                "the mean is the rank-1 term's",
            ),
        ),
        tests=("claim4",),
        controls="Twins: {twins_text}; deciding pairs: {blowup_deciders_text} against their first twin (centering, "
        "where the theory's rank-1 term lives); refresh-interval sweep: {k_sweep_text}; data sets with input "
        "mean norm ||E[u]|| > {nonzero_mean} pooled, the zero-mean ones are the control.",
        rule="A population member that diverged before its statistics were first recomputed (step < K) was a fixed "
        "affine map like `frozen` then: its pair leaves the comparison, and so does a pair whose twin diverged "
        "before that step (both members are compared from step K on). Diverged = non-finite or huge loss, or "
        "a parameter past train.diverge_param; W grew = some ||W_T||/||W_0|| > {blowup_w_factor}; b grew = "
        "||b_T - b_0||/sqrt(units) > {blowup_b_rms}. " + SHARED,
        figure="blowup_excess",
        answers={
            HOLDS: "Computing the centering outside the step made the model diverge more often than the same "
            "centering with the gradient through it, in the same cells and seeds: {t} (Holm p {p}), "
            "carried by {carried}; control {control}.",
            FAILS: "The detached variants diverged less often than their gradient-through twins: {t} (Holm p {p}).",
            NEGLIGIBLE: "Detaching changed the divergence rate by less than the smallest effect that matters: {t}.",
            NOT_SHOWN: "Excess divergence over the twins could not be told from seed noise: {t} (Holm p {p}).",
        },
        judge=judge_blows_up,
    ),
    Claim(
        key="claim5",
        title="With real BN the bias is redundant",
        statement="With real BN the gradient flows through the statistics, b's gradient is zero and b can be dropped: "
        "z = g(BN(Wu)), its role taken by beta.",
        kind="identity",
        endpoints=(
            (
                "worst |dl/db| / |dl/dW| in float64",
                "under bn, max over members and layers, final state, one training batch in float64",
            ),
            (
                "median |dl/db| / |dl/dW| in float64 on the controls",
                "under `none` and `frozen`, where b is not redundant",
            ),
            (
                "worst |dl/db| / |dl/dW|",
                "float32, under bn, max over members, layers, logged steps (reported, "
                "not decisive where the float64 probe was recorded)",
            ),
            ("median |dl/db| / |dl/dW| on the controls", "float32, under `none` and `frozen`"),
            (
                "worst bn vs bn_nobias loss gap, early steps (reported, not decisive)",
                "relative mini-batch loss gap over the first report.trajectory_steps steps",
            ),
            (
                "same member status, bn vs bn_nobias (reported, not decisive)",
                "bn and bn_nobias members with the same data set, lr and seed",
            ),
        ),
        primary="worst |dl/db| / |dl/dW| in float64",
        controls="Controls: `none` and `frozen`, where b is not redundant: their |dl/db| / |dl/dW| must exceed the "
        "tolerance.",
        rule="Identity: check passed if under bn every |dl/db| / |dl/dW|, computed in float64 on the final state "
        "(one training batch, training mode), is <= {grad_rtol_float64} while the controls exceed it; otherwise "
        "check failed; fewer than {min_members} members on any side: not shown. Reported, not decisive: the "
        "float32 ratio logged over training against {grad_rtol} (a float32 sum over a conv channel's batch x H "
        "x W terms rounds near it); the bn vs bn_nobias loss gap over the first {trajectory_steps} steps against "
        "{trajectory_rtol} (both forwards are the same function of W and the data, so the gap starts at float "
        "rounding and measures how fast the dynamics amplify it -- within a few steps in deep BN networks), and "
        "whether bn and bn_nobias members end with the same status. " + SHARED,
        figure="bn_vs_nobias",
        answers={
            PASSED: "Under real BN b's gradient was zero to float precision (and dropping b changed the losses only "
            "by amplified rounding): b is redundant and beta takes its role (an identity, checked).",
            CHECK_FAILED: "Under real BN b's gradient departed from zero beyond float rounding: the implementation "
            "needs checking.",
            NOT_SHOWN: "The redundancy check could not be run with a control that can fail here.",
        },
        judge=judge_bn_redundant,
    ),
    SHADOW,  # what b is for: b shadows beta (pipeline/claims/shadow.py)
]


def evaluate_all(members, histories, settings, registry: list[Claim] | None = None) -> list[Verdict]:
    """Every claim's verdict; the primary tests of all claims Holm-adjusted together."""
    from pipeline.claims.primary import run_tests

    claims = REGISTRY if registry is None else registry
    judged = [(c, c.judge(members, histories, settings)) for c in claims]
    comparisons = {k: j.comparisons[k] for c, j in judged for k in c.tests if k in j.comparisons}
    results = run_tests(comparisons, members, settings)
    return [c.verdict(j, results, settings) for c, j in judged]
