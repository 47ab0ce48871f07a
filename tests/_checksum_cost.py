"""What the checkpoint checksums cost: ``python tests/_checksum_cost.py [--params N]``.

Builds a TrainState of an LSTM language-model-sized set of params (about 10M by default) with
Adam's two moments (3 x N float32 values in all), then times, per save, the integrity record
``Checkpoints.save`` computes (host copies, a CRC-32 of every array, the finiteness check), and
per restore the verification (CRC-32 of every restored array), next to a whole synchronous
save and restore. Prints one JSON line (milliseconds, medians of the repeats).
"""

import argparse
import json
import os
import statistics
import sys
import tempfile
import time

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

import jax  # noqa: E402
import jax.numpy as jnp  # noqa: E402

import rnnjax as rj  # noqa: E402
from rnnjax import checkpoint  # noqa: E402


def timed(fn, repeats):
    times = []
    for _ in range(repeats):
        t = time.perf_counter()
        fn()
        times.append(1000 * (time.perf_counter() - t))
    return statistics.median(times)


def main(num_params, repeats):
    hidden = 1024
    inputs = max(1, num_params // (4 * hidden) - hidden)  # LSTM: (I + H) * 4H weights
    cell = rj.lstm(inputs, hidden)
    params = {"cell": cell.init(jax.random.key(0)), "head": jnp.ones((hidden, 8))}
    opt = rj.make_optimizer(1e-3)
    state = rj.init_train_state(params, opt, jax.random.key(1))
    n = sum(x.size for x in jax.tree_util.tree_leaves(params))
    values = sum(x.size for x in jax.tree_util.tree_leaves(state) if hasattr(x, "size"))
    storable = checkpoint._storable(state)
    record_ms = timed(lambda: checkpoint._record(storable, {}), repeats)
    host = checkpoint._host_arrays(storable)
    verify_ms = timed(lambda: [checkpoint._crc(a) for a in checkpoint._host_arrays(storable).values()], repeats)
    with tempfile.TemporaryDirectory() as d:
        ckpt = rj.Checkpoints(d, max_to_keep=1, async_save=False)
        steps = iter(range(1, 10**6))
        save_ms = timed(lambda: ckpt.save(state, step=next(steps)), repeats)
        restore_ms = timed(lambda: ckpt.restore(state), repeats)
        ckpt.close()
    print(json.dumps({
        "params": n, "values_saved": values, "bytes_saved": sum(a.nbytes for a in host.values() if a is not None),
        "record_ms_per_save": round(record_ms, 1), "verify_ms_per_restore": round(verify_ms, 1),
        "sync_save_ms": round(save_ms, 1), "restore_ms": round(restore_ms, 1), "repeats": repeats,
        "backend": jax.default_backend(),
    }))


if __name__ == "__main__":
    parser = argparse.ArgumentParser()
    parser.add_argument("--params", type=int, default=10_000_000)
    parser.add_argument("--repeats", type=int, default=5)
    a = parser.parse_args()
    main(a.params, a.repeats)
