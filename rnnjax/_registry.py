"""The table of built-in cells: what each fast path needs to know about a built-in step.

Every built-in step function is registered here once, with the facts the time loops use:

* ``params``/``carry``: the param and carry types the step's fast paths accept (``carry=None``
  means a plain array carry ``[*batch, H]``);
* ``fused``: a whole-sequence kernel with its own backward pass, run by ``rnnjax.scan``
  (``rnnjax/_fused.py``);
* ``diag_jacobian``: ``diag(∂carry'/∂carry)`` in closed form, for ``deer_scan(method="quasi")``;
* ``affine``: ``(a, b)`` of an update ``h' = a ⊙ h + b`` (or their logs), for
  ``min_rnn_parallel``;
* ``parallel``: a whole-sequence parallel-in-time evaluation with the contract of
  ``rnnjax.scan``, run by ``rnn(cell, parallel=True)``;
* ``keywords``: the keyword arguments a ``functools.partial`` of the step may bind (e.g.
  ``elman(activation=...)``) and still be this entry.

:func:`lookup` is the one way to ask; it sees through keyword-only ``functools.partial``.
A step that is not here (a user's, or a wrapped built-in) runs as it is, on the plain loop.

To add a built-in cell: write its module (params, step, factory), then add one ``Builtin``
entry to the table in ``_table`` below with whichever of these facts it has.
"""

from __future__ import annotations

import dataclasses
import functools
from collections.abc import Callable
from typing import Any

import jax
import numpy as np

from rnnjax._parallel_scan import affine_recurrence


@dataclasses.dataclass(frozen=True)
class Builtin:
    """What the fast paths know about one built-in step (see the module docstring)."""

    name: str
    params: type
    carry: type | None = None
    fused: Callable | None = None
    diag_jacobian: Callable | None = None
    affine: Callable | None = None
    parallel: Callable | None = None
    keywords: frozenset = frozenset()

    def accepts(self, params: Any, carry: Any) -> bool:
        """Whether ``params``/``carry`` are this cell's own containers (as its kernels return them)."""
        if type(params) is not self.params:
            return False
        if self.carry is None:
            return isinstance(carry, (jax.Array, np.ndarray))
        return type(carry) is self.carry


_DTYPE = frozenset({"dtype"})  # the compute dtype of the precision policy (see cells.py)


@functools.cache
def _table() -> dict[Callable, Builtin]:
    """The table, built on first use: the cell modules' parallel forms use the time loops, which
    consult this table, so the cell modules are imported here rather than at import time."""
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

    return {
        cells.elman_step: Builtin("elman", cells.ElmanParams, fused=_fused.elman_sequence,
                                  diag_jacobian=cells.elman_diag_jacobian,
                                  keywords=frozenset({"activation", "dtype"})),
        cells.lstm_step: Builtin("lstm", cells.LSTMParams, cells.LSTMState, fused=_fused.lstm_sequence,
                                 diag_jacobian=cells.lstm_diag_jacobian, keywords=_DTYPE),
        cells.lstm_proj_step: Builtin("lstm_proj", cells.LSTMProjParams, cells.LSTMState, keywords=_DTYPE),
        cells.peephole_lstm_step: Builtin("peephole_lstm", cells.PeepholeLSTMParams, cells.LSTMState, keywords=_DTYPE),
        cells.cifg_lstm_step: Builtin("cifg_lstm", cells.CIFGParams, cells.LSTMState, keywords=_DTYPE),
        cells.gru_step: Builtin("gru", cells.GRUParams, fused=_fused.gru_sequence,
                                diag_jacobian=cells.gru_diag_jacobian, keywords=_DTYPE),
        cells.gru_reset_before_step: Builtin("gru_reset_before", cells.GRUResetBeforeParams, keywords=_DTYPE),
        cells.min_gru_step: Builtin("min_gru", cells.MinGRUParams, diag_jacobian=cells.min_gru_diag_jacobian,
                                    affine=cells.min_gru_affine,
                                    parallel=functools.partial(affine_recurrence, cells.min_gru_affine),
                                    keywords=_DTYPE),
        cells.min_lstm_step: Builtin("min_lstm", cells.MinLSTMParams, diag_jacobian=cells.min_lstm_diag_jacobian,
                                     affine=cells.min_lstm_affine,
                                     parallel=functools.partial(affine_recurrence, cells.min_lstm_affine),
                                     keywords=_DTYPE),
        # layer-norm, IndRNN, MGU (closed-form Jacobian diagonals for quasi-DEER), convolutional
        norm_cells.layer_norm_lstm_step: Builtin("layer_norm_lstm", norm_cells.LayerNormLSTMParams, cells.LSTMState,
                                                 keywords=frozenset({"eps", "dtype"})),
        norm_cells.layer_norm_gru_step: Builtin("layer_norm_gru", norm_cells.LayerNormGRUParams,
                                                keywords=frozenset({"eps", "dtype"})),
        simple_cells.indrnn_step: Builtin("indrnn", simple_cells.IndRNNParams, diag_jacobian=simple_cells.indrnn_diag_jacobian,
                                          keywords=frozenset({"activation", "recurrent_max", "dtype"})),
        simple_cells.mgu_step: Builtin("mgu", simple_cells.MGUParams, diag_jacobian=simple_cells.mgu_diag_jacobian,
                                       keywords=frozenset({"reset_gate", "dtype"})),
        conv_cells.conv_lstm_step: Builtin("conv_lstm", conv_cells.ConvLSTMParams, cells.LSTMState, keywords=_DTYPE),
        conv_cells.conv_gru_step: Builtin("conv_gru", conv_cells.ConvGRUParams, keywords=_DTYPE),
        # gated linear recurrences and xLSTM: a sequential step and a parallel form each (sLSTM: none)
        linear_rnn.lru_step: Builtin("lru", linear_rnn.LRUParams, parallel=linear_rnn.lru_parallel),
        linear_rnn.rg_lru_step: Builtin("rg_lru", linear_rnn.RGLRUParams, parallel=linear_rnn.rg_lru_parallel),
        linear_rnn.selective_ssm_step: Builtin("selective_ssm", linear_rnn.SelectiveSSMParams,
                                               parallel=linear_rnn.selective_ssm_parallel),
        xlstm.mlstm_step: Builtin("mlstm", xlstm.MLSTMParams, xlstm.MLSTMState, parallel=xlstm.mlstm_parallel,
                                  keywords=_DTYPE),
        xlstm.slstm_step: Builtin("slstm", xlstm.SLSTMParams, xlstm.SLSTMState, keywords=_DTYPE),
        # the papers' residual blocks (their carries hold the causal convolution's last inputs)
        blocks.mamba_block_step: Builtin("mamba_block", blocks.MambaBlockParams, blocks.MambaBlockState,
                                         parallel=blocks.mamba_block_parallel),
        blocks.hawk_block_step: Builtin("hawk_block", blocks.HawkBlockParams, blocks.HawkBlockState,
                                        parallel=blocks.hawk_block_parallel),
        blocks.mlstm_block_step: Builtin("mlstm_block", blocks.MLSTMBlockParams, blocks.MLSTMBlockState,
                                         parallel=blocks.mlstm_block_parallel),
        blocks.slstm_block_step: Builtin("slstm_block", blocks.SLSTMBlockParams, blocks.SLSTMBlockState),
    }


def parallel_cells() -> tuple[str, ...]:
    """Names of the built-in cells with a parallel-in-time form."""
    return tuple(entry.name for entry in _table().values() if entry.parallel is not None)


def lookup(step: Callable) -> tuple[Builtin, dict] | None:
    """``(entry, keywords)`` for a built-in step or a keyword partial of one, else None.

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
    if lookup(step) is None:
        return
    w_ih = getattr(params, "w_ih", None)
    if w_ih is not None and hasattr(w_ih, "shape") and w_ih.ndim == 2 and xs.shape[-1] != w_ih.shape[0]:
        raise ValueError(
            f"xs: expected shape [T, *batch, {w_ih.shape[0]}] (input_size from params.w_ih), "
            f"got {tuple(xs.shape)}"
        )
