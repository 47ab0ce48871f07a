"""The modern-recurrence experiments: selective copying and induction heads, the character model
with Mamba/Hawk/xLSTM blocks, and the parallel-vs-sequential benchmark of the cells.

The task generators and the padded all-lengths evaluation are checked fast against NumPy and
against unpadded evaluation; each script's ``--smoke`` run (on one model or cell: most of its
time is XLA compilation) is marked slow like the other experiments' smoke runs. A smoke run is
too short to show which model learns the tasks (that needs the full runs in EXPERIMENTS.md), so
it is held to what it can show: the schema, finite and falling losses, counts, and equal
parallel and sequential outputs.
"""

import json
import math
import sys
from pathlib import Path

import jax
import numpy as np
import pytest

from experiments import char_blocks
from experiments import selective_tasks as st

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "benchmarks"))
import parallel_cells  # noqa: E402

slow = pytest.mark.slow


# ------------------------------------------------------------------------------ fast checks


def test_selective_copy_answers_are_the_scattered_symbols_in_order():
    ids, answers = (np.asarray(a) for a in st.selective_copy_batch(jax.random.key(3), 20, 5, 6, 32))
    assert ids.shape == (25, 32) and answers.shape == (5, 32)
    for b in range(32):
        region = ids[:20, b]
        assert list(region[region > 0]) == list(answers[:, b])  # the data symbols, in order of position
        assert set(region[region > 0]) <= set(range(1, 7))
        assert (ids[20:, b] == 7).all()  # the markers
    assert len({tuple(np.nonzero(ids[:20, b])[0]) for b in range(32)}) > 20  # the spacing varies


def test_induction_answer_follows_the_first_special_symbol():
    ids, answers = (np.asarray(a) for a in st.induction_batch(jax.random.key(4), 30, 5, 64))
    firsts = []
    for b in range(64):
        special = np.nonzero(ids[:, b] == 5)[0]
        assert len(special) == 2 and special[1] == 29
        assert answers[b] == ids[special[0] + 1, b] and answers[b] < 5
        firsts.append(special[0])
    assert min(firsts) < 10 and max(firsts) > 20  # the first occurrence is anywhere


def test_parameter_counts_match_the_formula():
    cfg = dict(st.SMOKE)
    e, h, v = cfg["embed"], 10, 7
    lstm = v * e + 4 * h * (e + h + 1) + 4 * h * (2 * h + 1) + h * v + v
    assert st.num_params("lstm", cfg, h, v) == lstm
    gru = v * e + 3 * h * (e + h) + 6 * h + 3 * h * (2 * h) + 6 * h + h * v + v  # b_ih and b_hh
    assert st.num_params("gru", cfg, h, v) == gru
    for name in ("mlstm", "slstm", "selective_ssm"):
        hidden, n = st.match_hidden(name, cfg, v)
        assert n == st.num_params(name, cfg, hidden, v)
        assert abs(n - cfg["target_params"]) < 0.25 * cfg["target_params"]
        assert name not in st.HEADS or hidden % 4 == 0
    cfg, step = char_blocks.SMOKE, char_blocks.WIDTH_STEP
    width, n = char_blocks.match_width("mamba", cfg)
    assert width % step == 0 and n == char_blocks.recurrent_params("mamba", width, cfg)
    for other in (width - step, width + step):  # the neighbouring widths are no closer to the target
        if other > 0:
            assert abs(n - cfg["target_params"]) <= abs(char_blocks.recurrent_params("mamba", other, cfg)
                                                         - cfg["target_params"])


def test_padded_length_evaluation_equals_one_length_at_a_time():
    """One padded batch with ``lengths`` gives each length's accuracy as running it alone does."""
    tcfg = dict(st.SMOKE["induction"], test_size=16)
    cfg = st.SMOKE
    vocab = st.task_vocab("induction", tcfg)
    lm, model = st.make_model("gru", cfg, 6, vocab, parallel=False)
    params = lm.init(jax.random.key(1))
    lengths = [8, 12, 20]
    got = st.make_length_accuracy(tcfg, model, lengths)(params)
    for n in lengths:
        ids, answers = st.induction_batch(jax.random.key(20_000 + n), n, tcfg["vocab"], 16)
        logits = st.answer_logits(model, params, ids, 1)[0]
        assert float(got[str(n)]) == pytest.approx(float(np.mean(np.argmax(logits, -1) == answers)))


def test_bad_names_are_named_in_the_errors(tmp_path):
    with pytest.raises(ValueError, match="--models: expected a comma-separated subset of lstm"):
        st.main(["--smoke", "--models", "lstm,rwkv", "--out", str(tmp_path)])
    with pytest.raises(ValueError, match="--task: expected selective_copy, induction or all"):
        st.main(["--smoke", "--task", "copy", "--out", str(tmp_path)])
    with pytest.raises(ValueError, match="--models: expected a comma-separated subset of mamba"):
        char_blocks.main(["--smoke", "--models", "griffin", "--out", str(tmp_path)])
    with pytest.raises(ValueError, match="--cells: expected a comma-separated subset of min_gru"):
        parallel_cells.main(["--smoke", "--cells", "gru", "--out", str(tmp_path)])


# ------------------------------------------------------------------------------ smoke runs


@pytest.fixture(scope="module")
def tasks_run(tmp_path_factory):
    out = tmp_path_factory.mktemp("selective_tasks")
    return out, st.main(["--smoke", "--models", "selective_ssm", "--out", str(out)])


@slow
def test_selective_tasks_smoke(tasks_run):
    out, r = tasks_run
    cfg = st.SMOKE
    copy = r["selective_copy"]["results"]["selective_ssm"]
    acc = np.asarray(copy["acc"])
    assert acc.shape == (cfg["seeds"],) and ((0 <= acc) & (acc <= 1)).all()
    assert np.asarray(copy["curve"]["acc"]).shape == (cfg["selective_copy"]["steps"] // 20, cfg["seeds"])
    assert copy["train_mode"] == "parallel" and np.asarray(copy["skipped_steps"]).sum() == 0
    assert np.isfinite(np.asarray(copy["final_loss"])).all()
    ind = r["induction"]["results"]["selective_ssm"]
    lengths = [f * cfg["induction"]["train_len"] for f in cfg["induction"]["factors"]]
    assert ind["lengths"] == lengths and sorted(ind["acc_by_length"], key=int) == [str(n) for n in lengths]
    # accuracies are counts over test_size sequences
    for v in ind["acc_by_length"].values():
        assert (np.asarray(v) * cfg["induction"]["test_size"] % 1 == 0).all()
    assert ind["step_ms"] > 0 and ind["step_ms_sequential"] > 0
    saved = json.loads((out / "results.json").read_text())
    assert saved["tasks"] == ["selective_copy", "induction"] and saved["smoke"] is True
    assert saved["induction"]["table"]["headers"][3:3 + len(lengths)] == [f"T={n}" for n in lengths]
    assert (out / "selective_tasks_induction.png").stat().st_size > 0


@slow
def test_char_blocks_smoke(tmp_path):
    r = char_blocks.main(["--smoke", "--models", "mamba", "--out", str(tmp_path)])
    m = r["results"]["mamba"]
    bits = np.asarray(m["train_bits"])
    assert len(bits) == char_blocks.SMOKE["steps"] and np.isfinite(bits).all()
    assert bits[:3].mean() > bits[-3:].mean() + 0.3  # the training loss falls
    assert np.isfinite(m["val_bpc"]) and m["skipped_steps"] == 0
    assert m["train_mode"] == "parallel" and m["step_ms_sequential"] > 0 and m["step_ms_parallel_timed"] > 0
    # embedding [V, D] and softmax [D, V] + [V] around the two blocks
    v, d = r["corpus"]["vocab_size"], m["width"]
    assert m["params"] == m["recurrent_params"] + v * d + d * v + v
    assert json.loads((tmp_path / "results.json").read_text())["results"]["mamba"]["width"] == d
    assert (tmp_path / "char_blocks.png").stat().st_size > 0


@slow
def test_parallel_cells_benchmark_smoke(tmp_path):
    r = parallel_cells.main(["--smoke", "--cells", "lru,mlstm", "--out", str(tmp_path)])
    saved = json.loads((tmp_path / "parallel_cells.json").read_text())
    assert saved["config"]["steps"] == list(parallel_cells.SMOKE_STEPS)
    diffs = saved["relative_difference"]
    assert sorted(diffs) == ["lru", "mlstm"] and all(0 <= v < 1e-5 for d in diffs.values() for v in d.values())
    keys = {(row["cell"], row["method"], row["mode"], row["T"]) for row in saved["rows"]}
    assert keys == {(c, m, mode, t) for c in ("lru", "mlstm") for m in parallel_cells.METHODS
                    for mode in parallel_cells.MODES for t in parallel_cells.SMOKE_STEPS}
    assert all(row["seconds"] > 0 and math.isfinite(row["seconds"]) for row in saved["rows"])
    assert r["table"].count("| lru |") == 2 and r["table"].count("| mlstm |") == 2
