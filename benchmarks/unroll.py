"""How ``unroll`` and ``impl`` change the time of a training step and of inference.

Run from the repository root::

    .venv/bin/python benchmarks/unroll.py            # LSTM, GRU and MGU, unroll 1..16, a few minutes
    .venv/bin/python benchmarks/unroll.py --quick    # LSTM only, smaller, about a minute
    .venv/bin/python benchmarks/unroll.py --smoke    # tiny shapes, seconds: checks the script runs

For each cell, ``impl`` (``"auto"``: the fused kernel where the cell has one, LSTM and GRU;
``"loop"``: the plain ``lax.scan`` of the step) and ``unroll`` in 1, 2, 4, 8, 16, a jitted
``rnnjax.rnn`` layer is compiled once (the compile time is reported) and then timed, ``train``
(forward and backward, gradients of ``mean(ys**2)`` for all weights) and ``infer`` (forward
only). Every configuration runs once per round, in an order shuffled anew each round so that
load from other processes falls on all of them alike; the table shows the median over rounds
and each time relative to ``unroll=1`` of the same cell, impl and mode.

Output: the table on stdout and ``benchmarks/results/unroll.json`` (``--out`` to change).
"""

from __future__ import annotations

import argparse
import json
import platform
import random
import statistics
import sys
import time
from pathlib import Path

import jax
import jax.numpy as jnp

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
import rnnjax as rj  # noqa: E402

RESULTS = Path(__file__).resolve().parent / "results"
CELLS = {"lstm": rj.lstm, "gru": rj.gru, "mgu": rj.mgu}
UNROLLS = (1, 2, 4, 8, 16)
SIZES = {  # batch, steps, inputs, hidden
    "full": (32, 128, 128, 256),
    "quick": (16, 64, 64, 128),
    "smoke": (2, 8, 4, 8),
}


def build(cell_name: str, impl: str, unroll: int, size):
    batch, steps, inputs, hidden = size
    cell = CELLS[cell_name](inputs, hidden)
    model = rj.rnn(cell, unroll=unroll, impl=impl)
    params = cell.init(jax.random.key(0))
    xs = jax.random.normal(jax.random.key(1), (steps, batch, inputs))

    def loss(p):
        return jnp.mean(model.apply(p, xs)[1] ** 2)

    train = jax.jit(jax.grad(loss))
    infer = jax.jit(lambda p: model.apply(p, xs)[1])
    compiled = {}
    for mode, fn in (("train", train), ("infer", infer)):
        start = time.perf_counter()
        jax.block_until_ready(fn(params))  # compile and run once
        compiled[mode] = (fn, time.perf_counter() - start)
    return params, compiled


def main(argv=None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--quick", action="store_true", help="LSTM only, B=16 T=64 I=64 H=128")
    parser.add_argument("--smoke", action="store_true", help="tiny shapes, unroll 1 and 4, one round")
    parser.add_argument("--rounds", type=int, default=None, help="timing rounds (default 15; --smoke 1)")
    parser.add_argument("--out", type=Path, default=None)
    args = parser.parse_args(argv)
    size_name = "smoke" if args.smoke else "quick" if args.quick else "full"
    size = SIZES[size_name]
    cells = ("lstm", "mgu") if args.smoke else ("lstm",) if args.quick else tuple(CELLS)
    unrolls = (1, 4) if args.smoke else UNROLLS
    rounds = args.rounds or (1 if args.smoke else 15)
    configs = [(c, impl, u) for c in cells for impl in ("auto", "loop") for u in unrolls
               if impl == "auto" or c in ("lstm", "gru")]  # MGU has no kernel: auto is the loop
    built = {cfg: build(*cfg, size) for cfg in configs}
    times: dict = {(cfg, mode): [] for cfg in configs for mode in ("train", "infer")}
    for _ in range(rounds):
        order = list(times)
        random.shuffle(order)
        for cfg, mode in order:
            params, compiled = built[cfg]
            fn = compiled[mode][0]
            start = time.perf_counter()
            jax.block_until_ready(fn(params))
            times[(cfg, mode)].append(time.perf_counter() - start)
    rows = []
    for (cell, impl, unroll), mode in times:
        median = statistics.median(times[((cell, impl, unroll), mode)])
        base = statistics.median(times[((cell, impl, unrolls[0]), mode)])
        rows.append({"cell": cell, "impl": impl, "unroll": unroll, "mode": mode, "median_ms": 1e3 * median,
                     "vs_unroll_1": median / base,
                     "compile_s": built[(cell, impl, unroll)][1][mode][1]})
    rows.sort(key=lambda r: (r["cell"], r["mode"], r["impl"], r["unroll"]))
    print(f"unroll and impl, {size_name}: batch {size[0]}, steps {size[1]}, inputs {size[2]}, hidden {size[3]}; "
          f"median of {rounds} rounds on {jax.devices()[0].platform}")
    print(f"{'cell':6} {'mode':6} {'impl':5} {'unroll':>6} {'median ms':>10} {'vs 1':>6} {'compile s':>10}")
    for r in rows:
        print(f"{r['cell']:6} {r['mode']:6} {r['impl']:5} {r['unroll']:6d} {r['median_ms']:10.2f} "
              f"{r['vs_unroll_1']:6.2f} {r['compile_s']:10.2f}")
    result = {"size": dict(zip(("batch", "steps", "inputs", "hidden"), size, strict=True)), "name": size_name,
              "rounds": rounds, "platform": jax.devices()[0].platform, "machine": platform.processor() or
              platform.machine(), "jax": jax.__version__, "rows": rows}
    out = args.out or RESULTS / f"unroll{'' if size_name == 'full' else '-' + size_name}.json"
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(result, indent=2) + "\n")
    return result


if __name__ == "__main__":
    main()
