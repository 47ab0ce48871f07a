"""Gated linear recurrences: LRU, RG-LRU (Hawk/Griffin) and Mamba's selective SSM (S6).

Each cell's state update is affine and diagonal in the state, ``h_t = a_t ⊙ h_{t-1} + b_t``,
with ``a_t`` and ``b_t`` depending on the input only. So each cell comes in two forms with the
same params, carry and results:

* the step ``*_step(params, carry, x) -> (carry, y)``, for ``rnnjax.scan``, decoding and
  everything built on steps;
* the whole-sequence form ``*_parallel(params, carry, xs, lengths, reverse) -> (carry, ys)``,
  one associative scan over time (depth O(log T)), with the semantics of ``rnnjax.scan``:
  positions ``t >= lengths`` are padding (carry held, ``ys`` zero) and ``reverse`` runs each
  sequence from its own last valid step back to step 0, outputs in input order.

``PARALLEL`` maps each step to its whole-sequence form.

The papers' layers map ``D`` channels to ``D`` channels. With ``input_size == hidden_size`` the
cells are exactly those layers; otherwise ``x`` is first mapped to ``H`` channels,
``u = x w_in`` (``w_in [I, H]``, Glorot-uniform, no bias), and the layer runs on ``u``
(``input_projection=True`` adds ``w_in`` for equal sizes too). LRU's input matrix ``B`` already
maps ``I`` inputs to its state, so it needs no such map.
"""

from __future__ import annotations

import math
from functools import partial
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np

from rnnjax._checks import (
    check_array,
    check_batch_shape,
    check_dtype,
    check_float,
    check_resets,
    check_shape,
    check_sizes,
    fresh_steps,
    steps_mask,
)
from rnnjax._parallel_scan import affine_scan
from rnnjax.cells import Cell, matmul, precision_step
from rnnjax.scan import flip_sequences, scan  # noqa: F401  (scan: in the examples)

Array = jax.Array

__all__ = [
    "LRUParams",
    "RGLRUParams",
    "SelectiveSSMParams",
    "lru",
    "lru_parallel",
    "lru_step",
    "rg_lru",
    "rg_lru_parallel",
    "rg_lru_step",
    "selective_ssm",
    "selective_ssm_parallel",
    "selective_ssm_step",
]


class LRUParams(NamedTuple):
    nu_log: Array  # [N]   |λ| = exp(-exp(nu_log))
    theta_log: Array  # [N]   arg λ = exp(theta_log)
    gamma_log: Array  # [N]   input normalisation γ = exp(gamma_log)
    b_re: Array  # [I, N] input matrix B, real part
    b_im: Array  # [I, N] imaginary part
    c_re: Array  # [N, H] output matrix C, real part
    c_im: Array  # [N, H] imaginary part
    d: Array  # [I, H] skip connection


class RGLRUParams(NamedTuple):
    w_in: Array | None  # [I, H] input map (None when the input has H channels)
    w_a: Array  # [H, H] recurrence gate
    b_a: Array  # [H]
    w_x: Array  # [H, H] input gate
    b_x: Array  # [H]
    lam: Array  # [H]   Λ, with a = σ(Λ)


class SelectiveSSMParams(NamedTuple):
    w_in: Array | None  # [I, H] input map (None when the input has H channels)
    w_delta: Array  # [H, R] Δ's low-rank projection, first factor (part of Mamba's x_proj)
    w_dt: Array  # [R, H] second factor (Mamba's dt_proj)
    b_dt: Array  # [H]   Δ = softplus(u w_delta w_dt + b_dt)
    w_b: Array  # [H, N] B = u w_b
    w_c: Array  # [H, N] C = u w_c
    a_log: Array  # [H, N] A = -exp(a_log)
    d: Array  # [H]   skip connection


# ----------------------------------------------------------------------------- checks


def _check_params_type(params: Any, expected: type) -> None:
    missing = [f for f in expected._fields if not hasattr(params, f)]
    if missing:
        raise TypeError(
            f"params: expected {expected.__name__}({', '.join(expected._fields)}), got "
            f"{type(params).__name__} without {', '.join(missing)}"
        )


def _check_x(x: Any, input_size: int, source: str) -> tuple:
    check_float("x", x)
    if x.ndim < 1 or x.shape[-1] != input_size:
        raise ValueError(f"x: expected shape [*batch, {input_size}] (input_size from {source}), got {tuple(x.shape)}")
    return tuple(x.shape[:-1])


def _check_matrix(name: str, w: Any, rows: int | None, cols: int | None, what: str) -> None:
    check_array(name, w)
    if w.ndim != 2 or (rows is not None and w.shape[0] != rows) or (cols is not None and w.shape[1] != cols):
        shown = (rows if rows is not None else "?", cols if cols is not None else "?")
        raise ValueError(f"{name}: expected shape [{shown[0]}, {shown[1]}] ({what}), got {tuple(w.shape)}")


def _channels_input(params, x: Array, hidden: int, dtype=None) -> tuple[Array, tuple]:
    """``u = x w_in`` (or ``x`` when ``w_in`` is None), checked; returns ``(u, batch)``."""
    if params.w_in is None:
        batch = _check_x(x, hidden, "the hidden size, as params.w_in is None")
        return x, batch
    _check_matrix("params.w_in", params.w_in, None, hidden, f"H = {hidden}")
    batch = _check_x(x, params.w_in.shape[0], "params.w_in")
    return matmul(x, params.w_in, dtype), batch


def _check_state(name: str, carry: Any, expected: tuple, shown: tuple, *, complex_: bool = False) -> None:
    check_array(name, carry)
    if complex_:
        if not jnp.issubdtype(carry.dtype, jnp.complexfloating):
            raise TypeError(f"{name}: expected a complex array (cell.initial_carry makes one), got dtype {carry.dtype}")
    else:
        check_float(name, carry)
    check_shape(name, carry, expected, shown=shown)


def _check_seq_args(xs: Any, lengths: Any, reverse: Any, resets: Any = None) -> Any:
    """Checks the whole-sequence forms' arguments; returns ``resets`` as an array (or None)."""
    check_float("xs", xs)
    if xs.ndim < 2 or xs.shape[0] == 0:
        raise ValueError(f"xs: expected shape [T, *batch, I] with T >= 1, got {tuple(xs.shape)}")
    if resets is not None:
        resets, _ = check_resets(resets, xs)
    if not isinstance(reverse, bool):
        raise TypeError(f"reverse: expected a bool, got {reverse!r}")
    if lengths is not None:
        check_array("lengths", lengths)
        if tuple(lengths.shape) != tuple(xs.shape[1:-1]):
            raise ValueError(
                f"lengths: expected shape [{', '.join(map(str, xs.shape[1:-1]))}] (the batch axes of xs), "
                f"got {tuple(lengths.shape)}"
            )
    return resets


def _real_dtype(dtype) -> Any:
    return jnp.finfo(dtype).dtype  # complex64 -> float32



def _param_dtype(param_dtype: Any, carry_dtype: Any = jnp.float32) -> Any:
    """Check the factory's ``param_dtype`` (how params are stored) and ``carry_dtype``."""
    check_dtype("param_dtype", param_dtype)
    check_dtype("carry_dtype", carry_dtype)
    return jnp.dtype(param_dtype)


# ----------------------------------------------------------------------- the diagonal scan



def _diag_parallel(coeffs, output, carry: Array, xs: Array, lengths, reverse: bool, resets=None):
    """Whole-sequence evaluation of ``h_t = a_t ⊙ h_{t-1} + b_t``, ``y_t = output(h_t, aux_t)``.

    ``coeffs(xs) -> (a, b, aux)`` with ``a, b: [T, *batch, *state]``. Padding steps get
    ``a = 1, b = 0``, so the state is held through them exactly and ``hs[-1]`` is each
    sequence's state after its last valid step. A reset (``resets``, packed sequences) gets
    ``a = 0``: the state before it is dropped, as the step loop's reset to zeros does.
    """
    num_steps = xs.shape[0]
    if lengths is not None:
        lengths = jnp.clip(jnp.asarray(lengths), 0, num_steps)
    fresh = fresh_steps(resets, lengths, num_steps, reverse)
    if fresh is not None:
        fresh = jnp.broadcast_to(fresh.reshape(fresh.shape + (1,) * (xs.ndim - 1 - fresh.ndim)), xs.shape[:-1])
    if reverse:
        xs = flip_sequences(xs, lengths)
        fresh = None if fresh is None else flip_sequences(fresh, lengths)  # in processing order
    a, b, aux = coeffs(xs)
    dtype = jnp.result_type(a, b, carry)
    a, b = a.astype(dtype), b.astype(dtype)
    if fresh is not None:
        a = jnp.where(fresh.reshape(fresh.shape + (1,) * (a.ndim - fresh.ndim)), jnp.zeros((), dtype), a)
    if lengths is not None:
        valid = steps_mask(lengths, num_steps)
        valid = valid.reshape(valid.shape + (1,) * (a.ndim - valid.ndim))
        a = jnp.where(valid, a, jnp.ones((), dtype))
        b = jnp.where(valid, b, jnp.zeros((), dtype))
    hs = affine_scan(a, b.at[0].add(a[0] * carry.astype(dtype)))  # h_0 folded into the first step
    ys = output(hs, aux)
    if lengths is not None:
        valid = steps_mask(lengths, num_steps)
        ys = jnp.where(valid.reshape(valid.shape + (1,) * (ys.ndim - valid.ndim)), ys, jnp.zeros((), ys.dtype))
    if reverse:
        ys = flip_sequences(ys, lengths)
    return hs[-1].astype(carry.dtype), ys


# ------------------------------------------------------------------------------------- LRU


def _check_lru(params: LRUParams, h: Any, x: Any) -> tuple:
    _check_params_type(params, LRUParams)
    check_float("params.nu_log", params.nu_log)
    if params.nu_log.ndim != 1:
        raise ValueError(f"params.nu_log: expected shape [N], got {tuple(params.nu_log.shape)}")
    n = params.nu_log.shape[0]
    for name in ("theta_log", "gamma_log"):
        check_shape(f"params.{name}", getattr(params, name), (n,), shown=(n,))
    _check_matrix("params.b_re", params.b_re, None, n, f"N = {n} from params.nu_log")
    i = params.b_re.shape[0]
    check_shape("params.b_im", params.b_im, (i, n))
    _check_matrix("params.c_re", params.c_re, n, None, f"N = {n} from params.nu_log")
    hid = params.c_re.shape[1]
    check_shape("params.c_im", params.c_im, (n, hid))
    check_shape("params.d", params.d, (i, hid))
    batch = _check_x(x, i, "params.b_re")
    _check_state("carry", h, batch + (n,), (*batch, n), complex_=True)
    return batch


def _lru_lambda(params: LRUParams) -> Array:
    """``λ = exp(-exp(ν) + i exp(θ))``, ``[N]`` complex."""
    f = jnp.promote_types(params.nu_log.dtype, jnp.float32)  # complex numbers need >= 32 bits
    return jnp.exp(jax.lax.complex(-jnp.exp(params.nu_log.astype(f)), jnp.exp(params.theta_log.astype(f))))


def _lru_input(params: LRUParams, x: Array, dtype=None) -> Array:
    """``γ ⊙ (x B)``, ``[*, N]`` complex."""
    gamma = jnp.exp(params.gamma_log)
    re, im = gamma * matmul(x, params.b_re, dtype), gamma * matmul(x, params.b_im, dtype)
    f = jnp.promote_types(re.dtype, jnp.float32)
    return jax.lax.complex(re.astype(f), im.astype(f))


def _lru_output(params: LRUParams, h: Array, x: Array, dtype=None) -> Array:
    """``Re(h C) + x D`` with ``C = c_re + i c_im``."""
    return matmul(h.real, params.c_re, dtype) - matmul(h.imag, params.c_im, dtype) + matmul(x, params.d, dtype)


def lru_step(params: LRUParams, h: Array, x: Array, *, dtype=None):
    """Linear Recurrent Unit step: a diagonal complex linear recurrence and a real readout.

    ::

        λ = exp(-exp(ν) + i·exp(θ))          (|λ| = exp(-exp(ν)) < 1: stable for any ν, θ)
        h' = λ ⊙ h + exp(γ_log) ⊙ (x B)       B = b_re + i·b_im ∈ C^{I×N}
        y  = Re(h' C) + x D                   C = c_re + i·c_im ∈ C^{N×H}

    The state ``h`` is complex (``complex64`` for float32 params); ``y`` is real.

    Args:
      params: ``LRUParams(nu_log [N], theta_log [N], gamma_log [N], b_re [I, N], b_im [I, N],
        c_re [N, H], c_im [N, H], d [I, H])``.
      h: ``[*batch, N]`` complex.
      x: ``[*batch, I]``.

    References: Orvieto et al. 2023, "Resurrecting recurrent neural networks for long sequences".

    >>> cell = lru(input_size=3, hidden_size=5, state_size=4)
    >>> h, y = lru_step(cell.init(jax.random.key(0)), cell.initial_carry((2,)), jnp.ones((2, 3)))
    >>> h.shape, h.dtype, y.shape
    ((2, 4), dtype('complex64'), (2, 5))
    """
    _check_lru(params, h, x)
    h_new = (_lru_lambda(params) * h + _lru_input(params, x, dtype)).astype(h.dtype)
    return h_new, _lru_output(params, h_new, x, dtype).astype(_real_dtype(h.dtype))


def lru_parallel(params: LRUParams, carry: Array, xs: Array, lengths: Array | None = None, reverse: bool = False,
                 *, resets: Array | None = None, dtype=None):
    """``lru_step`` over a whole sequence as one complex associative scan (depth O(log T)).

    Same arguments and results as ``rnnjax.scan(lru_step, params, carry, xs, lengths=lengths,
    reverse=reverse, resets=resets)``: ``xs: [T, *batch, I]`` time-major, ``lengths: [*batch]`` or None,
    returns ``(carry [*batch, N], ys [T, *batch, H])``. ``|λ| < 1``, so products of ``λ`` only
    shrink and the scan is as accurate as the loop.

    >>> cell = lru(3, 5, state_size=4)
    >>> params, h0, xs = cell.init(jax.random.key(0)), cell.initial_carry((2,)), jnp.ones((6, 2, 3))
    >>> _, ys = lru_parallel(params, h0, xs, jnp.array([6, 2]))
    >>> bool(jnp.allclose(ys, scan(lru_step, params, h0, xs, lengths=jnp.array([6, 2]))[1], atol=1e-5))
    True
    """
    resets = _check_seq_args(xs, lengths, reverse, resets)
    _check_lru(params, carry, xs[0])
    return _lru_parallel(params, carry, xs, lengths, reverse, resets, dtype)


# The whole-sequence forms are compiled as one computation even when called eagerly (op by op,
# the associative scan's O(log T) levels each dispatch several small computations); under an
# outer jit they are inlined.
@partial(jax.jit, static_argnums=(4, 6))
def _lru_parallel(params, carry, xs, lengths, reverse, resets, dtype):
    lam = _lru_lambda(params)

    def coeffs(xs):
        b = _lru_input(params, xs, dtype)
        return jnp.broadcast_to(lam, b.shape), b, xs

    def output(hs, xs):
        return _lru_output(params, hs.astype(carry.dtype), xs, dtype).astype(_real_dtype(carry.dtype))

    return _diag_parallel(coeffs, output, carry, xs, lengths, reverse, resets)


def lru(
    input_size: int,
    hidden_size: int,
    *,
    state_size: int | None = None,
    r_min: float = 0.0,
    r_max: float = 1.0,
    max_phase: float = 2 * math.pi,
    param_dtype=jnp.float32,
    dtype=None,
) -> Cell:
    """Linear Recurrent Unit (LRU) cell; see ``lru_step``.

    Initialised as in the paper: the eigenvalues ``λ`` are drawn uniformly on the ring
    ``r_min <= |λ| <= r_max`` (uniform in area: ``|λ|² ~ U(r_min², r_max²)``) with phases
    ``arg λ ~ U(0, max_phase)``, stored through the exponential parameterisation
    ``ν = log(-log|λ|)``, ``θ = log(arg λ)``; ``γ = sqrt(1 - |λ|²)`` (the normalisation that
    keeps the state's variance that of the input at initialisation, trainable as ``gamma_log``);
    ``B`` real and imaginary parts ``N(0, 1/(2I))``, ``C`` parts ``N(0, 1/N)``. The paper's
    skip ``D`` is a diagonal ``N(0, 1)`` for ``I = H``; here ``D [I, H]`` is a full matrix with
    entries ``N(0, 1/I)``, the same output variance for any ``I``.

    Args:
      input_size: ``I``.
      hidden_size: ``H``, the size of the output ``y``.
      state_size: ``N``, the number of complex state dimensions (default ``H``).
      r_min, r_max: ring of the initial ``|λ|``, ``0 <= r_min < r_max <= 1`` (the paper's
        defaults 0 and 1; its long-range tasks use e.g. ``r_min = 0.9, r_max = 0.999``).
      max_phase: initial phases are in ``[0, max_phase]`` (default ``2π``).
      param_dtype: how the (real) params are stored; the carry is complex64 (complex128 for
        float64 params).
      dtype: the dtype of the products with weights (None: their operands as they are); with
        ``jnp.bfloat16`` each is ``bf16 x bf16`` accumulated in float32, backward too (see
        ``rnnjax.cells.matmul``), while the recurrence (the complex ``λ ⊙ h``) stays in float32.

    >>> cell = lru(8, 16, state_size=32, r_min=0.9, r_max=0.999)
    >>> lam = jnp.exp(-jnp.exp(cell.init(jax.random.key(0)).nu_log))  # |λ|
    >>> bool((lam >= 0.9).all() and (lam <= 0.999).all())
    True
    """
    step = precision_step(lru_step, param_dtype, dtype, jnp.float32)
    dtype = _param_dtype(param_dtype)
    check_sizes(input_size=input_size, hidden_size=hidden_size)
    n = hidden_size if state_size is None else state_size
    check_sizes(state_size=n)
    for name, v in (("r_min", r_min), ("r_max", r_max), ("max_phase", max_phase)):
        if isinstance(v, bool) or not isinstance(v, (int, float, np.floating)):
            raise TypeError(f"{name}: expected a float, got {v!r}")
    if not 0.0 <= r_min < r_max <= 1.0:
        raise ValueError(f"r_min, r_max: expected 0 <= r_min < r_max <= 1, got r_min={r_min!r}, r_max={r_max!r}")
    if not max_phase > 0.0:
        raise ValueError(f"max_phase: expected a positive float, got {max_phase!r}")
    carry_dtype = jnp.result_type(dtype, jnp.complex64)

    def init(key) -> LRUParams:
        k_r, k_p, k_b1, k_b2, k_c1, k_c2, k_d = jax.random.split(key, 7)
        f32 = jnp.promote_types(dtype, jnp.float32)
        u1 = jax.random.uniform(k_r, (n,), f32)
        u2 = jax.random.uniform(k_p, (n,), f32)
        # |λ|² uniform in [r_min², r_max²]; log|λ| = ½ log(...) < 0, ν = log(-log|λ|).
        log_r = 0.5 * jnp.log(jnp.maximum(u1 * (r_max**2 - r_min**2) + r_min**2, jnp.finfo(f32).tiny))
        log_r = jnp.minimum(log_r, -jnp.finfo(f32).tiny)  # |λ| = 1 exactly has no ν
        nu_log = jnp.log(-log_r)
        theta_log = jnp.log(jnp.maximum(max_phase * u2, jnp.finfo(f32).tiny))
        gamma_log = 0.5 * jnp.log(-jnp.expm1(2.0 * log_r))  # log sqrt(1 - |λ|²)
        params = LRUParams(
            nu_log=nu_log,
            theta_log=theta_log,
            gamma_log=gamma_log,
            b_re=jax.random.normal(k_b1, (input_size, n), f32) / math.sqrt(2 * input_size),
            b_im=jax.random.normal(k_b2, (input_size, n), f32) / math.sqrt(2 * input_size),
            c_re=jax.random.normal(k_c1, (n, hidden_size), f32) / math.sqrt(n),
            c_im=jax.random.normal(k_c2, (n, hidden_size), f32) / math.sqrt(n),
            d=jax.random.normal(k_d, (input_size, hidden_size), f32) / math.sqrt(input_size),
        )
        return jax.tree_util.tree_map(lambda a: a.astype(dtype), params)

    def initial_carry(batch_shape=()):
        return jnp.zeros(check_batch_shape(batch_shape) + (n,), carry_dtype)

    return Cell(init, initial_carry, step)


# ---------------------------------------------------------------------------------- RG-LRU

_RG_LRU_C = 8.0  # the paper's fixed constant c in a_t = a^(c r_t)


def _check_rg_lru(params: RGLRUParams, h: Any, x: Any, dtype=None) -> tuple[Array, tuple]:
    _check_params_type(params, RGLRUParams)
    check_float("params.lam", params.lam)
    if params.lam.ndim != 1:
        raise ValueError(f"params.lam: expected shape [H], got {tuple(params.lam.shape)}")
    hid = params.lam.shape[0]
    for name in ("w_a", "w_x"):
        _check_matrix(f"params.{name}", getattr(params, name), hid, hid, f"H = {hid} from params.lam")
    for name in ("b_a", "b_x"):
        check_shape(f"params.{name}", getattr(params, name), (hid,))
    u, batch = _channels_input(params, x, hid, dtype)
    _check_state("carry", h, batch + (hid,), (*batch, hid))
    return u, batch


def _rg_lru_coeffs(params: RGLRUParams, u: Array, dtype=None):
    """``(a_t, b_t)`` of ``h_t = a_t ⊙ h_{t-1} + b_t``."""
    r = jax.nn.sigmoid(matmul(u, params.w_a, dtype) + params.b_a)  # recurrence gate
    i = jax.nn.sigmoid(matmul(u, params.w_x, dtype) + params.b_x)  # input gate
    log_a = -_RG_LRU_C * r * jax.nn.softplus(-params.lam)  # c r log σ(Λ)
    a = jnp.exp(log_a)
    return a, jnp.sqrt(-jnp.expm1(2.0 * log_a)) * (i * u)  # sqrt(1 - a²) (i ⊙ u)


def rg_lru_step(params: RGLRUParams, h: Array, x: Array, *, dtype=None):
    """Real-Gated Linear Recurrent Unit (Hawk/Griffin) step.

    ::

        u = x w_in  (or x when w_in is None)
        r = σ(u W_a + b_a)                  recurrence gate
        i = σ(u W_x + b_x)                  input gate
        a = σ(Λ)^(c r),  c = 8              computed as log a = -c r softplus(-Λ)
        h' = a ⊙ h + sqrt(1 - a²) ⊙ (i ⊙ u),   y = h'

    Args:
      params: ``RGLRUParams(w_in [I, H] or None, w_a [H, H], b_a [H], w_x [H, H], b_x [H],
        lam [H])``.
      h: ``[*batch, H]``.
      x: ``[*batch, I]``.

    References: De et al. 2024, "Griffin: mixing gated linear recurrences with local attention
    for efficient language models".

    >>> cell = rg_lru(input_size=5, hidden_size=5)
    >>> h, y = rg_lru_step(cell.init(jax.random.key(0)), cell.initial_carry((2,)), jnp.ones((2, 5)))
    >>> y.shape
    (2, 5)
    """
    u, _ = _check_rg_lru(params, h, x, dtype)
    a, b = _rg_lru_coeffs(params, u, dtype)
    h_new = (a * h + b).astype(h.dtype)
    return h_new, h_new


def rg_lru_parallel(params: RGLRUParams, carry: Array, xs: Array, lengths: Array | None = None,
                    reverse: bool = False, *, resets: Array | None = None, dtype=None):
    """``rg_lru_step`` over a whole sequence as one associative scan (depth O(log T)).

    Same arguments and results as ``rnnjax.scan(rg_lru_step, params, carry, xs,
    lengths=lengths, reverse=reverse, resets=resets)``: returns ``(carry [*batch, H], ys [T, *batch, H])``.

    >>> cell = rg_lru(3, 4)
    >>> params, h0, xs = cell.init(jax.random.key(0)), cell.initial_carry((2,)), jnp.ones((6, 2, 3))
    >>> _, ys = rg_lru_parallel(params, h0, xs, jnp.array([6, 2]), reverse=True)
    >>> bool(jnp.allclose(ys, scan(rg_lru_step, params, h0, xs, lengths=jnp.array([6, 2]), reverse=True)[1], atol=1e-5))
    True
    """
    resets = _check_seq_args(xs, lengths, reverse, resets)
    _check_rg_lru(params, carry, xs[0])
    return _rg_lru_parallel(params, carry, xs, lengths, reverse, resets, dtype)


@partial(jax.jit, static_argnums=(4, 6))
def _rg_lru_parallel(params, carry, xs, lengths, reverse, resets, dtype):
    def coeffs(xs):
        u, _ = _channels_input(params, xs, params.lam.shape[0], dtype)
        a, b = _rg_lru_coeffs(params, u, dtype)
        return a, b, None

    return _diag_parallel(coeffs, lambda hs, _: hs.astype(carry.dtype), carry, xs, lengths, reverse, resets)


def _lecun_normal(key, shape, fan_in, dtype):
    return (jax.random.normal(key, shape, jnp.promote_types(dtype, jnp.float32)) / math.sqrt(fan_in)).astype(dtype)


def _glorot(key, shape, dtype):
    return jax.nn.initializers.glorot_uniform()(key, shape, jnp.promote_types(dtype, jnp.float32)).astype(dtype)


def _projection_flag(input_projection, input_size: int, hidden_size: int) -> bool:
    if input_projection is None:
        return input_size != hidden_size
    if not isinstance(input_projection, bool):
        raise TypeError(f"input_projection: expected a bool or None, got {input_projection!r}")
    if not input_projection and input_size != hidden_size:
        raise ValueError(
            f"input_projection: False needs input_size == hidden_size (the layer's input has H "
            f"channels), got input_size={input_size}, hidden_size={hidden_size}"
        )
    return input_projection


def rg_lru(
    input_size: int,
    hidden_size: int,
    *,
    a_min: float = 0.9,
    a_max: float = 0.999,
    input_projection: bool | None = None,
    param_dtype=jnp.float32,
    carry_dtype=jnp.float32,
    dtype=None,
) -> Cell:
    """RG-LRU cell (the recurrence of Hawk and Griffin); see ``rg_lru_step``.

    Initialised as in the paper: ``Λ`` such that ``a^c = σ(Λ)^8`` is uniform in
    ``[a_min, a_max] = [0.9, 0.999]``; gate weights LeCun-normal (``N(0, 1/H)``), gate biases
    zero. Griffin's gate matrices are block-diagonal over heads; here they are dense. ``w_in``
    (when there is one, see the module docstring) is Glorot-uniform.

    Args:
      input_size: ``I``.
      hidden_size: ``H`` (the width of the recurrence and the size of ``y``).
      a_min, a_max: range of the initial ``a^c``, ``0 < a_min < a_max < 1``.
      input_projection: add ``w_in [I, H]``; default: only when ``I != H``.
      param_dtype, carry_dtype: how the params and the state are stored (float32 by default).
      dtype: the dtype of the products with weights (None: their operands as they are); with
        ``jnp.bfloat16`` each is ``bf16 x bf16`` accumulated in float32, backward too (see
        ``rnnjax.cells.matmul``), while the recurrence (decays, gates, state) stays in float32.

    >>> cell = rg_lru(8, 8)
    >>> lam = cell.init(jax.random.key(0)).lam
    >>> bool((jax.nn.sigmoid(lam) ** 8 >= 0.9 - 1e-6).all())
    True
    """
    step = precision_step(rg_lru_step, param_dtype, dtype, carry_dtype)
    dtype = _param_dtype(param_dtype, carry_dtype)
    check_sizes(input_size=input_size, hidden_size=hidden_size)
    for name, v in (("a_min", a_min), ("a_max", a_max)):
        if isinstance(v, bool) or not isinstance(v, (int, float, np.floating)):
            raise TypeError(f"{name}: expected a float, got {v!r}")
    if not 0.0 < a_min < a_max < 1.0:
        raise ValueError(f"a_min, a_max: expected 0 < a_min < a_max < 1, got a_min={a_min!r}, a_max={a_max!r}")
    project = _projection_flag(input_projection, input_size, hidden_size)

    def init(key) -> RGLRUParams:
        k_in, k_a, k_x, k_l = jax.random.split(key, 4)
        f32 = jnp.promote_types(dtype, jnp.float32)
        ac = jax.random.uniform(k_l, (hidden_size,), f32, a_min, a_max)  # a^c
        a = ac ** (1.0 / _RG_LRU_C)
        return RGLRUParams(
            w_in=_glorot(k_in, (input_size, hidden_size), dtype) if project else None,
            w_a=_lecun_normal(k_a, (hidden_size, hidden_size), hidden_size, dtype),
            b_a=jnp.zeros(hidden_size, dtype),
            w_x=_lecun_normal(k_x, (hidden_size, hidden_size), hidden_size, dtype),
            b_x=jnp.zeros(hidden_size, dtype),
            lam=(jnp.log(a) - jnp.log1p(-a)).astype(dtype),  # logit
        )

    def initial_carry(batch_shape=()):
        return jnp.zeros(check_batch_shape(batch_shape) + (hidden_size,), carry_dtype)

    return Cell(init, initial_carry, step)


# ------------------------------------------------------------------------ selective SSM (S6)


def _check_ssm(params: SelectiveSSMParams, h: Any, x: Any, dtype=None) -> tuple[Array, tuple]:
    _check_params_type(params, SelectiveSSMParams)
    check_float("params.a_log", params.a_log)
    if params.a_log.ndim != 2:
        raise ValueError(f"params.a_log: expected shape [H, N], got {tuple(params.a_log.shape)}")
    hid, n = params.a_log.shape
    _check_matrix("params.w_delta", params.w_delta, hid, None, f"H = {hid} from params.a_log")
    rank = params.w_delta.shape[1]
    check_shape("params.w_dt", params.w_dt, (rank, hid))
    check_shape("params.b_dt", params.b_dt, (hid,))
    check_shape("params.w_b", params.w_b, (hid, n))
    check_shape("params.w_c", params.w_c, (hid, n))
    check_shape("params.d", params.d, (hid,))
    u, batch = _channels_input(params, x, hid, dtype)
    _check_state("carry", h, batch + (hid, n), (*batch, hid, n))
    return u, batch


def _ssm_terms(params: SelectiveSSMParams, u: Array, dtype=None):
    """Discretised ``(Ā, B̄ u, C)`` of one or many steps: ``[*, H, N]``, ``[*, H, N]``, ``[*, N]``."""
    delta = jax.nn.softplus(matmul(matmul(u, params.w_delta, dtype), params.w_dt, dtype) + params.b_dt)  # [*, H]
    b = matmul(u, params.w_b, dtype)  # [*, N]
    c = matmul(u, params.w_c, dtype)  # [*, N]
    a = -jnp.exp(params.a_log)  # [H, N]
    da = delta[..., None] * a  # [*, H, N]
    # zero-order hold: Ā = exp(ΔA), B̄ = (ΔA)⁻¹(exp(ΔA) - 1) ΔB = expm1(ΔA)/A · B (A diagonal)
    bu = (jnp.expm1(da) / a) * b[..., None, :] * u[..., None]
    return jnp.exp(da), bu, c


def _ssm_output(params: SelectiveSSMParams, h: Array, c: Array, u: Array) -> Array:
    return jnp.einsum("...hn,...n->...h", h, c) + params.d * u


def selective_ssm_step(params: SelectiveSSMParams, h: Array, x: Array, *, dtype=None):
    """Selective state-space step (S6, the recurrence of Mamba), H channels of N states each.

    ::

        u = x w_in  (or x when w_in is None)                   [H]
        Δ = softplus(u W_Δ W_dt + b_dt)   B = u W_B   C = u W_C   [H], [N], [N]
        A = -exp(a_log)                                         [H, N]
        Ā = exp(Δ A)    B̄ = (ΔA)⁻¹ (exp(ΔA) - 1) Δ B = expm1(Δ A) / A · B   (zero-order hold)
        h' = Ā ⊙ h + B̄ ⊙ u          (h, h' [H, N]; u broadcast over N)
        y  = h' C + d ⊙ u            [H]

    Δ, B and C depend on the input: the selection mechanism. Mamba's reference kernel uses the
    first-order ``B̄ ≈ Δ B``; this step discretises ``B`` exactly, as the paper's equations do.

    Args:
      params: ``SelectiveSSMParams(w_in [I, H] or None, w_delta [H, R], w_dt [R, H],
        b_dt [H], w_b [H, N], w_c [H, N], a_log [H, N], d [H])``.
      h: ``[*batch, H, N]``.
      x: ``[*batch, I]``.

    References: Gu & Dao 2023, "Mamba: linear-time sequence modeling with selective state
    spaces".

    >>> cell = selective_ssm(input_size=4, hidden_size=4, state_size=3)
    >>> h, y = selective_ssm_step(cell.init(jax.random.key(0)), cell.initial_carry((2,)), jnp.ones((2, 4)))
    >>> h.shape, y.shape
    ((2, 4, 3), (2, 4))
    """
    u, _ = _check_ssm(params, h, x, dtype)
    a_bar, bu, c = _ssm_terms(params, u, dtype)
    h_new = (a_bar * h + bu).astype(h.dtype)
    return h_new, _ssm_output(params, h_new, c, u).astype(h.dtype)


def selective_ssm_parallel(params: SelectiveSSMParams, carry: Array, xs: Array, lengths: Array | None = None,
                           reverse: bool = False, *, resets: Array | None = None, dtype=None):
    """``selective_ssm_step`` over a whole sequence as one associative scan (depth O(log T)).

    Same arguments and results as ``rnnjax.scan(selective_ssm_step, params, carry, xs,
    lengths=lengths, reverse=reverse, resets=resets)``: returns ``(carry [*batch, H, N], ys [T, *batch, H])``.
    Memory is O(T · batch · H · N) (the states of all steps), as in Mamba's parallel scan
    before its kernel fusion.

    >>> cell = selective_ssm(3, 3, state_size=2)
    >>> params, h0, xs = cell.init(jax.random.key(0)), cell.initial_carry((2,)), jnp.ones((6, 2, 3))
    >>> _, ys = selective_ssm_parallel(params, h0, xs, jnp.array([6, 2]))
    >>> bool(jnp.allclose(ys, scan(selective_ssm_step, params, h0, xs, lengths=jnp.array([6, 2]))[1], atol=1e-5))
    True
    """
    resets = _check_seq_args(xs, lengths, reverse, resets)
    _check_ssm(params, carry, xs[0])
    return _selective_ssm_parallel(params, carry, xs, lengths, reverse, resets, dtype)


@partial(jax.jit, static_argnums=(4, 6))
def _selective_ssm_parallel(params, carry, xs, lengths, reverse, resets, dtype):
    def coeffs(xs):
        u, _ = _channels_input(params, xs, params.a_log.shape[0], dtype)
        a_bar, bu, c = _ssm_terms(params, u, dtype)
        return a_bar, bu, (c, u)

    def output(hs, aux):
        c, u = aux
        return _ssm_output(params, hs.astype(carry.dtype), c, u).astype(carry.dtype)

    return _diag_parallel(coeffs, output, carry, xs, lengths, reverse, resets)


def selective_ssm(
    input_size: int,
    hidden_size: int,
    *,
    state_size: int = 16,
    dt_rank: int | None = None,
    dt_min: float = 0.001,
    dt_max: float = 0.1,
    dt_init_floor: float = 1e-4,
    input_projection: bool | None = None,
    param_dtype=jnp.float32,
    carry_dtype=jnp.float32,
    dtype=None,
) -> Cell:
    """Selective SSM (S6) cell; see ``selective_ssm_step``.

    Initialised as in Mamba: S4D-real ``A = -(1, 2, ..., N)`` for every channel (stored as
    ``a_log = log(1..N)``); ``Δ``'s bias ``b_dt = softplus⁻¹(Δ₀)`` with
    ``Δ₀ = max(exp(U(log dt_min, log dt_max)), dt_init_floor)``, so the initial step sizes lie
    in ``[dt_min, dt_max]``; ``w_dt ~ U(±R^-½)``; ``w_delta``, ``w_b``, ``w_c`` (Mamba's
    ``x_proj``) ``U(±H^-½)``; skip ``d = 1``.

    Args:
      input_size: ``I``.
      hidden_size: ``H``, the number of channels (the size of ``y``); Mamba's ``D``, which is
        ``expand · d_model`` inside its block.
      state_size: ``N`` states per channel (the paper's default 16).
      dt_rank: rank ``R`` of Δ's projection; default ``ceil(H / 16)`` (Mamba uses
        ``ceil(d_model / 16)`` with ``d_model = H / expand``).
      dt_min, dt_max, dt_init_floor: range of the initial ``Δ`` (Mamba's defaults).
      input_projection: add ``w_in [I, H]``; default: only when ``I != H``.
      param_dtype, carry_dtype: how the params and the state are stored (float32 by default).
      dtype: the dtype of the products with weights (None: their operands as they are); with
        ``jnp.bfloat16`` each is ``bf16 x bf16`` accumulated in float32, backward too (see
        ``rnnjax.cells.matmul``), while the recurrence (``Δ``'s softplus, the discretisation, the state and its readout ``h C``) stays in float32.

    >>> cell = selective_ssm(4, 8, state_size=16)
    >>> -jnp.exp(cell.init(jax.random.key(0)).a_log)[0, :4]
    Array([-1., -2., -3., -4.], dtype=float32)
    """
    step = precision_step(selective_ssm_step, param_dtype, dtype, carry_dtype)
    dtype = _param_dtype(param_dtype, carry_dtype)
    check_sizes(input_size=input_size, hidden_size=hidden_size, state_size=state_size)
    rank = math.ceil(hidden_size / 16) if dt_rank is None else dt_rank
    check_sizes(dt_rank=rank)
    for name, v in (("dt_min", dt_min), ("dt_max", dt_max), ("dt_init_floor", dt_init_floor)):
        if isinstance(v, bool) or not isinstance(v, (int, float, np.floating)) or not v > 0:
            raise ValueError(f"{name}: expected a positive float, got {v!r}")
    if not dt_min <= dt_max:
        raise ValueError(f"dt_min, dt_max: expected dt_min <= dt_max, got dt_min={dt_min!r}, dt_max={dt_max!r}")
    project = _projection_flag(input_projection, input_size, hidden_size)
    n, hid = state_size, hidden_size

    def init(key) -> SelectiveSSMParams:
        k_in, k_d, k_dt, k_b, k_c, k_bias = jax.random.split(key, 6)
        f32 = jnp.promote_types(dtype, jnp.float32)

        def uniform(k, shape, bound):
            return jax.random.uniform(k, shape, f32, -bound, bound).astype(dtype)

        dt = jnp.exp(jax.random.uniform(k_bias, (hid,), f32, math.log(dt_min), math.log(dt_max)))
        dt = jnp.maximum(dt, dt_init_floor)
        return SelectiveSSMParams(
            w_in=_glorot(k_in, (input_size, hid), dtype) if project else None,
            w_delta=uniform(k_d, (hid, rank), hid**-0.5),
            w_dt=uniform(k_dt, (rank, hid), rank**-0.5),
            b_dt=(dt + jnp.log(-jnp.expm1(-dt))).astype(dtype),  # softplus⁻¹
            w_b=uniform(k_b, (hid, n), hid**-0.5),
            w_c=uniform(k_c, (hid, n), hid**-0.5),
            a_log=jnp.log(jnp.broadcast_to(jnp.arange(1, n + 1, dtype=f32), (hid, n))).astype(dtype),
            d=jnp.ones(hid, dtype),
        )

    def initial_carry(batch_shape=()):
        return jnp.zeros(check_batch_shape(batch_shape) + (hid, n), carry_dtype)

    return Cell(init, initial_carry, step)


PARALLEL = {lru_step: lru_parallel, rg_lru_step: rg_lru_parallel, selective_ssm_step: selective_ssm_parallel}
