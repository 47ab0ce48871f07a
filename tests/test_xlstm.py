"""mLSTM and sLSTM: steps against unstabilised NumPy references of the paper's equations, the
stabiliser under large gates, the chunkwise-parallel mLSTM against the step loop, and the
initialisation of the xLSTM reference code."""

import math

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import rnnjax as rj
from rnnjax import xlstm as xl
from tests.test_linear_rnn import assert_close, normal, np64, rand_tree


def sigmoid(v):
    return 1.0 / (1.0 + np.exp(-v))


# ------------------------------------------------------- unstabilised references (float64)


def mlstm_ref(p, carry, xs):
    """Beck et al. 2024, mLSTM eqs. (19)-(27) without the stabiliser: C and n are the true
    memory (the stabilised carry times e^m); f = σ(f̃), i = exp(ĩ)."""
    heads = p["w_i"].shape[1]
    hid = p["w_q"].shape[1]
    d = hid // heads
    C = carry.C * np.exp(carry.m)[..., None, None]
    n = carry.n * np.exp(carry.m)[..., None]
    ys = []
    for x in xs:
        q = (x @ p["w_q"] + p["b_q"]).reshape(x.shape[:-1] + (heads, d))
        k = ((x @ p["w_k"]) / math.sqrt(d) + p["b_k"]).reshape(q.shape)
        v = (x @ p["w_v"] + p["b_v"]).reshape(q.shape)
        i = np.exp(x @ p["w_i"] + p["b_i"])
        f = sigmoid(x @ p["w_f"] + p["b_f"])
        o = sigmoid(x @ p["w_o"] + p["b_o"])
        C = f[..., None, None] * C + i[..., None, None] * np.einsum("...a,...b->...ab", v, k)
        n = f[..., None] * n + i[..., None] * k
        num = np.einsum("...ab,...b->...a", C, q)
        den = np.maximum(np.abs((n * q).sum(-1)), 1.0)
        ys.append(o * (num / den[..., None]).reshape(x.shape[:-1] + (hid,)))
    return (C, n), np.stack(ys)


def slstm_ref(p, carry, xs):
    """Beck et al. 2024, sLSTM eqs. (8)-(17) without the stabiliser; the block-diagonal R is
    assembled as a dense [H, 4H] matrix (gates i, f, z, o side by side)."""
    heads, d, _ = p["r"].shape
    hid = heads * d
    R = np.zeros((hid, 4 * hid))
    for hd in range(heads):
        for g in range(4):
            R[hd * d:(hd + 1) * d, g * hid + hd * d: g * hid + (hd + 1) * d] = p["r"][hd][:, g * d:(g + 1) * d]
    h = carry.h
    c = carry.c * np.exp(carry.m)
    n = carry.n * np.exp(carry.m)
    ys = []
    for x in xs:
        pre = x @ p["w_ih"] + h @ R + p["b"]
        it, ft, zt, ot = np.split(pre, 4, axis=-1)
        i, f, z, o = np.exp(it), sigmoid(ft), np.tanh(zt), sigmoid(ot)
        c = f * c + i * z
        n = f * n + i
        h = o * c / n
        ys.append(h)
    return (c, n), np.stack(ys)


def params_np(params):
    return {k: np64(v) for k, v in params._asdict().items()}


def _random_carry(cell, seed, batch):
    carry = rand_tree(cell.initial_carry(batch), seed, 0.5)
    if isinstance(carry, xl.SLSTMState):  # a reachable state: n > 0
        carry = carry._replace(n=jnp.abs(carry.n) + 0.5)
    return carry


@pytest.mark.parametrize("batch", [(), (2, 3)])
def test_mlstm_step_matches_reference(batch):
    cell = xl.mlstm(3, 8, num_heads=2)
    key = jax.random.key(0)
    params = rand_tree(jax.eval_shape(cell.init, key), 1, 0.7)
    carry0 = _random_carry(cell, 2, batch)
    xs = normal(3, (5,) + batch + (3,))
    carry, ys = rj.scan(xl.mlstm_step, params, carry0, xs)
    (C_ref, n_ref), ys_ref = mlstm_ref(params_np(params), np64(carry0), np64(xs))
    np.testing.assert_allclose(np.asarray(ys), ys_ref, atol=1e-5, rtol=1e-5)
    # the carry is the true memory scaled by e^{-m}
    np.testing.assert_allclose(np.asarray(carry.C) * np.exp(np64(carry.m))[..., None, None], C_ref, rtol=1e-4, atol=1e-5)
    np.testing.assert_allclose(np.asarray(carry.n) * np.exp(np64(carry.m))[..., None], n_ref, rtol=1e-4, atol=1e-5)


@pytest.mark.parametrize("batch", [(), (2, 3)])
def test_slstm_step_matches_reference(batch):
    cell = xl.slstm(3, 8, num_heads=2)
    key = jax.random.key(1)
    params = rand_tree(jax.eval_shape(cell.init, key), 1, 0.7)
    carry0 = _random_carry(cell, 2, batch)
    xs = normal(3, (5,) + batch + (3,))
    carry, ys = rj.scan(xl.slstm_step, params, carry0, xs)
    (c_ref, n_ref), ys_ref = slstm_ref(params_np(params), np64(carry0), np64(xs))
    np.testing.assert_allclose(np.asarray(ys), ys_ref, atol=1e-5, rtol=1e-5)
    np.testing.assert_allclose(np.asarray(carry.c) * np.exp(np64(carry.m)), c_ref, rtol=1e-4, atol=1e-5)
    np.testing.assert_allclose(np.asarray(carry.h), ys_ref[-1], atol=1e-5)


def test_stabiliser_keeps_large_gates_finite():
    """Input-gate preactivations of 100 overflow exp in float32 (e^100 > 3.4e38); the stabilised
    steps stay finite and equal the float64 unstabilised references."""
    key = jax.random.key(2)
    xs = normal(0, (6, 2, 3))
    for cell, ref in ((xl.mlstm(3, 4, num_heads=2), mlstm_ref), (xl.slstm(3, 4, num_heads=2), slstm_ref)):
        params = rand_tree(jax.eval_shape(cell.init, key), 0, 0.5)
        if isinstance(params, xl.MLSTMParams):
            params = params._replace(b_i=params.b_i + 100.0)
        else:
            params = params._replace(b=params.b.at[:4].add(100.0))
        _, ys = rj.scan(cell.step, params, cell.initial_carry((2,)), xs)
        _, ys_ref = ref(params_np(params), np64(cell.initial_carry((2,))), np64(xs))
        assert bool(jnp.isfinite(ys).all())
        np.testing.assert_allclose(np.asarray(ys), ys_ref, atol=1e-5, rtol=1e-4)


# ------------------------------------------------------------- chunkwise = sequential


@pytest.mark.parametrize("chunk_size, reverse", [(3, True), (16, False)])
def test_mlstm_chunkwise_equals_sequential(chunk_size, reverse):
    """Values and gradients (params, initial carry, inputs), with lengths 0, 1, part and all of
    T = 10; a chunk size that does not divide T (so the last chunk is padded), and one that
    exceeds it (the fully parallel form)."""
    cell = xl.mlstm(3, 8, num_heads=2)
    key = jax.random.key(3)
    params = rand_tree(jax.eval_shape(cell.init, key), 1, 0.7)
    carry = _random_carry(cell, 2, (4,))
    xs = normal(3, (10, 4, 3))
    lengths = jnp.array([10, 7, 0, 1])
    out_shape = jax.eval_shape(lambda: rj.scan(xl.mlstm_step, params, carry, xs, lengths=lengths))
    ws = rand_tree(jax.tree_util.tree_map(lambda s: jnp.zeros(s.shape, s.dtype), out_shape), 0, 1.0)

    def seq(p, c, x):
        return rj.scan(xl.mlstm_step, p, c, x, lengths=lengths, reverse=reverse)

    def par(p, c, x):
        return xl.mlstm_parallel(p, c, x, lengths, reverse, chunk_size=chunk_size)

    def loss(run, *a):
        return sum(jnp.sum(o * w) for o, w in zip(jax.tree_util.tree_leaves(run(*a)), jax.tree_util.tree_leaves(ws), strict=True))

    @jax.jit
    def both(p, c, x):
        return [(run(p, c, x), jax.grad(lambda *a, run=run: loss(run, *a), argnums=(0, 1, 2))(p, c, x)) for run in (seq, par)]

    (out_s, g_s), (out_p, g_p) = both(params, carry, xs)
    assert_close(out_p, out_s)
    assert_close(g_p, g_s)
    for leaf in jax.tree_util.tree_leaves(g_p):
        assert bool(jnp.isfinite(leaf).all())
    assert float(jnp.abs(out_p[1][7:, 1]).max()) == 0.0
    assert_close(jax.tree_util.tree_map(lambda a: a[2], out_p[0]), jax.tree_util.tree_map(lambda a: a[2], carry))


@pytest.mark.slow  # compiling the gradients of both forms takes several seconds
def test_mlstm_chunkwise_long_sequence():
    """T = 4096 in chunks of 64 equals the step loop (values and gradients)."""
    cell = xl.mlstm(2, 4, num_heads=2)
    key = jax.random.key(4)
    params = rand_tree(jax.eval_shape(cell.init, key), 0, 0.5)
    carry = cell.initial_carry((2,))
    xs = normal(0, (4096, 2, 2))
    lengths = jnp.array([4096, 2999])
    w = jnp.cos(jnp.arange(4096 * 2 * 4)).reshape(4096, 2, 4)

    def loss(run, p, x):
        c, ys = run(p, x)
        return jnp.sum(ys * w) + jnp.sum(c.C)

    def seq(p, x):
        return rj.scan(xl.mlstm_step, p, carry, x, lengths=lengths)

    def par(p, x):
        return xl.mlstm_parallel(p, carry, x, lengths, False, chunk_size=64)

    @jax.jit
    def both(p, x):
        return [(run(p, x), jax.grad(lambda *a, run=run: loss(run, *a))(p, x)) for run in (seq, par)]

    (out_s, g_s), (out_p, g_p) = both(params, xs)
    assert_close(out_p, out_s)
    assert_close(g_p, g_s, atol=1e-5, rtol=1e-4)


def test_step_jit_equals_eager():
    key = jax.random.key(5)
    x = normal(0, (2, 3))
    for cell in (xl.mlstm(3, 4, num_heads=2), xl.slstm(3, 4, num_heads=2)):
        params = rand_tree(jax.eval_shape(cell.init, key), 0)
        carry = _random_carry(cell, 0, (2,))
        assert_close(jax.jit(cell.step)(params, carry, x), cell.step(params, carry, x), atol=1e-6)


# ----------------------------------------------------------------------- initialisation


def test_mlstm_initialisation():
    cell = xl.mlstm(10, 512, num_heads=256)
    p = jax.jit(cell.init)(jax.random.key(0))
    np.testing.assert_allclose(p.b_f, np.linspace(3.0, 6.0, 256), rtol=1e-6)
    assert float(jnp.abs(p.w_i).max()) == 0.0 and float(jnp.abs(p.w_f).max()) == 0.0
    np.testing.assert_allclose(np.std(p.b_i), 0.1, rtol=0.15)
    np.testing.assert_allclose(np.std(p.w_q), math.sqrt(2 / 50), rtol=0.05)
    carry = cell.initial_carry((3,))
    assert carry.C.shape == (3, 256, 2, 2) and carry.n.shape == (3, 256, 2) and carry.m.shape == (3, 256)
    assert xl.mlstm(8, 16).init(jax.random.key(0)).w_i.shape == (8, 4)  # 4 heads by default


def test_slstm_initialisation():
    p = jax.jit(xl.slstm(10, 8, num_heads=2).init)(jax.random.key(0))
    assert float(jnp.abs(p.r).max()) == 0.0
    forget = np.asarray(p.b[8:16]).reshape(2, 4)
    np.testing.assert_allclose(forget[0], 5.0 - 12.0 * (np.arange(4) / 3) ** 0.3, rtol=1e-6)
    np.testing.assert_allclose(forget[1], forget[0])
    np.testing.assert_array_equal(np.asarray(p.b[:8]), 0)
    np.testing.assert_array_equal(np.asarray(p.b[16:]), 0)
    np.testing.assert_allclose(np.std(p.w_ih), math.sqrt(2 / 50), rtol=0.2)


# ------------------------------------------------------------------------------- errors


def test_errors_name_the_argument():
    cell = xl.mlstm(3, 8, num_heads=2)
    params = jax.eval_shape(cell.init, jax.random.key(0))
    with pytest.raises(ValueError, match="num_heads: expected a divisor of hidden_size = 8"):
        xl.mlstm(3, 8, num_heads=3)
    with pytest.raises(ValueError, match="num_heads: expected a positive int"):
        xl.slstm(3, 8, num_heads=0)
    with pytest.raises(TypeError, match=r"carry: expected MLSTMState\(C, n, m\)"):
        xl.mlstm_step(params, jnp.zeros((8,)), jnp.ones(3))
    with pytest.raises(ValueError, match=r"carry.C: expected shape \[2, 2, 4, 4\]"):
        xl.mlstm_step(params, cell.initial_carry((3,)), jnp.ones((2, 3)))
    with pytest.raises(ValueError, match=r"x: expected shape \[\*batch, 3\]"):
        xl.mlstm_step(params, cell.initial_carry((2,)), jnp.ones((2, 4)))
    with pytest.raises(ValueError, match="chunk_size: expected a positive int"):
        xl.mlstm_parallel(params, cell.initial_carry((2,)), jnp.ones((5, 2, 3)), None, False, chunk_size=0)
    s = xl.slstm(3, 8, num_heads=2)
    with pytest.raises(TypeError, match=r"params: expected SLSTMParams"):
        xl.slstm_step(params, s.initial_carry(), jnp.ones(3))
    with pytest.raises(ValueError, match=r"carry.m: expected shape \[8\]"):
        good = s.initial_carry()
        xl.slstm_step(jax.eval_shape(s.init, jax.random.key(0)), good._replace(m=jnp.zeros(3)), jnp.ones(3))


# ------------------------------------------------------------------- the precision policy


@pytest.mark.parametrize("name", ["mlstm", "slstm"])
def test_bf16_compute_policy(name):
    from tests.test_norm_cells import check_bf16_policy

    factory = xl.mlstm if name == "mlstm" else xl.slstm
    c32, c16 = factory(3, 8, num_heads=2), factory(3, 8, num_heads=2, dtype=jnp.bfloat16)
    params = rand_tree(jax.eval_shape(c32.init, jax.random.key(5)), 1, 0.7)
    carry = _random_carry(c32, 2, (3,))
    xs = normal(3, (6, 3, 3))
    # mLSTM: six input projections in bf16, the memory readout C q in float32; sLSTM: x W and h R
    check_bf16_policy(c32, c16, params, carry, xs, jnp.array([6, 4, 1]), *((6, 1) if name == "mlstm" else (2, 0)))


@pytest.mark.parametrize("reverse", [False, True])
def test_mlstm_parallel_follows_the_compute_dtype(reverse):
    from tests.test_norm_cells import product_dtypes

    cell = xl.mlstm(3, 8, num_heads=2, dtype=jnp.bfloat16)
    params = rand_tree(jax.eval_shape(cell.init, jax.random.key(6)), 1, 0.7)
    carry = _random_carry(cell, 2, (4,))
    xs, lengths = normal(4, (10, 4, 3)), jnp.array([10, 7, 0, 1])
    seq, par = rj.rnn(cell, reverse=reverse), rj.rnn(cell, reverse=reverse, parallel=True)
    dots = product_dtypes(lambda p, c, x: par.apply(p, x, lengths=lengths, carry=c), params, carry, xs)
    assert dots.count(("bfloat16", "bfloat16", "float32")) == 6  # the projections of all steps at once
    out_s, out_p = jax.jit(lambda p, c, x: (seq.apply(p, x, lengths=lengths, carry=c),
                                            par.apply(p, x, lengths=lengths, carry=c)))(params, carry, xs)
    assert_close(out_p, out_s, atol=1e-5, rtol=1e-4)  # the same bf16 products, summed in another order
    # and both are within bf16 round-off of the float32 cell, not equal to it
    f32 = rj.rnn(xl.mlstm(3, 8, num_heads=2), reverse=reverse).apply(params, xs, lengths=lengths, carry=carry)
    assert 0 < float(jnp.abs(out_p[1] - f32[1]).max()) < 3e-2 * float(jnp.abs(f32[1]).max())


@pytest.mark.parametrize("kw", [{"dtype": jnp.int32}, {"param_dtype": "int8"}, {"carry_dtype": None}])
def test_precision_keywords_are_checked(kw):
    name = next(iter(kw))
    for factory in (xl.mlstm, xl.slstm):
        with pytest.raises(TypeError, match=f"{name}: expected a floating-point dtype"):
            factory(3, 8, num_heads=2, **kw)
