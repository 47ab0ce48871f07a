"""The copy (memory) task: reproduce 10 symbols after T blank steps.

Run:  python experiments/copy_task.py            (9 min on 2 CPU cores)
      python experiments/copy_task.py --smoke    (seconds)

Task (Arjovsky, Shah & Bengio 2016): the input is 10 symbols drawn from 8, T - 1 blanks, a
marker, then 10 blanks; the target is T + 10 blanks followed by the 10 symbols. A network
without memory can at best output blanks and then guess uniformly: cross-entropy per step
10 ln 8 / (T + 20). We report each cell's test cross-entropy relative to that baseline
(1.0 = memoryless, 0 = perfect recall) and the accuracy on the 10 recalled symbols.

Scaled down for a 2-core CPU: T ∈ {20, 100} (the paper: 100 to 500), hidden size 64, batch 32,
4000 Adam steps (lr 3e-3, clipped to global norm 1), 2 seeds (the claim here is a comparison
of cross-entropies, not a success rate).

Measured (full run, 9 min wall): CE / baseline after 4000 steps, T = 20 / T = 100: GRU
0.50 / 0.63, peephole LSTM 0.57 / 0.82, CIFG 0.63 / 0.83, LSTM 0.73 / 0.99, Elman 1.007 /
1.003, dampened unit 1.001 / 1.003. Every gated cell except the LSTM at T = 100 gets below the
memoryless baseline and recalls 27–58% of the symbols (chance 12.5%); the Elman net and the
dampened unit never do. Details: EXPERIMENTS.md, "Long-term memory".
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

CONFIG = dict(cells=("elman", "lstm", "gru", "peephole", "cifg", "dampened"), lengths=(20, 100),
              hidden=64, batch=32, lr=3e-3, clip=1.0, steps=4000, eval_every=200, seeds=2,
              test_size=500)
SMOKE = dict(CONFIG, cells=("lstm",), lengths=(5,), hidden=16, batch=16, lr=1e-2, steps=60,
             eval_every=30, seeds=2, test_size=128)
TEST_KEY = 20_000


def make_data(key, num_blanks: int, batch: int):
    """``xs [T+20, B, 10]`` one-hot inputs, ``ys [T+20, B]`` target symbol ids."""
    ids, ys = mt.copy_batch(key, num_blanks, batch)
    return jax.nn.one_hot(ids, mt.COPY_SYMBOLS), ys


def make_model(cell_name: str, hidden: int):
    """``(init, logits)``: the cell over the sequence, a linear readout at every step."""
    init, apply = mt.make_model(mt.CELLS[cell_name](mt.COPY_SYMBOLS, hidden), hidden, mt.COPY_SYMBOLS)
    return init, lambda params, xs: apply(params, xs)[0]  # [T+20, B, 10]


def loss_fn(logits_fn, num_blanks, batch, params, _, key):
    xs, ys = make_data(key, num_blanks, batch)
    return rj.sequence_cross_entropy(logits_fn(params, xs), ys)


def evaluate(logits_fn, test, params):
    xs, ys = test
    logits = logits_fn(params, xs)
    recall = jnp.argmax(logits[-mt.COPY_LENGTH:], -1) == ys[-mt.COPY_LENGTH:]  # [10, B]
    return {"ce": rj.sequence_cross_entropy(logits, ys), "recall_acc": jnp.mean(recall)}


def train(cell_name: str, num_blanks: int, cfg: dict, seed: int, out=None) -> dict:
    init, logits_fn = make_model(cell_name, cfg["hidden"])
    test = make_data(jax.random.key(TEST_KEY + num_blanks), num_blanks, cfg["test_size"])
    optimizer = rj.make_optimizer(cfg["lr"], clip="global_norm", threshold=cfg["clip"])
    result = mt.train_seeds(
        init, partial(loss_fn, logits_fn, num_blanks, cfg["batch"]), optimizer,
        seeds=range(seed, seed + cfg["seeds"]), steps=cfg["steps"],
        eval_fn=partial(evaluate, logits_fn, test), eval_every=cfg["eval_every"],
        desc=f"{cell_name} T={num_blanks}")
    if out is not None:
        mt.save_checkpoint(out, f"{cell_name}_T{num_blanks}", result.states, result.steps[-1])
    baseline = mt.copy_baseline(num_blanks)
    ce = result.evals["ce"]  # [E, S]
    return {
        "final_ce": ce[-1],
        "relative_ce": ce[-1] / baseline,
        "recall_acc": result.evals["recall_acc"][-1],
        "curve": {"step": result.steps, "relative_ce": ce / baseline},
        "train_loss": {"first": result.loss[:10].mean(0), "last": result.loss[-10:].mean(0)},
    }


def plot(results: dict, cfg: dict, path) -> None:
    common.plot_length_panels(results, cfg["cells"], cfg["lengths"], "relative_ce", path, task="copy task",
                              ylabel="test cross-entropy / (10 ln 8 / (T+20))",
                              lines=[(1.0, "--", "memoryless baseline")])


def main(argv=None) -> dict:
    args = common.base_parser(__doc__.splitlines()[0]).parse_args(argv)
    cfg = SMOKE if args.smoke else CONFIG
    out = common.run_dir("copy_task", args.out)
    start = time.time()
    results = {cell: {} for cell in cfg["cells"]}
    for T in cfg["lengths"]:
        for cell in cfg["cells"]:
            results[cell][str(T)] = train(cell, T, cfg, args.seed, out)
    rows = []
    for cell in cfg["cells"]:
        row = [cell]
        for T in cfg["lengths"]:
            r = results[cell][str(T)]
            row += [float(np.mean(r["relative_ce"])), float(np.mean(r["recall_acc"]))]
        rows.append(row)
    headers = ["cell"] + [h for T in cfg["lengths"] for h in (f"T={T}: CE / baseline", f"T={T}: recall acc")]
    common.print_table(rows, headers, title=f"Copy task: test cross-entropy relative to the memoryless "
                       f"baseline 10 ln 8 / (T+20), mean of {cfg['seeds']} seeds (recall acc: chance 1/8)")
    plot(results, cfg, out / "copy_curves.png")
    summary = {"config": cfg, "seed": args.seed,
               "baseline_ce": {str(T): mt.copy_baseline(T) for T in cfg["lengths"]},
               "results": results, "table": {"headers": headers, "rows": rows}, "wall_s": time.time() - start}
    common.write_summary(out, summary, "copy_curves.png")
    return summary


if __name__ == "__main__":
    main()
