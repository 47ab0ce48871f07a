"""Smoke run of the next-word language model (experiments/word_lm.py), and its scoring and
sampling functions checked against the stepped model on a fresh network."""

import types

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from experiments import word_lm
from experiments.text_data import WordVocab


@pytest.fixture(scope="module")
def run(tmp_path_factory):
    out = tmp_path_factory.mktemp("word_lm")
    return out, word_lm.main(["--smoke", "--out", str(out)])


def test_smoke_learns_and_reports(run):
    """300 sentences and 80 steps: the model leaves the uniform guess and beats the unigram
    baseline. (In the full run it also beats the bigram and stays behind the 3-gram; a smoke run
    is too small to rank it against the n-grams.)"""
    out, r = run
    ppl = np.asarray(r["history"]["train_ppl"])
    assert ppl[:5].mean() > 1.5 * ppl[-5:].mean()  # the loss falls
    assert ppl[0] == pytest.approx(r["corpus"]["vocab_size"], rel=0.3)  # starts near uniform
    assert r["val_ppl"] < r["baselines_ppl"]["unigram"]
    base = r["baselines_ppl"]
    assert base["unigram"] > base["2-gram KN"] > base["3-gram KN"]
    assert (out / "results.json").exists() and (out / "word_lm.png").stat().st_size > 0
    # the sentence's log-probability is the sum of its per-step log-probabilities
    s = r["sentence_logprob"]["sentence"]
    assert s["logprob"] == pytest.approx(float(np.log(s["step_probs"]).sum()), rel=1e-5)
    assert len(s["step_probs"]) == len(s["tokens"]) + 1  # every word, then <END>
    words, probs = zip(*r["top_k"], strict=True)
    assert len(words) == 5 and list(probs) == sorted(probs, reverse=True)
    for sample in r["samples"]:
        toks = sample.split()
        assert "<UNK>" not in toks and "<START>" not in toks and "<PAD>" not in toks
        assert len(toks) <= word_lm.SMOKE["max_words"] + 1  # + "..." when cut at the limit


@pytest.fixture(scope="module")
def fresh():
    vocab = WordVocab(list(WordVocab.SPECIALS) + ["a", "b", "c", "d"])
    cfg = types.SimpleNamespace(layers=2, embed=6, hidden=8, dropout=0.0)
    lm, model = word_lm.make_model(cfg, vocab.size)
    return vocab, lm, model, lm.init(jax.random.key(3))


def test_sentence_logprob_is_the_product_of_stepped_conditionals(fresh):
    vocab, lm, model, params = fresh
    words = ["a", "c", "b", "b"]
    total, _ = word_lm.sentence_logprob(model, params, vocab, words)
    # independently: step the stacked cell token by token from <START>
    carry, prev, logp = lm.initial_carry(()), vocab.START, 0.0
    for target in [*vocab.encode(words).tolist(), vocab.END]:
        carry, logits = lm.step(params, carry, jnp.asarray(prev))
        logp += float(jax.nn.log_softmax(logits)[target])
        prev = target
    assert total == pytest.approx(logp, rel=1e-5)


def test_next_words_match_the_stepped_distribution(fresh):
    vocab, lm, model, params = fresh
    top = word_lm.next_words(model, params, vocab, ["a", "b"], k=vocab.size)
    carry = lm.initial_carry(())
    for tok in (vocab.START, *vocab.encode(["a", "b"]).tolist()):
        carry, logits = lm.step(params, carry, jnp.asarray(tok))
    probs = np.asarray(jax.nn.softmax(logits))
    for w, p in top:
        assert p == pytest.approx(probs[vocab.index[w]], rel=1e-5)


@pytest.mark.parametrize("forbid", [True, False])
def test_sampler_forbids_or_keeps_unk(fresh, forbid):
    vocab, lm, _, params = fresh
    # make <UNK> overwhelmingly likely: it appears unless it is forbidden
    params = params._replace(out=params.out._replace(b=params.out.b.at[vocab.UNK].set(50.0)))
    sample = word_lm.make_sampler(lm, vocab, forbid_unk=forbid, max_words=7)
    sentences = sample(params, 1.0, jax.random.key(0))
    words = [w for s in sentences for w in s]
    assert ("<UNK>" in words) != forbid
    assert all(len(s) <= 8 for s in sentences)  # 7 words, then "..." when cut
    assert not {"<PAD>", "<START>"} & set(words)


def test_text_data_docstring_examples_run():
    import doctest

    import experiments.text_data as module

    assert doctest.testmod(module).failed == 0
