"""Host training: data in, a folded integer model out.

``fit`` runs the float training (``net``: the binary network with BatchNorm and the
straight-through estimator; ``conv``: binary convolutions and max-pool before it; ``optim``: Adam; ``augment``: image jitter), ``fold`` turns
it into the integers of docs/FORMAT.md, ``plots`` draws the curves.
"""

from .blas import blas_threads
from .fit import (
    QUICK_RECIPE,
    TrainConfig,
    TrainError,
    TrainResult,
    config_dict,
    train,
)
from .net import FloatNet, init_net

__all__ = [
    "QUICK_RECIPE", "FloatNet", "TrainConfig", "TrainError", "TrainResult",
    "blas_threads", "config_dict", "init_net", "train",
]  # fmt: skip
