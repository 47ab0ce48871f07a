"""Packed sequences: several variable-length sequences one after another in each row.

Padding every sequence of a batch to the longest one spends compute on padding; on skewed
length distributions most of it. Packing fills fixed-length rows with whole sequences instead
(first-fit-decreasing) and marks where each starts: ``resets[t, r]`` is True at the first step
of every sequence, and every driver (``rnnjax.scan``, ``truncated_scan``, ``remat_scan``,
``rnn``, ``deep``, ``bidirectional``, the parallel forms) then sets the carry to zeros there,
in both directions, so each sequence is computed exactly as if it ran alone::

    packed = pack_sequences(seqs, row_length=64)            # seqs: list of [L_i, F] arrays
    carry, ys = model.apply(params, packed.xs, lengths=packed.lengths, resets=packed.resets)
    per_seq = unpack_sequences(ys, packed.layout)            # [L_max, N, H], in input order
    last = pool_last(ys, segment_ids=packed.segment_ids, num_segments=len(seqs))   # [N, H]

Rows end with padding after their last sequence (``packed.lengths``): the sequence losses
take ``lengths=packed.lengths`` (or ``mask=packed.segment_ids >= 0``) as for a padded batch.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np

from rnnjax._checks import check_array, check_bool, check_int, shape_str

Array = jax.Array


@dataclasses.dataclass(frozen=True)
class PackLayout:
    """Where each packed sequence lies: sequence ``i`` is steps ``starts[i] .. starts[i] +
    lengths[i] - 1`` of row ``rows[i]``. Static (hashable, not traced): ``jit`` may close over it
    or take it as a static argument."""

    row_length: int
    num_rows: int
    rows: tuple[int, ...]
    starts: tuple[int, ...]
    lengths: tuple[int, ...]

    @property
    def num_sequences(self) -> int:
        return len(self.rows)


jax.tree_util.register_static(PackLayout)


class Packed(NamedTuple):
    """The result of ``pack_sequences`` (time-major unless ``time_major=False``).

    Attributes:
      xs: ``[T, R, *F]`` the sequences packed into ``R`` rows of ``T = row_length`` steps,
        ``pad_value`` after each row's last sequence.
      resets: ``[T, R]`` bool, True at the first step of every sequence.
      segment_ids: ``[T, R]`` int32, the index (in the input list) of the sequence at each
        position; -1 on padding.
      lengths: ``[R]`` int32, the valid steps of each row (padding only at the end).
      layout: ``PackLayout``, to unpack outputs back to one sequence per batch entry.
    """

    xs: Array
    resets: Array
    segment_ids: Array
    lengths: Array
    layout: PackLayout


def _first_fit_decreasing(sizes: Sequence[int], capacity: int, num_rows: int | None):
    """Row and start of each item: the longest first, each into the first row it fits."""
    order = sorted(range(len(sizes)), key=lambda i: -sizes[i])  # stable: equal lengths keep input order
    used: list[int] = []
    rows, starts = [0] * len(sizes), [0] * len(sizes)
    for i in order:
        for r, filled in enumerate(used):  # noqa: B007  (r is the row found, used after the loop)
            if filled + sizes[i] <= capacity:
                break
        else:
            if num_rows is not None and len(used) == num_rows:
                raise ValueError(
                    f"num_rows: {num_rows} rows of row_length={capacity} cannot hold the sequences "
                    f"(total length {sum(sizes)}); pass more rows or None"
                )
            used.append(0)
            r = len(used) - 1
        rows[i], starts[i] = r, used[r]
        used[r] += sizes[i]
    return rows, starts, used


def pack_sequences(
    sequences: Sequence[Any],
    row_length: int,
    *,
    num_rows: int | None = None,
    pad_value: Any = 0,
    time_major: bool = True,
) -> Packed:
    """Pack variable-length sequences into rows of ``row_length`` steps, first-fit-decreasing.

    Sequences are placed longest first, each into the first row with room for it (a row never
    splits a sequence); the rows are then as full as first-fit-decreasing makes them (at most
    ``11/9 OPT + 6/9`` rows). Equal lengths keep their input order.

    Args:
      sequences: ``N`` arrays ``[L_i, *F]`` (time first; ``*F`` equal for all, e.g. ``[L_i]``
        token ids or ``[L_i, F]`` features), ``1 <= L_i <= row_length``.
      row_length: steps per row ``T``.
      num_rows: fix the number of rows ``R`` (an error if the sequences do not fit; unused
        rows are all padding); None uses as many as needed.
      pad_value: the value of padding positions in ``xs``.
      time_major: False for ``xs: [R, T, *F]`` and ``resets``/``segment_ids``: ``[R, T]``.

    Returns:
      ``Packed(xs, resets, segment_ids, lengths, layout)``.

    >>> packed = pack_sequences([jnp.ones((3, 2)), jnp.ones((5, 2)), jnp.ones((2, 2))], row_length=6)
    >>> packed.xs.shape, packed.lengths.tolist()
    ((6, 2, 2), [5, 5])
    >>> packed.segment_ids[:, 0].tolist(), packed.resets[:, 1].tolist()
    ([1, 1, 1, 1, 1, -1], [True, False, False, True, False, False])
    """
    row_length = check_int("row_length", row_length)
    check_int("num_rows", num_rows, allow_none=True)
    check_bool("time_major", time_major)
    if isinstance(sequences, (str, bytes)) or not isinstance(sequences, Sequence) or not sequences:
        raise ValueError(f"sequences: expected a non-empty list of arrays [L_i, *F], got {type(sequences).__name__}")
    arrays = []
    for i, seq in enumerate(sequences):
        seq = np.asarray(seq) if isinstance(seq, (list, tuple)) else seq
        check_array(f"sequences[{i}]", seq)
        if seq.ndim < 1 or seq.shape[0] < 1:
            raise ValueError(f"sequences[{i}]: expected shape [L, *F] with L >= 1, got {tuple(seq.shape)}")
        if seq.shape[0] > row_length:
            raise ValueError(
                f"sequences[{i}]: length {seq.shape[0]} is longer than row_length={row_length}; "
                f"use a longer row, or cut the sequence and carry its state with truncated_scan"
            )
        if arrays and tuple(seq.shape[1:]) != tuple(arrays[0].shape[1:]):
            raise ValueError(
                f"sequences[{i}]: expected the feature shape {shape_str(tuple(arrays[0].shape[1:]))} of "
                f"sequences[0], got {tuple(seq.shape[1:])}"
            )
        arrays.append(np.asarray(seq))
    sizes = [a.shape[0] for a in arrays]
    rows, starts, used = _first_fit_decreasing(sizes, row_length, num_rows)
    n_rows = len(used) if num_rows is None else num_rows
    used = used + [0] * (n_rows - len(used))
    dtype = np.result_type(*arrays)
    xs = np.full((row_length, n_rows) + arrays[0].shape[1:], pad_value, dtype)
    resets = np.zeros((row_length, n_rows), bool)
    ids = np.full((row_length, n_rows), -1, np.int32)
    for i, (a, r, s) in enumerate(zip(arrays, rows, starts, strict=True)):
        xs[s : s + a.shape[0], r] = a
        resets[s, r] = True
        ids[s : s + a.shape[0], r] = i
    layout = PackLayout(row_length, n_rows, tuple(rows), tuple(starts), tuple(sizes))
    if not time_major:
        xs, resets, ids = np.moveaxis(xs, 0, 1), resets.T, ids.T
    return Packed(jnp.asarray(xs), jnp.asarray(resets), jnp.asarray(ids), jnp.asarray(used, jnp.int32), layout)


def unpack_sequences(ys: Any, layout: PackLayout, *, time_major: bool = True) -> Any:
    """Outputs of packed rows back to one sequence per batch entry, in the input order.

    Args:
      ys: ``[T, R, ...]`` outputs of a model applied to ``Packed.xs`` (or a pytree of such).
      layout: ``Packed.layout``.
      time_major: False for batch-major ``ys: [R, T, ...]`` and result ``[N, L_max, ...]``.

    Returns:
      ``[L_max, N, ...]`` (``L_max`` the longest sequence), zeros after each sequence's end:
      the padded batch the sequences would have formed, with lengths ``layout.lengths``.

    >>> packed = pack_sequences([jnp.arange(3.0)[:, None], jnp.arange(5.0)[:, None]], row_length=8)
    >>> unpack_sequences(packed.xs, packed.layout)[:, :, 0].T.tolist()
    [[0.0, 1.0, 2.0, 0.0, 0.0], [0.0, 1.0, 2.0, 3.0, 4.0]]
    """
    if not isinstance(layout, PackLayout):
        raise TypeError(f"layout: expected the PackLayout of pack_sequences (Packed.layout), got {type(layout).__name__}")
    check_bool("time_major", time_major)
    longest = max(layout.lengths)
    s = np.arange(longest)[:, None]  # [L_max, 1]
    lengths = np.asarray(layout.lengths)[None, :]  # [1, N]
    valid = s < lengths  # [L_max, N]
    t_idx = np.where(valid, np.asarray(layout.starts)[None, :] + s, 0)
    r_idx = np.broadcast_to(np.asarray(layout.rows)[None, :], valid.shape)

    def gather(y):
        y = jnp.moveaxis(y, 1, 0) if not time_major else y
        if y.ndim < 2 or tuple(y.shape[:2]) != (layout.row_length, layout.num_rows):
            raise ValueError(
                f"ys: expected shape [{layout.row_length}, {layout.num_rows}, ...] (the [T, R] axes of the "
                f"packed rows{', batch-major [R, T]' if not time_major else ''}), got {tuple(jnp.shape(y))}"
            )
        out = y[t_idx, r_idx]  # [L_max, N, ...]
        out = jnp.where(valid.reshape(valid.shape + (1,) * (out.ndim - 2)), out, jnp.zeros((), out.dtype))
        return out if time_major else jnp.moveaxis(out, 0, 1)

    return jax.tree_util.tree_map(gather, ys)


def segment_pool(ys: Array, segment_ids: Array, num_segments: int, how: str) -> Array:
    """One vector per packed sequence: the last, mean or max of its outputs.

    ``ys: [T, *batch, *F]`` time-major, ``segment_ids: [T, *batch]`` (``Packed.segment_ids``,
    -1 on padding; the axes after them belong to each step). Returns ``[num_segments, *F]``,
    entry ``i`` for the sequence with id ``i`` (zeros for an id that does not occur). ``pool_last``/``pool_mean``/``pool_max`` call this
    when given ``segment_ids``.
    """
    check_array("ys", ys)
    if isinstance(segment_ids, (list, tuple)):
        segment_ids = np.asarray(segment_ids)
    check_array("segment_ids", segment_ids)
    if not jnp.issubdtype(segment_ids.dtype, jnp.integer):
        raise TypeError(f"segment_ids: expected an integer array, got dtype {segment_ids.dtype}")
    lead = tuple(segment_ids.shape)
    if not (1 <= len(lead) < ys.ndim and tuple(ys.shape[: len(lead)]) == lead):
        raise ValueError(
            f"segment_ids: expected shape {shape_str(tuple(ys.shape[:-1]))} or a leading part of it "
            f"(the [T, *batch] axes of ys), got {lead}"
        )
    num_segments = check_int("num_segments", num_segments)
    if not isinstance(segment_ids, jax.core.Tracer):
        top = int(np.max(np.asarray(segment_ids))) if segment_ids.size else -1
        if top >= num_segments:
            raise ValueError(f"segment_ids: expected ids in [-1, num_segments={num_segments}), got {top}")
    rest = tuple(ys.shape[len(lead):])
    flat_ys = ys.reshape((-1,) + rest)
    ids = segment_ids.reshape(-1)
    ids = jnp.where(ids < 0, num_segments, ids)  # padding goes to one extra segment, dropped below
    n = num_segments + 1
    counts = jax.ops.segment_sum(jnp.ones_like(ids), ids, n)[:num_segments]
    present = (counts > 0).reshape((-1,) + (1,) * len(rest))
    zero = jnp.zeros((), ys.dtype)
    if how == "mean":
        total = jax.ops.segment_sum(flat_ys, ids, n)[:num_segments]
        return jnp.where(present, total / jnp.maximum(counts, 1).reshape(present.shape).astype(ys.dtype), zero)
    if how == "max":
        return jnp.where(present, jax.ops.segment_max(flat_ys, ids, n)[:num_segments], zero)
    if how == "last":  # positions are time-major: a later step of the same row has a larger flat index
        last = jax.ops.segment_max(jnp.arange(ids.shape[0]), ids, n)[:num_segments]
        return jnp.where(present, flat_ys[jnp.clip(last, 0, ids.shape[0] - 1)], zero)
    raise ValueError(f"how: expected 'last', 'mean' or 'max', got {how!r}")


__all__ = ["PackLayout", "Packed", "pack_sequences", "segment_pool", "unpack_sequences"]
