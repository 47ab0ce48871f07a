"""Data-parallel training with ``jax.sharding``: batch split over a device mesh, params replicated.

Nothing here replaces the train step: the step from ``make_train_step`` is jitted, and jit
compiles it for the shardings of its inputs (computation follows data). Put the state on the
mesh replicated (:func:`replicate`) and each batch split along its batch axis
(:func:`shard_batch`); XLA then runs each device on its slice of the batch and sums the
gradients across devices (an all-reduce) — the same step, the same results up to float
round-off in the order of the sums.

On several processes (hosts), call ``jax.distributed.initialize(...)`` first in every process
and run the same program in each: ``jax.devices()`` then lists the devices of all processes,
:func:`data_mesh` spans them (process 0's devices first), :func:`replicate` builds the global
replicated arrays from each process's copy (``jax.make_array_from_callback``; every process must
hold the same values, which is checked), and :func:`shard_batch` takes each process's own part
of the batch (``jax.make_array_from_process_local_data``): the global batch is the processes'
parts concatenated in process order. Replicated results (the state, the metrics) can be read in
every process (``float(metrics["loss"])``, ``np.asarray(state.params[...])``).
"""

from __future__ import annotations

import zlib
from typing import Any

import jax
import numpy as np
from jax.experimental import multihost_utils
from jax.sharding import Mesh, NamedSharding, PartitionSpec

__all__ = ["data_mesh", "replicate", "shard_batch"]


def data_mesh(devices: Any = None, *, axis_name: str = "data") -> Mesh:
    """A 1-D mesh over ``devices`` (default: all devices, of all processes) named ``axis_name``.

    The default orders the devices by process (in id order within each), so that the devices
    of each process are one contiguous block of the mesh and a batch split over it
    (:func:`shard_batch`) is the processes' parts in process order. Given ``devices`` are
    taken in the order given.

    >>> mesh = data_mesh()
    >>> mesh.axis_names, mesh.size == len(jax.devices())
    (('data',), True)
    """
    if devices is None:
        devices = sorted(jax.devices(), key=lambda d: d.process_index)  # stable: ids stay in order
    devices = list(devices)
    if not devices:
        raise ValueError("devices: expected at least one device, got none")
    if not isinstance(axis_name, str):
        raise TypeError(f"axis_name: expected a str, got {axis_name!r}")
    return Mesh(np.asarray(devices), (axis_name,))


def _check_mesh(mesh: Any) -> None:
    if not isinstance(mesh, Mesh):
        raise TypeError(f"mesh: expected a jax.sharding.Mesh (see data_mesh), got {type(mesh).__name__}")


def _host_copy(x: Any) -> np.ndarray:
    a = np.asarray(x)
    return a.astype(jax.dtypes.canonicalize_dtype(a.dtype), copy=False)


def _fingerprint(a: np.ndarray) -> int:
    data = np.ascontiguousarray(a).reshape(-1).view(np.uint8)
    return zlib.crc32(f"{a.dtype.str}{a.shape}".encode() + data.tobytes())


def _replicate_across_processes(tree: Any, sharding: NamedSharding) -> Any:
    leaves, treedef = jax.tree_util.tree_flatten_with_path(tree)
    host: list[Any] = []  # per leaf: None (already a global array) or (host copy, key impl or None)
    for _, x in leaves:
        if isinstance(x, jax.Array) and not x.is_fully_addressable:
            host.append(None)
        elif hasattr(x, "dtype") and jax.dtypes.issubdtype(x.dtype, jax.dtypes.prng_key):
            host.append((_host_copy(jax.random.key_data(x)), jax.random.key_impl(x)))
        else:
            host.append((_host_copy(x), None))
    # every process must pass the same tree: first its structure (a fixed-size message), then
    # one CRC-32 per leaf, gathered from all processes
    header = np.array([zlib.crc32(str(treedef).encode()), len(leaves)], np.uint32)
    headers = np.asarray(multihost_utils.process_allgather(header)).reshape(jax.process_count(), 2)
    differ = [p for p in range(1, headers.shape[0]) if (headers[p] != headers[0]).any()]
    if differ:
        raise ValueError(
            f"tree: process {differ[0]} passes a tree of another structure than process 0 "
            f"({int(headers[differ[0], 1])} leaves, process 0 {int(headers[0, 1])}); replicate expects "
            "the same tree in every process"
        )
    mine = np.array([0 if h is None else _fingerprint(h[0]) for h in host], np.uint32)
    if mine.size:
        every = np.asarray(multihost_utils.process_allgather(mine)).reshape(jax.process_count(), -1)
        for i, (path, _) in enumerate(leaves):
            differ = [p for p in range(1, every.shape[0]) if every[p, i] != every[0, i]]
            if differ:
                raise ValueError(
                    f"tree{jax.tree_util.keystr(path)}: process {differ[0]} holds a different value than "
                    "process 0; replicate expects the same values in every process (e.g. initialise them "
                    "from the same key)"
                )
    out = []
    for (_, x), h in zip(leaves, host, strict=True):
        if h is None:
            out.append(x if x.sharding == sharding else jax.device_put(x, sharding))
            continue
        a, impl = h
        y = jax.make_array_from_callback(a.shape, sharding, lambda index, a=a: a[index], dtype=a.dtype)
        out.append(y if impl is None else jax.random.wrap_key_data(y, impl=impl))
    return jax.tree_util.tree_unflatten(treedef, out)


def replicate(tree: Any, mesh: Mesh) -> Any:
    """Every array of ``tree`` copied to all devices of ``mesh`` (e.g. a ``TrainState``).

    When ``mesh`` spans several processes, every process calls this with its own copy of the
    tree; the copies must be equal (a ValueError names the first leaf that differs), and the
    result is one global array per leaf, replicated on every device of every process.

    >>> state = replicate({"w": jnp.ones(3)}, data_mesh())
    >>> state["w"].sharding.is_fully_replicated
    True
    """
    _check_mesh(mesh)
    sharding = NamedSharding(mesh, PartitionSpec())
    if all(d.process_index == jax.process_index() for d in mesh.devices.flat):
        return jax.device_put(tree, sharding)
    return _replicate_across_processes(tree, sharding)


def shard_batch(batch: Any, mesh: Mesh, *, axis: Any = 1) -> Any:
    """Split ``batch`` along its batch axis over the devices of a 1-D ``mesh``.

    Args:
      batch: a pytree of arrays: this process's part of the global batch (all of it on one
        host); with several processes, each passes its own rows, and the global batch is the
        parts in the order of the processes' devices in ``mesh``. NumPy arrays are fine.
      mesh: a 1-D mesh (see :func:`data_mesh`).
      axis: the batch axis of each leaf: an int for all leaves — ``1`` for time-major
        sequences ``[T, B, ...]``, ``0`` for ``[B, ...]`` — or a pytree matching ``batch`` with
        an int or None (replicate the leaf: every process passes the same values) per leaf,
        e.g. ``(1, 1, 0)`` for ``(xs, targets, lengths)``.

    Returns:
      The batch as global ``jax.Array`` instances sharded along ``axis``; the size of each batch axis
      must be divisible by the number of devices this process holds.

    >>> xs = shard_batch(jnp.ones((5, 8, 3)), data_mesh(), axis=1)   # [T, B, I], B split
    >>> xs.shape, xs.sharding.spec
    ((5, 8, 3), P(None, 'data', None))
    """
    _check_mesh(mesh)
    if len(mesh.axis_names) != 1:
        raise ValueError(f"mesh: expected a 1-D mesh (see data_mesh), got axes {mesh.axis_names}")
    (name,) = mesh.axis_names
    local = sum(d.process_index == jax.process_index() for d in mesh.devices.flat)
    leaves, treedef = jax.tree_util.tree_flatten_with_path(batch)
    if isinstance(axis, int) or axis is None:
        axes = [axis] * len(leaves)
    else:
        try:
            axes = treedef.flatten_up_to(axis)
        except (ValueError, TypeError) as e:
            raise ValueError(f"axis: expected an int or a pytree matching batch ({treedef}), got {axis!r}") from e

    out = []
    for (path, leaf), ax in zip(leaves, axes, strict=True):
        where = f"batch{jax.tree_util.keystr(path)}"
        if not hasattr(leaf, "shape"):
            raise TypeError(f"{where}: expected an array, got {type(leaf).__name__}")
        if ax is None:
            spec = PartitionSpec()
        else:
            if not isinstance(ax, int) or isinstance(ax, bool) or not -leaf.ndim <= ax < leaf.ndim:
                raise ValueError(f"axis: expected an axis of {where} (shape {tuple(leaf.shape)}), got {ax!r}")
            ax %= leaf.ndim
            if leaf.shape[ax] % local:
                raise ValueError(
                    f"{where}: the batch axis {ax} has size {leaf.shape[ax]}, expected a multiple of "
                    f"the {local} devices of this process"
                )
            spec = PartitionSpec(*([None] * ax + [name] + [None] * (leaf.ndim - ax - 1)))
        out.append(jax.make_array_from_process_local_data(NamedSharding(mesh, spec), leaf))
    return jax.tree_util.tree_unflatten(treedef, out)
