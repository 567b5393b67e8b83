"""The registry: each claim's statement, declared endpoints, controls and rule (templates filled
from ReportSettings), figure, answers and judge; and answer_text, the answer paragraph.

    from pipeline.claims.registry import REGISTRY, answer_text
"""
from __future__ import annotations

from collections import Counter

from pipeline.claims.base import (CHECK_FAILED, FAILS, HOLDS, MIXED, NOT_SHOWN, PASSED, SHARED, SIGNS, Claim,
                                  Verdict)
from pipeline.claims.blowup import judge_blows_up
from pipeline.claims.growth import judge_b_grows
from pipeline.claims.identity import judge_bn_redundant, judge_loss_independent
from pipeline.claims.inference import judge_inference_leak
from pipeline.claims.scaling import C3, judge_worse_scaling

# -- the registry ---------------------------------------------------------------------------------
REGISTRY: list[Claim] = [
    Claim(
        key="claim1",
        title="The loss does not depend on b",
        statement="If the normalization is computed outside the gradient step, the loss stays fixed while b changes.",
        kind="identity",
        endpoints=(("worst |loss(b) - loss(b_0)| / max(loss, 1) / (1 + rms b)",
                    "|loss(b) - loss(b_0)| / max(loss, 1 nat) on the full training set, training mode, at every "
                    "evaluation, divided by (1 + ||b|| / sqrt(units)); the worst detached-centering member"),
                   ("median of the same on the control", "the same probe on `none`, where b matters")),
        primary="worst |loss(b) - loss(b_0)| / max(loss, 1) / (1 + rms b)",
        controls="Control: `none` (no normalization), where b matters: the same probe must exceed the tolerance there.",
        rule="Identity (x - mean(x) cancels b in training mode): check passed if every surviving detached-centering "
             "member whose b moved stays within {identity_rtol} x max(loss, 1 nat) x (1 + rms b) -- float32 rounding, "
             "relative above 1 nat, absolute below it (set by the logits), growing with ||b|| -- and the control `none` exceeds it (else the check could not fail: not shown). "
             "Fewer than {min_members} members on either side: not shown.",
        figure=None,
        answers={PASSED: "In training mode the loss did not depend on b, as algebra requires: an implementation check, "
                         "not evidence.",
                 CHECK_FAILED: "The training-mode loss moved with b beyond float rounding: the implementation does not "
                               "compute the detached statistics it claims to.",
                 NOT_SHOWN: "The identity check could not be run with a control that can fail here."},
        judge=judge_loss_independent),
    Claim(
        key="claim1b",
        title="At inference, b's drift reaches the predictions",
        statement="(Consequence of claim 1, not in the paper) b's drift is cancelled by batch statistics but not by the "
                  "running or population statistics used at inference.",
        kind="measurement",
        endpoints=(("excess |eval-mode - train-mode loss|",
                    "|full-set eval-mode loss - train-mode loss|, detached minus twin, per seed"),
                   ("excess |train-mode - eval-mode accuracy|",
                    "|full-set train-mode - eval-mode accuracy|, detached minus twin, per seed"),
                   ("excess signed eval-mode - train-mode loss (sign only)",
                    "eval-mode minus train-mode loss, detached minus twin: the direction, not decisive"),
                   ("signed eval-mode - train-mode loss (toy: no twin, only b trains)",
                    "the bias-only toy's eval-mode minus train-mode loss, shown apart")),
        primary="excess |eval-mode - train-mode loss|",
        controls="Twins (same cell, lr, seeds): {twins_text}; only the variants trained on detached batch statistics "
                 "are compared (population and EMA variants use the same statistics in both modes: no gap by "
                 "construction). The bias-only toy is shown apart (no twin).",
        rule="Per detached variant, data set and lr, the excess of |gap| over the twin's is decided by its "
             "interval (the signed gap is reported, not decisive): " + SIGNS + SHARED,
        figure="train_eval_gap",
        answers={HOLDS: "Inference with running/population statistics departs from training mode (in either "
                        "direction: the signed endpoints say which) more for detached variants than for their twins: "
                        "b's drift does reach the predictions.",
                 FAILS: "The detached variants' inference-mode predictions stayed closer to their training-mode ones "
                        "than their twins' did.",
                 MIXED: "Some detached variants leak b's drift into inference more than their twins, others less.",
                 NOT_SHOWN: "No detached variant's inference gap differed from its twin's beyond seed noise."},
        judge=judge_inference_leak),
    Claim(
        key="claim2",
        title="b grows without bound",
        statement="b grows without bound (the normalization cancels every update of b).",
        kind="measurement",
        endpoints=(("growth exponent alpha",
                    "least-squares slope of log ||b_t - b_0|| on log t over t >= report.alpha_from x T, per layer"),
                   ("mean-gradient persistence ||sum G|| / sum ||G||",
                    "||sum_t G_t|| / sum_t ||G_t||, G_t = dl/db (1: persistent drive)"),
                   ("twin's drift ||b_T - b_0||", "||b_T - b_0|| of the twin (the gradient through: 0 expected)"),
                   ("growth exponent alpha (toy: identity, linear by construction)",
                    "alpha of the bias-only toy, shown apart")),
        primary="growth exponent alpha",
        controls="Twins: {twins_text}. The bias-only toy (linear by construction) is shown apart, labelled identity.",
        rule="A finite run cannot show 'without bound': the verdict reads the growth exponent alpha over the run "
             "(alpha fitted over steps >= {alpha_from} x T, at least {alpha_min_points} points). Per detached "
             "variant (real networks only), data set, lr and layer: unbounded where alpha's interval lies at or "
             "above {alpha_unbounded} (a random walk's 1/2), saturating where it lies below; holds if more groups "
             "are unbounded than chance would make so (binomial tail below 1 - {ci_level_text}, each group missing "
             "on one side with probability (1 - {ci_level_text}) / 2), does not hold if the same is true of "
             "saturating groups, mixed if both, else not shown. " + SHARED,
        figure="b_drift_per_layer",
        answers={HOLDS: "b kept growing at least like a random walk in every decided group over the run's horizon.",
                 FAILS: "b's growth slowed below a random walk's in every decided group: over this horizon it saturates.",
                 MIXED: "b grows at least like a random walk in some (variant, lr, layer) groups and saturates in others "
                        "(see which layers carry it).",
                 NOT_SHOWN: "The growth exponent could not be told apart from 1/2 at this scale."},
        judge=judge_b_grows),
    Claim(
        key="claim3",
        title="It is worse when the normalization also scales",
        statement="It is worse when the normalization also scales the activations.",
        kind="measurement",
        endpoints=tuple((name, f"per seed: (standardize_detached - its twin) - (center_detached - its twin)")
                        for name, *_ in C3),
        primary="final full-set loss, train mode, matched lr",
        controls="Twins (report.twins): {twins_text}; data sets with input mean norm ||E[u]|| > {nonzero_mean} only.",
        rule="Each endpoint is oriented so + means standardizing is worse (a larger excess over its twin). "
             "Rates average the members' 0/1 outcomes over lrs per seed; losses and accuracies average over lrs "
             "where all four members survive; 'best lr' is each variant's lr of lowest mean train-mode loss with no "
             "diverged seed; steps to the target ({target_loss_frac} x initial full-set loss) count as T when never "
             "reached. The claim " + SIGNS + SHARED,
        figure="scaling_excess",
        answers={HOLDS: "Standardizing outside the step was worse than centering outside it, each against its own "
                        "gradient-through twin, on at least one declared endpoint and better on none.",
                 FAILS: "Standardizing outside the step was better than centering outside it on the declared endpoints.",
                 MIXED: "Standardizing outside the step was worse on some declared endpoints and better on others.",
                 NOT_SHOWN: "No declared endpoint separated standardizing from centering beyond seed noise."},
        judge=judge_worse_scaling),
    Claim(
        key="claim4",
        title="The model blows up",
        statement="If the normalization is computed outside the gradient step, the model blows up.",
        kind="measurement",
        endpoints=(("excess blow-up rate (detached minus twin)",
                    "diverged or blew_up, detached minus twin, paired by seed, per data set and lr"),
                   ("blow-up rate", "the refresh-interval sweep: blow-up rate of population_detached at each K")),
        primary="excess blow-up rate (detached minus twin)",
        controls="Twins: {twins_text}; refresh-interval sweep: {k_sweep_text}.",
        rule="Holds if the deciding pairs ({blowup_deciders_text} vs their first twin: centering, where the "
             "theory's rank-1 term lives) have more cells with an excess interval above 0 than chance would give "
             "(binomial tail below 1 - {ci_level_text} among the informative cells, those where not every pair "
             "agreed; one cell alone counts); does not hold if the same is true of cells below 0 (the twin blew up "
             "more) or every decided cell's excess is <= 0; mixed if both above and below are beyond chance; else "
             "not shown. In deciding pairs a population member that diverged "
             "before its statistics were first recomputed (step < K) was a fixed affine map like `frozen` then: its "
             "pair leaves the comparison. Blown = diverged, or "
             "some ||W_T||/||W_0|| > {blowup_w_factor}, or ||b_T - b_0||/sqrt(units) > {blowup_b_rms}. " + SHARED,
        figure="blowup_excess",
        answers={HOLDS: "Computing the centering outside the step made the model blow up more often than the same "
                        "centering with the gradient through it, in the same cells and seeds.",
                 FAILS: "The detached variants blew up no more often than their gradient-through twins: the blow-ups "
                        "seen are not detaching's doing.",
                 MIXED: "Detached centering blew up more often than centering with the gradient through it in some "
                        "cells and less often in others (see which data sets and learning rates).",
                 NOT_SHOWN: "Excess blow-ups over the twins were within seed noise at this scale."},
        judge=judge_blows_up),
    Claim(
        key="claim5",
        title="With real BN the bias is redundant",
        statement="With real BN the gradient flows through the statistics, b's gradient is zero and b can be dropped: "
                  "z = g(BN(Wu)), its role taken by beta.",
        kind="identity",
        endpoints=(("worst |dl/db| / |dl/dW|", "under bn, max over members, layers, logged steps"),
                   ("median |dl/db| / |dl/dW| on the controls", "under `none` and `frozen`, where b is not redundant"),
                   ("worst bn vs bn_nobias loss gap, early steps (reported, not decisive)",
                    "relative mini-batch loss gap over the first report.trajectory_steps steps"),
                   ("same member status, bn vs bn_nobias (reported, not decisive)",
                    "bn and bn_nobias members with the same data set, lr and seed")),
        primary="worst |dl/db| / |dl/dW|",
        controls="Controls: `none` and `frozen`, where b is not redundant: their |dl/db| / |dl/dW| must exceed the "
                 "tolerance.",
        rule="Identity: check passed if under bn every |dl/db| / |dl/dW| <= {grad_rtol} while the controls exceed "
             "{grad_rtol}; otherwise check failed; fewer than {min_members} members on any side: not shown. Reported, "
             "not decisive: the bn vs bn_nobias loss gap over the first {trajectory_steps} steps against "
             "{trajectory_rtol} (both forwards are the same function of W and the data, so the gap starts at float "
             "rounding and measures how fast the dynamics amplify it -- within a few steps in deep BN networks), and "
             "whether bn and bn_nobias members end with the same status. "
             + SHARED,
        figure="bn_vs_nobias",
        answers={PASSED: "Under real BN b's gradient was zero to float precision (and dropping b changed the losses only "
                         "by amplified rounding): b is redundant and beta takes its role (an identity, checked).",
                 CHECK_FAILED: "Under real BN b's gradient departed from zero beyond float rounding: the implementation "
                               "needs checking.",
                 NOT_SHOWN: "The redundancy check could not be run with a control that can fail here."},
        judge=judge_bn_redundant),
]


def answer_text(verdicts: list[Verdict]) -> str:
    """The answer paragraph: a tally of the statuses, then each verdict's answer for its status."""
    tally = Counter(v.status for v in verdicts)
    head = "Of {} verdicts: {}.".format(len(verdicts), ", ".join(f"{n} {st}" for st, n in tally.items()))
    return " ".join([head] + [f"{v.title} ({v.status}): {v.answer}" for v in verdicts])
