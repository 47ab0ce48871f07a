"""Each built-in step against its equations written in NumPy; init defaults; dtypes; grads."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from jax.test_util import check_grads

import rnnjax as rj
from tests import reference as ref
from tests.conftest import CELLS, assert_trees_close, params_dict, random_carry, random_params

I, H = 3, 4


def ref_carry(carry, lstm_like):
    carry = jax.tree_util.tree_map(lambda a: np.asarray(a, np.float64), carry)
    return (carry.h, carry.c) if lstm_like else carry


@pytest.mark.parametrize("transform", [lambda f: f, jax.jit], ids=["eager", "jit"])
@pytest.mark.parametrize("batch", [(), (2,), (2, 3)], ids=["unbatched", "batch", "batch2d"])
@pytest.mark.parametrize("name", list(CELLS))
def test_step_matches_numpy_equations(name, batch, transform, key):
    factory, step, numpy_step, lstm_like = CELLS[name]
    cell = factory(I, H)
    k1, k2, k3 = jax.random.split(key, 3)
    params = random_params(cell, k1)
    carry = random_carry(cell, k2, batch)
    x = jax.random.normal(k3, batch + (I,))
    new_carry, y = transform(step)(params, carry, x)
    want_carry, want_y = numpy_step(params_dict(params), ref_carry(carry, lstm_like), np.asarray(x, np.float64))
    np.testing.assert_allclose(y, want_y, atol=1e-5)
    got = (new_carry.h, new_carry.c) if lstm_like else new_carry
    assert_trees_close(got, want_carry)
    assert jax.tree_util.tree_structure(new_carry) == jax.tree_util.tree_structure(carry)


@pytest.mark.parametrize("activation", ["sigmoid", "relu"])
def test_elman_activation_is_a_factory_keyword(activation, key):
    cell = rj.elman(I, H, activation=activation)
    params = random_params(cell, key)
    h = jnp.ones((2, H))
    x = jnp.ones((2, I))
    act = {"sigmoid": ref.sigmoid, "relu": lambda z: np.maximum(z, 0)}[activation]
    _, y = cell.step(params, h, x)
    _, want = ref.elman(params_dict(params), np.ones((2, H)), np.ones((2, I)), act=act)
    np.testing.assert_allclose(y, want, atol=1e-5)
    # the same cell also runs through scan (the keyword travels with the step)
    _, ys = rj.scan(cell.step, params, h, jnp.ones((3, 2, I)))
    np.testing.assert_allclose(ys[0], want, atol=1e-5)


@pytest.mark.parametrize("name", list(CELLS))
def test_vmap_of_unbatched_equals_batched(name, key):
    factory, step, _, _ = CELLS[name]
    cell = factory(I, H)
    params = random_params(cell, key)
    carry = random_carry(cell, jax.random.fold_in(key, 2), (5,))
    x = jax.random.normal(jax.random.fold_in(key, 3), (5, I))
    batched = step(params, carry, x)
    mapped = jax.vmap(step, in_axes=(None, 0, 0))(params, carry, x)
    assert_trees_close(batched, mapped, atol=1e-6)


@pytest.mark.parametrize("name", list(CELLS))
def test_gradients_match_finite_differences(name, key):
    factory, step, _, _ = CELLS[name]
    with jax.enable_x64(True):
        cell = factory(I, H, param_dtype=jnp.float64, carry_dtype=jnp.float64)
        params = random_params(cell, key)
        carry = random_carry(cell, jax.random.fold_in(key, 2), (2,))
        x = jax.random.normal(jax.random.fold_in(key, 3), (2, I), jnp.float64)

        def f(params, carry, x):
            new_carry, y = step(params, carry, x)
            return jnp.sum(y * jnp.arange(H)) + sum(jnp.sum(l ** 2) for l in jax.tree_util.tree_leaves(new_carry))

        check_grads(f, (params, carry, x), order=2, modes=["rev", "fwd"])


@pytest.mark.parametrize("name", list(CELLS))
def test_low_precision_params_with_float32_carry(name, key):
    factory, step, _, _ = CELLS[name]
    cell32 = factory(I, H)
    cell16 = factory(I, H, param_dtype=jnp.bfloat16)
    params32 = random_params(cell32, key)
    params16 = jax.tree_util.tree_map(lambda a: a.astype(jnp.bfloat16), params32)
    assert all(l.dtype == jnp.bfloat16 for l in jax.tree_util.tree_leaves(cell16.init(key)))
    carry = random_carry(cell32, jax.random.fold_in(key, 2), (2,))
    x = jax.random.normal(jax.random.fold_in(key, 3), (2, I))
    c16, y16 = jax.jit(step)(params16, carry, x)
    assert all(l.dtype == jnp.float32 for l in jax.tree_util.tree_leaves(c16))
    # compare against float32 math on the bf16-rounded weights
    rounded = jax.tree_util.tree_map(lambda a: a.astype(jnp.float32), params16)
    c32, y32 = step(rounded, carry, x)
    assert_trees_close((c16, y16), (c32, y32), atol=2e-2, rtol=2e-2)
    # and the time loop accepts the mixed dtypes too
    carry_out, _ = rj.scan(step, params16, carry, jnp.ones((3, 2, I)))
    assert all(l.dtype == jnp.float32 for l in jax.tree_util.tree_leaves(carry_out))


def _blocks(w, gates):
    return np.split(np.asarray(w), gates, axis=-1)


@pytest.mark.parametrize(
    "name,gates,forget",
    [("elman", 1, None), ("lstm", 4, 1), ("peephole_lstm", 4, 1), ("cifg_lstm", 3, None),
     ("gru", 3, None), ("gru_reset_before", 3, None)],
)
def test_init_defaults(name, gates, forget, key):
    factory = CELLS[name][0]
    params = factory(5, 6).init(key)
    limit = np.sqrt(6.0 / (5 + 6))  # Glorot-uniform bound of one [I, H] gate block
    assert params.w_ih.shape == (5, gates * 6) and params.w_hh.shape == (6, gates * 6)
    assert np.abs(params.w_ih).max() <= limit and np.abs(params.w_ih).max() > 0.5 * limit
    for block in _blocks(params.w_hh, gates):  # orthogonal per gate block
        np.testing.assert_allclose(block.T @ block, np.eye(6), atol=1e-5)
    biases = np.concatenate([np.asarray(getattr(params, f)) for f in ("b", "b_ih", "b_hh") if hasattr(params, f)])
    if forget is None and name != "cifg_lstm":
        assert not biases.any()
    if forget is not None:
        b = _blocks(params.b, gates)
        assert np.all(b[forget] == 1.0) and all(not b[k].any() for k in range(gates) if k != forget)
    if name == "peephole_lstm":
        assert not np.asarray(params.w_ci).any() and not np.asarray(params.w_co).any()


def test_cifg_forget_bias_gives_lstm_forget_gate_at_init(key):
    params = rj.cifg_lstm(2, 3, forget_bias=2.0).init(key)
    i_bias = _blocks(params.b, 3)[0]
    np.testing.assert_allclose(1 - ref.sigmoid(i_bias), ref.sigmoid(np.full(3, 2.0)), rtol=1e-6)
    assert not _blocks(params.b, 3)[1].any()


def test_initialisers_are_keywords(key):
    ones = jax.nn.initializers.constant(0.25)
    params = rj.lstm(2, 3, w_ih_init=ones, w_hh_init=ones, b_init=ones, forget_bias=0.0).init(key)
    for leaf in params:
        np.testing.assert_array_equal(leaf, 0.25)
    params = rj.gru(2, 3, param_dtype=jnp.float16).init(key)
    assert all(leaf.dtype == jnp.float16 for leaf in params)


def test_initial_carry_shapes_and_dtype():
    carry = rj.lstm(2, 3, carry_dtype=jnp.bfloat16).initial_carry((4, 5))
    assert isinstance(carry, rj.LSTMState)
    assert carry.h.shape == (4, 5, 3) and carry.c.dtype == jnp.bfloat16
    assert rj.gru(2, 3).initial_carry().shape == (3,)
    assert rj.elman(2, 3).initial_carry(7).shape == (7, 3)


def test_partial_step_is_a_scan_body(key):
    from functools import partial

    cell = rj.gru(I, H)
    params = random_params(cell, key)
    xs = jax.random.normal(key, (4, 2, I))
    carry, ys = jax.lax.scan(partial(rj.gru_step, params), cell.initial_carry((2,)), xs)
    carry2, ys2 = rj.scan(rj.gru_step, params, cell.initial_carry((2,)), xs)
    assert_trees_close((carry, ys), (carry2, ys2), atol=1e-6)
