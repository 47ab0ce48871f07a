"""Layer-norm LSTM and GRU (rnnjax/norm_cells.py) against NumPy references of Ba et al.'s equations."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from jax.test_util import check_grads

import rnnjax as rj  # noqa: F401  (the package imports cleanly with the new module)
from rnnjax import norm_cells as nc

I, H = 3, 4


def normal(key, shape, dtype=jnp.float32):
    """Standard normal draws from NumPy, seeded by the JAX key (no XLA compile per shape)."""
    seed = np.asarray(jax.random.key_data(key)).ravel().tolist()
    return jnp.asarray(np.random.default_rng(seed).standard_normal(shape), dtype)


def sigmoid(v):
    return 1.0 / (1.0 + np.exp(-v))


def np_ln(a, g, b=0.0, eps=1e-5):
    mu = a.mean(-1, keepdims=True)
    var = ((a - mu) ** 2).mean(-1, keepdims=True)
    return g * (a - mu) / np.sqrt(var + eps) + b


def ref_ln_lstm(p, h, c, x, eps=1e-5):
    """Ba et al. 2016 eqs. 20-22 with the gates in order i, f, g, o."""
    z = np_ln(x @ p.w_ih, p.g_ih, eps=eps) + np_ln(h @ p.w_hh, p.g_hh, eps=eps) + p.b
    i, f, g, o = (z[..., k * H:(k + 1) * H] for k in range(4))
    c2 = sigmoid(f) * c + sigmoid(i) * np.tanh(g)
    h2 = sigmoid(o) * np.tanh(np_ln(c2, p.g_c, p.b_c, eps=eps))
    return h2, c2


def ref_ln_gru(p, h, x, eps=1e-5):
    a = np_ln(x @ p.w_ih, p.g_ih, p.b_ih, eps=eps)
    u = np_ln(h @ p.w_hh, p.g_hh, p.b_hh, eps=eps)
    r = sigmoid(a[..., :H] + u[..., :H])
    z = sigmoid(a[..., H:2 * H] + u[..., H:2 * H])
    n = np.tanh(a[..., 2 * H:] + r * u[..., 2 * H:])
    return (1 - z) * n + z * h


# name -> (factory, step, LSTM-like carry)
NORM_CELLS = {
    "layer_norm_lstm": (nc.layer_norm_lstm, nc.layer_norm_lstm_step, True),
    "layer_norm_gru": (nc.layer_norm_gru, nc.layer_norm_gru_step, False),
}


def random_params(cell, key, scale=0.5):
    """Every field random; the LN gains around 1, so no normalisation is degenerate."""
    params = jax.eval_shape(cell.init, key)  # shapes only: no eager initialiser to run
    keys = jax.random.split(jax.random.fold_in(key, 1), len(params))
    return type(params)(*[scale * normal(k, a.shape, a.dtype) + (1.0 if f.startswith("g_") else 0.0)
                          for k, f, a in zip(keys, params._fields, params, strict=True)])


def random_carry(cell, key, batch, dtype=jnp.float32):
    carry = cell.initial_carry(batch)
    leaves, tree = jax.tree_util.tree_flatten(carry)
    keys = jax.random.split(key, len(leaves))
    return jax.tree_util.tree_unflatten(tree, [normal(k, l.shape, dtype) for k, l in zip(keys, leaves)])


@pytest.fixture(scope="module")
def norm_case():
    """One set of random params, carry and input per cell, shared by the tests below."""
    key = jax.random.key(7)
    out = {}
    for name, (factory, step, lstm_like) in NORM_CELLS.items():
        cell = factory(I, H)
        out[name] = (cell, step, lstm_like, random_params(cell, key),
                     random_carry(cell, jax.random.fold_in(key, 2), (2, 3)),
                     normal(jax.random.fold_in(key, 3), (2, 3, I)))
    return out


def to_np(tree):
    return jax.tree_util.tree_map(lambda a: np.asarray(a, np.float64), tree)


@pytest.mark.parametrize("name", list(NORM_CELLS))
def test_step_matches_numpy_reference_of_the_paper(name, norm_case):
    cell, step, lstm_like, params, carry, x = norm_case[name]
    new, y = step(params, carry, x)  # batch (2, 3)
    p, c0, xn = to_np(params), to_np(carry), np.asarray(x, np.float64)
    if lstm_like:
        h_want, c_want = ref_ln_lstm(p, c0.h, c0.c, xn)
        np.testing.assert_allclose(new.c, c_want, atol=1e-5)
    else:
        h_want = ref_ln_gru(p, c0, xn)
        new = rj.LSTMState(new, new)
    np.testing.assert_allclose(new.h, h_want, atol=1e-5)
    np.testing.assert_allclose(y, h_want, atol=1e-5)
    # unbatched call: the same numbers as row [1, 2]
    one = jax.tree_util.tree_map(lambda a: a[1, 2], carry)
    _, y1 = step(params, one, x[1, 2])
    np.testing.assert_allclose(y1, h_want[1, 2], atol=1e-5)


@pytest.mark.parametrize("name", list(NORM_CELLS))
def test_eps_keyword_reaches_the_step(name, norm_case):
    factory, step, lstm_like = NORM_CELLS[name]
    _, _, _, params, carry, x = norm_case[name]
    cell = factory(I, H, eps=0.5)
    _, y = cell.step(params, carry, x)
    p, c0, xn = to_np(params), to_np(carry), np.asarray(x, np.float64)
    want = ref_ln_lstm(p, c0.h, c0.c, xn, eps=0.5)[0] if lstm_like else ref_ln_gru(p, c0, xn, eps=0.5)
    np.testing.assert_allclose(y, want, atol=1e-5)
    assert not np.allclose(y, step(params, carry, x)[1], atol=1e-3)


def test_layer_norm_makes_the_lstm_invariant_to_weight_scale(norm_case):
    """The property Ba et al. build on: rescaling W_ih or W_hh leaves the step unchanged."""
    _, step, _, params, carry, x = norm_case["layer_norm_lstm"]
    scaled = params._replace(w_ih=5.0 * params.w_ih, w_hh=3.0 * params.w_hh)
    np.testing.assert_allclose(step(scaled, carry, x)[1], step(params, carry, x)[1], atol=1e-4)  # up to eps
    plain = rj.lstm(I, H).init(jax.random.key(0))  # the plain LSTM is not invariant
    c = rj.LSTMState(carry.h, carry.c)
    assert not np.allclose(rj.lstm_step(plain._replace(w_ih=7 * plain.w_ih), c, x)[1],
                           rj.lstm_step(plain, c, x)[1], atol=1e-3)


def test_init_defaults():
    p = nc.layer_norm_lstm(I, H).init(jax.random.key(0))
    np.testing.assert_array_equal(p.b, np.r_[np.zeros(H), np.ones(H), np.zeros(2 * H)])  # forget bias 1
    for g in (p.g_ih, p.g_hh, p.g_c):
        np.testing.assert_array_equal(g, 1.0)
    np.testing.assert_array_equal(p.b_c, 0.0)
    # recurrent weights orthogonal per gate block, input weights Glorot-uniform (bounded by sqrt(6/(I+H)))
    for k in range(4):
        block = np.asarray(p.w_hh[:, k * H:(k + 1) * H])
        np.testing.assert_allclose(block.T @ block, np.eye(H), atol=1e-5)
    assert np.abs(p.w_ih).max() <= np.sqrt(6 / (I + H))
    q = nc.layer_norm_gru(I, H, param_dtype=jnp.bfloat16).init(jax.random.key(0))
    assert all(l.dtype == jnp.bfloat16 for l in jax.tree_util.tree_leaves(q))
    np.testing.assert_array_equal(q.b_ih, 0.0)
    assert nc.layer_norm_gru(I, H, carry_dtype=jnp.bfloat16).initial_carry((2,)).dtype == jnp.bfloat16


@pytest.mark.parametrize("name", list(NORM_CELLS))
def test_gradients_match_finite_differences(name):
    factory, step, _ = NORM_CELLS[name]
    key = jax.random.key(3)
    with jax.enable_x64(True):
        cell = factory(I, H, param_dtype=jnp.float64, carry_dtype=jnp.float64)
        params = random_params(cell, key)
        carry = random_carry(cell, jax.random.fold_in(key, 2), (2,), jnp.float64)
        x = normal(jax.random.fold_in(key, 3), (2, I), jnp.float64)

        def f(params, carry, x):
            new, y = step(params, carry, x)
            return jnp.sum(y * jnp.arange(H)) + sum(jnp.sum(leaf ** 2) for leaf in jax.tree_util.tree_leaves(new))

        check_grads(jax.jit(f), (params, carry, x), order=1, modes=["rev"])
    assert jnp.zeros(1).dtype == jnp.float32  # x64 did not leak out of the block


@pytest.mark.parametrize("name", list(NORM_CELLS))
def test_jit_equals_eager_and_low_precision_params(name, norm_case):
    cell, step, _, params, carry, x = norm_case[name]
    eager = step(params, carry, x)
    jax.tree_util.tree_map(lambda a, b: np.testing.assert_allclose(a, b, atol=1e-6), jax.jit(step)(params, carry, x), eager)
    p16 = jax.tree_util.tree_map(lambda a: a.astype(jnp.bfloat16), params)
    new16, y16 = jax.jit(step)(p16, carry, x)
    assert all(leaf.dtype == jnp.float32 for leaf in jax.tree_util.tree_leaves(new16))
    np.testing.assert_allclose(y16, eager[1], atol=5e-2)


def test_errors_name_the_argument(norm_case):
    cell, step, _, params, carry, x = norm_case["layer_norm_lstm"]
    with pytest.raises(TypeError, match=r"params: expected LayerNormLSTMParams\(.*without g_ih"):
        step(rj.LSTMParams(params.w_ih, params.w_hh, params.b), carry, x)
    with pytest.raises(TypeError, match=r"carry: expected an LSTMState"):
        step(params, carry.h, x)
    with pytest.raises(ValueError, match=r"x: expected shape \[\*batch, 3\]"):
        step(params, carry, x[..., :2])
    with pytest.raises(ValueError, match=r"params.g_c: expected shape \[4\]"):
        step(params._replace(g_c=jnp.ones(5)), carry, x)
    gcell, gstep, _, gparams, gcarry, gx = norm_case["layer_norm_gru"]
    with pytest.raises(ValueError, match=r"carry: expected shape \[2, 3, 4\]"):
        gstep(gparams, gcarry[0], gx)
    with pytest.raises(ValueError, match=r"eps: expected a positive float, got 0"):
        nc.layer_norm_gru(I, H, eps=0)
    with pytest.raises(ValueError, match=r"hidden_size"):
        nc.layer_norm_lstm(I, 0)


# ------------------------------------------------------------------- the precision policy

PRODUCTS = ("dot_general", "conv_general_dilated")


def product_dtypes(fn, *args):
    """``(lhs, rhs, out)`` dtype names of every matrix product/convolution in ``fn``'s jaxpr."""
    found = []

    def walk(jaxpr):
        for eqn in jaxpr.eqns:
            if eqn.primitive.name in PRODUCTS:
                found.append(tuple(v.aval.dtype.name for v in (*eqn.invars[:2], eqn.outvars[0])))
            for value in eqn.params.values():
                for sub in value if isinstance(value, (tuple, list)) else (value,):
                    if isinstance(sub, jax.extend.core.ClosedJaxpr):
                        walk(sub.jaxpr)
                    elif isinstance(sub, jax.extend.core.Jaxpr):
                        walk(sub)

    walk(jax.make_jaxpr(fn)(*args).jaxpr)
    return found


def check_bf16_policy(c32, c16, params, carry, xs, lengths, num_products, num_state_products=0):
    """The bf16 compute policy of a cell, measured: products in the step's jaxpr, closeness of a
    whole masked scan (outputs, final carry, gradients) to float32, and the float32 default.

    ``num_products`` products take bf16 operands; ``num_state_products`` (contractions of the
    state with data, no weights) stay float32."""
    assert {leaf.dtype for leaf in jax.tree_util.tree_leaves(c16.init(jax.random.key(0)))} == {jnp.dtype(jnp.float32)}
    f32 = ("float32", "float32", "float32")
    assert sorted(product_dtypes(c16.step, params, carry, xs[0])) == sorted(
        [("bfloat16", "bfloat16", "float32")] * num_products + [f32] * num_state_products)
    assert product_dtypes(c32.step, params, carry, xs[0]) == [f32] * (num_products + num_state_products)

    def run(cell, p):
        def loss(p):
            out = rj.scan(cell.step, p, carry, xs, lengths=lengths)
            return jnp.sum(out[1] ** 2), out
        (_, out), grads = jax.value_and_grad(loss, has_aux=True)(p)
        return out, grads

    out32, out16 = jax.jit(lambda p: (run(c32, p), run(c16, p)))(params)
    for a, b in zip(jax.tree_util.tree_leaves(out32), jax.tree_util.tree_leaves(out16), strict=True):
        assert b.dtype == jnp.float32  # carry, outputs and gradients stay float32
        # bf16 keeps 8 bits of mantissa: a relative error of 2^-8 per operand, a few percent after T steps
        assert float(jnp.abs(a - b).max()) / (float(jnp.abs(a).max()) + 1e-6) < 3e-2
    assert float(jnp.abs(out32[0][1] - out16[0][1]).max()) > 0  # bf16 did change something
    found = rj._registry.lookup(c16.step)  # the registry still sees the built-in through the partial
    assert found is not None and found[1]["dtype"] == jnp.bfloat16
    return found


@pytest.mark.parametrize("name", list(NORM_CELLS))
def test_bf16_compute_policy(name):
    factory, _, _ = NORM_CELLS[name]
    c32, c16 = factory(I, H, eps=1e-3), factory(I, H, dtype=jnp.bfloat16, eps=1e-3)
    params = random_params(c32, jax.random.key(8))
    carry = random_carry(c32, jax.random.key(9), (3,))
    xs = normal(jax.random.key(10), (6, 3, I))
    found = check_bf16_policy(c32, c16, params, carry, xs, jnp.array([6, 4, 1]), 2)
    assert found[1] == {"eps": 1e-3, "dtype": jnp.bfloat16}


@pytest.mark.parametrize("kw", [{"dtype": jnp.int32}, {"param_dtype": "int8"}, {"carry_dtype": None}])
def test_precision_keywords_are_checked(kw):
    name = next(iter(kw))
    for factory in (nc.layer_norm_lstm, nc.layer_norm_gru):
        with pytest.raises(TypeError, match=f"{name}: expected a floating-point dtype"):
            factory(I, H, **kw)
