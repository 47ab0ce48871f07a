"""The time loops: ``rnnjax.scan`` over any step function, with lengths and reversal, and the
scans for long sequences built on it (truncated BPTT with resets, rematerialised scans, chunked
streams)."""

from __future__ import annotations

import math
from collections.abc import Callable
from functools import partial
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
from jax import lax

from rnnjax import _registry
from rnnjax._checks import (
    batch_major_axis,
    broadcast_lengths,
    check_array,
    check_bool,
    check_carry_batch,
    check_impl,
    check_int,
    check_lengths,
    check_resets,
    check_seq_lengths,
    check_step_output,
    check_tree_batch,
    check_unroll,
    check_xs_tree,
    flip_valid,
    fresh_steps,
    is_sequence_tree,
    resets_time_major,
    time_to,
    where_batch,
)
from rnnjax._fused import run_fused

Array = jax.Array


def scan(
    step: Callable,
    params: Any,
    carry: Any,
    xs: Array,
    *,
    lengths: Array | None = None,
    reverse: bool = False,
    unroll: int | bool = 1,
    resets: Array | None = None,
    time_major: bool = True,
    impl: str = "auto",
):
    """Run ``step`` over the time axis of ``xs`` with ``jax.lax.scan``.

    Args:
      step: ``step(params, carry, x) -> (carry, y)``, built-in or your own.
      params: the step's parameters.
      carry: initial carry (e.g. ``cell.initial_carry(batch_shape)``).
      xs: ``[T, *batch, I]``, time-major; or a pytree of such arrays (e.g. ``{"obs": [T, *batch,
        O], "act": [T, *batch, A]}``, several feature streams), each leaf ``[T, *batch, ...]``
        with the same ``T``, passed to the step as the same pytree of ``[*batch, ...]`` slices.
        The batch axes are those of ``lengths`` (or ``resets``), else those of the first leaf
        ``[T, *batch, F]``. Fused kernels take one array: a pytree runs the step loop.
      lengths: optional ``[*batch]`` ints in ``[0, T]``; positions ``t >= length`` are padding:
        there the carry is held and ``ys`` is zero, so the returned carry is each sequence's
        carry after its last valid step. Values are range-checked when concrete; under ``jit``
        they cannot be, and a value above ``T`` acts as ``T``, a negative one as ``0``.
      reverse: run each sequence from its own last valid step back to step 0; ``ys`` stays in
        input order (``ys[t]`` belongs to ``xs[t]``).
      unroll: time steps per iteration of the compiled loop (an int >= 1, or True for a full
        unroll), passed to ``lax.scan`` and to the fused kernels' forward and backward loops.
        Larger values trade compile time and code size for fewer loop iterations; what pays
        depends on the platform and the sizes: measure (``benchmarks/unroll.py``; the guide
        "Choosing unroll and the fast paths").
      resets: optional ``[T, *batch]`` bool, True where a new sequence starts: several
        sequences packed one after another in a row (``rnnjax.pack_sequences``). Forward, the
        carry is set to zeros (``cell.initial_carry``) just before ``xs[t]`` is consumed
        wherever ``resets[t]``; in ``reverse``, each packed sequence runs from its own last step
        back to its first, starting from zeros (the carry is reset after the step before each
        boundary). Nothing, values or gradients, crosses a boundary. With ``lengths``, resets at
        padding steps are ignored; the returned carry is the last sequence's final carry
        (forward) or the first one's (reverse). Carry leaves must start with the batch axes of
        ``resets``.
      time_major: False for batch-major ``xs: [*batch, T, I]``, ``ys: [*batch, T, H]`` and
        ``resets: [*batch, T]`` (the batch axes are those of ``lengths`` or ``resets``; without
        them, all axes before the last two). The time axis is moved to the front and back at
        the boundary; the loop is the same.
      impl: ``"auto"`` runs a registered step's fused kernel where it has one (Elman, LSTM,
        GRU); ``"loop"`` always runs the plain ``lax.scan`` of the step (same results; use it
        to compare, or where a kernel's transform is missing, e.g. forward mode).

    Returns:
      ``(carry, ys)`` with ``ys: [T, *batch, H]`` (or whatever pytree the step outputs, stacked).

    ``elman_step``, ``lstm_step`` and ``gru_step`` (with their own params and carry types) run
    through fused kernels whose values and gradients equal the plain step loop: the backward
    pass is a reversed scan that carries only the state gradients, and the weight gradients are
    single matmuls over all steps. They work under ``jit``, ``vmap`` and reverse-mode
    differentiation of any order, with lengths and resets; forward mode (``jax.jvp``,
    ``jax.jacfwd``) is not available on them; wrap the step (``lambda p, c, x: lstm_step(p, c,
    x)``) to run the plain loop there.

    >>> cell = lstm(input_size=3, hidden_size=4)
    >>> carry, ys = scan(cell.step, cell.init(jax.random.key(0)), cell.initial_carry((2,)), jnp.ones((5, 2, 3)), lengths=jnp.array([5, 2]))
    >>> ys.shape, float(abs(ys[2:, 1]).max())
    ((5, 2, 4), 0.0)
    """
    _check_step(step)
    if not check_bool("time_major", time_major):
        axis, xs = to_time_major(xs, lengths, resets)
        carry, ys = scan(step, params, carry, xs, lengths=lengths, reverse=reverse,
                         unroll=unroll, resets=resets_time_major(resets), impl=impl)
        return carry, time_to(ys, axis)
    ref = check_xs_tree(xs)
    check_bool("reverse", reverse)
    check_unroll(unroll)
    fused = check_impl(impl)
    batch = None
    if lengths is not None:
        lengths, batch = check_seq_lengths(lengths, ref)
        check_tree_batch(xs, batch, "lengths")
    if resets is not None:
        resets, reset_batch = check_resets(resets, ref)
        check_tree_batch(xs, reset_batch, "resets")
        check_carry_batch(carry, reset_batch)
        if batch is None or len(reset_batch) > len(batch):
            batch = reset_batch

    if not is_sequence_tree(xs):
        _registry.check_inputs(step, params, xs)
    check_step_output(step, params, carry, xs, batch)
    return _loop(step, params, carry, xs, lengths, fresh_steps(resets, lengths, ref.shape[0], reverse), reverse,
                 unroll, fused)


def _loop(step, params, carry, xs, lengths, fresh, reverse, unroll, fused=True):
    """The time loop on checked arguments; ``fresh`` from ``fresh_steps`` (or None); ``fused``:
    whether a registered fused kernel may run."""
    kernel = _registry.fused_kernel(step, params, carry) if fused and not is_sequence_tree(xs) else None
    num_steps = jax.tree_util.tree_leaves(xs)[0].shape[0]
    if kernel is not None:
        batch = tuple(xs.shape[1:-1])
        if lengths is not None:  # the kernels flatten every axis before the features into one
            lengths = broadcast_lengths(lengths, batch)
        if fresh is not None:
            fresh = jnp.broadcast_to(fresh.reshape(fresh.shape + (1,) * (1 + len(batch) - fresh.ndim)),
                                     (num_steps,) + batch)
        return run_fused(kernel, params, carry, xs, lengths, reverse, unroll, fresh)
    # Other steps run as they are. Hoisting the input projection of the remaining built-ins
    # (one [T*B, I] x [I, GH] matmul before the loop) measured slower on XLA:CPU than the
    # per-step product (LSTM B=32 T=128 I=128 H=256: CPU time +70% inference, +20% training).
    body = partial(step, params)
    if lengths is None and fresh is None:
        return lax.scan(body, carry, xs, reverse=reverse, unroll=unroll)

    def masked(c, inp):
        x, t, f = inp
        if f is not None:
            c = where_batch(f, jax.tree_util.tree_map(jnp.zeros_like, c), c)
        new_c, y = body(c, x)
        if lengths is None:
            return new_c, y
        valid = t < lengths  # [*batch]
        zeros = jax.tree_util.tree_map(jnp.zeros_like, y)
        return where_batch(valid, new_c, c), where_batch(valid, y, zeros)

    # Forward: padding comes after the valid steps and only holds the carry. Reverse: lax.scan
    # visits t = T-1 .. 0, so the held carry passes through the padding untouched and each
    # sequence starts at its own last valid step.
    return lax.scan(masked, carry, (xs, jnp.arange(num_steps), fresh), reverse=reverse, unroll=unroll)


def to_time_major(xs: Any, lengths: Any = None, resets: Any = None) -> tuple[int, Any]:
    """Batch-major ``xs`` (an array or a pytree of arrays) moved to time-major; returns the time
    axis it had and the moved ``xs``. Every leaf must have its time axis at the same place."""
    axes = {batch_major_axis(leaf, lengths, resets=resets) for leaf in jax.tree_util.tree_leaves(xs)}
    if len(axes) > 1:
        raise ValueError(
            f"xs: the leaves put their time axis at different places {sorted(axes)} (batch-major, the time "
            f"axis follows the batch axes); pass lengths or resets to name the batch axes"
        )
    axis = axes.pop() if axes else 0
    return axis, jax.tree_util.tree_map(lambda a: jnp.moveaxis(a, axis, 0), xs)


def flip_sequences(xs: Array, lengths: Array | None = None, *, time_major: bool = True) -> Array:
    """Reverse each sequence's valid prefix along time; padding stays where it is.

    ``xs: [T, *batch, ...]``, ``lengths: [*batch]`` (all ``T`` when None). Applying it twice
    gives ``xs`` back. ``time_major=False``: ``xs: [*batch, T, ...]`` (see ``rnnjax.scan``).

    >>> flip_sequences(jnp.arange(4)[:, None, None] * jnp.ones((4, 2, 1)), jnp.array([4, 2]))[:, :, 0]
    Array([[3., 1.],
           [2., 0.],
           [1., 2.],
           [0., 3.]], dtype=float32)
    """
    if is_sequence_tree(xs):  # a pytree of sequences: each leaf flipped alike
        return jax.tree_util.tree_map(lambda a: flip_sequences(a, lengths, time_major=time_major), xs)
    if not check_bool("time_major", time_major):
        axis = batch_major_axis(xs, lengths)
        return jnp.moveaxis(flip_sequences(jnp.moveaxis(xs, axis, 0), lengths), 0, axis)
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
    return flip_valid(xs, jnp.clip(check_lengths(lengths, batch, num_steps), 0, num_steps))


# ------------------------------------------------------------------------ long sequences


def _check_step(step: Any) -> None:
    if not callable(step):
        raise TypeError(f"step: expected a function step(params, carry, x), got {type(step).__name__}")


def truncated_scan(
    step: Callable,
    params: Any,
    carry: Any,
    xs: Array,
    *,
    truncate: int | None = None,
    resets: Array | None = None,
    reverse: bool = False,
    time_major: bool = True,
    unroll: int | bool = 1,
    impl: str = "auto",
):
    """``rnnjax.scan`` with gradients truncated every ``truncate`` steps, and carry resets.

    The forward pass is that of ``rnnjax.scan`` (with resets and ``reverse``): outputs never
    depend on ``truncate``. The backward pass is truncated BPTT: the time axis is cut into
    chunks of ``truncate`` steps and the carry enters each chunk after the first processed one
    through ``lax.stop_gradient``, so a loss term at step ``t`` sends gradient only to inputs,
    params uses and carries of its own chunk (never to steps ``truncate`` or more away from
    it). With ``truncate >= T`` (or None) this is full BPTT, gradient to the initial carry
    included.

    ``resets[t, b]`` marks a document boundary: the carry of sequence ``b`` is set to zeros
    (``cell.initial_carry``) just before ``xs[t, b]`` is consumed (in ``reverse``, after the
    step before it: each document runs from its own last step back to its first), so nothing
    — values or gradients — crosses it. Built-in cells keep their fused kernels.

    For training on a long stream with one update per chunk, use this on each chunk and pass the
    final carry to the next step (``make_train_step(..., carry=True)`` does that).

    Args:
      step: ``step(params, carry, x) -> (carry, y)``.
      params: the step's parameters.
      carry: initial carry; leaves start with the batch axes of ``resets`` when it is given.
      xs: ``[T, *batch, I]``.
      truncate: chunk length ``k >= 1`` of the truncated backward pass, or None (no truncation).
      resets: optional ``[T, *batch]`` bool.
      reverse: run from step ``T - 1`` back to step 0 (chunks too: the last one first).
      time_major: False for batch-major ``xs: [*batch, T, I]``, ``resets: [*batch, T]`` and
        ``ys`` (see ``rnnjax.scan``).
      unroll, impl: as in ``rnnjax.scan``, for the loop inside each chunk.

    Returns:
      ``(carry, ys)`` as ``rnnjax.scan``.

    >>> cell = elman(input_size=2, hidden_size=3)
    >>> resets = jnp.zeros((8, 4), bool).at[5, 1].set(True)   # sequence 1: a new document at t=5
    >>> carry, ys = truncated_scan(cell.step, cell.init(jax.random.key(0)), cell.initial_carry((4,)), jnp.ones((8, 4, 2)), truncate=3, resets=resets)
    >>> ys.shape
    (8, 4, 3)
    """
    _check_step(step)
    if not check_bool("time_major", time_major):
        axis, xs = to_time_major(xs, resets=resets)
        carry, ys = truncated_scan(step, params, carry, xs, truncate=truncate,
                                   resets=resets_time_major(resets), reverse=reverse, unroll=unroll, impl=impl)
        return carry, time_to(ys, axis)
    ref = check_xs_tree(xs)
    check_int("truncate", truncate, allow_none=True)
    check_bool("reverse", reverse)
    check_unroll(unroll)
    fused = check_impl(impl)
    num_steps = ref.shape[0]
    if resets is not None:
        resets, batch = check_resets(resets, ref)
        check_tree_batch(xs, batch, "resets")
        check_carry_batch(carry, batch)
    # rnnjax.scan checks the step against carry and xs (shapes, dtypes) without running it.
    jax.eval_shape(partial(scan, step), params, carry, jax.tree_util.tree_map(lambda a: a[:1], xs))
    inputs = (xs, fresh_steps(resets, None, num_steps, reverse))

    def run(c, chunk_inputs):  # each chunk is a scan: built-in cells take their fused kernels
        chunk_xs, chunk_fresh = chunk_inputs
        return _loop(step, params, c, chunk_xs, None, chunk_fresh, reverse, unroll, fused)

    def chunk(c, chunk_inputs):
        return run(lax.stop_gradient(c), chunk_inputs)

    k = num_steps if truncate is None else min(int(truncate), num_steps)
    num_chunks, rest = divmod(num_steps, k)
    if num_chunks == 1 and rest == 0:
        return run(carry, inputs)

    def cat(*parts):
        return jax.tree_util.tree_map(lambda *p: jnp.concatenate(p), *parts)

    def flat(ys):  # [n, k, ...] -> [n * k, ...]
        return jax.tree_util.tree_map(lambda a: a.reshape((a.shape[0] * k,) + a.shape[2:]), ys)

    head = jax.tree_util.tree_map(lambda a: a[: num_chunks * k].reshape((num_chunks, k) + a.shape[1:]), inputs)
    tail = jax.tree_util.tree_map(lambda a: a[num_chunks * k :], inputs) if rest else None
    # The first chunk processed takes the initial carry with its gradient; later ones through
    # stop_gradient. Forward that is chunk 0; in reverse, the tail (the last steps) or the last chunk.
    if not reverse:
        carry, ys_first = run(carry, jax.tree_util.tree_map(lambda a: a[0], head))
        ys = jax.tree_util.tree_map(lambda a: a[None], ys_first)
        if num_chunks > 1:
            carry, ys_later = lax.scan(chunk, carry, jax.tree_util.tree_map(lambda a: a[1:], head))  # [num_chunks - 1, k, ...]
            ys = cat(ys, ys_later)
        ys = flat(ys)
        if rest:
            carry, ys_tail = chunk(carry, tail)
            ys = cat(ys, ys_tail)
        return carry, ys
    if rest:
        carry, ys_tail = run(carry, tail)
        carry, ys_head = lax.scan(chunk, carry, head, reverse=True)
        return carry, cat(flat(ys_head), ys_tail)
    carry, ys_last = run(carry, jax.tree_util.tree_map(lambda a: a[-1], head))
    carry, ys_head = lax.scan(chunk, carry, jax.tree_util.tree_map(lambda a: a[:-1], head), reverse=True)
    return carry, cat(flat(ys_head), ys_last)


def remat_scan(
    step: Callable,
    params: Any,
    carry: Any,
    xs: Array,
    *,
    lengths: Array | None = None,
    reverse: bool = False,
    segment: int | None = None,
    resets: Array | None = None,
    time_major: bool = True,
    unroll: int | bool = 1,
    impl: str = "auto",
):
    """``rnnjax.scan`` with gradient checkpointing: same values and gradients, less memory.

    The time axis is cut into segments of ``segment`` steps (default ``ceil(sqrt(T))``); each
    segment is an ``rnnjax.scan`` under ``jax.checkpoint``. The backward pass keeps only the
    carry at segment boundaries and recomputes one segment's activations at a time, so the
    activation memory of a long sequence drops from ``O(T)`` to ``O(T / segment + segment)``
    steps, for about one extra forward pass.

    Args:
      step, params, carry, xs, lengths, reverse: as in ``rnnjax.scan`` (``xs: [T, *batch, I]``,
        ``lengths: [*batch]``; padding holds the carry and outputs zeros; ``reverse`` runs each
        sequence from its own last valid step).
      segment: steps per rematerialised segment (``>= 1``).
      resets: optional ``[T, *batch]`` bool, as in ``rnnjax.scan`` (packed sequences).
      time_major: False for batch-major ``xs``/``ys``/``resets`` (see ``rnnjax.scan``).
      unroll, impl: as in ``rnnjax.scan``, for the loop inside each segment.

    Returns:
      ``(carry, ys)`` exactly as ``rnnjax.scan``.

    >>> cell = lstm(input_size=2, hidden_size=3)
    >>> params, xs = cell.init(jax.random.key(0)), jnp.ones((20, 4, 2))
    >>> loss = lambda p: remat_scan(cell.step, p, cell.initial_carry((4,)), xs, segment=5)[1].sum()
    >>> jax.jit(jax.grad(loss))(params).w_hh.shape
    (3, 12)
    """
    _check_step(step)
    if not check_bool("time_major", time_major):
        axis, xs = to_time_major(xs, lengths, resets)
        carry, ys = remat_scan(step, params, carry, xs, lengths=lengths, reverse=reverse,
                               segment=segment, resets=resets_time_major(resets), unroll=unroll, impl=impl)
        return carry, time_to(ys, axis)
    ref = check_xs_tree(xs)
    check_int("segment", segment, allow_none=True)
    check_bool("reverse", reverse)
    check_unroll(unroll)
    fused = check_impl(impl)
    num_steps = ref.shape[0]
    if lengths is not None:
        lengths, _ = check_seq_lengths(lengths, ref)
    if resets is not None:
        resets, _ = check_resets(resets, ref)
    # All of rnnjax.scan's checks, on the whole sequence, without running it.
    jax.eval_shape(partial(scan, step, lengths=lengths, reverse=reverse, resets=resets), params, carry, xs)
    fresh = fresh_steps(resets, lengths, num_steps, reverse)  # global: a boundary may fall on a segment's edge

    k = math.isqrt(num_steps - 1) + 1 if segment is None else min(int(segment), num_steps)
    num_segments, rest = divmod(num_steps, k)

    def run(p, c, x, f, t0, prevent_cse=True):
        seg_lengths = None if lengths is None else jnp.clip(lengths - t0, 0, jax.tree_util.tree_leaves(x)[0].shape[0])

        def run_segment(p, c, x, f, seg_lengths):
            return _loop(step, p, c, x, seg_lengths, f, reverse, unroll, fused)

        return jax.checkpoint(run_segment, prevent_cse=prevent_cse)(p, c, x, f, seg_lengths)

    def split(tree):
        return jax.tree_util.tree_map(lambda a: a[: num_segments * k].reshape((num_segments, k) + a.shape[1:]), tree)

    head, head_fresh = split(xs), split(fresh)
    starts = jnp.arange(num_segments) * k

    def outer(c, inp):
        x, f, t0 = inp
        # prevent_cse=False is safe inside lax.scan and lets XLA fuse the recomputation.
        return run(params, c, x, f, t0, prevent_cse=False)

    def run_head(c):
        c, ys = lax.scan(outer, c, (head, head_fresh, starts), reverse=reverse)
        return c, jax.tree_util.tree_map(lambda a: a.reshape((num_segments * k,) + a.shape[2:]), ys)

    if not rest:
        return run_head(carry)
    tail, tail_fresh = jax.tree_util.tree_map(lambda a: a[num_segments * k :], (xs, fresh))
    if reverse:  # the tail holds the last time steps: it runs first
        carry, ys_tail = run(params, carry, tail, tail_fresh, num_segments * k)
        carry, ys_head = run_head(carry)
    else:
        carry, ys_head = run_head(carry)
        carry, ys_tail = run(params, carry, tail, tail_fresh, num_segments * k)
    return carry, jax.tree_util.tree_map(lambda a, b: jnp.concatenate([a, b]), ys_head, ys_tail)


_take_chunk = jax.jit(lambda a, start, length: lax.dynamic_slice_in_dim(a, start, length), static_argnums=2)


def chunk_stream(stream: Any, length: int) -> Callable[[int], Any]:
    """Cut a long stream into consecutive chunks; ``chunk(i)`` is chunk ``i mod n``.

    ``stream`` is a pytree of ``[T_total, ...]`` arrays (e.g. inputs, targets and resets of
    ``B`` parallel token streams, ``[T_total, B]`` each); the ``n = T_total // length`` full
    chunks are served in order and wrap around (a final partial chunk is dropped). With
    ``chunk = chunk_stream(data, k)`` and ``fit(step, state, chunk, ...)``, training step ``i``
    sees chunk ``i mod n``. Put ``resets[0] = True`` in the data to start each pass over the
    stream from a zero carry.

    >>> chunk = chunk_stream({"x": jnp.arange(10)}, 4)   # two chunks of 4; 8, 9 are dropped
    >>> chunk(0)["x"].tolist(), chunk(1)["x"].tolist(), chunk(2)["x"].tolist()
    ([0, 1, 2, 3], [4, 5, 6, 7], [0, 1, 2, 3])
    """
    check_int("length", length)
    leaves = jax.tree_util.tree_leaves(stream)
    if not leaves:
        raise ValueError("stream: expected a pytree of [T_total, ...] arrays, got no arrays")
    for path, leaf in jax.tree_util.tree_flatten_with_path(stream)[0]:
        check_array(f"stream{jax.tree_util.keystr(path)}", leaf)
        if leaf.ndim < 1 or leaf.shape[0] != leaves[0].shape[0]:
            raise ValueError(
                f"stream{jax.tree_util.keystr(path)}: expected shape [{leaves[0].shape[0]}, ...] "
                f"(one time axis shared by all leaves), got {tuple(leaf.shape)}"
            )
    total = leaves[0].shape[0]
    num_chunks = total // length
    if num_chunks < 1:
        raise ValueError(f"length: expected at most the stream length {total}, got {length}")

    def take(leaf, start):
        if isinstance(leaf, np.ndarray):
            return leaf[start : start + length]
        return _take_chunk(leaf, start, length)  # one compilation for every start

    def chunk(index: int) -> Any:
        start = (int(index) % num_chunks) * length
        return jax.tree_util.tree_map(lambda leaf: take(leaf, start), stream)

    return chunk


__all__ = ["chunk_stream", "flip_sequences", "remat_scan", "scan", "truncated_scan"]
