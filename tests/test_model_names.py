"""Model names and the virtual device's least heap: the host refuses a name the
device's store would refuse, with the device's words, before anything is sent (one rule:
the firmware's rbnn_store.check_name, which the host runs too, checked here against the
device itself); the documented least heap runs the server and a model."""

from __future__ import annotations

import json

import numpy as np
import pytest
from mpy_helpers import firmware_fs, run_mpy_code

from rbnn.cli import main
from rbnn.device.link import Link, check_model_name
from rbnn.device.virtual import HEAP_RANGE, VirtualDevice, VirtualDeviceError, heap_bytes
from rbnn.errors import RbnnError
from rbnn.format import pack
from support.randmodel import random_model

NAMES = ["m.rbnn", "model-2_b.v1.rbnn", "A.rbnn", "a" * 27 + ".rbnn", "a" * 28 + ".rbnn", "", ".rbnn",
         ".hidden.rbnn", "../x.rbnn", "x/y.rbnn", "m.RBNN", "m.rbnn.new", "m", "é.rbnn", "\u0661.rbnn",
         "m .rbnn", "m\x00.rbnn", "ｍ.rbnn", "m\n.rbnn"]  # fmt: skip

DEVICE = r"""
import json, rbnn_store
out = []
for n in json.loads(open("names.json").read()):
    try:
        rbnn_store.check_name(n)
        out.append(None)
    except rbnn_store.StoreError as e:
        out.append("%s: %s" % e.args)
print(json.dumps(out))
"""


def test_host_and_device_take_the_same_names(micropython, tmp_path):
    (tmp_path / "names.json").write_text(json.dumps(NAMES))
    device = json.loads(run_mpy_code(micropython, DEVICE, tmp_path).stdout)
    host = []
    for n in NAMES:
        try:
            check_model_name(n)
            host.append(None)
        except RbnnError as e:
            host.append(str(e))
    assert [h is None for h in host] == [d is None for d in device]
    # the same words, but for repr() of non-ASCII names (MicroPython writes \xe9 for é)
    ascii_only = [i for i, n in enumerate(NAMES) if n.isascii()]
    assert [host[i] for i in ascii_only] == [device[i] for i in ascii_only]
    assert host[:4] == [None] * 4 and all(host[4:])  # the corpus has both kinds


@pytest.mark.parametrize("name", ["../x.rbnn", ""])
def test_deploy_refuses_a_bad_name_before_touching_the_board(tmp_path, capsys, name):
    model = tmp_path / "m.rbnn"
    pack.save(random_model(np.random.default_rng(2), n_inputs=16, sizes=[8, 4]), model)
    fs = tmp_path / "vfs"
    assert main(["deploy", str(model), "--port", "virtual", "--fs", str(fs), "--name", name]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert err == [f"rbnn: error: E_NAME: bad model name {name!r}: 1..32 of A-Z a-z 0-9 _ - ., ending in .rbnn, "
                   "not starting with ."]  # fmt: skip
    assert not fs.exists()  # no virtual device was even started


def test_link_sends_nothing_for_a_bad_name():
    class Port:  # takes nothing: any frame sent fails the test
        timeout, baudrate, port = 0.05, 115200, "none"
        in_waiting = 0

        def write(self, data):
            raise AssertionError(f"sent {data!r}")

    link = Link(Port())
    for call in (lambda: link.deploy_model(b"x" * 100, "../x.rbnn"), lambda: link.save(""),
                 lambda: link.load("a/b.rbnn")):  # fmt: skip
        with pytest.raises(RbnnError, match="E_NAME: bad model name"):
            call()


def test_least_heap_runs_the_server_and_a_model(micropython, tmp_path):
    """At the least heap `rbnn virtual --heap` takes, the board starts, its server
    answers and a small model is deployed and run."""
    least = f"{HEAP_RANGE[0] // 1024}K"
    with pytest.raises(VirtualDeviceError, match=rf"heap: expected a size {least}\.\.1024M .*found '{HEAP_RANGE[0] // 1024 - 1}K'"):
        heap_bytes(f"{HEAP_RANGE[0] // 1024 - 1}K")
    fs = firmware_fs(tmp_path / "fs", micropython)
    m = random_model(np.random.default_rng(6), n_inputs=64, sizes=[32, 10])
    with VirtualDevice(fs, micropython=micropython, heap=least) as dev:
        link = Link.open(dev.port, 921600)
        link.deploy_model(pack.to_bytes(m), "m.rbnn")
        classes, _, _ = link.infer(np.zeros((4, 64), np.uint8))
        assert len(classes) == 4 and link.info()["mem_free"] > 0
        link.leave()
        link.close()
    assert dev.starts == 1
