"""Recurrences evaluated in parallel over time: depth O(log T) instead of T.

Two tools:

* **minGRU and minLSTM** (Feng et al. 2024): gates that read only ``x_t``, so the update is
  affine in ``h``, ``h_t = a_t ⊙ h_{t-1} + b_t``. Each is an ordinary cell (``rnnjax.min_gru``
  / ``min_lstm`` in ``rnnjax/cells.py``, usable with ``rnnjax.scan`` and everything built on
  steps), and ``rnnjax.min_rnn_parallel`` evaluates the same recurrence over a whole sequence
  with one associative scan (in linear or log space).
* **DEER / quasi-DEER** (Lim et al. 2023; Gonzalez et al. 2024): ``rnnjax.deer_scan`` runs any
  step — a built-in nonlinear cell or your own — by Newton iterations over the whole sequence,
  each a parallel linear solve, with gradients from the implicit function theorem.

Both return what ``rnnjax.scan`` returns for the same step, with the same ``lengths`` and
``reverse`` semantics. Whether they are faster depends on the hardware: see the benchmark
section "Parallel-in-time evaluation" in ``BENCHMARKS.md``.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

from rnnjax import _registry
from rnnjax._checks import (
    check_bool,
    check_carry_batch,
    check_float,
    check_int,
    check_lengths,
    check_resets,
    check_step_output,
    check_xs,
    fresh_steps,
    shape_str,
    steps_mask,
    where_batch,
)
from rnnjax._parallel_deer import DeerInfo, FlatCarry, Problem, fixed_point, shift_states
from rnnjax._parallel_scan import affine_recurrence

Array = jax.Array


# ------------------------------------------------------------------ whole-sequence functions


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
    resets: Array | None = None,
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
      resets: optional ``[T, *batch]`` bool, True where a packed sequence starts (as in
        ``rnnjax.scan``): the state before it is dropped (``a = 0`` there).

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
    found = _registry.lookup(step)
    if found is None or found[0].affine is None:
        raise ValueError(
            f"step: expected rnnjax.min_gru_step or rnnjax.min_lstm_step (or a step registered with "
            f"rnnjax.register_step(step, affine=...); run other cells in parallel with rnnjax.deer_scan), "
            f"got {_step_name(step)}"
        )
    coeffs = _registry.bound(found[0].affine, found[1])
    check_xs(xs)
    check_float("xs", xs)
    check_bool("reverse", reverse)
    check_bool("log_space", log_space)
    num_steps, batch = xs.shape[0], tuple(xs.shape[1:-1])
    check_float("carry", carry)
    if carry.ndim != len(batch) + 1 or tuple(carry.shape[:-1]) != batch:
        raise ValueError(
            f"carry: expected shape [{', '.join(map(str, batch + ('H',)))}] (the batch axes of xs), "
            f"got {tuple(carry.shape)}"
        )
    check_step_output(step, params, carry, xs, batch)  # the step's own checks of params and x
    if lengths is not None:
        lengths = jnp.clip(check_lengths(lengths, batch, num_steps), 0, num_steps)
    if resets is not None:
        resets, _ = check_resets(resets, xs)
    return affine_recurrence(coeffs, params, carry, xs, lengths, reverse, log_space=log_space, resets=resets)


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
    resets: Array | None = None,
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
      resets: optional ``[T, *batch]`` bool, True where a packed sequence starts (as in
        ``rnnjax.scan``): the carry is zeros before that step, and its Jacobian there is 0.

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
    check_xs(xs)
    check_float("xs", xs)
    check_bool("reverse", reverse)
    if method not in ("newton", "quasi"):
        raise ValueError(f"method: expected 'newton' or 'quasi', got {method!r}")
    max_iters = check_int("max_iters", max_iters)
    check_bool("fallback", fallback)
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
    _registry.check_inputs(step, params, xs)
    check_step_output(step, params, carry, xs, batch)
    if lengths is not None:
        lengths = jnp.clip(check_lengths(lengths, batch, num_steps), 0, num_steps)
    diag_fn = _registry.diag_jacobian(step)
    if resets is not None:
        resets, _ = check_resets(resets, xs)
        check_carry_batch(carry, batch)
        fresh = fresh_steps(resets, lengths, num_steps, reverse)
        fresh = jnp.broadcast_to(fresh.reshape(fresh.shape + (1,) * (xs.ndim - 1 - fresh.ndim)), xs.shape[:-1])
        # The reset travels with the input as one more feature (the solver maps over x arrays).
        xs = jnp.concatenate([xs, fresh[..., None].astype(xs.dtype)], axis=-1)
        step, diag_fn = _with_resets(step), None if diag_fn is None else _with_resets(diag_fn, jacobian=True)

    flat = FlatCarry(carry, len(batch))
    problem = Problem(
        step=step,
        flat=flat,
        diag_fn=diag_fn,
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


def _with_resets(fn: Callable, *, jacobian: bool = False) -> Callable:
    """``fn(params, carry, x)`` reading ``x = [x, fresh]``: the carry is zeros where ``fresh``.

    For a step that is the reset step; for a ``diag_jacobian`` the diagonal is then 0 there."""

    def reset_fn(params, carry, x):
        fresh, x = x[..., -1] > 0.5, x[..., :-1]
        zeros = jax.tree_util.tree_map(jnp.zeros_like, carry)
        out = fn(params, where_batch(fresh, zeros, carry), x)
        return where_batch(fresh, jax.tree_util.tree_map(jnp.zeros_like, out), out) if jacobian else out

    return reset_fn


__all__ = ["DeerInfo", "deer_scan", "min_rnn_parallel"]
