"""Proper-noun tagging with a bidirectional RNN, where the right context decides.

Run:  python experiments/tagging.py            (under a minute on 2 CPU cores)
      python experiments/tagging.py --pack     (training batches of packed rows, see below)
      python experiments/tagging.py --smoke    (seconds)

Task (many-to-many, aligned): a seeded grammar writes lower-cased sentences (so
capitalisation cannot help) and labels each word 1 if it is a proper noun. Six words are
ambiguous — "may", "will", "bill", "rose", "mark", "grace" are first names and also a modal,
a noun or a verb — and the grammar puts them where everything to their *left* is drawn
independently of their role: only the next word tells ("bill jones called" vs "bill is due").
A left-to-right RNN therefore cannot beat chance on them; a bidirectional one can.

Models: word embedding → LSTM (unidirectional) or → bidirectional LSTM, then a per-step
dense layer; same hidden size per direction. Reported: token F1 of the proper-noun class on
all words and on the ambiguous words alone.

Measured (seed 0, 600 steps, 1,000 test sentences): proper-noun F1 on the ambiguous words
0.52 unidirectional (accuracy 51%, a coin) vs 1.00 bidirectional; on all other words both
score 1.00. The unidirectional training loss settles at the floor its blindness implies,
(share of ambiguous words) × ln 2 = 0.067.

``--pack``: the training sentences are packed once into rows as long as the longest sentence
(``rnnjax.pack_sequences``, first-fit-decreasing), and each step draws ``batch`` rows, with
``resets`` so each sentence is tagged as if alone (the bidirectional LSTM too). A row holds
several sentences, so the run takes proportionally fewer steps to read as many sentences as
the padded run (``steps / sentences per row``): the same data in less time; measured numbers
in EXPERIMENTS.md.
"""

from __future__ import annotations

import pathlib
import sys
import time
from functools import partial
from typing import Any, NamedTuple

if __package__ in (None, ""):  # run as a script: make the `experiments` package importable
    sys.path.insert(0, str(pathlib.Path(__file__).resolve().parents[1]))

import jax
import jax.numpy as jnp
import numpy as np

import rnnjax as rj
from experiments import common

# ----------------------------------------------------------------------------- grammar

FIRST_NAMES = ["john", "anna", "peter", "maria", "david", "laura", "tom", "sarah", "paul", "emma"]
SURNAMES = ["smith", "jones", "brown", "taylor", "wilson", "evans", "clark", "turner", "hall"]
PLACES = ["london", "paris", "berlin", "madrid", "boston", "dublin", "rome", "oslo"]
# ambiguous word -> continuations that make it a common word (modal, noun or verb)
AMBIGUOUS = {
    "may": ["be late", "rain tonight", "come back soon", "not agree with us"],
    "will": ["be there", "arrive soon", "win again", "not help"],
    "bill": ["is due", "was paid", "came today", "is too high"],
    "rose": ["is red", "bloomed early", "smells sweet", "was cut"],
    "mark": ["is low", "was wrong", "shows the score", "was erased"],
    "grace": ["is rare", "was shown", "matters most", "is a virtue"],
}
# what follows a name (optionally after a surname)
NAME_VERBS = ["said hello", "called the office", "visited {place}", "smiled", "left early",
              "met {name}", "lives in {place}", "wrote to {name}", "comes from {place}"]
OTHER_CLAUSES = ["the weather was nice", "it was late", "the train left", "we went home",
                 "the office is closed", "prices went up", "the park was busy"]
# left context before a clause: independent of the clause and of any word's role
PREFIXES = ["", "yesterday", "i think", "they said", "then", "maybe", "in {place}", "so",
            "last week", "everyone knows"]


def _fill(rng: np.random.Generator, template: str) -> list[tuple[str, int]]:
    """Words of ``template`` with labels; ``{place}`` and ``{name}`` become proper nouns."""
    out = []
    for word in template.split():
        if word == "{place}":
            out.append((PLACES[rng.integers(len(PLACES))], 1))
        elif word == "{name}":
            out.append((FIRST_NAMES[rng.integers(len(FIRST_NAMES))], 1))
        else:
            out.append((word, 0))
    return out


def _clause(rng: np.random.Generator, p_ambiguous: float) -> list[tuple[str, int]]:
    kind = rng.random()
    if kind < p_ambiguous:  # an ambiguous word; its role is a fair coin
        word = list(AMBIGUOUS)[rng.integers(len(AMBIGUOUS))]
        if rng.random() < 0.5:
            conts = AMBIGUOUS[word]
            return [(word, 0)] + _fill(rng, conts[rng.integers(len(conts))])
        return [(word, 1)] + _name_tail(rng)
    if kind < p_ambiguous + (1 - p_ambiguous) / 2:
        return [(FIRST_NAMES[rng.integers(len(FIRST_NAMES))], 1)] + _name_tail(rng)
    return _fill(rng, OTHER_CLAUSES[rng.integers(len(OTHER_CLAUSES))])


def _name_tail(rng: np.random.Generator) -> list[tuple[str, int]]:
    surname = [(SURNAMES[rng.integers(len(SURNAMES))], 1)] if rng.random() < 0.5 else []
    return surname + _fill(rng, NAME_VERBS[rng.integers(len(NAME_VERBS))])


def sentence(rng: np.random.Generator, *, p_ambiguous: float = 0.5, max_clauses: int = 2):
    """One lower-cased sentence as ``(words, labels)``; label 1 marks a proper noun."""
    words = []
    for k in range(int(rng.integers(1, max_clauses + 1))):
        if k:
            words.append(("and", 0))
        words += _fill(rng, PREFIXES[rng.integers(len(PREFIXES))])
        words += _clause(rng, p_ambiguous)
    return [w for w, _ in words], [y for _, y in words]


VOCAB = ["<pad>"] + sorted(
    {w for ws in (FIRST_NAMES, SURNAMES, PLACES, list(AMBIGUOUS)) for w in ws}
    | {w for group in (NAME_VERBS, OTHER_CLAUSES, PREFIXES, *AMBIGUOUS.values())
       for t in group for w in t.split() if not w.startswith("{")}
    | {"and"}
)
WORD_INDEX = {w: i for i, w in enumerate(VOCAB)}
AMBIGUOUS_IDS = np.array([WORD_INDEX[w] for w in AMBIGUOUS])


def make_data(seed: int, num_train: int, num_test: int, *, p_ambiguous: float = 0.5,
              max_clauses: int = 2) -> dict:
    """Seeded train/test sets: word ids ``[N, T_max]`` (0-padded), labels, lengths, words."""
    rng = np.random.default_rng(seed)
    data = {}
    for split, n in (("train", num_train), ("test", num_test)):
        rows = [sentence(rng, p_ambiguous=p_ambiguous, max_clauses=max_clauses) for _ in range(n)]
        lengths = np.array([len(ws) for ws, _ in rows], np.int32)
        ids = np.zeros((n, lengths.max()), np.int32)
        labels = np.zeros((n, lengths.max()), np.int32)
        for i, (ws, ys) in enumerate(rows):
            ids[i, : len(ws)] = [WORD_INDEX[w] for w in ws]
            labels[i, : len(ys)] = ys
        data[split] = {"ids": ids, "labels": labels, "lengths": lengths,
                       "words": [ws for ws, _ in rows]}
    return data


# ----------------------------------------------------------------------------- model

CONFIG = {"num_train": 4000, "num_test": 1000, "embed": 32, "hidden": 48, "batch": 64,
          "steps": 600, "lr": 3e-3}
SMOKE = {"num_train": 600, "num_test": 200, "embed": 16, "hidden": 16, "batch": 32,
         "steps": 100, "lr": 1e-2}


class TaggerParams(NamedTuple):
    embed: jax.Array  # [V, E]
    encoder: Any  # LSTMParams (uni) or BiParams (bi)
    head: rj.DenseParams  # [H or 2H, 2]


def make_model(kind: str, cfg: dict) -> rj.SeqModel:
    """Embedding → LSTM (``kind="uni"``) or bidirectional LSTM (``"bi"``) → per-step dense."""
    e, h = cfg["embed"], cfg["hidden"]
    if kind == "uni":
        encoder, width = rj.rnn(rj.lstm(e, h)), h
    else:
        encoder, width = rj.bidirectional(rj.lstm(e, h), rj.lstm(e, h)), 2 * h

    def init(key):
        k1, k2, k3 = jax.random.split(key, 3)
        return TaggerParams(rj.embedding_init(k1, len(VOCAB), e), encoder.init(k2),
                            rj.dense_init(k3, width, 2))

    def apply(params, ids, *, lengths=None, resets=None, **_):
        xs = rj.embedding_lookup(params.embed, ids)  # [T, B, E]
        carry, hs = encoder.apply(params.encoder, xs, lengths=lengths, resets=resets)  # [T, B, width]
        return carry, rj.dense(params.head, hs)  # [T, B, 2]

    return rj.SeqModel(init, apply)


def loss_fn(model, params, batch, key):
    ids, labels, lengths, resets = batch  # resets: None, or packed rows' sentence starts
    _, logits = model.apply(params, ids, lengths=lengths, resets=resets)
    return rj.sequence_cross_entropy(logits, labels, lengths=lengths)


def packed_rows(split: dict):
    """The training sentences packed into rows of the longest sentence's length, and the mean
    number of sentences in a row."""
    seqs = [split["ids"][i, :n] for i, n in enumerate(split["lengths"])]
    tags = [split["labels"][i, :n] for i, n in enumerate(split["lengths"])]
    row = split["ids"].shape[1]
    packed = rj.pack_sequences(seqs, row)
    labels = rj.pack_sequences(tags, row)  # the same lengths give the same layout
    assert labels.layout == packed.layout
    rows = np.asarray(packed.xs), np.asarray(labels.xs), np.asarray(packed.lengths), np.asarray(packed.resets)
    return rows, len(seqs) / packed.layout.num_rows


def f1(pred: np.ndarray, gold: np.ndarray) -> float:
    """F1 of the positive class (proper noun)."""
    tp = np.sum(pred & gold)
    return float(2 * tp / max(np.sum(pred) + np.sum(gold), 1))


def evaluate(model, params, split: dict) -> dict:
    ids, labels, lengths = split["ids"].T, split["labels"].T, split["lengths"]
    _, logits = jax.jit(model.apply)(params, ids, lengths=lengths)
    pred = np.asarray(jnp.argmax(logits, -1)).astype(bool)  # [T, N]
    gold = labels.astype(bool)
    valid = np.arange(ids.shape[0])[:, None] < lengths
    amb = valid & np.isin(ids, AMBIGUOUS_IDS)
    per_word = {w: float(np.mean(pred[amb & (ids == WORD_INDEX[w])] == gold[amb & (ids == WORD_INDEX[w])]))
                for w in AMBIGUOUS}
    return {"f1": f1(pred[valid], gold[valid]), "f1_ambiguous": f1(pred[amb], gold[amb]),
            "accuracy_ambiguous": float(np.mean(pred[amb] == gold[amb])),
            "f1_other": f1(pred[valid & ~amb], gold[valid & ~amb]), "per_word": per_word}


def train(kind: str, cfg: dict, data: dict, seed: int, out: pathlib.Path):
    """Train with ``rj.fit`` (checkpoints and a metrics log in ``out``)."""
    model = make_model(kind, cfg)
    key_init, key_train = jax.random.split(jax.random.key(seed))
    optimizer = rj.make_optimizer(cfg["lr"])
    state = rj.init_train_state(model.init(key_init), optimizer, key_train)
    train_step = rj.make_train_step(partial(loss_fn, model), optimizer)
    split = data["train"]
    steps = cfg["steps"]
    if cfg.get("pack"):
        (ids, labels, lengths, resets), per_row = packed_rows(split)
        steps = max(1, round(steps / per_row))  # as many sentences read as the padded run's steps

        def batch(i):  # rows drawn as a function of the step alone, as below
            idx = np.random.default_rng([seed, i]).choice(ids.shape[1], cfg["batch"], replace=False)
            return ids[:, idx], labels[:, idx], lengths[idx], resets[:, idx]
    else:
        def batch(i):  # a function of the step alone, so a resumed run sees the same batches
            idx = np.random.default_rng([seed, i]).choice(len(split["ids"]), cfg["batch"], replace=False)
            return split["ids"][idx].T, split["labels"][idx].T, split["lengths"][idx], None

    with (rj.Checkpoints(out / f"checkpoints_{kind}", max_to_keep=1) as ckpt,
          rj.MetricsLog(out / f"train_{kind}.jsonl") as log):
        start = time.perf_counter()
        state = rj.fit(train_step, state, batch, steps, checkpoints=ckpt, log=log)
        seconds = time.perf_counter() - start
        loss = log.series("loss")[1]
    n_params = int(sum(x.size for x in jax.tree_util.tree_leaves(state.params)))
    return model, state.params, {"loss": loss, "train_seconds": seconds, "params": n_params, "steps": steps}


def plot(results: dict, path: pathlib.Path) -> None:
    fig, (ax1, ax2) = common.subplots(1, 2, figsize=(10, 3.6))
    for kind, r in results["models"].items():
        loss = np.convolve(r["loss"], np.ones(25) / 25, mode="valid")
        ax1.plot(loss, label=LABELS[kind])
    ax1.axhline(results["left_context_loss_floor"], color="gray", lw=0.8, ls="--",
                label="(ambiguous share) × ln 2")
    ax1.set(xlabel="step", ylabel="train cross-entropy (25-step mean)", yscale="log")
    ax1.legend()
    words = list(AMBIGUOUS)
    for k, (kind, r) in enumerate(results["models"].items()):
        ax2.bar(np.arange(len(words)) + 0.4 * k - 0.2, [r["per_word"][w] for w in words], 0.4,
                label=LABELS[kind])
    ax2.axhline(0.5, color="gray", lw=0.8, ls="--")
    ax2.set(xticks=range(len(words)), xticklabels=words, ylabel="test accuracy on the word",
            ylim=(0, 1.05))
    ax2.legend(loc="lower right")
    common.save_figure(fig, path, dpi=110, tight=True)


LABELS = {"uni": "unidirectional LSTM", "bi": "bidirectional LSTM"}


def main(argv=None) -> dict:
    parser = common.base_parser(__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=None)
    parser.add_argument("--pack", action="store_true", help="train on packed rows (rnnjax.pack_sequences)")
    args = parser.parse_args(argv)
    cfg = {**common.pick_config(args, CONFIG, SMOKE), "pack": args.pack}
    out = common.run_dir("tagging", args.out)
    data = make_data(args.seed, cfg["num_train"], cfg["num_test"])
    train_split = data["train"]
    valid = np.arange(train_split["ids"].shape[1]) < train_split["lengths"][:, None]
    ambiguous_share = float(np.isin(train_split["ids"], AMBIGUOUS_IDS)[valid].mean())
    # a model that sees only the left context can do no better than a coin on ambiguous words:
    # its training cross-entropy cannot go below (share of ambiguous words) * ln 2 on fresh data
    results = {"config": cfg, "seed": args.seed, "models": {}, "ambiguous_share": ambiguous_share,
               "left_context_loss_floor": ambiguous_share * float(np.log(2))}
    for kind in ("uni", "bi"):
        model, params, log = train(kind, cfg, data, args.seed, out)
        results["models"][kind] = {**log, **evaluate(model, params, data["test"])}
    rows = [[LABELS[k], r["params"], r["f1"], r["f1_other"], r["f1_ambiguous"], r["accuracy_ambiguous"],
             r["train_seconds"]] for k, r in results["models"].items()]
    common.print_table(rows, ["model", "params", "F1 all", "F1 unambiguous", "F1 ambiguous",
                              "acc. ambiguous", "train s"], title="Proper-noun tagging, test set")
    print(f"left-context loss floor {results['left_context_loss_floor']:.4f}; final train loss (mean of "
          f"last 50 steps): " + ", ".join(f"{k} {np.mean(r['loss'][-50:]):.4f}" for k, r in results["models"].items()))
    plot(results, out / "tagging.png")
    common.write_results(out, results)
    return results


if __name__ == "__main__":
    main()
