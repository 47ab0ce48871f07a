"""Composition: stack, layer-wise deep models, bidirectional layers, pooling heads.

Equivalences: stack of one cell == the cell; deep == running the layers by hand; a padded
bidirectional batch == each sequence run alone in both directions (NumPy equations) ==
torch.nn.LSTM/GRU(bidirectional=True, num_layers=2); pooling == NumPy loops; dropout masks
behave as documented. Computations are jitted whole (one compile per test, not one per op).
"""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from jax.test_util import check_grads

import rnnjax as rj
from tests import reference as ref
from tests.conftest import assert_trees_close

T, B, D, H = 5, 3, 3, 4  # D: input size
LENGTHS = np.array([5, 2, 3])


def random_params(init, key):
    """Params shaped like ``init(key)`` with every leaf drawn N(0, 0.5²) (no term is zero)."""
    leaves, treedef = jax.tree_util.tree_flatten(jax.eval_shape(init, key))
    rng = np.random.default_rng(np.asarray(jax.random.key_data(key)).tolist())  # NumPy draws: no compiles
    return jax.tree_util.tree_unflatten(
        treedef, [jnp.asarray(0.5 * rng.standard_normal(s.shape), s.dtype) for s in leaves])


@pytest.fixture
def xs(key):
    return jax.random.normal(jax.random.fold_in(key, 7), (T, B, D))


# NumPy equations (tests/reference.py) for one unbatched step of each built-in cell.
NP_STEP = {rj.lstm_step: ref.lstm, rj.gru_step: ref.gru, rj.elman_step: ref.elman}


def np_run(step, params, seq, reverse=False, carry=None):
    """Run one unpadded sequence ``seq [L, I]`` through NumPy equations; returns (carry, ys)."""
    p = {k: np.asarray(v, np.float64) for k, v in params._asdict().items()}
    f = NP_STEP[step]
    hidden = p["w_hh"].shape[0]
    if carry is None:
        carry = (np.zeros(hidden), np.zeros(hidden)) if step is rj.lstm_step else np.zeros(hidden)
    out = [None] * len(seq)
    for t in (range(len(seq) - 1, -1, -1) if reverse else range(len(seq))):
        carry, out[t] = f(p, carry, np.asarray(seq[t], np.float64))
    return carry, np.stack(out)


# ----------------------------------------------------------------------------- stack


@pytest.mark.parametrize("factory", [rj.lstm, rj.gru])
def test_stack_of_one_cell_equals_the_cell(factory, key, xs):
    cell = factory(D, H)
    one = rj.stack(cell)
    params = random_params(cell.init, key)
    carry = random_params(lambda k: cell.initial_carry((B,)), jax.random.fold_in(key, 2))

    @jax.jit
    def both(p, c, x):
        # One step, and a masked scan (the stacked step takes the generic path, the cell the fast one).
        return (one.step((p,), (c,), x[0]), cell.step(p, c, x[0]),
                rj.scan(one.step, (p,), (c,), x, lengths=LENGTHS), rj.scan(cell.step, p, c, x, lengths=LENGTHS))

    step1, step0, scan1, scan0 = both(params, carry, xs)
    assert_trees_close(step1, ((step0[0],), step0[1]), atol=1e-6)
    assert_trees_close(scan1, ((scan0[0],), scan0[1]), atol=1e-6)
    assert jax.tree_util.tree_structure(one.initial_carry((B,))) == jax.tree_util.tree_structure(rj.StackedCarry((carry,)))


def test_stack_steps_layers_in_order(key, xs):
    cells = [rj.lstm(D, H), rj.gru(H, 6), rj.elman(6, 2)]
    deep_cell = rj.stack(*cells)
    params = random_params(deep_cell.init, key)
    assert isinstance(params, tuple) and len(params) == 3
    (c_lstm, c_gru, c_elman), y = jax.jit(deep_cell.step)(params, deep_cell.initial_carry((B,)), xs[0])
    assert y.shape == (B, 2)
    for b in range(B):  # NumPy equations, layer after layer
        x = np.asarray(xs[0, b], np.float64)
        (h1, c1), y1 = np_run(rj.lstm_step, params[0], x[None])
        h2, y2 = np_run(rj.gru_step, params[1], y1)
        h3, y3 = np_run(rj.elman_step, params[2], y2)
        np.testing.assert_allclose(c_lstm.c[b], c1, atol=1e-5)
        np.testing.assert_allclose(c_gru[b], h2, atol=1e-5)
        np.testing.assert_allclose(y[b], y3[0], atol=1e-5)


def test_stack_errors(key, xs):
    with pytest.raises(ValueError, match="cells: expected at least one"):
        rj.stack()
    with pytest.raises(TypeError, match=r"cells\[1\]: expected a rnnjax.Cell"):
        rj.stack(rj.gru(D, H), rj.rnn(rj.gru(H, H)))
    cell = rj.stack(rj.gru(D, H), rj.gru(5, H))  # layer 1 expects 5 inputs, gets 4
    params = jax.eval_shape(cell.init, key)
    with pytest.raises(ValueError, match=r"x: expected shape \[\*batch, 5\]") as info:
        jax.eval_shape(cell.step, params, cell.initial_carry((B,)), xs[0])
    assert "layer 1 of stack" in str(info.value.__notes__)
    good = rj.stack(rj.gru(D, H), rj.gru(H, H))
    params = jax.eval_shape(good.init, key)
    with pytest.raises(ValueError, match=r"params: expected a tuple with one entry per layer \(2\), got 1"):
        good.step(params[:1], good.initial_carry((B,)), xs[0])
    with pytest.raises(TypeError, match="carry: expected a tuple"):
        good.step(params, jnp.zeros((B, H)), xs[0])


# ----------------------------------------------------------------------------- deep


def _by_hand(cells, params, xs, lengths, residual=False):
    out, finals = xs, []
    for k, (cell, p) in enumerate(zip(cells, params, strict=True)):
        c, ys = rj.scan(cell.step, p, cell.initial_carry((B,)), out, lengths=lengths)
        if residual and k > 0:
            ys = ys + out
        out, finals = ys, finals + [c]
    return tuple(finals), out


@pytest.mark.parametrize("residual", [False, True])
def test_deep_equals_layers_by_hand(residual, key, xs):
    cells = [rj.lstm(D, H), rj.gru(H, H), rj.elman(H, H)]  # mixed cell types
    model = rj.deep(*cells, residual=residual)
    params = random_params(model.init, key)
    (got_c, got_ys), (want_c, want_ys) = jax.jit(
        lambda p, x: (model.apply(p, x, lengths=LENGTHS), _by_hand(cells, p, x, LENGTHS, residual)))(params, xs)
    assert_trees_close(got_c, want_c, atol=1e-6)
    assert_trees_close(got_ys, want_ys, atol=1e-6)
    assert float(jnp.abs(got_ys[2:, 1]).max()) == 0.0  # padding is zero, residuals included


def test_deep_eval_has_no_dropout_and_eager_equals_jit(key, xs):
    cells = [rj.gru(D, H), rj.gru(H, H)]
    model = rj.deep(*cells, dropout=0.5, recurrent_dropout=0.3)
    params = random_params(model.init, key)
    want = jax.jit(lambda p, x: _by_hand(cells, p, x, LENGTHS))(params, xs)
    assert_trees_close(jax.jit(model.apply)(params, xs, lengths=LENGTHS), want, atol=1e-6)
    assert_trees_close(model.apply(params, xs, lengths=LENGTHS), want, atol=1e-6)  # eager, train=False

    @jax.jit
    def train(p, x, k1, k2):
        return (model.apply(p, x, lengths=LENGTHS, train=True, key=k1),
                model.apply(p, x, lengths=LENGTHS, train=True, key=k2))

    a, c = train(params, xs, jax.random.key(1), jax.random.key(2))
    b, _ = train(params, xs, jax.random.key(1), jax.random.key(3))
    assert_trees_close(a, b, atol=0, rtol=0)  # same key, same masks
    assert not np.allclose(a[1], c[1])
    assert float(jnp.abs(a[1][2:, 1]).max()) == 0.0  # padding still zero with dropout


def _identity_layer():
    """A SeqModel whose output is its input: makes the dropout masks visible."""
    return rj.SeqModel(lambda key: (), lambda params, xs, **kw: ((), xs))


def test_inter_layer_dropout_masks_each_entry_and_step():
    rate = 0.25
    two = rj.deep(_identity_layer(), _identity_layer(), dropout=rate)
    three = rj.deep(_identity_layer(), _identity_layer(), _identity_layer(), dropout=rate)
    xs = jnp.ones((50, 40, 8))

    @jax.jit
    def run(x):
        return (two.apply(((), ()), x, train=True, key=jax.random.key(3))[1], two.apply(((), ()), x)[1],
                three.apply(((), (), ()), x, train=True, key=jax.random.key(4))[1])

    ys, ys_eval, ys3 = (np.asarray(a) for a in run(xs))
    np.testing.assert_allclose(np.unique(ys), [0.0, 1.0 / (1.0 - rate)])  # inverted dropout scaling
    assert abs((ys == 0).mean() - rate) < 0.02
    assert not np.array_equal(ys[0] == 0, ys[1] == 0)  # a fresh mask at every step
    np.testing.assert_array_equal(ys_eval, xs)
    # Three layers: dropout before layers 1 and 2, so about (1 - rate)^2 of entries survive.
    assert abs((ys3 != 0).mean() - (1 - rate) ** 2) < 0.02


def _echo_step(params, carry, x):
    """A user step whose output is the carry it was given; its new carry is all ones."""
    return jnp.ones_like(carry), carry


def _lstm_echo_step(params, carry, x):
    new = rj.LSTMState(jnp.ones_like(carry.h), jnp.ones_like(carry.c))
    return new, jnp.concatenate([carry.h, carry.c], -1)


def test_recurrent_dropout_uses_one_mask_per_sequence_for_every_step():
    rate = 0.5
    echo = rj.Cell(lambda key: (), lambda batch_shape=(): jnp.zeros(tuple(batch_shape) + (16,)), _echo_step)
    lstm_echo = rj.Cell(lambda key: (), lambda batch_shape=(): rj.LSTMState(jnp.zeros((20, 8)), jnp.zeros((20, 8))),
                        _lstm_echo_step)
    model, lstm_model = rj.rnn(echo, recurrent_dropout=rate), rj.rnn(lstm_echo, recurrent_dropout=rate)

    @jax.jit
    def run(k):
        return (model.apply((), jnp.zeros((6, 30, 1)), train=True, key=k), model.apply((), jnp.zeros((6, 30, 1))),
                lstm_model.apply((), jnp.zeros((3, 20, 1)), train=True, key=k)[1])

    (carry, ys), (_, ys_eval), lstm_ys = run(jax.random.key(0))
    ys = np.asarray(ys)
    np.testing.assert_array_equal(ys[0], 0.0)  # step 0 read the zero initial carry
    for t in range(2, 6):
        np.testing.assert_array_equal(ys[t], ys[1])  # the same mask at every step
    np.testing.assert_array_equal(np.unique(ys[1]), [0.0, 2.0])
    assert 0.3 < (ys[1] == 0).mean() < 0.7
    assert not np.array_equal(ys[1][0], ys[1][1])  # a separate mask per sequence
    np.testing.assert_array_equal(carry, 1.0)  # the returned carry is never masked
    np.testing.assert_array_equal(ys_eval[1:], 1.0)
    # LSTMState: only h is dropped, c is read intact.
    h_part, c_part = np.asarray(lstm_ys[1:, :, :8]), np.asarray(lstm_ys[1:, :, 8:])
    np.testing.assert_array_equal(c_part, 1.0)
    assert (h_part == 0).any() and (h_part == 2.0).any()


def test_deep_errors(key, xs):
    with pytest.raises(ValueError, match="layers: expected at least one"):
        rj.deep()
    with pytest.raises(TypeError, match=r"layers\[1\]: expected a rnnjax.Cell or rnnjax.SeqModel, got function"):
        rj.deep(rj.gru(D, H), rj.gru_step)
    with pytest.raises(ValueError, match=r"dropout: expected a float in \[0, 1\), got 1.0"):
        rj.deep(rj.gru(D, H), dropout=1.0)
    with pytest.raises(ValueError, match=r"recurrent_dropout: expected a float in \[0, 1\), got -0.1"):
        rj.deep(rj.gru(D, H), recurrent_dropout=-0.1)
    with pytest.raises(TypeError, match="residual: expected a bool"):
        rj.deep(rj.gru(D, H), residual=1)
    model = rj.deep(rj.gru(D, H), rj.gru(H, H), dropout=0.1)
    params = jax.eval_shape(model.init, key)
    with pytest.raises(ValueError, match=r"key: expected a PRNG key with train=True \(dropout=0.1\), got None"):
        model.apply(params, xs, train=True)
    with pytest.raises(TypeError, match="key: expected a single PRNG key"):
        model.apply(params, xs, train=True, key=jax.random.split(jax.random.key(0), 2))
    with pytest.raises(TypeError, match="train: expected a bool"):
        model.apply(params, xs, train=1)
    with pytest.raises(ValueError, match=r"xs: expected shape \[T, \*batch, I\] \(at least 2 axes\), got \(3,\)"):
        model.apply(params, jnp.ones(3))
    with pytest.raises(ValueError, match=r"lengths: expected values in \[0, 5\]"):
        model.apply(params, xs, lengths=np.array([6, 1, 1]))
    with pytest.raises(ValueError, match=r"params: expected a tuple with one entry per layer \(2\), got 3"):
        model.apply(params + params[:1], xs)
    res = rj.deep(rj.gru(D, H), rj.gru(H, 6), residual=True)
    with pytest.raises(ValueError, match=r"residual: layer 1 outputs shape \(5, 3, 6\) but its input has shape \(5, 3, 4\)"):
        jax.eval_shape(res.apply, jax.eval_shape(res.init, key), xs)
    custom = rj.Cell(lambda k: (), lambda batch_shape=(): {"m": jnp.zeros(tuple(batch_shape) + (2,))},
                     lambda p, c, x: (c, c["m"]))
    with pytest.raises(TypeError, match="recurrent_dropout: cannot find the hidden state in a carry of type dict"):
        rj.rnn(custom, recurrent_dropout=0.5).apply((), xs, train=True, key=jax.random.key(0))


# ----------------------------------------------------------------------------- bidirectional


def test_bidirectional_with_padding_equals_each_sequence_alone(key, xs):
    model = rj.bidirectional(rj.lstm(D, H), rj.gru(D, H))  # directions may differ in type
    params = random_params(model.init, key)
    assert isinstance(params, rj.BiParams)
    carry, ys = jax.jit(model.apply)(params, xs, lengths=LENGTHS)
    assert isinstance(carry, rj.BiCarry)
    for b, n in enumerate(LENGTHS):
        (hf, cf), yf = np_run(rj.lstm_step, params.fwd, xs[:n, b])
        hb, yb = np_run(rj.gru_step, params.bwd, xs[:n, b], reverse=True)
        np.testing.assert_allclose(ys[:n, b], np.concatenate([yf, yb], -1), atol=1e-5)
        np.testing.assert_array_equal(ys[n:, b], 0.0)
        np.testing.assert_allclose(carry.fwd.h[b], hf, atol=1e-5)
        np.testing.assert_allclose(carry.fwd.c[b], cf, atol=1e-5)
        np.testing.assert_allclose(carry.bwd[b], hb, atol=1e-5)


def test_bidirectional_seqmodel_backward_reads_reversed_sequences(key, xs):
    """A deep SeqModel as the backward direction runs on each reversed valid prefix."""
    model = rj.bidirectional(rj.gru(D, H), rj.deep(rj.gru(D, H), rj.elman(H, H)), merge="mean")
    params = random_params(model.init, key)
    carry, ys = jax.jit(model.apply)(params, xs, lengths=LENGTHS)
    for b, n in enumerate(LENGTHS):
        _, yf = np_run(rj.gru_step, params.fwd, xs[:n, b])
        c1, y1 = np_run(rj.gru_step, params.bwd[0], xs[:n, b], reverse=True)
        c2, y2 = np_run(rj.elman_step, params.bwd[1], y1, reverse=True)
        np.testing.assert_allclose(ys[:n, b], (yf + y2) / 2, atol=1e-5)
        np.testing.assert_array_equal(ys[n:, b], 0.0)
        np.testing.assert_allclose(carry.bwd[0][b], c1, atol=1e-5)
        np.testing.assert_allclose(carry.bwd[1][b], c2, atol=1e-5)


def test_bidirectional_merges_and_initial_carry(key, xs):
    params = random_params(rj.bidirectional(rj.gru(D, H), rj.gru(D, H)).init, key)
    h0 = rj.BiCarry(jnp.ones((B, H)), -jnp.ones((B, H)))
    merges = ["concat", "sum", "mean", "mul", lambda u, v: u - v]

    @jax.jit
    def run(p, x):
        outs = [rj.bidirectional(rj.gru(D, H), rj.gru(D, H), merge=m).apply(p, x, lengths=LENGTHS)[1] for m in merges]
        return outs, rj.bidirectional(rj.gru(D, H), rj.gru(D, H)).apply(p, x, carry=h0)[1]

    (concat, *others), from_h0 = run(params, xs)
    f, b = concat[..., :H], concat[..., H:]
    for got, want in zip(others, [f + b, (f + b) / 2, f * b, f - b], strict=True):
        np.testing.assert_allclose(got, want, atol=1e-6)
    for i in range(B):
        _, yf = np_run(rj.gru_step, params.fwd, xs[:, i], carry=np.ones(H))
        _, yb = np_run(rj.gru_step, params.bwd, xs[:, i], reverse=True, carry=-np.ones(H))
        np.testing.assert_allclose(from_h0[:, i], np.concatenate([yf, yb], -1), atol=1e-5)


def test_bidirectional_errors(key, xs):
    with pytest.raises(TypeError, match="bwd: expected a rnnjax.Cell or rnnjax.SeqModel"):
        rj.bidirectional(rj.gru(D, H), "gru")
    with pytest.raises(ValueError, match=r"merge: expected one of \['concat', 'mean', 'mul', 'sum'\] or a function, got 'max'"):
        rj.bidirectional(rj.gru(D, H), rj.gru(D, H), merge="max")
    model = rj.bidirectional(rj.gru(D, H), rj.gru(D, H))
    params = jax.eval_shape(model.init, key)
    with pytest.raises(TypeError, match=r"params: expected BiParams\(fwd, bwd\), got tuple"):
        model.apply(tuple(params), xs)
    with pytest.raises(TypeError, match=r"carry: expected BiCarry\(fwd, bwd\) or None, got ArrayImpl"):
        model.apply(params, xs, carry=jnp.zeros((B, H)))
    with pytest.raises(ValueError, match=r"lengths: expected shape \[3\]"):
        model.apply(params, xs, lengths=np.array([1, 2]))


def _torch_to_rnnjax(module, kind, num_layers):
    layers = []
    for k in range(num_layers):
        dirs = []
        for sfx in ("", "_reverse"):
            def g(n, k=k, sfx=sfx):
                return jnp.asarray(getattr(module, f"{n}_l{k}{sfx}").detach().numpy())

            if kind == "lstm":
                dirs.append(rj.LSTMParams(g("weight_ih").T, g("weight_hh").T, g("bias_ih") + g("bias_hh")))
            else:
                dirs.append(rj.GRUParams(g("weight_ih").T, g("weight_hh").T, g("bias_ih"), g("bias_hh")))
        layers.append(rj.BiParams(*dirs))
    return tuple(layers)


@pytest.mark.parametrize("kind", ["lstm", "gru"])
def test_deep_bidirectional_matches_torch(kind):
    torch = pytest.importorskip("torch", reason="needs the dev extra: pip install -e '.[dev]'")
    torch.manual_seed(0)
    mod = (torch.nn.LSTM if kind == "lstm" else torch.nn.GRU)(D, H, num_layers=2, bidirectional=True)
    x = torch.randn(T, B, D)
    packed = torch.nn.utils.rnn.pack_padded_sequence(x, torch.tensor(LENGTHS), enforce_sorted=False)
    with torch.no_grad():
        out, hn = mod(packed)
    out, _ = torch.nn.utils.rnn.pad_packed_sequence(out, total_length=T)
    factory = rj.lstm if kind == "lstm" else rj.gru
    model = rj.deep(rj.bidirectional(factory(D, H), factory(D, H)),
                    rj.bidirectional(factory(2 * H, H), factory(2 * H, H)))
    params = _torch_to_rnnjax(mod, kind, 2)
    carries, ys = jax.jit(model.apply)(params, jnp.asarray(x.numpy()), lengths=LENGTHS)
    np.testing.assert_allclose(ys, out.numpy(), atol=1e-5)
    h_n = hn[0] if kind == "lstm" else hn
    got_h = [rj.carry_hidden(c) for layer in carries for c in (layer.fwd, layer.bwd)]
    np.testing.assert_allclose(jnp.stack(got_h), h_n.numpy(), atol=1e-5)
    if kind == "lstm":
        got_c = [c.c for layer in carries for c in (layer.fwd, layer.bwd)]
        np.testing.assert_allclose(jnp.stack(got_c), hn[1].numpy(), atol=1e-5)


def test_deep_bidirectional_gradients(key):
    model = rj.deep(rj.bidirectional(rj.gru(2, 2), rj.elman(2, 2)),
                    rj.bidirectional(rj.elman(4, 2), rj.elman(4, 2)), residual=True)
    params = random_params(model.init, key)
    xs = jax.random.normal(key, (3, 2, 2))
    loss = jax.jit(lambda p: jnp.sum(model.apply(p, xs, lengths=np.array([3, 2]))[1] ** 2))
    check_grads(loss, (params,), order=1, modes=["rev"], atol=1e-2, rtol=1e-2)


# ----------------------------------------------------------------------------- topologies


def test_pooling_matches_numpy_loops(key):
    ys = jax.random.normal(key, (T, 4, 2))
    lengths = np.array([5, 1, 3, 0])
    pools = jax.jit(lambda y, n: (rj.pool_last(y, n), rj.pool_mean(y, n), rj.pool_max(y, n),
                                  rj.pool_last(y), rj.pool_mean(y), rj.pool_max(y)))
    last, mean, mx, last_all, mean_all, max_all = pools(ys, lengths)
    y = np.asarray(ys)
    for b, n in enumerate(lengths):
        want = (np.zeros(2),) * 3 if n == 0 else (y[n - 1, b], y[:n, b].mean(0), y[:n, b].max(0))
        np.testing.assert_allclose(last[b], want[0], atol=1e-6)
        np.testing.assert_allclose(mean[b], want[1], atol=1e-6)
        np.testing.assert_allclose(mx[b], want[2], atol=1e-6)
    np.testing.assert_allclose(last_all, y[-1])
    np.testing.assert_allclose(mean_all, y.mean(0), atol=1e-6)
    np.testing.assert_allclose(max_all, y.max(0))
    with pytest.raises(ValueError, match=r"ys: expected shape \[T, \*batch, I\]"):
        rj.pool_mean(jnp.ones(3))
    with pytest.raises(ValueError, match=r"lengths: expected values in \[0, 5\]"):
        rj.pool_max(ys, np.array([1, 2, 3, 9]))


def test_forward_rnn_last_valid_output_is_its_final_carry(key, xs):
    model = rj.rnn(rj.lstm(D, H))
    carry, ys = jax.jit(model.apply)(random_params(model.init, key), xs, lengths=LENGTHS)
    np.testing.assert_allclose(rj.pool_last(ys, LENGTHS), rj.carry_hidden(carry), atol=1e-6)


def test_vector_to_sequence_blocks(key):
    cell = rj.lstm(2, H)
    params = random_params(cell.init, key)
    v = jax.random.normal(key, (B, H))
    u = jax.random.normal(jax.random.fold_in(key, 1), (B, 2))
    # Vector as the initial state (h_0 = v, c_0 = 0) and as the input at every step.
    carry0 = rj.with_hidden(cell.initial_carry((B,)), v)
    np.testing.assert_array_equal(carry0.h, v)
    np.testing.assert_array_equal(carry0.c, 0.0)
    rep = rj.repeat_vector(u, 4)
    assert rep.shape == (4, B, 2)
    _, ys = jax.jit(lambda p, c, x: rj.scan(cell.step, p, c, x))(params, carry0, rep)
    for b in range(B):
        _, want = np_run(rj.lstm_step, params, np.repeat(np.asarray(u[b:b + 1]), 4, 0),
                         carry=(np.asarray(v[b]), np.zeros(H)))
        np.testing.assert_allclose(ys[:, b], want, atol=1e-5)
    # Hidden state of nested carries.
    two = rj.stack(rj.gru(2, 3), rj.lstm(3, H)).initial_carry((B,))
    assert rj.carry_hidden(two).shape == (B, H)
    bi = rj.BiCarry(jnp.ones((B, 3)), rj.LSTMState(2 * jnp.ones((B, 2)), jnp.zeros((B, 2))))
    np.testing.assert_array_equal(rj.carry_hidden(bi)[0], [1, 1, 1, 2, 2])
    np.testing.assert_array_equal(rj.with_hidden(bi, jnp.zeros((B, 5))).bwd.h, 0.0)
    with pytest.raises(TypeError, match="carry: cannot find the hidden state in a carry of type dict"):
        rj.carry_hidden({"h": v})
    with pytest.raises(ValueError, match=r"h: expected shape \(3, 4\) \(the carry's hidden state\), got \(3, 5\)"):
        rj.with_hidden(cell.initial_carry((B,)), jnp.ones((B, 5)))
    with pytest.raises(ValueError, match="num_steps: expected a positive int, got 0"):
        rj.repeat_vector(u, 0)


def test_dense_matches_numpy(key):
    p = rj.dense_init(key, 3, 2)
    p = rj.DenseParams(p.w, jnp.array([0.5, -1.0]))
    x = jax.random.normal(key, (4, 3))
    np.testing.assert_allclose(rj.dense(p, x), np.asarray(x) @ np.asarray(p.w) + [0.5, -1.0], atol=1e-6)
    with pytest.raises(ValueError, match=r"x: expected shape \[..., 3\] \(I from params.w\), got \(4, 2\)"):
        rj.dense(p, jnp.ones((4, 2)))
    with pytest.raises(ValueError, match="output_size: expected a positive int"):
        rj.dense_init(key, 3, 0)
