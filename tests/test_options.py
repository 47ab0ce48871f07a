"""Documented options, one test each, against references written out here.

Each test also shows that the option changes something (or that leaving it out would be
caught), so a library that ignored it would fail.
"""

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

import rnnjax as rj

# ------------------------------------------------------------ make_train_step(carry=, has_aux=)


def test_train_step_with_carry_and_aux():
    """``loss_fn(params, carry, batch, key) -> (loss, (carry, aux))``: the carry is passed on,
    the aux entries join the metrics, and the update is plain SGD on the NumPy gradient."""
    lr = 0.1

    def loss_fn(p, c, x, key):
        loss = jnp.sum((p * c - x) ** 2)
        new_c = c + x
        return loss, (new_c, {"carry_mean": jnp.mean(new_c), "residual": p * c - x})

    opt = optax.sgd(lr)
    step = rj.make_train_step(loss_fn, opt, carry=True, has_aux=True)
    p0, c0 = np.array([0.5, -1.0, 2.0]), np.array([1.0, 2.0, -0.5])
    state = rj.init_train_state(jnp.asarray(p0, jnp.float32), opt, jax.random.key(0), carry=jnp.asarray(c0, jnp.float32))
    batches = [np.array([0.3, 0.1, -0.2]), np.array([1.0, -1.0, 0.5])]
    p, c = p0.copy(), c0.copy()
    for x in batches:
        state, metrics = step(state, jnp.asarray(x, jnp.float32))
        residual = p * c - x  # the reference, in float64
        assert float(metrics["loss"]) == pytest.approx(np.sum(residual**2), rel=1e-5)
        np.testing.assert_allclose(np.asarray(metrics["residual"]), residual, rtol=1e-5, atol=1e-6)
        grad = 2 * residual * c
        assert float(metrics["grad_norm"]) == pytest.approx(np.linalg.norm(grad), rel=1e-5)
        p, c = p - lr * grad, c + x
        assert float(metrics["carry_mean"]) == pytest.approx(c.mean(), rel=1e-5)
        np.testing.assert_allclose(np.asarray(state.params), p, rtol=1e-5, atol=1e-6)
        np.testing.assert_allclose(np.asarray(state.carry), c, rtol=1e-5, atol=1e-6)
    assert int(state.step) == 2 and sorted(metrics) == ["carry_mean", "grad_norm", "loss", "residual", "skipped",
                                                        "skipped_total"]


# ---------------------------------------------------------------- make_train_step(donate=False)


def test_train_step_donate_false_keeps_the_incoming_state_usable():
    opt = optax.sgd(0.5)

    def loss_fn(p, x, key):
        return jnp.sum((p - x) ** 2)

    kept = rj.make_train_step(loss_fn, opt, donate=False)
    state = rj.init_train_state(jnp.zeros(3), opt, jax.random.key(0))
    a, _ = kept(state, jnp.ones(3))
    assert not state.params.is_deleted()
    np.testing.assert_array_equal(np.asarray(state.params), np.zeros(3))  # untouched
    b, _ = kept(state, jnp.ones(3))  # the same state again: the same step
    np.testing.assert_array_equal(np.asarray(a.params), np.asarray(b.params))
    np.testing.assert_allclose(np.asarray(a.params), np.ones(3), rtol=1e-6)  # p - 0.5 * 2 (p - 1)
    # the default donates: the incoming buffers are gone after the step
    donated = rj.make_train_step(loss_fn, opt)
    state = rj.init_train_state(jnp.zeros(3), opt, jax.random.key(0))
    donated(state, jnp.ones(3))
    assert state.params.is_deleted()


# ------------------------------------------------------------------ Checkpoints(async_save=False)


def test_checkpoints_sync_save_is_on_disk_when_save_returns(tmp_path, monkeypatch):
    """With ``async_save=False`` the step is finished (Orbax's marker written) before ``save``
    returns, in the calling thread: another manager on the same folder lists and restores it,
    without any ``wait``. By default Orbax finishes the step in a background thread."""
    import threading

    import orbax.checkpoint as ocp

    finishers, real_finalize = [], ocp.CheckpointManager._finalize

    def finalize(self, *args, **kwargs):  # Orbax's last step of a save: writes the marker
        finishers.append(threading.current_thread())
        return real_finalize(self, *args, **kwargs)

    monkeypatch.setattr(ocp.CheckpointManager, "_finalize", finalize)
    state = {"w": jnp.arange(4.0), "n": jnp.array(3)}
    ckpt = rj.Checkpoints(tmp_path, async_save=False)
    ckpt.save(state, step=7, meta={"note": "sync"})
    assert finishers == [threading.current_thread()]
    assert (tmp_path / "7" / "_CHECKPOINT_METADATA").is_file()
    other = rj.Checkpoints(tmp_path)
    assert other.steps == [7]
    restored, meta = other.restore({"w": jnp.zeros(4), "n": jnp.array(0)})
    np.testing.assert_array_equal(np.asarray(restored["w"]), np.arange(4.0))
    assert int(restored["n"]) == 3 and meta == {"note": "sync"}
    other.close()
    ckpt.close()
    with rj.Checkpoints(tmp_path / "async") as background:  # the default, for contrast
        background.save(state, step=1)
    assert len(finishers) == 2 and finishers[1] is not threading.current_thread()
    with pytest.raises(TypeError, match="async_save: expected a bool"):
        rj.Checkpoints(tmp_path, async_save="no")


# ------------------------------------------------------------------------------ fit(progress=)


def _quadratic_fit(progress, num_steps=4):
    opt = optax.sgd(0.25)
    step = rj.make_train_step(lambda p, x, key: jnp.sum((p - x) ** 2), opt)
    state = rj.init_train_state(jnp.zeros(2), opt, jax.random.key(0))
    return rj.fit(step, state, lambda i: jnp.ones(2), num_steps, progress=progress)


def test_fit_progress_shows_a_bar_with_steps_and_loss_or_nothing(capsys):
    _quadratic_fit(True)
    err = capsys.readouterr().err
    # the bar counts the steps done and shows the last loss: p = 1 - 0.5^k, loss 2 (0.5^k)^2
    assert "4/4" in err and f"loss={2 * 0.5 ** 6:.4g}" in err
    _quadratic_fit(False)
    assert capsys.readouterr().err == ""


# ------------------------------------------------------------------------------ scan(unroll=True)


def _scan_unrolls(jaxpr):
    """The ``unroll`` parameter of every scan in a jaxpr (nested ones too)."""
    found = []
    for eqn in jaxpr.eqns:
        if eqn.primitive.name == "scan":
            found.append(eqn.params["unroll"])
        for sub in jax.core.subjaxprs(eqn) if hasattr(jax.core, "subjaxprs") else ():
            found += _scan_unrolls(sub)
    return found


def _np_elman(params, h, xs, lengths, reverse=False):
    """Elman ``h' = tanh(x W_ih + h W_hh + b)`` sequence by sequence; zero outputs at padding;
    reversed runs go from each sequence's own last valid step back to 0."""
    w_ih, w_hh, b = (np.asarray(a, np.float64) for a in params)
    T, B = xs.shape[:2]
    ys = np.zeros((T, B, w_hh.shape[0]))
    h = np.asarray(h, np.float64).copy()
    for n in range(B):
        steps = range(lengths[n])
        for t in (reversed(steps) if reverse else steps):
            h[n] = np.tanh(xs[t, n] @ w_ih + h[n] @ w_hh + b)
            ys[t, n] = h[n]
    return h, ys


def test_scan_full_unroll_matches_numpy_and_unrolls_every_step():
    cell = rj.elman(3, 4)
    params = cell.init(jax.random.key(0))
    xs = np.asarray(jax.random.normal(jax.random.key(1), (6, 2, 3)))
    lengths = np.array([6, 3])
    h0 = np.asarray(jax.random.normal(jax.random.key(2), (2, 4)))
    for reverse in (False, True):
        h, ys = rj.scan(cell.step, params, jnp.asarray(h0), jnp.asarray(xs), lengths=jnp.asarray(lengths),
                        reverse=reverse, unroll=True)
        h_ref, ys_ref = _np_elman(params, h0, xs, lengths, reverse)
        np.testing.assert_allclose(np.asarray(h), h_ref, rtol=1e-5, atol=1e-6)
        np.testing.assert_allclose(np.asarray(ys), ys_ref, rtol=1e-5, atol=1e-6)

    # a user's step (not a built-in, so the generic loop runs): True reaches lax.scan as a full
    # unroll, with and without lengths (two code paths)
    def step(p, h, x):
        return jnp.tanh(x @ p + h), h

    p = jnp.ones((3, 4))
    for lens in (None, jnp.asarray(lengths)):
        unrolls = [_scan_unrolls(jax.make_jaxpr(
            lambda x, u=u, lens=lens: rj.scan(step, p, jnp.zeros((2, 4)), x, lengths=lens, unroll=u))(jnp.asarray(xs)).jaxpr)
            for u in (True, 1, 2)]
        assert unrolls == [[6], [1], [2]], lens
    with pytest.raises(ValueError, match="unroll: expected an int >= 1 or True"):
        rj.scan(step, p, jnp.zeros((2, 4)), jnp.asarray(xs), unroll=False)


# ------------------------------------------------------------------------------------ attend(keys=)


def test_attend_scores_the_given_keys_and_averages_the_memory():
    """``keys`` replaces ``prepare(params, memory)``: dot-product scores are ``q · k_s`` of the
    keys given, the context is the weighted sum of the memory (NumPy), padding gets 0."""
    att = rj.dot_attention()
    rng = np.random.default_rng(0)
    query, memory, keys = rng.normal(size=(2, 3)), rng.normal(size=(2, 5, 3)), rng.normal(size=(2, 5, 3))
    lengths = np.array([5, 2])
    context, weights = rj.attend(att, (), jnp.asarray(query, jnp.float32), jnp.asarray(memory, jnp.float32),
                                 lengths=jnp.asarray(lengths), keys=jnp.asarray(keys, jnp.float32))
    for b in range(2):
        s = keys[b, : lengths[b]] @ query[b]
        w = np.zeros(5)
        w[: lengths[b]] = np.exp(s - s.max()) / np.exp(s - s.max()).sum()
        np.testing.assert_allclose(np.asarray(weights[b]), w, rtol=1e-5, atol=1e-7)
        np.testing.assert_allclose(np.asarray(context[b]), w @ memory[b], rtol=1e-5, atol=1e-6)
    # without keys the memory itself is scored: other weights than with the keys above
    _, own = rj.attend(att, (), jnp.asarray(query, jnp.float32), jnp.asarray(memory, jnp.float32),
                       lengths=jnp.asarray(lengths))
    assert not np.allclose(np.asarray(own), np.asarray(weights))
    # and for a mechanism with parameters, prepared keys give exactly what attend computes itself
    add = rj.additive_attention(query_size=3, key_size=3, attention_size=4)
    params = add.init(jax.random.key(0))
    mem = jnp.asarray(memory, jnp.float32)
    given = rj.attend(add, params, jnp.asarray(query, jnp.float32), mem, keys=add.prepare(params, mem))
    alone = rj.attend(add, params, jnp.asarray(query, jnp.float32), mem)
    for a, b in zip(given, alone, strict=True):
        np.testing.assert_array_equal(np.asarray(a), np.asarray(b))


# ---------------------------------------------------------------------------- masked_softmax


def test_masked_softmax_against_numpy_with_empty_rows_and_extreme_scores():
    rng = np.random.default_rng(1)
    scores = rng.normal(size=(3, 4, 6)) * 5
    scores[0, 0, 2] = 1e30  # a masked-out huge score must not leak
    mask = rng.random((3, 4, 6)) < 0.6
    mask[0, 0] = [True, True, False, True, False, False]
    mask[1, 2] = False  # a row with nothing valid
    got = np.asarray(rj.masked_softmax(jnp.asarray(scores, jnp.float32), jnp.asarray(mask)))
    for idx in np.ndindex(3, 4):
        m, s = mask[idx], scores[idx]
        ref = np.zeros(6)
        if m.any():
            e = np.exp(s[m] - s[m].max())
            ref[m] = e / e.sum()
        np.testing.assert_allclose(got[idx], ref, rtol=1e-5, atol=1e-7)
    assert np.all(got[~mask] == 0.0) and np.all(got[1, 2] == 0.0)
    # computed in float32 from a bfloat16 input; a mask broadcast over the rows
    half = rj.masked_softmax(jnp.asarray(scores[0], jnp.bfloat16), jnp.asarray(mask[0, 0]))
    assert half.dtype == jnp.float32
    for r in range(4):
        s = np.asarray(jnp.asarray(scores[0, r], jnp.bfloat16), np.float64)[mask[0, 0]]
        e = np.exp(s - s.max())
        np.testing.assert_allclose(np.asarray(half[r])[mask[0, 0]], e / e.sum(), rtol=1e-5)
        assert np.all(np.asarray(half[r])[~mask[0, 0]] == 0.0)
    # no gradient flows to masked scores
    g = jax.grad(lambda s: jnp.sum(rj.masked_softmax(s, jnp.asarray(mask)) * jnp.arange(6.0)))(
        jnp.asarray(scores, jnp.float32))
    assert np.all(np.asarray(g)[~mask] == 0.0) and np.any(np.asarray(g)[mask] != 0.0)


# ------------------------------------------------------------------------- progress_bar(initial=)


def test_progress_bar_starts_at_initial(capsys):
    bar = rj.progress_bar(10, initial=3, desc="resume", enabled=True)
    assert bar.n == 3
    bar.refresh()
    assert "3/10" in capsys.readouterr().err
    bar.update(2)
    bar.close()
    assert bar.n == 5 and "5/10" in capsys.readouterr().err
    assert rj.progress_bar(10).n == 0  # the default starts at 0


# ------------------------------------------------------------------------------- the NNX modules


@pytest.fixture(scope="module")
def nnx():
    return pytest.importorskip("flax.nnx", reason="needs the nnx extra: pip install -e '.[nnx]'")


def test_seq_module_deterministic_runs_without_dropout_until_switched(nnx):
    from rnnjax import nnx as rnx

    model = rj.deep(rj.elman(2, 4), rj.elman(4, 4), dropout=0.5)
    xs = jax.random.normal(jax.random.key(1), (3, 2, 2))
    module = rnx.SeqModule(model, rngs=nnx.Rngs(0), deterministic=True)
    params = module.get_params()
    _, eval_ys = model.apply(params, xs, train=False)
    _, ys = module(xs)
    np.testing.assert_array_equal(np.asarray(ys), np.asarray(eval_ys))  # no dropout, no key needed
    module.train()  # switches dropout on
    key = jax.random.key(7)
    _, train_ys = module(xs, key=key)
    np.testing.assert_array_equal(np.asarray(train_ys), np.asarray(model.apply(params, xs, train=True, key=key)[1]))
    assert not np.allclose(np.asarray(train_ys), np.asarray(eval_ys))
    module.eval()
    np.testing.assert_array_equal(np.asarray(module(xs)[1]), np.asarray(eval_ys))
    # the default (deterministic=False) trains: dropout is on from the start
    _, default_ys = rnx.SeqModule(model, rngs=nnx.Rngs(0))(xs, key=key)
    np.testing.assert_array_equal(np.asarray(default_ys), np.asarray(train_ys))


def test_cell_module_scan_with_carry_and_reverse(nnx):
    from rnnjax import nnx as rnx

    layer = rnx.CellModule(rj.elman(3, 4), rngs=nnx.Rngs(0))
    params = layer.get_params()
    xs = np.asarray(jax.random.normal(jax.random.key(1), (5, 2, 3)))
    h0 = np.asarray(jax.random.normal(jax.random.key(2), (2, 4)))
    lengths = np.array([5, 2])
    for reverse in (False, True):
        h, ys = layer.scan(jnp.asarray(xs), lengths=jnp.asarray(lengths), carry=jnp.asarray(h0), reverse=reverse)
        h_ref, ys_ref = _np_elman(params, h0, xs, lengths, reverse)
        np.testing.assert_allclose(np.asarray(h), h_ref, rtol=1e-5, atol=1e-6)
        np.testing.assert_allclose(np.asarray(ys), ys_ref, rtol=1e-5, atol=1e-6)
    # the default carry is zeros
    h, _ = layer.scan(jnp.asarray(xs))
    np.testing.assert_allclose(np.asarray(h), _np_elman(params, np.zeros((2, 4)), xs, [5, 5])[0], rtol=1e-5, atol=1e-6)


# ------------------------------------------------- unroll= and impl= on every loop and composer


def _unrolls_in(fn, *args):
    """Every scan's ``unroll`` in the jaxpr of ``fn(*args)``, nested ones included (from its text)."""
    import re

    return [int(u) for u in re.findall(r"unroll=(\d+)", str(jax.make_jaxpr(fn)(*args)))]


def _user_cell(i=3, h=4):  # not registered: the plain step loop runs
    def step(p, c, x):
        c = jnp.tanh(x @ p + c)
        return c, c

    return rj.Cell(lambda key: jax.random.normal(key, (i, h)), lambda b=(): jnp.zeros((*b, h)), step)


def test_unroll_reaches_every_loop_and_composer():
    cell, xs, lengths = _user_cell(), jnp.ones((8, 2, 3)), jnp.array([8, 5])
    p = cell.init(jax.random.key(0))
    c0 = cell.initial_carry((2,))
    cases = {
        "scan": lambda u: lambda x: rj.scan(cell.step, p, c0, x, unroll=u),
        "truncated_scan": lambda u: lambda x: rj.truncated_scan(cell.step, p, c0, x, truncate=4, unroll=u),
        "remat_scan": lambda u: lambda x: rj.remat_scan(cell.step, p, c0, x, segment=4, unroll=u),
        "rnn": lambda u: lambda x: rj.rnn(cell, unroll=u).apply(p, x, lengths=lengths),
        "deep": lambda u: lambda x: rj.deep(cell, _user_cell(4, 4), unroll=u).apply((p, p[:, :4].T @ p), x),
        "bidirectional": lambda u: lambda x: rj.bidirectional(cell, cell, unroll=u).apply(rj.BiParams(p, p), x),
    }
    for name, make in cases.items():
        assert set(_unrolls_in(make(1), xs)) == {1}, name
        unrolls = _unrolls_in(make(4), xs)
        if name in ("truncated_scan", "remat_scan"):  # their outer loop over chunks is not a time loop
            assert unrolls.count(4) >= 1 and unrolls.count(1) == 1, (name, unrolls)
        else:
            assert set(unrolls) == {4}, (name, unrolls)  # every time loop of it, none left at 1
        np.testing.assert_allclose(make(4)(xs)[1], make(1)(xs)[1], rtol=1e-6, err_msg=name)
    lm = rj.language_model(_user_cell(5, 4), vocab_size=6, embed_size=5, unroll=3)
    lm_params = lm.init(jax.random.key(1))
    assert set(_unrolls_in(lambda t: lm.apply(lm_params, t), jnp.zeros((6, 2), int))) == {3}
    s2s = rj.seq2seq(_user_cell(4, 4), _user_cell(4 + 4, 4), src_vocab=5, tgt_vocab=5, embed_size=4, unroll=2)
    s2s_params = s2s.init(jax.random.key(2))
    assert set(_unrolls_in(lambda s, t: s2s.apply(s2s_params, s, t), jnp.zeros((5, 2), int),
                           jnp.zeros((3, 2), int))) == {2}
    for bad in (0, 1.5, False):
        with pytest.raises(ValueError, match="unroll: expected an int >= 1 or True"):
            rj.rnn(cell, unroll=bad)
        with pytest.raises(ValueError, match="unroll: expected an int >= 1 or True"):
            rj.remat_scan(cell.step, p, c0, xs, unroll=bad)


def test_impl_loop_runs_the_plain_loop():
    """The fast check; the next test compares values and gradients through every loop."""
    cell = rj.lstm(3, 4)
    p, xs = cell.init(jax.random.key(0)), jax.random.normal(jax.random.key(1), (5, 2, 3))
    run = {impl: jax.jit(lambda x, impl=impl: rj.rnn(cell, impl=impl).apply(p, x)[1]) for impl in ("auto", "loop")}
    text = {impl: str(fn.lower(xs).as_text()) + str(jax.make_jaxpr(fn)(xs)) for impl, fn in run.items()}
    assert "custom_vjp_call" in text["auto"] and "custom_vjp_call" not in text["loop"]
    np.testing.assert_allclose(run["loop"](xs), run["auto"](xs), rtol=1e-5, atol=1e-6)


@pytest.mark.slow  # compiles values and gradients of 4 loops x 2 impls x 3 cells
@pytest.mark.parametrize("make", [lambda: rj.lstm(3, 4), lambda: rj.gru(3, 4), lambda: rj.elman(3, 4)])
def test_impl_loop_turns_the_fused_kernel_off_with_the_same_results(make):
    cell = make()
    p, xs, lengths = cell.init(jax.random.key(0)), jax.random.normal(jax.random.key(1), (7, 2, 3)), jnp.array([7, 4])
    jaxpr = {impl: str(jax.make_jaxpr(lambda x, impl=impl: rj.scan(cell.step, p, cell.initial_carry((2,)), x,
                                                                    lengths=lengths, impl=impl))(xs))
             for impl in ("auto", "loop")}
    assert "custom_vjp_call" in jaxpr["auto"] and "custom_vjp_call" not in jaxpr["loop"]
    for run in (lambda impl, q: rj.scan(cell.step, q, cell.initial_carry((2,)), xs, lengths=lengths, impl=impl),
                lambda impl, q: rj.rnn(cell, reverse=True, impl=impl).apply(q, xs, lengths=lengths),
                lambda impl, q: rj.remat_scan(cell.step, q, cell.initial_carry((2,)), xs, segment=3, impl=impl),
                lambda impl, q: rj.truncated_scan(cell.step, q, cell.initial_carry((2,)), xs, truncate=3,
                                                  impl=impl)):
        out = {impl: run(impl, p) for impl in ("auto", "loop")}
        for a, b in zip(jax.tree.leaves(out["auto"]), jax.tree.leaves(out["loop"]), strict=True):
            np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-6)
        grads = {impl: jax.grad(lambda q, impl=impl, run=run: jnp.sum(jnp.sin(run(impl, q)[1])))(p)
                 for impl in ("auto", "loop")}
        for a, b in zip(jax.tree.leaves(grads["auto"]), jax.tree.leaves(grads["loop"]), strict=True):
            np.testing.assert_allclose(a, b, rtol=1e-4, atol=1e-6)
    # forward mode, which the fused kernels do not have, runs with impl="loop"
    tangent = jax.tree.map(jnp.ones_like, p)
    jvp = jax.jvp(lambda q: rj.rnn(cell, impl="loop").apply(q, xs)[1], (p,), (tangent,))[1]
    assert jvp.shape == (7, 2, 4) and bool(jnp.isfinite(jvp).all())


def test_impl_is_checked_and_excludes_parallel():
    cell = rj.min_gru(3, 4)
    for fn in (lambda: rj.rnn(cell, impl="fast"), lambda: rj.deep(cell, impl="fused"),
               lambda: rj.bidirectional(cell, cell, impl=None),
               lambda: rj.scan(cell.step, cell.init(jax.random.key(0)), cell.initial_carry(()), jnp.ones((2, 3)),
                               impl="LOOP")):
        with pytest.raises(ValueError, match=r"impl: expected one of \['auto', 'loop'\]"):
            fn()
    with pytest.raises(ValueError, match="impl: 'loop' runs the step loop, but parallel=True"):
        rj.rnn(cell, parallel=True, impl="loop")


# ------------------------------------------------------------- language_model(parallel=True)


@pytest.mark.slow  # compile-heavy: the second tier
def test_language_model_parallel_equals_sequential_and_decodes_with_the_same_params():
    """A stack of a Mamba block (parallel form), an LSTM (none) and a Hawk block: the parallel
    apply equals the sequential one in logits and carries (lengths included), and decoding from
    its carry continues exactly as from the sequential carry."""
    d = 8
    blocks = rj.stack(rj.mamba_block(d, state_size=4), rj.lstm(d, d), rj.hawk_block(d))
    seq = rj.language_model(blocks, vocab_size=11, embed_size=d)
    par = rj.language_model(blocks, vocab_size=11, embed_size=d, parallel=True)
    params = jax.jit(seq.init)(jax.random.key(0))
    tokens = jax.random.randint(jax.random.key(1), (9, 3), 0, 11)
    lengths = jnp.array([9, 6, 2])
    c_seq, l_seq = jax.jit(seq.apply)(params, tokens, lengths=lengths)
    c_par, l_par = jax.jit(par.apply)(params, tokens, lengths=lengths)
    np.testing.assert_allclose(l_par, l_seq, rtol=2e-4, atol=2e-5)
    assert isinstance(c_par, rj.StackedCarry)
    for a, b in zip(jax.tree.leaves(c_par), jax.tree.leaves(c_seq), strict=True):
        np.testing.assert_allclose(a, b, rtol=2e-4, atol=2e-5)
    decode = jax.jit(lambda step, c: rj.greedy(step, params, c, tokens[-1], max_len=5)[0], static_argnums=0)
    np.testing.assert_array_equal(decode(par.step, c_par), decode(seq.step, c_seq))
    # the blocks run their parallel forms, with no time loop left
    only_blocks = rj.stack(rj.mamba_block(d, state_size=4), rj.hawk_block(d))
    scans = [str(jax.make_jaxpr(lm.apply)(jax.eval_shape(lm.init, jax.random.key(0)), tokens)).count(" scan[")
             for lm in (rj.language_model(only_blocks, 11, embed_size=d),
                        rj.language_model(only_blocks, 11, embed_size=d, parallel=True))]
    assert scans == [1, 0]
    # deep(...) of the same layers has the same params as the stack
    deep = rj.deep(*(rj.rnn(c, parallel=rj.has_parallel_form(c)) for c in rj.stack_layers(blocks)))
    for a, b in zip(jax.tree.leaves(jax.jit(deep.init)(jax.random.key(5))),
                    jax.tree.leaves(jax.jit(blocks.init)(jax.random.key(5))), strict=True):
        np.testing.assert_array_equal(a, b)
    with pytest.raises(ValueError, match="parallel: expected a cell with a parallel-in-time form, or a stack"):
        rj.language_model(rj.stack(rj.lstm(4, 4)), vocab_size=5, embed_size=4, parallel=True)
