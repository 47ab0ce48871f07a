"""A cell whose carry is a plain tuple is one cell, never a stack of layers.

``stack`` and ``deep`` give their carries the type ``StackedCarry``; ``carry_hidden``,
``with_hidden`` and recurrent dropout follow that type. A user's LSTM variant written with a
``(h, c)`` tuple carry runs through every composer and decoder unchanged, and wherever its
hidden state would have to be guessed the library says so instead of reading ``c``.
"""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import rnnjax as rj

I, H, B, T = 3, 4, 2, 5
LENGTHS = jnp.array([5, 3])


def tuple_lstm_step(p, carry, x):
    """An LSTM written as a user would, with a plain ``(h, c)`` tuple carry."""
    h, c = carry
    i, f, g, o = jnp.split(x @ p.w_ih + h @ p.w_hh + p.b, 4, axis=-1)
    c = jax.nn.sigmoid(f) * c + jax.nn.sigmoid(i) * jnp.tanh(g)
    h = jax.nn.sigmoid(o) * jnp.tanh(c)
    return (h, c), h


def tuple_cell(i=I, h=H):
    base = rj.lstm(i, h)
    return rj.Cell(base.init, lambda batch=(): tuple(base.initial_carry(batch)), tuple_lstm_step)


def accumulator_step(p, carry, x):
    """Counts steps in both entries of a tuple carry: (n, n) after n steps."""
    a, b = carry
    return (a + 1.0, b + 1.0), a + 1.0


ACCUMULATOR = rj.Cell(lambda key: (), lambda batch=(): (jnp.zeros((*batch, 1)), jnp.zeros((*batch, 1))),
                      accumulator_step)


@pytest.fixture(scope="module")
def setup():
    key = jax.random.key(0)
    cell = tuple_cell()
    params = cell.init(key)
    xs = jax.random.normal(jax.random.fold_in(key, 1), (T, B, I))
    return cell, params, xs


def reference(params, xs, lengths, reverse=False):
    """The built-in LSTM on the same weights: the tuple cell must give exactly its values."""
    carry, ys = rj.scan(rj.lstm_step, params, rj.lstm(I, H).initial_carry((B,)), xs, lengths=lengths,
                        reverse=reverse)
    return (carry.h, carry.c), ys


def test_rnn_and_bidirectional_run_a_tuple_carry_cell(setup):
    cell, params, xs = setup
    carry, ys = rj.rnn(cell).apply(params, xs, lengths=LENGTHS)
    want_carry, want_ys = reference(params, xs, LENGTHS)
    assert type(carry) is tuple
    np.testing.assert_allclose(ys, want_ys, atol=1e-6)
    np.testing.assert_allclose(carry[1], want_carry[1], atol=1e-6)
    bi = rj.bidirectional(cell, cell)
    carry, ys = bi.apply(rj.BiParams(params, params), xs, lengths=LENGTHS)
    _, back = reference(params, xs, LENGTHS, reverse=True)
    np.testing.assert_allclose(ys, jnp.concatenate([want_ys, back], -1), atol=1e-6)


def test_stack_and_deep_wrap_layers_in_stacked_carry(setup):
    cell, params, xs = setup
    two = rj.stack(cell, tuple_cell(H, H))
    p2 = (params, tuple_cell(H, H).init(jax.random.key(3)))
    init = two.initial_carry((B,))
    assert isinstance(init, rj.StackedCarry) and len(init) == 2 and type(init[0]) is tuple
    stacked_carry, stacked_ys = rj.scan(two.step, p2, init, xs, lengths=LENGTHS)
    deep_carry, deep_ys = rj.deep(cell, tuple_cell(H, H)).apply(p2, xs, lengths=LENGTHS)
    assert isinstance(stacked_carry, rj.StackedCarry) and isinstance(deep_carry, rj.StackedCarry)
    np.testing.assert_allclose(stacked_ys, deep_ys, atol=1e-6)
    for a, b in zip(jax.tree_util.tree_leaves(stacked_carry), jax.tree_util.tree_leaves(deep_carry), strict=True):
        np.testing.assert_allclose(a, b, atol=1e-6)
    # a plain tuple given to the stacked step comes back a plain tuple (scan keeps its structure)
    plain, _ = rj.scan(two.step, p2, tuple(init), xs)
    assert type(plain) is tuple


def test_hidden_state_of_a_plain_tuple_is_never_guessed(setup):
    cell, params, xs = setup
    carry = cell.initial_carry((B,))
    with pytest.raises(TypeError, match="plain tuple of 2 entries .one cell's carry, not a StackedCarry"):
        rj.carry_hidden(carry)
    with pytest.raises(TypeError, match="plain tuple"):
        rj.with_hidden(carry, jnp.zeros((B, H)))
    stacked = rj.StackedCarry((jnp.ones((B, H)), rj.LSTMState(2 * jnp.ones((B, H)), jnp.zeros((B, H)))))
    np.testing.assert_array_equal(rj.carry_hidden(stacked), 2.0)
    replaced = rj.with_hidden(stacked, 5 * jnp.ones((B, H)))
    assert isinstance(replaced, rj.StackedCarry)
    np.testing.assert_array_equal(replaced[0], 5.0)
    np.testing.assert_array_equal(replaced[1].h, 5.0)
    np.testing.assert_array_equal(replaced[1].c, 0.0)


def test_dropout_with_a_tuple_carry(setup):
    cell, params, xs = setup
    key = jax.random.key(7)
    # Inter-layer dropout reads outputs only: it works, and with train=False it is the identity.
    model = rj.deep(cell, tuple_cell(H, H), dropout=0.5)
    p2 = model.init(jax.random.key(1))
    _, ys_eval = model.apply(p2, xs, lengths=LENGTHS)
    _, ys_train = model.apply(p2, xs, lengths=LENGTHS, train=True, key=key)
    assert not np.allclose(ys_eval, ys_train)
    # Recurrent dropout needs the hidden state: for a plain tuple carry it refuses, naming why.
    zeros = jnp.zeros((T, B, 1))
    with pytest.raises(TypeError, match="recurrent_dropout: cannot find the hidden state .* plain tuple"):
        rj.rnn(ACCUMULATOR, recurrent_dropout=0.5).apply((), zeros, train=True, key=key)
    with pytest.raises(TypeError, match="recurrent_dropout: cannot find the hidden state .* plain tuple"):
        rj.deep(ACCUMULATOR, recurrent_dropout=0.5).apply(((),), zeros, train=True, key=key)
    # Without train the accumulator counts 1..T exactly (no mask is ever drawn).
    _, ys = rj.deep(ACCUMULATOR, recurrent_dropout=0.5).apply(((),), jnp.zeros((T, B, 1)))
    np.testing.assert_array_equal(ys[:, 0, 0], np.arange(1, T + 1))


def test_recurrent_dropout_on_stacked_layers_masks_each_hidden_state_only():
    # Two accumulator-like layers with array carries inside a stack: the StackedCarry is read layer
    # by layer, and each array carry is its own hidden state.
    def count(p, a, x):
        return a + 1.0, a + 1.0

    cell = rj.Cell(lambda k: (), lambda batch=(): jnp.zeros((*batch, 1)), count)
    model = rj.rnn(rj.stack(cell, cell), recurrent_dropout=0.5)
    _, ys = model.apply(((), ()), jnp.zeros((T, 64, 1)), train=True, key=jax.random.key(0))
    # each sequence's mask is fixed: the carry fed back is either 0 (dropped) or 2a (kept, scaled)
    kept = np.asarray(ys[1, :, 0]) == 3.0
    dropped = np.asarray(ys[1, :, 0]) == 1.0
    assert np.all(kept | dropped) and kept.any() and dropped.any()


def test_seq2seq_and_decoding_with_a_tuple_carry_cell(setup):
    cell, params, _ = setup
    src = jnp.ones((T, B), int)
    att = rj.dot_attention()
    # As the encoder with attention: memory is the encoder's outputs, its carry is not read.
    enc = rj.seq2seq(tuple_cell(4, H), rj.lstm(4 + H, H), src_vocab=6, tgt_vocab=5, embed_size=4, attention=att)
    logits, _ = enc.apply(enc.init(jax.random.key(0)), src, jnp.zeros((3, B), int), src_lengths=LENGTHS)
    assert logits.shape == (3, B, 5) and bool(jnp.isfinite(logits).all())
    # As the decoder without attention: the context is the encoder's hidden state.
    dec = rj.seq2seq(rj.gru(4, H), tuple_cell(4 + H, H), src_vocab=6, tgt_vocab=5, embed_size=4)
    dparams = dec.init(jax.random.key(1))
    state = dec.encode(dparams, src, lengths=LENGTHS)
    tokens, _ = rj.greedy(dec.step, dparams, state, jnp.zeros((B,), int), max_len=4)
    assert tokens.shape == (4, B)
    # As the decoder with attention, the query would have to be guessed: a clear error instead.
    with pytest.raises(TypeError, match="plain tuple"):
        rj.seq2seq(rj.gru(4, H), tuple_cell(4 + H, H), src_vocab=6, tgt_vocab=5, embed_size=4,
                   attention=att).init(jax.random.key(2))
    # A language model of the tuple cell decodes, and its pooled outputs are per sequence.
    lm = rj.language_model(tuple_cell(4, H), 7, embed_size=4)
    lp = lm.init(jax.random.key(3))
    out, _ = rj.greedy(lm.step, lp, lm.initial_carry((B,)), jnp.zeros((B,), int), max_len=3)
    assert out.shape == (3, B)
    _, ys = rj.rnn(cell).apply(params, jnp.ones((T, B, I)), lengths=LENGTHS)
    np.testing.assert_allclose(rj.pool_last(ys, LENGTHS)[1], ys[2, 1])
