"""Date normalisation with an encoder–decoder: human date formats → ISO ``YYYY-MM-DD``.

Run:  python experiments/dates.py            (about 5 min on a shared 2-core CPU)
      python experiments/dates.py --smoke    (seconds)

Task: a seeded generator writes random dates between 1969-01-01 and 2068-12-31 in 14 human
formats ("22 November 2026", "Nov 22, 26", "sunday the 22nd of november 2026", "22.11.2026",
...); the target is the ISO date ``2026-11-22``. Test dates are disjoint from training dates.
Two-digit years follow Python's ``%y`` rule (69–99 → 19xx, 00–68 → 20xx), so every input
parses back with ``datetime.strptime``.

Models (character level): a bidirectional GRU encoder and a GRU decoder fed its previous
output character, trained with teacher forcing, in three variants — no attention (the
decoder starts from the encoder's final state, the "context vector"), additive attention
(Bahdanau et al. 2015) and dot-product attention (Luong et al. 2015). Each is decoded
greedily and with beam search. Reported: exact-match accuracy overall and by input length,
and attention heat-maps.

Measured (seed 0, 1,200 steps of 64, 2,000 test dates): exact match 95.7% (greedy) / 95.9%
(beam 4) without attention, 100% / 100% with additive attention, 99.95% / 100% with
dot-product attention. Attention also learns several times faster (98% after 200 steps vs
32%); without it the hardest inputs are the short all-digit ones ("20230404": 75%), not the
long ones.
"""

from __future__ import annotations

import datetime as dt
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

# ----------------------------------------------------------------------------- data

FIRST_DAY = dt.date(1969, 1, 1)
LAST_DAY = dt.date(2068, 12, 31)
MONTHS = ["january", "february", "march", "april", "may", "june", "july", "august",
          "september", "october", "november", "december"]
WEEKDAYS = ["monday", "tuesday", "wednesday", "thursday", "friday", "saturday", "sunday"]


def ordinal(n: int) -> str:
    """1 → '1st', 2 → '2nd', 11 → '11th', 22 → '22nd'."""
    suffix = "th" if 10 <= n % 100 <= 20 else {1: "st", 2: "nd", 3: "rd"}.get(n % 10, "th")
    return f"{n}{suffix}"


def _month(d, short=False, title=False):
    name = MONTHS[d.month - 1][:3] if short else MONTHS[d.month - 1]
    return name.title() if title else name


def _weekday(d, short=False, title=False):
    name = WEEKDAYS[d.weekday()][:3] if short else WEEKDAYS[d.weekday()]
    return name.title() if title else name


# name -> renderer; English names are written here, not taken from the locale.
FORMATS = {
    "d Month yyyy": lambda d: f"{d.day} {_month(d, title=True)} {d.year}",
    "Mon d, yy": lambda d: f"{_month(d, True, True)} {d.day}, {d.year % 100:02d}",
    "weekday the dth of month yyyy": lambda d: f"{_weekday(d)} the {ordinal(d.day)} of {_month(d)} {d.year}",
    "dd.mm.yyyy": lambda d: f"{d.day:02d}.{d.month:02d}.{d.year}",
    "mm/dd/yyyy": lambda d: f"{d.month:02d}/{d.day:02d}/{d.year}",
    "Weekday, Month d, yyyy": lambda d: f"{_weekday(d, title=True)}, {_month(d, title=True)} {d.day}, {d.year}",
    "d-mon-yyyy": lambda d: f"{d.day}-{_month(d, True)}-{d.year}",
    "mon d yyyy": lambda d: f"{_month(d, True)} {d.day} {d.year}",
    "the dth of month, yyyy": lambda d: f"the {ordinal(d.day)} of {_month(d)}, {d.year}",
    "Wkd d Mon yyyy": lambda d: f"{_weekday(d, True, True)} {d.day} {_month(d, True, True)} {d.year}",
    "yyyymmdd": lambda d: f"{d.year}{d.month:02d}{d.day:02d}",
    "d.m.yy": lambda d: f"{d.day}.{d.month}.{d.year % 100:02d}",
    "MONTH dth yyyy": lambda d: f"{_month(d).upper()} {ordinal(d.day).upper()} {d.year}",
    "yyyy, month d": lambda d: f"{d.year}, {_month(d)} {d.day}",
}

SRC_VOCAB = ["<pad>"] + list(" ,-./0123456789abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ")
TGT_VOCAB = ["<bos>", "<eos>"] + list("0123456789-")
SRC_INDEX = {c: i for i, c in enumerate(SRC_VOCAB)}
TGT_INDEX = {c: i for i, c in enumerate(TGT_VOCAB)}
BOS, EOS = TGT_INDEX["<bos>"], TGT_INDEX["<eos>"]
TGT_LEN = 11  # "YYYY-MM-DD" + <eos>


def split_dates(rng: np.random.Generator, num_test: int) -> tuple[list, list]:
    """All days in [FIRST_DAY, LAST_DAY] shuffled, cut into disjoint (train, test) date lists."""
    days = [FIRST_DAY + dt.timedelta(i) for i in range((LAST_DAY - FIRST_DAY).days + 1)]
    order = rng.permutation(len(days))
    return [days[i] for i in order[num_test:]], [days[i] for i in order[:num_test]]


def render(rng: np.random.Generator, dates: list) -> list[tuple[str, str, str]]:
    """Each date in a random format: ``[(text, iso, format_name)]``."""
    names = list(FORMATS)
    picks = rng.integers(len(names), size=len(dates))
    return [(FORMATS[names[k]](d), d.isoformat(), names[k]) for d, k in zip(dates, picks, strict=True)]


def encode_src(texts: list[str]) -> tuple[np.ndarray, np.ndarray]:
    """Character ids ``[N, T_max]`` (0-padded) and lengths ``[N]``."""
    lengths = np.array([len(t) for t in texts], np.int32)
    ids = np.zeros((len(texts), lengths.max()), np.int32)
    for n, text in enumerate(texts):
        ids[n, : len(text)] = [SRC_INDEX[c] for c in text]
    return ids, lengths


def encode_tgt(isos: list[str]) -> np.ndarray:
    """Target ids ``[N, 11]``: the ISO characters then ``<eos>``."""
    return np.array([[TGT_INDEX[c] for c in iso] + [EOS] for iso in isos], np.int32)


def decode_tgt(ids) -> str:
    """Target ids → string, stopping at the first ``<eos>``."""
    return common.decode_until(ids, TGT_VOCAB, EOS)


def make_data(seed: int, num_train: int, num_test: int) -> dict:
    """Seeded train/test sets on disjoint dates; arrays are batch-major numpy."""
    rng = np.random.default_rng(seed)
    train_days, test_days = split_dates(rng, num_test)
    train = render(rng, [train_days[i] for i in rng.integers(len(train_days), size=num_train)])
    test = render(rng, test_days)
    data = {}
    for split, rows in (("train", train), ("test", test)):
        texts, isos, fmts = zip(*rows, strict=True)
        src, lengths = encode_src(list(texts))
        data[split] = {"src": src, "lengths": lengths, "tgt": encode_tgt(list(isos)),
                       "texts": list(texts), "isos": list(isos), "formats": list(fmts)}
    return data


# ----------------------------------------------------------------------------- model

CONFIG = {"num_train": 20000, "num_test": 2000, "embed": 24, "hidden": 48, "attn": 64,
          "batch": 64, "steps": 1200, "lr": 3e-3, "beam": 4, "eval_every": 100}
SMOKE = {"num_train": 1000, "num_test": 150, "embed": 8, "hidden": 8, "attn": 8,
         "batch": 32, "steps": 40, "lr": 1e-2, "beam": 3, "eval_every": 20}
KINDS = ("none", "additive", "dot")
LABELS = {"none": "no attention (context vector)", "additive": "additive attention",
          "dot": "dot-product attention"}


def make_model(kind: str, cfg: dict) -> rj.Seq2Seq:
    """Char embedding → bidirectional GRU encoder (``hidden`` per direction) → GRU decoder
    (``2 hidden``) fed ``[previous char; context]``.

    The context is the attention read-out over the encoder outputs with the decoder's previous
    state as query — additive ``vᵀ tanh(W_q q + W_k m_s)`` or scaled dot product
    ``q·m_s / √K`` — or, for ``kind="none"``, the encoder's final states ``[h→_L; h←_0]`` at
    every step: the fixed "context vector" of Cho et al. (2014).
    """
    e, h = cfg["embed"], cfg["hidden"]
    attention = {"none": None,
                 "additive": rj.additive_attention(2 * h, 2 * h, cfg["attn"]),
                 "dot": rj.dot_attention(scaled=True)}[kind]
    return rj.seq2seq(rj.bidirectional(rj.gru(e, h), rj.gru(e, h)), rj.gru(e + 2 * h, 2 * h),
                      src_vocab=len(SRC_VOCAB), tgt_vocab=len(TGT_VOCAB), embed_size=e,
                      attention=attention)


def shift_right(tgt):
    """Decoder inputs ``[<bos>, y_0 .. y_{T-2}]`` for targets ``tgt: [T, B]``."""
    return jnp.concatenate([jnp.full((1,) + tgt.shape[1:], BOS, tgt.dtype), tgt[:-1]], 0)


def loss_fn(model, params, batch, key):
    src, lengths, tgt = batch  # [S, B], [B], [11, B]
    logits, _ = model.apply(params, src, shift_right(tgt), src_lengths=lengths)  # teacher forcing
    return rj.sequence_cross_entropy(logits, tgt)


def decoders(model: rj.Seq2Seq, beam: int):
    """Jitted ``greedy(params, src, lengths) -> tokens [11, B]`` and the best beam-search
    hypothesis ``beam_search(params, src, lengths) -> (tokens [11, B], log-prob [B])``."""

    def greedy(params, src, lengths):
        state = model.encode(params, src, lengths=lengths)
        start = jnp.full(src.shape[1:], BOS)
        return rj.greedy(model.step, params, state, start, max_len=TGT_LEN, eos=EOS)[0]

    def beam_search(params, src, lengths):
        state = model.encode(params, src, lengths=lengths)
        start = jnp.full(src.shape[1:], BOS)
        tokens, lengths, scores = rj.beam_search(model.step, params, state, start, max_len=TGT_LEN,
                                                 beam_size=beam, eos=EOS)
        return tokens[..., 0], scores[..., 0] * lengths[..., 0]  # best hypothesis, its log-prob

    return jax.jit(greedy), jax.jit(beam_search)


def exact_match(tokens, isos: list[str]) -> np.ndarray:
    """``[B]`` bool: the decoded string (``tokens: [11, B]``) is the ISO date."""
    return np.array([decode_tgt(t) for t in np.asarray(tokens).T]) == np.array(isos)


# ----------------------------------------------------------------------------- train, evaluate

LENGTH_BUCKETS = [(1, 10), (11, 14), (15, 19), (20, 24), (25, 29), (30, 40)]


def train(kind: str, cfg: dict, data: dict, seed: int, out: pathlib.Path):
    """Teacher-forced training with ``rj.fit`` (checkpoints and a metrics log in ``out``);
    exact match on the test dates every ``eval_every`` steps, to show the pace."""
    model = make_model(kind, cfg)
    optimizer = rj.make_optimizer(cfg["lr"])
    key_init, key_train = jax.random.split(jax.random.key(seed))
    state = rj.init_train_state(model.init(key_init), optimizer, key_train)
    train_step = rj.make_train_step(partial(loss_fn, model), optimizer)
    greedy, _ = decoders(model, cfg["beam"])
    split, test = data["train"], data["test"]

    def batch(i):  # a function of the step alone, so a resumed run sees the same batches
        idx = np.random.default_rng([seed, i]).choice(len(split["src"]), cfg["batch"], replace=False)
        return split["src"][idx].T, split["lengths"][idx], split["tgt"][idx].T

    with (rj.Checkpoints(out / f"checkpoints_{kind}", max_to_keep=1) as ckpt,
          rj.MetricsLog(out / f"train_{kind}.jsonl") as log,
          rj.MetricsLog(out / f"eval_{kind}.jsonl") as evals):
        evals.truncate(ckpt.latest_step or 0)

        def callback(step, state, metrics):
            if step % cfg["eval_every"] == 0:
                tokens = greedy(state.params, test["src"].T, test["lengths"])
                evals.write(step, {"exact_match": float(exact_match(tokens, test["isos"]).mean())})

        start = time.perf_counter()
        state = rj.fit(train_step, state, batch, cfg["steps"], checkpoints=ckpt, log=log, callback=callback)
        seconds = time.perf_counter() - start
        (_, loss), (eval_steps, eval_acc) = log.series("loss"), evals.series("exact_match")
    n_params = int(sum(x.size for x in jax.tree_util.tree_leaves(state.params)))
    return model, state.params, {"loss": loss, "eval_step": eval_steps, "eval_greedy": eval_acc,
                                 "train_seconds": seconds, "params": n_params}


def evaluate(model, params, split: dict, beam: int) -> dict:
    """Exact-match accuracy (greedy and beam) overall, by input length and by format."""
    greedy, beam_search = decoders(model, beam)
    src, lengths = split["src"].T, split["lengths"]
    hits = {"greedy": exact_match(greedy(params, src, lengths), split["isos"]),
            "beam": exact_match(beam_search(params, src, lengths)[0], split["isos"])}
    formats = np.array(split["formats"])
    out = {}
    for name, hit in hits.items():
        out[name] = float(hit.mean())
        out[f"{name}_by_length"] = {f"{lo}-{hi}": float(hit[(lengths >= lo) & (lengths <= hi)].mean())
                                    for lo, hi in LENGTH_BUCKETS if np.any((lengths >= lo) & (lengths <= hi))}
        out[f"{name}_by_format"] = {f: float(hit[formats == f].mean()) for f in FORMATS}
    return out


def plot_attention(models: dict, params: dict, split: dict, examples: list[int], path: pathlib.Path) -> None:
    """Attention weights while decoding greedily: output characters (rows) × input characters."""
    kinds = [k for k in models if k != "none"]
    fig, axes = common.subplots(len(kinds), len(examples), figsize=(3.3 * len(examples), 2.9 * len(kinds)),
                                squeeze=False)
    idx = np.array(examples)
    src, lengths = split["src"][idx].T, split["lengths"][idx]
    for row, kind in enumerate(kinds):
        model, p = models[kind], params[kind]
        tokens = decoders(model, 1)[0](p, src, lengths)  # [11, n]
        _, weights = model.apply(p, src, shift_right(tokens), src_lengths=lengths)  # [11, n, S]
        for col, n in enumerate(idx):
            ax = axes[row, col]
            text, out = split["texts"][n], decode_tgt(tokens[:, col])
            ax.imshow(np.asarray(weights[: len(out), col, : len(text)]), cmap="Greys", aspect="auto",
                      vmin=0, vmax=1)
            ax.set_xticks(range(len(text)), list(text), fontsize=7)
            ax.set_yticks(range(len(out)), list(out), fontsize=7)
            if col == 0:
                ax.set_ylabel(LABELS[kind])
    common.save_figure(fig, path, dpi=110, tight=True)


def plot_curves(results: dict, path: pathlib.Path) -> None:
    fig, (ax1, ax2, ax3) = common.subplots(1, 3, figsize=(14, 3.8))
    for kind, r in results["models"].items():
        ax1.plot(np.convolve(r["loss"], np.ones(25) / 25, mode="valid"), label=LABELS[kind])
        ax2.plot(r["eval_step"], r["eval_greedy"], marker="o", ms=3, label=LABELS[kind])
        buckets = list(r["greedy_by_length"])
        ax3.plot(buckets, [r["greedy_by_length"][b] for b in buckets], marker="o", label=LABELS[kind])
    ax1.set(xlabel="step", ylabel="train cross-entropy (25-step mean)", yscale="log")
    ax2.set(xlabel="step", ylabel="test exact match (greedy)", ylim=(0, 1.02))
    ax3.set(xlabel="input length (characters), after training", ylabel="test exact match (greedy)",
            ylim=(0, 1.02))
    ax1.legend()
    common.save_figure(fig, path, dpi=110, tight=True)


def main(argv=None) -> dict:
    parser = common.base_parser(__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=None)
    parser.add_argument("--kinds", nargs="+", choices=KINDS, default=list(KINDS))
    args = parser.parse_args(argv)
    cfg = common.pick_config(args, CONFIG, SMOKE)
    out = common.run_dir("dates", args.out)
    data = make_data(args.seed, cfg["num_train"], cfg["num_test"])
    results = {"config": cfg, "seed": args.seed, "models": {}}
    models, params = {}, {}
    for kind in args.kinds:
        models[kind], params[kind], log = train(kind, cfg, data, args.seed, out)
        results["models"][kind] = {**log, **evaluate(models[kind], params[kind], data["test"], cfg["beam"])}
    rows = [[LABELS[kind], r["params"], r["greedy"], r["beam"], r["train_seconds"]]
            for kind, r in results["models"].items()]
    common.print_table(rows, ["model", "params", "exact match, greedy", f"exact match, beam {cfg['beam']}",
                              "train s"], title=f"Date normalisation, {cfg['num_test']} test dates unseen in training")
    lengths = data["test"]["lengths"]
    counts = {f"{lo}-{hi}": int(np.sum((lengths >= lo) & (lengths <= hi))) for lo, hi in LENGTH_BUCKETS}
    buckets = list(next(iter(results["models"].values()))["greedy_by_length"])
    common.print_table([[b, counts[b], *(r["greedy_by_length"][b] for r in results["models"].values())]
                        for b in buckets], ["input length", "n", *(LABELS[k] for k in results["models"])],
                       title="Exact match (greedy) by input length")
    formats = data["test"]["formats"]
    examples = [formats.index(f) for f in ("weekday the dth of month yyyy", "Mon d, yy", "dd.mm.yyyy",
                                           "Weekday, Month d, yyyy") if f in formats]
    if any(kind != "none" for kind in models):
        plot_attention(models, params, data["test"], examples, out / "dates_attention.png")
    plot_curves(results, out / "dates.png")
    common.write_results(out, results)
    return results


if __name__ == "__main__":
    main()
