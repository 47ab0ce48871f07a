"""Plain parameter files: any params pytree to one safetensors file and back.

``save_params(path, params)`` writes every leaf as a tensor named by its path in the tree
(``[0].fwd.w_ih``), with the tree's structure, the leaf paths and the rnnjax version in the
file's metadata; no pickle is involved, so a file from anyone is safe to open, and other tools
(``safetensors.safe_open``, the Hugging Face hub viewers) read it as plain tensors.
``load_params(path, template)`` reads it back into the structure of ``template`` (for instance
``model.init(key)`` or ``jax.eval_shape(model.init, key)``), checking paths, shapes and dtypes
leaf by leaf. For training state with an optimiser, resumable runs and several steps, use
``rnnjax.Checkpoints`` (Orbax) instead.
"""

from __future__ import annotations

import json
import os
import tempfile
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

__all__ = ["save_params", "load_params"]

_FORMAT = "rnnjax.params"
_FORMAT_VERSION = "1"


def _flatten(tree: Any, name: str) -> tuple[list[str], list[Any], Any]:
    leaves_with_paths, treedef = jax.tree_util.tree_flatten_with_path(tree)
    paths = [jax.tree_util.keystr(p) for p, _ in leaves_with_paths]
    leaves = [leaf for _, leaf in leaves_with_paths]
    for path, leaf in zip(paths, leaves, strict=True):
        dtype = getattr(leaf, "dtype", None)
        if dtype is not None and jnp.issubdtype(dtype, jax.dtypes.prng_key):
            raise TypeError(
                f"{name}{path}: a typed PRNG key has no plain tensor form; store "
                "jax.random.key_data(key) instead (and jax.random.wrap_key_data after loading)"
            )
    return paths, leaves, treedef


def _host(path: str, leaf: Any, name: str) -> np.ndarray:
    if not hasattr(leaf, "dtype") and not isinstance(leaf, (bool, int, float, complex, np.generic)):
        raise TypeError(f"{name}{path}: expected an array or a number, got {type(leaf).__name__}")
    a = np.asarray(jax.device_get(leaf if hasattr(leaf, "dtype") else jnp.asarray(leaf)))
    if a.dtype == object:
        raise TypeError(f"{name}{path}: expected an array or a number, got {type(leaf).__name__}")
    return np.ascontiguousarray(a)


def save_params(path: str | os.PathLike, params: Any) -> None:
    """Write ``params`` (any pytree of arrays) to ``path`` as one safetensors file.

    The file is written next to ``path`` under a temporary name and moved over it only when
    complete, so a failed save never leaves a truncated file or harms an existing one.
    bfloat16 and float16 leaves keep their dtype. Typed PRNG keys (``jax.random.key``) are
    refused: store ``jax.random.key_data(key)``.

    >>> import tempfile, os
    >>> params = rj.lstm(3, 4).init(jax.random.key(0))
    >>> path = os.path.join(tempfile.mkdtemp(), "lstm.safetensors")
    >>> save_params(path, params)
    >>> restored = load_params(path, params)
    >>> bool((restored.w_ih == params.w_ih).all())
    True
    """
    import safetensors.numpy

    path = os.fspath(path)
    paths, leaves, treedef = _flatten(params, "params")
    tensors = {p: _host(p, leaf, "params") for p, leaf in zip(paths, leaves, strict=True)}
    import rnnjax

    metadata = {
        "format": _FORMAT,
        "format_version": _FORMAT_VERSION,
        "rnnjax_version": rnnjax.__version__,
        "treedef": str(treedef),
        "paths": json.dumps(paths),
    }
    data = safetensors.numpy.save(tensors, metadata=metadata)
    directory = os.path.dirname(os.path.abspath(path))
    fd, tmp = tempfile.mkstemp(prefix=".tmp-", suffix=".safetensors", dir=directory)
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.remove(tmp)
        raise


def _describe(a) -> str:
    return f"shape {tuple(a.shape)} and dtype {jnp.dtype(a.dtype)}"


def load_params(path: str | os.PathLike, template: Any) -> Any:
    """Read a ``save_params`` file into the structure of ``template``.

    ``template`` gives the tree (NamedTuples, tuples, dicts), every leaf's path, shape and
    dtype: real params or ``jax.eval_shape(model.init, key)``. Leaves come back as jax arrays
    (NumPy arrays where the template has NumPy arrays).
    Raises ``ValueError`` naming ``path`` for a file that is not a params file, and naming the
    first leaf that differs (missing, extra, other shape or dtype) otherwise.

    >>> import tempfile, os
    >>> path = os.path.join(tempfile.mkdtemp(), "p.safetensors")
    >>> save_params(path, {"w": jnp.ones((2, 3))})
    >>> load_params(path, {"w": jnp.zeros((3, 2))})
    Traceback (most recent call last):
      ...
    ValueError: ...: leaf ['w']: expected shape (3, 2) and dtype float32 (from the template), found shape (2, 3) and dtype float32
    """
    from safetensors import safe_open

    path = os.fspath(path)
    t_paths, t_leaves, treedef = _flatten(template, "template")
    if not os.path.exists(path):
        raise FileNotFoundError(f"path: no file {path!r}")
    try:
        with safe_open(path, framework="numpy") as f:
            metadata = f.metadata() or {}
            keys = set(f.keys())
            is_params = metadata.get("format") == _FORMAT
            stored_paths = json.loads(metadata["paths"]) if is_params else []
            tensors = {p: f.get_tensor(p) for p in stored_paths if p in keys}
    except Exception as e:  # safetensors raises its own error types for a damaged file
        raise ValueError(f"{path}: not a params file (cannot be read as safetensors: {e})") from None
    if not is_params:
        raise ValueError(
            f"{path}: a safetensors file without rnnjax params metadata (not written by "
            "rnnjax.save_params)"
        )
    missing = [p for p in stored_paths if p not in tensors]
    if missing:
        raise ValueError(f"{path}: damaged params file: leaf {missing[0]} is listed but not stored")
    stored = set(stored_paths)
    for p in t_paths:
        if p not in stored:
            extra = [q for q in stored_paths if q not in set(t_paths)]
            hint = f"; the file holds {extra[0]} instead" if extra else ""
            raise ValueError(f"{path}: leaf {p}: in the template but not in the file{hint}")
    if len(stored_paths) != len(t_paths):
        extra = next(q for q in stored_paths if q not in set(t_paths))
        raise ValueError(f"{path}: leaf {extra}: in the file but not in the template")
    out = []
    for p, leaf in zip(t_paths, t_leaves, strict=True):
        value = tensors[p]
        want = leaf if hasattr(leaf, "dtype") else jnp.asarray(leaf)
        if tuple(value.shape) != tuple(np.shape(want)) or jnp.dtype(value.dtype) != jnp.dtype(want.dtype):
            raise ValueError(
                f"{path}: leaf {p}: expected {_describe(want)} (from the template), found {_describe(value)}"
            )
        out.append(value if isinstance(leaf, np.ndarray) else jnp.asarray(value))
    if metadata.get("treedef") != str(treedef):
        raise ValueError(
            f"{path}: the leaves match but the tree types differ (e.g. GRUParams against "
            f"GRUResetBeforeParams): the file holds {metadata.get('treedef')}, the template is {treedef}"
        )
    return jax.tree_util.tree_unflatten(treedef, out)
