"""The adding problem: which cells can carry two numbers across T steps?

Run:  python experiments/adding.py            (full grid: 5 CPU-minutes, 21 min on a busy 2-core machine)
      python experiments/adding.py --smoke    (seconds)

Task (Arjovsky, Shah & Bengio 2016): two input channels, values drawn from U[0, 1] and a marker
that is 1 at one position in the first half and one in the second half; after T steps the
network outputs the sum of the two marked values. Always answering 1 scores MSE 1/6 ≈ 0.167;
a run *succeeds* when its test MSE (1000 fresh sequences) falls below 0.01.

Cells: Elman (tanh), LSTM, GRU, peephole LSTM, CIFG and the one-line "dampened" unit
``a' = σ(x w + λ a + b)``, each with a linear readout of its last output, trained with Adam and
gradients clipped to global norm 1 (``rnnjax.make_optimizer``). Scaled down for a 2-core CPU:
hidden size 32 (the paper: 128), batch 32, at most 1500 steps for each T ∈ {50, 100, 200}
(the paper: T up to 750 and far longer training), 3 seeds, stopping early once every seed has
succeeded.

Measured (full run, 21 min wall / 4.7 min CPU on a loaded 2-core machine): LSTM, GRU, peephole
LSTM and CIFG solved every T in 3/3 seeds (final MSE 0.002–0.008; at T = 200 GRU and CIFG took
400 steps, LSTM and peephole 1200–1400); Elman (0.18–0.20) and the dampened unit (0.17–0.19)
stayed at the baseline in every seed. Details: EXPERIMENTS.md, "Long-term memory".
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
from experiments import common
from experiments import memory_tasks as mt

CONFIG = dict(cells=("elman", "lstm", "gru", "peephole", "cifg", "dampened"), lengths=(50, 100, 200),
              hidden=32, batch=32, lr=1e-2, clip=1.0, steps=1500, eval_every=100, seeds=3,
              test_size=1000)
# smoke: T = 20 is short enough for the LSTM to solve in ~200 steps and long enough that Elman
# stays at the baseline (at T = 8 both learn part of the task)
SMOKE = dict(CONFIG, cells=("elman", "lstm"), lengths=(20,), hidden=16, batch=32, lr=2e-2, steps=225,
             eval_every=75, seeds=2, test_size=256)
SUCCESS_MSE = 0.01
TEST_KEY = 10_000  # the test set is drawn from key(TEST_KEY + T), apart from every training key


def make_data(key, num_steps: int, batch: int):
    """``xs [T, B, 2]`` (value, marker), ``ys [B]`` (the sum of the two marked values)."""
    return mt.adding_batch(key, num_steps, batch)


def make_cell(cell_name: str, hidden: int) -> rj.Cell:
    return mt.CELLS[cell_name](2, hidden)


def make_model(cell: rj.Cell, hidden: int):
    """``(init, predict)``: the cell over the sequence, a linear readout of its last output."""
    init, apply = mt.make_model(cell, hidden, 1)

    def predict(params, xs):
        outputs, _ = apply(params, xs)  # [T, B, 1]
        return outputs[-1, :, 0]  # [B]

    return init, predict


def loss_fn(predict, num_steps, batch, params, _, key):
    """MSE on a fresh batch drawn from the step's key (``make_train_step``'s loss signature)."""
    xs, ys = make_data(key, num_steps, batch)
    return jnp.mean((predict(params, xs) - ys) ** 2)


def evaluate(predict, test, params):
    xs, ys = test
    return {"mse": jnp.mean((predict(params, xs) - ys) ** 2)}


def train(name: str, cell: rj.Cell, num_steps: int, cfg: dict, seed: int, out=None) -> dict:
    """Train ``cfg["seeds"]`` seeds of one cell at one T; returns its results."""
    init, predict = make_model(cell, cfg["hidden"])
    test = make_data(jax.random.key(TEST_KEY + num_steps), num_steps, cfg["test_size"])
    optimizer = rj.make_optimizer(cfg["lr"], clip="global_norm", threshold=cfg["clip"])
    result = mt.train_seeds(
        init, partial(loss_fn, predict, num_steps, cfg["batch"]), optimizer,
        seeds=range(seed, seed + cfg["seeds"]), steps=cfg["steps"],
        eval_fn=partial(evaluate, predict, test), eval_every=cfg["eval_every"],
        stop=lambda e: bool(np.all(e["mse"] < SUCCESS_MSE)), desc=f"{name} T={num_steps}")
    mse = result.evals["mse"]  # [E, S]
    if out is not None:
        mt.save_checkpoint(out, f"{name}_T{num_steps}", result.states, result.steps[-1])
    return {
        "final_mse": mse[-1],
        "success": mse[-1] < SUCCESS_MSE,
        "steps_to_success": mt.first_step_below(result.steps, mse, SUCCESS_MSE),
        "steps_trained": int(result.steps[-1]),
        "curve": {"step": result.steps, "mse": mse},
        "skipped_steps": result.skipped,
    }


def plot(results: dict, cfg: dict, path) -> None:
    """Test MSE against training step, one panel per T, mean over seeds with the min–max band."""
    common.plot_length_panels(results, cfg["cells"], cfg["lengths"], "mse", path, task="adding problem",
                              ylabel="test MSE", lines=[(mt.ADDING_BASELINE, "--", "predict 1 (1/6)"),
                                                        (SUCCESS_MSE, ":", "success (0.01)")])


def main(argv=None) -> dict:
    parser = common.base_parser(__doc__.splitlines()[0])
    args = parser.parse_args(argv)
    cfg = SMOKE if args.smoke else CONFIG
    out = common.run_dir("adding", args.out)
    start = time.time()
    results = {cell: {} for cell in cfg["cells"]}
    for T in cfg["lengths"]:
        for cell in cfg["cells"]:
            results[cell][str(T)] = train(cell, make_cell(cell, cfg["hidden"]), T, cfg, args.seed, out)
    rows = []
    for cell in cfg["cells"]:
        row = [cell]
        for T in cfg["lengths"]:
            r = results[cell][str(T)]
            row.append(f"{np.mean(r['final_mse']):.4f} ({int(np.sum(r['success']))}/{cfg['seeds']})")
        rows.append(row)
    headers = ["cell"] + [f"T={T}: MSE (solved)" for T in cfg["lengths"]]
    common.print_table(rows, headers, title=f"Adding problem: mean final test MSE over {cfg['seeds']} "
                       f"seeds (baseline 1/6 = 0.167; solved = MSE < {SUCCESS_MSE})")
    plot(results, cfg, out / "adding_curves.png")
    summary = {"config": cfg, "seed": args.seed, "baseline_mse": mt.ADDING_BASELINE,
               "success_mse": SUCCESS_MSE, "results": results, "table": {"headers": headers, "rows": rows},
               "wall_s": time.time() - start}
    common.write_summary(out, summary, "adding_curves.png")
    return summary


if __name__ == "__main__":
    main()
