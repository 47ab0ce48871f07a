"""The fused whole-sequence kernels behind ``rnnjax.scan`` equal the plain step loop.

``rnnjax.scan`` runs ``elman_step`` (any activation), ``lstm_step`` and ``gru_step`` through
hand-written forward/backward kernels (``rnnjax/_fused.py``). Each test compares them with the
definition in docs/design.md written out as a Python loop over the public step function — values
and gradients (with respect to params, initial carry and inputs), with and without lengths,
in both directions, for any batch shape, under jit, vmap, checkpoint and grad-of-grad, and
with bf16 params next to a float32 carry. Each side is compiled once per test.
"""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import rnnjax as rj
from rnnjax import _fused, _registry
from tests.conftest import assert_trees_close

T, B, I, H = 5, 3, 3, 4
LENGTHS = np.array([5, 2, 0])
CELLS = {
    "elman": lambda **kw: rj.elman(I, H, **kw),
    "elman_relu": lambda **kw: rj.elman(I, H, activation="relu", **kw),
    "lstm": lambda **kw: rj.lstm(I, H, **kw),
    "gru": lambda **kw: rj.gru(I, H, **kw),
}


def step_loop(step, params, carry, xs, lengths=None, reverse=False):
    """docs/design.md §1 (padding, reverse) as a loop: padding holds the carry and outputs zero; reverse runs t = T-1..0."""
    num_steps = xs.shape[0]
    ys = [None] * num_steps
    for t in reversed(range(num_steps)) if reverse else range(num_steps):
        new, y = step(params, carry, xs[t])
        if lengths is not None:
            valid = jnp.asarray(t) < lengths  # [*batch]

            def pick(n, o, valid=valid):
                return jnp.where(valid.reshape(valid.shape + (1,) * (n.ndim - valid.ndim)), n, o)

            new = jax.tree_util.tree_map(pick, new, carry)
            y = pick(y, jnp.zeros_like(y))
        carry, ys[t] = new, y
    return carry, jnp.stack(ys)


def normal_like(key, tree, scale=0.5):
    leaves, treedef = jax.tree_util.tree_flatten(tree)
    keys = jax.random.split(key, len(leaves))
    return jax.tree_util.tree_unflatten(
        treedef, [(scale * jax.random.normal(k, a.shape)).astype(a.dtype) for k, a in zip(keys, leaves, strict=True)]
    )


def setup(name, key, batch=(B,), dtype=jnp.float32):
    """Step, params, carry and xs, all drawn at random (no zero bias or carry hides a term)."""
    cell = CELLS[name](param_dtype=dtype)
    k1, k2, k3 = jax.random.split(key, 3)
    params = normal_like(k1, jax.eval_shape(cell.init, k1))
    carry = normal_like(k2, cell.initial_carry(batch), scale=1.0)
    return cell.step, params, carry, jax.random.normal(k3, (T, *batch, I))


def weights_like(tree):
    """Fixed, irregular weights (cheaper to compile than random draws inside jit)."""
    leaves, treedef = jax.tree_util.tree_flatten(tree)
    return jax.tree_util.tree_unflatten(
        treedef, [jnp.sin(1.7 * jnp.arange(a.size) + k).reshape(a.shape) for k, a in enumerate(leaves)]
    )


def value_and_grads(run, params, carry, xs):
    """``run``'s outputs and the gradients of a weighted sum of all of them."""

    def loss(p, c, x):
        out = run(p, c, x)
        pairs = zip(jax.tree_util.tree_leaves(out), jax.tree_util.tree_leaves(weights_like(out)), strict=True)
        return sum(jnp.sum(o * w) for o, w in pairs)

    return run(params, carry, xs), jax.grad(loss, argnums=(0, 1, 2))(params, carry, xs)


def compare(runs_fused, runs_loop, args, **tol):
    """Compile each side once: every run's values and gradients, fused vs loop."""
    side = lambda runs: jax.jit(lambda: [value_and_grads(r, *args) for r in runs])()
    assert_trees_close(side(runs_fused), side(runs_loop), **tol)


@pytest.mark.parametrize("name", list(CELLS))
def test_fused_values_and_gradients_equal_step_loop(name, key):
    step, params, carry, xs = setup(name, key)
    lengths = jnp.asarray(LENGTHS)
    variants = [(lengths, False), (lengths, True), (None, False), (None, True)]
    fused = [lambda p, c, x, n=n, r=r: rj.scan(step, p, c, x, lengths=n, reverse=r) for n, r in variants]
    loop = [lambda p, c, x, n=n, r=r: step_loop(step, p, c, x, n, r) for n, r in variants]
    compare(fused, loop, (params, carry, xs), atol=2e-5, rtol=2e-5)


def test_any_batch_shape_and_unroll(key):
    k1, k2 = jax.random.split(key)
    step, params, carry2, xs2 = setup("lstm", k1, batch=(2, 2))
    _, _, carry0, xs0 = setup("lstm", k2, batch=())
    n2, n0 = jnp.array([[5, 1], [0, 3]]), jnp.asarray(3)

    def runs(scan):  # two batch shapes in one program: (2, 2) and unbatched
        return [lambda p, c, x: (scan(p, c, x, n2, True), scan(p, carry0, xs0, n0, False))]

    fused = runs(lambda p, c, x, n, r: rj.scan(step, p, c, x, lengths=n, reverse=r, unroll=2))
    loop = runs(lambda p, c, x, n, r: step_loop(step, p, c, x, n, r))
    compare(fused, loop, (params, carry2, xs2), atol=2e-5)


def test_vmap_over_sequences_and_over_params(key):
    step, params, carry, xs = setup("gru", key)
    lengths = jnp.asarray(LENGTHS)
    ensemble = jax.tree_util.tree_map(lambda a: jnp.stack([a, 0.5 * a]), params)

    def check(scan):
        one = lambda p, c, x, n: scan(p, c, x, n)
        # each sequence alone (unbatched, vmapped over the batch) and an ensemble of two params
        per_seq = jax.vmap(one, in_axes=(None, 0, 1, 0), out_axes=(0, 1))(params, carry, xs, lengths)
        loss = lambda p: jnp.sum(one(p, carry, xs, lengths)[1] ** 2) + jnp.sum(one(p, carry, xs, lengths)[0] ** 2)
        return per_seq, jax.vmap(jax.grad(loss))(ensemble)

    fused = jax.jit(lambda: check(lambda p, c, x, n: rj.scan(step, p, c, x, lengths=n, reverse=True)))()
    loop = jax.jit(lambda: check(lambda p, c, x, n: step_loop(step, p, c, x, n, True)))()
    assert_trees_close(fused, loop, atol=2e-5)


def test_second_order_and_checkpoint(key):
    """Hessian-vector products (grad of grad) go through the hand-written backward pass, and
    so does a ``jax.checkpoint``-ed scan."""
    step, params, carry, xs = setup("lstm", key)
    lengths = jnp.asarray(LENGTHS)
    v = normal_like(key, params)

    def check(run):
        loss = lambda p: jnp.sum(run(p)[1] ** 2) + jnp.sum(run(p)[0].c ** 2)
        hvp = jax.grad(lambda p: sum(jnp.vdot(g, w) for g, w in zip(jax.grad(loss)(p), v, strict=True)))(params)
        return hvp, jax.grad(jax.checkpoint(loss))(params)

    fused = jax.jit(lambda: check(lambda p: rj.scan(step, p, carry, xs, lengths=lengths)))()
    loop = jax.jit(lambda: check(lambda p: step_loop(step, p, carry, xs, lengths)))()
    assert_trees_close(fused, loop, atol=1e-4, rtol=1e-4)


def test_bf16_params_with_float32_carry(key):
    """Same bf16 weights, float32 math and carry: values agree to float32 round-off; bf16
    gradients both round a float32 result once, so they agree to a couple of bf16 ulps."""
    names, keys = ("elman", "lstm", "gru"), jax.random.split(key, 3)
    setups = [setup(name, k, dtype=jnp.bfloat16) for name, k in zip(names, keys, strict=True)]
    lengths = jnp.asarray(LENGTHS)

    def side(scan):
        return [value_and_grads(lambda p, c, x, s=s: scan(s, p, c, x), p, c, x) for s, p, c, x in setups]

    fused = jax.jit(lambda: side(lambda s, p, c, x: rj.scan(s, p, c, x, lengths=lengths)))()
    loop = jax.jit(lambda: side(lambda s, p, c, x: step_loop(s, p, c, x, lengths)))()
    dtypes = lambda tree: jax.tree_util.tree_map(lambda a: a.dtype, tree)
    for (out_f, g_f), (out_l, g_l) in zip(fused, loop, strict=True):
        assert dtypes((out_f, g_f)) == dtypes((out_l, g_l))
        assert all(a.dtype == jnp.float32 for a in jax.tree_util.tree_leaves(out_f))
        assert_trees_close(out_f, out_l, atol=1e-5)
        assert_trees_close(g_f, g_l, atol=2e-2, rtol=2e-2)


def test_dispatch_picks_fused_kernels_for_built_in_cells_only(key):
    def uses_fused(step, params, carry, xs):
        jaxpr = str(jax.make_jaxpr(lambda p: rj.scan(step, p, carry, xs))(params))
        return "custom_vjp_call" in jaxpr

    for name in CELLS:
        step, params, carry, xs = setup(name, key)
        assert uses_fused(step, params, carry, xs), name
        assert not uses_fused(lambda p, c, x, s=step: s(p, c, x), params, carry, xs), name
        assert uses_fused(step, params, np.asarray(carry) if name != "lstm" else carry, xs), name

    peephole = rj.peephole_lstm(I, H)
    params = jax.eval_shape(peephole.init, key)
    assert _registry.fused_kernel(peephole.step, params, peephole.initial_carry((B,))) is None

    class OtherParams(rj.LSTMParams):  # a subclass is not the container the kernel returns
        pass

    lstm = rj.lstm(I, H)
    other = OtherParams(*jax.eval_shape(lstm.init, key))
    assert _registry.fused_kernel(rj.lstm_step, other, lstm.initial_carry((B,))) is None


@pytest.mark.parametrize("reverse", [False, True])
def test_stacked_lstm_forward_equals_step_loop(key, monkeypatch, reverse):
    """Large forward-only LSTM runs use one stacked gate product (here forced at any size):
    same values as the loop; a gradient still takes the per-gate forward, and is right too."""
    monkeypatch.setattr(_fused, "STACKED_MIN_MACS", 0)
    assert _fused._stacked(B, I, H, save=False) and not _fused._stacked(B, I, H, save=True)
    step, params, carry, xs = setup("lstm", key)
    lengths = jnp.asarray(LENGTHS)
    fused = jax.jit(lambda p, c, x: rj.scan(step, p, c, x, lengths=lengths, reverse=reverse))
    loop = jax.jit(lambda p, c, x: step_loop(step, p, c, x, lengths, reverse))
    assert_trees_close(fused(params, carry, xs), loop(params, carry, xs), atol=1e-6)
    assert_trees_close(value_and_grads(fused, params, carry, xs), value_and_grads(loop, params, carry, xs),
                       atol=1e-5)
