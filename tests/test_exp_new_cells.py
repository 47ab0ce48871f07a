"""The experiments of the new cells: moving digits (conv cells), layer normalisation, IndRNN at long T.

The data helpers and model builders are checked fast; each script's ``--smoke`` run (15-40 s of
CPU, mostly XLA compilation) is marked slow like the other experiments' smoke runs.
"""

import json

import jax
import numpy as np
import pytest

from experiments import indrnn_adding, layer_norm, moving_digits
from experiments import memory_tasks as mt

slow = pytest.mark.slow


# ------------------------------------------------------------------------------ fast checks


def test_moving_digits_move_one_pixel_diagonally_and_bounce():
    train, test = moving_digits.load_digit_images(0)
    assert train.shape == (moving_digits.TRAIN_DIGITS, 8, 8) and len(train) + len(test) == 1797
    assert 0 <= train.min() and train.max() <= 1
    frames = moving_digits.moving_sequences(test, np.random.default_rng(0), 8, 12)  # [T, B, 16, 16, 1]
    assert frames.shape == (12, 8, 16, 16, 1)
    mass = frames.sum(axis=(2, 3, 4))
    np.testing.assert_allclose(mass, mass[:1].repeat(12, 0), rtol=1e-5)  # the whole digit stays in frame
    # the digit's bounding box moves by exactly one pixel along each axis every frame
    for b in range(8):
        corners = []
        for t in range(12):
            rows, cols = np.nonzero(frames[t, b, :, :, 0] > 0)
            corners.append((rows.min(), cols.min()))
        steps = np.abs(np.diff(np.array(corners), axis=0))
        assert (steps == 1).all()


def test_moving_digits_models_predict_frames_in_range():
    cfg = moving_digits.SMOKE
    frames = moving_digits.moving_sequences(moving_digits.load_digit_images(0)[1], np.random.default_rng(1), 2, 4)
    for name in cfg["models"]:
        init, predict = moving_digits.make_model(name, cfg)
        pred = predict(init(jax.random.key(0)), frames)
        assert pred.shape == frames.shape and 0 <= float(pred.min()) and float(pred.max()) <= 1


def test_indrnn_adding_cell_uses_the_papers_bound_and_init():
    T = 1000
    cell = indrnn_adding.make_cell("indrnn", 8, T)
    p1, p2 = cell.init(jax.random.key(0))
    bound = 2 ** (1 / T)
    assert 0 <= float(p1.u.min()) and float(p2.u.min()) >= 2 ** (-1 / T) and float(p2.u.max()) <= bound
    assert float(np.abs(p2.w_ih).max()) <= indrnn_adding.INPUT_SCALE < float(np.abs(p1.w_ih).max())
    with pytest.raises(ValueError, match="cell: expected 'indrnn' or 'lstm'"):
        indrnn_adding.make_cell("gru", 8, T)


# ------------------------------------------------------------------------------ smoke runs


@pytest.fixture(scope="module")
def digits_run(tmp_path_factory):
    out = tmp_path_factory.mktemp("moving_digits")
    return out, moving_digits.main(["--smoke", "--out", str(out)])


@slow
def test_moving_digits_smoke(digits_run):
    out, r = digits_run
    cfg = moving_digits.SMOKE
    _, test_images = moving_digits.load_digit_images(0)
    test = moving_digits.moving_sequences(test_images, np.random.default_rng([10_000]), cfg["test_size"], cfg["frames"])
    c = moving_digits.CONTEXT
    assert r["copy_mse"] == pytest.approx(float(np.mean((test[c - 1:-1] - test[c:]) ** 2)), rel=1e-5)
    assert r["zero_mse"] == pytest.approx(float(np.mean(test[c:] ** 2)), rel=1e-5)
    for name in cfg["models"]:
        res = r["results"][name]
        assert len(res["curve"]["train_loss"]) == cfg["steps"] and res["skipped_steps"] == 0
        assert res["curve"]["test_mse"][-1] < res["curve"]["test_mse"][0]  # the test MSE falls
    saved = json.loads((out / "results.json").read_text())
    assert saved["copy_mse"] == pytest.approx(r["copy_mse"])
    assert (out / moving_digits.FIGURE).stat().st_size > 0


@slow
def test_layer_norm_smoke(tmp_path):
    r = layer_norm.main(["--smoke", "--out", str(tmp_path)])
    for name in layer_norm.CELLS:
        a = r["adding"][name]["20"]
        mse = np.asarray(a["curve"]["mse"])  # [evals, seeds]
        assert (mse[-1] < mse[0]).all() and (mse[-1] < 0.5 * mt.ADDING_BASELINE).all()
        (char,) = r["char"][name]
        assert char["val_bpc"][-1] < char["val_bpc"][0] and np.isfinite(char["val_bpc"]).all()
        assert len(char["train_bits"]) == layer_norm.SMOKE_CHAR["steps"]
    assert (tmp_path / "layer_norm.png").stat().st_size > 0


@slow
def test_indrnn_adding_smoke(tmp_path):
    r = indrnn_adding.main(["--smoke", "--out", str(tmp_path)])
    T = str(indrnn_adding.SMOKE["lengths"][0])
    mse = np.asarray(r["results"]["indrnn"][T]["curve"]["mse"])
    assert (mse[-1] < 0.8 * mt.ADDING_BASELINE).all()  # below "always answer 1"
    # two 16-unit IndRNN layers: w [2, 16] + u, b [16]; w [16, 16] + u, b [16]; readout 16 + 1
    assert r["params"]["indrnn"] == 2 * 16 + 32 + 16 * 16 + 32 + 17
    assert (tmp_path / "indrnn_adding.png").stat().st_size > 0
