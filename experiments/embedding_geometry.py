"""Word-embedding geometry: meaning clusters, and relations become directions.

Run:  python experiments/embedding_geometry.py            (~1.5 min on 2 CPU cores)
      python experiments/embedding_geometry.py --smoke    (seconds)

A seeded template grammar writes sentences in which word meanings factor by construction:

- animals = domesticity × family × number: dog/wolf (canine), cat/tiger (feline),
  horse/zebra (equine), cow/bison (bovine), pig/boar (porcine), goat/ibex (caprine),
  rabbit/hare (leporid), singular and plural. The
  family decides the verbs ("barks", "purrs", ...), the domesticity the places and people
  around the animal ("in the barn", "the farmer feeds", "in the forest", "the ranger tracks"),
  the number the agreement ("the dog barks", "the dogs bark").
- people = gender × role × number: man/woman, king/queen, boy/girl, father/mother,
  brother/sister, prince/princess. The role decides the verb phrase ("rules the land"), the
  gender the pronoun and the adjective ("he", "she", "male", "female").

A word-level LSTM language model (embedding → LSTM → softmax) is trained on these sentences and
its input embeddings are examined: nearest neighbours by cosine; analogies ``b - a + c``
answered by the nearest word other than ``a``, ``b``, ``c`` (pet → wild: dog : wolf :: cat :
tiger; canine → feline: dog : cat :: wolf : tiger; gender; plural), with the accuracy per
relation against chance ``1 / (V - 3)``; the cosine similarity between offsets of the same
relation (``wolf - dog`` vs ``tiger - cat``) against offsets of different relations; and a
2-D PCA of the embedding space.

Pretrained vectors: the embeddings are written in GloVe text format, read back with
``rj.load_vectors`` into a small sentence classifier (embedding → LSTM → last state →
"wild or domestic?"), trained on sentences about dogs, wolves, cats, tigers, horses, zebras,
rabbits and hares only and tested on cows, bison, pigs, boars, goats and ibexes — words whose
embeddings only pretraining has seen. One table compares a randomly initialised embedding, the pretrained one frozen
(``optax.selective_transform``), and the pretrained one fine-tuned.

Measured: analogy accuracy pet → wild 100%, gender 100%, canine → feline 33%, plural 18%
(chance 0.8%); "wild?" on unseen animals: random table 47.5%, pretrained frozen 100%,
pretrained fine-tuned 93.7%.
"""

from __future__ import annotations

import itertools
import pathlib
import sys
import time

if __package__ in (None, ""):  # run as a script: make the `experiments` package importable
    sys.path.insert(0, str(pathlib.Path(__file__).resolve().parents[1]))

import jax
import jax.numpy as jnp
import numpy as np
import optax

import rnnjax as rj
from experiments import common
from experiments.char_lm import fresh_run_folder
from experiments.text_data import WordVocab
from experiments.word_lm import pack

NAME = "embedding_geometry"
DEFAULTS = dict(sentences=20_000, embed=32, hidden=128, batch=64, steps=1500, lr=5e-3,
                clf_steps=300, clf_sentences=600)
SMOKE = dict(sentences=3000, embed=16, hidden=48, batch=32, steps=250, lr=1e-2, clf_steps=50, clf_sentences=200)

# ----------------------------------------------------------------------------- the grammar

# family -> (domestic singular, plural), (wild singular, plural), verbs (singular, plural)
FAMILIES = {
    "canine": (("dog", "dogs"), ("wolf", "wolves"), [("barks", "bark"), ("howls", "howl")]),
    "feline": (("cat", "cats"), ("tiger", "tigers"), [("purrs", "purr"), ("pounces", "pounce")]),
    "equine": (("horse", "horses"), ("zebra", "zebras"), [("gallops", "gallop"), ("neighs", "neigh")]),
    "bovine": (("cow", "cows"), ("bison", "bisons"), [("grazes", "graze"), ("moos", "moo")]),
    "porcine": (("pig", "pigs"), ("boar", "boars"), [("grunts", "grunt"), ("digs", "dig")]),
    "caprine": (("goat", "goats"), ("ibex", "ibexes"), [("bleats", "bleat"), ("climbs", "climb")]),
    "leporid": (("rabbit", "rabbits"), ("hare", "hares"), [("hops", "hop"), ("burrows", "burrow")]),
}
PLACES = {"domestic": ["house", "barn", "yard"], "wild": ["forest", "jungle", "savanna"]}
KEEPERS = {"domestic": [("farmer", "feeds"), ("owner", "brushes")], "wild": [("ranger", "tracks"), ("hunter", "follows")]}
ADJECTIVES = {"domestic": ["tame", "calm"], "wild": ["fierce", "free"]}
# role -> (male singular, plural), (female singular, plural), verb phrase (singular, plural)
ROLES = {
    "adult": (("man", "men"), ("woman", "women"), ("works in the city", "work in the city")),
    "royal": (("king", "kings"), ("queen", "queens"), ("rules the land", "rule the land")),
    "child": (("boy", "boys"), ("girl", "girls"), ("plays at school", "play at school")),
    "parent": (("father", "fathers"), ("mother", "mothers"), ("raises the children", "raise the children")),
    "sibling": (("brother", "brothers"), ("sister", "sisters"), ("shares a room", "share a room")),
    "heir": (("prince", "princes"), ("princess", "princesses"), ("will inherit the throne", "will inherit the throne")),
}
PRONOUNS = {"male": "he", "female": "she"}
HELD_OUT_FAMILIES = ("bovine", "porcine", "caprine")  # the downstream classifier never sees them in training


def _words(table: dict, kinds: tuple[str, str]) -> list[tuple[str, str, str, str]]:
    """``[(word, group, kind, number)]`` from ``table``'s ``group -> (forms, forms, _)``, the two
    (singular, plural) form pairs being of ``kinds``."""
    out = []
    for group, (first, second, _) in table.items():
        for kind, forms in zip(kinds, (first, second), strict=True):
            for number, word in zip(("sg", "pl"), forms, strict=True):
                out.append((word, group, kind, number))
    return out


def animals():
    """``[(word, family, domesticity, number)]`` for all 28 animal words."""
    return _words(FAMILIES, ("domestic", "wild"))


def people():
    """``[(word, role, gender, number)]`` for all 24 person words."""
    return _words(ROLES, ("male", "female"))


def animal_sentence(rng, word, fam, kind, number):
    verbs = FAMILIES[fam][2]
    verb = verbs[rng.integers(len(verbs))][0 if number == "sg" else 1]
    det = "the" if number == "sg" or rng.random() < 0.5 else ["two", "many", "some"][rng.integers(3)]
    be = "is" if number == "sg" else "are"
    place = PLACES[kind][rng.integers(3)]
    keeper, action = KEEPERS[kind][rng.integers(2)]
    adjective = ADJECTIVES[kind][rng.integers(2)]
    template = rng.integers(4)
    if template == 0:
        return f"{det} {word} {verb} in the {place} ."
    if template == 1:
        return f"the {keeper} {action} the {word} in the {place} ."
    if template == 2:
        return f"{det} {word} {be} {adjective} and {verb} ."
    return f"{det} {word} {verb} near the {keeper} ."


def person_sentence(rng, word, role, gender, number):
    vp = ROLES[role][2][0 if number == "sg" else 1]
    be = "is" if number == "sg" else "are"
    pronoun = PRONOUNS[gender] if number == "sg" else "they"
    template = rng.integers(3)
    if template == 0:
        return f"the {word} {vp} ."
    if template == 1:
        return f"the {word} said that {pronoun} {vp} ."
    return f"the {word} {be} {gender} and {vp} ."


def make_corpus(n: int, seed: int) -> list[list[str]]:
    """``n`` sentences, half about animals and half about people, each word equally likely."""
    rng = np.random.default_rng(seed)
    a, p = animals(), people()
    out = []
    for i in range(n):
        if i % 2 == 0:
            out.append(animal_sentence(rng, *a[rng.integers(len(a))]).split())
        else:
            out.append(person_sentence(rng, *p[rng.integers(len(p))]).split())
    return out


def relations() -> dict[str, list[tuple[str, str]]]:
    """Word pairs ``(a, b)`` whose offset ``b - a`` should be the same within a relation."""
    rel: dict[str, list[tuple[str, str]]] = {"pet → wild": [], "canine → feline": [], "gender (m → f)": [],
                                              "plural": []}
    for dom, wild, _ in FAMILIES.values():
        rel["pet → wild"] += [(dom[0], wild[0]), (dom[1], wild[1])]
        rel["plural"] += [dom, wild]
    for k in (0, 1):  # domestic, wild
        for n in (0, 1):  # singular, plural
            rel["canine → feline"].append((FAMILIES["canine"][k][n], FAMILIES["feline"][k][n]))
    for male, female, _ in ROLES.values():
        rel["gender (m → f)"] += [(male[0], female[0]), (male[1], female[1])]
        rel["plural"] += [male, female]
    return rel


# ----------------------------------------------------------------------------- the language model


def make_data(sentences, vocab: WordVocab):
    """``(x, y, lengths)`` as the word model packs them, padded to the longest sentence + 1."""
    return pack(vocab, sentences, max(len(s) for s in sentences) + 1)


def make_model(cfg, vocab_size):
    """Embedding → LSTM → softmax. The table starts small (N(0, 0.1²)), so that what the model
    learns, not the random start, dominates the geometry."""
    lm = rj.language_model(rj.lstm(cfg.embed, cfg.hidden), vocab_size, embed_size=cfg.embed)

    def init(key):
        params = lm.init(key)
        small = rj.embedding_init(jax.random.fold_in(key, 7), vocab_size, cfg.embed,
                                  init=jax.nn.initializers.normal(0.1))
        return params._replace(embed=small)

    return lm._replace(init=init)


def loss_fn_for(lm):
    def loss_fn(params, batch, key):
        _, logits = lm.apply(params, batch["x"], lengths=batch["lengths"])
        return rj.sequence_cross_entropy(logits, batch["y"], lengths=batch["lengths"])

    return loss_fn


def batches(data, batch: int, seed: int):
    x, y, lengths = data

    def get(i):
        idx = np.random.default_rng([seed, int(i)]).integers(0, len(lengths), batch)
        return {"x": x[:, idx], "y": y[:, idx], "lengths": lengths[idx]}

    return get


# ----------------------------------------------------------------------------- geometry


def unit(m):
    return m / np.linalg.norm(m, axis=-1, keepdims=True).clip(1e-12)


def neighbours(emb, vocab: WordVocab, word: str, k: int = 5):
    sims = unit(emb) @ unit(emb[vocab.index[word]])
    sims[vocab.index[word]] = -np.inf
    sims[:4] = -np.inf  # never the specials
    return [(vocab.words[i], float(sims[i])) for i in np.argsort(-sims)[:k] if np.isfinite(sims[i])]


def analogy(emb, vocab: WordVocab, a: str, b: str, c: str) -> str:
    """The word nearest (cosine) to ``b - a + c``, excluding ``a``, ``b``, ``c`` and the specials."""
    e = unit(emb)
    ia, ib, ic = (vocab.index[w] for w in (a, b, c))
    sims = e @ (e[ib] - e[ia] + e[ic])
    sims[[ia, ib, ic, 0, 1, 2, 3]] = -np.inf
    return vocab.words[int(np.argmax(sims))]


def analogy_accuracy(emb, vocab, rel):
    """Per relation: fraction of ordered pairs of its pairs ``(a, b), (c, d)`` with
    ``analogy(a, b, c) == d``."""
    out = {}
    for name, pairs in rel.items():
        quads = [(a, b, c, d) for (a, b), (c, d) in itertools.permutations(pairs, 2)]
        hits = [analogy(emb, vocab, a, b, c) == d for a, b, c, d in quads]
        out[name] = (float(np.mean(hits)), len(quads))
    return out


def offset_cosines(emb, vocab, rel):
    """Mean cosine between offsets of the same relation, and between offsets of different ones."""
    offs = {name: unit(np.stack([emb[vocab.index[b]] - emb[vocab.index[a]] for a, b in pairs]))
            for name, pairs in rel.items()}
    within = {name: float(np.mean([o1 @ o2 for o1, o2 in itertools.combinations(o, 2)])) for name, o in offs.items()}
    across = [float(o1 @ o2) for (n1, a), (n2, b) in itertools.combinations(offs.items(), 2) for o1 in a for o2 in b]
    return within, float(np.mean(across))


def pca_2d(x):
    x = x - x.mean(0)
    _, _, vt = np.linalg.svd(x, full_matrices=False)
    return x @ vt[:2].T


# ----------------------------------------------------------------------------- downstream task


def write_glove(path: pathlib.Path, vocab: WordVocab, emb: np.ndarray) -> None:
    with open(path, "w", encoding="utf-8") as f:
        for w, v in zip(vocab.words, emb, strict=True):
            f.write(w + " " + " ".join(f"{x:.6f}" for x in v) + "\n")


def clf_data(vocab: WordVocab, n: int, seed: int, held_out: bool):
    """Sentences "det animal verb ..." labelled 1 for a wild animal, from the training families
    (``held_out=False``) or the held-out ones."""
    rng = np.random.default_rng(seed)
    pool = [a for a in animals() if (a[1] in HELD_OUT_FAMILIES) == held_out]
    frames = ["the {w} sleeps .", "i saw the {w} today .", "look at that {w} .", "we saw a {w} ."]
    sents, labels = [], []
    for _ in range(n):
        word, _, kind, _ = pool[rng.integers(len(pool))]
        sents.append(frames[rng.integers(len(frames))].format(w=word).split())
        labels.append(int(kind == "wild"))
    x = np.full((max(map(len, sents)), n), vocab.PAD, np.int32)
    lengths = np.array([len(s) for s in sents], np.int32)
    for i, s in enumerate(sents):
        x[: len(s), i] = vocab.encode(s)
    return {"x": x, "lengths": lengths, "labels": np.array(labels, np.int32)}


def make_classifier(vocab_size: int, embed_size: int, num_steps: int, seed: int):
    """Embedding → LSTM → last valid state → 2 classes. Returns ``train(table, freeze, train_set,
    test_set) -> (train accuracy, test accuracy, max |change of the table|)``; the embedding
    table is frozen with ``optax.selective_transform`` (it gets no updates, no optimiser state)."""
    cell = rj.lstm(embed_size, 32)

    def logits_fn(p, x, lengths):
        xs = rj.embedding_lookup(p["embed"], x)  # [T, B, E]
        _, hs = rj.scan(cell.step, p["cell"], cell.initial_carry((x.shape[1],)), xs, lengths=lengths)
        return rj.dense(p["out"], rj.pool_last(hs, lengths))  # [B, 2]

    def loss_fn(p, batch, key):
        return rj.classification_cross_entropy(logits_fn(p, batch["x"], batch["lengths"]), batch["labels"])

    key = jax.random.key(seed)
    init = {"embed": jnp.zeros((vocab_size, embed_size)), "cell": cell.init(key),
            "out": rj.dense_init(jax.random.fold_in(key, 1), 32, 2)}
    optimizers, steps = {}, {}
    for freeze in (False, True):
        mask = jax.tree.map(lambda _: False, init) | {"embed": freeze}
        optimizers[freeze] = optax.selective_transform(rj.make_optimizer(3e-3), freeze_mask=mask)
        steps[freeze] = rj.make_train_step(loss_fn, optimizers[freeze])  # jitted once, used for each table
    accuracy = jax.jit(lambda p, d: jnp.mean(jnp.argmax(logits_fn(p, d["x"], d["lengths"]), -1) == d["labels"]))

    def train(table, freeze, train_set, test_set):
        state = rj.init_train_state(init | {"embed": table}, optimizers[freeze], key)
        n = len(train_set["labels"])

        def data(i):
            idx = np.random.default_rng([seed, int(i)]).integers(0, n, 32)
            return {k: v[..., idx] for k, v in train_set.items()}

        state = rj.fit(steps[freeze], state, data, num_steps)
        moved = float(jnp.abs(state.params["embed"] - table).max())
        return float(accuracy(state.params, train_set)), float(accuracy(state.params, test_set)), moved

    return train


# ----------------------------------------------------------------------------- main


def parse_args(argv):
    p = common.base_parser(__doc__.splitlines()[0])
    for name, v in DEFAULTS.items():
        p.add_argument("--" + name.replace("_", "-"), type=type(v), default=None)
    args = p.parse_args(argv)
    return common.fill_defaults(args, DEFAULTS, SMOKE)


def main(argv=None) -> dict:
    args = parse_args(argv)
    out = common.run_dir(NAME, args.out)
    fresh_run_folder(out, hint="")
    sentences = make_corpus(args.sentences, args.seed)
    vocab = WordVocab.build(sentences, min_count=1)
    rel = relations()
    print(f"{len(sentences):,} generated sentences, vocabulary {vocab.size}; e.g. "
          f"{' '.join(sentences[0])!r}, {' '.join(sentences[1])!r}")

    lm = make_model(args, vocab.size)
    optimizer = rj.make_optimizer(optax.cosine_decay_schedule(args.lr, args.steps, alpha=0.05))
    key = jax.random.key(args.seed)
    state = rj.init_train_state(lm.init(key), optimizer, jax.random.fold_in(key, 1))
    log = rj.MetricsLog(out / "metrics.jsonl")
    t0 = time.time()
    with rj.Checkpoints(out / "checkpoints", max_to_keep=1) as ckpt:
        state = rj.fit(rj.make_train_step(loss_fn_for(lm), optimizer), state,
                       batches(make_data(sentences, vocab), args.batch, args.seed), args.steps,
                       checkpoints=ckpt, log=log, log_every=10)
    seconds = time.time() - t0
    losses = log.series("loss")[1]
    log.close()
    print(f"language model: loss {losses[0]:.3f} → {losses[-1]:.3f} nats/token in {seconds:.0f}s")
    emb = np.asarray(state.params.embed, np.float64)  # [V, E]

    queries = ["dog", "tiger", "king", "sisters"]
    nn = {w: neighbours(emb, vocab, w) for w in queries}
    common.print_table([[w, ", ".join(f"{n} {s:.2f}" for n, s in nb)] for w, nb in nn.items()],
                       ["word", "nearest neighbours (cosine)"], title="Nearest neighbours")
    acc = analogy_accuracy(emb, vocab, rel)
    within, across = offset_cosines(emb, vocab, rel)
    chance = 1.0 / (vocab.size - 4 - 3)
    examples = [("dog", "wolf", "cat"), ("dog", "cat", "wolf"), ("king", "queen", "man"), ("dog", "dogs", "king")]
    answers = {f"{b} - {a} + {c}": analogy(emb, vocab, a, b, c) for a, b, c in examples}
    common.print_table([[name, f"{a:.0%}", n, within[name]] for name, (a, n) in acc.items()],
                       ["relation", "analogy accuracy", "analogies", "offset cosine (same relation)"],
                       title=f"Analogies b - a + c (chance {chance:.1%}); offset cosine across relations {across:.2f}")
    print("  " + "   ".join(f"{q} = {ans}" for q, ans in answers.items()))

    glove = out / "embeddings.glove.txt"
    write_glove(glove, vocab, emb)
    pretrained = rj.load_vectors(glove, vocab.words, key=jax.random.key(0))
    assert pretrained.coverage == 1.0
    train = clf_data(vocab, args.clf_sentences, args.seed + 1, held_out=False)
    test = clf_data(vocab, args.clf_sentences, args.seed + 2, held_out=True)
    random_table = rj.embedding_init(jax.random.key(args.seed + 3), vocab.size, args.embed)
    classifier = make_classifier(vocab.size, args.embed, args.clf_steps, args.seed)
    rows, downstream = [], {}
    for name, table, freeze in (("random init, trained", random_table, False),
                                ("pretrained (GloVe file), frozen", pretrained.table, True),
                                ("pretrained (GloVe file), fine-tuned", pretrained.table, False)):
        tr, te, moved = classifier(table, freeze, train, test)
        downstream[name] = {"train_accuracy": tr, "heldout_accuracy": te, "max_embedding_change": moved}
        rows.append([name, f"{tr:.1%}", f"{te:.1%}", moved])
    common.print_table(rows, ["embedding", "train accuracy", "held-out animals accuracy", "max |Δ embedding|"],
                       title="Downstream: wild or domestic? (trained on canines, felines, equines, leporids; "
                             "tested on bovines, porcines, caprines)")

    results = {"config": {k: getattr(args, k) for k in DEFAULTS}, "seed": args.seed, "smoke": args.smoke,
               "vocab_size": vocab.size, "lm_loss_first": float(losses[0]), "lm_loss_last": float(losses[-1]),
               "train_seconds": seconds, "neighbours": nn, "analogy_accuracy": {k: v[0] for k, v in acc.items()},
               "analogy_counts": {k: v[1] for k, v in acc.items()}, "chance": chance, "examples": answers,
               "offset_cosine_within": within, "offset_cosine_across": across, "downstream": downstream}
    plot(emb, vocab, rel, out / "embedding_geometry.png")
    common.write_results(out, results)
    print(f"\nwrote {out / 'results.json'}, {out / 'embedding_geometry.png'}, {glove}")
    return results


def plot(emb, vocab, rel, path):
    fig, axes = common.subplots(1, 2, figsize=(11, 5))
    groups = [("animals (singular)", [a[0] for a in animals() if a[3] == "sg"], "pet → wild", "C3"),
              ("people (singular)", [p[0] for p in people() if p[3] == "sg"], "gender (m → f)", "C0")]
    for ax, (title, words, relation, color) in zip(axes, groups, strict=True):
        xy = pca_2d(emb[[vocab.index[w] for w in words]])
        pos = dict(zip(words, xy, strict=True))
        ax.scatter(xy[:, 0], xy[:, 1], s=12, color="0.3")
        for w, (px, py) in pos.items():
            ax.annotate(w, (px, py), fontsize=9, xytext=(3, 3), textcoords="offset points")
        for a, b in rel[relation]:
            if a in pos and b in pos:
                ax.annotate("", pos[b], pos[a], arrowprops=dict(arrowstyle="->", color=color, lw=1))
        ax.set_title(f"{title}: PCA of embeddings, arrows {relation}", fontsize=10)
        ax.set_xticks([])
        ax.set_yticks([])
    common.save_figure(fig, path, dpi=110, tight=True)


if __name__ == "__main__":
    main()
