"""The cell registry: what the fast paths know about a step function.

Every step with a fast path is registered once, through :func:`register_step` (public as
``rnnjax.register_step``), with the facts the time loops use:

* ``params``/``carry``: the param and carry types the step's fast paths accept (``carry=None``
  means a plain array carry ``[*batch, H]``);
* ``fused``: a whole-sequence kernel with its own backward pass, run by ``rnnjax.scan``
  (``rnnjax/_fused.py``);
* ``diag_jacobian``: ``diag(∂carry'/∂carry)`` in closed form, for ``deer_scan(method="quasi")``;
* ``affine``: ``(a, b)`` of an update ``h' = a ⊙ h + b`` (or their logs), for
  ``min_rnn_parallel`` (and, when no ``parallel`` is given, an associative scan for ``rnn(cell,
  parallel=True)``);
* ``parallel``: a whole-sequence parallel-in-time evaluation with the contract of
  ``rnnjax.scan``, run by ``rnn(cell, parallel=True)``;
* ``keywords``: the keyword arguments a ``functools.partial`` of the step may bind (e.g.
  ``elman(activation=...)``) and still be this entry.

:func:`lookup` is the one way to ask; it sees through keyword-only ``functools.partial``.
A step that is not here (an unregistered one, or a registered step wrapped in a lambda) runs as
it is, on the plain loop. The built-in cells register in ``_builtins`` below with the same
call a user makes.
"""

from __future__ import annotations

import dataclasses
import functools
from collections.abc import Callable, Iterable
from typing import Any

import jax
import numpy as np

from rnnjax._parallel_scan import affine_recurrence


@dataclasses.dataclass(frozen=True)
class Entry:
    """What the fast paths know about one registered step (see the module docstring)."""

    name: str
    params: type
    carry: type | None = None
    fused: Callable | None = None
    diag_jacobian: Callable | None = None
    affine: Callable | None = None
    parallel: Callable | None = None
    keywords: frozenset = frozenset()
    builtin: bool = False

    def accepts(self, params: Any, carry: Any) -> bool:
        """Whether ``params``/``carry`` are this cell's own containers (as its kernels return them)."""
        if type(params) is not self.params:
            return False
        if self.carry is None:
            return isinstance(carry, (jax.Array, np.ndarray))
        return type(carry) is self.carry


_ENTRIES: dict[Callable, Entry] = {}
_loaded = False  # the built-in cells register on first use (see _builtins)

_DTYPE = ("dtype",)  # the compute dtype of the precision policy (see cells.py)


def _builtins() -> None:
    """Register the built-in cells, on first use: the cell modules' parallel forms use the time
    loops, which consult the registry, so the cell modules are imported here rather than at
    import time."""
    from rnnjax import (
        _fused,
        blocks,
        cells,
        conv_cells,
        linear_rnn,
        norm_cells,
        simple_cells,
        xlstm,
    )

    # the classic cells: fused kernels for Elman, LSTM and GRU; closed-form Jacobian diagonals
    register_step(cells.elman_step, params=cells.ElmanParams, fused=_fused.elman_sequence,
                  diag_jacobian=cells.elman_diag_jacobian, keywords=("activation", "dtype"))
    register_step(cells.lstm_step, params=cells.LSTMParams, carry=cells.LSTMState, fused=_fused.lstm_sequence,
                  diag_jacobian=cells.lstm_diag_jacobian, keywords=_DTYPE)
    register_step(cells.lstm_proj_step, params=cells.LSTMProjParams, carry=cells.LSTMState, keywords=_DTYPE)
    register_step(cells.peephole_lstm_step, params=cells.PeepholeLSTMParams, carry=cells.LSTMState,
                  keywords=_DTYPE)
    register_step(cells.cifg_lstm_step, params=cells.CIFGParams, carry=cells.LSTMState, keywords=_DTYPE)
    register_step(cells.gru_step, params=cells.GRUParams, fused=_fused.gru_sequence,
                  diag_jacobian=cells.gru_diag_jacobian, keywords=_DTYPE)
    register_step(cells.gru_reset_before_step, params=cells.GRUResetBeforeParams, keywords=_DTYPE)
    # minGRU/minLSTM: affine in the state, so their parallel form is the associative scan
    register_step(cells.min_gru_step, params=cells.MinGRUParams, diag_jacobian=cells.min_gru_diag_jacobian,
                  affine=cells.min_gru_affine, keywords=_DTYPE)
    register_step(cells.min_lstm_step, params=cells.MinLSTMParams, diag_jacobian=cells.min_lstm_diag_jacobian,
                  affine=cells.min_lstm_affine, keywords=_DTYPE)
    # layer-norm, IndRNN, MGU (closed-form Jacobian diagonals for quasi-DEER), convolutional
    register_step(norm_cells.layer_norm_lstm_step, params=norm_cells.LayerNormLSTMParams, carry=cells.LSTMState,
                  keywords=("eps", "dtype"))
    register_step(norm_cells.layer_norm_gru_step, params=norm_cells.LayerNormGRUParams, keywords=("eps", "dtype"))
    register_step(simple_cells.indrnn_step, params=simple_cells.IndRNNParams,
                  diag_jacobian=simple_cells.indrnn_diag_jacobian,
                  keywords=("activation", "recurrent_max", "dtype"))
    register_step(simple_cells.mgu_step, params=simple_cells.MGUParams, diag_jacobian=simple_cells.mgu_diag_jacobian,
                  keywords=("reset_gate", "dtype"))
    register_step(conv_cells.conv_lstm_step, params=conv_cells.ConvLSTMParams, carry=cells.LSTMState,
                  keywords=_DTYPE)
    register_step(conv_cells.conv_gru_step, params=conv_cells.ConvGRUParams, keywords=_DTYPE)
    # gated linear recurrences and xLSTM: a sequential step and a parallel form each (sLSTM: none)
    register_step(linear_rnn.lru_step, params=linear_rnn.LRUParams, parallel=linear_rnn.lru_parallel,
                  keywords=_DTYPE)
    register_step(linear_rnn.rg_lru_step, params=linear_rnn.RGLRUParams, parallel=linear_rnn.rg_lru_parallel,
                  keywords=_DTYPE)
    register_step(linear_rnn.selective_ssm_step, params=linear_rnn.SelectiveSSMParams,
                  parallel=linear_rnn.selective_ssm_parallel, keywords=_DTYPE)
    register_step(xlstm.mlstm_step, params=xlstm.MLSTMParams, carry=xlstm.MLSTMState, parallel=xlstm.mlstm_parallel,
                  keywords=_DTYPE)
    register_step(xlstm.slstm_step, params=xlstm.SLSTMParams, carry=xlstm.SLSTMState, keywords=_DTYPE)
    # the papers' residual blocks (their carries hold the causal convolution's last inputs)
    register_step(blocks.mamba_block_step, params=blocks.MambaBlockParams, carry=blocks.MambaBlockState,
                  parallel=blocks.mamba_block_parallel, keywords=_DTYPE)
    register_step(blocks.hawk_block_step, params=blocks.HawkBlockParams, carry=blocks.HawkBlockState,
                  parallel=blocks.hawk_block_parallel, keywords=_DTYPE)
    register_step(blocks.mlstm_block_step, params=blocks.MLSTMBlockParams, carry=blocks.MLSTMBlockState,
                  parallel=blocks.mlstm_block_parallel, keywords=_DTYPE)
    register_step(blocks.slstm_block_step, params=blocks.SLSTMBlockParams, carry=blocks.SLSTMBlockState,
                  keywords=_DTYPE)


def _table() -> dict[Callable, Entry]:
    """Every registered step's entry, the built-ins' registered first."""
    global _loaded
    if not _loaded:
        _loaded = True
        _builtins()
        # register_step asks for the table first, so no user's entry can precede these
        _ENTRIES.update({step: dataclasses.replace(entry, builtin=True) for step, entry in _ENTRIES.items()})
    return _ENTRIES


def register_step(
    step: Callable,
    *,
    params: type,
    carry: type | None = None,
    parallel: Callable | None = None,
    fused: Callable | None = None,
    diag_jacobian: Callable | None = None,
    affine: Callable | None = None,
    keywords: Iterable[str] = (),
) -> Callable:
    """Give a step function the fast paths of a built-in cell; returns ``step``.

    The loops look a step up by identity (through keyword-only ``functools.partial``, for the
    keywords listed in ``keywords``) and use a fast path only when the params (and the carry)
    are of the registered types; everything else runs the plain step loop, which every fast path
    must equal in values and gradients. Register each step once; registering it again replaces
    its entry (a built-in cell's entry cannot be replaced).

    Args:
      step: ``step(params, carry, x) -> (carry, y)``.
      params: the type of its params (e.g. the NamedTuple its factory's ``init`` returns).
      carry: the type of its carry, or None for a plain array ``[*batch, H]``.
      parallel: ``parallel(params, carry, xs, lengths=None, reverse=False, *, resets=None) ->
        (carry, ys)``, the whole sequence at once with the contract of ``rnnjax.scan``
        (``xs: [T, *batch, I]``; arguments arrive checked, ``lengths`` within ``[0, T]``); run
        by ``rnn(cell, parallel=True)`` and the composers built on it. Without a ``resets``
        keyword, packed rows are refused with a clear error.
      fused: ``fused(params, carry, xs, valid, fresh, reverse, unroll) -> (carry, ys)``, a
        kernel on flattened batches (``xs: [T, B, I]``, ``valid``/``fresh``: ``[T, B]`` bool
        or None), run by ``rnnjax.scan`` in place of the loop.
      diag_jacobian: ``diag_jacobian(params, carry, x) -> diag(∂carry'/∂carry)`` (the carry's
        structure), for ``deer_scan(method="quasi")``.
      affine: ``affine(params, xs, log_space) -> (a, b)`` with ``h_t = a_t ⊙ h_{t-1} + b_t``,
        each ``[T, *batch, H]`` (their logs when ``log_space``, which needs ``a, b > 0``), for
        ``min_rnn_parallel``; when ``parallel`` is not given it also becomes one (an
        associative scan of depth O(log T), with lengths, reverse and resets).
      keywords: the keywords a ``functools.partial`` of ``step`` may bind and still be this
        entry (they are bound into ``parallel``, ``fused``, ``diag_jacobian`` and ``affine``
        too).

    >>> from typing import NamedTuple
    >>> class Decay(NamedTuple):
    ...     w: jax.Array  # [I, H]
    ...     a: jax.Array  # [H], the decay per unit
    >>> def decay_step(p, h, x):
    ...     h = jax.nn.sigmoid(p.a) * h + x @ p.w
    ...     return h, h
    >>> def decay_affine(p, xs, log_space):
    ...     return jnp.broadcast_to(jax.nn.sigmoid(p.a), xs.shape[:-1] + p.a.shape), xs @ p.w
    >>> _ = register_step(decay_step, params=Decay, affine=decay_affine)
    >>> cell = Cell(lambda key: Decay(jnp.ones((2, 3)), jnp.zeros(3)), lambda b=(): jnp.zeros((*b, 3)), decay_step)
    >>> model = rnn(cell, parallel=True)                 # an associative scan over time
    >>> _, ys = model.apply(model.init(None), jnp.ones((4, 2)))
    >>> ys[:, 0].tolist()
    [2.0, 3.0, 3.5, 3.75]
    """
    if not callable(step):
        raise TypeError(f"step: expected a function step(params, carry, x), got {type(step).__name__}")
    if not isinstance(params, type):
        raise TypeError(f"params: expected the type of the step's params (a class), got {params!r}")
    if carry is not None and not isinstance(carry, type):
        raise TypeError(f"carry: expected the type of the step's carry (a class) or None, got {carry!r}")
    for arg, fn in (("parallel", parallel), ("fused", fused), ("diag_jacobian", diag_jacobian),
                    ("affine", affine)):
        if fn is not None and not callable(fn):
            raise TypeError(f"{arg}: expected a function or None, got {type(fn).__name__}")
    if isinstance(keywords, str) or not all(isinstance(k, str) for k in keywords):
        raise TypeError(f"keywords: expected a sequence of keyword names, got {keywords!r}")
    existing = _table().get(step)
    if existing is not None and existing.builtin:
        raise ValueError(f"step: {getattr(step, '__name__', step)!r} is a built-in cell's step; its entry "
                         f"cannot be replaced (register a function of your own that calls it)")
    if parallel is None and affine is not None:  # an affine recurrence is an associative scan
        parallel = functools.partial(affine_recurrence, affine)
    name = getattr(step, "__name__", type(step).__name__).removesuffix("_step")
    _ENTRIES[step] = Entry(name, params, carry, fused, diag_jacobian, affine, parallel, frozenset(keywords))
    return step


def parallel_cells() -> tuple[str, ...]:
    """Names of the built-in cells with a parallel-in-time form."""
    return tuple(entry.name for entry in _table().values() if entry.parallel is not None and entry.builtin)


def lookup(step: Callable) -> tuple[Entry, dict] | None:
    """``(entry, keywords)`` for a registered step or a keyword partial of one, else None.

    ``keywords`` are those the partial binds (``{}`` for the step itself); a partial binding
    positional arguments, or keywords the entry does not list, is not the built-in step.
    """
    kwargs: dict = {}
    if isinstance(step, functools.partial):
        if step.args:
            return None
        kwargs, step = dict(step.keywords), step.func
    try:
        entry = _table().get(step)
    except TypeError:  # an unhashable callable
        return None
    if entry is None or not set(kwargs) <= entry.keywords:
        return None
    return entry, kwargs


def bound(fn: Callable | None, kwargs: dict) -> Callable | None:
    """``fn`` with the step's keywords bound (``None`` stays ``None``)."""
    if fn is None or not kwargs:
        return fn
    return functools.partial(fn, **kwargs)


def fused_kernel(step: Callable, params: Any, carry: Any) -> Callable | None:
    """The fused sequence kernel that runs ``step`` on these params and carry, else None."""
    found = lookup(step)
    if found is None or found[0].fused is None or not found[0].accepts(params, carry):
        return None
    return bound(found[0].fused, found[1])


def diag_jacobian(step: Callable) -> Callable | None:
    """The closed-form ``diag(∂carry'/∂carry)`` of a built-in step, else None."""
    found = lookup(step)
    return None if found is None else bound(found[0].diag_jacobian, found[1])


def check_inputs(step: Callable, params: Any, xs: Any) -> None:
    """For a built-in step, check ``xs``'s feature axis against the input size of its params."""
    found = lookup(step)
    if found is None or not found[0].builtin:
        return
    w_ih = getattr(params, "w_ih", None)
    if w_ih is not None and hasattr(w_ih, "shape") and w_ih.ndim == 2 and xs.shape[-1] != w_ih.shape[0]:
        raise ValueError(
            f"xs: expected shape [T, *batch, {w_ih.shape[0]}] (input_size from params.w_ih), "
            f"got {tuple(xs.shape)}"
        )
