"""`rbnn deploy` onto a device whose file system is full, read-only or failing: one
line naming the code (E_NOSPACE, E_IO), what was being done and that nothing changed;
the firmware files are installed all or none and the old set keeps working; a model
upload that does not fit is refused and forgotten.

The virtual device's flash takes its faults from the board process's environment
(vboard.py, class Flash): RBNN_FS_BYTES (capacity), RBNN_FS_STATVFS=0 (no statvfs),
RBNN_FS_READONLY=1, RBNN_FS_FAIL=rename:K (the K-th rename fails)."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest
import serial
from mpy_helpers import firmware_fs

from rbnn.cli import main
from rbnn.device import frames as fr
from rbnn.device.deploy import BAK, MARK, PLAN, TMP, DeployError, deploy, firmware_files, recover
from rbnn.device.link import DeviceError, Link
from rbnn.device.rawrepl import RawRepl
from rbnn.device.virtual import VirtualDevice
from rbnn.format import pack
from support.randmodel import random_model

N_FILES = len(firmware_files())  # the firmware's modules, installed all or none

BAUD = 921600


@pytest.fixture(scope="module")
def template(tmp_path_factory, micropython) -> Path:
    """A board file system with the firmware, as deployed."""
    return firmware_fs(tmp_path_factory.mktemp("deployfs") / "fs", micropython, BAUD)


@pytest.fixture(scope="module")
def model() -> bytes:
    return pack.to_bytes(random_model(np.random.default_rng(4), n_inputs=64, sizes=[32, 10]))


def _old_firmware(template: Path, dest: Path) -> Path:
    """A board with an older firmware, as .py files (the deploy brings .mpy and removes
    them): every module differs from firmware/, and works."""
    dest.mkdir()
    for f in firmware_files():
        (dest / f.name).write_bytes(f.read_bytes() + b"\n# an older build\n")
    return dest


def _files(fs: Path) -> dict[str, bytes]:
    return {p.name: p.read_bytes() for p in sorted(fs.iterdir()) if p.is_file()}


def _used(fs: Path) -> int:
    return sum(len(b) for b in _files(fs).values())


def _works(dev: VirtualDevice) -> None:
    link = Link.open(dev.port, BAUD)
    assert link.info()["protocol"] == fr.PROTOCOL
    link.leave()
    link.close()


def _deploy_fails(dev, model, match: str, **kw) -> DeployError:
    with pytest.raises(DeployError, match=match) as e:
        deploy(dev.port, model, "m.rbnn", baudrate=BAUD, progress=False, **kw)
    assert "\n" not in str(e.value)
    return e.value


def test_full_fs_is_refused_before_anything_is_written(template, model, micropython, tmp_path):
    fs = _old_firmware(template, tmp_path / "fs")
    before = _files(fs)
    with VirtualDevice(fs, micropython=micropython, env={"RBNN_FS_BYTES": str(_used(fs) + 8192)}) as dev:
        _deploy_fails(dev, model, rf"^E_NOSPACE: the firmware needs [\d,]+ bytes for {N_FILES} files, the device's "
                                  r"file system has [\d,]+ free; the firmware on the device is unchanged$")  # fmt: skip
        assert _files(fs) == before
        _works(dev)


def test_full_fs_without_statvfs_fails_while_staging_and_keeps_the_old_set(template, model, micropython, tmp_path):
    fs = _old_firmware(template, tmp_path / "fs")
    before = _files(fs)
    room = len((template / "rbnn.mpy").read_bytes()) + 100  # the first file (rbnn.mpy) fits, the next not
    env = {"RBNN_FS_BYTES": str(_used(fs) + room), "RBNN_FS_STATVFS": "0"}
    with VirtualDevice(fs, micropython=micropython, env=env) as dev:
        _deploy_fails(dev, model, r"^E_NOSPACE: the device's file system is full \(writing rbnn_py.mpy.tmp, "
                                  rf"file 2 of {N_FILES}\); the firmware on the device is unchanged$")  # fmt: skip
        assert _files(fs) == before  # no .tmp left, no module replaced
        _works(dev)


def test_read_only_fs(template, model, micropython, tmp_path):
    fs = _old_firmware(template, tmp_path / "fs")
    before = _files(fs)
    with VirtualDevice(fs, micropython=micropython, env={"RBNN_FS_READONLY": "1"}) as dev:
        _deploy_fails(dev, model, r"^E_IO: the device's file system is read-only \(writing rbnn.mpy.tmp, file 1 "
                                  rf"of {N_FILES}\); the firmware on the device is unchanged$")  # fmt: skip
        # the model upload is refused by the server in the same words
        with pytest.raises(DeviceError, match=r"E_IO: read-only filesystem"):
            deploy(dev.port, model, "m.rbnn", baudrate=BAUD, progress=False, firmware=False)
        assert _files(fs) == before
        _works(dev)
    # with the firmware up to date nothing needs writing: only the model is refused
    fs = tmp_path / "current"
    shutil.copytree(template, fs)
    with VirtualDevice(fs, micropython=micropython, env={"RBNN_FS_READONLY": "1"}) as dev:
        with pytest.raises(DeviceError, match=r"E_IO: read-only filesystem"):
            deploy(dev.port, model, "m.rbnn", baudrate=BAUD, progress=False)
    assert _files(fs) == _files(template)


@pytest.mark.parametrize("k", [3, 6])  # setting the old files aside; renaming the new into place
def test_failed_rename_puts_the_old_set_back(template, model, micropython, tmp_path, k):
    fs = _old_firmware(template, tmp_path / "fs")
    before = _files(fs)
    with VirtualDevice(fs, micropython=micropython, env={"RBNN_FS_FAIL": f"rename:{k}"}) as dev:
        _deploy_fails(dev, model, r"^E_IO: OSError 5 on the device's file system \(renaming the new files into "
                                  r"place\); the firmware on the device is unchanged$")  # fmt: skip
        assert _files(fs) == before
        _works(dev)


@pytest.mark.parametrize("done", [False, True])
def test_install_cut_by_a_power_loss_is_finished(template, model, micropython, tmp_path, done):
    """The flash as a power loss left it in the middle of the renames (old .py set, new
    .mpy set): two old modules set aside, one new placed, three still staged, and (done)
    the mark that all were placed. The next deploy first restores exactly the old set
    (or keeps exactly the new one), then installs the new one."""
    new = _files(template)
    fs = _old_firmware(template, tmp_path / "fs")
    old = _files(fs)
    mpys = sorted(new)
    for name in ("rbnn.py", "rbnn_py.py"):
        (fs / name).rename(fs / (name + BAK))
    for name in mpys:
        (fs / (name + TMP)).write_bytes(new[name])
    (fs / PLAN).write_text(json.dumps(mpys))
    (fs / (mpys[0] + TMP)).rename(fs / mpys[0])
    if done:  # the commit had ended: every new file placed, every old one set aside
        for name in mpys[1:]:
            (fs / (name + TMP)).rename(fs / name)
        for name in old:
            if (fs / name).exists():
                (fs / name).rename(fs / (name + BAK))
        (fs / MARK).write_bytes(b"")
    with VirtualDevice(fs, micropython=micropython) as dev:
        with serial.Serial(dev.port, BAUD, timeout=0.05) as ser:
            repl = RawRepl(ser)
            assert repl.enter(timeout=10)
            recover(repl, mpys + sorted(old))
            assert _files(fs) == (new if done else old)
            repl.exit()
        r = deploy(dev.port, model, "m.rbnn", baudrate=BAUD, progress=False)
    got = _files(fs)
    assert {n: b for n, b in got.items() if not n.endswith(".rbnn") and not n.startswith(".rbnn_")} == new
    assert sorted(r.sent) == ([] if done else mpys)


def test_model_upload_onto_a_full_fs(template, model, micropython, tmp_path):
    fs = tmp_path / "fs"
    shutil.copytree(template, fs)
    env = {"RBNN_FS_BYTES": str(_used(fs) + len(model) // 2), "RBNN_FS_STATVFS": "0"}
    with VirtualDevice(fs, micropython=micropython, env=env) as dev:
        link = Link.open(dev.port, BAUD)
        with pytest.raises(DeviceError, match=r"UP_DATA: E_NOSPACE: filesystem full: "):
            link.deploy_model(model, "m.rbnn")
        info = link.info()
        assert info["upload"] is None and info["models"] == []  # the partial upload is gone
        assert not (fs / ".rbnn_upload").exists()
        link.leave()
        link.close()
    env = {"RBNN_FS_BYTES": str(_used(fs) + len(model) // 2)}  # statvfs tells: refused at UP_BEGIN
    with VirtualDevice(fs, micropython=micropython, env=env) as dev:
        link = Link.open(dev.port, BAUD)
        with pytest.raises(DeviceError, match=rf"UP_BEGIN: E_NOSPACE: {len(model)} bytes do not fit, \d+ free"):
            link.deploy_model(model, "m.rbnn")
        link.leave()
        link.close()


def test_cli_deploy_onto_a_read_only_device(template, model, micropython, tmp_path, capsys, monkeypatch):
    fs = _old_firmware(template, tmp_path / "fs")
    path = tmp_path / "m.rbnn"
    path.write_bytes(model)
    monkeypatch.setenv("RBNN_MICROPYTHON", micropython)
    monkeypatch.setenv("RBNN_FS_READONLY", "1")  # the board process inherits it
    # (progress bars aside, which another change keeps off a stderr that is no terminal)
    assert main(["deploy", str(path), "--port", "virtual", "--fs", str(fs)]) == 2
    err = capsys.readouterr().err.replace("\r", "\n").splitlines()
    assert [ln for ln in err if ln.startswith("rbnn")] == [f"rbnn: error: E_IO: the device's file system is read-only (writing rbnn.mpy.tmp, file 1 of {N_FILES}); "
                   "the firmware on the device is unchanged"]  # fmt: skip
