"""Layer-normalised LSTM and GRU (Ba, Kiros & Hinton 2016) as pure step functions.

Layer normalisation ``LN(a; g) = g ⊙ (a - mean(a)) / sqrt(var(a) + eps)`` (statistics over the
feature axis of one example, so it works the same for any batch size, under ``vmap`` and at
every time step) is applied to the input pre-activations ``x W_ih`` and to the recurrent
pre-activations ``h W_hh`` separately, each over its whole ``[4H]`` (LSTM) or ``[3H]`` (GRU)
vector as in the paper's equations, and for the LSTM also to the cell state before the output
``tanh``. Gains ``g_*`` are learned and start at 1.

Bias convention: the paper gives each normalisation a learned bias ``β`` and the gates a bias
``b``. In the LSTM ``β_ih + β_hh + b`` only ever appear summed, so one ``b [4H]`` holds them (no
loss of generality); the cell-state normalisation keeps its own bias ``b_c``. In the GRU the
recurrent candidate part is multiplied by the reset gate, so ``b_ih`` and ``b_hh`` stay
separate, exactly as in ``rnnjax.gru_step``.

Steps work for any leading batch shape (including none), under ``jit``, ``grad`` and
``vmap``, and with 16-bit params next to a float32 carry (the new carry keeps the carry's
dtype). The output ``y`` is the new ``h``. Precision follows the classic cells (``rnnjax.cells``):
the factories take ``param_dtype`` (storage), ``dtype`` (the matrix products' operands,
accumulated in float32; None: the operands as they are) and ``carry_dtype``; the
normalisations, gates and cell state are computed in the pre-activations' float32.
"""

from __future__ import annotations

from typing import NamedTuple

import jax
import jax.numpy as jnp

from rnnjax._checks import (
    check_float,
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
    matmul,
    orthogonal,
    precision_step,
    zeros,
    zeros_carry,
)

Array = jax.Array

__all__ = [
    "LayerNormGRUParams",
    "LayerNormLSTMParams",
    "layer_norm_gru",
    "layer_norm_gru_step",
    "layer_norm_lstm",
    "layer_norm_lstm_step",
]

LN_EPS = 1e-5  # the default eps of the steps (as torch.nn.LayerNorm)


class LayerNormLSTMParams(NamedTuple):
    w_ih: Array  # [I, 4H], gates i, f, g, o
    w_hh: Array  # [H, 4H]
    b: Array  # [4H]  gate bias (absorbs the LN biases of both pre-activations)
    g_ih: Array  # [4H] LN gain of x W_ih
    g_hh: Array  # [4H] LN gain of h W_hh
    g_c: Array  # [H]  LN gain of the cell state
    b_c: Array  # [H]  LN bias of the cell state


class LayerNormGRUParams(NamedTuple):
    w_ih: Array  # [I, 3H], gates r, z, n
    w_hh: Array  # [H, 3H]
    b_ih: Array  # [3H]
    b_hh: Array  # [3H]
    g_ih: Array  # [3H] LN gain of x W_ih
    g_hh: Array  # [3H] LN gain of h W_hh


def layer_norm(a: Array, gain: Array, bias: Array | None = None, *, eps: float = LN_EPS) -> Array:
    """``gain ⊙ (a - mean) / sqrt(var + eps) (+ bias)``, statistics over the last axis."""
    mean = jnp.mean(a, axis=-1, keepdims=True)
    var = jnp.mean(jnp.square(a - mean), axis=-1, keepdims=True)
    out = (a - mean) * jax.lax.rsqrt(var + eps) * gain
    return out if bias is None else out + bias


# ----------------------------------------------------------------------------- checks


def _check_args(params, carry_leaves: dict, x, num_gates: int) -> None:
    check_float("x", x)
    w_ih, w_hh = params.w_ih, params.w_hh
    if w_hh.ndim != 2 or w_hh.shape[1] != num_gates * w_hh.shape[0]:
        raise ValueError(f"params.w_hh: expected shape [H, {num_gates}H], got {tuple(w_hh.shape)}")
    hidden = w_hh.shape[0]
    if w_ih.ndim != 2 or w_ih.shape[1] != num_gates * hidden:
        raise ValueError(
            f"params.w_ih: expected shape [I, {num_gates * hidden}] ({num_gates}H with "
            f"H = {hidden} from params.w_hh), got {tuple(w_ih.shape)}"
        )
    for name in ("b", "b_ih", "b_hh", "g_ih", "g_hh"):
        if hasattr(params, name):
            check_shape(f"params.{name}", getattr(params, name), (num_gates * hidden,))
    for name in ("g_c", "b_c"):
        if hasattr(params, name):
            check_shape(f"params.{name}", getattr(params, name), (hidden,))
    if x.ndim < 1 or x.shape[-1] != w_ih.shape[0]:
        raise ValueError(
            f"x: expected shape [*batch, {w_ih.shape[0]}] (input_size from params.w_ih), got {tuple(x.shape)}"
        )
    batch = tuple(x.shape[:-1])
    for name, leaf in carry_leaves.items():
        check_float(name, leaf)
        check_shape(name, leaf, batch + (hidden,), shown=(*batch, hidden))


# ------------------------------------------------------------------------ step functions


def layer_norm_lstm_step(params: LayerNormLSTMParams, carry: LSTMState, x: Array, *, eps: float = LN_EPS,
                         dtype=None):
    """Layer-normalised LSTM step (Ba et al. 2016, eqs. 20–22), gates in PyTorch order i, f, g, o.

    ::

        [i; f; g; o] = LN(x W_ih; g_ih) + LN(h W_hh; g_hh) + b        (each LN over all 4H)
        c' = σ(f) ⊙ c + σ(i) ⊙ tanh(g)
        h' = σ(o) ⊙ tanh(LN(c'; g_c, b_c)),   y = h'

    With all gains 1 and ``b_c = 0`` the normalisations are not identities, so this cell does
    not reduce to ``lstm_step``; it is the paper's cell.

    Args:
      params: ``LayerNormLSTMParams(w_ih [I, 4H], w_hh [H, 4H], b [4H], g_ih [4H], g_hh [4H],
        g_c [H], b_c [H])``.
      carry: ``LSTMState(h [*batch, H], c [*batch, H])``; ``c`` is stored unnormalised.
      x: ``[*batch, I]``.
      eps: added to the variance in every normalisation.
      dtype: the dtype of the products' operands (float32 accumulation); None: as they are.

    References: Ba, Kiros & Hinton 2016, "Layer normalization".

    >>> cell = layer_norm_lstm(input_size=3, hidden_size=5)
    >>> carry, y = layer_norm_lstm_step(cell.init(jax.random.key(0)), cell.initial_carry((2,)), jnp.ones((2, 3)))
    >>> carry.c.shape, y.shape
    ((2, 5), (2, 5))
    """
    check_params_type(params, LayerNormLSTMParams)
    check_lstm_carry(carry)
    _check_args(params, {"carry.h": carry.h, "carry.c": carry.c}, x, 4)
    z = (layer_norm(matmul(x, params.w_ih, dtype), params.g_ih, eps=eps)
         + layer_norm(matmul(carry.h, params.w_hh, dtype), params.g_hh, eps=eps) + params.b)
    i, f, g, o = jnp.split(z, 4, axis=-1)
    c = jax.nn.sigmoid(f) * carry.c + jax.nn.sigmoid(i) * jnp.tanh(g)
    h = jax.nn.sigmoid(o) * jnp.tanh(layer_norm(c, params.g_c, params.b_c, eps=eps))
    new = LSTMState(h.astype(carry.h.dtype), c.astype(carry.c.dtype))
    return new, new.h


def layer_norm_gru_step(params: LayerNormGRUParams, h: Array, x: Array, *, eps: float = LN_EPS, dtype=None):
    """Layer-normalised GRU step, reset gate after the recurrent product (as ``gru_step``).

    ::

        [a_r; a_z; a_n] = LN(x W_ih; g_ih) + b_ih      [u_r; u_z; u_n] = LN(h W_hh; g_hh) + b_hh
        r = σ(a_r + u_r)    z = σ(a_z + u_z)    n = tanh(a_n + r ⊙ u_n)
        h' = (1 - z) ⊙ n + z ⊙ h,   y = h'

    Each LN is over the whole ``3H`` pre-activation vector.

    Args:
      params: ``LayerNormGRUParams(w_ih [I, 3H], w_hh [H, 3H], b_ih [3H], b_hh [3H], g_ih [3H],
        g_hh [3H])``, gates r, z, n.
      h: ``[*batch, H]``.
      x: ``[*batch, I]``.
      eps: added to the variance in every normalisation.
      dtype: the dtype of the products' operands (float32 accumulation); None: as they are.

    References: Ba, Kiros & Hinton 2016, "Layer normalization"; Cho et al. 2014 (the GRU).

    >>> cell = layer_norm_gru(input_size=3, hidden_size=5)
    >>> h, y = layer_norm_gru_step(cell.init(jax.random.key(0)), cell.initial_carry(), jnp.ones(3))
    >>> y.shape
    (5,)
    """
    check_params_type(params, LayerNormGRUParams)
    _check_args(params, {"carry": h}, x, 3)
    xr, xz, xn = jnp.split(layer_norm(matmul(x, params.w_ih, dtype), params.g_ih, params.b_ih, eps=eps), 3, axis=-1)
    hr, hz, hn = jnp.split(layer_norm(matmul(h, params.w_hh, dtype), params.g_hh, params.b_hh, eps=eps), 3, axis=-1)
    r = jax.nn.sigmoid(xr + hr)
    z = jax.nn.sigmoid(xz + hz)
    n = jnp.tanh(xn + r * hn)
    h_new = ((1.0 - z) * n + z * h).astype(h.dtype)
    return h_new, h_new


# ----------------------------------------------------------------------------- factories

def _check_eps(eps) -> float:
    if isinstance(eps, bool) or not isinstance(eps, (int, float)) or not eps > 0:
        raise ValueError(f"eps: expected a positive float, got {eps!r}")
    return float(eps)


def _eps_keyword(eps: float) -> dict:
    """``eps`` bound into the step only when it is not the default (the registry knows the keyword)."""
    return {} if eps == LN_EPS else {"eps": eps}


def layer_norm_lstm(
    input_size: int,
    hidden_size: int,
    *,
    forget_bias: float = 1.0,
    eps: float = LN_EPS,
    w_ih_init: Initializer = glorot_uniform,
    w_hh_init: Initializer = orthogonal,
    b_init: Initializer = zeros,
    param_dtype=jnp.float32,
    dtype=None,
    carry_dtype=jnp.float32,
) -> Cell:
    """Layer-normalised LSTM cell (gates i, f, g, o); see ``layer_norm_lstm_step``.

    Input weights Glorot-uniform and recurrent weights orthogonal, each per gate block; gate
    biases ``b_init`` (zeros) plus ``forget_bias`` on the forget gate; all LN gains 1 and the
    cell-state LN bias 0 (Ba et al. 2016). ``eps`` is the normalisations' variance floor.
    ``param_dtype``/``dtype``/``carry_dtype``: the precision policy of ``rnnjax.lstm``.

    >>> cell = layer_norm_lstm(input_size=8, hidden_size=32)
    >>> p = cell.init(jax.random.key(0))
    >>> p.w_ih.shape, p.g_ih.shape, p.g_c.shape
    ((8, 128), (128,), (32,))
    """
    check_sizes(input_size=input_size, hidden_size=hidden_size)
    eps = _check_eps(eps)

    def init(key) -> LayerNormLSTMParams:
        k1, k2, k3 = jax.random.split(key, 3)
        b = gate_blocks(b_init, k3, (hidden_size,), 4, param_dtype)
        if forget_bias:
            b = b.at[hidden_size : 2 * hidden_size].add(jnp.asarray(forget_bias, param_dtype))
        return LayerNormLSTMParams(
            w_ih=gate_blocks(w_ih_init, k1, (input_size, hidden_size), 4, param_dtype),
            w_hh=gate_blocks(w_hh_init, k2, (hidden_size, hidden_size), 4, param_dtype),
            b=b,
            g_ih=jnp.ones((4 * hidden_size,), param_dtype),
            g_hh=jnp.ones((4 * hidden_size,), param_dtype),
            g_c=jnp.ones((hidden_size,), param_dtype),
            b_c=jnp.zeros((hidden_size,), param_dtype),
        )

    return Cell(init, zeros_carry(hidden_size, carry_dtype, True),
                precision_step(layer_norm_lstm_step, param_dtype, dtype, carry_dtype, **_eps_keyword(eps)))


def layer_norm_gru(
    input_size: int,
    hidden_size: int,
    *,
    eps: float = LN_EPS,
    w_ih_init: Initializer = glorot_uniform,
    w_hh_init: Initializer = orthogonal,
    b_init: Initializer = zeros,
    param_dtype=jnp.float32,
    dtype=None,
    carry_dtype=jnp.float32,
) -> Cell:
    """Layer-normalised GRU cell (gates r, z, n, reset after the product); see ``layer_norm_gru_step``.

    Input weights Glorot-uniform and recurrent weights orthogonal, each per gate block; biases
    ``b_init`` (zeros); LN gains 1. ``eps`` is the normalisations' variance floor.
    ``param_dtype``/``dtype``/``carry_dtype``: the precision policy of ``rnnjax.lstm``.

    >>> cell = layer_norm_gru(input_size=8, hidden_size=16)
    >>> cell.init(jax.random.key(0)).g_hh.shape
    (48,)
    """
    check_sizes(input_size=input_size, hidden_size=hidden_size)
    eps = _check_eps(eps)

    def init(key) -> LayerNormGRUParams:
        k1, k2, k3, k4 = jax.random.split(key, 4)
        return LayerNormGRUParams(
            w_ih=gate_blocks(w_ih_init, k1, (input_size, hidden_size), 3, param_dtype),
            w_hh=gate_blocks(w_hh_init, k2, (hidden_size, hidden_size), 3, param_dtype),
            b_ih=gate_blocks(b_init, k3, (hidden_size,), 3, param_dtype),
            b_hh=gate_blocks(b_init, k4, (hidden_size,), 3, param_dtype),
            g_ih=jnp.ones((3 * hidden_size,), param_dtype),
            g_hh=jnp.ones((3 * hidden_size,), param_dtype),
        )

    return Cell(init, zeros_carry(hidden_size, carry_dtype, False),
                precision_step(layer_norm_gru_step, param_dtype, dtype, carry_dtype, **_eps_keyword(eps)))
