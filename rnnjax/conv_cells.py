"""Convolutional LSTM and GRU (Shi et al. 2015; Ballas et al. 2016) for 1-, 2- and 3-D inputs.

The matrix products of the LSTM and GRU become convolutions over the spatial axes
(``lax.conv_general_dilated``, stride 1, padding ``"SAME"``, so the state keeps the input's
spatial shape), and the state is a feature map:

* ``x``: ``[*batch, *spatial, C]`` (channels last), e.g. ``[B, H, W, C]`` for images;
* carry (and output): ``[*batch, *spatial, H]``, ``H = hidden_size`` channels;
* weights: ``[*kernel, in, out]`` (Flax's and Haiku's layout), gates on the output axis.

The number of spatial axes is that of ``kernel_size`` (any of 1, 2, 3, or more). The steps
take any number of batch axes before the spatial ones (none included): they are everything
in front of the last ``1 + len(kernel_size)`` axes.

``initial_carry(batch_shape)`` takes the leading shape of the input, ``x.shape[:-1]``, i.e.
the batch axes *followed by the spatial ones*, ``(B, 16, 16)`` for ``x: [B, 16, 16, C]`` —
which is what ``rnnjax.rnn``, ``deep`` and ``bidirectional`` pass it from ``xs [T, *batch,
*spatial, C]``, so the cells compose with them unchanged. In the time loops, ``lengths`` of
shape ``[*batch]`` give the batch axes (``[B]`` for ``xs [T, B, *spatial, C]``); the spatial
axes belong to the step. ``deer_scan`` evaluates the step on every position before the feature
axis separately, so it takes a conv cell through a wrapper that reshapes ``[*batch, S·C]``
inputs and ``[*batch, S·H]`` carries to maps and back.

Steps work under ``jit``, ``grad`` and ``vmap``, and with 16-bit params next to a float32
carry (the new carry keeps the carry's dtype). The output ``y`` is the new ``h``. Precision
follows the classic cells (``rnnjax.cells``): the factories take ``param_dtype`` (storage),
``dtype`` (the convolutions' operands, accumulated in float32; None: the operands' promoted
dtype) and ``carry_dtype``.
"""

from __future__ import annotations

import functools
import math
from collections.abc import Callable, Sequence
from typing import NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
from jax import lax

from rnnjax._checks import (
    check_batch_shape,
    check_float,
    check_int,
    check_lstm_carry,
    check_params_type,
    check_shape,
    check_sizes,
)
from rnnjax.cells import (
    Cell,
    Initializer,
    LSTMState,
    gate_blocks,
    glorot_uniform,
    orthogonal,
    policy_product,
    precision_step,
    zeros,
)

Array = jax.Array

__all__ = [
    "ConvGRUParams",
    "ConvLSTMParams",
    "conv_gru",
    "conv_gru_step",
    "conv_lstm",
    "conv_lstm_step",
]


class ConvLSTMParams(NamedTuple):
    w_ih: Array  # [*K, C, 4H], gates i, f, g, o
    w_hh: Array  # [*K, H, 4H]
    b: Array  # [4H]  (one bias: the input and recurrent convolutions' biases summed)


class ConvGRUParams(NamedTuple):
    w_ih: Array  # [*K, C, 3H], gates r, z, n
    w_hh: Array  # [*K, H, 3H]
    b_ih: Array  # [3H]
    b_hh: Array  # [3H]


def conv_same(x: Array, w: Array, dtype=None) -> Array:
    """``x [*batch, *spatial, C] ⋆ w [*K, C, O] -> [*batch, *spatial, O]``, stride 1, "SAME".

    With ``dtype``, both operands are cast to it and the products accumulated in float32, the
    backward ones too (``rnnjax.cells.policy_product``, as ``rnnjax.cells.matmul``); None: the
    operands' promoted dtype.
    """
    n = w.ndim - 2
    lead = x.shape[: x.ndim - n - 1]
    flat = x.reshape((math.prod(lead),) + x.shape[x.ndim - n - 1 :])
    conv = _conv(n)
    if dtype is None:
        dtype = jnp.result_type(x.dtype, w.dtype)
        out = conv(flat.astype(dtype), w.astype(dtype))
    else:
        out = policy_product(conv, flat, w, dtype)
    return out.reshape(lead + out.shape[1:])


@functools.cache
def _conv(n: int) -> Callable:
    """The stride-1 "SAME" convolution over ``n`` spatial axes, channels last (one function per ``n``)."""
    spec = (0, n + 1, *range(1, n + 1))  # N, C, spatial...
    numbers = lax.ConvDimensionNumbers(lhs_spec=spec, rhs_spec=(n + 1, n, *range(n)), out_spec=spec)
    return functools.partial(lax.conv_general_dilated, window_strides=(1,) * n, padding="SAME",
                             dimension_numbers=numbers)


# ----------------------------------------------------------------------------- checks


def _check_args(params, carry_leaves: dict, x, num_gates: int) -> None:
    check_float("x", x)
    w_ih, w_hh = params.w_ih, params.w_hh
    if w_hh.ndim < 3 or w_hh.shape[-1] != num_gates * w_hh.shape[-2]:
        raise ValueError(
            f"params.w_hh: expected shape [*kernel, H, {num_gates}H], got {tuple(w_hh.shape)}"
        )
    n, hidden = w_hh.ndim - 2, w_hh.shape[-2]
    if w_ih.ndim != n + 2 or w_ih.shape[-1] != num_gates * hidden:
        raise ValueError(
            f"params.w_ih: expected shape [*kernel, C, {num_gates * hidden}] ({n} kernel axes and "
            f"{num_gates}H with H = {hidden}, from params.w_hh), got {tuple(w_ih.shape)}"
        )
    for name in ("b", "b_ih", "b_hh"):
        if hasattr(params, name):
            check_shape(f"params.{name}", getattr(params, name), (num_gates * hidden,))
    channels = w_ih.shape[-2]
    if x.ndim < n + 1 or x.shape[-1] != channels:
        raise ValueError(
            f"x: expected shape [*batch, *spatial, {channels}] with "
            f"{n} spatial axes (from the kernel of params.w_ih) and {channels} channels, got {tuple(x.shape)}"
        )
    lead = tuple(x.shape[:-1])
    for name, leaf in carry_leaves.items():
        check_float(name, leaf)
        check_shape(name, leaf, lead + (hidden,), shown=(*lead, hidden))


# ------------------------------------------------------------------------ step functions


def conv_lstm_step(params: ConvLSTMParams, carry: LSTMState, x: Array, *, dtype=None):
    """Convolutional LSTM step, gates in PyTorch order i, f, g, o (``⋆``: "SAME" convolution).

    ::

        [i; f; g; o] = x ⋆ W_ih + h ⋆ W_hh + b
        c' = σ(f) ⊙ c + σ(i) ⊙ tanh(g),   h' = σ(o) ⊙ tanh(c'),   y = h'

    As in Flax's ``ConvLSTMCell``, Haiku's ``ConvNDLSTM`` and Keras' ``ConvLSTM*D``, there are
    no peephole terms (Shi et al. add ``W_c ∘ c`` to the gates). Unlike Flax and Haiku, which
    add a fixed 1 to the forget gate inside the step, the forget bias here is part of ``b``
    (``conv_lstm(forget_bias=1.0)``).

    Args:
      params: ``ConvLSTMParams(w_ih [*K, C, 4H], w_hh [*K, H, 4H], b [4H])``.
      carry: ``LSTMState(h, c)``, each ``[*batch, *spatial, H]``.
      x: ``[*batch, *spatial, C]``, as many spatial axes as the kernel.
      dtype: the dtype of the convolutions' operands (float32 accumulation); None: as they are.

    References: Shi et al. 2015, "Convolutional LSTM network: a machine learning approach for
    precipitation nowcasting".

    >>> cell = conv_lstm(input_size=3, hidden_size=4, kernel_size=(3, 3))
    >>> carry, y = conv_lstm_step(cell.init(jax.random.key(0)), cell.initial_carry((2, 8, 8)), jnp.ones((2, 8, 8, 3)))
    >>> carry.c.shape, y.shape
    ((2, 8, 8, 4), (2, 8, 8, 4))
    """
    check_params_type(params, ConvLSTMParams)
    check_lstm_carry(carry, made_by="cell.initial_carry(x.shape[:-1])")
    _check_args(params, {"carry.h": carry.h, "carry.c": carry.c}, x, 4)
    z = conv_same(x, params.w_ih, dtype) + conv_same(carry.h, params.w_hh, dtype) + params.b
    i, f, g, o = jnp.split(z, 4, axis=-1)
    c = jax.nn.sigmoid(f) * carry.c + jax.nn.sigmoid(i) * jnp.tanh(g)
    h = jax.nn.sigmoid(o) * jnp.tanh(c)
    new = LSTMState(h.astype(carry.h.dtype), c.astype(carry.c.dtype))
    return new, new.h


def conv_gru_step(params: ConvGRUParams, h: Array, x: Array, *, dtype=None):
    """Convolutional GRU step, reset gate after the recurrent convolution (as ``gru_step``).

    ::

        [a_r; a_z; a_n] = x ⋆ W_ih + b_ih      [u_r; u_z; u_n] = h ⋆ W_hh + b_hh
        r = σ(a_r + u_r)    z = σ(a_z + u_z)    n = tanh(a_n + r ⊙ u_n)
        h' = (1 - z) ⊙ n + z ⊙ h,   y = h'

    Ballas et al. apply ``r`` to ``h`` before the convolution; applying it after needs one
    recurrent convolution per step instead of two.

    Args:
      params: ``ConvGRUParams(w_ih [*K, C, 3H], w_hh [*K, H, 3H], b_ih [3H], b_hh [3H])``.
      h: ``[*batch, *spatial, H]``.
      x: ``[*batch, *spatial, C]``.
      dtype: the dtype of the convolutions' operands (float32 accumulation); None: as they are.

    References: Ballas, Yao, Pal & Courville 2016, "Delving deeper into convolutional networks
    for learning video representations"; Shi et al. 2015 (the convolutional recurrence).

    >>> cell = conv_gru(input_size=3, hidden_size=4, kernel_size=5, spatial_dims=1)
    >>> h, y = conv_gru_step(cell.init(jax.random.key(0)), cell.initial_carry((2, 10)), jnp.ones((2, 10, 3)))
    >>> y.shape
    (2, 10, 4)
    """
    check_params_type(params, ConvGRUParams)
    _check_args(params, {"carry": h}, x, 3)
    xr, xz, xn = jnp.split(conv_same(x, params.w_ih, dtype) + params.b_ih, 3, axis=-1)
    hr, hz, hn = jnp.split(conv_same(h, params.w_hh, dtype) + params.b_hh, 3, axis=-1)
    r = jax.nn.sigmoid(xr + hr)
    z = jax.nn.sigmoid(xz + hz)
    n = jnp.tanh(xn + r * hn)
    h_new = ((1.0 - z) * n + z * h).astype(h.dtype)
    return h_new, h_new


# ----------------------------------------------------------------------------- factories


def _kernel_shape(kernel_size, spatial_dims) -> tuple:
    if spatial_dims is not None:
        spatial_dims = check_int("spatial_dims", spatial_dims)
    if isinstance(kernel_size, (int, np.integer)) and not isinstance(kernel_size, bool):
        if spatial_dims is None:
            raise ValueError(
                f"spatial_dims: expected the number of spatial axes (e.g. 2 for images) with an int "
                f"kernel_size={kernel_size}, or give kernel_size as a tuple such as (3, 3); got None"
            )
        kernel_size = (kernel_size,) * spatial_dims
    if not isinstance(kernel_size, Sequence) or not kernel_size or not all(
            isinstance(k, (int, np.integer)) and not isinstance(k, bool) and k >= 1 for k in kernel_size):
        raise ValueError(f"kernel_size: expected a positive int or a tuple of positive ints such as (3, 3), "
                         f"got {kernel_size!r}")
    if spatial_dims is not None and len(kernel_size) != spatial_dims:
        raise ValueError(f"kernel_size: expected {spatial_dims} sizes (spatial_dims={spatial_dims}), "
                         f"got {tuple(kernel_size)}")
    return tuple(int(k) for k in kernel_size)


def _spatial_carry(hidden_size: int, spatial_dims: int, carry_dtype, lstm_like: bool):
    def initial_carry(batch_shape=()):
        lead = check_batch_shape(batch_shape)
        if len(lead) < spatial_dims:
            raise ValueError(
                f"batch_shape: expected the leading axes of x, (*batch, *spatial) with {spatial_dims} "
                f"spatial axes last (x.shape[:-1]), got {lead}"
            )
        h = jnp.zeros(lead + (hidden_size,), carry_dtype)
        return LSTMState(h, jnp.zeros_like(h)) if lstm_like else h

    return initial_carry


def conv_lstm(
    input_size: int,
    hidden_size: int,
    kernel_size: int | Sequence[int] = (3, 3),
    *,
    spatial_dims: int | None = None,
    forget_bias: float = 1.0,
    w_ih_init: Initializer = glorot_uniform,
    w_hh_init: Initializer = orthogonal,
    b_init: Initializer = zeros,
    param_dtype=jnp.float32,
    dtype=None,
    carry_dtype=jnp.float32,
) -> Cell:
    """Convolutional LSTM cell (gates i, f, g, o); see ``conv_lstm_step``.

    ``input_size`` and ``hidden_size`` are channel counts. ``kernel_size`` is a tuple with one
    size per spatial axis (``(3, 3)``: 2-D), or an int with ``spatial_dims``. Initialisation
    as the LSTM's: input kernels Glorot-uniform (fans counting the receptive field) and
    recurrent kernels orthogonal (``[prod(K)·H, H]`` with orthonormal columns), each per gate
    block; biases ``b_init`` (zeros) plus ``forget_bias`` on the forget gate.
    ``initial_carry`` takes ``x.shape[:-1]`` = ``(*batch, *spatial)`` (see the module notes).
    ``param_dtype``/``dtype``/``carry_dtype``: the precision policy of ``rnnjax.lstm``.

    >>> cell = conv_lstm(2, 8, kernel_size=3, spatial_dims=3)
    >>> cell.init(jax.random.key(0)).w_hh.shape
    (3, 3, 3, 8, 32)
    """
    check_sizes(input_size=input_size, hidden_size=hidden_size)
    kernel = _kernel_shape(kernel_size, spatial_dims)

    def init(key) -> ConvLSTMParams:
        k1, k2, k3 = jax.random.split(key, 3)
        b = gate_blocks(b_init, k3, (hidden_size,), 4, param_dtype)
        if forget_bias:
            b = b.at[hidden_size : 2 * hidden_size].add(jnp.asarray(forget_bias, param_dtype))
        return ConvLSTMParams(
            w_ih=gate_blocks(w_ih_init, k1, kernel + (input_size, hidden_size), 4, param_dtype),
            w_hh=gate_blocks(w_hh_init, k2, kernel + (hidden_size, hidden_size), 4, param_dtype),
            b=b,
        )

    return Cell(init, _spatial_carry(hidden_size, len(kernel), carry_dtype, True),
                precision_step(conv_lstm_step, param_dtype, dtype, carry_dtype))


def conv_gru(
    input_size: int,
    hidden_size: int,
    kernel_size: int | Sequence[int] = (3, 3),
    *,
    spatial_dims: int | None = None,
    w_ih_init: Initializer = glorot_uniform,
    w_hh_init: Initializer = orthogonal,
    b_init: Initializer = zeros,
    param_dtype=jnp.float32,
    dtype=None,
    carry_dtype=jnp.float32,
) -> Cell:
    """Convolutional GRU cell (gates r, z, n, reset after the convolution); see ``conv_gru_step``.

    Arguments and initialisation as ``conv_lstm`` (no forget bias; biases ``b_init``, zeros).

    >>> cell = conv_gru(1, 4, kernel_size=(5,))
    >>> cell.init(jax.random.key(0)).w_ih.shape, cell.initial_carry((2, 32)).shape
    ((5, 1, 12), (2, 32, 4))
    """
    check_sizes(input_size=input_size, hidden_size=hidden_size)
    kernel = _kernel_shape(kernel_size, spatial_dims)

    def init(key) -> ConvGRUParams:
        k1, k2, k3, k4 = jax.random.split(key, 4)
        return ConvGRUParams(
            w_ih=gate_blocks(w_ih_init, k1, kernel + (input_size, hidden_size), 3, param_dtype),
            w_hh=gate_blocks(w_hh_init, k2, kernel + (hidden_size, hidden_size), 3, param_dtype),
            b_ih=gate_blocks(b_init, k3, (hidden_size,), 3, param_dtype),
            b_hh=gate_blocks(b_init, k4, (hidden_size,), 3, param_dtype),
        )

    return Cell(init, _spatial_carry(hidden_size, len(kernel), carry_dtype, False),
                precision_step(conv_gru_step, param_dtype, dtype, carry_dtype))
