"""`rbnn flash IMAGE [--target esp32|rp2] [--device DEV]`: write a firmware image to a
board (esptool for ESP32, UF2 copy or picotool for RP2040; docs/FIRMWARE.md)."""

from __future__ import annotations

import argparse

from .argtypes import baud_rate, non_negative_float


def _int(text: str) -> int:
    """A flash address, decimal or 0x hex, >= 0."""
    try:
        value = int(text, 0)
    except ValueError:
        value = -1
    if value < 0:
        raise argparse.ArgumentTypeError(f"expected an address >= 0 such as 0x1000, found {text!r}")
    return value


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("flash", help="write a firmware image to a board (ESP32, RP2040)")
    p.add_argument("image", help="firmware.bin (ESP32) or firmware.uf2 (RP2040), from make firmware")
    p.add_argument("--target", choices=["esp32", "rp2"], help="board kind (default: from the file name)")
    p.add_argument(
        "--device",
        help="ESP32: serial port (default: esptool searches); RP2040: the RPI-RP2 drive's "
        "folder, or the serial port of a board running MicroPython (default: a mounted "
        "RPI-RP2 drive, else picotool)",
    )
    p.add_argument("--baud", type=baud_rate, default=460800, help="ESP32 upload baud rate")
    p.add_argument("--offset", type=_int, default=0x1000, help="ESP32 flash address of the image")
    p.add_argument("--erase", action="store_true", help="ESP32: erase all flash first (file system too)")
    p.add_argument("--wait", type=non_negative_float, default=10.0, help="RP2040: seconds to wait for the drive")
    p.add_argument("--dry-run", action="store_true", help="check the image and print the steps only")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from pathlib import Path

    from ..device.flash import flash, guess_target

    target = args.target or guess_target(Path(args.image))
    if target == "esp32":
        kw = {"baud": args.baud, "offset": args.offset, "erase": args.erase}
    else:
        kw = {"wait": args.wait}
    plan = flash(args.image, target, args.device, dry_run=args.dry_run, **kw)
    for step in plan.steps:
        print(("would run: " if args.dry_run else "done: ") + step)
    if not args.dry_run:
        print(f"flashed {plan.image} ({plan.target})")
    return 0
