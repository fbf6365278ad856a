"""Training curves as a PNG (matplotlib, Agg backend: no display needed).

matplotlib is optional (``pip install 'rbnn[plots]'``): :func:`missing` says whether
it is there, so `rbnn train` knows before it trains whether it will write the PNG.
"""

from __future__ import annotations

import os
from typing import BinaryIO

INSTALL = "pip install 'rbnn[plots]'"


def missing() -> str | None:
    """None when matplotlib can be imported, else a note saying how to get it."""
    try:
        import matplotlib  # noqa: F401
    except ImportError:
        return f"matplotlib is not installed ({INSTALL})"
    return None


def plot_history(
    history: list[dict], path: str | os.PathLike | BinaryIO, title: str = "", kept_epoch: int | None = None
) -> None:
    """Write loss and accuracy per epoch, train and validation, to a PNG file.

    Parameters
    ----------
    history : list of dict
        One row per epoch with keys ``epoch``, ``loss``, ``acc``, ``val_loss``, ``val_acc``
        (as :func:`rbnn.train.train` records them; validation values None without a
        validation split: not drawn).
    path : path of the PNG to write, or a binary file open for writing
    title : str
        Figure title (e.g. the shape and options of the run).
    kept_epoch : int, optional
        The epoch whose weights the model holds: marked by a dotted line.
    """
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from matplotlib.ticker import MaxNLocator

    ep = [r["epoch"] for r in history]
    val_loss = [float("nan") if r["val_loss"] is None else r["val_loss"] for r in history]
    val_acc = [float("nan") if r["val_acc"] is None else 100 * r["val_acc"] for r in history]
    fig, (ax_l, ax_a) = plt.subplots(1, 2, figsize=(10, 4))
    try:
        ax_l.plot(ep, [r["loss"] for r in history], "o-", label="train (augmented batches)")
        ax_l.plot(ep, val_loss, "s-", label="validation")
        ax_l.set_xlabel("epoch")
        ax_l.set_ylabel("loss")
        ax_l.set_yscale("log")
        ax_l.grid(True, alpha=0.3)
        ax_l.legend()
        ax_a.plot(ep, [100 * r["acc"] for r in history], "o-", label="train (augmented batches)")
        ax_a.plot(ep, val_acc, "s-", label="validation")
        ax_a.set_xlabel("epoch")
        ax_a.set_ylabel("accuracy (%)")
        ax_a.grid(True, alpha=0.3)
        for ax in (ax_l, ax_a):
            ax.xaxis.set_major_locator(MaxNLocator(integer=True))
            if kept_epoch is not None:
                ax.axvline(kept_epoch, color="grey", linestyle=":", label=f"kept (epoch {kept_epoch})")
        ax_a.legend()
        if title:
            fig.suptitle(title)
        fig.tight_layout()
        fig.savefig(path, dpi=100, format="png")
    finally:
        plt.close(fig)


def plot_growth(rows: list, path: str | os.PathLike | BinaryIO, title: str = "") -> None:
    """Test accuracy of a growth run (``rbnn grow``) against samples seen, each new block
    marked, and against bits per weight of the arena; written as a PNG.

    Parameters
    ----------
    rows : list of rbnn.learn.run.BlockRow (the start, then one per block)
    path : path of the PNG to write, or a binary file open for writing
    """
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    names = list(rows[0].test)
    fig, (ax_s, ax_b) = plt.subplots(1, 2, figsize=(10, 4))
    try:
        for name in names:
            acc = [100 * r.test[name] for r in rows]
            ax_s.plot([r.samples for r in rows], acc, "o-", label=name)
            ax_b.plot([r.bits_per_weight for r in rows], acc, "o-", label=name)
        for r in rows[1:]:
            ax_s.axvline(r.samples, color="grey", alpha=0.2)  # a block ends (and the next opens) here
        ax_s.set_xlabel("samples seen (grey: a block ends)")
        ax_b.set_xlabel("bits per weight of the arena")
        ax_b.invert_xaxis()  # growing lowers bits per weight: time runs left to right
        for ax in (ax_s, ax_b):
            ax.set_ylabel("test accuracy (%)")
            ax.grid(True, alpha=0.3)
            ax.legend()
        if title:
            fig.suptitle(title)
        fig.tight_layout()
        fig.savefig(path, format="png", dpi=110)
    finally:
        plt.close(fig)


def running_accuracy(points: list[tuple[int, int, int]], window: int) -> tuple[list[int], list[float]]:
    """Accuracy over the last ``window`` samples (at least) before each point.

    Parameters
    ----------
    points : (samples streamed, the model's steps, its hits) from the device's replies,
        ascending in samples; hits count right predictions made before each update.
    window : samples per average

    Returns
    -------
    (samples streamed, accuracy in %) at every point with a full window behind it.
    """
    xs, ys, j = [], [], 0
    for i, (a, s, h) in enumerate(points):
        while j + 1 < i and points[j + 1][0] <= a - window:
            j += 1
        a0, s0, h0 = points[j]
        if a - a0 >= window and s > s0:
            xs.append(a)
            ys.append(100 * (h - h0) / (s - s0))
    return xs, ys


def plot_stream(points: list[tuple[int, int, int]], block_every: int, path: str | os.PathLike | BinaryIO,
                title: str = "") -> None:  # fmt: skip
    """Running accuracy of a training stream (``rbnn stream``) against samples streamed,
    each block's end marked; written as a PNG. ``points`` as for :func:`running_accuracy`."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    total = points[-1][0] if points else 0
    window = max(50, total // 50)
    xs, ys = running_accuracy(points, window)
    fig, ax = plt.subplots(figsize=(7, 4))
    try:
        ax.plot(xs, ys, "-", label=f"running accuracy (last {window:,} samples, before each update)")
        if block_every > 0:
            for b in range(block_every, total, block_every):
                ax.axvline(b, color="grey", alpha=0.2)
        ax.set_xlabel("samples streamed (grey: a block ends, the next opens)")
        ax.set_ylabel("accuracy on the device (%)")
        ax.set_ylim(0, 100)
        ax.grid(True, alpha=0.3)
        ax.legend(loc="lower right")
        if title:
            ax.set_title(title)
        fig.tight_layout()
        fig.savefig(path, format="png", dpi=110)
    finally:
        plt.close(fig)


def plot_sensitivity(
    rows: list[tuple[int, float]], start: float, path: str | os.PathLike | BinaryIO, title: str = ""
) -> None:
    """Validation accuracy lost when each kept input bit-plane is removed (``rbnn
    sensitivity``), one bar per plane, as a PNG.

    Parameters
    ----------
    rows : (plane, validation accuracy without it) per kept plane, fractions
    start : validation accuracy with every kept plane
    path : path of the PNG to write, or a binary file open for writing
    """
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(7, 4))
    try:
        drops = [100 * (start - acc) for _, acc in rows]
        ax.bar([str(p) for p, _ in rows], drops, color=["C3" if d > 1 else "C0" for d in drops])
        for i, d in enumerate(drops):
            ax.annotate(f"{d:.2f}", (i, d), ha="center", va="bottom", fontsize=8)
        ax.axhline(1.0, color="grey", ls=":", label="1 point")
        ax.set_xlabel("input bit-plane removed (7 = most significant)")
        ax.set_ylabel("validation accuracy lost (points)")
        ax.set_title(title or f"all planes: {100 * start:.2f} %")
        ax.grid(True, axis="y", alpha=0.3)
        ax.legend()
        fig.tight_layout()
        fig.savefig(path, format="png", dpi=110)
    finally:
        plt.close(fig)
