"""Packed sequences: every driver with ``resets=`` equals running each packed sequence alone."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import rnnjax as rj
from rnnjax import _fused

I, H = 3, 4  # noqa: E741  (input and hidden sizes, as in the other tests)
SEQ_LENGTHS = [5, 2, 7, 3, 1, 4, 6]  # 28 steps in rows of 8: first-fit-decreasing needs 4 rows
ROW = 8


def _tree_max_diff(a, b):
    return max(float(jnp.max(jnp.abs(jnp.asarray(x) - jnp.asarray(y))))
               for x, y in zip(jax.tree_util.tree_leaves(a), jax.tree_util.tree_leaves(b), strict=True))


@pytest.fixture(scope="module")
def seqs():
    keys = jax.random.split(jax.random.key(7), len(SEQ_LENGTHS))
    return [jax.random.normal(k, (n, I)) for k, n in zip(keys, SEQ_LENGTHS, strict=True)]


@pytest.fixture(scope="module")
def packed(seqs):
    return rj.pack_sequences(seqs, ROW)


def with_carry(step):
    """The step, also emitting its new carry as output (to read every sequence's final carry)."""
    def step_out(p, c, x):
        c, y = step(p, c, x)
        return c, (y, c)
    return step_out


def alone(step, params, init_carry, seqs, reverse):
    """Each sequence by itself through the plain lax.scan reference: (final carries, outputs)."""
    out = []
    for x in seqs:
        carry, ys = jax.lax.scan(lambda c, x_t: step(params, c, x_t), init_carry, x, reverse=reverse)
        out.append((carry, ys))
    return out


# --------------------------------------------------------------------------------- packing


def test_pack_layout_first_fit_decreasing(seqs, packed):
    lay = packed.layout
    assert packed.xs.shape == (ROW, 4, I) and lay.num_rows == 4
    # longest first, each into the first row with room: 7+1 | 6+2 | 5+3 | 4
    assert lay.rows == (2, 1, 0, 2, 0, 3, 1) and lay.starts == (0, 6, 0, 5, 7, 0, 0)
    assert packed.lengths.tolist() == [8, 8, 8, 4]
    for i, x in enumerate(seqs):
        r, s = lay.rows[i], lay.starts[i]
        np.testing.assert_array_equal(packed.xs[s:s + len(x), r], x)
        assert bool(packed.resets[s, r]) and (packed.segment_ids[s:s + len(x), r] == i).all()
    assert int(packed.resets.sum()) == len(seqs)
    assert (packed.segment_ids[packed.lengths[None, :] <= jnp.arange(ROW)[:, None]] == -1).all()
    assert (packed.xs[packed.segment_ids < 0] == 0).all()


def test_unpack_gives_the_padded_batch_back(seqs, packed):
    padded = rj.unpack_sequences(packed.xs, packed.layout)  # [L_max, N, I]
    assert padded.shape == (max(SEQ_LENGTHS), len(seqs), I)
    for i, x in enumerate(seqs):
        np.testing.assert_array_equal(padded[: len(x), i], x)
        assert (padded[len(x):, i] == 0).all()
    batch_major = rj.pack_sequences(seqs, ROW, time_major=False)
    np.testing.assert_array_equal(batch_major.xs, jnp.moveaxis(packed.xs, 0, 1))
    np.testing.assert_array_equal(batch_major.resets, packed.resets.T)
    np.testing.assert_array_equal(rj.unpack_sequences(batch_major.xs, batch_major.layout, time_major=False),
                                  jnp.moveaxis(padded, 0, 1))


def test_pack_errors(seqs):
    with pytest.raises(ValueError, match=r"sequences\[2\]: length 7 is longer than row_length=6"):
        rj.pack_sequences(seqs, 6)
    with pytest.raises(ValueError, match="num_rows: 2 rows of row_length=8 cannot hold"):
        rj.pack_sequences(seqs, ROW, num_rows=2)
    with pytest.raises(ValueError, match=r"sequences\[1\]: expected the feature shape"):
        rj.pack_sequences([jnp.ones((2, 3)), jnp.ones((2, 4))], 4)
    with pytest.raises(ValueError, match=r"sequences\[0\]: expected shape \[L, \*F\] with L >= 1"):
        rj.pack_sequences([jnp.ones((0, 3))], 4)
    with pytest.raises(TypeError, match="layout: expected the PackLayout"):
        rj.unpack_sequences(jnp.ones((8, 4, 3)), None)
    with pytest.raises(ValueError, match=r"ys: expected shape \[8, 4, \.\.\.\]"):
        rj.unpack_sequences(jnp.ones((8, 3, 3)), rj.pack_sequences(seqs, ROW).layout)
    assert rj.pack_sequences(seqs, ROW, num_rows=6).xs.shape == (ROW, 6, I)  # spare rows: all padding


# --------------------------------------------------------------------------- rnnjax.scan


STEPS = {
    "lstm": rj.lstm(I, H), "gru": rj.gru(I, H), "elman": rj.elman(I, H),   # fused kernels
    "user": rj.dampened(I, H),                                              # the plain loop
}


@pytest.mark.parametrize("reverse", [False, True], ids=["forward", "reverse"])
@pytest.mark.parametrize("name", list(STEPS))
def test_scan_packed_equals_each_sequence_alone(name, reverse, seqs, packed):
    """Packed rows with resets vs the sequences as a padded batch (one per column, lengths, no
    resets) through the plain loop: outputs, every sequence's final carry, gradients."""
    cell = STEPS[name]
    params = cell.init(jax.random.key(1))
    lay = packed.layout
    c0 = cell.initial_carry((lay.num_rows,))
    padded, lengths = rj.unpack_sequences(packed.xs, lay), jnp.array(SEQ_LENGTHS)

    def plain(p, c, x):  # an unregistered wrapper: the plain masked loop, never the fused kernel
        return cell.step(p, c, x)

    @jax.jit
    def run(p, xs):  # a built-in step stays registered: the fused kernel sees the resets
        return rj.scan(cell.step, p, c0, xs, lengths=packed.lengths, reverse=reverse, resets=packed.resets)

    @jax.jit
    def run_alone(p, xs):
        return rj.scan(plain, p, cell.initial_carry((len(seqs),)), xs, lengths=lengths, reverse=reverse)

    want_carry, want = run_alone(params, padded)
    _, ys = run(params, packed.xs)
    np.testing.assert_allclose(rj.unpack_sequences(ys, lay), want, atol=2e-6)
    assert (ys[packed.segment_ids < 0] == 0).all()
    _, (_, carries) = rj.scan(with_carry(cell.step), params, c0, packed.xs, lengths=packed.lengths,
                              reverse=reverse, resets=packed.resets)
    for i, n in enumerate(SEQ_LENGTHS):
        end = lay.starts[i] if reverse else lay.starts[i] + n - 1  # the step each direction ends on
        got_carry = jax.tree_util.tree_map(lambda a, r=lay.rows[i], t=end: a[t, r], carries)
        assert _tree_max_diff(got_carry, jax.tree_util.tree_map(lambda a, i=i: a[i], want_carry)) < 2e-6
    # one sequence truly alone, from the plain lax.scan
    (carry_2, ys_2), = alone(cell.step, params, cell.initial_carry(()), seqs[2:3], reverse)
    np.testing.assert_allclose(ys[lay.starts[2]:lay.starts[2] + SEQ_LENGTHS[2], lay.rows[2]], ys_2, atol=2e-6)

    # gradients: a packed loss is the sum of the sequences' own losses
    weights = jax.random.normal(jax.random.key(2), padded.shape[:2] + (H,))
    g_packed = jax.jit(jax.grad(lambda p, xs: jnp.sum(rj.unpack_sequences(run(p, xs)[1], lay) * weights),
                                argnums=(0, 1)))(params, packed.xs)
    g_alone = jax.jit(jax.grad(lambda p, xs: jnp.sum(run_alone(p, xs)[1] * weights), argnums=(0, 1)))(params, padded)
    assert _tree_max_diff(g_packed[0], g_alone[0]) < 1e-5
    np.testing.assert_allclose(rj.unpack_sequences(g_packed[1], lay), g_alone[1], atol=1e-5)


@pytest.mark.slow  # compile-heavy: the second tier
@pytest.mark.parametrize("layout", ["cpu", "accelerator"])
def test_fused_kernels_with_resets_in_both_layouts(layout, packed, monkeypatch):
    monkeypatch.setattr(_fused, "LAYOUT", layout)
    for name in ("lstm", "gru", "elman"):
        cell = STEPS[name]
        params = cell.init(jax.random.key(3))
        c0 = jax.tree_util.tree_map(lambda a: a + 0.3, cell.initial_carry((packed.layout.num_rows,)))
        for reverse in (False, True):
            def f(p, c, step, reverse=reverse):
                return rj.scan(step, p, c, packed.xs, lengths=packed.lengths, reverse=reverse, resets=packed.resets)

            def plain(p, c, x, cell=cell):  # an unregistered wrapper: the plain loop
                return cell.step(p, c, x)

            assert _tree_max_diff(f(params, c0, cell.step), f(params, c0, plain)) < 1e-6

            def loss(p, c, step):
                carry, ys = f(p, c, step)
                return jnp.sum(ys ** 2) + sum(jnp.sum(leaf) for leaf in jax.tree_util.tree_leaves(carry))

            g_fused = jax.jit(jax.grad(lambda p, c, step=cell.step: loss(p, c, step), argnums=(0, 1)))(params, c0)
            g_plain = jax.jit(jax.grad(lambda p, c: loss(p, c, plain), argnums=(0, 1)))(params, c0)
            assert _tree_max_diff(g_fused, g_plain) < 1e-5


def test_reset_at_step_zero_drops_the_initial_carry_and_padding_resets_are_ignored():
    cell = rj.gru(I, H)
    params = cell.init(jax.random.key(0))
    xs = jax.random.normal(jax.random.key(1), (6, 2, I))
    c0 = jnp.ones((2, H))
    resets = jnp.zeros((6, 2), bool).at[0, 0].set(True).at[5, 1].set(True)  # row 1: t=5 is padding
    carry, ys = rj.scan(cell.step, params, c0, xs, lengths=jnp.array([6, 5]), resets=resets)
    _, want0 = rj.scan(cell.step, params, jnp.zeros((H,)), xs[:, 0])
    c1, want1 = rj.scan(cell.step, params, c0[1], xs[:5, 1])
    np.testing.assert_allclose(ys[:, 0], want0, atol=1e-6)
    np.testing.assert_allclose(ys[:5, 1], want1, atol=1e-6)
    np.testing.assert_allclose(carry[1], c1, atol=1e-6)
    # reverse: the initial carry enters each row's last sequence at its last valid step
    carry_r, ys_r = rj.scan(cell.step, params, c0, xs, lengths=jnp.array([6, 5]), reverse=True, resets=resets)
    c1r, want1r = rj.scan(cell.step, params, c0[1], xs[:5, 1], reverse=True)
    np.testing.assert_allclose(ys_r[:5, 1], want1r, atol=1e-6)
    np.testing.assert_allclose(carry_r[1], c1r, atol=1e-6)


def test_batch_major_resets_equal_the_transposed_call(packed):
    cell = rj.lstm(I, H)
    params = cell.init(jax.random.key(4))
    c0 = cell.initial_carry((packed.layout.num_rows,))
    want = rj.scan(cell.step, params, c0, packed.xs, lengths=packed.lengths, resets=packed.resets, reverse=True)
    xs_b, resets_b = jnp.moveaxis(packed.xs, 0, 1), packed.resets.T
    got = rj.scan(cell.step, params, c0, xs_b, resets=resets_b, lengths=packed.lengths, reverse=True, time_major=False)
    assert _tree_max_diff(got[0], want[0]) == 0 and float(jnp.abs(jnp.moveaxis(got[1], 1, 0) - want[1]).max()) == 0
    got = rj.truncated_scan(cell.step, params, c0, xs_b, resets=resets_b, truncate=3, time_major=False)
    want = rj.truncated_scan(cell.step, params, c0, packed.xs, resets=packed.resets, truncate=3)
    np.testing.assert_array_equal(jnp.moveaxis(got[1], 1, 0), want[1])
    model = rj.deep(rj.bidirectional(rj.lstm(I, H), rj.gru(I, H)), time_major=False)
    mp = model.init(jax.random.key(5))
    _, ys_b = model.apply(mp, xs_b, lengths=packed.lengths, resets=resets_b)
    _, ys_t = rj.deep(rj.bidirectional(rj.lstm(I, H), rj.gru(I, H))).apply(mp, packed.xs, lengths=packed.lengths,
                                                                            resets=packed.resets)
    np.testing.assert_allclose(jnp.moveaxis(ys_b, 1, 0), ys_t, atol=1e-6)


def test_bad_resets_get_clear_errors(packed):
    cell = rj.lstm(I, H)
    params = cell.init(jax.random.key(0))
    c0 = cell.initial_carry((packed.layout.num_rows,))
    with pytest.raises(TypeError, match="resets: expected a bool array, got dtype int32"):
        rj.scan(cell.step, params, c0, packed.xs, resets=packed.resets.astype(jnp.int32))
    with pytest.raises(ValueError, match=r"resets: expected shape \[8, 4\]"):
        rj.scan(cell.step, params, c0, packed.xs, resets=packed.resets[:, :3])
    def counting(p, carry, x):  # a carry leaf without the batch axes: the reset cannot pick per row
        (c, n), y = cell.step(p, carry[0], x), carry[1]
        return (c, n + 1), y

    with pytest.raises(ValueError, match=r"carry\[1\]: with resets, every carry leaf must start with the batch"):
        rj.scan(counting, params, (c0, jnp.zeros(())), packed.xs, resets=packed.resets)
    model = rj.rnn(rj.hawk_block(I, rnn_width=4), parallel=True)
    with pytest.raises(ValueError, match="resets: the parallel form of the hawk_block cell does not take resets"):
        model.apply(model.init(jax.random.key(0)), packed.xs, resets=packed.resets)


# ------------------------------------------------------------------ the other time loops


@pytest.mark.slow  # compile-heavy: the second tier
@pytest.mark.parametrize("reverse", [False, True], ids=["forward", "reverse"])
def test_truncated_and_remat_scans_with_resets_equal_scan(reverse, packed):
    cell = rj.lstm(I, H)
    params = cell.init(jax.random.key(6))
    c0 = jax.tree_util.tree_map(lambda a: a + 0.5, cell.initial_carry((packed.layout.num_rows,)))
    want = rj.scan(cell.step, params, c0, packed.xs, reverse=reverse, resets=packed.resets)
    for k in (1, 3, 8, None):
        got = rj.truncated_scan(cell.step, params, c0, packed.xs, truncate=k, resets=packed.resets, reverse=reverse)
        assert _tree_max_diff(got, want) == 0, k

    def scan_loss(p):
        return jnp.sum(rj.scan(cell.step, p, c0, packed.xs, lengths=packed.lengths, reverse=reverse,
                               resets=packed.resets)[1] ** 2)

    for segment in (2, 3, None):  # 3 does not divide T = 8: a tail segment too
        got = rj.remat_scan(cell.step, params, c0, packed.xs, lengths=packed.lengths, reverse=reverse,
                            resets=packed.resets, segment=segment)
        want = rj.scan(cell.step, params, c0, packed.xs, lengths=packed.lengths, reverse=reverse, resets=packed.resets)
        assert _tree_max_diff(got, want) < 1e-6

        def remat_loss(p, segment=segment):
            return jnp.sum(rj.remat_scan(cell.step, p, c0, packed.xs, lengths=packed.lengths, reverse=reverse,
                                         resets=packed.resets, segment=segment)[1] ** 2)

        assert _tree_max_diff(jax.jit(jax.grad(remat_loss))(params), jax.jit(jax.grad(scan_loss))(params)) < 1e-5


def test_truncated_scan_reverse_truncates_gradients_in_its_own_direction():
    cell = rj.elman(2, 3)
    params = cell.init(jax.random.key(0))
    xs = jax.random.normal(jax.random.key(1), (9, 1, 2))
    c0 = cell.initial_carry((1,))

    def dys_dx(reverse, truncate, t):  # d sum(ys[t]) / d xs
        return jax.grad(lambda x: rj.truncated_scan(cell.step, params, c0, x, truncate=truncate,
                                                    reverse=reverse)[1][t].sum())(xs)

    # reverse chunks of 3, last one first: [6, 7, 8], [3, 4, 5], [0, 1, 2]; ys[4] reads xs[4..8]
    g = jnp.abs(dys_dx(True, 3, 4)).sum(axis=(1, 2))
    assert (g[4:6] > 0).all() and (g[:4] == 0).all() and (g[6:] == 0).all()
    g_full = jnp.abs(dys_dx(True, None, 4)).sum(axis=(1, 2))
    assert (g_full[4:] > 0).all() and (g_full[:4] == 0).all()
    # values never depend on truncate
    np.testing.assert_array_equal(rj.truncated_scan(cell.step, params, c0, xs, truncate=2, reverse=True)[1],
                                  rj.scan(cell.step, params, c0, xs, reverse=True)[1])


# ------------------------------------------------------------------------------ composers


@pytest.mark.slow  # compile-heavy: the second tier
def test_deep_bidirectional_packed_equals_each_sequence_alone(seqs, packed):
    """deep(bidirectional(...)) on packed rows; the second layer's backward direction is a
    SeqModel (so bidirectional flips the rows and their resets) — values and gradients, against
    the padded batch and against one sequence run by itself."""
    model = rj.deep(rj.bidirectional(rj.lstm(I, H), rj.gru(I, H)),
                    rj.bidirectional(rj.elman(2 * H, H), rj.deep(rj.lstm(2 * H, H))))
    params = model.init(jax.random.key(8))
    lay = packed.layout
    padded, lengths = rj.unpack_sequences(packed.xs, lay), jnp.array(SEQ_LENGTHS)

    @jax.jit
    def packed_out(p, xs):
        return rj.unpack_sequences(model.apply(p, xs, lengths=packed.lengths, resets=packed.resets)[1], lay)

    @jax.jit
    def padded_out(p, xs):
        return model.apply(p, xs, lengths=lengths)[1]

    got = packed_out(params, packed.xs)
    np.testing.assert_allclose(got, padded_out(params, padded), atol=2e-6)
    np.testing.assert_allclose(got[: SEQ_LENGTHS[5], 5], model.apply(params, seqs[5][:, None])[1][:, 0], atol=2e-6)
    weights = jax.random.normal(jax.random.key(9), got.shape)
    g_packed = jax.jit(jax.grad(lambda p: jnp.sum(packed_out(p, packed.xs) * weights)))(params)
    g_padded = jax.jit(jax.grad(lambda p: jnp.sum(padded_out(p, padded) * weights)))(params)
    assert _tree_max_diff(g_packed, g_padded) < 2e-5


@pytest.mark.slow  # compile-heavy: the second tier
def test_encoder_and_pooling_per_packed_sequence(seqs, packed):
    """A seq2seq-style encoder (embedding-free: a deep bidirectional model) summarises packed
    sequences one vector each with segment pooling, as each sequence alone with lengths would."""
    enc = rj.deep(rj.bidirectional(rj.gru(I, H), rj.gru(I, H)))
    params = enc.init(jax.random.key(10))
    _, ys = enc.apply(params, packed.xs, lengths=packed.lengths, resets=packed.resets)
    n = len(seqs)
    padded = rj.unpack_sequences(packed.xs, packed.layout)
    lengths = jnp.array(SEQ_LENGTHS)
    _, ys_padded = enc.apply(params, padded, lengths=lengths)  # the padded batch, for comparison
    for how, pool in (("last", rj.pool_last), ("mean", rj.pool_mean), ("max", rj.pool_max)):
        got = pool(ys, segment_ids=packed.segment_ids, num_segments=n)
        np.testing.assert_allclose(got, pool(ys_padded, lengths), atol=2e-6, err_msg=how)
        got_b = pool(jnp.moveaxis(ys, 0, 1), segment_ids=packed.segment_ids.T, num_segments=n, time_major=False)
        np.testing.assert_array_equal(got_b, got)
    # the per-token loss over packed rows equals the padded batch's
    labels = jax.random.randint(jax.random.key(11), padded.shape[:2], 0, 2 * H)
    packed_labels = jnp.zeros(packed.segment_ids.shape, jnp.int32)
    lay = packed.layout
    for i in range(n):
        packed_labels = packed_labels.at[lay.starts[i]:lay.starts[i] + SEQ_LENGTHS[i], lay.rows[i]].set(
            labels[: SEQ_LENGTHS[i], i])
    np.testing.assert_allclose(rj.sequence_cross_entropy(ys, packed_labels, lengths=packed.lengths),
                               rj.sequence_cross_entropy(ys_padded, labels, lengths=lengths), rtol=1e-6)
    np.testing.assert_allclose(rj.sequence_cross_entropy(ys, packed_labels, mask=packed.segment_ids >= 0),
                               rj.sequence_cross_entropy(ys_padded, labels, lengths=lengths), rtol=1e-6)


def test_segment_pool_errors(packed):
    ys = jnp.ones(packed.segment_ids.shape + (2,))
    with pytest.raises(ValueError, match="num_segments: expected the number of packed sequences"):
        rj.pool_last(ys, segment_ids=packed.segment_ids)
    with pytest.raises(ValueError, match="lengths: not with segment_ids"):
        rj.pool_mean(ys, packed.lengths, segment_ids=packed.segment_ids, num_segments=7)
    with pytest.raises(ValueError, match=r"segment_ids: expected ids in \[-1, num_segments=3\), got 6"):
        rj.pool_max(ys, segment_ids=packed.segment_ids, num_segments=3)
    with pytest.raises(ValueError, match=r"segment_ids: expected shape \[8, 4\] or a leading part"):
        rj.pool_max(ys, segment_ids=packed.segment_ids[:, :2], num_segments=7)
    with pytest.raises(TypeError, match="segment_ids: expected an integer array"):
        rj.pool_max(ys, segment_ids=packed.segment_ids.astype(jnp.float32), num_segments=7)


# ------------------------------------------------------------------------ parallel forms


PARALLEL = {"min_gru": rj.min_gru(I, H), "min_lstm": rj.min_lstm(I, H), "lru": rj.lru(I, H),
            "rg_lru": rj.rg_lru(I, H), "selective_ssm": rj.selective_ssm(I, H),
            "mlstm": rj.mlstm(I, 8, num_heads=2)}


@pytest.mark.slow  # compile-heavy: the second tier
@pytest.mark.parametrize("name", list(PARALLEL))
def test_parallel_forms_with_resets_equal_the_step_loop(name, packed):
    cell = PARALLEL[name]
    params = cell.init(jax.random.key(12))
    for reverse in (False, True):
        seq, par = rj.rnn(cell, reverse=reverse), rj.rnn(cell, reverse=reverse, parallel=True)

        def loss(p, model):
            carry, ys = model.apply(p, packed.xs, lengths=packed.lengths, resets=packed.resets)
            return jnp.sum(ys ** 2) + sum(jnp.sum(jnp.abs(c) ** 2) for c in jax.tree_util.tree_leaves(carry)), (carry, ys)

        (_, want), g_want = jax.jit(jax.value_and_grad(lambda p, m=seq: loss(p, m), has_aux=True))(params)
        (_, got), g_got = jax.jit(jax.value_and_grad(lambda p, m=par: loss(p, m), has_aux=True))(params)
        assert _tree_max_diff(got, want) < 1e-5
        scale = max(float(jnp.abs(g).max()) for g in jax.tree_util.tree_leaves(g_want))
        assert _tree_max_diff(g_got, g_want) < 1e-5 * max(1.0, scale)


def test_mlstm_chunkwise_resets_across_chunk_edges(packed):
    """mLSTM's chunkwise form with resets inside chunks and on their edges: the outputs and the
    carry (its stabiliser m included) equal the step loop's."""
    cell = rj.mlstm(I, 8, num_heads=2)
    params = cell.init(jax.random.key(15))
    c0 = jax.tree_util.tree_map(lambda a: a + 0.2, cell.initial_carry((packed.layout.num_rows,)))
    xs = 2.0 * packed.xs
    for reverse in (False, True):
        want = rj.scan(cell.step, params, c0, xs, lengths=packed.lengths, reverse=reverse, resets=packed.resets)
        for chunk_size in (1, 3, 4):
            got = rj.mlstm_parallel(params, c0, xs, packed.lengths, reverse, chunk_size=chunk_size,
                                    resets=packed.resets)
            assert _tree_max_diff(got, want) < 2e-5, (reverse, chunk_size)


@pytest.mark.slow  # compile-heavy: the second tier
def test_min_rnn_parallel_and_deer_with_resets(packed):
    args = dict(lengths=packed.lengths, resets=packed.resets)
    cell = rj.min_lstm(I, H)
    params = cell.init(jax.random.key(13))
    c0 = cell.initial_carry((packed.layout.num_rows,)) + 0.2
    for reverse in (False, True):
        want = rj.scan(cell.step, params, c0, packed.xs, reverse=reverse, **args)
        for log_space in (False, True):
            got = rj.min_rnn_parallel(rj.min_lstm_step, params, c0, packed.xs, reverse=reverse, log_space=log_space,
                                      **args)
            assert _tree_max_diff(got, want) < 1e-5
    cell = rj.gru(I, H)
    params = cell.init(jax.random.key(14))
    c0 = cell.initial_carry((packed.layout.num_rows,))
    for method, reverse in (("newton", False), ("quasi", True)):
        want = rj.scan(cell.step, params, c0, packed.xs, reverse=reverse, **args)
        *got, info = rj.deer_scan(cell.step, params, c0, packed.xs, reverse=reverse, method=method, **args)
        assert _tree_max_diff(tuple(got), want) < 1e-5 and not bool(info.fell_back)

    def deer_loss(p):
        return jnp.sum(rj.deer_scan(cell.step, p, c0, packed.xs, reverse=True, method="quasi", **args)[1] ** 2)

    def scan_loss(p):
        return jnp.sum(rj.scan(cell.step, p, c0, packed.xs, reverse=True, **args)[1] ** 2)

    assert _tree_max_diff(jax.jit(jax.grad(deer_loss))(params), jax.jit(jax.grad(scan_loss))(params)) < 1e-4


@pytest.mark.slow  # compile-heavy: the second tier
def test_seq2seq_encodes_packed_sources_one_state_per_source():
    """seq2seq.encode on packed rows: each source's memory, keys and lengths are those of the
    source encoded alone (in a padded batch), and greedy decoding from them agrees."""
    att = rj.additive_attention(query_size=8, key_size=8, attention_size=6)
    model = rj.seq2seq(rj.bidirectional(rj.gru(5, 4), rj.lstm(5, 4)), rj.gru(5 + 8, 8), src_vocab=11,
                       tgt_vocab=7, embed_size=5, attention=att)
    params = model.init(jax.random.key(0))
    rng = np.random.default_rng(0)
    sources = [rng.integers(1, 11, n).astype(np.int32) for n in (6, 2, 4, 3, 5)]
    packed = rj.pack_sequences(sources, 7)
    state = model.encode(params, packed.xs, lengths=packed.lengths, resets=packed.resets, layout=packed.layout)
    padded = rj.unpack_sequences(packed.xs, packed.layout)  # [6, 5] ids, one source per column
    want = model.encode(params, padded, lengths=jnp.array([len(s) for s in sources]))
    np.testing.assert_allclose(state.memory, want.memory, atol=2e-6)
    np.testing.assert_allclose(state.keys, want.keys, atol=2e-6)
    np.testing.assert_array_equal(state.lengths, want.lengths)
    start = jnp.zeros((len(sources),), jnp.int32)
    np.testing.assert_array_equal(rj.greedy(model.step, params, state, start, max_len=4)[0],
                                  rj.greedy(model.step, params, want, start, max_len=4)[0])
    with pytest.raises(ValueError, match="resets, layout: packed sources need both"):
        model.encode(params, packed.xs, resets=packed.resets)
    plain = rj.seq2seq(rj.gru(5, 4), rj.gru(5 + 4, 4), src_vocab=11, tgt_vocab=7, embed_size=5)
    with pytest.raises(ValueError, match="resets: packed sources need attention"):
        plain.encode(plain.init(jax.random.key(1)), packed.xs, resets=packed.resets, layout=packed.layout)
