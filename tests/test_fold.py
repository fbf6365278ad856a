"""BatchNorm folding (rbnn.train.fold): hidden thresholds/flips exact for every integer
pre-activation, output scale/offset within the E_RANGE bound and argmax-preserving, and a
folded float network equal to the numpy twin."""

from __future__ import annotations

import numpy as np
import pytest

from rbnn.engines import twin
from rbnn.format import pack
from rbnn.format.model import pack_input
from rbnn.train import fold, init_net


def _bn_params(rng, n, smax):
    """Random BatchNorm parameters with every awkward case mixed in."""
    mean = rng.uniform(-smax, smax, n)
    var = rng.uniform(0, smax, n) ** 2 / 4
    gamma = rng.normal(0, 1, n)
    beta = rng.normal(0, 1, n)
    gamma[0::7] = 0.0  # constant neurons
    gamma[1::7] *= -1e-30  # tiny negative: constant within the range
    gamma[2::7] = 1e30  # huge: a step exactly at the mean
    gamma[3::7] = -1e30
    beta[4::7] = 0.0  # bn(s) = 0 exactly at s = mean when mean is an integer
    mean[4::7] = np.round(mean[4::7])
    mean[5::7] = rng.choice([-1, 1], len(mean[5::7])) * 1e12  # far outside the range
    beta[6::7] = rng.choice([-1, 1], len(beta[6::7])) * 1e-300
    return mean, var, gamma, beta


@pytest.mark.parametrize("smax", [1, 37, 784, 784 * 255])
def test_hidden_fold_is_exact_for_every_integer(rng, smax):
    n = 140
    mean, var, gamma, beta = _bn_params(rng, n, smax)
    eps = 1e-4
    t, flip = fold.fold_hidden(mean, var, gamma, beta, eps, smax)
    assert t.dtype == np.int32 and flip.dtype == bool
    assert np.all(t >= -smax) and np.all(t <= smax + 1)
    s = np.arange(-smax, smax + 1)
    for lo in range(0, len(s), 20000):
        chunk = s[lo : lo + 20000, None]
        want = fold.bn_eval(chunk, mean, var, gamma, beta, eps) >= 0  # sign(0) = +1
        got = (chunk >= t) ^ flip
        assert np.array_equal(got, want)
    assert flip[gamma < 0].all() and not flip[gamma > 0].any()


def test_hidden_fold_sign_of_zero_and_bias():
    # bn(s) = (s + bias - 10) * k exactly 0 at s = 10 - bias: that s must give +1.
    mean = np.array([10.0, 10.0, 10.0, 10.0])
    var = np.full(4, 4.0)
    gamma = np.array([1.0, -1.0, 0.0, 0.0])
    beta = np.array([0.0, 0.0, 0.0, -0.5])
    bias = np.array([3.0, 3.0, 0.0, 0.0])
    t, flip = fold.fold_hidden(mean, var, gamma, beta, 0.0, 100, bias=bias)
    assert (t[0], flip[0]) == (7, False)  # s >= 7
    assert (t[1], flip[1]) == (8, True)  # s <= 7 is +1, i.e. not (s >= 8)
    s = np.arange(-100, 101)[:, None]
    out = (s >= t) ^ flip
    assert out[:, 2].all() and not out[:, 3].any()  # gamma 0: sign(beta), sign(0) = +1


def test_fold_rejects_non_finite():
    ok = np.ones(3)
    with pytest.raises(ValueError, match="gamma"):
        fold.fold_hidden(ok, ok, np.array([1.0, np.nan, 1.0]), ok, 1e-4, 10)
    with pytest.raises(ValueError, match="var"):
        fold.fold_hidden(ok, -ok, ok, ok, 0.0, 10)
    with pytest.raises(ValueError, match="shape"):
        fold.fold_output(ok, ok, ok, np.ones(2), 1e-4, 10)


@pytest.mark.parametrize("smax", [10, 64, 256, 784 * 3])
def test_output_fold_bound_and_argmax(rng, smax):
    n = 10
    for trial in range(20):
        mean = rng.normal(0, smax / 4, n)
        var = rng.uniform(0.1, smax, n)
        gamma = rng.normal(0, 1, n) * 10.0 ** rng.uniform(-3, 3)
        beta = rng.normal(0, 3, n)
        if trial == 0:
            gamma[:] = 0  # all-constant scores still fold
        scale, offset, q = fold.fold_output(mean, var, gamma, beta, 1e-4, smax)
        bound = np.max(np.abs(scale.astype(np.int64)) * smax + np.abs(offset.astype(np.int64)))
        assert bound <= fold.OUTPUT_BOUND <= 2**31 - 1
        if trial:
            # q is the largest power that fits: one more doubles past the bound.
            assert 2 * bound + smax + 1 > fold.OUTPUT_BOUND
        s = rng.integers(-smax, smax + 1, (5000, n))
        s[:100] = s[:100, :1]  # equal pre-activations: ties decided by the parameters
        f = fold.bn_eval(s, mean, var, gamma, beta, 1e-4)
        i = scale.astype(np.int64) * s + offset
        err = (smax + 1) / 2 * 2.0**-q  # rounding error bound per score, float units
        assert np.all(np.abs(i * 2.0**-q - f) <= err * (1 + 1e-9))
        top2 = np.sort(f, axis=1)[:, -2:]
        clear = top2[:, 1] - top2[:, 0] > 2 * err
        assert np.array_equal(np.argmax(i[clear], axis=1), np.argmax(f[clear], axis=1))


def test_folded_random_network_equals_twin(rng):
    """A random float network (random signs of BN scale included) folds to a model whose
    twin scores are 2^q times the float64 network's, up to the rounding bound."""
    for mask, sizes in [(0x80, [50, 33, 10]), (0xE0, [70, 10]), (0x81, [40, 40, 40, 7])]:
        net = init_net(rng, 100, sizes, mask)
        for lay, n in enumerate(sizes):
            net.gamma[lay] = rng.normal(0, 1, n).astype(np.float32)
            net.beta[lay] = rng.normal(0, 1, n).astype(np.float32)
            net.mean[lay] = rng.normal(0, np.sqrt(net.smax(lay)) / 2, n).astype(np.float32)
            net.var[lay] = (rng.uniform(0.2, 2, n) * net.smax(lay) / 4).astype(np.float32)
        m = net.fold()
        m2 = pack.from_bytes(pack.to_bytes(m))  # passes the reader's E_RANGE check
        x = rng.integers(0, 256, (400, 100), dtype=np.uint8)
        s_int = twin.scores(m2, pack_input(x, mask)).astype(np.int64)
        s_flt = net.scores(x)
        q = m.meta["output_q"]
        err = (net.smax(len(sizes) - 1) + 1) / 2 * 2.0**-q
        # A wrong hidden bit moves a score by ~|k| * 2, far more than err.
        assert np.all(np.abs(s_int * 2.0**-q - s_flt) <= err * (1 + 1e-9))
