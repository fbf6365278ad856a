"""`rbnn train --data mnist --hidden 256,256 --planes K --epochs E --seed S -o m.rbnn`.

Trains a binary MLP (or, with ``--conv 32p,64p``, a binary CNN: rbnn.train.conv), folds it to integers, writes the model file, the training curves
(``<stem>.curves.png``, with matplotlib: ``pip install 'rbnn[plots]'``) and the history
(``<stem>.history.json``) beside it, and prints the validation and test accuracy of the
folded integer model through the numpy twin. Every output is checked before training;
``-o`` naming a pipe or device (``/dev/null``) writes the model there and no files
beside it.
"""

from __future__ import annotations

import argparse

from .argtypes import non_negative_int
from .sidefiles import check_outputs

# Defaults of the recipe (see TrainConfig for what each does; a test checks they agree).
DEFAULTS = {"epochs": 20, "batch": 100, "lr": 0.01, "lr_final": 1e-4, "val": 5000,
            "shift": 1.5, "rotate": 10.0, "zoom": 0.1, "augment": "auto"}
AUGMENTS = ("auto", "on", "off")  # rbnn.train.fit.AUGMENTS


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("train", help="train a binary MLP or CNN (--conv) and write a .rbnn file")
    p.add_argument("--data", default="mnist",
                   help="'mnist', a folder of IDX files, or a plain .npz file of samples x and labels y "
                        "(README, Data) (default mnist)")  # fmt: skip
    p.add_argument("--test", metavar="DATA",
                   help="test set to report (default: an IDX set's own test images; a .npz --data has none)")
    p.add_argument("--hidden", default="256,256", help="hidden layer widths, comma separated (default 256,256)")
    p.add_argument("--conv", metavar="SPEC",
                   help="binary conv layers before the dense ones (a CNN, file version 3): comma-separated "
                        "CHANNELS[kKERNEL][p], e.g. 32p,64p = 32 then 64 channels, each followed by a 2x2 "
                        "max-pool (p); kK sets one layer's odd kernel (default --kernel)")  # fmt: skip
    p.add_argument("--kernel", type=int, default=3, help="conv kernel size, odd (default %(default)s)")
    p.add_argument("--pad", default="same",
                   help="conv padding on every side: same (kernel // 2, the map keeps its size), valid (0) "
                        "or a number (default %(default)s); padded positions are input bits 0")  # fmt: skip
    p.add_argument("--image", metavar="HxWxC",
                   help="the map shape of a sample for --conv (default: a square one-channel image)")
    p.add_argument("--arena", type=int, metavar="P",
                   help="pack the trained block into an arena of P bit-planes (block 1 frozen on plane 0, "
                        "the rest free), the recursive format a device keeps training in (rbnn grow, "
                        "rbnn stream); bits per weight when full = P / blocks")  # fmt: skip
    p.add_argument("--per-plane", action="store_true",
                   help="input mode 1: each kept bit-plane has its own first-layer weights (CBNN's bit-sliced "
                        "input; default planes: all 8), so that rbnn sensitivity / rbnn prune can drop planes; "
                        "writes the float state (<stem>.float.npz) beside the model for rbnn prune")  # fmt: skip
    planes = p.add_mutually_exclusive_group()
    planes.add_argument("--planes", metavar="K",
                        help="keep the K most significant input bit-planes, 1..8 (default 1: pixel >= 128; "
                             "with --per-plane 8)")  # fmt: skip
    planes.add_argument("--plane-mask", metavar="MASK", help="keep the bit-planes of this mask, e.g. 0xC0")
    p.add_argument("--epochs", type=int, default=DEFAULTS["epochs"], help="epochs (default %(default)s)")
    p.add_argument("--seed", type=non_negative_int, default=0, help="seed of everything random (default %(default)s)")
    p.add_argument("-o", "--output", required=True, metavar="M.rbnn", help="model file to write")
    p.add_argument("--batch", type=int, default=DEFAULTS["batch"], help="batch size (default %(default)s)")
    p.add_argument("--lr", type=float, default=DEFAULTS["lr"], help="initial Adam learning rate (default %(default)s)")
    p.add_argument("--lr-final", type=float, default=DEFAULTS["lr_final"], help="learning rate at the end (default %(default)s)")
    p.add_argument("--schedule", choices=["exp", "cos"], default="exp", help="learning-rate decay (default %(default)s)")
    p.add_argument("--lr-scale", choices=["glorot", "none"], default="none",
                   help="per-layer learning-rate scale (BNN paper: glorot; default %(default)s)")  # fmt: skip
    p.add_argument("--loss", choices=["hinge", "ce"], default="ce", help="cross-entropy or squared hinge (default %(default)s)")
    p.add_argument("--val", type=int, default=DEFAULTS["val"], help="training images held out for validation (default %(default)s)")
    p.add_argument("--augment", choices=AUGMENTS, default=DEFAULTS["augment"],
                   help="random shift, rotation and zoom of the training images: 'auto' (default) "
                        "keeps them only where they help: before training, the run is tried on up to "
                        "3,000 of its images with and without them and scored on the validation split "
                        "(about 10 s more on MNIST, where they help; they cost on e.g. clothing "
                        "photos); 'on' or 'off' decide without trying")  # fmt: skip
    p.add_argument("--shift", type=float, default=DEFAULTS["shift"], help="augmentation: max shift in pixels (default %(default)s)")
    p.add_argument("--rotate", type=float, default=DEFAULTS["rotate"],
                   help="augmentation: max rotation in degrees (default %(default)s)")  # fmt: skip
    p.add_argument("--zoom", type=float, default=DEFAULTS["zoom"],
                   help="augmentation: max relative scale change (default %(default)s)")  # fmt: skip
    p.add_argument("--no-augment", action="store_true", help="no augmentation: the same as --augment off")
    p.add_argument("--dropout", type=float, default=0.0, help="dropout on hidden activations")
    p.add_argument("--last-epoch", action="store_true",
                   help="keep the last epoch (default: the one with the best validation accuracy)")  # fmt: skip
    p.add_argument("--recalibrate", action="store_true",
                   help="replace the running BatchNorm averages by exact training-set statistics")  # fmt: skip
    p.add_argument("--limit", type=int, help="use only the first N training images")
    p.add_argument("--threads", type=int, default=1,
                   help="BLAS threads (default 1: a second thread measured no faster on an idle "
                        "2-core machine and several times slower on a busy one); results depend "
                        "on it, so it is pinned")  # fmt: skip
    p.add_argument("--quiet", action="store_true", help="no progress bar or per-epoch lines")
    p.set_defaults(func=run)  # argument errors: one line (rbnn.cli.Parser)


def parse_hidden(text: str) -> list[int]:
    """``"256,256"`` -> [256, 256]; TrainError naming the bad item."""
    from ..train import TrainError

    out = []
    for item in str(text).split(","):
        item = item.strip()
        if not item.isdigit() or not 1 <= int(item) <= 65535:
            raise TrainError(f"--hidden: expected comma-separated widths 1..65535 such as 256,256, found {text!r}")
        out.append(int(item))
    return out


def parse_image(text: str | None) -> tuple[int, int, int] | None:
    """``"28x28x1"`` -> (28, 28, 1); TrainError naming the bad text."""
    from ..train import TrainError

    if text is None:
        return None
    parts = str(text).lower().split("x")
    if len(parts) != 3 or not all(p.isdigit() and 1 <= int(p) <= 65535 for p in parts):
        raise TrainError(f"--image: expected HxWxC such as 28x28x1, found {text!r}")
    return (int(parts[0]), int(parts[1]), int(parts[2]))


def parse_conv(text: str | None, kernel: int, pad: str) -> list:
    """``--conv`` with ``--kernel`` and ``--pad`` -> conv layers; TrainError naming the bad item."""
    from ..train import TrainError
    from ..train.conv import ArchError, parse_convs

    if text is None:
        return []
    try:
        return parse_convs(text, kernel, pad)
    except ArchError as e:
        raise TrainError(str(e)) from None


def parse_planes(planes: str | None, mask: str | None, default: str = "1") -> int:
    """The plane mask from ``--planes K`` (K most significant) or ``--plane-mask``
    (neither: the ``default`` K)."""
    from ..train import TrainError

    if mask is not None:
        try:
            value = int(mask, 0)
        except ValueError:
            value = -1
        if not 1 <= value <= 0xFF:
            raise TrainError(f"--plane-mask: expected a mask 0x01..0xFF such as 0xC0, found {mask!r}")
        return value
    k = default if planes is None else planes
    if not k.isdigit() or not 1 <= int(k) <= 8:
        raise TrainError(f"--planes: expected 1..8 (most significant input bit-planes), found {planes!r}")
    return (0xFF00 >> int(k)) & 0xFF


def epoch_line(row: dict) -> str:
    """One line per epoch: loss and accuracy, on the validation split when there is one."""
    val = "" if row["val_acc"] is None else f"val_loss {row['val_loss']:.4f} val_acc {row['val_acc']:.4f}  "
    return (f"epoch {row['epoch']:3d}: loss {row['loss']:.4f} acc {row['acc']:.4f}  {val}"
            f"lr {row['lr']:.2e}  {row['seconds']:.1f} s")  # fmt: skip


def augmentation_line(chosen: dict) -> str:
    """``augmentation: on (shift 1.5, rotate 10, zoom 0.1; auto: a 3-epoch probe ...)``."""
    kinds = f"{chosen['kinds']}; " if chosen.get("kinds") else ""
    return f"augmentation: {chosen['augment']} ({kinds}{chosen['why']})"


def training_sets(spec: str, test_spec: str | None) -> tuple:
    """(training set, test set) of ``--data`` and ``--test``: an IDX set's own test
    images unless ``--test`` names another set; a plain ``.npz`` file has no test part
    (its samples are all training samples) and gets one only from ``--test``."""
    from .. import data
    from .testset import load_test_set

    plain = data.is_plain(spec)
    ds = data.load(spec, parts=("train",) if plain else data.PARTS)
    if test_spec is not None:
        test = load_test_set(test_spec)
    elif plain:
        test = data.Dataset(spec, ds.x_train[:0], ds.y_train[:0], ds.x_train[:0], ds.y_train[:0],
                            files=(), n_classes=ds.n_classes)  # fmt: skip
    else:
        test = ds
    if len(test.y_test) and test.x_test.shape[1] != ds.x_train.shape[1]:
        raise data.DataError(f"--test {test.name}: {test.x_test.shape[1]} features, --data has {ds.x_train.shape[1]}")
    if len(test.y_test) and int(test.y_test.max()) >= ds.n_classes:
        raise data.DataError(f"--test {test.name}: labels up to {int(test.y_test.max())}, --data has "
                             f"{ds.n_classes} classes")  # fmt: skip
    return ds, test


def _layer_text(ly) -> str:
    """``c32k3p`` for a conv layer with a pool, the width for a dense one."""
    from ..format.model import CONV, POOL_2X2

    if ly.kind != CONV:
        return str(ly.size)
    return f"c{ly.size}k{ly.kernel}" + (f"pad{ly.pad}" if ly.pad != ly.kernel // 2 else "") + (
        "p" if ly.pool == POOL_2X2 else "")  # fmt: skip


def run(args: argparse.Namespace) -> int:
    import json
    import time

    import numpy as np

    from ..engines import twin
    from ..files import check_output, write_atomic
    from ..format import pack
    from ..format.model import pack_input
    from ..progress import write
    from ..train import TrainError, config_dict, train

    hidden = parse_hidden(args.hidden)
    mask = parse_planes(args.planes, args.plane_mask, "8" if args.per_plane else "1")
    if args.per_plane and args.arena is not None:  # docs/FORMAT.md: a version 3 model has no live block
        raise TrainError("--arena: an input mode 1 (--per-plane) model cannot grow blocks (a version 3 "
                         "model is not trainable on the device); drop --arena or --per-plane")  # fmt: skip
    convs = parse_conv(args.conv, args.kernel, args.pad)
    image = parse_image(args.image)
    if image is not None and not convs:
        raise TrainError("--image: only with --conv (a dense network reads a vector)")
    if convs and args.arena is not None:
        raise TrainError("--arena: not for conv models (docs/FORMAT.md, Version 3: no live block)")
    if convs and args.per_plane:
        raise TrainError("--per-plane: not with --conv (per-plane weights are for a dense first layer here)")
    check_output(args.output, "-o")  # refused now, before the data is read
    ds, test = training_sets(args.data, args.test)
    # and all of them before the training
    kinds = {"curves": "curves.png", "history": "history.json"}
    if args.per_plane:  # the float network rbnn prune fine-tunes (rbnn.train.state)
        kinds["float state"] = "float.npz"
    out, sides, notes = check_outputs(args.output, ds.files + test.files, kinds)
    augment = "off" if args.no_augment else args.augment

    def line(row: dict) -> None:
        if not args.quiet:
            write(epoch_line(row))

    res = train(
        ds, hidden, mask, args.epochs, args.seed, progress=not args.quiet, on_epoch=line,
        batch=args.batch, lr=args.lr, lr_final=args.lr_final, schedule=args.schedule,
        lr_scale=args.lr_scale, loss=args.loss, val=args.val, shift=args.shift, rotate=args.rotate,
        zoom=args.zoom, augment=augment, dropout=args.dropout, keep_best=not args.last_epoch,
        recalibrate=args.recalibrate, limit=args.limit, threads=args.threads, conv=convs, image=image,
        input_mode=1 if args.per_plane else 0,
    )  # fmt: skip
    m = res.model
    if args.arena is not None:
        from ..learn.arena import into_arena

        m = into_arena(res.net, args.arena, m.meta)
    nbytes = pack.save(m, out)
    t0 = time.perf_counter()
    x_all = ds.x_train if args.limit is None else ds.x_train[: args.limit]
    y_all = ds.y_train if args.limit is None else ds.y_train[: args.limit]
    vi = res.split["val"]

    def twin_acc(x: np.ndarray, y: np.ndarray) -> tuple[int, np.ndarray]:
        pred = np.concatenate([twin.predict(m, pack_input(x[lo : lo + 2000], m.plane_mask))
                               for lo in range(0, len(x), 2000)]) if len(x) else np.zeros(0, np.int64)  # fmt: skip
        return int(np.sum(pred == y)), pred

    val_ok, _ = twin_acc(x_all[vi], y_all[vi])
    test_ok, test_pred = twin_acc(test.x_test, test.y_test)
    float_pred = res.net.predict(test.x_test) if len(test.y_test) else np.zeros(0, np.int64)
    differ = int(np.sum(float_pred != test_pred))
    n_val, n_test = len(vi), len(test.y_test)
    shape = "-".join([str(m.n_inputs)] + [_layer_text(ly) for ly in m.layer_specs])
    weight_kb = m.arena.nbytes / 1024
    mode = ", per-plane weights (input mode 1)" if args.per_plane else ""
    print(f"model: {out} ({shape}, plane mask {mask:#04x}{mode}, {weight_kb:.2f} kB packed weights, {nbytes} bytes file)")
    if convs:
        ram = m.ram_bytes()
        print(f"input map {'x'.join(map(str, m.in_shape))}; inference RAM in eBNN order: "
              f"{sum(ram.values())} bytes ({', '.join(f'{k} {v}' for k, v in ram.items())})")  # fmt: skip
    if args.arena is not None:
        print(f"arena: {m.n_planes} planes, {m.capacity} block slots, block 1 frozen on plane 0, "
              f"{len(m.free_planes())} free; score_q {m.score_q}")  # fmt: skip
    print(f"training time: {res.seconds:.1f} s ({args.epochs} epochs, kept epoch {res.best_epoch})")
    print(augmentation_line(res.augmentation))
    if n_val:
        print(f"validation accuracy (folded integer model, twin): {val_ok / n_val:.4f} ({val_ok}/{n_val})")
    if n_test:
        print(f"test accuracy (folded integer model, twin): {test_ok / n_test:.4f} ({test_ok}/{n_test}, {test.name})")
        print(f"float64 network vs twin on the test set: {n_test - differ}/{n_test} predictions agree")
    else:
        print("test accuracy: no test set (a .npz --data has none: give one with --test)")
    summary = {
        "model": str(out), "shape": shape, "plane_mask": f"{mask:#04x}", "file_bytes": nbytes,
        "weight_kb": weight_kb, "train_seconds": res.seconds, "best_epoch": res.best_epoch,
        "val_acc": val_ok / n_val if n_val else None, "test_acc": test_ok / n_test if n_test else None,
        "float_test_acc": float(np.mean(float_pred == test.y_test)) if n_test else None,
        "float_twin_differ": differ,
        "output_q": m.meta.get("output_q"), "eval_seconds": time.perf_counter() - t0,
        "config": config_dict(res.config), "augmentation": res.augmentation, "history": res.history,
    }  # fmt: skip
    if "history" in sides:  # strict JSON: no NaN or Infinity (a missing value is null)
        text = json.dumps(summary, indent=1, allow_nan=False) + "\n"
        write_atomic(sides["history"], lambda f: f.write(text.encode()))
    if "float state" in sides:
        from ..train.state import FloatState, save_state

        cfg_rec = {**config_dict(res.config), "augmented": res.augmentation["augment"] == "on"}  # for rbnn prune
        st = FloatState(res.net, cfg_rec, res.split["val"], len(x_all))
        write_atomic(sides["float state"], lambda f: save_state(f, st))
    if "curves" in sides:
        from ..train.plots import plot_history

        title = f"{shape}, mask {mask:#04x}" + (f": test {100 * test_ok / n_test:.2f} %" if n_test else "")
        write_atomic(sides["curves"], lambda f: plot_history(res.history, f, title, kept_epoch=res.best_epoch))
    for what, path in sides.items():
        print(f"{what}: {path}")
    for note in notes:
        print(note)
    return 0
