"""Exploding gradients and clipping: the same Elman network trained with and without
``optax.clip_by_global_norm``.

Run:  python experiments/exploding.py            (about 15 s on 2 CPU cores)
      python experiments/exploding.py --smoke    (seconds)

An Elman network (32 tanh units) whose recurrent matrix is 2 × an orthogonal matrix (spectral
radius 2: the chaotic regime, where ‖∂h_T/∂h_t‖ grows geometrically; Pascanu, Mikolov & Bengio
2013) is trained by plain SGD (lr 0.1, batch 32) on the adding problem with T = 10, for 10,000
steps, 3 seeds, once without clipping and once with the global gradient norm clipped to 1
before the SGD step. ``rnnjax.make_train_step`` reports the gradient norm before clipping and
skips (and counts) steps whose loss or gradients are not finite; a small optax transformation
placed after the clipping records the norm of the gradient actually applied. The final
parameters are scored on 1000 held-out sequences.

Expected: without clipping a few huge gradients throw the weights far away, the loss overflows
and from then on nearly every step is non-finite (skipped); with clipping the same network, the
same data and the same learning rate converge.

Measured (full run, 15 s wall): unclipped, the first non-finite step (loss or gradients) comes at 30–36 and
9964–9971 of 10,000 steps are non-finite; clipped, none are, the applied norm stays at most 1
(raw norms up to 27), the training loss falls from 0.14–0.16 (first 1000 steps) to 0.007–0.019
(last 1000) and the held-out MSE is 0.0035–0.019, against 1/6 for predicting the mean. The ranges
cover the three seeds under XLA:CPU's default instruction set, AVX2 and SSE4_2
(``XLA_FLAGS=--xla_cpu_max_isa=...``): the trajectories are chaotic, so rounding moves them.
Details: EXPERIMENTS.md, "Long-term memory".
"""

from __future__ import annotations

import pathlib
import sys
import time
from functools import partial

if __package__ in (None, ""):  # run as a script: make the `experiments` package importable
    sys.path.insert(0, str(pathlib.Path(__file__).resolve().parents[1]))

import jax
import jax.numpy as jnp
import numpy as np
import optax

import rnnjax as rj
from experiments import adding, common
from experiments import memory_tasks as mt

CONFIG = dict(length=10, hidden=32, radius=2.0, batch=32, lr=0.1, clip=1.0, steps=10_000, seeds=3,
              test_size=1000)
SMOKE = dict(CONFIG, steps=100, test_size=128)
TEST_KEY = 30_000  # the held-out test batch is drawn from key(TEST_KEY), apart from every training key


def make_data(key, num_steps: int, batch: int):
    return adding.make_data(key, num_steps, batch)


def make_model(cfg: dict):
    """Elman network with ``w_hh = radius × orthogonal`` and a linear readout of the last output."""
    orthogonal = jax.nn.initializers.orthogonal()

    def w_hh_init(key, shape, dtype=jnp.float32):
        return cfg["radius"] * orthogonal(key, shape, dtype)

    cell = rj.elman(2, cfg["hidden"], w_hh_init=w_hh_init)
    return adding.make_model(cell, cfg["hidden"])


def applied_norm() -> optax.GradientTransformation:
    """Identity on the updates; its state is the global norm of the updates it last saw."""
    return optax.GradientTransformation(lambda params: jnp.zeros(()),
                                        lambda updates, state, params=None: (updates, optax.tree.norm(updates)))


def make_optimizer(cfg: dict, clip: bool) -> optax.GradientTransformation:
    """SGD, with ``clip_by_global_norm`` first when ``clip``; the applied norm is recorded."""
    chain = [optax.clip_by_global_norm(cfg["clip"])] if clip else []
    return optax.chain(*chain, applied_norm(), optax.sgd(cfg["lr"]))


def train(cfg: dict, clip: bool, seed: int):
    init, predict = make_model(cfg)
    opt = make_optimizer(cfg, clip)
    index = 1 if clip else 0  # position of applied_norm's state in the chain
    test = make_data(jax.random.key(TEST_KEY), cfg["length"], cfg["test_size"])
    return mt.train_seeds(
        init, partial(adding.loss_fn, predict, cfg["length"], cfg["batch"]), opt,
        seeds=range(seed, seed + cfg["seeds"]), steps=cfg["steps"],
        eval_fn=partial(adding.evaluate, predict, test), eval_every=cfg["steps"],
        record=lambda state: {"applied_norm": state.opt_state[index], "skipped": state.skipped},
        desc="clipped" if clip else "unclipped")


def summarize(result, cfg: dict) -> dict:
    """Per-seed numbers of one run. A step is non-finite when its loss or its gradients are
    (``make_train_step`` skips it): the loss can stay finite (up to ~1e37) while the gradients
    overflow, so the first such step is read from the skip counter, not from the loss."""
    loss = np.where(np.isfinite(result.loss), result.loss, np.nan)
    n = max(cfg["steps"] // 10, 1)
    skipped = result.records["skipped"]  # [steps, seeds]: steps skipped so far, after each step
    return {
        "nonfinite_steps": result.skipped,
        "first_nonfinite_step": [int(np.argmax(skipped[:, s] > 0)) + 1 if skipped[-1, s] > 0 else None
                                 for s in range(skipped.shape[1])],
        "loss_first_10pct": np.nanmean(loss[:n], 0),
        "loss_last_10pct": np.nanmean(loss[-n:], 0) if np.isfinite(loss[-n:]).any() else np.full(loss.shape[1], np.inf),
        "test_mse": result.evals["mse"][-1],
        "grad_norm_median": np.median(result.grad_norm, 0),
        "grad_norm_max": np.max(result.grad_norm, 0),
        "applied_norm_max": np.max(np.where(np.isfinite(result.records["applied_norm"]),
                                            result.records["applied_norm"], np.inf), 0),
        "loss": result.loss, "grad_norm": result.grad_norm, "applied_norm": result.records["applied_norm"],
    }


def plot(runs: dict, cfg: dict, path) -> None:
    fig, axes = common.subplots(1, 2, figsize=(10, 3.8), layout="constrained")
    for i, (name, r) in enumerate(runs.items()):
        steps = np.arange(1, r["loss"].shape[0] + 1)
        for s in range(r["loss"].shape[1]):
            label = name if s == 0 else None
            gn = np.where(np.isfinite(r["grad_norm"][:, s]), r["grad_norm"][:, s], np.nan)
            axes[0].plot(steps, gn, color=f"C{i}", lw=0.6, alpha=0.7, label=label)
            loss = r["loss"][:, s]
            axes[1].plot(steps, np.where(np.isfinite(loss), loss, np.nan), color=f"C{i}", lw=0.6, alpha=0.7, label=label)
            bad = ~np.isfinite(loss)
            if bad.any():  # a rug along the top of the axes, one tick per non-finite step
                axes[1].plot(steps[bad], np.full(bad.sum(), 0.97 - 0.03 * s), "|", color=f"C{i}", ms=3,
                             transform=axes[1].get_xaxis_transform(),
                             label=f"{name}: non-finite (skipped)" if s == 0 else None)
    axes[0].axhline(cfg["clip"], color="k", ls=":", lw=0.8, label=f"clip threshold {cfg['clip']}")
    axes[0].set_ylabel("gradient norm before clipping")
    axes[1].axhline(mt.ADDING_BASELINE, color="k", ls="--", lw=0.8, label="predict 1 (1/6)")
    axes[1].set_ylabel("training loss (MSE)")
    for ax in axes:
        ax.set_yscale("log")
        ax.set_xscale("log")  # the divergence happens in the first few dozen steps
        ax.set_xlabel("SGD step")
        ax.grid(True, which="both", alpha=0.3)
        ax.legend(fontsize=8)
    fig.suptitle(f"Elman, spectral radius {cfg['radius']}, adding T = {cfg['length']}, SGD lr {cfg['lr']}")
    common.save_figure(fig, path, dpi=90)


def main(argv=None) -> dict:
    args = common.base_parser(__doc__.splitlines()[0]).parse_args(argv)
    cfg = SMOKE if args.smoke else CONFIG
    out = common.run_dir("exploding", args.out)
    start = time.time()
    runs = {}
    for name, clip in (("unclipped", False), ("clipped", True)):
        result = train(cfg, clip, args.seed)
        mt.save_checkpoint(out, name, result.states, cfg["steps"])
        runs[name] = summarize(result, cfg)
    rows = []
    for name, r in runs.items():
        for s in range(cfg["seeds"]):
            rows.append([name, args.seed + s, int(r["nonfinite_steps"][s]), r["first_nonfinite_step"][s] or "–",
                         float(r["grad_norm_median"][s]), float(r["grad_norm_max"][s]),
                         float(r["applied_norm_max"][s]), float(r["loss_first_10pct"][s]),
                         float(r["loss_last_10pct"][s]), float(r["test_mse"][s])])
    headers = ["run", "seed", "non-finite steps", "first", "grad norm median", "grad norm max",
               "applied norm max", "loss, first 10%", "loss, last 10%", "test MSE"]
    common.print_table(rows, headers, title=f"Exploding gradients: {cfg['steps']} SGD steps each "
                       f"(baseline MSE 1/6 = 0.167)")
    plot(runs, cfg, out / "exploding.png")
    summary = {"config": cfg, "seed": args.seed, "runs": {k: {kk: vv for kk, vv in v.items()
               if kk not in ("loss", "grad_norm", "applied_norm")} for k, v in runs.items()},
               "table": {"headers": headers, "rows": rows}, "wall_s": time.time() - start}
    common.write_summary(out, summary, "exploding.png")
    summary["curves"] = runs  # in memory only: per-step loss and norms
    return summary


if __name__ == "__main__":
    main()
