"""Captioning experiment: digit captions encode the English names; smoke run."""


import numpy as np
import pytest

pytest.importorskip("sklearn", reason="needs the experiments extra (scikit-learn): pip install -e '.[experiments]'")

from experiments import captions  # noqa: E402


def test_captions_encode_names_and_split_is_disjoint():
    data = captions.make_data(seed=0, num_test=500)
    train, test = data["train"], data["test"]
    assert len(train["images"]) == 1297 and len(test["images"]) == 500
    assert train["images"].shape[1] == 64 and 0.0 <= train["images"].min() <= train["images"].max() <= 1.0
    # no image is in both splits
    rows = {r.tobytes() for r in train["images"]}
    assert sum(r.tobytes() in rows for r in test["images"]) < 5  # sklearn's set has a few duplicates
    for split in (train, test):
        for caption, digit, length in zip(split["captions"], split["digits"], split["lengths"], strict=True):
            assert captions.decode_caption(caption) == captions.NAMES[digit]
            assert length == len(captions.NAMES[digit]) + 1 and caption[length - 1] == captions.EOS
    assert sorted(set(test["digits"].tolist())) == list(range(10))


def test_decoding_step_matches_the_teacher_forced_model():
    """Greedy decoding through `step` == argmax of `apply` fed the decoded prefix."""
    import jax

    fns = captions.make_model(captions.SMOKE)
    init, apply, _, _ = fns
    params = init(jax.random.key(3))
    images = captions.make_data(seed=0)["test"]["images"][:16]
    tokens = np.asarray(captions.make_captioner(fns)(params, images))  # [L, 16]
    logits = np.asarray(jax.jit(apply)(params, images, captions.shift_right(tokens)))
    for b in range(tokens.shape[1]):
        eos = np.nonzero(tokens[:, b] == captions.EOS)[0]
        stop = eos[0] + 1 if len(eos) else tokens.shape[0]
        np.testing.assert_array_equal(logits[:stop, b].argmax(-1), tokens[:stop, b])


def test_smoke_run(tmp_path):
    """120 steps: well above chance (1 in 10 digits) and nearly always a real digit name; the
    logistic-regression reference is the full run's (it does not depend on the smoke size)."""
    results = captions.main(["--smoke", "--out", str(tmp_path)])
    assert np.mean(results["loss"][-10:]) < 0.2 * np.mean(results["loss"][:10])
    test = results["test"]
    assert test["word_accuracy"] > 0.7 and test["valid_names"] > 0.9
    assert len(test["captions"]) == 500
    assert results["logistic_regression_accuracy"] > 0.9
    assert (tmp_path / "captions.png").exists() and (tmp_path / "checkpoints").is_dir()
    from experiments import reproduce  # its check reads every number it compares from these results

    rows = reproduce.compare("captions", results)
    assert len(rows) == 4 and all(np.isfinite(r["measured"]) for r in rows)
