"""The training state of a version 2 file (docs/FORMAT.md, Training state; the meaning
of each field: docs/TRAINING.md): hyper-parameters, seed and counters of the integer
step, and the growth schedule, 96 bytes."""

from __future__ import annotations

import struct
from dataclasses import dataclass

from .constants import MAX_LAYERS, TRAIN_BYTES

RULE = 1  # the step of docs/TRAINING.md
LOSS_TOP, LOSS_ALL = 0, 1
# rule, seed, steps, block_steps, hits, active, grow_every, stream_id, stream_base, margin,
# bits, grow_left, scale_shift, decay, init_bits, loss, off_shift, reserved,
# lr[8], thr_shift[8], gate[7], reserved
_STRUCT = struct.Struct(f"<10I6Bbx{MAX_LAYERS}B{MAX_LAYERS}b{MAX_LAYERS - 1}II")
assert _STRUCT.size == TRAIN_BYTES

# Field offsets inside the section, for error messages (rbnn.format.checks).
OFFSETS = {
    "rule": 0, "seed": 4, "steps": 8, "block_steps": 12, "hits": 16, "active": 20, "grow_every": 24,
    "stream_id": 28, "stream_base": 32, "margin": 36, "bits": 40, "grow_left": 41, "scale_shift": 42,
    "decay": 43, "init_bits": 44, "loss": 45, "off_shift": 46, "reserved47": 47, "lr": 48,
    "thr_shift": 56, "gate": 64, "reserved92": 92,
}  # fmt: skip


@dataclass
class TrainState:
    """Everything of the training section, as Python integers.

    ``lr`` has one entry per layer, ``thr_shift`` and ``gate`` one per hidden layer (the
    file pads them with zeros to ``MAX_LAYERS`` / ``MAX_LAYERS - 1``).
    """

    lr: list[int]
    thr_shift: list[int]
    gate: list[int]
    scale_shift: int = 0
    margin: int = 1
    bits: int = 8
    decay: int = 31
    init_bits: int = 3
    loss: int = LOSS_TOP
    off_shift: int = -1
    seed: int = 0
    steps: int = 0
    block_steps: int = 0
    hits: int = 0
    active: int = 0
    grow_every: int = 0
    grow_left: int = 0
    stream_id: int = 0
    stream_base: int = 0
    rule: int = RULE

    @classmethod
    def blank(cls, n_layers: int) -> TrainState:
        """A state that trains nothing by itself: zeros, no schedule (a model packed for
        inference only; rbnn.learn.defaults gives one that learns)."""
        return cls(lr=[0] * n_layers, thr_shift=[0] * (n_layers - 1), gate=[0] * (n_layers - 1))

    def to_bytes(self) -> bytes:
        pad = lambda v, n: list(v) + [0] * (n - len(v))  # noqa: E731
        return _STRUCT.pack(
            self.rule, self.seed, self.steps, self.block_steps, self.hits, self.active, self.grow_every,
            self.stream_id, self.stream_base, self.margin, self.bits, self.grow_left, self.scale_shift,
            self.decay, self.init_bits, self.loss, self.off_shift,
            *pad(self.lr, MAX_LAYERS), *pad(self.thr_shift, MAX_LAYERS), *pad(self.gate, MAX_LAYERS - 1), 0,
        )  # fmt: skip

    @classmethod
    def unpack(cls, buf: bytes, at: int, n_layers: int) -> tuple[TrainState, dict]:
        """The state at byte ``at`` of ``buf`` and the raw fields (for the checks, which
        also look at the entries beyond the model's layers)."""
        v = _STRUCT.unpack_from(buf, at)
        raw = dict(zip(("rule", "seed", "steps", "block_steps", "hits", "active", "grow_every", "stream_id",
                        "stream_base", "margin", "bits", "grow_left", "scale_shift", "decay", "init_bits",
                        "loss", "off_shift"), v[:17], strict=True))  # fmt: skip
        raw["lr"] = list(v[17 : 17 + MAX_LAYERS])
        raw["thr_shift"] = list(v[17 + MAX_LAYERS : 17 + 2 * MAX_LAYERS])
        raw["gate"] = list(v[17 + 2 * MAX_LAYERS : 16 + 3 * MAX_LAYERS])
        raw["reserved47"] = buf[at + 47]
        raw["reserved92"] = v[-1]
        st = cls(lr=raw["lr"][:n_layers], thr_shift=raw["thr_shift"][: n_layers - 1],
                 gate=raw["gate"][: n_layers - 1],
                 **{k: raw[k] for k in ("scale_shift", "margin", "bits", "decay", "init_bits", "loss", "off_shift",
                                        "seed", "steps", "block_steps", "hits", "active", "grow_every",
                                        "grow_left", "stream_id", "stream_base", "rule")})  # fmt: skip
        return st, raw
