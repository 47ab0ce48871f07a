"""Embedded Reber grammar: next-symbol prediction with one long-range dependency.

Run:  python experiments/reber.py            (about 3.5 min on 2 CPU cores)
      python experiments/reber.py --smoke    (seconds)

Task (Hochreiter & Schmidhuber 1997, experiment 1): strings ``B (T|P) <Reber string> (same T|P) E``
over 7 symbols, presented one symbol per step; at every step the network predicts the next
symbol. A run *succeeds* (the paper's criterion) when, for every string of both the 256
training and the 256 test strings, at every step the outputs of all legal next symbols are the
most active ones. Only the second-to-last symbol needs memory: it must repeat the T/P seen at
step 1, 6 to 24 steps earlier in these sets. As in the paper, a trial counts as a success when
it reaches the criterion (checked every 50 steps here), where the paper stopped training. The
paper: LSTM succeeded in 97–100% of trials; Elman nets trained by Elman's procedure ("ELM":
the previous hidden state is a constant extra input, so the error goes back one step only) in 0%.

Runs, each 10 seeds sharing one training and one test set: LSTM with 16 units (1655 weights
with the readout) and with 8 (575; the paper's LSTMs had about 270); Elman nets with 16 units
(503 weights; the paper's had 15) and 34 (1673, as many as the LSTM), trained by full
backpropagation through time; and the 16-unit Elman net trained by Elman's procedure
(``jax.lax.stop_gradient`` on the incoming state, a wrapper of ``rj.elman_step``). Softmax
readout trained with cross-entropy on the actual next symbol, Adam (lr 1e-2 cosine-decayed to
1e-4, clipped to global norm 1), batch 32 strings drawn from the fixed training set, at most
6000 steps (192,000 strings; the paper's LSTM needed 8,000–40,000 with online SGD, its Elman net
failed after 300,000); training stops once every seed has succeeded.

Measured (full run, 3.5 min wall): success LSTM-16 9/10, LSTM-8 6/10, Elman-16 8/10, Elman-34
5/10, Elman-16 by Elman's procedure 0/10 (closing T/P right for 68% of test strings: chance
is 50%). The paper's 0% comes back with its training procedure; with full backpropagation
through time and Adam the Elman net learns this 6–24-step dependency nearly as often as the
LSTM. Details: EXPERIMENTS.md, "Long-term memory".
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
from experiments import common
from experiments import memory_tasks as mt

# run name -> (cell, hidden units, gradient): "full" backpropagates through the whole string;
# "one-step" is Elman's (1990) procedure, the paper's "ELM": the context (previous hidden state)
# is treated as a constant input, so the error reaches back one step only.
CONFIG = dict(runs={"lstm": ("lstm", 16, "full"),
                    "lstm-small": ("lstm", 8, "full"),
                    "elman": ("elman", 16, "full"),
                    "elman-wide": ("elman", 34, "full"),
                    "elman-one-step": ("elman", 16, "one-step")},
              train_strings=256, test_strings=256, batch=32, lr=1e-2, final_lr=1e-4, clip=1.0, steps=6000,
              eval_every=50, seeds=10)
SMOKE = dict(CONFIG, runs={"lstm": ("lstm", 8, "full"), "elman-one-step": ("elman", 8, "one-step")},
             train_strings=64, test_strings=64, steps=40, eval_every=40, seeds=2)
GRADIENTS = ("full", "one-step")
NUM_SYMBOLS = len(mt.REBER_SYMBOLS)


def make_data(seed: int, cfg: dict):
    """Fixed training and test sets of embedded Reber strings (NumPy), padded to one length."""
    train = mt.reber_dataset(np.random.default_rng(seed), cfg["train_strings"])
    test = mt.reber_dataset(np.random.default_rng(seed + 1), cfg["test_strings"])
    num_steps = max(train["inputs"].shape[0], test["inputs"].shape[0])
    train = mt.reber_dataset(np.random.default_rng(seed), cfg["train_strings"], max_len=num_steps)
    test = mt.reber_dataset(np.random.default_rng(seed + 1), cfg["test_strings"], max_len=num_steps)
    return train, test


def as_arrays(data: dict) -> dict:
    return {k: jnp.asarray(data[k]) for k in ("inputs", "targets", "legal", "lengths")}


def one_step_gradient(cell: rj.Cell) -> rj.Cell:
    """The same cell trained by Elman's procedure: no gradient flows into the previous state."""
    def step(params, carry, x):
        return cell.step(params, jax.lax.stop_gradient(carry), x)

    return cell._replace(step=step)


def make_model(cell_name: str, hidden: int, gradient: str = "full"):
    if gradient not in GRADIENTS:
        raise ValueError(f"gradient: expected one of {GRADIENTS}, got {gradient!r}")
    cell = mt.CELLS[cell_name](NUM_SYMBOLS, hidden)
    if gradient == "one-step":
        cell = one_step_gradient(cell)
    init, apply = mt.make_model(cell, hidden, NUM_SYMBOLS)

    def logits_fn(params, ids, lengths):
        return apply(params, jax.nn.one_hot(ids, NUM_SYMBOLS), lengths)[0]  # [T, N, 7]

    return init, logits_fn


def loss_fn(logits_fn, train, batch, params, _, key):
    """Cross-entropy of the next symbol on ``batch`` strings drawn from the training set."""
    idx = jax.random.randint(key, (batch,), 0, train["lengths"].shape[0])
    logits = logits_fn(params, train["inputs"][:, idx], train["lengths"][idx])
    return rj.sequence_cross_entropy(logits, train["targets"][:, idx], lengths=train["lengths"][idx])


def evaluate(logits_fn, train, test, params):
    out = {}
    for name, data in (("train", train), ("test", test)):
        logits = logits_fn(params, data["inputs"], data["lengths"])
        ok = mt.reber_all_correct(logits, data["legal"], data["lengths"])  # [N]
        out[f"{name}_all_correct"] = jnp.mean(ok)
    # The long-range step: predicting the closing T/P (target at t = length - 2).
    t = test["lengths"] - 2
    pred = jnp.argmax(logits_fn(params, test["inputs"], test["lengths"]), -1)  # [T, N]
    n = jnp.arange(t.shape[0])
    out["test_outer_acc"] = jnp.mean(pred[t, n] == test["targets"][t, n])
    return out


def train_cell(name: str, cell_name: str, hidden: int, gradient: str, data, cfg: dict, seed: int,
               out=None) -> dict:
    init, logits_fn = make_model(cell_name, hidden, gradient)
    train, test = (as_arrays(d) for d in data)
    schedule = optax.cosine_decay_schedule(cfg["lr"], cfg["steps"], alpha=cfg["final_lr"] / cfg["lr"])
    optimizer = rj.make_optimizer(schedule, clip="global_norm", threshold=cfg["clip"])
    ever = np.zeros(cfg["seeds"], bool)

    def stop(e):  # the paper stops a trial at its first success; we stop once all have had one
        ever[:] |= (e["train_all_correct"] == 1) & (e["test_all_correct"] == 1)
        return bool(ever.all())

    result = mt.train_seeds(
        init, partial(loss_fn, logits_fn, train, cfg["batch"]), optimizer,
        seeds=range(seed, seed + cfg["seeds"]), steps=cfg["steps"],
        eval_fn=partial(evaluate, logits_fn, train, test), eval_every=cfg["eval_every"],
        stop=stop, desc=name)
    ev = result.evals
    solved = (ev["train_all_correct"] == 1) & (ev["test_all_correct"] == 1)  # [E, S]
    first = [int(result.steps[np.argmax(solved[:, s])]) if solved[:, s].any() else None
             for s in range(solved.shape[1])]
    if out is not None:
        mt.save_checkpoint(out, name, result.states, result.steps[-1])
    params = sum(x.size for x in jax.tree_util.tree_leaves(init(jax.random.key(0))))
    return {
        "cell": cell_name, "hidden": hidden, "gradient": gradient, "num_params": params,
        "success": solved.any(0), "success_rate": float(np.mean(solved.any(0))),
        "all_correct_at_end": solved[-1],
        "strings_to_success": [None if f is None else f * cfg["batch"] for f in first],
        "test_all_correct": ev["test_all_correct"][-1], "train_all_correct": ev["train_all_correct"][-1],
        "test_outer_acc": ev["test_outer_acc"][-1],
        "curve": {"step": result.steps, **{k: v for k, v in ev.items()}},
        "loss": result.loss.mean(1),
    }


def plot(results: dict, path) -> None:
    fig, axes = common.subplots(1, 2, figsize=(9, 3.6), layout="constrained")
    for i, (cell, r) in enumerate(results.items()):
        steps = np.asarray(r["curve"]["step"])
        for key, ax in (("test_all_correct", axes[0]), ("test_outer_acc", axes[1])):
            v = np.asarray(r["curve"][key])
            ax.plot(steps, v, color=f"C{i}", alpha=0.35, lw=0.8)
            ax.plot(steps, v.mean(1), color=f"C{i}", lw=2, label=f"{cell} (mean of {v.shape[1]})")
    axes[0].set_ylabel("test strings predicted all-correct")
    axes[1].set_ylabel("closing T/P predicted correctly")
    for ax in axes:
        ax.set_xlabel("training step (32 strings each)")
        ax.grid(True, alpha=0.3)
        ax.legend(fontsize=8)
    fig.suptitle("Embedded Reber grammar")
    common.save_figure(fig, path, dpi=90)


def main(argv=None) -> dict:
    args = common.base_parser(__doc__.splitlines()[0]).parse_args(argv)
    cfg = SMOKE if args.smoke else CONFIG
    out = common.run_dir("reber", args.out)
    start = time.time()
    data = make_data(args.seed, cfg)
    results = {name: train_cell(name, *run, data, cfg, args.seed, out) for name, run in cfg["runs"].items()}
    paper = {("lstm", "full"): "97–100%", ("elman", "one-step"): "0% (ELM)"}
    rows = []
    for name, r in results.items():
        reached = [n for n in r["strings_to_success"] if n is not None]
        rows.append([name, r["hidden"], r["gradient"], r["num_params"],
                     f"{r['success_rate']:.0%} ({int(np.sum(r['success']))}/{cfg['seeds']})",
                     paper.get((r["cell"], r["gradient"]), "–"),
                     f"{int(np.median(reached))}" if reached else "–",
                     float(np.mean(r["test_all_correct"])), float(np.mean(r["test_outer_acc"]))])
    headers = ["run", "hidden", "gradient", "weights", "success (measured)", "success (paper)", "strings to success (median)",
               "test strings all-correct (end)", "closing T/P acc (end)"]
    common.print_table(rows, headers, title=f"Embedded Reber grammar, success = every symbol of all "
                       f"{cfg['train_strings']} training and {cfg['test_strings']} test strings predicted "
                       "(legal next symbols most active)")
    plot(results, out / "reber.png")
    summary = {"config": cfg, "seed": args.seed, "results": results,
               "table": {"headers": headers, "rows": rows}, "wall_s": time.time() - start,
               "max_len": int(data[0]["inputs"].shape[0])}
    common.write_summary(out, summary, "reber.png")
    return summary


if __name__ == "__main__":
    main()
