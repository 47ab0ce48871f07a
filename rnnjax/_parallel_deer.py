"""Parallel Newton evaluation of a recurrence (DEER and quasi-DEER) and its implicit gradient.

The states ``S = (s_0 .. s_{T-1})`` of ``s_t = f(s_{t-1}, x_t)`` (``s_{-1} = h0``) are the root
of ``S - Φ(S) = 0`` with ``Φ(S)_t = f(s_{t-1}, x_t)``. A Newton step linearises ``f`` around
the current guess and solves the linear recurrence for the correction ``δ``::

    δ_t = J_t δ_{t-1} + r_t,   r_t = f(s_{t-1}, x_t) - s_t,   J_t = ∂f/∂s (s_{t-1}, x_t)

with an associative scan (``J_t`` full: DEER; its diagonal: quasi-DEER). The system is lower
block-triangular, so after ``k`` iterations the first ``k`` states are exact whichever ``J`` is
used: both converge in at most ``T`` iterations, Newton usually in a handful.

The backward pass never goes through the iterations. At the root, the implicit function
theorem gives the cotangents from the adjoint system ``λ_t = S̄_t + J_{t+1}ᵀ λ_{t+1}``, a
reversed linear recurrence; it is solved by iterative refinement with the same scan as
preconditioner (exact in one pass for DEER) and its residual checked with exact VJPs.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Callable
from functools import partial
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
from jax import lax

from rnnjax._checks import where_batch
from rnnjax._parallel_scan import affine_scan

Array = jax.Array


class DeerInfo(NamedTuple):
    """What ``rnnjax.deer_scan`` did (scalars, arrays under ``jit``).

    Attributes:
      iterations: Newton iterations run (each one parallel linear solve).
      residual: ``max |s_t - f(s_{t-1}, x_t)| / (1 + |f(s_{t-1}, x_t)|)`` over all steps and
        units at the last iterate (before any fallback).
      converged: ``residual <= tol``.
      fell_back: the states were recomputed sequentially because the iteration did not
        converge (only with ``fallback=True``).
    """

    iterations: Array  # [] int32
    residual: Array  # [] float
    converged: Array  # [] bool
    fell_back: Array  # [] bool


class FlatCarry:
    """One array ``[*lead, D]`` for a carry pytree whose leaves are ``[*lead, *rest_i]``."""

    def __init__(self, carry: Any, num_batch_axes: int):
        leaves, self.treedef = jax.tree_util.tree_flatten(carry)
        self.shapes = [tuple(jnp.shape(leaf))[num_batch_axes:] for leaf in leaves]
        self.dtypes = [jnp.result_type(leaf) for leaf in leaves]
        self.sizes = [math.prod(s) for s in self.shapes]
        self.dtype = jnp.result_type(*self.dtypes)
        self.size = sum(self.sizes)

    def flatten(self, carry: Any) -> Array:
        leaves = self.treedef.flatten_up_to(carry)
        lead = jnp.shape(leaves[0])[: jnp.ndim(leaves[0]) - len(self.shapes[0])]
        parts = [jnp.reshape(leaf, lead + (-1,)).astype(self.dtype) for leaf in leaves]
        return parts[0] if len(parts) == 1 else jnp.concatenate(parts, axis=-1)

    def unflatten(self, s: Array) -> Any:
        lead = s.shape[:-1]
        cuts = [sum(self.sizes[: i + 1]) for i in range(len(self.sizes) - 1)]
        parts = jnp.split(s, cuts, axis=-1) if cuts else [s]
        leaves = [p.reshape(lead + shape).astype(dt)
                  for p, shape, dt in zip(parts, self.shapes, self.dtypes, strict=True)]
        return self.treedef.unflatten(leaves)


@dataclasses.dataclass(frozen=True)
class Problem:
    """The pieces of one recurrence, closed over a step and the carry layout (not a pytree)."""

    step: Callable
    flat: FlatCarry
    diag_fn: Callable | None  # (params, carry, x) -> carry-shaped diagonal of ∂carry'/∂carry
    full: bool  # Newton with full Jacobians (else diagonal)
    tol: float
    max_iters: int
    fallback: bool

    # All functions below take leading axes [*lead] (e.g. [T, *batch] or [*batch]) and
    # evaluate the step on each element independently.

    def _one(self, params, s, x, valid):
        carry, y = self.step(params, self.flat.unflatten(s), x)
        s_new = self.flat.flatten(carry)
        zeros = jax.tree_util.tree_map(jnp.zeros_like, y)
        return where_batch(valid, s_new, s), where_batch(valid, y, zeros)

    def _elementwise(self, fn, params, s, x, valid):
        lead = valid.shape
        n = math.prod(lead)
        out = jax.vmap(fn, in_axes=(None, 0, 0, 0))(
            params, s.reshape((n,) + s.shape[len(lead):]), x.reshape((n,) + x.shape[len(lead):]),
            valid.reshape(n))
        return jax.tree_util.tree_map(lambda v: v.reshape(lead + v.shape[1:]), out)

    def apply(self, params, s, x, valid):
        """``(f(s, x), y)`` with padding (``valid`` False) holding ``s`` and giving ``y = 0``."""
        return self._elementwise(self._one, params, s, x, valid)

    def jacobian(self, params, s, x, valid):
        """``∂f/∂s``: ``[*lead, D, D]`` (full) or its diagonal ``[*lead, D]``."""
        if not self.full and self.diag_fn is not None:
            d = self.flat.flatten(self.diag_fn(params, self.flat.unflatten(s), x))
            return jnp.where(valid[..., None], d.astype(s.dtype), jnp.ones_like(d, s.dtype))
        jac = jax.jacfwd(lambda p, s_, x_, v: self._one(p, s_, x_, v)[0], argnums=1)
        j = self._elementwise(jac, params, s, x, valid)
        return j if self.full else jnp.diagonal(j, axis1=-2, axis2=-1)


def shift_states(h0: Array, states: Array) -> Array:
    """``[h0, s_0, ..., s_{T-2}]``: the state each step starts from."""
    return jnp.concatenate([h0[None], states[:-1]], axis=0)


def _residual(states: Array, f: Array) -> Array:
    return jnp.max(jnp.abs(f - states) / (1 + jnp.abs(f)))


def _sequential_states(problem: Problem, params, h0, xs, valid) -> Array:
    def body(s, inp):
        x, v = inp
        s_new, _ = problem.apply(params, s, x, v)
        return s_new, s_new

    return lax.scan(body, h0, (xs, valid))[1]


def _newton(problem: Problem, params, h0, xs, valid):
    """Newton iterations from ``S = h0`` everywhere; returns ``(states [T, *batch, D], info)``."""
    def values(states):
        return problem.apply(params, shift_states(h0, states), xs, valid)[0]

    def cond(state):
        it, _, _, res = state
        return (it < problem.max_iters) & (res > problem.tol)

    def body(state):
        it, states, f, _ = state
        jac = problem.jacobian(params, shift_states(h0, states), xs, valid)
        states = states + affine_scan(jac, f - states)
        f = values(states)
        return it + 1, states, f, _residual(states, f)

    s0 = jnp.broadcast_to(h0, xs.shape[:1] + h0.shape)
    f0 = values(s0)
    it, states, _, res = lax.while_loop(cond, body, (jnp.int32(0), s0, f0, _residual(s0, f0)))
    converged = res <= problem.tol  # False for NaN
    if problem.fallback:
        states = lax.cond(converged, lambda: states,
                          lambda: _sequential_states(problem, params, h0, xs, valid))
        fell_back = jnp.logical_not(converged)
    else:
        fell_back = jnp.bool_(False)
    return states, DeerInfo(it, res, converged, fell_back)


def _adjoint(problem: Problem, params, h0, xs, valid, states, s_bar):
    """Solve ``λ_t = S̄_t + J_{t+1}ᵀ λ_{t+1}`` (``λ_T = 0``); returns the input cotangents."""
    def phi(p, h, x, s):
        return problem.apply(p, shift_states(h, s), x, valid)[0]

    _, vjp = jax.vjp(phi, params, h0, xs, states)
    _, vjp_states = jax.vjp(partial(phi, params, h0, xs), states)
    jac = problem.jacobian(params, shift_states(h0, states), xs, valid)
    if problem.full:
        jac = jnp.swapaxes(jac, -1, -2)
    a = jnp.concatenate([jac[1:], jnp.zeros_like(jac[:1])], axis=0)  # a_t = J_{t+1}ᵀ

    def solve(r):
        return affine_scan(a, r, reverse=True)

    def residual(lam):
        return s_bar - lam + vjp_states(lam)[0]

    scale = jnp.max(jnp.abs(s_bar))
    thresh = problem.tol * scale

    def cond(state):
        it, _, r = state
        return (it < problem.max_iters) & (jnp.max(jnp.abs(r)) > thresh)

    def body(state):
        it, lam, r = state
        lam = lam + solve(r)
        return it + 1, lam, residual(lam)

    # From λ = 0 the first pass solves the preconditioned system for S̄ (exact for DEER).
    _, lam, r = lax.while_loop(cond, body, (jnp.int32(0), jnp.zeros_like(s_bar), s_bar))
    if problem.fallback:
        def sequential():
            def bwd_step(c, inp):
                s_prev, x, v, sb = inp
                lam_t = sb + c
                _, pull = jax.vjp(lambda s: problem.apply(params, s, x, v)[0], s_prev)
                return pull(lam_t)[0], lam_t

            inputs = (shift_states(h0, states), xs, valid, s_bar)
            return lax.scan(bwd_step, jnp.zeros_like(h0), inputs, reverse=True)[1]

        lam = lax.cond(jnp.max(jnp.abs(r)) <= thresh, lambda: lam, sequential)
    p_bar, h0_bar, xs_bar, _ = vjp(lam)
    return p_bar, h0_bar, xs_bar


def fixed_point(problem: Problem, params, h0: Array, xs: Array, valid: Array):
    """States ``[T, *batch, D]`` and ``DeerInfo``; differentiable in params, h0 and xs."""

    @jax.custom_vjp
    def solve(params, h0, xs, valid):
        return _newton(problem, params, h0, xs, valid)

    def fwd(params, h0, xs, valid):
        states, info = _newton(problem, params, h0, xs, valid)
        return (states, info), (params, h0, xs, valid, states)

    def bwd(res, cotangents):
        params, h0, xs, valid, states = res
        p_bar, h0_bar, xs_bar = _adjoint(problem, params, h0, xs, valid, states, cotangents[0])
        return p_bar, h0_bar, xs_bar, None

    solve.defvjp(fwd, bwd)
    return solve(params, h0, xs, valid)
