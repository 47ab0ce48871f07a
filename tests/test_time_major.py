"""``time_major=False``: every batch-major path equals the time-major call on transposed data.

B == T here on purpose (5 sequences of 5 steps): a layout mistake would then go unnoticed by
shapes, and only the values tell.
"""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import rnnjax as rj

chex = pytest.importorskip("chex", reason="needs the dev extra: pip install -e '.[dev]'")
# chex.assert_trees_all_close checks the trees' structures as well as their values
assert_trees_close = chex.assert_trees_all_close

T = B = 5
I, H = 3, 4
LENGTHS = jnp.array([5, 3, 1, 0, 4])


def bm(x):  # time-major [T, B, ...] -> batch-major [B, T, ...]
    return jnp.swapaxes(x, 0, 1)


@pytest.fixture(scope="module")
def xs():
    return jax.random.normal(jax.random.key(0), (T, B, I))


@pytest.fixture(scope="module")
def lstm():
    cell = rj.lstm(I, H)
    return cell, cell.init(jax.random.key(1))


@pytest.mark.parametrize("fused", [True, False])
@pytest.mark.parametrize("reverse", [False, True])
def test_scan(xs, lstm, fused, reverse):
    cell, params = lstm
    step = cell.step if fused else (lambda p, c, x: cell.step(p, c, x))
    c0 = cell.initial_carry((B,))
    carry, ys = rj.scan(step, params, c0, xs, lengths=LENGTHS, reverse=reverse)
    carry_b, ys_b = rj.scan(step, params, c0, bm(xs), lengths=LENGTHS, reverse=reverse, time_major=False)
    assert_trees_close((carry_b, ys_b), (carry, bm(ys)), atol=1e-6)
    # without lengths, time is the second axis from the end
    _, ys_full = rj.scan(step, params, c0, bm(xs), time_major=False)
    assert_trees_close(ys_full, bm(rj.scan(step, params, c0, xs)[1]), atol=1e-6)


def test_long_sequence_scans(xs, lstm):
    cell, params = lstm
    c0 = cell.initial_carry((B,))
    resets = jnp.zeros((T, B), bool).at[2, 1].set(True)
    want = rj.truncated_scan(cell.step, params, c0, xs, truncate=2, resets=resets)
    got = rj.truncated_scan(cell.step, params, c0, bm(xs), truncate=2, resets=bm(resets), time_major=False)
    assert_trees_close(got, (want[0], bm(want[1])), atol=1e-6)
    want = rj.remat_scan(cell.step, params, c0, xs, lengths=LENGTHS, reverse=True, segment=2)
    got = rj.remat_scan(cell.step, params, c0, bm(xs), lengths=LENGTHS, reverse=True, segment=2, time_major=False)
    assert_trees_close(got, (want[0], bm(want[1])), atol=1e-6)
    np.testing.assert_array_equal(rj.flip_sequences(bm(xs), LENGTHS, time_major=False),
                                  bm(rj.flip_sequences(xs, LENGTHS)))


def test_models_and_pooling(xs):
    builders = {
        "rnn": lambda tm: rj.rnn(rj.gru(I, H), reverse=True, time_major=tm),
        "deep": lambda tm: rj.deep(rj.lstm(I, H), rj.elman(H, H), residual=True, time_major=tm),
        "bidirectional": lambda tm: rj.bidirectional(rj.lstm(I, H), rj.deep(rj.gru(I, H)), time_major=tm),
    }
    for name, build in builders.items():
        model, model_b = build(True), build(False)
        params = model.init(jax.random.key(2))
        carry, ys = model.apply(params, xs, lengths=LENGTHS)
        carry_b, ys_b = model_b.apply(params, bm(xs), lengths=LENGTHS)
        assert_trees_close((carry_b, ys_b), (carry, bm(ys)), atol=1e-6)
        for pool in (rj.pool_last, rj.pool_mean, rj.pool_max):
            np.testing.assert_allclose(pool(ys_b, LENGTHS, time_major=False), pool(ys, LENGTHS), atol=1e-6,
                                       err_msg=f"{name} {pool.__name__}")


def test_seq2seq():
    kwargs = dict(src_vocab=7, tgt_vocab=6, embed_size=3, attention=rj.dot_attention())
    model = rj.seq2seq(rj.gru(3, H), rj.gru(3 + H, H), **kwargs)
    model_b = rj.seq2seq(rj.gru(3, H), rj.gru(3 + H, H), time_major=False, **kwargs)
    params = model.init(jax.random.key(3))
    src = jax.random.randint(jax.random.key(4), (T, B), 0, 7)
    tgt = jax.random.randint(jax.random.key(5), (4, B), 0, 6)
    logits, weights = model.apply(params, src, tgt, src_lengths=LENGTHS.at[3].set(2))
    logits_b, weights_b = model_b.apply(params, bm(src), bm(tgt), src_lengths=LENGTHS.at[3].set(2))
    assert_trees_close((logits_b, weights_b), (bm(logits), bm(weights)), atol=1e-6)
    assert_trees_close(model_b.encode(params, bm(src)), model.encode(params, src), atol=1e-6)


def test_batch_major_shape_errors(lstm):
    cell, params = lstm
    with pytest.raises(ValueError, match=r"xs: expected a batch-major shape \[\*batch, T, F\] \(time_major=False\)"):
        rj.scan(cell.step, params, cell.initial_carry(()), jnp.ones((3,)), time_major=False)
    with pytest.raises(TypeError, match="time_major: expected a bool, got 'no'"):
        rj.rnn(cell, time_major="no")


def test_losses_and_masks():
    key = jax.random.key(7)
    logits = jax.random.normal(key, (T, B, 6))
    labels = jax.random.randint(jax.random.fold_in(key, 1), (T, B), 0, 6)
    preds, targets = logits[..., :2], jax.random.normal(jax.random.fold_in(key, 2), (T, B, 2))
    np.testing.assert_array_equal(rj.mask_from_lengths(LENGTHS, T, time_major=False),
                                  bm(rj.mask_from_lengths(LENGTHS, T)))
    for reduction in ("mean", "sum", "none"):
        want = rj.sequence_cross_entropy(logits, labels, lengths=LENGTHS, reduction=reduction)
        got = rj.sequence_cross_entropy(bm(logits), bm(labels), lengths=LENGTHS, reduction=reduction,
                                        time_major=False)
        np.testing.assert_allclose(got, bm(want) if reduction == "none" else want, atol=1e-6)
        want = rj.sequence_mse(preds, targets, lengths=LENGTHS, reduction=reduction)
        got = rj.sequence_mse(bm(preds), bm(targets), lengths=LENGTHS, reduction=reduction, time_major=False)
        np.testing.assert_allclose(got, bm(want) if reduction == "none" else want, atol=1e-6)
    mask = rj.mask_from_lengths(LENGTHS, T)
    np.testing.assert_allclose(rj.sequence_accuracy(bm(logits), bm(labels), mask=bm(mask), time_major=False),
                               rj.sequence_accuracy(logits, labels, mask=mask), atol=1e-7)


def test_decoding_outputs():
    lm = rj.language_model(rj.gru(3, H), 7, embed_size=3)
    params = lm.init(jax.random.key(8))
    state, start = lm.initial_carry((B,)), jnp.zeros((B,), jnp.int32)
    tokens, lengths = rj.greedy(lm.step, params, state, start, max_len=4, eos=1)
    tokens_b, lengths_b = rj.greedy(lm.step, params, state, start, max_len=4, eos=1, time_major=False)
    np.testing.assert_array_equal(tokens_b, bm(tokens))
    np.testing.assert_array_equal(lengths_b, lengths)
    key = jax.random.key(9)
    np.testing.assert_array_equal(rj.sample(lm.step, params, state, start, key, max_len=4, time_major=False)[0],
                                  bm(rj.sample(lm.step, params, state, start, key, max_len=4)[0]))
    beams = rj.beam_search(lm.step, params, state, start, max_len=4, beam_size=2)
    beams_b = rj.beam_search(lm.step, params, state, start, max_len=4, beam_size=2, time_major=False)
    np.testing.assert_array_equal(beams_b[0], jnp.moveaxis(beams[0], 0, -1))  # [B, K, max_len]
    np.testing.assert_allclose(beams_b[2], beams[2])
