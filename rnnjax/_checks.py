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

