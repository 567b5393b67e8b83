"""The primary tests: one per measurement claim (two for claim 3, which has two sides), each a
paired comparison whose endpoint `report.primary` names in params before the report reads the
data. Torch-free and pandas-free, so params validation (in every stage) knows the vocabulary.

    from pipeline.spec.primaries import PRIMARY_TESTS, primary_test, register_primary
    primary_test("claim4").endpoints["excess_divergence"].unit     # "fraction"
    register_primary(PrimaryTest("my_claim", "my_claim", "", "all", {"my_endpoint": EndpointChoice(...)}))
    # a plug-in measurement claim's test (undo: unregister_primary); params must then declare
    # report.primary.my_claim: {endpoint: my_endpoint, smallest_effect: ...}

A test's comparisons are built by the claim's judge (pipeline/claims/) for the endpoint named in
params; pipeline.claims.primary runs the test (sign flips by data set x seed), Holm across every
test of the report, and the decision against the declared smallest effect.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from types import MappingProxyType


@dataclass(frozen=True)
class EndpointChoice:
    """One endpoint a primary test may be read by: what one comparison is, its unit, what + means."""

    text: str
    unit: str
    plus: str  # what a positive effect means, in the claim's words


@dataclass(frozen=True)
class PrimaryTest:
    key: str  # the key under report.primary (a claim's key, or claim3_fit / claim3_stability)
    claim: str  # the claim it decides
    side: str  # "" or the side of the claim it reads (claim 3: "fit", "stability")
    datasets: str  # "all" | "nonzero_mean": which data sets the test pools (the others: controls)
    endpoints: Mapping[str, EndpointChoice] = field(default_factory=dict)


def _test(key, claim, side, datasets, **endpoints: EndpointChoice) -> PrimaryTest:
    return PrimaryTest(key, claim, side, datasets, MappingProxyType(endpoints))


PRIMARY_TESTS: tuple[PrimaryTest, ...] = (
    _test(
        "claim1b",
        "claim1b",
        "",
        "all",
        signed_gap=EndpointChoice(
            "(eval-mode - train-mode full-set loss), detached minus twin, per cell, lr and seed",
            "nats",
            "inference mode is worse for the detached variant",
        ),
        abs_gap=EndpointChoice(
            "|eval-mode - train-mode full-set loss|, detached minus twin, per cell, lr and seed",
            "nats",
            "inference departs more from training mode",
        ),
    ),
    _test(
        "claim2",
        "claim2",
        "",
        "all",
        drive_decay=EndpointChoice(
            "1 - kappa, kappa the decay exponent of b's drive over doubling windows "
            "(||sum_{[t/2, t)} G|| / (t/2) ~ t^-kappa, fitted over t >= report.kappa_from x "
            "T), per surviving detached member and layer",
            "kappa",
            "b's drive decays no faster than 1/t: b grows without bound",
        ),
        alpha_excess=EndpointChoice(
            "growth exponent alpha of ||b_t - b_0|| minus report.alpha_unbounded, per detached member and layer",
            "alpha",
            "b grows faster than a random walk",
        ),
    ),
    _test(
        "claim3_fit",
        "claim3",
        "fit",
        "nonzero_mean",
        loss_matched_lr=EndpointChoice(
            "final full-set train-mode loss at matched lr, (standardize_detached - "
            "twin) - (center_detached - twin), per data set and seed",
            "nats",
            "standardizing fits worse",
        ),
        acc_deficit_matched_lr=EndpointChoice(
            "final full-set train-mode accuracy deficit at matched lr, the same difference of differences",
            "accuracy",
            "standardizing fits worse",
        ),
    ),
    _test(
        "claim3_stability",
        "claim3",
        "stability",
        "nonzero_mean",
        divergence_rate=EndpointChoice(
            "divergence rate over the lrs, (standardize_detached - twin) - "
            "(center_detached - twin), per data set and seed",
            "fraction",
            "standardizing diverges more",
        ),
    ),
    _test(
        "claim4",
        "claim4",
        "",
        "nonzero_mean",
        excess_divergence=EndpointChoice(
            "diverged (0/1), detached minus twin, per deciding pair, lr and seed",
            "fraction",
            "detaching makes the model diverge",
        ),
        excess_blown=EndpointChoice(
            "diverged or W/b grew past the declared factors (0/1), detached minus twin, per deciding pair, lr and seed",
            "fraction",
            "detaching makes the model blow up",
        ),
    ),
    # b shadows beta (pipeline/claims/shadow.py): claim 4's deciding centering without beta against the same
    # variant with gamma, beta (its sibling by config: same norm and settings, affine on)
    _test(
        "claim_shadow",
        "claim_shadow",
        "",
        "nonzero_mean",
        divergence_without_beta=EndpointChoice(
            "diverged (0/1), deciding detached centering without beta minus the "
            "same variant with gamma, beta, per data set, lr and seed",
            "fraction",
            "with beta the detached centering diverges less (b shadows beta)",
        ),
    ),
)

_BY_KEY: dict[str, PrimaryTest] = {t.key: t for t in PRIMARY_TESTS}


def primary_test(key: str) -> PrimaryTest:
    return _BY_KEY[key]


def primary_tests() -> tuple[PrimaryTest, ...]:
    """Every primary test: the built-in ones and those registered at run time."""
    return tuple(_BY_KEY.values())


def register_primary(test: PrimaryTest) -> None:
    """Adds a plug-in measurement claim's test (a key already taken is refused)."""
    if test.key in _BY_KEY:
        raise ValueError(f"primary test {test.key!r} exists already")
    if not test.endpoints:
        raise ValueError(f"primary test {test.key!r}: declare at least one endpoint")
    _BY_KEY[test.key] = PrimaryTest(
        test.key, test.claim, test.side, test.datasets, MappingProxyType(dict(test.endpoints))
    )


def unregister_primary(key: str) -> None:
    if key in {t.key for t in PRIMARY_TESTS}:
        raise ValueError(f"primary test {key!r} is built in")
    _BY_KEY.pop(key, None)
