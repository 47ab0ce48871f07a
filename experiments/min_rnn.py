"""minGRU and minLSTM against GRU and LSTM: "Were RNNs all we needed?" (Feng et al. 2024) on a CPU.

Run:  python experiments/min_rnn.py            (both tasks, about 10 min on 2 shared CPU cores)
      python experiments/min_rnn.py --smoke    (seconds per cell)
      python experiments/min_rnn.py --cells min_gru,gru

minGRU and minLSTM (``rnnjax.min_gru``/``min_lstm``) compute their gates from the input alone,
so the update ``h_t = a_t ⊙ h_{t-1} + b_t`` is affine in ``h`` and a whole sequence is one
associative scan. Here they are **trained in that parallel mode** (``rnnjax.min_rnn_parallel``,
depth O(log T)); GRU and LSTM run the sequential ``rnnjax.scan``. Same optimiser (Adam, global
norm clipped to 1), batches and steps for all four cells, on two tasks:

(a) The adding problem (``experiments/adding.py``'s task, data and success criterion: test MSE
    of 1000 fresh sequences below 0.01; predicting 1 scores 1/6) at T ∈ {50, 100, 200}, 3 seeds,
    batch 32, lr 1e-2, at most 1500 steps (stopping once every seed has succeeded). A single
    min layer cannot mix hidden units nonlinearly over time, and the paper stacks min layers, so
    the min cells get **2 stacked layers** against **1** GRU/LSTM layer, sized to about the same
    number of parameters (recurrent weights + linear readout): minGRU 2×40 (3,561), minLSTM 2×32
    (3,489), GRU 1×32 (3,489), LSTM 1×28 (3,501).
(b) The next-character model of ``experiments/char_lm.py`` (the Python language reference,
    90/10 split, its ``make_data``, loss, evaluation and optimiser; unigram and Kneser–Ney
    baselines from ``char_lm.baselines``): embedding 64 → 2 recurrent layers → softmax, batch 32,
    chunks of 100 characters with the carry passed on, 400 steps, lr 3e-3 with cosine decay.
    Widths again match the parameter counts of the two recurrent layers: minGRU 2×264, minLSTM
    2×210, GRU 2×128, LSTM 2×110 (173,568–174,240 each; with embedding and softmax 192–208k).

Reported: per cell and T, final test MSE and success per seed; validation bits per character;
and the wall time of one training step (median over steps after compilation, blocking on each
step). For the min cells the same step is also timed in sequential mode (``rnnjax.scan`` of
the same step and params), the fair measure of what the parallel scan buys on this machine.

Measured (full run, 9 min 20 s wall on 2 cores shared with other jobs, load 3-5): every cell
solved the adding problem at every T in 3/3 seeds except the LSTM at T = 200 (2/3 within 1500
steps); minGRU needed 300-600 steps, GRU 200-500. Per training step, the parallel scan did not
pay on this CPU: minGRU 13.5 ms parallel against 7.9 ms in ``rnnjax.scan`` at T = 200, minLSTM
12.0 against 12.1, and the 1-layer GRU 6.2. Character model after 400 steps: GRU 1.962 bpc,
minGRU 2.243, LSTM 2.261, minLSTM 2.286 (3-gram Kneser–Ney 2.444, 5-gram 1.739), at 39, 86, 58
and 118 ms per step. Details and the paper's claims beside them: EXPERIMENTS.md, "Parallel in
time". The paper's claims are GPU training-speed ratios (175× at T = 512) and accuracy
competitive with recent models on other tasks; it does not run the adding problem.
"""

from __future__ import annotations

import argparse
import math
import os
import pathlib
import statistics
import sys
import time
from functools import partial

if __package__ in (None, ""):  # run as a script: make the `experiments` package importable
    sys.path.insert(0, str(pathlib.Path(__file__).resolve().parents[1]))

import jax
import numpy as np

import rnnjax as rj
from experiments import adding, char_lm, common
from experiments import memory_tasks as mt
from experiments.text_data import python_reference_text, text_digest

NAME = "min_rnn"
CELLS = {"min_gru": rj.min_gru, "min_lstm": rj.min_lstm, "gru": rj.gru, "lstm": rj.lstm}
MIN_CELLS = ("min_gru", "min_lstm")

CONFIG = dict(
    cells=tuple(CELLS),
    adding=dict(lengths=(50, 100, 200), layers=dict(min_gru=2, min_lstm=2, gru=1, lstm=1),
                hidden=dict(min_gru=40, min_lstm=32, gru=32, lstm=28), batch=32, lr=1e-2, clip=1.0,
                steps=1500, eval_every=100, seeds=3, test_size=1000, time_steps=30),
    char=dict(layers=2, embed=64, hidden=dict(min_gru=264, min_lstm=210, gru=128, lstm=110), batch=32,
              bptt=100, steps=400, lr=3e-3, clip=1.0, eval_every=50, eval_streams=8, time_steps=15),
)
SMOKE = dict(
    cells=tuple(CELLS),
    adding=dict(CONFIG["adding"], lengths=(10,), hidden=dict(min_gru=16, min_lstm=16, gru=16, lstm=16),
                batch=16, lr=3e-2, steps=100, eval_every=20, seeds=2, test_size=256, time_steps=0),
    char=dict(CONFIG["char"], embed=16, hidden=dict(min_gru=48, min_lstm=48, gru=32, lstm=32),
              batch=8, bptt=32, steps=60, lr=1e-2, eval_every=30, eval_streams=2, time_steps=0),
)
SMOKE_CHARS = 12_000


# ----------------------------------------------------------------------------- layers


def make_cells(name: str, input_size: int, hidden: int, layers: int) -> list[rj.Cell]:
    if name not in CELLS:
        raise ValueError(f"cell: expected one of {', '.join(CELLS)}, got {name!r}")
    return [CELLS[name](input_size if i == 0 else hidden, hidden) for i in range(layers)]


def make_deep(name: str, cells: list[rj.Cell], parallel: bool = True) -> rj.SeqModel:
    """``rj.deep`` over the layers; min cells run with ``min_rnn_parallel`` unless ``parallel=False``."""
    return rj.deep(*[rj.rnn(c, parallel=parallel and name in MIN_CELLS) for c in cells])


def count_params(params) -> int:
    """Number of scalars in a params pytree (of arrays or ``jax.eval_shape`` structures)."""
    return int(sum(math.prod(leaf.shape) for leaf in jax.tree_util.tree_leaves(params)))


def time_train_step(loss_fn, optimizer, params, data, num_steps: int, *, carry=None) -> float:
    """Median wall milliseconds of one jitted training step, compilation excluded.

    ``num_steps + 1`` steps on ``data(i)``, blocking on each step's loss; the first compiles.
    """
    step = rj.make_train_step(loss_fn, optimizer, carry=carry is not None)
    state = rj.init_train_state(params, optimizer, jax.random.key(0), carry=carry)
    times = []
    for i in range(num_steps + 1):
        t = time.perf_counter()
        state, metrics = step(state, data(i))
        float(metrics["loss"])
        times.append(time.perf_counter() - t)
    return 1000 * statistics.median(times[1:])


# ----------------------------------------------------------------------- (a) adding problem


def make_adding_model(name: str, cfg: dict, parallel: bool = True):
    """``(init, predict)``: the recurrent layers, then a linear readout of the last output."""
    hidden = cfg["hidden"][name]
    model = make_deep(name, make_cells(name, 2, hidden, cfg["layers"][name]), parallel)

    def init(key):
        k_rnn, k_head = jax.random.split(key)
        return mt.ModelParams(model.init(k_rnn), rj.dense_init(k_head, hidden, 1))

    def predict(params, xs):
        _, hs = model.apply(params.rnn, xs)  # [T, B, H]
        return rj.dense(params.head, hs[-1])[:, 0]  # [B]

    return init, predict


def train_adding(name: str, num_steps: int, cfg: dict, seed: int) -> dict:
    """Train ``cfg["seeds"]`` seeds of one cell at one T (``memory_tasks.train_seeds``)."""
    init, predict = make_adding_model(name, cfg)
    test = adding.make_data(jax.random.key(adding.TEST_KEY + num_steps), num_steps, cfg["test_size"])
    optimizer = rj.make_optimizer(cfg["lr"], clip="global_norm", threshold=cfg["clip"])
    loss = partial(adding.loss_fn, predict, num_steps, cfg["batch"])
    t0 = time.time()
    result = mt.train_seeds(
        init, loss, optimizer, seeds=range(seed, seed + cfg["seeds"]), steps=cfg["steps"],
        eval_fn=partial(adding.evaluate, predict, test), eval_every=cfg["eval_every"],
        stop=lambda e: bool(np.all(e["mse"] < adding.SUCCESS_MSE)), desc=f"{name} T={num_steps}")
    wall = time.time() - t0
    mse = result.evals["mse"]  # [E, S]
    out = {
        "final_mse": mse[-1],
        "success": mse[-1] < adding.SUCCESS_MSE,
        "steps_to_success": mt.first_step_below(result.steps, mse, adding.SUCCESS_MSE),
        "steps_trained": int(result.steps[-1]),
        "curve": {"step": result.steps, "mse": mse},
        "skipped_steps": result.skipped,
        "train_wall_s": wall,  # all seeds in lockstep, compilation and evaluation included
        "step_ms": None,
    }
    if cfg["time_steps"]:
        out["step_ms"] = time_train_step(loss, optimizer, init(jax.random.key(seed)), lambda i: None,
                                         cfg["time_steps"])
    if cfg["time_steps"] and name in MIN_CELLS:
        seq_init, seq_predict = make_adding_model(name, cfg, parallel=False)
        out["step_ms_sequential"] = time_train_step(
            partial(adding.loss_fn, seq_predict, num_steps, cfg["batch"]), optimizer,
            seq_init(jax.random.key(seed)), lambda i: None, cfg["time_steps"])
    return out


# ------------------------------------------------------------------ (b) character model


def make_char_model(name: str, cfg: dict, vocab_size: int, parallel: bool = True):
    """``(lm, model)`` as in ``char_lm.make_model``: ``lm`` steps one token at a time, ``model``
    runs the same layers (same params) over whole chunks — in parallel for min cells."""
    cells = make_cells(name, cfg["embed"], cfg["hidden"][name], cfg["layers"])
    lm = rj.language_model(rj.stack(*cells), vocab_size, embed_size=cfg["embed"])
    return lm, make_deep(name, cells, parallel)


def train_char_lm(name: str, lm, model, eval_model, cfg: dict, stream: dict, val: np.ndarray, seed: int):
    """Train ``model`` (the ``lm``'s recurrent part) with ``char_lm``'s loss and optimiser on
    ``stream``, validation bpc of ``eval_model`` every ``eval_every``; each step's wall time is
    measured. Returns ``(out, optimizer, params, data, carry)``: ``out`` the results, the rest
    for timing more steps."""
    optimizer = char_lm.make_optimizer(argparse.Namespace(**cfg))
    params = lm.init(jax.random.fold_in(jax.random.key(seed), 0))
    carry = lm.initial_carry((cfg["batch"],))
    state = rj.init_train_state(params, optimizer, jax.random.fold_in(jax.random.key(seed), 1), carry=carry)
    train_step = rj.make_train_step(char_lm.make_loss_fn(model), optimizer, carry=True)
    evaluate = char_lm.make_evaluate(eval_model, val, cfg["eval_streams"])
    data = rj.chunk_stream(stream, cfg["bptt"])
    bits, times, history = [], [], {"eval_step": [], "val_bpc": []}
    t0 = time.time()
    with rj.progress_bar(cfg["steps"], desc=f"char {name}") as bar:
        for i in range(cfg["steps"]):
            t = time.perf_counter()
            state, metrics = train_step(state, data(i))
            bits.append(float(metrics["loss"]))  # blocks: the step's wall time is measured
            times.append(time.perf_counter() - t)
            bar.update(1)
            if (i + 1) % cfg["eval_every"] == 0 or i + 1 == cfg["steps"]:
                history["eval_step"].append(i + 1)
                history["val_bpc"].append(evaluate(state.params))
                bar.set_postfix(val_bpc=f"{history['val_bpc'][-1]:.3f}")
    out = {
        "val_bpc": history["val_bpc"][-1],
        "train_bits": bits,
        "history": history,
        "params": count_params(params),
        "recurrent_params": count_params(params.cell),
        "step_ms": 1000 * statistics.median(times[1:]),
        "first_step_s": times[0],  # compilation
        "train_wall_s": time.time() - t0,
        "skipped_steps": int(state.skipped),
    }
    return out, optimizer, params, data, carry


def train_char(name: str, cfg: dict, vocab_size: int, stream: dict, val: np.ndarray, seed: int) -> dict:
    """Train one cell with ``char_lm``'s loss and optimiser; validation bpc every ``eval_every``."""
    lm, model = make_char_model(name, cfg, vocab_size)
    out, optimizer, params, data, carry = train_char_lm(name, lm, model, model, cfg, stream, val, seed)
    if cfg["time_steps"] and name in MIN_CELLS:
        _, seq_model = make_char_model(name, cfg, vocab_size, parallel=False)
        out["step_ms_sequential"] = time_train_step(
            char_lm.make_loss_fn(seq_model), optimizer, params, data, cfg["time_steps"], carry=carry)
    return out


# ----------------------------------------------------------------------------- report


def plot_char(results: dict, base: dict, path, *, label=None,
              title: str = "Next-character model, parameter-matched 2-layer cells") -> None:
    """Validation bpc against step for every model, with the count-based baselines;
    ``label(name, result)`` names each curve (default: the name and its step time)."""
    label = label or (lambda name, r: f"{name} ({r['step_ms']:.0f} ms/step)")
    fig, ax = common.subplots(figsize=(7, 4), layout="constrained")
    for i, (name, r) in enumerate(results.items()):
        ax.plot(r["history"]["eval_step"], r["history"]["val_bpc"], "o-", ms=3, color=f"C{i}",
                label=label(name, r))
    for (base_label, bpc), ls in zip(base.items(), ("--", "-.", ":"), strict=False):
        ax.axhline(bpc, color="k", ls=ls, lw=0.8, label=base_label)
    ax.set_xlabel("training step")
    ax.set_ylabel("validation bits per character")
    ax.set_title(title)
    ax.set_ylim(top=min(max(base.values()) + 0.3, ax.get_ylim()[1]))
    ax.grid(True, alpha=0.3)
    ax.legend(fontsize=8)
    common.save_figure(fig, path, dpi=90)


def main(argv=None) -> dict:
    parser = common.base_parser(__doc__.splitlines()[0])
    parser.add_argument("--cells", default=None, help="comma-separated subset of " + ",".join(CELLS))
    args = parser.parse_args(argv)
    cfg = dict(SMOKE if args.smoke else CONFIG)
    cfg["cells"] = common.parse_subset(args.cells, CELLS, "--cells", cfg["cells"])
    out = common.run_dir(NAME, args.out)
    start, load_start = time.time(), os.getloadavg()

    # (a) adding problem
    acfg = cfg["adding"]
    add = {name: {} for name in cfg["cells"]}
    add_params = {name: count_params(jax.eval_shape(make_adding_model(name, acfg)[0], jax.random.key(0)))
                  for name in cfg["cells"]}
    for T in acfg["lengths"]:
        for name in cfg["cells"]:
            add[name][str(T)] = train_adding(name, T, acfg, args.seed)
    add_rows = []
    for name in cfg["cells"]:
        layers = f"{acfg['layers'][name]}×{acfg['hidden'][name]}"
        row = [name, layers, add_params[name]]
        for T in acfg["lengths"]:
            r = add[name][str(T)]
            row.append(f"{np.mean(r['final_mse']):.4f} ({int(np.sum(r['success']))}/{acfg['seeds']})")
        for T in acfg["lengths"]:
            r = add[name][str(T)]
            seq = f" (seq {r['step_ms_sequential']:.1f})" if "step_ms_sequential" in r else ""
            row.append("not timed" if r["step_ms"] is None else f"{r['step_ms']:.1f}{seq}")
        add_rows.append(row)
    add_headers = (["cell", "layers", "params"] + [f"T={T}: MSE (solved)" for T in acfg["lengths"]]
                   + [f"T={T}: ms/step" for T in acfg["lengths"]])
    common.print_table(add_rows, add_headers, title=(
        f"(a) Adding problem: mean final test MSE over {acfg['seeds']} seeds (baseline 1/6; solved = MSE "
        f"< {adding.SUCCESS_MSE}); ms per training step (min cells parallel; seq = the same in rnnjax.scan)"))
    adding.plot(add, {"lengths": acfg["lengths"], "cells": cfg["cells"]}, out / "min_rnn_adding.png")

    # (b) character model
    ccfg = cfg["char"]
    text = python_reference_text()
    if args.smoke:
        text = text[:SMOKE_CHARS]
    vocab, train, val, stream = char_lm.make_data(text, ccfg["batch"], ccfg["bptt"])
    base = char_lm.baselines(vocab.size, train, val)
    char = {name: train_char(name, ccfg, vocab.size, stream, val, args.seed) for name in cfg["cells"]}
    char_rows = [[label, "", "", bpc, "", ""] for label, bpc in base.items()]
    for name, r in char.items():
        seq = f"{r['step_ms_sequential']:.3g}" if "step_ms_sequential" in r else ""
        char_rows.append([name, f"{ccfg['layers']}×{ccfg['hidden'][name]}", r["recurrent_params"], r["val_bpc"],
                     f"{r['step_ms']:.3g}", seq])
    char_headers = ["model", "layers", "recurrent params", "validation bpc", "ms/step", "ms/step sequential"]
    common.print_table(char_rows, char_headers, title=(
        f"(b) Next-character model, {ccfg['steps']} steps of {ccfg['batch']}×{ccfg['bptt']} characters "
        f"({len(val):,} held-out characters)"))
    plot_char(char, base, out / "min_rnn_char.png")

    summary = {
        "config": cfg, "seed": args.seed, "smoke": args.smoke,
        "adding": {"params": add_params, "baseline_mse": mt.ADDING_BASELINE,
                   "success_mse": adding.SUCCESS_MSE, "results": add,
                   "table": {"headers": add_headers, "rows": add_rows}},
        "char": {"corpus": {"source": "pydoc_data.topics", "chars": len(text), "sha256_16": text_digest(text),
                            "vocab_size": vocab.size, "train_chars": len(train), "val_chars": len(val),
                            "python": sys.version.split()[0]},
                 "baselines_bpc": base, "results": char,
                 "table": {"headers": char_headers, "rows": char_rows}},
        "load_average": {"start": load_start, "end": os.getloadavg()},
        "wall_s": time.time() - start,
    }
    common.write_results(out, summary)
    print(f"wrote {out / 'results.json'}, {out / 'min_rnn_adding.png'} and {out / 'min_rnn_char.png'} "
          f"in {summary['wall_s']:.0f} s")
    return summary


if __name__ == "__main__":
    main()
