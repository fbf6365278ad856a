"""bench/peer_lce.py without its peer: the networks it times through rbnn are the ones its
numpy reference (the function the larq models are built to compute) describes, rbnn's C
core and the numpy twin agree on them, and without the peer venv the bench stops with a
message saying how to install it. TensorFlow is never installed or imported here."""

from __future__ import annotations

import importlib.util
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from rbnn.engines import twin
from rbnn.format.model import pack_input

BENCH = Path(__file__).resolve().parents[1] / "bench"


def _module(name: str):
    spec = importlib.util.spec_from_file_location(name, BENCH / f"{name}.py")
    mod = importlib.util.module_from_spec(spec)
    sys.modules[name] = mod  # peer_lce imports peer_nets by name
    spec.loader.exec_module(mod)
    return mod


pn = _module("peer_nets")
pl = _module("peer_lce")

SMALL_CNN = [(pn.CONV, 5, 3, 1, True), (pn.CONV, 7, 3, 1, True), (pn.DENSE, 9), (pn.DENSE, 4)]


def _net(rng, arch, shape, n=40):
    x = rng.integers(0, 256, (n, int(np.prod(shape))), dtype=np.uint8)
    net = pn.random_net(rng, "t", shape, arch, pl.plus_minus(x, pn.Net("t", shape, [])))
    return net, x


@pytest.mark.parametrize(
    "arch, shape",
    [
        (pn.MLP_ARCH, (784,)),
        (SMALL_CNN, (12, 12, 1)),
        ([(pn.CONV, 6, 3, 0, False), (pn.CONV, 3, 5, 2, True), (pn.DENSE, 3)], (10, 10, 2)),
    ],
    ids=["mlp", "cnn-same-pool", "cnn-valid-and-pad2"],
)
def test_rbnn_side_is_the_reference_network(rng, arch, shape):
    """C core == twin == the numpy reference of the larq model (BatchNorm, max-pool,
    sign), so LCE's agreement with rbnn proves the same network ran."""
    net, x = _net(rng, arch, shape)
    flips = np.concatenate([ly.flip for ly in net.layers[:-1]])
    assert flips.any() and not flips.all()  # both kinds of threshold exercised
    want = pn.forward(net, pl.plus_minus(x, net))
    assert len(np.unique(want.argmax(1))) > 1  # outputs depend on the input
    got_twin = twin.scores(pl.to_rbnn(net), pack_input(x, pl.PLANE_MASK))
    run, why = pl.rbnn_engine(net, x)
    assert run is not None, why
    np.testing.assert_array_equal(got_twin, want)
    np.testing.assert_array_equal(run(), want)


def test_reference_border_value_matters(rng):
    """The +1 border of LCE's fast variants is another function: the check that tells
    exact variants from fast ones can fail."""
    net, x = _net(rng, SMALL_CNN, (12, 12, 1))
    xf = pl.plus_minus(x, net)
    assert not np.array_equal(pn.forward(net, xf), pn.forward(net, xf, pl.fast_pads(net)))
    assert pl.fast_pads(net) == {1: 1.0}  # the input layer is made exact by negation instead


def test_save_load_round_trip(rng, tmp_path):
    net, x = _net(rng, SMALL_CNN, (12, 12, 1))
    pn.save(net, tmp_path / "n.npz")
    back = pn.load(tmp_path / "n.npz")
    xf = pl.plus_minus(x, net)
    np.testing.assert_array_equal(pn.forward(back, xf), pn.forward(net, xf))
    assert [(ly.kind, ly.pad, ly.pool) for ly in back.layers] == [(ly.kind, ly.pad, ly.pool) for ly in net.layers]


def _bench(env_venv: Path) -> subprocess.CompletedProcess:
    env = {**os.environ, "RBNN_PEER_VENV": str(env_venv)}
    return subprocess.run([sys.executable, str(BENCH / "peer_lce.py"), "--n", "10"], capture_output=True,
                          text=True, env=env, timeout=120)  # fmt: skip


def test_missing_peer_venv_is_a_message(tmp_path):
    r = _bench(tmp_path / "no-venv")
    assert r.returncode == 2, r.stderr
    assert "Traceback" not in r.stderr + r.stdout
    assert "no peer venv at" in r.stderr and "make bench-peer" in r.stderr and "larq-compute-engine==" in r.stderr


def test_peer_venv_without_lce_is_a_message(tmp_path):
    """A venv whose Python lacks larq compute engine (here: this test's own Python)."""
    (tmp_path / "bin").mkdir()
    py = tmp_path / "bin" / "python"
    py.write_text(f'#!/bin/sh\nexec "{sys.executable}" "$@"\n')
    py.chmod(0o755)
    r = _bench(tmp_path)
    assert r.returncode == 2, r.stderr
    assert "Traceback" not in r.stderr + r.stdout
    assert "lacks a module" in r.stderr and "make bench-peer" in r.stderr


def test_peer_installed_only_by_bench_peer(repo):
    """make test and make demo never install the peer; make bench-peer does."""
    def dry(*targets: str) -> str:
        return subprocess.run(["make", "-n", "-W", "bench/peer-requirements.txt", *targets], cwd=repo,
                              capture_output=True, text=True, timeout=60).stdout  # fmt: skip

    assert "peer-requirements.txt" in dry("bench-peer")
    for target in ("test", "demo", "setup", "bench"):
        assert "peer-requirements" not in dry(target), target


class FakePeer:
    """The worker's protocol without LCE: each variant answers the scores ``make(v, ref,
    fast_ref)`` gives, and a fixed time per pass: variant i takes 1 + i ms, 100 ms more
    for an exact-border one (so the fastest is a fast-border one)."""

    def __init__(self, net, x, make):
        xf = pl.plus_minus(x, net)
        self.ref, self.fast = pn.forward(net, xf), pn.forward(net, xf, pl.fast_pads(net))
        self.make = make

    def ask(self, cmd, **kw):
        if cmd == "load":
            self.vs = kw["variants"]
            return {"names": [str(v) for v in self.vs], "ops": {}, "convert_s": {}}
        if cmd == "run":
            np.save(kw["out"], self.make(self.vs[kw["variant"]], self.ref, self.fast).astype(np.float64))
            return {}
        if cmd == "time":
            i = kw["variant"]
            return {"cpu": 1e-3 * (1 + i + 100 * (self.vs[i]["border"] == "exact")), "wall": 1e-3}
        raise AssertionError(cmd)


def _args(**kw):
    import argparse

    return argparse.Namespace(**{"batches": [1, 100], "passes": 1, "rounds": 3, **kw})


def test_bench_net_picks_the_fastest_correct_variants(rng, tmp_path, capsys):
    net, x = _net(rng, SMALL_CNN, (12, 12, 1))
    ok = FakePeer(net, x, lambda v, ref, fast: ref if v["border"] == "exact" else fast)
    got = pl.bench_net(ok, net, x, _args(), tmp_path)
    assert got["failed"] == 0 and got["rbnn"] is True
    first_fast = next(v for v in ok.vs if v["border"] == "fast")
    out = capsys.readouterr().out
    assert f"LCE best exact: {ok.vs[0]}" in out and f"LCE fastest: {first_fast}" in out
    assert got["LCE best exact"] > got["LCE fastest"]  # the median ratios: LCE's fast path is faster here


def test_bench_net_flags_a_variant_that_computes_something_else(rng, tmp_path, capsys):
    net, x = _net(rng, SMALL_CNN, (12, 12, 1))

    def off_by_one(v, ref, fast):  # the fast variants give the exact scores: not their larq model's
        return ref + (v["border"] == "fast")

    got = pl.bench_net(FakePeer(net, x, off_by_one), net, x, _args(), tmp_path)
    assert got["failed"] == len(pl.variants(net, [1, 100])) // 2
    assert "FAILED: not the function of its larq model" in capsys.readouterr().out
    with pytest.raises(SystemExit, match="no LCE variant computes rbnn's scores"):
        pl.bench_net(FakePeer(net, x, lambda v, ref, fast: ref + 1), net, x, _args(), tmp_path)


def test_bench_net_without_rbnn_runs_lce_only(rng, tmp_path, capsys, monkeypatch):
    net, x = _net(rng, pn.MLP_ARCH, (784,))
    monkeypatch.setattr(pl, "rbnn_engine", lambda net, x: (None, "ModelError: no conv here"))
    got = pl.bench_net(FakePeer(net, x, lambda v, ref, fast: ref), net, x, _args(), tmp_path)
    assert got["rbnn"] is None
    assert "rbnn: MISSING" in capsys.readouterr().out
