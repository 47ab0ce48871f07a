"""Flax NNX adapters: modules equal the pure functions, follow train()/eval(), and train with
nnx.Optimizer."""

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

nnx = pytest.importorskip("flax.nnx", reason="needs the nnx extra: pip install -e '.[nnx]' (dev has it too)")

import rnnjax as rj  # noqa: E402
from rnnjax import nnx as rnx  # noqa: E402


def test_cell_module_equals_the_pure_cell(key):
    cell = rj.stack(rj.dampened(3, 5), rj.dampened(5, 4))
    layer = rnx.CellModule(cell, rngs=nnx.Rngs(params=0))
    params = layer.get_params()
    xs = jax.random.normal(key, (6, 2, 3))
    carry = layer.initial_carry((2,))
    c1, y1 = layer(carry, xs[0])
    c2, y2 = cell.step(params, carry, xs[0])
    np.testing.assert_array_equal(y1, y2)
    lengths = jnp.array([6, 3])
    got = layer.scan(xs, lengths=lengths)
    want = rj.scan(cell.step, params, cell.initial_carry((2,)), xs, lengths=lengths)
    np.testing.assert_allclose(got[1], want[1], atol=1e-6)
    paths = [jax.tree_util.keystr(p) for p, _ in jax.tree_util.tree_flatten_with_path(nnx.state(layer, nnx.Param))[0]]
    assert "['params'][0]['lam'].value" in paths  # the params' own field names
    # set_params writes through; a mismatched tree is refused.
    zeroed = jax.tree_util.tree_map(jnp.zeros_like, params)
    layer.set_params(zeroed)
    assert float(sum(jnp.abs(a).sum() for a in jax.tree_util.tree_leaves(layer.get_params()))) == 0.0
    with pytest.raises(ValueError, match="params: expected the structure"):
        layer.set_params(zeroed[:1])
    with pytest.raises(TypeError, match="cell: expected a rnnjax.Cell"):
        rnx.CellModule(rj.rnn(rj.gru(3, 4)), rngs=nnx.Rngs(0))


def test_seq_module_follows_train_and_eval(key):
    model = rj.deep(rj.dampened(3, 8), rj.dampened(8, 8), dropout=0.5)
    enc = rnx.SeqModule(model, rngs=nnx.Rngs(params=0, dropout=1))
    xs = jax.random.normal(key, (5, 2, 3))
    params = enc.get_params()
    _, clean = model.apply(params, xs)
    _, a = enc(xs)  # training mode by default, like nnx.Dropout
    _, b = enc(xs)
    assert not np.allclose(a, clean) and not np.allclose(a, b)  # a fresh key per call
    _, with_key = enc(xs, key=jax.random.key(7))
    np.testing.assert_allclose(with_key, model.apply(params, xs, train=True, key=jax.random.key(7))[1], atol=1e-6)
    enc.eval()
    _, evaluated = enc(xs)
    np.testing.assert_allclose(evaluated, clean, atol=1e-6)
    enc.train()
    assert enc.deterministic is False
    with pytest.raises(TypeError, match="model: expected a rnnjax.SeqModel"):
        rnx.SeqModule(rj.gru(3, 4), rngs=nnx.Rngs(0))


class Regressor(nnx.Module):
    """A tiny NNX model on an rnnjax cell: running mean of the inputs, as the README demo."""

    def __init__(self, rngs):
        self.rnn = rnx.SeqModule(rj.rnn(rj.lstm(1, 16)), rngs=rngs)
        self.head = nnx.Linear(16, 1, rngs=rngs)

    def __call__(self, xs):
        _, hs = self.rnn(xs)
        return self.head(hs)


def test_a_tiny_nnx_model_trains_with_nnx_optimizer():
    model = Regressor(nnx.Rngs(0))
    optimizer = nnx.Optimizer(model, optax.adam(3e-2), wrt=nnx.Param)
    xs = jax.random.uniform(jax.random.key(0), (10, 16, 1))
    ys = jnp.cumsum(xs, 0) / jnp.arange(1, 11)[:, None, None]

    @nnx.jit
    def train_step(model, optimizer):
        loss, grads = nnx.value_and_grad(lambda m: jnp.mean((m(xs) - ys) ** 2))(model)
        optimizer.update(model, grads)
        return loss

    before = jax.tree_util.tree_map(jnp.copy, model.rnn.get_params())
    losses = [float(train_step(model, optimizer)) for _ in range(60)]
    assert losses[-1] < 0.1 * losses[0]
    assert not np.allclose(model.rnn.get_params().w_hh, before.w_hh)  # the rnnjax params were trained
