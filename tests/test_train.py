"""Train step, clipping recipes, non-finite guard, truncated BPTT and rematerialised scans."""

import functools
from typing import NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

import rnnjax as rj
from tests.conftest import assert_trees_close

# ------------------------------------------------------------------ train step and clipping

A = np.array([1.0, -2.0, 3.0], np.float32)


def quadratic(p, b, key):
    """L = 0.5 Σ (A p - b)², so dL/dp = A (A p - b)."""
    return 0.5 * jnp.sum((A * p - b) ** 2)


def np_grad(p, b):
    return A * (A * p - b)


@pytest.mark.parametrize(
    "clip, expected_update",
    [
        ("global_norm", lambda g, c: -g * min(1.0, c / np.linalg.norm(g))),
        ("value", lambda g, c: -np.clip(g, -c, c)),
        (None, lambda g, c: -g),
    ],
)
def test_sgd_update_follows_the_clipping_recipe_and_reports_the_unclipped_norm(clip, expected_update):
    c = 0.5
    opt = rj.make_optimizer(1.0, clip=clip, threshold=c, optimizer=optax.sgd)
    step = rj.make_train_step(quadratic, opt)
    p = np.array([0.3, 0.1, -0.2], np.float32)
    b = np.array([1.0, 0.5, -1.0], np.float32)
    state, metrics = step(rj.init_train_state(jnp.asarray(p), opt, jax.random.key(0)), jnp.asarray(b))
    g = np_grad(p.astype(np.float64), b)
    np.testing.assert_allclose(np.asarray(state.params), p + expected_update(g, c), rtol=1e-6)
    np.testing.assert_allclose(float(metrics["grad_norm"]), np.linalg.norm(g), rtol=1e-6)
    np.testing.assert_allclose(float(metrics["loss"]), 0.5 * np.sum((A * p - b) ** 2), rtol=1e-6)
    assert int(state.step) == 1 and not bool(metrics["skipped"])


def test_default_recipe_is_clip_then_adam():
    """Steps of the train step equal steps written by hand with optax."""
    params = {"w": jnp.array([0.5, -1.0, 2.0]), "b": jnp.array(0.1)}
    loss = lambda p, batch, key: jnp.sum((p["w"] * batch + p["b"]) ** 2) * 10.0
    step = rj.make_train_step(loss, rj.make_optimizer(1e-2))
    state = rj.init_train_state(params, rj.make_optimizer(1e-2), jax.random.key(0))
    ref_opt = optax.chain(optax.clip_by_global_norm(1.0), optax.adam(1e-2))
    ref_p, ref_s = params, ref_opt.init(params)

    @jax.jit
    def ref_step(p, s, batch):
        u, s = ref_opt.update(jax.grad(loss)(p, batch, None), s, p)
        return optax.apply_updates(p, u), s

    for i in range(4):
        batch = jnp.arange(3.0) + i
        state, _ = step(state, batch)
        ref_p, ref_s = ref_step(ref_p, ref_s, batch)
    assert_trees_close(state.params, ref_p, atol=1e-6, rtol=1e-6)


def test_step_traces_once_and_donates_the_old_state():
    traces = []

    def loss(p, batch, key):
        traces.append(1)
        return jnp.sum((p - batch) ** 2) + 0.0 * jax.random.normal(key)

    opt = rj.make_optimizer(0.1)
    step = rj.make_train_step(loss, opt)
    state = rj.init_train_state(jnp.zeros(4), opt, jax.random.key(0))
    for i in range(6):
        old = state
        state, _ = step(state, jnp.full(4, float(i)))
        assert old.params.is_deleted()
    assert len(traces) == 1 and int(state.step) == 6


def test_each_step_gets_fold_in_of_its_step_number():
    seen = []
    loss = lambda p, batch, key: jnp.sum(p) * 0.0 + jax.random.normal(key)
    step = rj.make_train_step(loss, optax.sgd(0.0))
    state = rj.init_train_state(jnp.zeros(1), optax.sgd(0.0), jax.random.key(7))
    for _ in range(3):
        state, m = step(state, None)
        seen.append(float(m["loss"]))
    expected = [float(jax.random.normal(jax.random.fold_in(jax.random.key(7), n))) for n in range(3)]
    assert seen == expected


def test_aux_metrics_are_merged():
    loss = lambda p, b, key: (jnp.sum(p**2), {"p0": p[0]})
    opt = rj.make_optimizer(0.1)
    step = rj.make_train_step(loss, opt, has_aux=True)
    _, m = step(rj.init_train_state(jnp.array([2.0, 1.0]), opt, jax.random.key(0)), None)
    assert float(m["p0"]) == 2.0 and float(m["loss"]) == 5.0


# ------------------------------------------------------------------------- non-finite guard

BAD_BATCHES = {
    "nan_input": (jnp.array([jnp.nan, 1.0, 0.0]), lambda p, b, k: jnp.sum((p - b) ** 2)),
    # finite loss, non-finite gradient: d sqrt(|p b|)/dp at b = 0 is inf * 0
    "nan_grad_only": (jnp.array([0.0, 0.0, 0.0]), lambda p, b, k: jnp.sum((p - b) ** 2) + jnp.sqrt(jnp.abs(p[0] * b[2]))),
    # NaN loss, finite gradients: the NaN does not depend on the params
    "nan_loss_only": (jnp.array([0.0, 0.0, jnp.inf]), lambda p, b, k: jnp.sum((p - b[:2].sum()) ** 2) + (b[2] - b[2])),
}


@pytest.mark.parametrize("case", list(BAD_BATCHES))
def test_nonfinite_step_is_skipped_and_counted(case):
    bad, loss = BAD_BATCHES[case]
    p0 = jnp.array([1.0, 2.0, 3.0])
    good = [jnp.array([0.5, 0.2, 0.1]), jnp.array([0.3, 0.1, 0.2])]
    opt = rj.make_optimizer(0.1)
    step = rj.make_train_step(loss, opt)

    def run(batches):
        state = rj.init_train_state(p0, opt, jax.random.key(0))
        flags = []
        for b in batches:
            before = jax.tree_util.tree_map(np.asarray, (state.params, state.opt_state))
            state, m = step(state, b)
            flags.append(bool(m["skipped"]))
            if flags[-1]:
                after = jax.tree_util.tree_map(np.asarray, (state.params, state.opt_state))
                jax.tree_util.tree_map(np.testing.assert_array_equal, after, before)
        return state, flags

    with_bad, flags = run([good[0], bad, good[1]])
    without, _ = run(good)
    assert flags == [False, True, False]
    assert int(with_bad.skipped) == 1 and int(with_bad.step) == 3
    # the skipped step left no trace: the next update is the one a clean run makes
    np.testing.assert_array_equal(np.asarray(with_bad.params), np.asarray(without.params))


def test_without_guard_nan_reaches_the_params():
    opt = rj.make_optimizer(0.1)
    step = rj.make_train_step(BAD_BATCHES["nan_input"][1], opt, skip_nonfinite=False)
    state, m = step(rj.init_train_state(jnp.ones(3), opt, jax.random.key(0)), BAD_BATCHES["nan_input"][0])
    assert not bool(m["skipped"]) and np.isnan(np.asarray(state.params)).any()


# ------------------------------------------------------------- carry passed between steps

T, B, I, H = 12, 2, 3, 4  # noqa: E741


@pytest.fixture(scope="module")
def elman_setup():
    cell = rj.elman(I, H)
    k1, k2, k3 = jax.random.split(jax.random.key(3), 3)
    params = jax.tree_util.tree_map(lambda a: a * 1.5, cell.init(k1))
    xs = jax.random.normal(k2, (T, B, I))
    carry0 = jax.random.normal(k3, (B, H))
    return cell, params, xs, carry0


def test_stream_training_passes_the_carry_between_chunks(elman_setup):
    """With lr = 0 the carry after n chunks is the carry after n*k steps of one scan."""
    cell, params, xs, carry0 = elman_setup
    k = 4

    def loss(p, carry, batch, key):
        carry, ys = rj.truncated_scan(cell.step, p, carry, batch)
        return jnp.mean(ys**2), carry

    opt = optax.sgd(0.0)
    step = rj.make_train_step(loss, opt, carry=True)
    state = rj.init_train_state(params, opt, jax.random.key(0), carry=carry0)
    chunk = rj.chunk_stream(xs, k)
    for i in range(T // k):
        state, _ = step(state, chunk(i))
    full, _ = rj.scan(cell.step, params, carry0, xs)
    np.testing.assert_allclose(np.asarray(state.carry), np.asarray(full), atol=1e-6)


def test_nonfinite_carry_is_reset_to_zeros(elman_setup):
    """A NaN in one sequence makes the step non-finite: params stay, and the whole carry (every
    sequence: it is checked as one tree) restarts from zeros, from which the next step goes on."""
    cell, params, xs, carry0 = elman_setup

    def loss(p, carry, batch, key):
        carry, ys = rj.scan(cell.step, p, carry, batch)
        return jnp.mean(ys**2), carry

    opt = optax.sgd(0.1)
    step = rj.make_train_step(loss, opt, carry=True)
    state = rj.init_train_state(params, opt, jax.random.key(0), carry=carry0)
    state, m = step(state, xs.at[0, 0, 0].set(jnp.nan))  # NaN in sequence 0 only
    assert bool(m["skipped"])
    np.testing.assert_array_equal(np.asarray(state.carry), np.zeros((B, H)))
    for got, start in zip(jax.tree_util.tree_leaves(state.params), jax.tree_util.tree_leaves(params), strict=True):
        np.testing.assert_array_equal(np.asarray(got), np.asarray(start))  # the step was not applied
    # the next, clean step starts from the zero carry: its carry is a plain scan's from zeros
    state, m = step(state, xs)
    assert not bool(m["skipped"])
    reference, _ = rj.scan(cell.step, params, jnp.zeros((B, H)), xs)
    assert not np.allclose(np.asarray(reference), 0.0)
    np.testing.assert_allclose(np.asarray(state.carry), np.asarray(reference), rtol=1e-5, atol=1e-6)


# ------------------------------------------------------------------------- argument checks


def test_train_step_argument_errors():
    opt = rj.make_optimizer(0.1)
    state = rj.init_train_state(jnp.zeros(2), opt, jax.random.key(0))
    with pytest.raises(TypeError, match="loss_fn: expected a function"):
        rj.make_train_step(3, opt)
    with pytest.raises(TypeError, match="optimizer: expected an optax.GradientTransformation"):
        rj.make_train_step(quadratic, optax.adam)
    with pytest.raises(TypeError, match="has_aux: expected a bool"):
        rj.make_train_step(quadratic, opt, has_aux=1)
    with pytest.raises(TypeError, match="loss_fn: expected a scalar floating-point loss"):
        rj.make_train_step(lambda p, b, k: p, opt)(state, None)
    with pytest.raises(TypeError, match=r"loss_fn: expected it to return \(loss, aux\)"):
        rj.make_train_step(lambda p, b, k: jnp.sum(p), opt, has_aux=True)(state, None)
    with pytest.raises(TypeError, match="loss_fn: expected aux to be a dict"):
        rj.make_train_step(lambda p, b, k: (jnp.sum(p), p), opt, has_aux=True)(state, None)
    with pytest.raises(ValueError, match="clash"):
        rj.make_train_step(lambda p, b, k: (jnp.sum(p), {"loss": p[0]}), opt, has_aux=True)(state, None)
    with pytest.raises(ValueError, match=r"state.carry: make_train_step\(carry=True\)"):
        rj.make_train_step(lambda p, c, b, k: (jnp.sum(p), c), opt, carry=True)(state, None)
    with pytest.raises(TypeError, match="state: expected a TrainState"):
        rj.make_train_step(quadratic, opt)((state.params, state.opt_state), None)
    with pytest.raises(ValueError, match="clip: expected one of"):
        rj.make_optimizer(0.1, clip="norm")
    with pytest.raises(ValueError, match="threshold: expected a positive number"):
        rj.make_optimizer(0.1, threshold=0.0)
    with pytest.raises(TypeError, match="key: expected a PRNG key"):
        rj.init_train_state(jnp.zeros(2), opt, 0)


# ------------------------------------------------------------------------- truncated BPTT


def python_loop_with_resets(step, params, carry, xs, resets):
    ys = []
    for t in range(xs.shape[0]):
        carry = jnp.where(resets[t][:, None], 0.0, carry)
        carry, y = step(params, carry, xs[t])
        ys.append(y)
    return carry, jnp.stack(ys)


def custom_step(params, h, x):
    """A user's cell (not built in): h' = tanh(x U + h W) * s."""
    h = jnp.tanh(x @ params["u"] + h @ params["w"]) * params["s"]
    return h, 2.0 * h


@pytest.fixture(scope="module")
def custom_setup(elman_setup):
    _, p, xs, carry0 = elman_setup
    return custom_step, {"u": p.w_ih, "w": p.w_hh, "s": jnp.array(0.9)}, xs, carry0


@pytest.mark.parametrize("which", ["elman", "custom"])
def test_truncated_forward_never_depends_on_truncate(which, elman_setup, custom_setup):
    if which == "elman":
        cell, params, xs, carry0 = elman_setup
        step = cell.step
    else:
        step, params, xs, carry0 = custom_setup
    resets = np.zeros((T, B), bool)
    resets[5, 0] = resets[9, 1] = True
    ref_c, ref_ys = python_loop_with_resets(step, params, carry0, xs, resets)
    for k in (1, 5, 2 * T):
        c, ys = rj.truncated_scan(step, params, carry0, xs, truncate=k, resets=jnp.asarray(resets))
        np.testing.assert_allclose(np.asarray(ys), np.asarray(ref_ys), atol=1e-6)
        np.testing.assert_allclose(np.asarray(c), np.asarray(ref_c), atol=1e-6)


def test_truncate_at_least_T_is_full_bptt(elman_setup):
    cell, params, xs, carry0 = elman_setup
    w = jax.random.normal(jax.random.key(5), (T, B, H))

    def loss(scan_fn, p, c, x):
        c, ys = scan_fn(cell.step, p, c, x)
        return jnp.sum(ys * w) + jnp.sum(c**2)

    full = jax.jit(jax.grad(lambda *a: loss(rj.scan, *a), argnums=(0, 1, 2)))(params, carry0, xs)
    for k in (T + 3, None):
        tr = jax.jit(jax.grad(lambda *a, k=k: loss(lambda *b: rj.truncated_scan(*b, truncate=k), *a), argnums=(0, 1, 2)))(params, carry0, xs)
        # rj.scan takes the fused Elman kernel (its own backward pass); truncated_scan steps the cell: equal to float32 round-off
        assert_trees_close(tr, full, atol=2e-5, rtol=2e-5)


def test_truncated_gradient_is_the_sum_of_chunk_gradients(elman_setup):
    """Equals a Python loop of rnnjax.scan over chunks with stop_gradient between them."""
    cell, params, xs, carry0 = elman_setup
    w = jax.random.normal(jax.random.key(5), (T, B, H))
    k = 5  # chunks 0-4, 5-9, 10-11

    def by_hand(p, c, x):
        total = 0.0
        for s in range(0, T, k):
            c, ys = rj.scan(cell.step, p, c if s == 0 else jax.lax.stop_gradient(c), x[s : s + k])
            total = total + jnp.sum(ys * w[s : s + k])
        return total

    def truncated(p, c, x):
        return jnp.sum(rj.truncated_scan(cell.step, p, c, x, truncate=k)[1] * w)

    g_ref = jax.jit(jax.grad(by_hand, argnums=(0, 1, 2)))(params, carry0, xs)
    g = jax.jit(jax.grad(truncated, argnums=(0, 1, 2)))(params, carry0, xs)  # fused kernel vs stepped: round-off
    assert_trees_close(g, g_ref, atol=2e-5, rtol=2e-5)
    full = jax.jit(jax.grad(lambda p: jnp.sum(rj.scan(cell.step, p, carry0, xs)[1] * w)))(params)
    assert not np.allclose(np.asarray(full.w_hh), np.asarray(g[0].w_hh), atol=1e-4)  # truncation changed it


def test_gradients_reach_back_at_most_truncate_steps(elman_setup):
    cell, params, xs, carry0 = elman_setup
    k = 4
    jac = jax.jit(jax.jacrev(lambda x: rj.truncated_scan(cell.step, params, carry0, x, truncate=k)[1]))(xs)
    jac = np.abs(np.asarray(jac)).sum(axis=(1, 2, 4, 5))  # [T (loss term), T (input)]
    for t in range(T):
        start = (t // k) * k
        assert np.all(jac[t, : start] == 0.0)  # earlier chunks: exactly zero
        assert np.all(jac[t, : max(t - k + 1, 0)] == 0.0)  # k or more steps back: zero
        assert np.all(jac[t, start : t + 1] > 0.0)  # own chunk, up to t: flows
        assert np.all(jac[t, t + 1 :] == 0.0)  # causal


def test_no_gradient_crosses_a_reset(elman_setup):
    cell, params, xs, carry0 = elman_setup
    resets = jnp.zeros((T, B), bool).at[6, 1].set(True)
    jac = jax.jit(jax.jacrev(lambda x: rj.truncated_scan(cell.step, params, carry0, x, resets=resets)[1]))(xs)
    jac = np.abs(np.asarray(jac))  # [T, B, H, T, B, I]
    assert np.all(jac[6:, 1, :, :6, 1] == 0.0)
    assert np.all(jac[6:, 0, :, :6, 0].sum(axis=(1, 3)) > 0.0)  # the other sequence is untouched


def test_truncated_scan_argument_errors(elman_setup):
    cell, params, xs, carry0 = elman_setup
    with pytest.raises(ValueError, match="truncate: expected a positive int or None"):
        rj.truncated_scan(cell.step, params, carry0, xs, truncate=0)
    with pytest.raises(TypeError, match="resets: expected a bool array"):
        rj.truncated_scan(cell.step, params, carry0, xs, resets=jnp.zeros((T, B)))
    with pytest.raises(ValueError, match=r"resets: expected shape \[12, 2\]"):
        rj.truncated_scan(cell.step, params, carry0, xs, resets=jnp.zeros((T, 3), bool))
    with pytest.raises(ValueError, match=r"xs: expected shape \[T, \*batch, 3\]"):
        rj.truncated_scan(cell.step, params, carry0, xs[..., :2])
    with pytest.raises(TypeError, match="step: expected a function"):
        rj.truncated_scan(None, params, carry0, xs)


def test_chunk_stream():
    data = {"x": np.arange(10), "y": jnp.arange(10) * 2}
    chunk = rj.chunk_stream(data, 3)
    assert chunk(0)["x"].tolist() == [0, 1, 2] and chunk(2)["y"].tolist() == [12, 14, 16]
    assert chunk(3)["x"].tolist() == [0, 1, 2]  # wraps after 3 full chunks; 9 is dropped
    with pytest.raises(ValueError, match="length: expected at most the stream length 10"):
        rj.chunk_stream(data, 11)
    with pytest.raises(ValueError, match=r"stream\['y'\]: expected shape \[10, ...\]"):
        rj.chunk_stream({"x": np.arange(10), "y": np.arange(9)}, 3)


# --------------------------------------------------------------------------- remat_scan


class Pair(NamedTuple):
    a: jax.Array
    b: jax.Array


def pair_step(params, carry, x):
    """A user's cell with a NamedTuple carry and a tuple output."""
    a = jnp.tanh(x @ params["u"] + carry.b @ params["w"])
    b = 0.5 * carry.b + 0.5 * a
    return Pair(a, b), (a, jnp.sum(b, -1, keepdims=True))


REMAT_CASES = {
    # (cell, lengths, reverse, segment): T = 12 with segment 5 leaves a tail of 2 steps
    "gru-rev": ("gru", None, True, 5),
    "gru-lengths-fwd": ("gru", [12, 5], False, 5),
    "gru-lengths-rev": ("gru", [11, 5], True, 5),
    "custom-lengths-rev-default": ("custom", [3, 9], True, None),
    "custom-segment1": ("custom", None, False, 1),
}


@pytest.mark.parametrize("case", list(REMAT_CASES))
def test_remat_scan_equals_scan_values_and_gradients(case):
    which, lengths, reverse, segment = REMAT_CASES[case]
    k1, k2, k3 = jax.random.split(jax.random.key(11), 3)
    if which == "gru":  # a built-in cell: rnnjax.scan takes its fast path in each segment
        cell = rj.gru(I, H)
        step, params, carry0 = cell.step, cell.init(k1), cell.initial_carry((B,)) + 0.3
    else:
        step = pair_step
        params = {"u": jax.random.normal(k1, (I, H)), "w": jax.random.normal(k3, (H, H)) * 0.5}
        carry0 = Pair(jnp.zeros((B, H)), jnp.ones((B, H)))
    xs = jax.random.normal(k2, (T, B, I))
    lengths = None if lengths is None else jnp.asarray(lengths)

    def loss(fn, p, c, x):
        c, ys = fn(step, p, c, x, lengths=lengths, reverse=reverse)
        return sum(jnp.sum(jnp.sin(leaf)) for leaf in jax.tree_util.tree_leaves((c, ys))), (c, ys)

    def value_and_grad(fn):
        return jax.jit(jax.value_and_grad(lambda *a: loss(fn, *a), argnums=(0, 1, 2), has_aux=True))

    (_, out_ref), g_ref = value_and_grad(rj.scan)(params, carry0, xs)
    remat = lambda *a, **kw: rj.remat_scan(*a, segment=segment, **kw)
    (_, out), g = value_and_grad(remat)(params, carry0, xs)
    assert_trees_close(out, out_ref, atol=1e-6, rtol=1e-6)
    assert_trees_close(g, g_ref, atol=1e-5, rtol=1e-5)


def test_remat_scan_argument_errors(elman_setup):
    cell, params, xs, carry0 = elman_setup
    with pytest.raises(ValueError, match="segment: expected a positive int or None"):
        rj.remat_scan(cell.step, params, carry0, xs, segment=0)
    with pytest.raises(ValueError, match=r"lengths: expected values in \[0, 12\]"):
        rj.remat_scan(cell.step, params, carry0, xs, lengths=jnp.array([13, 1]))
    with pytest.raises(ValueError, match=r"xs: expected shape \[T, \*batch, 3\]"):
        rj.remat_scan(cell.step, params, carry0, xs[..., :2])
    with pytest.raises(TypeError, match="reverse: expected a bool"):
        rj.remat_scan(cell.step, params, carry0, xs, reverse=1)
    with pytest.raises(ValueError, match=r"xs: expected at least one time step"):
        rj.remat_scan(cell.step, params, carry0, xs[:0])


# ------------------------------------------------------------------------------------ fit


def test_fit_continues_a_finished_run_exactly(tmp_path):
    """fit to 4 steps, then fit to 7 in the same directory == fit to 7 in one go."""
    opt = rj.make_optimizer(0.1)
    loss = lambda p, batch, key: jnp.sum((p - batch) ** 2) + 0.1 * jnp.sum(p * jax.random.normal(key, p.shape))
    step = rj.make_train_step(loss, opt)
    data = lambda i: jnp.array([1.0, -1.0]) * i
    fresh = lambda: rj.init_train_state(jnp.zeros(2), opt, jax.random.key(0))
    calls = []
    with rj.Checkpoints(tmp_path / "a") as ckpt, rj.MetricsLog(tmp_path / "a.jsonl") as log:
        rj.fit(step, fresh(), data, 4, checkpoints=ckpt, save_every=2, log=log)
        assert ckpt.steps == [2, 4]
        two = rj.fit(step, fresh(), data, 7, checkpoints=ckpt, log=log, log_every=2,
                     callback=lambda n, s, m: calls.append(n))
        assert ckpt.steps == [2, 4, 7] and calls == [5, 6, 7]
        assert [r["step"] for r in log.rows] == [1, 2, 3, 4, 6, 7]
    one = rj.fit(step, fresh(), data, 7)
    np.testing.assert_array_equal(np.asarray(two.params), np.asarray(one.params))


def test_fit_argument_errors():
    opt = rj.make_optimizer(0.1)
    state = rj.init_train_state(jnp.zeros(2), opt, jax.random.key(0))
    step = rj.make_train_step(lambda p, b, k: jnp.sum(p**2), opt)
    with pytest.raises(TypeError, match="data: expected a function data"):
        rj.fit(step, state, [1, 2], 2)
    with pytest.raises(ValueError, match="num_steps: expected a non-negative int"):
        rj.fit(step, state, lambda i: None, -1)
    with pytest.raises(ValueError, match="save_every: expected a positive int or None"):
        rj.fit(step, state, lambda i: None, 2, save_every=0)
    with pytest.raises(TypeError, match="state: expected a TrainState"):
        rj.fit(step, state.params, lambda i: None, 2)
    with pytest.raises(TypeError, match="checkpoints: expected rnnjax.Checkpoints"):
        rj.fit(step, state, lambda i: None, 2, checkpoints="dir")


def test_remat_scan_needs_far_less_memory_than_scan():
    """XLA's memory analysis of a compiled LSTM training step on T = 400 (compile only)."""
    from tests._remat_memory import measure

    plain = measure(400, 2, 16, 4, remat=False)
    remat = measure(400, 2, 16, 4, remat=True)
    assert remat["temp"] < plain["temp"] / 4


def _fit_setup():
    opt = rj.make_optimizer(0.1)
    step = rj.make_train_step(lambda p, batch, key: jnp.sum((p - batch) ** 2), opt)
    fresh = lambda: rj.init_train_state(jnp.zeros(2), opt, jax.random.key(0))
    return step, fresh, lambda i: jnp.ones(2)


def test_fit_never_deletes_or_mixes_into_another_runs_log(tmp_path):
    step, fresh, data = _fit_setup()
    path = tmp_path / "m.jsonl"
    with rj.MetricsLog(path) as log:
        rj.fit(step, fresh(), data, 2, log=log)
    before = path.read_text()
    assert [r["step"] for r in rj.read_metrics(path)] == [1, 2]
    # A new run from step 0 into that log, with no checkpoint (or an empty checkpoint folder).
    for checkpoints in (None, rj.Checkpoints(tmp_path / "ck")):
        with rj.MetricsLog(path) as log:
            with pytest.raises(ValueError, match=r"log: .*m.jsonl already holds 2 rows up to step 2, and the run "
                               r"starts at step 0 with no checkpoint restored"):
                rj.fit(step, fresh(), data, 3, log=log, checkpoints=checkpoints)
        assert path.read_text() == before
        if checkpoints is not None:
            assert checkpoints.steps == []
            checkpoints.close()
    # A state already at step 2 continues the log: rows are appended.
    state = rj.fit(step, fresh(), data, 2)
    with rj.MetricsLog(path) as log:
        rj.fit(step, state, data, 4, log=log)
    assert [r["step"] for r in rj.read_metrics(path)] == [1, 2, 3, 4]


def test_fit_num_steps_below_the_start_step_is_an_error(tmp_path):
    step, fresh, data = _fit_setup()
    state = rj.fit(step, fresh(), data, 3)
    with pytest.raises(ValueError, match=r"num_steps: expected at least 3, the step of the given state, got 2"):
        rj.fit(step, state, data, 2)
    same = rj.fit(step, state, data, 3)  # equal: nothing to do
    assert int(same.step) == 3
    with rj.Checkpoints(tmp_path / "ck") as ckpt:
        rj.fit(step, fresh(), data, 4, checkpoints=ckpt)
        with pytest.raises(ValueError, match=r"num_steps: expected at least 4, the step of the checkpoint "
                           r"restored from .*ck, got 1"):
            rj.fit(step, fresh(), data, 1, checkpoints=ckpt)
        assert ckpt.steps == [4]


@pytest.mark.parametrize(
    "learning_rate, error, message",
    [
        ("0.01", TypeError, "learning_rate: expected a positive number or an optax schedule.*got '0.01'"),
        (True, TypeError, "learning_rate: expected a positive number.*got True"),
        (None, TypeError, "learning_rate: expected a positive number.*got None"),
        (0.0, ValueError, "learning_rate: expected a positive finite number, got 0.0"),
        (-1e-3, ValueError, "learning_rate: expected a positive finite number, got -0.001"),
        (float("nan"), ValueError, "learning_rate: expected a positive finite number, got nan"),
        (jnp.array(-0.5), ValueError, "learning_rate: expected a positive finite number"),
    ],
)
def test_make_optimizer_checks_the_learning_rate(learning_rate, error, message):
    with pytest.raises(error, match=message):
        rj.make_optimizer(learning_rate)


@pytest.mark.parametrize("learning_rate", [1, 0.5, np.float32(0.5), jnp.array(0.5), optax.constant_schedule(0.5)])
def test_make_optimizer_accepts_numbers_and_schedules(learning_rate):
    opt = rj.make_optimizer(learning_rate, clip=None, optimizer=optax.sgd)
    grads = {"w": jnp.array([2.0, -4.0])}
    updates, _ = opt.update(grads, opt.init(grads))
    np.testing.assert_allclose(np.asarray(updates["w"]), -float(learning_rate if not callable(learning_rate)
                                                                else 0.5) * np.array([2.0, -4.0]))


def test_user_functions_with_the_wrong_arguments_are_named():
    opt = rj.make_optimizer(0.1)
    state = rj.init_train_state(jnp.zeros(2), opt, jax.random.key(0))
    with pytest.raises(TypeError, match=r"loss_fn: expected a function loss_fn\(params, batch, key\), "
                       r"got one with signature \(p, b\)"):
        rj.make_train_step(lambda p, b: jnp.sum(p), opt)
    with pytest.raises(TypeError, match=r"loss_fn: expected a function loss_fn\(params, carry, batch, key\) "
                       r"\(carry=True\), got one with signature \(p, b, k\)"):
        rj.make_train_step(lambda p, b, k: jnp.sum(p), opt, carry=True)
    # *args, defaults and partials that leave the right arguments are fine
    rj.make_train_step(lambda *args: jnp.sum(args[0]), opt)
    rj.make_train_step(lambda p, b, k, scale=2.0: scale * jnp.sum(p), opt)
    rj.make_train_step(functools.partial(lambda s, p, b, k: s * jnp.sum(p), 2.0), opt)
    step = rj.make_train_step(lambda p, b, k: jnp.sum(p ** 2), opt)
    with pytest.raises(TypeError, match=r"data: expected a function data\(step\) -> batch, got one with signature \(\)"):
        rj.fit(step, state, lambda: None, 2)
    with pytest.raises(TypeError, match=r"loss_fn: expected it to return \(loss, aux\), got a scalar"):
        rj.make_train_step(lambda p, b, k: jnp.sum(p), opt, has_aux=True)(state, None)
    with pytest.raises(TypeError, match=r"loss_fn: expected it to return \(loss, carry\), got an array of shape \(2,\)"):
        carry_state = rj.init_train_state(jnp.zeros(2), opt, jax.random.key(0), carry=jnp.zeros(2))
        rj.make_train_step(lambda p, c, b, k: p, opt, carry=True)(carry_state, None)
