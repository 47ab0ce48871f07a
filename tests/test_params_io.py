"""save_params / load_params: safetensors files that round-trip any params tree exactly."""

import json
import os
import struct

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import rnnjax as rj
from rnnjax.params_io import load_params, save_params

safetensors = pytest.importorskip("safetensors", reason="needs safetensors: pip install -e .")


@pytest.fixture(scope="module")
def params():
    """A deep bidirectional model's params: nested tuples, BiParams and NamedTuples."""
    model = rj.deep(rj.bidirectional(rj.lstm(3, 4), rj.gru(3, 4)), rj.elman(8, 2))
    return model.init(jax.random.key(0))


def header(path):
    """The safetensors JSON header, read by hand (the format is 8 bytes of length, then JSON)."""
    with open(path, "rb") as f:
        (n,) = struct.unpack("<Q", f.read(8))
        return json.loads(f.read(n))


def test_round_trip_is_exact_and_keeps_the_tree(tmp_path, params):
    path = tmp_path / "p.safetensors"
    save_params(path, params)
    restored = load_params(path, params)
    assert jax.tree_util.tree_structure(restored) == jax.tree_util.tree_structure(params)
    for a, b in zip(jax.tree_util.tree_leaves(restored), jax.tree_util.tree_leaves(params), strict=True):
        assert a.dtype == b.dtype and np.array_equal(np.asarray(a), np.asarray(b))
    # a plain safetensors file: tensors named by tree path, metadata with the structure and version
    meta = header(path)["__metadata__"]
    assert meta["rnnjax_version"] == rj.__version__
    assert json.loads(meta["paths"])[0] == "[0].fwd.w_ih"
    assert "LSTMParams" in meta["treedef"]
    with safetensors.safe_open(str(path), framework="numpy") as f:
        np.testing.assert_array_equal(f.get_tensor("[1].w_hh"), np.asarray(params[1].w_hh))


def test_abstract_template_and_mixed_dtypes(tmp_path):
    tree = {"w": jnp.arange(6.0, dtype=jnp.bfloat16).reshape(2, 3) / 3, "n": jnp.arange(3),
            "half": jnp.ones(2, jnp.float16) / 3, "flag": jnp.array([True, False])}
    path = tmp_path / "p.safetensors"
    save_params(path, tree)
    assert header(path)["['w']"]["dtype"] == "BF16"
    restored = load_params(path, jax.eval_shape(lambda: tree))
    for k in tree:
        assert restored[k].dtype == tree[k].dtype, k
        np.testing.assert_array_equal(np.asarray(restored[k]), np.asarray(tree[k]))
    # NumPy leaves (float64 too) stay NumPy
    save_params(path, {"np": np.arange(2.0)})
    restored = load_params(path, {"np": np.zeros(2)})["np"]
    assert isinstance(restored, np.ndarray) and restored.dtype == np.float64


def test_mismatches_name_the_first_leaf(tmp_path, params):
    path = tmp_path / "p.safetensors"
    save_params(path, params)
    other = rj.deep(rj.bidirectional(rj.lstm(3, 5), rj.gru(3, 4)), rj.elman(8, 2)).init(jax.random.key(0))
    with pytest.raises(ValueError, match=r"leaf \[0\]\.fwd\.w_ih: expected shape \(3, 20\) and dtype "
                                         r"float32 \(from the template\), found shape \(3, 16\)"):
        load_params(path, other)
    as_bf16 = jax.tree_util.tree_map(lambda a: a.astype(jnp.bfloat16), params)
    with pytest.raises(ValueError, match=r"leaf \[0\]\.fwd\.w_ih: expected .* dtype bfloat16 .* found .* float32"):
        load_params(path, as_bf16)
    with pytest.raises(ValueError, match=r"leaf \[2\]\.w_ih: in the template but not in the file"):
        load_params(path, params + (params[1],))
    # a dict in place of the NamedTuple: other paths (dict leaves come sorted, ['b'] first)
    with pytest.raises(ValueError, match=r"leaf \[1\]\['b'\]: in the template but not in the "
                                         r"file; the file holds \[1\]\.w_ih instead"):
        load_params(path, params[:1] + (params[1]._asdict(),))
    save_params(path, params + (params[1],))
    with pytest.raises(ValueError, match=r"leaf \[2\]\.w_ih: in the file but not in the template"):
        load_params(path, params)
    # same paths, shapes and dtypes, but another cell: a GRU's params are not the reset-before GRU's
    gru = rj.gru(3, 4).init(jax.random.key(0))
    save_params(path, gru)
    with pytest.raises(ValueError, match="tree types differ.*GRUParams.*GRUResetBeforeParams"):
        load_params(path, rj.GRUResetBeforeParams(*gru))


def test_files_that_are_not_params_files(tmp_path, params):
    bad = tmp_path / "notes.txt"
    bad.write_text("hello, not tensors")
    with pytest.raises(ValueError, match=f"{bad}: not a params file"):
        load_params(bad, params)
    foreign = tmp_path / "foreign.safetensors"
    foreign.write_bytes(safetensors.numpy.save({"x": np.ones(2, np.float32)}))
    with pytest.raises(ValueError, match=f"{foreign}: a safetensors file without rnnjax params metadata"):
        load_params(foreign, params)
    with pytest.raises(FileNotFoundError, match="missing.safetensors"):
        load_params(tmp_path / "missing.safetensors", params)


def test_refused_leaves_and_atomic_save(tmp_path, params, monkeypatch):
    path = tmp_path / "p.safetensors"
    save_params(path, params)
    before = path.read_bytes()
    with pytest.raises(TypeError, match=r"params\['key'\]: a typed PRNG key.*key_data"):
        save_params(path, {"w": jnp.ones(2), "key": jax.random.key(0)})
    with pytest.raises(TypeError, match=r"params\['f'\]: expected an array or a number, got function"):
        save_params(path, {"w": jnp.ones(2), "f": lambda: 0})
    assert path.read_bytes() == before  # failed saves leave the old file intact
    assert sorted(os.listdir(tmp_path)) == ["p.safetensors"]  # and no temporary files behind

    # a failure while writing (here: the file system refuses the rename) leaves no trace either
    def failing_replace(src, dst):
        raise OSError("disk full")

    monkeypatch.setattr(os, "replace", failing_replace)
    with pytest.raises(OSError, match="disk full"):
        save_params(path, {"w": jnp.zeros(3)})
    monkeypatch.undo()
    assert path.read_bytes() == before
    assert sorted(os.listdir(tmp_path)) == ["p.safetensors"]
