"""Checkpoints of a training state with Orbax: atomic, verified saves, keep-last-N, exact resume.

:class:`Checkpoints` is a thin layer over ``orbax.checkpoint.CheckpointManager`` that saves any
pytree of arrays (a :class:`~rnnjax.TrainState` as it is: params, optimiser state, step, PRNG
key, skipped-step count, carry) plus a small JSON dict (e.g. a data iterator's position), and
restores them into the structure, dtypes and shardings of a template.

What it adds to Orbax:

- **Verified contents.** Each save stores, next to the arrays, a record of the tree (path,
  shape and dtype of every array), a CRC-32 of every array's bytes and of the meta dict, and
  whether every value is finite. Restoring reads the record and checks all of it: a checkpoint
  whose files were truncated, deleted, overwritten or had a bit flipped raises
  :class:`CheckpointIntegrityError` naming the step, the directory and what failed, instead of
  returning wrong numbers. ``restore()`` without a step (and :func:`~rnnjax.fit`) skips such
  checkpoints, and those holding NaN/Inf, with a warning, and restores the newest intact one.
- **One writer per directory.** The first :meth:`Checkpoints.save` takes an exclusive lock
  (an ``flock`` on ``.rnnjax-writer-<process>.lock`` in the directory, holding the writer's
  pid); a second writer gets ``BlockingIOError`` naming the holder's pid instead of both
  destroying each other's saves. Restoring needs no lock and never changes the directory, so a
  running job's checkpoints can be read by another process. In multi-process (multi-host)
  training every process calls ``save`` (Orbax coordinates them) and each takes its own lock,
  keyed by ``jax.process_index()``: two jobs with the same process count collide on every
  process at their first save; only process 0 deletes old checkpoints and leftovers.
- **Keep-last-N counts good checkpoints.** Only checkpoints that are finite count towards
  ``max_to_keep``: a run that diverged never pushes the newest finite checkpoint out.
- Typed PRNG keys (``jax.random.key``) are stored as their key data and wrapped back on
  restore; a step is never overwritten; only folders Orbax finished (holding its
  ``_CHECKPOINT_METADATA`` file, and not symbolic links) are checkpoints, so other numbered
  folders in the directory are neither listed, restored nor deleted; ``~`` is expanded.

Orbax gives the rest: each save is written to a temporary directory and renamed only when
complete, so a crash (even ``SIGKILL``) mid-save leaves the last good checkpoint intact. Those
temporary leftovers are removed when the next writer takes the lock.
"""

from __future__ import annotations

import dataclasses
import json
import os
import re
import shutil
import warnings
import zlib
from collections.abc import Iterator
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
import orbax.checkpoint as ocp
from orbax.checkpoint import path as ocp_path

from rnnjax._lock import WriterLock

_MARKER = "_CHECKPOINT_METADATA"  # written by Orbax into every step folder it creates
_RECORD = "integrity"  # the item holding the checksums, next to "state" and "meta"
_RUN_FILE = ".rnnjax-run.json"  # logs that fit wrote alongside this directory
_LEFTOVER = re.compile(r"^\d+\.(orbax-checkpoint-tmp.*|rnnjax-deleting)$")

__all__ = ["CheckpointIntegrityError", "Checkpoints"]


class CheckpointIntegrityError(ValueError):
    """A checkpoint that cannot be read back as it was saved (damaged, incomplete or altered).

    Attributes:
      step: the checkpoint's step (None when no checkpoint of a directory was intact).
      directory: the checkpoint directory.
      what: what failed, in words.
    """

    def __init__(self, message: str, *, step: int | None, directory: str, what: str):
        super().__init__(message)
        self.step, self.directory, self.what = step, directory, what


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
    } | {  # Python numbers are stored as scalars
        ".".join(_key_name(k) for k in path): ((), None)
        for path, leaf in jax.tree_util.tree_leaves_with_path(tree)
        if isinstance(leaf, (int, float, complex)) and not hasattr(leaf, "shape")
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


def _path_name(path: Any) -> str:
    return ".".join(_key_name(k) for k in path)


def _host_arrays(tree: Any) -> dict[str, np.ndarray | None]:
    """``{path: host copy}`` of the array leaves; None for an array this process cannot see
    whole (sharded over several hosts), which is then neither checksummed nor verified."""
    leaves = [(_path_name(p), x) for p, x in jax.tree_util.tree_leaves_with_path(tree) if hasattr(x, "shape")]
    for _, x in leaves:  # start every device-to-host copy before waiting for any
        if isinstance(x, jax.Array) and x.is_fully_addressable:
            x.copy_to_host_async()
    out = {}
    for name, x in leaves:
        if isinstance(x, jax.Array) and not x.is_fully_addressable:
            out[name] = np.asarray(x.addressable_data(0)) if x.is_fully_replicated else None
        else:
            out[name] = np.asarray(x)
    return out


def _crc(a: np.ndarray) -> int:
    return zlib.crc32(np.ascontiguousarray(a).reshape(-1).view(np.uint8))


def _meta_crc(meta: Any) -> int:
    # canonical text of the JSON value as it reads back (int keys -> str, tuples -> lists)
    canonical = json.dumps(json.loads(json.dumps(meta, allow_nan=True)), sort_keys=True, allow_nan=True)
    return zlib.crc32(canonical.encode())


def _is_float(dtype: Any) -> bool:
    return jnp.issubdtype(dtype, jnp.inexact)


def _record(storable: Any, meta: dict) -> dict:
    """The integrity record of a save: every array's shape, dtype and CRC-32, the meta's CRC-32,
    and whether all values are finite. Computed from host copies before ``save`` returns."""
    arrays, nonfinite = {}, []
    host = _host_arrays(storable)
    for path, x in jax.tree_util.tree_leaves_with_path(storable):
        if not hasattr(x, "shape"):
            continue
        name = _path_name(path)
        a = host[name]
        arrays[name] = {"shape": list(x.shape), "dtype": str(jnp.dtype(x.dtype)), "crc32": None if a is None else _crc(a)}
        if a is not None and _is_float(a.dtype) and a.size and not np.isfinite(a).all():
            nonfinite.append(name)
    return {"format": 1, "checksum": "crc32", "finite": not nonfinite, "nonfinite": nonfinite,
            "meta_crc32": _meta_crc(meta), "arrays": arrays}


def _brief(e: BaseException) -> str:
    text = " ".join(str(e).split(" See full TensorStore details")[0].split())
    return f"{type(e).__name__}: {text[:300]}{'...' if len(text) > 300 else ''}"


def _is_step_folder(path: str) -> bool:
    """A folder Orbax finished (its marker file is there), not a symbolic link."""
    return os.path.isdir(path) and not os.path.islink(path) and os.path.isfile(os.path.join(path, _MARKER))


@dataclasses.dataclass(frozen=True)
class _FinishedStepsOnly(ocp_path.step.NameFormat):
    """Orbax's standard step names (``10``, ``20``, ...), where only folders holding Orbax's
    ``_CHECKPOINT_METADATA`` count (and no symbolic link): a user's own ``1/`` folder is no
    step, so it is never listed, restored or deleted."""

    standard: Any = dataclasses.field(default_factory=ocp_path.step.standard_name_format)
    # steps being set aside: not steps any more, even before process 0 has moved them
    hidden: set = dataclasses.field(default_factory=set, compare=False, hash=False)

    def build_name(self, step: int) -> str:
        return self.standard.build_name(step)

    def find_all(self, base_path: Any) -> Iterator[Any]:
        return (m for m in self.standard.find_all(base_path)
                if m.step not in self.hidden and _is_step_folder(os.fspath(m.path)))

    def find_step(self, base_path: Any, step: int) -> Any:
        found = self.standard.find_step(base_path, step)
        if not _is_step_folder(os.fspath(found.path)):
            raise ValueError(f"{found.path} is not an Orbax checkpoint (no {_MARKER} file)")
        return found


class Checkpoints:
    """Numbered, verified checkpoints of a training state in ``directory``; the newest
    ``max_to_keep`` finite ones stay.

    Args:
      directory: where checkpoints live (created if missing; ``~`` is expanded); one
        sub-directory per step, named by the step. Sub-directories Orbax did not write (no
        ``_CHECKPOINT_METADATA``) and symbolic links are left alone: they are not steps, and
        saving a step whose name one of them has is refused.
      max_to_keep: how many of the newest finite checkpoints to keep (>= 1), or None for all.
        Older checkpoints are deleted once a newer save is complete; a checkpoint holding NaN
        or Inf does not count, so it never pushes out the newest finite one.
      async_save: write in a background thread (Orbax's default); the arrays are copied off
        the devices (and checksummed) before :meth:`save` returns, so the state may be donated
        right after. :meth:`wait`, :meth:`close`, :attr:`steps` and leaving a ``with`` block
        wait for pending writes.

    Writing takes the directory's writer lock (see the module docstring) at the first
    :meth:`save`, and :meth:`close` releases it; a ``Checkpoints`` that only restores never
    locks, deletes or rewrites anything.

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
        self.directory = os.path.abspath(os.path.expanduser(os.fspath(directory)))
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
        self.max_to_keep = max_to_keep
        self.async_save = async_save
        self._process = jax.process_index()
        self._lock = WriterLock(os.path.join(self.directory, f".rnnjax-writer-{self._process}.lock"))
        self._writing = False
        self._finite: dict[int, bool] = {}
        names = _FinishedStepsOnly()
        self._hidden = names.hidden  # steps set aside (renamed by process 0)
        self._skipped: dict[int, str] = {}  # steps restore() passed over, and why
        options = ocp.CheckpointManagerOptions(
            max_to_keep=None,  # deletion is done here: keep-last-N counts finite checkpoints only
            enable_async_checkpointing=async_save,
            cleanup_tmp_directories=False,  # a reader must not delete a running writer's save
            create=True,
            step_name_format=names,
        )
        handlers = {
            "state": ocp.StandardCheckpointHandler(),
            "meta": ocp.JsonCheckpointHandler(),
            _RECORD: ocp.JsonCheckpointHandler(),
        }
        self.manager = ocp.CheckpointManager(self.directory, options=options, item_handlers=handlers)

    # ------------------------------------------------------------------ listing, locking

    def _on_disk(self) -> list[int]:
        """Finished step folders on disk now, oldest first (not Orbax's cached list)."""
        try:
            names = os.listdir(self.directory)
        except FileNotFoundError:
            return []
        return sorted(
            int(n) for n in names if n.isdigit() and str(int(n)) == n and _is_step_folder(os.path.join(self.directory, n))
        )

    def _listed(self) -> list[int]:
        """The steps: those on disk, less (for a writer) those that max_to_keep lets go and those
        set aside, even before process 0 has removed them, so that every process of a
        multi-process job sees the same steps."""
        steps = [s for s in self._on_disk() if s not in self._hidden]
        if not self._writing or self.max_to_keep is None:
            return steps
        good = [s for s in steps if self._is_finite(s)]
        if len(good) <= self.max_to_keep:
            return steps
        cutoff = good[-self.max_to_keep]
        return [s for s in steps if s >= cutoff]

    def _settle(self) -> None:
        """Wait for a pending save; then, as the writer, delete what max_to_keep lets go."""
        self.manager.wait_until_finished()
        if self._writing:
            self._prune()

    @property
    def steps(self) -> list[int]:
        """Steps with a complete checkpoint, oldest first (after a pending save is written).

        These are the finished checkpoints; whether their contents are intact is checked when
        they are restored."""
        self._settle()
        return self._listed()

    @property
    def latest_step(self) -> int | None:
        """The newest complete checkpoint's step, or None when there is none."""
        steps = self.steps
        return steps[-1] if steps else None

    def _claim(self) -> None:
        """Become the directory's writer: take the lock, then remove leftovers of crashed saves."""
        if self._writing:
            return
        self._lock.acquire(
            f"directory: {self.directory} is being written by another Checkpoints, {{holder}} (lock file "
            f"{self._lock.path}); two writers in one directory destroy each other's saves. Wait for it to "
            "finish or use another directory (restoring from it needs no lock)"
        )
        self._writing = True
        if self._process == 0:
            for name in os.listdir(self.directory):
                path = os.path.join(self.directory, name)
                if _LEFTOVER.match(name) and os.path.isdir(path) and not os.path.islink(path):
                    shutil.rmtree(path, ignore_errors=True)
            self.manager.reload()

    def _record_path(self, step: int) -> str:
        return os.path.join(self.directory, str(step), _RECORD, "metadata")

    def _is_finite(self, step: int) -> bool:
        if step not in self._finite:
            try:
                with open(self._record_path(step), encoding="utf-8") as f:
                    self._finite[step] = json.load(f)["finite"] is True
            except FileNotFoundError:  # written before checksums were stored
                self._finite[step] = not os.path.exists(os.path.join(self.directory, str(step), _RECORD))
            except (OSError, ValueError, KeyError, TypeError):
                self._finite[step] = False
        return self._finite[step]

    def _remove(self, step: int, suffix: str = "rnnjax-deleting") -> str:
        """Rename the step folder away first (atomic: it stops being a step at once), then
        delete it unless it is kept aside for inspection; returns the new path."""
        aside = os.path.join(self.directory, f"{step}.{suffix}")
        n = 1
        while os.path.lexists(aside):
            n += 1
            aside = os.path.join(self.directory, f"{step}.{suffix}-{n}")
        os.rename(os.path.join(self.directory, str(step)), aside)
        self._finite.pop(step, None)
        if suffix == "rnnjax-deleting":
            shutil.rmtree(aside, ignore_errors=True)
        return aside

    def _prune(self) -> None:
        if self.max_to_keep is None or self._process != 0:
            return
        steps = [s for s in self._on_disk() if s not in self._hidden]
        good = [s for s in steps if self._is_finite(s)]
        if len(good) <= self.max_to_keep:
            return
        cutoff = good[-self.max_to_keep]
        for s in steps:
            if s < cutoff:
                self._remove(s)
        self.manager.reload()

    # ------------------------------------------------------------------ save

    def save(
        self, state: Any, *, step: int | None = None, meta: dict | None = None, allow_nonfinite: bool = True
    ) -> None:
        """Save ``state`` (a pytree of arrays) and ``meta`` (a JSON-serialisable dict) as ``step``.

        ``step`` defaults to ``int(state.step)``. An existing step is never overwritten. The
        arrays' checksums are computed before this returns. A state holding NaN or Inf is saved
        with a warning and marked as such (it does not count towards ``max_to_keep``, and
        ``restore()`` without a step skips it); with ``allow_nonfinite=False`` it is a
        FloatingPointError naming the leaves, and nothing is written (what :func:`~rnnjax.fit`
        uses).
        """
        if not isinstance(allow_nonfinite, bool):
            raise TypeError(f"allow_nonfinite: expected a bool, got {allow_nonfinite!r}")
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
        self._claim()
        self._settle()  # the previous save is complete, and old checkpoints are deleted
        if step in self._skipped and step in self._on_disk():
            self._set_aside(step, self._skipped.pop(step), stacklevel=3)  # restore() passed it over
        if step in self._listed():
            raise ValueError(
                f"step: a checkpoint for step {step} already exists in {self.directory}; "
                f"checkpoints are never overwritten"
            )
        target = os.path.join(self.directory, _FinishedStepsOnly().build_name(step))
        if os.path.lexists(target) and step not in self._hidden:  # hidden: process 0 moves it aside
            raise ValueError(
                f"step: {target} already exists and is not a checkpoint; a checkpoint of step {step} "
                f"would replace it (move it away, or use another directory)"
            )
        storable = _storable(state)
        record = _record(storable, meta)
        if not record["finite"] and not allow_nonfinite:
            names = ", ".join(record["nonfinite"][:4]) + (" ..." if len(record["nonfinite"]) > 4 else "")
            kept = self._listed()
            raise FloatingPointError(
                f"state: holds NaN or Inf (in {names}) at step {step}; it is not saved to {self.directory}, "
                f"whose newest checkpoint ({f'step {kept[-1]}' if kept else 'none'}) is kept"
            )
        if not record["finite"]:
            warnings.warn(
                f"Checkpoints: the state saved as step {step} in {self.directory} holds NaN or Inf; it is "
                "kept, but does not count towards max_to_keep and restore() without a step skips it",
                RuntimeWarning,
                stacklevel=2,
            )
        args = ocp.args.Composite(
            state=ocp.args.StandardSave(storable), meta=ocp.args.JsonSave(meta), **{_RECORD: ocp.args.JsonSave(record)}
        )
        self.manager.save(step, args=args, force=True)
        self._finite[step] = record["finite"]
        self._hidden.discard(step)
        if not self.async_save:
            self._settle()

    # ------------------------------------------------------------------ restore

    def _damaged(self, step: int, what: str) -> CheckpointIntegrityError:
        return CheckpointIntegrityError(
            f"step: the checkpoint of step {step} in {self.directory} is damaged: {what}",
            step=step, directory=self.directory, what=what,
        )

    def _read_record(self, step: int) -> dict | None:
        """The integrity record of ``step``; None for a checkpoint saved without one."""
        folder = os.path.join(self.directory, str(step))
        try:
            with open(os.path.join(folder, _MARKER), encoding="utf-8") as f:
                items = json.load(f).get("item_handlers") or {}
        except (OSError, ValueError, AttributeError) as e:
            raise self._damaged(step, f"Orbax's {_MARKER} file cannot be read ({_brief(e)})") from None
        if _RECORD not in items:
            return None  # saved before checksums were stored: restored unverified
        try:
            with open(self._record_path(step), encoding="utf-8") as f:
                record = json.load(f)
            arrays = record["arrays"]
            for entry in arrays.values():
                tuple(entry["shape"]), entry["dtype"], entry["crc32"]
            record["meta_crc32"], record["finite"]
        except (OSError, ValueError, KeyError, TypeError, AttributeError) as e:
            raise self._damaged(step, f"its checksum record {_RECORD}/ cannot be read ({_brief(e)})") from None
        return record

    def _read(self, template: Any, step: int) -> tuple[Any, dict]:
        record = self._read_record(step)
        try:
            stored_tree = self.manager.item_metadata(step)["state"]
            if stored_tree is None:
                raise FileNotFoundError("no metadata for the item 'state'")
            stored = _shapes_by_path(stored_tree)
        except Exception as e:  # missing or garbage _METADATA, missing state/ ...
            raise self._damaged(step, f"the metadata of its arrays cannot be read ({_brief(e)})") from None
        if record is not None:
            expected = {k: (tuple(v["shape"]), jnp.dtype(v["dtype"])) for k, v in record["arrays"].items()}
            have = {  # Python scalars in the state are not arrays: they have no record entry
                k: (shape, None if dtype is None else jnp.dtype(dtype))
                for k, (shape, dtype) in stored.items() if k in expected or shape != ()
            }
            if have != expected:
                diff = _mismatches(have, expected) or ["dtypes differ"]
                raise self._damaged(step, "the metadata of its arrays (state/_METADATA) does not match the record "
                                          f"written with them ({'; '.join(diff[:3])})")
        target = jax.tree_util.tree_map(_abstract, template)
        diff = _mismatches(stored, _shapes_by_path(target))
        if diff:
            shown = "; ".join(diff[:4]) + (f"; and {len(diff) - 4} more" if len(diff) > 4 else "")
            raise ValueError(
                f"template: does not match the checkpoint of step {step} in {self.directory} "
                f"({len(diff)} difference{'s' if len(diff) > 1 else ''}: {shown}). Restore into a "
                "state built like the saved one, or use another directory for a different model."
            )

        def as_stored(path, x):  # read in the stored dtype (to verify), cast to the template's after
            name = _path_name(path)
            if isinstance(x, jax.ShapeDtypeStruct) and name in stored and stored[name][1] is not None:
                return jax.ShapeDtypeStruct(x.shape, stored[name][1], sharding=x.sharding)
            return x

        target = jax.tree_util.tree_map_with_path(as_stored, target)
        args = ocp.args.Composite(state=ocp.args.StandardRestore(target), meta=ocp.args.JsonRestore())
        try:
            restored = self.manager.restore(step, args=args)
        except Exception as e:
            raise self._damaged(step, f"its files cannot be read ({_brief(e)})") from None
        meta = dict(restored.meta or {})
        if record is not None:
            host = _host_arrays(restored.state)
            bad = [
                name for name, entry in record["arrays"].items()
                if entry["crc32"] is not None and host.get(name) is not None and _crc(host[name]) != entry["crc32"]
            ]
            if bad:
                raise self._damaged(
                    step, f"{len(bad)} of its {len(record['arrays'])} arrays differ from what was saved "
                    f"(CRC-32 mismatch: {', '.join(bad[:4])}{', ...' if len(bad) > 4 else ''})"
                )
            if _meta_crc(meta) != record["meta_crc32"]:
                raise self._damaged(step, "its meta dict differs from what was saved (CRC-32 mismatch)")

        def finish(r, t):
            if _is_key(t):
                return jax.random.wrap_key_data(r, impl=jax.random.key_impl(t))
            want = getattr(t, "dtype", None)
            if want is not None and hasattr(r, "dtype") and r.dtype != want:
                return r.astype(want)
            return r

        return jax.tree_util.tree_map(finish, restored.state, template), meta

    def _restore_newest(self, template: Any) -> tuple[Any, dict, int, list[tuple[int, str]]]:
        """The newest intact, finite checkpoint as ``(state, meta, step, skipped)``; ``skipped``
        lists the newer ``(step, why)`` that were passed over (and warned about)."""
        steps = self._listed()
        if not steps:
            raise FileNotFoundError(f"step: no checkpoint to restore in {self.directory}")
        skipped: list[tuple[int, str]] = []
        for step in reversed(steps):
            try:
                record = self._read_record(step)
                if record is not None and record["finite"] is not True:
                    skipped.append((step, "it holds NaN or Inf"))
                    continue
                state, meta = self._read(template, step)
            except CheckpointIntegrityError as e:
                skipped.append((step, e.what))
                continue
            self._skipped.update(skipped)
            if skipped:
                why = "; ".join(f"step {s}: {w}" for s, w in skipped)
                warnings.warn(
                    f"Checkpoints: restored step {step} from {self.directory}, the newest intact checkpoint, "
                    f"skipping {len(skipped)} newer one{'s' if len(skipped) > 1 else ''} ({why})",
                    RuntimeWarning,
                    stacklevel=3,
                )
            return state, meta, step, skipped
        why = "; ".join(f"step {s}: {w}" for s, w in skipped)
        raise CheckpointIntegrityError(
            f"step: no intact checkpoint to restore in {self.directory} ({why}); move the directory "
            "away to start afresh",
            step=None, directory=self.directory, what=why,
        )

    def restore(self, template: Any, *, step: int | None = None) -> tuple[Any, dict]:
        """Load checkpoint ``step`` (default: the newest intact one) as ``(state, meta)``.

        ``template`` gives the structure, shapes, dtypes and shardings to restore into (e.g. a
        freshly initialised state; its values are not used). Structures and shapes must match;
        values are cast to the template's dtypes within a kind (e.g. float32 -> bfloat16), and a
        leaf whose kind differs (floating, signed or unsigned integer, bool) is a ValueError.

        Every array and the meta dict are checked against the checksums saved with them. A
        named ``step`` that fails (unreadable, incomplete, or contents that differ) raises
        :class:`CheckpointIntegrityError` naming step, directory and what failed. Without a
        step, such checkpoints and those holding NaN or Inf are skipped with a warning that
        names them, and the newest good one is restored (CheckpointIntegrityError when none is).
        """
        self.manager.wait_until_finished()
        if step is None:
            state, meta, _, _ = self._restore_newest(template)
            return state, meta
        available = self._listed()
        if step not in available:
            raise FileNotFoundError(
                f"step: no checkpoint for step {step} in {self.directory} (have {sorted(available)})"
            )
        return self._read(template, step)

    # ------------------------------------------------------------------ used by fit

    def _resume(self, template: Any) -> tuple[Any, int] | None:
        """As the writer: the newest good checkpoint as ``(state, step)``, or None when there is
        no checkpoint; newer ones that were skipped are moved aside (``<step>.damaged``), so the
        resumed run can save those steps again."""
        self._claim()
        self._settle()
        if not self._listed():
            return None
        state, _, step, skipped = self._restore_newest(template)
        for s, why in skipped:
            self._skipped.pop(s, None)
            self._set_aside(s, why, stacklevel=4)
        return state, step

    def _set_aside(self, step: int, why: str, *, stacklevel: int) -> None:
        """Move a checkpoint that restore passed over out of the way (``<step>.damaged`` or
        ``<step>.nonfinite``, kept for inspection), so that its step can be saved again; other
        processes only stop listing it."""
        self._hidden.add(step)
        if self._process != 0:
            self.manager.reload()  # Orbax forgets it too
            return
        aside = self._remove(step, suffix="nonfinite" if why == "it holds NaN or Inf" else "damaged")
        self._hidden.discard(step)
        self.manager.reload()
        warnings.warn(f"Checkpoints: moved the skipped checkpoint of step {step} aside to {aside} ({why})",
                      RuntimeWarning, stacklevel=stacklevel)

    def _wrote_log(self, path: str) -> bool:
        try:
            with open(os.path.join(self.directory, _RUN_FILE), encoding="utf-8") as f:
                return path in json.load(f).get("logs", [])
        except (OSError, ValueError, AttributeError):
            return False

    def _note_log(self, path: str) -> None:
        """Record that fit logs to ``path`` alongside this directory (so that a re-run after a
        crash before the first checkpoint may drop that log's rows)."""
        if self._process != 0 or self._wrote_log(path):
            return
        file = os.path.join(self.directory, _RUN_FILE)
        try:
            with open(file, encoding="utf-8") as f:
                logs = list(json.load(f).get("logs", []))
        except (OSError, ValueError, AttributeError):
            logs = []
        with open(file + ".tmp", "w", encoding="utf-8") as f:
            json.dump({"logs": logs + [path]}, f)
        os.replace(file + ".tmp", file)

    # ------------------------------------------------------------------ lifetime

    def wait(self) -> None:
        """Block until pending saves are written (and old checkpoints deleted)."""
        self._settle()

    def close(self) -> None:
        """Wait for pending saves, release Orbax's resources and the writer lock."""
        try:
            self._settle()
            self.manager.close()
        finally:
            self._lock.release()
            self._writing = False

    def __enter__(self) -> Checkpoints:
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def __repr__(self) -> str:
        return f"Checkpoints({self.directory!r}, steps={self._listed()})"
