"""Convolutional LSTM/GRU (rnnjax/conv_cells.py): a NumPy "SAME" convolution reference for 1-, 2-
and 3-D inputs, parity with Flax's ConvLSTMCell and Haiku's Conv1DLSTM/Conv2DLSTM, float64
gradients, and the time loop with lengths."""

import itertools

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from jax.test_util import check_grads

import rnnjax as rj
from rnnjax import conv_cells as cc

C, H = 2, 3


def normal(key, shape, dtype=jnp.float32):
    """Standard normal draws from NumPy, seeded by the JAX key (no XLA compile per shape)."""
    seed = np.asarray(jax.random.key_data(key)).ravel().tolist()
    return jnp.asarray(np.random.default_rng(seed).standard_normal(shape), dtype)
SPATIAL = {1: (5,), 2: (4, 5), 3: (3, 4, 2)}
KERNEL = {1: (3,), 2: (3, 2), 3: (3, 1, 2)}  # even and 1-wide sizes too: "SAME" pads asymmetrically


def sigmoid(v):
    return 1.0 / (1.0 + np.exp(-v))


def np_conv_same(x, w):
    """Cross-correlation of ``x [N, *S, Cin]`` with ``w [*K, Cin, Cout]``, stride 1, output size S:
    pad (k - 1) // 2 before and the rest after each axis (XLA's "SAME")."""
    kernel = w.shape[:-2]
    pads = [(0, 0)] + [((k - 1) // 2, k - 1 - (k - 1) // 2) for k in kernel] + [(0, 0)]
    xp = np.pad(x, pads)
    spatial = x.shape[1:-1]
    out = np.zeros(x.shape[:1] + spatial + (w.shape[-1],))
    for offset in itertools.product(*[range(k) for k in kernel]):
        window = xp[(slice(None),) + tuple(slice(o, o + s) for o, s in zip(offset, spatial)) + (slice(None),)]
        out += window @ w[offset]
    return out


def ref_conv_lstm(p, h, c, x):
    z = np_conv_same(x, p.w_ih) + np_conv_same(h, p.w_hh) + p.b
    i, f, g, o = (z[..., k * H:(k + 1) * H] for k in range(4))
    c2 = sigmoid(f) * c + sigmoid(i) * np.tanh(g)
    return sigmoid(o) * np.tanh(c2), c2


def ref_conv_gru(p, h, x):
    a = np_conv_same(x, p.w_ih) + p.b_ih
    u = np_conv_same(h, p.w_hh) + p.b_hh
    r = sigmoid(a[..., :H] + u[..., :H])
    z = sigmoid(a[..., H:2 * H] + u[..., H:2 * H])
    n = np.tanh(a[..., 2 * H:] + r * u[..., 2 * H:])
    return (1 - z) * n + z * h


CONV_CELLS = {"conv_lstm": (cc.conv_lstm, True), "conv_gru": (cc.conv_gru, False)}


def random_params(cell, key, scale=0.5):
    params = jax.eval_shape(cell.init, key)  # shapes only: no eager initialiser to run
    keys = jax.random.split(jax.random.fold_in(key, 1), len(params))
    return type(params)(*[scale * normal(k, a.shape, a.dtype) for k, a in zip(keys, params, strict=True)])


def random_carry(cell, key, lead, dtype=jnp.float32):
    carry = cell.initial_carry(lead)
    leaves, tree = jax.tree_util.tree_flatten(carry)
    keys = jax.random.split(key, len(leaves))
    return jax.tree_util.tree_unflatten(tree, [normal(k, l.shape, dtype) for k, l in zip(keys, leaves)])


@pytest.fixture(scope="module")
def conv_case():
    """(name, dims) -> cell, random params, carry and input with batch (2,), shared below."""
    key = jax.random.key(21)
    out = {}
    for (name, (factory, _)), n in itertools.product(CONV_CELLS.items(), SPATIAL):
        cell = factory(C, H, KERNEL[n])
        lead = (2,) + SPATIAL[n]
        out[name, n] = (cell, random_params(cell, key), random_carry(cell, jax.random.fold_in(key, 2), lead),
                        normal(jax.random.fold_in(key, 3), lead + (C,)))
    return out


def to_np(tree):
    return jax.tree_util.tree_map(lambda a: np.asarray(a, np.float64), tree)


@pytest.mark.parametrize("n", list(SPATIAL))
@pytest.mark.parametrize("name", list(CONV_CELLS))
def test_step_matches_numpy_reference(name, n, conv_case):
    cell, params, carry, x = conv_case[name, n]
    new, y = cell.step(params, carry, x)
    p, c0, xn = to_np(params), to_np(carry), np.asarray(x, np.float64)
    if CONV_CELLS[name][1]:
        h_want, c_want = ref_conv_lstm(p, c0.h, c0.c, xn)
        np.testing.assert_allclose(new.c, c_want, atol=1e-5)
        np.testing.assert_allclose(new.h, h_want, atol=1e-5)
    else:
        h_want = ref_conv_gru(p, c0, xn)
        np.testing.assert_allclose(new, h_want, atol=1e-5)
    np.testing.assert_allclose(y, h_want, atol=1e-5)
    assert y.shape == (2,) + SPATIAL[n] + (H,)


def test_any_batch_shape(conv_case):
    cell, params, carry, x = conv_case["conv_gru", 2]
    _, y = cell.step(params, carry, x)
    _, y0 = cell.step(params, carry[1], x[1])  # no batch axis
    np.testing.assert_allclose(y0, y[1], atol=1e-6)
    xx = jnp.stack([x, 2 * x])  # two batch axes
    _, yy = cell.step(params, jnp.stack([carry, carry]), xx)
    np.testing.assert_allclose(yy[0], y, atol=1e-6)
    np.testing.assert_allclose(yy[1], cell.step(params, carry, 2 * x)[1], atol=1e-6)


def _flax_to_ours(v):
    """Flax/Haiku ConvLSTM weights (gates i, g, f, o; +1 on f inside the step) to ConvLSTMParams."""
    def reorder(a):
        i, g, f, o = jnp.split(a, 4, axis=-1)
        return jnp.concatenate([i, f, g, o], axis=-1)

    b = reorder(v["b_ih"] + v["b_hh"])
    return cc.ConvLSTMParams(reorder(v["w_ih"]), reorder(v["w_hh"]), b.at[H:2 * H].add(1.0))


def _perturbed(tree, key):
    leaves, treedef = jax.tree_util.tree_flatten(tree)
    keys = jax.random.split(key, len(leaves))
    return jax.tree_util.tree_unflatten(treedef, [l + 0.3 * normal(k, l.shape) for k, l in zip(keys, leaves)])


def _run_both(ours_step, params, theirs, carry, xs):
    ours = carry
    for t in range(xs.shape[0]):
        ours, y = ours_step(params, ours, xs[t])
        theirs_carry, theirs_y = theirs(xs[t])
        np.testing.assert_allclose(y, theirs_y, atol=1e-5)
    return ours


@pytest.mark.parametrize("n", [1, 2])
def test_conv_lstm_matches_flax_convlstmcell(n):
    nn = pytest.importorskip("flax.linen")
    layer = nn.ConvLSTMCell(features=H, kernel_size=KERNEL[n])
    key = jax.random.key(8)
    xs = normal(key, (4, 2) + SPATIAL[n] + (C,))
    flax_carry = layer.initialize_carry(key, xs.shape[1:])  # (c, h)
    variables = _perturbed(layer.init(jax.random.fold_in(key, 1), flax_carry, xs[0]), jax.random.fold_in(key, 2))
    v = variables["params"]
    params = _flax_to_ours({"w_ih": v["ih"]["kernel"], "w_hh": v["hh"]["kernel"],
                            "b_ih": v["ih"]["bias"], "b_hh": v["hh"]["bias"]})
    state = {"carry": flax_carry}

    def theirs(x):
        state["carry"], y = layer.apply(variables, state["carry"], x)
        return state["carry"], y

    cell = cc.conv_lstm(C, H, KERNEL[n])
    ours = _run_both(cell.step, params, theirs, cell.initial_carry(xs.shape[1:-1]), xs)
    np.testing.assert_allclose(ours.c, state["carry"][0], atol=1e-5)
    np.testing.assert_allclose(ours.h, state["carry"][1], atol=1e-5)


@pytest.mark.parametrize("n", [1, 2])
def test_conv_lstm_matches_haiku_convndlstm(n):
    hk = pytest.importorskip("haiku")
    core_cls = {1: hk.Conv1DLSTM, 2: hk.Conv2DLSTM}[n]
    key = jax.random.key(9)
    xs = normal(key, (4, 2) + SPATIAL[n] + (C,))

    def f(x, state):
        return core_cls(input_shape=SPATIAL[n], output_channels=H, kernel_shape=KERNEL[n])(x, state)

    model = hk.without_apply_rng(hk.transform(f))
    zeros = jnp.zeros((2,) + SPATIAL[n] + (H,))
    hk_params = _perturbed(model.init(key, xs[0], hk.LSTMState(zeros, zeros)), jax.random.fold_in(key, 2))
    ih = next(v for k, v in hk_params.items() if k.endswith("input_to_hidden"))
    hh = next(v for k, v in hk_params.items() if k.endswith("hidden_to_hidden"))
    params = _flax_to_ours({"w_ih": ih["w"], "w_hh": hh["w"], "b_ih": ih["b"], "b_hh": hh["b"]})
    state = {"s": hk.LSTMState(zeros, zeros)}

    def theirs(x):
        y, state["s"] = model.apply(hk_params, x, state["s"])
        return state["s"], y

    cell = cc.conv_lstm(C, H, KERNEL[n])
    ours = _run_both(cell.step, params, theirs, cell.initial_carry(xs.shape[1:-1]), xs)
    np.testing.assert_allclose(ours.c, state["s"].cell, atol=1e-5)


def test_init_defaults_and_factory_arguments():
    p = cc.conv_lstm(C, H, (3, 3)).init(jax.random.key(0))
    assert p.w_ih.shape == (3, 3, C, 4 * H) and p.w_hh.shape == (3, 3, H, 4 * H)
    np.testing.assert_array_equal(p.b, np.r_[np.zeros(H), np.ones(H), np.zeros(2 * H)])
    fan_in, fan_out = 9 * C, 9 * H  # Glorot-uniform counting the receptive field
    assert np.abs(p.w_ih).max() <= np.sqrt(6 / (fan_in + fan_out))
    for k in range(4):  # recurrent kernels: orthonormal columns of the [9H, H] matrix per gate
        block = np.asarray(p.w_hh[..., k * H:(k + 1) * H]).reshape(9 * H, H)
        np.testing.assert_allclose(block.T @ block, np.eye(H), atol=1e-5)
    g = cc.conv_gru(C, H, 5, spatial_dims=3, param_dtype=jnp.bfloat16, carry_dtype=jnp.bfloat16)
    assert g.init(jax.random.key(0)).w_hh.shape == (5, 5, 5, H, 3 * H)
    assert g.init(jax.random.key(0)).w_hh.dtype == jnp.bfloat16
    assert g.initial_carry((2, 4, 4, 4)).dtype == jnp.bfloat16
    with pytest.raises(ValueError, match=r"spatial_dims: expected the number of spatial axes"):
        cc.conv_lstm(C, H, 3)
    with pytest.raises(ValueError, match=r"kernel_size: expected 2 sizes \(spatial_dims=2\), got \(3,\)"):
        cc.conv_lstm(C, H, (3,), spatial_dims=2)
    with pytest.raises(ValueError, match=r"kernel_size: expected a positive int or a tuple"):
        cc.conv_gru(C, H, (3, 0))
    with pytest.raises(ValueError, match=r"batch_shape: expected the leading axes of x, \(\*batch, \*spatial\) with 2"):
        cc.conv_gru(C, H, (3, 3)).initial_carry((4,))


def test_step_errors_name_the_argument(conv_case):
    cell, params, carry, x = conv_case["conv_lstm", 2]
    with pytest.raises(ValueError, match=r"x: expected shape \[\*batch, \*spatial, 2\] with 2 spatial axes"):
        cell.step(params, carry, x[..., :1])
    with pytest.raises(ValueError, match=r"carry.h: expected shape \[2, 4, 5, 3\]"):
        cell.step(params, carry._replace(h=carry.h[:, :3]), x)
    with pytest.raises(TypeError, match=r"carry: expected an LSTMState"):
        cell.step(params, carry.h, x)
    gcell, gparams, gcarry, gx = conv_case["conv_gru", 1]
    with pytest.raises(TypeError, match=r"params: expected ConvGRUParams"):
        gcell.step(params, gcarry, gx)
    with pytest.raises(ValueError, match=r"params.w_ih: expected shape \[\*kernel, C, 9\]"):
        gcell.step(gparams._replace(w_ih=gparams.w_ih[None]), gcarry, gx)


@pytest.mark.parametrize("name", list(CONV_CELLS))
def test_gradients_match_finite_differences(name):
    factory, _ = CONV_CELLS[name]
    key = jax.random.key(2)
    with jax.enable_x64(True):
        cell = factory(C, H, (3, 2), param_dtype=jnp.float64, carry_dtype=jnp.float64)
        params = random_params(cell, key)
        carry = random_carry(cell, jax.random.fold_in(key, 2), (1, 3, 2), jnp.float64)
        x = normal(jax.random.fold_in(key, 3), (1, 3, 2, C), jnp.float64)

        def f(params, carry, x):
            new, y = cell.step(params, carry, x)
            return jnp.sum(y * jnp.arange(H)) + sum(jnp.sum(leaf ** 2) for leaf in jax.tree_util.tree_leaves(new))

        check_grads(jax.jit(f), (params, carry, x), order=1, modes=["rev"])
    assert jnp.zeros(1).dtype == jnp.float32


@pytest.mark.parametrize("name", list(CONV_CELLS))
def test_jit_equals_eager_and_low_precision_params(name, conv_case):
    cell, params, carry, x = conv_case[name, 2]
    eager = cell.step(params, carry, x)
    jax.tree_util.tree_map(lambda a, b: np.testing.assert_allclose(a, b, atol=1e-6),
                           jax.jit(cell.step)(params, carry, x), eager)
    p16 = jax.tree_util.tree_map(lambda a: a.astype(jnp.bfloat16), params)
    new16, y16 = jax.jit(cell.step)(p16, carry, x)
    assert all(leaf.dtype == jnp.float32 for leaf in jax.tree_util.tree_leaves(new16))
    np.testing.assert_allclose(y16, eager[1], atol=5e-2)


def test_scan_with_lengths_broadcast_over_the_spatial_axes(conv_case):
    """Today's way: lengths [B, *spatial]; padding holds the carry and outputs zero."""
    cell, params, _, _ = conv_case["conv_lstm", 1]
    xs = normal(jax.random.key(4), (4, 2) + SPATIAL[1] + (C,))
    lengths = jnp.array([4, 2])
    carry, ys = rj.scan(cell.step, params, cell.initial_carry(xs.shape[1:-1]), xs,
                        lengths=jnp.broadcast_to(lengths[:, None], (2,) + SPATIAL[1]))
    want, _ = rj.scan(cell.step, params, cell.initial_carry((1,) + SPATIAL[1]), xs[:2, 1:])
    np.testing.assert_allclose(carry.h[1], want.h[0], atol=1e-6)
    np.testing.assert_array_equal(ys[2:, 1], 0.0)


def test_scan_and_bidirectional_with_lengths_over_the_batch_axes_only(conv_case):
    """lengths [B] for xs [T, B, *spatial, C]: the batch axes are those of lengths."""
    cell, params, _, _ = conv_case["conv_gru", 1]
    xs = normal(jax.random.key(4), (4, 2) + SPATIAL[1] + (C,))
    lengths = jnp.array([4, 2])
    full = jnp.broadcast_to(lengths[:, None], (2,) + SPATIAL[1])
    want = rj.scan(cell.step, params, cell.initial_carry(xs.shape[1:-1]), xs, lengths=full)
    got = rj.scan(cell.step, params, cell.initial_carry(xs.shape[1:-1]), xs, lengths=lengths)
    jax.tree_util.tree_map(lambda a, b: np.testing.assert_allclose(a, b, atol=1e-6), got, want)
    bi = rj.bidirectional(cell, cell)
    bi_params = bi.init(jax.random.key(0))
    _, ys = bi.apply(bi_params, xs, lengths=lengths)
    np.testing.assert_array_equal(ys[2:, 1], 0.0)


# ------------------------------------------------------------------- the precision policy


@pytest.mark.parametrize("name", list(CONV_CELLS))
def test_bf16_compute_policy(name):
    from tests.test_norm_cells import check_bf16_policy

    factory, _ = CONV_CELLS[name]
    c32, c16 = factory(2, 3, (3, 3)), factory(2, 3, (3, 3), dtype=jnp.bfloat16)
    params = random_params(c32, jax.random.key(8))
    carry = random_carry(c32, jax.random.key(9), (2, 4, 5))
    xs = normal(jax.random.key(10), (4, 2, 4, 5, 2))
    check_bf16_policy(c32, c16, params, carry, xs, jnp.array([4, 2]), 2)


@pytest.mark.parametrize("kw", [{"dtype": jnp.int32}, {"param_dtype": "int8"}, {"carry_dtype": None}])
def test_precision_keywords_are_checked(kw):
    name = next(iter(kw))
    for factory in (cc.conv_lstm, cc.conv_gru):
        with pytest.raises(TypeError, match=f"{name}: expected a floating-point dtype"):
            factory(2, 3, (3, 3), **kw)
