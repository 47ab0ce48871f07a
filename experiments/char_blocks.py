"""The next-character model with Mamba, Hawk, mLSTM and sLSTM blocks against the LSTM, on a CPU.

Run:  python experiments/char_blocks.py             (five models, 300 steps each; see EXPERIMENTS.md for the time)
      python experiments/char_blocks.py --smoke     (seconds per model)
      python experiments/char_blocks.py --models mamba,lstm

Data, split, loss, evaluation and optimiser are ``experiments/char_lm.py``'s (imported, not
copied): the Python language reference, the first 90% trains in ``batch`` streams read in
chunks of ``bptt`` characters with the carry passed on, the last 10% is held out; Adam with
global-norm clipping on a warm-up + cosine schedule. No dropout.

Models: character embedding → two residual blocks stacked with ``rnnjax.deep``
(``rnnjax.mamba_block``, ``hawk_block``, ``mlstm_block``, ``slstm_block`` with their
papers' defaults; the embedding width is the block width ``D``) → linear softmax layer, against
embedding ``embed`` → two LSTM layers → softmax. Each model's width is the one whose two
recurrent layers/blocks have the parameter count closest to ``target_params`` (embedding and
softmax excluded; they are reported too). The Mamba, Hawk and mLSTM blocks **train in
parallel mode** (``rnnjax.rnn(block, parallel=True)``: the associative scan / chunkwise form);
the sLSTM block and the LSTM run ``rnnjax.scan``. Validation runs the sequential ``rnnjax.scan``
of every model (the same function; its memory does not grow with the 5,800-character streams).

Reported: validation bits per character after ``steps`` steps beside the LSTM's and the
count-based baselines (``char_lm.baselines``), and the median wall time of one training step
in parallel and in sequential mode (the same params and batches).
"""

from __future__ import annotations

import os
import pathlib
import sys
import time

if __package__ in (None, ""):  # run as a script: make the `experiments` package importable
    sys.path.insert(0, str(pathlib.Path(__file__).resolve().parents[1]))

import jax
import numpy as np

import rnnjax as rj
from experiments import char_lm, common
from experiments.min_rnn import count_params, plot_char, time_train_step, train_char_lm
from experiments.text_data import python_reference_text, text_digest

NAME = "char_blocks"
BLOCKS = {"mamba": rj.mamba_block, "hawk": rj.hawk_block, "mlstm": rj.mlstm_block, "slstm": rj.slstm_block}
MODELS = (*BLOCKS, "lstm")
PARALLEL = ("mamba", "hawk", "mlstm")
LABELS = {"mamba": "Mamba blocks", "hawk": "Hawk blocks", "mlstm": "mLSTM blocks", "slstm": "sLSTM blocks",
          "lstm": "LSTM"}
WIDTH_STEP = 8  # block widths: multiples of 8 (the xLSTM blocks' 4 heads divide them)

CONFIG = dict(models=MODELS, layers=2, embed=64, target_params=40_000, batch=16, bptt=64, steps=300, warmup=30,
              lr=3e-3, clip=1.0, eval_every=100, eval_streams=8, time_steps=10)
SMOKE = dict(CONFIG, target_params=4_000, embed=16, batch=8, bptt=24, steps=30, warmup=5, lr=1e-2, eval_every=15,
             eval_streams=2, time_steps=2)
SMOKE_CHARS = 12_000


def make_cells(name: str, width: int, cfg: dict) -> list[rj.Cell]:
    """The two recurrent layers: blocks of width ``width``, or LSTMs of ``width`` units."""
    if name not in MODELS:
        raise ValueError(f"model: expected one of {', '.join(MODELS)}, got {name!r}")
    if name == "lstm":
        return [rj.lstm(cfg["embed"] if i == 0 else width, width) for i in range(cfg["layers"])]
    return [BLOCKS[name](width) for _ in range(cfg["layers"])]


def make_model(name: str, width: int, cfg: dict, vocab_size: int, parallel: bool = True):
    """``(lm, model)`` as in ``char_lm.make_model``: ``lm`` makes the params and steps one token at
    a time; ``model`` runs the same layers over whole chunks, in parallel for the blocks that have
    a parallel form unless ``parallel=False``."""
    cells = make_cells(name, width, cfg)
    embed = cfg["embed"] if name == "lstm" else width
    lm = rj.language_model(rj.stack(*cells), vocab_size, embed_size=embed)
    return lm, rj.deep(*[rj.rnn(c, parallel=parallel and name in PARALLEL) for c in cells])


def recurrent_params(name: str, width: int, cfg: dict) -> int:
    cells = make_cells(name, width, cfg)
    return sum(count_params(jax.eval_shape(c.init, jax.random.key(0))) for c in cells)


def match_width(name: str, cfg: dict) -> tuple[int, int]:
    """The width (LSTM units, or a multiple of 8 for the blocks) whose recurrent layers' parameter
    count is closest to ``cfg["target_params"]``, and that count."""
    step = 1 if name == "lstm" else WIDTH_STEP
    target = cfg["target_params"]
    lo, hi = 1, 1024 // step  # the count grows with the width: the last multiple at or below the target
    while lo < hi:
        mid = (lo + hi + 1) // 2
        if recurrent_params(name, mid * step, cfg) <= target:
            lo = mid
        else:
            hi = mid - 1
    candidates = [(k * step, recurrent_params(name, k * step, cfg)) for k in (lo, lo + 1)]
    return min(candidates, key=lambda c: abs(c[1] - target))


def train(name: str, width: int, cfg: dict, vocab_size: int, stream: dict, val: np.ndarray, seed: int) -> dict:
    """Train one model with ``char_lm``'s loss and optimiser; validation bpc every ``eval_every``."""
    lm, model = make_model(name, width, cfg, vocab_size)
    _, seq_model = make_model(name, width, cfg, vocab_size, parallel=False)
    out, optimizer, params, data, carry = train_char_lm(name, lm, model, seq_model, cfg, stream, val, seed)
    out = {"width": width, **out, "train_mode": "parallel" if name in PARALLEL else "sequential"}
    print(f"{name} (width {width}, {out['recurrent_params']} recurrent params): {out['val_bpc']:.3f} bpc, "
          f"{out['step_ms']:.0f} ms/step, {out['train_wall_s']:.0f} s", flush=True)
    if cfg["time_steps"] and name in PARALLEL:
        out["step_ms_sequential"] = time_train_step(
            char_lm.make_loss_fn(seq_model), optimizer, params, data, cfg["time_steps"], carry=carry)
        out["step_ms_parallel_timed"] = time_train_step(
            char_lm.make_loss_fn(model), optimizer, params, data, cfg["time_steps"], carry=carry)
    return out


def plot(results: dict, base: dict, path) -> None:
    """Validation bpc against step for every model, with the count-based baselines."""
    plot_char(results, base, path, title="Next-character model: two blocks against a 2-layer LSTM, matched parameters",
              label=lambda name, r: (f"{LABELS[name]} ({r['recurrent_params'] / 1000:.0f}k, "
                                     f"{r['step_ms']:.0f} ms/step)"))


def main(argv=None) -> dict:
    parser = common.base_parser(__doc__.splitlines()[0])
    parser.add_argument("--models", default=None, help="comma-separated subset of " + ",".join(MODELS))
    args = parser.parse_args(argv)
    cfg = dict(SMOKE if args.smoke else CONFIG)
    cfg["models"] = common.parse_subset(args.models, MODELS, "--models")
    out = common.run_dir(NAME, args.out)
    start, load_start = time.time(), os.getloadavg()
    text = python_reference_text()
    if args.smoke:
        text = text[:SMOKE_CHARS]
    vocab, train_ids, val, stream = char_lm.make_data(text, cfg["batch"], cfg["bptt"])
    base = char_lm.baselines(vocab.size, train_ids, val)
    widths = {name: match_width(name, cfg) for name in cfg["models"]}
    results = {name: train(name, widths[name][0], cfg, vocab.size, stream, val, args.seed) for name in cfg["models"]}
    rows = [[label, "", "", "", bpc, "", ""] for label, bpc in base.items()]
    for name, r in results.items():
        width = f"2×{r['width']}" if name == "lstm" else f"2 blocks, D = {r['width']}"
        seq = r.get("step_ms_sequential")
        par = r.get("step_ms_parallel_timed")
        rows.append([LABELS[name], width, r["recurrent_params"], r["params"], r["val_bpc"],
                     f"{par:.3g}" if par is not None else "", f"{seq:.3g}" if seq is not None else f"{r['step_ms']:.3g}"])
    headers = ["model", "layers", "recurrent params", "params", "validation bpc", "ms/step parallel",
               "ms/step sequential"]
    common.print_table(rows, headers, title=(
        f"Next-character model, {cfg['steps']} steps of {cfg['batch']}×{cfg['bptt']} characters "
        f"({len(val):,} held-out characters)"))
    plot(results, base, out / "char_blocks.png")
    summary = {
        "config": cfg, "seed": args.seed, "smoke": args.smoke,
        "corpus": {"source": "pydoc_data.topics", "chars": len(text), "sha256_16": text_digest(text),
                   "vocab_size": vocab.size, "train_chars": len(train_ids), "val_chars": len(val),
                   "python": sys.version.split()[0]},
        "baselines_bpc": base, "results": results, "table": {"headers": headers, "rows": rows},
        "load_average": {"start": load_start, "end": os.getloadavg()},
        "wall_s": time.time() - start,
    }
    common.write_summary(out, summary, "char_blocks.png")
    return summary


if __name__ == "__main__":
    main()
