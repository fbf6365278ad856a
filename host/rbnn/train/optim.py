"""The optimiser of host training: Adam with a learning-rate multiplier per array."""

from __future__ import annotations

import numpy as np


class Adam:
    """Adam on a list of float32 arrays, with a learning-rate multiplier per array."""

    def __init__(self, params: list[np.ndarray], scales: list[float], b1=0.9, b2=0.999, eps=1e-8):
        self.m = [np.zeros_like(p) for p in params]
        self.v = [np.zeros_like(p) for p in params]
        self.scales = scales
        self.b1, self.b2, self.eps = b1, b2, eps
        self.t = 0

    def step(self, params: list[np.ndarray], grads: list[np.ndarray], lr: float) -> None:
        self.t += 1
        c1 = 1 - self.b1**self.t
        c2 = 1 - self.b2**self.t
        for p, g, m, v, sc in zip(params, grads, self.m, self.v, self.scales, strict=True):
            m *= self.b1
            m += (1 - self.b1) * g
            v *= self.b2
            v += (1 - self.b2) * (g * g)
            p -= (lr * sc / c1) * m / (np.sqrt(v / c2) + self.eps)
