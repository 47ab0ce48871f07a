"""Checkpoints of a training state with Orbax: atomic saves, keep-last-N, exact resume.

:class:`Checkpoints` is a thin layer over ``orbax.checkpoint.CheckpointManager`` that saves any
pytree of arrays (a :class:`~rnnjax.TrainState` as it is: params, optimiser state, step, PRNG
key, skipped-step count, carry) plus a small JSON dict (e.g. a data iterator's position), and
restores them into the structure, dtypes and shardings of a template.

What it adds to Orbax: typed PRNG keys (``jax.random.key``) are stored as their key data and
wrapped back on restore; a step is never overwritten; only folders Orbax finished (those
holding its ``_CHECKPOINT_METADATA`` file) count as checkpoints, so other numbered folders in
the directory are neither listed, restored nor deleted; errors name the directory and step.
Orbax gives the rest: each save is written to a temporary directory and renamed only when
complete, so a crash (even ``SIGKILL``) mid-save leaves the last good checkpoint intact, and
only the newest ``max_to_keep`` checkpoints are kept.
"""

from __future__ import annotations

import dataclasses
import json
import os
from collections.abc import Iterator
from typing import Any

import jax
import jax.numpy as jnp
import orbax.checkpoint as ocp
from orbax.checkpoint import path as ocp_path

_MARKER = "_CHECKPOINT_METADATA"  # written by Orbax into every step folder it creates

__all__ = ["Checkpoints"]


def _is_key(x: Any) -> bool:
    return hasattr(x, "dtype") and jax.dtypes.issubdtype(x.dtype, jax.dtypes.prng_key)


def _storable(tree: Any) -> Any:
    """Typed PRNG keys -> their uint32 key data (Orbax stores plain arrays)."""
    return jax.tree_util.tree_map(lambda x: jax.random.key_data(x) if _is_key(x) else x, tree)


def _abstract(x: Any) -> Any:
    if _is_key(x):
        x = jax.random.key_data(x)
    if isinstance(x, jax.Array):
        return jax.ShapeDtypeStruct(x.shape, x.dtype, sharding=x.sharding)
    if hasattr(x, "shape") and hasattr(x, "dtype"):  # NumPy arrays, ShapeDtypeStructs
        return jax.ShapeDtypeStruct(x.shape, x.dtype, sharding=getattr(x, "sharding", None))
    return x


def _key_name(entry: Any) -> str:
    for attr in ("key", "idx", "name"):  # DictKey / FlattenedIndexKey, SequenceKey, GetAttrKey
        if hasattr(entry, attr):
            return str(getattr(entry, attr))
    return str(entry)


def _kind(dtype: Any) -> str | None:
    """The dtype's kind; restoring casts within a kind (float32 -> bfloat16), never across."""
    for kind, base in (
        ("bool", jnp.bool_),
        ("signed integer", jnp.signedinteger),
        ("unsigned integer", jnp.unsignedinteger),  # also the key data of typed PRNG keys
        ("floating", jnp.floating),
        ("complex", jnp.complexfloating),
    ):
        if jnp.issubdtype(dtype, base):
            return kind
    return None


def _shapes_by_path(tree: Any) -> dict[str, tuple]:
    """``{"params.w_ih": (shape, dtype), ...}`` over the array leaves, whatever the containers."""
    return {
        ".".join(_key_name(k) for k in path): (tuple(leaf.shape), getattr(leaf, "dtype", None))
        for path, leaf in jax.tree_util.tree_leaves_with_path(tree)
        if hasattr(leaf, "shape")
    }


def _mismatches(stored: dict[str, tuple], wanted: dict[str, tuple]) -> list[str]:
    out = []
    for path in sorted(set(stored) | set(wanted)):
        if path not in stored:
            out.append(f"{path}: in the template, not in the checkpoint")
        elif path not in wanted:
            out.append(f"{path}: in the checkpoint, not in the template")
        elif stored[path][0] != wanted[path][0]:
            out.append(f"{path}: checkpoint shape {stored[path][0]}, template shape {wanted[path][0]}")
        else:
            (_, have), (_, want) = stored[path], wanted[path]
            if have is not None and want is not None and _kind(have) != _kind(want):
                out.append(
                    f"{path}: checkpoint dtype {jnp.dtype(have).name} ({_kind(have)}), template dtype "
                    f"{jnp.dtype(want).name} ({_kind(want)}); only floating dtypes are cast into each other"
                )
    return out


@dataclasses.dataclass(frozen=True)
class _FinishedStepsOnly(ocp_path.step.NameFormat):
    """Orbax's standard step names (``10``, ``20``, ...), where only folders holding Orbax's
    ``_CHECKPOINT_METADATA`` count: a user's own ``1/`` folder is no step, so it is never
    listed, restored or deleted by ``max_to_keep``."""

    standard: Any = dataclasses.field(default_factory=ocp_path.step.standard_name_format)

    def build_name(self, step: int) -> str:
        return self.standard.build_name(step)

    def find_all(self, base_path: Any) -> Iterator[Any]:
        return (m for m in self.standard.find_all(base_path) if (m.path / _MARKER).is_file())

    def find_step(self, base_path: Any, step: int) -> Any:
        found = self.standard.find_step(base_path, step)
        if not (found.path / _MARKER).is_file():
            raise ValueError(f"{found.path} is not an Orbax checkpoint (no {_MARKER} file)")
        return found


class Checkpoints:
    """Numbered checkpoints of a training state in ``directory``; the newest ``max_to_keep`` stay.

    Args:
      directory: where checkpoints live (created if missing); one sub-directory per step,
        named by the step. Sub-directories Orbax did not write (no ``_CHECKPOINT_METADATA``)
        are left alone: they are not steps, and saving a step whose name one of them has is
        refused.
      max_to_keep: how many of the newest checkpoints to keep (>= 1), or None for all.
      async_save: write in a background thread (Orbax's default); the arrays are copied off
        the devices before :meth:`save` returns, so the state may be donated right after.
        :meth:`wait`, :meth:`close` and leaving a ``with`` block wait for pending writes.

    >>> import tempfile
    >>> state = {"w": jnp.ones(3), "key": jax.random.key(0)}
    >>> with Checkpoints(tempfile.mkdtemp(), max_to_keep=2) as ckpt:
    ...     ckpt.save(state, step=10, meta={"epoch": 1})
    ...     restored, meta = ckpt.restore(state)
    >>> ckpt.latest_step, meta, bool((restored["key"] == state["key"]).all())
    (10, {'epoch': 1}, True)
    """

    def __init__(self, directory: str | os.PathLike, *, max_to_keep: int | None = 3, async_save: bool = True):
        if not isinstance(directory, (str, os.PathLike)):
            raise TypeError(f"directory: expected a path, got {type(directory).__name__}")
        if max_to_keep is not None and (
            not isinstance(max_to_keep, int) or isinstance(max_to_keep, bool) or max_to_keep < 1
        ):
            raise ValueError(f"max_to_keep: expected a positive int or None, got {max_to_keep!r}")
        if not isinstance(async_save, bool):
            raise TypeError(f"async_save: expected a bool, got {async_save!r}")
        self.directory = os.path.abspath(os.fspath(directory))
        if os.path.exists(self.directory) and not os.path.isdir(self.directory):
            raise NotADirectoryError(
                f"directory: expected a directory for the checkpoints, got an existing file {self.directory!r}"
            )
        try:
            os.makedirs(self.directory, exist_ok=True)
        except OSError as e:
            raise type(e)(
                e.errno, f"directory: cannot create the checkpoint directory {self.directory!r} ({e.strerror})"
            ) from e
        if not os.access(self.directory, os.W_OK | os.X_OK):
            raise PermissionError(f"directory: expected a writable directory, got {self.directory!r} (not writable)")
        options = ocp.CheckpointManagerOptions(
            max_to_keep=max_to_keep,
            enable_async_checkpointing=async_save,
            cleanup_tmp_directories=True,  # leftovers of saves that crashed; never finished ones
            create=True,
            step_name_format=_FinishedStepsOnly(),
        )
        handlers = {"state": ocp.StandardCheckpointHandler(), "meta": ocp.JsonCheckpointHandler()}
        self.manager = ocp.CheckpointManager(self.directory, options=options, item_handlers=handlers)

    @property
    def steps(self) -> list[int]:
        """Steps with a complete checkpoint, oldest first."""
        return sorted(self.manager.all_steps())

    @property
    def latest_step(self) -> int | None:
        """The newest complete checkpoint's step, or None when there is none."""
        return self.manager.latest_step()

    def save(self, state: Any, *, step: int | None = None, meta: dict | None = None) -> None:
        """Save ``state`` (a pytree of arrays) and ``meta`` (a JSON-serialisable dict) as ``step``.

        ``step`` defaults to ``int(state.step)``. An existing step is never overwritten.
        """
        if step is None:
            if not hasattr(state, "step"):
                raise ValueError("step: expected an int (the state has no .step field)")
            step = int(state.step)
        if not isinstance(step, int) or isinstance(step, bool) or step < 0:
            raise ValueError(f"step: expected a non-negative int, got {step!r}")
        if meta is None:
            meta = {}
        if not isinstance(meta, dict):
            raise TypeError(f"meta: expected a JSON-serialisable dict, got {type(meta).__name__}")
        try:  # before anything is written
            json.dumps(meta, allow_nan=True)
        except (TypeError, ValueError) as e:
            raise TypeError(f"meta: expected a JSON-serialisable dict, got {meta!r:.200} ({e})") from None
        self.manager.wait_until_finished()  # so that `steps` includes a pending save
        if step in self.manager.all_steps():
            raise ValueError(
                f"step: a checkpoint for step {step} already exists in {self.directory}; "
                f"checkpoints are never overwritten"
            )
        target = os.path.join(self.directory, _FinishedStepsOnly().build_name(step))
        if os.path.lexists(target):
            raise ValueError(
                f"step: {target} already exists and is not a checkpoint; a checkpoint of step {step} "
                f"would replace it (move it away, or use another directory)"
            )
        args = ocp.args.Composite(state=ocp.args.StandardSave(_storable(state)), meta=ocp.args.JsonSave(meta))
        self.manager.save(step, args=args, force=True)

    def restore(self, template: Any, *, step: int | None = None) -> tuple[Any, dict]:
        """Load checkpoint ``step`` (default: the latest) as ``(state, meta)``.

        ``template`` gives the structure, shapes, dtypes and shardings to restore into (e.g. a
        freshly initialised state; its values are not used). Structures and shapes must match;
        values are cast to the template's dtypes within a kind (e.g. float32 -> bfloat16), and a
        leaf whose kind differs (floating, signed or unsigned integer, bool) is a ValueError.
        """
        self.manager.wait_until_finished()
        available = self.manager.all_steps()
        if step is None:
            step = self.manager.latest_step()
            if step is None:
                raise FileNotFoundError(f"step: no checkpoint to restore in {self.directory}")
        elif step not in available:
            raise FileNotFoundError(
                f"step: no checkpoint for step {step} in {self.directory} (have {sorted(available)})"
            )
        target = jax.tree_util.tree_map(_abstract, template)
        try:  # compare structure, shapes and dtype kinds first, for a clear error instead of Orbax's
            stored = _shapes_by_path(self.manager.item_metadata(step)["state"])
        except Exception:  # metadata unreadable: Orbax's own restore reports the problem
            stored = None
        if stored is not None:
            diff = _mismatches(stored, _shapes_by_path(target))
            if diff:
                shown = "; ".join(diff[:4]) + (f"; and {len(diff) - 4} more" if len(diff) > 4 else "")
                raise ValueError(
                    f"template: does not match the checkpoint of step {step} in {self.directory} "
                    f"({len(diff)} difference{'s' if len(diff) > 1 else ''}: {shown}). Restore into a "
                    "state built like the saved one, or use another directory for a different model."
                )
        args = ocp.args.Composite(state=ocp.args.StandardRestore(target), meta=ocp.args.JsonRestore())
        try:
            restored = self.manager.restore(step, args=args)
        except ValueError as e:
            e.add_note(f"(restoring step {step} from {self.directory} into the given template)")
            raise
        state = jax.tree_util.tree_map(
            lambda r, t: jax.random.wrap_key_data(r, impl=jax.random.key_impl(t)) if _is_key(t) else r,
            restored.state,
            template,
        )
        return state, dict(restored.meta or {})

    def wait(self) -> None:
        """Block until pending saves are written."""
        self.manager.wait_until_finished()

    def close(self) -> None:
        """Wait for pending saves and release Orbax's resources."""
        self.manager.wait_until_finished()
        self.manager.close()

    def __enter__(self) -> Checkpoints:
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def __repr__(self) -> str:
        return f"Checkpoints({self.directory!r}, steps={self.steps})"
