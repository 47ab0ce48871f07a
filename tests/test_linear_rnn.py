"""LRU, RG-LRU and the selective SSM: steps against NumPy references of the papers' equations,
the parallel forms against the step loop, the papers' initialisations, and composition of all
the new cells (these three and xLSTM's two) with deep, bidirectional, stack and greedy."""

import math

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import rnnjax as rj
from rnnjax import linear_rnn as lr
from rnnjax import xlstm as xl

# ------------------------------------------------------------------------------ helpers


def rand_tree(tree, seed, scale=0.5):
    """A tree shaped like ``tree`` (arrays or shape structs) of random values, drawn with NumPy
    (complex leaves get both parts)."""
    rng = np.random.default_rng(seed)

    def draw(leaf):
        if jnp.issubdtype(leaf.dtype, jnp.complexfloating):
            return jnp.asarray(scale * (rng.standard_normal(leaf.shape) + 1j * rng.standard_normal(leaf.shape)),
                               leaf.dtype)
        return jnp.asarray(scale * rng.standard_normal(leaf.shape), leaf.dtype)

    return jax.tree_util.tree_map(draw, tree)


def normal(seed, shape):
    return jnp.asarray(np.random.default_rng(seed).standard_normal(shape), jnp.float32)


def np64(tree):
    def conv(a):
        a = np.asarray(a)
        return a.astype(np.complex128) if np.iscomplexobj(a) else a.astype(np.float64)

    return jax.tree_util.tree_map(conv, tree)


def assert_close(a, b, atol=1e-5, rtol=1e-5):
    la, ta = jax.tree_util.tree_flatten(a)
    lb, tb = jax.tree_util.tree_flatten(b)
    assert ta == tb, (ta, tb)
    for x, y in zip(la, lb, strict=True):
        np.testing.assert_allclose(np.asarray(x), np.asarray(y), atol=atol, rtol=rtol)


def sigmoid(v):
    return 1.0 / (1.0 + np.exp(-v))


def softplus(v):
    return np.log1p(np.exp(v))


# ------------------------------------------------------------------ NumPy references (float64)


def lru_ref(p, h, x):
    """Orvieto et al. 2023, eq. of the LRU: x_k = Λ x_{k-1} + γ ⊙ B u_k, y_k = Re(C x_k) + D u_k."""
    lam = np.exp(-np.exp(p["nu_log"]) + 1j * np.exp(p["theta_log"]))
    B = p["b_re"] + 1j * p["b_im"]  # [I, N], applied as x @ B
    C = p["c_re"] + 1j * p["c_im"]  # [N, H]
    h_new = lam * h + np.exp(p["gamma_log"]) * (x @ B)
    return h_new, np.real(h_new @ C) + x @ p["d"]


def rg_lru_ref(p, h, x):
    """De et al. 2024, eqs. (1)-(4): r, i gates, a_t = a^(c r_t), h = a h + sqrt(1 - a²)(i x)."""
    u = x if p["w_in"] is None else x @ p["w_in"]
    r = sigmoid(u @ p["w_a"] + p["b_a"])
    i = sigmoid(u @ p["w_x"] + p["b_x"])
    a = sigmoid(p["lam"]) ** (8.0 * r)
    h_new = a * h + np.sqrt(1.0 - a**2) * (i * u)
    return h_new, h_new


def ssm_ref(p, h, x):
    """Gu & Dao 2023, Algorithm 2 with the zero-order hold of eq. (4): per channel c and state n,
    Ā = exp(ΔA), B̄ = (ΔA)^-1 (exp(ΔA) - I) ΔB."""
    u = x if p["w_in"] is None else x @ p["w_in"]
    H, N = p["a_log"].shape
    A = -np.exp(p["a_log"])
    delta = softplus(u @ p["w_delta"] @ p["w_dt"] + p["b_dt"])  # [*, H]
    B = u @ p["w_b"]
    C = u @ p["w_c"]
    h_new = np.empty_like(h)
    y = np.empty(h.shape[:-1])
    for c in range(H):
        for n in range(N):
            dA = delta[..., c] * A[c, n]
            a_bar = np.exp(dA)
            b_bar = (np.exp(dA) - 1.0) / dA * delta[..., c] * B[..., n]
            h_new[..., c, n] = a_bar * h[..., c, n] + b_bar * u[..., c]
        y[..., c] = (h_new[..., c, :] * C).sum(-1) + p["d"][c] * u[..., c]
    return h_new, y


def params_np(params):
    return {k: (None if v is None else np64(v)) for k, v in params._asdict().items()}


# name -> (factory, step, reference, input size)
CASES = {
    "lru": (lambda: lr.lru(3, 4, state_size=5), lr.lru_step, lru_ref, 3),
    "rg_lru": (lambda: lr.rg_lru(4, 4), lr.rg_lru_step, rg_lru_ref, 4),
    "rg_lru_proj": (lambda: lr.rg_lru(3, 4), lr.rg_lru_step, rg_lru_ref, 3),
    "ssm": (lambda: lr.selective_ssm(4, 4, state_size=3, dt_rank=2), lr.selective_ssm_step, ssm_ref, 4),
    "ssm_proj": (lambda: lr.selective_ssm(3, 4, state_size=3), lr.selective_ssm_step, ssm_ref, 3),
}


@pytest.mark.parametrize("name", sorted(CASES))
@pytest.mark.parametrize("batch", [(), (2, 3)])
def test_step_matches_numpy_reference(name, batch):
    make, step, ref, size = CASES[name]
    cell = make()
    key = jax.random.key(0)
    params = rand_tree(jax.eval_shape(cell.init, key), 1)
    h = rand_tree(cell.initial_carry(batch), 2)
    x = normal(3, batch + (size,))
    h_new, y = step(params, h, x)
    h_ref, y_ref = ref(params_np(params), np64(h), np64(x))
    assert h_new.dtype == h.dtype and y.dtype == jnp.float32
    np.testing.assert_allclose(np.asarray(h_new), h_ref, atol=1e-5, rtol=1e-5)
    np.testing.assert_allclose(np.asarray(y), y_ref, atol=1e-5, rtol=1e-5)


def test_reference_would_catch_a_dropped_term():
    """The S6 reference is sensitive to the skip term: a step without it differs."""
    cell = lr.selective_ssm(4, 4, state_size=3)
    key = jax.random.key(5)
    params = rand_tree(jax.eval_shape(cell.init, key), 0)
    h, x = cell.initial_carry((2,)), normal(0, (2, 4))
    _, y = lr.selective_ssm_step(params._replace(d=jnp.zeros(4)), h, x)
    _, y_ref = ssm_ref(params_np(params), np64(h), np64(x))
    assert np.abs(np.asarray(y) - y_ref).max() > 1e-3


# ------------------------------------------------------------------- parallel = sequential

# name -> (factory, parallel form, input size)
PARALLEL_CASES = {
    "lru": (lambda: lr.lru(3, 4, state_size=5), lr.lru_parallel, 3),
    "rg_lru": (lambda: lr.rg_lru(3, 4), lr.rg_lru_parallel, 3),
    "ssm": (lambda: lr.selective_ssm(4, 4, state_size=3, dt_rank=2), lr.selective_ssm_parallel, 4),
}


def _loss_both(step, parallel, params, carry, xs, lengths, reverse, wkey):
    """(sequential, parallel) values and gradients of one loss that reads ys and the carry."""
    out_shape = jax.eval_shape(lambda p, c, x: rj.scan(step, p, c, x, lengths=lengths, reverse=reverse),
                               params, carry, xs)
    ws = jax.tree_util.tree_map(lambda s: normal(wkey, s.shape), out_shape)

    def loss(run, p, c, x):
        out = run(p, c, x)
        return sum(jnp.sum(jnp.real(o) * wt) + jnp.sum(jnp.imag(o) * wt * 0.5)
                   for o, wt in zip(jax.tree_util.tree_leaves(out), jax.tree_util.tree_leaves(ws), strict=True))

    def seq(p, c, x):
        return rj.scan(step, p, c, x, lengths=lengths, reverse=reverse)

    def par(p, c, x):
        return parallel(p, c, x, lengths, reverse)

    @jax.jit
    def both(p, c, x):
        return [(run(p, c, x), jax.grad(lambda *a, run=run: loss(run, *a), argnums=(0, 1, 2))(p, c, x)) for run in (seq, par)]

    return both(params, carry, xs)


@pytest.mark.parametrize("name", sorted(PARALLEL_CASES))
@pytest.mark.parametrize("reverse", [False, True])
def test_parallel_equals_sequential(name, reverse, with_lengths=True):
    """With lengths (0, 1, part and all of T) and a random initial carry; without lengths in
    the long-sequence tests below."""
    make, parallel, in_size = PARALLEL_CASES[name]
    cell = make()
    step = cell.step
    key = jax.random.key(1)
    params = rand_tree(jax.eval_shape(cell.init, key), 1)
    carry = rand_tree(cell.initial_carry((4,)), 2)
    xs = normal(3, (11, 4, in_size))
    lengths = jnp.array([11, 6, 0, 1]) if with_lengths else None
    (out_s, g_s), (out_p, g_p) = _loss_both(step, parallel, params, carry, xs, lengths, reverse,
                                            4)
    assert_close(out_p, out_s)
    assert_close(g_p, g_s)
    if with_lengths:
        assert float(jnp.abs(out_p[1][6:, 1]).max()) == 0.0  # padding is zero
        assert_close(out_p[0][2], carry[2])  # an empty sequence keeps its carry


@pytest.mark.slow  # compiling the gradient of a 4096-step associative scan takes several seconds
def test_parallel_long_sequence_rg_lru():
    """T = 4096: values and gradients of the associative scan equal the step loop to 1e-5."""
    cell = lr.rg_lru(2, 3)
    key = jax.random.key(2)
    params = jax.jit(cell.init)(key)
    carry = rand_tree(cell.initial_carry((2,)), 0)
    xs = normal(0, (4096, 2, 2))
    lengths = jnp.array([4096, 3001])

    def loss(run, p, c, x):
        carry, ys = run(p, c, x)
        return jnp.sum(ys * jnp.cos(jnp.arange(ys.size).reshape(ys.shape))) + jnp.sum(carry)

    def seq(p, c, x):
        return rj.scan(lr.rg_lru_step, p, c, x, lengths=lengths, reverse=True)

    def par(p, c, x):
        return lr.rg_lru_parallel(p, c, x, lengths, True)

    out_s, g_s = jax.jit(jax.value_and_grad(lambda *a: loss(seq, *a), argnums=(0, 1)))(params, carry, xs)
    out_p, g_p = jax.jit(jax.value_and_grad(lambda *a: loss(par, *a), argnums=(0, 1)))(params, carry, xs)
    np.testing.assert_allclose(out_p, out_s, rtol=1e-5)
    assert_close(g_p, g_s, atol=1e-5, rtol=1e-4)


def test_parallel_long_sequence_lru():
    """T = 4096 with |λ| near 1 (slow decay, the hard case for a scan): ys within 1e-5."""
    cell = lr.lru(2, 3, state_size=4, r_min=0.99, r_max=0.999)
    key = jax.random.key(3)
    params = jax.jit(cell.init)(key)
    carry = rand_tree(cell.initial_carry((2,)), 0)
    xs = normal(0, (4096, 2, 2))
    c_s, ys_s = jax.jit(lambda: rj.scan(lr.lru_step, params, carry, xs))()
    c_p, ys_p = jax.jit(lambda: lr.lru_parallel(params, carry, xs))()
    scale = float(jnp.abs(ys_s).max())
    np.testing.assert_allclose(ys_p / scale, ys_s / scale, atol=1e-5)
    np.testing.assert_allclose(c_p, c_s, atol=1e-5 * float(jnp.abs(c_s).max()))


def test_parallel_under_jit_and_vmap_equals_eager():
    cell = lr.selective_ssm(3, 3, state_size=2)
    key = jax.random.key(4)
    params = rand_tree(jax.eval_shape(cell.init, key), 0)
    carry = cell.initial_carry((5,))
    xs = normal(0, (7, 5, 3))
    lengths = jnp.array([7, 1, 3, 0, 5])
    eager = lr.selective_ssm_parallel(params, carry, xs, lengths, False)
    jitted = jax.jit(lr.selective_ssm_parallel, static_argnums=4)(params, carry, xs, lengths, False)
    assert_close(jitted, eager, atol=1e-6)
    # vmap over the batch axis: batch-free calls, one sequence each
    mapped = jax.vmap(lambda c, x, n: lr.selective_ssm_parallel(params, c, x[:, None], n[None], False),
                      in_axes=(0, 1, 0), out_axes=(0, 1))(carry[:, None], xs, lengths)
    assert_close((mapped[0][:, 0], mapped[1][:, :, 0]), eager, atol=1e-5)


@pytest.mark.parametrize("name", sorted(CASES))
def test_step_jit_equals_eager(name):
    make, step, _, size = CASES[name]
    cell = make()
    key = jax.random.key(6)
    params = rand_tree(jax.eval_shape(cell.init, key), 0)
    carry = rand_tree(cell.initial_carry((2,)), 0)
    x = normal(0, (2, size))
    assert_close(jax.jit(step)(params, carry, x), step(params, carry, x), atol=1e-6)


# ------------------------------------------------------------------------ initialisation


def test_lru_ring_initialisation():
    r_min, r_max, max_phase = 0.4, 0.9, math.pi / 10
    p = jax.jit(lr.lru(4, 8, state_size=4096, r_min=r_min, r_max=r_max, max_phase=max_phase).init)(jax.random.key(0))
    lam = np.exp(-np.exp(np.float64(p.nu_log)) + 1j * np.exp(np.float64(p.theta_log)))
    r, phase = np.abs(lam), np.angle(lam)
    assert r.min() >= r_min - 1e-6 and r.max() <= r_max + 1e-6
    assert phase.min() >= 0 and phase.max() <= max_phase + 1e-6
    # uniform on the ring (in area): |λ|² ~ U(r_min², r_max²); mean and spread of a uniform
    r2 = r**2
    np.testing.assert_allclose(r2.mean(), (r_min**2 + r_max**2) / 2, atol=0.01)
    np.testing.assert_allclose(r2.std(), (r_max**2 - r_min**2) / math.sqrt(12), atol=0.01)
    np.testing.assert_allclose(phase.mean(), max_phase / 2, atol=0.01 * max_phase)
    # γ normalisation: γ = sqrt(1 - |λ|²)
    np.testing.assert_allclose(np.exp(np.float64(p.gamma_log)), np.sqrt(1 - r2), rtol=1e-5)
    # B parts N(0, 1/(2I)), C parts N(0, 1/N)
    np.testing.assert_allclose(np.std(p.b_re), 1 / math.sqrt(8), rtol=0.05)
    np.testing.assert_allclose(np.std(p.c_im), 1 / math.sqrt(4096), rtol=0.05)


def test_lru_normalisation_keeps_state_variance():
    """With γ = sqrt(1-|λ|²), white-noise input gives E|h|² = E|xB|² (the point of γ)."""
    cell = lr.lru(16, 4, state_size=64, r_min=0.8, r_max=0.95)
    p = jax.jit(cell.init)(jax.random.key(1))
    xs = normal(2, (300, 32, 16))
    h, _ = lr.lru_parallel(p, cell.initial_carry((32,)), xs)
    bx = xs @ (p.b_re + 1j * p.b_im)
    ratio = float(jnp.mean(jnp.abs(h) ** 2) / jnp.mean(jnp.abs(bx) ** 2))
    assert 0.85 < ratio < 1.15, ratio
    h_raw, _ = lr.lru_parallel(p._replace(gamma_log=jnp.zeros_like(p.gamma_log)), cell.initial_carry((32,)), xs)
    assert float(jnp.mean(jnp.abs(h_raw) ** 2) / jnp.mean(jnp.abs(bx) ** 2)) > 3  # without γ: no


def test_rg_lru_initialisation():
    p = jax.jit(lr.rg_lru(4, 2048).init)(jax.random.key(0))
    ac = np.asarray(jax.nn.sigmoid(np.float64(p.lam))) ** 8
    assert ac.min() >= 0.9 - 1e-6 and ac.max() <= 0.999 + 1e-6
    np.testing.assert_allclose(ac.mean(), (0.9 + 0.999) / 2, atol=0.005)  # uniform in [0.9, 0.999]
    assert p.w_in.shape == (4, 2048)
    np.testing.assert_allclose(np.std(p.w_a), 1 / math.sqrt(2048), rtol=0.02)
    assert float(jnp.abs(p.b_a).max()) == 0.0 and float(jnp.abs(p.b_x).max()) == 0.0
    assert jax.eval_shape(lr.rg_lru(4, 4).init, jax.random.key(0)).w_in is None
    assert jax.eval_shape(lr.rg_lru(4, 4, input_projection=True).init, jax.random.key(0)).w_in.shape == (4, 4)


def test_selective_ssm_initialisation():
    p = jax.jit(lr.selective_ssm(8, 64, state_size=16).init)(jax.random.key(0))
    np.testing.assert_allclose(-np.exp(p.a_log), -np.broadcast_to(np.arange(1, 17), (64, 16)), rtol=1e-6)  # S4D-real
    dt = softplus(np.float64(p.b_dt))
    assert dt.min() >= 0.001 * (1 - 1e-4) and dt.max() <= 0.1 * (1 + 1e-4)
    assert np.abs(np.log(dt).mean() - (math.log(0.001) + math.log(0.1)) / 2) < 0.5  # log-uniform
    assert p.w_delta.shape == (64, 4) and p.w_dt.shape == (4, 64)  # R = ceil(64/16)
    assert float(jnp.abs(p.w_dt).max()) <= 4**-0.5 and float(jnp.abs(p.w_b).max()) <= 64**-0.5
    np.testing.assert_array_equal(p.d, np.ones(64))


# ------------------------------------------------------------------------------- errors


def test_errors_name_the_argument():
    cell = lr.rg_lru(3, 4)
    params = jax.jit(cell.init)(jax.random.key(0))
    with pytest.raises(ValueError, match=r"x: expected shape \[\*batch, 3\]"):
        lr.rg_lru_step(params, cell.initial_carry((2,)), jnp.ones((2, 4)))
    with pytest.raises(ValueError, match=r"carry: expected shape \[2, 4\]"):
        lr.rg_lru_step(params, cell.initial_carry((3,)), jnp.ones((2, 3)))
    with pytest.raises(TypeError, match="carry: expected a complex array"):
        c = lr.lru(3, 4)
        lr.lru_step(jax.eval_shape(c.init, jax.random.key(0)), jnp.zeros((4,)), jnp.ones(3))
    with pytest.raises(TypeError, match=r"params: expected SelectiveSSMParams"):
        lr.selective_ssm_step(params, jnp.zeros((4, 16)), jnp.ones(3))
    with pytest.raises(ValueError, match="r_min, r_max"):
        lr.lru(3, 4, r_min=0.9, r_max=0.5)
    with pytest.raises(ValueError, match="input_projection: False needs"):
        lr.selective_ssm(3, 4, input_projection=False)
    with pytest.raises(ValueError, match="state_size: expected a positive int"):
        lr.selective_ssm(3, 4, state_size=0)
    with pytest.raises(ValueError, match=r"lengths: expected shape \[2\]"):
        lr.rg_lru_parallel(params, cell.initial_carry((2,)), jnp.ones((5, 2, 3)), jnp.array([1, 2, 3]), False)
    with pytest.raises(TypeError, match="reverse: expected a bool"):
        lr.rg_lru_parallel(params, cell.initial_carry((2,)), jnp.ones((5, 2, 3)), None, 1)
    with pytest.raises(TypeError, match="batch_shape"):
        cell.initial_carry("4")
    with pytest.raises(TypeError, match="param_dtype: expected a floating-point dtype"):
        lr.selective_ssm(3, 4, param_dtype=jnp.int32)
    with pytest.raises(TypeError, match="carry_dtype: expected a floating-point dtype"):
        xl.mlstm(3, 4, carry_dtype="int8")


def test_parallel_registry():
    assert lr.PARALLEL == {lr.lru_step: lr.lru_parallel, lr.rg_lru_step: lr.rg_lru_parallel,
                           lr.selective_ssm_step: lr.selective_ssm_parallel}
    assert xl.PARALLEL == {xl.mlstm_step: xl.mlstm_parallel}
    for module in (lr, xl):
        assert "PARALLEL" not in module.__all__
        for name in module.__all__:
            assert hasattr(module, name)


# ------------------------------------------------------- composition (all new cells)

COMPOSE = {
    "lru": lambda i, h: lr.lru(i, h, state_size=3),
    "rg_lru": lambda i, h: lr.rg_lru(i, h),
    "selective_ssm": lambda i, h: lr.selective_ssm(i, h, state_size=2),
    "mlstm": lambda i, h: xl.mlstm(i, h, num_heads=2),
    "slstm": lambda i, h: xl.slstm(i, h, num_heads=2),
}


@pytest.mark.parametrize("name", sorted(COMPOSE))
def test_composes_with_deep_bidirectional_stack_and_greedy(name):
    make = COMPOSE[name]
    key = jax.random.key(7)
    xs = normal(0, (6, 3, 3))
    lengths = jnp.array([6, 4, 1])

    # deep(bidirectional(a, b), c): layer 2 reads [fwd; bwd], each direction equal to rj.scan
    a, b, c = make(3, 4), make(3, 4), make(8, 4)
    model = rj.deep(rj.bidirectional(a, b), c)
    params = rand_tree(jax.eval_shape(model.init, key), 1, 0.3)

    @jax.jit
    def both(params):
        (pa, pb), pc = params[0], params[1]
        _, ya = rj.scan(a.step, pa, a.initial_carry((3,)), xs, lengths=lengths)
        _, yb = rj.scan(b.step, pb, b.initial_carry((3,)), xs, lengths=lengths, reverse=True)
        ref = rj.scan(c.step, pc, c.initial_carry((3,)), jnp.concatenate([ya, yb], -1), lengths=lengths)
        return model.apply(params, xs, lengths=lengths), ref

    (carries, ys), (cc, yc) = both(params)
    assert_close(ys, yc, atol=1e-6)
    assert_close(carries[1], cc, atol=1e-6)

    # stack + greedy: the decoded tokens are the argmax of a hand-written decoding loop
    lm = rj.language_model(rj.stack(make(5, 4), make(4, 4)), vocab_size=6, embed_size=5)
    lp = rand_tree(jax.eval_shape(lm.init, key), 2, 0.8)
    start = jnp.array([0, 3])
    tokens, _ = jax.jit(lambda p, s: rj.greedy(lm.step, p, lm.initial_carry((2,)), s, max_len=5))(lp, start)
    carry, tok, expected, step = lm.initial_carry((2,)), start, [], jax.jit(lm.step)
    for _ in range(5):
        carry, logits = step(lp, carry, tok)
        tok = jnp.argmax(logits, -1)
        expected.append(tok)
    np.testing.assert_array_equal(tokens, jnp.stack(expected))


@pytest.mark.slow  # compile-heavy: the second tier
def test_steps_under_vmap_and_with_16_bit_params():
    """vmap of the batch-free step equals the batched step; bfloat16 params next to a float32
    carry keep the carry's dtype and stay close to the float32 result."""
    x = normal(8, (3, 4))
    for name, make in sorted(COMPOSE.items()):
        cell = make(4, 4)
        params = rand_tree(jax.eval_shape(cell.init, jax.random.key(0)), 9, 0.3)
        carry = rand_tree(cell.initial_carry((3,)), 10, 0.3)
        if isinstance(carry, xl.SLSTMState):
            carry = carry._replace(n=jnp.abs(carry.n) + 0.5)
        batched = cell.step(params, carry, x)
        mapped = jax.vmap(cell.step, in_axes=(None, 0, 0))(params, carry, x)
        assert_close(mapped, batched, atol=1e-6)
        low = jax.tree_util.tree_map(lambda a: a.astype(jnp.bfloat16), params)
        new, y = cell.step(low, carry, x)
        assert jax.tree_util.tree_map(lambda a: a.dtype, new) == jax.tree_util.tree_map(lambda a: a.dtype, carry), name
        assert y.dtype == jnp.float32, name
        np.testing.assert_allclose(np.asarray(y), np.asarray(batched[1]), atol=0.05, err_msg=name)
