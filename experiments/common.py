"""Small helpers shared by the experiment scripts: options, run folders, results files, tables, figures.

Experiments live one per file in this folder; model and training code comes from ``rnnjax``.
Every experiment writes into ``runs/<experiment>/`` (``results.json``, PNG plots, its
checkpoints) and prints a summary table.
"""

from __future__ import annotations

import argparse
import json
import math
import pathlib
import sys
from collections.abc import Sequence
from typing import Any

import numpy as np

ROOT = pathlib.Path(__file__).resolve().parents[1]


def base_parser(description: str) -> argparse.ArgumentParser:
    """An argument parser with the options every experiment has: --smoke, --seed, --out."""
    parser = argparse.ArgumentParser(description=description)
    parser.add_argument("--smoke", action="store_true", help="tiny run that finishes in seconds")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--out", type=pathlib.Path, default=None,
                        help="output folder (default: runs/<experiment>)")
    return parser


def pick_config(args: argparse.Namespace, config: dict, smoke: dict, overrides: Sequence[str] = ("steps",)) -> dict:
    """A copy of ``smoke`` (under ``--smoke``) or ``config``, with each option named in ``overrides``
    that the command line gave (not ``None``) put in its place."""
    cfg = dict(smoke if args.smoke else config)
    for name in overrides:
        if getattr(args, name) is not None:
            cfg[name] = getattr(args, name)
    return cfg


def fill_defaults(args: argparse.Namespace, defaults: dict, smoke: dict) -> argparse.Namespace:
    """Set each ``defaults`` key that the command line left unset (``None`` or absent) on ``args``,
    taking the value from ``smoke`` first under ``--smoke``; returns ``args``."""
    for name, value in dict(defaults, **(smoke if args.smoke else {})).items():
        if getattr(args, name, None) is None:
            setattr(args, name, value)
    return args


def parse_subset(text: str | None, allowed: tuple, option: str, default: tuple | None = None) -> tuple:
    """The names of a comma-separated command-line list, each checked against ``allowed``;
    ``default`` (``allowed`` when None) if the option was not given.

    >>> parse_subset("lstm, gru", ("lstm", "gru", "elman"), "--cells")
    ('lstm', 'gru')
    """
    if text is None:
        return allowed if default is None else default
    names = tuple(n.strip() for n in text.split(",") if n.strip())
    bad = [n for n in names if n not in allowed]
    if not names or bad:
        raise ValueError(f"{option}: expected a comma-separated subset of {','.join(allowed)}, got {text!r}")
    return names


def run_dir(name: str, out: pathlib.Path | None = None) -> pathlib.Path:
    """The experiment's output folder, created if needed."""
    path = pathlib.Path(out) if out is not None else ROOT / "runs" / name
    path.mkdir(parents=True, exist_ok=True)
    return path


def _jsonable(x: Any) -> Any:
    if isinstance(x, dict):
        return {str(k): _jsonable(v) for k, v in x.items()}
    if isinstance(x, (list, tuple)):
        return [_jsonable(v) for v in x]
    if hasattr(x, "tolist"):  # numpy / jax arrays and scalars
        return _jsonable(x.tolist())
    if isinstance(x, float) and not math.isfinite(x):
        return str(x)
    return x


def write_results(path: pathlib.Path, results: dict) -> pathlib.Path:
    """Write ``results`` as JSON to ``path/results.json`` atomically; returns the file path."""
    target = pathlib.Path(path) / "results.json"
    tmp = target.with_suffix(".json.tmp")
    tmp.write_text(json.dumps(_jsonable(results), indent=2, sort_keys=True) + "\n")
    tmp.replace(target)
    return target


def write_summary(out: pathlib.Path, summary: dict, figure: str) -> pathlib.Path:
    """``write_results(out, summary)``, then say so: the results file, ``out / figure`` and
    ``summary["wall_s"]``. Returns the results file's path."""
    path = write_results(out, summary)
    print(f"wrote {path} and {pathlib.Path(out) / figure} in {summary['wall_s']:.0f} s")
    return path


def decode_until(ids, symbols: Sequence[str], stop: int) -> str:
    """Token ids → the string of their ``symbols``, ending before the first ``stop`` id."""
    out = []
    for i in np.asarray(ids).tolist():
        if i == stop:
            break
        out.append(symbols[i])
    return "".join(out)


def format_table(rows: Sequence[Sequence[Any]], headers: Sequence[str]) -> str:
    """A plain-text table (also valid Markdown) with floats shown to 4 significant digits."""

    def cell(v):
        if isinstance(v, float):
            return f"{v:.4g}"
        return str(v)

    body = [[cell(v) for v in row] for row in rows]
    widths = [max(len(h), *(len(r[i]) for r in body)) if body else len(h) for i, h in enumerate(headers)]
    line = lambda r: "| " + " | ".join(s.ljust(w) for s, w in zip(r, widths, strict=True)) + " |"
    sep = "|" + "|".join("-" * (w + 2) for w in widths) + "|"
    return "\n".join([line(headers), sep, *(line(r) for r in body)])


def print_table(rows, headers, title: str | None = None, file=sys.stdout) -> None:
    if title:
        print(f"\n{title}", file=file)
    print(format_table(rows, headers), file=file)


# ----------------------------------------------------------------------------- figures


def subplots(*args, **kwargs):
    """``matplotlib.pyplot.subplots`` on the Agg backend (PNG files, no window): ``(fig, axes)``."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt.subplots(*args, **kwargs)


def save_figure(fig, path: pathlib.Path, *, dpi: int, tight: bool = False) -> None:
    """Save ``fig`` to ``path`` at ``dpi`` and close it; ``tight`` runs ``fig.tight_layout()`` first."""
    import matplotlib.pyplot as plt

    if tight:
        fig.tight_layout()
    fig.savefig(path, dpi=dpi)
    plt.close(fig)


def plot_seed_band(ax, steps, values, *, color: str, label: str) -> None:
    """One curve over seeds on ``ax``: the mean line and, shaded, the min–max band.

    steps: ``[E]``; values: ``[E, S]`` (S seeds).
    """
    steps, values = np.asarray(steps), np.asarray(values)
    ax.plot(steps, values.mean(1), color=color, label=label)
    ax.fill_between(steps, values.min(1), values.max(1), color=color, alpha=0.15, linewidth=0)


def plot_length_panels(results: dict, cells: Sequence[str], lengths: Sequence[int], metric: str, path: pathlib.Path,
                       *, task: str, ylabel: str, lines: Sequence[tuple[float, str, str]]) -> None:
    """Learning curves, one panel per sequence length T (log y, shared), one seed band per cell.

    ``results[cell][str(T)]["curve"]`` holds ``"step" [E]`` and ``metric [E, S]``; ``lines`` are
    black horizontal reference lines ``(y, linestyle, label)``.
    """
    fig, axes = subplots(1, len(lengths), figsize=(4.2 * len(lengths), 3.6), squeeze=False,
                         sharey=True, layout="constrained")
    for ax, T in zip(axes[0], lengths, strict=True):
        for i, cell in enumerate(cells):
            curve = results[cell][str(T)]["curve"]
            plot_seed_band(ax, curve["step"], curve[metric], color=f"C{i}", label=cell)
        for y, ls, label in lines:
            ax.axhline(y, color="k", ls=ls, lw=0.8, label=label)
        ax.set_yscale("log")
        ax.set_title(f"{task}, T = {T}")
        ax.set_xlabel("training step")
        ax.grid(True, alpha=0.3)
    axes[0, 0].set_ylabel(ylabel)
    axes[0, -1].legend(fontsize=8)
    save_figure(fig, path, dpi=90)
