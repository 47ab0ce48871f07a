"""Parallel-in-time vs sequential evaluation of every cell with a parallel form, on this machine.

Run from the repository root::

    .venv/bin/python benchmarks/parallel_cells.py            # T in {256, 1024, 4096}; minutes on 2 cores
    .venv/bin/python benchmarks/parallel_cells.py --smoke    # T in {16, 32}, one round: seconds

For each of ``min_gru``, ``min_lstm``, ``lru``, ``rg_lru``, ``selective_ssm`` and ``mlstm``,
one layer ``rnnjax.rnn(cell)`` (``rnnjax.scan`` of the step, depth T) against
``rnnjax.rnn(cell, parallel=True)`` (the cell's associative scan, or mLSTM's chunkwise form),
same params and inputs, in one process:

* ``forward``: the outputs ``ys``;
* ``train``: value and gradient of ``sum(ys * w)`` with respect to the parameters.

Batch 8, input 16, hidden 16 (``selective_ssm``: 16 states per channel; ``mlstm``: 4 heads of 4;
``lru``: 16 complex states), float32, default initialisation. Each case is compiled and run
once, then timed in up to ``--rounds`` rounds, the cases of one T in a shuffled order in each
round (``parallel_time.measure``), so that load from other processes falls on all alike; the
tables give the median in milliseconds and the ratio sequential / parallel (above 1: the
parallel form is faster). The two modes' forward outputs are compared too (``max |par - seq| /
max |seq|``, in the JSON): float32 round-off, e.g. about 2e-5 for the mLSTM at T = 4096, where a
float64 run puts the two modes 1e-12 apart.

Output: a table on stdout and ``benchmarks/results/parallel_cells.json`` (``--out`` elsewhere).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import sys
import time
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np

import rnnjax as rj

sys.path.insert(0, str(Path(__file__).resolve().parent))
from parallel_time import measure  # noqa: E402

RESULTS = Path(__file__).resolve().parent / "results"
BATCH, INPUTS, HIDDEN = 8, 16, 16
STEPS = (256, 1024, 4096)
SMOKE_STEPS = (16, 32)
CELLS = {
    "min_gru": rj.min_gru,
    "min_lstm": rj.min_lstm,
    "lru": rj.lru,
    "rg_lru": rj.rg_lru,
    "selective_ssm": rj.selective_ssm,
    "mlstm": rj.mlstm,
}
METHODS = ("sequential", "parallel")
MODES = ("forward", "train")


def make_case(name: str, method: str, steps: int, mode: str):
    """A zero-argument callable running one case to completion (blocking on its result)."""
    cell = CELLS[name](INPUTS, HIDDEN)
    layer = rj.rnn(cell, parallel=method == "parallel")
    key = jax.random.key(0)
    params = cell.init(key)
    xs = jax.random.normal(jax.random.fold_in(key, 1), (steps, BATCH, INPUTS))
    w = jax.random.normal(jax.random.fold_in(key, 2), (steps, BATCH, HIDDEN)) / steps

    # Everything is an argument: arrays closed over would be compile-time constants.
    if mode == "forward":
        fn = jax.jit(lambda p, x: layer.apply(p, x)[1])
        args = (params, xs)
    else:
        fn = jax.jit(jax.value_and_grad(lambda p, x, w: jnp.sum(layer.apply(p, x)[1] * w)))
        args = (params, xs, w)

    def call():
        return jax.block_until_ready(fn(*args))

    return call


def relative_difference(seq, par) -> float:
    """``max |ys_par - ys_seq| / max |ys_seq|`` of the two modes' forward outputs."""
    return float(jnp.max(jnp.abs(par - seq)) / jnp.max(jnp.abs(seq)))


def run_grid(cells, steps_list, rounds: int) -> tuple[list[dict], dict]:
    """The timings, and per cell and T the relative difference of the two modes' outputs."""
    rows, differences = [], {}
    for mode in MODES:
        for steps in steps_list:
            cases = {(name, method): make_case(name, method, steps, mode) for name in cells for method in METHODS}
            measured = measure(cases, rounds)
            if mode == "forward":
                for name in cells:
                    differences.setdefault(name, {})[str(steps)] = relative_difference(
                        measured[(name, "sequential")]["result"], measured[(name, "parallel")]["result"])
            for (name, method), m in measured.items():
                row = {"cell": name, "method": method, "mode": mode, "T": steps,
                       "seconds": statistics.median(m["times"]), "seconds_min": min(m["times"]),
                       "repeats": len(m["times"]), "first_call_s": m["first_call_s"],
                       "compile_s": max(m["first_call_s"] - min(m["times"]), 0.0)}
                rows.append(row)
                print(f"{mode:<8} T={steps:<5} {name:<14} {method:<10} {row['seconds'] * 1e3:9.2f} ms "
                      f"(x{row['repeats']}, first call {row['first_call_s']:.1f} s)", flush=True)
    return rows, differences


def _ms(seconds: float) -> str:
    ms = seconds * 1e3
    return f"{ms:.2f}" if ms < 10 else f"{ms:.1f}" if ms < 100 else f"{ms:.0f}"


def markdown_table(rows: list[dict]) -> str:
    """One row per cell and mode: sequential and parallel ms, and their ratio, per T."""
    steps_list = sorted({r["T"] for r in rows})
    at = {(r["cell"], r["method"], r["mode"], r["T"]): r["seconds"] for r in rows}
    cells = list(dict.fromkeys(r["cell"] for r in rows))
    head = "| cell | mode | " + " | ".join(f"T = {t}: seq / par ms (seq ÷ par)" for t in steps_list) + " |"
    out = [head, "|---|---|" + "---:|" * len(steps_list)]
    for mode in MODES:
        for name in cells:
            parts = []
            for t in steps_list:
                s, p = at[(name, "sequential", mode, t)], at[(name, "parallel", mode, t)]
                parts.append(f"{_ms(s)} / {_ms(p)} (**{s / p:.2f}**)")
            out.append(f"| {name} | {mode} | " + " | ".join(parts) + " |")
    return "\n".join(out)


def main(argv=None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--smoke", action="store_true", help="T in {16, 32}, one round")
    parser.add_argument("--rounds", type=int, default=None, help="timed rounds per case (default 5; smoke 1)")
    parser.add_argument("--cells", default=",".join(CELLS), help="comma-separated subset of " + ",".join(CELLS))
    parser.add_argument("--out", type=Path, default=RESULTS, help="folder for parallel_cells.json")
    args = parser.parse_args(argv)
    cells = tuple(c.strip() for c in args.cells.split(",") if c.strip())
    bad = [c for c in cells if c not in CELLS]
    if not cells or bad:
        raise ValueError(f"--cells: expected a comma-separated subset of {','.join(CELLS)}, got {args.cells!r}")
    rounds = args.rounds if args.rounds is not None else (1 if args.smoke else 5)
    steps_list = SMOKE_STEPS if args.smoke else STEPS
    load_before = os.getloadavg()
    t0 = time.perf_counter()
    rows, differences = run_grid(cells, steps_list, rounds)
    elapsed = time.perf_counter() - t0
    results = {
        "machine": {"platform": platform.platform(), "processor": platform.processor(),
                    "cpu_count": os.cpu_count(), "jax": jax.__version__, "backend": jax.default_backend(),
                    "loadavg_before": load_before, "loadavg_after": os.getloadavg()},
        "config": {"batch": BATCH, "inputs": INPUTS, "hidden": HIDDEN, "steps": list(steps_list),
                   "rounds": rounds, "cells": list(cells), "dtype": "float32", "smoke": args.smoke},
        "relative_difference": differences,  # max |par - seq| / max |seq|, forward outputs
        "elapsed_s": elapsed,
        "rows": rows,
    }
    args.out.mkdir(parents=True, exist_ok=True)
    path = args.out / "parallel_cells.json"
    path.write_text(json.dumps(results, indent=1))
    table = markdown_table(rows)
    print(table)
    worst = {name: max(d.values()) for name, d in differences.items()}
    print("largest relative difference parallel vs sequential (forward outputs): "
          + ", ".join(f"{n} {v:.1e}" for n, v in worst.items()))
    print(f"done in {elapsed:.0f} s; wrote {path}")
    results["table"] = table
    return results


if __name__ == "__main__":
    np.set_printoptions(precision=3)
    main()
