"""Smoke runs of the long-term memory experiments: each --smoke run finishes and shows its effect.

The sizes are tiny (seconds of training). Where a smoke-sized run shows the full run's
comparison, the test asserts it against a baseline of the task (the adding problem's 1/6 of
always answering 1, chance accuracy, the 0.5 error of guessing a random bit): the LSTM solves
the adding problem at T = 20 while Elman stays at the baseline, clipping bounds the applied
gradient norm while the unclipped run blows up, Elman's gradient decays faster than the
LSTM's. Where it does not (copy task, Reber grammar, temporal order: the full runs need hundreds
to thousands of steps), the test's docstring says so and checks what the smoke run can show.
"""

import json

import numpy as np
import pytest

from experiments import (
    adding,
    copy_task,
    elman1990,
    exploding,
    lstm_variants,
    reber,
    temporal_order,
    vanishing,
)
from experiments import memory_tasks as mt

slow = pytest.mark.slow  # each smoke run compiles a few training steps: ~10 s of CPU


def _files(out, *names):
    for name in names:
        assert (out / name).stat().st_size > 0, name
    assert json.loads((out / "results.json").read_text())  # valid JSON


@slow
def test_adding_smoke_lstm_solves_what_elman_cannot(tmp_path):
    """T = 20: every LSTM seed gets below the success MSE 0.01 (6% of the baseline 1/6 of always
    answering 1), while every Elman seed stays within 20% of that baseline."""
    res = adding.main(["--smoke", "--out", str(tmp_path)])
    lstm, elman = res["results"]["lstm"]["20"], res["results"]["elman"]["20"]
    mse = np.asarray(lstm["curve"]["mse"])  # [evals, seeds]
    assert mse.shape[1] == 2 and (mse[-1] < mse[0]).all()  # the test MSE falls
    assert (np.asarray(lstm["final_mse"]) < adding.SUCCESS_MSE).all() and np.all(lstm["success"])
    assert (np.asarray(elman["final_mse"]) > 0.8 * mt.ADDING_BASELINE).all() and not np.any(elman["success"])
    assert elman["steps_trained"] == adding.SMOKE["steps"]  # it had the whole budget
    for r in (lstm, elman):
        assert np.asarray(r["skipped_steps"]).sum() == 0
    _files(tmp_path, "adding_curves.png", "checkpoints/lstm_T20", "checkpoints/elman_T20")


@slow
def test_copy_smoke(tmp_path):
    """A smoke run cannot show a cell beating the memoryless baseline: in the full run the gated
    cells need thousands of steps to leave it. What 60 steps show is the first phase every cell
    goes through: from the uniform guess (ln 10 per step, 2.8 times the baseline at T = 5) to the
    memoryless strategy (blanks, then a uniform guess over the 8 symbols), within 10% of its
    cross-entropy 10 ln 8 / (T + 20)."""
    res = copy_task.main(["--smoke", "--out", str(tmp_path)])
    r = res["results"]["lstm"]["5"]
    baseline = res["baseline_ce"]["5"]
    assert baseline == pytest.approx(10 * np.log(8) / 25)
    first, last = np.asarray(r["train_loss"]["first"]), np.asarray(r["train_loss"]["last"])
    assert (first > 1.5 * baseline).all()  # the start is far above the memoryless level
    relative = np.asarray(r["relative_ce"])
    assert (relative < 1.1).all() and (last < 1.1 * baseline).all()
    np.testing.assert_allclose(relative, np.asarray(r["final_ce"]) / baseline, rtol=1e-5)
    _files(tmp_path, "copy_curves.png")


@slow
def test_reber_smoke(tmp_path):
    """A smoke run cannot show the LSTM learning the closing T/P while one-step Elman does not:
    even 400 steps on 64 strings leave both at chance (0.53 and 0.47 against 0.48 and 0.56;
    the full run's LSTM needs about 350 steps on 256 strings). The 40 smoke steps show both
    models learning from the uniform guess over the 7 symbols (cross-entropy ln 7), under
    either gradient rule (that the one-step rule cuts the gradient is tested below)."""
    res = reber.main(["--smoke", "--out", str(tmp_path)])
    assert set(res["results"]) == {"lstm", "elman-one-step"}
    for name, r in res["results"].items():
        loss = np.asarray(r["loss"])  # [steps], the mean over seeds
        assert loss.shape == (reber.SMOKE["steps"],)
        assert abs(loss[0] - np.log(7)) < 0.25, name  # starts near the uniform guess
        assert loss[-5:].mean() < np.log(7) - 0.15, name
    _files(tmp_path, "reber.png")


def test_reber_one_step_gradient():
    """Elman's procedure: same outputs as the cell, but no gradient reaches an earlier step."""
    import jax
    import jax.numpy as jnp

    import rnnjax as rj

    cell = rj.elman(3, 5)
    one_step = reber.one_step_gradient(cell)
    params = cell.init(jax.random.key(0))
    xs = jax.random.normal(jax.random.key(1), (4, 3))

    def last_output(step, xs):
        return rj.scan(step, params, cell.initial_carry(), xs)[1][-1].sum()

    np.testing.assert_allclose(last_output(one_step.step, xs), last_output(cell.step, xs), rtol=1e-6)
    g_full = jax.grad(lambda xs: last_output(cell.step, xs))(xs)
    g_one = jax.grad(lambda xs: last_output(one_step.step, xs))(xs)
    assert jnp.all(jnp.abs(g_full[:-1]) > 0)  # full BPTT: every input step matters
    np.testing.assert_array_equal(g_one[:-1], 0.0)  # one-step: only the last input
    np.testing.assert_allclose(g_one[-1], g_full[-1], rtol=1e-6)
    with pytest.raises(ValueError, match="gradient: expected one of"):
        reber.make_model("elman", 4, "truncated")


@slow
def test_temporal_order_smoke(tmp_path):
    """A smoke run cannot show the LSTM solving 6a while Elman stays at chance: the full run's
    LSTM needs about 400 steps of 32 sequences of length 100-110. In 40 steps the model learns
    the class prior: its test cross-entropy comes down to within 0.1 of ln 4, that of the
    uniform guess over the four balanced classes. (The accuracy measures are checked against
    NumPy in the next test.)"""
    res = temporal_order.main(["--smoke", "--out", str(tmp_path)])
    r = res["results"]["lstm"]
    assert (np.asarray(r["train_loss"]["last"]) < np.asarray(r["train_loss"]["first"])).all()
    assert (np.abs(np.asarray(r["ce"]) - np.log(4)) < 0.1).all()
    _files(tmp_path, "temporal_order.png")


def test_temporal_order_accuracy_measures_against_numpy():
    """Argmax accuracy and the paper's criterion (every softmax output within 0.3 of its
    one-hot target) on logits made so that the two measures differ."""
    import jax.numpy as jnp

    logits = np.array([[4.0, 0, 0, 0], [1.0, 0.9, 0, 0], [0, 0, 5.0, 0], [0, 3.0, 0, 0], [0.1, 0, 0, 0.2],
                       [0, 0, 0, 1.5]])  # the last: right, p = 0.6, 0.4 from its target (outside 0.3)
    labels = np.array([0, 0, 2, 2, 3, 3])
    got = temporal_order.evaluate(lambda p, xs, lengths: p, (None, None, jnp.asarray(labels)), jnp.asarray(logits))
    p = np.exp(logits) / np.exp(logits).sum(-1, keepdims=True)
    onehot = np.eye(4)[labels]
    assert float(got["acc"]) == pytest.approx(np.mean(p.argmax(-1) == labels))  # 4 of 6
    assert float(got["paper_acc"]) == pytest.approx(np.mean(np.all(np.abs(p - onehot) < 0.3, -1)))  # 2 of 6
    assert float(got["ce"]) == pytest.approx(np.mean(-np.log(p[np.arange(6), labels])), rel=1e-5)


@slow
def test_elman1990_smoke(tmp_path):
    """Letters: the vowels, which the consonant determines, are predicted far better than the
    consonants, which are random. XOR: a random bit cannot be predicted (RMS error 0.5 when
    guessing 0.5, the best one can do), and the XOR bit can: in the full run 2 of 3 seeds
    find it; here the better of the two seeds must be 10% below the guess."""
    res = elman1990.main(["--smoke", "--out", str(tmp_path)])
    assert (np.asarray(res["letters"]["consonant_over_vowel"]) > 1.5).all()
    rms = np.asarray(res["xor"]["rms_by_phase"])  # [seeds, phase]; phase 2 is the XOR bit
    assert rms.shape == (2, 3)
    assert (rms[:, :2] > 0.45).all()  # nothing learned about the random bits
    assert rms[:, 2].min() < 0.9 * 0.5
    loss = res["letters_train_loss"]
    assert (np.asarray(loss["last"]) < np.asarray(loss["first"])).all()
    _files(tmp_path, "elman1990.png")


@slow
def test_exploding_smoke(tmp_path):
    """The full run's network and data (T = 10, 32 units, radius 2) for 100 steps, 3 seeds. The
    trajectories are chaotic, so float rounding (which differs between instruction sets) moves
    every number; the bounds hold with margin for seeds 0-8 under the default ISA, AVX2 and
    SSE4_2 (measured: clipped loss ratio last/first 10% at most 0.44, non-finite unclipped steps
    at least 34 of 100, raw gradient maximum at least 12.4, largest finite unclipped loss at
    least 1.7e36)."""
    res = exploding.main(["--smoke", "--out", str(tmp_path)])
    cfg, curves = res["config"], res["curves"]
    clipped, unclipped = curves["clipped"], curves["unclipped"]
    # clipping keeps the applied gradient norm at or below the threshold, at every step ...
    applied = clipped["applied_norm"]
    assert np.isfinite(applied).all() and applied.max() <= cfg["clip"] * (1 + 1e-5)
    # ... although the raw gradients explode
    assert (clipped["grad_norm"].max(0) > 5 * cfg["clip"]).all()
    # unclipped, the same gradients are applied as they are
    np.testing.assert_allclose(unclipped["applied_norm"][:5], unclipped["grad_norm"][:5], rtol=1e-5)
    # the clipped run learns (every seed's loss falls by 40% or more) and never leaves the
    # finite range; the unclipped one blows up and has its non-finite steps skipped
    assert np.isfinite(clipped["loss"]).all() and (np.asarray(clipped["nonfinite_steps"]) == 0).all()
    assert (np.asarray(clipped["loss_last_10pct"]) < 0.6 * np.asarray(clipped["loss_first_10pct"])).all()
    assert (np.asarray(unclipped["nonfinite_steps"]) >= 10).all()
    assert np.nanmax(np.where(np.isfinite(unclipped["loss"]), unclipped["loss"], np.nan)) > 1e6
    # the first non-finite step agrees with the count: one exists exactly when the count is > 0
    for first, count in zip(unclipped["first_nonfinite_step"], unclipped["nonfinite_steps"], strict=True):
        assert first is not None and 1 <= first <= cfg["steps"] - count + 1
    from experiments import reproduce  # its check reads every number it compares from these results

    assert len(reproduce.compare("exploding", res)) == len(reproduce.SPECS["exploding"]().checks)
    _files(tmp_path, "exploding.png")


@slow
def test_vanishing_smoke(tmp_path):
    res = vanishing.main(["--smoke", "--out", str(tmp_path)])
    elman = res["stats"]["elman"]
    lstm = res["stats"]["lstm"]
    for when in ("init", "trained"):
        assert elman[when]["per_step_factor"] < 0.95  # Elman's gradient shrinks with distance
        med = np.asarray(elman[when]["median_by_distance"])
        assert med.shape == (12,) and med[-1] < med[0]
    # training makes Elman's decay steeper; the trained LSTM carries the gradient further
    assert elman["trained"]["per_step_factor"] < elman["init"]["per_step_factor"]
    assert lstm["trained"]["per_step_factor"] > elman["trained"]["per_step_factor"]
    assert lstm["trained"]["ratio_far_near"] > elman["trained"]["ratio_far_near"]
    _files(tmp_path, "vanishing.png")


@slow
def test_lstm_variants_smoke(tmp_path):
    """The user-written no-forget-gate LSTM plugs into the same training code as built-ins and
    learns a short adding problem (T = 8) below the baseline. That it then fails at T = 100,
    where the gated cells succeed, needs the full run's 1500 steps: a smoke run cannot show it."""
    res = lstm_variants.main(["--smoke", "--out", str(tmp_path)])
    add, order = res["adding"]["nfg"], res["temporal_order"]["nfg"]
    assert not add["reused"] and not order["reused"]
    assert (np.asarray(add["final_mse"]) < mt.ADDING_BASELINE).all()
    assert (np.asarray(order["train_loss"]["last"]) < np.asarray(order["train_loss"]["first"])).all()
    _files(tmp_path, "lstm_variants.png")


def test_nfg_step_matches_numpy_equations():
    """The user-written no-forget-gate step against its equations written out in NumPy."""
    import jax
    import jax.numpy as jnp

    import rnnjax as rj

    cell = lstm_variants.nfg_lstm(3, 4)
    params = cell.init(jax.random.key(0))
    params = params._replace(b=jax.random.normal(jax.random.key(1), (12,)))
    x = np.asarray(jax.random.normal(jax.random.key(2), (2, 3)))
    h, c = (np.asarray(jax.random.normal(jax.random.key(k), (2, 4))) for k in (3, 4))
    carry, y = lstm_variants.nfg_lstm_step(params, rj.LSTMState(jnp.asarray(h), jnp.asarray(c)), jnp.asarray(x))
    w_ih, w_hh, b = (np.asarray(a, np.float64) for a in params)
    sig = lambda z: 1 / (1 + np.exp(-z))  # noqa: E731
    z = x @ w_ih + h @ w_hh + b
    i, g, o = sig(z[:, :4]), np.tanh(z[:, 4:8]), sig(z[:, 8:])
    c_ref = c + i * g
    h_ref = o * np.tanh(c_ref)
    np.testing.assert_allclose(carry.c, c_ref, rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(carry.h, h_ref, rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(y, h_ref, rtol=1e-5, atol=1e-6)
