"""The larq compute engine (LCE) half of bench/peer_lce.py, run in the peer venv.

rbnn needs numpy 2 and larq/TensorFlow 2.16 need numpy 1, so the two halves live in two
processes: bench/peer_lce.py starts this worker with the peer venv's Python and sends it
one JSON request a line on stdin; the worker answers one JSON line each on the stdout it
was started with (TensorFlow's own chatter goes to stderr). Requests:

- ``{"cmd": "load", "net": NPZ, "x": NPY, "variants": [...]}``: build each variant's
  larq model from the network (bench/peer_nets.py), convert it with LCE (timed apart),
  and make its interpreter; answers the variants' names and LCE's op list per model.
- ``{"cmd": "run", "variant": i, "out": NPY}``: class scores of the whole batch.
- ``{"cmd": "time", "variant": i}``: one timed pass over the batch: CPU seconds of this
  thread (``time.thread_time``) and wall seconds.
- ``{"cmd": "versions"}``, ``{"cmd": "quit"}``.

A variant is ``form`` (``"conv"``: every dense layer as a binary convolution, which LCE
runs as its binary bgemm; ``"dense"``: QuantDense, which LCE converts to a float fully
connected layer), ``border`` (``"exact"``: padded positions -1 as in rbnn;
``"fast"``: +1, LCE's native binary padding, a different function at the borders),
``batch`` (samples per interpreter call) and ``indirect`` (``use_indirect_bgemm``).
"""

from __future__ import annotations

import os
import sys

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
os.environ.setdefault("TF_USE_LEGACY_KERAS", "1")  # larq needs Keras 2 (tf_keras) under TF 2.16

import contextlib  # noqa: E402
import io  # noqa: E402
import json  # noqa: E402
import time  # noqa: E402
from pathlib import Path  # noqa: E402

import numpy as np  # noqa: E402
import peer_nets as pn  # noqa: E402 (bench/, the script's folder, is on sys.path)

EPS = 2.0**-10  # BatchNorm epsilon; moving variance 1 - EPS: the divisor is exactly 1


def peer_imports() -> dict:
    """The heavy modules, or an error naming what is missing."""
    import larq
    import larq_compute_engine as lce
    import tensorflow as tf
    import tf_keras
    from larq_compute_engine.tflite.python.interpreter import Interpreter

    return {"lq": larq, "lce": lce, "tf": tf, "keras": tf_keras, "Interpreter": Interpreter}


def negate_input(net: pn.Net) -> bool:
    """Whether LCE gets the input negated: rbnn pads the input map with -1, LCE's binary
    convolution pads with +1 only (-1 falls back to a float convolution). Negating a
    layer's input and its weights keeps every sum and turns -1 padding into +1; that is
    free for the input (an encoding both engines get ready-made), not between pooled
    layers (max-pool does not commute with negation)."""
    first = net.layers[0]
    return first.kind == pn.CONV and first.pad > 0


def build(m: dict, net: pn.Net, form: str, border: str, batch: int):
    """The larq model of one variant, its weights set from ``net``."""
    lq, keras = m["lq"], m["keras"]
    neg = negate_input(net)
    shape = net.input_shape if len(net.input_shape) == 3 or form == "dense" else (1, 1, net.input_shape[0])
    inp = keras.Input(shape, batch_size=batch)
    h, sets = inp, []
    binary = {"input_quantizer": "ste_sign", "kernel_quantizer": "ste_sign", "use_bias": False}
    for i, ly in enumerate(net.layers):
        w = ly.weights.astype(np.float32)
        if ly.kind == pn.CONV:
            if ly.pad not in (0, ly.kernel // 2):
                raise ValueError(f"layer {i}: pad {ly.pad} is neither 0 nor kernel // 2 (larq has 'valid' and 'same')")
            pv = 1.0 if (i == 0 and neg) or border == "fast" else -1.0
            w = -w if i == 0 and neg else w
            lay = lq.layers.QuantConv2D(ly.size, ly.kernel, padding="same" if ly.pad else "valid",
                                        pad_values=pv, **binary)  # fmt: skip
        elif form == "conv":  # dense as a binary conv over the whole map (1x1 for a vector)
            hh, ww = (int(d) for d in h.shape[1:3])
            w = w.reshape(hh, ww, -1, ly.size)
            lay = lq.layers.QuantConv2D(ly.size, (hh, ww), padding="valid", **binary)
        else:
            if len(h.shape) > 2:
                h = keras.layers.Flatten()(h)
            lay = lq.layers.QuantDense(ly.size, **binary)
        h = lay(h)
        bn = keras.layers.BatchNormalization(epsilon=EPS)
        h = bn(h)
        gamma, beta = ly.bn()
        sets.append((lay, [w]))
        sets.append((bn, [gamma, beta, np.zeros_like(gamma), np.full_like(gamma, 1.0 - EPS)]))
        if ly.pool:
            h = keras.layers.MaxPool2D(2)(h)
    model = keras.Model(inp, h)
    for lay, ws in sets:
        lay.set_weights(ws)
    return model


def op_names(m: dict, flatbuffer: bytes) -> list[str]:
    """The ops of a converted model, in order (TensorFlow Lite's analyzer)."""
    buf = io.StringIO()
    with contextlib.redirect_stdout(buf):
        m["tf"].lite.experimental.Analyzer.analyze(model_content=flatbuffer)
    return [ln.split("Op#", 1)[1].split()[1].split("(")[0] for ln in buf.getvalue().splitlines()
            if ln.strip().startswith("Op#")]  # fmt: skip


class Worker:
    def __init__(self) -> None:
        self.m = peer_imports()
        self.runs: list[tuple] = []  # (low-level interpreter, input chunks, n)
        self.names: list[str] = []

    def versions(self) -> dict:
        m = self.m
        return {"larq-compute-engine": m["lce"].__version__, "larq": _dist_version("larq"),
                "tensorflow": m["tf"].__version__, "tf-keras": _dist_version("tf-keras"),
                "numpy (peer)": np.__version__, "python (peer)": sys.version.split()[0]}  # fmt: skip

    def load(self, net_path: str, x_path: str, variants: list[dict]) -> dict:
        net = pn.load(Path(net_path))
        x = np.load(x_path).astype(np.float32)
        if negate_input(net):
            x = -x
        n = len(x)
        models, ops, convert_s = {}, {}, {}
        self.runs, self.names = [], []
        for v in variants:
            key = (v["form"], v["border"], int(v["batch"]))
            if key not in models:
                t0 = time.perf_counter()
                fb = self.m["lce"].convert_keras_model(build(self.m, net, *key))
                convert_s["/".join(map(str, key))] = time.perf_counter() - t0
                models[key] = fb
                ops["/".join(map(str, key))] = op_names(self.m, fb)
            b = int(v["batch"])
            shape = tuple(int(d) for d in self.m["Interpreter"](models[key]).input_shapes[0][1:])
            xs = x.reshape(n, *shape)
            pad = (-n) % b  # the last call is filled up to a whole batch
            if pad:
                xs = np.concatenate([xs, np.repeat(xs[-1:], pad, axis=0)])
            chunks = [np.ascontiguousarray(c) for c in xs.reshape(-1, b, *shape)]
            interp = self.m["Interpreter"](models[key], num_threads=1, use_indirect_bgemm=bool(v["indirect"]))
            self.runs.append((interp.interpreter, chunks, n))
            self.names.append(f"{v['form']}, {v['border']} border, batch {b}, "
                              f"{'indirect' if v['indirect'] else 'default'} bgemm")  # fmt: skip
        return {"names": self.names, "ops": ops, "convert_s": convert_s}

    def run(self, i: int, out: str) -> dict:
        low, chunks, n = self.runs[i]
        classes = int(low.output_shapes[0][-1])
        scores = np.concatenate([low.predict([c])[0] for c in chunks]).reshape(-1, classes)
        np.save(out, scores[:n].astype(np.float64))
        return {}

    def time(self, i: int) -> dict:
        low, chunks, _ = self.runs[i]
        t0, w0 = time.thread_time(), time.perf_counter()
        for c in chunks:
            low.predict([c])
        return {"cpu": time.thread_time() - t0, "wall": time.perf_counter() - w0}


def _dist_version(name: str) -> str:
    from importlib.metadata import version

    return version(name)


def main() -> int:
    proto = os.fdopen(os.dup(1), "w")  # answers only; anything else printed goes to stderr
    os.dup2(2, 1)
    sys.stdout = sys.stderr

    def say(obj: dict) -> None:
        proto.write(json.dumps(obj) + "\n")
        proto.flush()

    try:
        w = Worker()
    except ImportError as e:
        say({"error": f"{sys.executable}: {e}", "missing": True})
        return 2
    say({"ready": True})
    handlers = {
        "load": lambda r: w.load(r["net"], r["x"], r["variants"]),
        "run": lambda r: w.run(int(r["variant"]), r["out"]),
        "time": lambda r: w.time(int(r["variant"])),
        "versions": lambda r: w.versions(),
    }
    for line in sys.stdin:
        req = json.loads(line)
        if req.get("cmd") == "quit":
            break
        try:
            say(handlers[req["cmd"]](req))
        except Exception as e:  # reported to the bench, which prints it and stops
            say({"error": f"{type(e).__name__}: {e}"})
    return 0


if __name__ == "__main__":
    sys.exit(main())
