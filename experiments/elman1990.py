"""Elman (1990), "Finding structure in time": temporal XOR and the b/d/g letter task.

Run:  python experiments/elman1990.py            (about 1 min on 2 CPU cores)
      python experiments/elman1990.py --smoke    (seconds)

Both tasks train an Elman network to predict the next element of a stream, and the interesting
output is *where* in the stream its prediction error is low:

- Temporal XOR: a stream of bits in which every third bit is the XOR of the two before it. Only
  those bits are predictable, so after training the error should drop at every third step and
  stay at chance (RMS 0.5) elsewhere. Paper: 3000-bit stream, 2 hidden units, 600 passes.
- Letters: consonants b, d, g in random order, each followed by its vowels (b→ba, d→dii,
  g→guuu), every letter a 6-bit phonetic feature vector (consonant, vowel, interrupted, high,
  back, voiced). Which consonant comes next is unpredictable, the vowels after it are not: the
  error should be high at consonant onsets and low on vowels. Paper: 1000 consonants (≈ 3000
  letters), 20 hidden units, 200 passes.

As in the paper: sigmoid outputs trained on squared error, the same stream sizes, hidden sizes
and number of passes. Differences: full backpropagation through time instead of Elman's
one-step context copy, Adam (lr 1e-2 / 3e-3) instead of plain SGD, and each training stream cut
into 10 parallel pieces (at triple / word boundaries) so that one pass is one batched step;
3 seeds. Errors are measured on a fresh test stream.

Measured (full run, 1 min wall / 0.3 min CPU): XOR RMS error 0.30 / 0.29 on the XOR bit vs
0.53 on the random bits in 2 of 3 seeds (the third stayed at 0.50 everywhere); letters:
consonant / vowel error 2.6, 3.7, 3.6, falling along each word (0.47 at the consonant, then
0.18, 0.05, 0.02). Details: EXPERIMENTS.md, "Long-term memory".
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

CONFIG = dict(xor=dict(triples=1000, hidden=2, passes=600, lr=1e-2),
              letters=dict(consonants=1000, hidden=20, passes=200, lr=3e-3),
              pieces=10, seeds=3, test_pieces=20)
SMOKE = dict(xor=dict(triples=60, hidden=2, passes=40, lr=3e-2),
             letters=dict(consonants=60, hidden=8, passes=40, lr=3e-2), pieces=4, seeds=2, test_pieces=4)


# --------------------------------------------------------------------------------- data


def pad_streams(streams: list[np.ndarray]):
    """Next-element pairs of equal-width streams: ``inputs, targets [T, N, F]``, ``lengths [N]``."""
    lengths = np.array([len(s) - 1 for s in streams], np.int32)
    num_steps, width = int(lengths.max()), streams[0].shape[-1]
    inputs = np.zeros((num_steps, len(streams), width), np.float32)
    targets = np.zeros_like(inputs)
    for n, s in enumerate(streams):
        inputs[: lengths[n], n], targets[: lengths[n], n] = s[:-1], s[1:]
    return {"inputs": inputs, "targets": targets, "lengths": lengths}


def make_xor_data(rng: np.random.Generator, triples: int, pieces: int):
    """The bit stream cut into ``pieces`` streams of whole triples; also each target's phase."""
    bits = mt.xor_stream(rng, triples).astype(np.float32)
    streams = [b[:, None] for b in np.split(bits, pieces)]
    data = pad_streams(streams)
    data["phase"] = (np.arange(data["inputs"].shape[0]) + 1) % 3  # phase of the *target* bit
    return data


def make_letter_data(rng: np.random.Generator, consonants: int, pieces: int):
    """The letter stream cut into ``pieces`` streams of whole words; also the target letters."""
    texts = [mt.letter_stream(rng, consonants // pieces) for _ in range(pieces)]
    data = pad_streams([mt.letter_features(t) for t in texts])
    data["texts"] = texts
    return data


# ------------------------------------------------------------------------------- model


def make_model(input_size: int, hidden: int):
    init, apply = mt.make_model(rj.elman(input_size, hidden), hidden, input_size)

    def predict(params, xs, lengths):
        return jax.nn.sigmoid(apply(params, xs, lengths)[0])  # [T, N, F] in (0, 1)

    return init, predict


def loss_fn(predict, data, params, _, key):
    """Squared error of the next element, over the whole training stream (one pass)."""
    return rj.sequence_mse(predict(params, data["inputs"], data["lengths"]), data["targets"],
                           lengths=data["lengths"])


def error_per_step(predict, data, params):
    """Squared error summed over features at every step: ``[T, N]`` (zero at padding)."""
    pred = predict(params, data["inputs"], data["lengths"])
    err = jnp.sum((pred - data["targets"]) ** 2, axis=-1)
    return jnp.where(jnp.arange(err.shape[0])[:, None] < data["lengths"], err, 0.0)


def train(task: dict, input_size: int, data: dict, cfg: dict, seed: int, name: str):
    init, predict = make_model(input_size, task["hidden"])
    arrays = {k: jnp.asarray(data[k]) for k in ("inputs", "targets", "lengths")}
    optimizer = rj.make_optimizer(task["lr"])
    result = mt.train_seeds(init, partial(loss_fn, predict, arrays), optimizer,
                            seeds=range(seed, seed + cfg["seeds"]), steps=task["passes"],
                            eval_every=task["passes"], desc=name)
    return result, predict


# --------------------------------------------------------------------------- analysis


def xor_analysis(errors: np.ndarray, data: dict) -> dict:
    """RMS error by the phase of the target bit (2 = the XOR bit), per seed: ``[S, 3]``."""
    valid = np.arange(errors.shape[1])[:, None] < data["lengths"]  # [T, N]
    phase = np.broadcast_to(data["phase"][:, None], valid.shape)
    rms = np.array([[np.sqrt(e[valid & (phase == p)].mean()) for p in range(3)] for e in errors])
    return {"rms_by_phase": rms, "xor_over_random": rms[:, 2] / rms[:, :2].mean(1)}


def letter_analysis(errors: np.ndarray, data: dict) -> dict:
    """Error by target letter and by position within the word, per seed."""
    letters = sorted(mt.LETTER_FEATURES)
    by_letter = {c: [] for c in letters}
    by_pos = {p: [] for p in range(4)}  # 0 = consonant onset, 1..3 = vowels
    for e in errors:  # [T, N]
        sums_l = {c: [] for c in letters}
        sums_p = {p: [] for p in range(4)}
        for n, text in enumerate(data["texts"]):
            pos = np.concatenate([np.arange(len(mt.LETTER_WORDS[c])) for c in text if c in "bdg"])
            for t in range(len(text) - 1):  # the error at step t is about letter t + 1
                sums_l[text[t + 1]].append(e[t, n])
                sums_p[pos[t + 1]].append(e[t, n])
        for c in letters:
            by_letter[c].append(float(np.mean(sums_l[c])))
        for p in range(4):
            by_pos[p].append(float(np.mean(sums_p[p])))
    consonant = np.mean([by_letter[c] for c in "bdg"], 0)
    vowel = np.mean([by_letter[c] for c in "aiu"], 0)
    return {"by_letter": by_letter, "by_position": by_pos, "consonant_error": consonant,
            "vowel_error": vowel, "consonant_over_vowel": consonant / vowel}


def plot(xor_err, xor_data, let_err, let_data, path) -> None:
    fig, axes = common.subplots(1, 2, figsize=(11, 3.6), layout="constrained")
    ax = axes[0]
    span = 12  # Elman's Fig. 3: RMS error over 12 consecutive steps, averaged over cycles
    valid = np.arange(xor_err.shape[1])[:, None] < xor_data["lengths"]
    usable = (int(valid.all(1).sum()) // span) * span
    sq = xor_err[:, :usable].reshape(xor_err.shape[0], -1, span, xor_err.shape[2])  # [S, cycles, 12, N]
    rms = np.sqrt(sq.mean(axis=(1, 3)))  # [S, 12]
    for s, r in enumerate(rms):
        ax.plot(np.arange(span), r, "o-", color="C0", alpha=0.6, label="seeds" if s == 0 else None)
    for t in range(span):
        if (t + 1) % 3 == 2:
            ax.axvspan(t - 0.4, t + 0.4, color="C2", alpha=0.15, lw=0)
    ax.set_xticks(range(span))
    ax.set_xlabel("step in stream (shaded: the next bit is the XOR of the two before)")
    ax.set_ylabel("RMS prediction error")
    ax.set_title("Temporal XOR")
    ax.grid(True, alpha=0.3)
    ax.legend(fontsize=8)

    ax = axes[1]
    text = let_data["texts"][0][:25]
    e = let_err[:, : len(text) - 1, 0]  # [S, 24], step t predicts letter t + 1
    for s in range(e.shape[0]):
        ax.plot(np.arange(1, len(text)), e[s], "o-", color="C1", alpha=0.6, label="seeds" if s == 0 else None)
    ax.set_xticks(np.arange(1, len(text)))
    ax.set_xticklabels(list(text[1:]))
    ax.set_xlabel("letter being predicted")
    ax.set_ylabel("squared error (6 features)")
    ax.set_title("Letter sequence (b→ba, d→dii, g→guuu)")
    ax.grid(True, alpha=0.3)
    ax.legend(fontsize=8)
    common.save_figure(fig, path, dpi=90)


def main(argv=None) -> dict:
    args = common.base_parser(__doc__.splitlines()[0]).parse_args(argv)
    cfg = SMOKE if args.smoke else CONFIG
    out = common.run_dir("elman1990", args.out)
    start = time.time()
    rng = np.random.default_rng(args.seed)
    xcfg, lcfg = cfg["xor"], cfg["letters"]
    xor_train = make_xor_data(rng, xcfg["triples"], cfg["pieces"])
    xor_test = make_xor_data(rng, xcfg["triples"] * cfg["test_pieces"] // cfg["pieces"], cfg["test_pieces"])
    let_train = make_letter_data(rng, lcfg["consonants"], cfg["pieces"])
    let_test = make_letter_data(rng, lcfg["consonants"] * cfg["test_pieces"] // cfg["pieces"], cfg["test_pieces"])

    xor_result, xor_predict = train(xcfg, 1, xor_train, cfg, args.seed, "xor")
    let_result, let_predict = train(lcfg, 6, let_train, cfg, args.seed, "letters")
    xor_err = np.asarray(jax.vmap(partial(error_per_step, xor_predict, {k: jnp.asarray(xor_test[k]) for k in (
        "inputs", "targets", "lengths")}))(xor_result.states.params))  # [S, T, N]
    let_err = np.asarray(jax.vmap(partial(error_per_step, let_predict, {k: jnp.asarray(let_test[k]) for k in (
        "inputs", "targets", "lengths")}))(let_result.states.params))
    xor = xor_analysis(xor_err, xor_test)
    letters = letter_analysis(let_err, let_test)
    mt.save_checkpoint(out, "xor", xor_result.states, int(xcfg["passes"]))
    mt.save_checkpoint(out, "letters", let_result.states, int(lcfg["passes"]))

    rows = [[f"XOR: RMS error, target bit phase {p}" + (" (XOR bit)" if p == 2 else " (random bit)"),
             *[float(v) for v in xor["rms_by_phase"][:, p]]] for p in range(3)]
    rows += [[f"letters: squared error, next letter '{c}'", *letters["by_letter"][c]]
             for c in ("b", "d", "g", "a", "i", "u")]
    rows += [["letters: consonant / vowel error", *[float(v) for v in letters["consonant_over_vowel"]]]]
    headers = ["measure"] + [f"seed {args.seed + s}" for s in range(cfg["seeds"])]
    common.print_table(rows, headers, title="Elman 1990 on a fresh test stream")
    plot(xor_err, xor_test, let_err, let_test, out / "elman1990.png")
    summary = {"config": cfg, "seed": args.seed, "xor": xor, "letters": letters,
               "xor_train_loss": {"first": xor_result.loss[0], "last": xor_result.loss[-1]},
               "letters_train_loss": {"first": let_result.loss[0], "last": let_result.loss[-1]},
               "table": {"headers": headers, "rows": rows}, "wall_s": time.time() - start}
    common.write_summary(out, summary, "elman1990.png")
    return summary


if __name__ == "__main__":
    main()
