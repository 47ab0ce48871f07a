"""Next-character language model: "what letter is going to come next?" made real.

Run:  python experiments/char_lm.py                 (the main job: about 140 s on 2 cores)
      python experiments/char_lm.py --long          (the longer configuration, LONG)
      python experiments/char_lm.py --smoke         (seconds)
      python experiments/char_lm.py --sample-only --prompt "the while stateme"
      python experiments/char_lm.py --sample-only --check-samples 100 --prime-chars 0
      python experiments/char_lm.py --text my.txt --cell gru --steps 2000

Corpus: the Python language reference shipped with CPython (``pydoc_data.topics``, ~465k
characters, no download), or any UTF-8 file with ``--text``. The first 90% trains, the last
10% is held out.

Model: character embedding (or one-hot with ``--embed 0``) → deep recurrent network
(``--cell lstm|gru|elman|peephole|cifg``, ``--layers``, ``--hidden``) → softmax over the
characters. Training reads ``--batch`` parallel streams of the training text in chunks of
``--bptt`` characters, carrying the recurrent state from chunk to chunk (truncated BPTT),
with Adam, global-norm clipping, a linear learning-rate warm-up and a cosine decay
(``--warmup``, ``--lr``), and dropout between the layers (``--dropout``; ``--out-dropout``
also drops the last layer's output before the softmax); a checkpoint is saved at the end
(and every ``--ckpt-every`` steps), and ``--resume`` continues from it exactly.

Reported: validation bits per character next to count-based baselines fitted in the same run
on the same split — unigram and interpolated modified Kneser–Ney 3- and 5-grams
(``experiments/ngram.py``) — then samples at temperatures 0.5 and 1.0 and the five most
likely next characters after ``--prompt``, and the longest run of one repeated character in
each sample next to the longest run of that character in the training text (a model that
loops on one character writes runs far longer than any in the corpus). Before the prompt the
sampler reads the first ``--prime-chars`` characters of the held-out text (0: the prompt from
a zero state), so a sample continues the state real text leads to, as in the evaluation. Then
``--check-samples`` more temperature-0.5 samples (sampling seeds 0, 1, ...; the printed one is
seed ``--seed``) are drawn and the script counts those with a run longer than the corpus's
longest run of that character, and ``--ngram-check`` samples of the 5-gram Kneser–Ney model,
drawn the same way after the same passage and prompt, are counted next to them (temperature
0.5 squares the odds of the likeliest character, so it lengthens runs for any model). All
samples are plain temperature samples, with no top-k, nucleus or repetition penalty.
``--sample-only`` does the network's part from the saved checkpoint (the run folder keeps the
held-out text and the corpus's longest runs), so sampling can be studied without training
again.

Measured (Python 3.11.7's reference text, 2 CPU cores, one run at a time), validation bits
per character: unigram 4.671, 3-gram Kneser–Ney 2.444, 5-gram Kneser–Ney 1.739; the default
run (2x256 LSTM, 900 steps, 137 s wall and 218 s of CPU time) 1.639, and 1.648 and 1.653 with
``--seed 1`` and ``2``, beating the 5-gram by 0.09-0.10; ``--long`` (2000 steps, 284 s wall)
1.632. After "the for stateme" it gives "n" probability 0.999. Of the 20 checked
temperature-0.5 samples, the 5-gram's loop past the corpus's longest run in 11; the default
run's in none, the other seeds' in 3 and 1 (runs of spaces or dashes; the seed-1 run's own
sample has 117 spaces, the corpus's longest run of spaces being 53); over 100 sampling seeds
each, 18 of 300 after the held-out passage (the 5-gram: 46 of 100) and 35 of 300 from a zero
state (``--prime-chars 0``).
"""

from __future__ import annotations

import argparse
import itertools
import json
import math
import pathlib
import shutil
import sys
import time
from functools import partial

if __package__ in (None, ""):  # run as a script: make the `experiments` package importable
    sys.path.insert(0, str(pathlib.Path(__file__).resolve().parents[1]))

import jax
import jax.numpy as jnp
import numpy as np
import optax
import tqdm

import rnnjax as rj
from experiments import common
from experiments.ngram import KneserNey, Unigram, bits_per_token
from experiments.text_data import CharVocab, python_reference_text, read_text, text_digest

NAME = "char_lm"
CELLS = {"lstm": rj.lstm, "gru": rj.gru, "elman": rj.elman, "peephole": rj.peephole_lstm, "cifg": rj.cifg_lstm}
DEFAULTS = dict(cell="lstm", layers=2, embed=64, hidden=256, batch=32, bptt=100, steps=900, warmup=50, lr=4e-3,
                dropout=0.15, out_dropout=0.15, clip=1.0, eval_every=300, eval_streams=8, ckpt_every=300, sample_chars=300,
                prime_chars=1000, check_samples=20, ngram_check=20)
LONG = dict(steps=2000, warmup=100, lr=4e-3, dropout=0.25, out_dropout=0.0, eval_every=400, ckpt_every=400)  # --long
SMOKE = dict(layers=1, embed=32, hidden=128, batch=32, bptt=32, steps=240, warmup=20, lr=1e-2, dropout=0.0,
             out_dropout=0.0, eval_every=80, eval_streams=2, ckpt_every=240, sample_chars=80, prime_chars=200,
             check_samples=4, ngram_check=2)
SMOKE_CHARS = 40_000
LN2 = math.log(2.0)


# ----------------------------------------------------------------------------- data


def make_data(text: str, batch: int, bptt: int, *, val_fraction: float = 0.1):
    """Vocabulary, train/validation ids, and the training streams.

    The training ids are cut into ``batch`` contiguous streams read in parallel, time-major
    ``[T_stream, batch]``; the input is the stream and the target the stream shifted by one.
    ``reset[t]`` is True at ``t = 0`` only: each pass over the streams starts from a zero carry.
    """
    vocab = CharVocab.from_text(text)
    ids = vocab.encode(text)
    n_train = int(len(ids) * (1 - val_fraction))
    train, val = ids[:n_train], ids[n_train:]
    per_stream = (len(train) - 1) // batch
    if per_stream < bptt:
        raise ValueError(f"--bptt: expected at most {per_stream} (training characters per stream), got {bptt}")
    streams = train[: batch * per_stream + 1]
    x = np.stack([streams[b * per_stream:(b + 1) * per_stream] for b in range(batch)], axis=1)  # [T, B]
    y = np.stack([streams[b * per_stream + 1:(b + 1) * per_stream + 1] for b in range(batch)], axis=1)
    reset = np.zeros(per_stream, bool)
    reset[0] = True
    stream = {"x": jnp.asarray(x), "y": jnp.asarray(y), "reset": jnp.asarray(reset)}
    return vocab, train, val, stream


def count_models(vocab_size: int, train: np.ndarray) -> dict:
    """The count-based models fitted on the training ids: unigram, Kneser–Ney 3- and 5-gram."""
    return {"unigram": Unigram(vocab_size).fit([train]),
            **{f"{order}-gram KN": KneserNey(order, vocab_size).fit([train]) for order in (3, 5)}}


def baselines(vocab_size: int, train: np.ndarray, val: np.ndarray, models: dict | None = None) -> dict[str, float]:
    """Validation bits per character of count-based models fitted on the same training text
    (``models``, from ``count_models``, or fitted here); each reads the end of the training
    text as the context of the first validation characters."""
    models = count_models(vocab_size, train) if models is None else models
    return {name: bits_per_token(lm, [val], history=train) for name, lm in models.items()}


# ----------------------------------------------------------------------------- model


def make_model(cfg: argparse.Namespace, vocab_size: int):
    """The same layers two ways, sharing one set of params (``rj.LanguageModelParams``):

    - ``lm = rj.language_model(rj.stack(*cells), V)`` — embedding → stacked cell → softmax
      layer, stepped one token at a time (sampling);
    - ``model = rj.deep(*cells)`` — the same layers run layer by layer over whole chunks, with
      inter-layer dropout (training and evaluation: faster, one input matmul per layer).
    """
    if cfg.cell not in CELLS:
        raise ValueError(f"--cell: expected one of {sorted(CELLS)}, got {cfg.cell!r}")
    in_size = cfg.embed or vocab_size
    compute = {"float32": None, "bfloat16": jnp.bfloat16}[getattr(cfg, "dtype", "float32")]  # products' dtype
    cells = [CELLS[cfg.cell](in_size if i == 0 else cfg.hidden, cfg.hidden, dtype=compute) for i in range(cfg.layers)]
    lm = rj.language_model(rj.stack(*cells), vocab_size, embed_size=cfg.embed or None)
    return lm, rj.deep(*cells, dropout=cfg.dropout)


def forward(model, params: rj.LanguageModelParams, ids, carry, *, train=False, key=None, out_dropout=0.0):
    """``ids: [T, B]`` → ``(carry, logits [T, B, V])``, with the deep model.

    With ``train=True`` the deep model applies its inter-layer dropout, and ``out_dropout``
    drops entries of the last layer's output before the softmax layer (inverted dropout:
    kept entries are scaled by ``1 / (1 - out_dropout)``)."""
    if params.embed is None:
        xs = rj.one_hot(ids, params.out.b.shape[0])  # [T, B, V]
    else:
        xs = rj.embedding_lookup(params.embed, ids)  # [T, B, E]
    if train and out_dropout > 0:
        key, key_out = jax.random.split(key)
    carry, hs = model.apply(params.cell, xs, carry=carry, train=train, key=key)  # [T, B, H]
    if train and out_dropout > 0:
        keep = jax.random.bernoulli(key_out, 1.0 - out_dropout, hs.shape)
        hs = jnp.where(keep, hs / (1.0 - out_dropout), 0.0)
    return carry, rj.dense(params.out, hs)


def make_schedule(cfg):
    """The learning rate: a linear warm-up from 0 to ``lr`` over ``warmup`` steps, then a cosine
    decay to 5% of ``lr`` at ``steps`` (``optax.warmup_cosine_decay_schedule``)::

        η(t) = lr · t / warmup                                                   t < warmup
        η(t) = lr · (0.05 + 0.95 · (1 + cos(π (t - warmup) / (steps - warmup))) / 2)   otherwise
    """
    warmup = getattr(cfg, "warmup", 0)  # configurations without one (min_rnn's) decay from the start
    if not warmup:
        return optax.cosine_decay_schedule(cfg.lr, cfg.steps, alpha=0.05)
    return optax.warmup_cosine_decay_schedule(0.0, cfg.lr, warmup, cfg.steps, end_value=0.05 * cfg.lr)


def make_optimizer(cfg):
    """Adam with global-norm clipping at ``clip``, on the warm-up + cosine schedule."""
    return rj.make_optimizer(make_schedule(cfg), clip="global_norm", threshold=cfg.clip)


def make_loss_fn(model, out_dropout: float = 0.0):
    def loss_fn(params, carry, batch, key):
        """Mean next-character cross-entropy in bits on one chunk; the carry flows on."""
        # a new pass over the streams starts from zeros
        carry = jax.tree_util.tree_map(lambda c: jnp.where(batch["reset"][0], jnp.zeros_like(c), c), carry)
        carry, logits = forward(model, params, batch["x"], carry, train=True, key=key, out_dropout=out_dropout)
        bits = optax.softmax_cross_entropy_with_integer_labels(logits, batch["y"]).mean() / LN2
        return bits, carry

    return loss_fn


def make_evaluate(model, val: np.ndarray, streams: int):
    """Validation bits per character: the held-out text as ``streams`` contiguous pieces run in
    parallel from a zero carry, the state carried through each piece (every character scored
    except the first of each piece). ``streams=1`` reads the whole text as one sequence."""
    per = (len(val) - 1) // streams
    x = jnp.asarray(np.stack([val[i * per:(i + 1) * per] for i in range(streams)], 1))  # [T, S]
    y = jnp.asarray(np.stack([val[i * per + 1:(i + 1) * per + 1] for i in range(streams)], 1))

    @jax.jit
    def bits(params):
        _, logits = forward(model, params, x, None)
        return optax.softmax_cross_entropy_with_integer_labels(logits, y).mean() / LN2

    return lambda params: float(bits(params))


# ----------------------------------------------------------------------------- sampling


def make_sampler(lm, model, context: np.ndarray | None = None):
    """``sample(params, prompt_ids, n, temperature, key) -> ids [n]`` continuing a prompt, and
    ``next_probs(params, prompt_ids) -> [V]``, the distribution of the character after it.

    With ``context`` (ids of a passage of real text) the model first reads the passage and
    then the prompt, so the sample starts from the state the text itself leads to rather than
    from zeros; without it the prompt is read from a zero state."""
    context = jnp.zeros((0,), jnp.int32) if context is None else jnp.asarray(context, jnp.int32)

    @jax.jit
    def prime(params, prompt):
        """Read the context and the prompt but its last character; that one is the first
        decoding input."""
        ids = jnp.concatenate([context, prompt])
        carry = lm.initial_carry((1,))
        if ids.shape[0] > 1:
            carry, _ = forward(model, params, ids[:-1, None], carry)  # batch of one
        return carry, ids[-1:]

    @partial(jax.jit, static_argnames="n")
    def generate(params, prompt, key, temperature, n):
        carry, start = prime(params, prompt)
        tokens, _ = rj.sample(lm.step, params, carry, start, key, max_len=n, temperature=temperature)
        return tokens[:, 0]

    def sample(params, prompt_ids, n, temperature, key):
        return np.asarray(generate(params, jnp.asarray(prompt_ids), key, jnp.float32(temperature), n=n))

    def next_probs(params, prompt_ids):
        carry, start = prime(params, jnp.asarray(prompt_ids))
        return np.asarray(jax.nn.softmax(lm.step(params, carry, start)[1][0]))

    return sample, next_probs


def check_prompt(vocab: CharVocab, prompt: str) -> None:
    missing = sorted(set(prompt) - set(vocab.chars))
    if not prompt or missing:
        raise ValueError(f"--prompt: expected a non-empty string of characters from the corpus, "
                         f"got {prompt!r} (not in the corpus: {''.join(missing)!r})")


def longest_run(text: str) -> tuple[int, str]:
    """``(n, c)``: the longest run of one repeated character ``c`` in ``text`` (the first if tied).

    >>> longest_run("the   end..")
    (3, ' ')
    """
    best, char, n = 0, "", 0
    for i, c in enumerate(text):
        n = n + 1 if i and c == text[i - 1] else 1
        if n > best:
            best, char = n, c
    return best, char


def show_runs(samples: dict[str, str], prompt: str, longest: dict[str, int]) -> dict[str, dict]:
    """Print and return, per temperature, the longest run of one repeated character in the
    generated part of each sample, next to the longest run of that character in the training
    text (``longest``, from ``corpus_runs``). A model that loops on one character (the degenerate samples of an undertrained model)
    writes a run far longer than any in the corpus."""
    out = {}
    for t, s in samples.items():
        n, c = longest_run(s[len(prompt):])
        in_train = longest.get(c, 0)
        out[t] = {"chars": n, "char": c, "train_chars": in_train}
    common.print_table([[t, f"{r['chars']} x {r['char']!r}", r["train_chars"]] for t, r in out.items()],
                       ["temperature", "longest run in the sample", "longest run of it in the training text"],
                       title="Longest run of one repeated character in the samples")
    return out


def corpus_runs(text: str) -> dict[str, int]:
    """The longest run of each character in ``text``.

    >>> corpus_runs("aab   a")
    {'a': 2, 'b': 1, ' ': 3}
    """
    out: dict[str, int] = {}
    for c, g in itertools.groupby(text):
        out[c] = max(out.get(c, 0), sum(1 for _ in g))
    return out


def check_runs(vocab: CharVocab, params, sample, prompt_ids, n_chars: int, temperature: float, seeds: int,
               longest: dict[str, int]) -> dict:
    """Draw ``seeds`` samples (sampling seeds ``0 .. seeds-1``) of ``n_chars`` characters at
    ``temperature`` after the prompt, and count those whose longest run of one repeated
    character is longer than the training text's longest run of that character (``longest``,
    from ``corpus_runs``). The samples are plain temperature samples of the model, with no
    truncation or repetition penalty."""
    runs = []
    for s in range(seeds):
        text = vocab.decode(sample(params, prompt_ids, n_chars, temperature, jax.random.key(s)))
        n, c = longest_run(text)
        runs.append({"seed": s, "chars": n, "char": c, "train_chars": longest.get(c, 0), "text": text})
    bad = [r for r in runs if r["chars"] > r["train_chars"]]
    if not seeds:
        return {"temperature": temperature, "seeds": 0, "longer_than_corpus": 0, "runs": []}
    worst = ", ".join(f"seed {r['seed']}: {r['chars']} x {r['char']!r} ({r['train_chars']})" for r in bad)
    print(f"\n{len(bad)} of {seeds} samples at temperature {temperature} (sampling seeds 0-{seeds - 1}) have a run "
          f"longer than the training text's longest run of that character" + (f": {worst}" if bad else ""))
    return {"temperature": temperature, "seeds": seeds, "longer_than_corpus": len(bad), "runs": runs}


def make_ngram_sampler(ngram, context: np.ndarray | None = None):
    """``sample(_, prompt_ids, n, temperature, key) -> ids [n]`` like ``make_sampler``'s, from a
    count model (e.g. ``KneserNey``): each character is drawn from ``p^(1/T) / Σ p^(1/T)``, ``p``
    the model's ``distribution`` after ``context`` + prompt + the characters drawn so far, with
    a NumPy generator seeded by the key's data."""
    context = [] if context is None else [int(i) for i in context]

    def sample(_params, prompt_ids, n, temperature, key):
        rng = np.random.default_rng(np.asarray(jax.random.key_data(key)))
        history, out = context + [int(i) for i in prompt_ids], []
        for _ in range(n):
            probs = ngram.distribution(history[max(len(history) - ngram.order + 1, 0):])  # the last n - 1 only
            logits = np.log(np.maximum(probs, 1e-300)) / temperature
            probs = np.exp(logits - logits.max())
            out.append(int(rng.choice(len(probs), p=probs / probs.sum())))
            history.append(out[-1])
        return np.asarray(out, np.int32)

    return sample


def check_sampling(args, heldout_chars: int, where: str = "") -> None:
    if not 0 <= args.prime_chars <= heldout_chars:
        raise ValueError(f"--prime-chars: expected an int in [0, {heldout_chars}] (the held-out characters{where}), "
                         f"got {args.prime_chars}")
    if args.check_samples < 0:
        raise ValueError(f"--check-samples: expected an int >= 0, got {args.check_samples}")
    if args.ngram_check < 0:
        raise ValueError(f"--ngram-check: expected an int >= 0, got {args.ngram_check}")


def show_samples(vocab: CharVocab, params, sample, next_probs, prompt: str, n_chars: int, seed: int,
                 prime_chars: int = 0):
    ids = vocab.encode(prompt)
    samples = {}
    for t in (0.5, 1.0):
        out = sample(params, ids, n_chars, t, jax.random.key(seed))
        samples[str(t)] = prompt + vocab.decode(out)
    probs = next_probs(params, ids)
    top = [(vocab.chars[i], float(probs[i])) for i in np.argsort(-probs)[:5]]
    for t, s in samples.items():
        after = f", after the first {prime_chars} held-out characters" if prime_chars else ""
        print(f"\n--- sample, temperature {t}{after} ---\n{s}")
    common.print_table([[repr(c), f"{p:.3f}"] for c, p in top], ["next char", "probability"],
                       title=f"Top-5 next characters after {prompt!r}")
    return samples, top


# ----------------------------------------------------------------------------- run folder


def fresh_run_folder(out: pathlib.Path, *, hint: str = "; pass --resume to continue instead") -> None:
    """A new (not resumed) run keeps the previous run's checkpoints and log aside, not deleted."""
    for name, aside in (("checkpoints", "checkpoints.previous"), ("metrics.jsonl", "metrics.previous.jsonl")):
        if (out / name).exists():
            if (out / aside).is_dir():
                shutil.rmtree(out / aside)
            (out / name).replace(out / aside)
            print(f"(a new run: the previous {name} moved to {out / aside}{hint})")


def restore_params(out: pathlib.Path, init, optimizer, carry):
    """Params and step of the newest checkpoint in ``out/checkpoints``."""
    template = rj.init_train_state(init(jax.random.key(0)), optimizer, jax.random.key(0), carry=carry)
    with rj.Checkpoints(out / "checkpoints") as ckpt:
        if ckpt.latest_step is None:
            raise FileNotFoundError(f"--sample-only: no checkpoint in {out / 'checkpoints'}; train first (or pass --out)")
        state, _ = ckpt.restore(template)
    return state.params, int(state.step)


# ----------------------------------------------------------------------------- main


def parse_args(argv):
    p = common.base_parser(__doc__.splitlines()[0])
    p.add_argument("--text", type=pathlib.Path, default=None, help="train on this UTF-8 file instead")
    p.add_argument("--cell", choices=sorted(CELLS), default=None)
    p.add_argument("--long", action="store_true",
                   help="the longer configuration (LONG: more steps, dropout) instead of the default")
    for name in ("layers", "embed", "hidden", "batch", "bptt", "steps", "warmup", "eval_every", "eval_streams",
                 "ckpt_every", "prime_chars", "check_samples"):
        p.add_argument("--" + name.replace("_", "-"), type=int, default=None)
    for name in ("lr", "dropout", "out_dropout", "clip"):
        p.add_argument("--" + name.replace("_", "-"), type=float, default=None)
    p.add_argument("--dtype", choices=["float32", "bfloat16"], default="float32",
                   help="the dtype of the cells' matrix products (params and state stay float32)")
    p.add_argument("--prompt", default="the for stateme")
    p.add_argument("--sample-chars", type=int, default=None)
    p.add_argument("--ngram-check", type=int, default=None, metavar="N",
                   help="draw N temperature-0.5 samples from the 5-gram Kneser-Ney model after the same passage "
                        "and prompt, and count those with a run longer than the corpus's, as --check-samples does "
                        "for the network (default 20; 0: none)")
    p.add_argument("--resume", action="store_true", help="continue from the checkpoint in the run folder")
    p.add_argument("--sample-only", action="store_true", help="sample from the saved checkpoint; no training")
    args = p.parse_args(argv)
    if args.sample_only and args.ngram_check:
        raise ValueError("--ngram-check: the 5-gram is fitted on the training text, which --sample-only does not read; "
                         "train with --ngram-check instead")
    return common.fill_defaults(args, dict(DEFAULTS, **LONG) if args.long else DEFAULTS, SMOKE)


def main(argv=None) -> dict:
    wall0, cpu0 = time.time(), time.process_time()
    args = parse_args(argv)
    out = common.run_dir(NAME, args.out)
    cfg_keys = ["cell", "layers", "embed", "hidden", "batch", "bptt", "steps", "warmup", "lr", "dropout", "out_dropout", "clip"]
    if args.sample_only:
        return sample_only(args, out)

    text = read_text(args.text) if args.text else python_reference_text()
    if args.smoke:
        text = text[:SMOKE_CHARS]
    vocab, train, val, stream = make_data(text, args.batch, args.bptt)
    check_prompt(vocab, args.prompt)  # fail before training, not after
    check_sampling(args, len(val))
    print(f"corpus: {'--text ' + str(args.text) if args.text else 'Python reference (pydoc_data.topics)'}, "
          f"{len(text):,} characters, {vocab.size} distinct; train {len(train):,}, validation {len(val):,}")

    t0 = time.time()
    models = count_models(vocab.size, train)
    base = baselines(vocab.size, train, val, models)
    print(f"count-based baselines fitted in {time.time() - t0:.1f}s")

    lm, model = make_model(args, vocab.size)
    optimizer = make_optimizer(args)
    key = jax.random.key(args.seed)
    params = lm.init(jax.random.fold_in(key, 0))
    state = rj.init_train_state(params, optimizer, jax.random.fold_in(key, 1),
                                carry=lm.initial_carry((args.batch,)))
    config = {k: getattr(args, k) for k in cfg_keys}
    config["corpus_sha256_16"] = text_digest(text)
    cfg_keys = [*cfg_keys, "corpus_sha256_16"]
    if args.resume:
        saved = json.loads((out / "config.json").read_text()) if (out / "config.json").exists() else None
        if saved is None or not (out / "checkpoints").is_dir():
            raise FileNotFoundError(f"--resume: no checkpoint in {out}; start without --resume")
        same = [k for k in cfg_keys if k != "steps"]
        if {k: saved.get(k) for k in same} != {k: config[k] for k in same}:
            raise ValueError(f"--resume: the checkpoint in {out} was trained with {saved}, not {config}")
    else:
        fresh_run_folder(out)
    (out / "vocab.json").write_text(vocab.to_json())
    (out / "config.json").write_text(json.dumps(config))
    (out / "heldout.txt").write_text(text[len(train):], encoding="utf-8")  # what the sampler reads first
    longest = corpus_runs(text[:len(train)])  # each character's longest run in the training text
    (out / "corpus_runs.json").write_text(json.dumps(longest))

    train_step = rj.make_train_step(make_loss_fn(model, args.out_dropout), optimizer, carry=True)
    evaluate = make_evaluate(model, val, args.eval_streams)
    log = rj.MetricsLog(out / "metrics.jsonl")

    eval_seconds = [0.0]

    def every_step(step, state, metrics):
        if step % args.eval_every == 0 or step == args.steps:
            t = time.time()
            bpc = evaluate(state.params)
            eval_seconds[0] += time.time() - t
            log.write(step, {"val_bpc": bpc})
            tqdm.tqdm.write(f"step {step:5d}  train {float(metrics['loss']):.3f} bits  validation {bpc:.3f} bpc")

    t_train = time.time()
    with rj.Checkpoints(out / "checkpoints", max_to_keep=2) as ckpt:
        if ckpt.latest_step is not None:
            print(f"resuming from the checkpoint at step {ckpt.latest_step} in {out / 'checkpoints'}")
        start = ckpt.latest_step or 0
        # a progress bar with the running loss, also when the output goes to a file or a pipe
        state = rj.fit(train_step, state, rj.chunk_stream(stream, args.bptt), args.steps, checkpoints=ckpt,
                       save_every=args.ckpt_every, log=log, callback=every_step, progress=True)
    seconds = time.time() - t_train - eval_seconds[0]  # training only (compilation included)
    log.close()
    tokens = (int(state.step) - start) * args.batch * args.bptt
    history = {"step": log.series("loss")[0], "train_bits": log.series("loss")[1]}
    history["eval_step"], history["val_bpc"] = log.series("val_bpc")
    val_bpc = float(history["val_bpc"][-1])

    label = f"{args.layers}x{args.hidden} {args.cell}, {int(state.step)} steps"
    rows = [[name, bpc, "yes" if val_bpc < bpc else "no"] for name, bpc in base.items()]
    rows.append([label, val_bpc, ""])
    common.print_table(rows, ["model", "validation bpc", f"beaten by the {args.cell}"],
                       title=f"Validation bits per character ({len(val):,} held-out characters)")
    sample, next_probs = make_sampler(lm, model, val[:args.prime_chars])
    samples, top5 = show_samples(vocab, state.params, sample, next_probs, args.prompt, args.sample_chars, args.seed,
                                 args.prime_chars)
    runs = show_runs(samples, args.prompt, longest)
    check = check_runs(vocab, state.params, sample, vocab.encode(args.prompt), args.sample_chars, 0.5,
                       args.check_samples, longest)

    if args.ngram_check:
        print("\nThe same check on the 5-gram Kneser-Ney model, sampled the same way:", end="")
        sample_5gram = make_ngram_sampler(models["5-gram KN"], val[:args.prime_chars])
        check_ngram = check_runs(vocab, None, sample_5gram, vocab.encode(args.prompt),
                                 args.sample_chars, 0.5, args.ngram_check, longest)

    results = {
        "corpus": {"source": str(args.text) if args.text else "pydoc_data.topics", "chars": len(text),
                   "sha256_16": text_digest(text), "vocab_size": vocab.size, "train_chars": len(train),
                   "val_chars": len(val), "python": sys.version.split()[0]},
        "config": config, "seed": args.seed, "smoke": args.smoke,
        "baselines_bpc": base, "val_bpc": val_bpc,
        "beats": {name: val_bpc < bpc for name, bpc in base.items()},
        "train_seconds": seconds, "tokens_per_second": tokens / seconds if seconds > 0 else None,
        "history": history, "samples": samples, "prompt": args.prompt, "top5": top5, "longest_run": runs,
        "prime_chars": args.prime_chars, "check": check,
    }
    if args.ngram_check:
        results["check_5gram"] = check_ngram
    plot(history, base, out / "char_lm.png", title=f"{args.layers}x{args.hidden} {args.cell}")
    results["wall_seconds"] = time.time() - wall0  # from the start of main: the imports are not counted
    results["cpu_seconds"] = time.process_time() - cpu0  # all threads of this process
    common.write_results(out, results)
    print(f"\nwrote {out / 'results.json'}, {out / 'char_lm.png'} and the checkpoint in {out} "
          f"({results['wall_seconds']:.0f} s wall, {results['cpu_seconds']:.0f} s CPU)")
    return results


def sample_only(args, out: pathlib.Path) -> dict:
    if not (out / "vocab.json").exists():
        raise FileNotFoundError(f"--sample-only: no trained model in {out}; train first (or pass --out)")
    vocab = CharVocab.from_json((out / "vocab.json").read_text())
    for k, v in json.loads((out / "config.json").read_text()).items():
        setattr(args, k, v)
    check_prompt(vocab, args.prompt)
    heldout = (out / "heldout.txt").read_text(encoding="utf-8") if (out / "heldout.txt").exists() else ""
    check_sampling(args, len(heldout), where=f" ({out / 'heldout.txt'})")
    lm, model = make_model(args, vocab.size)
    params, step = restore_params(out, lm.init, make_optimizer(args), lm.initial_carry((args.batch,)))
    print(f"sampling from the checkpoint at step {step} in {out / 'checkpoints'}")
    sample, next_probs = make_sampler(lm, model, vocab.encode(heldout[:args.prime_chars]))
    samples, top5 = show_samples(vocab, params, sample, next_probs, args.prompt, args.sample_chars, args.seed,
                                 args.prime_chars)
    result = {"samples": samples, "top5": top5, "prompt": args.prompt, "step": step, "prime_chars": args.prime_chars}
    if (out / "corpus_runs.json").exists():
        longest = json.loads((out / "corpus_runs.json").read_text())
        result["longest_run"] = show_runs(samples, args.prompt, longest)
        result["check"] = check_runs(vocab, params, sample, vocab.encode(args.prompt), args.sample_chars, 0.5,
                                     args.check_samples, longest)
    return result


def plot(history, base, path, title):
    fig, ax = common.subplots(figsize=(7, 4))
    steps = np.asarray(history["step"])
    bits = np.asarray(history["train_bits"])
    if len(bits) >= 10:
        k = max(len(bits) // 50, 1)
        bits = np.convolve(bits, np.ones(k) / k, mode="valid")
        steps = steps[k - 1:]
    ax.plot(steps, bits, lw=1, color="0.6", label="training (running mean)")
    ax.plot(history["eval_step"], history["val_bpc"], "o-", color="C0", label="validation")
    for (name, bpc), c in zip(base.items(), ("C3", "C1", "C2"), strict=False):
        ax.axhline(bpc, ls="--", color=c, lw=1, label=f"{name} (validation)")
    ax.set_xlabel("training step")
    ax.set_ylabel("bits per character")
    ax.set_title(f"Next-character model: {title}")
    ax.set_ylim(top=min(max(base.values()) + 0.5, ax.get_ylim()[1]))
    ax.legend(fontsize=8)
    common.save_figure(fig, path, dpi=110, tight=True)


if __name__ == "__main__":
    main()
