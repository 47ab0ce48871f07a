"""learned_initial_state: a trainable initial carry, broadcast over the batch.

References: NumPy equations (tests/reference.py) started from the learned carry for every
sequence alone (with lengths and reverse), the wrapped cell run from the broadcast learned
carry (decoders, seq2seq), central finite differences in float64 for the gradient, and a
short training run in which the learned carry must move.
"""

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

import rnnjax as rj
from tests import reference as ref

T, B, D, H = 5, 3, 2, 4
LENGTHS = np.array([5, 2, 0])


def normal(scale=0.7):
    return jax.nn.initializers.normal(scale)


def np_params(p):
    return {k: np.asarray(v, np.float64) for k, v in p._asdict().items()}


def np_run(f, p, seq, carry, reverse=False):
    """One unpadded sequence ``seq [L, I]`` through NumPy step ``f`` from ``carry``."""
    out = [None] * len(seq)
    for t in range(len(seq) - 1, -1, -1) if reverse else range(len(seq)):
        carry, out[t] = f(p, carry, np.asarray(seq[t], np.float64))
    return carry, out


def np_model(f, p, xs, lengths, carry0, reverse=False):
    """``[T, B, H]`` outputs (zero padding) and per-sequence final carries of a padded batch."""
    xs = np.asarray(xs, np.float64)
    ys, finals = None, []
    for b in range(xs.shape[1]):
        carry, out = np_run(f, p, xs[: lengths[b], b], carry0, reverse)
        finals.append(carry)
        if ys is None:
            ys = np.zeros((xs.shape[0], xs.shape[1], np.shape(carry0[0] if isinstance(carry0, tuple) else carry0)[-1]))
        for t, y in enumerate(out):
            ys[t, b] = y
    return ys, finals


def np_lstm_carry0(params):
    return tuple(np.asarray(a, np.float64) for a in params.carry0)


@pytest.fixture
def xs():
    return jnp.asarray(np.random.default_rng(0).standard_normal((T, B, D)), jnp.float32)


# ----------------------------------------------------------------------------- the step


def test_first_step_starts_from_the_learned_carry_and_later_steps_from_the_carry():
    cell = rj.learned_initial_state(rj.lstm(D, H), init=normal())
    params = cell.init(jax.random.key(0))
    x = np.random.default_rng(1).standard_normal((B, D)).astype(np.float32)
    carry, y = jax.jit(cell.step)(params, cell.initial_carry((B,)), x)
    h0, c0 = np_lstm_carry0(params)
    assert np.abs(h0).max() > 0.1  # a non-trivial learned carry
    (want_h, want_c), want_y = ref.lstm(np_params(params.cell), (np.tile(h0, (B, 1)), np.tile(c0, (B, 1))), x)
    np.testing.assert_allclose(y, want_y, atol=1e-5)
    np.testing.assert_allclose(carry.carry.c, want_c, atol=1e-5)
    assert carry.started.tolist() == [True] * B
    # the second step reads the carry, not the learned value
    _, y2 = jax.jit(cell.step)(params, carry, x)
    _, want_y2 = ref.lstm(np_params(params.cell), (want_h, want_c), x)
    np.testing.assert_allclose(y2, want_y2, atol=1e-5)


def test_default_init_is_the_wrapped_cell(xs):
    inner = rj.gru(D, H)
    cell = rj.learned_initial_state(inner)
    params = cell.init(jax.random.key(3))
    assert jax.tree_util.tree_all(jax.tree_util.tree_map(np.array_equal, params.cell, inner.init(jax.random.key(3))))
    assert float(jnp.abs(params.carry0).max()) == 0.0
    carry, ys = rj.rnn(cell).apply(params, xs, lengths=LENGTHS)
    want_carry, want_ys = rj.rnn(inner).apply(params.cell, xs, lengths=LENGTHS)
    np.testing.assert_allclose(ys, want_ys, atol=1e-6)
    np.testing.assert_allclose(carry.carry, want_carry, atol=1e-6)


def test_stacked_inner_carry_learns_every_layer():
    cell = rj.learned_initial_state(rj.stack(rj.lstm(D, H), rj.gru(H, H)), init=normal())
    params = cell.init(jax.random.key(1))
    assert isinstance(params.carry0, rj.StackedCarry) and params.carry0[0].h.shape == (H,)
    x = np.random.default_rng(2).standard_normal((B, D)).astype(np.float32)
    carry, y = cell.step(params, cell.initial_carry((B,)), x)
    (h1, c1), y1 = ref.lstm(np_params(params.cell[0]), tuple(np.tile(np.asarray(a), (B, 1)) for a in params.carry0[0]), x)
    h2, y2 = ref.gru(np_params(params.cell[1]), np.tile(np.asarray(params.carry0[1]), (B, 1)), y1)
    np.testing.assert_allclose(y, y2, atol=1e-5)
    np.testing.assert_allclose(rj.carry_hidden(carry), h2, atol=1e-5)


def test_gradient_of_the_learned_carry_equals_finite_differences():
    with jax.enable_x64(True):
        cell = rj.learned_initial_state(rj.gru(D, H, param_dtype=jnp.float64, carry_dtype=jnp.float64), init=normal())
        params = cell.init(jax.random.key(4))
        rng = np.random.default_rng(5)
        xs = jnp.asarray(rng.standard_normal((T, B, D)))
        w = jnp.asarray(rng.standard_normal((T, B, H)))
        model = rj.rnn(cell, reverse=True)

        def loss(carry0):
            _, ys = model.apply(params._replace(carry0=carry0), xs, lengths=jnp.asarray([5, 3, 1]))
            return jnp.sum(w * jnp.tanh(ys))

        grad = np.asarray(jax.jit(jax.grad(loss))(params.carry0))
        eps, c0 = 1e-6, np.asarray(params.carry0)
        f = jax.jit(loss)
        fd = np.array([(f(c0 + eps * e) - f(c0 - eps * e)) / (2 * eps) for e in np.eye(H)])
        assert np.abs(grad).max() > 1e-3
        np.testing.assert_allclose(grad, fd, rtol=1e-6, atol=1e-9)


# ----------------------------------------------------------------------------- composers


@pytest.mark.parametrize("reverse", [False, True])
def test_rnn_with_lengths_starts_each_sequence_from_the_learned_carry(xs, reverse):
    cell = rj.learned_initial_state(rj.lstm(D, H), init=normal())
    params = cell.init(jax.random.key(6))
    carry, ys = jax.jit(lambda p, x: rj.rnn(cell, reverse=reverse).apply(p, x, lengths=LENGTHS))(params, xs)
    want_ys, finals = np_model(ref.lstm, np_params(params.cell), xs, LENGTHS, np_lstm_carry0(params), reverse)
    np.testing.assert_allclose(ys, want_ys, atol=1e-5)
    # padding never flips `started`: the empty sequence keeps its unstarted zero carry
    assert carry.started.tolist() == [True, True, False]
    for b in range(2):
        np.testing.assert_allclose(carry.carry.h[b], finals[b][0], atol=1e-5)
        np.testing.assert_allclose(carry.carry.c[b], finals[b][1], atol=1e-5)
    assert float(jnp.abs(carry.carry.h[2]).max()) == 0.0


def test_deep_runs_each_layer_from_its_learned_carry(xs):
    model = rj.deep(rj.learned_initial_state(rj.lstm(D, H), init=normal()),
                    rj.learned_initial_state(rj.gru(H, H), init=normal()))
    params = model.init(jax.random.key(7))
    carry, ys = jax.jit(lambda p, x: model.apply(p, x, lengths=LENGTHS))(params, xs)
    ys1, _ = np_model(ref.lstm, np_params(params[0].cell), xs, LENGTHS, np_lstm_carry0(params[0]))
    ys2, finals = np_model(ref.gru, np_params(params[1].cell), ys1, LENGTHS, np.asarray(params[1].carry0, np.float64))
    np.testing.assert_allclose(ys, ys2, atol=1e-5)
    np.testing.assert_allclose(rj.carry_hidden(carry)[:2], np.stack(finals[:2]), atol=1e-5)


def test_bidirectional_starts_both_directions_from_their_learned_carries(xs):
    model = rj.bidirectional(rj.learned_initial_state(rj.gru(D, H), init=normal()),
                             rj.learned_initial_state(rj.gru(D, H), init=normal()))
    params = model.init(jax.random.key(8))
    carry, ys = jax.jit(lambda p, x: model.apply(p, x, lengths=LENGTHS))(params, xs)
    fwd, f_fin = np_model(ref.gru, np_params(params.fwd.cell), xs, LENGTHS, np.asarray(params.fwd.carry0, np.float64))
    bwd, b_fin = np_model(ref.gru, np_params(params.bwd.cell), xs, LENGTHS, np.asarray(params.bwd.carry0, np.float64),
                          reverse=True)
    np.testing.assert_allclose(ys, np.concatenate([fwd, bwd], -1), atol=1e-5)
    np.testing.assert_allclose(rj.carry_hidden(carry)[:2],
                               np.concatenate([np.stack(f_fin[:2]), np.stack(b_fin[:2])], -1), atol=1e-5)


def _broadcast(tree, batch):
    return jax.tree_util.tree_map(lambda a: jnp.broadcast_to(a, batch + a.shape), tree)


@pytest.mark.parametrize("outer", [False, True])
def test_stack_decoding_equals_the_inner_cell_from_the_broadcast_learned_carry(outer):
    V, E = 7, 3
    if outer:  # the whole stack's carry learned
        cell = rj.learned_initial_state(rj.stack(rj.gru(E, H), rj.lstm(H, H)), init=normal())
    else:  # only the bottom layer's
        cell = rj.stack(rj.learned_initial_state(rj.gru(E, H), init=normal()), rj.lstm(H, H))
    lm = rj.language_model(cell, V, embed_size=E)
    params = lm.init(jax.random.key(9))
    inner = rj.language_model(rj.stack(rj.gru(E, H), rj.lstm(H, H)), V, embed_size=E)
    if outer:
        inner_params = params._replace(cell=params.cell.cell)
        state = _broadcast(params.cell.carry0, (2,))
    else:
        inner_params = params._replace(cell=(params.cell[0].cell, params.cell[1]))
        state = rj.StackedCarry((_broadcast(params.cell[0].carry0, (2,)), inner.initial_carry((2,))[1]))
    start = jnp.array([1, 4])
    @jax.jit
    def decode(params, inner_params, state):
        return (rj.greedy(lm.step, params, lm.initial_carry((2,)), start, max_len=6),
                rj.greedy(inner.step, inner_params, state, start, max_len=6),
                rj.beam_search(lm.step, params, lm.initial_carry((2,)), start, max_len=4, beam_size=3),
                rj.beam_search(inner.step, inner_params, state, start, max_len=4, beam_size=3),
                lm.step(params, lm.initial_carry((2,)), start)[1])

    got, want, got_beam, want_beam, logits = decode(params, inner_params, state)
    np.testing.assert_array_equal(got[0], want[0])
    np.testing.assert_array_equal(got_beam[0], want_beam[0])
    np.testing.assert_allclose(got_beam[2], want_beam[2], atol=1e-5)
    # and the first logits are the NumPy equations from the learned carry
    emb = np.asarray(params.embed, np.float64)[np.asarray(start)]
    if outer:
        g0, (lh, lc) = np.asarray(params.cell.carry0[0]), (np.asarray(a) for a in params.cell.carry0[1])
        p1, p2 = params.cell.cell
    else:
        g0, (lh, lc) = np.asarray(params.cell[0].carry0), (np.zeros(H), np.zeros(H))
        p1, p2 = params.cell[0].cell, params.cell[1]
    _, y1 = ref.gru(np_params(p1), np.tile(g0, (2, 1)), emb)
    _, y2 = ref.lstm(np_params(p2), (np.tile(lh, (2, 1)), np.tile(lc, (2, 1))), y1)
    np.testing.assert_allclose(logits, y2 @ np.asarray(params.out.w) + np.asarray(params.out.b), atol=1e-5)


@pytest.mark.parametrize("attention", [False, True])
def test_seq2seq_decoder_starts_from_the_learned_carry(attention):
    E, S, Tt, V = 3, 4, 3, 6
    att = rj.additive_attention(H, H, 4) if attention else None
    make = lambda dec: rj.seq2seq(rj.gru(E, H), dec, src_vocab=V, tgt_vocab=V, embed_size=E, attention=att)
    model = make(rj.learned_initial_state(rj.gru(E + H, H), init=normal()))
    inner = make(rj.gru(E + H, H))
    params = model.init(jax.random.key(10))
    inner_params = params._replace(decoder=params.decoder.cell)
    rng = np.random.default_rng(11)
    src, tgt = jnp.asarray(rng.integers(0, V, (S, 2))), jnp.asarray(rng.integers(0, V, (Tt, 2)))
    lengths = jnp.array([4, 2])

    @jax.jit
    def run_inner(p, state):
        return run(inner.step, p, state)

    @jax.jit
    def run_model(p, state):
        return run(model.step, p, state._replace(carry=rj.learned_carry(p.decoder, state.carry)))

    def run(step, p, state):
        out = []
        for t in range(Tt):
            state, logits = step(p, state, tgt[t])
            out.append(logits)
        return jnp.stack(out)

    state = inner.encode(inner_params, src, lengths=lengths)
    want = run_inner(inner_params, state._replace(carry=_broadcast(params.decoder.carry0, (2,))))
    # the learned value written into the carry: the attention's first query is the learned state
    state = model.encode(params, src, lengths=lengths)
    got = run_model(params, state)
    np.testing.assert_allclose(got, want, atol=1e-5)
    if not attention:  # the first query is not read: teacher forcing from the plain initial carry agrees
        logits, _ = model.apply(params, src, tgt, src_lengths=lengths)
        np.testing.assert_allclose(logits, want, atol=1e-5)


def test_a_reset_carry_restarts_from_the_learned_state(xs):
    cell = rj.learned_initial_state(rj.gru(D, H), init=normal())
    params = cell.init(jax.random.key(12))
    resets = jnp.zeros((T, B), bool).at[3, 1].set(True)
    _, ys = rj.truncated_scan(cell.step, params, cell.initial_carry((B,)), xs, resets=resets)
    # sequence 1 from t = 3 is a fresh sequence from the learned carry
    _, want = np_run(ref.gru, np_params(params.cell), np.asarray(xs[3:, 1]), np.asarray(params.carry0, np.float64))
    np.testing.assert_allclose(ys[3:, 1], np.stack(want), atol=1e-5)
    # and resetting to initial_carry by hand does the same
    carry, _ = rj.scan(cell.step, params, cell.initial_carry((B,)), xs[:3])
    fresh = cell.initial_carry((B,))
    carry = jax.tree_util.tree_map(lambda f, c: c.at[1].set(f[1]), fresh, carry)  # sequence 1 reset
    assert carry.started.tolist() == [True, False, True]
    _, ys2 = rj.scan(cell.step, params, carry, xs[3:])
    np.testing.assert_allclose(ys2[:, 1], np.stack(want), atol=1e-5)


def test_with_hidden_carry_hidden_and_learned_carry():
    cell = rj.learned_initial_state(rj.lstm(D, H), init=normal())
    params = cell.init(jax.random.key(13))
    x = np.random.default_rng(14).standard_normal((B, D)).astype(np.float32)
    v = np.random.default_rng(15).standard_normal((B, H)).astype(np.float32)
    start = rj.with_hidden(cell.initial_carry((B,)), v)  # the given h is the one the step reads
    assert start.started.tolist() == [True] * B
    _, y = cell.step(params, start, x)
    _, want = ref.lstm(np_params(params.cell), (v, np.zeros((B, H))), x)
    np.testing.assert_allclose(y, want, atol=1e-5)
    # carry_hidden reads the inner carry: zeros before the first step, the learned h after learned_carry
    assert float(jnp.abs(rj.carry_hidden(cell.initial_carry((B,)))).max()) == 0.0
    full = rj.learned_carry(params, cell.initial_carry((B,)))
    np.testing.assert_allclose(rj.carry_hidden(full), np.tile(np.asarray(params.carry0.h), (B, 1)))
    np.testing.assert_array_equal(cell.step(params, full, x)[1], cell.step(params, cell.initial_carry((B,)), x)[1])


def test_recurrent_dropout_masks_the_wrapped_cells_hidden_state(xs):
    inner = rj.gru(D, H)
    cell = rj.learned_initial_state(inner)  # zeros: equal to the inner cell with the same masks
    params = cell.init(jax.random.key(16))
    key = jax.random.key(17)
    _, got = rj.rnn(cell, recurrent_dropout=0.5).apply(params, xs, lengths=LENGTHS, train=True, key=key)
    _, want = rj.rnn(inner, recurrent_dropout=0.5).apply(params.cell, xs, lengths=LENGTHS, train=True, key=key)
    _, plain = rj.rnn(inner).apply(params.cell, xs, lengths=LENGTHS)
    np.testing.assert_allclose(got, want, atol=1e-6)
    assert float(jnp.abs(got - plain).max()) > 1e-3  # the masks did act


def test_conv_cell_learns_a_map_with_lengths_over_the_batch_axis():
    cell = rj.learned_initial_state(rj.conv_gru(1, 2, kernel_size=(3,)), init=normal(), step_shape=(6,))
    params = cell.init(jax.random.key(18))
    assert params.carry0.shape == (6, 2)
    xs = jnp.asarray(np.random.default_rng(19).standard_normal((3, 2, 6, 1)), jnp.float32)
    inner = rj.conv_gru(1, 2, kernel_size=(3,))

    @jax.jit
    def run(params, xs):
        carry, ys = rj.rnn(cell).apply(params, xs, lengths=jnp.array([3, 1]))
        _, want = rj.scan(inner.step, params.cell, _broadcast(params.carry0, (2,)), xs)  # unpadded, from c₀
        return carry, ys, want

    carry, ys, want = run(params, xs)
    assert carry.started.shape == (2,)
    np.testing.assert_allclose(ys[:, 0], want[:, 0], atol=1e-5)
    np.testing.assert_allclose(ys[:1, 1], want[:1, 1], atol=1e-5)
    assert float(jnp.abs(ys[1:, 1]).max()) == 0.0


def test_training_moves_the_learned_carry():
    # the target at t = 0 is reachable only through the initial state (the inputs are zeros)
    cell = rj.learned_initial_state(rj.gru(1, H))
    params = cell.init(jax.random.key(20))
    xs, target = jnp.zeros((3, 8, 1)), jnp.full((3, 8, H), 0.5)
    model = rj.rnn(cell)

    def loss(p):
        return jnp.mean((model.apply(p, xs)[1] - target) ** 2)

    opt = optax.adam(0.05)

    @jax.jit
    def update(p, s):
        value, g = jax.value_and_grad(loss)(p)
        u, s = opt.update(g, s)
        return optax.apply_updates(p, u), s, value

    state, first = opt.init(params), float(loss(params))
    p = params
    for _ in range(40):
        p, state, value = update(p, state)
    assert float(jnp.abs(p.carry0).max()) > 0.1
    assert float(value) < 0.5 * first


# ----------------------------------------------------------------------------- errors


def test_errors_name_the_argument():
    cell = rj.learned_initial_state(rj.gru(D, H))
    params = cell.init(jax.random.key(0))
    x = jnp.ones((B, D))
    with pytest.raises(TypeError, match="params: expected LearnedStateParams"):
        cell.step(params.cell, cell.initial_carry((B,)), x)
    with pytest.raises(TypeError, match="carry: expected LearnedStateCarry"):
        cell.step(params, jnp.zeros((B, H)), x)
    with pytest.raises(ValueError, match=r"params.carry0: expected the trailing axes"):
        cell.step(params._replace(carry0=jnp.zeros(H + 1)), cell.initial_carry((B,)), x)
    with pytest.raises(TypeError, match="cell: expected a rnnjax.Cell"):
        rj.learned_initial_state(rj.gru)
    with pytest.raises(ValueError, match="step_shape"):
        rj.learned_initial_state(rj.conv_gru(1, 2, kernel_size=(3,)))
    with pytest.raises(ValueError, match=r"batch_shape: expected \(\*batch, \*step_shape\)"):
        rj.learned_initial_state(rj.conv_gru(1, 2, kernel_size=(3,)), step_shape=(6,)).initial_carry((2, 5))
    int_cell = rj.Cell(lambda k: (), lambda b=(): jnp.zeros(b, jnp.int32), lambda p, c, x: (c, x))
    with pytest.raises(TypeError, match="must be floating"):
        rj.learned_initial_state(int_cell)
    with pytest.raises(ValueError, match="parallel"):
        rj.rnn(rj.learned_initial_state(rj.min_gru(D, H)), parallel=True)
