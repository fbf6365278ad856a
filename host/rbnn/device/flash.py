"""Write a firmware image to a board (docs/FIRMWARE.md).

ESP32: esptool's ``write-flash`` of the merged ``firmware.bin`` at 0x1000. RP2040: the
``firmware.uf2`` copied to the board's RPI-RP2 drive (the board in BOOTSEL mode; a
board running MicroPython is sent there by a 1200-baud touch of its serial port), or
``picotool load`` when no drive shows up. Each image is checked before anything is
written, so a wrong or damaged file is refused with the offset and field at fault.
"""

from __future__ import annotations

import glob
import os
import shutil
import stat
import struct
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

from ..errors import RbnnError

# UF2 (github.com/microsoft/uf2): 512-byte blocks, 476 payload bytes at most.
UF2_BLOCK = 512
UF2_MAGIC0 = 0x0A324655
UF2_MAGIC1 = 0x9E5D5157
UF2_MAGIC_END = 0x0AB16F30
UF2_FLAG_NOT_MAIN_FLASH = 0x00000001
UF2_FLAG_FAMILY = 0x00002000
RP2040_FAMILY = 0xE48BFF56
RP2040_FLASH = (0x10000000, 0x10000000 + 16 * 1024 * 1024)  # XIP window, 16 MB max

# ESP32 app/bootloader image header: magic 0xE9, chip id at byte 12 (extended header).
ESP_IMAGE_MAGIC = 0xE9
ESP_CHIP_IDS = {"esp32": 0x0000, "esp32s2": 0x0002, "esp32c3": 0x0005, "esp32s3": 0x0009,
                "esp32c2": 0x000C, "esp32c6": 0x000D, "esp32h2": 0x0010, "esp32p4": 0x0012}  # fmt: skip
ESP32_OFFSET = 0x1000  # where the merged image (bootloader first) goes on an ESP32

TARGETS = ("esp32", "rp2")
# Where desktops mount a UF2 drive named RPI-RP2.
RP2_DRIVE_GLOBS = ("/media/*/RPI-RP2", "/run/media/*/RPI-RP2", "/media/RPI-RP2", "/mnt/RPI-RP2",
                   "/Volumes/RPI-RP2")  # fmt: skip


class FlashError(RbnnError):
    """An image that must not be written, or a board that could not be written."""


@dataclass
class Plan:
    """What flashing does, step by step: shell commands and file copies."""

    target: str
    image: Path
    steps: list[str] = field(default_factory=list)


# --- image checks ---------------------------------------------------------------------
def check_uf2(data: bytes, path: str = "<image>", family: int = RP2040_FAMILY) -> int:
    """Check every block of a UF2 image for ``family`` (default RP2040).

    Parameters
    ----------
    data : bytes
        The whole .uf2 file.
    path : str
        Named in errors.
    family : int
        The UF2 family ID the blocks must carry when they carry one.

    Returns
    -------
    int, the number of blocks.

    Raises
    ------
    FlashError naming the file, byte offset, field, expected and found values.
    """
    if not data or len(data) % UF2_BLOCK:
        raise FlashError(f"{path}: UF2 size: expected a non-zero multiple of {UF2_BLOCK} bytes, found {len(data)}")
    n = len(data) // UF2_BLOCK
    for k in range(n):
        at = k * UF2_BLOCK
        m0, m1, flags, addr, size, seq, total, fam = struct.unpack_from("<8I", data, at)
        (m_end,) = struct.unpack_from("<I", data, at + UF2_BLOCK - 4)

        def bad(off: int, name: str, expected: object, found: object, k: int = k, at: int = at) -> FlashError:
            return FlashError(f"{path} @ offset {at + off}: block {k} {name}: expected {expected}, found {found}")

        if m0 != UF2_MAGIC0 or m1 != UF2_MAGIC1:
            raise bad(0, "magic", f"0x{UF2_MAGIC0:08x} 0x{UF2_MAGIC1:08x}", f"0x{m0:08x} 0x{m1:08x}")
        if m_end != UF2_MAGIC_END:
            raise bad(UF2_BLOCK - 4, "end magic", f"0x{UF2_MAGIC_END:08x}", f"0x{m_end:08x}")
        if flags & UF2_FLAG_NOT_MAIN_FLASH:
            continue  # comment blocks, ignored by the bootloader
        if flags & UF2_FLAG_FAMILY and fam != family:
            raise bad(28, "family ID", f"0x{family:08x}", f"0x{fam:08x} (an image for another chip)")
        if size == 0 or size > 476:
            raise bad(16, "payload size", "1..476", size)
        if total != n or seq != k:
            raise bad(20, "block number / count", f"{k} of {n}", f"{seq} of {total}")
        if family == RP2040_FAMILY and not (RP2040_FLASH[0] <= addr and addr + size <= RP2040_FLASH[1]):
            raise bad(12, "target address", "inside RP2040 flash 0x10000000..0x11000000", f"0x{addr:08x}")
    return n


def check_esp_image(data: bytes, path: str = "<image>", chip: str = "esp32") -> None:
    """Check the header of an ESP image (the merged firmware.bin starts with the
    bootloader's): magic byte and chip ID.

    Raises
    ------
    FlashError naming the file, offset, field, expected and found values.
    """
    if len(data) < 24:
        raise FlashError(f"{path}: ESP image header: expected >= 24 bytes, found {len(data)}")
    if data[0] != ESP_IMAGE_MAGIC:
        raise FlashError(f"{path} @ offset 0: ESP image magic: expected 0x{ESP_IMAGE_MAGIC:02x}, found 0x{data[0]:02x}")
    want = ESP_CHIP_IDS[chip]
    (got,) = struct.unpack_from("<H", data, 12)
    if got != want:
        names = {v: k for k, v in ESP_CHIP_IDS.items()}
        raise FlashError(
            f"{path} @ offset 12: ESP image chip ID: expected 0x{want:04x} ({chip}), "
            f"found 0x{got:04x} ({names.get(got, 'unknown chip')})"
        )


def guess_target(image: Path) -> str:
    """'rp2' for a .uf2 or .elf image, 'esp32' for a .bin; else a FlashError."""
    suffix = image.suffix.lower()
    if suffix in (".uf2", ".elf"):
        return "rp2"
    if suffix == ".bin":
        return "esp32"
    raise FlashError(f"{image}: cannot tell the board from the name; give --target {'|'.join(TARGETS)}")


# --- RP2040 ---------------------------------------------------------------------------
def find_rp2_drive(globs: tuple[str, ...] | None = None) -> Path | None:
    """A mounted RPI-RP2 UF2 drive (it holds INFO_UF2.TXT), or None. ``globs``: where
    to look (default RP2_DRIVE_GLOBS)."""
    for pattern in globs or RP2_DRIVE_GLOBS:
        for d in sorted(glob.glob(pattern)):
            if (Path(d) / "INFO_UF2.TXT").is_file():
                return Path(d)
    return None


def is_serial_port(device: str) -> bool:
    """True for a character device (/dev/ttyACM0) or a Windows COM port."""
    if device.upper().startswith("COM"):
        return True
    try:
        return stat.S_ISCHR(os.stat(device).st_mode)
    except OSError:
        return False


def bootsel_touch(port: str) -> None:
    """Open and close ``port`` at 1200 baud: MicroPython's rp2 port then reboots into
    the BOOTSEL bootloader (its USB drive appears a second or two later)."""
    import serial

    try:
        s = serial.Serial(port, 1200)
    except (serial.SerialException, OSError) as e:
        raise FlashError(f"{port}: cannot open for the 1200-baud reset: {e}") from None
    try:
        s.dtr = False  # closing drops DTR anyway; some ports have no modem lines
    except OSError:
        pass
    s.close()


def copy_uf2(image: Path, drive: Path) -> Path:
    """Copy the image onto a UF2 drive, flushed to the device; returns the target."""
    if not (drive / "INFO_UF2.TXT").is_file():
        raise FlashError(f"{drive}: not a UF2 drive (no INFO_UF2.TXT); hold BOOTSEL while plugging the board in")
    dest = drive / image.name
    with open(image, "rb") as src, open(dest, "wb") as dst:
        shutil.copyfileobj(src, dst, 64 * 1024)
        dst.flush()
        os.fsync(dst.fileno())
    return dest


def flash_rp2(image: Path, device: str | None = None, wait: float = 10.0, dry_run: bool = False,
              picotool: str | None = None) -> Plan:  # fmt: skip
    """Write an RP2040 image.

    Parameters
    ----------
    image : Path
        ``firmware.uf2`` (checked block by block), or ``.elf`` (picotool only).
    device : str, optional
        The RPI-RP2 drive's folder; or the serial port of a board running MicroPython
        (sent to BOOTSEL by a 1200-baud touch first); or None: a mounted RPI-RP2 drive,
        else picotool.
    wait : float
        Seconds to wait for the drive after a 1200-baud touch.
    dry_run : bool
        Only check the image and return the plan.
    picotool : str, optional
        The picotool program (default: found on PATH).

    Returns
    -------
    Plan, the steps taken (or to be taken with ``dry_run``).
    """
    data = image.read_bytes()
    if image.suffix.lower() == ".uf2":
        blocks = check_uf2(data, str(image))
        what = f"{image} ({blocks} UF2 blocks)"
    elif image.suffix.lower() == ".elf":
        if data[:4] != b"\x7fELF":
            raise FlashError(f"{image} @ offset 0: ELF magic: expected 7f 45 4c 46, found {data[:4].hex(' ') or 'nothing'}")
        what = str(image)
    else:
        raise FlashError(f"{image}: an RP2040 image must be a .uf2 (or a .elf for picotool), found {image.suffix or 'no suffix'}")
    plan = Plan("rp2", image)
    picotool = picotool or shutil.which("picotool")
    drive = None
    if device and not is_serial_port(device):
        drive = Path(device)
        if not drive.is_dir():
            raise FlashError(f"{device}: neither a folder (the RPI-RP2 drive) nor a serial port")
        if not (drive / "INFO_UF2.TXT").is_file():
            raise FlashError(f"{drive}: not a UF2 drive (no INFO_UF2.TXT); hold BOOTSEL while plugging the board in")
    elif device:
        plan.steps.append(f"1200-baud touch on {device} (reboot into BOOTSEL)")
        if not dry_run:
            bootsel_touch(device)
            deadline = time.monotonic() + wait
            while (drive := find_rp2_drive()) is None and time.monotonic() < deadline:
                time.sleep(0.25)
    else:
        drive = find_rp2_drive()
    if drive is not None and image.suffix.lower() == ".uf2":
        plan.steps.append(f"copy {what} to {drive}")
        if not dry_run:
            copy_uf2(image, drive)
        return plan
    if picotool:
        cmd = [picotool, "load", "-x", str(image)]
        plan.steps.append(" ".join(cmd))
        if not dry_run:
            run(cmd, "picotool")
        return plan
    if dry_run and device:
        plan.steps.append(f"copy {what} to the RPI-RP2 drive once it appears")
        return plan
    raise FlashError(
        "no RPI-RP2 drive found and no picotool: hold BOOTSEL while plugging the board in "
        "(or give --device with its serial port or the drive's folder)"
    )


# --- ESP32 ----------------------------------------------------------------------------
def esptool_cmd() -> tuple[list[str], int]:
    """How to run esptool in this Python, and its major version (5 renamed write_flash
    to write-flash)."""
    try:
        from importlib.metadata import PackageNotFoundError, version

        major = int(version("esptool").split(".")[0])
    except (PackageNotFoundError, ValueError):
        raise FlashError(
            f"esptool is not installed in {sys.executable}: pip install esptool (make flash does it)"
        ) from None
    return [sys.executable, "-m", "esptool"], major


def flash_esp32(image: Path, device: str | None = None, baud: int = 460800, offset: int = ESP32_OFFSET,
                erase: bool = False, dry_run: bool = False, chip: str = "esp32",
                esptool: tuple[list[str], int] | None = None) -> Plan:  # fmt: skip
    """Write a merged ESP32 image with esptool.

    Parameters
    ----------
    image : Path
        The port's merged ``firmware.bin`` (bootloader, partition table, app).
    device : str, optional
        Serial port; None lets esptool search.
    baud : int
        Baud rate of the upload.
    offset : int
        Flash address of the image's first byte: 0x1000 on the ESP32.
    erase : bool
        Erase the whole flash first (wipes the board's file system too).
    dry_run : bool
        Only check the image and return the plan.
    chip : str
        esptool's chip name; the image's chip ID must match.
    esptool : (command, major version), optional
        How to run esptool (default: this Python's, see :func:`esptool_cmd`).

    Returns
    -------
    Plan, the commands run (or to be run with ``dry_run``).
    """
    check_esp_image(image.read_bytes(), str(image), chip)
    base, major = esptool or esptool_cmd()
    sub = (lambda s: s) if major >= 5 else (lambda s: s.replace("-", "_"))
    cmd = [*base, "--chip", chip]
    if device:
        cmd += ["--port", device]
    cmd += ["--baud", str(baud)]
    plan = Plan("esp32", image)
    cmds = []
    if erase:
        cmds.append([*cmd, sub("erase-flash")])
    cmds.append([*cmd, sub("write-flash"), "-z", f"0x{offset:x}", str(image)])
    for c in cmds:
        plan.steps.append(" ".join(c))
        if not dry_run:
            run(c, "esptool")
    return plan


TOOL_TIMEOUT = 600.0  # s: esptool writes 4 MB at 115200 baud in about 6 minutes


def run(cmd: list[str], name: str, timeout: float = TOOL_TIMEOUT) -> None:
    """Run a flashing tool with its output on this terminal; FlashError if it fails or
    is still running after ``timeout`` seconds (then it is killed)."""
    try:
        proc = subprocess.run(cmd, timeout=timeout)
    except OSError as e:
        raise FlashError(f"{name}: cannot run {cmd[0]}: {e}") from None
    except subprocess.TimeoutExpired:
        raise FlashError(f"{name} did not finish within {timeout:g} s and was stopped: {' '.join(cmd)}") from None
    if proc.returncode != 0:
        raise FlashError(f"{name} failed (exit status {proc.returncode}): {' '.join(cmd)}")


def flash(image: str | os.PathLike, target: str | None = None, device: str | None = None,
          **kw) -> Plan:  # fmt: skip
    """Check ``image`` and write it to the board (:func:`flash_esp32`, :func:`flash_rp2`).

    ``target`` is 'esp32' or 'rp2' (default: from the file name); ``kw`` go to the
    target's function.
    """
    path = Path(image)
    if not path.is_file():
        raise FlashError(f"{path}: no such image (make firmware PORT=... builds one)")
    target = target or guess_target(path)
    if target == "esp32":
        return flash_esp32(path, device, **kw)
    if target == "rp2":
        return flash_rp2(path, device, **kw)
    raise FlashError(f"--target {target}: expected one of {', '.join(TARGETS)}")
