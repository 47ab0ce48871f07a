"""LSTM against layer-normalised LSTM (Ba, Kiros & Hinton 2016): does LN converge in fewer steps?

Run:  python experiments/layer_norm.py            (full run: adding problem at T = 100 and 200, 3 seeds;
                                                   character model, 2 seeds)
      python experiments/layer_norm.py --smoke    (seconds)

Two tasks, the same training recipe for both cells (Adam, global-norm clipping at 1):

* the adding problem of ``experiments/adding.py`` (hidden 32, batch 32, at most 1500 steps,
  learning rate 1e-2, 3 seeds trained in lockstep, ``adding.train``): test MSE every 100 steps and
  the first step at which it falls below 0.01 ("solved"); always answering 1 scores 1/6;
* the next-character model of ``experiments/char_lm.py`` on the Python language reference
  (its data, loss, evaluation and optimiser functions; here one layer of 128 units, embedding
  32, batch 32, chunks of 64 characters, 300 steps, 2 seeds): validation bits per character every 100
  steps.

Ba et al. report that the layer-normalised LSTM trains faster (fewer updates to a given loss)
on their tasks (skip-thoughts, attentive reader, handwriting); the tables printed at the end
give the measured counterpart here (EXPERIMENTS.md keeps them). Measured (full run, 728 s wall
on a loaded 2-core machine): the adding problem solved in every seed by both cells, the LSTM
after 700 (T = 100) and 1200-1400 steps (T = 200), the layer-norm LSTM after 200-300 at both T;
the character model at step 300, 2.72-2.76 bits/char (LSTM) against 2.34-2.35 (layer norm),
the layer-norm runs taking 111-113 s of wall time against 31-50 s.
"""

from __future__ import annotations

import argparse
import pathlib
import sys
import time

if __package__ in (None, ""):  # run as a script: make the `experiments` package importable
    sys.path.insert(0, str(pathlib.Path(__file__).resolve().parents[1]))

import jax
import numpy as np

import rnnjax as rj
from experiments import adding, char_lm, common
from experiments.text_data import python_reference_text
from rnnjax.norm_cells import layer_norm_lstm

CELLS = {"lstm": rj.lstm, "layer_norm_lstm": layer_norm_lstm}
ADDING = dict(cells=tuple(CELLS), lengths=(100, 200), hidden=32, batch=32, lr=1e-2, clip=1.0, steps=1500,
              eval_every=100, seeds=3, test_size=1000)
CHAR = dict(layers=1, embed=32, hidden=128, batch=32, bptt=64, steps=300, warmup=20, lr=3e-3, clip=1.0,
            eval_every=100, eval_streams=8, seeds=2, chars=None)
SMOKE_ADDING = dict(ADDING, lengths=(20,), hidden=16, lr=2e-2, steps=300, eval_every=75, seeds=2, test_size=256)
SMOKE_CHAR = dict(CHAR, hidden=32, embed=16, bptt=32, steps=60, eval_every=30, eval_streams=2, seeds=1,
                  chars=20_000)


def train_char(name: str, cfg: dict, text: str, seed: int) -> dict:
    """One character model: validation bits per character every ``eval_every`` steps."""
    vocab, _, val, stream = char_lm.make_data(text, cfg["batch"], cfg["bptt"])
    factory = CELLS[name]
    cells = [factory(cfg["embed"] if i == 0 else cfg["hidden"], cfg["hidden"]) for i in range(cfg["layers"])]
    lm = rj.language_model(rj.stack(*cells), vocab.size, embed_size=cfg["embed"])
    model = rj.deep(*cells)
    optimizer = char_lm.make_optimizer(argparse.Namespace(**cfg))
    key = jax.random.key(seed)
    state = rj.init_train_state(lm.init(jax.random.fold_in(key, 0)), optimizer, jax.random.fold_in(key, 1),
                                carry=lm.initial_carry((cfg["batch"],)))
    train_step = rj.make_train_step(char_lm.make_loss_fn(model), optimizer, carry=True)
    evaluate = char_lm.make_evaluate(model, val, cfg["eval_streams"])
    history = {"step": [], "val_bpc": [], "train_bits": []}

    def every_step(step, state, metrics):
        history["train_bits"].append(float(metrics["loss"]))
        if step % cfg["eval_every"] == 0:
            history["step"].append(step)
            history["val_bpc"].append(float(evaluate(state.params)))

    t0 = time.time()
    rj.fit(train_step, state, rj.chunk_stream(stream, cfg["bptt"]), cfg["steps"], callback=every_step,
           progress=False)
    history["seconds"] = time.time() - t0
    return history


def plot(adding_results: dict, char_results: dict, cfgs: tuple, path: pathlib.Path) -> None:
    acfg, ccfg = cfgs
    panels = len(acfg["lengths"]) + 1
    fig, axes = common.subplots(1, panels, figsize=(4.2 * panels, 3.4))
    colors = {"lstm": "tab:blue", "layer_norm_lstm": "tab:red"}
    for ax, T in zip(axes[:-1], acfg["lengths"], strict=True):
        for name in acfg["cells"]:
            c = adding_results[name][str(T)]["curve"]
            common.plot_seed_band(ax, c["step"], np.asarray(c["mse"]), color=colors[name], label=name)
        ax.axhline(1 / 6, ls="--", color="gray", lw=0.8)
        ax.set(title=f"adding problem, T = {T}", xlabel="training step", ylabel="test MSE", yscale="log")
        ax.legend(fontsize=8)
    ax = axes[-1]
    for name, runs in char_results.items():
        for k, h in enumerate(runs):
            ax.plot(h["step"], h["val_bpc"], color=colors[name], marker="o", ms=3,
                    label=name if k == 0 else None)
    ax.set(title="character model", xlabel="training step", ylabel="validation bits/char")
    ax.legend(fontsize=8)
    common.save_figure(fig, path, dpi=110, tight=True)


def main(argv=None) -> dict:
    parser = common.base_parser(__doc__.splitlines()[0])
    parser.add_argument("--skip-char", action="store_true", help="the adding problem only")
    args = parser.parse_args(argv)
    acfg, ccfg = (SMOKE_ADDING, SMOKE_CHAR) if args.smoke else (ADDING, CHAR)
    out = common.run_dir("layer_norm", args.out)
    start = time.time()

    adding_results = {name: {} for name in acfg["cells"]}
    for T in acfg["lengths"]:
        for name in acfg["cells"]:
            t0 = time.time()
            r = adding.train(name, CELLS[name](2, acfg["hidden"]), T, acfg, args.seed)
            r["seconds"] = time.time() - t0
            adding_results[name][str(T)] = r
    rows = []
    for name in acfg["cells"]:
        for T in acfg["lengths"]:
            r = adding_results[name][str(T)]
            rows.append([name, T, f"{np.mean(r['final_mse']):.4f}", f"{int(np.sum(r['success']))}/{acfg['seeds']}",
                         " ".join("-" if s is None else str(s) for s in r["steps_to_success"]),
                         f"{r['seconds']:.0f}"])
    adding_headers = ["cell", "T", "final MSE (mean)", "solved", "steps to MSE < 0.01 (per seed)", "seconds"]
    common.print_table(rows, adding_headers, title="Adding problem (baseline 1/6 = 0.167)")

    char_results, char_rows = {}, []
    if not args.skip_char:
        text = python_reference_text()
        if ccfg["chars"]:
            text = text[: ccfg["chars"]]
        for name in CELLS:
            char_results[name] = [train_char(name, ccfg, text, args.seed + s) for s in range(ccfg["seeds"])]
            for s, h in enumerate(char_results[name]):
                char_rows.append([name, args.seed + s] + [f"{b:.3f}" for b in h["val_bpc"]] + [f"{h['seconds']:.0f}"])
        char_headers = ["cell", "seed"] + [f"bpc @ {s}" for s in char_results["lstm"][0]["step"]] + ["seconds"]
        common.print_table(char_rows, char_headers, title=f"Character model ({ccfg['layers']}x{ccfg['hidden']}), "
                           "validation bits per character")
    plot(adding_results, char_results, (acfg, ccfg), out / "layer_norm.png")
    summary = {"config": {"adding": acfg, "char": ccfg}, "seed": args.seed, "smoke": args.smoke,
               "adding": adding_results, "char": char_results,
               "tables": {"adding": rows, "char": char_rows}, "wall_s": time.time() - start}
    common.write_summary(out, summary, "layer_norm.png")
    return summary


if __name__ == "__main__":
    main()
