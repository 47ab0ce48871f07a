"""Cost of ``time_major=False``: the benchmark's small LSTM training step, time-major vs batch-major.

    .venv/bin/python benchmarks/batch_major.py

Both steps run in one process, interleaved over rounds (median of each), on the same data
transposed; the batch-major step moves the time axis at the boundary of ``rj.scan``.
"""

import time

import jax
import jax.numpy as jnp
import numpy as np

import rnnjax as rj

B, T, I, H = 32, 128, 128, 256  # benchmarks/bench.py, size "small"


def make(time_major: bool):
    cell = rj.lstm(I, H)

    def loss(params, xs):
        _, ys = rj.scan(cell.step, params, cell.initial_carry((B,)), xs, time_major=time_major)
        return jnp.mean(ys ** 2)

    return jax.jit(jax.value_and_grad(loss))


def main(rounds: int = 15, inner: int = 5):
    params = rj.lstm(I, H).init(jax.random.key(0))
    xs = jax.random.normal(jax.random.key(1), (T, B, I))
    xs_bm = jnp.swapaxes(xs, 0, 1)
    steps = {"time-major": (make(True), xs), "batch-major": (make(False), xs_bm)}
    for fn, x in steps.values():
        jax.block_until_ready(fn(params, x))  # compile
    times = {name: [] for name in steps}
    for _ in range(rounds):
        for name, (fn, x) in steps.items():
            t = time.perf_counter()
            for _ in range(inner):
                jax.block_until_ready(fn(params, x))
            times[name].append((time.perf_counter() - t) / inner)
    med = {name: float(np.median(v)) for name, v in times.items()}
    for name, m in med.items():
        print(f"{name}: {1e3 * m:.1f} ms per training step (median of {rounds})")
    print(f"batch-major / time-major: {med['batch-major'] / med['time-major']:.3f}")


if __name__ == "__main__":
    main()
