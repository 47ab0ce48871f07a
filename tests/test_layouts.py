"""Per-platform layouts of the fused kernels: equal results, and the layout each platform gets.

On CPU the forward pass multiplies ``[x_t, h_{t-1}]`` by each gate's weights at every step; on
GPU/TPU it computes the input projection of all steps as one GEMM before the loop and one
stacked recurrent product per step (cuDNN's layout). Both are forced here on CPU and compared,
and a training step exported for ``cuda`` and ``tpu`` (pure JAX lowers for them on any machine)
is read for the products it contains.
"""

import re

import jax
import jax.numpy as jnp
import optax
import pytest
from jax import export

import rnnjax as rj

chex = pytest.importorskip("chex", reason="needs the dev extra: pip install -e '.[dev]'")
# chex.assert_trees_all_close checks the trees' structures as well as their values
assert_trees_close = chex.assert_trees_all_close
from rnnjax import _fused

T, B, I, H = 12, 4, 8, 16
LENGTHS = jnp.array([12, 9, 5, 0])
CELLS = {"lstm": (rj.lstm, 4), "gru": (rj.gru, 3), "elman": (rj.elman, 1)}
DOT = re.compile(r"stablehlo.dot_general[^\n]*?: \((tensor<[^>]*>), (tensor<[^>]*>)\)")


def _loss(cell, reverse):
    def loss(params, xs):
        carry, ys = rj.scan(cell.step, params, cell.initial_carry((B,)), xs, lengths=LENGTHS, reverse=reverse)
        return jnp.sum(ys ** 2) + sum(jnp.sum(leaf) for leaf in jax.tree_util.tree_leaves(carry))
    return loss


@pytest.mark.parametrize("name", sorted(CELLS))
@pytest.mark.parametrize("dtype", [None, jnp.bfloat16])
def test_every_layout_gives_the_same_values_and_gradients(name, dtype, monkeypatch):
    cell = CELLS[name][0](I, H, dtype=dtype)
    params = jax.tree_util.tree_map(lambda a: a + 0.1, cell.init(jax.random.key(0)))  # nonzero biases
    xs = jax.random.normal(jax.random.key(1), (T, B, I))
    results = {}
    for layout in ("cpu", "accelerator"):
        monkeypatch.setattr(_fused, "LAYOUT", layout)
        fn = jax.jit(jax.value_and_grad(lambda p, x: _loss(cell, False)(p, x) + _loss(cell, True)(p, x),
                                        argnums=(0, 1)))
        results[layout] = fn(params, xs)
    tol = 1e-5 if dtype is None else 2e-2
    assert_trees_close(results["cpu"], results["accelerator"], atol=tol, rtol=tol)


def _products(hlo: str) -> list[tuple[tuple[int, ...], tuple[int, ...]]]:
    def shape(t):
        return tuple(int(d) for d in re.findall(r"(\d+)x", t))
    return [(shape(a), shape(b)) for a, b in DOT.findall(hlo)]


def _train_step(cell):
    def loss_fn(params, batch, key):
        xs, lengths = batch
        _, ys = rj.scan(cell.step, params, cell.initial_carry((B,)), xs, lengths=lengths)
        return rj.sequence_mse(ys, jnp.zeros_like(ys), lengths=lengths)

    opt = optax.sgd(0.1)
    step = rj.make_train_step(loss_fn, opt, donate=False)
    state = rj.init_train_state(cell.init(jax.random.key(0)), opt, jax.random.key(1))
    return step, state, (jnp.ones((T, B, I)), LENGTHS)


@pytest.mark.parametrize("name", ["lstm", "gru"])
def test_training_step_exported_for_gpu_and_tpu_hoists_the_input_product(name):
    factory, gates = CELLS[name]
    step, state, batch = _train_step(factory(I, H))
    products = _products(export.export(step, platforms=("cuda", "tpu"))(state, batch).mlir_module())
    per_platform = {p: products.count(p) / 2 for p in set(products)}  # each platform has its own copy
    hoisted = ((T, B, I), (I, gates * H))  # x W_ih of all steps, before the loop
    recurrent = ((B, H), (H, gates * H))  # h W_hh, once per step inside the loop
    assert per_platform.get(hoisted) == 1 and per_platform.get(recurrent) == 1, per_platform
    assert not [p for p in products if p[0] == (B, I + H)]  # no per-step [x_t, h] products
    cpu = _products(jax.jit(step).lower(state, batch).as_text())
    assert hoisted not in cpu and recurrent not in cpu  # CPU keeps its own layout
