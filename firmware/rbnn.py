# rbnn on the device (docs/DEVICE_API.md):
#
#     import rbnn
#     m = rbnn.load("model.rbnn")     # a path, or bytes / bytearray / memoryview
#     m.predict(x)                     # -> class
#     m.scores(x, out)                 # fills array('i') out, returns the class
#     m.info()                         # -> dict
#     rbnn.engine                      # "c", "viper" or "python"
#
# This wrapper picks the engine once at import: the C module `_rbnn` when the firmware
# has it, else the pure-MicroPython fallback `rbnn_py` (viper hot loops where the port
# has viper, plain code where it does not). On ports with os.getenv (unix), the
# environment variable RBNN_ENGINE=c|viper|python forces a choice.
#
# Engine interface: what `_rbnn` and `rbnn_py` both provide
# ---------------------------------------------------------
#   Model(buf)          buf: bytes, bytearray or memoryview holding the whole file, used
#                       in place. Validates per docs/FORMAT.md; on a bad file raises
#                       ValueError("rbnn: E_<CODE> at offset <N>: <field>: expected ...,
#                       found ...") in the words of rbnn.format.pack (versions 1, 2, 3).
#   Model.n_inputs      int, features per sample
#   Model.n_classes     int, length of the scores
#   Model.predict(x)    -> int class, ties to the lowest index. x: a buffer of bytes,
#                       len n_inputs (raw 8-bit features, bit-sliced by the model's
#                       plane_mask) or info()["input_bytes"] (packed bits, FORMAT.md
#                       Inputs; raw wins when both are equal). Other lengths, or packed
#                       padding bits set: ValueError naming the problem.
#   Model.scores(x, out) fills out[0:n_classes] (an array('i') with at least n_classes
#                       items, else ValueError) with the i32 scores; returns the class.
#   Model.info()        -> dict: engine, inputs, plane_mask, layers, blocks, max_blocks,
#                       live, planes, weight_bits, file_bytes, ram, input_bytes,
#                       train_ram
#                       (DEVICE_API.md).
# predict and scores allocate nothing per call; the model's scratch is allocated once.
#   Training (docs/DEVICE_API.md, Training; docs/TRAINING.md): the model's buffer must be
#   writable (bytearray); every method ends in the twin's bytes for the same calls.
#   Model.train(x, label)       one step -> the class predicted before the update
#   Model.train_batch(xs, labels, preds=None) -> right predictions (n = len(labels))
#   Model.grow(), Model.freeze()  open / freeze the live block (E_FULL when not possible)
#   Model.stats()               -> dict (DEVICE_API.md: steps, hits, active, block_steps,
#                               live, blocks, max_blocks, free_planes, bits, grow_left,
#                               grow_every, stream_id, stream_base)
#   Model.reseal()              -> int: writes the file CRC into the buffer, returns it
#   Model.save(path)            reseal, then rbnn_store.write_file(path, buffer) (atomic)
#   Errors as the twin words them: ValueError("rbnn: E_<CODE>: ..."); in a batch the
#   sample at fault follows the code ("rbnn: E_LABEL: sample 3: label 12: ...").
#   rbnn_py keeps its training step in rbnn_pytrain, imported at the first training call.

__version__ = "0.1.0"


def _getenv(name):
    try:
        import os

        return os.getenv(name)
    except (ImportError, AttributeError):
        return None


def _pick():
    want = _getenv("RBNN_ENGINE")
    if want not in (None, "", "c", "viper", "python"):
        raise ValueError("rbnn: RBNN_ENGINE=%s; expected c, viper or python" % want)
    if want in (None, "", "c"):
        try:
            import _rbnn

            return _rbnn, "c"
        except ImportError:
            if want == "c":
                raise
    import rbnn_py

    if want:
        rbnn_py.use(want)
    return rbnn_py, rbnn_py.engine


_impl, engine = _pick()


def read_file(path):
    """The whole file in one bytearray of its size, filled in place: the only copy of a
    model (load, and the server, which keeps the buffer to save and pull it)."""
    with open(path, "rb") as f:
        f.seek(0, 2)
        n = f.tell()
        f.seek(0)
        buf = bytearray(n)
        mv = memoryview(buf)
        got = 0
        while got < n:
            r = f.readinto(mv[got:])
            if not r:
                break
            got += r
    return buf if got == n else buf[:got]


def load(src):
    """A Model from a path (str) or from the file's bytes (bytes, bytearray, memoryview).

    A bad file raises ValueError naming the code, offset and field (and the path)."""
    if isinstance(src, str):
        buf = read_file(src)
        try:
            return _impl.Model(buf)
        except ValueError as e:
            msg = str(e)
            if msg.startswith("rbnn: "):
                msg = msg[6:]
            raise ValueError("rbnn: %s: %s" % (src, msg)) from None
    return _impl.Model(src)
