"""Simulated b processes for claim 2's boundedness rule: what the module would record for a b driven by a
known G_t, read by the same estimators (pipeline/drive.py) the report reads.

    python -m pipeline.stats.drive_calibration --report [--grids 200]   # the rule on these, through the report's code

Per member and layer, G_t = a s(t) u + sigma r(t) xi_t for t = 0..T-1: a systematic drive of size
s(t) = (1 + t/t0)^-k along a fixed unit direction u (the mean-shift gradient Gbar_t) plus zero-mean mini-batch
noise of size r(t) = (1 + t/t0)^-nu spread over the units (xi_t standard normal / sqrt(units)). SGD moves b by
-lr G_t, so b_t - b_0 = -lr sum_{s<t} G_s exactly. The records are built as pipeline/module.py builds them,
from sum_{s<t} G_s at the record steps (multiples of log_every, and T): drive_half at t = ||sum over
[half_start(t), t)|| / (t - half_start(t)), b_drift = lr ||sum_{s<t} G_s||; the noise of a window is drawn
as its exact Gaussian sum. gsum_persist uses sqrt(a^2 s^2 + sigma^2 r^2) for ||G_t|| (descriptive only).

b is bounded iff sum_t G_t converges: k > 1 and nu > 1/2. The models (DriveModel):
  bounded      k = 1.5, nu = 1.0   the drive and the noise die out faster than needed (a net that converges)
  edge         k = 1.2, nu = 0.7   bounded, near the threshold (effective kappa 1.2 for both parts)
  boundary     k = 1.0, nu = 0.5   exactly at the threshold (log growth): the rule's null, any verdict is false
  slow         k = 0.7, nu = 0.5   unbounded: a drive that decays, too slowly
  random_walk  no mean, nu = 0     unbounded: constant mini-batch noise (b ~ sqrt(t))
  drift        k = 0, nu = 0       unbounded: a persistent drive (label noise; b ~ t)
  late         k = 1.5, nu = 1.0, decaying from t0 = 125 steps on: bounded, but over a 500-step run it reads
               near the threshold (the horizon's limit: reported, not asserted)
Between members of a (data set, seed) cluster the amplitudes a and sigma share a lognormal factor (the
cluster's seed); each member and layer adds its own.

pipeline/stats/null_members.py fills the member table's claim-2 columns of its detached members from
`columns` below (model `boundary` by default, so its null stays "no verdict is right"), and
tests/test_calibration.py asserts: on `bounded` and `edge` data the rule says "unbounded" (holds) at most
5 % of the time, on `drift` and `random_walk` data "bounded" at most 5 %; power is reported
(pipeline/stats/drive_calibration.py).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from pipeline.drive import drive_decay, half_start, loglog_slope, window_alphas

SEED = 20261206


@dataclass(frozen=True)
class DriveModel:
    """G_t = a (1 + t/t0)^-k u + sigma (1 + t/t0)^-nu xi_t (k = None: no systematic part)."""

    name: str
    k: float | None
    nu: float
    a: float = 0.3  # systematic drive at t = 0 (per step, before lr)
    sigma: float = 0.3  # mini-batch noise at t = 0 (total sd over the units)
    spread: float = 0.5  # lognormal sd of a and sigma: half per cluster, half per member and layer
    t0: float = 1.0  # steps before the decay sets in (a late decay reads as slower over a finite run)

    @property
    def bounded(self) -> bool:
        return (self.k is None or self.k > 1) and self.nu > 0.5


MODELS = {
    m.name: m
    for m in (
        DriveModel("bounded", 1.5, 1.0),
        DriveModel("edge", 1.2, 0.7),
        DriveModel("boundary", 1.0, 0.5),
        DriveModel("slow", 0.7, 0.5),
        DriveModel("random_walk", None, 0.0),
        DriveModel("drift", 0.0, 0.0),
        DriveModel("late", 1.5, 1.0, t0=125.0),
    )
}
# `late` is bounded like `bounded`, but its decay sets in at t0 = 125 steps (T/4 of a 500-step run): over the
# fitted steps its local exponent is k t / (t + t0), 0.75 to 1.2 -- what a finite horizon cannot tell from an
# unbounded drive (its rate is reported, as the horizon's limit, not asserted)


def record_steps(steps: int, log_every: int) -> np.ndarray:
    """The steps the module records the drive at: 0, log_every, ..., and T."""
    return np.unique(np.r_[np.arange(0, steps, log_every), steps])


def simulate(
    model: DriveModel,
    rng: np.random.Generator,
    clusters: np.ndarray,
    layers: int,
    steps: int,
    log_every: int,
    lr: float = 0.1,
    units: int = 8,
) -> dict[str, np.ndarray]:
    """The recorded columns of len(clusters) members x `layers`: arrays [members, layers, record steps] for
    "drive_half", "b_drift", and [members, layers] for "gsum_persist"; plus "step" [record steps].
    `clusters` labels each member's (data set, seed) cluster (ints): members of one share its factor."""
    rec = record_steps(steps, log_every)
    n = len(clusters)
    ids, inv = np.unique(clusters, return_inverse=True)
    shared = rng.normal(size=(len(ids), 2))[inv][:, None, :]  # [n, 1, 2]
    own = rng.normal(size=(n, layers, 2))
    scale = np.exp(model.spread * np.sqrt(0.5) * (shared + own))  # [n, layers, 2]
    a = model.a * scale[..., 0] if model.k is not None else np.zeros((n, layers))
    sigma = model.sigma * scale[..., 1]
    u = rng.normal(size=(n, layers, units))
    u /= np.linalg.norm(u, axis=-1, keepdims=True)
    t = np.arange(steps, dtype=float)
    s = (1.0 + t / model.t0) ** -model.k if model.k is not None else np.zeros(steps)
    r2 = (1.0 + t / model.t0) ** (-2 * model.nu)
    cs, cr2 = np.r_[0.0, np.cumsum(s)], np.r_[0.0, np.cumsum(r2)]  # prefix sums over steps
    # sum_{s<t} G_s at each record step: the systematic part exactly, the noise as independent window sums
    var = np.diff(cr2[rec], prepend=0.0) / units  # per unit, per window
    noise = np.cumsum(rng.normal(size=(n, layers, len(rec), units)) * np.sqrt(var)[:, None], axis=2)
    cum = a[..., None, None] * cs[rec][:, None] * u[:, :, None, :] + sigma[..., None, None] * noise
    half = np.array([np.searchsorted(rec, half_start(x, log_every)) for x in rec])
    width = rec - rec[half]
    with np.errstate(invalid="ignore", divide="ignore"):
        drive_half = np.where(width > 0, np.linalg.norm(cum - cum[:, :, half], axis=-1) / width, np.nan)
    drift = lr * np.linalg.norm(cum, axis=-1)
    size = np.sqrt(a[..., None] ** 2 * s**2 + sigma[..., None] ** 2 * r2)  # ~||G_t|| per step
    persist = np.linalg.norm(cum[:, :, -1], axis=-1) / size.sum(-1)
    return {"step": rec.astype(float), "drive_half": drive_half, "b_drift": drift, "gsum_persist": persist}


def columns(sim: dict[str, np.ndarray], settings, steps: int) -> dict[str, np.ndarray]:
    """The member table's claim-2 quantities from simulated records, by pipeline/drive.py's estimators with
    the report's settings: per layer kappa, alpha per doubling window, alpha over the later run, b's drift,
    persistence. Returns {quantity: [members, layers]}."""
    n, layers, k = sim["b_drift"].shape
    flat = lambda x: x.reshape(n * layers, k)  # noqa: E731
    t = np.broadcast_to(sim["step"], (n * layers, k))
    kappa = drive_decay(t, flat(sim["drive_half"]), steps, settings.kappa_from, settings.alpha_min_points)
    d = flat(sim["b_drift"])
    keep = (t >= settings.alpha_from * steps) & (t > 0) & (d > 0)
    alpha = np.where(keep.sum(1) >= settings.alpha_min_points, loglog_slope(t, d, keep), np.nan)
    wins = window_alphas(t, d, steps, settings.alpha_windows, settings.alpha_min_points)
    out = {
        "kappa": kappa.reshape(n, layers),
        "alpha": alpha.reshape(n, layers),
        "b_drift": sim["b_drift"][..., -1],
        "gsum_persist": sim["gsum_persist"],
    }
    for j in range(settings.alpha_windows):
        out[f"alpha_w{j}"] = wins[:, j].reshape(n, layers)
    return out
