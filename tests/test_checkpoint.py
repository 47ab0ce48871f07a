"""Checkpoints: exact round trips, keep-last-N, no overwrites, and resume after SIGKILL."""

import json
import os
import signal
import subprocess
import sys

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import rnnjax as rj
from tests import _resume_script

SCRIPT = os.path.join(os.path.dirname(__file__), "_resume_script.py")


@pytest.fixture
def state(key):
    cell = rj.lstm(3, 4)
    opt = rj.make_optimizer(1e-3)
    carry = rj.LSTMState(jnp.full((2, 4), 0.5), jnp.full((2, 4), -1.5))
    s = rj.init_train_state(cell.init(key), opt, jax.random.key(9), carry=carry)
    # make every leaf distinctive (non-zero optimiser moments, step, skipped count)
    grads = jax.tree_util.tree_map(jnp.ones_like, s.params)
    _, opt_state = opt.update(grads, s.opt_state, s.params)
    return s._replace(opt_state=opt_state, step=jnp.int32(17), skipped=jnp.int32(2))


def assert_bitwise_equal(a, b):
    la, ta = jax.tree_util.tree_flatten(a)
    lb, tb = jax.tree_util.tree_flatten(b)
    assert ta == tb
    for x, y in zip(la, lb, strict=True):
        if jax.dtypes.issubdtype(x.dtype, jax.dtypes.prng_key):
            assert jax.dtypes.issubdtype(y.dtype, jax.dtypes.prng_key)
            x, y = jax.random.key_data(x), jax.random.key_data(y)
        assert x.dtype == y.dtype and x.shape == y.shape
        np.testing.assert_array_equal(np.asarray(x), np.asarray(y))


def test_round_trip_is_exact_and_keeps_types(state, tmp_path):
    with rj.Checkpoints(tmp_path) as ckpt:
        ckpt.save(state, meta={"epoch": 3, "offset": 1024})
        template = jax.tree_util.tree_map(jnp.zeros_like, state)  # values are not used
        restored, meta = ckpt.restore(template)
    assert ckpt.latest_step == 17 and meta == {"epoch": 3, "offset": 1024}
    assert isinstance(restored, rj.TrainState) and isinstance(restored.carry, rj.LSTMState)
    assert_bitwise_equal(restored, state)
    # the restored key draws the same numbers
    assert float(jax.random.normal(restored.key)) == float(jax.random.normal(state.key))


def test_keeps_the_newest_n_and_never_overwrites(state, tmp_path):
    with rj.Checkpoints(tmp_path, max_to_keep=2) as ckpt:
        for n in range(1, 6):
            ckpt.save(state._replace(step=jnp.int32(n)))
        assert ckpt.steps == [4, 5]
        with pytest.raises(ValueError, match="a checkpoint for step 5 already exists"):
            ckpt.save(state, step=5)
        old, _ = ckpt.restore(state, step=4)
        assert int(old.step) == 4
    # a new manager on the same directory sees them
    with rj.Checkpoints(tmp_path, max_to_keep=2) as again:
        assert again.steps == [4, 5] and again.latest_step == 5


def test_restore_errors(state, tmp_path):
    with rj.Checkpoints(tmp_path / "empty") as ckpt:
        with pytest.raises(FileNotFoundError, match="no checkpoint to restore"):
            ckpt.restore(state)
    with rj.Checkpoints(tmp_path / "one") as ckpt:
        ckpt.save(state)
        with pytest.raises(FileNotFoundError, match=r"no checkpoint for step 3 .*have \[17\]"):
            ckpt.restore(state, step=3)
    # A different model in the same folder: one clear error naming the leaves, from a fresh
    # manager too (as when a training script is started again), before Orbax reads any array.
    with rj.Checkpoints(tmp_path / "one") as ckpt:
        wrong = state._replace(params=state.params._replace(b=jnp.zeros(5)))
        with pytest.raises(ValueError, match=r"template: does not match the checkpoint of step 17 .*"
                           r"\(1 difference: params\.b: checkpoint shape \(16,\), template shape \(5,\)\)"):
            ckpt.restore(wrong)
        no_carry = state._replace(carry=None)
        with pytest.raises(ValueError, match=r"2 differences: carry\.c: in the checkpoint, not in the template; "
                           r"carry\.h: in the checkpoint"):
            ckpt.restore(no_carry)
        restored, _ = ckpt.restore(state)  # the matching template still restores
        assert_bitwise_equal(restored, state)


def test_argument_errors(state, tmp_path):
    with pytest.raises(ValueError, match="max_to_keep: expected a positive int or None"):
        rj.Checkpoints(tmp_path, max_to_keep=0)
    with pytest.raises(TypeError, match="directory: expected a path"):
        rj.Checkpoints(3)
    with rj.Checkpoints(tmp_path) as ckpt:
        with pytest.raises(ValueError, match="step: expected a non-negative int"):
            ckpt.save(state, step=-1)
        with pytest.raises(TypeError, match="meta: expected a JSON-serialisable dict"):
            ckpt.save(state, meta=[1])
        with pytest.raises(ValueError, match="step: expected an int"):
            ckpt.save({"w": jnp.ones(2)})


def run_script(directory, steps, out, *extra):
    """Run the training script to its end (or to its own SIGKILL with --die-at); its step lines."""
    proc = subprocess.run([sys.executable, SCRIPT, str(directory), str(steps), str(out), *extra],
                          stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True, timeout=300)
    return proc.returncode, proc.stdout.split("\n")[:-1]


@pytest.mark.slow  # kills and resumes a training process
def test_sigkill_then_resume_is_bitwise_equal_to_an_uninterrupted_run(tmp_path):
    steps = 20

    def latest_checkpoint():
        with rj.Checkpoints(tmp_path / "run" / "ckpt") as ckpt:
            return ckpt.latest_step

    # Run 1 SIGKILLs itself right after step 11 (at a known point, not after a parent's reaction
    # time, so a slow machine cannot let it run on). Saves every 3 steps are asynchronous, so
    # the latest complete one is 9, or 6 if the write of 9 was cut short.
    rc, lines = run_script(tmp_path / "run", steps, tmp_path / "x.npz", "--die-at", "11")
    assert rc == -signal.SIGKILL and lines[-1] == "step 11"
    first = latest_checkpoint()
    assert first in (6, 9)
    # Run 2 resumes there, then kills itself one step after the save of step 15 began.
    rc, lines = run_script(tmp_path / "run", steps, tmp_path / "x.npz", "--die-at", "16")
    assert rc == -signal.SIGKILL and lines[0] == f"step {first + 1}" and lines[-1] == "step 16"
    second = latest_checkpoint()
    assert second in (12, 15)  # 15 if its write finished before the kill
    # Run 3 resumes from there and finishes.
    rc, lines = run_script(tmp_path / "run", steps, tmp_path / "resumed.npz")
    assert rc == 0 and lines[0] == f"step {second + 1}" and lines[-1] == f"step {steps}"

    reference = _resume_script.main(str(tmp_path / "ref"), steps)  # the same run, never interrupted
    got = np.load(tmp_path / "resumed.npz")
    expected = jax.tree_util.tree_leaves(reference.params)
    assert len(got.files) == len(expected) + 1
    for i, leaf in enumerate(expected):
        np.testing.assert_array_equal(got[f"arr_{i}"], np.asarray(leaf))  # bitwise
    assert int(got["skipped"]) == int(reference.skipped) == 1  # the NaN batch at step 7

    # The log of the interrupted run equals that of the uninterrupted one, row for row.
    read = lambda d: [json.loads(line) for line in open(d / "metrics.jsonl")]
    resumed_rows, reference_rows = read(tmp_path / "run"), read(tmp_path / "ref")
    assert [r["step"] for r in resumed_rows] == list(range(1, steps + 1))
    assert json.dumps(resumed_rows) == json.dumps(reference_rows)


def test_numbered_folders_that_are_not_checkpoints_are_never_steps_nor_deleted(tmp_path):
    """A user's own ``1/``, ``2/``, ``3/`` in the directory: invisible to steps, kept by max_to_keep."""
    for name in ("1", "2", "3"):
        (tmp_path / name).mkdir()
        (tmp_path / name / "notes.txt").write_text(f"folder {name}")
    state = {"w": jnp.arange(3.0)}
    with rj.Checkpoints(tmp_path, max_to_keep=1) as ckpt:
        assert ckpt.steps == [] and ckpt.latest_step is None
        with pytest.raises(FileNotFoundError, match="no checkpoint to restore"):
            ckpt.restore(state)
        for n in (10, 20, 30):
            ckpt.save({"w": jnp.arange(3.0) + n}, step=n)
        ckpt.wait()
        assert ckpt.steps == [30]
        with pytest.raises(FileNotFoundError, match=r"no checkpoint for step 2 .*have \[30\]"):
            ckpt.restore(state, step=2)
        with pytest.raises(ValueError, match=r"step: .*2 already exists and is not a checkpoint"):
            ckpt.save(state, step=2)
        restored, _ = ckpt.restore(state)
        np.testing.assert_array_equal(np.asarray(restored["w"]), [30.0, 31.0, 32.0])
    with rj.Checkpoints(tmp_path, max_to_keep=1) as again:
        assert again.steps == [30]
        again.save(state, step=40)
    assert sorted(os.listdir(tmp_path)) == ["1", "2", "3", "40"]
    for name in ("1", "2", "3"):
        assert os.listdir(tmp_path / name) == ["notes.txt"]
        assert (tmp_path / name / "notes.txt").read_text() == f"folder {name}"


def test_directory_must_be_a_directory_that_can_be_created(tmp_path):
    plain = tmp_path / "afile"
    plain.write_text("not a directory")
    with pytest.raises(NotADirectoryError, match=r"directory: expected a directory .*got an existing file .*afile"):
        rj.Checkpoints(plain)
    with pytest.raises(OSError, match=r"directory: cannot create the checkpoint directory .*afile/ck"):
        rj.Checkpoints(plain / "ck")
    assert plain.read_text() == "not a directory"


def test_meta_that_is_not_json_is_refused_before_anything_is_written(tmp_path):
    with rj.Checkpoints(tmp_path / "ck") as ckpt:
        with pytest.raises(TypeError, match=r"meta: expected a JSON-serialisable dict, got \{'f': <object"):
            ckpt.save({"w": jnp.ones(3)}, step=1, meta={"f": object()})
        ckpt.wait()
        assert ckpt.steps == [] and os.listdir(tmp_path / "ck") == []


def test_restore_casts_between_floats_but_refuses_another_dtype_kind(tmp_path):
    saved = {"w": jnp.array([1.5, -2.25, 3.0]), "n": jnp.int32(7), "key": jax.random.key(3)}
    with rj.Checkpoints(tmp_path) as ckpt:
        ckpt.save(saved, step=1)
        as_bf16 = dict(saved, w=jnp.zeros(3, jnp.bfloat16), key=jax.random.key(0))
        restored, _ = ckpt.restore(as_bf16)  # the documented cast: exact in bfloat16
        assert restored["w"].dtype == jnp.bfloat16
        np.testing.assert_array_equal(np.asarray(restored["w"], np.float32), [1.5, -2.25, 3.0])
        with pytest.raises(ValueError, match=r"1 difference: w: checkpoint dtype float32 \(floating\), "
                           r"template dtype int32 \(signed integer\)"):
            ckpt.restore(dict(saved, w=jnp.zeros(3, jnp.int32)))
        with pytest.raises(ValueError, match=r"n: checkpoint dtype int32 \(signed integer\), template dtype bool"):
            ckpt.restore(dict(saved, n=jnp.bool_(False)))
        with pytest.raises(ValueError, match=r"key: checkpoint dtype uint32 \(unsigned integer\), "
                           r"template dtype float32"):
            ckpt.restore(dict(saved, key=jnp.zeros(2)))
