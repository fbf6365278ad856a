"""A growth run on a device over the serial link (`rbnn stream`; docs/PROTOCOL.md, The
training stream): the host prepares the run exactly as `rbnn grow` does, the device
trains, and the result is the same bytes.

    result = run_stream(link, ds, args)   # args: the options of rbnn.cli.grow.add_run_args

Every sample is applied exactly once, whatever the link or the device does: the device
counts what it applied (``applied = steps - stream_base``), checkpoints carry that count,
and after a reboot (or a new host process) the run goes on from the device's count.
"""

from __future__ import annotations

import argparse
import time
from collections.abc import Callable
from dataclasses import dataclass, field

import numpy as np

from ..errors import FormatError, RbnnError
from ..format import pack
from ..format.model import Model, pack_input
from .link import DeviceError, Link, LinkError, TrainReply

DEFAULT_NAME = "model.rbnn"
DEFAULT_CHECKPOINT = 10_000  # samples between checkpoints (flash wear against lost work)
RECONNECTS = 5  # reconnects in a row without progress before giving up


class StreamError(RbnnError):
    """The stream cannot go on (the device refused, or no progress after reconnects)."""


def pull_model(link: Link, progress: Callable[[int], None] | None = None, tries: int = 2) -> tuple[bytes, Model]:
    """The loaded model's file from the device, checked on arrival (every check of
    docs/FORMAT.md, the CRC included): a pull cut by a reboot or mixed with another
    model's bytes is pulled again, at most ``tries`` times in all."""
    last: Exception | None = None
    for _ in range(tries):
        data = link.pull(progress)
        try:
            return data, pack.from_bytes(data)
        except FormatError as e:
            last = e
    raise StreamError(f"the model pulled from {link.port_name} fails its check: {last}")


def sample_bytes(x: np.ndarray, m: Model) -> np.ndarray:
    """The rows the device trains on: packed input bits (docs/FORMAT.md, Inputs), or the
    raw features when those are no longer (a device takes a sample of n_inputs bytes as
    raw, so packed bits of that length would be misread)."""
    size = 4 * pack_input(np.zeros((1, m.n_inputs), np.uint8), m.plane_mask).size
    if size >= m.n_inputs:
        return np.ascontiguousarray(x, np.uint8)
    return np.ascontiguousarray(pack_input(x, m.plane_mask).astype("<u4")).view(np.uint8).reshape(len(x), size)


@dataclass
class StreamResult:
    """What a stream did."""

    data: bytes  # the model pulled at the end
    name: str  # where the device stores it
    samples: int  # the run's length
    resumed_from: int  # applied when this call began (0: a new run)
    stream_id: int
    seconds: float = 0.0  # streaming only
    streamed: int = 0  # samples applied during this call
    hits: int = 0  # right predictions among them (before each update)
    checkpoints: int = 0
    reconnects: int = 0
    kind: str = ""
    compute_us: int = 0  # device time in the training step
    history: list = field(default_factory=list)  # (seconds, applied) per reply


def _resume_point(link: Link, ds, args: argparse.Namespace, name: str | None, log) -> tuple:
    """(model name, pulled model, stream id, whether the device's model already runs this
    stream, the run's key)."""
    from ..cli.grow import check_fit, run_key
    from ..learn import run as R

    link.ensure_model(name)
    name = link.info().get("active") or name or DEFAULT_NAME
    _, m = pull_model(link)
    check_fit(m, ds, f"the board's model {name}")
    key = run_key(args, ds)
    st = m.state()
    resume = st.stream_id != 0 and st.stream_id == R.stream_id(m, key)
    return name, m, key, resume


def run_stream(
    link: Link,
    ds,
    args: argparse.Namespace,
    name: str | None = None,
    checkpoint: int = DEFAULT_CHECKPOINT,
    on_progress: Callable[[int, int, TrainReply | None], None] | None = None,
    log: Callable[[str], None] = print,
    samples_hook: Callable[[int, int, np.ndarray, np.ndarray], tuple[np.ndarray, np.ndarray]] | None = None,
) -> StreamResult:
    """Run (or resume) the growth run of ``args`` on the device's loaded model.

    Parameters
    ----------
    link : an open Link
    ds : the training set (rbnn.data.Dataset)
    args : the options of rbnn.cli.grow.add_run_args
    name : model name on the device (default: the loaded one, else its default)
    checkpoint : samples between checkpoints (0: only at the end)
    on_progress : ``(applied, total, reply)`` after each TRAIN reply and at the start
    samples_hook : tests only: ``(a, b, x, y) -> (x, y)`` changes the rows sent

    Returns
    -------
    StreamResult, ``data`` the final model (checked, equal to the device's stored file).
    """
    from ..cli.grow import prepare_run
    from ..learn import run as R

    for attempt in range(RECONNECTS + 1):
        try:
            name, m, key, resume = _resume_point(link, ds, args, name, log)
            break
        except LinkError as e:  # a reboot while pulling: enter the server again
            if attempt == RECONNECTS:
                raise StreamError(f"{e} (after {RECONNECTS} reconnects)") from None
            log(f"stream: {e}; reconnecting")
            _reconnect(link)
    p = R.plan(len(ds.y_train), args.offset, args.limit, args.epochs, args.shuffle, args.seed, 1)
    kind = ""
    if resume:
        sid = m.state().stream_id
    else:
        setup = prepare_run(args, m, ds, f"the board's model {name}", key)
        sid, kind = setup.stream_id, setup.kind
        log(f"stream: new run 0x{sid:08x} on {name}: {p.samples:,} samples, {setup.blocks} new block(s) of "
            f"{setup.bits} bits, {setup.plan.grow_every:,} samples each; hyper-parameters {kind}")  # fmt: skip
        link.deploy_model(pack.to_bytes(m), name)
    total = p.samples
    rows = sample_bytes(ds.x_train, m)
    labels = np.asarray(ds.y_train)

    def samples(a: int, b: int) -> tuple[np.ndarray, np.ndarray]:
        idx = p.order[a:b]
        x, y = rows[idx], labels[idx]
        return samples_hook(a, b, x, y) if samples_hook else (x, y)

    res = StreamResult(b"", name, total, 0, sid, kind=kind)
    first = True
    fails = 0
    best = -1  # the most the device had applied at a TRAIN_BEGIN: progress resets `fails`
    t0 = time.perf_counter()
    while True:
        try:
            st = link.train_begin(sid)
            applied = st["applied"]
            if first:
                res.resumed_from = applied
                if resume:
                    log(f"stream: resuming run 0x{sid:08x} on {name} at sample {applied:,} of {total:,}")
                first = False
            if applied > best:
                best, fails = applied, 0
            if applied > total:
                raise StreamError(f"the device has applied {applied:,} samples of a {total:,}-sample stream")
            if on_progress:
                on_progress(applied, total, None)
            while applied < total:
                stop = total if checkpoint <= 0 else min(total, (applied // checkpoint + 1) * checkpoint)
                before, hits0 = applied, st["hits"]

                def seen(r: TrainReply) -> None:
                    res.history.append((time.perf_counter() - t0, r.applied))
                    res.compute_us += r.compute_us
                    if on_progress:
                        on_progress(r.applied, total, r)

                last = link.train(samples, applied, stop, seen)
                applied = last.applied
                res.streamed += applied - before
                res.hits += last.hits - hits0
                st = {"hits": last.hits}
                if applied < total:
                    link.checkpoint(name)
                    res.checkpoints += 1
            if link.train_begin(sid).get("live") is not None and not args.keep_live:
                link.freeze()  # as `rbnn grow` ends (a reboot after it repeats it on the checkpoint)
            saved = link.checkpoint(name)
            res.checkpoints += 1
            data, _ = pull_model(link)
            if int.from_bytes(data[-4:], "little") != saved["crc"]:
                raise StreamError(f"the pulled model's CRC 0x{int.from_bytes(data[-4:], 'little'):08x} differs "
                                  f"from the checkpoint's 0x{saved['crc']:08x}")  # fmt: skip
            res.data = data
            res.seconds = time.perf_counter() - t0
            return res
        except DeviceError as e:
            if e.code == "E_STREAM":
                raise StreamError(f"{e}; the device's model is no longer this stream's: run `rbnn stream` again "
                                  "to start over from it") from None  # fmt: skip
            raise StreamError(f"{e}; the device stores the last checkpoint, `rbnn stream` again resumes "
                              "from the device's count") from None  # fmt: skip
        except LinkError as e:
            fails += 1
            if fails > RECONNECTS:
                raise StreamError(f"{e} (after {RECONNECTS} reconnects without progress)") from None
            res.reconnects += 1
            log(f"stream: {e}; reconnecting")
            _reconnect(link)


def _reconnect(link: Link, tries: int = 3) -> None:
    last: Exception | None = None
    for _ in range(tries):
        try:
            link.reconnect()
            return
        except LinkError as e:
            last = e
            time.sleep(0.2)
    raise StreamError(f"cannot reach the device again: {last}")
