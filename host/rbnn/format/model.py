"""The integer model: what a .rbnn file holds, as numpy arrays (docs/FORMAT.md)."""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from ..errors import ModelError
from .bits import pack_bits, unpack_bits, words
from .constants import FROZEN, I32_MAX, LIVE, MAX_BITS, MAX_BLOCKS, MAX_LAYERS, MAX_PLANES  # noqa: F401 (re-exported)
from .trainstate import TrainState


def kept_planes(plane_mask: int) -> list[int]:
    """Bit positions kept by ``plane_mask``, most significant first."""
    return [n for n in range(7, -1, -1) if plane_mask >> n & 1]


def plane_shifts(plane_mask: int) -> list[int]:
    """Weight exponent ``n - low`` of each kept plane, in packed-input order."""
    kept = kept_planes(plane_mask)
    low = kept[-1]
    return [n - low for n in kept]


def pack_input(x: np.ndarray, plane_mask: int) -> np.ndarray:
    """Bit-slice 8-bit features into the packed input of docs/FORMAT.md.

    Parameters
    ----------
    x : array_like of uint8, shape (n, n_inputs) or (n_inputs,)
    plane_mask : int
        Bit ``n`` set keeps bit-plane ``n``.

    Returns
    -------
    ndarray of uint32, shape (n, K, words(n_inputs)) (or (K, words) for one sample)
    """
    x = np.asarray(x)
    if x.dtype != np.uint8:
        raise ModelError(f"features must be uint8, got {x.dtype}")
    one = x.ndim == 1
    x2 = x[None] if one else x
    planes = [pack_bits((x2 >> n) & 1) for n in kept_planes(plane_mask)]
    out = np.stack(planes, axis=1)
    return out[0] if one else out


def input_values(x: np.ndarray, plane_mask: int) -> np.ndarray:
    """Integer value the first layer sees per feature: sum_n 2^(n-low) * (2*bit_n - 1).

    float32 array of the same shape as ``x`` (exact: |value| <= 255).
    """
    x = np.asarray(x, dtype=np.int32)
    v = np.zeros(x.shape, dtype=np.int32)
    for n, sh in zip(kept_planes(plane_mask), plane_shifts(plane_mask), strict=True):
        v += (2 * ((x >> n) & 1) - 1) << sh
    return v.astype(np.float32)


@dataclass
class Block:
    """One column of the network: its planes and its folded BatchNorm parameters."""

    state: int
    planes: list[int]
    thresholds: list[np.ndarray]  # int32 (size[l],) per hidden layer
    flips: list[np.ndarray]  # bool (size[l],) per hidden layer
    scale: np.ndarray  # int32 (n_classes,)
    offset: np.ndarray  # int32 (n_classes,)


@dataclass
class Model:
    """A binarized MLP grown in blocks over an arena of bit-planes (docs/FORMAT.md).

    ``max_blocks`` is the capacity of the block table (None: as many as ``blocks``);
    ``score_q`` the shared score exponent; ``train`` the training state (None: a blank
    one, :meth:`TrainState.blank`). ``version`` is the file version it was read from.
    """

    n_inputs: int
    plane_mask: int
    sizes: list[int]  # outputs of each weight layer; sizes[-1] = classes
    arena: np.ndarray  # uint32 (n_planes, plane_words)
    blocks: list[Block]
    input_mode: int = 0
    meta: dict = field(default_factory=dict)  # host-only facts (not stored in the file)
    max_blocks: int | None = None
    score_q: int = 0
    train: TrainState | None = None
    version: int = 2

    # --- shapes -----------------------------------------------------------------
    @property
    def n_layers(self) -> int:
        return len(self.sizes)

    @property
    def n_classes(self) -> int:
        return self.sizes[-1]

    @property
    def layer_inputs(self) -> list[int]:
        return [self.n_inputs] + list(self.sizes[:-1])

    @property
    def n_planes(self) -> int:
        return int(self.arena.shape[0])

    @property
    def k_planes(self) -> int:
        return bin(self.plane_mask).count("1")

    def layer_word_offsets(self) -> list[int]:
        """Word offset of each layer's matrix inside a plane, and the plane's length last."""
        offs = [0]
        for n_in, n_out in zip(self.layer_inputs, self.sizes, strict=True):
            offs.append(offs[-1] + n_out * words(n_in))
        return offs

    @property
    def plane_words(self) -> int:
        return self.layer_word_offsets()[-1]

    @property
    def weights_per_block(self) -> int:
        return sum(i * o for i, o in zip(self.layer_inputs, self.sizes, strict=True))

    @property
    def bits_per_weight(self) -> float:
        """Arena bits per weight of the blocks in use (free planes counted)."""
        return self.n_planes / max(1, len(self.blocks))

    @property
    def capacity(self) -> int:
        """Slots of the block table: ``max_blocks``, or the blocks in use (at least 1)."""
        return self.max_blocks if self.max_blocks is not None else max(1, len(self.blocks))

    @property
    def budget(self) -> int:
        """The score bound of every block (version 2): floor((2^31 - 1) / max_blocks)."""
        return I32_MAX // self.capacity

    @property
    def half(self) -> int:
        """What a trained block may use of the budget (docs/TRAINING.md)."""
        return (self.budget + 1) // 2

    def state(self) -> TrainState:
        """The training state (a blank one when the model has none yet)."""
        if self.train is None:
            self.train = TrainState.blank(self.n_layers)
        return self.train

    def live_index(self) -> int | None:
        """Index of the live block, or None."""
        for i, b in enumerate(self.blocks):
            if b.state == LIVE:
                return i
        return None

    def free_planes(self) -> list[int]:
        """Planes no block owns, ascending."""
        used = {p for b in self.blocks for p in b.planes}
        return [p for p in range(self.n_planes) if p not in used]

    def ram_bytes(self) -> dict:
        """RAM to run one inference in eBNN order (docs/FORMAT.md, Memory)."""
        hidden = self.sizes[:-1]
        return {
            "input": 4 * self.k_planes * words(self.n_inputs),
            "activations": 2 * 4 * words(max(hidden)) if hidden else 0,
            "scores": 4 * self.n_classes,
        }

    def train_ram_bytes(self) -> int:
        """Scratch of one training step (docs/TRAINING.md, Memory; the C core's
        rbnn_train_scratch_bytes): the hidden and gate bits of every hidden layer, and two
        rows of int32 as wide as the widest layer (the signal of a layer and the one
        below; the scores)."""
        hidden = sum(words(s) for s in self.sizes[:-1])
        return 4 * (2 * hidden + 2 * max(self.sizes))

    # --- weights ----------------------------------------------------------------
    def layer_words(self, plane: int, layer: int) -> np.ndarray:
        """Packed rows of one layer in one plane: uint32 (size[layer], words(in[layer]))."""
        offs = self.layer_word_offsets()
        n_in = self.layer_inputs[layer]
        return self.arena[plane, offs[layer] : offs[layer + 1]].reshape(
            self.sizes[layer], words(n_in)
        )

    def sign_weights(self, block: int, layer: int) -> np.ndarray:
        """Binary weights of one layer of one block as bool (out, in); True = +1."""
        packed = self.layer_words(self.blocks[block].planes[0], layer)
        return unpack_bits(packed, self.layer_inputs[layer])

    @classmethod
    def plain(
        cls,
        n_inputs: int,
        plane_mask: int,
        weights: list[np.ndarray],
        thresholds: list[np.ndarray],
        flips: list[np.ndarray],
        scale: np.ndarray,
        offset: np.ndarray,
        meta: dict | None = None,
    ) -> Model:
        """A one-block frozen model from dense binary weights (bool or +-1, (out, in))."""
        if any(np.ndim(w) != 2 for w in weights):
            raise ModelError(f"weights must be 2-D (out, in), got shapes {[np.shape(w) for w in weights]}")
        sizes = [int(np.shape(w)[0]) for w in weights]
        # One (size,) vector per hidden layer, one (classes,) vector each for scale/offset.
        want = [(s,) for s in sizes[:-1]]
        for name, vals in (("thresholds", thresholds), ("flips", flips)):
            if [np.shape(v) for v in vals] != want:
                raise ModelError(f"{name} must have shapes {want}, got {[np.shape(v) for v in vals]}")
        for name, v in (("scale", scale), ("offset", offset)):
            if np.shape(v) != (sizes[-1],):
                raise ModelError(f"{name} must have shape ({sizes[-1]},), got {np.shape(v)}")
        rows = [pack_bits(np.asarray(w) > 0).reshape(-1) for w in weights]
        arena = np.concatenate(rows)[None, :].astype(np.uint32)
        block = Block(
            state=FROZEN,
            planes=[0],
            thresholds=[np.asarray(t, dtype=np.int32) for t in thresholds],
            flips=[np.asarray(f, dtype=bool) for f in flips],
            scale=np.asarray(scale, dtype=np.int32),
            offset=np.asarray(offset, dtype=np.int32),
        )
        m = cls(n_inputs, plane_mask, sizes, arena, [block], meta=dict(meta or {}))
        expect = [n_in for n_in in m.layer_inputs]
        got = [int(w.shape[1]) for w in weights]
        if expect != got:
            raise ModelError(f"layer input widths {got} do not chain, expected {expect}")
        return m

    def output_smax(self) -> int:
        """Largest possible |s| of the output layer (docs/FORMAT.md, Semantics)."""
        if self.n_layers > 1:
            return self.layer_inputs[-1]
        return self.n_inputs * sum(1 << s for s in plane_shifts(self.plane_mask))

