"""Sentiment classification, sequence → vector: embedding → bidirectional LSTM → pooled classifier.

Run:  python experiments/sentiment.py                  (synthetic corpus; about 1 min)
      python experiments/sentiment.py --data aclImdb    (the IMDB review archive, if you have it)
      python experiments/sentiment.py --vectors glove.6B.100d.txt   (GloVe-format vectors)
      python experiments/sentiment.py --smoke

Data: with ``--data PATH`` it reads the standard IMDB layout
``PATH/{train,test}/{pos,neg}/*.txt`` (Maas et al. 2011). Without it — the default, which
needs no download — it runs on a SYNTHETIC review-like corpus from a seeded grammar, where
the label depends on negation ("the plot was not good") and on long-range contrast ("at first
the acting seemed great ... but later it was dull": the later judgement wins), buried in
neutral filler, so a bag of words cannot solve it. Results on it say nothing about real
reviews.

Pretrained embeddings: ``--vectors FILE`` reads a GloVe-format text file. Without it, the
script makes its own: word vectors from a truncated SVD of the positive PMI co-occurrence
matrix of an unlabelled corpus (written to ``runs/sentiment/vectors.txt`` in GloVe format and
read back through the same loader).

Compared: last-state vs masked-mean pooling; embeddings trained from random, pretrained and
frozen, pretrained and fine-tuned.

Measured on the synthetic corpus (seed 0, 500 steps, 2,000 test reviews): every variant ends
at 100% test accuracy, while a bag of words gets 53% (chance); they differ in pace. Last-state
pooling passes 95% after 100 steps, masked-mean pooling after 150, and mean pooling on frozen
self-made vectors after 225 (fine-tuning the same vectors: 150).
"""

from __future__ import annotations

import collections
import pathlib
import re
import sys
import time
from functools import partial
from typing import NamedTuple

if __package__ in (None, ""):  # run as a script: make the `experiments` package importable
    sys.path.insert(0, str(pathlib.Path(__file__).resolve().parents[1]))

import jax
import jax.numpy as jnp
import numpy as np
import optax

import rnnjax as rj
from experiments import common

# ----------------------------------------------------------------------------- IMDB loader

_TOKEN = re.compile(r"[a-z0-9]+(?:'[a-z]+)?|[!?]")


def tokenize(text: str) -> list[str]:
    """Lower-case word tokens; IMDB's ``<br />`` line breaks are dropped."""
    return _TOKEN.findall(text.lower().replace("<br />", " "))


def load_imdb(path, split: str, *, max_per_class: int | None = None) -> tuple[list[str], np.ndarray]:
    """Reviews and labels (1 = pos, 0 = neg) from ``path/<split>/{pos,neg}/*.txt``.

    Files are read in sorted name order, ``neg`` first, so the result is deterministic;
    ``max_per_class`` keeps the first that many of each class.
    """
    root = pathlib.Path(path) / split
    texts, labels = [], []
    for label, sub in ((0, "neg"), (1, "pos")):
        folder = root / sub
        if not folder.is_dir():
            raise FileNotFoundError(f"--data: expected the IMDB layout with {folder}/*.txt")
        files = sorted(folder.glob("*.txt"))[:max_per_class]
        texts += [f.read_text(encoding="utf-8") for f in files]
        labels += [label] * len(files)
    return texts, np.array(labels, np.int32)


def build_vocab(token_lists, *, max_size: int, min_count: int = 1) -> list[str]:
    """``["<pad>", "<unk>", most frequent words...]``; ties broken alphabetically."""
    counts = collections.Counter(t for tokens in token_lists for t in tokens)
    ranked = sorted((w for w, c in counts.items() if c >= min_count), key=lambda w: (-counts[w], w))
    return ["<pad>", "<unk>"] + ranked[: max_size - 2]


def encode(token_lists, vocab: list[str], max_len: int) -> tuple[np.ndarray, np.ndarray]:
    """Ids ``[N, T]`` with ``T = min(max_len, longest)`` (0-padded, 1 = unknown; long reviews
    keep their *last* ``max_len`` tokens, where reviews tend to conclude) and lengths ``[N]``."""
    index = {w: i for i, w in enumerate(vocab)}
    width = min(max_len, max(len(t) for t in token_lists))
    ids = np.zeros((len(token_lists), width), np.int32)
    lengths = np.zeros(len(token_lists), np.int32)
    for n, tokens in enumerate(token_lists):
        tokens = tokens[len(tokens) - min(len(tokens), width):]
        ids[n, : len(tokens)] = [index.get(t, 1) for t in tokens]
        lengths[n] = len(tokens)
    return ids, lengths


# ------------------------------------------------------------------- synthetic review corpus

POSITIVE = ["good", "great", "excellent", "wonderful", "brilliant", "moving", "funny", "superb"]
NEGATIVE = ["bad", "awful", "boring", "terrible", "dull", "weak", "silly", "painful"]
NEGATORS = ["not", "never", "hardly"]
ASPECTS = ["the plot", "the acting", "the film", "the story", "the music", "the ending",
           "the cast", "the dialogue"]
FILLER = [
    "i watched it with my brother on a rainy sunday",
    "the cinema was almost empty that night",
    "it runs for about two hours",
    "the director also made a documentary last year",
    "there is a long scene on a train",
    "most of it was shot in the north",
    "my friend had read the book before",
    "the trailer shows the main characters",
    "we bought popcorn and sat near the back",
    "it is based on a true story from the sixties",
    "the lead actor plays a teacher",
    "there are three songs in it",
]


def _judgement(rng, verb: str) -> tuple[list[str], int]:
    """"<aspect> <verb> [negator] <adjective> [and <adjective of the same polarity>]" and its
    polarity (1 positive). The coordinated pairs give word vectors a distributional hint of
    polarity, as in real reviews ("funny and moving")."""
    positive = rng.random() < 0.5
    words_of = POSITIVE if positive else NEGATIVE
    first, second = rng.choice(len(words_of), size=2, replace=False)
    negated = rng.random() < 0.4
    words = ASPECTS[rng.integers(len(ASPECTS))].split() + [verb]
    if negated:
        words.append(NEGATORS[rng.integers(len(NEGATORS))])
    words.append(words_of[first])
    if rng.random() < 0.3:
        words += ["and", words_of[second]]
    return words, int(positive != negated)


def review(rng: np.random.Generator, *, num_filler: tuple[int, int] = (1, 5)) -> tuple[list[str], int]:
    """One synthetic review ``(tokens, label)``; the label is decided by the grammar:

    - plain: one judgement "the plot was [not] good"; label = its polarity, flipped by a negator;
    - contrast: "at first <judgement A> ... but later <judgement B>": label = polarity of B,
      and A has the opposite polarity, so the early cue misleads; filler sits between them.
    """
    def filler(k):
        out = []
        for _ in range(k):
            out += FILLER[rng.integers(len(FILLER))].split()
        return out

    lo, hi = num_filler
    if rng.random() < 0.5:
        words, label = _judgement(rng, "was")
        n_before = int(rng.integers(lo, hi + 1))
        return filler(n_before) + words + filler(int(rng.integers(0, 2))), label
    first, first_label = _judgement(rng, "seemed")
    while True:
        later, label = _judgement(rng, "was")
        if label != first_label:
            break
    tokens = (filler(int(rng.integers(0, 2))) + ["at", "first"] + first
              + filler(int(rng.integers(lo, hi + 1))) + ["but", "later"] + later)
    return tokens, label


def make_synthetic(seed: int, num_train: int, num_test: int, num_unlabelled: int, **kw) -> dict:
    """Seeded synthetic splits: ``{"train"|"test"|"unlabelled": (token lists, labels)}``."""
    rng = np.random.default_rng(seed)
    out = {}
    for split, n in (("train", num_train), ("test", num_test), ("unlabelled", num_unlabelled)):
        rows = [review(rng, **kw) for _ in range(n)]
        out[split] = ([t for t, _ in rows], np.array([y for _, y in rows], np.int32))
    return out


# ----------------------------------------------------------------------- pretrained vectors


def ppmi_svd_vectors(token_lists, vocab: list[str], dim: int, *, window: int = 4, seed: int = 0) -> np.ndarray:
    """Word vectors ``[V, dim]`` from the positive PMI matrix of co-occurrences within
    ``window`` words, reduced by truncated SVD (``U_d √S_d``; Levy & Goldberg 2014)."""
    import scipy.sparse
    from sklearn.decomposition import TruncatedSVD

    index = {w: i for i, w in enumerate(vocab)}
    rows, cols = [], []
    for tokens in token_lists:
        ids = np.array([index.get(t, 1) for t in tokens])
        for d in range(1, window + 1):
            rows += [ids[:-d], ids[d:]]
            cols += [ids[d:], ids[:-d]]
    rows, cols = np.concatenate(rows), np.concatenate(cols)
    counts = scipy.sparse.coo_matrix((np.ones(len(rows)), (rows, cols)), shape=(len(vocab),) * 2).tocsr()
    total, word = counts.sum(), np.asarray(counts.sum(1)).ravel()
    coo = counts.tocoo()
    pmi = np.log(coo.data * total / (word[coo.row] * word[coo.col]))
    ppmi = scipy.sparse.csr_matrix((np.maximum(pmi, 0.0), (coo.row, coo.col)), shape=counts.shape)
    svd = TruncatedSVD(dim, random_state=seed).fit(ppmi)
    return svd.transform(ppmi) / np.sqrt(svd.singular_values_)  # U_d S_d / sqrt(S_d) = U_d sqrt(S_d)


def write_glove(path: pathlib.Path, vocab: list[str], vectors: np.ndarray) -> pathlib.Path:
    """GloVe text format: one ``word v_1 ... v_d`` line per word (``<pad>`` left out)."""
    lines = [" ".join([w] + [f"{x:.6f}" for x in v]) for w, v in zip(vocab, vectors, strict=True) if w != "<pad>"]
    path.write_text("\n".join(lines) + "\n")
    return path


# ----------------------------------------------------------------------------- model

CONFIG = {"num_train": 6000, "num_test": 2000, "num_unlabelled": 20000, "vocab": 20000,
          "max_len": 200, "filler": (2, 8), "embed": 32, "hidden": 32, "batch": 64, "steps": 500,
          "lr": 3e-3, "eval_every": 25}
SMOKE = {**CONFIG, "num_train": 600, "num_test": 200, "num_unlabelled": 1000, "filler": (1, 5),
         "embed": 16, "hidden": 16, "steps": 80, "lr": 1e-2, "eval_every": 40}
VARIANTS = {  # name -> (pooling, embeddings)
    "last, random": ("last", "random"),
    "mean, random": ("mean", "random"),
    "mean, pretrained frozen": ("mean", "frozen"),
    "mean, pretrained fine-tuned": ("mean", "finetuned"),
    "last, pretrained fine-tuned": ("last", "finetuned"),
}


class ClassifierParams(NamedTuple):
    embed: jax.Array  # [V, E]
    encoder: rj.BiParams  # two LSTMParams
    head: rj.DenseParams  # [2H, 2]


def make_model(pooling: str, cfg: dict, vocab_size: int, embed_size: int) -> rj.SeqModel:
    """Embedding → bidirectional LSTM → pooled ``[2H]`` vector → 2 logits.

    ``pooling="last"``: the final states of both directions (forward after each review's last
    word, backward after its first: ``carry_hidden`` of the ``BiCarry``); ``"mean"``: the mean
    of the outputs over the valid (unpadded) steps, ``pool_mean``.
    """
    h = cfg["hidden"]
    encoder = rj.bidirectional(rj.lstm(embed_size, h), rj.lstm(embed_size, h))

    def init(key):
        k1, k2, k3 = jax.random.split(key, 3)
        return ClassifierParams(rj.embedding_init(k1, vocab_size, embed_size), encoder.init(k2),
                                rj.dense_init(k3, 2 * h, 2))

    def apply(params, ids, *, lengths=None, **_):
        carry, ys = encoder.apply(params.encoder, rj.embedding_lookup(params.embed, ids), lengths=lengths)
        pooled = rj.carry_hidden(carry) if pooling == "last" else rj.pool_mean(ys, lengths)  # [B, 2H]
        return carry, rj.dense(params.head, pooled)  # [B, 2]

    return rj.SeqModel(init, apply)


def loss_fn(model, params, batch, key):
    ids, lengths, labels = batch
    _, logits = model.apply(params, ids, lengths=lengths)
    return rj.classification_cross_entropy(logits, labels)


def train(name: str, cfg: dict, data: dict, pretrained, seed: int, out: pathlib.Path):
    pooling, embeddings = VARIANTS[name]
    vocab_size, embed_size = (pretrained.shape if embeddings != "random" else (len(data["vocab"]), cfg["embed"]))
    model = make_model(pooling, cfg, vocab_size, embed_size)
    key_init, key_train = jax.random.split(jax.random.key(seed))
    params = model.init(key_init)
    optimizer = rj.make_optimizer(cfg["lr"])
    if embeddings != "random":
        params = params._replace(embed=jnp.asarray(pretrained))
    if embeddings == "frozen":  # the table gets no updates and no optimiser state
        mask = jax.tree_util.tree_map(lambda _: False, params)._replace(embed=True)
        optimizer = optax.selective_transform(optimizer, freeze_mask=mask)
    state = rj.init_train_state(params, optimizer, key_train)
    train_step = rj.make_train_step(partial(loss_fn, model), optimizer)
    ids, lengths, labels = data["train"]

    def batch(i):  # a function of the step alone, so a resumed run sees the same batches
        idx = np.random.default_rng([seed, i]).choice(len(labels), cfg["batch"], replace=len(labels) < cfg["batch"])
        return ids[idx].T, lengths[idx], labels[idx]

    accuracy = make_evaluator(model, data["test"])
    tag = name.replace(", ", "_").replace(" ", "-")
    with (rj.Checkpoints(out / f"checkpoints_{tag}", max_to_keep=1) as ckpt,
          rj.MetricsLog(out / f"train_{tag}.jsonl") as log,
          rj.MetricsLog(out / f"eval_{tag}.jsonl") as evals):
        evals.truncate(ckpt.latest_step or 0)

        def callback(step, state, metrics):  # test accuracy along the way, to show the pace
            if step % cfg["eval_every"] == 0:
                evals.write(step, {"test_accuracy": accuracy(state.params)})

        start = time.perf_counter()
        state = rj.fit(train_step, state, batch, cfg["steps"], checkpoints=ckpt, log=log, callback=callback)
        seconds = time.perf_counter() - start
        loss = log.series("loss")[1]
        eval_steps, eval_acc = evals.series("test_accuracy") if evals.rows else ([], [])
    changed = float(jnp.abs(state.params.embed - params.embed).max()) if embeddings != "random" else None
    return state.params, {"loss": loss, "train_seconds": seconds, "embedding_max_change": changed,
                          "eval_step": eval_steps, "eval_accuracy": eval_acc,
                          "test_accuracy": accuracy(state.params)}


def make_evaluator(model, split, batch: int = 500):
    """``accuracy(params) -> float`` on ``split``, in equal-size batches (the last one wrapped
    around) so that the jitted model traces once."""
    ids, lengths, labels = split
    apply = jax.jit(model.apply)

    def accuracy(params) -> float:
        correct = 0
        for i in range(0, len(labels), batch):
            idx = np.arange(i, i + batch) % len(labels)
            _, logits = apply(params, ids[idx].T, lengths=lengths[idx])
            correct += int(np.sum((np.asarray(logits).argmax(-1) == labels[idx])[: len(labels) - i]))
        return correct / len(labels)

    return accuracy


def bag_of_words_accuracy(data: dict) -> float:
    """Reference point: logistic regression on word counts (no order, so no negation scope)."""
    from sklearn.feature_extraction.text import CountVectorizer
    from sklearn.linear_model import LogisticRegression

    vec = CountVectorizer(analyzer=lambda tokens: tokens)
    x_train = vec.fit_transform(data["train_tokens"])
    clf = LogisticRegression(max_iter=2000).fit(x_train, data["train"][2])
    return float(clf.score(vec.transform(data["test_tokens"]), data["test"][2]))


def make_data(args, cfg: dict) -> dict:
    """Token lists, vocabulary and encoded splits; from ``--data`` (IMDB) or the synthetic grammar."""
    if args.data is not None:
        limit = 500 if args.smoke else None
        texts, y_train = load_imdb(args.data, "train", max_per_class=limit)
        train_tokens = [tokenize(t) for t in texts]
        texts, y_test = load_imdb(args.data, "test", max_per_class=limit)
        test_tokens = [tokenize(t) for t in texts]
        unlabelled, source = train_tokens, f"IMDB ({args.data})"
    else:
        corpus = make_synthetic(args.seed, cfg["num_train"], cfg["num_test"], cfg["num_unlabelled"],
                                num_filler=tuple(cfg["filler"]))
        (train_tokens, y_train), (test_tokens, y_test) = corpus["train"], corpus["test"]
        unlabelled, source = corpus["unlabelled"][0], "SYNTHETIC review-like corpus (seeded grammar)"
    vocab = build_vocab(train_tokens, max_size=cfg["vocab"], min_count=2 if args.data else 1)
    data = {"vocab": vocab, "source": source, "unlabelled": unlabelled,
            "train_tokens": train_tokens, "test_tokens": test_tokens}
    for split, tokens, y in (("train", train_tokens, y_train), ("test", test_tokens, y_test)):
        data[split] = (*encode(tokens, vocab, cfg["max_len"]), y)
    return data


def plot(results: dict, path: pathlib.Path) -> None:
    fig, (ax1, ax2) = common.subplots(1, 2, figsize=(11, 3.8))
    for name, r in results["models"].items():
        ax1.plot(np.convolve(r["loss"], np.ones(25) / 25, mode="valid"), label=name)
        ax2.plot(r["eval_step"], r["eval_accuracy"], marker="o", ms=3, label=name)
    ax1.set(xlabel="step", ylabel="train cross-entropy (25-step mean)", yscale="log")
    ax1.legend(fontsize=8)
    ax2.axhline(results["bag_of_words_accuracy"], color="gray", ls="--", lw=0.8,
                label="bag of words (logistic regression)")
    ax2.set(xlabel="step", ylabel="test accuracy", ylim=(0.4, 1.01))
    ax2.legend(fontsize=8, loc="lower right")
    fig.suptitle(results["data"], fontsize=10)
    common.save_figure(fig, path, dpi=110, tight=True)


def main(argv=None) -> dict:
    parser = common.base_parser(__doc__.splitlines()[0])
    parser.add_argument("--data", type=pathlib.Path, default=None, help="the aclImdb folder")
    parser.add_argument("--vectors", type=pathlib.Path, default=None, help="GloVe-format text file")
    parser.add_argument("--steps", type=int, default=None)
    parser.add_argument("--variants", nargs="+", choices=list(VARIANTS), default=list(VARIANTS))
    args = parser.parse_args(argv)
    cfg = common.pick_config(args, CONFIG, SMOKE)
    out = common.run_dir("sentiment", args.out)
    data = make_data(args, cfg)
    print(f"data: {data['source']}; vocabulary {len(data['vocab'])} words")
    vectors_path = args.vectors
    if vectors_path is None and any(VARIANTS[v][1] != "random" for v in args.variants):
        dim = cfg["embed"]
        vectors_path = write_glove(out / "vectors.txt", data["vocab"],
                                   ppmi_svd_vectors(data["unlabelled"], data["vocab"], dim, seed=args.seed))
    pretrained = None
    if vectors_path is not None:
        loaded = rj.load_vectors(vectors_path, data["vocab"], key=jax.random.key(args.seed))
        pretrained = np.asarray(loaded.table)
        print(f"vectors: {vectors_path} covers {loaded.coverage:.1%} of the vocabulary")
    results = {"config": cfg, "seed": args.seed, "data": data["source"], "models": {},
               "vectors": None if vectors_path is None else str(vectors_path),
               "bag_of_words_accuracy": bag_of_words_accuracy(data)}
    for name in args.variants:
        _, results["models"][name] = train(name, cfg, data, pretrained, args.seed, out)
    early = min(4 * cfg["eval_every"], cfg["steps"])

    def at(r, step):
        return r["eval_accuracy"][list(r["eval_step"]).index(step)] if step in list(r["eval_step"]) else ""

    def reach(r, level=0.95):
        return next((int(t) for t, a in zip(r["eval_step"], r["eval_accuracy"], strict=True) if a >= level), "never")

    rows = [[name, at(r, early), reach(r), r["test_accuracy"], r["train_seconds"]]
            for name, r in results["models"].items()]
    rows.append(["bag of words (logistic regression)", "", "", results["bag_of_words_accuracy"], ""])
    common.print_table(rows, ["pooling, embeddings", f"test acc. at step {early}", "steps to 95%",
                              f"test acc. at step {cfg['steps']}", "train s"],
                       title=f"Sentiment, {len(data['test'][2])} test reviews; data: {data['source']}")
    plot(results, out / "sentiment.png")
    common.write_results(out, results)
    return results


if __name__ == "__main__":
    main()
