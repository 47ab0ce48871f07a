"""A trainable initial state for any cell: ``learned_initial_state(cell) -> Cell``.

A cell starts from ``cell.initial_carry(batch_shape)``, zeros. ``learned_initial_state`` makes
that starting carry a parameter ``carry0`` (one value, broadcast over the batch) trained with
the rest, as in Flax's and Keras' learned-state recipes, for any carry pytree (an array,
``LSTMState``, a ``stack``'s ``StackedCarry``, an ``MLSTMState`` ...).

Why the learned value travels in the params and a flag in the carry: every composer (``rnn``,
``deep``, ``bidirectional``, ``stack``, ``seq2seq``, the decoders' ``language_model``) and the
time loops call ``cell.initial_carry(batch_shape)`` without params when no carry is given, so
``initial_carry`` cannot return the learned value. The wrapped cell's carry is therefore
``LearnedStateCarry(carry, started)``: the inner carry plus ``started: bool[*batch]``, False in
``initial_carry``. The step reads ``where(started, carry, broadcast(carry0))``, runs the inner
step on it and returns ``started = True``. This needs no change to any composer and keeps
their semantics:

* ``lengths``: ``rnnjax.scan`` keeps the old carry at padding steps, so ``started`` stays False
  until a sequence's first valid step; with ``reverse=True`` that is its last valid step, so
  each sequence starts from ``carry0`` wherever it starts. An empty sequence returns the
  unstarted carry.
* a carry reset to ``initial_carry`` (or to zeros, as ``truncated_scan(resets=...)`` does)
  has ``started = False`` and so restarts from the learned state.
* gradients reach ``carry0`` through the ``where`` from every sequence's first step, summed
  over the batch.

Reading the carry: ``carry_hidden``/``with_hidden`` and recurrent dropout read the inner
carry. Before its first step a carry holds the inner zeros (the learned value is in the
params), so ``carry_hidden`` of an unstarted carry is zeros; where a reader needs the learned
value before the first step (an attention query from a decoder's initial carry in
``seq2seq``), start from ``learned_carry(params, carry)``, which writes it into the carry.
``with_hidden`` marks the carry started, so the hidden state it sets is the one the step
reads (the rest of the inner carry is taken as it is; apply it to ``learned_carry(...)`` to
keep the learned rest). Recurrent dropout masks the inner carry, so the learned value enters
the first step unmasked. The wrapped step is not a built-in: it runs on the plain loop, and
has no parallel form (``rnn(..., parallel=True)`` refuses it).
"""

from __future__ import annotations

from typing import Any, NamedTuple

import jax
import jax.numpy as jnp

from rnnjax._checks import check_batch_shape, where_batch
from rnnjax.cells import Cell, Initializer, zeros

Array = jax.Array

__all__ = ["LearnedStateCarry", "LearnedStateParams", "learned_carry", "learned_initial_state"]


class LearnedStateParams(NamedTuple):
    """Params of ``learned_initial_state``: the wrapped cell's and the learned initial carry."""

    cell: Any  # the wrapped cell's params
    carry0: Any  # the learned initial carry, shaped as cell.initial_carry(step_shape)


class LearnedStateCarry(NamedTuple):
    """Carry of ``learned_initial_state``: the wrapped cell's carry and whether it has started.

    Where ``started`` is False the next step reads the learned ``carry0`` instead of ``carry``.
    """

    carry: Any  # the wrapped cell's carry
    started: Array  # bool [*batch]


def _check_params(params: Any) -> None:
    if not isinstance(params, LearnedStateParams):
        raise TypeError(
            f"params: expected LearnedStateParams(cell, carry0) (from learned_initial_state(...).init), "
            f"got {type(params).__name__}"
        )


def _check_carry(carry: Any) -> None:
    if not isinstance(carry, LearnedStateCarry):
        raise TypeError(
            f"carry: expected LearnedStateCarry(carry, started) (from learned_initial_state(...).initial_carry), "
            f"got {type(carry).__name__}"
        )


def _broadcast_learned(carry0: Any, like: Any) -> Any:
    """``carry0`` broadcast to the shapes and dtypes of the carry ``like`` (batch axes in front)."""
    tree0, tree = jax.tree_util.tree_structure(carry0), jax.tree_util.tree_structure(like)
    if tree0 != tree:
        raise ValueError(
            f"params.carry0: expected the structure of the wrapped cell's carry {tree}, got {tree0}"
        )

    def grow(path, learned, leaf):
        shape, lshape = tuple(jnp.shape(leaf)), tuple(jnp.shape(learned))
        if len(lshape) > len(shape) or shape[len(shape) - len(lshape):] != lshape:
            raise ValueError(
                f"params.carry0{jax.tree_util.keystr(path)}: expected the trailing axes of the carry leaf "
                f"{shape} (the carry without its batch axes), got shape {lshape}"
            )
        return jnp.broadcast_to(learned.astype(jnp.result_type(leaf)), shape)

    return jax.tree_util.tree_map_with_path(grow, carry0, like)


def learned_carry(params: LearnedStateParams, carry: LearnedStateCarry) -> LearnedStateCarry:
    """``carry`` with the learned initial carry written in where it has not started.

    The result is started everywhere and steps exactly as ``carry`` does; use it where the
    initial carry is read before the first step (``carry_hidden`` for an attention query)::

        state = model.encode(params, src)
        state = state._replace(carry=learned_carry(params.decoder, state.carry))
    """
    _check_params(params)
    _check_carry(carry)
    inner = where_batch(carry.started, carry.carry, _broadcast_learned(params.carry0, carry.carry))
    return LearnedStateCarry(inner, jnp.ones_like(carry.started))


def learned_initial_state(cell: Cell, *, init: Initializer = zeros, step_shape: tuple = ()) -> Cell:
    """``cell`` starting from a trainable initial carry instead of zeros.

    ::

        params = LearnedStateParams(cell=p, carry0=c₀)      carry = LearnedStateCarry(c, started)
        step:  c ← where(started, c, broadcast(c₀));  c', y = cell.step(p, c, x);  started ← True

    ``c₀`` has the structure, shapes and dtypes of ``cell.initial_carry(step_shape)`` (no batch
    axes) and is broadcast over the batch; see the module notes for why it lives in the params
    and how lengths, ``reverse`` and resets treat it. With the default ``init`` (zeros) the
    wrapped cell computes exactly what ``cell`` does until ``c₀`` is trained, and
    ``init(key).cell == cell.init(key)``.

    Args:
      cell: any ``Cell`` (built-in, ``stack``-ed, or your own) whose carry leaves are floating.
      init: initialiser ``init(key, shape, dtype)`` of each leaf of ``c₀`` (zeros).
      step_shape: the leading axes of ``initial_carry``'s argument that belong to the step
        rather than the batch: a convolutional cell's spatial shape (``(16, 16)`` for
        ``conv_lstm`` on 16x16 frames, whose carry ``[*batch, 16, 16, H]`` then learns one
        ``[16, 16, H]`` map). ``()`` for every vector cell.

    Returns:
      ``Cell`` with params ``LearnedStateParams`` and carry ``LearnedStateCarry``;
      ``initial_carry(batch_shape)`` is the inner zeros with ``started = False``, ``started``
      shaped ``batch_shape`` without the trailing ``step_shape``.

    >>> cell = learned_initial_state(gru(3, 4))
    >>> params = cell.init(jax.random.key(0))
    >>> params.carry0.shape, cell.initial_carry((2,)).started.tolist()
    ((4,), [False, False])
    """
    if not isinstance(cell, Cell):
        raise TypeError(f"cell: expected a rnnjax.Cell, got {type(cell).__name__}")
    if not callable(init):
        raise TypeError(f"init: expected an initialiser init(key, shape, dtype), got {type(init).__name__}")
    step_shape = check_batch_shape(step_shape)
    try:
        template = jax.eval_shape(lambda: cell.initial_carry(step_shape))
    except (TypeError, ValueError) as e:
        e.add_note(f"(raised by cell.initial_carry(step_shape={step_shape}), the shape of the learned carry; "
                   "a convolutional cell needs its spatial shape as step_shape)")
        raise
    for path, leaf in jax.tree_util.tree_flatten_with_path(template)[0]:
        if not jnp.issubdtype(leaf.dtype, jnp.floating):
            raise TypeError(
                f"cell: every carry leaf must be floating to be learned, got carry{jax.tree_util.keystr(path)} "
                f"of dtype {leaf.dtype}"
            )
    num_step = len(step_shape)

    def init_fn(key) -> LearnedStateParams:
        leaves, tree = jax.tree_util.tree_flatten(template)
        keys = jax.random.split(jax.random.fold_in(key, 0x1EA7), len(leaves))
        carry0 = [jnp.asarray(init(k, leaf.shape, leaf.dtype), leaf.dtype) for k, leaf in zip(keys, leaves, strict=True)]
        return LearnedStateParams(cell.init(key), jax.tree_util.tree_unflatten(tree, carry0))

    def initial_carry(batch_shape=()) -> LearnedStateCarry:
        batch_shape = check_batch_shape(batch_shape)
        if len(batch_shape) < num_step or tuple(batch_shape[len(batch_shape) - num_step:]) != step_shape:
            raise ValueError(
                f"batch_shape: expected (*batch, *step_shape) ending in step_shape={step_shape}, got {batch_shape}"
            )
        started = jnp.zeros(batch_shape[: len(batch_shape) - num_step], bool)
        return LearnedStateCarry(cell.initial_carry(batch_shape), started)

    def learned_initial_state_step(params, carry, x):
        _check_params(params)
        _check_carry(carry)
        inner = where_batch(carry.started, carry.carry, _broadcast_learned(params.carry0, carry.carry))
        new, y = cell.step(params.cell, inner, x)
        return LearnedStateCarry(new, jnp.ones_like(carry.started)), y

    return Cell(init_fn, initial_carry, learned_initial_state_step)
