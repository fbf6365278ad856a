"""`rbnn pull --port P -o M.rbnn`: the board's loaded model (or its default), its CRC
resealed by the board, checked on arrival (every check of docs/FORMAT.md) and written
atomically."""

from __future__ import annotations

import argparse

from .device import add_port_args


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("pull", help="copy the board's model (as it trained) to a file, checked")
    add_port_args(p)
    p.add_argument("-o", "--output", required=True, metavar="OUT.rbnn", help="where to write it")
    p.add_argument("--model", help="model file on the board (default: the loaded one, else the board's default)")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from ..device.link import Link, check_model_name
    from ..device.stream import pull_model
    from ..device.virtual import port_session
    from ..files import check_output, write_atomic
    from ..progress import bar

    if args.model is not None:
        check_model_name(args.model)
    check_output(args.output, "-o")
    with port_session(args.port, args.fs) as port:
        link = Link.open(port, args.baud, name=args.port)
        try:
            mi = link.ensure_model(args.model)
            with bar(total=mi["file_bytes"], desc="pull", unit="B", unit_scale=True, leave=False) as b:
                data, m = pull_model(link, lambda k: b.update(k - b.n))
            name = link.info().get("active")
            link.leave()
        finally:
            link.close()
    write_atomic(args.output, lambda f: f.write(data))
    st = m.state()
    print(f"pulled {name} from {args.port}: {len(data):,} bytes, {len(m.blocks)} blocks, {st.steps:,} steps, "
          f"{m.bits_per_weight:.2f} bits per weight -> {args.output}")  # fmt: skip
    return 0
