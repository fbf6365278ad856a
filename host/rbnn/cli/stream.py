"""`rbnn stream --port P --data D`: the growth run of `rbnn grow` on a board, its samples
streamed over the serial link (docs/PROTOCOL.md, The training stream). The same options,
defaults and preparation as `rbnn grow`, and the same bytes at the end: the board's
model after the stream equals `rbnn grow`'s output from the same model and options.

The run is resumable: run the same command again after the board reset or the host
stopped, and it goes on from the sample the board stands at (its last checkpoint after
a reset). Every ``--checkpoint`` samples the board saves the model atomically. At the
end the last block is frozen (unless ``--keep-live``), the model saved, pulled and
checked; ``-o`` writes it on the host too.
"""

from __future__ import annotations

import argparse

from .argtypes import non_negative_int
from .device import add_port_args
from .grow import add_run_args


def register(sub: argparse._SubParsersAction) -> None:
    from ..device.stream import DEFAULT_CHECKPOINT

    p = sub.add_parser("stream", help="grow the board's model on samples streamed to it (as rbnn grow, on the board)")
    add_port_args(p)
    add_run_args(p)
    p.add_argument("--checkpoint", type=non_negative_int, default=DEFAULT_CHECKPOINT, metavar="N",
                   help=f"save the model on the board every N samples (default {DEFAULT_CHECKPOINT:,}; "
                        "0: only at the end)")  # fmt: skip
    p.add_argument("--model", help="model file on the board (default: the loaded one, else the board's default)")
    p.add_argument("-o", "--output", metavar="OUT.rbnn", help="also write the final model here")
    p.add_argument("-q", "--quiet", action="store_true", help="no progress bar")
    p.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    import time

    from ..device.link import Link, check_model_name
    from ..device.stream import run_stream
    from ..device.virtual import port_session
    from ..files import check_output, write_atomic
    from ..progress import bar, write
    from .grow import check_bits
    from .train import training_sets

    check_bits(args)
    if args.model is not None:
        check_model_name(args.model)
    ds, _ = training_sets(args.data, None)
    if args.output:
        check_output(args.output, "-o", inputs=[*ds.files])
    with port_session(args.port, args.fs) as port:
        link = Link.open(port, args.baud, name=args.port)
        try:
            state = {"t": time.perf_counter(), "a0": None, "h0": None}
            with bar(not args.quiet, total=1, desc="stream", unit="sample", leave=False) as b:

                def progress(applied: int, total: int, reply) -> None:
                    if b.total != total:
                        b.reset(total=total)
                    b.update(applied - b.n)
                    if reply is None:
                        state.update(t=time.perf_counter(), a0=None)
                        return
                    if state["a0"] is None:  # the first reply of a session: the base
                        state.update(t=time.perf_counter(), a0=applied, h0=reply.hits, s0=reply.steps)
                        return
                    dt = time.perf_counter() - state["t"]
                    done = reply.steps - state["s0"]
                    if done > 0 and dt > 0:
                        b.set_postfix_str(f"{done / dt:,.0f} samples/s, running {100 * (reply.hits - state['h0']) / done:.1f} %")

                res = run_stream(link, ds, args, args.model, args.checkpoint, progress, write)
            link.leave()
        finally:
            link.close()
    rate = res.streamed / res.seconds if res.seconds > 0 else 0.0
    acc = f", running accuracy {100 * res.hits / res.streamed:.2f} %" if res.streamed else ""
    print(f"stream: {res.samples:,} samples on {args.port} ({res.streamed:,} streamed now, from {res.resumed_from:,}), "
          f"{rate:,.0f} samples/s{acc}; {res.checkpoints} checkpoint(s), {res.reconnects} reconnect(s); "
          f"link: {link.stats.retries} resends, {link.stats.naks} NAKs, {link.stats.timeouts} timeouts")  # fmt: skip
    print(f"model: {res.name} on the board ({len(res.data):,} bytes, crc 0x{int.from_bytes(res.data[-4:], 'little'):08x})")
    if args.output:
        write_atomic(args.output, lambda f: f.write(res.data))
        print(f"model: {args.output}")
    return 0
