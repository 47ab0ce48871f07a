"""The open cell protocol: a user's step registered with ``rnnjax.register_step`` gets the fast
paths a built-in gets, and they equal its plain step loop.

The user's cell is a diagonal linear recurrence with an input-dependent decay (a gated linear
unit in the manner of RG-LRU, written here in plain jax.numpy):

    a_t = σ(x_t w_a + b_a)        h_t = a_t ⊙ h_{t-1} + (1 - a_t) ⊙ (x_t w_x)

registered with its affine coefficients only; ``rnn(cell, parallel=True)`` then runs an
associative scan, compared with ``rnnjax.scan`` of the unregistered step (a lambda around it)
and with NumPy, in values and gradients, with lengths, reverse and packed resets.
"""

import functools
from typing import NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import rnnjax as rj
from rnnjax import _registry

T, B, I, H = 9, 3, 4, 5  # noqa: E741 (the input size, as in the docstrings)


class GateParams(NamedTuple):
    w_a: jax.Array  # [I, H]
    b_a: jax.Array  # [H]
    w_x: jax.Array  # [I, H]


def gate_step(p, h, x):
    a = jax.nn.sigmoid(x @ p.w_a + p.b_a)
    h = a * h + (1 - a) * (x @ p.w_x)
    return h, h


def gate_affine(p, xs, log_space):
    z = xs @ p.w_a + p.b_a  # [T, *batch, H]
    u = xs @ p.w_x
    if log_space:  # needs b > 0: not this cell's case, and min_rnn_parallel is called without it
        raise ValueError("gate cell: no log-space form")
    a = jax.nn.sigmoid(z)
    return a, (1 - a) * u


def gate_cell(input_size=I):
    def init(key):
        k1, k2, k3 = jax.random.split(key, 3)
        return GateParams(jax.random.normal(k1, (input_size, H)), jax.random.normal(k2, (H,)),
                          jax.random.normal(k3, (input_size, H)))

    return rj.Cell(init, lambda batch_shape=(): jnp.zeros((*batch_shape, H)), gate_step)


rj.register_step(gate_step, params=GateParams, affine=gate_affine)

CELL = gate_cell()
PARAMS = CELL.init(jax.random.key(0))
XS = jax.random.normal(jax.random.key(1), (T, B, I))
LENGTHS = jnp.array([9, 5, 1])
RESETS = jnp.zeros((T, B), bool).at[3, 0].set(True).at[6, 0].set(True).at[2, 1].set(True)


def plain(p, h, x):  # not the registered function: rnnjax.scan runs the plain loop on it
    return gate_step(p, h, x)


def numpy_reference(p, xs, lengths, reverse, resets):
    p = jax.tree.map(np.asarray, p)
    xs, resets = np.asarray(xs, np.float64), np.asarray(resets)
    ys = np.zeros(xs.shape[:2] + (H,))
    finals = np.zeros((xs.shape[1], H))
    for b in range(xs.shape[1]):
        n = int(lengths[b])
        starts = [t for t in range(n) if t == 0 or resets[t, b]] + [n]
        segments = list(zip(starts[:-1], starts[1:], strict=True))
        for lo, hi in (reversed(segments) if reverse else segments):
            h = np.zeros(H)
            for t in (range(hi - 1, lo - 1, -1) if reverse else range(lo, hi)):
                a = 1 / (1 + np.exp(-(xs[t, b] @ p.w_a + p.b_a)))
                h = a * h + (1 - a) * (xs[t, b] @ p.w_x)
                ys[t, b] = h
        finals[b] = h if n else 0
    return finals, ys


@pytest.mark.parametrize("reverse", [False, True])
@pytest.mark.parametrize("packed", [False, True])
def test_registered_parallel_form_equals_the_loop_and_numpy(reverse, packed):
    resets = RESETS if packed else None
    model = rj.rnn(CELL, parallel=True, reverse=reverse)
    carry, ys = jax.jit(functools.partial(model.apply, lengths=LENGTHS, resets=resets))(PARAMS, XS)
    loop_carry, loop_ys = rj.scan(plain, PARAMS, CELL.initial_carry((B,)), XS, lengths=LENGTHS, reverse=reverse,
                                  resets=resets)
    np.testing.assert_allclose(ys, loop_ys, rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(carry, loop_carry, rtol=1e-5, atol=1e-6)
    final, ref = numpy_reference(PARAMS, XS, LENGTHS, reverse, resets if packed else np.zeros((T, B), bool))
    np.testing.assert_allclose(ys, ref, rtol=1e-4, atol=1e-5)
    if not packed:  # with resets the returned carry is the last (first, reversed) sequence's
        np.testing.assert_allclose(carry, final, rtol=1e-4, atol=1e-5)


@pytest.mark.slow  # compile-heavy: the second tier
@pytest.mark.parametrize("reverse", [False, True])
def test_registered_parallel_form_has_the_loops_gradients(reverse):
    def loss(run, params, h0):
        carry, ys = run(params, h0)
        return jnp.sum(jnp.sin(ys)) + jnp.sum(carry ** 2)

    model = rj.rnn(CELL, parallel=True, reverse=reverse)
    par = functools.partial(loss, lambda p, c: model.apply(p, XS, lengths=LENGTHS, carry=c, resets=RESETS))
    seq = functools.partial(loss, lambda p, c: rj.scan(plain, p, c, XS, lengths=LENGTHS, reverse=reverse,
                                                       resets=RESETS))
    h0 = jax.random.normal(jax.random.key(2), (B, H))
    g_par = jax.grad(par, argnums=(0, 1))(PARAMS, h0)
    g_seq = jax.grad(seq, argnums=(0, 1))(PARAMS, h0)
    for a, b in zip(jax.tree.leaves(g_par), jax.tree.leaves(g_seq), strict=True):
        np.testing.assert_allclose(a, b, rtol=1e-4, atol=1e-5)


def test_registered_affine_reaches_min_rnn_parallel_and_composers():
    h0 = CELL.initial_carry((B,))
    carry, ys = rj.min_rnn_parallel(gate_step, PARAMS, h0, XS, lengths=LENGTHS)
    _, loop_ys = rj.scan(plain, PARAMS, h0, XS, lengths=LENGTHS)
    np.testing.assert_allclose(ys, loop_ys, rtol=1e-5, atol=1e-6)
    # as a layer of deep and bidirectional, and batch-major
    second = gate_cell(H)
    model = rj.deep(rj.rnn(CELL, parallel=True), rj.bidirectional(rj.rnn(second, parallel=True), second),
                    time_major=False)
    params = model.init(jax.random.key(3))
    _, ys_bm = model.apply(params, jnp.swapaxes(XS, 0, 1), lengths=LENGTHS)
    unregistered = rj.Cell(second.init, second.initial_carry, plain)
    loop = rj.deep(rj.Cell(CELL.init, CELL.initial_carry, plain), rj.bidirectional(unregistered, unregistered),
                   time_major=False)
    _, ys_loop = loop.apply(params, jnp.swapaxes(XS, 0, 1), lengths=LENGTHS)
    np.testing.assert_allclose(ys_bm, ys_loop, rtol=1e-5, atol=1e-6)


def test_registered_parallel_and_diag_jacobian_are_used():
    calls = []

    class P(NamedTuple):
        w: jax.Array  # [I, H]
        lam: jax.Array  # [H]

    def step(p, h, x):
        h = jnp.tanh(p.lam * h + x @ p.w)
        return h, h

    def parallel(p, carry, xs, lengths=None, reverse=False):  # no resets keyword: packed rows refused
        calls.append("parallel")
        return rj.scan(lambda *a: step(*a), p, carry, xs, lengths=lengths, reverse=reverse)

    def diag(p, h, x):
        calls.append("diag")
        h_new = jnp.tanh(p.lam * h + x @ p.w)
        return (1 - h_new ** 2) * p.lam

    rj.register_step(step, params=P, parallel=parallel, diag_jacobian=diag)
    cell = rj.Cell(lambda key: P(jax.random.normal(key, (I, H)), 0.5 * jnp.ones(H)),
                   lambda b=(): jnp.zeros((*b, H)), step)
    params = cell.init(jax.random.key(4))
    _, ys = rj.rnn(cell, parallel=True).apply(params, XS, lengths=LENGTHS)
    _, ref = rj.scan(lambda *a: step(*a), params, cell.initial_carry((B,)), XS, lengths=LENGTHS)
    np.testing.assert_allclose(ys, ref, rtol=1e-6)
    with pytest.raises(ValueError, match="resets: the parallel form of the step cell does not take resets"):
        rj.rnn(cell, parallel=True).apply(params, XS, resets=RESETS)
    _, ys_deer, info = rj.deer_scan(step, params, cell.initial_carry((B,)), XS, method="quasi")
    _, ref = rj.scan(lambda *a: step(*a), params, cell.initial_carry((B,)), XS)
    assert bool(info.converged)
    np.testing.assert_allclose(ys_deer, ref, rtol=1e-4, atol=1e-5)
    assert calls.count("parallel") == 1 and "diag" in calls
    # a wrapped step is not the registered one: plain loop, same numbers
    with pytest.raises(ValueError, match="parallel: expected a cell with a parallel-in-time form"):
        rj.rnn(rj.Cell(cell.init, cell.initial_carry, lambda *a: step(*a)), parallel=True)


def test_registering_again_replaces_and_builtins_are_protected():
    def step(p, h, x):
        return h, h

    class P(NamedTuple):
        w: jax.Array

    rj.register_step(step, params=P)
    assert _registry.lookup(step)[0].parallel is None
    rj.register_step(step, params=P, affine=gate_affine)
    assert _registry.lookup(step)[0].affine is gate_affine and not _registry.lookup(step)[0].builtin
    assert _registry.lookup(rj.lstm_step)[0].builtin
    with pytest.raises(ValueError, match="step: 'lstm_step' is a built-in cell's step"):
        rj.register_step(rj.lstm_step, params=rj.LSTMParams)
    with pytest.raises(TypeError, match="step: expected a function"):
        rj.register_step(3, params=P)
    with pytest.raises(TypeError, match="params: expected the type of the step's params"):
        rj.register_step(step, params=P(1))
    with pytest.raises(TypeError, match="carry: expected the type of the step's carry"):
        rj.register_step(step, params=P, carry=jnp.zeros(3))
    with pytest.raises(TypeError, match="affine: expected a function or None, got int"):
        rj.register_step(step, params=P, affine=1)
    with pytest.raises(TypeError, match="keywords: expected a sequence of keyword names"):
        rj.register_step(step, params=P, keywords="dtype")


def test_keywords_bind_through_partial():
    def step(p, h, x, *, scale=1.0):
        return gate_step(p, h, scale * x)

    def affine(p, xs, log_space, *, scale=1.0):
        return gate_affine(p, scale * xs, log_space)

    rj.register_step(step, params=GateParams, affine=affine, keywords=("scale",))
    cell = rj.Cell(CELL.init, CELL.initial_carry, functools.partial(step, scale=2.0))
    _, ys = rj.rnn(cell, parallel=True).apply(PARAMS, XS)
    _, ref = rj.scan(plain, PARAMS, CELL.initial_carry((B,)), 2.0 * XS)
    np.testing.assert_allclose(ys, ref, rtol=1e-5, atol=1e-6)
    with pytest.raises(ValueError, match="parallel: expected a cell with a parallel-in-time form"):
        rj.rnn(rj.Cell(CELL.init, CELL.initial_carry, functools.partial(step, other=1)), parallel=True)
