"""How far b drifts when its gradient is a constant G, for each optimizer: the closed forms the
bias-only toy is checked against (tests/test_drift.py) and the report's toy figure can draw.

    from pipeline.nets.drift import displacement
    d = displacement(G, lr=0.1, steps=500, optimizer="sgd", momentum=0.9)   # b_T - b_0

Why G is constant there: in the toy only b trains and the centering is detached, so b cancels in
x - sg(mean(x)) and nothing b does changes the gradient; on the full batch it is the same every step.
  SGD:                 b_T - b_0 = -lr * T * G
  SGD with momentum m: b_T - b_0 = -lr * G * sum_{t=1..T} (1 - m^t) / (1 - m)
                       (torch's buffer starts at G: buf_t = G (1 - m^t) / (1 - m)); -> lr*G/(1-m) per step
  Adam:                b_T - b_0 = -lr * T * G / (|G| + eps), per coordinate (the bias-corrected moments
                       are exactly G and G^2): every coordinate with G != 0 moves lr per step, whatever |G|,
                       so ||b_T - b_0|| = lr * T * sqrt(#{i: G_i != 0}) up to eps.
With a noisy mini-batch gradient of persistent mean E[G], the same laws hold on average with G -> E[G]
for SGD and momentum; Adam's per-coordinate step stays ~lr only while |E[G_i]| dominates its noise
(a zero-mean coordinate random-walks), so there is no single closed form for it.
"""

from __future__ import annotations

import numpy as np


def displacement(
    g, lr: float, steps: int, optimizer: str = "sgd", momentum: float = 0.0, eps: float = 1e-8
) -> np.ndarray:
    """b_T - b_0 after `steps` updates with the constant gradient `g` (any shape)."""
    g = np.asarray(g, dtype=np.float64)
    if optimizer == "sgd":
        if momentum == 0.0:
            return -lr * steps * g
        t = np.arange(1, steps + 1)
        return -lr * g * float(np.sum((1.0 - momentum**t) / (1.0 - momentum)))
    if optimizer == "adam":
        return -lr * steps * g / (np.abs(g) + eps)
    raise ValueError(f"optimizer: sgd or adam (got {optimizer!r})")
