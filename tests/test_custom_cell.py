"""A user-written cell composes, unchanged, into every architecture.

The "dampened" unit a_t = σ(x_t w + λ a_{t-1} + b), with a learned scalar λ, is written below
against the public step contract only (plain jax.numpy, no rnnjax internals) and used as is in
scan, stack, a deep bidirectional model, an encoder–decoder with attention, and beam search.
The library's ``rj.dampened`` is checked to be the same function.
"""

from typing import NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from jax.test_util import check_grads

import rnnjax as rj
from rnnjax import _registry

T, B, D, H = 5, 3, 2, 4
LENGTHS = np.array([5, 2, 4])


# ---- the user's code: nothing but the step contract step(params, carry, x) -> (carry, y) ----


class Damp(NamedTuple):
    w: jax.Array  # [I, H]
    lam: jax.Array  # []
    b: jax.Array  # [H]


def user_step(params, a, x):
    a = jax.nn.sigmoid(x @ params.w + params.lam * a + params.b)
    return a, a


def user_cell(input_size, hidden_size):
    def init(key):
        k1, k2 = jax.random.split(key)
        return Damp(0.7 * jax.random.normal(k1, (input_size, hidden_size)), jnp.asarray(0.8),
                    0.1 * jax.random.normal(k2, (hidden_size,)))

    def initial_carry(batch_shape=()):
        return jnp.zeros(tuple(batch_shape) + (hidden_size,))

    return rj.Cell(init, initial_carry, user_step)


# --------------------------------------------------------------------------------------------


def random_params(init, key, scale=0.5):
    """Params shaped like ``init(key)``, every leaf drawn N(0, scale²); skips the real initialisers."""
    leaves, treedef = jax.tree_util.tree_flatten(jax.eval_shape(init, key))
    rng = np.random.default_rng(np.asarray(jax.random.key_data(key)).tolist())  # NumPy draws: no compiles
    return jax.tree_util.tree_unflatten(
        treedef, [jnp.asarray(scale * rng.standard_normal(s.shape), s.dtype) for s in leaves])


def _np_loop(params, xs):
    """NumPy equations over one unpadded sequence xs [L, I]; returns (a_L, ys [L, H])."""
    w, lam, b = (np.asarray(p, np.float64) for p in params)
    a, ys = np.zeros(w.shape[1]), []
    for x in np.asarray(xs, np.float64):
        a = 1 / (1 + np.exp(-(x @ w + lam * a + b)))
        ys.append(a)
    return a, np.stack(ys)


@pytest.fixture
def xs(key):
    return jax.random.normal(key, (T, B, D))


def test_library_dampened_is_the_users_cell(key, xs):
    lib = rj.dampened(D, H)
    params = user_cell(D, H).init(key)
    lib_params = rj.DampenedParams(*params)
    carry = jax.random.uniform(key, (B, H))
    a1, y1 = user_step(params, carry, xs[0])
    a2, y2 = lib.step(lib_params, carry, xs[0])
    np.testing.assert_allclose(a2, a1, atol=1e-6)
    np.testing.assert_allclose(y2, y1, atol=1e-6)
    assert lib.initial_carry((B,)).shape == (B, H)
    assert lib.init(key).lam.shape == ()
    # No private fast path: scan treats it like any user step.
    assert _registry.lookup(rj.dampened_step) is None
    with pytest.raises(ValueError, match=r"x: expected shape \[\*batch, 2\] \(I from params.w\), got \(3, 5\)"):
        lib.step(lib_params, carry, jnp.ones((B, 5)))
    with pytest.raises(ValueError, match=r"carry: expected shape \[\*batch, 4\] with \*batch = \(3,\)"):
        lib.step(lib_params, carry[:2], xs[0])


def test_scan_equals_numpy_equations_per_sequence(key, xs):
    cell = user_cell(D, H)
    params = cell.init(key)
    carry, ys = jax.jit(lambda p, x: rj.scan(user_step, p, cell.initial_carry((B,)), x, lengths=LENGTHS))(params, xs)
    for b, n in enumerate(LENGTHS):
        a, want = _np_loop(params, xs[:n, b])
        np.testing.assert_allclose(ys[:n, b], want, atol=1e-5)
        np.testing.assert_array_equal(ys[n:, b], 0.0)
        np.testing.assert_allclose(carry[b], a, atol=1e-5)


def test_gradient_reaches_lambda(key, xs):
    cell = user_cell(D, H)
    params = cell.init(key)
    loss = jax.jit(lambda p: jnp.sum(rj.scan(user_step, p, cell.initial_carry((B,)), xs, lengths=LENGTHS)[1] ** 2))
    check_grads(loss, (params,), order=1, modes=["rev"], atol=1e-2, rtol=1e-2)
    assert float(jnp.abs(jax.grad(loss)(params).lam)) > 0


def test_stack_of_user_cells(key, xs):
    c1, c2 = user_cell(D, H), user_cell(H, 3)
    deep_cell = rj.stack(c1, c2)
    params = deep_cell.init(key)
    (a1, a2), y = deep_cell.step(params, deep_cell.initial_carry((B,)), xs[0])
    want1, _ = user_step(params[0], jnp.zeros((B, H)), xs[0])
    want2, _ = user_step(params[1], jnp.zeros((B, 3)), want1)
    np.testing.assert_allclose(a1, want1, atol=1e-6)
    np.testing.assert_allclose(y, want2, atol=1e-6)


def test_deep_bidirectional_of_user_cells_equals_each_sequence_alone(key, xs):
    model = rj.deep(rj.bidirectional(user_cell(D, H), user_cell(D, H)),
                    rj.bidirectional(user_cell(2 * H, H), user_cell(2 * H, H)), dropout=0.3)
    params = model.init(key)
    carries, ys = jax.jit(model.apply)(params, xs, lengths=LENGTHS)
    for b, n in enumerate(LENGTHS):
        seq = np.asarray(xs[:n, b])
        f1 = _np_loop(params[0].fwd, seq)
        b1 = _np_loop(params[0].bwd, seq[::-1])
        mid = np.concatenate([f1[1], b1[1][::-1]], -1)
        f2 = _np_loop(params[1].fwd, mid)
        b2 = _np_loop(params[1].bwd, mid[::-1])
        np.testing.assert_allclose(ys[:n, b], np.concatenate([f2[1], b2[1][::-1]], -1), atol=1e-5)
        np.testing.assert_array_equal(ys[n:, b], 0.0)
        np.testing.assert_allclose(carries[1].bwd[b], b2[0], atol=1e-5)
    # Training mode draws dropout masks between the layers.
    _, ys_train = model.apply(params, xs, lengths=LENGTHS, train=True, key=jax.random.key(1))
    assert not np.allclose(ys_train, ys)


def test_encoder_decoder_and_beam_search_with_user_cells(key):
    E, K, V = 3, 2 * H, 6
    model = rj.seq2seq(rj.bidirectional(user_cell(E, H), user_cell(E, H)),
                       rj.stack(user_cell(E + K, H), user_cell(H, H)),
                       src_vocab=V, tgt_vocab=V, embed_size=E, attention=rj.additive_attention(H, K, 5))
    params = random_params(model.init, key)
    src = jnp.asarray(np.random.default_rng(0).integers(0, V, (4, B)))
    tgt_in = jnp.asarray(np.random.default_rng(1).integers(0, V, (3, B)))
    logits, weights = jax.jit(model.apply)(params, src, tgt_in, src_lengths=np.array([4, 1, 3]))
    np.testing.assert_allclose(weights.sum(-1), 1.0, atol=1e-6)
    np.testing.assert_array_equal(weights[:, 1, 1:], 0.0)
    state = model.encode(params, src, lengths=np.array([4, 1, 3]))
    step, s = jax.jit(model.step), state
    for t in range(3):
        s, lt = step(params, s, tgt_in[t])
        np.testing.assert_allclose(lt, logits[t], atol=1e-5)
    start = jnp.zeros(B, jnp.int32)
    tokens, lengths, scores = rj.beam_search(model.step, params, state, start, max_len=4, beam_size=2, eos=1)
    assert tokens.shape == (4, B, 2) and np.isfinite(np.asarray(scores)).all()
    assert (np.diff(np.asarray(scores), axis=-1) <= 1e-6).all()  # best first
    # The best hypothesis's score is its length-normalised log-probability under teacher forcing.
    for b in range(B):
        s, prev, logp, n = jax.tree_util.tree_map(lambda a, b=b: a[b], state), 0, 0.0, int(lengths[b, 0])
        for t in range(n):
            s, lt = step(params, s, jnp.asarray(prev))
            prev = int(tokens[t, b, 0])
            logp += float(jax.nn.log_softmax(lt)[prev])
        np.testing.assert_allclose(float(scores[b, 0]), logp / n, rtol=1e-4)
