"""Metrics logs (JSONL, CSV), progress bars and PNG plots."""

import json
import math
import os

import jax.numpy as jnp
import numpy as np
import pytest

import rnnjax as rj


@pytest.mark.parametrize("suffix", [".jsonl", ".csv"])
def test_log_round_trip_and_append_on_reopen(tmp_path, suffix):
    path = tmp_path / "sub" / f"metrics{suffix}"
    with rj.MetricsLog(path) as log:
        log.write(1, {"loss": jnp.array(2.5), "grad_norm": np.float32(0.25), "skipped": jnp.array(False)})
        log.write(2, {"loss": float("nan"), "grad_norm": 1.0, "skipped": True})
    rows = rj.read_metrics(path)
    assert rows[0] == {"step": 1, "loss": 2.5, "grad_norm": 0.25, "skipped": 0}
    assert rows[1]["skipped"] == 1 and math.isnan(rows[1]["loss"])
    with rj.MetricsLog(path) as log:  # a second run appends
        assert len(log.rows) == 2
        log.write(3, {"loss": 1.0, "grad_norm": 2.0, "skipped": 0})
    assert [r["step"] for r in rj.read_metrics(path)] == [1, 2, 3]


def test_jsonl_lines_are_plain_json_objects(tmp_path):
    path = tmp_path / "m.jsonl"
    with rj.MetricsLog(path) as log:
        log.write(5, {"loss": 0.5})
    assert [json.loads(line) for line in open(path)] == [{"step": 5, "loss": 0.5}]


def test_truncate_drops_rows_after_a_step_and_a_partial_line_is_ignored(tmp_path):
    path = tmp_path / "m.jsonl"
    with rj.MetricsLog(path) as log:
        for n in range(1, 6):
            log.write(n, {"loss": float(n)})
    with open(path, "a") as f:
        f.write('{"step": 6, "lo')  # a run killed mid-write
    assert [r["step"] for r in rj.read_metrics(path)] == [1, 2, 3, 4, 5]
    with rj.MetricsLog(path) as log:
        log.truncate(3)
        log.write(4, {"loss": 40.0})
        np.testing.assert_array_equal(log.series("loss")[1], [1.0, 2.0, 3.0, 40.0])
    assert open(path).read().count("\n") == 4
    assert [r["loss"] for r in rj.read_metrics(path)] == [1.0, 2.0, 3.0, 40.0]


def test_series_and_memory_only_log():
    log = rj.MetricsLog()
    log.write(1, {"loss": 3.0})
    log.write(2, {"loss": 2.0, "acc": 0.5})
    steps, values = log.series("acc")
    assert steps.tolist() == [2] and values.tolist() == [0.5]
    with pytest.raises(KeyError, match=r"no logged metric 'ppl' \(have \['acc', 'loss'\]\)"):
        log.series("ppl")


def test_log_errors(tmp_path):
    with pytest.raises(ValueError, match="path: expected a file ending in .jsonl or .csv"):
        rj.MetricsLog(tmp_path / "m.txt")
    log = rj.MetricsLog(tmp_path / "m.csv")
    log.write(1, {"loss": 1.0})
    with pytest.raises(ValueError, match=r"\['acc'\] are not columns of the CSV log"):
        log.write(2, {"loss": 1.0, "acc": 0.1})
    with pytest.raises(TypeError, match=r"metrics\['loss'\]: expected a number"):
        log.write(2, {"loss": jnp.ones(3)})
    with pytest.raises(ValueError, match="'step' is reserved"):
        log.write(2, {"step": 1})
    with pytest.raises(TypeError, match="step: expected an int"):
        log.write(2.0, {"loss": 1.0})
    log.close()


def test_progress_bar_is_silent_off_a_terminal(capsys):
    bar = rj.progress_bar(10)
    for _ in range(10):
        bar.update(1)
    bar.close()
    assert bar.disable
    assert capsys.readouterr().err == ""
    shown = rj.progress_bar(3, enabled=True, desc="train")
    assert not shown.disable
    shown.update(3)
    shown.set_postfix(loss="0.5")
    shown.close()
    err = capsys.readouterr().err
    assert "train" in err and "3/3" in err
    with pytest.raises(ValueError, match="total: expected a non-negative int"):
        rj.progress_bar(-1)


@pytest.fixture
def saved_figures(monkeypatch):
    """The matplotlib figures saved during the test, in order (they are saved as usual too)."""
    from matplotlib.figure import Figure

    figures, real_savefig = [], Figure.savefig

    def savefig(self, *args, **kwargs):
        figures.append(self)
        return real_savefig(self, *args, **kwargs)

    monkeypatch.setattr(Figure, "savefig", savefig)
    return figures


def debiased_ema(values, s):
    """TensorBoard's smoothing written out: a weighted mean of the finite points so far with
    weights (1 - s) s^(n - k), normalised by their sum (NaN before the first finite point)."""
    out = []
    for n in range(len(values)):
        pts = [(k, v) for k, v in enumerate(values[: n + 1]) if math.isfinite(v)]
        m = len(pts)
        weights = [(1 - s) * s ** (m - 1 - r) for r in range(m)]
        out.append(sum(w * v for w, (_, v) in zip(weights, pts, strict=True)) / sum(weights) if pts else float("nan"))
    return np.array(out)


def test_plot_curves_draws_the_series_their_smoothing_and_a_log_axis(tmp_path, saved_figures):
    log = rj.MetricsLog()
    for n in range(1, 30):
        log.write(n, {"loss": 1.0 / n + (0.1 if n % 2 else 0.0)})
    steps, loss = log.series("loss")
    plain = [3.0, float("nan"), 1.0]
    path = rj.plot_curves(
        {"train": (steps, loss), "plain": plain}, tmp_path / "plots" / "loss.png",
        logy=True, smoothing=0.6, title="loss", ylabel="loss",
    )
    with open(path, "rb") as f:
        assert f.read(8) == b"\x89PNG\r\n\x1a\n"
    import matplotlib

    assert matplotlib.get_backend().lower() != "tkagg"  # no interactive backend was pulled in
    (fig,) = saved_figures
    (ax,) = fig.axes
    assert ax.get_yscale() == "log" and ax.get_title() == "loss"
    assert ax.get_xlabel() == "step" and ax.get_ylabel() == "loss"
    raw_train, smooth_train, raw_plain, smooth_plain = ax.lines
    # each series: the raw values faintly, the smoothed ones over them in the same colour, labelled
    np.testing.assert_allclose(raw_train.get_xdata(), steps)
    np.testing.assert_allclose(raw_train.get_ydata(), loss)
    np.testing.assert_allclose(smooth_train.get_ydata(), debiased_ema(list(loss), 0.6), rtol=1e-12)
    np.testing.assert_allclose(raw_plain.get_xdata(), [0, 1, 2])
    np.testing.assert_array_equal(np.isnan(raw_plain.get_ydata()), [False, True, False])  # a gap, not a point
    np.testing.assert_allclose(smooth_plain.get_ydata(), [3.0, 3.0, (0.24 * 3 + 0.4 * 1) / 0.64])  # NaN skipped
    assert raw_train.get_alpha() == 0.25 and smooth_train.get_alpha() is None
    assert raw_train.get_color() == smooth_train.get_color() != raw_plain.get_color()
    assert [t.get_text() for t in ax.get_legend().get_texts()] == ["train", "plain"]
    # without smoothing: one line per series, linear axis, and no legend for a single series
    rj.plot_curves({"only": plain}, tmp_path / "plain.png")
    (line,) = saved_figures[1].axes[0].lines
    np.testing.assert_array_equal(line.get_ydata(), plain)
    assert saved_figures[1].axes[0].get_yscale() == "linear" and saved_figures[1].axes[0].get_legend() is None


def test_plot_errors(tmp_path):
    with pytest.raises(TypeError, match="curves: expected a non-empty mapping"):
        rj.plot_curves({}, tmp_path / "a.png")
    with pytest.raises(ValueError, match="path: expected a file ending in .png"):
        rj.plot_curves({"a": [1.0]}, tmp_path / "a.pdf")
    with pytest.raises(ValueError, match=r"curves\['a'\]: expected 1-D y"):
        rj.plot_curves({"a": ([1, 2], [1.0])}, tmp_path / "a.png")
    with pytest.raises(ValueError, match=r"smoothing: expected a number in \[0, 1\)"):
        rj.plot_curves({"a": [1.0]}, tmp_path / "a.png", smoothing=1.0)


@pytest.mark.parametrize(
    "name, text, why",
    [
        ("notes.jsonl", "hello world\nnot json\n", "line 1 is 'hello world'"),
        ("list.jsonl", "[1, 2]\n", r"line 1 is '\[1, 2\]'"),
        ("nostep.jsonl", '{"loss": 1.0}\n', "line 1"),
        ("text.jsonl", '{"step": 1, "note": "hi"}\n', "line 1"),
        ("other.csv", "a,b\n1,2\n", r"CSV header has a 'step' column, got .*other.csv' with header \['a', 'b'\]"),
        ("words.csv", "step,loss\n1,low\n", "line 2"),
    ],
)
def test_an_existing_file_that_is_not_a_metrics_log_is_refused_and_kept(tmp_path, name, text, why):
    path = tmp_path / name
    path.write_text(text)
    with pytest.raises(ValueError, match=rf"path: expected a metrics log.*{why}"):
        rj.MetricsLog(path)
    assert path.read_text() == text
    assert sorted(os.listdir(tmp_path)) == [name]


def test_a_binary_file_is_refused_and_kept(tmp_path):
    path = tmp_path / "m.jsonl"
    path.write_bytes(b"\xff\xfe\x00binary")
    with pytest.raises(ValueError, match="path: expected a metrics log .*a binary file"):
        rj.MetricsLog(path)
    assert path.read_bytes() == b"\xff\xfe\x00binary"


def test_unwritable_paths_name_the_argument(tmp_path):
    plain = tmp_path / "afile"
    plain.write_text("x")
    with pytest.raises(NotADirectoryError, match=r"path: expected a file in a directory, got .*afile/m.jsonl"):
        rj.MetricsLog(plain / "m.jsonl")
    with pytest.raises(OSError, match=r"path: cannot write the metrics log .*afile/sub/m.jsonl"):
        rj.MetricsLog(plain / "sub" / "m.jsonl")
    (tmp_path / "d.jsonl").mkdir()
    with pytest.raises(IsADirectoryError, match="path: expected a file for the metrics log, got the directory"):
        rj.MetricsLog(tmp_path / "d.jsonl")
    assert plain.read_text() == "x"
