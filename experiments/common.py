"""Small helpers shared by the experiment scripts: run folders, results files, tables.

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

ROOT = pathlib.Path(__file__).resolve().parents[1]


def base_parser(description: str) -> argparse.ArgumentParser:
    """An argument parser with the options every experiment has: --smoke, --seed, --out."""
    parser = argparse.ArgumentParser(description=description)
    parser.add_argument("--smoke", action="store_true", help="tiny run that finishes in seconds")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--out", type=pathlib.Path, default=None,
                        help="output folder (default: runs/<experiment>)")
    return parser


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
