"""Masked sequence losses: padding never contributes to the value or the gradient.

Sequences are time-major (``[T, *batch, ...]``). Each loss takes either ``lengths: [*batch]``
(positions ``t >= lengths[b]`` are padding) or an explicit ``mask: [T, *batch]`` (True where
valid), never both. As in ``rnnjax.scan``, the batch axes are those of ``lengths``: any leading
part of the axes between time and features, the remaining ones belonging to each step (ConvLSTM
frames ``[T, B, H, W, C]`` with ``lengths: [B]``; per-pixel logits ``[T, B, H, W, K]`` with
labels ``[T, B, H, W]``). Every position of a valid step is then valid, and ``"mean"`` averages
over all of them (each pixel of each valid frame counts once). Padding positions may hold anything, NaN or out-of-range label ids
included: they are replaced before the loss is computed, so they reach neither the value nor
the gradient.

``reduction`` is ``"mean"`` (sum over valid positions / number of valid positions; 0 when none
is valid), ``"sum"``, or ``"none"`` (the per-position values, zero at padding).

**Out-of-range labels.** Label ids must lie in ``[0, V)`` at valid positions. When their
values are known (outside ``jit``) anything else is a ValueError. Inside ``jit`` (every train
step) they cannot be checked while tracing; there a label outside ``[0, V)`` — negative ids
included, which indexing would otherwise wrap around to ``V - 1`` — makes its position's loss
NaN, so the mean is NaN and :func:`~rnnjax.make_train_step`'s guard skips the step instead of
training towards a wrong class. ``sequence_accuracy`` is NaN for such labels too.
"""

from __future__ import annotations

from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
import optax

from rnnjax._checks import (
    batch_major_axis,
    check_array,
    check_bool,
    check_float,
    check_lengths,
    is_concrete,
    shape_str,
    steps_mask,
)

Array = jax.Array

_REDUCTIONS = ("mean", "sum", "none")


def mask_from_lengths(lengths: Array, num_steps: int, *, time_major: bool = True) -> Array:
    """``[T, *batch]`` bool mask, True at ``t < lengths[b]`` (``[*batch, T]`` with ``time_major=False``).

    >>> mask_from_lengths(jnp.array([3, 1]), 4).astype(int)
    Array([[1, 1],
           [1, 0],
           [1, 0],
           [0, 0]], dtype=int32)
    """
    if not isinstance(num_steps, (int, np.integer)) or isinstance(num_steps, bool) or num_steps < 1:
        raise ValueError(f"num_steps: expected a positive int, got {num_steps!r}")
    if isinstance(lengths, (list, tuple, int, np.integer)):
        lengths = np.asarray(lengths)
    check_array("lengths", lengths)
    lengths = check_lengths(lengths, tuple(lengths.shape), int(num_steps), source="num_steps")
    mask = steps_mask(lengths, int(num_steps))
    return mask if check_bool("time_major", time_major) else jnp.moveaxis(mask, 0, -1)


def _time_first(time_major: bool, name: str, first: Any, lengths: Any, *others: Any):
    """Batch-major ``[*batch, T, ...]`` arrays (``time_major=False``) as time-major; ``(axis, arrays)``.

    The time axis of ``first`` is found as in ``rnnjax.scan`` (after the axes of ``lengths``, else
    the second from the end); ``others`` (labels, targets, a mask) have their time axis there too.
    """
    if check_bool("time_major", time_major):
        return None, (first, *others)
    axis = batch_major_axis(first, lengths, name=name)
    if lengths is not None and tuple(np.shape(lengths)) != tuple(first.shape[:axis]):
        raise ValueError(
            f"lengths: expected shape {shape_str(tuple(first.shape[:axis]))} (time_major=False: the batch axes "
            f"of {name} are the leading ones, as many as lengths has, the time axis after them), "
            f"got {tuple(np.shape(lengths))}"
        )
    moved = [a if a is None else jnp.moveaxis(jnp.asarray(a), axis, 0) for a in (first, *others)]
    return axis, moved


def _time_back(axis: int | None, values: Array, reduction: str) -> Array:
    """A ``reduction="none"`` result ``[T, *batch]`` back to ``[*batch, T]`` for batch-major input."""
    return values if axis is None or reduction != "none" else jnp.moveaxis(values, 0, axis)


def _resolve_mask(lengths, mask, time_shape: tuple, what: str) -> Array | None:
    """The ``[T, *batch]`` validity mask from ``lengths`` or ``mask`` (None: all valid)."""
    if lengths is not None and mask is not None:
        raise ValueError("lengths, mask: expected at most one of them, got both")
    num_steps, batch = time_shape[0], tuple(time_shape[1:])
    if lengths is not None:
        if isinstance(lengths, (list, tuple, int, np.integer)):
            lengths = np.asarray(lengths)
        check_array("lengths", lengths)
        lead = tuple(lengths.shape)
        if len(lead) > len(batch) or batch[: len(lead)] != lead:
            raise ValueError(
                f"lengths: expected shape {shape_str(batch)} or a leading part of it (the batch axes of "
                f"{what}; any axes after them belong to each step), got {lead}"
            )
        valid = steps_mask(check_lengths(lengths, lead, num_steps, source=what), num_steps)  # [T, *lead]
        return jnp.broadcast_to(valid.reshape(valid.shape + (1,) * (len(batch) - len(lead))), time_shape)
    if mask is not None:
        if isinstance(mask, (list, tuple)):
            mask = np.asarray(mask)
        check_array("mask", mask)
        if mask.dtype != jnp.bool_:
            raise TypeError(f"mask: expected a bool array, got dtype {mask.dtype}")
        if tuple(mask.shape) != tuple(time_shape):
            raise ValueError(
                f"mask: expected shape {shape_str(time_shape)} (the [T, *batch] axes of {what}), "
                f"got {tuple(mask.shape)}"
            )
        return jnp.asarray(mask)
    return None


def _check_reduction(reduction: str) -> None:
    if reduction not in _REDUCTIONS:
        raise ValueError(f"reduction: expected one of {_REDUCTIONS}, got {reduction!r}")


def _reduce(values: Array, mask: Array | None, reduction: str) -> Array:
    """Reduce per-position ``values`` (already zero at padding) as ``reduction`` says."""
    if reduction == "none":
        return values
    total = jnp.sum(values)
    if reduction == "sum":
        return total
    count = values.size if mask is None else jnp.sum(mask)
    return total / jnp.maximum(count, 1).astype(values.dtype)


def _check_labels(labels: Any, expected_shape: tuple, shown: tuple, num_classes: int, mask) -> Array:
    if isinstance(labels, (list, tuple)):
        labels = np.asarray(labels)
    check_array("labels", labels)
    if not jnp.issubdtype(labels.dtype, jnp.integer):
        raise TypeError(f"labels: expected an integer array of class ids, got dtype {labels.dtype}")
    if tuple(labels.shape) != tuple(expected_shape):
        raise ValueError(
            f"labels: expected shape {shape_str(shown)} (logits without the class axis), "
            f"got {tuple(labels.shape)}"
        )
    if is_concrete(labels) and (mask is None or is_concrete(mask)):
        values = np.asarray(labels)
        if mask is not None:
            values = values[np.asarray(mask)]
        if values.size and (values.min() < 0 or values.max() >= num_classes):
            raise ValueError(
                f"labels: expected ids in [0, {num_classes}) at valid positions "
                f"(logits.shape[-1] = {num_classes}), got min {values.min()} and max {values.max()}"
            )
    return jnp.asarray(labels)


def _check_logits(logits: Any, min_ndim: int, expected: str) -> None:
    check_float("logits", logits)
    if logits.ndim < min_ndim:
        raise ValueError(f"logits: expected shape {expected}, got {tuple(logits.shape)}")
    if logits.shape[-1] < 1:
        raise ValueError(f"logits: expected at least one class, got shape {tuple(logits.shape)}")


def _out_of_range(labels: Array, num_classes: int) -> Array:
    return (labels < 0) | (labels >= num_classes)


def _masked_cross_entropy(logits, labels, mask):
    """Per-position cross-entropy, zero at padding, NaN at a valid position whose label is out
    of range; padding inputs are replaced first."""
    if mask is not None:
        # Replace padding before the loss: a where() after it would still backpropagate
        # NaN * 0 = NaN from garbage logits, and out-of-range ids would index anything.
        logits = jnp.where(mask[..., None], logits, jnp.zeros((), logits.dtype))
        labels = jnp.where(mask, labels, 0)
    bad = _out_of_range(labels, logits.shape[-1])
    values = optax.softmax_cross_entropy_with_integer_labels(logits, jnp.where(bad, 0, labels))
    values = jnp.where(bad, jnp.array(jnp.nan, values.dtype), values)  # never a wrapped-around class
    if mask is not None:
        values = jnp.where(mask, values, jnp.zeros((), values.dtype))
    return values


def sequence_cross_entropy(
    logits: Array,
    labels: Array,
    *,
    lengths: Array | None = None,
    mask: Array | None = None,
    reduction: str = "mean",
    time_major: bool = True,
) -> Array:
    """Per-token softmax cross-entropy over valid positions (language models, tagging, seq2seq).

    ``loss = Σ_{valid t,b} -log softmax(logits[t, b])[labels[t, b]] / #valid`` for
    ``reduction="mean"``. For seq2seq training pass the decoder logits with the target lengths.

    Args:
      logits: ``[T, *batch, V]`` float.
      labels: ``[T, *batch]`` int ids in ``[0, V)`` (checked at valid positions when concrete;
        under ``jit`` an id outside makes the loss NaN, see the module docstring).
      lengths: optional ``[*b]`` ints in ``[0, T]``, ``*b`` all of ``*batch`` or a leading part
        of it (``[B]`` for per-pixel logits ``[T, B, H, W, V]``).
      mask: optional ``[T, *batch]`` bool, True where valid (instead of ``lengths``).
      reduction: ``"mean"``, ``"sum"`` or ``"none"`` (``[T, *batch]``, zero at padding).
      time_major: False for batch-major ``logits: [*batch, T, V]``, ``labels``/``mask``/the
        ``"none"`` result ``[*batch, T]``.

    Returns:
      A scalar, or ``[T, *batch]`` for ``reduction="none"``.

    >>> logits = jnp.zeros((3, 2, 4))                  # uniform over 4 classes
    >>> labels = jnp.array([[1, 2], [0, 9], [3, 9]])   # 9 is padding, never looked at
    >>> float(sequence_cross_entropy(logits, labels, lengths=jnp.array([3, 1])))  # log 4
    1.3862943649291992
    """
    axis, (logits, labels, mask) = _time_first(time_major, "logits", logits, lengths, labels, mask)
    _check_logits(logits, 2, "[T, *batch, V] (at least 2 axes)")
    _check_reduction(reduction)
    time_shape = tuple(logits.shape[:-1])
    valid = _resolve_mask(lengths, mask, time_shape, "logits")
    labels = _check_labels(labels, time_shape, (*time_shape,), logits.shape[-1], valid)
    return _time_back(axis, _reduce(_masked_cross_entropy(logits, labels, valid), valid, reduction), reduction)


def classification_cross_entropy(logits: Array, labels: Array, *, reduction: str = "mean") -> Array:
    """Softmax cross-entropy of one label per sequence (classification from a sequence).

    The logits usually come from a sequence-to-vector head (e.g. the last valid state), so no
    time axis is left and no mask is needed.

    Args:
      logits: ``[*batch, C]`` float.
      labels: ``[*batch]`` int ids in ``[0, C)`` (checked when concrete; under ``jit`` an id
        outside, negative included, makes the loss NaN).
      reduction: ``"mean"``, ``"sum"`` or ``"none"`` (``[*batch]``).

    >>> float(classification_cross_entropy(jnp.array([[0.0, 0.0]]), jnp.array([1])))  # log 2
    0.6931471824645996
    """
    _check_logits(logits, 1, "[*batch, C]")
    _check_reduction(reduction)
    batch = tuple(logits.shape[:-1])
    labels = _check_labels(labels, batch, batch, logits.shape[-1], None)
    return _reduce(_masked_cross_entropy(logits, labels, None), None, reduction)


def sequence_mse(
    predictions: Array,
    targets: Array,
    *,
    lengths: Array | None = None,
    mask: Array | None = None,
    reduction: str = "mean",
    time_major: bool = True,
) -> Array:
    """Mean squared error over valid positions (regression, forecasting).

    ``loss = Σ_{valid t,b} Σ_f (pred - target)² / (#valid · F)`` for ``reduction="mean"``;
    ``"none"`` gives the per-position mean over features, ``[T, *batch]``.

    Args:
      predictions: ``[T, *batch, F]`` float.
      targets: ``[T, *batch, F]`` float, same shape.
      lengths: optional ``[*b]`` ints in ``[0, T]``, ``*b`` all of ``*batch`` or a leading part
        of it (``[B]`` for frames ``[T, B, H, W, C]``: every pixel of a valid frame counts).
      mask: optional ``[T, *batch]`` bool, True where valid (instead of ``lengths``).
      reduction: ``"mean"``, ``"sum"`` or ``"none"``.
      time_major: False for batch-major ``[*batch, T, F]`` (mask and ``"none"`` result ``[*batch, T]``).

    >>> pred = jnp.array([[[1.0], [0.0]], [[3.0], [jnp.nan]]])   # [T=2, B=2, F=1]
    >>> float(sequence_mse(pred, jnp.zeros((2, 2, 1)), lengths=jnp.array([2, 1])))  # (1+0+9)/3
    3.3333332538604736
    """
    axis, (predictions, targets, mask) = _time_first(time_major, "predictions", predictions, lengths, targets, mask)
    check_float("predictions", predictions)
    if predictions.ndim < 2:
        raise ValueError(
            f"predictions: expected shape [T, *batch, F] (at least 2 axes), got {tuple(predictions.shape)}"
        )
    check_float("targets", targets)
    if tuple(targets.shape) != tuple(predictions.shape):
        raise ValueError(
            f"targets: expected shape {tuple(predictions.shape)} (that of predictions), "
            f"got {tuple(targets.shape)}"
        )
    _check_reduction(reduction)
    valid = _resolve_mask(lengths, mask, tuple(predictions.shape[:-1]), "predictions")
    err = predictions - targets
    if valid is not None:
        err = jnp.where(valid[..., None], err, jnp.zeros((), err.dtype))  # padding may hold NaN
    values = jnp.mean(jnp.square(err), axis=-1)  # [T, *batch]
    return _time_back(axis, _reduce(values, valid, reduction), reduction)


def sequence_accuracy(
    logits: Array, labels: Array, *, lengths: Array | None = None, mask: Array | None = None,
    time_major: bool = True,
) -> Array:
    """Fraction of valid positions where ``argmax(logits) == labels`` (0 when none is valid).

    Args:
      logits: ``[T, *batch, V]``; labels: ``[T, *batch]`` int; ``lengths`` (``[*batch]`` or a
        leading part of it), ``mask``, ``time_major`` as in :func:`sequence_cross_entropy`.

    >>> logits = jnp.array([[[0.0, 1.0]], [[1.0, 0.0]]])   # [T=2, B=1, V=2] predicts 1, 0
    >>> float(sequence_accuracy(logits, jnp.array([[1], [1]])))
    0.5
    """
    _, (logits, labels, mask) = _time_first(time_major, "logits", logits, lengths, labels, mask)
    _check_logits(logits, 2, "[T, *batch, V] (at least 2 axes)")
    time_shape = tuple(logits.shape[:-1])
    valid = _resolve_mask(lengths, mask, time_shape, "logits")
    labels = _check_labels(labels, time_shape, time_shape, logits.shape[-1], valid)
    hits = (jnp.argmax(logits, axis=-1) == labels).astype(jnp.float32)
    hits = jnp.where(_out_of_range(labels, logits.shape[-1]), jnp.nan, hits)  # under jit: NaN, not a miss
    if valid is not None:
        hits = jnp.where(valid, hits, 0.0)
    return _reduce(hits, valid, "mean")


__all__ = [
    "classification_cross_entropy",
    "mask_from_lengths",
    "sequence_accuracy",
    "sequence_cross_entropy",
    "sequence_mse",
]
