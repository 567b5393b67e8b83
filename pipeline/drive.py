"""b's drive and what it predicts: the estimators behind claim 2's boundedness rule and claim 1b's
predicted inference leak. numpy only: the module's records, pipeline.outcomes, the null simulator
(pipeline/stats/null_drift.py) and the report all read b through these functions.

    from pipeline.drive import half_start, drive_decay, window_alphas, window_moments, ema_lag_linear

Notation (docs/science.md). G_t = dl/db_t is the mini-batch gradient of b at step t; Gbar_t its
full-batch mean (the "mean-shift gradient"); SGD moves b by -lr G_t, so b_t - b_0 = -lr sum_{s<t} G_s
(an identity). Whether b stays bounded is whether that sum converges. Over a doubling window [t/2, t)
write D_t = ||sum_{s in [t/2, t)} G_s|| / (t/2), the window's mean drive (the module records it as
`drive_half`). If D_t ~ t^-kappa then the window's sum ~ t^(1 - kappa), and b's increments over
successive doubling windows shrink geometrically -- b converges -- iff kappa > 1. The same threshold
holds whatever carries the drive:
  a systematic drive ||Gbar_t|| ~ t^-k  gives kappa = k               (bounded iff k > 1: sum ||Gbar|| < inf)
  zero-mean noise of size sigma_t ~ t^-nu gives kappa = nu + 1/2      (bounded iff nu > 1/2: sum sigma^2 < inf)
so kappa, read from the recorded window sums, decides boundedness without separating the two; the
persistence ||sum G|| / sum ||G|| and the unbiased mean-drive estimate (window_moments) say which of
the two it is. A finite run measures kappa over its horizon; it does not prove a limit.

The inference leak (claim 1b): where a layer's running mean is an EMA from 0 with momentum m of the
batch means, it holds EMA(b) for b's part (pipeline/module.py). After n forwards with b_0..b_{n-1} the
EMA is e_n = sum_k m (1-m)^(n-1-k) b_k, and inference adds b_{n-1+ahead} (ahead = 1 after training:
the last update moved b once more). So the lag b - e = -lr sum_s (1-m)^(T-1-s) G_s: an EMA-weighted
sum of the recent drive with total weight 1/m. For a drive constant over the EMA's memory (~1/m
steps) its size is lr ||Gbar|| / m, plus noise of variance lr^2 tr(Sigma) / (1 - (1-m)^2); and the
loss it adds at inference is, to first order, <dl/db, lag> = -(lr / m) ||Gbar||^2 summed over layers
(b descends the loss with the statistics held: inference fits better). ema_lag_linear is the exact
lag for b linear in t (a constant drive), the case the tests check against the module.
"""

from __future__ import annotations

import numpy as np


def half_start(step: int, log_every: int) -> int:
    """The record step that opens the doubling window ending at `step`: the largest multiple of
    `log_every` (the module records at multiples of it, and at the end) not above step / 2."""
    return (int(step) // 2) // int(log_every) * int(log_every)


def loglog_slope(t, y, keep) -> np.ndarray:
    """Least-squares slope of log y on log t, row by row ([rows, points] arrays; `keep` a boolean mask
    of the points to use, which must have t > 0 and y > 0). Rows with fewer than 2 kept points: NaN."""
    t, y, keep = np.atleast_2d(np.asarray(t, float)), np.atleast_2d(np.asarray(y, float)), np.atleast_2d(keep)
    keep = keep & (t > 0) & (y > 0) & np.isfinite(y)
    n = keep.sum(axis=1)
    lx = np.where(keep, np.log(np.where(keep, t, 1.0)), 0.0)
    ly = np.where(keep, np.log(np.where(keep, y, 1.0)), 0.0)
    with np.errstate(invalid="ignore", divide="ignore"):
        mx, my = lx.sum(1) / n, ly.sum(1) / n
        dx = np.where(keep, lx - mx[:, None], 0.0)
        slope = (dx * np.where(keep, ly - my[:, None], 0.0)).sum(1) / (dx * dx).sum(1)
    return np.where(n >= 2, slope, np.nan)


def drive_decay(steps, drive_half, horizon: float, start_frac: float, min_points: int) -> np.ndarray:
    """kappa of D_t ~ t^-kappa (D_t = `drive_half`, the mean drive over the doubling window ending at t):
    minus the least-squares slope of log D_t on log t over t >= start_frac x horizon. > 1: b's increments
    over doubling windows shrink geometrically (bounded); <= 1: they do not (unbounded). Rows: members
    (or one member as 1-D arrays); NaN with fewer than `min_points` points."""
    t, d = np.atleast_2d(np.asarray(steps, float)), np.atleast_2d(np.asarray(drive_half, float))
    keep = (t >= start_frac * horizon) & (t > 0) & np.isfinite(d) & (d > 0)
    slope = loglog_slope(t, d, keep)
    return np.where(keep.sum(1) >= min_points, -slope, np.nan)


def windows(horizon: float, count: int) -> list[tuple[float, float]]:
    """The `count` doubling windows that end at the horizon, latest first: [T/2, T], [T/4, T/2], ..."""
    return [(horizon / 2 ** (k + 1), horizon / 2**k) for k in range(count)]


def window_alphas(steps, drift, horizon: float, count: int, min_points: int) -> np.ndarray:
    """alpha of ||b_t - b_0|| ~ t^alpha in each doubling window ending at the horizon (latest first), by
    least squares on log-log: [rows, count]. alpha > 0 in the last window: b is still moving away from
    b_0 there. NaN where a window has fewer than `min_points` logged points."""
    t, d = np.atleast_2d(np.asarray(steps, float)), np.atleast_2d(np.asarray(drift, float))
    out = []
    for lo, hi in windows(horizon, count):
        keep = (t >= lo) & (t <= hi) & (t > 0) & np.isfinite(d) & (d > 0)
        out.append(np.where(keep.sum(1) >= min_points, loglog_slope(t, d, keep), np.nan))
    return np.stack(out, axis=1)


def window_moments(mean_norm, sq_sum, n) -> tuple[np.ndarray, np.ndarray]:
    """From one window of n steps: `mean_norm` = ||sum G|| / n and `sq_sum` = sum ||G||^2, the unbiased
    estimates of ||Gbar||^2 (the mean drive's squared norm, for a drive constant over the window) and of
    tr(Sigma) (the mini-batch noise's total variance): ((n ||mean||)^2 - sq_sum) / (n (n - 1)) and
    (sq_sum - n ||mean||^2) / (n - 1). The first can be negative where the noise dominates. NaN for n < 2."""
    g, q, n = np.asarray(mean_norm, float), np.asarray(sq_sum, float), np.asarray(n, float)
    with np.errstate(invalid="ignore", divide="ignore"):
        ok = n >= 2
        mean_sq = np.where(ok, (n * n * g * g - q) / (n * (n - 1)), np.nan)
        var = np.where(ok, (q - n * g * g) / (n - 1), np.nan)
    return mean_sq, var


def ema_lag_linear(b0, v, n: int, m: float, ahead: int = 1):
    """Exact b_{n-1+ahead} - e_n for b_k = b0 + v k (a constant drive v = -lr G), where e starts at 0 and
    takes e <- (1 - m) e + m b_k for k = 0..n-1 (torch's running-mean update with momentum m). ahead = 1:
    after training (inference adds b_T, the EMA last saw b_{T-1}); ahead = 0: at a logged step (the step's
    forward has just updated the EMA with the b it used). Long runs: v (ahead - 1 + 1/m) + (1-m)^n b0."""
    q = 1.0 - m
    i = np.arange(n, dtype=float)
    s0 = 1.0 - q**n  # sum_k m q^(n-1-k)
    s1 = float(np.sum(m * q**i * (n - 1 - i)))  # sum_k m q^(n-1-k) k
    return np.asarray(b0, float) * (1.0 - s0) + np.asarray(v, float) * (n - 1 + ahead - s1)


def lag_prediction(lr, m, mean_sq, var) -> np.ndarray:
    """Predicted ||b_T - EMA(b)|| from the drive over the EMA's memory: lr sqrt(||Gbar||^2 / m^2 +
    tr(Sigma) / (1 - (1-m)^2)) (mean part: the drive summed with weights (1-m)^age, total 1/m; noise part:
    those weights squared). Negative moment estimates are read as 0."""
    lr, m = np.asarray(lr, float), np.asarray(m, float)
    ms, vs = np.clip(np.asarray(mean_sq, float), 0, None), np.clip(np.asarray(var, float), 0, None)
    return lr * np.sqrt(ms / m**2 + vs / (1 - (1 - m) ** 2))


def leak_prediction(lr, m, mean_sq_total) -> np.ndarray:
    """Predicted b's share of the inference-mode gap, to first order in lr: <dl/db, lag> = -(lr / m) x
    sum over layers of ||Gbar||^2 (nats; the unbiased estimate is used as it is, negative or not, so the
    mean over members stays unbiased)."""
    return -np.asarray(lr, float) / np.asarray(m, float) * np.asarray(mean_sq_total, float)
