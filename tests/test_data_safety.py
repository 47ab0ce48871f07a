"""Training never loses or corrupts data: one writer per log and checkpoint directory, verified
checkpoints with fallback to the newest intact one, non-finite updates never applied nor saved,
out-of-range labels and ids never trained on silently, and SIGKILL at random points."""

import glob
import json
import os
import random
import re
import shutil
import signal
import struct
import subprocess
import sys

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

import rnnjax as rj
from rnnjax.checkpoint import CheckpointIntegrityError  # rj.CheckpointIntegrityError
from tests import _fault_script

SCRIPT = os.path.join(os.path.dirname(__file__), "_fault_script.py")


def child_env(tmp_path):
    """Children share a compilation cache: each new process then skips most of its compiles."""
    env = dict(os.environ)
    env.update(
        JAX_PLATFORMS="cpu",
        JAX_COMPILATION_CACHE_DIR=str(tmp_path / "jax-cache"),
        JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS="0",
        JAX_PERSISTENT_CACHE_MIN_ENTRY_SIZE_BYTES="0",
    )
    return env


def start(tmp_path, *args):
    return subprocess.Popen(
        [sys.executable, SCRIPT, *map(str, args)], stdin=subprocess.PIPE, stdout=subprocess.PIPE,
        stderr=subprocess.DEVNULL, text=True, env=child_env(tmp_path),
    )


def expect_line(proc, wanted):
    line = proc.stdout.readline().strip()
    assert line == wanted, f"child said {line!r}, expected {wanted!r} (exit code {proc.poll()})"


def quadratic_setup(learning_rate=0.1, skip_nonfinite=True):
    opt = rj.make_optimizer(learning_rate, clip=None, optimizer=optax.sgd)
    step = rj.make_train_step(lambda p, batch, key: jnp.sum((p - batch) ** 2), opt, skip_nonfinite=skip_nonfinite)
    fresh = lambda: rj.init_train_state(jnp.zeros(3), opt, jax.random.key(0))
    return step, fresh


def all_finite(tree):
    return all(bool(np.isfinite(np.asarray(x)).all()) for x in jax.tree_util.tree_leaves(tree)
               if jnp.issubdtype(x.dtype, jnp.inexact))


# ------------------------------------------------------------------------ one writer per log


def test_a_second_metrics_log_on_a_file_being_written_is_refused_and_the_writer_keeps_every_row(tmp_path):
    path = tmp_path / "m.jsonl"
    writer = start(tmp_path, "hold-log", path)
    try:
        expect_line(writer, "ready")
        with pytest.raises(BlockingIOError, match=rf"path: the metrics log .*m.jsonl' is open for writing by "
                           rf"process {writer.pid} on .*use read_metrics\(path\) to read it"):
            rj.MetricsLog(path)
        assert [r["step"] for r in rj.read_metrics(path)] == [1]  # reading is fine meanwhile
        for n in range(2, 6):
            writer.stdin.write(f"row {n}\n")
            writer.stdin.flush()
            expect_line(writer, f"wrote {n}")
    finally:
        writer.stdin.close()
        assert writer.wait(timeout=120) == 0
    assert [r["step"] for r in rj.read_metrics(path)] == [1, 2, 3, 4, 5]
    assert sorted(os.listdir(tmp_path)) == ["m.jsonl"]  # the lock file went with the writer
    with rj.MetricsLog(path) as log:  # and the next writer may open it
        assert len(log.rows) == 5
        with pytest.raises(BlockingIOError, match=rf"by process {os.getpid()} "):
            rj.MetricsLog(path)  # in this process too


def test_a_row_the_disk_cannot_take_is_an_error_naming_the_path_and_is_neither_kept_nor_half_written(tmp_path):
    path = tmp_path / "full.jsonl"
    proc = start(tmp_path, "fsize", path, 150)  # files may grow to 150 bytes, as on a full disk
    out, _ = proc.communicate(timeout=120)
    assert proc.returncode == 0
    report = json.loads(out.strip().splitlines()[-1])
    assert report["error"] is not None
    assert f"cannot append the row of step {len(report['rows']) + 1} to the metrics log '{path}'" in report["error"]
    assert "File too large" in report["error"]
    text = path.read_text()
    assert text.endswith("\n") and len(text.encode()) <= 150
    assert [r["step"] for r in rj.read_metrics(path)] == report["rows"]  # memory == file


# ------------------------------------------------------------------ one writer per checkpoint dir


def test_a_second_writer_of_a_checkpoint_directory_is_refused_naming_the_holder(tmp_path):
    directory = tmp_path / "ck"
    writer = start(tmp_path, "hold-ckpt", directory)
    try:
        expect_line(writer, "ready")
        other = rj.Checkpoints(directory)
        restored, _ = other.restore({"w": jnp.zeros(3)})  # reading needs no lock
        np.testing.assert_array_equal(np.asarray(restored["w"]), [0.0, 1.0, 2.0])
        with pytest.raises(BlockingIOError, match=rf"directory: .*ck is being written by another Checkpoints, "
                           rf"process {writer.pid} on "):
            other.save({"w": jnp.ones(3)}, step=2)
        step, fresh = quadratic_setup()
        calls = []
        with pytest.raises(BlockingIOError, match=rf"process {writer.pid}"):
            rj.fit(step, fresh(), lambda i: jnp.ones(3), 4, checkpoints=other, callback=lambda *a: calls.append(a))
        assert calls == [] and other.steps == [1]
    finally:
        writer.stdin.close()
        assert writer.wait(timeout=120) == 0
    other.save({"w": jnp.ones(3)}, step=2)  # the writer is gone: this one may write
    other.close()
    assert sorted(os.listdir(directory)) == ["1", "2"]


# --------------------------------------------------------------------------- non-finite updates


def test_an_update_that_makes_params_non_finite_is_skipped_and_counted():
    schedule = lambda count: jnp.where(count >= 3, jnp.inf, 0.1)  # Inf from the 4th update on
    step, fresh = quadratic_setup(schedule)
    state, flags = fresh(), []
    for _ in range(6):
        state, metrics = step(state, jnp.ones(3))
        flags.append(bool(metrics["skipped"]))
    assert flags == [False, False, False, True, True, True] and int(state.skipped) == 3
    # SGD on (p - 1)^2 with lr 0.1: p <- p - 0.2 (p - 1), three times from 0
    expected = np.float32(0.0)
    for _ in range(3):
        expected = expected - np.float32(0.1) * (np.float32(2) * (expected - np.float32(1)))
    np.testing.assert_allclose(np.asarray(state.params), np.full(3, expected), rtol=1e-6)


def test_fit_never_saves_a_non_finite_state_nor_deletes_the_newest_finite_checkpoint(tmp_path):
    schedule = lambda count: jnp.where(count >= 3, jnp.inf, 0.1)
    step, fresh = quadratic_setup(schedule, skip_nonfinite=False)  # the guard is off: params go Inf
    with rj.Checkpoints(tmp_path, max_to_keep=2) as ckpt:
        with pytest.raises(FloatingPointError, match=r"state: holds NaN or Inf \(in params\) at step 4; it is not saved "
                           r"to .*, whose newest checkpoint \(step 2\) is kept"):
            rj.fit(step, fresh(), lambda i: jnp.ones(3), 12, checkpoints=ckpt, save_every=2)
        assert ckpt.steps == [2]
        restored, _ = ckpt.restore(fresh())
        assert int(restored.step) == 2 and all_finite(restored)


def test_keep_last_n_counts_finite_checkpoints_only(tmp_path):
    with rj.Checkpoints(tmp_path, max_to_keep=2) as ckpt:
        for n in (1, 2):
            ckpt.save({"w": jnp.full(2, float(n))}, step=n)
        for n in (3, 4, 5):
            with pytest.warns(RuntimeWarning, match=rf"state saved as step {n} in .* holds NaN or Inf"):
                ckpt.save({"w": jnp.array([n, np.nan])}, step=n)
        assert ckpt.steps == [1, 2, 3, 4, 5]  # the two newest finite ones stay
        with pytest.warns(RuntimeWarning, match=r"restored step 2 from .*skipping 3 newer ones \(step 5: it "
                          r"holds NaN or Inf; step 4: it holds NaN or Inf; step 3"):
            restored, _ = ckpt.restore({"w": jnp.zeros(2)})
        np.testing.assert_array_equal(np.asarray(restored["w"]), [2.0, 2.0])
        for n in (6, 7):
            ckpt.save({"w": jnp.full(2, float(n))}, step=n)
        assert ckpt.steps == [6, 7]


def test_a_learning_rate_not_finite_in_float32_is_an_error():
    for rate in (1e39, 1e-50):
        with pytest.raises(ValueError, match=rf"learning_rate: expected a positive number that is finite and "
                           rf"non-zero in float32.*got {re.escape(repr(rate))}"):
            rj.make_optimizer(rate)
    rj.make_optimizer(3e38)  # the largest float32 is about 3.4e38


def test_non_finite_initial_params_are_an_error_before_step_1(tmp_path):
    opt = rj.make_optimizer(0.1)
    with pytest.raises(ValueError, match=r"params: expected finite initial values, got NaN or Inf in params\['b'\]"):
        rj.init_train_state({"a": jnp.ones(2), "b": jnp.array([1.0, jnp.nan])}, opt, jax.random.key(0))
    step, fresh = quadratic_setup()
    state = fresh()
    state = state._replace(params=state.params.at[1].set(jnp.inf))
    calls = []
    with rj.Checkpoints(tmp_path) as ckpt:
        with pytest.raises(ValueError, match=r"state: expected finite params and optimiser state at step 0, got "
                           r"NaN or Inf in state.params$"):
            rj.fit(step, state, lambda i: jnp.ones(3), 3, checkpoints=ckpt, callback=lambda *a: calls.append(a))
        assert calls == [] and ckpt.steps == []


# --------------------------------------------------------------------------- checkpoint integrity


def _saved_run(tmp_path, name="ck"):
    """Checkpoints of steps 1, 2, 3 of distinct states; returns the directory and a template."""
    directory = tmp_path / name
    # w: 4 KiB of random bits, stored as a separate zstd chunk that zstd leaves raw (values up
    # to 1 KiB are inlined in OCDBT's checksummed tree nodes, where TensorStore sees a flip)
    state = {"w": jax.random.bits(jax.random.key(1), (32, 32)), "x": jnp.ones(3), "n": jnp.int32(0),
             "key": jax.random.key(0)}
    with rj.Checkpoints(directory, max_to_keep=None) as ckpt:
        for n in (1, 2, 3):
            ckpt.save({**state, "w": state["w"] * n, "n": jnp.int32(n)}, step=n, meta={"n": n})
    return directory, state


def _array_files(step_dir):
    """The data files of the OCDBT database of the arrays, smallest first."""
    return sorted(glob.glob(os.path.join(step_dir, "state", "**", "d", "*"), recursive=True), key=os.path.getsize)


def _flip_a_bit_of(step_dir, values):
    """Flip one bit in the middle of the stored bytes of ``values``, wherever they are stored
    (random data is stored as it is: zstd leaves incompressible data raw; a small array may be
    both in a per-process file and inline in the merged tree)."""
    raw, found = np.asarray(values).tobytes(), False
    for path in _array_files(step_dir):
        data = bytearray(open(path, "rb").read())
        at = data.find(raw)
        if at >= 0:
            data[at + len(raw) // 2] ^= 0x04
            open(path, "wb").write(bytes(data))
            found = True
    assert found, f"the bytes of the array are not in the files of {step_dir}"


def test_a_flipped_bit_in_array_data_is_detected_not_restored(tmp_path):
    directory, template = _saved_run(tmp_path)
    _flip_a_bit_of(directory / "3", template["w"] * 3)
    ckpt = rj.Checkpoints(directory)
    with pytest.raises(CheckpointIntegrityError, match=rf"step: the checkpoint of step 3 in {directory} is "
                       r"damaged: 1 of its 4 arrays differ from what was saved \(CRC-32 mismatch: w\)") as info:
        ckpt.restore(template, step=3)
    assert info.value.step == 3 and info.value.directory == str(directory)
    with pytest.warns(RuntimeWarning, match=rf"restored step 2 from {directory}, the newest intact checkpoint, "
                      r"skipping 1 newer one \(step 3: 1 of its 4 arrays differ"):
        restored, meta = ckpt.restore(template)
    assert meta == {"n": 2} and int(restored["n"]) == 2
    np.testing.assert_array_equal(np.asarray(restored["w"]), np.asarray(template["w"] * 2))
    # training on from step 2 saves step 3 again: the damaged one is moved aside, not overwritten
    with pytest.warns(RuntimeWarning, match=rf"moved the skipped checkpoint of step 3 aside to {directory}/3.damaged"):
        ckpt.save({**restored, "n": jnp.int32(3)}, step=3)
    assert ckpt.steps == [1, 2, 3] and sorted(os.listdir(directory)) == [".rnnjax-writer-0.lock", "1", "2", "3", "3.damaged"]
    assert int(ckpt.restore(template, step=3)[0]["n"]) == 3
    ckpt.close()


def _corrupt(step_dir, kind, root=False):
    """Damage a step folder; array-file damage hits the largest data file, or with ``root`` every
    file of the merged tree of the OCDBT database (which holds small arrays inline)."""
    files = glob.glob(os.path.join(step_dir, "state", "d", "*")) if root else _array_files(step_dir)[-1:]
    if kind == "truncated array file":
        for file in files:
            with open(file, "r+b") as f:
                f.truncate(os.path.getsize(file) // 2)
    elif kind == "deleted array file":
        for file in files:
            os.remove(file)
    elif kind == "garbage array file":
        size = os.path.getsize(files[-1])
        open(files[-1], "wb").write(bytes(random.Random(0).randrange(256) for _ in range(size)))
    elif kind == "deleted _METADATA":
        os.remove(os.path.join(step_dir, "state", "_METADATA"))
    elif kind == "garbage _METADATA":
        open(os.path.join(step_dir, "state", "_METADATA"), "wb").write(b"\xff\xfe\x00 not json")
    elif kind == "deleted state/":
        shutil.rmtree(os.path.join(step_dir, "state"))
    elif kind == "altered meta":
        open(os.path.join(step_dir, "meta", "metadata"), "w").write('{"n": 30}')
    elif kind == "deleted checksum record":
        shutil.rmtree(os.path.join(step_dir, "integrity"))
    else:
        raise AssertionError(kind)


DAMAGE = {  # the array files also hold the arrays' zarr metadata: which read fails first varies
    "truncated array file": "(its files|the metadata of its arrays) cannot be read",
    "deleted array file": "(its files|the metadata of its arrays) cannot be read",
    "garbage array file": "(its files|the metadata of its arrays) cannot be read",
    "deleted _METADATA": "the metadata of its arrays cannot be read",
    "garbage _METADATA": "the metadata of its arrays cannot be read",
    "deleted state/": "the metadata of its arrays cannot be read",
    "altered meta": r"its meta dict differs from what was saved \(CRC-32 mismatch\)",
    "deleted checksum record": "its checksum record integrity/ cannot be read",
}


@pytest.mark.parametrize("kind", list(DAMAGE))
def test_a_damaged_checkpoint_is_an_error_naming_step_and_directory_and_restore_falls_back(tmp_path, kind):
    directory, template = _saved_run(tmp_path)
    _corrupt(directory / "3", kind)
    ckpt = rj.Checkpoints(directory)
    with pytest.raises(CheckpointIntegrityError,
                       match=rf"step: the checkpoint of step 3 in {directory} is damaged: {DAMAGE[kind]}"):
        ckpt.restore(template, step=3)
    with pytest.warns(RuntimeWarning, match=rf"restored step 2 from {directory}, the newest intact checkpoint, "
                      rf"skipping 1 newer one \(step 3: {DAMAGE[kind]}"):
        _, meta = ckpt.restore(template)
    assert meta == {"n": 2}
    assert ckpt.steps == [1, 2, 3]  # a reader changes nothing


def test_restore_without_any_intact_checkpoint_names_each_failure(tmp_path):
    directory, template = _saved_run(tmp_path)
    for n, kind in ((1, "deleted state/"), (2, "altered meta"), (3, "garbage _METADATA")):
        _corrupt(directory / str(n), kind)
    with pytest.raises(CheckpointIntegrityError, match=r"step: no intact checkpoint to restore in .*ck "
                       r"\(step 3: the metadata .*; step 2: its meta dict .*; step 1: the metadata"):
        rj.Checkpoints(directory).restore(template)


def test_a_symlinked_step_folder_is_no_step_and_is_never_deleted(tmp_path):
    with rj.Checkpoints(tmp_path / "ck", max_to_keep=1) as ckpt:
        ckpt.save({"w": jnp.ones(2)}, step=10)
    os.symlink(tmp_path / "ck" / "10", tmp_path / "ck" / "20")  # e.g. a user's alias of a good step
    with rj.Checkpoints(tmp_path / "ck", max_to_keep=1) as ckpt:
        assert ckpt.steps == [10]
        for n in (30, 40):
            ckpt.save({"w": jnp.full(2, float(n))}, step=n)
        assert ckpt.steps == [40]
    assert sorted(os.listdir(tmp_path / "ck")) == ["20", "40"] and os.path.islink(tmp_path / "ck" / "20")


def test_tilde_is_expanded_in_paths(tmp_path, monkeypatch):
    monkeypatch.setenv("HOME", str(tmp_path))
    with rj.Checkpoints("~/ck") as ckpt, rj.MetricsLog("~/m.jsonl") as log:
        assert ckpt.directory == str(tmp_path / "ck") and log.path == str(tmp_path / "m.jsonl")
        ckpt.save({"w": jnp.ones(2)}, step=1)
        log.write(1, {"loss": 1.0})
    assert rj.read_metrics("~/m.jsonl") == [{"step": 1, "loss": 1.0}]
    (tmp_path / "v.txt").write_text("a 1.0 2.0\n")
    assert rj.load_vectors("~/v.txt", ["a"], key=jax.random.key(0)).table.shape == (1, 2)
    assert not os.path.exists("~")


# --------------------------------------------------------------------- resuming after failures


def test_a_rerun_after_a_crash_before_the_first_checkpoint_starts_afresh(tmp_path):
    step, fresh = quadratic_setup()
    data = lambda i: jnp.full(3, float(i))

    def crash_at_2(n, state, metrics):
        if n == 2:
            raise KeyboardInterrupt  # the run dies after logging step 2, before its first save (step 3)

    with rj.Checkpoints(tmp_path / "ck") as ckpt, rj.MetricsLog(tmp_path / "m.jsonl") as log:
        with pytest.raises(KeyboardInterrupt):
            rj.fit(step, fresh(), data, 6, checkpoints=ckpt, save_every=3, log=log, callback=crash_at_2)
        assert ckpt.steps == [] and [r["step"] for r in log.rows] == [1, 2]
    with rj.Checkpoints(tmp_path / "ck") as ckpt, rj.MetricsLog(tmp_path / "m.jsonl") as log:
        with pytest.warns(RuntimeWarning, match=r"fit: dropped the rows after step 0 of .*m.jsonl: the run that "
                          r"logged them stopped before its first checkpoint"):
            final = rj.fit(step, fresh(), data, 6, checkpoints=ckpt, save_every=3, log=log)
        assert ckpt.steps == [3, 6]
    with rj.MetricsLog(tmp_path / "ref.jsonl") as ref_log:
        reference = rj.fit(step, fresh(), data, 6, log=ref_log)
    np.testing.assert_array_equal(np.asarray(final.params), np.asarray(reference.params))
    assert rj.read_metrics(tmp_path / "m.jsonl") == rj.read_metrics(tmp_path / "ref.jsonl")


def test_fit_resumes_from_the_newest_intact_checkpoint_and_sets_the_damaged_ones_aside(tmp_path):
    made = _fault_script.make()
    _fault_script.train(str(tmp_path / "ref"), 12, quiet=True, made=made)  # checkpoints 10 and 12
    reference = _fault_script.train(str(tmp_path / "ref16"), 16, quiet=True, made=made)
    saved, _ = rj.Checkpoints(tmp_path / "ref" / "ckpt").restore(made[1](), step=12)
    for kind in ("truncated array file", "deleted array file", "flipped bit"):
        run = tmp_path / kind.replace(" ", "-")
        shutil.copytree(tmp_path / "ref", run)
        if kind == "flipped bit":
            _flip_a_bit_of(run / "ckpt" / "12", saved.opt_state[1][0].mu["cell"].w_hh)
        else:
            _corrupt(run / "ckpt" / "12", kind, root=True)
        with pytest.warns(RuntimeWarning) as caught:
            final = _fault_script.train(str(run), 16, quiet=True, made=made)
        said = [str(w.message) for w in caught]
        assert any(f"restored step 10 from {run / 'ckpt'}, the newest intact checkpoint, skipping 1 newer one "
                   "(step 12: " in m for m in said), said
        assert any(f"moved the skipped checkpoint of step 12 aside to {run / 'ckpt' / '12.damaged'}" in m
                   for m in said), said
        assert sorted(os.listdir(run / "ckpt")) == [".rnnjax-run.json", "12.damaged", "14", "16"]
        for a, b in zip(jax.tree_util.tree_leaves(final), jax.tree_util.tree_leaves(reference), strict=True):
            if jax.dtypes.issubdtype(a.dtype, jax.dtypes.prng_key):
                a, b = jax.random.key_data(a), jax.random.key_data(b)
            np.testing.assert_array_equal(np.asarray(a), np.asarray(b))  # bitwise
        assert rj.read_metrics(run / "metrics.jsonl") == rj.read_metrics(tmp_path / "ref16" / "metrics.jsonl")


def _kill_and_resume(tmp_path, kills, seed):
    """Run the training child until it has been SIGKILLed ``kills`` times at random points, then
    to the end. Every third kill comes from the child itself right after a save was handed to
    the background writer (so it lands while that save is being written); the others from the
    parent right after a random event line (``step N``, ``data N`` or ``saved N``). The points
    are chosen by the lines the child printed, never by waiting. Returns the history, one
    ``(how, rc, last line, unfinished saves left)`` per run."""
    rng = random.Random(seed)
    every = _fault_script.SAVE_EVERY
    steps = every * (kills + 2)
    run, history, seen = tmp_path / "run", [], 0  # seen: the last number the child printed
    while True:
        killed = sum(rc == -signal.SIGKILL for _, rc, _, _ in history)
        finishing = killed >= kills
        # Points a few steps around where the last run was killed (a point before the resumed
        # step means: at once), so that the kills spread over the run, but never in its last
        # steps: every kill leaves the run unfinished, and the last run has steps to do.
        last = steps - 2
        saves_ahead = list(range(every * (seen // every + 1), min(seen + 6, last) + 1, every))
        pick_save, pick_kind, pick_at = rng.choice(saves_ahead or [last]), rng.choice(["step", "data", "saved"]), \
            rng.randint(max(1, seen - 1), min(seen + 4, last))
        extra, event = [], None
        if not finishing and killed % 3 == 2 and saves_ahead:
            extra = ["--die-after-save", pick_save]
        elif not finishing:
            event = (pick_kind, pick_at)
        proc = start(tmp_path, "train", run, steps, tmp_path / "final.npz", *extra)
        lines = []
        for line in proc.stdout:
            kind, n = line.split()
            lines.append((kind, int(n)))
            if event is not None and ((kind == event[0] and int(n) >= event[1]) or int(n) >= last):
                proc.send_signal(signal.SIGKILL)
                break
        proc.stdout.close()
        rc = proc.wait(timeout=300)
        unfinished = len(glob.glob(str(run / "ckpt" / "*.orbax-checkpoint-tmp*")))
        history.append((extra or event, rc, lines[-1] if lines else None, unfinished))
        if finishing:
            assert rc == 0, history
            return history
        assert rc == -signal.SIGKILL and lines, history
        seen = lines[-1][1]


def _check_equal_to_an_uninterrupted_run(tmp_path, kills):
    steps = _fault_script.SAVE_EVERY * (kills + 2)
    reference = _fault_script.train(str(tmp_path / "ref"), steps, quiet=True)
    got = np.load(tmp_path / "final.npz")
    expected = jax.tree_util.tree_leaves(reference.params)
    assert int(got["step"]) == steps and int(got["skipped"]) == int(reference.skipped) == 1  # the NaN batch
    for i, leaf in enumerate(expected):
        np.testing.assert_array_equal(got[f"arr_{i}"], np.asarray(leaf))  # bitwise
    assert rj.read_metrics(tmp_path / "run" / "metrics.jsonl") == rj.read_metrics(tmp_path / "ref" / "metrics.jsonl")


def test_sigkill_at_random_points_then_resume_is_bitwise_equal_to_an_uninterrupted_run(tmp_path):
    history = _kill_and_resume(tmp_path, kills=10, seed=14)
    assert sum(bool(how) and how[0] == "--die-after-save" for how, *_ in history) >= 3, history  # in a save
    _check_equal_to_an_uninterrupted_run(tmp_path, kills=10)
    print("kills:", history)


@pytest.mark.slow
def test_many_sigkills_at_random_points_then_resume_is_bitwise_equal(tmp_path):
    history = _kill_and_resume(tmp_path, kills=30, seed=2026)
    assert sum(bool(how) and how[0] == "--die-after-save" for how, *_ in history) >= 8, history
    _check_equal_to_an_uninterrupted_run(tmp_path, kills=30)
    print("kills:", history)


# ----------------------------------------------------------------------- labels and ids under jit


def test_out_of_range_labels_under_jit_make_the_loss_nan_and_the_step_is_skipped():
    logits = jax.random.normal(jax.random.key(0), (3, 2, 4))
    seq = jax.jit(lambda lg, lb: rj.sequence_cross_entropy(lg, lb, lengths=jnp.array([3, 2])))
    good = np.array([[1, 2], [0, 3], [3, 99]])  # 99 is padding: never looked at
    lg = np.asarray(logits, np.float64)
    logp = lg - np.log(np.exp(lg).sum(-1, keepdims=True))
    want = -np.mean([logp[t, b, good[t, b]] for t in range(3) for b in range(2) if (t, b) != (2, 1)])
    np.testing.assert_allclose(float(seq(logits, good)), want, rtol=1e-5)
    for bad in (-1, -4, 4):
        labels = good.copy()
        labels[1, 0] = bad
        assert np.isnan(float(seq(logits, labels))), bad
        assert np.isnan(float(jax.jit(rj.classification_cross_entropy)(logits[0], jnp.array([1, bad]))))
        assert np.isnan(float(jax.jit(rj.sequence_accuracy)(logits, labels)))
    # inside a train step: skipped, params untouched
    opt = rj.make_optimizer(0.1)
    w = jax.random.normal(jax.random.key(1), (5, 4))
    step = rj.make_train_step(lambda p, batch, key: rj.classification_cross_entropy(batch[0] @ p, batch[1]), opt)
    state, metrics = step(rj.init_train_state(w, opt, jax.random.key(0)), (jnp.ones((2, 5)), jnp.array([2, -1])))
    assert bool(metrics["skipped"]) and int(state.skipped) == 1
    np.testing.assert_array_equal(np.asarray(state.params), np.asarray(w))
    # token ids, negative ones included, read rows of NaN under jit
    rows = jax.jit(rj.embedding_lookup)(jnp.arange(6.0).reshape(3, 2), jnp.array([-1, 3, 1]))
    assert np.isnan(np.asarray(rows[:2])).all()
    np.testing.assert_array_equal(np.asarray(rows[2]), [2.0, 3.0])


# ------------------------------------------------------------------------------ pretrained vectors


def test_load_vectors_rejects_non_finite_values_naming_path_and_line(tmp_path):
    for bad in ("nan", "inf", "-Infinity"):
        path = tmp_path / f"{bad}.txt"
        path.write_text(f"the 0.1 0.2\ncat 0.3 {bad}\n")
        with pytest.raises(ValueError, match=rf"{path}:2: expected finite numbers in the vector of 'cat', got {bad}"):
            rj.load_vectors(path, ["the", "cat", "dog"], key=jax.random.key(0))


def test_load_vectors_checks_the_header_dimension_and_names_a_binary_file(tmp_path):
    path = tmp_path / "header.txt"
    path.write_text("2 1\nthe 0.1 0.2\ncat 0.3 0.4\n")
    with pytest.raises(ValueError, match=rf"{path}:2: the word2vec header \(line 1\) gives vectors of 1 numbers, "
                       r"but this line has 2 numbers after its word"):
        rj.load_vectors(path, ["the", "cat"], key=jax.random.key(0))
    binary = tmp_path / "vectors.bin"
    binary.write_bytes(b"2 3\nthe " + struct.pack("<3f", -1e-3, 2.5e7, -3.75) + b"\ncat "
                       + struct.pack("<3f", 0.5, -1.5e-30, 9e9) + b"\n")
    with pytest.raises(ValueError, match=rf"path: expected a text file of word vectors in utf-8, got '{binary}', "
                       r"which is not utf-8 text .*a binary word2vec file must be converted"):
        rj.load_vectors(binary, ["the", "cat"], key=jax.random.key(0))


# ----------------------------------------------------------------------------------- decoding


def _uniform_lm():
    table = jnp.zeros((3, 1))

    def step(params, state, token):  # logits from an embedding, so a bad id reads NaN
        return state, jnp.log(jnp.array([0.2, 0.3, 0.5])) + rj.embedding_lookup(table, token)
    return step


def test_sample_under_jit_marks_a_bad_temperature_or_start_with_minus_one():
    step = _uniform_lm()
    run = jax.jit(lambda t, s: rj.sample(step, None, jnp.zeros(2), s, jax.random.key(0), max_len=4, temperature=t))
    tokens, lengths = run(jnp.float32(1.0), jnp.array([0, 1]))
    assert (np.asarray(tokens) >= 0).all() and lengths.tolist() == [4, 4]
    for temp in (0.0, -1.0, np.inf, np.nan):
        tokens, lengths = run(jnp.float32(temp), jnp.array([0, 1]))
        assert (np.asarray(tokens) == -1).all() and lengths.tolist() == [0, 0], temp
    tokens, lengths = run(jnp.float32(1.0), jnp.array([0, 3]))  # id 3 is outside V = 3
    assert (np.asarray(tokens[:, 1]) == -1).all() and (np.asarray(tokens[:, 0]) >= 0).all()
    assert lengths.tolist() == [4, 0]


def test_sample_rejects_an_infinite_temperature():
    with pytest.raises(ValueError, match="temperature: expected a finite float > 0, got inf"):
        rj.sample(_uniform_lm(), None, jnp.zeros(2), jnp.array([0, 1]), jax.random.key(0), max_len=2,
                  temperature=float("inf"))


# ------------------------------------------------------------------------------- loss functions


def test_a_loss_returning_a_tuple_without_has_aux_gets_a_hint():
    step, fresh = quadratic_setup()
    opt = rj.make_optimizer(0.1)
    bad = rj.make_train_step(lambda p, batch, key: (jnp.sum(p**2), {}), opt)
    with pytest.raises(TypeError, match=r"loss_fn: expected a scalar floating-point loss, got a tuple of 2; for a "
                       r"loss_fn that returns \(loss, aux\) pass has_aux=True to make_train_step"):
        bad(fresh(), None)
