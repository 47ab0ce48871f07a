"""Composition: deep and bidirectional models, sequence topologies, and a custom cell.

Two bundles of pure functions compose everything here:

- ``Cell(init, initial_carry, step)`` (``rnnjax.cells``) advances one time step.
  ``stack(*cells)`` is again a ``Cell``: all layers advance inside one step, which is what
  step-by-step decoders need.
- ``SeqModel(init, apply)`` consumes a whole sequence. ``rnn(cell)``, ``deep(...)`` and
  ``bidirectional(...)`` build one, and a ``SeqModel`` may be a layer of another, so
  ``deep(bidirectional(f1, b1), bidirectional(f2, b2))`` is the deep bidirectional RNN of
  ``torch.nn.LSTM(bidirectional=True, num_layers=2)``.

Every ``SeqModel.apply`` follows one contract, so models nest without adapters::

    apply(params, xs, *, lengths=None, carry=None, train=False, key=None, resets=None) -> (carry, ys)

with ``xs: [T, *batch, I]`` time-major, ``lengths: [*batch]`` (positions ``t >= length`` are
padding: outputs there are zero and the returned carry is the one after each sequence's last
valid step), ``carry=None`` meaning the zero initial carry, ``train``/``key`` switching
dropout on with an explicit PRNG key, and ``resets: [T, *batch]`` marking where packed
sequences start (``rnnjax.pack_sequences``; every layer resets its carry there, in both
directions). A model without randomness ignores ``train`` and ``key``; a ``SeqModel`` of your
own need not take ``resets`` unless it is given some (composers pass it only when given).

Sequence topologies built from these pieces:

- sequence → vector: ``pool_last`` (last valid output), ``pool_mean``, ``pool_max``, or the
  final carry itself (``carry_hidden`` reads its hidden state);
- vector → sequence: the vector as the initial state (``with_hidden``) and/or as the input at
  every step (``repeat_vector``);
- aligned sequence → sequence: any ``SeqModel`` followed by a per-step ``dense`` projection;
- encoder–decoder: ``rnnjax.seq2seq`` (with or without attention).

Any step function works in all of them, built-in or your own (``rnnjax.dampened`` is written
against the public step contract only, as a user's cell would be).
"""

from __future__ import annotations

import inspect
from collections.abc import Callable
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp

from rnnjax import _registry
from rnnjax._checks import (
    batch_major_axis,
    check_array,
    check_bool,
    check_carry_batch,
    check_impl,
    check_int,
    check_key,
    check_rate,
    check_resets,
    check_seq_lengths,
    check_step_output,
    check_unroll,
    check_xs,
    check_xs_tree,
    fresh_steps,
    is_sequence_tree,
    resets_time_major,
    steps_mask,
    time_to,
)
from rnnjax.cells import Cell, glorot_uniform
from rnnjax.learned_state import LearnedStateCarry
from rnnjax.packing import segment_pool
from rnnjax.scan import flip_sequences, scan, to_time_major

Array = jax.Array


class SeqModel(NamedTuple):
    """A whole-sequence model as a bundle of two pure functions.

    Attributes:
      init: ``init(key) -> params``.
      apply: ``apply(params, xs, *, lengths=None, carry=None, train=False, key=None,
        resets=None) -> (carry, ys)`` with ``xs: [T, *batch, I]`` and ``ys: [T, *batch, O]``,
        zero at padding positions ``t >= lengths``; ``carry=None`` starts from zeros;
        ``train=True`` turns dropout on, drawing masks from ``key``; ``resets: [T, *batch]``
        bool resets the carry where packed sequences start (see ``rnnjax.scan``).
    """

    init: Callable[[Array], Any]
    apply: Callable[..., tuple[Any, Array]]


class BiParams(NamedTuple):
    """Parameters of ``bidirectional``: one set per direction."""

    fwd: Any
    bwd: Any


class BiCarry(NamedTuple):
    """Carry of ``bidirectional``: the final carry of each direction.

    ``fwd`` is the carry after each sequence's last valid step, ``bwd`` the carry after step 0
    (the backward direction's last step).
    """

    fwd: Any
    bwd: Any


class StackedCarry(tuple):
    """The carry of a stack of layers (``stack``, ``deep``): one carry per layer, bottom first.

    A tuple with a type of its own, so that a cell whose carry is a plain tuple (say
    ``(h, c)``) is never taken for a stack of layers: ``carry_hidden``, ``with_hidden`` and
    recurrent dropout read a ``StackedCarry`` layer by layer and refuse a plain tuple, whose
    hidden state they cannot know. It is a pytree node (its entries are the children) and
    indexes like a tuple: ``carry[-1]`` is the top layer's carry.
    """

    __slots__ = ()

    def __repr__(self) -> str:
        return f"StackedCarry({', '.join(map(repr, self))})"


jax.tree_util.register_pytree_with_keys(
    StackedCarry,
    lambda s: (tuple((jax.tree_util.SequenceKey(i), c) for i, c in enumerate(s)), None),
    lambda _, children: StackedCarry(children),
    flatten_func=lambda s: (tuple(s), None),
)


class DenseParams(NamedTuple):
    """An affine map ``y = x w + b``."""

    w: Array  # [I, O]
    b: Array  # [O]


# ----------------------------------------------------------------------------- checks


def _need_key(key: Any, why: str) -> None:
    if key is None:
        raise ValueError(f"key: expected a PRNG key with train=True ({why}), got None")
    check_key(key)


def _check_layer(name: str, layer: Any) -> None:
    if not isinstance(layer, (Cell, SeqModel)):
        raise TypeError(f"{name}: expected a rnnjax.Cell or rnnjax.SeqModel, got {type(layer).__name__}")


def _check_tuple(name: str, value: Any, n: int) -> tuple:
    if not isinstance(value, (tuple, list)) or _is_namedtuple(value):
        raise TypeError(f"{name}: expected a tuple with one entry per layer ({n}), got {type(value).__name__}")
    if len(value) != n:
        raise ValueError(f"{name}: expected a tuple with one entry per layer ({n}), got {len(value)} entries")
    return tuple(value)


def _is_namedtuple(x: Any) -> bool:
    return isinstance(x, tuple) and hasattr(x, "_fields")


# ----------------------------------------------------------------------------- helpers


def _zero_padding(ys: Array, lengths: Array | None) -> Array:
    if lengths is None:
        return ys
    mask = steps_mask(lengths, ys.shape[0])
    mask = mask.reshape(mask.shape + (1,) * (ys.ndim - mask.ndim))
    return jnp.where(mask, ys, jnp.zeros((), ys.dtype))


def _batch_major(apply: Callable, time_major: bool) -> Callable:
    """``apply`` reading and returning batch-major sequences when ``time_major`` is False."""
    if check_bool("time_major", time_major):
        return apply

    def batch_major_apply(params, xs, *, lengths=None, carry=None, train=False, key=None, resets=None):
        axis, xs = to_time_major(xs, lengths, resets)
        carry, ys = apply(params, xs, lengths=lengths, carry=carry, train=train, key=key,
                          **_resets_kw(resets_time_major(resets)))
        return carry, time_to(ys, axis)

    return batch_major_apply


def _resets_kw(resets: Any) -> dict:
    """``resets=`` for a layer's ``apply`` only when given, so ``SeqModel`` instances written before
    packed sequences (whose ``apply`` takes no ``resets``) still compose when none are used."""
    return {} if resets is None else {"resets": resets}


def _dropout(key: Array, rate: float, x: Array) -> Array:
    """Inverted dropout: zero each entry with probability ``rate``, scale the rest by ``1/(1-rate)``."""
    keep = jax.random.bernoulli(key, 1.0 - rate, x.shape)
    return jnp.where(keep, x / (1.0 - rate), jnp.zeros((), x.dtype)).astype(x.dtype)


def carry_hidden(carry: Any) -> Array:
    """The hidden state ``[*batch, H]`` of a carry, for sequence→vector heads and attention queries.

    - an array carry (Elman, GRU, most custom cells) is its own hidden state;
    - a NamedTuple with an ``h`` field (``LSTMState``) gives ``h``;
    - a ``BiCarry`` gives ``concat([hidden(fwd), hidden(bwd)], -1)``;
    - a ``StackedCarry`` (the carry of ``stack`` or ``deep``, one entry per layer) gives the top
      layer's hidden state;
    - a ``LearnedStateCarry`` (``learned_initial_state``) gives its inner carry's (zeros before
      the first step: the learned value is in the params, see ``learned_carry``).

    Other carries raise ``TypeError``, a plain tuple included (a cell's own ``(h, c)`` has no
    field saying which entry is the hidden state): give such a cell's carry an ``h`` field
    (a NamedTuple such as ``LSTMState``) or an array form.

    >>> carry_hidden(StackedCarry((jnp.zeros((2, 3)), LSTMState(jnp.ones((2, 5)), jnp.zeros((2, 5)))))).shape
    (2, 5)
    """
    if isinstance(carry, BiCarry):
        return jnp.concatenate([carry_hidden(carry.fwd), carry_hidden(carry.bwd)], axis=-1)
    if isinstance(carry, StackedCarry) and len(carry):
        return carry_hidden(carry[-1])
    if isinstance(carry, LearnedStateCarry):
        return carry_hidden(carry.carry)
    if _is_namedtuple(carry) and "h" in carry._fields:
        return carry.h
    if _is_array(carry):
        return carry
    raise TypeError(_unknown_carry("carry", carry))


def _is_array(x: Any) -> bool:
    return hasattr(x, "shape") and hasattr(x, "dtype") and not isinstance(x, tuple)


def _unknown_carry(name: str, carry: Any) -> str:
    what = type(carry).__name__
    if isinstance(carry, (tuple, list)) and not _is_namedtuple(carry):
        what = f"a plain {what} of {len(carry)} entries (one cell's carry, not a StackedCarry of layers)"
    return (
        f"{name}: cannot find the hidden state in a carry of type {what}; expected an array, a "
        "NamedTuple with an `h` field (like LSTMState), a BiCarry or a StackedCarry of those"
    )


def with_hidden(carry: Any, h: Array) -> Any:
    """``carry`` with its hidden state (as read by ``carry_hidden``) replaced by ``h``.

    The vector→sequence building block "the vector as the initial state": start a cell from
    ``with_hidden(cell.initial_carry(batch), v)``. For a ``StackedCarry`` (``stack``/``deep``)
    every layer's hidden state is replaced, so all layers need ``H`` equal to ``h.shape[-1]``; a
    ``BiCarry`` splits ``h`` in half between its directions. A ``LearnedStateCarry`` is marked
    started, so the step reads ``h`` and not the learned initial state.

    >>> cell = lstm(3, 4)
    >>> with_hidden(cell.initial_carry((2,)), jnp.ones((2, 4))).h.sum()
    Array(8., dtype=float32)
    """
    check_array("h", h)
    if isinstance(carry, BiCarry):
        size_f = carry_hidden(carry.fwd).shape[-1]
        return BiCarry(with_hidden(carry.fwd, h[..., :size_f]), with_hidden(carry.bwd, h[..., size_f:]))
    if isinstance(carry, StackedCarry) and len(carry):
        return StackedCarry(with_hidden(c, h) for c in carry)
    if isinstance(carry, LearnedStateCarry):
        return LearnedStateCarry(with_hidden(carry.carry, h), jnp.ones_like(carry.started))
    if _is_namedtuple(carry) and "h" in carry._fields:
        _check_same_shape("h", h, carry.h)
        return carry._replace(h=h.astype(carry.h.dtype))
    if _is_array(carry):
        _check_same_shape("h", h, carry)
        return h.astype(carry.dtype)
    raise TypeError(_unknown_carry("carry", carry))


def _check_same_shape(name: str, h: Array, like: Array) -> None:
    if tuple(h.shape) != tuple(like.shape):
        raise ValueError(f"{name}: expected shape {tuple(like.shape)} (the carry's hidden state), got {tuple(h.shape)}")


def _hidden_masks(carry: Any, key: Array, rate: float) -> Any:
    """A tree like ``carry`` holding a dropout mask on each hidden state and 1 elsewhere."""

    def ones(tree):
        return jax.tree_util.tree_map(lambda leaf: jnp.ones((), leaf.dtype), tree)

    def mask_like(h, k):
        keep = jax.random.bernoulli(k, 1.0 - rate, h.shape)
        return jnp.where(keep, 1.0 / (1.0 - rate), 0.0).astype(h.dtype)

    if isinstance(carry, BiCarry):
        k1, k2 = jax.random.split(key)
        return BiCarry(_hidden_masks(carry.fwd, k1, rate), _hidden_masks(carry.bwd, k2, rate))
    if isinstance(carry, StackedCarry) and len(carry):
        keys = jax.random.split(key, len(carry))
        return StackedCarry(_hidden_masks(c, k, rate) for c, k in zip(carry, keys, strict=True))
    if isinstance(carry, LearnedStateCarry):  # masks the inner carry; `started` is multiplied by True
        return LearnedStateCarry(_hidden_masks(carry.carry, key, rate), jnp.ones((), bool))
    if _is_namedtuple(carry) and "h" in carry._fields:
        fields = {f: ones(getattr(carry, f)) for f in carry._fields}
        fields["h"] = mask_like(carry.h, key)
        return type(carry)(**fields)
    if _is_array(carry):
        return mask_like(carry, key)
    raise TypeError(_unknown_carry("recurrent_dropout", carry))


# ------------------------------------------------------------------------ one layer, stack


def rnn(cell: Cell, *, reverse: bool = False, recurrent_dropout: float = 0.0, parallel: bool = False,
        time_major: bool = True, unroll: int | bool = 1, impl: str = "auto") -> SeqModel:
    """One recurrent layer over the whole sequence: ``rnnjax.scan`` of ``cell.step`` as a SeqModel.

    Args:
      cell: any ``Cell``, built-in, ``stack``-ed or your own.
      reverse: run each sequence from its own last valid step back to step 0 (outputs stay in
        input order).
      recurrent_dropout: variational dropout rate on the hidden state fed back into the step
        (Gal & Ghahramani 2016): with ``train=True`` one mask per sequence is drawn from ``key``
        and used at every time step; the mask multiplies the carry's hidden state (the carry
        itself when it is an array, its ``h`` field for ``LSTMState``, every layer's for a
        ``stack``) only where the step reads it, so the returned carry is never masked.
      parallel: evaluate the layer in parallel over time with the cell's own parallel form
        instead of ``rnnjax.scan``: same params, carry and results. ``min_gru``/``min_lstm``
        (``rnnjax.min_rnn_parallel``), ``lru``, ``rg_lru`` and ``selective_ssm`` run an
        associative scan (depth O(log T)), ``mlstm`` its chunkwise form; other cells (``slstm``,
        the classic cells) have none and raise. Not with ``recurrent_dropout``. With ``resets``
        (packed sequences) the associative scans drop the state at each boundary and ``mlstm``'s
        chunkwise form keeps each write within its own sequence; the blocks' parallel forms do
        not take resets (a clear error: run them with ``parallel=False``).
      time_major: False for a model whose ``apply`` reads ``xs: [*batch, T, I]`` and returns
        ``ys: [*batch, T, H]`` (batch axes: those of ``lengths``, else all but the last two).
        Set it on the outermost model only: the layers inside a ``deep`` or ``bidirectional``
        model are called time-major.
      unroll: time steps per iteration of the step loop (see ``rnnjax.scan``); the parallel
        forms have no step loop and ignore it.
      impl: ``"auto"`` (fused kernels where registered) or ``"loop"`` (always the plain step
        loop; not with ``parallel=True``), as in ``rnnjax.scan``.

    Returns:
      ``SeqModel`` whose ``apply(params, xs, *, lengths=None, carry=None, train=False, key=None,
      resets=None)`` returns ``(carry, ys)`` exactly as ``rnnjax.scan(cell.step, params, carry,
      xs, ...)``.

    >>> model = rnn(gru(3, 4))
    >>> carry, ys = model.apply(model.init(jax.random.key(0)), jnp.ones((5, 2, 3)), lengths=jnp.array([5, 2]))
    >>> ys.shape, carry.shape
    ((5, 2, 4), (2, 4))
    """
    if not isinstance(cell, Cell):
        raise TypeError(f"cell: expected a rnnjax.Cell, got {type(cell).__name__}")
    check_bool("reverse", reverse)
    rate = check_rate("recurrent_dropout", recurrent_dropout)
    check_bool("parallel", parallel)
    check_unroll(unroll)
    if not check_impl(impl) and parallel:
        raise ValueError("impl: 'loop' runs the step loop, but parallel=True asks for the cell's parallel form; "
                         "choose one")
    parallel_fn = None
    if parallel:
        found = _registry.lookup(cell.step)
        parallel_fn = None if found is None else _registry.bound(found[0].parallel, found[1])
        if parallel_fn is None:
            which = ", ".join(f"rnnjax.{name}" for name in _registry.parallel_cells())
            why = (f"the {found[0].name} cell has no parallel form (its recurrence is not linear in the state)"
                   if found is not None else
                   f"got a cell with step {getattr(cell.step, '__name__', cell.step)!r}")
            raise ValueError(f"parallel: expected a cell with a parallel-in-time form ({which}, or a step "
                             f"registered with rnnjax.register_step(step, parallel=...) or affine=...); {why}")
        if rate > 0.0:
            raise ValueError(f"recurrent_dropout: not supported with parallel=True, got {recurrent_dropout!r}")
        takes_resets = "resets" in inspect.signature(parallel_fn).parameters

    def apply(params, xs, *, lengths=None, carry=None, train=False, key=None, resets=None):
        ref = check_xs_tree(xs, floating=True)  # xs, or the first leaf of a pytree of sequences
        check_bool("train", train)
        if carry is None:
            carry = cell.initial_carry(tuple(ref.shape[1:-1]))
        if parallel_fn is not None:
            if is_sequence_tree(xs):
                raise ValueError("xs: the parallel forms take one array [T, *batch, I]; a pytree of sequences "
                                 "runs on the step loop (parallel=False)")
            batch = tuple(xs.shape[1:-1])
            if lengths is not None:
                lengths, batch = check_seq_lengths(lengths, xs)
                lengths = jnp.clip(lengths, 0, xs.shape[0])
            check_step_output(cell.step, params, carry, xs, batch)  # the step's own checks, shapes only
            if resets is None:
                return parallel_fn(params, carry, xs, lengths, reverse)
            if not takes_resets:
                raise ValueError(
                    f"resets: the parallel form of the {found[0].name} cell does not take resets (packed "
                    f"sequences); run it with parallel=False, where every cell's step loop does"
                )
            resets, reset_batch = check_resets(resets, xs)
            check_carry_batch(carry, reset_batch)
            return parallel_fn(params, carry, xs, lengths, reverse, resets=resets)
        step = cell.step
        if train and rate > 0.0:
            _need_key(key, f"recurrent_dropout={rate}")
            masks = _hidden_masks(carry, key, rate)  # one mask per sequence, reused every step

            def step(p, c, x):
                return cell.step(p, jax.tree_util.tree_map(jnp.multiply, c, masks), x)

        return scan(step, params, carry, xs, lengths=lengths, reverse=reverse, resets=resets, unroll=unroll,
                    impl=impl)

    return SeqModel(cell.init, _batch_major(apply, time_major))


def stack(*cells: Cell) -> Cell:
    """Stack cells into one deep cell: all layers advance inside a single time step.

    ::

        h¹_t, y¹_t = step₁(p₁, h¹_{t-1}, x_t)
        hᵏ_t, yᵏ_t = stepₖ(pₖ, hᵏ_{t-1}, yᵏ⁻¹_t)      y_t = yᴺ_t

    Params are a tuple and the carry a ``StackedCarry``, with one entry per layer, so
    ``stack(c)`` steps exactly like ``c`` with params ``(p,)`` and carry
    ``StackedCarry((h,))``. Layer ``k+1``'s input size must be layer ``k``'s output size. Use it
    for step-by-step decoding (``greedy``, ``beam_search``); for training on whole sequences
    ``deep`` does the same computation layer by layer, and adds dropout between layers.

    ``stack(*cells)`` and ``deep(*layers)`` share params and carries: both are tuples (carries
    ``StackedCarry``) with one entry per layer in order, and ``init`` with one key draws the same
    values, so a model trained as ``deep(rnn(c1, parallel=True), rnn(c2, parallel=True))``
    decodes step by step as ``stack(c1, c2)`` with the same params and final carries
    (``language_model(..., parallel=True)`` does both with one cell).

    >>> cell = stack(lstm(3, 8), gru(8, 8))
    >>> carry, y = cell.step(cell.init(jax.random.key(0)), cell.initial_carry((2,)), jnp.ones((2, 3)))
    >>> y.shape, len(carry)
    ((2, 8), 2)
    """
    if not cells:
        raise ValueError("cells: expected at least one Cell, got none")
    for i, cell in enumerate(cells):
        if not isinstance(cell, Cell):
            raise TypeError(f"cells[{i}]: expected a rnnjax.Cell, got {type(cell).__name__}")
    n = len(cells)

    def init(key):
        keys = jax.random.split(key, n)
        return tuple(cell.init(k) for cell, k in zip(cells, keys, strict=True))

    def initial_carry(batch_shape=()):
        return StackedCarry(cell.initial_carry(batch_shape) for cell in cells)

    def step(params, carry, x):
        params = _check_tuple("params", params, n)
        stacked = isinstance(carry, StackedCarry)
        carry = _check_tuple("carry", carry, n)
        new = []
        for i, (cell, p, c) in enumerate(zip(cells, params, carry, strict=True)):
            try:
                c, x = cell.step(p, c, x)
            except (ValueError, TypeError) as e:
                e.add_note(f"(raised by layer {i} of stack)")
                raise
            new.append(c)
        # the carry comes back in the container it came in (a plain tuple stays one)
        return (StackedCarry(new) if stacked else tuple(new)), x

    step.layers = cells  # read by stack_layers
    return Cell(init, initial_carry, step)


def stack_layers(cell: Cell) -> tuple[Cell, ...]:
    """The layers of a ``stack(...)`` cell, in order; ``(cell,)`` for any other cell.

    >>> [c.step.__name__ for c in stack_layers(stack(lstm(2, 3), gru(3, 3)))]
    ['lstm_step', 'gru_step']
    """
    if not isinstance(cell, Cell):
        raise TypeError(f"cell: expected a rnnjax.Cell, got {type(cell).__name__}")
    return tuple(getattr(cell.step, "layers", (cell,)))


def has_parallel_form(cell: Cell) -> bool:
    """Whether ``rnn(cell, parallel=True)`` has a parallel-in-time form to run (built-in or
    registered with ``register_step``)."""
    found = _registry.lookup(cell.step)
    return found is not None and found[0].parallel is not None


# ------------------------------------------------------------------------ deep, bidirectional


def _as_model(layer: Cell | SeqModel, *, reverse: bool = False, recurrent_dropout: float = 0.0, unroll=1,
              impl="auto") -> SeqModel:
    if isinstance(layer, Cell):
        return rnn(layer, reverse=reverse, recurrent_dropout=recurrent_dropout, unroll=unroll, impl=impl)
    return layer


def _check_apply_args(xs, lengths, train, key):
    ref = check_xs_tree(xs, floating=True)
    check_bool("train", train)
    if key is not None:
        check_key(key)
    if lengths is not None:
        lengths, _ = check_seq_lengths(lengths, ref)
    return lengths


def deep(
    *layers: Cell | SeqModel,
    dropout: float = 0.0,
    residual: bool = False,
    recurrent_dropout: float = 0.0,
    time_major: bool = True,
    unroll: int | bool = 1,
    impl: str = "auto",
) -> SeqModel:
    """A layer-wise deep model: each layer runs over the whole sequence, then feeds the next.

    ::

        o⁰ = xs
        oᵏ = layerₖ(drop(oᵏ⁻¹))  (+ oᵏ⁻¹ if residual and k > 0)      ys = oᴺ

    ``drop`` is inter-layer dropout (an independent mask per entry and step, as in
    ``torch.nn.LSTM(dropout=...)``), applied to the input of every layer but the first and only
    with ``train=True``. Layers may mix cell types and be ``SeqModel`` instances themselves:
    ``deep(bidirectional(f1, b1), bidirectional(f2, b2))`` is a deep bidirectional RNN whose
    layer 2 reads layer 1's merged outputs.

    Args:
      *layers: ``Cell`` or ``SeqModel`` instances (a ``Cell`` is run with ``rnn``).
      dropout: inter-layer dropout rate in ``[0, 1)``.
      residual: add each layer's input to its output, for every layer but the first (their
        input and output sizes must then match).
      recurrent_dropout: variational dropout on the recurrent hidden state of the layers given
        as ``Cell`` instances (see ``rnn``); a ``SeqModel`` layer keeps its own setting.
      time_major: False for batch-major ``xs``/``ys`` (see ``rnn``); the layers inside are
        called time-major.
      unroll, impl: for the layers given as ``Cell`` instances (see ``rnn``); a ``SeqModel``
        layer keeps its own.

    Returns:
      ``SeqModel``; params are a tuple and carries a ``StackedCarry``, one entry per layer, and
      ``apply(params, xs, *, lengths=None, carry=None, train=False, key=None)`` returns
      ``(carries, ys)`` with each layer's final carry. ``key`` is needed when ``train=True`` and any dropout is on.

    >>> model = deep(lstm(3, 8), gru(8, 8), dropout=0.2, residual=True)
    >>> params = model.init(jax.random.key(0))
    >>> carries, ys = model.apply(params, jnp.ones((5, 2, 3)), train=True, key=jax.random.key(1))
    >>> ys.shape, len(carries)
    ((5, 2, 8), 2)
    """
    if not layers:
        raise ValueError("layers: expected at least one Cell or SeqModel, got none")
    for i, layer in enumerate(layers):
        _check_layer(f"layers[{i}]", layer)
    rate = check_rate("dropout", dropout)
    check_bool("residual", residual)
    rec_rate = check_rate("recurrent_dropout", recurrent_dropout)
    check_unroll(unroll)
    check_impl(impl)
    models = [_as_model(layer, recurrent_dropout=rec_rate, unroll=unroll, impl=impl) for layer in layers]
    n = len(models)

    def init(key):
        keys = jax.random.split(key, n)
        return tuple(m.init(k) for m, k in zip(models, keys, strict=True))

    def apply(params, xs, *, lengths=None, carry=None, train=False, key=None, resets=None):
        lengths = _check_apply_args(xs, lengths, train, key)
        if resets is not None:
            resets, _ = check_resets(resets, jax.tree_util.tree_leaves(xs)[0])
        params = _check_tuple("params", params, n)
        carries = (None,) * n if carry is None else _check_tuple("carry", carry, n)
        if train and rate > 0.0 and n > 1:
            _need_key(key, f"dropout={rate}")
        keys = jax.random.split(key, 2 * n) if key is not None else [None] * (2 * n)
        out, finals = xs, []
        for k, (model, p, c) in enumerate(zip(models, params, carries, strict=True)):
            inp = out
            if k > 0 and train and rate > 0.0:
                inp = _dropout(keys[2 * k], rate, inp)
            try:
                c, ys = model.apply(p, inp, lengths=lengths, carry=c, train=train, key=keys[2 * k + 1],
                                    **_resets_kw(resets))
            except (ValueError, TypeError) as e:
                e.add_note(f"(raised by layer {k} of deep)")
                raise
            if residual and k > 0:
                if ys.shape != out.shape:
                    raise ValueError(
                        f"residual: layer {k} outputs shape {tuple(ys.shape)} but its input has "
                        f"shape {tuple(out.shape)}; residual connections need equal sizes"
                    )
                ys = ys + out
            out = _zero_padding(ys, lengths)
            finals.append(c)
        return StackedCarry(finals), out

    return SeqModel(init, _batch_major(apply, time_major))


_MERGES: dict[str, Callable[[Array, Array], Array]] = {
    "concat": lambda f, b: jnp.concatenate([f, b], axis=-1),
    "sum": jnp.add,
    "mean": lambda f, b: (f + b) / 2,
    "mul": jnp.multiply,
}


def bidirectional(
    fwd: Cell | SeqModel,
    bwd: Cell | SeqModel,
    *,
    merge: str | Callable[[Array, Array], Array] = "concat",
    recurrent_dropout: float = 0.0,
    time_major: bool = True,
    unroll: int | bool = 1,
    impl: str = "auto",
) -> SeqModel:
    """A bidirectional layer: ``fwd`` reads each sequence forwards, ``bwd`` backwards.

    ::

        y→_t = fwd over x_0 .. x_t        y←_t = bwd over x_{L-1} .. x_t     (L = length)
        y_t = merge(y→_t, y←_t)

    The backward direction starts at each sequence's own last valid step, so padding never
    enters it. A ``Cell`` direction runs with ``rnnjax.scan(reverse=...)``; a ``SeqModel``
    given as ``bwd`` (for instance a ``deep`` stack) is applied to the time-reversed sequences
    (``flip_sequences``) and its outputs flipped back. The two directions have separate
    parameters, ``BiParams(fwd, bwd)``. With ``resets`` (packed rows) each direction resets
    at every packed sequence's own start, so the backward one runs each sequence from its own
    last step; a ``SeqModel`` ``bwd`` gets the flipped rows with the flipped boundaries.

    Args:
      fwd, bwd: ``Cell`` or ``SeqModel`` instances; they may differ in type and size.
      merge: ``"concat"`` (``[y→; y←]``, PyTorch's layout), ``"sum"``, ``"mean"``, ``"mul"``, or a
        function ``merge(y_fwd, y_bwd) -> y``.
      recurrent_dropout: variational recurrent dropout for the directions given as ``Cell`` instances
        (see ``rnn``).
      time_major: False for batch-major ``xs``/``ys`` (see ``rnn``); the directions are
        called time-major.
      unroll, impl: for the directions given as ``Cell`` instances (see ``rnn``).

    Returns:
      ``SeqModel`` whose ``apply`` returns ``(BiCarry(fwd, bwd), ys)``: the forward carry after
      each sequence's last valid step and the backward carry after step 0; ``carry`` may be a
      ``BiCarry`` of initial carries.

    >>> model = bidirectional(lstm(3, 4), lstm(3, 4))
    >>> carry, ys = model.apply(model.init(jax.random.key(0)), jnp.ones((5, 2, 3)), lengths=jnp.array([5, 3]))
    >>> ys.shape, carry.bwd.h.shape
    ((5, 2, 8), (2, 4))
    """
    _check_layer("fwd", fwd)
    _check_layer("bwd", bwd)
    if isinstance(merge, str):
        if merge not in _MERGES:
            raise ValueError(f"merge: expected one of {sorted(_MERGES)} or a function, got {merge!r}")
        merge_fn = _MERGES[merge]
    elif callable(merge):
        merge_fn = merge
    else:
        raise TypeError(f"merge: expected a string or a function, got {type(merge).__name__}")
    rec_rate = check_rate("recurrent_dropout", recurrent_dropout)
    check_unroll(unroll)
    check_impl(impl)
    fwd_model = _as_model(fwd, recurrent_dropout=rec_rate, unroll=unroll, impl=impl)
    bwd_model = _as_model(bwd, reverse=True, recurrent_dropout=rec_rate, unroll=unroll, impl=impl)
    flip_bwd = isinstance(bwd, SeqModel)

    def init(key):
        k1, k2 = jax.random.split(key)
        return BiParams(fwd_model.init(k1), bwd_model.init(k2))

    def apply(params, xs, *, lengths=None, carry=None, train=False, key=None, resets=None):
        lengths = _check_apply_args(xs, lengths, train, key)
        if resets is not None:
            resets, _ = check_resets(resets, jax.tree_util.tree_leaves(xs)[0])
        if not isinstance(params, BiParams):
            raise TypeError(f"params: expected BiParams(fwd, bwd), got {type(params).__name__}")
        if carry is None:
            carry = BiCarry(None, None)
        elif not isinstance(carry, BiCarry):
            raise TypeError(f"carry: expected BiCarry(fwd, bwd) or None, got {type(carry).__name__}")
        k_f, k_b = jax.random.split(key) if key is not None else (None, None)
        try:
            c_f, ys_f = fwd_model.apply(params.fwd, xs, lengths=lengths, carry=carry.fwd, train=train, key=k_f,
                                        **_resets_kw(resets))
        except (TypeError, ValueError) as e:
            e.add_note("(raised by the forward layer of bidirectional)")
            raise
        try:
            if flip_bwd:
                # Time-reversed, a packed row's sequences come in reverse order, each reversed:
                # they start where the originals end (the reverse loop's reset steps, flipped).
                flipped = None
                if resets is not None:
                    num_steps = jax.tree_util.tree_leaves(xs)[0].shape[0]
                    flipped = flip_sequences(fresh_steps(resets, lengths, num_steps, True), lengths)
                c_b, ys_b = bwd_model.apply(params.bwd, flip_sequences(xs, lengths), lengths=lengths,
                                            carry=carry.bwd, train=train, key=k_b, **_resets_kw(flipped))
                ys_b = flip_sequences(ys_b, lengths)
            else:
                c_b, ys_b = bwd_model.apply(params.bwd, xs, lengths=lengths, carry=carry.bwd, train=train, key=k_b,
                                            **_resets_kw(resets))
        except (TypeError, ValueError) as e:
            e.add_note("(raised by the backward layer of bidirectional)")
            raise
        if merge != "concat" and isinstance(merge, str) and ys_f.shape != ys_b.shape:
            raise ValueError(
                f"merge: {merge!r} needs forward and backward outputs of one shape, got "
                f"{tuple(ys_f.shape)} and {tuple(ys_b.shape)}; use merge='concat' or layers of equal size"
            )
        ys = merge_fn(ys_f, ys_b)  # [T, *batch, O]
        return BiCarry(c_f, c_b), _zero_padding(ys, lengths)

    return SeqModel(init, _batch_major(apply, time_major))


# ------------------------------------------------------------------- sequence → vector, etc.


def _pool_args(ys, lengths, time_major):
    if not check_bool("time_major", time_major):
        ys = jnp.moveaxis(ys, batch_major_axis(ys, lengths, name="ys"), 0)
    check_xs(ys, name="ys", floating=True)
    if lengths is None:
        return ys, None
    return ys, check_seq_lengths(lengths, ys)[0]


def _pool_segments(ys, lengths, segment_ids, num_segments, time_major, how):
    """Per-segment pooling of packed rows (``segment_ids`` given), else None."""
    if segment_ids is None:
        if num_segments is not None:
            raise ValueError("num_segments: only with segment_ids (packed rows), got num_segments without them")
        return None
    if lengths is not None:
        raise ValueError("lengths: not with segment_ids (their -1 entries already mark the padding); pass one")
    if num_segments is None:
        raise ValueError("num_segments: expected the number of packed sequences (an int) with segment_ids, got None")
    if not check_bool("time_major", time_major):
        ids = jnp.asarray(segment_ids)
        axis = ids.ndim - 1  # ids: [*batch, T]
        check_array("ys", ys)
        ys, segment_ids = jnp.moveaxis(ys, axis, 0), jnp.moveaxis(ids, axis, 0)
    check_xs(ys, name="ys", floating=True)
    return segment_pool(ys, segment_ids, num_segments, how)


def pool_last(ys: Array, lengths: Array | None = None, *, segment_ids: Array | None = None,
             num_segments: int | None = None, time_major: bool = True) -> Array:
    """Sequence → vector: each sequence's output at its last valid step.

    ``ys: [T, *batch, H]`` (``[*batch, T, H]`` with ``time_major=False``) → ``[*batch, H]``,
    the output at ``t = lengths - 1`` (zeros for an empty sequence). For a forward RNN this is the final hidden state; for a bidirectional one
    it pairs the forward summary with a backward output that has seen only the last step, so
    prefer ``carry_hidden(carry)`` there.

    Packed rows (``rnnjax.pack_sequences``): with ``segment_ids: [T, *batch]``
    (``Packed.segment_ids``) and ``num_segments`` instead of ``lengths``, the result is
    ``[num_segments, H]``, one vector per packed sequence in input order (``pool_mean`` and
    ``pool_max`` take the same two keywords).

    >>> pool_last(jnp.arange(4.0).reshape(4, 1, 1) * jnp.ones((4, 2, 1)), jnp.array([4, 2]))[:, 0]
    Array([3., 1.], dtype=float32)
    """
    pooled = _pool_segments(ys, lengths, segment_ids, num_segments, time_major, "last")
    if pooled is not None:
        return pooled
    ys, lengths = _pool_args(ys, lengths, time_major)
    if lengths is None:
        return ys[-1]
    idx = jnp.clip(lengths - 1, 0, ys.shape[0] - 1)  # [*batch]
    idx = idx.reshape((1,) + idx.shape + (1,) * (ys.ndim - 1 - idx.ndim))
    last = jnp.take_along_axis(ys, jnp.broadcast_to(idx, (1,) + ys.shape[1:]), axis=0)[0]
    nonempty = (lengths > 0).reshape(lengths.shape + (1,) * (last.ndim - lengths.ndim))
    return jnp.where(nonempty, last, jnp.zeros((), ys.dtype))


def pool_mean(ys: Array, lengths: Array | None = None, *, segment_ids: Array | None = None,
             num_segments: int | None = None, time_major: bool = True) -> Array:
    """Sequence → vector: mean of the outputs over each sequence's valid steps.

    ``ys: [T, *batch, H]`` → ``[*batch, H]``; zeros for an empty sequence.

    >>> pool_mean(jnp.arange(4.0).reshape(4, 1, 1) * jnp.ones((4, 2, 1)), jnp.array([4, 2]))[:, 0]
    Array([1.5, 0.5], dtype=float32)
    """
    pooled = _pool_segments(ys, lengths, segment_ids, num_segments, time_major, "mean")
    if pooled is not None:
        return pooled
    ys, lengths = _pool_args(ys, lengths, time_major)
    if lengths is None:
        return ys.mean(axis=0)
    mask = steps_mask(lengths, ys.shape[0])
    mask = mask.reshape(mask.shape + (1,) * (ys.ndim - mask.ndim))
    total = jnp.where(mask, ys, jnp.zeros((), ys.dtype)).sum(axis=0)
    count = jnp.maximum(lengths, 1).astype(ys.dtype)
    return total / count.reshape(count.shape + (1,) * (total.ndim - count.ndim))


def pool_max(ys: Array, lengths: Array | None = None, *, segment_ids: Array | None = None,
             num_segments: int | None = None, time_major: bool = True) -> Array:
    """Sequence → vector: elementwise max of the outputs over each sequence's valid steps.

    ``ys: [T, *batch, H]`` → ``[*batch, H]``; zeros for an empty sequence (so no ``-inf``
    reaches a loss).

    >>> pool_max(jnp.array([[[1.0], [5.0]], [[3.0], [9.0]]]), jnp.array([2, 1]))[:, 0]
    Array([3., 5.], dtype=float32)
    """
    pooled = _pool_segments(ys, lengths, segment_ids, num_segments, time_major, "max")
    if pooled is not None:
        return pooled
    ys, lengths = _pool_args(ys, lengths, time_major)
    if lengths is None:
        return ys.max(axis=0)
    mask = steps_mask(lengths, ys.shape[0])
    mask = mask.reshape(mask.shape + (1,) * (ys.ndim - mask.ndim))
    best = jnp.where(mask, ys, jnp.array(-jnp.inf, ys.dtype)).max(axis=0)
    nonempty = (lengths > 0).reshape(lengths.shape + (1,) * (best.ndim - lengths.ndim))
    return jnp.where(nonempty, best, jnp.zeros((), ys.dtype))


def repeat_vector(v: Array, num_steps: int) -> Array:
    """Vector → sequence: ``v: [*batch, F]`` as the input at every one of ``num_steps`` steps.

    Returns ``[num_steps, *batch, F]``; concatenate it with per-step inputs
    (``jnp.concatenate([xs, repeat_vector(v, T)], -1)``) to condition every step on ``v``, and/or
    start the cell from ``with_hidden(cell.initial_carry(batch), v)``.

    >>> repeat_vector(jnp.ones((2, 3)), 5).shape
    (5, 2, 3)
    """
    check_array("v", v)
    if v.ndim < 1:
        raise ValueError(f"v: expected shape [*batch, F] (at least 1 axis), got {tuple(v.shape)}")
    check_int("num_steps", num_steps)
    return jnp.broadcast_to(v, (num_steps,) + tuple(v.shape))


def dense_init(
    key: Array,
    input_size: int,
    output_size: int,
    *,
    w_init: Callable = glorot_uniform,
    b_init: Callable = jax.nn.initializers.zeros,
    dtype=jnp.float32,
) -> DenseParams:
    """Parameters of an affine map ``x w + b``: Glorot-uniform ``w [I, O]``, zero ``b [O]``.

    >>> dense_init(jax.random.key(0), 8, 3).w.shape
    (8, 3)
    """
    check_int("input_size", input_size)
    check_int("output_size", output_size)
    k1, k2 = jax.random.split(key)
    return DenseParams(w_init(k1, (input_size, output_size), dtype), b_init(k2, (output_size,), dtype))


def dense(params: DenseParams, x: Array) -> Array:
    """``x w + b`` over the last axis: ``x: [..., I]`` → ``[..., O]`` (an output projection).

    >>> p = dense_init(jax.random.key(0), 4, 2)
    >>> dense(p, jnp.ones((5, 3, 4))).shape
    (5, 3, 2)
    """
    check_array("x", x)
    if x.ndim < 1 or x.shape[-1] != params.w.shape[0]:
        raise ValueError(f"x: expected shape [..., {params.w.shape[0]}] (I from params.w), got {tuple(x.shape)}")
    return x @ params.w + params.b


__all__ = [
    "BiCarry",
    "BiParams",
    "DenseParams",
    "SeqModel",
    "StackedCarry",
    "bidirectional",
    "carry_hidden",
    "deep",
    "dense",
    "dense_init",
    "has_parallel_form",
    "pool_last",
    "pool_max",
    "pool_mean",
    "repeat_vector",
    "rnn",
    "stack",
    "stack_layers",
    "with_hidden",
]
