"""Next-frame prediction of moving digits: ConvLSTM and ConvGRU against a per-pixel LSTM and
copying the last frame (the task of Shi et al. 2015 and Srivastava et al.'s Moving MNIST, small).

Run:  python experiments/moving_digits.py            (full run)
      python experiments/moving_digits.py --smoke    (seconds)

Data, generated (no download): scikit-learn's 8×8 handwritten digits (``load_digits``, 1797
images, intensities scaled to [0, 1]) moving in a 16×16 frame, one digit per sequence, starting
at a random position and moving one pixel per frame along each axis (a random diagonal), bouncing
off the walls, 8 frames a sequence. Digits 0–1399 of the shuffled set make the training
sequences (a fresh batch of 8 every step, 400 steps, learning rate 5e-3), the other 397 the 128
fixed test sequences.

Models read frames ``1..t`` and predict frame ``t + 1`` (teacher-forced), every output through
a 1×1 readout and a sigmoid, trained on the MSE with Adam and global-norm clipping at 1:

* ConvLSTM / ConvGRU: one layer, 8 channels, 3×3 kernels (``conv_lstm(1, 8, (3, 3))``; the
  digit moves one pixel a frame, so a 3×3 neighbourhood sees where it comes from);
* per-pixel LSTM: an LSTM with 8 units run at every pixel separately (the spatial axes as
  batch axes: it sees each pixel's own history only, not its neighbours);
* copy: frame ``t`` as the prediction of frame ``t + 1``.

Reported: test MSE per pixel over the predictions of frames 3..T (each made after seeing at
least two frames, enough to know the direction of motion), and a figure of predicted frames.
Shi et al. report ConvLSTM beating the fully connected LSTM on Moving MNIST; here the question
is whether the convolutional cells learn the motion (beat copying the last frame, which the
per-pixel LSTM cannot do much better than). Measured (full run, 87 s wall): test MSE ConvLSTM
0.0196, ConvGRU 0.0199, per-pixel LSTM 0.0400, copying the last frame 0.0555, an empty frame
0.0587; the figure (``experiments/figures/cells_moving_digits.png``) shows the convolutional
cells moving a blurred digit along its path. Details: EXPERIMENTS.md.
"""

from __future__ import annotations

import pathlib
import shutil
import sys
import time
from functools import partial

if __package__ in (None, ""):  # run as a script: make the `experiments` package importable
    sys.path.insert(0, str(pathlib.Path(__file__).resolve().parents[1]))

import jax
import jax.numpy as jnp
import numpy as np

import rnnjax as rj
from experiments import common
from rnnjax.conv_cells import conv_gru, conv_lstm

FRAME, DIGIT = 16, 8
CONFIG = dict(models=("conv_lstm", "conv_gru", "pixel_lstm"), frames=8, hidden=8, kernel=3, batch=8,
              steps=400, lr=5e-3, clip=1.0, eval_every=100, test_size=128)
SMOKE = dict(CONFIG, frames=6, hidden=4, kernel=3, batch=4, steps=40, eval_every=20, test_size=16)
CONTEXT = 2  # frames seen before a prediction counts in the reported MSE
TRAIN_DIGITS = 1400
FIGURE = "cells_moving_digits.png"


def load_digit_images(seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """scikit-learn's digits as float32 ``[N, 8, 8]`` in [0, 1], shuffled once: (train, test)."""
    from sklearn.datasets import load_digits

    images = load_digits().images.astype(np.float32) / 16.0
    images = images[np.random.default_rng(seed).permutation(len(images))]
    return images[:TRAIN_DIGITS], images[TRAIN_DIGITS:]


def moving_sequences(images: np.ndarray, rng: np.random.Generator, batch: int, frames: int) -> np.ndarray:
    """``[frames, batch, 16, 16, 1]``: a random digit per sequence, moving diagonally one pixel per
    frame from a random start and bouncing off the walls."""
    span = FRAME - DIGIT  # positions 0..span
    out = np.zeros((frames, batch, FRAME, FRAME, 1), np.float32)
    picks = rng.integers(0, len(images), batch)
    pos = rng.integers(0, span + 1, (batch, 2))
    vel = rng.choice([-1, 1], (batch, 2))
    for t in range(frames):
        for b in range(batch):
            r, c = pos[b]
            out[t, b, r:r + DIGIT, c:c + DIGIT, 0] = images[picks[b]]
        nxt = pos + vel
        bounce = (nxt < 0) | (nxt > span)
        vel = np.where(bounce, -vel, vel)
        pos = pos + vel
    return out


def make_model(name: str, cfg: dict):
    """``(init, predict)``: ``predict(params, frames [T, B, 16, 16, 1]) -> [T, B, 16, 16, 1]``,
    the prediction of frame ``t + 1`` at position ``t``."""
    k, hidden = cfg["kernel"], cfg["hidden"]
    cell = {"conv_lstm": lambda: conv_lstm(1, hidden, (k, k)), "conv_gru": lambda: conv_gru(1, hidden, (k, k)),
            "pixel_lstm": lambda: rj.lstm(1, hidden)}[name]()

    def init(key):
        k1, k2 = jax.random.split(key)
        return {"cell": cell.init(k1), "out": rj.dense_init(k2, hidden, 1)}

    def predict(params, frames):
        # the conv cells' carry is [B, 16, 16, H]; the per-pixel LSTM's too, with (B, 16, 16) as batch
        _, hs = rj.scan(cell.step, params["cell"], cell.initial_carry(frames.shape[1:-1]), frames)
        return jax.nn.sigmoid(rj.dense(params["out"], hs))

    return init, predict


def scored_mse(pred: jax.Array, frames: jax.Array) -> jax.Array:
    """MSE per pixel of ``pred[t]`` against ``frames[t + 1]`` over ``t >= CONTEXT - 1``."""
    return jnp.mean((pred[CONTEXT - 1:-1] - frames[CONTEXT:]) ** 2)


def loss_fn(predict, params, batch, key):
    pred = predict(params, batch)
    return jnp.mean((pred[:-1] - batch[1:]) ** 2)


def train(name: str, cfg: dict, train_images, test, seed: int) -> dict:
    init, predict = make_model(name, cfg)
    optimizer = rj.make_optimizer(cfg["lr"], clip="global_norm", threshold=cfg["clip"])
    state = rj.init_train_state(init(jax.random.key(seed)), optimizer, jax.random.key(seed + 1))
    step = rj.make_train_step(partial(loss_fn, predict), optimizer)
    evaluate = jax.jit(lambda p: scored_mse(predict(p, test), test))

    def data(i):  # batch i is a function of i
        return moving_sequences(train_images, np.random.default_rng([seed, i]), cfg["batch"], cfg["frames"])

    curve = {"step": [0], "test_mse": [float(evaluate(state.params))], "train_loss": []}

    def every_step(i, state, metrics):
        curve["train_loss"].append(float(metrics["loss"]))
        if i % cfg["eval_every"] == 0:
            curve["step"].append(i)
            curve["test_mse"].append(float(evaluate(state.params)))

    t0 = time.time()
    state = rj.fit(step, state, data, cfg["steps"], callback=every_step, progress=False)
    params = state.params
    n_params = sum(int(np.prod(a.shape)) for a in jax.tree_util.tree_leaves(params))
    return {"test_mse": curve["test_mse"][-1], "curve": curve, "params": n_params,
            "seconds": time.time() - t0, "skipped_steps": int(state.skipped),
            "example": np.asarray(jax.jit(predict)(params, test[:, :1]))[:, 0, :, :, 0]}


def plot(test: np.ndarray, examples: dict, path: pathlib.Path) -> None:
    """One test sequence: the true frames, then each model's prediction of every next frame."""
    frames = test.shape[0]
    rows = ["truth"] + list(examples)
    fig, axes = common.subplots(len(rows), frames - 1, figsize=(1.1 * (frames - 1), 1.2 * len(rows)))
    for j in range(1, frames):
        for i, row in enumerate(rows):
            img = test[j, 0, :, :, 0] if row == "truth" else examples[row][j - 1]
            ax = axes[i, j - 1]
            ax.imshow(img, cmap="gray", vmin=0, vmax=1)
            ax.set_xticks([])
            ax.set_yticks([])
            if j == 1:
                ax.set_ylabel(row, fontsize=7)
            if i == 0:
                ax.set_title(f"frame {j + 1}", fontsize=7)
    common.save_figure(fig, path, dpi=110, tight=True)


def main(argv=None) -> dict:
    parser = common.base_parser(__doc__.splitlines()[0])
    args = parser.parse_args(argv)
    cfg = SMOKE if args.smoke else CONFIG
    out = common.run_dir("moving_digits", args.out)
    start = time.time()
    train_images, test_images = load_digit_images(args.seed)
    test = jnp.asarray(moving_sequences(test_images, np.random.default_rng([10_000 + args.seed]),
                                        cfg["test_size"], cfg["frames"]))
    results = {name: train(name, cfg, train_images, test, args.seed) for name in cfg["models"]}
    copy = np.asarray(test)  # frame t as the prediction of frame t + 1
    copy_mse = float(scored_mse(test, test))
    zero_mse = float(scored_mse(jnp.zeros_like(test), test))  # an empty frame
    rows = [[name, r["params"], f"{r['test_mse']:.4f}", f"{r['test_mse'] / copy_mse:.2f}", f"{r['seconds']:.0f}"]
            for name, r in results.items()]
    rows += [["copy last frame", 0, f"{copy_mse:.4f}", "1.00", ""], ["empty frame", 0, f"{zero_mse:.4f}",
                                                                    f"{zero_mse / copy_mse:.2f}", ""]]
    headers = ["model", "params", "test MSE", "vs copy", "seconds"]
    common.print_table(rows, headers, title=f"Next-frame prediction, moving digits {FRAME}x{FRAME}, "
                       f"{cfg['frames']} frames ({cfg['steps']} training steps, MSE per pixel over frames "
                       f"{CONTEXT + 1}..{cfg['frames']})")
    examples = {name: r.pop("example") for name, r in results.items()}
    examples["copy last frame"] = copy[:, 0, :, :, 0]
    plot(np.asarray(test), examples, out / FIGURE)
    summary = {"config": cfg, "seed": args.seed, "smoke": args.smoke, "results": results, "copy_mse": copy_mse,
               "zero_mse": zero_mse, "table": {"headers": headers, "rows": rows}, "wall_s": time.time() - start}
    common.write_summary(out, summary, FIGURE)
    if not args.smoke and args.out is None:
        shutil.copy(out / FIGURE, common.ROOT / "experiments" / "figures" / FIGURE)
    return summary


if __name__ == "__main__":
    main()
