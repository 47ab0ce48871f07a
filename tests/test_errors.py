"""Bad input fails early with a message naming the argument, what was expected and what was given."""

import re

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import rnnjax as rj

I, H, T, B = 3, 4, 5, 2


@pytest.fixture(scope="module")
def lstm_setup():
    cell = rj.lstm(I, H)
    return cell, cell.init(jax.random.key(0)), cell.initial_carry((B,)), jnp.ones((T, B, I))


def raises(exc, pattern):
    return pytest.raises(exc, match=re.escape(pattern))


def test_wrong_feature_size(lstm_setup):
    cell, params, carry, _ = lstm_setup
    with raises(ValueError, "xs: expected shape [T, *batch, 3] (input_size from params.w_ih), got (5, 2, 9)"):
        rj.scan(cell.step, params, carry, jnp.ones((T, B, 9)))
    with raises(ValueError, "x: expected shape [*batch, 3] (input_size from params.w_ih), got (2, 9)"):
        cell.step(params, carry, jnp.ones((B, 9)))


def test_wrong_rank_and_empty_sequence(lstm_setup):
    cell, params, carry, _ = lstm_setup
    with raises(ValueError, "xs: expected shape [T, *batch, I] (at least 2 axes), got (5,)"):
        rj.scan(cell.step, params, carry, jnp.ones((T,)))
    with raises(ValueError, "xs: expected at least one time step (T >= 1), got shape (0, 2, 3)"):
        rj.scan(cell.step, params, carry, jnp.ones((0, B, I)))
    with raises(TypeError, "xs: expected an array, got list"):
        rj.scan(cell.step, params, carry, [[1.0]])


def test_carry_batch_mismatch(lstm_setup):
    cell, params, _, xs = lstm_setup
    with raises(ValueError, "carry.h: expected shape [2, 4], got (3, 4)"):
        rj.scan(cell.step, params, cell.initial_carry((3,)), xs)
    with raises(ValueError, "carry.c: expected shape [2, 4], got (2, 5)"):
        rj.lstm_step(params, rj.LSTMState(jnp.zeros((B, H)), jnp.zeros((B, 5))), xs[0])


def test_lengths_shape_dtype_and_range(lstm_setup):
    cell, params, carry, xs = lstm_setup
    with raises(ValueError, "lengths: expected shape [2] (the batch axes of xs), got (3,)"):
        rj.scan(cell.step, params, carry, xs, lengths=jnp.array([1, 2, 3]))
    with raises(TypeError, "lengths: expected an integer array, got dtype float32"):
        rj.scan(cell.step, params, carry, xs, lengths=jnp.array([1.0, 2.0]))
    with raises(ValueError, "lengths: expected values in [0, 5] (T = xs.shape[0]), got min 1 and max 6"):
        rj.scan(cell.step, params, carry, xs, lengths=jnp.array([1, 6]))
    with raises(ValueError, "got min -1 and max 2"):
        rj.scan(cell.step, params, carry, xs, lengths=np.array([-1, 2]))


def test_mismatched_param_shapes(lstm_setup):
    cell, params, carry, xs = lstm_setup
    with raises(ValueError, "params.w_hh: expected shape [H, 4H], got (4, 12)"):
        rj.scan(cell.step, params._replace(w_hh=jnp.zeros((H, 3 * H))), carry, xs)
    with raises(ValueError, "params.b: expected shape [16], got (12,)"):
        rj.scan(cell.step, params._replace(b=jnp.zeros(3 * H)), carry, xs)
    with raises(ValueError, "params.w_ih: expected shape [I, 16] (4H with H = 4 from params.w_hh), got (3, 12)"):
        cell.step(params._replace(w_ih=jnp.zeros((I, 3 * H))), carry, xs[0])
    gru = rj.gru(I, H).init(jax.random.key(0))
    with raises(ValueError, "params.b_hh: expected shape [12], got (4,)"):
        rj.gru_step(gru._replace(b_hh=jnp.zeros(H)), jnp.zeros((B, H)), xs[0])
    peep = rj.peephole_lstm(I, H).init(jax.random.key(0))
    with raises(ValueError, "params.w_co: expected shape [4], got (5,)"):
        rj.peephole_lstm_step(peep._replace(w_co=jnp.zeros(5)), carry, xs[0])


def test_integer_inputs_are_rejected(lstm_setup):
    cell, params, carry, _ = lstm_setup
    with raises(TypeError, "x: expected a floating-point array, got dtype int32"):
        cell.step(params, carry, jnp.ones((B, I), jnp.int32))


def test_user_step_that_changes_its_carry():
    def bad_step(params, h, x):
        return h.astype(jnp.float16), h

    with raises(ValueError, "carry: step returned shape (2, 4) float16 for a carry of shape (2, 4) float32"):
        rj.scan(bad_step, None, jnp.zeros((B, H)), jnp.ones((T, B, I)))

    def grows(params, h, x):
        return jnp.concatenate([h, h], -1), h

    with raises(ValueError, "carry: step returned shape (2, 8)"):
        rj.scan(grows, None, jnp.zeros((B, H)), jnp.ones((T, B, I)))


def test_user_carry_without_batch_axes_cannot_use_lengths():
    def step(params, count, x):
        return count + 1, x

    with raises(ValueError, "carry: with lengths, every carry and output leaf must start with the batch axes [2]"):
        rj.scan(step, None, jnp.zeros(()), jnp.ones((T, B, I)), lengths=jnp.array([1, 2]))
    # without lengths a carry of any shape is fine
    count, _ = rj.scan(step, None, jnp.zeros(()), jnp.ones((T, B, I)))
    assert float(count) == T


def test_other_arguments(lstm_setup):
    cell, params, carry, xs = lstm_setup
    with raises(TypeError, "step: expected a function step(params, carry, x), got str"):
        rj.scan("lstm", params, carry, xs)
    with raises(ValueError, "unroll: expected an int >= 1 or True, got 0"):
        rj.scan(cell.step, params, carry, xs, unroll=0)
    with raises(TypeError, "reverse: expected a bool, got 'yes'"):
        rj.scan(cell.step, params, carry, xs, reverse="yes")
    with raises(ValueError, "hidden_size: expected a positive int, got 0"):
        rj.gru(3, 0)
    with raises(ValueError, "input_size: expected a positive int, got 2.5"):
        rj.lstm(2.5, 3)
    with raises(ValueError, "activation: expected one of ['relu', 'sigmoid', 'tanh'] or a callable, got 'gelu'"):
        rj.elman(3, 4, activation="gelu")
    with raises(TypeError, "batch_shape: expected a tuple of ints such as (4,), got 'abc'"):
        cell.initial_carry("abc")


def test_errors_are_raised_before_tracing_under_jit(lstm_setup):
    cell, params, carry, xs = lstm_setup
    f = jax.jit(lambda c, x, n: rj.scan(cell.step, params, c, x, lengths=n))
    with raises(ValueError, "lengths: expected shape [2]"):
        f(carry, xs, jnp.array([1, 2, 3]))
    with raises(ValueError, "xs: expected shape [T, *batch, 3]"):
        f(carry, jnp.ones((T, B, 4)), jnp.array([1, 2]))


def test_wrong_carry_or_params_kind_for_a_built_in_step():
    lstm, gru, peephole = rj.lstm(I, H), rj.gru(I, H), rj.peephole_lstm(I, H)
    key = jax.random.key(0)
    xs = jnp.ones((T, B, I))
    with pytest.raises(TypeError, match=r"carry: expected an LSTMState\(h, c\) .*got an array of shape \(2, 4\)"):
        rj.scan(lstm.step, lstm.init(key), gru.initial_carry((B,)), xs)
    carry = lstm.initial_carry((B,))
    with pytest.raises(TypeError, match=r"carry: expected an LSTMState\(h, c\) .*got tuple"):
        rj.lstm_step(lstm.init(key), (carry.h, carry.c), xs[0])
    with pytest.raises(TypeError, match=r"params: expected PeepholeLSTMParams\(w_ih, w_hh, b, w_ci, w_cf, w_co\), "
                       r"got LSTMParams without w_ci, w_cf, w_co"):
        rj.scan(peephole.step, lstm.init(key), carry, xs)
    with pytest.raises(TypeError, match=r"params: expected GRUParams\(w_ih, w_hh, b_ih, b_hh\), got LSTMParams"):
        rj.gru_step(lstm.init(key), gru.initial_carry((B,)), xs[0])


def test_bidirectional_names_the_failing_direction_and_the_merge():
    key = jax.random.key(0)
    xs = jnp.ones((T, B, I))
    bi = rj.bidirectional(rj.lstm(I, H), rj.lstm(I, H + 1), merge="sum")
    with pytest.raises(ValueError, match=r"merge: 'sum' needs forward and backward outputs of one shape, "
                       r"got \(5, 2, 4\) and \(5, 2, 5\)"):
        bi.apply(bi.init(key), xs)
    bi = rj.bidirectional(rj.lstm(I, H), rj.lstm(I + 2, H))
    with pytest.raises(ValueError, match=r"xs: expected shape") as info:
        bi.apply(bi.init(key), xs)
    assert "(raised by the backward layer of bidirectional)" in info.value.__notes__


def test_top_k_logits_checks_k():
    logits = jnp.ones((2, 5))
    with pytest.raises(ValueError, match=r"k: expected at most 5 \(the size of the last axis of logits\), got 9"):
        rj.top_k_logits(logits, 9)
    with pytest.raises(ValueError, match=r"k: expected"):
        rj.top_k_logits(logits, 0)
    np.testing.assert_array_equal(rj.top_k_logits(jnp.array([1.0, 3.0, 2.0]), 3), [1.0, 3.0, 2.0])


def test_loss_lengths_errors_name_the_loss_arguments():
    with pytest.raises(ValueError, match=r"lengths: expected values in \[0, 5\] \(T = logits.shape\[0\]\), got min 1 and max 6"):
        rj.sequence_cross_entropy(jnp.zeros((5, 2, 7)), jnp.zeros((5, 2), int), lengths=jnp.array([6, 1]))
    with pytest.raises(ValueError, match=r"lengths: expected values in \[0, 5\] \(T = num_steps\), got min 1 and max 9"):
        rj.mask_from_lengths(jnp.array([1, 9]), 5)


def test_batch_major_xs_is_explained_by_the_time_major_note():
    cell = rj.lstm(I, H)
    with pytest.raises(ValueError, match=r"carry.h: expected shape") as info:
        rj.scan(cell.step, cell.init(jax.random.key(0)), cell.initial_carry((B,)), jnp.ones((B, T, I)))
    assert any("xs is time-major [T, *batch, I], so T = 2 and *batch = (5,)" in n for n in info.value.__notes__)


def test_a_step_returning_only_the_carry_is_named():
    h = jnp.zeros((B, H))
    with pytest.raises(TypeError, match=r"step: expected it to return \(carry, y\), got one array of shape \(2, 4\)"):
        rj.scan(lambda p, c, x: c, None, h, jnp.ones((T, B, I)))
    with pytest.raises(TypeError, match=r"step: expected it to return \(carry, y\), got a tuple of 3"):
        rj.scan(lambda p, c, x: (c, c, c), None, h, jnp.ones((T, B, I)))


def test_seq2seq_attention_key_size_mismatch_is_explained_at_init():
    model = rj.seq2seq(rj.lstm(8, 6), rj.stack(rj.lstm(14, 6)), src_vocab=10, tgt_vocab=12, embed_size=8,
                       attention=rj.additive_attention(6, 7, 5))
    with pytest.raises(ValueError, match=r"memory: expected shape \[\*batch, S, 7\]") as info:
        model.init(jax.random.key(0))
    assert any("the attention's key size must equal the encoder's output size" in n for n in info.value.__notes__)
