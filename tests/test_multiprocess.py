"""Data-parallel training across processes: 2 processes on 127.0.0.1 with 2 CPU devices each.

``_multiprocess_script.py`` is the program of the training guide's multi-process recipe, run here as a
reader would run it (one process per process id, gloo collectives). Its checkpoints are read
back in this process and compared with the same training run here on one device.
"""

import json
import os
import pathlib
import re
import resource
import shutil
import socket
import subprocess
import sys
import time

import jax
import numpy as np
import pytest

import rnnjax as rj

ROOT = pathlib.Path(__file__).resolve().parents[1]
SCRIPT = pathlib.Path(__file__).resolve().with_name("_multiprocess_script.py")
TIMEOUT = 240  # seconds for one 2-process launch, start to exit, on a loaded 2-core machine

PROXY_VARIABLES = ("http_proxy", "https_proxy", "all_proxy", "grpc_proxy", "no_proxy")

# each launch starts 2 JAX processes and compiles a training step in both: ~20 s of CPU
slow = pytest.mark.slow


def _free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _env(cache: pathlib.Path) -> dict:
    # the processes talk over 127.0.0.1 only: no proxy (JAX warns that one may hang them)
    env = {k: v for k, v in os.environ.items() if k.lower() not in PROXY_VARIABLES}
    env.update(
        PYTHONPATH=os.pathsep.join([str(ROOT), env.get("PYTHONPATH", "")]).rstrip(os.pathsep),
        # a compilation cache shared by the launches (speed only: a hit is the executable XLA
        # compiled for the same program)
        JAX_COMPILATION_CACHE_DIR=str(cache), JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS="0",
        JAX_PERSISTENT_CACHE_MIN_ENTRY_SIZE_BYTES="0",
    )
    return env


def launch(argv_of, cwd: pathlib.Path, cache: pathlib.Path) -> list[str]:
    """Start 2 processes (``argv_of(address, process_id)``), wait for both within TIMEOUT and
    return their stdouts; a process still running at the deadline or on any error is killed."""
    address = f"127.0.0.1:{_free_port()}"
    logs = [(open(cwd / f"out{i}.txt", "w+"), open(cwd / f"err{i}.txt", "w+")) for i in range(2)]
    procs, started = [], time.monotonic()
    cpu = resource.getrusage(resource.RUSAGE_CHILDREN)
    try:
        for i in range(2):
            procs.append(subprocess.Popen(argv_of(address, i), cwd=cwd, env=_env(cache),
                                          stdout=logs[i][0], stderr=logs[i][1], stdin=subprocess.DEVNULL))
        deadline = time.monotonic() + TIMEOUT
        for p in procs:
            try:
                p.wait(timeout=max(deadline - time.monotonic(), 0.1))
            except subprocess.TimeoutExpired:
                pytest.fail(f"the 2-process run did not finish within {TIMEOUT} s")
        outs = []
        for i, p in enumerate(procs):
            logs[i][0].seek(0), logs[i][1].seek(0)
            out, err = logs[i][0].read(), logs[i][1].read()
            assert p.returncode == 0, f"process {i} exited with {p.returncode}:\n{err[-3000:]}"
            outs.append(out)
        now = resource.getrusage(resource.RUSAGE_CHILDREN)
        used = now.ru_utime + now.ru_stime - cpu.ru_utime - cpu.ru_stime
        print(f"2-process launch: {time.monotonic() - started:.1f} s wall, {used:.1f} s CPU")
        return outs
    finally:
        for p in procs:
            if p.poll() is None:
                p.kill()
                p.wait(timeout=30)
        for f in (f for pair in logs for f in pair):
            f.close()


def run_recipe(cwd: pathlib.Path, steps: int, cache: pathlib.Path) -> list[str]:
    cwd.mkdir(exist_ok=True)
    return launch(lambda address, i: [sys.executable, str(SCRIPT), address, str(i), str(steps)], cwd, cache)


# ------------------------------------------------------------------ the run on one device

T, B, D, H = 6, 8, 3, 8  # as in the script


def reference_run(steps: int):
    """The script's training written out for one device, one process, no sharding: the state
    after each step and the losses."""
    cell = rj.lstm(D, H)

    def loss_fn(params, batch, key):
        xs, targets, lengths = batch
        _, hs = rj.scan(cell.step, params["cell"], cell.initial_carry((xs.shape[1],)), xs, lengths=lengths)
        return rj.sequence_mse(hs @ params["head"], targets, lengths=lengths)

    def global_batch(step):
        rng = np.random.default_rng(step)
        xs, targets = rng.normal(size=(T, B, D)), rng.normal(size=(T, B, 1))
        return xs.astype(np.float32), targets.astype(np.float32), np.array([6, 5, 4, 3, 6, 2, 1, 6])

    opt = rj.make_optimizer(0.05)
    train_step = rj.make_train_step(loss_fn, opt)

    def initial_state():
        k1, k2 = jax.random.split(jax.random.key(0))
        params = {"cell": cell.init(k1), "head": 0.5 * jax.random.normal(k2, (H, 1))}
        return rj.init_train_state(params, opt, jax.random.key(1))

    state, states, losses = initial_state(), {}, []
    for s in range(steps):
        state, metrics = train_step(state, global_batch(s))  # donates its input state
        losses.append(float(metrics["loss"]))
        states[s + 1] = (leaves(state.params), leaves(state))
    return initial_state(), states, losses


LINE = re.compile(r"process (\d) of 2 \((\d) of (\d) devices\): step (\d+) loss (\S+)")


def losses_of(out: str, process: int) -> dict[int, float]:
    found = {}
    for m in LINE.finditer(out):
        assert (int(m[1]), m[2], m[3]) == (process, "2", "4"), m[0]  # 2 of the 4 devices are here
        found[int(m[4])] = float(m[5])
    return found


def leaves(tree):
    return [np.asarray(jax.random.key_data(x) if jax.dtypes.issubdtype(x.dtype, jax.dtypes.prng_key) else x)
            for x in jax.tree_util.tree_leaves(tree)]


@pytest.fixture(scope="module")
def cache(tmp_path_factory):
    return tmp_path_factory.mktemp("jax-cache")


@slow
def test_two_processes_train_like_one_and_resume_exactly(tmp_path, cache):
    full, resumed = tmp_path / "uninterrupted", tmp_path / "resumed"

    # 6 steps on 2 processes x 2 devices, checkpoints at steps 3 and 6
    outs = run_recipe(full, 6, cache)
    template, states, losses = reference_run(6)
    for i, out in enumerate(outs):
        assert f"process {i}: checkpoints [3, 6]" in out
        got = losses_of(out, i)
        assert sorted(got) == [1, 2, 3, 4, 5, 6]
        np.testing.assert_allclose([got[s] for s in range(1, 7)], losses, rtol=1e-5)
    # one checkpoint per save for both processes, every writer lock released, nothing left over
    assert sorted(os.listdir(full / "ckpt")) == ["3", "6"]

    with rj.Checkpoints(full / "ckpt") as ckpt:  # read back here, on one device
        at = {s: ckpt.restore(template, step=s)[0] for s in (3, 6)}
    for s in (3, 6):
        assert int(at[s].step) == s
        for a, b in zip(leaves(at[s].params), states[s][0], strict=True):
            np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-6)
    diff = max(float(np.max(np.abs(a.astype(np.float64) - b)))
               for a, b in zip(leaves(at[6]), states[6][1], strict=True))
    print(f"2 processes x 2 devices vs 1 device, 6 steps: max |state difference| = {diff:.3g}")

    # a fresh pair of processes resumes from the step-3 checkpoint and trains steps 4..6
    (resumed / "ckpt").mkdir(parents=True)
    shutil.copytree(full / "ckpt" / "3", resumed / "ckpt" / "3")
    outs_resumed = run_recipe(resumed, 6, cache)
    for i, out in enumerate(outs_resumed):
        assert sorted(losses_of(out, i)) == [4, 5, 6]  # it did resume at step 3
        assert losses_of(out, i) == {s: v for s, v in losses_of(outs[i], i).items() if s > 3}
        assert f"process {i}: checkpoints [3, 6]" in out
    with rj.Checkpoints(full / "ckpt") as a, rj.Checkpoints(resumed / "ckpt") as b:
        once, twice = a.restore(template, step=6)[0], b.restore(template, step=6)[0]
    for x, y in zip(leaves(once), leaves(twice), strict=True):  # the whole state, bit for bit
        np.testing.assert_array_equal(x, y)


def test_guide_recipe_is_the_script_that_runs():
    guide = (ROOT / "docs" / "guides" / "training.md").read_text()
    assert SCRIPT.read_text() in guide, "docs/guides/training.md must show tests/_multiprocess_script.py verbatim"


# What each process of a launch checks of data_mesh, shard_batch and replicate across processes.
PROBE = r"""
import json, sys
import jax
jax.config.update("jax_platforms", "cpu")
jax.config.update("jax_num_cpu_devices", 2)
jax.distributed.initialize(coordinator_address=sys.argv[1], num_processes=2, process_id=int(sys.argv[2]),
                           initialization_timeout=60, shutdown_timeout_seconds=30)
import numpy as np
from jax.experimental import multihost_utils
import rnnjax as rj

me = jax.process_index()
mesh = rj.data_mesh()
r = {"mesh_processes": [d.process_index for d in mesh.devices.flat]}
# each process passes rows 4 * me ... 4 * me + 3 of an [T=2, B=8] batch and lengths 1..8
rows = np.arange(4 * me, 4 * me + 4)
xs, lengths, w = rj.shard_batch((np.stack([rows, 10 * rows]).astype(np.float32), rows + 1, np.ones(3)), mesh,
                                axis=(1, 0, None))
r["xs"] = np.asarray(multihost_utils.process_allgather(xs, tiled=True)).tolist()
r["lengths"] = np.asarray(multihost_utils.process_allgather(lengths, tiled=True)).tolist()
r["shapes"] = [list(xs.shape), list(lengths.shape), list(w.shape)]
r["local_rows"] = sorted(int(s.index[1].start) for s in xs.addressable_shards)
r["w_replicated"] = w.sharding.is_fully_replicated
tree = {"key": jax.random.key(7), "f64": np.linspace(0, 1, 5), "int": 3, "dev": jax.numpy.arange(4.0),
        "global": xs}
rep = rj.replicate(tree, mesh)
r["rep_dtypes"] = {k: str(v.dtype) for k, v in rep.items()}
r["rep_replicated"] = {k: bool(v.sharding.is_fully_replicated) for k, v in rep.items()}
r["rep_devices"] = {k: len(v.sharding.device_set) for k, v in rep.items()}
r["key_equal"] = bool((rep["key"] == jax.random.key(7)).all())
r["values_equal"] = bool(np.array_equal(np.asarray(rep["f64"]), np.linspace(0, 1, 5).astype(np.float32))
                         and int(rep["int"]) == 3 and np.array_equal(np.asarray(rep["dev"]), np.arange(4.0)))
r["global_values"] = np.asarray(rep["global"]).tolist()  # the sharded batch, now whole on every device
try:
    rj.replicate({"a": np.zeros(2), "b": {"w": np.full(3, float(me))}}, mesh)
    r["mismatch_error"] = None
except ValueError as e:
    r["mismatch_error"] = str(e)
try:
    rj.replicate({"a": np.zeros(2), **({"b": np.zeros(1)} if me else {})}, mesh)
    r["structure_error"] = None
except ValueError as e:
    r["structure_error"] = str(e)
try:
    rj.shard_batch(np.ones((2, 3)), mesh)
    r["divisibility_error"] = None
except ValueError as e:
    r["divisibility_error"] = str(e)
print("RESULT " + json.dumps(r))
"""


@slow
def test_mesh_batch_and_replicate_span_the_processes(tmp_path, cache):
    outs = launch(lambda address, i: [sys.executable, "-c", PROBE, address, str(i)], tmp_path, cache)
    for i, out in enumerate(outs):
        r = json.loads(out.split("RESULT ", 1)[1])
        assert r["mesh_processes"] == [0, 0, 1, 1]  # process 0's devices first
        # the global batch is the processes' parts in process order; each holds its own rows
        assert r["xs"] == [list(range(8)), [10 * j for j in range(8)]]
        assert r["lengths"] == list(range(1, 9))
        assert r["shapes"] == [[2, 8], [8], [3]] and r["w_replicated"]
        assert r["local_rows"] == [4 * i, 4 * i + 2]
        assert r["rep_replicated"] == dict.fromkeys(["key", "f64", "int", "dev", "global"], True)
        assert r["rep_devices"] == dict.fromkeys(["key", "f64", "int", "dev", "global"], 4)
        assert r["global_values"] == r["xs"]
        assert r["rep_dtypes"] == {"key": "key<fry>", "f64": "float32", "int": "int32", "dev": "float32",
                                   "global": "float32"}
        assert r["key_equal"] and r["values_equal"]
        assert r["mismatch_error"] == (
            "tree['b']['w']: process 1 holds a different value than process 0; replicate expects the same "
            "values in every process (e.g. initialise them from the same key)"
        )
        assert r["structure_error"] == (
            "tree: process 1 passes a tree of another structure than process 0 (2 leaves, process 0 1); "
            "replicate expects the same tree in every process"
        )
        assert r["divisibility_error"] == (
            "batch: the batch axis 1 has size 3, expected a multiple of the 2 devices of this process"
        )
