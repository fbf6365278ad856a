"""What `rbnn sensitivity` and `rbnn prune` share: the model with its float state, and the
validation split they score on (a held-out part of ``--data``'s training samples, never
its test set)."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from ..errors import DataError


@dataclass
class Split:
    """Training and validation samples of ``--data``'s training part, and what they are."""

    x_tr: np.ndarray
    y_tr: np.ndarray
    x_va: np.ndarray
    y_va: np.ndarray
    what: str  # one line for the user


def load_state_for(model_path: str, float_path: str | None, m, required: bool):
    """The float state of ``m`` (``--float``, else ``<stem>.float.npz`` beside the model), or
    None when it is not there and not ``required``; refused when it is not ``m``'s."""
    from ..train.state import StateError, load_state
    from .sidefiles import side_path

    path = float_path or side_path(model_path, "float.npz")
    if float_path is None and not path.exists():
        if required:
            raise StateError(f"{model_path}: no float state beside it ({path}): rbnn prune fine-tunes the float "
                             "network rbnn train --per-plane writes there (or give it with --float)")  # fmt: skip
        return None, path
    st = load_state(path)
    folded = st.net.fold()
    blk, mine = m.blocks[0], folded.blocks[0]
    same = (folded.plane_mask == m.plane_mask and folded.sizes == m.sizes and np.array_equal(folded.arena, m.arena)
            and all(np.array_equal(a, b) for a, b in zip(mine.thresholds, blk.thresholds, strict=True))
            and all(np.array_equal(a, b) for a, b in zip(mine.flips, blk.flips, strict=True)))  # fmt: skip
    if not same:
        raise StateError(f"{path}: not the float state of {model_path} (it folds to other weights or thresholds)")
    return st, path


def split(ds, n_inputs: int, n_classes: int, state, val: int, seed: int) -> Split:
    """The validation split: the float state's (the samples ``rbnn train`` held out), else
    ``val`` samples drawn by ``seed`` as ``rbnn train`` draws them (same defaults)."""
    x, y = ds.x_train, ds.y_train
    if x.shape[1] != n_inputs:
        raise DataError(f"--data {ds.name}: {x.shape[1]} features, the model has {n_inputs} inputs")
    if len(y) and int(y.max()) >= n_classes:
        raise DataError(f"--data {ds.name}: labels up to {int(y.max())}, the model has {n_classes} classes")
    if state is not None:
        n = state.n_train
        if n > len(x) or n < 1 or not len(state.val_idx) or int(state.val_idx.max()) >= n:
            raise DataError(f"--data {ds.name}: {len(x):,} training samples; the model was trained on {n:,} with "
                            "another validation split: not its training data")  # fmt: skip
        val_idx = np.asarray(state.val_idx)
        where = f"the {len(val_idx):,} held out by rbnn train (its float state)"
    else:
        n = len(x)
        if not 1 <= val < n:
            raise DataError(f"--val: expected 1..{n - 1} validation samples of {ds.name}'s {n:,}, found {val}")
        val_idx = np.sort(np.random.default_rng(seed).permutation(n)[:val])  # rbnn train's draw (fit._fit)
        where = f"{val:,} drawn with seed {seed} as rbnn train draws its validation split"
    tr = np.setdiff1d(np.arange(n), val_idx)
    what = f"validation: {where}, of the {n:,} training samples of {ds.name} (never its test set)"
    return Split(x[tr], y[tr], x[val_idx], y[val_idx], what)


def table(rows: list[list[str]]) -> str:
    """Columns aligned: the first to the left, the others to the right."""
    widths = [max(len(r[i]) for r in rows) for i in range(len(rows[0]))]
    return "\n".join("  ".join(c.ljust(w) if i == 0 else c.rjust(w) for i, (c, w) in enumerate(zip(r, widths, strict=True)))
                     .rstrip() for r in rows)  # fmt: skip
