"""Recurrent cells as pure step functions ``step(params, carry, x) -> (carry, y)``.

Every built-in cell is data (a NamedTuple of arrays, weights oriented ``(in, out)`` and
applied as ``x @ w``) plus pure, unjitted functions. Gate order and layout follow
PyTorch/cuDNN, so ``torch.nn.LSTM`` weights port by a transpose (``w_ih = weight_ih_l0.T``).

Each step works for any leading batch shape (including none), under ``jit``, ``grad`` and
``vmap``, and with bf16/f16 params next to a float32 carry (the new carry keeps the carry's
dtype). The output ``y`` of every built-in cell is its new ``h``.

Internally each built-in step is ``recur(params, carry, project(params, x))``: ``project`` is
the input projection ``x @ w_ih + b`` that does not depend on the carry, so a time loop may
compute it for all time steps in one matmul (see ``SPLIT_STEPS``).
"""

from __future__ import annotations

import functools
from collections.abc import Callable
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np

from rnnjax._checks import check_float, check_shape

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


# ----------------------------------------------------------------------------- checks


def _check_params_type(params, expected: type) -> None:
    """``params`` must carry ``expected``'s fields (e.g. no LSTMParams into a peephole step)."""
    missing = [f for f in expected._fields if not hasattr(params, f)]
    if missing:
        raise TypeError(
            f"params: expected {expected.__name__}({', '.join(expected._fields)}), got "
            f"{type(params).__name__} without {', '.join(missing)}"
        )


def _check_lstm_carry(carry) -> None:
    if not (hasattr(carry, "h") and hasattr(carry, "c")):
        given = f"an array of shape {tuple(carry.shape)}" if hasattr(carry, "shape") else type(carry).__name__
        raise TypeError(
            f"carry: expected an LSTMState(h, c) (cell.initial_carry(batch_shape) makes one), got {given}"
        )


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


def _elman_project(params: ElmanParams, x: Array) -> Array:
    return x @ params.w_ih + params.b  # [*, H]


def _elman_recur(params: ElmanParams, h: Array, xw: Array, *, activation=jnp.tanh):
    h_new = activation(xw + h @ params.w_hh).astype(h.dtype)
    return h_new, h_new


def elman_step(params: ElmanParams, h: Array, x: Array, *, activation=jnp.tanh):
    """Elman (simple RNN) step.

    ``h' = act(x W_ih + h W_hh + b)``, ``y = h'``; ``act`` is tanh unless given.

    Args:
      params: ``ElmanParams(w_ih [I, H], w_hh [H, H], b [H])``.
      h: ``[*batch, H]``.
      x: ``[*batch, I]``.
      activation: elementwise nonlinearity (``rnnjax.elman(activation=...)`` picks it).

    References: Elman 1990, "Finding structure in time".

    >>> cell = elman(input_size=3, hidden_size=5)
    >>> h, y = elman_step(cell.init(jax.random.key(0)), cell.initial_carry((2,)), jnp.ones((2, 3)))
    >>> y.shape
    (2, 5)
    """
    _check_params_type(params, ElmanParams)
    _check_step_args(params, {"carry": h}, x, 1)
    return _elman_recur(params, h, _elman_project(params, x), activation=activation)


def _lstm_project(params, x: Array) -> Array:
    return x @ params.w_ih + params.b  # [*, 4H] (or 3H for CIFG)


def _lstm_recur(params: LSTMParams, carry: LSTMState, xw: Array):
    z = xw + carry.h @ params.w_hh  # [*, 4H]
    i, f, g, o = jnp.split(z, 4, axis=-1)
    c = jax.nn.sigmoid(f) * carry.c + jax.nn.sigmoid(i) * jnp.tanh(g)
    h = jax.nn.sigmoid(o) * jnp.tanh(c)
    new = LSTMState(h.astype(carry.h.dtype), c.astype(carry.c.dtype))
    return new, new.h


def lstm_step(params: LSTMParams, carry: LSTMState, x: Array):
    """LSTM step, gates in PyTorch order i, f, g, o.

    ::

        i = σ(x W_ii + h W_hi + b_i)      f = σ(x W_if + h W_hf + b_f)
        g = tanh(x W_ig + h W_hg + b_g)   o = σ(x W_io + h W_ho + b_o)
        c' = f ⊙ c + i ⊙ g                h' = o ⊙ tanh(c'),   y = h'

    Args:
      params: ``LSTMParams(w_ih [I, 4H], w_hh [H, 4H], b [4H])``.
      carry: ``LSTMState(h [*batch, H], c [*batch, H])``.
      x: ``[*batch, I]``.

    References: Hochreiter & Schmidhuber 1997; Gers, Schmidhuber & Cummins 2000 (forget gate).

    >>> cell = lstm(input_size=3, hidden_size=5)
    >>> carry, y = lstm_step(cell.init(jax.random.key(0)), cell.initial_carry(), jnp.ones(3))
    >>> carry.c.shape, y.shape
    ((5,), (5,))
    """
    _check_params_type(params, LSTMParams)
    _check_lstm_carry(carry)
    _check_step_args(params, {"carry.h": carry.h, "carry.c": carry.c}, x, 4)
    return _lstm_recur(params, carry, _lstm_project(params, x))


def _peephole_recur(params: PeepholeLSTMParams, carry: LSTMState, xw: Array):
    z = xw + carry.h @ params.w_hh  # [*, 4H]
    zi, zf, zg, zo = jnp.split(z, 4, axis=-1)
    i = jax.nn.sigmoid(zi + params.w_ci * carry.c)
    f = jax.nn.sigmoid(zf + params.w_cf * carry.c)
    c = f * carry.c + i * jnp.tanh(zg)
    o = jax.nn.sigmoid(zo + params.w_co * c)
    h = o * jnp.tanh(c)
    new = LSTMState(h.astype(carry.h.dtype), c.astype(carry.c.dtype))
    return new, new.h


def peephole_lstm_step(params: PeepholeLSTMParams, carry: LSTMState, x: Array):
    """LSTM step with diagonal peephole connections (Gers & Schmidhuber 2000).

    ::

        i = σ(x W_ii + h W_hi + b_i + w_ci ⊙ c)    f = σ(x W_if + h W_hf + b_f + w_cf ⊙ c)
        g = tanh(x W_ig + h W_hg + b_g)            c' = f ⊙ c + i ⊙ g
        o = σ(x W_io + h W_ho + b_o + w_co ⊙ c')   h' = o ⊙ tanh(c'),   y = h'

    Args:
      params: ``PeepholeLSTMParams(w_ih [I, 4H], w_hh [H, 4H], b [4H], w_ci, w_cf, w_co [H])``.
      carry: ``LSTMState(h, c)``, each ``[*batch, H]``.
      x: ``[*batch, I]``.

    References: Gers & Schmidhuber 2000, "Recurrent nets that time and count".

    >>> cell = peephole_lstm(input_size=3, hidden_size=5)
    >>> carry, y = peephole_lstm_step(cell.init(jax.random.key(0)), cell.initial_carry((2,)), jnp.ones((2, 3)))
    >>> y.shape
    (2, 5)
    """
    _check_params_type(params, PeepholeLSTMParams)
    _check_lstm_carry(carry)
    _check_step_args(params, {"carry.h": carry.h, "carry.c": carry.c}, x, 4)
    return _peephole_recur(params, carry, _lstm_project(params, x))


def _cifg_recur(params: CIFGParams, carry: LSTMState, xw: Array):
    z = xw + carry.h @ params.w_hh  # [*, 3H]
    zi, zg, zo = jnp.split(z, 3, axis=-1)
    i = jax.nn.sigmoid(zi)
    c = (1.0 - i) * carry.c + i * jnp.tanh(zg)
    h = jax.nn.sigmoid(zo) * jnp.tanh(c)
    new = LSTMState(h.astype(carry.h.dtype), c.astype(carry.c.dtype))
    return new, new.h


def cifg_lstm_step(params: CIFGParams, carry: LSTMState, x: Array):
    """Coupled input–forget gate LSTM step (CIFG): the forget gate is ``1 - i``.

    ::

        i = σ(x W_ii + h W_hi + b_i)    g = tanh(x W_ig + h W_hg + b_g)
        o = σ(x W_io + h W_ho + b_o)    c' = (1 - i) ⊙ c + i ⊙ g
        h' = o ⊙ tanh(c'),   y = h'

    Args:
      params: ``CIFGParams(w_ih [I, 3H], w_hh [H, 3H], b [3H])``, gates i, g, o.
      carry: ``LSTMState(h, c)``, each ``[*batch, H]``.
      x: ``[*batch, I]``.

    References: Greff et al. 2017, "LSTM: A search space odyssey" (the CIFG variant).

    >>> cell = cifg_lstm(input_size=3, hidden_size=5)
    >>> carry, y = cifg_lstm_step(cell.init(jax.random.key(0)), cell.initial_carry(), jnp.ones(3))
    >>> y.shape
    (5,)
    """
    _check_params_type(params, CIFGParams)
    _check_lstm_carry(carry)
    _check_step_args(params, {"carry.h": carry.h, "carry.c": carry.c}, x, 3)
    return _cifg_recur(params, carry, _lstm_project(params, x))


def _gru_project(params, x: Array) -> Array:
    return x @ params.w_ih + params.b_ih  # [*, 3H]


def _gru_recur(params: GRUParams, h: Array, xw: Array):
    hw = h @ params.w_hh + params.b_hh  # [*, 3H]
    xr, xz, xn = jnp.split(xw, 3, axis=-1)
    hr, hz, hn = jnp.split(hw, 3, axis=-1)
    r = jax.nn.sigmoid(xr + hr)
    z = jax.nn.sigmoid(xz + hz)
    n = jnp.tanh(xn + r * hn)
    h_new = ((1.0 - z) * n + z * h).astype(h.dtype)
    return h_new, h_new


def gru_step(params: GRUParams, h: Array, x: Array):
    """GRU step with the reset gate applied after the recurrent matmul (PyTorch/cuDNN form).

    ::

        r = σ(x W_ir + b_ir + h W_hr + b_hr)    z = σ(x W_iz + b_iz + h W_hz + b_hz)
        n = tanh(x W_in + b_in + r ⊙ (h W_hn + b_hn))
        h' = (1 - z) ⊙ n + z ⊙ h,   y = h'

    Args:
      params: ``GRUParams(w_ih [I, 3H], w_hh [H, 3H], b_ih [3H], b_hh [3H])``, gates r, z, n.
      h: ``[*batch, H]``.
      x: ``[*batch, I]``.

    References: Cho et al. 2014; the reset-after form of cuDNN and ``torch.nn.GRU``.

    >>> cell = gru(input_size=3, hidden_size=5)
    >>> h, y = gru_step(cell.init(jax.random.key(0)), cell.initial_carry((2,)), jnp.ones((2, 3)))
    >>> y.shape
    (2, 5)
    """
    _check_params_type(params, GRUParams)
    _check_step_args(params, {"carry": h}, x, 3)
    return _gru_recur(params, h, _gru_project(params, x))


def _gru_reset_before_recur(params: GRUResetBeforeParams, h: Array, xw: Array):
    hidden = h.shape[-1]
    hrz = h @ params.w_hh[:, : 2 * hidden] + params.b_hh[: 2 * hidden]  # [*, 2H]
    xr, xz, xn = jnp.split(xw, 3, axis=-1)
    hr, hz = jnp.split(hrz, 2, axis=-1)
    r = jax.nn.sigmoid(xr + hr)
    z = jax.nn.sigmoid(xz + hz)
    n = jnp.tanh(xn + (r * h) @ params.w_hh[:, 2 * hidden :] + params.b_hh[2 * hidden :])
    h_new = ((1.0 - z) * n + z * h).astype(h.dtype)
    return h_new, h_new


def gru_reset_before_step(params: GRUResetBeforeParams, h: Array, x: Array):
    """GRU step with the reset gate applied to ``h`` before the matmul (Cho et al. 2014).

    ::

        r = σ(x W_ir + b_ir + h W_hr + b_hr)    z = σ(x W_iz + b_iz + h W_hz + b_hz)
        n = tanh(x W_in + b_in + (r ⊙ h) W_hn + b_hn)
        h' = (1 - z) ⊙ n + z ⊙ h,   y = h'

    Args:
      params: ``GRUResetBeforeParams(w_ih [I, 3H], w_hh [H, 3H], b_ih [3H], b_hh [3H])``.
      h: ``[*batch, H]``.
      x: ``[*batch, I]``.

    References: Cho et al. 2014, "Learning phrase representations using RNN encoder–decoder".

    >>> cell = gru_reset_before(input_size=3, hidden_size=5)
    >>> h, y = gru_reset_before_step(cell.init(jax.random.key(0)), cell.initial_carry(), jnp.ones(3))
    >>> y.shape
    (5,)
    """
    _check_params_type(params, GRUResetBeforeParams)
    _check_step_args(params, {"carry": h}, x, 3)
    return _gru_reset_before_recur(params, h, _gru_project(params, x))


# step function -> (project(params, x), recur(params, carry, xw), gates): identifies the built-in
# steps (rnnjax.scan checks their inputs against the params with it).
SPLIT_STEPS: dict[Callable, tuple[Callable, Callable, int]] = {
    elman_step: (_elman_project, _elman_recur, 1),
    lstm_step: (_lstm_project, _lstm_recur, 4),
    peephole_lstm_step: (_lstm_project, _peephole_recur, 4),
    cifg_lstm_step: (_lstm_project, _cifg_recur, 3),
    gru_step: (_gru_project, _gru_recur, 3),
    gru_reset_before_step: (_gru_project, _gru_reset_before_recur, 3),
}


def split_step(step: Callable):
    """``(project, recur, num_gates)`` for a built-in step (or a keyword partial of one), else None."""
    kwargs = {}
    if isinstance(step, functools.partial) and not step.args:
        kwargs = dict(step.keywords)
        step = step.func
    try:
        entry = SPLIT_STEPS.get(step)
    except TypeError:  # unhashable callable
        return None
    if entry is None:
        return None
    project, recur, gates = entry
    return project, (functools.partial(recur, **kwargs) if kwargs else recur), gates


# ----------------------------------------------------------------------------- factories


def _check_sizes(input_size: int, hidden_size: int) -> None:
    for name, v in (("input_size", input_size), ("hidden_size", hidden_size)):
        if not isinstance(v, int) or isinstance(v, bool) or v < 1:
            raise ValueError(f"{name}: expected a positive int, got {v!r}")


def _draw(init: Initializer, key, shape: tuple, dtype) -> Array:
    """Run an initialiser in at least float32 (QR for orthogonal has no 16-bit kernel), then cast."""
    return init(key, shape, jnp.promote_types(dtype, jnp.float32)).astype(dtype)


def _gate_blocks(init: Initializer, key, shape: tuple, num_gates: int, dtype) -> Array:
    """``num_gates`` independently initialised ``shape`` blocks side by side on the last axis."""
    keys = jax.random.split(key, num_gates)
    return jnp.concatenate([_draw(init, k, shape, dtype) for k in keys], axis=-1)


def _batch_tuple(batch_shape) -> tuple:
    if isinstance(batch_shape, int):
        return (batch_shape,)
    ok = isinstance(batch_shape, (tuple, list)) and all(
        isinstance(d, (int, np.integer)) and not isinstance(d, bool) and d >= 0 for d in batch_shape
    )
    if not ok:
        raise TypeError(
            f"batch_shape: expected a tuple of ints such as (4,), got {batch_shape!r}"
        )
    return tuple(int(d) for d in batch_shape)


def _zeros_carry(hidden_size: int, carry_dtype, lstm_like: bool):
    def initial_carry(batch_shape=()):
        shape = _batch_tuple(batch_shape) + (hidden_size,)
        h = jnp.zeros(shape, carry_dtype)
        return LSTMState(h, jnp.zeros(shape, carry_dtype)) if lstm_like else h

    return initial_carry


_ACTIVATIONS = {"tanh": jnp.tanh, "sigmoid": jax.nn.sigmoid, "relu": jax.nn.relu}


def elman(
    input_size: int,
    hidden_size: int,
    *,
    activation: str | Callable = "tanh",
    w_ih_init: Initializer = glorot_uniform,
    w_hh_init: Initializer = orthogonal,
    b_init: Initializer = zeros,
    dtype=jnp.float32,
    carry_dtype=jnp.float32,
) -> Cell:
    """Elman (simple RNN) cell: ``h' = act(x W_ih + h W_hh + b)``; see ``elman_step``.

    ``activation`` is ``"tanh"`` (default), ``"sigmoid"``, ``"relu"`` or any elementwise callable.

    >>> cell = elman(4, 8, activation="relu")
    >>> cell.init(jax.random.key(0)).w_hh.shape
    (8, 8)
    """
    _check_sizes(input_size, hidden_size)
    if isinstance(activation, str):
        if activation not in _ACTIVATIONS:
            raise ValueError(
                f"activation: expected one of {sorted(_ACTIVATIONS)} or a callable, "
                f"got {activation!r}"
            )
        activation = _ACTIVATIONS[activation]
    elif not callable(activation):
        raise TypeError(f"activation: expected a string or a callable, got {activation!r}")

    def init(key) -> ElmanParams:
        k1, k2, k3 = jax.random.split(key, 3)
        return ElmanParams(
            w_ih=_draw(w_ih_init, k1, (input_size, hidden_size), dtype),
            w_hh=_draw(w_hh_init, k2, (hidden_size, hidden_size), dtype),
            b=_draw(b_init, k3, (hidden_size,), dtype),
        )

    step = elman_step if activation is jnp.tanh else functools.partial(elman_step, activation=activation)
    return Cell(init, _zeros_carry(hidden_size, carry_dtype, False), step)


def _lstm_family_init(params_cls, input_size, hidden_size, gates, forget_slot, forget_bias,
                      w_ih_init, w_hh_init, b_init, dtype, extra=None):
    def init(key):
        k1, k2, k3, k4 = jax.random.split(key, 4)
        b = _gate_blocks(b_init, k3, (hidden_size,), gates, dtype)
        if forget_bias:
            sl = slice(forget_slot * hidden_size, (forget_slot + 1) * hidden_size)
            b = b.at[sl].add(jnp.asarray(forget_bias, dtype))
        fields = dict(
            w_ih=_gate_blocks(w_ih_init, k1, (input_size, hidden_size), gates, dtype),
            w_hh=_gate_blocks(w_hh_init, k2, (hidden_size, hidden_size), gates, dtype),
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
    dtype=jnp.float32,
    carry_dtype=jnp.float32,
) -> Cell:
    """LSTM cell (gates i, f, g, o); see ``lstm_step``.

    Input weights Glorot-uniform and recurrent weights orthogonal, each per gate block;
    biases ``b_init`` plus ``forget_bias`` on the forget gate (Jozefowicz et al. 2015).

    >>> cell = lstm(input_size=8, hidden_size=32)
    >>> cell.init(jax.random.key(0)).w_ih.shape
    (8, 128)
    """
    _check_sizes(input_size, hidden_size)
    init = _lstm_family_init(LSTMParams, input_size, hidden_size, 4, 1, forget_bias,
                             w_ih_init, w_hh_init, b_init, dtype)
    return Cell(init, _zeros_carry(hidden_size, carry_dtype, True), lstm_step)


def peephole_lstm(
    input_size: int,
    hidden_size: int,
    *,
    forget_bias: float = 1.0,
    w_ih_init: Initializer = glorot_uniform,
    w_hh_init: Initializer = orthogonal,
    b_init: Initializer = zeros,
    peephole_init: Initializer = zeros,
    dtype=jnp.float32,
    carry_dtype=jnp.float32,
) -> Cell:
    """Peephole LSTM cell; see ``peephole_lstm_step``. Peepholes start at ``peephole_init`` (zeros).

    >>> cell = peephole_lstm(4, 6)
    >>> cell.init(jax.random.key(0)).w_co.shape
    (6,)
    """
    _check_sizes(input_size, hidden_size)

    def peepholes(key):
        ks = jax.random.split(key, 3)
        return {n: _draw(peephole_init, k, (hidden_size,), dtype) for n, k in zip(("w_ci", "w_cf", "w_co"), ks, strict=True)}

    init = _lstm_family_init(PeepholeLSTMParams, input_size, hidden_size, 4, 1, forget_bias,
                             w_ih_init, w_hh_init, b_init, dtype, extra=peepholes)
    return Cell(init, _zeros_carry(hidden_size, carry_dtype, True), peephole_lstm_step)


def cifg_lstm(
    input_size: int,
    hidden_size: int,
    *,
    forget_bias: float = 1.0,
    w_ih_init: Initializer = glorot_uniform,
    w_hh_init: Initializer = orthogonal,
    b_init: Initializer = zeros,
    dtype=jnp.float32,
    carry_dtype=jnp.float32,
) -> Cell:
    """Coupled input–forget gate LSTM (gates i, g, o; ``f = 1 - i``); see ``cifg_lstm_step``.

    ``forget_bias`` keeps its LSTM meaning: the input-gate bias starts at ``-forget_bias``, so
    the forget gate ``1 - σ(b_i) = σ(forget_bias)`` at initialisation, as in the LSTM.

    >>> cell = cifg_lstm(4, 6)
    >>> cell.init(jax.random.key(0)).b[:6]
    Array([-1., -1., -1., -1., -1., -1.], dtype=float32)
    """
    _check_sizes(input_size, hidden_size)
    init = _lstm_family_init(CIFGParams, input_size, hidden_size, 3, 0, -forget_bias,
                             w_ih_init, w_hh_init, b_init, dtype)
    return Cell(init, _zeros_carry(hidden_size, carry_dtype, True), cifg_lstm_step)


def _gru_factory(params_cls, step, input_size, hidden_size, w_ih_init, w_hh_init, b_init,
                 dtype, carry_dtype) -> Cell:
    _check_sizes(input_size, hidden_size)

    def init(key):
        k1, k2, k3, k4 = jax.random.split(key, 4)
        return params_cls(
            w_ih=_gate_blocks(w_ih_init, k1, (input_size, hidden_size), 3, dtype),
            w_hh=_gate_blocks(w_hh_init, k2, (hidden_size, hidden_size), 3, dtype),
            b_ih=_gate_blocks(b_init, k3, (hidden_size,), 3, dtype),
            b_hh=_gate_blocks(b_init, k4, (hidden_size,), 3, dtype),
        )

    return Cell(init, _zeros_carry(hidden_size, carry_dtype, False), step)


def gru(
    input_size: int,
    hidden_size: int,
    *,
    w_ih_init: Initializer = glorot_uniform,
    w_hh_init: Initializer = orthogonal,
    b_init: Initializer = zeros,
    dtype=jnp.float32,
    carry_dtype=jnp.float32,
) -> Cell:
    """GRU cell, reset after the recurrent matmul (PyTorch/cuDNN); see ``gru_step``.

    >>> cell = gru(input_size=8, hidden_size=16)
    >>> cell.init(jax.random.key(0)).w_hh.shape
    (16, 48)
    """
    return _gru_factory(GRUParams, gru_step, input_size, hidden_size, w_ih_init, w_hh_init,
                        b_init, dtype, carry_dtype)


def gru_reset_before(
    input_size: int,
    hidden_size: int,
    *,
    w_ih_init: Initializer = glorot_uniform,
    w_hh_init: Initializer = orthogonal,
    b_init: Initializer = zeros,
    dtype=jnp.float32,
    carry_dtype=jnp.float32,
) -> Cell:
    """GRU cell of Cho et al. 2014, reset before the recurrent matmul; see ``gru_reset_before_step``.

    >>> cell = gru_reset_before(8, 16)
    >>> type(cell.init(jax.random.key(0))).__name__
    'GRUResetBeforeParams'
    """
    return _gru_factory(GRUResetBeforeParams, gru_reset_before_step, input_size, hidden_size,
                        w_ih_init, w_hh_init, b_init, dtype, carry_dtype)
