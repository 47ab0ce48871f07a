"""Recurrent cells as pure step functions ``step(params, carry, x) -> (carry, y)``.

Every built-in cell is data (a NamedTuple of arrays, weights oriented ``(in, out)`` and
applied as ``x @ w``) plus pure, unjitted functions. Gate order and layout follow
PyTorch/cuDNN, so ``torch.nn.LSTM`` weights port by a transpose (``w_ih = weight_ih_l0.T``).

Each step works for any leading batch shape (including none), under ``jit``, ``grad`` and
``vmap``. Precision follows Flax's convention: factories take ``param_dtype`` (how params are
stored, float32 by default), ``dtype`` (the dtype the matrix products take; None keeps the
promoted dtype of their operands) and ``carry_dtype`` (the state, float32 by default). With
``dtype=jnp.bfloat16`` every product is ``bf16 x bf16`` accumulated in float32
(``preferred_element_type``), and the gate nonlinearities and the cell state stay in float32;
the new carry keeps the carry's dtype. The output ``y`` of every built-in cell is its new ``h``.

Also here: minGRU and minLSTM (gates that read only the input, so the update is affine in the
state and ``rnnjax.min_rnn_parallel`` can evaluate it with an associative scan), the dampened
unit (a cell written against the public step contract only, as a user's would be), and each
built-in cell's closed-form Jacobian diagonal for quasi-DEER. The fast paths find these facts
through the registry of built-in cells (``rnnjax/_registry.py``); see ``docs/design.md``.
"""

from __future__ import annotations

import functools
from collections.abc import Callable
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp

from rnnjax._checks import (
    check_batch_shape,
    check_dtype,
    check_float,
    check_int,
    check_lstm_carry,
    check_params_type,
    check_shape,
    check_sizes,
)

Array = jax.Array
Initializer = Callable[..., Array]  # (key, shape, dtype) -> Array, as in jax.nn.initializers

glorot_uniform = jax.nn.initializers.glorot_uniform()
orthogonal = jax.nn.initializers.orthogonal()
zeros = jax.nn.initializers.zeros


class Cell(NamedTuple):
    """A recurrent cell as a bundle of three pure functions.

    Attributes:
      init: ``init(key) -> params``.
      initial_carry: ``initial_carry(batch_shape=()) -> carry`` (zeros), e.g. ``(4,)``.
      step: ``step(params, carry, x) -> (carry, y)`` with ``x: [*batch, I]``.
    """

    init: Callable[[Array], Any]
    initial_carry: Callable[..., Any]
    step: Callable[[Any, Any, Array], tuple[Any, Array]]


class LSTMState(NamedTuple):
    """Carry of the LSTM family."""

    h: Array  # [*batch, H]
    c: Array  # [*batch, H]


class ElmanParams(NamedTuple):
    w_ih: Array  # [I, H]
    w_hh: Array  # [H, H]
    b: Array  # [H]


class LSTMParams(NamedTuple):
    w_ih: Array  # [I, 4H], gates i, f, g, o
    w_hh: Array  # [H, 4H]
    b: Array  # [4H]  (PyTorch's b_ih + b_hh)


class LSTMProjParams(NamedTuple):
    """LSTM with a recurrent projection (``lstm(..., proj_size=P)``)."""

    w_ih: Array  # [I, 4H], gates i, f, g, o
    w_hh: Array  # [P, 4H]  (the fed-back state is the projected h)
    b: Array  # [4H]
    w_hr: Array  # [H, P]  projection of o ⊙ tanh(c)


class PeepholeLSTMParams(NamedTuple):
    w_ih: Array  # [I, 4H], gates i, f, g, o
    w_hh: Array  # [H, 4H]
    b: Array  # [4H]
    w_ci: Array  # [H], input gate sees c_{t-1}
    w_cf: Array  # [H], forget gate sees c_{t-1}
    w_co: Array  # [H], output gate sees c_t


class CIFGParams(NamedTuple):
    w_ih: Array  # [I, 3H], gates i, g, o (the forget gate is 1 - i)
    w_hh: Array  # [H, 3H]
    b: Array  # [3H]


class GRUParams(NamedTuple):
    w_ih: Array  # [I, 3H], gates r, z, n
    w_hh: Array  # [H, 3H]
    b_ih: Array  # [3H]
    b_hh: Array  # [3H]


class GRUResetBeforeParams(NamedTuple):
    w_ih: Array  # [I, 3H], gates r, z, n
    w_hh: Array  # [H, 3H]
    b_ih: Array  # [3H]
    b_hh: Array  # [3H]


class MinGRUParams(NamedTuple):
    w_ih: Array  # [I, 2H], gates z, h̃
    b: Array  # [2H]


class MinLSTMParams(NamedTuple):
    w_ih: Array  # [I, 3H], gates f, i, h̃
    b: Array  # [3H]


class DampenedParams(NamedTuple):
    """Parameters of the dampened unit (``dampened_step``)."""

    w: Array  # [I, H]
    lam: Array  # []  the learned scalar λ
    b: Array  # [H]


# ----------------------------------------------------------------------------- checks


def _check_step_args(params, carry_leaves: dict, x, num_gates: int) -> None:
    """Check weights, carry and input of a built-in cell against each other."""
    check_float("x", x)
    w_ih, w_hh = params.w_ih, params.w_hh
    if w_hh.ndim != 2 or w_hh.shape[1] != num_gates * w_hh.shape[0]:
        raise ValueError(
            f"params.w_hh: expected shape [H, {num_gates}H], got {tuple(w_hh.shape)}"
        )
    hidden = w_hh.shape[0]
    if w_ih.ndim != 2 or w_ih.shape[1] != num_gates * hidden:
        raise ValueError(
            f"params.w_ih: expected shape [I, {num_gates * hidden}] ({num_gates}H with "
            f"H = {hidden} from params.w_hh), got {tuple(w_ih.shape)}"
        )
    for name in ("b", "b_ih", "b_hh"):
        if hasattr(params, name):
            check_shape(f"params.{name}", getattr(params, name), (num_gates * hidden,))
    for name in ("w_ci", "w_cf", "w_co"):
        if hasattr(params, name):
            check_shape(f"params.{name}", getattr(params, name), (hidden,))
    input_size = w_ih.shape[0]
    if x.ndim < 1 or x.shape[-1] != input_size:
        raise ValueError(
            f"x: expected shape [*batch, {input_size}] (input_size from params.w_ih), "
            f"got {tuple(x.shape)}"
        )
    batch = tuple(x.shape[:-1])
    for name, leaf in carry_leaves.items():
        check_float(name, leaf)
        check_shape(name, leaf, batch + (hidden,), shown=(*batch, hidden))


# ------------------------------------------------------------------------ step functions


def matmul(a: Array, w: Array, dtype=None) -> Array:
    """``a @ w``; with ``dtype``, both operands cast to it and the product accumulated in float32.

    ``dtype=None`` is the product of the operands as they are (promoted, e.g. float32 for a
    float32 input and bfloat16 weights).

    With ``dtype``, the backward pass multiplies in ``dtype`` too: the two products of the
    gradient (``∂a = g wᵀ``, ``∂w = aᵀ g``) take ``g`` cast to ``dtype``, as the fused kernels'
    hand-written backward passes do. Left to JAX, the transpose of a product with a float32
    result takes the float32 cotangent, so every backward product of a bf16 policy ran in
    float32. The rule is a ``custom_jvp`` (forward mode works; reverse mode transposes it):
    the tangent products are ``dtype x dtype`` with a ``dtype`` result (XLA accumulates a bf16
    product in float32 and rounds once), so the backward products are ``dtype x dtype`` and
    the gradients reaching float32 params are cast back to float32.
    """
    if dtype is None:
        return a @ w
    return policy_product(jnp.matmul, a, w, dtype)


def policy_product(product: Callable, a: Array, w: Array, dtype) -> Array:
    """``product(a, w)`` with both operands in ``dtype`` and the result in float32, and the
    backward products in ``dtype`` too (see :func:`matmul`). ``product(a, w, *,
    preferred_element_type)`` is bilinear: ``jnp.matmul``, an einsum, a convolution; pass the
    same function object for the same product, so that traces are cached alike."""
    return _low_product(product, a, w, jnp.dtype(dtype))


def contract(spec: str, a: Array, w: Array, dtype=None) -> Array:
    """``jnp.einsum(spec, a, w)`` under the precision policy of :func:`matmul` (forward and
    backward products in ``dtype``, accumulated in float32)."""
    if dtype is None:
        return jnp.einsum(spec, a, w)
    return policy_product(_EINSUMS.setdefault(spec, functools.partial(jnp.einsum, spec)), a, w, dtype)


_EINSUMS: dict[str, Callable] = {}  # one function per spec, so that traces of a spec are cached alike


@functools.partial(jax.custom_jvp, nondiff_argnums=(0, 3))
def _low_product(product: Callable, a: Array, w: Array, dtype) -> Array:
    return product(a.astype(dtype), w.astype(dtype), preferred_element_type=jnp.float32)


@_low_product.defjvp
def _low_product_jvp(product, dtype, primals, tangents):
    a, w = primals
    da, dw = tangents

    def low(x, y):  # linear in the tangent: its transpose is a backward product in dtype
        return product(x.astype(dtype), y.astype(dtype), preferred_element_type=dtype).astype(jnp.float32)

    return _low_product(product, a, w, dtype), low(da, w) + low(a, dw)


def elman_step(params: ElmanParams, h: Array, x: Array, *, activation=jnp.tanh, dtype=None):
    """Elman (simple RNN) step.

    ``h' = act(x W_ih + h W_hh + b)``, ``y = h'``; ``act`` is tanh unless given.

    Args:
      params: ``ElmanParams(w_ih [I, H], w_hh [H, H], b [H])``.
      h: ``[*batch, H]``.
      x: ``[*batch, I]``.
      activation: elementwise nonlinearity (``rnnjax.elman(activation=...)`` picks it).
      dtype: the dtype of the products' operands (float32 accumulation); None: as they are.

    References: Elman 1990, "Finding structure in time".

    >>> cell = elman(input_size=3, hidden_size=5)
    >>> h, y = elman_step(cell.init(jax.random.key(0)), cell.initial_carry((2,)), jnp.ones((2, 3)))
    >>> y.shape
    (2, 5)
    """
    check_params_type(params, ElmanParams)
    _check_step_args(params, {"carry": h}, x, 1)
    pre = matmul(x, params.w_ih, dtype) + params.b + matmul(h, params.w_hh, dtype)
    h_new = activation(pre).astype(h.dtype)
    return h_new, h_new


def _lstm_preactivations(params, carry: LSTMState, x: Array, dtype) -> Array:
    # [*, 4H] (3H for CIFG)
    return matmul(x, params.w_ih, dtype) + params.b + matmul(carry.h, params.w_hh, dtype)


def _lstm_update(params: LSTMParams, carry: LSTMState, x: Array, dtype):
    i, f, g, o = jnp.split(_lstm_preactivations(params, carry, x, dtype), 4, axis=-1)
    c = jax.nn.sigmoid(f) * carry.c + jax.nn.sigmoid(i) * jnp.tanh(g)
    h = jax.nn.sigmoid(o) * jnp.tanh(c)
    new = LSTMState(h.astype(carry.h.dtype), c.astype(carry.c.dtype))
    return new, new.h


def lstm_step(params: LSTMParams, carry: LSTMState, x: Array, *, dtype=None):
    """LSTM step, gates in PyTorch order i, f, g, o.

    ::

        i = σ(x W_ii + h W_hi + b_i)      f = σ(x W_if + h W_hf + b_f)
        g = tanh(x W_ig + h W_hg + b_g)   o = σ(x W_io + h W_ho + b_o)
        c' = f ⊙ c + i ⊙ g                h' = o ⊙ tanh(c'),   y = h'

    Args:
      params: ``LSTMParams(w_ih [I, 4H], w_hh [H, 4H], b [4H])``.
      carry: ``LSTMState(h [*batch, H], c [*batch, H])``.
      x: ``[*batch, I]``.
      dtype: the dtype of the products' operands (float32 accumulation); None: as they are.

    References: Hochreiter & Schmidhuber 1997; Gers, Schmidhuber & Cummins 2000 (forget gate).

    >>> cell = lstm(input_size=3, hidden_size=5)
    >>> carry, y = lstm_step(cell.init(jax.random.key(0)), cell.initial_carry(), jnp.ones(3))
    >>> carry.c.shape, y.shape
    ((5,), (5,))
    """
    check_params_type(params, LSTMParams)
    check_lstm_carry(carry)
    _check_step_args(params, {"carry.h": carry.h, "carry.c": carry.c}, x, 4)
    return _lstm_update(params, carry, x, dtype)


def lstm_proj_step(params: LSTMProjParams, carry: LSTMState, x: Array, *, dtype=None):
    """LSTM step with a recurrent projection (LSTMP), as ``torch.nn.LSTM(proj_size=P)``.

    ::

        i, f, g, o from x W_ih + h W_hh + b      (h: [*batch, P], gates [*batch, H] each)
        c' = f ⊙ c + i ⊙ g                       h' = (o ⊙ tanh(c')) W_hr,   y = h'

    Args:
      params: ``LSTMProjParams(w_ih [I, 4H], w_hh [P, 4H], b [4H], w_hr [H, P])``.
      carry: ``LSTMState(h [*batch, P], c [*batch, H])``.
      x: ``[*batch, I]``.
      dtype: the dtype of the products' operands (float32 accumulation); None: as they are.

    References: Sak, Senior & Beaufays 2014, "Long short-term memory recurrent neural network
    architectures for large scale acoustic modeling".

    >>> cell = lstm(input_size=3, hidden_size=5, proj_size=2)
    >>> carry, y = lstm_proj_step(cell.init(jax.random.key(0)), cell.initial_carry((4,)), jnp.ones((4, 3)))
    >>> carry.h.shape, carry.c.shape, y.shape
    ((4, 2), (4, 5), (4, 2))
    """
    check_params_type(params, LSTMProjParams)
    check_lstm_carry(carry)
    check_float("x", x)
    w_hr = params.w_hr
    if w_hr.ndim != 2:
        raise ValueError(f"params.w_hr: expected shape [H, P], got {tuple(w_hr.shape)}")
    hidden, proj = w_hr.shape
    check_shape("params.w_hh", params.w_hh, (proj, 4 * hidden), shown=(proj, f"4H = {4 * hidden}"))
    check_shape("params.b", params.b, (4 * hidden,))
    if params.w_ih.ndim != 2 or params.w_ih.shape[1] != 4 * hidden:
        raise ValueError(f"params.w_ih: expected shape [I, {4 * hidden}] (4H with H = {hidden} from params.w_hr), "
                         f"got {tuple(params.w_ih.shape)}")
    if x.ndim < 1 or x.shape[-1] != params.w_ih.shape[0]:
        raise ValueError(f"x: expected shape [*batch, {params.w_ih.shape[0]}] (input_size from params.w_ih), "
                         f"got {tuple(x.shape)}")
    batch = tuple(x.shape[:-1])
    check_float("carry.h", carry.h)
    check_shape("carry.h", carry.h, batch + (proj,), shown=(*batch, proj))
    check_float("carry.c", carry.c)
    check_shape("carry.c", carry.c, batch + (hidden,), shown=(*batch, hidden))
    i, f, g, o = jnp.split(_lstm_preactivations(params, carry, x, dtype), 4, axis=-1)
    c = jax.nn.sigmoid(f) * carry.c + jax.nn.sigmoid(i) * jnp.tanh(g)
    h = matmul(jax.nn.sigmoid(o) * jnp.tanh(c), w_hr, dtype)
    new = LSTMState(h.astype(carry.h.dtype), c.astype(carry.c.dtype))
    return new, new.h


def _peephole_update(params: PeepholeLSTMParams, carry: LSTMState, x: Array, dtype):
    zi, zf, zg, zo = jnp.split(_lstm_preactivations(params, carry, x, dtype), 4, axis=-1)
    i = jax.nn.sigmoid(zi + params.w_ci * carry.c)
    f = jax.nn.sigmoid(zf + params.w_cf * carry.c)
    c = f * carry.c + i * jnp.tanh(zg)
    o = jax.nn.sigmoid(zo + params.w_co * c)
    h = o * jnp.tanh(c)
    new = LSTMState(h.astype(carry.h.dtype), c.astype(carry.c.dtype))
    return new, new.h


def peephole_lstm_step(params: PeepholeLSTMParams, carry: LSTMState, x: Array, *, dtype=None):
    """LSTM step with diagonal peephole connections (Gers & Schmidhuber 2000).

    ::

        i = σ(x W_ii + h W_hi + b_i + w_ci ⊙ c)    f = σ(x W_if + h W_hf + b_f + w_cf ⊙ c)
        g = tanh(x W_ig + h W_hg + b_g)            c' = f ⊙ c + i ⊙ g
        o = σ(x W_io + h W_ho + b_o + w_co ⊙ c')   h' = o ⊙ tanh(c'),   y = h'

    Args:
      params: ``PeepholeLSTMParams(w_ih [I, 4H], w_hh [H, 4H], b [4H], w_ci, w_cf, w_co [H])``.
      carry: ``LSTMState(h, c)``, each ``[*batch, H]``.
      x: ``[*batch, I]``.
      dtype: the dtype of the products' operands (float32 accumulation); None: as they are.

    References: Gers & Schmidhuber 2000, "Recurrent nets that time and count".

    >>> cell = peephole_lstm(input_size=3, hidden_size=5)
    >>> carry, y = peephole_lstm_step(cell.init(jax.random.key(0)), cell.initial_carry((2,)), jnp.ones((2, 3)))
    >>> y.shape
    (2, 5)
    """
    check_params_type(params, PeepholeLSTMParams)
    check_lstm_carry(carry)
    _check_step_args(params, {"carry.h": carry.h, "carry.c": carry.c}, x, 4)
    return _peephole_update(params, carry, x, dtype)


def _cifg_update(params: CIFGParams, carry: LSTMState, x: Array, dtype):
    zi, zg, zo = jnp.split(_lstm_preactivations(params, carry, x, dtype), 3, axis=-1)
    i = jax.nn.sigmoid(zi)
    c = (1.0 - i) * carry.c + i * jnp.tanh(zg)
    h = jax.nn.sigmoid(zo) * jnp.tanh(c)
    new = LSTMState(h.astype(carry.h.dtype), c.astype(carry.c.dtype))
    return new, new.h


def cifg_lstm_step(params: CIFGParams, carry: LSTMState, x: Array, *, dtype=None):
    """Coupled input–forget gate LSTM step (CIFG): the forget gate is ``1 - i``.

    ::

        i = σ(x W_ii + h W_hi + b_i)    g = tanh(x W_ig + h W_hg + b_g)
        o = σ(x W_io + h W_ho + b_o)    c' = (1 - i) ⊙ c + i ⊙ g
        h' = o ⊙ tanh(c'),   y = h'

    Args:
      params: ``CIFGParams(w_ih [I, 3H], w_hh [H, 3H], b [3H])``, gates i, g, o.
      carry: ``LSTMState(h, c)``, each ``[*batch, H]``.
      x: ``[*batch, I]``.
      dtype: the dtype of the products' operands (float32 accumulation); None: as they are.

    References: Greff et al. 2017, "LSTM: A search space odyssey" (the CIFG variant).

    >>> cell = cifg_lstm(input_size=3, hidden_size=5)
    >>> carry, y = cifg_lstm_step(cell.init(jax.random.key(0)), cell.initial_carry(), jnp.ones(3))
    >>> y.shape
    (5,)
    """
    check_params_type(params, CIFGParams)
    check_lstm_carry(carry)
    _check_step_args(params, {"carry.h": carry.h, "carry.c": carry.c}, x, 3)
    return _cifg_update(params, carry, x, dtype)


def _gru_update(params: GRUParams, h: Array, x: Array, dtype):
    xw = matmul(x, params.w_ih, dtype) + params.b_ih  # [*, 3H]
    hw = matmul(h, params.w_hh, dtype) + params.b_hh  # [*, 3H]
    xr, xz, xn = jnp.split(xw, 3, axis=-1)
    hr, hz, hn = jnp.split(hw, 3, axis=-1)
    r = jax.nn.sigmoid(xr + hr)
    z = jax.nn.sigmoid(xz + hz)
    n = jnp.tanh(xn + r * hn)
    h_new = ((1.0 - z) * n + z * h).astype(h.dtype)
    return h_new, h_new


def gru_step(params: GRUParams, h: Array, x: Array, *, dtype=None):
    """GRU step with the reset gate applied after the recurrent matmul (PyTorch/cuDNN form).

    ::

        r = σ(x W_ir + b_ir + h W_hr + b_hr)    z = σ(x W_iz + b_iz + h W_hz + b_hz)
        n = tanh(x W_in + b_in + r ⊙ (h W_hn + b_hn))
        h' = (1 - z) ⊙ n + z ⊙ h,   y = h'

    Args:
      params: ``GRUParams(w_ih [I, 3H], w_hh [H, 3H], b_ih [3H], b_hh [3H])``, gates r, z, n.
      h: ``[*batch, H]``.
      x: ``[*batch, I]``.
      dtype: the dtype of the products' operands (float32 accumulation); None: as they are.

    References: Cho et al. 2014; the reset-after form of cuDNN and ``torch.nn.GRU``.

    >>> cell = gru(input_size=3, hidden_size=5)
    >>> h, y = gru_step(cell.init(jax.random.key(0)), cell.initial_carry((2,)), jnp.ones((2, 3)))
    >>> y.shape
    (2, 5)
    """
    check_params_type(params, GRUParams)
    _check_step_args(params, {"carry": h}, x, 3)
    return _gru_update(params, h, x, dtype)


def _gru_reset_before_update(params: GRUResetBeforeParams, h: Array, x: Array, dtype):
    hidden = h.shape[-1]
    xw = matmul(x, params.w_ih, dtype) + params.b_ih  # [*, 3H]
    hrz = matmul(h, params.w_hh[:, : 2 * hidden], dtype) + params.b_hh[: 2 * hidden]  # [*, 2H]
    xr, xz, xn = jnp.split(xw, 3, axis=-1)
    hr, hz = jnp.split(hrz, 2, axis=-1)
    r = jax.nn.sigmoid(xr + hr)
    z = jax.nn.sigmoid(xz + hz)
    n = jnp.tanh(xn + matmul(r * h, params.w_hh[:, 2 * hidden :], dtype) + params.b_hh[2 * hidden :])
    h_new = ((1.0 - z) * n + z * h).astype(h.dtype)
    return h_new, h_new


def gru_reset_before_step(params: GRUResetBeforeParams, h: Array, x: Array, *, dtype=None):
    """GRU step with the reset gate applied to ``h`` before the matmul (Cho et al. 2014).

    ::

        r = σ(x W_ir + b_ir + h W_hr + b_hr)    z = σ(x W_iz + b_iz + h W_hz + b_hz)
        n = tanh(x W_in + b_in + (r ⊙ h) W_hn + b_hn)
        h' = (1 - z) ⊙ n + z ⊙ h,   y = h'

    Args:
      params: ``GRUResetBeforeParams(w_ih [I, 3H], w_hh [H, 3H], b_ih [3H], b_hh [3H])``.
      h: ``[*batch, H]``.
      x: ``[*batch, I]``.
      dtype: the dtype of the products' operands (float32 accumulation); None: as they are.

    References: Cho et al. 2014, "Learning phrase representations using RNN encoder–decoder".

    >>> cell = gru_reset_before(input_size=3, hidden_size=5)
    >>> h, y = gru_reset_before_step(cell.init(jax.random.key(0)), cell.initial_carry(), jnp.ones(3))
    >>> y.shape
    (5,)
    """
    check_params_type(params, GRUResetBeforeParams)
    _check_step_args(params, {"carry": h}, x, 3)
    return _gru_reset_before_update(params, h, x, dtype)


# ----------------------------------------------------------------------------- factories
#
# The factory helpers below are shared by every module of built-in cells (not in __all__).


def draw(init: Initializer, key, shape: tuple, dtype) -> Array:
    """Run an initialiser in at least float32 (QR for orthogonal has no 16-bit kernel), then cast."""
    return init(key, shape, jnp.promote_types(dtype, jnp.float32)).astype(dtype)


def gate_blocks(init: Initializer, key, shape: tuple, num_gates: int, dtype) -> Array:
    """``num_gates`` independently initialised ``shape`` blocks side by side on the last axis."""
    keys = jax.random.split(key, num_gates)
    return jnp.concatenate([draw(init, k, shape, dtype) for k in keys], axis=-1)


def zeros_carry(hidden_size: int, carry_dtype, lstm_like: bool):
    def initial_carry(batch_shape=()):
        shape = check_batch_shape(batch_shape) + (hidden_size,)
        h = jnp.zeros(shape, carry_dtype)
        return LSTMState(h, jnp.zeros(shape, carry_dtype)) if lstm_like else h

    return initial_carry


def policy_step(step: Callable, dtype, **keywords) -> Callable:
    """``step`` with its keywords bound: the compute ``dtype`` (when given) and any others."""
    if dtype is not None:
        keywords["dtype"] = jnp.dtype(dtype)
    return functools.partial(step, **keywords) if keywords else step


def check_precision(param_dtype, dtype, carry_dtype) -> None:
    """The three dtypes of the precision policy, checked (a factory helper, as ``draw``)."""
    check_dtype("param_dtype", param_dtype)
    check_dtype("dtype", dtype, allow_none=True)
    check_dtype("carry_dtype", carry_dtype)


def precision_step(step: Callable, param_dtype, dtype, carry_dtype, **keywords) -> Callable:
    """The three dtypes checked, and ``step`` with the compute ``dtype`` and ``keywords`` bound."""
    check_precision(param_dtype, dtype, carry_dtype)
    return policy_step(step, dtype, **keywords)


_ACTIVATIONS = {"tanh": jnp.tanh, "sigmoid": jax.nn.sigmoid, "relu": jax.nn.relu}


def elman(
    input_size: int,
    hidden_size: int,
    *,
    activation: str | Callable = "tanh",
    w_ih_init: Initializer = glorot_uniform,
    w_hh_init: Initializer = orthogonal,
    b_init: Initializer = zeros,
    param_dtype=jnp.float32,
    dtype=None,
    carry_dtype=jnp.float32,
) -> Cell:
    """Elman (simple RNN) cell: ``h' = act(x W_ih + h W_hh + b)``; see ``elman_step``.

    ``activation`` is ``"tanh"`` (default), ``"sigmoid"``, ``"relu"`` or any elementwise callable.

    >>> cell = elman(4, 8, activation="relu")
    >>> cell.init(jax.random.key(0)).w_hh.shape
    (8, 8)
    """
    check_sizes(input_size=input_size, hidden_size=hidden_size)
    if isinstance(activation, str):
        if activation not in _ACTIVATIONS:
            raise ValueError(
                f"activation: expected one of {sorted(_ACTIVATIONS)} or a callable, "
                f"got {activation!r}"
            )
        activation = _ACTIVATIONS[activation]
    elif not callable(activation):
        raise TypeError(f"activation: expected a string or a callable, got {activation!r}")
    check_precision(param_dtype, dtype, carry_dtype)

    def init(key) -> ElmanParams:
        k1, k2, k3 = jax.random.split(key, 3)
        return ElmanParams(
            w_ih=draw(w_ih_init, k1, (input_size, hidden_size), param_dtype),
            w_hh=draw(w_hh_init, k2, (hidden_size, hidden_size), param_dtype),
            b=draw(b_init, k3, (hidden_size,), param_dtype),
        )

    keywords = {} if activation is jnp.tanh else {"activation": activation}
    return Cell(init, zeros_carry(hidden_size, carry_dtype, False), policy_step(elman_step, dtype, **keywords))


def _lstm_family_init(params_cls, input_size, hidden_size, gates, forget_slot, forget_bias,
                      w_ih_init, w_hh_init, b_init, dtype, extra=None, recurrent_size=None):
    """``init`` of an LSTM-like cell; ``recurrent_size`` is the fed-back state's (default ``H``)."""
    def init(key):
        k1, k2, k3, k4 = jax.random.split(key, 4)
        b = gate_blocks(b_init, k3, (hidden_size,), gates, dtype)
        if forget_bias:
            sl = slice(forget_slot * hidden_size, (forget_slot + 1) * hidden_size)
            b = b.at[sl].add(jnp.asarray(forget_bias, dtype))
        fields = dict(
            w_ih=gate_blocks(w_ih_init, k1, (input_size, hidden_size), gates, dtype),
            w_hh=gate_blocks(w_hh_init, k2, (recurrent_size or hidden_size, hidden_size), gates, dtype),
            b=b,
        )
        if extra:
            fields.update(extra(k4))
        return params_cls(**fields)

    return init


def lstm(
    input_size: int,
    hidden_size: int,
    *,
    forget_bias: float = 1.0,
    w_ih_init: Initializer = glorot_uniform,
    w_hh_init: Initializer = orthogonal,
    b_init: Initializer = zeros,
    proj_size: int | None = None,
    w_hr_init: Initializer = glorot_uniform,
    param_dtype=jnp.float32,
    dtype=None,
    carry_dtype=jnp.float32,
) -> Cell:
    """LSTM cell (gates i, f, g, o); see ``lstm_step``.

    With ``proj_size=P`` the hidden state is projected to ``P`` units before it is output and
    fed back (``lstm_proj_step``, Sak et al. 2014, ``torch.nn.LSTM(proj_size=P)``): params
    ``LSTMProjParams`` with ``w_hh [P, 4H]`` (orthogonal per gate block) and ``w_hr [H, P]``
    (``w_hr_init``, Glorot-uniform), carry ``LSTMState(h [*batch, P], c [*batch, H])``.

    Input weights Glorot-uniform and recurrent weights orthogonal, each per gate block;
    biases ``b_init`` plus ``forget_bias`` on the forget gate (Jozefowicz et al. 2015).
    ``param_dtype`` stores the params, ``dtype`` is what the products take (e.g.
    ``jnp.bfloat16``, accumulated in float32; None: the operands as they are) and
    ``carry_dtype`` holds ``h`` and ``c``; every built-in cell factory takes these three.

    >>> cell = lstm(input_size=8, hidden_size=32)
    >>> cell.init(jax.random.key(0)).w_ih.shape
    (8, 128)
    """
    check_sizes(input_size=input_size, hidden_size=hidden_size)
    check_precision(param_dtype, dtype, carry_dtype)
    if proj_size is not None:
        check_int("proj_size", proj_size)
        return _lstm_proj(input_size, hidden_size, proj_size, forget_bias, w_ih_init, w_hh_init, b_init,
                          w_hr_init, param_dtype, dtype, carry_dtype)
    init = _lstm_family_init(LSTMParams, input_size, hidden_size, 4, 1, forget_bias,
                             w_ih_init, w_hh_init, b_init, param_dtype)
    return Cell(init, zeros_carry(hidden_size, carry_dtype, True), policy_step(lstm_step, dtype))


def _lstm_proj(input_size, hidden_size, proj_size, forget_bias, w_ih_init, w_hh_init, b_init, w_hr_init,
               param_dtype, dtype, carry_dtype) -> Cell:
    def projection(key):
        return {"w_hr": draw(w_hr_init, key, (hidden_size, proj_size), param_dtype)}

    init = _lstm_family_init(LSTMProjParams, input_size, hidden_size, 4, 1, forget_bias, w_ih_init, w_hh_init,
                             b_init, param_dtype, extra=projection, recurrent_size=proj_size)

    def initial_carry(batch_shape=()):
        batch = check_batch_shape(batch_shape)
        return LSTMState(jnp.zeros(batch + (proj_size,), carry_dtype), jnp.zeros(batch + (hidden_size,), carry_dtype))

    return Cell(init, initial_carry, policy_step(lstm_proj_step, dtype))


def peephole_lstm(
    input_size: int,
    hidden_size: int,
    *,
    forget_bias: float = 1.0,
    w_ih_init: Initializer = glorot_uniform,
    w_hh_init: Initializer = orthogonal,
    b_init: Initializer = zeros,
    peephole_init: Initializer = zeros,
    param_dtype=jnp.float32,
    dtype=None,
    carry_dtype=jnp.float32,
) -> Cell:
    """Peephole LSTM cell; see ``peephole_lstm_step``. Peepholes start at ``peephole_init`` (zeros).

    >>> cell = peephole_lstm(4, 6)
    >>> cell.init(jax.random.key(0)).w_co.shape
    (6,)
    """
    check_sizes(input_size=input_size, hidden_size=hidden_size)

    def peepholes(key):
        ks = jax.random.split(key, 3)
        return {n: draw(peephole_init, k, (hidden_size,), param_dtype)
                for n, k in zip(("w_ci", "w_cf", "w_co"), ks, strict=True)}

    check_precision(param_dtype, dtype, carry_dtype)
    init = _lstm_family_init(PeepholeLSTMParams, input_size, hidden_size, 4, 1, forget_bias,
                             w_ih_init, w_hh_init, b_init, param_dtype, extra=peepholes)
    return Cell(init, zeros_carry(hidden_size, carry_dtype, True), policy_step(peephole_lstm_step, dtype))


def cifg_lstm(
    input_size: int,
    hidden_size: int,
    *,
    forget_bias: float = 1.0,
    w_ih_init: Initializer = glorot_uniform,
    w_hh_init: Initializer = orthogonal,
    b_init: Initializer = zeros,
    param_dtype=jnp.float32,
    dtype=None,
    carry_dtype=jnp.float32,
) -> Cell:
    """Coupled input–forget gate LSTM (gates i, g, o; ``f = 1 - i``); see ``cifg_lstm_step``.

    ``forget_bias`` keeps its LSTM meaning: the input-gate bias starts at ``-forget_bias``, so
    the forget gate ``1 - σ(b_i) = σ(forget_bias)`` at initialisation, as in the LSTM.

    >>> cell = cifg_lstm(4, 6)
    >>> cell.init(jax.random.key(0)).b[:6]
    Array([-1., -1., -1., -1., -1., -1.], dtype=float32)
    """
    check_sizes(input_size=input_size, hidden_size=hidden_size)
    check_precision(param_dtype, dtype, carry_dtype)
    init = _lstm_family_init(CIFGParams, input_size, hidden_size, 3, 0, -forget_bias,
                             w_ih_init, w_hh_init, b_init, param_dtype)
    return Cell(init, zeros_carry(hidden_size, carry_dtype, True), policy_step(cifg_lstm_step, dtype))


def _gru_factory(params_cls, step, input_size, hidden_size, w_ih_init, w_hh_init, b_init,
                 param_dtype, dtype, carry_dtype) -> Cell:
    check_sizes(input_size=input_size, hidden_size=hidden_size)
    check_precision(param_dtype, dtype, carry_dtype)

    def init(key):
        k1, k2, k3, k4 = jax.random.split(key, 4)
        return params_cls(
            w_ih=gate_blocks(w_ih_init, k1, (input_size, hidden_size), 3, param_dtype),
            w_hh=gate_blocks(w_hh_init, k2, (hidden_size, hidden_size), 3, param_dtype),
            b_ih=gate_blocks(b_init, k3, (hidden_size,), 3, param_dtype),
            b_hh=gate_blocks(b_init, k4, (hidden_size,), 3, param_dtype),
        )

    return Cell(init, zeros_carry(hidden_size, carry_dtype, False), policy_step(step, dtype))


def gru(
    input_size: int,
    hidden_size: int,
    *,
    w_ih_init: Initializer = glorot_uniform,
    w_hh_init: Initializer = orthogonal,
    b_init: Initializer = zeros,
    param_dtype=jnp.float32,
    dtype=None,
    carry_dtype=jnp.float32,
) -> Cell:
    """GRU cell, reset after the recurrent matmul (PyTorch/cuDNN); see ``gru_step``.

    >>> cell = gru(input_size=8, hidden_size=16)
    >>> cell.init(jax.random.key(0)).w_hh.shape
    (16, 48)
    """
    return _gru_factory(GRUParams, gru_step, input_size, hidden_size, w_ih_init, w_hh_init,
                        b_init, param_dtype, dtype, carry_dtype)


def gru_reset_before(
    input_size: int,
    hidden_size: int,
    *,
    w_ih_init: Initializer = glorot_uniform,
    w_hh_init: Initializer = orthogonal,
    b_init: Initializer = zeros,
    param_dtype=jnp.float32,
    dtype=None,
    carry_dtype=jnp.float32,
) -> Cell:
    """GRU cell of Cho et al. 2014, reset before the recurrent matmul; see ``gru_reset_before_step``.

    >>> cell = gru_reset_before(8, 16)
    >>> type(cell.init(jax.random.key(0))).__name__
    'GRUResetBeforeParams'
    """
    return _gru_factory(GRUResetBeforeParams, gru_reset_before_step, input_size, hidden_size,
                        w_ih_init, w_hh_init, b_init, param_dtype, dtype, carry_dtype)


# -------------------------------------------------------------- minGRU and minLSTM (Feng et al.)
#
# Their gates read only x_t, so the update is affine in h: h_t = a_t ⊙ h_{t-1} + b_t, which
# ``rnnjax.min_rnn_parallel`` evaluates with an associative scan (the registry holds the
# ``*_affine`` coefficient functions below for it).


def _g(v: Array) -> Array:
    """``g(v) = v + 1/2`` for ``v >= 0``, ``σ(v)`` otherwise: positive, continuous, linear growth."""
    return jnp.where(v >= 0, v + 0.5, jax.nn.sigmoid(v))


def _log_g(v: Array) -> Array:
    return jnp.where(v >= 0, jnp.log(jax.nn.relu(v) + 0.5), -jax.nn.softplus(-v))


def _min_gru_logits(params: MinGRUParams, x: Array, dtype=None):
    k = matmul(x, params.w_ih, dtype) + params.b  # [*, 2H]
    return jnp.split(k, 2, axis=-1)  # k_z, k_h


def _min_lstm_logits(params: MinLSTMParams, x: Array, dtype=None):
    kf, ki, kh = jnp.split(matmul(x, params.w_ih, dtype) + params.b, 3, axis=-1)  # [*, H] each
    # log i - log f, so that f' = f / (f + i) = σ(-d) and i' = σ(d) without dividing.
    d = jax.nn.softplus(-kf) - jax.nn.softplus(-ki)
    return d, kh


def _check_min_args(params, h: Array, x: Array, num_gates: int) -> None:
    check_float("x", x)
    check_float("carry", h)
    if h.ndim < 1:
        raise ValueError(f"carry: expected shape [*batch, H], got {tuple(h.shape)}")
    hidden = h.shape[-1]
    w_ih = params.w_ih
    if w_ih.ndim != 2 or w_ih.shape[1] != num_gates * hidden:
        raise ValueError(
            f"params.w_ih: expected shape [I, {num_gates * hidden}] ({num_gates}H with H = "
            f"{hidden} from the carry), got {tuple(w_ih.shape)}"
        )
    check_shape("params.b", params.b, (num_gates * hidden,))
    if x.ndim < 1 or x.shape[-1] != w_ih.shape[0]:
        raise ValueError(
            f"x: expected shape [*batch, {w_ih.shape[0]}] (input_size from params.w_ih), "
            f"got {tuple(x.shape)}"
        )
    batch = tuple(x.shape[:-1])
    check_shape("carry", h, batch + (hidden,), shown=(*batch, hidden))


def min_gru_step(params: MinGRUParams, h: Array, x: Array, *, dtype=None):
    """minGRU step: both gates read only the input, so the update is affine in ``h``.

    ::

        z = σ(x W_z + b_z)      h̃ = g(x W_h + b_h),   g(v) = v + 1/2 if v >= 0 else σ(v)
        h' = (1 - z) ⊙ h + z ⊙ h̃,   y = h'

    ``g`` keeps ``h̃`` positive (the paper's log-space form), so ``min_rnn_parallel`` can also
    run the recurrence in log space.

    Args:
      params: ``MinGRUParams(w_ih [I, 2H], b [2H])``, gates z, h̃.
      h: ``[*batch, H]``.
      x: ``[*batch, I]``.
      dtype: the dtype of the products' operands (float32 accumulation); None: as they are.

    References: Feng et al. 2024, "Were RNNs all we needed?".

    >>> cell = min_gru(input_size=3, hidden_size=5)
    >>> h, y = min_gru_step(cell.init(jax.random.key(0)), cell.initial_carry((2,)), jnp.ones((2, 3)))
    >>> y.shape
    (2, 5)
    """
    _check_min_args(params, h, x, 2)
    kz, kh = _min_gru_logits(params, x, dtype)
    h_new = (jax.nn.sigmoid(-kz) * h + jax.nn.sigmoid(kz) * _g(kh)).astype(h.dtype)
    return h_new, h_new


def min_lstm_step(params: MinLSTMParams, h: Array, x: Array, *, dtype=None):
    """minLSTM step: forget and input gates read only the input and are normalised to sum to 1.

    ::

        f = σ(x W_f + b_f)    i = σ(x W_i + b_i)    h̃ = g(x W_h + b_h)
        f' = f / (f + i)      i' = i / (f + i)
        h' = f' ⊙ h + i' ⊙ h̃,   y = h'

    with ``g`` as in ``min_gru_step``. The normalised gates are computed as ``f' = σ(log f - log i)``.

    Args:
      params: ``MinLSTMParams(w_ih [I, 3H], b [3H])``, gates f, i, h̃.
      h: ``[*batch, H]`` (the carry is ``h`` alone: there is no separate cell state).
      x: ``[*batch, I]``.
      dtype: the dtype of the products' operands (float32 accumulation); None: as they are.

    References: Feng et al. 2024, "Were RNNs all we needed?".

    >>> cell = min_lstm(input_size=3, hidden_size=5)
    >>> h, y = min_lstm_step(cell.init(jax.random.key(0)), cell.initial_carry(), jnp.ones(3))
    >>> y.shape
    (5,)
    """
    _check_min_args(params, h, x, 3)
    d, kh = _min_lstm_logits(params, x, dtype)
    h_new = (jax.nn.sigmoid(-d) * h + jax.nn.sigmoid(d) * _g(kh)).astype(h.dtype)
    return h_new, h_new


def min_gru_affine(params, x, log_space: bool, *, dtype=None):
    """``(a, b)`` of ``h' = a ⊙ h + b``, or ``(log a, log b)``: ``a = 1 - z``, ``b = z h̃``."""
    kz, kh = _min_gru_logits(params, x, dtype)
    if log_space:
        return -jax.nn.softplus(kz), -jax.nn.softplus(-kz) + _log_g(kh)
    return jax.nn.sigmoid(-kz), jax.nn.sigmoid(kz) * _g(kh)


def min_lstm_affine(params, x, log_space: bool, *, dtype=None):
    """``(a, b)`` of ``h' = a ⊙ h + b``, or ``(log a, log b)``: ``a = f'``, ``b = i' h̃``."""
    d, kh = _min_lstm_logits(params, x, dtype)
    if log_space:
        return -jax.nn.softplus(d), -jax.nn.softplus(-d) + _log_g(kh)
    return jax.nn.sigmoid(-d), jax.nn.sigmoid(d) * _g(kh)


def min_gru(
    input_size: int,
    hidden_size: int,
    *,
    w_ih_init: Initializer = glorot_uniform,
    b_init: Initializer = zeros,
    param_dtype=jnp.float32,
    dtype=None,
    carry_dtype=jnp.float32,
) -> Cell:
    """minGRU cell (gates z, h̃ from the input only); see ``min_gru_step``.

    Input weights Glorot-uniform per gate block, biases ``b_init`` (zeros). Run it with
    ``rnnjax.scan`` step by step or with ``rnnjax.min_rnn_parallel`` over a whole sequence.

    >>> cell = min_gru(input_size=8, hidden_size=16)
    >>> cell.init(jax.random.key(0)).w_ih.shape
    (8, 32)
    """
    check_sizes(input_size=input_size, hidden_size=hidden_size)
    check_precision(param_dtype, dtype, carry_dtype)

    def init(key) -> MinGRUParams:
        k1, k2 = jax.random.split(key)
        return MinGRUParams(
            w_ih=gate_blocks(w_ih_init, k1, (input_size, hidden_size), 2, param_dtype),
            b=gate_blocks(b_init, k2, (hidden_size,), 2, param_dtype),
        )

    return Cell(init, zeros_carry(hidden_size, carry_dtype, False), policy_step(min_gru_step, dtype))


def min_lstm(
    input_size: int,
    hidden_size: int,
    *,
    forget_bias: float = 1.0,
    w_ih_init: Initializer = glorot_uniform,
    b_init: Initializer = zeros,
    param_dtype=jnp.float32,
    dtype=None,
    carry_dtype=jnp.float32,
) -> Cell:
    """minLSTM cell (gates f, i, h̃ from the input only, f and i normalised); see ``min_lstm_step``.

    Input weights Glorot-uniform per gate block; biases ``b_init`` plus ``forget_bias`` on the
    forget gate, as in the LSTM family (with zero input-gate bias, ``f' = σ(log σ(forget_bias)
    - log σ(0))`` ≈ 0.59 at ``forget_bias = 1``).

    >>> cell = min_lstm(input_size=8, hidden_size=16)
    >>> cell.init(jax.random.key(0)).b[:3]
    Array([1., 1., 1.], dtype=float32)
    """
    check_sizes(input_size=input_size, hidden_size=hidden_size)
    check_precision(param_dtype, dtype, carry_dtype)

    def init(key) -> MinLSTMParams:
        k1, k2 = jax.random.split(key)
        b = gate_blocks(b_init, k2, (hidden_size,), 3, param_dtype)
        if forget_bias:
            b = b.at[:hidden_size].add(jnp.asarray(forget_bias, param_dtype))
        return MinLSTMParams(
            w_ih=gate_blocks(w_ih_init, k1, (input_size, hidden_size), 3, param_dtype), b=b
        )

    return Cell(init, zeros_carry(hidden_size, carry_dtype, False), policy_step(min_lstm_step, dtype))


# ------------------------------------------------------------------------- a custom cell


def dampened_step(params: DampenedParams, a: Array, x: Array):
    """The dampened unit, a one-line custom cell with a learned scalar memory weight λ.

    ::

        a' = σ(x w + λ a + b),   y = a'

    λ scales the unit's own previous activation (one scalar shared by all units), so it sets
    how much memory the cell keeps; it is learned with the rest. This step uses only the
    public step contract ``step(params, carry, x) -> (carry, y)``, exactly as a user's own
    cell would, and composes into ``scan``, ``stack``, ``deep``, ``bidirectional``,
    ``seq2seq`` and the decoders unchanged.

    Args:
      params: ``DampenedParams(w [I, H], lam [], b [H])``.
      a: ``[*batch, H]``.
      x: ``[*batch, I]``.

    >>> cell = dampened(3, 4)
    >>> a, y = dampened_step(cell.init(jax.random.key(0)), cell.initial_carry((2,)), jnp.ones((2, 3)))
    >>> y.shape
    (2, 4)
    """
    check_float("x", x)
    if x.ndim < 1 or x.shape[-1] != params.w.shape[0]:
        raise ValueError(f"x: expected shape [*batch, {params.w.shape[0]}] (I from params.w), got {tuple(x.shape)}")
    if tuple(a.shape) != tuple(x.shape[:-1]) + (params.w.shape[1],):
        raise ValueError(
            f"carry: expected shape [*batch, {params.w.shape[1]}] with *batch = {tuple(x.shape[:-1])} "
            f"from x, got {tuple(a.shape)}"
        )
    a_new = jax.nn.sigmoid(x @ params.w + params.lam * a + params.b).astype(a.dtype)
    return a_new, a_new


def dampened(
    input_size: int,
    hidden_size: int,
    *,
    lam_init: float = 0.5,
    w_init: Callable = glorot_uniform,
    param_dtype=jnp.float32,
    carry_dtype=jnp.float32,
) -> Cell:
    """The dampened unit ``a' = σ(x w + λ a + b)`` as a ``Cell``; see ``dampened_step``.

    ``w`` starts Glorot-uniform, ``b`` at zero and the scalar ``λ`` at ``lam_init``; the carry
    starts at zeros. Params are stored in ``param_dtype``; written as a user's cell would be,
    its step computes in the dtype its operands promote to (it has no ``dtype`` policy).

    >>> cell = dampened(3, 4, lam_init=0.9)
    >>> round(float(cell.init(jax.random.key(0)).lam), 6)
    0.9
    """
    check_sizes(input_size=input_size, hidden_size=hidden_size)
    if isinstance(lam_init, bool) or not isinstance(lam_init, (int, float)):
        raise TypeError(f"lam_init: expected a float, got {lam_init!r}")

    check_dtype("param_dtype", param_dtype)
    check_dtype("carry_dtype", carry_dtype)

    def init(key):
        return DampenedParams(
            w=draw(w_init, key, (input_size, hidden_size), param_dtype),
            lam=jnp.asarray(lam_init, param_dtype),
            b=jnp.zeros((hidden_size,), param_dtype),
        )

    return Cell(init, zeros_carry(hidden_size, carry_dtype, False), dampened_step)


# ------------------------------------------------------- Jacobian diagonals (for quasi-DEER)
#
# ``diag(∂carry'/∂carry)`` of each built-in step in closed form, in the structure of the carry;
# the registry gives them to ``rnnjax.deer_scan(method="quasi")``.


def _block_diagonals(w_hh: Array, num_gates: int) -> Array:
    """``[G, H]``: entry ``[g, j]`` is ``w_hh[j, g*H + j]``, the self-connection of unit j in gate g."""
    hidden = w_hh.shape[0]
    return jnp.diagonal(w_hh.reshape(hidden, num_gates, hidden), axis1=0, axis2=2)


def elman_diag_jacobian(params, h, x, *, activation=jnp.tanh, dtype=None):
    pre = matmul(x, params.w_ih, dtype) + params.b + matmul(h, params.w_hh, dtype)  # [*, H]
    slope = jax.jvp(activation, (pre,), (jnp.ones_like(pre),))[1]  # act'(pre), act elementwise
    return (slope * _block_diagonals(params.w_hh, 1)[0]).astype(h.dtype)


def gru_diag_jacobian(params, h, x, *, dtype=None):
    wr, wz, wn = _block_diagonals(params.w_hh, 3)
    xr, xz, xn = jnp.split(matmul(x, params.w_ih, dtype) + params.b_ih, 3, axis=-1)
    hr, hz, hn = jnp.split(matmul(h, params.w_hh, dtype) + params.b_hh, 3, axis=-1)
    r = jax.nn.sigmoid(xr + hr)
    z = jax.nn.sigmoid(xz + hz)
    n = jnp.tanh(xn + r * hn)
    dr = r * (1 - r) * wr
    dz = z * (1 - z) * wz
    dn = (1 - n**2) * (dr * hn + r * wn)
    return ((1 - z) * dn + z + (h - n) * dz).astype(h.dtype)


def lstm_diag_jacobian(params, carry, x, *, dtype=None):
    wi, wf, wg, wo = _block_diagonals(params.w_hh, 4)
    zi, zf, zg, zo = jnp.split(_lstm_preactivations(params, carry, x, dtype), 4, axis=-1)
    i, f, o = jax.nn.sigmoid(zi), jax.nn.sigmoid(zf), jax.nn.sigmoid(zo)
    g = jnp.tanh(zg)
    tc = jnp.tanh(f * carry.c + i * g)
    dc_dh = f * (1 - f) * wf * carry.c + i * (1 - i) * wi * g + i * (1 - g**2) * wg
    dh_dh = o * (1 - o) * wo * tc + o * (1 - tc**2) * dc_dh
    return LSTMState(dh_dh.astype(carry.h.dtype), f.astype(carry.c.dtype))


def min_gru_diag_jacobian(params, h, x, *, dtype=None):
    return jax.nn.sigmoid(-_min_gru_logits(params, x, dtype)[0]).astype(h.dtype)


def min_lstm_diag_jacobian(params, h, x, *, dtype=None):
    return jax.nn.sigmoid(-_min_lstm_logits(params, x, dtype)[0]).astype(h.dtype)
