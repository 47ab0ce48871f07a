"""Flax NNX adapters: an rnnjax ``Cell`` or ``SeqModel`` as an ``nnx.Module``.

The rnnjax core never imports flax; this module needs it (``pip install 'rnnjax[nnx]'``).
Import it explicitly::

    from rnnjax import nnx as rnx

``rnx.CellModule(cell, rngs=...)`` and ``rnx.SeqModule(model, rngs=...)`` hold the bundle's
params as ``nnx.Param`` leaves with the params' own NamedTuple structure (so state paths read
``.params.w_ih``), and call the pure rnnjax functions on their current values. They train with
``nnx.Optimizer``, jit with ``nnx.jit`` and follow ``model.train()`` / ``model.eval()`` for
dropout, like ``nnx.Dropout``.
"""

from __future__ import annotations

from typing import Any

import jax

try:
    from flax import nnx
except ImportError as e:  # flax is the optional extra of this module only
    raise ImportError(
        "rnnjax.nnx needs flax, which the core of rnnjax does not install: "
        "pip install 'rnnjax[nnx]' (or pip install flax)"
    ) from e

from rnnjax._checks import check_bool
from rnnjax.cells import Cell
from rnnjax.compose import SeqModel
from rnnjax.scan import scan

Array = jax.Array


def _wrap(params: Any) -> Any:
    return nnx.data(jax.tree_util.tree_map(nnx.Param, params))


def _unwrap(tree: Any) -> Any:
    return jax.tree_util.tree_map(lambda v: v[...], tree, is_leaf=lambda v: isinstance(v, nnx.Variable))


def _assign(tree: Any, params: Any) -> None:
    variables, vtree = jax.tree_util.tree_flatten(tree, is_leaf=lambda v: isinstance(v, nnx.Variable))
    values, ptree = jax.tree_util.tree_flatten(params)
    if vtree != ptree:
        raise ValueError(f"params: expected the structure {vtree} of the module's params, got {ptree}")
    for var, value in zip(variables, values, strict=True):
        if tuple(var.shape) != tuple(value.shape):
            raise ValueError(f"params: expected a leaf of shape {tuple(var.shape)}, got {tuple(value.shape)}")
        var[...] = value


class CellModule(nnx.Module):
    """An rnnjax ``Cell`` as an NNX module: params as ``nnx.Param``, the step as ``__call__``.

    Args:
      cell: any ``Cell`` (built-in, ``stack``-ed or your own).
      rngs: ``nnx.Rngs``; the params are drawn from its ``params`` stream.

    ``module(carry, x) -> (carry, y)`` is one step; ``module.scan(xs, lengths=...)`` runs
    ``rnnjax.scan`` over a sequence; ``module.initial_carry(batch_shape)`` gives zeros;
    ``module.get_params()`` / ``module.set_params(p)`` read and write the plain rnnjax params.

    >>> from flax import nnx
    >>> from rnnjax import nnx as rnx
    >>> layer = rnx.CellModule(lstm(3, 8), rngs=nnx.Rngs(0))
    >>> carry, ys = layer.scan(jnp.ones((5, 2, 3)), lengths=jnp.array([5, 2]))
    >>> ys.shape, layer.params.w_ih.shape
    ((5, 2, 8), (3, 32))
    """

    def __init__(self, cell: Cell, *, rngs: nnx.Rngs):
        if not isinstance(cell, Cell):
            raise TypeError(f"cell: expected a rnnjax.Cell, got {type(cell).__name__}")
        self.cell = cell
        self.params = _wrap(cell.init(rngs.params()))

    def get_params(self) -> Any:
        """The current params as the cell's own pytree of arrays."""
        return _unwrap(self.params)

    def set_params(self, params: Any) -> None:
        """Overwrite the params with ``params`` (same structure and shapes)."""
        _assign(self.params, params)

    def initial_carry(self, batch_shape=()) -> Any:
        return self.cell.initial_carry(batch_shape)

    def __call__(self, carry: Any, x: Array):
        return self.cell.step(self.get_params(), carry, x)

    def scan(self, xs: Array, *, lengths: Array | None = None, carry: Any = None, reverse: bool = False):
        """``rnnjax.scan`` of the cell over ``xs [T, *batch, I]``; zero initial carry by default."""
        if carry is None:
            carry = self.cell.initial_carry(tuple(xs.shape[1:-1]))
        return scan(self.cell.step, self.get_params(), carry, xs, lengths=lengths, reverse=reverse)


class SeqModule(nnx.Module):
    """An rnnjax ``SeqModel`` (``rnn``, ``deep``, ``bidirectional``, ...) as an NNX module.

    Args:
      model: the ``SeqModel``.
      rngs: ``nnx.Rngs``; params come from its ``params`` stream, dropout keys from a fork of
        its ``dropout`` stream (the default stream when it has none), as in ``nnx.Dropout``.
      deterministic: start in evaluation mode (no dropout). ``module.train()`` and
        ``module.eval()`` (or those of any enclosing module) switch it.

    ``module(xs, *, lengths=None, carry=None, deterministic=None, key=None) -> (carry, ys)``
    calls ``model.apply`` with ``train = not deterministic`` and, when training, a key drawn from
    the module's stream unless ``key`` is given.

    >>> from flax import nnx
    >>> from rnnjax import nnx as rnx
    >>> enc = rnx.SeqModule(deep(gru(3, 8), gru(8, 8), dropout=0.2), rngs=nnx.Rngs(0))
    >>> carries, ys = enc(jnp.ones((5, 2, 3)))
    >>> ys.shape
    (5, 2, 8)
    """

    def __init__(self, model: SeqModel, *, rngs: nnx.Rngs, deterministic: bool = False):
        if not isinstance(model, SeqModel):
            raise TypeError(f"model: expected a rnnjax.SeqModel, got {type(model).__name__}")
        check_bool("deterministic", deterministic)
        self.model = model
        self.params = _wrap(model.init(rngs.params()))
        self.deterministic = deterministic
        self.rngs = rngs["dropout"].fork()

    def get_params(self) -> Any:
        """The current params as the model's own pytree of arrays."""
        return _unwrap(self.params)

    def set_params(self, params: Any) -> None:
        """Overwrite the params with ``params`` (same structure and shapes)."""
        _assign(self.params, params)

    def __call__(
        self,
        xs: Array,
        *,
        lengths: Array | None = None,
        carry: Any = None,
        deterministic: bool | None = None,
        key: Array | None = None,
    ):
        deterministic = self.deterministic if deterministic is None else deterministic
        check_bool("deterministic", deterministic)
        train = not deterministic
        if train and key is None:
            key = self.rngs()
        return self.model.apply(self.get_params(), xs, lengths=lengths, carry=carry, train=train, key=key)


__all__ = ["CellModule", "SeqModule"]
