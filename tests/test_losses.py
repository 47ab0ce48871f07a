"""Masked losses against NumPy written out here, and padding that is ignored exactly."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import rnnjax as rj

T, B, V = 5, 3, 4
LENGTHS = np.array([5, 2, 0])


def np_log_softmax(z):
    z = z - z.max(-1, keepdims=True)
    return z - np.log(np.exp(z).sum(-1, keepdims=True))


@pytest.fixture
def data(key):
    k1, k2 = jax.random.split(key)
    logits = jax.random.normal(k1, (T, B, V))
    labels = jax.random.randint(k2, (T, B), 0, V)
    return logits, labels


def with_garbage_padding(logits, labels, lengths):
    """Padding positions filled with NaN/Inf logits and out-of-range ids."""
    pad = np.arange(T)[:, None] >= lengths[None, :]
    bad = np.where(np.arange(V) % 2 == 0, np.nan, np.inf).astype(np.float32)
    logits = np.where(pad[..., None], bad, np.asarray(logits))
    labels = np.where(pad, V + 7, np.asarray(labels))
    return jnp.asarray(logits), jnp.asarray(labels)


@pytest.mark.parametrize("transform", [lambda f: f, jax.jit], ids=["eager", "jit"])
def test_sequence_cross_entropy_equals_numpy(data, transform):
    logits, labels = data
    lp = np_log_softmax(np.asarray(logits, np.float64))
    terms = [-lp[t, b, int(labels[t, b])] for b in range(B) for t in range(LENGTHS[b])]
    got = transform(lambda lo, la: rj.sequence_cross_entropy(lo, la, lengths=jnp.asarray(LENGTHS)))(logits, labels)
    np.testing.assert_allclose(float(got), np.mean(terms), rtol=1e-6)
    got_sum = rj.sequence_cross_entropy(logits, labels, lengths=LENGTHS, reduction="sum")
    np.testing.assert_allclose(float(got_sum), np.sum(terms), rtol=1e-6)
    full = rj.sequence_cross_entropy(logits, labels)
    all_terms = -np.take_along_axis(lp, np.asarray(labels)[..., None], -1).mean()
    np.testing.assert_allclose(float(full), all_terms, rtol=1e-6)


def test_lengths_and_mask_agree_and_none_is_zero_at_padding(data):
    logits, labels = data
    mask = np.arange(T)[:, None] < LENGTHS[None, :]
    a = rj.sequence_cross_entropy(logits, labels, lengths=LENGTHS, reduction="none")
    b = rj.sequence_cross_entropy(logits, labels, mask=jnp.asarray(mask), reduction="none")
    np.testing.assert_array_equal(np.asarray(a), np.asarray(b))
    assert a.shape == (T, B)
    assert np.all(np.asarray(a)[~mask] == 0.0) and np.all(np.asarray(a)[mask] > 0.0)


def test_padding_is_ignored_exactly_value_and_gradient(data):
    """Garbage (NaN, Inf, ids out of range) in padding changes nothing, gradients included."""
    logits, labels = data
    dirty_logits, dirty_labels = with_garbage_padding(logits, labels, LENGTHS)
    loss = lambda lo, la: rj.sequence_cross_entropy(lo, la, lengths=jnp.asarray(LENGTHS))
    clean_v, clean_g = jax.value_and_grad(loss)(logits, labels)
    dirty_v, dirty_g = jax.value_and_grad(loss)(dirty_logits, dirty_labels)
    assert float(clean_v) == float(dirty_v)
    np.testing.assert_array_equal(np.asarray(clean_g), np.asarray(dirty_g))
    pad = np.arange(T)[:, None] >= LENGTHS[None, :]
    assert np.all(np.asarray(dirty_g)[pad] == 0.0)


def test_padded_batch_equals_sequences_alone(data):
    """The token-mean over a padded batch equals the token-mean over the sequences cut to length."""
    logits, labels = data
    total = sum(
        float(rj.sequence_cross_entropy(logits[: LENGTHS[b], b], labels[: LENGTHS[b], b], reduction="sum"))
        for b in range(B) if LENGTHS[b] > 0
    )
    got = rj.sequence_cross_entropy(logits, labels, lengths=LENGTHS)
    np.testing.assert_allclose(float(got), total / LENGTHS.sum(), rtol=1e-6)


def test_no_valid_position_gives_zero_and_finite_gradient(data):
    logits, labels = data
    loss = lambda lo: rj.sequence_cross_entropy(lo, labels, lengths=jnp.zeros(B, jnp.int32))
    v, g = jax.value_and_grad(loss)(logits)
    assert float(v) == 0.0 and np.all(np.asarray(g) == 0.0)


def test_classification_cross_entropy_equals_numpy(key):
    logits = jax.random.normal(key, (B, V))
    labels = jnp.array([0, 3, 1])
    lp = np_log_softmax(np.asarray(logits, np.float64))
    expected = -lp[np.arange(B), np.asarray(labels)]
    np.testing.assert_allclose(float(rj.classification_cross_entropy(logits, labels)), expected.mean(), rtol=1e-6)
    np.testing.assert_allclose(
        np.asarray(rj.classification_cross_entropy(logits, labels, reduction="none")), expected, rtol=1e-6
    )


def test_sequence_mse_equals_numpy_and_ignores_padding(key):
    k1, k2 = jax.random.split(key)
    pred = np.asarray(jax.random.normal(k1, (T, B, 2)))
    target = np.asarray(jax.random.normal(k2, (T, B, 2)))
    sq = [((pred[t, b] - target[t, b]) ** 2).mean() for b in range(B) for t in range(LENGTHS[b])]
    pad = np.arange(T)[:, None] >= LENGTHS[None, :]
    dirty = np.where(pad[..., None], np.nan, pred)
    loss = lambda p: rj.sequence_mse(p, jnp.asarray(target), lengths=LENGTHS)
    v, g = jax.value_and_grad(loss)(jnp.asarray(dirty))
    np.testing.assert_allclose(float(v), np.mean(sq), rtol=1e-6)
    assert np.all(np.isfinite(np.asarray(g))) and np.all(np.asarray(g)[pad] == 0.0)
    # d/dp of mean over 2 features and n valid positions: 2 (p - y) / (2 n)
    np.testing.assert_allclose(
        np.asarray(g)[~pad], ((pred - target) / LENGTHS.sum())[~pad], rtol=1e-5
    )


def test_sequence_accuracy(data):
    logits, labels = data
    pred = np.asarray(logits).argmax(-1)
    hits = [pred[t, b] == labels[t, b] for b in range(B) for t in range(LENGTHS[b])]
    dirty_logits, dirty_labels = with_garbage_padding(logits, labels, LENGTHS)
    got = rj.sequence_accuracy(dirty_logits, dirty_labels, lengths=LENGTHS)
    np.testing.assert_allclose(float(got), np.mean(hits), rtol=1e-6)


def test_mask_from_lengths():
    m = rj.mask_from_lengths(jnp.array([[2, 0], [3, 1]]), 3)
    assert m.shape == (3, 2, 2) and m.dtype == jnp.bool_
    expected = np.arange(3)[:, None, None] < np.array([[2, 0], [3, 1]])[None]
    np.testing.assert_array_equal(np.asarray(m), expected)


@pytest.mark.parametrize(
    "call, exc, match",
    [
        (lambda lo, la: rj.sequence_cross_entropy(lo.astype(jnp.int32), la), TypeError, "logits: expected a floating"),
        (lambda lo, la: rj.sequence_cross_entropy(lo[0, 0], la), ValueError, r"logits: expected shape \[T, \*batch, V\]"),
        (lambda lo, la: rj.sequence_cross_entropy(lo, la[:, :2]), ValueError, r"labels: expected shape \[5, 3\]"),
        (lambda lo, la: rj.sequence_cross_entropy(lo, la.astype(jnp.float32)), TypeError, "labels: expected an integer"),
        (lambda lo, la: rj.sequence_cross_entropy(lo, la.at[0, 0].set(V)), ValueError, r"labels: expected ids in \[0, 4\)"),
        (lambda lo, la: rj.sequence_cross_entropy(lo, la, lengths=LENGTHS, mask=jnp.ones((T, B), bool)), ValueError, "at most one"),
        (lambda lo, la: rj.sequence_cross_entropy(lo, la, lengths=np.array([1, 2])), ValueError, r"lengths: expected shape \[3\]"),
        (lambda lo, la: rj.sequence_cross_entropy(lo, la, lengths=np.array([1, 2, 6])), ValueError, r"lengths: expected values in \[0, 5\]"),
        (lambda lo, la: rj.sequence_cross_entropy(lo, la, mask=jnp.ones((T, B))), TypeError, "mask: expected a bool"),
        (lambda lo, la: rj.sequence_cross_entropy(lo, la, mask=jnp.ones((T, 2), bool)), ValueError, r"mask: expected shape \[5, 3\]"),
        (lambda lo, la: rj.sequence_cross_entropy(lo, la, reduction="avg"), ValueError, "reduction: expected one of"),
        (lambda lo, la: rj.classification_cross_entropy(lo[0], la[0, :2]), ValueError, r"labels: expected shape \[3\]"),
        (lambda lo, la: rj.classification_cross_entropy(lo[0], la[0] - 1), ValueError, "labels: expected ids"),
        (lambda lo, la: rj.sequence_mse(lo, lo[:, :2]), ValueError, r"targets: expected shape \(5, 3, 4\)"),
        (lambda lo, la: rj.sequence_mse(lo[0, 0], lo[0, 0]), ValueError, r"predictions: expected shape \[T"),
        (lambda lo, la: rj.sequence_mse(lo, la), TypeError, "targets: expected a floating"),
        (lambda lo, la: rj.mask_from_lengths(jnp.array([1]), 0), ValueError, "num_steps: expected a positive int"),
    ],
)
def test_argument_errors(data, call, exc, match):
    logits, labels = data
    with pytest.raises(exc, match=match):
        call(logits, labels)


def test_labels_out_of_range_only_at_padding_are_accepted_and_ignored(data):
    """Out-of-range ids at padding raise nothing and change nothing: the loss is the NumPy mean
    over the valid steps, as with clean labels; one bad id at a valid step is still refused."""
    logits, labels = data
    _, dirty_labels = with_garbage_padding(logits, labels, LENGTHS)
    got = rj.sequence_cross_entropy(logits, dirty_labels, lengths=LENGTHS)
    lp = np_log_softmax(np.asarray(logits, np.float64))
    terms = [-lp[t, b, int(labels[t, b])] for b in range(B) for t in range(LENGTHS[b])]
    np.testing.assert_allclose(float(got), np.mean(terms), rtol=1e-6)
    with pytest.raises(ValueError, match="labels: expected ids"):
        rj.sequence_cross_entropy(logits, dirty_labels.at[1, 0].set(V), lengths=LENGTHS)


# ------------------------------------------------- lengths over the leading batch axes only

SP = (3, 2)  # the step's own axes (a frame's H, W)


def np_valid(lengths, shape):
    """``[T, *batch]`` validity by explicit loops: ``t < lengths[batch[:lengths.ndim]]``."""
    out = np.zeros(shape, bool)
    for idx in np.ndindex(*shape):
        out[idx] = idx[0] < lengths[idx[1 : 1 + lengths.ndim]]
    return out


def spatial(seed, shape):
    return np.random.default_rng(seed).standard_normal(shape).astype(np.float32)


@pytest.mark.parametrize("lengths", [LENGTHS, np.array([[5, 1, 0], [2, 3, 4], [0, 0, 1]])[:, :SP[0]]],
                         ids=["[B]", "[B, H]"])
@pytest.mark.parametrize("time_major", [True, False])
def test_sequence_mse_over_frames_with_batch_lengths(lengths, time_major):
    pred, target = spatial(1, (T, B, *SP, 2)), spatial(2, (T, B, *SP, 2))
    valid = np_valid(lengths, (T, B, *SP))
    pred[~valid] = np.nan  # padding may hold anything
    sq = np.where(valid[..., None], (np.nan_to_num(pred).astype(np.float64) - target) ** 2, 0.0)
    want_none = sq.mean(-1)
    want_mean = sq.sum() / (valid.sum() * 2)
    move = (lambda a: a) if time_major else (lambda a: np.moveaxis(a, 0, lengths.ndim))
    args = dict(lengths=jnp.asarray(lengths), time_major=time_major)
    got = rj.sequence_mse(jnp.asarray(move(pred)), jnp.asarray(move(target)), **args)
    np.testing.assert_allclose(float(got), want_mean, rtol=1e-5)
    got = rj.sequence_mse(jnp.asarray(move(pred)), jnp.asarray(move(target)), reduction="none", **args)
    np.testing.assert_allclose(got, move(want_none), rtol=1e-5, atol=1e-6)
    grad = jax.grad(lambda p: rj.sequence_mse(p, jnp.asarray(target), lengths=jnp.asarray(lengths)))(jnp.asarray(pred))
    assert np.isfinite(np.asarray(grad)).all() and float(jnp.abs(grad[~valid]).max()) == 0.0


@pytest.mark.parametrize("time_major", [True, False])
def test_per_pixel_cross_entropy_and_accuracy_with_batch_lengths(time_major):
    logits = spatial(3, (T, B, *SP, V))
    labels = np.random.default_rng(4).integers(0, V, (T, B, *SP))
    valid = np_valid(LENGTHS, (T, B, *SP))
    lp = np_log_softmax(logits.astype(np.float64))
    terms, hits = {}, []
    for idx in zip(*np.nonzero(valid), strict=True):
        terms[idx] = -lp[idx][labels[idx]]
        hits.append(float(np.argmax(logits[idx]) == labels[idx]))
    want_none = np.zeros((T, B, *SP))
    for idx, v in terms.items():
        want_none[idx] = v
    logits[~valid], labels[~valid] = np.nan, V + 3  # garbage padding
    move = (lambda a: a) if time_major else (lambda a: np.moveaxis(a, 0, 1))
    args = dict(lengths=jnp.asarray(LENGTHS), time_major=time_major)
    lo, la = jnp.asarray(move(logits)), jnp.asarray(move(labels))
    got = rj.sequence_cross_entropy(lo, la, **args)
    np.testing.assert_allclose(float(got), np.mean(list(terms.values())), rtol=1e-5)
    got = rj.sequence_cross_entropy(lo, la, reduction="none", **args)
    np.testing.assert_allclose(got, move(want_none), rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(float(rj.sequence_accuracy(lo, la, **args)), np.mean(hits), rtol=1e-6)


@pytest.mark.parametrize("time_major", [True, False])
def test_lengths_matching_no_leading_batch_axes_is_refused(time_major):
    logits = jnp.zeros((T, B, *SP, V) if time_major else (B, T, *SP, V))
    labels = jnp.zeros(logits.shape[:-1], jnp.int32)
    # time-major: the batch axes [3, 3, 2] are known and lengths must cover a leading part of them;
    # batch-major: lengths say how many leading axes are batch, and must match them
    two = r"\[3, 3, 2\] or a leading part" if time_major else r"\[3, 5\] \(time_major=False"
    one = r"\[3, 3, 2\] or a leading part" if time_major else r"\[3\] \(time_major=False"
    with pytest.raises(ValueError, match="lengths: expected shape " + two):
        rj.sequence_cross_entropy(logits, labels, lengths=jnp.array([[1, 2], [1, 2], [1, 2]]), time_major=time_major)
    with pytest.raises(ValueError, match="lengths: expected shape " + two):
        rj.sequence_mse(logits, logits, lengths=jnp.ones((B, 2), jnp.int32), time_major=time_major)
    with pytest.raises(ValueError, match="lengths: expected shape " + one):
        rj.sequence_accuracy(logits, labels, lengths=jnp.array([1, 2]), time_major=time_major)
