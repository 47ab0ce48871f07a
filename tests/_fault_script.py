"""Child processes for the data-safety tests: ``python tests/_fault_script.py MODE ARGS...``.

Modes (each reports on stdout, one flushed line per event, so that the parent acts on what
happened rather than on timing):

- ``train DIR STEPS OUT [--die-after-save N]``: an Elman RNN trained with ``rnnjax.fit``
  (checkpoints every 2 steps, keep 2, a JSONL log; a NaN batch at step 5, skipped by the
  guard). Prints ``data N`` when batch N is drawn (right after the save of step N was handed
  to the background writer, when N is a save step), ``saved N`` when ``save`` returns and
  ``step N`` after each step. ``--die-after-save N`` makes the run SIGKILL itself right after
  the save of step N was started, i.e. while it is being written. Writes the final params,
  step and skipped count to OUT (.npz).
- ``hold-log PATH``: opens a MetricsLog, writes row 1, prints ``ready``; then each line
  ``row N`` read from stdin writes row N and prints ``wrote N``; on end of input it closes.
- ``hold-ckpt DIR``: saves step 1 in a Checkpoints, prints ``ready``, waits for end of input.
- ``fsize PATH LIMIT``: limits the size of files it writes to LIMIT bytes (RLIMIT_FSIZE, as a
  full disk would) and writes rows until the log refuses one; prints a JSON report.
"""

import importlib.util
import json
import os
import signal
import sys

import numpy as np

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
if __name__ == "__main__" and sys.argv[1] in ("hold-log", "fsize"):
    # rnnjax/records.py alone (NumPy and tqdm only, and its lock module): these children start
    # in a fraction of the time that importing JAX and Orbax takes
    lock_spec = importlib.util.spec_from_file_location("rnnjax._lock", os.path.join(ROOT, "rnnjax", "_lock.py"))
    sys.modules["rnnjax._lock"] = importlib.util.module_from_spec(lock_spec)
    lock_spec.loader.exec_module(sys.modules["rnnjax._lock"])
    spec = importlib.util.spec_from_file_location("records", os.path.join(ROOT, "rnnjax", "records.py"))
    records = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(records)
else:
    sys.path.insert(0, ROOT)
    import jax
    import jax.numpy as jnp

    import rnnjax as rj
    from rnnjax import records

T, B, I, H = 4, 2, 3, 5  # noqa: E741
SAVE_EVERY = 2


def data(i):
    rng = np.random.default_rng(i)  # a function of the step alone (NumPy: no compile in the child)
    xs = rng.standard_normal((T, B, I), np.float32)
    if i == 5:
        xs[0, 0, 0] = np.nan
    return xs, rng.standard_normal((T, B, 1), np.float32)


def make():
    cell = rj.elman(I, H)
    k_cell, k_head = jax.random.split(jax.random.key(0))
    params = {"cell": cell.init(k_cell), "head": jax.random.normal(k_head, (H, 1))}

    def loss_fn(p, batch, key):
        xs, ys = batch
        xs = xs + 0.1 * jax.random.normal(key, xs.shape)
        _, hs = rj.scan(cell.step, p["cell"], cell.initial_carry((B,)), xs)
        return rj.sequence_mse(hs @ p["head"], ys)

    opt = rj.make_optimizer(0.05)
    return rj.make_train_step(loss_fn, opt), lambda: rj.init_train_state(params, opt, jax.random.key(1))


def train(directory, steps, out=None, die_after_save=None, quiet=False, made=None):
    """The run; ``made`` is ``make()``'s ``(train_step, fresh_state)`` to reuse (one compile)."""
    step, fresh = made or make()
    state = fresh()
    say = (lambda text: None) if quiet else (lambda text: print(text, flush=True))
    class ReportingCheckpoints(rj.Checkpoints):
        def save(self, state, **kwargs):
            super().save(state, **kwargs)
            step = kwargs["step"]
            say(f"saved {step}")
            if step == die_after_save:
                os.kill(os.getpid(), signal.SIGKILL)  # the write of this step is in flight

    ckpt = ReportingCheckpoints(os.path.join(directory, "ckpt"), max_to_keep=2)
    log = rj.MetricsLog(os.path.join(directory, "metrics.jsonl"))

    def batches(i):
        say(f"data {i}")
        return data(i)

    state = rj.fit(step, state, batches, steps, checkpoints=ckpt, save_every=SAVE_EVERY, log=log,
                   callback=lambda n, s, m: say(f"step {n}"))
    ckpt.close()
    log.close()
    if out is not None:
        leaves = [np.asarray(x) for x in jax.tree_util.tree_leaves(state.params)]
        np.savez(out, *leaves, step=np.asarray(state.step), skipped=np.asarray(state.skipped))
    return state


def hold_log(path):
    log = records.MetricsLog(path)
    log.write(1, {"loss": 1.0})
    print("ready", flush=True)
    for line in sys.stdin:
        n = int(line.split()[1])
        log.write(n, {"loss": float(n)})
        print(f"wrote {n}", flush=True)
    log.close()


def hold_ckpt(directory):
    ckpt = rj.Checkpoints(directory)
    ckpt.save({"w": jnp.arange(3.0)}, step=1)
    ckpt.wait()
    print("ready", flush=True)
    sys.stdin.read()
    ckpt.close()


def fsize(path, limit):
    import resource

    signal.signal(signal.SIGXFSZ, signal.SIG_IGN)  # then a write past the limit fails with EFBIG
    log = records.MetricsLog(path)
    resource.setrlimit(resource.RLIMIT_FSIZE, (limit, resource.getrlimit(resource.RLIMIT_FSIZE)[1]))
    error = None
    for n in range(1, 1000):
        try:
            log.write(n, {"loss": n / 7})
        except OSError as e:
            error = f"{type(e).__name__}: {e}"
            break
    resource.setrlimit(resource.RLIMIT_FSIZE, (resource.RLIM_INFINITY,) * 2)
    print(json.dumps({"error": error, "rows": [r["step"] for r in log.rows]}), flush=True)
    log.close()


if __name__ == "__main__":
    mode, *args = sys.argv[1:]
    if mode == "train":
        die = int(args[args.index("--die-after-save") + 1]) if "--die-after-save" in args else None
        train(args[0], int(args[1]), args[2], die_after_save=die)
    elif mode == "hold-log":
        hold_log(args[0])
    elif mode == "hold-ckpt":
        hold_ckpt(args[0])
    elif mode == "fsize":
        fsize(args[0], int(args[1]))
    else:
        raise SystemExit(f"unknown mode {mode!r}")
