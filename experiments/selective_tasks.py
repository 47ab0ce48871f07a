"""Selective copying and induction heads (Gu & Dao 2023, "Mamba", Tables 1 and 2) on a CPU.

Run:  python experiments/selective_tasks.py                     (both tasks; see EXPERIMENTS.md for the time)
      python experiments/selective_tasks.py --task induction    (one task)
      python experiments/selective_tasks.py --smoke             (seconds)
      python experiments/selective_tasks.py --models lstm,selective_ssm

Two synthetic tasks that separate recurrences whose transition depends on the input
("selective": S6, RG-LRU, the gated cells) from a linear time-invariant one (the LRU):

(a) **Selective copying.** ``tokens`` data symbols (from ``symbols``) are scattered at random
    positions of a blank region of length ``data_len``; then ``tokens`` marker symbols follow,
    and at each marker the model must output the next data symbol in order. The spacing is
    random, so a fixed convolution (an LTI system) cannot line the symbols up. Metric: per-symbol
    accuracy over the ``tokens`` answers of 512 fresh test sequences (chance: 1/``symbols``).
    Mamba's version: 4096 positions, 16 symbols to copy, vocabulary 16.
(b) **Induction heads.** A sequence of random symbols (vocabulary ``vocab``) contains a special
    symbol once, at a random position, and again as the last symbol; the answer is the symbol
    that followed its first occurrence. Only the last position is scored (as in Mamba). Trained
    at ``train_len``; accuracy is measured at 1x-16x that length (256 sequences each) (the first occurrence anywhere
    in the longer sequence: recall over distances never seen in training). Mamba's version:
    vocabulary 16, trained at 256, tested up to 2^20.

Models: embedding ``embed`` → two recurrent layers (``rnnjax.deep``) → linear softmax layer,
for LSTM, GRU, minGRU, LRU, RG-LRU, S6 (``selective_ssm``), mLSTM and sLSTM, each at the hidden
width whose parameter count is closest to ``target_params`` (counted with embedding and
readout; the widths and counts are in the results). Cells with a parallel form (minGRU, LRU,
RG-LRU, S6, mLSTM) **train with it** (``rnnjax.rnn(cell, parallel=True)``); every model is
evaluated with the sequential ``rnnjax.scan`` of the same params (the same function, with
memory independent of T: the long induction tests would not fit S6's parallel states). Adam,
global norm clipped to 1, ``seeds`` seeds in lockstep (``memory_tasks.train_seeds``), fresh
batches every step. The LRU is initialised as in its paper's long-range tasks
(``r_min = 0.9, r_max = 0.999``); the others with their factories' defaults. The step time
(median ms of one jitted training step after compilation, one seed) is measured on the
induction task at the training length, in parallel and in sequential mode.

Mamba's numbers for comparison (its 2-layer models at full size): selective copying, S4
without gating 18.3%, S6 without gating 97.0%, Mamba (S6) 99.8%; induction heads, Mamba 100%
up to 2^20 (4000x the training length), the attention models failing beyond 2x.
"""

from __future__ import annotations

import os
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
from experiments import char_lm, common
from experiments import memory_tasks as mt
from experiments.min_rnn import count_params, time_train_step

NAME = "selective_tasks"
TASKS = ("selective_copy", "induction")
FACTORIES = {
    "lstm": rj.lstm,
    "gru": rj.gru,
    "min_gru": rj.min_gru,
    "lru": partial(rj.lru, r_min=0.9, r_max=0.999),
    "rg_lru": rj.rg_lru,
    "selective_ssm": rj.selective_ssm,
    "mlstm": rj.mlstm,
    "slstm": rj.slstm,
}
MODELS = tuple(FACTORIES)
PARALLEL = ("min_gru", "lru", "rg_lru", "selective_ssm", "mlstm")
HEADS = ("mlstm", "slstm")  # 4 heads: the width is a multiple of 4

CONFIG = dict(
    models=MODELS, embed=32, layers=2, target_params=20_000, seeds=2, batch=64, lr=3e-3, clip=1.0, time_steps=10,
    selective_copy=dict(data_len=64, tokens=8, symbols=8, steps=1000, eval_every=250, test_size=512),
    induction=dict(vocab=16, train_len=64, factors=(1, 2, 4, 8, 16), steps=1000, eval_every=250, test_size=256),
)
SMOKE = dict(
    CONFIG, embed=8, target_params=1_500, seeds=2, batch=16, lr=1e-2, time_steps=2,
    selective_copy=dict(data_len=12, tokens=2, symbols=4, steps=40, eval_every=20, test_size=64),
    induction=dict(vocab=4, train_len=8, factors=(1, 2, 4), steps=40, eval_every=20, test_size=64),
)


# ----------------------------------------------------------------------------- tasks


def selective_copy_batch(key, data_len: int, tokens: int, symbols: int, batch: int):
    """Selective copying: ``ids [data_len + tokens, B]`` and the answers ``[tokens, B]``.

    Symbol 0 is blank, ``1..symbols`` are data, ``symbols + 1`` is the marker. ``tokens`` data
    symbols sit at distinct random positions of the first ``data_len`` steps (blank elsewhere);
    the last ``tokens`` steps are markers, and the answer at the ``k``-th marker is the ``k``-th
    data symbol in order of position.

    >>> ids, answers = selective_copy_batch(jax.random.key(0), 10, 3, 4, 2)
    >>> ids.shape, answers.shape, bool((ids[-3:] == 5).all()), bool(((ids[:10] > 0).sum(0) == 3).all())
    ((13, 2), (3, 2), True, True)
    """
    k_pos, k_sym = jax.random.split(key)
    order = jnp.argsort(jax.random.uniform(k_pos, (batch, data_len)), axis=1)
    pos = jnp.sort(order[:, :tokens], axis=1)  # [B, K] distinct positions, in order
    answers = jax.random.randint(k_sym, (batch, tokens), 1, symbols + 1)
    region = jnp.zeros((batch, data_len), jnp.int32).at[jnp.arange(batch)[:, None], pos].set(answers)
    ids = jnp.concatenate([region, jnp.full((batch, tokens), symbols + 1, jnp.int32)], axis=1)
    return ids.T, answers.T


def induction_batch(key, num_steps: int, vocab: int, batch: int):
    """Induction heads: ``ids [num_steps, B]`` and the answers ``[B]``.

    Symbols ``0..vocab-1`` are drawn uniformly; the special symbol ``vocab`` replaces position
    ``p`` (uniform in ``[0, num_steps - 3]``) and the last position. The answer is ``ids[p + 1]``.

    >>> ids, answers = induction_batch(jax.random.key(0), 12, 4, 3)
    >>> ids.shape, bool((ids[-1] == 4).all()), bool(((ids == 4).sum(0) == 2).all())
    ((12, 3), True, True)
    """
    k_ids, k_pos = jax.random.split(key)
    ids = jax.random.randint(k_ids, (num_steps, batch), 0, vocab)
    p = jax.random.randint(k_pos, (batch,), 0, num_steps - 2)
    cols = jnp.arange(batch)
    answers = ids[p + 1, cols]
    ids = ids.at[p, cols].set(vocab).at[num_steps - 1].set(vocab)
    return ids, answers


def task_vocab(task: str, tcfg: dict) -> int:
    return tcfg["symbols"] + 2 if task == "selective_copy" else tcfg["vocab"] + 1


def task_batch(task: str, tcfg: dict, key, batch: int, num_steps: int | None = None):
    """``(ids [T, B], answers [A, B])``: the scored positions are the last ``A``."""
    if task == "selective_copy":
        return selective_copy_batch(key, tcfg["data_len"], tcfg["tokens"], tcfg["symbols"], batch)
    ids, answers = induction_batch(key, num_steps or tcfg["train_len"], tcfg["vocab"], batch)
    return ids, answers[None]


# ----------------------------------------------------------------------------- models


def make_cells(name: str, embed: int, hidden: int, layers: int) -> list[rj.Cell]:
    if name not in FACTORIES:
        raise ValueError(f"model: expected one of {', '.join(MODELS)}, got {name!r}")
    return [FACTORIES[name](embed if i == 0 else hidden, hidden) for i in range(layers)]


def make_model(name: str, cfg: dict, hidden: int, vocab: int, parallel: bool = True):
    """``(lm, model)``: ``lm.init`` makes the params (``rj.LanguageModelParams``: embedding, the
    layers, readout) and ``model`` runs the layers over a whole sequence, in parallel for the
    cells that have a parallel form unless ``parallel=False``."""
    cells = make_cells(name, cfg["embed"], hidden, cfg["layers"])
    lm = rj.language_model(rj.stack(*cells), vocab, embed_size=cfg["embed"])
    model = rj.deep(*[rj.rnn(c, parallel=parallel and name in PARALLEL) for c in cells])
    return lm, model


def num_params(name: str, cfg: dict, hidden: int, vocab: int) -> int:
    lm, _ = make_model(name, cfg, hidden, vocab)
    return count_params(jax.eval_shape(lm.init, jax.random.key(0)))


def match_hidden(name: str, cfg: dict, vocab: int) -> tuple[int, int]:
    """The hidden width (a multiple of 4 for the headed cells) whose model's parameter count is
    closest to ``cfg["target_params"]``, and that count."""
    step = 4 if name in HEADS else 1
    target = cfg["target_params"]
    lo, hi = 1, 1024 // step  # the count grows with the width: bisect for the last multiple at or below the target
    while lo < hi:
        mid = (lo + hi + 1) // 2
        if num_params(name, cfg, mid * step, vocab) <= target:
            lo = mid
        else:
            hi = mid - 1
    candidates = [(k * step, num_params(name, cfg, k * step, vocab)) for k in (lo, lo + 1)]
    return min(candidates, key=lambda c: abs(c[1] - target))


def answer_logits(model, params, ids, num_answers: int):
    """Logits at the last ``num_answers`` positions: ``[A, B, V]``."""
    _, logits = char_lm.forward(model, params, ids, None)
    return logits[-num_answers:]


def make_loss(task: str, tcfg: dict, model, batch: int):
    def loss_fn(params, _batch, key):
        ids, answers = task_batch(task, tcfg, key, batch)
        logits = answer_logits(model, params, ids, answers.shape[0])
        return optax.softmax_cross_entropy_with_integer_labels(logits, answers).mean()

    return loss_fn


def make_accuracy(task: str, tcfg: dict, model):
    """``params -> {"acc": per-answer accuracy}`` on a fixed test set (``test_size`` sequences)."""
    ids, answers = task_batch(task, tcfg, jax.random.key(10_000), tcfg["test_size"])

    def accuracy(params):
        logits = answer_logits(model, params, ids, answers.shape[0])
        return {"acc": jnp.mean(jnp.argmax(logits, -1) == answers)}

    return accuracy


def make_length_accuracy(tcfg: dict, model, lengths: list[int]):
    """``params -> {str(n): accuracy}``: induction heads at every test length in one call.

    The test sets (``test_size`` sequences each, drawn at their own length) are padded to the
    longest and run as one batch with ``lengths`` (``rnnjax.scan`` holds the carry over the
    padding), reading each sequence's logits at its own last step: one compilation for all."""
    longest = max(lengths)
    sets = [induction_batch(jax.random.key(20_000 + n), n, tcfg["vocab"], tcfg["test_size"]) for n in lengths]
    ids = jnp.concatenate([jnp.pad(x, ((0, longest - x.shape[0]), (0, 0))) for x, _ in sets], axis=1)
    answers = jnp.concatenate([a for _, a in sets])
    seq_lengths = jnp.repeat(jnp.asarray(lengths), tcfg["test_size"])
    cols = jnp.arange(ids.shape[1])

    def accuracy(params):
        xs = rj.embedding_lookup(params.embed, ids)
        _, hs = model.apply(params.cell, xs, lengths=seq_lengths)  # [longest, F·N, H]
        logits = rj.dense(params.out, hs[seq_lengths - 1, cols])
        hit = (jnp.argmax(logits, -1) == answers).reshape(len(lengths), tcfg["test_size"]).mean(1)
        return {str(n): hit[i] for i, n in enumerate(lengths)}

    return accuracy


# ----------------------------------------------------------------------------- training


def train_task(task: str, name: str, cfg: dict, hidden: int, seed: int) -> dict:
    """Train ``cfg["seeds"]`` seeds of one model on one task; evaluate as the task says."""
    tcfg = cfg[task]
    vocab = task_vocab(task, tcfg)
    parallel = name in PARALLEL and not cfg.get("sequential", False)
    lm, model = make_model(name, cfg, hidden, vocab, parallel=parallel)
    _, seq_model = make_model(name, cfg, hidden, vocab, parallel=False)
    optimizer = rj.make_optimizer(cfg["lr"], clip="global_norm", threshold=cfg["clip"])
    loss = make_loss(task, tcfg, model, cfg["batch"])
    t0 = time.time()
    result = mt.train_seeds(lm.init, loss, optimizer, seeds=range(seed, seed + cfg["seeds"]), steps=tcfg["steps"],
                            eval_fn=make_accuracy(task, tcfg, seq_model), eval_every=tcfg["eval_every"],
                            desc=f"{task} {name}")
    wall = time.time() - t0
    params = result.states.params  # a leading seed axis
    out = {
        "hidden": hidden,
        "params": num_params(name, cfg, hidden, vocab),
        "train_mode": "parallel" if parallel else "sequential",
        "curve": {"step": result.steps, "acc": result.evals["acc"], "loss": result.loss[:: max(1, tcfg["steps"] // 100)]},
        "final_loss": result.loss[-20:].mean(0),
        "skipped_steps": result.skipped,
        "train_wall_s": wall,  # all seeds in lockstep, compilation and evaluation included
    }
    print(f"{task} {name} (2×{hidden}, {out['params']} params): accuracy {np.round(result.evals['acc'][-1], 3)} "
          f"at step {result.steps[-1]}, {wall:.0f} s", flush=True)
    if task == "selective_copy":
        out["acc"] = result.evals["acc"][-1]  # [S]
    else:
        lengths = [f * tcfg["train_len"] for f in tcfg["factors"]]
        out["lengths"] = lengths
        by_length = jax.jit(jax.vmap(make_length_accuracy(tcfg, seq_model, lengths)))(params)
        out["acc_by_length"] = {k: np.asarray(v) for k, v in by_length.items()}
        print(f"induction {name}: accuracy by length " + ", ".join(
            f"{n}: {np.round(out['acc_by_length'][str(n)], 3)}" for n in lengths), flush=True)
        if cfg["time_steps"]:
            one = jax.tree_util.tree_map(lambda a: a[0], params)
            out["step_ms"] = time_train_step(loss, optimizer, one, lambda i: None, cfg["time_steps"])
            if parallel:
                out["step_ms_sequential"] = time_train_step(make_loss(task, tcfg, seq_model, cfg["batch"]), optimizer,
                                                            one, lambda i: None, cfg["time_steps"])
    return out


# ----------------------------------------------------------------------------- report


LABELS = {"lstm": "LSTM", "gru": "GRU", "min_gru": "minGRU", "lru": "LRU", "rg_lru": "RG-LRU",
          "selective_ssm": "S6", "mlstm": "mLSTM", "slstm": "sLSTM"}


def plot_induction(results: dict, tcfg: dict, path) -> None:
    """Induction-heads accuracy against test length (log x), one line per model (mean and seeds)."""
    fig, ax = common.subplots(figsize=(7, 4.2), layout="constrained")
    for i, (name, r) in enumerate(results.items()):
        lengths = r["lengths"]
        acc = np.array([r["acc_by_length"][str(n)] for n in lengths])  # [L, S]
        ax.plot(lengths, acc.mean(1), "o-", ms=4, color=f"C{i}", label=LABELS[name])
        ax.fill_between(lengths, acc.min(1), acc.max(1), color=f"C{i}", alpha=0.12, linewidth=0)
    ax.axvline(tcfg["train_len"], color="k", ls="--", lw=0.8, label="training length")
    ax.axhline(1.0 / tcfg["vocab"], color="k", ls=":", lw=0.8, label="chance")
    ax.set_xscale("log", base=2)
    ax.set_xlabel("test sequence length")
    ax.set_ylabel("accuracy (last position)")
    ax.set_ylim(0, 1.02)
    ax.set_title(f"Induction heads: trained at T = {tcfg['train_len']}, tested longer")
    ax.grid(True, alpha=0.3)
    ax.legend(fontsize=8, ncol=2)
    common.save_figure(fig, path, dpi=90)


def main(argv=None) -> dict:
    parser = common.base_parser(__doc__.splitlines()[0])
    parser.add_argument("--task", default="all", help="selective_copy, induction or all")
    parser.add_argument("--models", default=None, help="comma-separated subset of " + ",".join(MODELS))
    parser.add_argument("--seeds", type=int, default=None, help="seeds per model (default: the configuration's)")
    parser.add_argument("--steps", type=int, default=None, help="training steps per task (a multiple of eval_every)")
    parser.add_argument("--sequential", action="store_true",
                        help="train every model with rnnjax.scan (the same function as its parallel form)")
    args = parser.parse_args(argv)
    if args.task not in (*TASKS, "all"):
        raise ValueError(f"--task: expected selective_copy, induction or all, got {args.task!r}")
    tasks = TASKS if args.task == "all" else (args.task,)
    cfg = dict(SMOKE if args.smoke else CONFIG)
    cfg["models"] = common.parse_subset(args.models, MODELS, "--models")
    cfg["sequential"] = args.sequential
    if args.seeds is not None:
        cfg["seeds"] = args.seeds
    if args.steps is not None:
        cfg.update({task: dict(cfg[task], steps=args.steps) for task in TASKS})
    out = common.run_dir(NAME, args.out)
    start, load_start = time.time(), os.getloadavg()
    summary = {"config": cfg, "seed": args.seed, "smoke": args.smoke, "tasks": list(tasks)}
    figures = []
    for task in tasks:
        tcfg = cfg[task]
        vocab = task_vocab(task, tcfg)
        widths = {name: match_hidden(name, cfg, vocab) for name in cfg["models"]}
        results = {name: train_task(task, name, cfg, widths[name][0], args.seed) for name in cfg["models"]}
        if task == "selective_copy":
            headers = ["model", "layers", "params", "train mode", "accuracy (mean)", "per seed"]
            rows = [[LABELS[n], f"2×{r['hidden']}", r["params"], r["train_mode"], float(np.mean(r["acc"])),
                     " ".join(f"{a:.3f}" for a in np.asarray(r["acc"]))] for n, r in results.items()]
            title = (f"(a) Selective copying: {tcfg['tokens']} of {tcfg['symbols']} symbols in {tcfg['data_len']} "
                     f"positions, {tcfg['steps']} steps, per-symbol test accuracy (chance {1 / tcfg['symbols']:.3f})")
        else:
            lengths = [f * tcfg["train_len"] for f in tcfg["factors"]]
            headers = (["model", "layers", "params"] + [f"T={n}" for n in lengths]
                       + ["ms/step", "ms/step sequential"])
            rows = []
            for n, r in results.items():
                row = [LABELS[n], f"2×{r['hidden']}", r["params"]]
                row += [float(np.mean(r["acc_by_length"][str(m)])) for m in lengths]
                row += [f"{r['step_ms']:.1f}" if "step_ms" in r else "",
                        f"{r['step_ms_sequential']:.1f}" if "step_ms_sequential" in r else ""]
                rows.append(row)
            title = (f"(b) Induction heads: vocabulary {tcfg['vocab']}, trained at T = {tcfg['train_len']} for "
                     f"{tcfg['steps']} steps; last-position accuracy (mean of {cfg['seeds']} seeds, chance "
                     f"{1 / tcfg['vocab']:.3f}); ms per training step at T = {tcfg['train_len']}")
            plot_induction(results, tcfg, out / "selective_tasks_induction.png")
            figures.append("selective_tasks_induction.png")
        common.print_table(rows, headers, title=title)
        summary[task] = {"vocab": vocab, "results": results, "table": {"headers": headers, "rows": rows}}
    summary.update(load_average={"start": load_start, "end": os.getloadavg()}, wall_s=time.time() - start)
    path = common.write_results(out, summary)
    print(f"wrote {path}{''.join(', ' + str(out / f) for f in figures)} in {summary['wall_s']:.0f} s")
    return summary


if __name__ == "__main__":
    main()
