"""`rbnn device info|stats|reset --port P`: ask the rbnn server on a board."""

from __future__ import annotations

import argparse

from .argtypes import baud_rate


def add_port_args(p: argparse.ArgumentParser) -> None:
    """--port, --baud and --fs, shared by the commands that talk to a board."""
    p.add_argument("--port", required=True,
                   help="serial port of the board (e.g. /dev/ttyACM0), or 'virtual' for a virtual device")  # fmt: skip
    p.add_argument("--baud", type=baud_rate, default=115200, help="baud rate (UART boards; default 115200)")
    p.add_argument("--fs", metavar="DIR",
                   help="with --port virtual: the virtual device's filesystem folder "
                        "(default $XDG_DATA_HOME/rbnn/virtual-fs or ~/.local/share/rbnn/virtual-fs)")  # fmt: skip


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("device", help="versions, memory, models and counters of a board's rbnn server")
    p.add_argument("action", choices=["info", "stats", "reset"], nargs="?", default="info")
    add_port_args(p)
    p.add_argument("--reboot", action="store_true", help="with reset: reboot the board")
    p.add_argument("--json", action="store_true", help="print the device's JSON answer")
    p.set_defaults(func=run)


def _mpy(v: int | None) -> str:
    from ..device.deploy import board_mpy

    b = board_mpy(v)
    if b is None:
        return "mpy ?"
    return f"mpy v{b[0]}.{b[1]}" + (f" {b[2]}" if b[2] else "")


def format_info(port: str, d: dict) -> str:
    """The `rbnn device info` text of an INFO answer."""
    lines = [
        f"port: {port}",
        f"protocol {d['protocol']}, firmware {d['firmware']}, rbnn {d['rbnn'] or 'missing'} "
        f"(engine {d['engine'] or 'none'}), MicroPython {d['micropython']} ({d['platform']}, {_mpy(d.get('mpy'))})",
        f"memory: {d['mem_free']:,} bytes free, {d['mem_alloc']:,} in use; frames up to {d['max_payload']:,} bytes"
        + (f"; filesystem: {d['fs_free']:,} bytes free" if d.get("fs_free") is not None else ""),
    ]
    models = d.get("models") or []
    if not models:
        lines.append("models: none stored")
    for m in models:
        tags = [t for t, on in (("loaded", m["name"] == d.get("active")), ("default", m["name"] == d.get("default"))) if on]
        lines.append(f"model: {m['name']} ({m['bytes']:,} bytes)" + (f" [{', '.join(tags)}]" if tags else ""))
    if d.get("model"):
        mi = d["model"]
        lines.append(
            f"loaded: {'-'.join(str(x) for x in mi['layers'])}, plane_mask 0x{mi['plane_mask']:02x}, "
            f"{mi['weight_bits']:,} weight bits, {mi['ram']} bytes RAM per inference, engine {mi['engine']}"
        )
    up = d.get("upload")
    if up:
        lines.append(f"upload in progress: {up['have']:,} of {up['bytes']:,} bytes")
    return "\n".join(lines)


def run(args: argparse.Namespace) -> int:
    import json

    from ..device.link import Link
    from ..device.virtual import port_session

    with port_session(args.port, args.fs) as port:
        link = Link.open(port, args.baud, name=args.port)
        try:
            if args.action == "info":
                d = link.info()
                print(json.dumps(d, indent=1) if args.json else format_info(port, d))
            elif args.action == "stats":
                d = link.device_stats()
                if args.json:
                    print(json.dumps(d, indent=1))
                else:
                    for k, v in d.items():
                        print(f"{k}: {v:,}" if isinstance(v, int) else f"{k}: {v}")
            else:
                link.reset(reboot=args.reboot)
                print("rebooting" if args.reboot else "server reset: model unloaded, counters zeroed")
                if args.reboot:
                    return 0
            link.leave()
        finally:
            link.close()
    return 0
