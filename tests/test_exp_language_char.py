"""Smoke runs of the next-character language model (experiments/char_lm.py)."""

import doctest
import json
from itertools import groupby

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from experiments import char_lm
from experiments.ngram import KneserNey
from experiments.text_data import CharVocab, python_reference_text


@pytest.fixture(scope="module")
def run(tmp_path_factory):
    out = tmp_path_factory.mktemp("char_lm")
    return out, char_lm.main(["--smoke", "--out", str(out)])


def test_smoke_learns_and_beats_the_trigram(run):
    out, r = run
    bits = np.asarray(r["history"]["train_bits"])
    assert len(bits) == char_lm.SMOKE["steps"]
    assert bits[:5].mean() > bits[-5:].mean() + 1.0  # the loss falls
    assert bits[0] == pytest.approx(np.log2(r["corpus"]["vocab_size"]), abs=0.3)  # starts near uniform
    base = r["baselines_bpc"]
    assert base["unigram"] > base["3-gram KN"] > base["5-gram KN"]
    # even the seconds-long smoke model uses more context than two characters: it beats the
    # Kneser-Ney 3-gram fitted on the same training text and scored on the same characters
    assert r["val_bpc"] < base["3-gram KN"]
    assert r["beats"] == {"unigram": True, "3-gram KN": True, "5-gram KN": r["val_bpc"] < base["5-gram KN"]}
    saved = json.loads((out / "results.json").read_text())
    assert saved["val_bpc"] == pytest.approx(r["val_bpc"])
    assert (out / "char_lm.png").stat().st_size > 0
    assert (out / "checkpoints" / str(char_lm.SMOKE["steps"])).is_dir()


def test_samples_are_text_from_the_vocabulary(run):
    _, r = run
    vocab = CharVocab.from_text(python_reference_text()[: char_lm.SMOKE_CHARS])
    prompt = r["prompt"]
    for sample in r["samples"].values():
        assert sample.startswith(prompt)
        assert len(sample) == len(prompt) + char_lm.SMOKE["sample_chars"]
        assert set(sample) <= set(vocab.chars)
    # the longest run of one character in each generated part, counted here with groupby
    for t, sample in r["samples"].items():
        runs = [(len(list(g)), c) for c, g in groupby(sample[len(prompt):])]
        run_len = max(n for n, _ in runs)
        run_char = next(c for n, c in runs if n == run_len)  # the first of equally long runs
        got = r["longest_run"][t]
        assert (got["chars"], got["char"]) == (run_len, run_char)
        train_text = python_reference_text()[: char_lm.SMOKE_CHARS][: r["corpus"]["train_chars"]]
        assert got["train_chars"] == max(len(list(g)) for c, g in groupby(train_text) if c == run_char)
    # the check over sampling seeds: each sample's longest run recounted with groupby, against
    # the training text's longest run of that character
    train_text = python_reference_text()[: char_lm.SMOKE_CHARS][: r["corpus"]["train_chars"]]
    check = r["check"]
    assert check["temperature"] == 0.5 and check["seeds"] == len(check["runs"]) == char_lm.SMOKE["check_samples"]
    bad = 0
    for run_ in check["runs"]:
        text = run_["text"]
        assert len(text) == char_lm.SMOKE["sample_chars"] and set(text) <= set(vocab.chars)
        runs = [(len(list(g)), c) for c, g in groupby(text)]
        run_len = max(n for n, _ in runs)
        run_char = next(c for n, c in runs if n == run_len)
        in_train = max((len(list(g)) for c, g in groupby(train_text) if c == run_char), default=0)
        assert (run_["chars"], run_["char"], run_["train_chars"]) == (run_len, run_char, in_train)
        bad += run_len > in_train
    assert check["longer_than_corpus"] == bad
    # the printed temperature-0.5 sample is sampling seed --seed (0) of the check
    assert check["runs"][0]["text"] == r["samples"]["0.5"][len(prompt):]
    assert r["prime_chars"] == char_lm.SMOKE["prime_chars"]
    chars, probs = zip(*r["top5"], strict=True)
    assert len(set(chars)) == 5 and set(chars) <= set(vocab.chars)
    assert list(probs) == sorted(probs, reverse=True)
    assert 0 < sum(probs) <= 1 + 1e-6


@pytest.mark.slow
def test_resume_continues_and_sample_only_reads_the_checkpoint(run):
    out, first = run
    steps = char_lm.SMOKE["steps"]
    resumed = char_lm.main(["--smoke", "--out", str(out), "--resume", "--steps", str(steps + 20)])
    h = resumed["history"]
    assert h["step"][-1] == steps + 20
    # the log continues: the first run's rows are kept, then the new steps follow
    np.testing.assert_allclose(h["train_bits"][:steps], first["history"]["train_bits"])
    # the restored model goes on from where it was, far below a fresh model's first loss
    assert h["train_bits"][steps] < first["history"]["train_bits"][0] - 1.0
    sampled = char_lm.main(["--smoke", "--out", str(out), "--sample-only"])
    assert sampled["step"] == steps + 20
    for (c1, p1), (c2, p2) in zip(sampled["top5"], resumed["top5"], strict=True):
        assert c1 == c2 and p1 == pytest.approx(p2, rel=1e-5)
    # it reads the same held-out passage first, and checks its samples against the same corpus runs
    assert sampled["samples"] == resumed["samples"]
    assert sampled["check"]["longer_than_corpus"] == resumed["check"]["longer_than_corpus"]
    with pytest.raises(ValueError, match="--resume: the checkpoint .* was trained with"):
        char_lm.main(["--smoke", "--out", str(out), "--resume", "--hidden", "8"])


def test_the_sampler_reads_the_held_out_passage_before_the_prompt():
    # next_probs after context + prompt, against the single-step model stepped one character
    # at a time from a zero state over the same characters
    args = char_lm.parse_args(["--smoke"])
    text = python_reference_text()[:2000]
    vocab = CharVocab.from_text(text)
    lm, model = char_lm.make_model(args, vocab.size)
    params = lm.init(jax.random.key(3))
    context, prompt = vocab.encode(text[1000:1050]), vocab.encode("the for")
    _, next_probs = char_lm.make_sampler(lm, model, context)
    _, cold_probs = char_lm.make_sampler(lm, model)
    carry = lm.initial_carry((1,))
    for i in np.concatenate([context, prompt]):
        carry, logits = lm.step(params, carry, jnp.asarray([i]))
    want = np.asarray(jax.nn.softmax(logits[0]))
    np.testing.assert_allclose(next_probs(params, prompt), want, rtol=1e-4, atol=1e-6)
    assert np.abs(cold_probs(params, prompt) - want).max() > 1e-3  # the passage changes the state


def test_longest_run_and_doctests():
    assert char_lm.longest_run("") == (0, "")
    assert char_lm.longest_run("a") == (1, "a")
    assert char_lm.longest_run("abbbcc   ") == (3, "b")  # the first of two equal runs
    assert char_lm.longest_run("ab\n\n\n\nb") == (4, "\n")
    assert char_lm.corpus_runs("") == {}
    assert char_lm.corpus_runs("xx-x---x") == {"x": 2, "-": 3}
    assert doctest.testmod(char_lm).failed == 0


def test_long_option_and_command_line_overrides():
    args = char_lm.parse_args(["--long"])
    assert {k: getattr(args, k) for k in char_lm.LONG} == char_lm.LONG
    assert args.cell == char_lm.DEFAULTS["cell"]  # what LONG does not set keeps the default
    args = char_lm.parse_args(["--long", "--steps", "7"])
    assert args.steps == 7
    assert char_lm.parse_args([]).steps == char_lm.DEFAULTS["steps"] != char_lm.LONG["steps"]


def test_schedule_warms_up_then_decays_along_a_cosine():
    args = char_lm.parse_args(["--lr", "0.01", "--warmup", "10", "--steps", "110"])
    sched = char_lm.make_schedule(args)
    assert float(sched(0)) == 0.0
    assert float(sched(5)) == pytest.approx(0.005)
    assert float(sched(10)) == pytest.approx(0.01)
    t = 60  # halfway through the decay: lr * (0.05 + 0.95 * (1 + cos(pi / 2)) / 2)
    assert float(sched(t)) == pytest.approx(0.01 * (0.05 + 0.95 * 0.5), rel=1e-5)
    assert float(sched(110)) == pytest.approx(0.01 * 0.05, rel=1e-5)


def test_errors(tmp_path):
    with pytest.raises(FileNotFoundError, match="--resume: no checkpoint"):
        char_lm.main(["--smoke", "--out", str(tmp_path), "--resume"])
    with pytest.raises(FileNotFoundError, match="--sample-only: no trained model"):
        char_lm.main(["--smoke", "--out", str(tmp_path), "--sample-only"])
    with pytest.raises(FileNotFoundError, match="--text: no such file"):
        char_lm.main(["--smoke", "--out", str(tmp_path), "--text", str(tmp_path / "missing.txt")])
    bad = tmp_path / "latin1.txt"
    bad.write_bytes("caf\xe9 ".encode("latin-1") * 50)
    with pytest.raises(ValueError, match="--text: expected a UTF-8 text file"):
        char_lm.main(["--smoke", "--out", str(tmp_path), "--text", str(bad)])
    with pytest.raises(SystemExit):
        char_lm.main(["--smoke", "--out", str(tmp_path), "--cell", "transformer"])
    with pytest.raises(ValueError, match=r"--prime-chars: expected an int in \[0, 4000\]"):
        char_lm.main(["--smoke", "--out", str(tmp_path), "--prime-chars", "5000"])
    with pytest.raises(ValueError, match="--check-samples: expected an int >= 0, got -1"):
        char_lm.main(["--smoke", "--out", str(tmp_path), "--check-samples", "-1"])
    with pytest.raises(ValueError, match="--ngram-check: expected an int >= 0, got -1"):
        char_lm.main(["--smoke", "--out", str(tmp_path), "--ngram-check", "-1"])
    with pytest.raises(ValueError, match="--ngram-check: the 5-gram is fitted on the training text"):
        char_lm.main(["--smoke", "--out", str(tmp_path), "--sample-only", "--ngram-check", "2"])
    with pytest.raises(ValueError, match="--prompt: expected a non-empty string"):
        char_lm.main(["--smoke", "--out", str(tmp_path), "--prompt", "\u00e9t\u00e9"])


def test_the_ngram_sampler_draws_from_the_tempered_distribution(run):
    _, r = run
    check = r["check_5gram"]  # the smoke run's 5-gram check: counted like the model's
    assert check["seeds"] == len(check["runs"]) == char_lm.SMOKE["ngram_check"] and check["temperature"] == 0.5
    assert check["longer_than_corpus"] == sum(x["chars"] > x["train_chars"] for x in check["runs"])
    assert all(len(x["text"]) == char_lm.SMOKE["sample_chars"] for x in check["runs"])
    # the first character after a context, over many sampling seeds, against p^(1/T) / sum p^(1/T)
    # computed here from the model's distribution
    text = python_reference_text()[:5000]
    vocab = CharVocab.from_text(text)
    ngram = KneserNey(3, vocab.size).fit([vocab.encode(text)])
    context = vocab.encode("the ")
    sample = char_lm.make_ngram_sampler(ngram, context[:2])
    p = ngram.distribution(context)
    for temperature in (1.0, 0.5):
        want = p ** (1 / temperature) / (p ** (1 / temperature)).sum()
        draws = [int(sample(None, context[2:], 1, temperature, jax.random.key(s))[0]) for s in range(3000)]
        freq = np.bincount(draws, minlength=vocab.size) / len(draws)
        assert np.abs(freq - want).max() < 0.03, (temperature, np.abs(freq - want).max())
    # a sample continues its own history: near-zero temperature follows the argmax path
    greedy, history = [], list(context)
    for _ in range(20):
        greedy.append(int(np.argmax(ngram.distribution(history[-2:]))))
        history.append(greedy[-1])
    np.testing.assert_array_equal(sample(None, context[2:], 20, 1e-3, jax.random.key(0)), greedy)
    # a 1-gram reads no context: its near-zero-temperature samples repeat the commonest character
    unigram = KneserNey(1, vocab.size).fit([vocab.encode(text)])
    top = int(np.argmax(unigram.distribution([])))
    assert char_lm.make_ngram_sampler(unigram, context)(None, context, 5, 1e-3, jax.random.key(0)).tolist() == [top] * 5
