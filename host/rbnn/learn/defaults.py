"""The hyper-parameters a growth run starts from (docs/TRAINING.md; chosen and measured
in the research behind issue 7: rotated and same-data growth, ablations).

Everything is relative to the model's shape, to ``score_q``, the shared score exponent
(one float logit = 2^q score units), and to the run's block length ``grow_every`` (the
decay and the first layer's threshold step), so the same rule holds for any width, input
planes, capacity or number of epochs. Three kinds of run:

- ``new``: an empty arena, every block trained by the step: the largest output scale the
  budget allows, margin 2^6 units of it;
- ``domain``: data unlike what the frozen blocks learnt (they get it mostly wrong): a
  live scale of 2^(q-3), margin 2^(q+3);
- ``same``: more data like the frozen blocks': a smaller live scale 2^(q-5) that keeps
  what they know, margin 2^(q+2).

``choose_kind`` picks ``domain`` or ``same`` from the frozen model's accuracy on the run's
first samples, so a user streaming their own data need not know which it is.
"""

from __future__ import annotations

import math

from ..errors import RbnnError
from ..format.model import Model, plane_shifts
from ..format.pack import layer_smax, max_scale_shift
from ..format.trainstate import LOSS_TOP, TrainState

KINDS = ("auto", "new", "domain", "same")


class GrowError(RbnnError):
    """A growth run that cannot start: no room, bad range, bad option."""
SAME_ABOVE = 0.8  # frozen accuracy at or above which a run is "same" data (choose_kind)
BITS = 8  # bits of every block, while the free planes allow (b = 6..9 measured equal)
# Blocks of 2^12 .. 2^13 - 1 steps: where the defaults were calibrated (rotated and same-data
# growth, 50,000 samples over 7 blocks); longer blocks anneal later and move thresholds finer.
CALIBRATED_BITS = 13


def choose_kind(frozen_accuracy: float | None) -> str:
    """``new`` without frozen blocks (None); else ``same`` when the frozen blocks already
    classify the run's first samples at ``SAME_ABOVE`` or better, ``domain`` otherwise."""
    if frozen_accuracy is None:
        return "new"
    return "same" if frozen_accuracy >= SAME_ABOVE else "domain"


def schedule_params(grow_every: int, thr0: int) -> tuple[int, int]:
    """``decay`` and the first layer's ``thr_shift`` for blocks of ``grow_every`` steps
    (``thr0``: the step calibrated on blocks of 2^12 steps).

    ``decay = floor(log2(grow_every))``: the row probability halves once over a block,
    whatever its length (a fixed 12 anneals a block of 500,000 steps 15 times: 92 % against
    96 % for one 256-256 block on MNIST). The threshold step halves for every 4x longer block
    than calibrated (finer thresholds once there are steps enough to move them: 93.7 % ->
    95.9 % at 500,000 steps; at 6,000 steps the calibrated step, 88 % against 80 %)."""
    longer = max(0, grow_every.bit_length() - CALIBRATED_BITS)
    return max(0, min(31, grow_every.bit_length() - 1)), max(0, thr0 - longer // 2)


def defaults(m: Model, kind: str, bits: int = BITS, grow_every: int = 1 << (CALIBRATED_BITS - 1)) -> TrainState:
    """A training state for ``m`` (counters zero, no schedule): the rule's hyper-parameters.

    Parameters
    ----------
    m : Model
        Its shape, plane mask, capacity (block budget) and ``score_q`` decide the values.
    kind : "new", "domain" or "same"
    bits : planes of every new block
    grow_every : steps per block of the run (``decay`` and the threshold step follow it)
    """
    nh = m.n_layers - 1
    shifts = plane_shifts(m.plane_mask)
    pw = sum(1 << s for s in shifts)
    # the gate: one standard deviation of a random sum at the first layer; at the hidden layers
    # two for new and same data (+0.3 point, from scratch and same, against one), one for a
    # domain run (two gain 0.35 point there too but cost 3 points of the old domain: 52 -> 49 %)
    wide = 1 if kind == "domain" else 2
    gate = [math.isqrt(m.n_inputs * sum(4**s for s in shifts))] + [wide * math.isqrt(n) for n in m.layer_inputs[1:nh]]
    gate = [min(g, layer_smax(m, i)) for i, g in enumerate(gate[:nh])]
    decay, thr0 = schedule_params(grow_every, 2 + (pw - 1).bit_length())
    thr = ([thr0] + [0] * nh)[:nh]
    top = max_scale_shift(m)
    q = m.score_q
    if kind == "new":
        sigma = top
        margin = 1 << (sigma + 6)
    elif kind == "domain":
        sigma, margin = q - 3, 1 << (q + 3)
    elif kind == "same":
        sigma, margin = q - 5, 1 << (q + 2)
    else:
        raise GrowError(f"kind: expected new, domain or same, found {kind!r}")
    sigma = max(0, min(sigma, top))
    margin = max(1, min(margin, m.budget))
    return TrainState(lr=[1] * m.n_layers, thr_shift=thr, gate=gate, scale_shift=sigma, margin=margin, bits=bits,
                      decay=decay, init_bits=3, loss=LOSS_TOP, off_shift=max(-1, sigma - 8))  # fmt: skip
