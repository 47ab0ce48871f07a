"""IndRNN (Li et al. 2018) and the minimal gated unit MGU (Zhou et al. 2016) as pure steps.

* ``indrnn_step``: every unit has one recurrent weight, its own, ``h' = act(x W + u ⊙ h + b)``.
  Units interact only through the next layer, so a stack of IndRNN layers is the usual model.
  The paper's bound on the recurrent weights (``|u| ≤ recurrent_max``, e.g. ``2^(1/T)`` so that
  ``|u|^T ≤ 2``: gradients through ``T`` steps can neither explode nor, with ReLU, vanish for
  units with ``|u|`` near 1) is the factory option ``recurrent_max``; the step then clips ``u``
  to ``[-recurrent_max, recurrent_max]`` before using it.
* ``mgu_step``: a GRU whose reset and update gates are one forget gate ``f``, in the form of
  Flax's ``MGUCell`` (including its ``reset_gate`` option), so Flax weights port exactly.

Also here, for ``deer_scan(method="quasi")``: ``indrnn_diag_jacobian`` and
``mgu_diag_jacobian``, each step's ``diag(∂h'/∂h)`` in closed form.

Steps work for any leading batch shape (including none), under ``jit``, ``grad`` and
``vmap``, and with 16-bit params next to a float32 carry (the new carry keeps the carry's
dtype). The output ``y`` is the new ``h``. Precision follows the classic cells (``rnnjax.cells``):
the factories take ``param_dtype`` (storage), ``dtype`` (the matrix products' operands,
accumulated in float32; None: the operands as they are) and ``carry_dtype``. IndRNN's
elementwise recurrence ``u ⊙ h`` is no matrix product and stays in the carry's precision.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import NamedTuple

import jax
import jax.numpy as jnp

from rnnjax._checks import (
    check_bool,
    check_float,
    check_params_type,
    check_shape,
    check_sizes,
)
from rnnjax.cells import (
    Cell,
    Initializer,
    draw,
    gate_blocks,
    glorot_uniform,
    matmul,
    orthogonal,
    precision_step,
    zeros,
    zeros_carry,
)

Array = jax.Array

__all__ = [
    "IndRNNParams",
    "MGUParams",
    "indrnn",
    "indrnn_step",
    "mgu",
    "mgu_step",
]


class IndRNNParams(NamedTuple):
    w_ih: Array  # [I, H]
    u: Array  # [H]  one recurrent weight per unit
    b: Array  # [H]


class MGUParams(NamedTuple):
    w_ih: Array  # [I, 2H], gates f, n
    w_hh: Array  # [H, 2H]
    b_ih: Array  # [2H]
    b_hh: Array  # [2H]


_ACTIVATIONS = {"relu": jax.nn.relu, "tanh": jnp.tanh, "sigmoid": jax.nn.sigmoid}


def _check_carry_and_x(h, x, hidden: int, input_size: int, source: str) -> None:
    check_float("x", x)
    check_float("carry", h)
    if x.ndim < 1 or x.shape[-1] != input_size:
        raise ValueError(
            f"x: expected shape [*batch, {input_size}] (input_size from {source}), got {tuple(x.shape)}"
        )
    batch = tuple(x.shape[:-1])
    check_shape("carry", h, batch + (hidden,), shown=(*batch, hidden))


# ---------------------------------------------------------------------------------- IndRNN


def _bounded(u: Array, recurrent_max: float | None) -> Array:
    return u if recurrent_max is None else jnp.clip(u, -recurrent_max, recurrent_max)


def _indrnn_check(params, h, x) -> None:
    check_params_type(params, IndRNNParams)
    w = params.w_ih
    if w.ndim != 2:
        raise ValueError(f"params.w_ih: expected shape [I, H], got {tuple(w.shape)}")
    check_shape("params.u", params.u, (w.shape[1],))
    check_shape("params.b", params.b, (w.shape[1],))
    _check_carry_and_x(h, x, w.shape[1], w.shape[0], "params.w_ih")


def indrnn_step(params: IndRNNParams, h: Array, x: Array, *, activation=jax.nn.relu,
                recurrent_max: float | None = None, dtype=None):
    """IndRNN step: each unit sees only its own previous state.

    ::

        h' = act(x W + û ⊙ h + b),   y = h'
        û = u, or clip(u, -recurrent_max, recurrent_max) when the bound is set

    Args:
      params: ``IndRNNParams(w_ih [I, H], u [H], b [H])``.
      h: ``[*batch, H]``.
      x: ``[*batch, I]``.
      activation: elementwise nonlinearity (ReLU, the paper's choice, unless given).
      recurrent_max: the paper's bound on ``|u|``, or None for none. A clipped weight gets no
        gradient through the recurrence while it stays outside the bound.
      dtype: the dtype of ``x W``'s operands (float32 accumulation); None: as they are.

    References: Li, Li, Cook, Zhu & Gao 2018, "Independently recurrent neural network
    (IndRNN): building a longer and deeper RNN".

    >>> cell = indrnn(input_size=3, hidden_size=5)
    >>> h, y = indrnn_step(cell.init(jax.random.key(0)), cell.initial_carry((2,)), jnp.ones((2, 3)))
    >>> y.shape
    (2, 5)
    """
    _indrnn_check(params, h, x)
    pre = matmul(x, params.w_ih, dtype) + _bounded(params.u, recurrent_max) * h + params.b
    h_new = activation(pre).astype(h.dtype)
    return h_new, h_new


def indrnn_diag_jacobian(params: IndRNNParams, h: Array, x: Array, *, activation=jax.nn.relu,
                         recurrent_max: float | None = None, dtype=None) -> Array:
    """``diag(∂h'/∂h) = act'(pre) ⊙ û`` (the whole Jacobian: it is diagonal), shaped as ``h``."""
    u = _bounded(params.u, recurrent_max)
    pre = matmul(x, params.w_ih, dtype) + u * h + params.b
    slope = jax.jvp(activation, (pre,), (jnp.ones_like(pre),))[1]  # act'(pre), act elementwise
    return (slope * u).astype(h.dtype)


def uniform(low: float, high: float) -> Initializer:
    """An initialiser drawing uniformly from ``[low, high)``."""

    def init(key, shape, dtype=jnp.float32):
        return jax.random.uniform(key, shape, dtype, low, high)

    return init


def indrnn(
    input_size: int,
    hidden_size: int,
    *,
    activation: str | Callable = "relu",
    recurrent_max: float | None = None,
    w_ih_init: Initializer = glorot_uniform,
    u_init: Initializer | None = None,
    b_init: Initializer = zeros,
    param_dtype=jnp.float32,
    dtype=None,
    carry_dtype=jnp.float32,
) -> Cell:
    """IndRNN cell ``h' = act(x W + u ⊙ h + b)``; see ``indrnn_step``.

    ``activation`` is ``"relu"`` (default, the paper's), ``"tanh"``, ``"sigmoid"`` or any
    elementwise callable. ``recurrent_max`` (a float > 0, or None) bounds ``|u|`` inside the
    step; for a task over ``T`` steps the paper uses ``2 ** (1 / T)``.

    Initialisation: input weights Glorot-uniform, biases zero, and the recurrent weights
    ``u ~ U[0, 1)`` — or ``U[0, recurrent_max)`` with the bound, as in the paper's
    experiments (``u_init`` overrides either). ``param_dtype``/``dtype``/``carry_dtype``: the
    precision policy of ``rnnjax.lstm``.

    >>> cell = indrnn(4, 8, recurrent_max=2 ** (1 / 1000))
    >>> bool((cell.init(jax.random.key(0)).u <= 2 ** (1 / 1000)).all())
    True
    """
    check_sizes(input_size=input_size, hidden_size=hidden_size)
    if isinstance(activation, str):
        if activation not in _ACTIVATIONS:
            raise ValueError(f"activation: expected one of {sorted(_ACTIVATIONS)} or a callable, got {activation!r}")
        activation = _ACTIVATIONS[activation]
    elif not callable(activation):
        raise TypeError(f"activation: expected a string or a callable, got {activation!r}")
    if recurrent_max is not None:
        if isinstance(recurrent_max, bool) or not isinstance(recurrent_max, (int, float)) or not recurrent_max > 0:
            raise ValueError(f"recurrent_max: expected a positive float or None, got {recurrent_max!r}")
        recurrent_max = float(recurrent_max)
    if u_init is None:
        u_init = uniform(0.0, 1.0 if recurrent_max is None else recurrent_max)

    def init(key) -> IndRNNParams:
        k1, k2, k3 = jax.random.split(key, 3)
        return IndRNNParams(
            w_ih=draw(w_ih_init, k1, (input_size, hidden_size), param_dtype),
            u=draw(u_init, k2, (hidden_size,), param_dtype),
            b=draw(b_init, k3, (hidden_size,), param_dtype),
        )

    keywords = {}
    if activation is not jax.nn.relu:
        keywords["activation"] = activation
    if recurrent_max is not None:
        keywords["recurrent_max"] = recurrent_max
    return Cell(init, zeros_carry(hidden_size, carry_dtype, False),
                precision_step(indrnn_step, param_dtype, dtype, carry_dtype, **keywords))


# ------------------------------------------------------------------------------------- MGU


def _mgu_check(params, h, x) -> None:
    check_params_type(params, MGUParams)
    w_ih, w_hh = params.w_ih, params.w_hh
    if w_hh.ndim != 2 or w_hh.shape[1] != 2 * w_hh.shape[0]:
        raise ValueError(f"params.w_hh: expected shape [H, 2H], got {tuple(w_hh.shape)}")
    hidden = w_hh.shape[0]
    if w_ih.ndim != 2 or w_ih.shape[1] != 2 * hidden:
        raise ValueError(
            f"params.w_ih: expected shape [I, {2 * hidden}] (2H with H = {hidden} from params.w_hh), "
            f"got {tuple(w_ih.shape)}"
        )
    check_shape("params.b_ih", params.b_ih, (2 * hidden,))
    check_shape("params.b_hh", params.b_hh, (2 * hidden,))
    _check_carry_and_x(h, x, hidden, w_ih.shape[0], "params.w_ih")


def _mgu_parts(params: MGUParams, h: Array, x: Array, reset_gate: bool, dtype=None):
    xf, xn = jnp.split(matmul(x, params.w_ih, dtype) + params.b_ih, 2, axis=-1)
    hf, hn = jnp.split(matmul(h, params.w_hh, dtype) + params.b_hh, 2, axis=-1)
    f = jax.nn.sigmoid(xf + hf)
    n = jnp.tanh(xn + (f * hn if reset_gate else hn))
    return f, n, hn


def mgu_step(params: MGUParams, h: Array, x: Array, *, reset_gate: bool = True, dtype=None):
    """Minimal gated unit step, in the form of Flax's ``MGUCell``.

    ::

        f = σ(x W_if + b_if + h W_hf + b_hf)
        n = tanh(x W_in + b_in + f ⊙ (h W_hn + b_hn))     (reset_gate=True, the default)
        n = tanh(x W_in + b_in + h W_hn + b_hn)           (reset_gate=False)
        h' = (1 - f) ⊙ n + f ⊙ h,   y = h'

    One gate ``f`` serves as both the GRU's reset and update gates. Zhou et al. write the
    update as ``(1 - f) ⊙ h + f ⊙ ñ`` with the gate applied to ``h`` before the recurrent
    product; this is Flax's form, where ``f`` keeps the old state (so a positive forget bias
    keeps memory, as in the LSTM) and gates the recurrent product after it, as cuDNN's GRU.

    Args:
      params: ``MGUParams(w_ih [I, 2H], w_hh [H, 2H], b_ih [2H], b_hh [2H])``, gates f, n.
      h: ``[*batch, H]``.
      x: ``[*batch, I]``.
      reset_gate: whether ``f`` gates the recurrent part of the candidate (Flax's option).
      dtype: the dtype of the products' operands (float32 accumulation); None: as they are.

    References: Zhou, Wu, Zhang & Zhou 2016, "Minimal gated unit for recurrent neural
    networks"; ``flax.linen.MGUCell``.

    >>> cell = mgu(input_size=3, hidden_size=5)
    >>> h, y = mgu_step(cell.init(jax.random.key(0)), cell.initial_carry(), jnp.ones(3))
    >>> y.shape
    (5,)
    """
    _mgu_check(params, h, x)
    f, n, _ = _mgu_parts(params, h, x, reset_gate, dtype)
    h_new = ((1.0 - f) * n + f * h).astype(h.dtype)
    return h_new, h_new


def mgu_diag_jacobian(params: MGUParams, h: Array, x: Array, *, reset_gate: bool = True, dtype=None) -> Array:
    """``diag(∂h'/∂h)`` of ``mgu_step`` in closed form, shaped as ``h``."""
    hidden = params.w_hh.shape[0]
    wf, wn = jnp.diagonal(params.w_hh.reshape(hidden, 2, hidden), axis1=0, axis2=2)  # [H] each
    f, n, hn = _mgu_parts(params, h, x, reset_gate, dtype)
    df = f * (1 - f) * wf
    dn = (1 - n**2) * ((df * hn + f * wn) if reset_gate else wn)
    return ((1 - f) * dn + f + (h - n) * df).astype(h.dtype)


def mgu(
    input_size: int,
    hidden_size: int,
    *,
    reset_gate: bool = True,
    forget_bias: float = 1.0,
    w_ih_init: Initializer = glorot_uniform,
    w_hh_init: Initializer = orthogonal,
    b_init: Initializer = zeros,
    param_dtype=jnp.float32,
    dtype=None,
    carry_dtype=jnp.float32,
) -> Cell:
    """Minimal gated unit (gates f, n); see ``mgu_step``.

    Input weights Glorot-uniform and recurrent weights orthogonal, each per gate block; biases
    ``b_init`` (zeros) plus ``forget_bias`` on the input bias of ``f`` (Flax's default bias
    init for that gate is ones, i.e. ``forget_bias=1``; its input kernels are LeCun-normal).
    ``param_dtype``/``dtype``/``carry_dtype``: the precision policy of ``rnnjax.lstm``.

    >>> cell = mgu(4, 6, reset_gate=False)
    >>> cell.init(jax.random.key(0)).b_ih[:3]
    Array([1., 1., 1.], dtype=float32)
    """
    check_sizes(input_size=input_size, hidden_size=hidden_size)
    check_bool("reset_gate", reset_gate)

    def init(key) -> MGUParams:
        k1, k2, k3, k4 = jax.random.split(key, 4)
        b_ih = gate_blocks(b_init, k3, (hidden_size,), 2, param_dtype)
        if forget_bias:
            b_ih = b_ih.at[:hidden_size].add(jnp.asarray(forget_bias, param_dtype))
        return MGUParams(
            w_ih=gate_blocks(w_ih_init, k1, (input_size, hidden_size), 2, param_dtype),
            w_hh=gate_blocks(w_hh_init, k2, (hidden_size, hidden_size), 2, param_dtype),
            b_ih=b_ih,
            b_hh=gate_blocks(b_init, k4, (hidden_size,), 2, param_dtype),
        )

    keywords = {} if reset_gate else {"reset_gate": False}
    return Cell(init, zeros_carry(hidden_size, carry_dtype, False),
                precision_step(mgu_step, param_dtype, dtype, carry_dtype, **keywords))
