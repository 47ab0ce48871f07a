"""Smoke run of the minGRU/minLSTM vs GRU/LSTM experiment (experiments/min_rnn.py).

The smoke run trains minGRU only (the other cells go through the same code with ``rj.scan``,
as in the adding and char_lm smoke tests): 15-25 s, nearly all of it XLA compilation, so the
two tests that read it are marked slow like the other experiments' smoke runs.

The full run's comparison (min cells as reliable as GRU on the adding problem, behind it on the
character model) cannot be shown at smoke size: T = 10 and 100 steps do not separate the cells,
and 12,000 characters are too few for a language model to pass the n-grams. The smoke run is
held to the tasks' baselines instead: test MSE under half of the 1/6 of always answering 1, and
validation bits per character below the unigram's.
"""

import json

import jax
import numpy as np
import pytest

import rnnjax as rj
from experiments import char_lm, min_rnn
from experiments import memory_tasks as mt
from experiments.text_data import python_reference_text

slow = pytest.mark.slow


@pytest.fixture(scope="module")
def run(tmp_path_factory):
    out = tmp_path_factory.mktemp("min_rnn")
    return out, min_rnn.main(["--smoke", "--cells", "min_gru", "--out", str(out)])


@slow
def test_smoke_learns_both_tasks_in_parallel_mode(run):
    out, r = run
    a = r["adding"]["results"]["min_gru"]["10"]
    mse = np.asarray(a["curve"]["mse"])  # [evals, seeds]
    assert mse.shape == (5, 2)
    assert (mse[-1] < mse[0]).all()  # the test MSE falls
    assert (mse[-1] < 0.5 * mt.ADDING_BASELINE).all()  # far below "always predict 1"
    assert np.asarray(a["skipped_steps"]).sum() == 0

    c = r["char"]["results"]["min_gru"]
    bits = np.asarray(c["train_bits"])
    assert len(bits) == min_rnn.SMOKE["char"]["steps"]
    assert bits[:5].mean() > bits[-5:].mean() + 0.5  # the loss falls
    assert np.isfinite(c["val_bpc"]) and c["val_bpc"] < r["char"]["baselines_bpc"]["unigram"]
    assert c["step_ms"] > 0 and c["skipped_steps"] == 0


@slow
def test_results_file_and_plots(run):
    out, r = run
    saved = json.loads((out / "results.json").read_text())
    assert saved["char"]["results"]["min_gru"]["val_bpc"] == pytest.approx(r["char"]["results"]["min_gru"]["val_bpc"])
    assert saved["config"]["cells"] == ["min_gru"] and saved["smoke"] is True
    # minGRU 2×16 on 2 inputs: layer 1 w [2, 32] + b [32], layer 2 w [16, 32] + b [32], readout 16 + 1
    assert saved["adding"]["params"]["min_gru"] == 2 * 32 + 32 + 16 * 32 + 32 + 16 + 1
    for name in ("min_rnn_adding.png", "min_rnn_char.png"):
        assert (out / name).stat().st_size > 0


@pytest.mark.parametrize("name", min_rnn.MIN_CELLS)
def test_parallel_training_loss_equals_sequential(name):
    """The parallel-mode model is the rj.scan model: the same training loss and outgoing carry on
    the same params, for two layers with a carry coming in from a previous chunk."""
    cfg = min_rnn.SMOKE["char"]
    vocab, _, _, stream = char_lm.make_data(python_reference_text()[:3000], 4, 16)
    (lm, par_model), (_, seq_model) = (min_rnn.make_char_model(name, cfg, vocab.size, parallel=p)
                                       for p in (True, False))
    params = lm.init(jax.random.key(5))
    key = jax.random.key(4)
    carry = tuple(0.3 * jax.random.uniform(k, c.shape) for k, c in
                  zip(jax.random.split(key, 2), lm.initial_carry((4,)), strict=True))
    batch = dict(rj.chunk_stream(stream, 16)(1), reset=np.zeros(16, bool))
    (bits_p, carry_p), (bits_s, carry_s) = (jax.jit(char_lm.make_loss_fn(m))(params, carry, batch, key)
                                            for m in (par_model, seq_model))
    assert 4.0 < float(bits_s) < 9.0  # an untrained model's loss, not a degenerate value
    assert float(bits_p) == pytest.approx(float(bits_s), abs=1e-5)
    for a, b in zip(carry_p, carry_s, strict=True):
        np.testing.assert_allclose(a, b, atol=1e-5)


def test_bad_cells_named_in_the_error(tmp_path):
    with pytest.raises(ValueError, match="--cells: expected a comma-separated subset of min_gru"):
        min_rnn.main(["--smoke", "--cells", "min_gru,rwkv", "--out", str(tmp_path)])
