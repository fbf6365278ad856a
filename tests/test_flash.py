"""`rbnn flash`: image checks, the RP2040 UF2 copy (a folder stands in for the RPI-RP2
drive, a pseudo-terminal for the board's serial port) and the esptool command lines
(a stand-in esptool records its arguments). No board is needed."""

from __future__ import annotations

import os
import pty
import struct
import sys
import termios
from pathlib import Path

import pytest

from rbnn.cli import main
from rbnn.device import flash
from rbnn.device.flash import FlashError


def uf2(payload: bytes, family: int = flash.RP2040_FAMILY, base: int = 0x10000000) -> bytes:
    """A UF2 image as MicroPython's rp2 build writes it: 256-byte payloads."""
    chunks = [payload[i : i + 256] for i in range(0, len(payload), 256)]
    out = b""
    for k, c in enumerate(chunks):
        head = struct.pack("<8I", flash.UF2_MAGIC0, flash.UF2_MAGIC1, flash.UF2_FLAG_FAMILY,
                           base + 256 * k, len(c), k, len(chunks), family)  # fmt: skip
        out += head + c.ljust(476, b"\0") + struct.pack("<I", flash.UF2_MAGIC_END)
    return out


def esp_image(chip_id: int = 0) -> bytes:
    # magic, 3 segments, DIO, 40 MHz/4 MB, entry, then the extended header with chip ID
    head = bytes([0xE9, 3, 2, 0x20]) + struct.pack("<I", 0x40080000) + bytes(4)
    head += struct.pack("<HBHH", chip_id, 0, 0, 0) + bytes(24 - 19)
    return head + os.urandom(4000)


@pytest.fixture
def image_uf2(tmp_path) -> Path:
    p = tmp_path / "firmware.uf2"
    p.write_bytes(uf2(os.urandom(3000)))
    return p


def test_uf2_check_accepts_and_names_the_fault(tmp_path):
    good = uf2(os.urandom(1000))
    assert flash.check_uf2(good) == 4
    cases = [
        (good[:-1], "UF2 size: expected a non-zero multiple of 512 bytes, found 2047"),
        (good[:512] + b"X" + good[513:], "@ offset 512: block 1 magic"),
        (good[:1020] + b"\0\0\0\0" + good[1024:], "@ offset 1020: block 1 end magic"),
        (uf2(b"x" * 300, family=0xE48BFF59), "@ offset 28: block 0 family ID: expected 0xe48bff56, "
                                              "found 0xe48bff59 (an image for another chip)"),
        (uf2(b"x" * 10, base=0x20000000), "@ offset 12: block 0 target address"),
        (good[:1024] + good[1536:] + good[1024:1536], "@ offset 1044: block 2 block number / count: "
                                                      "expected 2 of 4, found 3 of 4"),
    ]  # fmt: skip
    for data, msg in cases:
        with pytest.raises(FlashError) as e:
            flash.check_uf2(data, "fw.uf2")
        assert msg in str(e.value)
        assert str(e.value).startswith("fw.uf2")


def test_esp_image_check():
    flash.check_esp_image(esp_image(0))
    with pytest.raises(FlashError, match=r"@ offset 0: ESP image magic: expected 0xe9, found 0x00"):
        flash.check_esp_image(bytes(100))
    with pytest.raises(
        FlashError, match=r"chip ID: expected 0x0000 \(esp32\), found 0x0009 \(esp32s3\)"
    ):
        flash.check_esp_image(esp_image(9))
    with pytest.raises(FlashError, match="expected >= 24 bytes, found 5"):
        flash.check_esp_image(b"\xe9abcd")


def drive(tmp_path) -> Path:
    d = tmp_path / "media" / "RPI-RP2"
    d.mkdir(parents=True)
    (d / "INFO_UF2.TXT").write_text(
        "UF2 Bootloader v3.0\nModel: Raspberry Pi RP2\nBoard-ID: RPI-RP2\n"
    )
    return d


def test_rp2_copy_to_a_named_drive(tmp_path, image_uf2, capsys):
    d = drive(tmp_path)
    assert main(["flash", str(image_uf2), "--device", str(d)]) == 0
    assert (d / "firmware.uf2").read_bytes() == image_uf2.read_bytes()
    out = capsys.readouterr().out
    assert f"done: copy {image_uf2} (12 UF2 blocks) to {d}" in out


def test_rp2_refuses_a_folder_that_is_no_uf2_drive(tmp_path, image_uf2, capsys):
    for extra in ([], ["--dry-run"]):
        assert main(["flash", str(image_uf2), "--device", str(tmp_path), *extra]) == 2
        assert "not a UF2 drive (no INFO_UF2.TXT)" in capsys.readouterr().err
    assert not (tmp_path / "x" / "firmware.uf2").exists()


def test_rp2_serial_port_gets_the_1200_baud_touch_then_the_copy(tmp_path, image_uf2, monkeypatch):
    # The pseudo-terminal plays the board's USB serial port; the drive is already there.
    d = drive(tmp_path)
    monkeypatch.setattr(flash, "RP2_DRIVE_GLOBS", (str(tmp_path / "media" / "RPI-RP2"),))
    master, slave = pty.openpty()
    port = os.ttyname(slave)
    try:
        plan = flash.flash(image_uf2, "rp2", port, wait=2)
        assert termios.tcgetattr(master)[4] == termios.B1200
    finally:
        os.close(master)
        os.close(slave)
    assert plan.steps[0].startswith(f"1200-baud touch on {port}")
    assert (d / "firmware.uf2").read_bytes() == image_uf2.read_bytes()


def test_rp2_without_drive_or_picotool_says_what_to_do(tmp_path, image_uf2, monkeypatch):
    monkeypatch.setattr(flash, "RP2_DRIVE_GLOBS", (str(tmp_path / "none"),))
    monkeypatch.setattr(flash.shutil, "which", lambda name: None)
    with pytest.raises(FlashError, match="hold BOOTSEL while plugging the board in"):
        flash.flash(image_uf2, "rp2")


def test_rp2_bad_image_is_refused_before_anything_is_written(tmp_path):
    d = drive(tmp_path)
    bad = tmp_path / "firmware.uf2"
    bad.write_bytes(uf2(b"x" * 1000, family=0xE48BFF59))
    with pytest.raises(FlashError, match="family ID"):
        flash.flash(bad, None, str(d))
    assert not (d / "firmware.uf2").exists()


FAKE_ESPTOOL = """
import sys
with open(sys.argv[1], "a") as f:
    f.write(" ".join(sys.argv[2:]) + "\\n")
sys.exit(int(sys.argv[2] == "--fail"))
"""


@pytest.mark.parametrize(
    "major,write,erase", [(5, "write-flash", "erase-flash"), (4, "write_flash", "erase_flash")]
)
def test_esp32_runs_esptool_write_flash(tmp_path, major, write, erase):
    img = tmp_path / "firmware.bin"
    img.write_bytes(esp_image())
    fake = tmp_path / "esptool.py"
    fake.write_text(FAKE_ESPTOOL)
    log = tmp_path / "calls.txt"
    tool = ([sys.executable, str(fake), str(log)], major)
    plan = flash.flash_esp32(img, "/dev/ttyUSB7", erase=True, esptool=tool)
    calls = log.read_text().splitlines()
    assert calls == [
        f"--chip esp32 --port /dev/ttyUSB7 --baud 460800 {erase}",
        f"--chip esp32 --port /dev/ttyUSB7 --baud 460800 {write} -z 0x1000 {img}",
    ]
    assert len(plan.steps) == 2
    failing = ([sys.executable, str(fake), str(log), "--fail"], major)
    with pytest.raises(FlashError, match="esptool failed \\(exit status 1\\)"):
        flash.flash_esp32(img, None, esptool=failing)


def test_flash_cli_dry_run_and_errors(tmp_path, capsys):
    img = tmp_path / "firmware.bin"
    img.write_bytes(esp_image(5))
    assert main(["flash", str(img), "--device", "/dev/ttyUSB0", "--dry-run"]) == 2
    assert "chip ID: expected 0x0000 (esp32), found 0x0005 (esp32c3)" in capsys.readouterr().err
    assert main(["flash", str(tmp_path / "missing.uf2")]) == 2
    assert "missing.uf2: no such image" in capsys.readouterr().err
    assert main(["flash", str(tmp_path / "fw.hex")]) == 2
    assert "give --target esp32|rp2" in capsys.readouterr().err
    img.write_bytes(esp_image(0))
    if _has_esptool():
        assert main(["flash", str(img), "--device", "/dev/ttyUSB0", "--dry-run"]) == 0
        assert "would run: " in capsys.readouterr().out


def _has_esptool() -> bool:
    try:
        flash.esptool_cmd()
        return True
    except FlashError:
        return False
