"""The float growth reference: the same growth as ``rbnn grow`` (the same blocks, the same
samples in the same order, one column per block on top of the frozen ones), trained in
float the way the host trains (Courbariaux & Hubara et al.: sign weights and
activations, BatchNorm after every layer, the straight-through gate |y| <= 1, latent
weights clipped to [-1, 1], Adam), so the integer step's accuracy can be compared with
what float training of the same columns reaches (issue 7's acceptance; bench/growth.py).

The frozen blocks enter as their integer scores divided by 2^score_q (the shared score
scale: one float logit); each new column adds its float scores and learns with
cross-entropy on the sum, ``batch`` samples at a time, then is frozen with its running
BatchNorm statistics.
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np

from ..format.model import Model, input_values, pack_input
from ..train.net import FloatNet, bn_backward, init_net, loss_grad, ste_sign
from ..train.optim import Adam
from .step import frozen_scores


def _forward_train(net: FloatNet, x: np.ndarray, momentum: float = 0.1) -> tuple[np.ndarray, list]:
    cache = []
    a = x
    n_layers = len(net.weights)
    for lay in range(n_layers):
        wb = net.binary_weights(lay)
        z = a @ wb.T
        mu = z.mean(axis=0)
        var = z.var(axis=0)
        inv = 1.0 / np.sqrt(var + net.eps)
        xh = (z - mu) * inv
        y = net.gamma[lay] * xh + net.beta[lay]
        net.mean[lay] = (1 - momentum) * net.mean[lay] + momentum * mu
        net.var[lay] = (1 - momentum) * net.var[lay] + momentum * var * (len(z) / max(1, len(z) - 1))
        gate = None
        if lay < n_layers - 1:
            a_next, gate = ste_sign(y)
        cache.append((a, wb, xh, inv, gate))
        if lay < n_layers - 1:
            a = a_next
    return y, cache


def _backward(net: FloatNet, dy: np.ndarray, cache: list) -> list:
    n_layers = len(net.weights)
    gw, gg, gb = [None] * n_layers, [None] * n_layers, [None] * n_layers
    for lay in range(n_layers - 1, -1, -1):
        a_in, wb, xh, inv, _ = cache[lay]
        dz, gg[lay], gb[lay] = bn_backward(dy, xh, inv, net.gamma[lay])
        gw[lay] = dz.T @ a_in
        if lay:
            dy = (dz @ wb) * cache[lay - 1][4]
    return gw + gg + gb


def grow_float(
    m: Model, x: np.ndarray, y: np.ndarray, order: np.ndarray, per_block: int, tests: dict,
    seed: int = 1, batch: int = 50, lr: float = 0.01,
    on_block: Callable[[dict], None] | None = None,
) -> list[dict]:  # fmt: skip
    """Grow float columns over ``order`` (``per_block`` samples each) on top of the blocks
    of ``m``; report test accuracy after each.

    Parameters
    ----------
    m : Model
        Its blocks are the frozen start; its shape is every column's.
    x : uint8 (n, n_inputs); y : labels (n,); order : sample indices, in order
    tests : name -> (x uint8, y)

    Returns
    -------
    One dict per block (the start first): ``block``, ``samples``, test accuracies by name.
    """
    rng = np.random.default_rng(seed)
    unit = 2.0 ** -m.score_q

    def start(xs: np.ndarray) -> np.ndarray:
        if not m.blocks:
            return np.zeros((len(xs), m.n_classes))
        return frozen_scores(m, pack_input(xs, m.plane_mask)).astype(np.float64) * unit

    xo, yo = x[order], np.asarray(y)[order].astype(np.int64)
    F = start(xo)
    Ft = {k: start(v[0]) for k, v in tests.items()}

    def row(block: int, samples: int) -> dict:
        r = {"block": block, "samples": samples}
        r.update({k: float(np.mean(np.argmax(Ft[k], axis=1) == v[1])) for k, v in tests.items()})
        if on_block:
            on_block(r)
        return r

    rows = [row(len(m.blocks), 0)]
    n_blocks = -(-len(order) // per_block)
    for nb in range(n_blocks):
        lo, hi = nb * per_block, min(len(order), (nb + 1) * per_block)
        net = init_net(rng, m.n_inputs, list(m.sizes), m.plane_mask)
        params = net.weights + net.gamma + net.beta
        opt = Adam(params, [1.0] * len(params))
        xv = input_values(xo[lo:hi], m.plane_mask)
        for i in range((hi - lo) // batch):
            sel = slice(i * batch, (i + 1) * batch)
            out, cache = _forward_train(net, xv[sel])
            tot = out + F[lo:hi][sel]
            _, dy = loss_grad(tot.astype(np.float32), yo[lo:hi][sel], "ce")
            opt.step(params, _backward(net, dy.astype(np.float32), cache), lr)
            for w in net.weights:
                np.clip(w, -1.0, 1.0, out=w)
        F += net.scores(xo)
        for k, v in tests.items():
            Ft[k] += net.scores(v[0])
        rows.append(row(len(m.blocks) + nb + 1, hi))
    return rows
