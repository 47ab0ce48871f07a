"""Smoke runs of the long-term memory experiments: each --smoke run finishes and shows its effect.

The sizes are tiny (seconds of training), so the assertions are the properties that already
hold there: losses fall, baselines are beaten or met as expected, clipping bounds the applied
gradient norm, gradients through an Elman network decay with distance.
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
def test_adding_smoke(tmp_path):
    res = adding.main(["--smoke", "--out", str(tmp_path)])
    r = res["results"]["lstm"]["8"]
    mse = np.asarray(r["curve"]["mse"])  # [evals, seeds]
    assert mse.shape == (3, 2)
    assert (mse[-1] < mse[0]).all()  # the test MSE falls
    assert (mse[-1] < 0.8 * mt.ADDING_BASELINE).all()  # below "always predict 1"
    assert np.asarray(r["skipped_steps"]).sum() == 0
    _files(tmp_path, "adding_curves.png", "checkpoints/lstm_T8")


@slow
def test_copy_smoke(tmp_path):
    res = copy_task.main(["--smoke", "--out", str(tmp_path)])
    r = res["results"]["lstm"]["5"]
    # starts near ln 10 per step (far above the memoryless baseline), ends near the baseline
    first, last = np.asarray(r["train_loss"]["first"]), np.asarray(r["train_loss"]["last"])
    assert (last < 0.6 * first).all()
    assert (np.asarray(r["relative_ce"]) < 1.3).all()
    assert res["baseline_ce"]["5"] == pytest.approx(10 * np.log(8) / 25)
    _files(tmp_path, "copy_curves.png")


@slow
def test_reber_smoke(tmp_path):
    res = reber.main(["--smoke", "--out", str(tmp_path)])
    r = res["results"]["lstm"]
    loss = np.asarray(r["loss"])
    assert loss[-5:].mean() < 0.9 * loss[:5].mean()
    for key in ("test_all_correct", "train_all_correct", "test_outer_acc"):
        v = np.asarray(r[key])
        assert v.shape == (2,) and ((0 <= v) & (v <= 1)).all()
    assert set(res["results"]) == {"lstm", "elman-one-step"}
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
    res = temporal_order.main(["--smoke", "--out", str(tmp_path)])
    r = res["results"]["lstm"]
    assert (np.asarray(r["train_loss"]["last"]) < np.asarray(r["train_loss"]["first"])).all()
    acc, paper = np.asarray(r["acc"]), np.asarray(r["paper_acc"])
    assert ((0 <= paper) & (paper <= acc)).all()  # all outputs within 0.3 implies the argmax is right
    _files(tmp_path, "temporal_order.png")


@slow
def test_elman1990_smoke(tmp_path):
    res = elman1990.main(["--smoke", "--out", str(tmp_path)])
    # letters: even after 40 passes the vowels, which the consonant determines, are predicted
    # far better than the consonants, which are random
    assert (np.asarray(res["letters"]["consonant_over_vowel"]) > 1.5).all()
    rms = np.asarray(res["xor"]["rms_by_phase"])
    assert rms.shape == (2, 3) and (rms > 0).all()
    loss = res["letters_train_loss"]
    assert (np.asarray(loss["last"]) < np.asarray(loss["first"])).all()
    _files(tmp_path, "elman1990.png")


@slow
def test_exploding_smoke(tmp_path):
    res = exploding.main(["--smoke", "--out", str(tmp_path)])
    cfg, curves = res["config"], res["curves"]
    clipped, unclipped = curves["clipped"], curves["unclipped"]
    # clipping keeps the applied gradient norm at or below the threshold, at every step ...
    applied = clipped["applied_norm"]
    assert np.isfinite(applied).all() and applied.max() <= cfg["clip"] * (1 + 1e-5)
    # ... although the raw gradients explode
    assert clipped["grad_norm"].max() > 100 * cfg["clip"]
    # unclipped, the same gradients are applied as they are
    np.testing.assert_allclose(unclipped["applied_norm"][:5], unclipped["grad_norm"][:5], rtol=1e-5)
    # the clipped run converges, the unclipped one blows up
    assert np.isfinite(clipped["loss"]).all()
    assert (np.asarray(clipped["loss_last_10pct"]) < 0.5 * np.asarray(clipped["loss_first_10pct"])).all()
    assert max(np.nanmax(np.where(np.isfinite(unclipped["loss"]), unclipped["loss"], np.inf), 0)) > 1e6
    _files(tmp_path, "exploding.png")


@slow
def test_vanishing_smoke(tmp_path):
    res = vanishing.main(["--smoke", "--out", str(tmp_path)])
    elman = res["stats"]["elman"]
    for when in ("init", "trained"):
        assert elman[when]["per_step_factor"] < 0.95  # Elman's gradient shrinks with distance
        med = np.asarray(elman[when]["median_by_distance"])
        assert med.shape == (12,) and med[-1] < med[0]
    assert np.isfinite(res["stats"]["lstm"]["trained"]["ratio_far_near"])
    _files(tmp_path, "vanishing.png")


@slow
def test_lstm_variants_smoke(tmp_path):
    """The user-written no-forget-gate LSTM plugs into the same training code as built-ins."""
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
