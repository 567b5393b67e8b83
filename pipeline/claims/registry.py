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
    Claim("claim1", "The loss does not depend on b",
          "If the normalization is computed outside the gradient step, the loss stays fixed while b changes.",
          "identity",
          (("scaled sensitivity", "|loss(b) - loss(b_0)| / max(loss, 1 nat) on the full training set, training "
            "mode, at every evaluation, divided by (1 + ||b|| / sqrt(units))"),),
          "Control: `none` (no normalization), where b matters: the same probe must exceed the tolerance there.",
          "Identity (x - mean(x) cancels b in training mode): check passed if every surviving detached-centering "
          "member whose b moved stays within {identity_rtol} x max(loss, 1 nat) x (1 + rms b) -- float32 rounding, "
          "relative above 1 nat, absolute below it (set by the logits), growing with ||b|| -- and the control `none` exceeds it (else the check could not fail: not shown). "
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
          "above {alpha_unbounded} (a random walk's 1/2), saturating where it lies below; holds if more groups "
          "are unbounded than chance would make so (binomial tail below 1 - {ci_level_text}, each group missing "
          "on one side with probability (1 - {ci_level_text}) / 2), does not hold if the same is true of "
          "saturating groups, mixed if both, else not shown. " + SHARED,
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
          "Holds if the deciding pairs ({blowup_deciders_text} vs their first twin: centering, where the "
          "theory's rank-1 term lives) have more cells with an excess interval above 0 than chance would give "
          "(binomial tail below 1 - {ci_level_text} among the informative cells, those where not every pair "
          "agreed; one cell alone counts); does not hold if the same is true of cells below 0 (the twin blew up "
          "more) or every decided cell's excess is <= 0; mixed if both above and below are beyond chance; else "
          "not shown. In deciding pairs a population member that diverged "
          "before its statistics were first recomputed (step < K) was a fixed affine map like `frozen` then: its "
          "pair leaves the comparison. Blown = diverged, or "
          "some ||W_T||/||W_0|| > {blowup_w_factor}, or ||b_T - b_0||/sqrt(units) > {blowup_b_rms}. " + SHARED,
          "blowup_excess",
          {HOLDS: "Computing the centering outside the step made the model blow up more often than the same "
                  "centering with the gradient through it, in the same cells and seeds.",
           FAILS: "The detached variants blew up no more often than their gradient-through twins: the blow-ups "
                  "seen are not detaching's doing.",
           MIXED: "Detached centering blew up more often than centering with the gradient through it in some "
                  "cells and less often in others (see which data sets and learning rates).",
           NOT_SHOWN: "Excess blow-ups over the twins were within seed noise at this scale."},
          judge_blows_up),
    Claim("claim5", "With real BN the bias is redundant",
          "With real BN the gradient flows through the statistics, b's gradient is zero and b can be dropped: "
          "z = g(BN(Wu)), its role taken by beta.",
          "identity",
          (("|dl/db| / |dl/dW|", "under bn, max over members, layers, logged steps"),
           ("bn vs bn_nobias", "relative mini-batch loss gap over the first report.trajectory_steps steps"),
           ("same status", "bn and bn_nobias members with the same data set, lr and seed")),
          "Controls: `none` and `frozen`, where b is not redundant: their |dl/db| / |dl/dW| must exceed the "
          "tolerance.",
          "Identity: check passed if under bn every |dl/db| / |dl/dW| <= {grad_rtol} while the controls exceed "
          "{grad_rtol}; otherwise check failed; fewer than {min_members} members on any side: not shown. Reported, "
          "not decisive: the bn vs bn_nobias loss gap over the first {trajectory_steps} steps against "
          "{trajectory_rtol} (both forwards are the same function of W and the data, so the gap starts at float "
          "rounding and measures how fast the dynamics amplify it -- within a few steps in deep BN networks), and "
          "whether bn and bn_nobias members end with the same status. "
          + SHARED,
          "bn_vs_nobias",
          {PASSED: "Under real BN b's gradient was zero to float precision (and dropping b changed the losses only "
                   "by amplified rounding): b is redundant and beta takes its role (an identity, checked).",
           CHECK_FAILED: "Under real BN b's gradient departed from zero beyond float rounding: the implementation "
                         "needs checking.",
           NOT_SHOWN: "The redundancy check could not be run with a control that can fail here."},
          judge_bn_redundant),
]


def answer_text(verdicts: list[Verdict]) -> str:
    """The answer paragraph: a tally of the statuses, then each verdict's answer for its status."""
    tally = Counter(v.status for v in verdicts)
    head = "Of {} verdicts: {}.".format(len(verdicts), ", ".join(f"{n} {st}" for st, n in tally.items()))
    return " ".join([head] + [f"{v.title} ({v.status}): {v.answer}" for v in verdicts])
