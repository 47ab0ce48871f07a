"""Parallel-in-time evaluation equals the sequential loop: minGRU/minLSTM and DEER.

References are written independently here (NumPy equations, Python loops, ``rnnjax.scan`` with
the plain step, sequences run alone); nothing is compared with output of the code under test.
"""

from functools import partial

import jax
import jax.flatten_util
import jax.numpy as jnp
import numpy as np
import pytest

import rnnjax as rj
from rnnjax._registry import diag_jacobian

IN, H, B = 3, 4, 2  # input size, hidden size, batch


def identity(f):
    return f


@pytest.fixture(scope="module")
def key():
    return jax.random.key(0)


def _inputs(key, num_steps, batch=(B,), scale=1.0):
    return scale * jax.random.normal(jax.random.fold_in(key, 1), (num_steps, *batch, IN))


def _random_carry(cell, key, batch=(B,)):
    carry = cell.initial_carry(batch)
    leaves, tree = jax.tree_util.tree_flatten(carry)
    keys = jax.random.split(jax.random.fold_in(key, 2), len(leaves))
    return tree.unflatten([0.5 * jax.random.normal(k, x.shape) for k, x in zip(keys, leaves, strict=True)])


def _assert_trees_close(a, b, tol):
    jax.tree_util.tree_map(
        lambda x, y: np.testing.assert_allclose(np.asarray(x), np.asarray(y), rtol=tol, atol=tol),
        a, b)


# ------------------------------------------------------------------ minGRU / minLSTM cells


def _np_sigmoid(v):
    return 1 / (1 + np.exp(-v))


def _np_g(v):
    return np.where(v >= 0, v + 0.5, _np_sigmoid(v))


def _np_min_gru(p, h, x):
    w, b = np.asarray(p.w_ih, np.float64), np.asarray(p.b, np.float64)
    k = x @ w + b
    z = _np_sigmoid(k[..., :H])
    return (1 - z) * h + z * _np_g(k[..., H:])


def _np_min_lstm(p, h, x):
    w, b = np.asarray(p.w_ih, np.float64), np.asarray(p.b, np.float64)
    k = x @ w + b
    f, i = _np_sigmoid(k[..., :H]), _np_sigmoid(k[..., H:2 * H])
    return f / (f + i) * h + i / (f + i) * _np_g(k[..., 2 * H:])


MIN_CELLS = {
    "min_gru": (rj.min_gru, _np_min_gru),
    "min_lstm": (rj.min_lstm, _np_min_lstm),
}


@pytest.fixture(scope="module", params=sorted(MIN_CELLS))
def min_cell(request, key):
    factory, reference = MIN_CELLS[request.param]
    cell = factory(IN, H)
    # Non-zero biases so that every gate term matters.
    params = cell.init(key)._replace(b=jax.random.normal(jax.random.fold_in(key, 7), (cell.init(key).b.shape[0],)))
    return cell, params, reference


def test_min_steps_match_numpy_equations(min_cell, key):
    cell, params, reference = min_cell
    h = np.asarray(_random_carry(cell, key, (3, B)), np.float64)
    x = 3 * np.asarray(jax.random.normal(key, (3, B, IN)), np.float64)  # both branches of g
    h_new, y = cell.step(params, jnp.asarray(h, jnp.float32), jnp.asarray(x, jnp.float32))
    np.testing.assert_allclose(h_new, reference(params, h, x), rtol=1e-5, atol=1e-6)
    np.testing.assert_array_equal(h_new, y)


def test_min_step_keeps_carry_dtype_with_bf16_params(key):
    cell = rj.min_lstm(IN, H, param_dtype=jnp.bfloat16)
    h, _ = cell.step(cell.init(key), cell.initial_carry((B,)), jnp.ones((B, IN)))
    assert h.dtype == jnp.float32


def test_min_factories():
    p = rj.min_lstm(IN, H, forget_bias=2.0).init(jax.random.key(1))
    assert isinstance(p, rj.MinLSTMParams) and p.w_ih.shape == (IN, 3 * H)
    np.testing.assert_array_equal(p.b, np.r_[np.full(H, 2.0), np.zeros(2 * H)])
    g = rj.min_gru(IN, H)
    assert isinstance(g, rj.Cell) and g.initial_carry((5,)).shape == (5, H)
    assert isinstance(g.init(jax.random.key(1)), rj.MinGRUParams)
    with pytest.raises(ValueError, match="hidden_size: expected a positive int, got 0"):
        rj.min_gru(IN, 0)
    with pytest.raises(ValueError, match="input_size: expected a positive int"):
        rj.min_lstm(2.5, H)
    with pytest.raises(TypeError, match="batch_shape: expected a tuple of ints"):
        g.initial_carry("4")
    assert g.initial_carry(3).shape == (3, H) and g.initial_carry().shape == (H,)
    p16 = rj.min_gru(IN, H, param_dtype=jnp.bfloat16).init(jax.random.key(1))
    assert p16.w_ih.dtype == jnp.bfloat16 and float(jnp.abs(p16.w_ih).max()) > 0


def _all_variants(fn, step):
    """One jitted function running ``fn(step, ...)`` with and without lengths, both directions."""

    @jax.jit
    def run(p, h, x, lengths):
        return [fn(step, p, h, x, lengths=n, reverse=r) for n in (None, lengths) for r in (False, True)]

    return run


@pytest.mark.parametrize("name, log_space", [("min_gru", False), ("min_lstm", True)])
def test_min_parallel_equals_scan(key, name, log_space):
    cell = MIN_CELLS[name][0](IN, H)
    params = cell.init(key)
    xs, h0, lengths = _inputs(key, 8, scale=2.0), _random_carry(cell, key), jnp.array([8, 3])
    want = _all_variants(rj.scan, cell.step)(params, h0, xs, lengths)
    got = _all_variants(partial(rj.min_rnn_parallel, log_space=log_space), cell.step)(params, h0, xs, lengths)
    _assert_trees_close(got, want, 1e-6)


@pytest.mark.parametrize("transform", [identity, jax.jit])
def test_min_parallel_matches_python_loop_and_numpy(min_cell, key, transform):
    cell, params, reference = min_cell
    xs, h0 = _inputs(key, 6), _random_carry(cell, key)
    h, ys = transform(lambda p, h, x: rj.min_rnn_parallel(cell.step, p, h, x))(params, h0, xs)
    h_np, ys_np = np.asarray(h0, np.float64), []
    for x in np.asarray(xs, np.float64):
        h_np = reference(params, h_np, x)
        ys_np.append(h_np)
    np.testing.assert_allclose(ys, np.stack(ys_np), rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(h, h_np, rtol=1e-5, atol=1e-6)


def test_min_parallel_long_sequences_agree_to_1e5(key):
    # T = 4096 with padding, linear and log space: no loss of accuracy over length. (Reverse
    # runs the same scan on flipped inputs; it is checked at short lengths above.)
    cell = rj.min_gru(IN, H)
    xs = _inputs(key, 4096, batch=(3,))
    params, h0, lengths = cell.init(key), _random_carry(cell, key, (3,)), jnp.array([4096, 1500, 0])
    want = jax.jit(partial(rj.scan, cell.step, lengths=lengths))(params, h0, xs)
    got = jax.jit(lambda p, h, x: [rj.min_rnn_parallel(cell.step, p, h, x, lengths=lengths, log_space=ls)
                                   for ls in (False, True)])(params, h0, xs)
    _assert_trees_close(got, [want, want], 1e-5)


def test_min_parallel_padding_equals_sequences_alone(key):
    cell = rj.min_lstm(IN, H)
    params, xs, h0 = cell.init(key), _inputs(key, 8, batch=(3,)), _random_carry(cell, key, (3,))

    @jax.jit
    def run():
        both = [rj.min_rnn_parallel(cell.step, params, h0, xs, lengths=jnp.array([8, 5, 0]),
                                    reverse=r) for r in (False, True)]
        alone = [rj.min_rnn_parallel(cell.step, params, h0[1], xs[:5, 1], reverse=r)
                 for r in (False, True)]
        return both, alone

    both, alone = run()
    for (h, ys), (h_alone, ys_alone) in zip(both, alone, strict=True):
        np.testing.assert_allclose(ys[:5, 1], ys_alone, rtol=1e-6, atol=1e-6)
        np.testing.assert_allclose(h[1], h_alone, rtol=1e-6, atol=1e-6)
        np.testing.assert_array_equal(ys[5:, 1], 0.0)
        np.testing.assert_array_equal(ys[:, 2], 0.0)
        np.testing.assert_array_equal(h[2], h0[2])  # length 0: the carry comes back unchanged


@pytest.mark.parametrize("name, reverse, log_space", [("min_gru", True, False), ("min_lstm", False, True)])
def test_min_parallel_gradients_equal_scan(key, name, reverse, log_space):
    cell = MIN_CELLS[name][0](IN, H)
    params = cell.init(key)
    xs, h0 = _inputs(key, 8, scale=2.0), _random_carry(cell, key)
    lengths = jnp.array([8, 5])
    w = jax.random.normal(jax.random.fold_in(key, 3), (8, B, H))

    def grads(fn):
        def loss(p, h, x):
            c, ys = fn(cell.step, p, h, x, lengths=lengths, reverse=reverse)
            return jnp.sum(ys * w) + jnp.sum(jnp.sin(c))
        return jax.jit(jax.grad(loss, argnums=(0, 1, 2)))

    parallel = partial(rj.min_rnn_parallel, log_space=log_space)
    _assert_trees_close(grads(parallel)(params, h0, xs), grads(rj.scan)(params, h0, xs), 1e-5)


def test_min_cells_compose_deep_bidirectional_decoding(key):
    gru_cell, lstm_cell = rj.min_gru(IN, H), rj.min_lstm(H, H)
    p1, p2 = gru_cell.init(key), lstm_cell.init(jax.random.fold_in(key, 1))
    xs, lengths = _inputs(key, 8), jnp.array([8, 5])
    zeros = gru_cell.initial_carry((B,))

    def deep_step(p, carry, x):  # a two-layer cell stepping both layers in one time step
        c1, y1 = rj.min_gru_step(p[0], carry[0], x)
        c2, y2 = rj.min_lstm_step(p[1], carry[1], y1)
        return (c1, c2), y2

    @jax.jit
    def sequential():
        deep = rj.scan(deep_step, (p1, p2), (zeros, zeros), xs, lengths=lengths)
        bidir = [rj.scan(rj.min_gru_step, p1, zeros, xs, lengths=lengths, reverse=r)[1]
                 for r in (False, True)]
        h, _ = rj.min_rnn_parallel(rj.min_gru_step, p1, zeros, xs[:5])
        for x in xs[5:]:  # decoding step by step from the carry the parallel run left
            h, _ = rj.min_gru_step(p1, h, x)
        return deep, bidir, h

    @jax.jit
    def parallel():
        d1, ys1 = rj.min_rnn_parallel(rj.min_gru_step, p1, zeros, xs, lengths=lengths)
        d2, ys2 = rj.min_rnn_parallel(rj.min_lstm_step, p2, zeros, ys1, lengths=lengths)
        bidir = [rj.min_rnn_parallel(rj.min_gru_step, p1, zeros, xs, lengths=lengths, reverse=r)[1]
                 for r in (False, True)]
        return ((d1, d2), ys2), bidir, rj.min_rnn_parallel(rj.min_gru_step, p1, zeros, xs)[0]

    _assert_trees_close(parallel(), sequential(), 1e-6)


def test_rnn_parallel_layers_equal_the_sequential_layers(key):
    """rj.rnn(cell, parallel=True) in rj.deep and rj.bidirectional: values and gradients equal
    the same models built from rj.rnn(cell) (rnnjax.scan of the step)."""
    cells = (rj.min_gru(IN, H), rj.min_lstm(H, H))
    xs, lengths = _inputs(key, 8), jnp.array([8, 5])

    def models(parallel):
        deep = rj.deep(*(rj.rnn(c, parallel=parallel) for c in cells))
        bi = rj.bidirectional(rj.rnn(cells[0], parallel=parallel),
                              rj.rnn(cells[0], reverse=True, parallel=parallel))
        return deep, bi

    (deep_p, bi_p), (deep_s, bi_s) = models(True), models(False)
    params = (deep_s.init(key), bi_s.init(jax.random.fold_in(key, 1)))

    def run(deep, bi):
        def loss(params):
            d = deep.apply(params[0], xs, lengths=lengths)
            b = bi.apply(params[1], xs, lengths=lengths)
            return jnp.sum(jnp.sin(d[1])) + jnp.sum(jnp.cos(b[1])), (d, b)
        return jax.jit(jax.value_and_grad(loss, has_aux=True))(params)

    _assert_trees_close(run(deep_p, bi_p), run(deep_s, bi_s), 1e-5)


def test_rnn_parallel_argument_errors():
    with pytest.raises(ValueError, match=r"parallel: expected a cell with a parallel-in-time form \(rnnjax.min_gru, rnnjax.min_lstm, rnnjax.lru"):
        rj.rnn(rj.gru(IN, H), parallel=True)
    with pytest.raises(ValueError, match="recurrent_dropout: not supported with parallel=True"):
        rj.rnn(rj.min_gru(IN, H), parallel=True, recurrent_dropout=0.1)
    with pytest.raises(TypeError, match="parallel"):
        rj.rnn(rj.min_gru(IN, H), parallel="yes")


def test_min_parallel_vmap_equals_batch(key):
    cell = rj.min_gru(IN, H)
    params, xs, h0 = cell.init(key), _inputs(key, 6), _random_carry(cell, key)
    h, ys = jax.jit(lambda h, x: rj.min_rnn_parallel(cell.step, params, h, x))(h0, xs)
    hv, ysv = jax.jit(jax.vmap(lambda h, x: rj.min_rnn_parallel(cell.step, params, h, x),
                               in_axes=(0, 1), out_axes=(0, 1)))(h0, xs)
    _assert_trees_close((hv, ysv), (h, ys), 1e-6)


def test_min_parallel_argument_errors(key):
    cell = rj.min_gru(IN, H)
    p, h0, xs = cell.init(key), cell.initial_carry((B,)), jnp.ones((5, B, IN))
    with pytest.raises(ValueError, match="step: expected rnnjax.min_gru_step"):
        rj.min_rnn_parallel(rj.gru_step, p, h0, xs)
    with pytest.raises(ValueError, match=r"x: expected shape \[\*batch, 3\].*got \(2, 9\)"):
        rj.min_rnn_parallel(cell.step, p, h0, jnp.ones((5, B, 9)))
    with pytest.raises(ValueError, match=r"xs: expected shape \[T, \*batch, I\]"):
        rj.min_rnn_parallel(cell.step, p, h0, jnp.ones(5))
    with pytest.raises(TypeError, match="xs: expected a floating-point array"):
        rj.min_rnn_parallel(cell.step, p, h0, jnp.ones((5, B, IN), jnp.int32))
    with pytest.raises(ValueError, match=r"carry: expected shape \[2, H\].*got \(3, 4\)"):
        rj.min_rnn_parallel(cell.step, p, jnp.zeros((3, H)), xs)
    with pytest.raises(ValueError, match=r"params.w_ih: expected shape \[I, 10\] \(2H with H = 5"):
        rj.min_rnn_parallel(cell.step, p, jnp.zeros((B, 5)), xs)
    with pytest.raises(ValueError, match=r"params.w_ih: expected shape \[I, 12\]"):
        rj.min_rnn_parallel(rj.min_lstm_step, p, h0, xs)
    with pytest.raises(ValueError, match=r"lengths: expected values in \[0, 5\]"):
        rj.min_rnn_parallel(cell.step, p, h0, xs, lengths=jnp.array([6, 1]))
    with pytest.raises(ValueError, match=r"lengths: expected shape \[2\]"):
        rj.min_rnn_parallel(cell.step, p, h0, xs, lengths=jnp.array([5]))
    with pytest.raises(TypeError, match="reverse: expected a bool"):
        rj.min_rnn_parallel(cell.step, p, h0, xs, reverse=1)
    with pytest.raises(TypeError, match="log_space: expected a bool"):
        rj.min_rnn_parallel(cell.step, p, h0, xs, log_space="yes")
    with pytest.raises(ValueError, match=r"x: expected shape \[\*batch, 3\]"):
        rj.min_gru_step(p, h0, jnp.ones((B, 2)))


# -------------------------------------------------------------------------------- DEER


def _user_step(p, carry, x):
    """A cell written by a user: tuple carry, one leaf with no feature axis, output != carry."""
    h, s = carry  # [*, 3], [*]
    h_new = jnp.tanh(x @ p["wx"] + h @ p["wh"] + s[..., None] * p["ws"])
    s_new = 0.5 * s + jnp.sin(h_new).mean(-1)
    return (h_new, s_new), 2.0 * h_new


def _user_cell():
    def init(key):
        k = jax.random.split(key, 3)
        return {"wx": jax.random.normal(k[0], (IN, 3)), "wh": 0.5 * jax.random.normal(k[1], (3, 3)),
                "ws": jax.random.normal(k[2], (3,))}

    def initial_carry(batch=()):
        return jnp.zeros((*batch, 3)), jnp.zeros(batch)

    return rj.Cell(init, initial_carry, _user_step)


DEER_CELLS = {
    "elman": lambda: rj.elman(IN, H),
    "gru": lambda: rj.gru(IN, H),
    "lstm": lambda: rj.lstm(IN, H),
    "user": _user_cell,
}


@pytest.mark.parametrize("name, method, reverse", [
    ("gru", "newton", False), ("lstm", "quasi", True), ("user", "quasi", True)])
def test_deer_values_and_gradients_equal_scan(key, name, method, reverse):
    cell = DEER_CELLS[name]()
    params, c0 = cell.init(key), _random_carry(cell, key)
    num_steps = 8
    xs, lengths = _inputs(key, num_steps), jnp.array([num_steps, 5])
    out_size = rj.scan(cell.step, params, c0, xs[:1])[1].shape[-1]
    w = jax.random.normal(jax.random.fold_in(key, 3), (num_steps, B, out_size))

    def run(fn):
        def loss(p, c, x):
            out = fn(cell.step, p, c, x, lengths=lengths, reverse=reverse)
            value = jnp.sum(out[1] * w) + sum(jnp.sum(jnp.cos(v)) for v in jax.tree_util.tree_leaves(out[0]))
            return value, out

        return jax.jit(jax.grad(loss, argnums=(0, 1, 2), has_aux=True))(params, c0, xs)

    g_want, (carry, ys) = run(rj.scan)
    g_got, (d_carry, d_ys, info) = run(partial(rj.deer_scan, method=method, tol=1e-7))
    _assert_trees_close((d_carry, d_ys), (carry, ys), 2e-6)
    assert bool(info.converged) and not bool(info.fell_back)
    assert 1 <= int(info.iterations) <= num_steps and float(info.residual) <= 1e-7
    _assert_trees_close(g_got, g_want, 1e-5)


def test_deer_iteration_k_makes_the_first_k_steps_exact(key):
    # The system is triangular: iteration k solves the first k steps exactly, whatever J.
    cell = rj.gru(IN, H)
    params, xs, h0 = cell.init(key), _inputs(key, 8, scale=3.0), _random_carry(cell, key)
    want = rj.scan(cell.step, params, h0, xs)[1]

    @jax.jit
    def run():
        return {(m, k): rj.deer_scan(cell.step, params, h0, xs, method=m, max_iters=k, tol=1e-30,
                                     fallback=False)[1:]
                for m in ("newton", "quasi") for k in (1, 3)}

    for (_, k), (ys, info) in run().items():
        assert int(info.iterations) == k and not bool(info.converged)
        np.testing.assert_allclose(ys[:k], want[:k], rtol=1e-6, atol=1e-6)
        if k == 1:
            assert float(jnp.abs(ys[2:] - want[2:]).max()) > 1e-3  # far from converged


def test_deer_fallback_is_sequential_and_reported(key):
    cell = rj.lstm(IN, H)
    params, xs, c0 = cell.init(key), _inputs(key, 8, scale=3.0), _random_carry(cell, key)

    def loss(fn, p):
        out = fn(cell.step, p, c0, xs)
        return jnp.sum(out[1] ** 2), out

    @jax.jit
    def run():
        quick = partial(rj.deer_scan, method="quasi", max_iters=1)
        grad, out = jax.grad(lambda p: loss(quick, p), has_aux=True)(params)
        no_fallback = rj.deer_scan(cell.step, params, c0, xs, method="quasi", max_iters=1,
                                   fallback=False)[2]
        return grad, out, no_fallback

    @jax.jit
    def reference():
        return jax.grad(lambda p: loss(rj.scan, p), has_aux=True)(params)

    (grad, (carry, ys, info), info_no_fallback), (g_ref, want) = run(), reference()
    assert bool(info.fell_back) and not bool(info.converged) and int(info.iterations) == 1
    _assert_trees_close((carry, ys), want, 1e-6)
    # The adjoint falls back to a sequential solve too (one refinement pass is not enough).
    _assert_trees_close(grad, g_ref, 1e-5)
    assert not bool(info_no_fallback.converged) and not bool(info_no_fallback.fell_back)


def test_deer_affine_cell_converges_in_one_iteration(key):
    # minGRU is affine in h with a diagonal Jacobian: one Newton step is exact for both methods.
    cell = rj.min_gru(IN, H)
    params, xs, h0 = cell.init(key), _inputs(key, 8), _random_carry(cell, key)
    lengths = jnp.array([8, 0])
    run = jax.jit(lambda: [rj.deer_scan(cell.step, params, h0, xs, lengths=lengths, method=m)
                           for m in ("newton", "quasi")])
    want = rj.scan(cell.step, params, h0, xs, lengths=lengths)
    for h, ys, info in run():
        assert int(info.iterations) == 1 and bool(info.converged)
        _assert_trees_close((h, ys), want, 1e-6)


def test_closed_form_jacobian_diagonals(key):
    cells = [rj.elman(IN, H), rj.elman(IN, H, activation=jnp.sin),
             rj.gru(IN, H), rj.lstm(IN, H), rj.min_gru(IN, H), rj.min_lstm(IN, H),
             rj.indrnn(IN, H), rj.indrnn(IN, H, activation="tanh"), rj.mgu(IN, H), rj.mgu(IN, H, reset_gate=False)]
    for cell in cells:
        params = jax.tree_util.tree_map(lambda a: a + 0.3 * jax.random.normal(key, a.shape),
                                        cell.init(key))  # non-zero biases
        carry, x = _random_carry(cell, key, (B,)), 2 * jax.random.normal(key, (B, IN))
        fn = diag_jacobian(cell.step)
        assert fn is not None

        @jax.jit
        def both(params, carry, x, fn=fn, step=cell.step):
            def one(c, x):
                flat, unravel = jax.flatten_util.ravel_pytree(c)
                jac = jax.jacfwd(lambda s: jax.flatten_util.ravel_pytree(step(params, unravel(s), x)[0])[0])(flat)
                return jax.flatten_util.ravel_pytree(fn(params, c, x))[0], jnp.diagonal(jac)
            return jax.vmap(one)(carry, x)

        got, want = both(params, carry, x)
        np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-6)
    assert diag_jacobian(rj.peephole_lstm_step) is None
    assert diag_jacobian(_user_step) is None


def test_deer_quasi_without_closed_form_diagonal(key):
    cell = rj.peephole_lstm(IN, H)
    params = cell.init(key)._replace(w_cf=jnp.full((H,), 0.7))
    xs, c0 = _inputs(key, 8), _random_carry(cell, key)
    want = rj.scan(cell.step, params, c0, xs)
    carry, ys, info = jax.jit(lambda: rj.deer_scan(cell.step, params, c0, xs, method="quasi"))()
    assert bool(info.converged)
    _assert_trees_close((carry, ys), want, 1e-5)


def test_deer_vmap_equals_batch(key):
    # (Eager use is exercised by the deer_scan docstring example.)
    cell = rj.elman(IN, H)
    params, xs, h0 = cell.init(key), _inputs(key, 5), _random_carry(cell, key)
    want = rj.scan(cell.step, params, h0, xs)
    vmapped = jax.jit(jax.vmap(lambda h, x: rj.deer_scan(cell.step, params, h, x, method="quasi")[:2],
                               in_axes=(0, 1), out_axes=(0, 1)))(h0, xs)
    _assert_trees_close(vmapped, want, 1e-5)


def test_deer_argument_errors(key):
    cell = rj.gru(IN, H)
    p, h0, xs = cell.init(key), cell.initial_carry((B,)), jnp.ones((5, B, IN))
    step = cell.step
    with pytest.raises(TypeError, match="step: expected a function"):
        rj.deer_scan(None, p, h0, xs)
    with pytest.raises(ValueError, match="method: expected 'newton' or 'quasi', got 'picard'"):
        rj.deer_scan(step, p, h0, xs, method="picard")
    for bad in (0, -1e-3, "1e-6"):
        with pytest.raises(ValueError, match="tol: expected a positive number"):
            rj.deer_scan(step, p, h0, xs, tol=bad)
    for bad in (0, 2.5, True):
        with pytest.raises(ValueError, match="max_iters: expected a positive int"):
            rj.deer_scan(step, p, h0, xs, max_iters=bad)
    with pytest.raises(TypeError, match="fallback: expected a bool"):
        rj.deer_scan(step, p, h0, xs, fallback=None)
    with pytest.raises(TypeError, match="reverse: expected a bool"):
        rj.deer_scan(step, p, h0, xs, reverse="yes")
    with pytest.raises(ValueError, match=r"xs: expected shape \[T, \*batch, 3\].*got \(5, 2, 9\)"):
        rj.deer_scan(step, p, h0, jnp.ones((5, B, 9)))
    with pytest.raises(ValueError, match=r"carry: expected shape \[2, \.\.\.\].*got \(3, 4\)"):
        rj.deer_scan(step, p, jnp.zeros((3, H)), xs)
    with pytest.raises(TypeError, match="carry: expected a floating-point array"):
        rj.deer_scan(step, p, jnp.zeros((B, H), jnp.int32), xs)
    with pytest.raises(ValueError, match="carry: expected at least one array leaf"):
        rj.deer_scan(step, p, (), xs)
    with pytest.raises(ValueError, match=r"lengths: expected values in \[0, 5\]"):
        rj.deer_scan(step, p, h0, xs, lengths=jnp.array([0, 6]))


@pytest.mark.parametrize("name", ["lru", "rg_lru", "selective_ssm", "mlstm"])
def test_rnn_parallel_runs_each_registered_parallel_form(name):
    """rnn(cell, parallel=True) takes the cell's parallel form from the registry: equal to the
    sequential layer (values and gradients) with lengths, in both directions."""
    cell = getattr(rj, name)(IN, H)
    params = cell.init(jax.random.key(5))
    xs = jax.random.normal(jax.random.key(6), (9, B, IN))
    lengths = jnp.array([9, 4])

    def run(parallel, reverse):
        model = rj.rnn(cell, parallel=parallel, reverse=reverse)
        f = lambda p: model.apply(p, xs, lengths=lengths)
        out, vjp = jax.vjp(f, params)
        return out, vjp(jax.tree_util.tree_map(jnp.ones_like, out))

    for reverse in (False, True):
        seq, par = jax.jit(lambda: (run(False, reverse), run(True, reverse)))()
        for a, b in zip(jax.tree_util.tree_leaves(seq), jax.tree_util.tree_leaves(par), strict=True):
            np.testing.assert_allclose(np.asarray(a), np.asarray(b), atol=2e-5, rtol=2e-5)
    with pytest.raises(ValueError, match="the slstm cell has no parallel form"):
        rj.rnn(rj.slstm(IN, H), parallel=True)
