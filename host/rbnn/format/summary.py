"""larq-style summary table of a packed model: 1-bit vs 32-bit parameters, kB per layer (conv
layers: map shapes, kernel, MACs per position, feature-map bits)."""

from __future__ import annotations

from .bits import words
from .model import CONV, INPUT_PER_PLANE, POOL_2X2, Geometry, Layer, Model, kept_planes


def _map(shape: tuple[int, ...]) -> str:
    return "x".join(str(v) for v in shape)


def _conv_row(m: Model, layer: int, g: Geometry, ly: Layer, nb: int, planes: int) -> dict:
    """A conv layer (docs/FORMAT.md, Version 3): k*k*C weights per output channel and
    segment, one sum per position and output channel (x K planes for layer 0)."""
    h1, w1 = g.conv_hw
    kernel = f"{ly.kernel}x{ly.kernel} p{ly.pad}" + (" pool 2x2" if ly.pool == POOL_2X2 else "")
    return {
        "layer": f"conv_{layer}",
        "shape": f"{_map(g.in_map)}->{_map(g.out_map)}",
        "kernel": kernel,
        "macs1": h1 * w1 * g.n_in * ly.size * nb * planes,
    }


def rows(m: Model) -> list[dict]:
    """One dict per weight layer, over all blocks (storage counts padding words)."""
    out = []
    nb = len(m.blocks)
    k_planes = len(kept_planes(m.plane_mask))
    for layer, (g, ly) in enumerate(zip(m.geometry(), m.layer_specs, strict=True)):
        n_in, n_out = g.n_in, ly.size
        hidden = layer < m.n_layers - 1
        n32 = (n_out * nb) if hidden else 2 * n_out * nb  # thresholds, or scale+offset
        flip_bytes = 4 * words(n_out) * nb if hidden else 0
        weight_bytes = 4 * n_out * g.row_words * m.n_planes
        planes = k_planes if layer == 0 else 1
        row = {
            "layer": f"dense_{layer}" + ("" if hidden else " (out)"),
            "input": (f"{planes}x1b" + ("/own" if g.segments > 1 else "")) if layer == 0 else "1b",
            "shape": f"{n_in}->{n_out}",
            "kernel": "",
            "bits1": n_in * g.segments * n_out * nb,
            "params32": n32,
            "kb": (weight_bytes + 4 * n32 + flip_bytes) / 1024,
            "macs1": n_in * n_out * nb * planes,
            "map_bits": g.out_bits if hidden else 0,
        }
        if ly.kind == CONV:
            row.update(_conv_row(m, layer, g, ly, nb, planes))
        row["shape"] += f" x{nb}" if nb > 1 else ""
        out.append(row)
    return out


def layers_text(m: Model) -> str:
    """784-128-10, or 28x28x1-conv3x3:32/pool-128-10 with conv layers."""
    first = _map(m.in_shape) if m.has_conv else str(m.n_inputs)
    parts = [f"conv{ly.kernel}x{ly.kernel}:{ly.size}" + ("/pool" if ly.pool == POOL_2X2 else "")
             if ly.kind == CONV else str(ly.size) for ly in m.layer_specs]  # fmt: skip
    return "-".join([first, *parts])


def summary(m: Model, name: str = "model", file_bytes: int | None = None) -> str:
    """The table as text (conv models: a Kernel and a Map bits column, the patch buffer)."""
    r = rows(m)
    conv = m.has_conv
    head = ["Layer", "Input", "Shape", *(["Kernel"] if conv else []), "# 1-bit", "# 32-bit", "Memory (kB)",
            "1-bit MACs", *(["Map bits"] if conv else [])]  # fmt: skip
    left = 4 if conv else 3  # text columns, then numbers

    def cells(x: dict) -> list[str]:
        return [x["layer"], x["input"], x["shape"], *([x["kernel"]] if conv else []), f"{x['bits1']:,}",
                f"{x['params32']:,}", f"{x['kb']:.2f}", f"{x['macs1']:,}",
                *([f"{x['map_bits']:,}" if x["map_bits"] else ""] if conv else [])]  # fmt: skip

    body = [cells(x) for x in r]
    tot = ["Total", "", "", *([""] if conv else []), f"{sum(x['bits1'] for x in r):,}",
           f"{sum(x['params32'] for x in r):,}", f"{sum(x['kb'] for x in r):.2f}",
           f"{sum(x['macs1'] for x in r):,}", *([""] if conv else [])]  # fmt: skip
    widths = [max(len(row[i]) for row in [head, *body, tot]) for i in range(len(head))]

    def line(cells: list[str]) -> str:
        return "| " + " | ".join(c.ljust(w) if i < left else c.rjust(w) for i, (c, w) in enumerate(zip(cells, widths, strict=True))) + " |"

    rule = "+-" + "-+-".join("-" * w for w in widths) + "-+"
    ram = m.ram_bytes()
    kept = ",".join(str(n) for n in kept_planes(m.plane_mask))
    n_live = sum(1 for b in m.blocks if b.state == 1)
    mode = ", input mode 1 (first-layer weights per plane)" if m.input_mode == INPUT_PER_PLANE else ""
    patch = f", patch {ram['patch']}" if "patch" in ram else ""
    lines = [
        f"{name}: {m.n_inputs} inputs (bit-planes {kept}, mask 0x{m.plane_mask:02x}{mode}), layers {layers_text(m)}",
        f"blocks: {len(m.blocks)} ({n_live} live), arena planes: {m.n_planes}, "
        f"bits per weight: {m.bits_per_weight:.2f}",
        rule, line(head), rule, *[line(b) for b in body], rule, line(tot), rule,
        f"1-bit weights: {sum(x['bits1'] for x in r):,} "
        f"({4 * m.plane_words * m.n_planes / 1024:.2f} kB packed with row padding)",
        f"inference RAM: {sum(ram.values()):,} bytes (input {ram['input']}, "
        f"activations {ram['activations']}{patch}, scores {ram['scores']}); weights read in place"
        + ("; eBNN order: each output bit finished (four sums, one compare) before the next" if conv else ""),
    ]  # fmt: skip
    lines += arena_lines(m)
    if file_bytes is not None:
        lines.append(f"file: {file_bytes:,} bytes ({file_bytes / 1024:.2f} kB), format version {m.version}")
    return "\n".join(lines)


def _planes(p: list[int]) -> str:
    return f"plane {p[0]}" if len(p) == 1 else f"planes {','.join(map(str, p))}"


def arena_lines(m: Model) -> list[str]:
    """The recursive arena: planes per block, free planes, bits per weight, the live
    block, and the training state (docs/FORMAT.md, docs/TRAINING.md)."""
    free = sorted(set(range(m.n_planes)) - {p for b in m.blocks for p in b.planes})
    live = [i for i, b in enumerate(m.blocks) if b.state == 1]
    lines = [
        f"arena: {m.n_planes} planes of {4 * m.plane_words / 1024:.2f} kB, {len(m.blocks)} of {m.capacity} "
        f"block slots used, {len(free)} free planes; {m.bits_per_weight:.2f} bits per weight "
        f"({m.n_planes} planes / {max(1, len(m.blocks))} blocks), score_q {m.score_q}",
        "blocks: " + (" | ".join(f"#{i} {'LIVE ' + str(len(b.planes)) + '-bit' if b.state == 1 else 'frozen'} "
                                 f"{_planes(b.planes)}" for i, b in enumerate(m.blocks)) or "none (an empty arena)"),
    ]  # fmt: skip
    st = m.train
    if not m.trainable:
        lines.append("training: none (conv layers or input mode 1: the integer step does not train it; "
                     "docs/FORMAT.md, Training a version 3 model)")  # fmt: skip
    elif st is not None and m.version >= 2:
        acc = f" ({100 * st.hits / st.steps:.1f} % right before the update)" if st.steps else ""
        lines.append(f"training: rule {st.rule}, seed {st.seed}, {st.steps:,} steps{acc}"
                     + (f", live block {live[0]} at {st.block_steps:,} steps" if live else "")
                     + f"; schedule: {st.grow_left} more block(s) of {st.bits} bits"
                     + (f", {st.grow_every:,} steps each" if st.grow_every else ", opened by hand"))  # fmt: skip
        if st.stream_id:
            lines.append(f"stream: 0x{st.stream_id:08x}, {st.steps - st.stream_base:,} samples applied since step "
                         f"{st.stream_base:,} (rbnn grow and rbnn stream stamp their run; docs/PROTOCOL.md)")  # fmt: skip
        lines.append(f"training step RAM: {m.train_ram_bytes():,} bytes of scratch beside the {sum(m.ram_bytes().values()):,} "
                     "of inference (the live block's counters are in the arena)")  # fmt: skip
        lines.append(f"step: live scale 2^{st.scale_shift}, margin {st.margin:,}, lr {st.lr}, decay {st.decay}, "
                     f"gate {st.gate}, thr_shift {st.thr_shift}, off_shift {st.off_shift}, loss "
                     f"{'every violator' if st.loss else 'top violator'}")  # fmt: skip
    return lines
