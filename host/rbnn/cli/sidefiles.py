"""The files a command writes beside its model file (``m.curves.png``, ``m.history.json``,
``m.growth.png``, ...): named after it, checked with it before any work starts."""

from __future__ import annotations

from pathlib import Path


def side_path(model_path: str, suffix: str) -> Path:
    """``m.rbnn`` -> ``m.<suffix>`` beside it (``m`` -> ``m.<suffix>``)."""
    p = Path(model_path)
    stem = p.with_suffix("") if p.suffix == ".rbnn" else p
    return stem.with_name(f"{stem.name}.{suffix}")


def check_outputs(model_path: str, inputs: tuple, kinds: dict[str, str]) -> tuple:
    """(-o path, {what: path} of the files beside it to write, notes on what is not written),
    every path checked writable and not one of ``inputs``, before the work.

    ``kinds`` maps what to a suffix; a ``.png`` is left out (with a note) without
    matplotlib, everything beside a pipe or device ``-o`` is left out.
    """
    from ..files import check_output, is_stream
    from ..train.plots import missing

    out = check_output(model_path, "-o", inputs)
    if is_stream(out):  # /dev/null, a FIFO: nothing beside it, ever
        return out, {}, [f"{', '.join(kinds)}: not written (-o {model_path} is not a regular file)"]
    sides, notes = {}, []
    no_plots = missing()
    for what, suffix in kinds.items():
        if suffix.endswith(".png") and no_plots:
            notes.append(f"{what}: not written: {no_plots}")
            continue
        sides[what] = side_path(model_path, suffix)
    for what, path in sides.items():
        check_output(path, f"-o {model_path}: its {what} file", inputs)
    return out, sides, notes
