"""The time loop: ``rnnjax.scan`` over any step function, with lengths and reversal."""

from __future__ import annotations

from collections.abc import Callable
from functools import partial
from typing import Any

import jax
import jax.numpy as jnp
from jax import lax

from rnnjax._checks import check_array, check_lengths, shape_str
from rnnjax._fused import fused_kind, fused_scan
from rnnjax.cells import split_step

Array = jax.Array


def _check_xs(xs: Any) -> None:
    check_array("xs", xs)
    if xs.ndim < 2:
        raise ValueError(f"xs: expected shape [T, *batch, I] (at least 2 axes), got {tuple(xs.shape)}")
    if xs.shape[0] == 0:
        raise ValueError(f"xs: expected at least one time step (T >= 1), got shape {tuple(xs.shape)}")


def _check_step_output(step, params, carry, xs, batch: tuple | None):
    """Trace one step abstractly; check the carry comes back unchanged in shape and dtype."""
    try:
        out = jax.eval_shape(step, params, carry, xs[0])
    except (ValueError, TypeError) as e:
        e.add_note(f"(raised by step(params, carry, xs[0]) with xs of shape {tuple(xs.shape)}: xs is time-major "
                   f"[T, *batch, I], so T = {xs.shape[0]} and *batch = {tuple(xs.shape[1:-1])})")
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
                f"shape against xs {tuple(xs.shape)} and its dtype)"
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


def _check_builtin_xs(params, xs) -> None:
    w_ih = getattr(params, "w_ih", None)
    if w_ih is not None and hasattr(w_ih, "shape") and w_ih.ndim == 2 and xs.shape[-1] != w_ih.shape[0]:
        raise ValueError(
            f"xs: expected shape [T, *batch, {w_ih.shape[0]}] (input_size from params.w_ih), "
            f"got {tuple(xs.shape)}"
        )


def _where_valid(valid: Array, new, old):
    """Per-leaf ``where(valid, new, old)`` with ``valid: [*batch]`` broadcast over trailing axes."""

    def pick(n, o):
        mask = valid.reshape(valid.shape + (1,) * (jnp.ndim(n) - valid.ndim))
        return jnp.where(mask, n, o)

    return jax.tree_util.tree_map(pick, new, old)


def scan(
    step: Callable,
    params: Any,
    carry: Any,
    xs: Array,
    *,
    lengths: Array | None = None,
    reverse: bool = False,
    unroll: int | bool = 1,
):
    """Run ``step`` over the time axis of ``xs`` with ``jax.lax.scan``.

    Args:
      step: ``step(params, carry, x) -> (carry, y)``, built-in or your own.
      params: the step's parameters.
      carry: initial carry (e.g. ``cell.initial_carry(batch_shape)``).
      xs: ``[T, *batch, I]``, time-major.
      lengths: optional ``[*batch]`` ints in ``[0, T]``; positions ``t >= length`` are padding:
        there the carry is held and ``ys`` is zero, so the returned carry is each sequence's
        carry after its last valid step. Values are range-checked when concrete; under ``jit``
        they cannot be, and a value above ``T`` acts as ``T``, a negative one as ``0``.
      reverse: run each sequence from its own last valid step back to step 0; ``ys`` stays in
        input order (``ys[t]`` belongs to ``xs[t]``).
      unroll: passed to ``lax.scan`` (an int >= 1, or True for a full unroll).

    Returns:
      ``(carry, ys)`` with ``ys: [T, *batch, H]`` (or whatever pytree the step outputs, stacked).

    ``elman_step``, ``lstm_step`` and ``gru_step`` (with their own params and carry types) run
    through fused kernels whose values and gradients equal the plain step loop: the backward
    pass is a reversed scan that carries only the state gradients, and the weight gradients are
    single matmuls over all steps. They work under ``jit``, ``vmap`` and reverse-mode
    differentiation of any order; forward mode (``jax.jvp``, ``jax.jacfwd``) is not available
    on them; wrap the step (``lambda p, c, x: lstm_step(p, c, x)``) to run the plain loop there.

    >>> cell = lstm(input_size=3, hidden_size=4)
    >>> carry, ys = scan(cell.step, cell.init(jax.random.key(0)), cell.initial_carry((2,)), jnp.ones((5, 2, 3)), lengths=jnp.array([5, 2]))
    >>> ys.shape, float(abs(ys[2:, 1]).max())
    ((5, 2, 4), 0.0)
    """
    if not callable(step):
        raise TypeError(f"step: expected a function step(params, carry, x), got {type(step).__name__}")
    _check_xs(xs)
    if not isinstance(reverse, bool):
        raise TypeError(f"reverse: expected a bool, got {reverse!r}")
    if not (unroll is True or (isinstance(unroll, int) and not isinstance(unroll, bool) and unroll >= 1)):
        raise ValueError(f"unroll: expected an int >= 1 or True, got {unroll!r}")
    num_steps = xs.shape[0]
    batch = tuple(xs.shape[1:-1])
    if lengths is not None:
        lengths = check_lengths(lengths, batch, num_steps)

    split = split_step(step)
    if split is not None:
        _check_builtin_xs(params, xs)
    _check_step_output(step, params, carry, xs, batch if lengths is not None else None)

    kind = fused_kind(step, params, carry)
    if kind is not None:
        return fused_scan(kind, params, carry, xs, lengths, reverse, unroll)
    # Other steps run as they are. Hoisting the input projection of the remaining built-ins
    # (one [T*B, I] x [I, GH] matmul before the loop) measured slower on XLA:CPU than the
    # per-step product (LSTM B=32 T=128 I=128 H=256: CPU time +70% inference, +20% training).
    body = partial(step, params)

    if lengths is None:
        return lax.scan(body, carry, xs, reverse=reverse, unroll=unroll)

    def masked(c, inp):
        x, t = inp
        new_c, y = body(c, x)
        valid = t < lengths  # [*batch]
        zeros = jax.tree_util.tree_map(jnp.zeros_like, y)
        return _where_valid(valid, new_c, c), _where_valid(valid, y, zeros)

    # Forward: padding comes after the valid steps and only holds the carry. Reverse: lax.scan
    # visits t = T-1 .. 0, so the held carry passes through the padding untouched and each
    # sequence starts at its own last valid step.
    return lax.scan(masked, carry, (xs, jnp.arange(num_steps)), reverse=reverse, unroll=unroll)


def flip_sequences(xs: Array, lengths: Array | None = None) -> Array:
    """Reverse each sequence's valid prefix along time; padding stays where it is.

    ``xs: [T, *batch, ...]``, ``lengths: [*batch]`` (all ``T`` when None). Applying it twice
    gives ``xs`` back.

    >>> flip_sequences(jnp.arange(4)[:, None, None] * jnp.ones((4, 2, 1)), jnp.array([4, 2]))[:, :, 0]
    Array([[3., 1.],
           [2., 0.],
           [1., 2.],
           [0., 3.]], dtype=float32)
    """
    check_array("xs", xs)
    if xs.ndim < 1 or xs.shape[0] == 0:
        raise ValueError(f"xs: expected shape [T, ...] with T >= 1, got {tuple(xs.shape)}")
    if lengths is None:
        return xs[::-1]
    num_steps = xs.shape[0]
    batch = tuple(lengths.shape) if hasattr(lengths, "shape") else ()
    if tuple(xs.shape[1 : 1 + len(batch)]) != batch:
        raise ValueError(
            f"lengths: expected the shape {tuple(xs.shape[1:1 + len(batch)])} of xs's leading batch axes, "
            f"got {batch}"
        )
    # under jit, values outside [0, T] cannot be rejected: they act as the nearest bound, as in scan
    lengths = jnp.clip(check_lengths(lengths, batch, num_steps), 0, num_steps)
    t = jnp.arange(num_steps).reshape((num_steps,) + (1,) * len(batch))
    idx = jnp.where(t < lengths, lengths - 1 - t, t)  # [T, *batch]
    idx = idx.reshape(idx.shape + (1,) * (xs.ndim - idx.ndim))
    return jnp.take_along_axis(xs, jnp.broadcast_to(idx, xs.shape), axis=0)


__all__ = ["scan", "flip_sequences"]
