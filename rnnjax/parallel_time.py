"""Recurrences evaluated in parallel over time: depth O(log T) instead of T.

Two tools:

* **minGRU and minLSTM** (Feng et al. 2024): gates that read only ``x_t``, so the update is
  affine in ``h``, ``h_t = a_t ⊙ h_{t-1} + b_t``. Each is an ordinary cell
  (``rnnjax.min_gru``/``min_lstm`` with ``min_gru_step``/``min_lstm_step``, usable with
  ``rnnjax.scan`` and everything built on steps), and ``rnnjax.min_rnn_parallel`` evaluates the
  same recurrence over a whole sequence with one associative scan (in linear or log space).
* **DEER / quasi-DEER** (Lim et al. 2023; Gonzalez et al. 2024): ``rnnjax.deer_scan`` runs any
  step — a built-in nonlinear cell or your own — by Newton iterations over the whole sequence,
  each a parallel linear solve, with gradients from the implicit function theorem.

Both return what ``rnnjax.scan`` returns for the same step, with the same ``lengths`` and
``reverse`` semantics. Whether they are faster depends on the hardware: see the benchmark
section "Parallel-in-time evaluation" in ``BENCHMARKS.md``.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np

from rnnjax._checks import check_float, check_lengths, check_shape, shape_str, steps_mask
from rnnjax._parallel_deer import (
    DeerInfo,
    FlatCarry,
    Problem,
    builtin_diag_table,
    diag_jacobian_fn,
    fixed_point,
    shift_states,
)
from rnnjax._parallel_scan import affine_scan, log_affine_scan
from rnnjax.cells import Cell, Initializer, glorot_uniform, zeros
from rnnjax.scan import _check_builtin_xs, _check_step_output, _check_xs, flip_sequences

Array = jax.Array


class MinGRUParams(NamedTuple):
    w_ih: Array  # [I, 2H], gates z, h̃
    b: Array  # [2H]


class MinLSTMParams(NamedTuple):
    w_ih: Array  # [I, 3H], gates f, i, h̃
    b: Array  # [3H]


# ------------------------------------------------------------------------ gates and steps


def _g(v: Array) -> Array:
    """``g(v) = v + 1/2`` for ``v >= 0``, ``σ(v)`` otherwise: positive, continuous, linear growth."""
    return jnp.where(v >= 0, v + 0.5, jax.nn.sigmoid(v))


def _log_g(v: Array) -> Array:
    return jnp.where(v >= 0, jnp.log(jax.nn.relu(v) + 0.5), -jax.nn.softplus(-v))


def _min_gru_logits(params: MinGRUParams, x: Array):
    k = x @ params.w_ih + params.b  # [*, 2H]
    return jnp.split(k, 2, axis=-1)  # k_z, k_h


def _min_lstm_logits(params: MinLSTMParams, x: Array):
    kf, ki, kh = jnp.split(x @ params.w_ih + params.b, 3, axis=-1)  # [*, H] each
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


def min_gru_step(params: MinGRUParams, h: Array, x: Array):
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

    References: Feng et al. 2024, "Were RNNs all we needed?".

    >>> cell = min_gru(input_size=3, hidden_size=5)
    >>> h, y = min_gru_step(cell.init(jax.random.key(0)), cell.initial_carry((2,)), jnp.ones((2, 3)))
    >>> y.shape
    (2, 5)
    """
    _check_min_args(params, h, x, 2)
    kz, kh = _min_gru_logits(params, x)
    h_new = (jax.nn.sigmoid(-kz) * h + jax.nn.sigmoid(kz) * _g(kh)).astype(h.dtype)
    return h_new, h_new


def min_lstm_step(params: MinLSTMParams, h: Array, x: Array):
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

    References: Feng et al. 2024, "Were RNNs all we needed?".

    >>> cell = min_lstm(input_size=3, hidden_size=5)
    >>> h, y = min_lstm_step(cell.init(jax.random.key(0)), cell.initial_carry(), jnp.ones(3))
    >>> y.shape
    (5,)
    """
    _check_min_args(params, h, x, 3)
    d, kh = _min_lstm_logits(params, x)
    h_new = (jax.nn.sigmoid(-d) * h + jax.nn.sigmoid(d) * _g(kh)).astype(h.dtype)
    return h_new, h_new


def _min_gru_coeffs(params, x, log_space: bool):
    """``(a, b)`` of ``h' = a ⊙ h + b``, or ``(log a, log b)``: ``a = 1 - z``, ``b = z h̃``."""
    kz, kh = _min_gru_logits(params, x)
    if log_space:
        return -jax.nn.softplus(kz), -jax.nn.softplus(-kz) + _log_g(kh)
    return jax.nn.sigmoid(-kz), jax.nn.sigmoid(kz) * _g(kh)


def _min_lstm_coeffs(params, x, log_space: bool):
    """``(a, b)`` of ``h' = a ⊙ h + b``, or ``(log a, log b)``: ``a = f'``, ``b = i' h̃``."""
    d, kh = _min_lstm_logits(params, x)
    if log_space:
        return -jax.nn.softplus(d), -jax.nn.softplus(-d) + _log_g(kh)
    return jax.nn.sigmoid(-d), jax.nn.sigmoid(d) * _g(kh)


def _min_gru_diag(params, h, x):
    return jax.nn.sigmoid(-_min_gru_logits(params, x)[0]).astype(h.dtype)


def _min_lstm_diag(params, h, x):
    return jax.nn.sigmoid(-_min_lstm_logits(params, x)[0]).astype(h.dtype)


# step -> (number of gate blocks, coefficient function)
_MIN_STEPS = {min_gru_step: (2, _min_gru_coeffs), min_lstm_step: (3, _min_lstm_coeffs)}
_DIAG_TABLE = {**builtin_diag_table(), min_gru_step: _min_gru_diag, min_lstm_step: _min_lstm_diag}


# ----------------------------------------------------------------------------- factories


def _check_sizes(input_size: Any, hidden_size: Any) -> None:
    for name, v in (("input_size", input_size), ("hidden_size", hidden_size)):
        if isinstance(v, bool) or not isinstance(v, (int, np.integer)) or v < 1:
            raise ValueError(f"{name}: expected a positive int, got {v!r}")


def _gate_blocks(init: Initializer, key, shape: tuple, num_gates: int, dtype) -> Array:
    """``num_gates`` independently drawn ``shape`` blocks side by side on the last axis.

    Drawn in at least float32 and cast, so 16-bit params get the same distribution.
    """
    draw_dtype = jnp.promote_types(dtype, jnp.float32)
    keys = jax.random.split(key, num_gates)
    return jnp.concatenate([init(k, shape, draw_dtype).astype(dtype) for k in keys], axis=-1)


def _zeros_carry(hidden_size: int, carry_dtype) -> Callable:
    def initial_carry(batch_shape=()):
        if isinstance(batch_shape, (int, np.integer)) and not isinstance(batch_shape, bool):
            batch_shape = (batch_shape,)
        if not isinstance(batch_shape, (tuple, list)) or not all(
            isinstance(d, (int, np.integer)) and not isinstance(d, bool) and d >= 0 for d in batch_shape
        ):
            raise TypeError(f"batch_shape: expected a tuple of ints such as (4,), got {batch_shape!r}")
        return jnp.zeros(tuple(int(d) for d in batch_shape) + (hidden_size,), carry_dtype)

    return initial_carry


def min_gru(
    input_size: int,
    hidden_size: int,
    *,
    w_ih_init: Initializer = glorot_uniform,
    b_init: Initializer = zeros,
    dtype=jnp.float32,
    carry_dtype=jnp.float32,
) -> Cell:
    """minGRU cell (gates z, h̃ from the input only); see ``min_gru_step``.

    Input weights Glorot-uniform per gate block, biases ``b_init`` (zeros). Run it with
    ``rnnjax.scan`` step by step or with ``rnnjax.min_rnn_parallel`` over a whole sequence.

    >>> cell = min_gru(input_size=8, hidden_size=16)
    >>> cell.init(jax.random.key(0)).w_ih.shape
    (8, 32)
    """
    _check_sizes(input_size, hidden_size)

    def init(key) -> MinGRUParams:
        k1, k2 = jax.random.split(key)
        return MinGRUParams(
            w_ih=_gate_blocks(w_ih_init, k1, (input_size, hidden_size), 2, dtype),
            b=_gate_blocks(b_init, k2, (hidden_size,), 2, dtype),
        )

    return Cell(init, _zeros_carry(hidden_size, carry_dtype), min_gru_step)


def min_lstm(
    input_size: int,
    hidden_size: int,
    *,
    forget_bias: float = 1.0,
    w_ih_init: Initializer = glorot_uniform,
    b_init: Initializer = zeros,
    dtype=jnp.float32,
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
    _check_sizes(input_size, hidden_size)

    def init(key) -> MinLSTMParams:
        k1, k2 = jax.random.split(key)
        b = _gate_blocks(b_init, k2, (hidden_size,), 3, dtype)
        if forget_bias:
            b = b.at[:hidden_size].add(jnp.asarray(forget_bias, dtype))
        return MinLSTMParams(
            w_ih=_gate_blocks(w_ih_init, k1, (input_size, hidden_size), 3, dtype), b=b
        )

    return Cell(init, _zeros_carry(hidden_size, carry_dtype), min_lstm_step)


# ------------------------------------------------------------------ whole-sequence functions


def _check_flags(reverse) -> None:
    if not isinstance(reverse, bool):
        raise TypeError(f"reverse: expected a bool, got {reverse!r}")


def _step_name(step) -> str:
    return getattr(step, "__name__", type(step).__name__)


def min_rnn_parallel(
    step: Callable,
    params: Any,
    carry: Array,
    xs: Array,
    *,
    lengths: Array | None = None,
    reverse: bool = False,
    log_space: bool = False,
):
    """Run ``min_gru_step`` or ``min_lstm_step`` over a whole sequence with an associative scan.

    Same arguments and results as ``rnnjax.scan(step, params, carry, xs, ...)``, computed in
    parallel over time (depth O(log T)). The update is ``h_t = a_t ⊙ h_{t-1} + b_t`` with
    ``a_t ∈ (0, 1)`` and ``b_t > 0``; prefix compositions of these affine maps,
    ``(a₂, b₂) ∘ (a₁, b₁) = (a₂ a₁, a₂ b₁ + b₂)``, come out of ``jax.lax.associative_scan``.

    Every composition multiplies and adds non-negative numbers: nothing cancels, and a product
    of many ``a`` underflows harmlessly to 0 (the terms it scales are negligible), so this
    linear-space scan is as accurate as the sequential loop for any ``T`` (tested to 1e-5 at
    T = 4096). ``log_space=True`` scans ``(log a, log b)`` pairs instead,
    ``(α₂, β₂) ∘ (α₁, β₁) = (α₁ + α₂, logaddexp(α₂ + β₁, β₂))``, as in the paper's log-space
    form (there, log space protects a cumulative-sum formulation that divides by cumulative
    products; a scan over pairs never divides); same results, several times slower on CPU
    because of the ``exp``/``log`` in every composition. In both, ``h_0`` enters linearly and
    may have any sign.

    Args:
      step: ``rnnjax.min_gru_step`` or ``rnnjax.min_lstm_step`` (for other cells see
        ``rnnjax.deer_scan``).
      params: the step's params (``MinGRUParams`` or ``MinLSTMParams``).
      carry: initial ``h: [*batch, H]``.
      xs: ``[T, *batch, I]``, time-major.
      lengths: optional ``[*batch]`` ints in ``[0, T]``: at padding ``t >= length`` the carry
        is held and ``ys`` is zero (as in ``rnnjax.scan``).
      reverse: run each sequence from its own last valid step back to step 0; ``ys`` stays in
        input order.
      log_space: scan log-coefficients (see above) instead of the coefficients.

    Returns:
      ``(carry, ys)``: the carry after each sequence's last valid step and ``ys: [T, *batch, H]``.

    The work is that of the sequential loop plus a constant factor; on one CPU core the
    sequential loop is often as fast. Memory is O(T · batch · H).

    >>> cell = min_gru(input_size=3, hidden_size=4)
    >>> params, h0, xs = cell.init(jax.random.key(0)), cell.initial_carry((2,)), jnp.ones((6, 2, 3))
    >>> h, ys = min_rnn_parallel(min_gru_step, params, h0, xs, lengths=jnp.array([6, 2]))
    >>> bool(jnp.allclose(ys, scan(min_gru_step, params, h0, xs, lengths=jnp.array([6, 2]))[1], atol=1e-6))
    True
    """
    entry = None
    try:
        entry = _MIN_STEPS.get(step)
    except TypeError:  # unhashable
        pass
    if entry is None:
        raise ValueError(
            f"step: expected rnnjax.min_gru_step or rnnjax.min_lstm_step (run other cells in "
            f"parallel with rnnjax.deer_scan), got {_step_name(step)}"
        )
    num_gates, coeffs = entry
    _check_xs(xs)
    check_float("xs", xs)
    _check_flags(reverse)
    if not isinstance(log_space, bool):
        raise TypeError(f"log_space: expected a bool, got {log_space!r}")
    num_steps, batch = xs.shape[0], tuple(xs.shape[1:-1])
    check_float("carry", carry)
    if carry.ndim != len(batch) + 1 or tuple(carry.shape[:-1]) != batch:
        raise ValueError(
            f"carry: expected shape [{', '.join(map(str, batch + ('H',)))}] (the batch axes of xs), "
            f"got {tuple(carry.shape)}"
        )
    _check_min_args(params, carry, xs[0], num_gates)
    if lengths is not None:
        lengths = jnp.clip(check_lengths(lengths, batch, num_steps), 0, num_steps)

    if reverse:
        xs = flip_sequences(xs, lengths)
    a, b = coeffs(params, xs, log_space)  # [T, *batch, H] each (or their logs)
    dtype = jnp.promote_types(a.dtype, carry.dtype)
    a, b, h0 = a.astype(dtype), b.astype(dtype), carry.astype(dtype)
    if log_space:
        sum_log_a, log_bs = log_affine_scan(a, b)
        hs = jnp.exp(sum_log_a) * h0 + jnp.exp(log_bs)  # [T, *batch, H]
    else:
        hs = affine_scan(a, b.at[0].add(a[0] * h0))  # h_0 folded into the first step
    if lengths is None:
        last, ys = hs[-1], hs
    else:
        ys = jnp.where(steps_mask(lengths, num_steps)[..., None], hs, 0)
        idx = jnp.maximum(lengths - 1, 0)[None, ..., None]  # [1, *batch, 1]
        last = jnp.take_along_axis(hs, jnp.broadcast_to(idx, (1,) + hs.shape[1:]), axis=0)[0]
        last = jnp.where((lengths > 0)[..., None], last, carry)
    if reverse:
        ys = flip_sequences(ys, lengths)
    return last.astype(carry.dtype), ys.astype(carry.dtype)


def _default_tol(dtype) -> float:
    """1e-6 for float32, 1e-12 for float64, ``4·eps`` for 16-bit carries (near round-off)."""
    finfo = jnp.finfo(dtype)
    return {4: 1e-6, 8: 1e-12}.get(finfo.bits // 8, 4 * float(finfo.eps))


def deer_scan(
    step: Callable,
    params: Any,
    carry: Any,
    xs: Array,
    *,
    lengths: Array | None = None,
    reverse: bool = False,
    method: str = "newton",
    tol: float | None = None,
    max_iters: int = 100,
    fallback: bool = True,
):
    """Run any ``step`` over a sequence by parallel Newton iterations (DEER / quasi-DEER).

    Finds the states ``s_t = f(s_{t-1}, x_t)`` of all ``T`` steps at once. Each iteration
    linearises ``f`` around the current guess and solves the linear recurrence
    ``δ_t = J_t δ_{t-1} + (f(s_{t-1}, x_t) - s_t)`` with an associative scan (depth O(log T)):

    * ``method="newton"`` (DEER, Lim et al. 2023): ``J_t`` is the full Jacobian ``[D, D]``
      (``jax.jacfwd``); few iterations, O(T·D³) work and O(T·D²) memory per iteration.
    * ``method="quasi"`` (quasi-DEER, Gonzalez et al. 2024): ``J_t`` is the exact diagonal of
      the Jacobian; more iterations, O(T·D) solve. The diagonal is in closed form for Elman,
      GRU, LSTM, minGRU and minLSTM steps; for any other step it is read off the full Jacobian
      (exact, but as costly to form as Newton's).

    Guesses start at ``carry`` everywhere. The system is triangular, so iteration ``k`` makes
    the first ``k`` states exact: both methods converge in at most ``T`` iterations (in exact
    arithmetic), usually far fewer for contracting cells.

    Gradients (``jax.grad``/``vjp``) come from the implicit function theorem at the solution —
    the adjoint ``λ_t = S̄_t + J_{t+1}ᵀ λ_{t+1}`` is a reversed linear recurrence solved by the
    same scan, refined until its residual is below ``tol`` relative to the incoming cotangent
    (sequential if that fails and ``fallback``) — never by differentiating the iterations.
    Forward-mode (``jax.jvp``) is not supported.

    Args:
      step: ``step(params, carry, x) -> (carry, y)``, built-in or your own; differentiable in
        the carry, and working on unbatched arguments (it is vmapped over time and batch).
      params: the step's parameters.
      carry: initial carry: an array ``[*batch, H]`` or a pytree of floating arrays that each
        start with the batch axes of ``xs`` (e.g. ``LSTMState(h, c)``, a tuple); the leaves are
        concatenated into one state vector of size ``D``.
      xs: ``[T, *batch, I]``, time-major.
      lengths: optional ``[*batch]`` ints in ``[0, T]``; padding holds the carry, ``ys`` zero.
      reverse: run each sequence from its own last valid step back to step 0.
      method: ``"newton"`` or ``"quasi"``.
      tol: convergence threshold on ``max |s_t - f(s_{t-1}, x_t)| / (1 + |f(s_{t-1}, x_t)|)``;
        default 1e-6 for a float32 carry, 1e-12 for float64.
      max_iters: iteration cap (each iteration is a parallel pass over the whole sequence).
      fallback: if not converged after ``max_iters`` (or non-finite), recompute the states with
        a sequential scan so the result is always right; with False the last iterate is
        returned and ``info.converged`` tells. Under ``vmap`` both branches run.

    Returns:
      ``(carry, ys, info)`` as ``rnnjax.scan`` returns ``(carry, ys)``, plus a ``DeerInfo``
      (``iterations``, ``residual``, ``converged``, ``fell_back``) of the forward solve.

    >>> cell = gru(input_size=3, hidden_size=4)
    >>> params, h0, xs = cell.init(jax.random.key(0)), cell.initial_carry((2,)), jnp.ones((8, 2, 3))
    >>> h, ys, info = deer_scan(gru_step, params, h0, xs)
    >>> bool(jnp.allclose(ys, scan(gru_step, params, h0, xs)[1], atol=1e-5)), bool(info.converged)
    (True, True)
    """
    if not callable(step):
        raise TypeError(f"step: expected a function step(params, carry, x), got {type(step).__name__}")
    _check_xs(xs)
    check_float("xs", xs)
    _check_flags(reverse)
    if method not in ("newton", "quasi"):
        raise ValueError(f"method: expected 'newton' or 'quasi', got {method!r}")
    if not isinstance(max_iters, int) or isinstance(max_iters, bool) or max_iters < 1:
        raise ValueError(f"max_iters: expected a positive int, got {max_iters!r}")
    if not isinstance(fallback, bool):
        raise TypeError(f"fallback: expected a bool, got {fallback!r}")
    if tol is not None and (isinstance(tol, bool) or not isinstance(tol, (int, float, np.floating))
                            or not tol > 0):
        raise ValueError(f"tol: expected a positive number or None, got {tol!r}")
    num_steps, batch = xs.shape[0], tuple(xs.shape[1:-1])
    leaves = jax.tree_util.tree_leaves_with_path(carry)
    if not leaves:
        raise ValueError("carry: expected at least one array leaf, got an empty pytree")
    for path, leaf in leaves:
        name = f"carry{jax.tree_util.keystr(path)}"
        check_float(name, leaf)
        if tuple(leaf.shape[: len(batch)]) != batch:
            raise ValueError(
                f"{name}: expected shape {shape_str(batch + ('...',))} (starting with the batch "
                f"axes of xs {tuple(xs.shape)}), got {tuple(leaf.shape)}"
            )
    _check_builtin_xs(params, xs)
    _check_step_output(step, params, carry, xs, batch)
    if lengths is not None:
        lengths = jnp.clip(check_lengths(lengths, batch, num_steps), 0, num_steps)

    flat = FlatCarry(carry, len(batch))
    problem = Problem(
        step=step,
        flat=flat,
        diag_fn=diag_jacobian_fn(step, _DIAG_TABLE),
        full=method == "newton",
        tol=_default_tol(flat.dtype) if tol is None else float(tol),
        max_iters=max_iters,
        fallback=fallback,
    )
    h0 = flat.flatten(carry)  # [*batch, D]
    if lengths is None:
        valid = jnp.ones(xs.shape[:-1], bool)
    else:
        valid = jnp.broadcast_to(steps_mask(lengths, num_steps), xs.shape[:-1])  # [T, *batch]
    if reverse:  # padding then comes first and holds the carry, as in rnnjax.scan
        xs, valid = xs[::-1], valid[::-1]
    states, info = fixed_point(problem, params, h0, xs, valid)  # [T, *batch, D]
    f, ys = problem.apply(params, shift_states(h0, states), xs, valid)
    if reverse:
        ys = jax.tree_util.tree_map(lambda y: y[::-1], ys)
    return flat.unflatten(f[-1]), ys, info


__all__ = [
    "DeerInfo",
    "MinGRUParams",
    "MinLSTMParams",
    "deer_scan",
    "min_gru",
    "min_gru_step",
    "min_lstm",
    "min_lstm_step",
    "min_rnn_parallel",
]
