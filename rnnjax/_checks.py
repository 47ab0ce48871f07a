"""Argument checks shared by the public entry points.

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
                  source: str = "xs"):
    """Validate ``lengths: [*batch]`` of integers in ``[0, T]``; returns it as a jax array.

    Values are checked only when concrete; under ``jit`` they cannot be inspected, and a value
    outside ``[0, T]`` then behaves like the nearest bound (documented on ``rnnjax.scan``).
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
                f"(T = {source if source == 'num_steps' else source + '.shape[0]'}), "
                f"got min {values.min()} and max {values.max()}"
            )
    return jnp.asarray(lengths)


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


def check_bool(name: str, value: Any) -> bool:
    if not isinstance(value, bool):
        raise TypeError(f"{name}: expected a bool, got {value!r}")
    return value


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
