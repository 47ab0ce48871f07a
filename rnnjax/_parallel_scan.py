"""Linear recurrences evaluated with ``jax.lax.associative_scan`` (depth O(log T)).

Each time step is an affine map ``x ↦ a_t x + b_t``; two consecutive maps compose into one,
``(a_l, b_l) ∘ (a_e, b_e) = (a_l a_e, a_l b_e + b_l)``, and composition is associative, so all
prefixes come out of one parallel scan. ``lax.associative_scan(reverse=True)`` calls the
combining function with the element that comes first *in processing order* on the left, so the
same function serves both directions.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import jax
import jax.numpy as jnp
from jax import lax

from rnnjax._checks import flip_valid, fresh_steps, steps_mask

Array = jax.Array


def _combine_diag(earlier, later):
    a_e, b_e = earlier
    a_l, b_l = later
    return a_l * a_e, a_l * b_e + b_l


def _combine_full(earlier, later):
    a_e, b_e = earlier
    a_l, b_l = later
    return a_l @ a_e, jnp.einsum("...ij,...j->...i", a_l, b_e) + b_l


def affine_scan(a: Array, b: Array, *, reverse: bool = False) -> Array:
    """Solve ``x_t = a_t x_{t-1} + b_t`` for all ``t`` from ``x_{-1} = 0``.

    ``a: [T, ..., D]`` (diagonal maps, elementwise) or ``[T, ..., D, D]`` (full matrices acting
    on column vectors); ``b: [T, ..., D]``. With ``reverse=True`` it solves
    ``x_t = a_t x_{t+1} + b_t`` from ``x_T = 0``. Returns ``x: [T, ..., D]``.
    """
    combine = _combine_full if a.ndim == b.ndim + 1 else _combine_diag
    _, x = lax.associative_scan(combine, (a, b), reverse=reverse)
    return x


def _logaddexp(u: Array, v: Array) -> Array:
    """``log(exp(u) + exp(v))`` for finite ``u, v``; its autodiff gradient is ``σ(u - v)``."""
    return jnp.maximum(u, v) + jnp.log1p(jnp.exp(-jnp.abs(u - v)))


def _combine_log(earlier, later):
    la_e, lb_e = earlier
    la_l, lb_l = later
    return la_e + la_l, _logaddexp(la_l + lb_e, lb_l)


def log_affine_scan(log_a: Array, log_b: Array) -> tuple[Array, Array]:
    """Prefix compositions of ``x ↦ a_t x + b_t`` with ``a_t, b_t > 0``, in log space.

    Returns ``(log A_t, log B_t)`` such that ``x_t = A_t x_{-1} + B_t`` for any ``x_{-1}``
    (signed too: the initial state enters linearly and never goes through a log). Each
    composition is a sum and a ``logaddexp`` of finite numbers, so nothing overflows however
    small the products of ``a`` get; unlike a cumulative sum of ``log a`` followed by a
    ``logcumsumexp``, no two large numbers are subtracted, and the relative error stays near
    float round-off for any ``T``.
    """
    return lax.associative_scan(_combine_log, (log_a, log_b))


def affine_recurrence(coeffs: Callable, params: Any, carry: Array, xs: Array, lengths: Array | None,
                      reverse: bool, *, log_space: bool = False, resets: Array | None = None, **keywords):
    """``h_t = a_t ⊙ h_{t-1} + b_t`` over ``xs: [T, *batch, I]`` with the contract of ``rnnjax.scan``.

    ``coeffs(params, xs, log_space, **keywords) -> (a, b)`` (or their logs, with ``a > 0``,
    ``b > 0``), each ``[T, *batch, H]``; ``keywords`` are the step's (e.g. its compute dtype).
    Arguments are assumed checked, ``lengths`` within ``[0, T]``. A reset (``resets: [T,
    *batch]``, packed sequences) drops the state before it: ``a = 0`` there (in log space, a
    log so negative that ``exp`` of it and of its sums with other logs is exactly 0).
    """
    num_steps = xs.shape[0]
    fresh = fresh_steps(resets, lengths, num_steps, reverse)
    if fresh is not None:
        fresh = jnp.broadcast_to(fresh.reshape(fresh.shape + (1,) * (xs.ndim - 1 - fresh.ndim)), xs.shape[:-1])
    if reverse:
        xs = flip_valid(xs, lengths)
        fresh = None if fresh is None else flip_valid(fresh, lengths)  # in processing order
    a, b = coeffs(params, xs, log_space, **keywords)  # [T, *batch, H] each (or their logs)
    dtype = jnp.promote_types(a.dtype, carry.dtype)
    a, b, h0 = a.astype(dtype), b.astype(dtype), carry.astype(dtype)
    if fresh is not None:
        # log space: T such logs still sum to a finite number, and exp of it is 0
        dropped = -jnp.finfo(dtype).max / (4 * num_steps) if log_space else 0
        a = jnp.where(fresh[..., None], jnp.asarray(dropped, dtype), a)
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
        ys = flip_valid(ys, lengths)
    return last.astype(carry.dtype), ys.astype(carry.dtype)
