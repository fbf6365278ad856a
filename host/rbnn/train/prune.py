"""Input bit-plane sensitivity and pruning (CBNN, Li & Ren 2018; DESIGN section 1) of an
input mode 1 model (per-plane first-layer weights, ``rbnn train --per-plane``).

- :func:`sensitivity`: validation accuracy of the integer model with each kept plane
  removed by the exact rule (rbnn.format.planes.drop_plane), no retraining.
- :func:`prune`: greedy. Each round removes the plane whose removal costs least (its
  sensitivity), fine-tunes the float network without it (the float state ``rbnn train
  --per-plane`` writes beside the model: a folded file has only signs and integer
  thresholds, too little to train on), folds it, and keeps the better of the fine-tuned
  and the exactly-removed model. It stops before the round whose validation accuracy
  would fall more than ``max_drop`` percentage points below the start, or at one plane.

Accuracy is the integer model's, through the C core when it can run the model (it is
built and reads version 3), else the numpy twin: the same integers (every engine
matches the twin bit for bit).
"""

from __future__ import annotations

import copy
import time
from collections.abc import Callable
from dataclasses import dataclass, replace

import numpy as np

from ..errors import RbnnError
from ..format import pack
from ..format.model import Model, kept_planes, pack_input
from ..format.planes import drop_plane, droppable
from .fit import TrainConfig, TrainError, _loop
from .net import FloatNet

Scorer = Callable[[np.ndarray], np.ndarray]  # packed inputs (n, K, W) -> int32 scores (n, classes)


def host_engine(m: Model) -> tuple[str, Scorer, str]:
    """(engine name, scorer, why) for ``m``: the C core when it builds and reads the model,
    else the twin (``why`` says what the C core said)."""
    data = pack.to_bytes(m)
    try:
        from ..engines.ccore import CModel

        return "c", CModel(data).scores, ""
    except (RbnnError, OSError) as e:  # no compiler, or a C core that cannot read it
        from ..engines import twin

        model = pack.from_bytes(data)
        return "twin", lambda xb: twin.scores(model, xb), f"C core unavailable: {e}"


def accuracy(m: Model, x: np.ndarray, y: np.ndarray, step: int = 2000) -> float:
    """Fraction of ``x`` (uint8 (n, features)) the integer model classifies as ``y``."""
    _, score, _ = host_engine(m)
    right = 0
    for lo in range(0, len(x), step):
        pred = np.argmax(score(pack_input(x[lo : lo + step], m.plane_mask)), axis=1)
        right += int(np.sum(pred == y[lo : lo + step]))
    return right / max(1, len(y))


def majority(y: np.ndarray, n_classes: int) -> float:
    """Accuracy of the best model without input: always the most frequent class."""
    return float(np.max(np.bincount(y, minlength=n_classes)) / max(1, len(y)))


def sensitivity(m: Model, x: np.ndarray, y: np.ndarray) -> list[tuple[int, float]]:
    """(plane, validation accuracy without it) for every kept plane, highest first."""
    droppable(m)
    return [(p, accuracy(drop_plane(m, p), x, y)) for p in kept_planes(m.plane_mask)]


def drop_plane_net(net: FloatNet, plane: int) -> FloatNet:
    """The float network without input plane ``plane``: its weight segment removed, layer 0's
    BatchNorm statistics in the new units of ``s`` (divided by ``2^d`` when ``low`` rises
    by ``d``; the training-mode BatchNorm of fine-tuning is blind to the scale)."""
    kept = kept_planes(net.plane_mask)
    mask = net.plane_mask & ~(1 << plane)
    d = kept_planes(mask)[-1] - kept[-1]
    out = copy.deepcopy(net)
    w0 = net.weights[0].reshape(net.sizes[0], len(kept), net.n_inputs)
    out.weights[0] = np.ascontiguousarray(np.delete(w0, kept.index(plane), axis=1).reshape(net.sizes[0], -1))
    out.plane_mask = mask
    out.mean[0] = (net.mean[0] / 2.0**d).astype(np.float32)
    out.var[0] = (net.var[0] / 4.0**d).astype(np.float32)
    return out


@dataclass
class Round:
    """One round of :func:`prune`: the plane tried, its sensitivity, the result."""

    plane: int
    mask: int  # without the plane
    exact_acc: float  # validation accuracy after the exact removal
    tuned_acc: float  # ... after fine-tuning
    kept: bool  # within the allowed drop
    seconds: float
    sensitivity: list[tuple[int, float]]


def prune(
    net: FloatNet,
    m: Model,
    train_xy: tuple[np.ndarray, np.ndarray],
    val_xy: tuple[np.ndarray, np.ndarray],
    max_drop: float,
    cfg: TrainConfig,
    seed: int = 0,
    log: Callable[[str], None] = lambda s: None,
    progress: bool = False,
) -> tuple[FloatNet, Model, float, list[Round]]:
    """Greedy pruning (module docstring): (float network, its folded model, start validation
    accuracy, rounds). ``cfg`` is the fine-tuning run (epochs, learning rates, batch)."""
    droppable(m)
    if not 0 <= max_drop < 100:  # NaN fails too
        raise TrainError(f"--max-drop: expected percentage points 0 <= P < 100, found {max_drop}")
    (x_tr, y_tr), (x_va, y_va) = train_xy, val_xy
    start = accuracy(m, x_va, y_va)
    guess = majority(y_va, m.n_classes)
    if 100 * (start - guess) <= max_drop:  # nothing would stop the removals: not a model any more
        raise TrainError(f"--max-drop {max_drop:g} allows removing every plane: without input the model scores "
                         f"{100 * guess:.2f} % (the most frequent class), {100 * (start - guess):.2f} points below "
                         f"its {100 * start:.2f} %; lower --max-drop")  # fmt: skip
    rng = np.random.default_rng(seed)
    rounds: list[Round] = []
    y_tr64, y_va64 = y_tr.astype(np.int64), y_va.astype(np.int64)
    while m.k_planes > 1:
        t0 = time.perf_counter()
        sens = sensitivity(m, x_va, y_va)
        plane, exact_acc = max(sens, key=lambda pa: (pa[1], -pa[0]))  # least loss; ties: the lower plane
        exact_net = drop_plane_net(net, plane)
        tuned_net, _, _ = _loop(replace(cfg, plane_mask=exact_net.plane_mask), rng, x_tr, y_tr64, x_va, y_va64,
                                m.n_classes, progress, None, desc=f"fine-tune without plane {plane}",
                                net=copy.deepcopy(exact_net))  # fmt: skip
        tuned = tuned_net.fold(m.meta)
        tuned_acc = accuracy(tuned, x_va, y_va)
        best = (tuned_net, tuned, tuned_acc)
        if tuned_acc < exact_acc:  # fine-tuning lost: the network without it (folded, so that the
            untuned = exact_net.fold(m.meta)  # float state stays the one of the model)
            best = max(best, (exact_net, untuned, accuracy(untuned, x_va, y_va)), key=lambda c: c[2])
        ok = 100 * (start - best[2]) <= max_drop
        mask = best[1].plane_mask
        rounds.append(Round(plane, mask, exact_acc, tuned_acc, ok, time.perf_counter() - t0, sens))
        log(f"round {len(rounds)}: plane {plane} (mask {mask:#04x}): validation {100 * exact_acc:.2f} % "
            f"removed, {100 * tuned_acc:.2f} % fine-tuned; {100 * (start - best[2]):+.2f} points vs the start: "
            f"{'kept' if ok else 'over the allowed drop, stop'}")  # fmt: skip
        if not ok:
            break
        net, m = best[0], best[1]
    return net, m, start, rounds


def first_layer_bytes(m: Model) -> int:
    """Packed bytes of the first layer's weights (one plane of the arena)."""
    offs = m.layer_word_offsets()
    return 4 * (offs[1] - offs[0])


def first_layer_macs(m: Model) -> int:
    """Binary multiply-accumulates of the first layer per sample: in[0] x K x size[0] (dense)."""
    g = m.geometry()[0]
    per_out = g.n_in * g.segments
    positions = g.conv_hw[0] * g.conv_hw[1] if g.conv_hw else 1
    return per_out * m.sizes[0] * positions


def c_speed(models: list[Model], x: np.ndarray, rounds: int = 3, min_seconds: float = 0.3) -> list[float | None]:
    """Host C inference speed (samples/s, rbnn_infer_batch) of each model on ``x``: the median of
    ``rounds`` interleaved rounds, each at least ``min_seconds``; None where the C core cannot
    run the model."""
    runs = []
    for m in models:
        name, score, _ = host_engine(m)
        runs.append((score, pack_input(x, m.plane_mask)) if name == "c" else None)
    times: list[list[float]] = [[] for _ in models]
    for _ in range(rounds):
        for i, run in enumerate(runs):
            if run is None:
                continue
            score, xb = run
            n, t0 = 0, time.perf_counter()
            while True:
                score(xb)
                n += len(xb)
                dt = time.perf_counter() - t0
                if dt >= min_seconds:
                    break
            times[i].append(n / dt)
    return [float(np.median(t)) if t else None for t in times]
