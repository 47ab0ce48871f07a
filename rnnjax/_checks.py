"""Argument checks shared by the public entry points, and the padding helpers they share.

Every check raises ``ValueError``/``TypeError`` naming the argument, what was expected and
what was given. They look only at static shapes and dtypes, so they cost nothing under
``jit`` (they run once, while tracing).
"""

from __future__ import annotations

import inspect
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np


def shape_str(expected: tuple) -> str:
    """Format an expected shape whose entries are ints or axis names."""
    return "[" + ", ".join(str(e) for e in expected) + "]"


def check_array(name: str, x: Any) -> None:
    if not hasattr(x, "shape") or not hasattr(x, "dtype"):
        raise TypeError(f"{name}: expected an array, got {type(x).__name__}")


def check_float(name: str, x: Any) -> None:
    check_array(name, x)
    if not jnp.issubdtype(x.dtype, jnp.floating):
        raise TypeError(f"{name}: expected a floating-point array, got dtype {x.dtype}")


def check_shape(name: str, x: Any, expected: tuple, *, shown: tuple | None = None) -> None:
    """Raise unless ``x.shape == expected``; ``shown`` is the shape as the message prints it."""
    check_array(name, x)
    if tuple(x.shape) != tuple(expected):
        raise ValueError(
            f"{name}: expected shape {shape_str(shown if shown is not None else expected)}, "
            f"got {tuple(x.shape)}"
        )


def is_concrete(x: Any) -> bool:
    """True when ``x`` holds values known now (not a tracer inside jit/grad/vmap)."""
    return not isinstance(x, jax.core.Tracer)


def steps_mask(lengths: Any, num_steps: int):
    """``[T, *batch]`` bool, True at ``t < lengths``; ``lengths`` already validated (may be traced)."""
    t = jnp.arange(num_steps).reshape((num_steps,) + (1,) * jnp.ndim(lengths))
    return t < lengths


def check_lengths(lengths: Any, batch_shape: tuple, num_steps: int, *, name: str = "lengths",
                  source: str = "xs", steps_name: str | None = None):
    """Validate ``lengths: [*batch]`` of integers in ``[0, T]``; returns it as a jax array.

    ``source`` names the array whose batch axes ``lengths`` covers, ``steps_name`` says where
    ``T`` comes from (default ``T = {source}.shape[0]``). Values are checked only when
    concrete; under ``jit`` they cannot be inspected, and a value outside ``[0, T]`` then
    behaves like the nearest bound (documented on ``rnnjax.scan``).
    """
    if isinstance(lengths, (list, tuple, int, np.integer)):
        lengths = np.asarray(lengths)
    check_array(name, lengths)
    if not jnp.issubdtype(lengths.dtype, jnp.integer):
        raise TypeError(f"{name}: expected an integer array, got dtype {lengths.dtype}")
    if tuple(lengths.shape) != tuple(batch_shape):
        raise ValueError(
            f"{name}: expected shape {shape_str(batch_shape)} (the batch axes of {source}), "
            f"got {tuple(lengths.shape)}"
        )
    if is_concrete(lengths):
        values = np.asarray(lengths)
        if values.size and (values.min() < 0 or values.max() > num_steps):
            raise ValueError(
                f"{name}: expected values in [0, {num_steps}] "
                f"({steps_name or 'T = ' + (source if source == 'num_steps' else source + '.shape[0]')}), "
                f"got min {values.min()} and max {values.max()}"
            )
    return jnp.asarray(lengths)


def check_seq_lengths(lengths: Any, xs: Any, *, source: str = "xs"):
    """Validate ``lengths`` of a time-major ``xs: [T, *batch, *features]``; ``(lengths, batch)``.

    The batch axes of ``xs`` are the axes of ``lengths``: any leading part of ``xs.shape[1:-1]``
    (``[B]`` for spatial inputs ``[T, B, *spatial, C]``, whose other axes belong to the step).
    Anything else is refused with the message of ``check_lengths`` against ``xs.shape[1:-1]``.
    """
    full = tuple(xs.shape[1:-1])
    if isinstance(lengths, (list, tuple, int, np.integer)):
        lengths = np.asarray(lengths)
    shape = tuple(getattr(lengths, "shape", ()))
    batch = shape if len(shape) <= len(full) and full[: len(shape)] == shape else full
    return check_lengths(lengths, batch, xs.shape[0], source=source), batch


def check_resets(resets: Any, xs: Any):
    """Validate ``resets: [T, *batch]`` bool of a time-major ``xs``; returns ``(resets, batch)``.

    As for ``lengths``, ``*batch`` may be any leading part of ``xs.shape[1:-1]``.
    """
    if isinstance(resets, (list, tuple)):
        resets = np.asarray(resets)
    check_array("resets", resets)
    if resets.dtype != jnp.bool_:
        raise TypeError(f"resets: expected a bool array, got dtype {resets.dtype}")
    full, shape = (xs.shape[0], *xs.shape[1:-1]), tuple(resets.shape)
    if not (1 <= len(shape) <= len(full) and full[: len(shape)] == shape):
        raise ValueError(
            f"resets: expected shape {shape_str(full)} (the [T, *batch] axes of xs), got {shape}"
        )
    return jnp.asarray(resets), shape[1:]


def check_carry_batch(carry: Any, batch: tuple) -> None:
    """With resets, every carry leaf starts with their batch axes (the reset picks per sequence)."""
    for path, leaf in jax.tree_util.tree_flatten_with_path(carry)[0]:
        if tuple(jnp.shape(leaf)[: len(batch)]) != batch:
            raise ValueError(
                f"carry{jax.tree_util.keystr(path)}: with resets, every carry leaf must start with "
                f"the batch axes {shape_str(batch)} of xs, got shape {tuple(jnp.shape(leaf))}"
            )


def fresh_steps(resets: Any, lengths: Any, num_steps: int, reverse: bool) -> Any:
    """``[T, *batch]`` bool: the steps before which the loop sets the carry to zeros.

    ``resets`` (checked, ``[T, *rb]``) marks where each packed sequence starts. Forward, that
    is the step itself; in reverse, the loop meets a sequence at its last step, the one before
    the next boundary. Resets on padding (``t >= lengths``) are ignored.
    """
    if resets is None:
        return None
    if reverse:
        resets = jnp.concatenate([resets[1:], jnp.zeros_like(resets[:1])])
    if lengths is None:
        return resets
    valid = steps_mask(lengths - 1 if reverse else lengths, num_steps)  # reverse: t + 1 < length
    rank = max(resets.ndim, valid.ndim)
    resets = resets.reshape(resets.shape + (1,) * (rank - resets.ndim))
    return resets & valid.reshape(valid.shape + (1,) * (rank - valid.ndim))


def batch_major_axis(xs: Any, lengths: Any = None, *, name: str = "xs", feature_axes: int = 1,
                     resets: Any = None) -> int:
    """The time axis of a batch-major ``xs: [*batch, T, *features]`` (``time_major=False``).

    The batch axes are those of ``lengths`` when given, else those of ``resets: [*batch, T]``;
    otherwise every axis before the last ``feature_axes + 1`` (one feature axis:
    ``[*batch, T, F]``; token ids: ``feature_axes=0``).
    """
    check_array(name, xs)
    if lengths is not None:
        axis = np.ndim(lengths)
    elif resets is not None:
        axis = np.ndim(resets) - 1
    else:
        axis = xs.ndim - 1 - feature_axes
    if not 0 <= axis < xs.ndim - feature_axes:
        raise ValueError(
            f"{name}: expected a batch-major shape [*batch, T{', F' if feature_axes else ''}] "
            f"(time_major=False){' with *batch the axes of lengths' if lengths is not None else ''}, "
            f"got {tuple(xs.shape)}"
        )
    return int(axis)


def resets_time_major(resets: Any) -> Any:
    """Batch-major ``resets: [*batch, T]`` -> ``[T, *batch]`` (None stays None)."""
    if resets is None:
        return None
    resets = np.asarray(resets) if isinstance(resets, (list, tuple)) else resets
    check_array("resets", resets)
    return jnp.moveaxis(jnp.asarray(resets), -1, 0)


def time_to(tree: Any, axis: int) -> Any:
    """Move every leaf's leading time axis to ``axis`` (at most its last axis)."""
    return jax.tree_util.tree_map(lambda a: jnp.moveaxis(a, 0, min(axis, jnp.ndim(a) - 1)), tree)


def broadcast_lengths(lengths: Any, batch: tuple) -> Any:
    """``lengths: [*b]`` broadcast to ``[*batch]`` (``b`` a leading part of ``batch``)."""
    return jnp.broadcast_to(lengths.reshape(lengths.shape + (1,) * (len(batch) - lengths.ndim)), batch)


def takes_positional(fn: Any, n: int) -> bool | None:
    """Whether ``fn`` accepts ``n`` positional arguments (None when it cannot be inspected)."""
    try:
        sig = inspect.signature(fn)
    except (TypeError, ValueError):  # some builtins and C extensions
        return None
    try:
        sig.bind(*range(n))
    except TypeError:
        return False
    return True



def check_params_type(params: Any, expected: type) -> None:
    """``params`` must carry ``expected``'s fields (e.g. no LSTMParams into a peephole step)."""
    missing = [f for f in expected._fields if not hasattr(params, f)]
    if missing:
        raise TypeError(
            f"params: expected {expected.__name__}({', '.join(expected._fields)}), got "
            f"{type(params).__name__} without {', '.join(missing)}"
        )


def check_lstm_carry(carry: Any, *, made_by: str = "cell.initial_carry(batch_shape)") -> None:
    """An ``LSTMState(h, c)``-like carry (anything with ``h`` and ``c``)."""
    if not (hasattr(carry, "h") and hasattr(carry, "c")):
        given = f"an array of shape {tuple(carry.shape)}" if hasattr(carry, "shape") else type(carry).__name__
        raise TypeError(f"carry: expected an LSTMState(h, c) ({made_by} makes one), got {given}")


def check_int(name: str, value: Any, *, minimum: int = 1, allow_none: bool = False) -> int | None:
    """An int ``>= minimum`` (``None`` too with ``allow_none``); returns it as a Python int.

    The message reads "a positive int" for ``minimum == 1`` and "an int >= m" otherwise.
    """
    if value is None and allow_none:
        return None
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < minimum:
        what = "a positive int" if minimum == 1 else f"an int >= {minimum}"
        raise ValueError(f"{name}: expected {what}{' or None' if allow_none else ''}, got {value!r}")
    return int(value)


def check_sizes(**sizes: Any) -> None:
    """Each keyword (e.g. ``input_size=8, hidden_size=32``) must be a positive int."""
    for name, value in sizes.items():
        check_int(name, value)


def check_key(key: Any, *, name: str = "key") -> None:
    """A PRNG key: a typed key array (``jax.random.key``) or a raw ``uint32[2]``."""
    if not hasattr(key, "dtype") or not hasattr(key, "shape"):
        raise TypeError(f"{name}: expected a PRNG key such as jax.random.key(0), got {type(key).__name__}")
    typed = jnp.issubdtype(key.dtype, jax.dtypes.prng_key)
    raw = key.dtype == jnp.uint32 and tuple(key.shape) == (2,)
    if not (typed and key.shape == ()) and not raw:
        raise TypeError(
            f"{name}: expected a single PRNG key such as jax.random.key(0), got an array of "
            f"shape {tuple(key.shape)} and dtype {key.dtype}"
        )


def check_dtype(name: str, value: Any, *, allow_none: bool = False) -> None:
    """A floating-point dtype (``jnp.float32``, ``"bfloat16"``, ...), or None with ``allow_none``."""
    if value is None and allow_none:
        return
    try:  # jnp.dtype(None) is float64: None is refused explicitly
        ok = value is not None and jnp.issubdtype(jnp.dtype(value), jnp.floating)
    except TypeError:
        ok = False
    if not ok:
        raise TypeError(f"{name}: expected a floating-point dtype such as jnp.float32{' or None' if allow_none else ''}, "
                        f"got {value!r}")


def check_bool(name: str, value: Any) -> bool:
    if not isinstance(value, bool):
        raise TypeError(f"{name}: expected a bool, got {value!r}")
    return value


def check_unroll(unroll: Any) -> int | bool:
    """``unroll`` of the time loops: an int >= 1, or True for a full unroll."""
    if not (unroll is True or (isinstance(unroll, int) and not isinstance(unroll, bool) and unroll >= 1)):
        raise ValueError(f"unroll: expected an int >= 1 or True, got {unroll!r}")
    return unroll


IMPLS = ("auto", "loop")


def check_impl(impl: Any) -> bool:
    """``impl`` of the time loops and composers; True when the fast paths may run."""
    if impl not in IMPLS:
        raise ValueError(f"impl: expected one of {list(IMPLS)}, got {impl!r}")
    return impl == "auto"


def check_rate(name: str, rate: Any) -> float:
    """A dropout-style rate in ``[0, 1)``."""
    if isinstance(rate, bool) or not isinstance(rate, (int, float)) or not 0.0 <= rate < 1.0:
        raise ValueError(f"{name}: expected a float in [0, 1), got {rate!r}")
    return float(rate)


def _is_dim(d: Any) -> bool:
    """A batch dimension: a non-negative int, or a symbolic dimension of ``jax.export``."""
    if isinstance(d, bool):
        return False
    if isinstance(d, (int, np.integer)):
        return d >= 0
    return _symbolic(d)


def _symbolic(d: Any) -> bool:
    return jax.export.is_symbolic_dim(d)


def check_batch_shape(batch_shape: Any) -> tuple:
    """``batch_shape`` (an int, or a tuple/list of ints or symbolic dims) as a tuple."""
    if isinstance(batch_shape, (int, np.integer)) and not isinstance(batch_shape, bool):
        batch_shape = (batch_shape,)
    if not isinstance(batch_shape, (tuple, list)) or not all(_is_dim(d) for d in batch_shape):
        raise TypeError(f"batch_shape: expected a tuple of ints such as (4,), got {batch_shape!r}")
    return tuple(d if _symbolic(d) else int(d) for d in batch_shape)


# ------------------------------------------------------------------------ time loops


def check_xs(xs: Any, *, name: str = "xs", floating: bool = False) -> None:
    """A time-major sequence ``[T, *batch, I]`` with ``T >= 1`` (floating-point if asked)."""
    (check_float if floating else check_array)(name, xs)
    if xs.ndim < 2:
        raise ValueError(f"{name}: expected shape [T, *batch, I] (at least 2 axes), got {tuple(xs.shape)}")
    if xs.shape[0] == 0:
        raise ValueError(f"{name}: expected at least one time step (T >= 1), got shape {tuple(xs.shape)}")


def is_sequence_tree(xs: Any) -> bool:
    """Whether ``xs`` is a pytree of sequences (a dict, tuple, ... of arrays) rather than one array."""
    return not hasattr(xs, "shape")


def check_xs_tree(xs: Any, *, floating: bool = False) -> Any:
    """``xs`` as one array or a pytree of arrays, each leaf ``[T, *batch, ...]`` with the same
    ``T >= 1``; returns the first leaf (whose ``[T, *batch, F]`` gives the batch axes when no
    ``lengths`` or ``resets`` do)."""
    if not is_sequence_tree(xs):
        check_xs(xs, floating=floating)
        return xs
    leaves = jax.tree_util.tree_flatten_with_path(xs)[0]
    if not leaves:
        raise ValueError("xs: expected an array [T, *batch, I] or a pytree of them, got no arrays")
    if not all(hasattr(leaf, "shape") for _, leaf in leaves):  # nested lists of numbers: not arrays
        check_xs(xs, floating=floating)
    for path, leaf in leaves:
        check_xs(leaf, name=f"xs{jax.tree_util.keystr(path)}", floating=floating)
        if leaf.shape[0] != leaves[0][1].shape[0]:
            raise ValueError(
                f"xs{jax.tree_util.keystr(path)}: expected {leaves[0][1].shape[0]} time steps like "
                f"xs{jax.tree_util.keystr(leaves[0][0])} (every leaf [T, *batch, ...]), got shape {tuple(leaf.shape)}"
            )
    return leaves[0][1]


def check_tree_batch(xs: Any, batch: tuple, what: str) -> None:
    """Every leaf of a pytree ``xs`` has the batch axes ``batch`` (those of ``lengths``/``resets``)."""
    for path, leaf in jax.tree_util.tree_flatten_with_path(xs)[0]:
        if tuple(leaf.shape[1 : 1 + len(batch)]) != batch:
            raise ValueError(
                f"xs{jax.tree_util.keystr(path)}: expected shape [T, {', '.join(map(str, batch))}, ...] (the batch "
                f"axes of {what}), got {tuple(leaf.shape)}"
            )


def _shapes(xs: Any) -> Any:
    return tuple(xs.shape) if not is_sequence_tree(xs) else jax.tree_util.tree_map(lambda a: tuple(a.shape), xs)


def check_step_output(step, params, carry, xs, batch: tuple | None):
    """Trace one step abstractly; check the carry comes back unchanged in shape and dtype."""
    try:
        out = jax.eval_shape(step, params, carry, jax.tree_util.tree_map(lambda a: a[0], xs))
    except (ValueError, TypeError) as e:
        ref = jax.tree_util.tree_leaves(xs)[0]
        e.add_note(f"(raised by step(params, carry, xs[0]) with xs of shape {_shapes(xs)}: xs is time-major "
                   f"[T, *batch, I], so T = {ref.shape[0]} and *batch = {tuple(ref.shape[1:-1])})")
        raise
    if not (isinstance(out, tuple) and len(out) == 2):
        if isinstance(out, tuple):
            got = f"a tuple of {len(out)}"
        elif hasattr(out, "shape"):
            got = f"one array of shape {tuple(out.shape)}"
        else:
            got = type(out).__name__
        raise TypeError(f"step: expected it to return (carry, y), got {got}")
    carry_out, y = out
    in_leaves, in_tree = jax.tree_util.tree_flatten_with_path(carry)
    out_leaves, out_tree = jax.tree_util.tree_flatten_with_path(carry_out)
    if in_tree != out_tree:
        raise ValueError(
            f"carry: step must return a carry of the same structure it was given; "
            f"given {in_tree}, returned {out_tree}"
        )
    for (path, a), (_, b) in zip(in_leaves, out_leaves, strict=True):
        a_shape, a_dtype = jnp.shape(a), jnp.result_type(a)
        if a_shape != b.shape or a_dtype != b.dtype:
            raise ValueError(
                f"carry{jax.tree_util.keystr(path)}: step returned shape {b.shape} {b.dtype} for a "
                f"carry of shape {a_shape} {a_dtype}; they must match (check the carry's batch "
                f"shape against xs {_shapes(xs)} and its dtype)"
            )
    if batch is not None:
        n = len(batch)
        for what, tree in (("carry", carry_out), ("y", y)):
            for path, leaf in jax.tree_util.tree_flatten_with_path(tree)[0]:
                if tuple(leaf.shape[:n]) != batch:
                    raise ValueError(
                        f"{what}{jax.tree_util.keystr(path)}: with lengths, every carry and output "
                        f"leaf must start with the batch axes {shape_str(batch)} of xs, got "
                        f"shape {tuple(leaf.shape)}"
                    )


def where_batch(flag: Any, new: Any, old: Any) -> Any:
    """Per-leaf ``where(flag, new, old)`` with ``flag: [*batch]`` broadcast over trailing axes."""

    def pick(n, o):
        return jnp.where(flag.reshape(flag.shape + (1,) * (jnp.ndim(o) - flag.ndim)), n, o)

    return jax.tree_util.tree_map(pick, new, old)


def flip_valid(xs: Any, lengths: Any) -> Any:
    """Reverse each sequence's valid prefix of ``xs: [T, *batch, ...]`` along time; padding
    stays where it is. ``lengths: [*batch]`` already checked and within ``[0, T]``, or None
    (every sequence full: a plain reversal)."""
    if lengths is None:
        return xs[::-1]
    num_steps = xs.shape[0]
    t = jnp.arange(num_steps).reshape((num_steps,) + (1,) * jnp.ndim(lengths))
    idx = jnp.where(t < lengths, lengths - 1 - t, t)  # [T, *batch]
    idx = idx.reshape(idx.shape + (1,) * (xs.ndim - idx.ndim))
    return jnp.take_along_axis(xs, jnp.broadcast_to(idx, xs.shape), axis=0)
