"""A small training run for the resume tests: ``python tests/_resume_script.py DIR STEPS OUT``.

Trains an Elman RNN with ``rnnjax.fit`` (checkpoints every 3 steps, a JSONL log) on batches
that are functions of the step number, with a step key used for input noise and a NaN batch at
step 7 (skipped by the guard). Prints ``step N`` after each step; ``--die-at N`` makes the run
SIGKILL itself right after step N (one step after an asynchronous save started, if N - 1 is a
save step), a kill at a known point whatever the machine's load.
Writes the final params to OUT (.npz).
"""

import argparse
import os
import signal
import sys

import jax
import jax.numpy as jnp
import numpy as np

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
import rnnjax as rj  # noqa: E402

T, B, I, H = 5, 2, 3, 4  # noqa: E741


def data(i):
    k1, k2 = jax.random.split(jax.random.fold_in(jax.random.key(123), i))
    xs = jax.random.normal(k1, (T, B, I))
    if i == 7:
        xs = xs.at[0, 0, 0].set(jnp.nan)
    return xs, jax.random.normal(k2, (T, B, 1))


def make(directory):
    cell = rj.elman(I, H)
    k_cell, k_head = jax.random.split(jax.random.key(0))
    params = {"cell": cell.init(k_cell), "head": jax.random.normal(k_head, (H, 1))}

    def loss_fn(p, batch, key):
        xs, ys = batch
        xs = xs + 0.1 * jax.random.normal(key, xs.shape)
        _, hs = rj.scan(cell.step, p["cell"], cell.initial_carry((B,)), xs)
        return rj.sequence_mse(hs @ p["head"], ys)

    opt = rj.make_optimizer(0.05)
    step = rj.make_train_step(loss_fn, opt)
    state = rj.init_train_state(params, opt, jax.random.key(1))
    ckpt = rj.Checkpoints(os.path.join(directory, "ckpt"), max_to_keep=2)
    log = rj.MetricsLog(os.path.join(directory, "metrics.jsonl"))
    return step, state, ckpt, log


def main(directory, steps, out=None, die_at=None):
    step, state, ckpt, log = make(directory)

    def callback(n, state, metrics):
        print(f"step {n}", flush=True)
        if n == die_at:
            os.kill(os.getpid(), signal.SIGKILL)

    state = rj.fit(step, state, data, steps, checkpoints=ckpt, save_every=3, log=log, callback=callback)
    ckpt.close()
    log.close()
    leaves = jax.tree_util.tree_leaves(state.params)
    if out is not None:
        np.savez(out, *[np.asarray(x) for x in leaves], skipped=np.asarray(state.skipped))
    return state


if __name__ == "__main__":
    parser = argparse.ArgumentParser()
    parser.add_argument("directory")
    parser.add_argument("steps", type=int)
    parser.add_argument("out")
    parser.add_argument("--die-at", type=int, default=None)
    a = parser.parse_args()
    main(a.directory, a.steps, a.out, a.die_at)
