"""Sentiment experiment: the IMDB loader on a tiny fixture, the synthetic grammar; smoke run."""

import importlib.util

import numpy as np
import pytest

from experiments import sentiment

# the self-made vectors (truncated SVD) and the bag-of-words baseline use scikit-learn
needs_sklearn = pytest.mark.skipif(
    importlib.util.find_spec("sklearn") is None,
    reason="needs the experiments extra (scikit-learn): pip install -e '.[experiments]'")


@pytest.fixture
def imdb(tmp_path):
    reviews = {
        ("train", "pos"): ["A <br />great film!", "Loved it, truly."],
        ("train", "neg"): ["Not good. Boring.", "Awful acting<br /><br />and it's long", "meh"],
        ("test", "pos"): ["Great"],
        ("test", "neg"): ["Bad"],
    }
    for (split, sub), texts in reviews.items():
        folder = tmp_path / "aclImdb" / split / sub
        folder.mkdir(parents=True)
        for k, text in enumerate(texts):
            (folder / f"{k}_{7 if sub == 'pos' else 2}.txt").write_text(text)
    (tmp_path / "aclImdb" / "train" / "unsup").mkdir()  # present in the real archive, ignored
    return tmp_path / "aclImdb"


def test_load_imdb_reads_the_archive_layout(imdb):
    texts, labels = sentiment.load_imdb(imdb, "train")
    assert texts == ["Not good. Boring.", "Awful acting<br /><br />and it's long", "meh",
                     "A <br />great film!", "Loved it, truly."]
    assert labels.tolist() == [0, 0, 0, 1, 1]
    texts, labels = sentiment.load_imdb(imdb, "train", max_per_class=1)
    assert labels.tolist() == [0, 1] and texts[1] == "A <br />great film!"
    assert sentiment.load_imdb(imdb, "test")[1].tolist() == [0, 1]
    with pytest.raises(FileNotFoundError, match="IMDB layout"):
        sentiment.load_imdb(imdb, "valid")


def test_tokenize_vocab_and_encode(imdb):
    assert sentiment.tokenize("Awful acting<br /><br />and it's long!") == [
        "awful", "acting", "and", "it's", "long", "!"]
    texts, _ = sentiment.load_imdb(imdb, "train")
    tokens = [sentiment.tokenize(t) for t in texts]
    vocab = sentiment.build_vocab(tokens, max_size=6)
    assert vocab[:2] == ["<pad>", "<unk>"] and len(vocab) == 6
    ids, lengths = sentiment.encode([["great", "zzz"], ["a"] * 9], vocab, max_len=4)
    index = {w: i for i, w in enumerate(vocab)}
    assert lengths.tolist() == [2, 4]
    assert ids[0].tolist() == [index.get("great", 1), 1, 0, 0]
    vocab = sentiment.build_vocab(tokens, max_size=100)
    index = {w: i for i, w in enumerate(vocab)}
    ids, lengths = sentiment.encode([["zzz", "it's", "great"], ["a"]], vocab, max_len=2)
    assert ids.tolist() == [[index["it's"], index["great"]], [index["a"], 0]] and lengths.tolist() == [2, 1]
    assert sentiment.encode([["a"] * 3], vocab, max_len=50)[0].shape == (1, 3)  # padded to the longest


def _polarity(tokens):
    """Independent reading of a synthetic review: the last judgement ("was"/"seemed" followed by
    an adjective or a negator), its adjective's polarity flipped by the negator."""
    adjectives = set(sentiment.POSITIVE) | set(sentiment.NEGATIVE)
    k = max(i for i, t in enumerate(tokens[:-1])
            if t in ("was", "seemed") and tokens[i + 1] in adjectives | set(sentiment.NEGATORS))
    negated = tokens[k + 1] in sentiment.NEGATORS
    positive = tokens[k + 1 + negated] in sentiment.POSITIVE
    later = [t for t in tokens[k + 2 + negated:] if t in adjectives]
    assert all((t in sentiment.POSITIVE) == positive for t in later)  # coordinated: same polarity
    return int(positive != negated)


def test_synthetic_labels_need_negation_and_order():
    data = sentiment.make_synthetic(seed=0, num_train=3000, num_test=10, num_unlabelled=10)
    tokens, labels = data["train"]
    assert 0.45 < labels.mean() < 0.55
    assert [_polarity(t) for t in tokens] == labels.tolist()
    # the words alone mislead: the first-seen adjective's polarity is wrong in every contrast review
    contrast = [t for t in tokens if "but" in t]
    assert 0.4 < len(contrast) / len(tokens) < 0.6
    for t in contrast:
        assert _polarity(t[: t.index("but")]) != _polarity(t)
    negated = sum(any(w in sentiment.NEGATORS for w in t) for t in tokens)
    assert negated > 0.3 * len(tokens)


@needs_sklearn
def test_smoke_run_synthetic_with_frozen_and_fine_tuned_vectors(tmp_path):
    variants = ["mean, pretrained frozen", "last, pretrained fine-tuned"]
    results = sentiment.main(["--smoke", "--out", str(tmp_path), "--variants", *variants])
    assert "SYNTHETIC" in results["data"]
    frozen, tuned = (results["models"][v] for v in variants)
    assert frozen["embedding_max_change"] == 0.0 and tuned["embedding_max_change"] > 1e-3
    for r in (frozen, tuned):
        assert np.mean(r["loss"][-10:]) < np.mean(r["loss"][:10])
    # order matters in this corpus: the recurrent model beats a bag of words, which is at chance
    assert results["bag_of_words_accuracy"] < 0.62
    assert tuned["test_accuracy"] > results["bag_of_words_accuracy"] + 0.25
    vectors = tmp_path / "vectors.txt"  # self-made vectors, in GloVe format
    first = vectors.read_text().splitlines()[0].split()
    assert len(first) == 1 + sentiment.SMOKE["embed"]
    assert (tmp_path / "sentiment.png").exists() and (tmp_path / "results.json").exists()


@needs_sklearn
def test_smoke_run_reads_the_imdb_layout(imdb, tmp_path):
    """Two steps on the fixture's five training reviews: the run reads the archive and scores
    its two test reviews (an accuracy of 0, 1/2 or 1), with the loss logged at both steps."""
    results = sentiment.main(["--smoke", "--data", str(imdb), "--out", str(tmp_path), "--steps", "2",
                              "--variants", "last, random"])
    assert results["data"] == f"IMDB ({imdb})"
    r = results["models"]["last, random"]
    assert r["test_accuracy"] in (0.0, 0.5, 1.0)
    assert len(r["loss"]) == 2 and np.isfinite(r["loss"]).all()
