"""Gradient-flow diagnostics against closed forms (linear recurrence) and plain loops."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import rnnjax as rj

T, B, I, H = 8, 3, 2, 4  # noqa: E741
LENGTHS = np.array([8, 5, 1])


def linear_step(params, h, x):
    """h' = h W + x U, y = h'."""
    h = h @ params["w"] + x @ params["u"]
    return h, h


@pytest.fixture(scope="module")
def linear():
    k1, k2, k3, k4 = jax.random.split(jax.random.key(0), 4)
    params = {"w": 0.6 * jax.random.normal(k1, (H, H)), "u": jax.random.normal(k2, (I, H))}
    xs = jax.random.normal(k3, (T, B, I))
    carry = jax.random.normal(k4, (B, H))
    return params, xs, carry


def mpow(w, n):
    return np.linalg.matrix_power(np.asarray(w, np.float64), n)


@pytest.mark.parametrize("lengths", [None, LENGTHS], ids=["full", "lengths"])
def test_gradient_flow_of_a_final_state_loss_is_c_times_W_powers(linear, lengths):
    """L = Σ_b c·h_final[b]: ∂L/∂h_{t-1}[b] = c (W^(L_b - t))ᵀ for t < L_b, else 0."""
    params, xs, carry = linear
    c = np.array([1.0, -2.0, 0.5, 3.0])
    got = rj.gradient_flow(linear_step, params, carry, xs, lambda ys, h: jnp.sum(h @ c), lengths=lengths)
    lens = np.full(B, T) if lengths is None else lengths
    expected = np.zeros((T, B))
    for b in range(B):
        for t in range(lens[b]):
            expected[t, b] = np.linalg.norm(mpow(params["w"], lens[b] - t) @ c)
    np.testing.assert_allclose(np.asarray(got), expected, rtol=1e-5, atol=1e-7)


def test_gradient_flow_of_a_loss_on_every_output(linear):
    """L = Σ_t Σ_b c_t·y_t[b]: ∂L/∂h_{t-1} = Σ_{s>=t} c_s (W^(s-t+1))ᵀ (the same for every b)."""
    params, xs, carry = linear
    cs = np.asarray(jax.random.normal(jax.random.key(1), (T, H)))
    got = rj.gradient_flow(linear_step, params, carry, xs, lambda ys, h: jnp.sum(ys * cs[:, None, :]))
    for t in range(T):
        g = sum(mpow(params["w"], s - t + 1) @ cs[s] for s in range(t, T))
        np.testing.assert_allclose(np.asarray(got[t]), np.full(B, np.linalg.norm(g)), rtol=1e-5)


@pytest.mark.parametrize("k", [1, 3, 8])
def test_truncated_gradient_flow_sums_only_the_chunk(linear, k):
    """With truncate=k, ∂L/∂h_{t-1} = Σ_{s>=t, s in t's chunk} c_s (W^(s-t+1))ᵀ."""
    params, xs, carry = linear
    cs = np.asarray(jax.random.normal(jax.random.key(1), (T, H)))
    got = rj.gradient_flow(linear_step, params, carry, xs, lambda ys, h: jnp.sum(ys * cs[:, None, :]), truncate=k)
    for t in range(T):
        end = (t // k + 1) * k  # the chunk of step t is [t // k * k, end)
        g = sum(mpow(params["w"], s - t + 1) @ cs[s] for s in range(t, min(end, T)))
        np.testing.assert_allclose(np.asarray(got[t]), np.full(B, np.linalg.norm(g)), rtol=1e-5)


def test_truncated_gradient_flow_matches_truncated_scan(linear):
    """The norm entering the first step equals ‖∂L/∂carry‖ through rj.truncated_scan; a cut
    leaves the first chunk's gradient only."""
    params, xs, carry = linear
    loss = lambda ys: jnp.sum(jnp.sin(ys))
    flow = rj.gradient_flow(linear_step, params, carry, xs, lambda ys, h: loss(ys), truncate=3)
    g = jax.grad(lambda c: loss(rj.truncated_scan(linear_step, params, c, xs, truncate=3)[1]))(carry)
    np.testing.assert_allclose(np.asarray(flow[0]), np.linalg.norm(np.asarray(g), axis=-1), rtol=1e-5)
    full = rj.gradient_flow(linear_step, params, carry, xs, lambda ys, h: loss(ys))
    assert np.all(np.asarray(full[0]) != np.asarray(flow[0]))
    with pytest.raises(ValueError, match="truncate: expected None or an int >= 1, got 0"):
        rj.gradient_flow(linear_step, params, carry, xs, lambda ys, h: loss(ys), truncate=0)


@pytest.mark.parametrize("scale, trend", [(0.5, "vanishing"), (1.5, "exploding")])
def test_state_jacobian_norms_are_frobenius_norms_of_W_powers(linear, scale, trend):
    params, xs, carry = linear
    q, _ = np.linalg.qr(np.asarray(jax.random.normal(jax.random.key(2), (H, H)), np.float64))
    params = {**params, "w": jnp.asarray(scale * q, jnp.float32)}
    got = np.asarray(rj.state_jacobian_norms(linear_step, params, carry, xs, lengths=LENGTHS))
    for b in range(B):
        for t in range(T):
            expected = np.linalg.norm(mpow(params["w"], LENGTHS[b] - t)) if t < LENGTHS[b] else 0.0
            np.testing.assert_allclose(got[t, b], expected, rtol=1e-5, atol=1e-7)
    # scale * orthogonal: ‖W^n‖_F = scale^n sqrt(H)
    np.testing.assert_allclose(got[:, 0], scale ** (T - np.arange(T)) * np.sqrt(H), rtol=1e-5)
    assert (got[0, 0] < got[-1, 0]) == (trend == "vanishing")


def test_lstm_gradient_flow_equals_gradients_of_a_plain_loop_started_at_each_step(key):
    """Entry t is the gradient of L w.r.t. the carry handed to step t of a Python loop."""
    cell = rj.lstm(I, H)
    params = cell.init(key)
    xs = jax.random.normal(jax.random.fold_in(key, 1), (5, B, I))
    w = jax.random.normal(jax.random.fold_in(key, 2), (5, B, H))
    loss = lambda ys, c: jnp.sum(jnp.tanh(ys) * w) + jnp.sum(c.c**2)

    def rest_of_run(carry_in, t, prefix_ys):
        ys = list(prefix_ys)
        c = carry_in
        for s in range(t, 5):
            c, y = rj.lstm_step(params, c, xs[s])
            ys.append(y)
        return loss(jnp.stack(ys), c)

    c, prefix, expected = cell.initial_carry((B,)), [], []
    for t in range(5):
        g = jax.grad(rest_of_run)(c, t, prefix)
        expected.append(np.sqrt(np.sum(np.asarray(g.h) ** 2, -1) + np.sum(np.asarray(g.c) ** 2, -1)))
        c, y = rj.lstm_step(params, c, xs[t])
        prefix.append(y)
    got = rj.gradient_flow(cell.step, params, cell.initial_carry((B,)), xs, loss)
    np.testing.assert_allclose(np.asarray(got), np.stack(expected), rtol=1e-5, atol=1e-7)


def test_plot_gradient_flow_draws_medians_bands_on_a_log_axis(tmp_path, linear, monkeypatch):
    from matplotlib.figure import Figure

    figures, real_savefig = [], Figure.savefig
    monkeypatch.setattr(Figure, "savefig", lambda self, *a, **k: (figures.append(self), real_savefig(self, *a, **k))[1])
    params, xs, carry = linear
    norms = np.asarray(rj.state_jacobian_norms(linear_step, params, carry, xs, lengths=LENGTHS))  # [T, B]
    assert (norms == 0).any()  # padding: exactly zero, cannot be drawn on a log axis
    path = rj.plot_gradient_flow({"linear": norms, "other": 2 * norms}, tmp_path / "flow.png", title="flow")
    with open(path, "rb") as f:
        assert f.read(8) == b"\x89PNG\r\n\x1a\n"
    (fig,) = figures
    (ax,) = fig.axes
    assert ax.get_yscale() == "log" and ax.get_title() == "flow" and ax.get_xlabel() == "time step t"
    positive = np.where(norms > 0, norms, np.nan)
    for line, scale in zip(ax.lines, (1, 2), strict=True):  # the median over the batch of the nonzero norms
        np.testing.assert_allclose(line.get_xdata(), np.arange(T))
        np.testing.assert_allclose(line.get_ydata(), scale * np.nanmedian(positive, 1), rtol=1e-6)
    assert [t.get_text() for t in ax.get_legend().get_texts()] == ["linear", "other"]
    band = ax.collections[0].get_paths()[0].vertices  # the min-max band of the first curve
    for t in range(T):
        ys = band[np.isclose(band[:, 0], t), 1]
        np.testing.assert_allclose([ys.min(), ys.max()], [np.nanmin(positive[t]), np.nanmax(positive[t])], rtol=1e-6)
    with pytest.raises(ValueError, match="path: expected a file ending in .png"):
        rj.plot_gradient_flow(norms, tmp_path / "flow.svg")


def test_argument_errors(linear):
    params, xs, carry = linear
    loss = lambda ys, h: jnp.sum(h)
    with pytest.raises(TypeError, match="loss_fn: expected a function"):
        rj.gradient_flow(linear_step, params, carry, xs, None)
    with pytest.raises(TypeError, match=r"loss_fn: expected a function loss_fn\(ys, final_carry\), got one with signature \(ys\)"):
        rj.gradient_flow(linear_step, params, carry, xs, lambda ys: jnp.sum(ys))
    with pytest.raises(TypeError, match="loss_fn: expected a scalar loss"):
        rj.gradient_flow(linear_step, params, carry, xs, lambda ys, h: h)
    with pytest.raises(ValueError, match=r"carry: expected a leaf starting with the batch axes \[3\]"):
        rj.state_jacobian_norms(lambda p, h, x: (h, x @ p["u"]), params, jnp.zeros(H), xs)
    with pytest.raises(ValueError, match=r"lengths: expected values in \[0, 8\]"):
        rj.gradient_flow(linear_step, params, carry, xs, loss, lengths=np.array([9, 1, 1]))
    with pytest.raises(ValueError, match=r"xs: expected shape \[T, \*batch, I\]"):
        rj.state_jacobian_norms(linear_step, params, carry, xs[0, 0])
    with pytest.raises(TypeError, match="step: expected a function"):
        rj.state_jacobian_norms(None, params, carry, xs)
