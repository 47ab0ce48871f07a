"""IndRNN and MGU (rnnjax/simple_cells.py): NumPy references of the papers' equations, parity with
Flax's MGUCell, closed-form Jacobian diagonals, gradients in float64."""

import functools

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from jax.test_util import check_grads

import rnnjax as rj  # noqa: F401
from rnnjax import simple_cells as sc

I, H = 3, 4


def normal(key, shape, dtype=jnp.float32):
    """Standard normal draws from NumPy, seeded by the JAX key (no XLA compile per shape)."""
    seed = np.asarray(jax.random.key_data(key)).ravel().tolist()
    return jnp.asarray(np.random.default_rng(seed).standard_normal(shape), dtype)


def sigmoid(v):
    return 1.0 / (1.0 + np.exp(-v))


def ref_indrnn(p, h, x, act=lambda v: np.maximum(v, 0.0), bound=None):
    u = p.u if bound is None else np.clip(p.u, -bound, bound)
    return act(x @ p.w_ih + u * h + p.b)


def ref_mgu(p, h, x, reset_gate=True):
    """Flax MGUCell's equations, written out."""
    wif, win = p.w_ih[:, :H], p.w_ih[:, H:]
    whf, whn = p.w_hh[:, :H], p.w_hh[:, H:]
    f = sigmoid(x @ wif + p.b_ih[:H] + h @ whf + p.b_hh[:H])
    rec = h @ whn + p.b_hh[H:]
    n = np.tanh(x @ win + p.b_ih[H:] + (f * rec if reset_gate else rec))
    return (1 - f) * n + f * h


# name -> (factory with the options, step as the factory returns it, NumPy reference)
SIMPLE_CELLS = {
    "indrnn": (sc.indrnn, ref_indrnn),
    "indrnn_tanh_bounded": (functools.partial(sc.indrnn, activation="tanh", recurrent_max=0.6),
                            functools.partial(ref_indrnn, act=np.tanh, bound=0.6)),
    "mgu": (sc.mgu, ref_mgu),
    "mgu_no_reset": (functools.partial(sc.mgu, reset_gate=False), functools.partial(ref_mgu, reset_gate=False)),
}


def random_params(cell, key, scale=0.7):
    params = jax.eval_shape(cell.init, key)  # shapes only: no eager initialiser to run
    keys = jax.random.split(jax.random.fold_in(key, 1), len(params))
    return type(params)(*[scale * normal(k, a.shape, a.dtype) for k, a in zip(keys, params, strict=True)])


@pytest.fixture(scope="module")
def simple_case():
    key = jax.random.key(11)
    out = {}
    for name, (factory, ref) in SIMPLE_CELLS.items():
        cell = factory(I, H)
        params = random_params(cell, key)
        h = normal(jax.random.fold_in(key, 2), (2, 3, H))
        x = normal(jax.random.fold_in(key, 3), (2, 3, I))
        out[name] = (cell, ref, params, h, x)
    return out


def to_np(tree):
    return jax.tree_util.tree_map(lambda a: np.asarray(a, np.float64), tree)


@pytest.mark.parametrize("name", list(SIMPLE_CELLS))
def test_step_matches_numpy_reference(name, simple_case):
    cell, ref, params, h, x = simple_case[name]
    new, y = cell.step(params, h, x)
    want = ref(to_np(params), np.asarray(h, np.float64), np.asarray(x, np.float64))
    np.testing.assert_allclose(new, want, atol=1e-5)
    np.testing.assert_allclose(y, want, atol=1e-5)
    _, y1 = cell.step(params, h[0, 1], x[0, 1])  # unbatched
    np.testing.assert_allclose(y1, want[0, 1], atol=1e-5)


def test_indrnn_bound_clips_u_and_stops_its_recurrent_gradient(simple_case):
    _, _, params, h, x = simple_case["indrnn"]
    params = params._replace(u=jnp.array([-2.0, -0.3, 0.3, 2.0]))
    bounded = functools.partial(sc.indrnn_step, recurrent_max=0.5)
    np.testing.assert_allclose(bounded(params, h, x)[1],
                               sc.indrnn_step(params._replace(u=jnp.array([-0.5, -0.3, 0.3, 0.5])), h, x)[1],
                               atol=1e-6)
    g = jax.grad(lambda p: jnp.sum(bounded(p, jnp.abs(h), x)[1]))(params)
    assert g.u[0] == 0 and g.u[3] == 0 and g.u[1] != 0 and g.u[2] != 0


def test_indrnn_init_defaults():
    p = sc.indrnn(I, H).init(jax.random.key(0))
    assert 0 <= float(p.u.min()) and float(p.u.max()) < 1  # U[0, 1)
    np.testing.assert_array_equal(p.b, 0.0)
    assert np.abs(p.w_ih).max() <= np.sqrt(6 / (I + H))
    bound = 2 ** (1 / 1000)
    q = sc.indrnn(I, 64, recurrent_max=bound).init(jax.random.key(0))
    assert 0 <= float(q.u.min()) and float(q.u.max()) <= bound and float(q.u.max()) > 0.9
    r = sc.indrnn(I, H, u_init=jax.nn.initializers.constant(0.25)).init(jax.random.key(0))
    np.testing.assert_array_equal(r.u, 0.25)
    assert sc.indrnn(I, H).step is sc.indrnn_step  # the default needs no partial
    s = sc.indrnn(I, H, activation="tanh", recurrent_max=2.0).step
    assert s.keywords == {"activation": jnp.tanh, "recurrent_max": 2.0}


def test_mgu_init_defaults():
    p = sc.mgu(I, H).init(jax.random.key(0))
    np.testing.assert_array_equal(p.b_ih, np.r_[np.ones(H), np.zeros(H)])  # forget bias 1 (Flax: ones)
    np.testing.assert_array_equal(p.b_hh, 0.0)
    for k in range(2):
        block = np.asarray(p.w_hh[:, k * H:(k + 1) * H])
        np.testing.assert_allclose(block.T @ block, np.eye(H), atol=1e-5)
    assert sc.mgu(I, H).step is sc.mgu_step
    assert sc.mgu(I, H, reset_gate=False).step.keywords == {"reset_gate": False}


@pytest.mark.parametrize("reset_gate", [True, False])
def test_mgu_matches_flax_mgucell(reset_gate):
    nn = pytest.importorskip("flax.linen")
    layer = nn.MGUCell(features=H, reset_gate=reset_gate)
    key = jax.random.key(5)
    x = normal(key, (2, I))
    h = normal(jax.random.fold_in(key, 1), (2, H))
    variables = layer.init(jax.random.fold_in(key, 2), h, x)
    # random biases everywhere (Flax initialises them to ones/zeros), so their mapping is tested
    leaves, tree = jax.tree_util.tree_flatten(variables)
    keys = jax.random.split(jax.random.fold_in(key, 3), len(leaves))
    variables = jax.tree_util.tree_unflatten(tree, [l + 0.5 * normal(k, l.shape) for k, l in zip(keys, leaves)])
    v = variables["params"]
    params = sc.MGUParams(
        w_ih=jnp.concatenate([v["if"]["kernel"], v["in"]["kernel"]], axis=1),
        w_hh=jnp.concatenate([v["hf"]["kernel"], v["hn"]["kernel"]], axis=1),
        b_ih=jnp.concatenate([v["if"]["bias"], v["in"]["bias"]]),
        b_hh=jnp.concatenate([jnp.zeros(H), v["hn"]["bias"] if reset_gate else jnp.zeros(H)]),
    )
    assert ("bias" in v["hn"]) == reset_gate
    step = sc.mgu(I, H, reset_gate=reset_gate).step
    xs = normal(jax.random.fold_in(key, 4), (6, 2, I))
    flax_h, ours = h, h
    for t in range(6):  # a few steps, so the carries are compared too
        flax_h, flax_y = layer.apply(variables, flax_h, xs[t])
        ours, y = step(params, ours, xs[t])
        np.testing.assert_allclose(y, flax_y, atol=1e-5)
    np.testing.assert_allclose(ours, flax_h, atol=1e-5)


@pytest.mark.parametrize("name", list(SIMPLE_CELLS))
def test_diag_jacobian_is_the_jacobian_diagonal(name, simple_case):
    cell, _, params, h, x = simple_case[name]
    diag_fn = sc.indrnn_diag_jacobian if name.startswith("indrnn") else sc.mgu_diag_jacobian
    keywords = getattr(cell.step, "keywords", {})
    got = diag_fn(params, h[0], x[0], **keywords)  # [3, H]
    jac = jax.vmap(jax.jacfwd(lambda h_, x_: cell.step(params, h_, x_)[0]))(h[0], x[0])  # [3, H, H]
    np.testing.assert_allclose(got, jnp.diagonal(jac, axis1=-2, axis2=-1), atol=1e-6)
    if name.startswith("indrnn"):  # IndRNN's Jacobian is diagonal: nothing off it
        np.testing.assert_array_equal(jac * (1 - jnp.eye(H)), 0.0)


@pytest.mark.parametrize("name", list(SIMPLE_CELLS))
def test_gradients_match_finite_differences(name):
    factory, _ = SIMPLE_CELLS[name]
    key = jax.random.key(1)
    with jax.enable_x64(True):
        cell = factory(I, H, param_dtype=jnp.float64, carry_dtype=jnp.float64)
        params = random_params(cell, key)
        h = normal(jax.random.fold_in(key, 2), (2, H), jnp.float64)
        x = normal(jax.random.fold_in(key, 3), (2, I), jnp.float64)
        if name.startswith("indrnn"):  # keep ReLU's and the clip's kinks away from the probes
            params = params._replace(u=jnp.array([0.1, -0.2, 0.3, 0.4]), b=params.b + 3.0)

        def f(params, h, x):
            new, y = cell.step(params, h, x)
            return jnp.sum(y * jnp.arange(H)) + jnp.sum(new ** 2)

        check_grads(jax.jit(f), (params, h, x), order=1, modes=["rev"])
    assert jnp.zeros(1).dtype == jnp.float32


@pytest.mark.parametrize("name", ["indrnn", "mgu"])
def test_jit_equals_eager_and_low_precision_params(name, simple_case):
    cell, _, params, h, x = simple_case[name]
    eager = cell.step(params, h, x)
    np.testing.assert_allclose(jax.jit(cell.step)(params, h, x)[1], eager[1], atol=1e-6)
    p16 = jax.tree_util.tree_map(lambda a: a.astype(jnp.bfloat16), params)
    new16, y16 = jax.jit(cell.step)(p16, h, x)
    assert new16.dtype == jnp.float32
    np.testing.assert_allclose(y16, eager[1], atol=5e-2)


def test_errors_name_the_argument(simple_case):
    _, _, p, h, x = simple_case["indrnn"]
    with pytest.raises(ValueError, match=r"params.u: expected shape \[4\], got \(5,\)"):
        sc.indrnn_step(p._replace(u=jnp.ones(5)), h, x)
    with pytest.raises(ValueError, match=r"carry: expected shape \[2, 3, 4\], got \(3, 4\)"):
        sc.indrnn_step(p, h[0], x)
    with pytest.raises(ValueError, match=r"recurrent_max: expected a positive float or None, got -1"):
        sc.indrnn(I, H, recurrent_max=-1)
    with pytest.raises(ValueError, match=r"activation: expected one of"):
        sc.indrnn(I, H, activation="gelu")
    _, _, m, h, x = simple_case["mgu"]
    with pytest.raises(TypeError, match=r"params: expected MGUParams\(w_ih, w_hh, b_ih, b_hh\), got IndRNNParams"):
        sc.mgu_step(p, h, x)
    with pytest.raises(ValueError, match=r"x: expected shape \[\*batch, 3\]"):
        sc.mgu_step(m, h, x[..., :1])
    with pytest.raises(TypeError, match=r"reset_gate: expected a bool, got 1"):
        sc.mgu(I, H, reset_gate=1)


# ----------------------------------------------- every new cell composes with every composer
#
# One test per composer, parametrised over the six new cells (vector and convolutional alike),
# each against a plain Python loop over the cell's own step.

from rnnjax import conv_cells, norm_cells  # noqa: E402

T, B, V, W = 5, 2, 6, 4  # steps, batch, vocabulary (decoding), width of the 1-D conv inputs
NEW_CELLS = {  # name -> (factory(in, out), spatial shape of x)
    "layer_norm_lstm": (norm_cells.layer_norm_lstm, ()),
    "layer_norm_gru": (norm_cells.layer_norm_gru, ()),
    "indrnn": (sc.indrnn, ()),
    "mgu": (sc.mgu, ()),
    "conv_lstm": (lambda i, h: conv_cells.conv_lstm(i, h, (3,)), (W,)),
    "conv_gru": (lambda i, h: conv_cells.conv_gru(i, h, (3,)), (W,)),
}
LENGTHS = np.array([T, 3])


@pytest.fixture(scope="module")
def new_cell_inputs():
    """name -> (factory, spatial shape, xs [T, B, *spatial, I]) for every new cell."""
    key = jax.random.key(17)
    return {name: (factory, spatial, normal(jax.random.fold_in(key, k), (T, B, *spatial, I)))
            for k, (name, (factory, spatial)) in enumerate(NEW_CELLS.items())}


def loop(step, params, carry, xs):
    """The reference: a Python loop over time."""
    ys = []
    for t in range(xs.shape[0]):
        carry, y = step(params, carry, xs[t])
        ys.append(y)
    return carry, jnp.stack(ys)


def close(a, b, atol=1e-5):
    jax.tree_util.tree_map(lambda u, v: np.testing.assert_allclose(u, v, atol=atol), a, b)


def per_sequence(cell, params, xs, reverse=False):
    """Each sequence run alone over its valid prefix (reversed for the backward direction)."""
    outs = []
    for b, n in enumerate(LENGTHS):
        x = xs[:n, b][::-1] if reverse else xs[:n, b]
        carry, ys = loop(cell.step, params, cell.initial_carry(xs.shape[2:-1]), x)
        outs.append((carry, ys[::-1] if reverse else ys))
    return outs


@pytest.mark.parametrize("name", list(NEW_CELLS))
def test_rnn_with_lengths(name, new_cell_inputs):
    factory, _, xs = new_cell_inputs[name]
    cell = factory(I, H)
    model = rj.rnn(cell)
    params = model.init(jax.random.key(0))
    carry, ys = jax.jit(model.apply)(params, xs, lengths=LENGTHS)
    for b, (want_carry, want_ys) in enumerate(per_sequence(cell, params, xs)):
        n = LENGTHS[b]
        close(ys[:n, b], want_ys)
        np.testing.assert_array_equal(ys[n:, b], 0.0)  # padding
        close(jax.tree_util.tree_map(lambda a: a[b], carry), want_carry)


@pytest.mark.parametrize("name", list(NEW_CELLS))
def test_deep(name, new_cell_inputs):
    factory, _, xs = new_cell_inputs[name]
    c1, c2 = factory(I, H), factory(H, H)
    model = rj.deep(c1, c2)
    params = model.init(jax.random.key(1))
    carries, ys = model.apply(params, xs)
    lead = xs.shape[1:-1]
    k1, ys1 = loop(c1.step, params[0], c1.initial_carry(lead), xs)
    k2, ys2 = loop(c2.step, params[1], c2.initial_carry(lead), ys1)
    close(ys, ys2)
    close(tuple(carries), (k1, k2))


@pytest.mark.parametrize("name", list(NEW_CELLS))
def test_bidirectional_with_lengths(name, new_cell_inputs):
    factory, _, xs = new_cell_inputs[name]
    fwd, bwd = factory(I, H), factory(I, H)
    model = rj.bidirectional(fwd, bwd)
    params = model.init(jax.random.key(2))
    carry, ys = model.apply(params, xs, lengths=LENGTHS)
    assert ys.shape == xs.shape[:-1] + (2 * H,)
    forwards = per_sequence(fwd, params.fwd, xs)
    backwards = per_sequence(bwd, params.bwd, xs, reverse=True)
    for b, ((kf, yf), (kb, yb)) in enumerate(zip(forwards, backwards, strict=True)):
        n = LENGTHS[b]
        close(ys[:n, b], jnp.concatenate([yf, yb], axis=-1))
        np.testing.assert_array_equal(ys[n:, b], 0.0)
        close(jax.tree_util.tree_map(lambda a: a[b], carry.fwd), kf)
        close(jax.tree_util.tree_map(lambda a: a[b], carry.bwd), kb)


@pytest.mark.parametrize("name", list(NEW_CELLS))
def test_stack_and_greedy_decoding(name, new_cell_inputs):
    """Two stacked layers read one-hot tokens and emit logits; greedy decoding feeds back the argmax.
    Conv cells decode one token per position of a 1-D map (tokens [B, W])."""
    factory, spatial, _ = new_cell_inputs[name]
    c1, c2 = factory(V, H), factory(H, H)
    stacked = rj.stack(c1, c2)
    k1, k2 = jax.random.split(jax.random.key(3))
    params = (stacked.init(k1), rj.dense_init(k2, H, V))

    def step(params, state, token):
        state, y = stacked.step(params[0], state, rj.one_hot(token, V))
        return state, rj.dense(params[1], y)

    start = jnp.arange(B * int(np.prod(spatial, dtype=int))).reshape((B, *spatial)) % V
    state0 = stacked.initial_carry((B, *spatial))
    tokens, lengths = jax.jit(lambda p, s, t: rj.greedy(step, p, s, t, max_len=4))(params, state0, start)
    # reference: the two layers by hand
    s1, s2, token, want = c1.initial_carry((B, *spatial)), c2.initial_carry((B, *spatial)), start, []
    for _ in range(4):
        s1, y1 = c1.step(params[0][0], s1, jax.nn.one_hot(token, V))
        s2, y2 = c2.step(params[0][1], s2, y1)
        token = jnp.argmax(y2 @ params[1].w + params[1].b, axis=-1)
        want.append(token)
    np.testing.assert_array_equal(tokens, jnp.stack(want))
    np.testing.assert_array_equal(lengths, 4)
    if not spatial:  # and as a language model's step, for the vector cells
        lm = rj.language_model(stacked, V)
        lm_params = rj.LanguageModelParams(None, params[0], params[1])
        lm_tokens, _ = rj.greedy(lm.step, lm_params, lm.initial_carry((B,)), start, max_len=4)
        np.testing.assert_array_equal(lm_tokens, tokens)


def flattened(cell, spatial):
    """The conv step on ``[..., W*I]`` inputs and ``[..., W*H]`` carries: deer_scan vmaps the step
    over every axis before the features, so a spatial cell goes in with its map as one vector."""
    def step(params, carry, x):
        lead = x.shape[:-1]
        unflat = jax.tree_util.tree_map(lambda a: a.reshape(lead + spatial + (-1,)), carry)
        new, y = cell.step(params, unflat, x.reshape(lead + spatial + (-1,)))
        flat = jax.tree_util.tree_map(lambda a: a.reshape(lead + (-1,)), new)
        return flat, y.reshape(lead + (-1,))
    return step


@pytest.mark.parametrize("name", list(NEW_CELLS))
def test_deer_scan_newton_and_quasi(name, new_cell_inputs):
    factory, spatial, xs = new_cell_inputs[name]
    cell = factory(I, H)
    params = cell.init(jax.random.key(4))
    carry = cell.initial_carry(xs.shape[1:-1])
    want_carry, want_ys = loop(cell.step, params, carry, xs)
    step = cell.step
    if spatial:
        step = flattened(cell, spatial)
        carry = jax.tree_util.tree_map(lambda a: a.reshape(B, -1), carry)
        xs = xs.reshape(T, B, -1)
        want_carry = jax.tree_util.tree_map(lambda a: a.reshape(B, -1), want_carry)
        want_ys = want_ys.reshape(T, B, -1)
    for method in ("newton", "quasi"):
        got_carry, got_ys, info = rj.deer_scan(step, params, carry, xs, method=method, max_iters=T)
        close(got_ys, want_ys, atol=1e-4)
        close(got_carry, want_carry, atol=1e-4)
        assert not bool(info.fell_back)


# ------------------------------------------------------------------- the precision policy


@pytest.mark.parametrize("name", list(SIMPLE_CELLS))
def test_bf16_compute_policy(name):
    from tests.test_norm_cells import check_bf16_policy

    factory, _ = SIMPLE_CELLS[name]
    c32, c16 = factory(I, H), factory(I, H, dtype=jnp.bfloat16)
    params = random_params(c32, jax.random.key(8))
    carry = normal(jax.random.key(9), (3, H))
    xs = normal(jax.random.key(10), (6, 3, I))
    found = check_bf16_policy(c32, c16, params, carry, xs, jnp.array([6, 4, 1]), 1 if name.startswith("indrnn") else 2)
    # the quasi-DEER Jacobian diagonal takes the same keywords and stays close to float32's
    diag16 = rj._registry.diag_jacobian(c16.step)(params, carry, xs[0])
    diag32 = rj._registry.diag_jacobian(c32.step)(params, carry, xs[0])
    assert found[0].diag_jacobian is not None and diag16.dtype == jnp.float32
    np.testing.assert_allclose(diag16, diag32, atol=3e-2 * float(jnp.abs(diag32).max()))


@pytest.mark.parametrize("kw", [{"dtype": jnp.int32}, {"param_dtype": "int8"}, {"carry_dtype": None}])
def test_precision_keywords_are_checked(kw):
    name = next(iter(kw))
    for factory in (sc.indrnn, sc.mgu):
        with pytest.raises(TypeError, match=f"{name}: expected a floating-point dtype"):
            factory(I, H, **kw)
