"""LSTM variants (Greff et al. 2015 style, scaled down) on the adding problem and temporal order.

Run:  python experiments/lstm_variants.py            (about 1 min after adding.py and
                                                      temporal_order.py, ≈ 4 CPU-minutes alone)
      python experiments/lstm_variants.py --smoke    (seconds)

Variants: vanilla LSTM (with forget gate), peephole LSTM, CIFG (coupled input–forget gate,
f = 1 - i), NFG (no forget gate: the 1997 LSTM, c' = c + i ⊙ g, written below as a user step
function — it plugs into ``rnnjax.scan`` like the built-in cells) and GRU. Each is trained with
3 seeds on the adding problem (T = 100) and on temporal order (experiment 6a), with exactly the
configurations of ``adding.py`` and ``temporal_order.py``. Runs of those scripts with the same
configuration and seed are reused; missing ones are trained.

Greff et al. (2015, "LSTM: A search space odyssey") found that the forget gate and the output
activation matter most, while coupling the input and forget gates (CIFG) or removing the
peepholes changes little.

Measured (full run): adding T = 100 test MSE vanilla 0.0037, peephole 0.0079, CIFG 0.0021,
GRU 0.0058 (all 3/3 solved), NFG 0.179 (0/3); temporal order accuracy vanilla 0.75 (2/3),
peephole 0.96 (2/3), CIFG 1.00 (3/3), NFG 0.25 (0/3), GRU 0.24 (0/3). The forget gate mattered
most; CIFG and peepholes did no harm. Details: EXPERIMENTS.md, "Long-term memory".
"""

from __future__ import annotations

import json
import pathlib
import sys
import time
from typing import NamedTuple

if __package__ in (None, ""):  # run as a script: make the `experiments` package importable
    sys.path.insert(0, str(pathlib.Path(__file__).resolve().parents[1]))

import jax
import jax.numpy as jnp
import numpy as np

import rnnjax as rj
from experiments import adding, common, temporal_order

VARIANTS = ("vanilla", "peephole", "cifg", "nfg", "gru")
BUILTIN = {"vanilla": "lstm", "peephole": "peephole", "cifg": "cifg", "gru": "gru"}  # names in the other scripts
ADDING_T = 100
# smoke: the user-written cell alone on a short adding problem (a plug-in check, seconds)
SMOKE_ADDING = dict(adding.SMOKE, lengths=(8,), hidden=8, batch=16, lr=3e-2, steps=60, eval_every=20)


# ----------------------------------------------------------- a user-written cell: no forget gate


class NFGParams(NamedTuple):
    w_ih: jax.Array  # [I, 3H], gates i, g, o
    w_hh: jax.Array  # [H, 3H]
    b: jax.Array  # [3H]


def nfg_lstm_step(params: NFGParams, carry: rj.LSTMState, x):
    """LSTM without forget gate (Hochreiter & Schmidhuber 1997): ``c' = c + i ⊙ g``, ``h' = o ⊙ tanh(c')``."""
    z = x @ params.w_ih + carry.h @ params.w_hh + params.b  # [*, 3H]
    i, g, o = jnp.split(z, 3, axis=-1)
    c = carry.c + jax.nn.sigmoid(i) * jnp.tanh(g)
    h = jax.nn.sigmoid(o) * jnp.tanh(c)
    return rj.LSTMState(h, c), h


def nfg_lstm(input_size: int, hidden_size: int) -> rj.Cell:
    """The no-forget-gate LSTM as a ``Cell``: Glorot input weights, orthogonal recurrent blocks."""
    glorot, orthogonal = jax.nn.initializers.glorot_uniform(), jax.nn.initializers.orthogonal()

    def init(key):
        k1, k2 = jax.random.split(key)
        return NFGParams(
            w_ih=jnp.concatenate([glorot(k, (input_size, hidden_size)) for k in jax.random.split(k1, 3)], -1),
            w_hh=jnp.concatenate([orthogonal(k, (hidden_size, hidden_size)) for k in jax.random.split(k2, 3)], -1),
            b=jnp.zeros((3 * hidden_size,)),
        )

    def initial_carry(batch_shape=()):
        shape = tuple(batch_shape) + (hidden_size,)
        return rj.LSTMState(jnp.zeros(shape), jnp.zeros(shape))

    return rj.Cell(init, initial_carry, nfg_lstm_step)


def make_cell(variant: str, input_size: int, hidden: int) -> rj.Cell:
    if variant == "nfg":
        return nfg_lstm(input_size, hidden)
    return {"vanilla": rj.lstm, "peephole": rj.peephole_lstm, "cifg": rj.cifg_lstm, "gru": rj.gru}[variant](
        input_size, hidden)


# ---------------------------------------------------------------------------- reuse, train


def previous_run(name: str, cfg: dict, seed: int) -> dict | None:
    """The results of ``runs/<name>`` if they were made with this configuration and seed."""
    path = common.ROOT / "runs" / name / "results.json"
    if not path.exists():
        return None
    old = json.loads(path.read_text())
    same = old.get("seed") == seed and all(old["config"].get(k) == v for k, v in cfg.items()
                                           if k not in ("cells", "lengths", "variants", "adding_T"))
    return old["results"] if same else None


def collect(variants, previous, train) -> dict:
    """Each variant's results: ``previous(v)`` when it has them (marked ``reused``), else ``train(v)``."""
    results = {}
    for v in variants:
        r = previous(v)
        results[v] = dict(train(v), reused=False) if r is None else dict(r, reused=True)
    return results


def run_adding(cfg: dict, seed: int, reuse: bool, out) -> dict:
    old = (previous_run("adding", cfg, seed) if reuse else None) or {}
    T = cfg["adding_T"]
    return collect(cfg["variants"], lambda v: old.get(BUILTIN.get(v, ""), {}).get(str(T)),
                   lambda v: adding.train(v, make_cell(v, 2, cfg["hidden"]), T, cfg, seed, out))


def run_order(cfg: dict, seed: int, reuse: bool, out) -> dict:
    old = (previous_run("temporal_order", cfg, seed) if reuse else None) or {}
    return collect(cfg["variants"], lambda v: old.get(BUILTIN.get(v, "")),
                   lambda v: temporal_order.train(v, make_cell(v, temporal_order.NUM_SYMBOLS, cfg["hidden"]),
                                                  cfg, seed, out))


def plot(add: dict, order: dict, T: int, path) -> None:
    fig, axes = common.subplots(1, 2, figsize=(9, 3.4), layout="constrained")
    names = list(add)
    for ax, values, label, baseline in (
        (axes[0], [np.asarray(add[v]["final_mse"], float) for v in names], f"adding T={T}: test MSE",
         1 / 6),
        (axes[1], [np.asarray(order[v]["acc"], float) for v in names], "temporal order: test accuracy", 0.25),
    ):
        for i, vals in enumerate(values):
            ax.bar(i, vals.mean(), color=f"C{i}", alpha=0.6)
            ax.plot(np.full(vals.size, i), vals, "k.", ms=6)
        ax.axhline(baseline, color="k", ls="--", lw=0.8, label="constant / chance")
        ax.set_xticks(range(len(names)))
        ax.set_xticklabels(names)
        ax.set_title(label)
        ax.grid(True, axis="y", alpha=0.3)
        ax.legend(fontsize=8)
    axes[0].set_yscale("log")
    common.save_figure(fig, path, dpi=90)


def main(argv=None) -> dict:
    parser = common.base_parser(__doc__.splitlines()[0])
    parser.add_argument("--no-reuse", action="store_true", help="train every variant here")
    args = parser.parse_args(argv)
    add_cfg = dict(SMOKE_ADDING if args.smoke else adding.CONFIG, variants=VARIANTS, adding_T=ADDING_T)
    order_cfg = dict(temporal_order.SMOKE if args.smoke else temporal_order.CONFIG, variants=VARIANTS)
    if args.smoke:
        add_cfg["variants"] = order_cfg["variants"] = ("nfg",)
        add_cfg["adding_T"] = SMOKE_ADDING["lengths"][0]
    out = common.run_dir("lstm_variants", args.out)
    start = time.time()
    reuse = not (args.no_reuse or args.smoke)
    add = run_adding(add_cfg, args.seed, reuse, out)
    order = run_order(order_cfg, args.seed, reuse, out)
    rows = []
    for v in add_cfg["variants"]:
        mse, acc = np.asarray(add[v]["final_mse"], float), np.asarray(order[v]["acc"], float)
        rows.append([v, f"{mse.mean():.4f} ± {mse.std():.4f}", f"{int(np.sum(mse < adding.SUCCESS_MSE))}/{mse.size}",
                     f"{acc.mean():.3f} ± {acc.std():.3f}", f"{int(np.sum(acc >= temporal_order.SOLVED_ACC))}/{acc.size}"])
    headers = ["variant", f"adding T={add_cfg['adding_T']}: MSE (mean ± sd)", "solved", "temporal order: acc (mean ± sd)",
               f"≥ {temporal_order.SOLVED_ACC:.0%}"]
    common.print_table(rows, headers, title="LSTM variants, seeds: mean ± standard deviation")
    plot(add, order, add_cfg["adding_T"], out / "lstm_variants.png")
    summary = {"adding_config": add_cfg, "order_config": order_cfg, "seed": args.seed,
               "adding": add, "temporal_order": order, "table": {"headers": headers, "rows": rows},
               "wall_s": time.time() - start}
    common.write_summary(out, summary, "lstm_variants.png")
    return summary


if __name__ == "__main__":
    main()
