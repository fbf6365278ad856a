"""`rbnn deploy m.rbnn --port P`: firmware to the board (raw REPL), then the model
(protocol: resumable upload, atomic save, load)."""

from __future__ import annotations

import argparse

from .device import add_port_args


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("deploy", help="put the firmware and a model on a board")
    p.add_argument("model", help=".rbnn file")
    add_port_args(p)
    p.add_argument("--name", default="model.rbnn", help="file name on the board (default model.rbnn)")
    p.add_argument("--mpy", choices=["auto", "yes", "no"], default="auto",
                   help="compile the firmware to .mpy with mpy-cross (auto: when the board's version matches)")  # fmt: skip
    p.add_argument("--no-firmware", action="store_true", help="only upload the model")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from ..device.deploy import deploy
    from ..device.link import check_model_name
    from ..device.virtual import port_session
    from ..files import read_model

    raw, _ = read_model(args.model)  # refuse a bad file or name here, before touching the board
    check_model_name(args.name)
    with port_session(args.port, args.fs) as port:
        r = deploy(port, raw, args.name, use_mpy=args.mpy, baudrate=args.baud, firmware=not args.no_firmware)
    if not args.no_firmware:
        names = ", ".join(n for n, _ in r.plan.files)
        unchanged = len(r.plan.files) - len(r.sent)
        print(f"firmware: {names} as .{r.plan.mode} ({r.plan.reason}); "
              f"{len(r.sent)} sent, {unchanged} unchanged")  # fmt: skip
    s = r.saved
    resumed = f", resumed at byte {s['resumed_from']:,}" if s.get("resumed_from") else ""
    rate = len(raw) / r.upload_s if r.upload_s > 0 else 0.0
    print(f"model: {args.model} -> {port}:{s['name']}, {s['bytes']:,} bytes in {r.upload_s:.2f} s "
          f"({rate / 1000:,.1f} kB/s{resumed}), saved and loaded")  # fmt: skip
    m = s.get("model") or {}
    if m:
        print(f"device: {'-'.join(str(x) for x in m['layers'])}, engine {m['engine']}, "
              f"{m['ram']} bytes RAM per inference, {r.stats.get('mem_free', 0):,} bytes heap free")  # fmt: skip
    return 0
