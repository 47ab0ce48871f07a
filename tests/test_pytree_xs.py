"""``xs`` as a pytree of sequences (several feature streams, observation + action) in every time
loop and composer: the same results as the one array the step makes of them, concatenated
here by hand, with lengths, reverse, resets, batch-major data and gradients."""

import functools

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import rnnjax as rj

T, B, O, A, H = 7, 3, 4, 2, 5
LENGTHS = jnp.array([7, 4, 1])
RESETS = jnp.zeros((T, B), bool).at[3, 0].set(True).at[2, 1].set(True)
CELL = rj.gru(O + A, H)
PARAMS = CELL.init(jax.random.key(0))
OBS = jax.random.normal(jax.random.key(1), (T, B, O))
ACT = jax.random.normal(jax.random.key(2), (T, B, A))
XS = {"act": ACT, "obs": OBS}
FLAT = jnp.concatenate([OBS, ACT], axis=-1)


def joint_step(p, h, x):  # the user's step reads the dict
    return rj.gru_step(p, h, jnp.concatenate([x["obs"], x["act"]], axis=-1))


JOINT = rj.Cell(CELL.init, CELL.initial_carry, joint_step)


def close(a, b):
    for x, y in zip(jax.tree.leaves(a), jax.tree.leaves(b), strict=True):
        np.testing.assert_allclose(x, y, rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("reverse", [False, True])
@pytest.mark.parametrize("packed", [False, True])
def test_scan_of_a_pytree_equals_scan_of_the_concatenation(reverse, packed):
    resets = RESETS if packed else None
    h0 = CELL.initial_carry((B,))
    got = rj.scan(joint_step, PARAMS, h0, XS, lengths=LENGTHS, reverse=reverse, resets=resets)
    want = rj.scan(CELL.step, PARAMS, h0, FLAT, lengths=LENGTHS, reverse=reverse, resets=resets)
    close(got, want)
    assert float(jnp.abs(got[1][1:, 2]).max()) == 0.0  # padding outputs zero
    # batch-major, the time axis after the batch axes of every leaf
    bm = jax.tree.map(lambda a: jnp.swapaxes(a, 0, 1), XS)
    carry, ys = rj.scan(joint_step, PARAMS, h0, bm, lengths=LENGTHS, reverse=reverse,
                        resets=None if resets is None else resets.T, time_major=False)
    close((carry, jnp.swapaxes(ys, 0, 1)), want)
    # gradients through the pytree, to the params and to every leaf
    def loss(p, xs):
        return jnp.sum(jnp.sin(rj.scan(joint_step, p, h0, xs, lengths=LENGTHS, reverse=reverse, resets=resets)[1]))

    def flat_loss(p, xs):
        return jnp.sum(jnp.sin(rj.scan(CELL.step, p, h0, xs, lengths=LENGTHS, reverse=reverse, resets=resets)[1]))

    g_p, g_x = jax.grad(loss, argnums=(0, 1))(PARAMS, XS)
    f_p, f_x = jax.grad(flat_loss, argnums=(0, 1))(PARAMS, FLAT)
    close(g_p, f_p)
    close((g_x["obs"], g_x["act"]), (f_x[..., :O], f_x[..., O:]))


def test_long_sequence_loops_take_a_pytree():
    h0 = CELL.initial_carry((B,))
    for reverse in (False, True):
        want = rj.scan(CELL.step, PARAMS, h0, FLAT, resets=RESETS, reverse=reverse)
        close(rj.truncated_scan(joint_step, PARAMS, h0, XS, truncate=3, resets=RESETS, reverse=reverse), want)
        close(rj.remat_scan(joint_step, PARAMS, h0, XS, segment=3, resets=RESETS, reverse=reverse), want)
    want = rj.scan(CELL.step, PARAMS, h0, FLAT, lengths=LENGTHS)
    close(rj.remat_scan(joint_step, PARAMS, h0, XS, lengths=LENGTHS, segment=2), want)


def test_composers_take_a_pytree():
    flat_model = rj.deep(rj.bidirectional(CELL, CELL), rj.gru(2 * H, H), dropout=0.0)
    params = flat_model.init(jax.random.key(3))
    model = rj.deep(rj.bidirectional(JOINT, JOINT), rj.gru(2 * H, H))
    close(jax.jit(functools.partial(model.apply, lengths=LENGTHS, resets=RESETS))(params, XS),
          flat_model.apply(params, FLAT, lengths=LENGTHS, resets=RESETS))
    # a SeqModel as the backward direction gets the pytree flipped sequence by sequence
    flat_bi = rj.bidirectional(CELL, rj.rnn(CELL))
    bi = rj.bidirectional(JOINT, rj.rnn(JOINT))
    bi_params = flat_bi.init(jax.random.key(4))
    close(bi.apply(bi_params, XS, lengths=LENGTHS), flat_bi.apply(bi_params, FLAT, lengths=LENGTHS))
    # batch-major at the top
    bm = rj.rnn(JOINT, time_major=False)
    carry, ys = bm.apply(PARAMS, jax.tree.map(lambda a: jnp.swapaxes(a, 0, 1), XS), lengths=LENGTHS)
    close((carry, jnp.swapaxes(ys, 0, 1)), rj.rnn(CELL).apply(PARAMS, FLAT, lengths=LENGTHS))
    flipped = rj.flip_sequences(XS, LENGTHS)
    close(flipped["obs"], rj.flip_sequences(OBS, LENGTHS))


def test_pytree_errors_name_the_leaf():
    h0 = CELL.initial_carry((B,))
    with pytest.raises(ValueError, match=r"xs\['obs'\]: expected 7 time steps like xs\['act'\]"):
        rj.scan(joint_step, PARAMS, h0, {"act": ACT, "obs": OBS[:5]})
    with pytest.raises(ValueError, match=r"xs\['obs'\]: expected shape \[T, 3, \.\.\.\] \(the batch axes of lengths\)"):
        rj.scan(joint_step, PARAMS, h0, {"act": ACT, "obs": OBS[:, :2]}, lengths=LENGTHS)
    with pytest.raises(ValueError, match="xs: expected an array"):
        rj.scan(joint_step, PARAMS, h0, {})
    with pytest.raises(ValueError, match="xs: the parallel forms take one array"):
        rj.rnn(rj.min_gru(O, H), parallel=True).apply(rj.min_gru(O, H).init(jax.random.key(0)), {"a": OBS})
    with pytest.raises(ValueError, match="the leaves put their time axis at different places"):
        rj.scan(joint_step, PARAMS, h0, {"act": jnp.swapaxes(ACT, 0, 1), "obs": jnp.ones((B, T, 2, O))},
                time_major=False)
