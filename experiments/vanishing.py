"""Vanishing gradients, seen: ‖∂L/∂h_t‖ against the distance from h_t to the loss.

Run:  python experiments/vanishing.py            (about 1 CPU-minute, 2.5 min on a busy 2-core machine)
      python experiments/vanishing.py --smoke    (seconds)

On the adding problem with T = 100 (the loss sits on the last output), ``rnnjax.gradient_flow``
gives the norm of the gradient of the loss with respect to the carry entering every step (for
the LSTM both h and c), for 64 test sequences. We look at Elman, LSTM and GRU networks at
initialisation and after training (hidden size 32, Adam lr 1e-2 clipped to norm 1, batch 32,
up to 1500 steps, stopping once the test MSE is below 0.01). Bengio et al. (1994) and
Hochreiter (1991) predict that Elman's gradient decays geometrically with the distance; the
LSTM's cell state is built to carry it undiminished (the constant error carousel).

The table gives, per cell, the median norm at the largest distance (T - 1 steps) divided by
the norm at distance 0, and the mean decay factor per step (a log-linear fit).

Measured (full run, 2.4 min wall / 0.6 min CPU): far/near ratio and per-step factor — Elman
2.3e-4 (0.92) at init, 1.7e-13 (0.74) trained; LSTM 2.8e-3 (0.95) at init, 1.15 (0.9997)
trained; GRU 5.4e-14 (0.74) at init, 0.24 (0.99) trained. Details: EXPERIMENTS.md, "Long-term
memory".
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

import rnnjax as rj
from experiments import adding, common
from experiments import memory_tasks as mt

CONFIG = dict(cells=("elman", "lstm", "gru"), length=100, hidden=32, batch=32, lr=1e-2, clip=1.0,
              steps=1500, eval_every=100, probe=64, test_size=1000)
SMOKE = dict(CONFIG, cells=("elman", "lstm"), length=12, hidden=8, batch=16, lr=3e-2, steps=40,
             eval_every=40, probe=8, test_size=128)


def make_data(key, num_steps: int, batch: int):
    return adding.make_data(key, num_steps, batch)


def make_model(cell_name: str, hidden: int):
    cell = adding.make_cell(cell_name, hidden)
    init, predict = adding.make_model(cell, hidden)
    return cell, init, predict


def gradient_norms(cell: rj.Cell):
    """``norms(params, xs, ys) -> [T, B]``: ``‖∂L/∂h_{t-1}‖`` for every step t and sequence,
    L the MSE of the readout of the last output (jitted once per cell, used before and after
    training)."""

    def norms(params, xs, ys):
        def loss_fn(outputs, _):  # outputs [T, B, H]: the last one is read out
            return jnp.mean((rj.dense(params.head, outputs[-1])[:, 0] - ys) ** 2)

        carry = cell.initial_carry((xs.shape[1],))
        return rj.gradient_flow(cell.step, params.rnn, carry, xs, loss_fn)

    return jax.jit(norms)


def decay_stats(norms: np.ndarray) -> dict:
    """Ratio of the median norm at the largest distance to that at distance 0; per-step factor."""
    med = np.median(norms, axis=1)[::-1]  # index = distance to the loss
    dist = np.arange(med.size)
    ok = med > 0
    slope = np.polyfit(dist[ok], np.log(med[ok]), 1)[0] if ok.sum() > 1 else float("nan")
    return {"ratio_far_near": float(med[-1] / med[0]) if med[0] > 0 else float("nan"),
            "per_step_factor": float(np.exp(slope)), "median_by_distance": med}


def train(cell_name: str, cfg: dict, seed: int):
    cell, init, predict = make_model(cell_name, cfg["hidden"])
    T = cfg["length"]
    test = make_data(jax.random.key(adding.TEST_KEY + T), T, cfg["test_size"])
    result = mt.train_seeds(
        init, partial(adding.loss_fn, predict, T, cfg["batch"]),
        rj.make_optimizer(cfg["lr"], threshold=cfg["clip"]), seeds=[seed], steps=cfg["steps"],
        eval_fn=partial(adding.evaluate, predict, test), eval_every=cfg["eval_every"],
        stop=lambda e: bool(np.all(e["mse"] < adding.SUCCESS_MSE)), desc=cell_name)
    params = jax.tree_util.tree_map(lambda x: x[0], result.states.params)
    return cell, init(jax.random.fold_in(jax.random.key(seed), 0)), params, result


def plot(curves: dict, T: int, path) -> None:
    fig, axes = common.subplots(1, 2, figsize=(10, 3.8), sharey=True, layout="constrained")
    for ax, when in zip(axes, ("init", "trained"), strict=True):
        for i, (cell, c) in enumerate(curves.items()):
            norms = c[when][::-1]  # [distance, B]
            med = np.median(norms, 1)
            dist = np.arange(norms.shape[0])
            ax.plot(dist, np.where(med > 0, med, np.nan), color=f"C{i}", label=cell)
            ax.fill_between(dist, np.maximum(norms.min(1), 1e-45), norms.max(1), color=f"C{i}", alpha=0.15, lw=0)
        ax.set_yscale("log")
        ax.set_title(f"{'at initialisation' if when == 'init' else 'after training'} (adding, T = {T})")
        ax.set_xlabel("distance from h_t to the loss (steps)")
        ax.grid(True, which="both", alpha=0.3)
        ax.legend(fontsize=8)
    axes[0].set_ylabel("‖∂L/∂h_t‖ (median, min–max band)")
    common.save_figure(fig, path, dpi=90)


def main(argv=None) -> dict:
    args = common.base_parser(__doc__.splitlines()[0]).parse_args(argv)
    cfg = SMOKE if args.smoke else CONFIG
    out = common.run_dir("vanishing", args.out)
    start = time.time()
    T = cfg["length"]
    xs, ys = make_data(jax.random.key(adding.TEST_KEY + 1), T, cfg["probe"])
    curves, stats, rows = {}, {}, []
    for name in cfg["cells"]:
        cell, params0, params, result = train(name, cfg, args.seed)
        mt.save_checkpoint(out, name, result.states, result.steps[-1])
        norms = gradient_norms(cell)
        curves[name] = {"init": np.asarray(norms(params0, xs, ys)), "trained": np.asarray(norms(params, xs, ys))}
        stats[name] = {when: decay_stats(curves[name][when]) for when in ("init", "trained")}
        stats[name]["test_mse"] = float(result.evals["mse"][-1, 0])
        stats[name]["steps_trained"] = int(result.steps[-1])
        for when in ("init", "trained"):
            s = stats[name][when]
            rows.append([name, when, s["ratio_far_near"], s["per_step_factor"],
                         stats[name]["test_mse"] if when == "trained" else "–"])
    headers = ["cell", "when", f"‖∂L/∂h‖ at distance {T - 1} / at 0", "decay factor per step", "test MSE"]
    common.print_table(rows, headers, title=f"Gradient flow on the adding problem, T = {T}")
    plot(curves, T, out / "vanishing.png")
    summary = {"config": cfg, "seed": args.seed, "stats": stats,
               "table": {"headers": headers, "rows": rows}, "wall_s": time.time() - start}
    common.write_summary(out, summary, "vanishing.png")
    return summary


if __name__ == "__main__":
    main()
