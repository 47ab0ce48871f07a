"""Date-normalisation experiment: the generator round-trips through datetime; smoke run."""

import datetime as dt
import re

import numpy as np
import pytest

from experiments import dates

# Independent parsers, one per format: a regex to normalise ordinals and a strptime pattern.
# (%y follows the POSIX pivot: 69-99 -> 19xx, 00-68 -> 20xx.)
PATTERNS = {
    "d Month yyyy": "%d %B %Y",
    "Mon d, yy": "%b %d, %y",
    "weekday the dth of month yyyy": "%A the %d of %B %Y",
    "dd.mm.yyyy": "%d.%m.%Y",
    "mm/dd/yyyy": "%m/%d/%Y",
    "Weekday, Month d, yyyy": "%A, %B %d, %Y",
    "d-mon-yyyy": "%d-%b-%Y",
    "mon d yyyy": "%b %d %Y",
    "the dth of month, yyyy": "the %d of %B, %Y",
    "Wkd d Mon yyyy": "%a %d %b %Y",
    "yyyymmdd": "%Y%m%d",
    "d.m.yy": "%d.%m.%y",
    "MONTH dth yyyy": "%B %d %Y",
    "yyyy, month d": "%Y, %B %d",
}
WEEKDAY_NAMES = ["monday", "tuesday", "wednesday", "thursday", "friday", "saturday", "sunday"]


def parse(text: str, fmt: str) -> dt.date:
    plain = re.sub(r"(\d+)(st|nd|rd|th)\b", r"\1", text, flags=re.IGNORECASE)
    return dt.datetime.strptime(plain, PATTERNS[fmt]).date()


def test_every_format_is_covered():
    assert set(PATTERNS) == set(dates.FORMATS)


def test_generated_dates_round_trip_through_datetime():
    rng = np.random.default_rng(0)
    train_days, test_days = dates.split_dates(rng, 300)
    sample = test_days + train_days[:3000]
    rows = dates.render(rng, sample)
    assert {fmt for _, _, fmt in rows} == set(dates.FORMATS)
    for (text, iso, fmt), day in zip(rows, sample, strict=True):
        assert iso == day.isoformat() and dt.date.fromisoformat(iso) == day
        assert parse(text, fmt) == day, (text, fmt)
        words = re.findall(r"[a-z]+", text.lower())
        named = [w for w in words if any(n.startswith(w) and len(w) >= 3 for n in WEEKDAY_NAMES)]
        for w in named:  # strptime ignores a weekday that contradicts the date: check it here
            assert WEEKDAY_NAMES[day.weekday()].startswith(w), (text, day)


def test_ordinals_and_edge_days():
    assert [dates.ordinal(n) for n in (1, 2, 3, 4, 11, 12, 13, 21, 22, 23, 31)] == [
        "1st", "2nd", "3rd", "4th", "11th", "12th", "13th", "21st", "22nd", "23rd", "31st"]
    for day in (dates.FIRST_DAY, dates.LAST_DAY, dt.date(2000, 2, 29), dt.date(2026, 11, 22)):
        for fmt, render in dates.FORMATS.items():
            assert parse(render(day), fmt) == day, (fmt, render(day))
    assert dates.FORMATS["weekday the dth of month yyyy"](dt.date(2026, 11, 22)) == (
        "sunday the 22nd of november 2026")


def test_train_and_test_dates_are_disjoint_and_encodings_invert():
    data = dates.make_data(seed=3, num_train=2000, num_test=200)
    train, test = data["train"], data["test"]
    assert not set(train["isos"]) & set(test["isos"])
    assert len(set(test["isos"])) == 200
    for split in (train, test):
        for n in range(0, len(split["texts"]), 97):
            length = split["lengths"][n]
            text = "".join(dates.SRC_VOCAB[i] for i in split["src"][n, :length])
            assert text == split["texts"][n] and not split["src"][n, length:].any()
            assert dates.decode_tgt(split["tgt"][n]) == split["isos"][n]
            assert split["tgt"][n, -1] == dates.EOS
    again = dates.make_data(seed=3, num_train=2000, num_test=200)
    assert again["train"]["texts"] == train["texts"]


@pytest.fixture(scope="module", params=["none", "additive"])
def random_model(request):
    """An untrained model on a padded batch: decoding needs no training."""
    import jax

    model = dates.make_model(request.param, dates.SMOKE)
    params = model.init(jax.random.key(0))
    data = dates.make_data(seed=1, num_train=10, num_test=24)["test"]
    return model, params, data["src"].T, data["lengths"]


def test_beam_one_equals_greedy_and_beam_scores_are_sequence_log_probs(random_model):
    import jax

    model, params, src, lengths = random_model
    greedy, _ = dates.decoders(model, beam=1)
    g_tokens = np.asarray(greedy(params, src, lengths))
    b_tokens, b_logp = dates.decoders(model, beam=1)[1](params, src, lengths)
    np.testing.assert_array_equal(b_tokens, g_tokens)
    # the best of 3 beams: its log-prob is the teacher-forced log-probability of its own output
    # up to and including the first <eos> (nothing is scored after it)
    tokens, logp = dates.decoders(model, beam=3)[1](params, src, lengths)
    logits, weights = jax.jit(model.apply)(params, src, dates.shift_right(tokens), src_lengths=lengths)
    step_logp = np.take_along_axis(np.asarray(jax.nn.log_softmax(logits)), np.asarray(tokens)[..., None], -1)[..., 0]
    tokens = np.asarray(tokens)
    for b in range(tokens.shape[1]):
        eos = np.nonzero(tokens[:, b] == dates.EOS)[0]
        stop = eos[0] + 1 if len(eos) else tokens.shape[0]
        np.testing.assert_allclose(logp[b], step_logp[:stop, b].sum(), rtol=1e-4, atol=1e-4)
        assert np.all(tokens[stop:, b] == dates.EOS)
    if weights.shape[-1] == 1:  # the context-vector model has no attention
        return
    # attention: a distribution over each input's own characters, none on padding
    w = np.asarray(weights)  # [L, B, S]
    np.testing.assert_allclose(w.sum(-1), 1.0, rtol=1e-5)
    assert np.all(w[:, np.arange(src.shape[0])[None, :] >= np.asarray(lengths)[:, None]] == 0)


def test_attention_learns_faster_than_the_context_vector():
    """The full run's pace at smoke size: after 120 teacher-forced steps (hidden 16, the same
    batches for both) the additive-attention model's test cross-entropy is below half that of
    the model without attention, and it gets more characters right. (The full run: 98% against
    32% exact match after 200 steps; exact match itself needs more steps than a test can take.)"""
    from functools import partial

    import jax
    import jax.numpy as jnp

    import rnnjax as rj

    cfg = dict(dates.SMOKE, hidden=16, attn=16)
    data = dates.make_data(seed=0, num_train=cfg["num_train"], num_test=cfg["num_test"])
    split, test = data["train"], data["test"]
    src, lengths, tgt = jnp.asarray(test["src"].T), jnp.asarray(test["lengths"]), jnp.asarray(test["tgt"].T)
    rng = np.random.default_rng(0)
    batches = [rng.choice(len(split["src"]), cfg["batch"], replace=False) for _ in range(120)]
    scores = {}
    for kind in ("none", "additive"):
        model = dates.make_model(kind, cfg)
        opt = rj.make_optimizer(cfg["lr"])
        state = rj.init_train_state(model.init(jax.random.key(0)), opt, jax.random.key(1))
        step = rj.make_train_step(partial(dates.loss_fn, model), opt)
        for idx in batches:
            state, _ = step(state, (split["src"][idx].T, split["lengths"][idx], split["tgt"][idx].T))
        logits, _ = jax.jit(model.apply)(state.params, src, dates.shift_right(tgt), src_lengths=lengths)
        scores[kind] = (float(rj.sequence_cross_entropy(logits, tgt)), float(jnp.mean(jnp.argmax(logits, -1) == tgt)))
    (ce_none, acc_none), (ce_att, acc_att) = scores["none"], scores["additive"]
    assert ce_none < np.log(len(dates.TGT_VOCAB))  # both learned something (below the uniform guess)
    assert ce_att < 0.5 * ce_none, scores
    assert acc_att > acc_none, scores


def test_smoke_run(tmp_path):
    results = dates.main(["--smoke", "--kinds", "dot", "--out", str(tmp_path)])
    r = results["models"]["dot"]
    assert np.mean(r["loss"][-10:]) < 0.7 * np.mean(r["loss"][:10])
    # the last evaluation during training and the final one decode the same params
    assert len(r["eval_greedy"]) == 2 and r["eval_greedy"][-1] == pytest.approx(r["greedy"])
    assert set(r["greedy_by_length"]) <= {f"{lo}-{hi}" for lo, hi in dates.LENGTH_BUCKETS}
    assert (tmp_path / "results.json").exists() and (tmp_path / "checkpoints_dot").is_dir()
    assert (tmp_path / "dates.png").exists() and (tmp_path / "dates_attention.png").exists()
