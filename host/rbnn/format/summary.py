"""larq-style summary table of a packed model: 1-bit vs 32-bit parameters, kB per layer."""

from __future__ import annotations

from .bits import words
from .model import Model, kept_planes


def rows(m: Model) -> list[dict]:
    """One dict per weight layer, over all blocks (storage counts padding words)."""
    out = []
    nb = len(m.blocks)
    for layer, (n_in, n_out) in enumerate(zip(m.layer_inputs, m.sizes, strict=True)):
        hidden = layer < m.n_layers - 1
        n32 = (n_out * nb) if hidden else 2 * n_out * nb  # thresholds, or scale+offset
        flip_bytes = 4 * words(n_out) * nb if hidden else 0
        weight_bytes = 4 * n_out * words(n_in) * m.n_planes
        planes = len(kept_planes(m.plane_mask)) if layer == 0 else 1
        out.append(
            {
                "layer": f"dense_{layer}" + ("" if hidden else " (out)"),
                "input": f"{planes}x1b" if layer == 0 else "1b",
                "shape": f"{n_in}->{n_out}" + (f" x{nb}" if nb > 1 else ""),
                "bits1": n_in * n_out * nb,
                "params32": n32,
                "kb": (weight_bytes + 4 * n32 + flip_bytes) / 1024,
                "macs1": n_in * n_out * nb * planes,
            }
        )
    return out


def summary(m: Model, name: str = "model", file_bytes: int | None = None) -> str:
    """The table as text."""
    r = rows(m)
    head = ["Layer", "Input", "Shape", "# 1-bit", "# 32-bit", "Memory (kB)", "1-bit MACs"]
    body = [[x["layer"], x["input"], x["shape"], f"{x['bits1']:,}", f"{x['params32']:,}",
             f"{x['kb']:.2f}", f"{x['macs1']:,}"] for x in r]  # fmt: skip
    tot = [
        "Total", "", "", f"{sum(x['bits1'] for x in r):,}", f"{sum(x['params32'] for x in r):,}",
        f"{sum(x['kb'] for x in r):.2f}", f"{sum(x['macs1'] for x in r):,}",
    ]  # fmt: skip
    widths = [max(len(row[i]) for row in [head, *body, tot]) for i in range(len(head))]

    def line(cells: list[str]) -> str:
        return "| " + " | ".join(c.ljust(w) if i < 3 else c.rjust(w) for i, (c, w) in enumerate(zip(cells, widths, strict=True))) + " |"

    rule = "+-" + "-+-".join("-" * w for w in widths) + "-+"
    ram = m.ram_bytes()
    kept = ",".join(str(n) for n in kept_planes(m.plane_mask))
    n_live = sum(1 for b in m.blocks if b.state == 1)
    lines = [
        f"{name}: {m.n_inputs} inputs (bit-planes {kept}, mask 0x{m.plane_mask:02x}), "
        f"layers {'-'.join(str(s) for s in [m.n_inputs, *m.sizes])}",
        f"blocks: {len(m.blocks)} ({n_live} live), arena planes: {m.n_planes}, "
        f"bits per weight: {m.bits_per_weight:.2f}",
        rule, line(head), rule, *[line(b) for b in body], rule, line(tot), rule,
        f"1-bit weights: {sum(x['bits1'] for x in r):,} "
        f"({4 * m.plane_words * m.n_planes / 1024:.2f} kB packed with row padding)",
        f"inference RAM: {sum(ram.values()):,} bytes (input {ram['input']}, "
        f"activations {ram['activations']}, scores {ram['scores']}); weights read in place",
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
    if st is not None and m.version >= 2:
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
