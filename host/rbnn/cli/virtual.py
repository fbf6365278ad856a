"""`rbnn virtual [--fs DIR]`: run a virtual device until Ctrl-C and print its port."""

from __future__ import annotations

import argparse


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("virtual", help="run a virtual device (MicroPython unix port on a pseudo-terminal)")
    p.add_argument("--fs", metavar="DIR",
                   help="its filesystem folder, kept between runs "
                        "(default $XDG_DATA_HOME/rbnn/virtual-fs or ~/.local/share/rbnn/virtual-fs)")  # fmt: skip
    p.add_argument("--heap", default="1M", help="MicroPython GC heap, e.g. 256K (default 1M, at least 96K: the console and the server live in it)")
    p.add_argument("--bytewise", action="store_true",
                   help="read the console byte by byte from a blocking stdin, as a real board does")  # fmt: skip
    p.set_defaults(func=run)


def _interrupt(signum: int, frame: object) -> None:
    raise KeyboardInterrupt  # SIGTERM, SIGHUP: stop the board as Ctrl-C does


def run(args: argparse.Namespace) -> int:
    import signal
    import time

    from ..device.virtual import VirtualDevice, VirtualDeviceError

    dev = VirtualDevice(args.fs, heap=args.heap, bytewise=args.bytewise)
    for sig in (signal.SIGTERM, signal.SIGHUP):
        signal.signal(sig, _interrupt)
    port = dev.start()
    try:
        print(f"port: {port}")
        print(f"fs: {dev.fs}")
        print(f"micropython: {dev.micropython}")
        print(f"try: rbnn deploy MODEL --port {port}; rbnn device info --port {port}; Ctrl-C stops", flush=True)
        seen = dev.starts
        while True:
            time.sleep(0.5)
            if dev.failed:
                raise VirtualDeviceError(dev.failed)
            if dev.starts != seen:
                print(f"virtual device rebooted ({dev.starts - 1} reboots)", flush=True)
                seen = dev.starts
    except KeyboardInterrupt:
        print("stopped")
    finally:
        dev.stop()
    return 0
