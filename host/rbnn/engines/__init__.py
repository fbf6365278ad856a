"""Inference engines on the host, all with one signature: scores(model_bytes, xbits).

``twin`` is the numpy reference; ``c`` is the C core through ctypes (rbnn.engines.ccore).
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np

ENGINES = ("twin", "c")


def scorer(engine: str, data: bytes) -> Callable[[np.ndarray], np.ndarray]:
    """A function mapping packed inputs uint32 (n, K, W) to int32 scores (n, classes)."""
    if engine == "twin":
        from ..format import pack
        from . import twin

        m = pack.from_bytes(data)
        return lambda xbits: twin.scores(m, xbits)
    if engine == "c":
        from .ccore import CModel

        cm = CModel(data)
        return cm.scores
    from ..errors import ModelError

    raise ModelError(f"unknown engine {engine!r}; expected one of {', '.join(ENGINES)}")
