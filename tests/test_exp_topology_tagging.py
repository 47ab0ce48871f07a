"""Tagging experiment: the grammar's labels and its right-context property; smoke run."""

import collections

import numpy as np
import pytest

from experiments import tagging

PROPER = set(tagging.FIRST_NAMES) | set(tagging.SURNAMES) | set(tagging.PLACES)
NAME_FOLLOWERS = set(tagging.SURNAMES) | {t.split()[0] for t in tagging.NAME_VERBS}


@pytest.fixture(scope="module")
def sentences():
    rng = np.random.default_rng(1)
    return [tagging.sentence(rng) for _ in range(4000)]


def test_labels_follow_the_definition(sentences):
    for words, labels in sentences:
        assert len(words) == len(labels) and words == [w.lower() for w in words]
        for k, (w, y) in enumerate(zip(words, labels, strict=True)):
            if w in tagging.AMBIGUOUS:
                # a name iff followed by a surname or a verb phrase that follows names
                assert y == int(k + 1 < len(words) and words[k + 1] in NAME_FOLLOWERS), words
            else:
                assert y == int(w in PROPER), (w, words)


def test_right_context_decides_and_left_context_does_not(sentences):
    by_next, by_prev = collections.defaultdict(set), collections.defaultdict(list)
    for words, labels in sentences:
        for k, (w, y) in enumerate(zip(words, labels, strict=True)):
            if w in tagging.AMBIGUOUS:
                by_next[words[k + 1]].add(y)
                by_prev[words[k - 1] if k else "<s>"].append(y)
    assert all(len(ys) == 1 for ys in by_next.values())  # the next word fixes the role
    total = sum(len(ys) for ys in by_prev.values())
    assert total > 1500
    for prev, ys in by_prev.items():  # the role is a fair coin whatever precedes it
        n = len(ys)
        assert abs(np.mean(ys) - 0.5) < 4 * 0.5 / np.sqrt(n) + 1e-9, (prev, n, np.mean(ys))


def test_make_data_encodes_words_and_labels():
    data = tagging.make_data(seed=0, num_train=300, num_test=50)
    for split in data.values():
        for n, words in enumerate(split["words"]):
            length = split["lengths"][n]
            assert [tagging.VOCAB[i] for i in split["ids"][n, :length]] == words
            assert not split["ids"][n, length:].any() and not split["labels"][n, length:].any()
    again = tagging.make_data(seed=0, num_train=300, num_test=50)
    np.testing.assert_array_equal(again["train"]["ids"], data["train"]["ids"])


def test_smoke_run_bidirectional_beats_unidirectional_on_ambiguous_words(tmp_path):
    results = tagging.main(["--smoke", "--out", str(tmp_path)])
    uni, bi = results["models"]["uni"], results["models"]["bi"]
    for r in (uni, bi):
        assert np.mean(r["loss"][-10:]) < 0.3 * np.mean(r["loss"][:10])
        assert r["f1_other"] > 0.95  # unambiguous words are easy for both
    # left context carries no information about the ambiguous words: chance for the
    # unidirectional model; the bidirectional one reads the next word
    assert uni["accuracy_ambiguous"] < 0.7
    assert bi["accuracy_ambiguous"] > 0.95
    assert bi["f1_ambiguous"] > uni["f1_ambiguous"] + 0.25
    assert bi["f1"] > uni["f1"]
    assert (tmp_path / "results.json").exists() and (tmp_path / "tagging.png").exists()
    # the reproduction check finds every number it compares in these results
    from experiments import reproduce

    rows = reproduce.compare("tagging", results)
    assert len(rows) == len(reproduce.SPECS["tagging"]().checks) and all(np.isfinite(r["measured"]) for r in rows)


def test_smoke_run_on_packed_rows_tags_as_well(tmp_path):
    """--pack: the same task trained on packed rows (resets at each sentence) still lets the
    bidirectional model read the next word, and the unidirectional one still cannot."""
    results = tagging.main(["--smoke", "--pack", "--out", str(tmp_path)])
    uni, bi = results["models"]["uni"], results["models"]["bi"]
    assert results["config"]["pack"] and bi["f1_other"] > 0.95 and uni["f1_other"] > 0.95
    assert bi["accuracy_ambiguous"] > 0.95 and uni["accuracy_ambiguous"] < 0.7
