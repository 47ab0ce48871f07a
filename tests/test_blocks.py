"""Mamba and Hawk blocks and their pieces: NumPy references, whole-sequence form = step loop
(values, gradients, lengths, reverse), the papers' sizes, and composition with deep, stack and
greedy decoding."""

import math

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from scipy.special import erf

import rnnjax as rj
from rnnjax import blocks as bl
from tests.test_linear_rnn import assert_close, normal, np64, rand_tree, rg_lru_ref, ssm_ref
from tests.test_xlstm import sigmoid, slstm_ref


def silu(v):
    return v / (1.0 + np.exp(-v))


def gelu(v):  # jax.nn.gelu's default is the tanh approximation
    return 0.5 * v * (1.0 + np.tanh(math.sqrt(2 / math.pi) * (v + 0.044715 * v**3)))


def rms_ref(x, scale, eps=1e-6):
    return x / np.sqrt((x**2).mean(-1, keepdims=True) + eps) * scale


def conv_ref(w, b, history, x):
    """y = Σ_j w[j] x_{t-K+1+j} + b from the explicit window [history (K-1 inputs); x]."""
    window = np.concatenate([history, x[..., None, :]], axis=-2)
    return window[..., 1:, :], (window * w).sum(-2) + b


def p_np(params):
    return {k: (None if v is None else np64(v)) for k, v in params._asdict().items()}


def mamba_ref(p, carry, x):
    u, z = np.split(rms_ref(x, p["norm"]) @ p["w_in"], 2, axis=-1)
    conv, u = conv_ref(p["conv"].w, p["conv"].b, carry.conv, u)
    ssm, y = ssm_ref(p_np(p["ssm"]), carry.ssm, silu(u))
    return (conv, ssm), x + (y * silu(z)) @ p["w_out"]


def hawk_ref(p, carry, x):
    h = rms_ref(x, p["norm1"])
    conv, u = conv_ref(p["conv"].w, p["conv"].b, carry.conv, h @ p["w_x"])
    rnn, r = rg_lru_ref(p_np(p["rnn"]), carry.rnn, u)
    x2 = x + (r * gelu(h @ p["w_gate"])) @ p["w_out"]
    m = p["mlp"]
    h2 = rms_ref(x2, p["norm2"])
    return (conv, rnn), x2 + (gelu(h2 @ m.w_gate) * (h2 @ m.w_up)) @ m.w_down


def ln_ref(x, scale, eps=1e-5):
    mu = x.mean(-1, keepdims=True)
    return (x - mu) / np.sqrt(((x - mu) ** 2).mean(-1, keepdims=True) + eps) * scale


def head_norm_ref(h, scale, heads):
    split = h.reshape(h.shape[:-1] + (heads, -1))
    return ln_ref(split, 1.0).reshape(h.shape) * scale


def mlstm_block_ref(p, carry, x):
    """xLSTM mLSTM block, one step, the memory unstabilised (true C = C e^m)."""
    heads = p["w_i"].shape[1]
    e = p["w_q"].shape[1]
    d = e // heads
    xm, z = np.split(ln_ref(x, p["norm"]) @ p["w_up"], 2, axis=-1)
    conv, c = conv_ref(p["conv"].w, p["conv"].b, carry.conv, xm)
    c = silu(c)
    q, k, v = c @ p["w_q"], c @ p["w_k"] / math.sqrt(d), xm @ p["w_v"]
    g = np.concatenate([q, k * math.sqrt(d), v], -1)
    i = np.exp(g @ p["w_i"] + p["b_i"])
    f = sigmoid(g @ p["w_f"] + p["b_f"])
    sh = x.shape[:-1] + (heads, d)
    q, k, v = q.reshape(sh), k.reshape(sh), v.reshape(sh)
    C = carry.cell.C * np.exp(carry.cell.m)[..., None, None]
    n = carry.cell.n * np.exp(carry.cell.m)[..., None]
    C = f[..., None, None] * C + i[..., None, None] * v[..., :, None] * k[..., None, :]
    n = f[..., None] * n + i[..., None] * k
    h = np.einsum("...ab,...b->...a", C, q) / np.maximum(np.abs((n * q).sum(-1)), 1.0)[..., None]
    h = head_norm_ref(h.reshape(x.shape[:-1] + (e,)), p["out_norm"], heads)
    return (conv, None), x + ((h + p["skip"] * c) * silu(z)) @ p["w_down"]


def slstm_block_ref(p, carry, x):
    d = x.shape[-1]
    h = ln_ref(x, p["norm1"])
    conv, c = conv_ref(p["conv"].w, p["conv"].b, carry.conv, h)
    cell = dict(p["cell"]._asdict())
    w = cell["w_ih"].copy()
    w[:d, 2 * d:] = 0.0  # the convolved input feeds only i, f
    w[d:, :2 * d] = 0.0  # the normed input feeds only z, o
    cell["w_ih"] = w
    _, ys = slstm_ref(cell, carry.cell, np.concatenate([silu(c), h], -1)[None])
    x2 = x + head_norm_ref(ys[0], p["out_norm"], cell["r"].shape[0])
    m = p["mlp"]
    h2 = ln_ref(x2, p["norm2"])
    return (conv, None), x2 + (gelu(h2 @ m.w_gate) * (h2 @ m.w_up)) @ m.w_down


def test_gelu_reference_is_jax_default():
    v = np.linspace(-4, 4, 9)
    np.testing.assert_allclose(np.asarray(jax.nn.gelu(jnp.asarray(v, jnp.float32))), gelu(v), atol=1e-6)
    # and differs from the exact erf form, so the reference pins which one the blocks use
    assert np.abs(gelu(v) - 0.5 * v * (1 + erf(v / math.sqrt(2)))).max() > 1e-4


BLOCKS = {
    "mamba": (lambda: bl.mamba_block(4, state_size=3), mamba_ref, bl.mamba_block_parallel),
    "hawk": (lambda: bl.hawk_block(3), hawk_ref, bl.hawk_block_parallel),
    "mlstm": (lambda: bl.mlstm_block(4, num_heads=2), mlstm_block_ref,
              lambda p, c, x, n, r: bl.mlstm_block_parallel(p, c, x, n, r, chunk_size=4)),
    "slstm": (lambda: bl.slstm_block(4, num_heads=2), slstm_block_ref, None),
}


def _width(params):
    return (params.norm if hasattr(params, "norm") else params.norm1).shape[0]


@pytest.mark.parametrize("name", sorted(BLOCKS))
def test_block_step_matches_reference(name):
    make, ref, _ = BLOCKS[name]
    block = make()
    key = jax.random.key(0)
    params = rand_tree(jax.eval_shape(block.init, key), 1)
    carry = rand_tree(block.initial_carry((2,)), 2)
    if name == "slstm":
        carry = carry._replace(cell=carry.cell._replace(n=jnp.abs(carry.cell.n) + 0.5))
    d = _width(params)
    x = normal(3, (2, d))
    new, y = block.step(params, carry, x)
    pn = {k: np64(v) for k, v in params._asdict().items()}
    (conv_r, state_r), y_r = ref(pn, np64(carry), np64(x))
    np.testing.assert_allclose(np.asarray(y), y_r, atol=1e-5, rtol=1e-5)
    np.testing.assert_allclose(np.asarray(new.conv), conv_r, atol=1e-6)
    if state_r is not None:
        np.testing.assert_allclose(np.asarray(new[1]), state_r, atol=1e-5, rtol=1e-5)


@pytest.mark.parametrize("name, reverse", [("mamba", True), ("hawk", False), ("mlstm", True)])
def test_block_parallel_equals_sequential(name, reverse):
    make, _, parallel = BLOCKS[name]
    block = make()
    key = jax.random.key(1)
    params = rand_tree(jax.eval_shape(block.init, key), 1, 0.5)
    carry = rand_tree(block.initial_carry((4,)), 2)
    d = _width(params)
    xs = normal(3, (9, 4, d))
    lengths = jnp.array([9, 5, 0, 2])  # 2 < K - 1: the buffer keeps part of the initial one
    ws = normal(4, (9, 4, d))

    def seq(p, c, x):
        return rj.scan(block.step, p, c, x, lengths=lengths, reverse=reverse)

    def par(p, c, x):
        return parallel(p, c, x, lengths, reverse)

    def loss(run, p, c, x):
        carry, ys = run(p, c, x)
        return jnp.sum(ys * ws) + sum(jnp.sum(jnp.sin(leaf)) for leaf in jax.tree_util.tree_leaves(carry))

    @jax.jit
    def both(p, c, x):
        return [(run(p, c, x), jax.grad(lambda *a, run=run: loss(run, *a), argnums=(0, 1, 2))(p, c, x))
                for run in (seq, par)]

    (out_s, g_s), (out_p, g_p) = both(params, carry, xs)
    assert_close(out_p, out_s)
    assert_close(g_p, g_s)
    assert float(jnp.abs(out_p[1][5:, 1]).max()) == 0.0


def test_causal_conv_sequence_matches_numpy():
    """Against np.convolve per channel, from a zero buffer; the returned buffer is the last
    K-1 valid inputs."""
    p = bl.CausalConvParams(normal(0, (4, 3)), normal(1, (3,)))
    xs = normal(2, (7, 2, 3))
    lengths = jnp.array([7, 5])
    buf, ys = bl.causal_conv(p, jnp.zeros((2, 3, 3)), xs, lengths)
    w, b, x = np64(p.w), np64(p.b), np64(xs)
    for i, n in enumerate([7, 5]):
        for c in range(3):
            full = np.convolve(x[:n, i, c], w[::-1, c])[:n] + b[c]
            np.testing.assert_allclose(np.asarray(ys[:n, i, c]), full, atol=1e-5)
        np.testing.assert_allclose(np.asarray(buf[i]), x[n - 3:n, i], atol=0)
    assert float(jnp.abs(ys[5:, 1]).max()) == 0.0


def test_rms_norm_matches_numpy():
    x = normal(0, (3, 5))
    scale = normal(1, (5,))
    np.testing.assert_allclose(np.asarray(bl.rms_norm(x, scale)), rms_ref(np64(x), np64(scale)), rtol=1e-5)


def test_papers_sizes():
    p = jax.eval_shape(bl.mamba_block(32).init, jax.random.key(0))
    assert p.w_in.shape == (32, 128) and p.conv.w.shape == (4, 64)  # E = 2D, K = 4
    assert p.ssm.a_log.shape == (64, 16) and p.ssm.w_delta.shape == (64, 2)  # N = 16, R = ceil(D/16)
    assert p.ssm.w_in is None
    h = jax.eval_shape(bl.hawk_block(30).init, jax.random.key(0))
    assert h.w_x.shape == (30, 40) and h.mlp.w_up.shape == (30, 90) and h.conv.w.shape == (4, 40)
    assert h.rnn.w_in is None


@pytest.mark.parametrize("name", sorted(BLOCKS))
def test_blocks_stack_deep_and_decode(name):
    make, _, _ = BLOCKS[name]
    b1, b2 = make(), make()
    d = _width(jax.eval_shape(b1.init, jax.random.key(0)))
    model = rj.deep(b1, b2)
    params = rand_tree(jax.eval_shape(model.init, jax.random.key(0)), 1, 0.4)
    xs = normal(2, (6, 3, d))
    lengths = jnp.array([6, 2, 4])
    stacked = rj.stack(b1, b2)

    @jax.jit
    def both(params):
        deep_out = model.apply(params, xs, lengths=lengths)
        return deep_out, rj.scan(stacked.step, params, stacked.initial_carry((3,)), xs, lengths=lengths)

    (c_deep, ys_deep), (c_stack, ys_stack) = both(params)
    assert_close(ys_deep, ys_stack, atol=1e-5)
    assert_close(c_deep, c_stack, atol=1e-5)

    lm = rj.language_model(stacked, vocab_size=5, embed_size=d)
    lp = rand_tree(jax.eval_shape(lm.init, jax.random.key(0)), 3, 0.8)
    tokens, _ = jax.jit(lambda p: rj.greedy(lm.step, p, lm.initial_carry((2,)), jnp.array([1, 4]), max_len=4))(lp)
    carry, tok, expected, step = lm.initial_carry((2,)), jnp.array([1, 4]), [], jax.jit(lm.step)
    for _ in range(4):
        carry, logits = step(lp, carry, tok)
        tok = jnp.argmax(logits, -1)
        expected.append(tok)
    np.testing.assert_array_equal(tokens, jnp.stack(expected))


def test_errors_name_the_argument():
    block = bl.mamba_block(4, state_size=2)
    params = jax.eval_shape(block.init, jax.random.key(0))
    with pytest.raises(TypeError, match=r"carry: expected MambaBlockState\(conv, ssm\)"):
        bl.mamba_block_step(params, jnp.zeros((2, 4)), jnp.ones((2, 4)))
    with pytest.raises(ValueError, match=r"x: expected shape \[\*batch, 4\]"):
        bl.mamba_block_step(params, block.initial_carry((2,)), jnp.ones((2, 5)))
    with pytest.raises(ValueError, match="d_model: expected a positive int"):
        bl.hawk_block(0)
    with pytest.raises(ValueError, match=r"carry: expected shape \[2, 3, 3\]"):
        bl.causal_conv_step(bl.CausalConvParams(jnp.ones((4, 3)), jnp.zeros(3)), jnp.zeros((2, 2, 3)), jnp.ones((2, 3)))
