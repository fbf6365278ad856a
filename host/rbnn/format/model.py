"""The integer model: what a .rbnn file holds, as numpy arrays (docs/FORMAT.md)."""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from ..errors import ModelError
from .bits import pack_bits, unpack_bits, words
from .constants import (  # noqa: F401 (re-exported)
    CONV,
    DENSE,
    FROZEN,
    I32_MAX,
    INPUT_PER_PLANE,
    INPUT_SHARED,
    LIVE,
    MAX_BITS,
    MAX_BLOCKS,
    MAX_KERNEL,
    MAX_LAYERS,
    MAX_PLANES,
    POOL_2X2,
    POOL_NONE,
    VERSION_V3,
)
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


@dataclass(frozen=True)
class Layer:
    """One weight layer of a block (docs/FORMAT.md, Version 3): ``size`` outputs (dense)
    or output channels (conv); a conv layer has an odd ``kernel``, ``pad`` positions of
    -1 on every side and ``pool`` 0 or 2 (a fused 2x2 max-pool)."""

    size: int
    kind: int = DENSE
    kernel: int = 0
    pad: int = 0
    pool: int = POOL_NONE

    @classmethod
    def conv(cls, size: int, kernel: int = 3, pad: int | None = None, pool: bool = False) -> Layer:
        """A conv layer; ``pad`` defaults to ``kernel // 2`` (the map keeps its size)."""
        return cls(size, CONV, kernel, kernel // 2 if pad is None else pad, POOL_2X2 if pool else POOL_NONE)


@dataclass(frozen=True)
class Geometry:
    """What one layer reads and writes (docs/FORMAT.md, Version 3: Maps, Row length).

    ``n_in`` is ``in[l]``: the bits of one row segment and the ``N`` of Semantics;
    ``segments`` the segments of a row (``K`` for layer 0 in input mode 1, else 1);
    ``in_map`` the (H, W, C) a conv layer reads; ``conv_hw`` its (H1, W1) before the
    pool; ``out_map`` the (H, W, C) it writes (None for dense layers); ``out_bits`` the
    bits of the layer's output vector (after the pool).
    """

    n_in: int
    segments: int
    in_map: tuple[int, int, int] | None
    conv_hw: tuple[int, int] | None
    out_map: tuple[int, int, int] | None
    out_bits: int

    @property
    def row_words(self) -> int:
        return self.segments * words(self.n_in)


def geometry(
    n_inputs: int, layers: list[Layer], in_shape: tuple[int, int, int] | None, k_planes: int, input_mode: int
) -> list[Geometry]:
    """Per-layer shapes; ModelError when they do not chain (the reader's checks give the
    file's offsets, docs/FORMAT.md: New checks)."""
    out: list[Geometry] = []
    shape = tuple(int(v) for v in in_shape) if in_shape is not None else None
    if shape is not None and (len(shape) != 3 or min(shape) < 1 or shape[0] * shape[1] * shape[2] != n_inputs):
        raise ModelError(f"in_shape {shape} must be (in_h, in_w, in_c), each >= 1, with in_h * in_w * in_c = "
                         f"n_inputs ({n_inputs})")  # fmt: skip
    bits = n_inputs
    seen_dense = False
    for i, ly in enumerate(layers):
        segments = k_planes if (i == 0 and input_mode == INPUT_PER_PLANE) else 1
        if ly.kind == DENSE:
            if ly.kernel or ly.pad or ly.pool:
                raise ModelError(f"layer {i}: a dense layer has kernel, pad and pool 0, got {ly.kernel}, {ly.pad}, "
                                 f"{ly.pool}")  # fmt: skip
            seen_dense = True
            out.append(Geometry(bits, segments, None, None, None, ly.size))
            bits, shape = ly.size, None
            continue
        if ly.kind != CONV:
            raise ModelError(f"layer {i}: kind must be {DENSE} (dense) or {CONV} (conv), got {ly.kind}")
        if seen_dense or shape is None:
            why = "after a dense layer" if seen_dense else "without an input shape (in_h, in_w, in_c)"
            raise ModelError(f"layer {i}: a conv layer {why}")
        if not (ly.kernel % 2 == 1 and 1 <= ly.kernel <= MAX_KERNEL):
            raise ModelError(f"layer {i}: kernel must be odd, 1..{MAX_KERNEL}, got {ly.kernel}")
        if not 0 <= ly.pad <= ly.kernel // 2:
            raise ModelError(f"layer {i}: pad must be 0..{ly.kernel // 2}, got {ly.pad}")
        h, w, c = shape
        h1, w1 = h + 2 * ly.pad - ly.kernel + 1, w + 2 * ly.pad - ly.kernel + 1
        if h1 < 1 or w1 < 1:
            raise ModelError(f"layer {i}: a {ly.kernel}x{ly.kernel} kernel (pad {ly.pad}) does not fit a {h}x{w} map")
        if ly.pool not in (POOL_NONE, POOL_2X2):
            raise ModelError(f"layer {i}: pool must be {POOL_NONE} or {POOL_2X2}, got {ly.pool}")
        if ly.pool == POOL_2X2 and (h1 % 2 or w1 % 2):
            raise ModelError(f"layer {i}: a 2x2 pool needs an even map, got {h1}x{w1} (change pad or kernel)")
        div = 2 if ly.pool == POOL_2X2 else 1
        om = (h1 // div, w1 // div, ly.size)
        out.append(Geometry(ly.kernel * ly.kernel * c, segments, (h, w, c), (h1, w1), om, om[0] * om[1] * om[2]))
        shape, bits = om, om[0] * om[1] * om[2]
    if layers and layers[-1].kind != DENSE:
        raise ModelError(f"layer {len(layers) - 1}: the output layer must be dense")
    return out


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
    layers: list[Layer] | None = None  # None: every layer dense, of ``sizes``
    in_shape: tuple[int, int, int] | None = None  # (H, W, C) of the input map; with conv layers

    def __post_init__(self) -> None:
        if self.layers is not None and [ly.size for ly in self.layers] != list(self.sizes):
            raise ModelError(f"layers' sizes {[ly.size for ly in self.layers]} differ from sizes {list(self.sizes)}")

    # --- shapes -----------------------------------------------------------------
    @property
    def n_layers(self) -> int:
        return len(self.sizes)

    @property
    def n_classes(self) -> int:
        return self.sizes[-1]

    @property
    def layer_specs(self) -> list[Layer]:
        """Every layer as a :class:`Layer` (dense ones of ``sizes`` when ``layers`` is None)."""
        return list(self.layers) if self.layers is not None else [Layer(s) for s in self.sizes]

    @property
    def has_conv(self) -> bool:
        return any(ly.kind == CONV for ly in self.layer_specs)

    @property
    def file_version(self) -> int:
        """The oldest version that expresses this model (docs/FORMAT.md, Version 3)."""
        return VERSION_V3 if self.has_conv or self.input_mode != INPUT_SHARED else 2

    @property
    def trainable(self) -> bool:
        """Whether the integer step (rule 1) may train it: dense, input mode 0."""
        return self.file_version < VERSION_V3

    def geometry(self) -> list[Geometry]:
        # kept while the shape fields are unchanged: the twin's training step asks per step
        key = (self.n_inputs, tuple(self.sizes), self.layers and tuple(self.layers), self.in_shape, self.plane_mask,
               self.input_mode)  # fmt: skip
        if self.__dict__.get("_geo_key") != key:
            self.__dict__["_geo"] = geometry(self.n_inputs, self.layer_specs, self.in_shape, self.k_planes,
                                             self.input_mode)  # fmt: skip
            self.__dict__["_geo_key"] = key
        return list(self.__dict__["_geo"])

    @property
    def layer_inputs(self) -> list[int]:
        """``in[l]`` of every layer: the bits of one row segment (``N`` of Semantics)."""
        return [g.n_in for g in self.geometry()]

    @property
    def n_planes(self) -> int:
        return int(self.arena.shape[0])

    @property
    def k_planes(self) -> int:
        return bin(self.plane_mask).count("1")

    def layer_word_offsets(self) -> list[int]:
        """Word offset of each layer's matrix inside a plane, and the plane's length last."""
        offs = [0]
        for g, n_out in zip(self.geometry(), self.sizes, strict=True):
            offs.append(offs[-1] + n_out * g.row_words)
        return offs

    @property
    def plane_words(self) -> int:
        return self.layer_word_offsets()[-1]

    @property
    def weights_per_block(self) -> int:
        return sum(g.n_in * g.segments * o for g, o in zip(self.geometry(), self.sizes, strict=True))

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
        geo = self.geometry()
        hidden = [g.out_bits for g in geo[:-1]]
        conv = [(self.k_planes if i == 0 else 1) * words(g.n_in) for i, g in enumerate(geo) if g.in_map]
        ram = {
            "input": 4 * self.k_planes * words(self.n_inputs),
            "activations": 2 * 4 * max(words(b) for b in hidden) if hidden else 0,
            "scores": 4 * self.n_classes,
        }
        if conv:  # one patch of the widest conv layer (docs/FORMAT.md, Version 3: Memory)
            ram["patch"] = 4 * max(conv)
        return ram

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
        g = self.geometry()[layer]
        return self.arena[plane, offs[layer] : offs[layer + 1]].reshape(self.sizes[layer], g.row_words)

    def sign_weights(self, block: int, layer: int) -> np.ndarray:
        """Binary weights of one layer of one block as bool (out, segments * in); True = +1.

        Input mode 1's first layer: the K plane segments one after another."""
        packed = self.layer_words(self.blocks[block].planes[0], layer)
        g = self.geometry()[layer]
        segs = packed.reshape(packed.shape[0], g.segments, words(g.n_in))
        return np.concatenate([unpack_bits(segs[:, k], g.n_in) for k in range(g.segments)], axis=1)

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
        layers: list[Layer] | None = None,
        in_shape: tuple[int, int, int] | None = None,
        input_mode: int = INPUT_SHARED,
    ) -> Model:
        """A one-block frozen model from binary weights (bool or +-1, (out, segments * in)).

        ``layers``/``in_shape`` for conv layers (docs/FORMAT.md, Version 3): a conv row
        is ``k*k*C`` weights in (ky, kx, c) order; ``input_mode`` 1: layer 0's rows are
        the K plane segments one after another, the highest kept plane first.
        """
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
        k_planes = bin(plane_mask).count("1")
        specs = list(layers) if layers is not None else [Layer(s) for s in sizes]
        if [ly.size for ly in specs] != sizes:
            raise ModelError(f"layers' sizes {[ly.size for ly in specs]} differ from the weights' {sizes}")
        geo = geometry(n_inputs, specs, in_shape, k_planes, input_mode)
        expect = [g.segments * g.n_in for g in geo]
        got = [int(np.shape(w)[1]) for w in weights]
        if expect != got:
            raise ModelError(f"layer input widths {got} do not chain, expected {expect}")
        rows = []
        for w, g in zip(weights, geo, strict=True):
            segs = np.asarray(w).reshape(len(w), g.segments, g.n_in) > 0
            rows.append(np.concatenate([pack_bits(segs[:, k]) for k in range(g.segments)], axis=1).reshape(-1))
        arena = np.concatenate(rows)[None, :].astype(np.uint32)
        block = Block(
            state=FROZEN,
            planes=[0],
            thresholds=[np.asarray(t, dtype=np.int32) for t in thresholds],
            flips=[np.asarray(f, dtype=bool) for f in flips],
            scale=np.asarray(scale, dtype=np.int32),
            offset=np.asarray(offset, dtype=np.int32),
        )
        return cls(n_inputs, plane_mask, sizes, arena, [block], input_mode=input_mode, meta=dict(meta or {}),
                   layers=specs if layers is not None else None, in_shape=in_shape)  # fmt: skip

    def output_smax(self) -> int:
        """Largest possible |s| of the output layer (docs/FORMAT.md, Semantics)."""
        ins = self.layer_inputs
        if self.n_layers > 1:
            return ins[-1]
        return ins[0] * sum(1 << s for s in plane_shifts(self.plane_mask))

