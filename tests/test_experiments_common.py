import json

import pytest

from experiments.common import ROOT, format_table, run_dir, write_results


def test_write_results_is_json_and_keeps_nonfinite_readable(tmp_path):
    import numpy as np

    out = run_dir("x", tmp_path / "x")
    path = write_results(out, {"a": np.float32(1.5), "b": [np.int64(2)], "c": float("nan")})
    assert json.loads(path.read_text()) == {"a": 1.5, "b": [2], "c": "nan"}
    assert not list(out.glob("*.tmp"))


def test_format_table_aligns_columns():
    text = format_table([["lstm", 0.123456], ["elman", 10.0]], ["cell", "mse"])
    lines = text.splitlines()
    assert lines[0] == "| cell  | mse    |"
    assert lines[2] == "| lstm  | 0.1235 |"
    assert len({len(line) for line in lines}) == 1


def _args(**kwargs):
    import argparse

    return argparse.Namespace(**kwargs)


def test_pick_config_takes_smoke_and_given_overrides_only():
    from experiments.common import pick_config

    config, smoke = {"steps": 100, "seeds": 3}, {"steps": 5, "seeds": 1}
    assert pick_config(_args(smoke=False, steps=None), config, smoke) == config
    assert pick_config(_args(smoke=True, steps=None), config, smoke) == smoke
    cfg = pick_config(_args(smoke=True, steps=7, seeds=2), config, smoke, overrides=("steps", "seeds"))
    assert cfg == {"steps": 7, "seeds": 2}
    assert smoke == {"steps": 5, "seeds": 1}  # a copy: the module's configuration is left alone


def test_fill_defaults_keeps_given_options_and_prefers_smoke_values():
    from experiments.common import fill_defaults

    defaults, smoke = {"lr": 0.1, "steps": 100, "hidden": 32}, {"steps": 5}
    args = fill_defaults(_args(smoke=True, lr=None, steps=None, hidden=8), defaults, smoke)
    assert (args.lr, args.steps, args.hidden) == (0.1, 5, 8)
    args = fill_defaults(_args(smoke=False, lr=None, steps=None), defaults, smoke)
    assert (args.lr, args.steps, args.hidden) == (0.1, 100, 32)  # `hidden` had no option: set too


def test_write_summary_writes_results_and_says_where(tmp_path, capsys):
    from experiments.common import write_summary

    path = write_summary(tmp_path, {"wall_s": 12.4, "x": 1}, "curves.png")
    assert json.loads(path.read_text()) == {"wall_s": 12.4, "x": 1}
    assert capsys.readouterr().out == f"wrote {tmp_path / 'results.json'} and {tmp_path / 'curves.png'} in 12 s\n"


def test_decode_until_stops_before_the_first_stop_id():
    import numpy as np

    from experiments.common import decode_until

    symbols = ["<eos>", "a", "b"]
    assert decode_until(np.array([1, 2, 1, 0, 2, 0]), symbols, 0) == "aba"
    assert decode_until([2, 2], symbols, 0) == "bb"
    assert decode_until([0, 1], symbols, 0) == ""


def test_save_figure_writes_a_png_and_closes_the_figure(tmp_path):
    import matplotlib.pyplot as plt

    from experiments.common import save_figure, subplots

    fig, ax = subplots(figsize=(2, 2))
    ax.plot([0, 1], [1, 0])
    save_figure(fig, tmp_path / "a.png", dpi=50, tight=True)
    assert (tmp_path / "a.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert not plt.fignum_exists(fig.number)


def test_plot_seed_band_draws_the_mean_and_the_min_max_band(tmp_path):
    import numpy as np

    from experiments.common import plot_seed_band, save_figure, subplots

    steps = np.array([0, 10, 20])
    values = np.array([[1.0, 3.0, 2.0], [4.0, 0.5, 1.5], [2.0, 2.0, 8.0]])  # [E=3, S=3]
    fig, ax = subplots()
    plot_seed_band(ax, steps, values, color="C1", label="lstm")
    (line,) = ax.lines
    np.testing.assert_allclose(line.get_xdata(), steps)
    np.testing.assert_allclose(line.get_ydata(), [2.0, 2.0, 4.0])  # mean over seeds
    assert line.get_label() == "lstm"
    (band,) = ax.collections
    verts = band.get_paths()[0].vertices
    for x, lo, hi in zip(steps, values.min(1), values.max(1), strict=True):
        ys = verts[verts[:, 0] == x, 1]
        assert ys.min() == lo and ys.max() == hi  # the band spans the seeds' min to max
    save_figure(fig, tmp_path / "band.png", dpi=20)


def test_plot_length_panels_one_panel_per_length(tmp_path, monkeypatch):
    import numpy as np

    from experiments import common

    steps = np.array([0, 5, 10])
    results = {cell: {str(T): {"curve": {"step": steps, "mse": np.full((3, 2), k + T / 10)}} for T in (8, 16)}
               for k, cell in enumerate(("lstm", "gru"))}
    drawn = {}
    real_save = common.save_figure

    def save(fig, path, **kwargs):
        drawn["fig"] = fig
        real_save(fig, path, **kwargs)

    monkeypatch.setattr(common, "save_figure", save)
    path = tmp_path / "curves.png"
    common.plot_length_panels(results, ["lstm", "gru"], [8, 16], "mse", path, task="toy",
                              ylabel="test MSE", lines=[(0.5, "--", "baseline")])
    assert path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    axes = drawn["fig"].axes
    assert [ax.get_title() for ax in axes] == ["toy, T = 8", "toy, T = 16"]
    for ax, T in zip(axes, (8, 16), strict=True):
        labels = [line.get_label() for line in ax.lines]
        assert labels == ["lstm", "gru", "baseline"]
        np.testing.assert_allclose(ax.lines[1].get_ydata(), 1 + T / 10)  # gru's curve at this T
        assert ax.get_yscale() == "log"
    assert axes[0].get_ylabel() == "test MSE"


# ----------------------------------------------------------------------------- reproduction checks


def test_reproduce_parses_table_cells_as_the_table_means_them():
    from experiments.reproduce import parse_number

    assert parse_number("**95.65%**") == 0.9565
    assert parse_number("16.57 ± 0.7") == 16.57
    assert parse_number("−49.7") == -49.7
    assert parse_number("1,655") == 1655
    assert parse_number("0.0028 (3/3, 400–500 steps)") == 0.0028
    assert parse_number("1.7e-13") == 1.7e-13
    assert parse_number("inf") == float("inf")
    with pytest.raises(ValueError, match="cell: expected a number, got '–'"):
        parse_number("–")


DOC_SAMPLE = """\
## Section

### 1. First

`python experiments/first.py` (1 s).

| model | score | time |
|---|---|---|
| a | 0.50 | 1 |
| b, c | **75%** | 2 |

| second table | x |
|---|---|
| a | 3 |

### 2. Next

| a | 99 | 99 |
|---|---|---|
"""


def test_reproduce_reads_the_tables_after_a_command_within_its_section():
    from experiments.reproduce import Check, Spec, documented, tables_after

    tables = tables_after(DOC_SAMPLE, "python experiments/first.py")
    assert [h for h, _ in tables] == [["model", "score", "time"], ["second table", "x"]]  # not the next section's
    assert tables[0][1] == [["a", "0.50", "1"], ["b, c", "**75%**", "2"]]
    spec = Spec("first", "python experiments/first.py", ())
    assert documented(spec, Check(("b, c",), "score", None, 0), DOC_SAMPLE) == 0.75
    assert documented(spec._replace(table=1), Check(("a",), "x", None, 0), DOC_SAMPLE) == 3
    with pytest.raises(ValueError, match="column: expected one of"):
        documented(spec, Check(("a",), "speed", None, 0), DOC_SAMPLE)
    with pytest.raises(ValueError, match="row: expected one row starting with"):
        documented(spec, Check(("z",), "score", None, 0), DOC_SAMPLE)
    with pytest.raises(ValueError, match="command: expected"):
        tables_after(DOC_SAMPLE, "python experiments/none.py")


def test_every_reproduction_check_finds_its_number_in_experiments_md():
    """An edit of EXPERIMENTS.md that moves or renames a checked row or column fails here."""
    import math

    from experiments.reproduce import SPECS, documented

    text = (ROOT / "EXPERIMENTS.md").read_text()
    for name, make in SPECS.items():
        spec = make()
        assert spec.checks, name
        assert f"python -m experiments.reproduce {name}" in text, name  # the section names the check
        for check in spec.checks:
            assert math.isfinite(documented(spec, check, text)), (name, check.row, check.column)


def test_reproduce_compare_passes_within_tolerance_only():
    from experiments import reproduce

    spec = reproduce.SPECS["captions"]()
    text = (ROOT / "EXPERIMENTS.md").read_text()
    doc = {c.column + str(c.row): reproduce.documented(spec, c, text) for c in spec.checks}
    gru = "('GRU captioner, word accuracy',)"
    logreg = "('logistic regression on the pixels, class accuracy (reference)',)"

    def results(shift):
        return {"params": doc["params" + gru], "train_word_accuracy": doc["train" + gru],
                "test": {"word_accuracy": doc["test (500 images)" + gru] + shift},
                "logistic_regression_accuracy": doc["test (500 images)" + logreg]}

    rows = reproduce.compare("captions", results(0.015), text)
    assert [r["ok"] for r in rows] == [True] * 4
    rows = reproduce.compare("captions", results(-0.03), text)
    assert [r["ok"] for r in rows] == [True, True, False, True]
    assert rows[2]["measured"] == doc["test (500 images)" + gru] - 0.03 and rows[2]["tolerance"] == 0.02
