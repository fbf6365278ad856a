"""Random valid version 3 models (docs/FORMAT.md, Version 3) and inputs, for every engine's
bit-exact tests (developer-only: not in the package).

A model is a conv stack (kernels 1, 3 or 5, random pads, channel counts mostly not
multiples of 32, odd map sizes, with and without the fused 2x2 pool) followed by 0-2
hidden dense layers and the dense output layer, over 1-4 kept input planes, in input
mode 0 or 1, with 1-3 frozen blocks (and sometimes a free plane and empty slots).
``conv=False`` gives a dense model in input mode 1 (version 3 without conv layers).
"""

from __future__ import annotations

import numpy as np

from rbnn.format.bits import pack_bits
from rbnn.format.model import (
    FROZEN,
    INPUT_PER_PLANE,
    INPUT_SHARED,
    Block,
    Layer,
    Model,
    geometry,
    plane_shifts,
)

KERNELS = (1, 3, 5)


def random_mask(rng: np.random.Generator, k: int | None = None) -> int:
    """A plane mask of ``k`` (default 1-4) random kept planes."""
    k = int(rng.integers(1, 5)) if k is None else k
    return int(sum(1 << int(n) for n in rng.choice(8, k, replace=False)))


def random_conv_layers(
    rng: np.random.Generator, in_shape: tuple[int, int, int], n_conv: int
) -> list[Layer]:
    """``n_conv`` conv layers that chain on ``in_shape``: a kernel that fits the map, a
    random pad, a pool when the conv output is even (half the time)."""
    h, w, _ = in_shape
    out = []
    for _ in range(n_conv):
        pad_k = [(k, p) for k in KERNELS for p in range(k // 2 + 1) if min(h, w) + 2 * p - k + 1 >= 1]
        k, p = pad_k[int(rng.integers(len(pad_k)))]
        h1, w1 = h + 2 * p - k + 1, w + 2 * p - k + 1
        pool = h1 % 2 == 0 and w1 % 2 == 0 and rng.random() < 0.6
        c = int(rng.choice([1, 2, 3, 5, 7, 12, 31, 33, 40]))
        out.append(Layer.conv(c, k, p, pool=pool))
        h, w = (h1 // 2, w1 // 2) if pool else (h1, w1)
    return out


def _thresholds(rng: np.random.Generator, smax: int, n: int) -> np.ndarray:
    """Mostly near the middle of [-smax, smax] (outputs vary), some at and beyond its ends
    (every bit one way: the boundaries an engine must get right)."""
    spread = max(1, int(np.sqrt(smax)))
    t = rng.integers(-spread, spread + 1, n)
    ends = rng.random(n) < 0.15
    t[ends] = rng.choice([-smax - 1, -smax, smax, smax + 1], int(ends.sum()))
    return t.astype(np.int32)


def random_conv_model(
    rng: np.random.Generator,
    in_shape: tuple[int, int, int] | None = None,
    n_conv: int | None = None,
    input_mode: int | None = None,
    plane_mask: int | None = None,
    n_blocks: int | None = None,
    conv: bool = True,
    n_hidden: int | None = None,
    n_classes: int | None = None,
    layers: list[Layer] | None = None,
) -> Model:
    """A random valid version 3 model (docs/FORMAT.md, Version 3); every argument left None
    is drawn (``layers`` given: those layers over ``in_shape``)."""
    if plane_mask is None:
        plane_mask = random_mask(rng)
    k_planes = bin(plane_mask).count("1")
    if input_mode is None:
        input_mode = int(rng.integers(0, 2)) if conv else INPUT_PER_PLANE
    if in_shape is None:
        in_shape = (int(rng.choice([1, 3, 4, 5, 7, 8, 9])), int(rng.choice([1, 2, 5, 6, 7, 9])),
                    int(rng.choice([1, 1, 2, 3])))  # fmt: skip
    if not conv:
        n_conv, shape = 0, None
    else:
        n_conv = int(rng.integers(1, 4)) if n_conv is None else n_conv
        shape = tuple(int(v) for v in in_shape)
    n_inputs = int(np.prod(in_shape))
    if layers is None:
        layers = random_conv_layers(rng, shape, n_conv) if conv else []
        n_hidden = int(rng.integers(0, 3)) if n_hidden is None else n_hidden
        layers += [Layer(int(rng.choice([1, 5, 17, 32, 33, 70]))) for _ in range(n_hidden)]
        layers.append(Layer(int(rng.integers(1, 11)) if n_classes is None else n_classes))
    elif not conv:
        shape = None
    n_blocks = int(rng.integers(1, 4)) if n_blocks is None else n_blocks
    geo = geometry(n_inputs, layers, shape, k_planes, input_mode)
    spare_plane = int(rng.random() < 0.3)
    sizes = [ly.size for ly in layers]
    m = Model(n_inputs, plane_mask, sizes, np.zeros((n_blocks + spare_plane, 0), np.uint32), [],
              input_mode=input_mode, max_blocks=n_blocks + int(rng.integers(0, 2)), score_q=int(rng.integers(0, 31)),
              layers=layers, in_shape=shape, version=3)  # fmt: skip
    arena = np.zeros((m.n_planes, m.plane_words), np.uint32)
    shifts = sum(1 << s for s in plane_shifts(plane_mask))
    smax_out = m.output_smax()
    lim_scale = max(1, m.budget // 4 // smax_out)
    planes = [int(p) for p in rng.permutation(m.n_planes)]
    for plane in range(m.n_planes):  # every plane random (a free one too), padding 0
        rows = []
        for g, ly in zip(geo, layers, strict=True):
            segs = rng.random((ly.size, g.segments, g.n_in)) < 0.5
            rows.append(np.concatenate([pack_bits(segs[:, k]) for k in range(g.segments)], axis=1).reshape(-1))
        arena[plane] = np.concatenate(rows)
    m.arena = arena
    for b in range(n_blocks):
        thr = [_thresholds(rng, g.n_in * (shifts if i == 0 else 1), ly.size)
               for i, (g, ly) in enumerate(zip(geo[:-1], layers[:-1], strict=True))]  # fmt: skip
        flips = [rng.random(ly.size) < 0.3 for ly in layers[:-1]]
        k = sizes[-1]
        scale = rng.integers(-min(lim_scale, 1000), min(lim_scale, 1000) + 1, k).astype(np.int32)
        offset = rng.integers(-min(m.budget // 4, 100000), min(m.budget // 4, 100000) + 1, k).astype(np.int32)
        m.blocks.append(Block(FROZEN, [planes[b]], thr, flips, scale, offset))
    return m


MNIST_CNN = [Layer.conv(32, 3, 1, pool=True), Layer.conv(64, 3, 1, pool=True), Layer(128), Layer(10)]
# the CNN that reaches 99 % on MNIST (README): a third conv layer, 4 input planes (0xf0)
MNIST_CNN3 = [Layer.conv(32, 3, 1, pool=True), Layer.conv(64, 3, 1, pool=True), Layer.conv(64, 3, 1), Layer(128),
              Layer(10)]  # fmt: skip


def mnist_cnn(
    rng: np.random.Generator, plane_mask: int = 0x80, input_mode: int = INPUT_SHARED, layers: list | None = None
) -> Model:
    """A 28x28 CNN of issue 9 (default: conv 32 + pool, conv 64 + pool, dense 128, dense 10;
    3x3 kernels, pad 1), random weights and thresholds: for speed and memory tests."""
    layers = list(MNIST_CNN if layers is None else layers)
    k = bin(plane_mask).count("1")
    geo = geometry(784, layers, (28, 28, 1), k, input_mode)
    shifts = sum(1 << s for s in plane_shifts(plane_mask))
    weights = [rng.random((ly.size, g.segments * g.n_in)) < 0.5 for g, ly in zip(geo, layers, strict=True)]
    thr = [_thresholds(rng, g.n_in * (shifts if i == 0 else 1), ly.size)
           for i, (g, ly) in enumerate(zip(geo[:-1], layers[:-1], strict=True))]  # fmt: skip
    flips = [rng.random(ly.size) < 0.3 for ly in layers[:-1]]
    return Model.plain(784, plane_mask, weights, thr, flips, rng.integers(-100, 101, 10).astype(np.int32),
                       rng.integers(-1000, 1001, 10).astype(np.int32), layers=layers, in_shape=(28, 28, 1),
                       input_mode=input_mode)  # fmt: skip


def random_inputs(rng: np.random.Generator, n_inputs: int, n: int) -> np.ndarray:
    """uint8 (n, n_inputs): uniform bytes, plus an all-0 and an all-255 sample (every
    plane's bits one way: padded positions against saturated ones)."""
    x = rng.integers(0, 256, (n, n_inputs), dtype=np.uint8)
    if n >= 2:
        x[0], x[1] = 0, 255
    return x
