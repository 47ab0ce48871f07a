"""xLSTM's cells: the matrix-memory mLSTM and the scalar-memory sLSTM (Beck et al. 2024).

Both use exponential input gates, a normaliser state ``n`` and a log-space stabiliser ``m``
that keeps every exponential at most 1: the carry stores ``C e^{-m}``, ``n e^{-m}`` instead of
``C``, ``n``, and the outputs do not depend on ``m``.

* ``mlstm_step`` (sequential form) and ``mlstm_parallel`` (the chunkwise-parallel form: a
  quadratic, attention-like computation inside chunks of ``chunk_size`` steps and the
  recurrence between chunks) give the same results.
* ``slstm_step`` mixes the previous hidden state into every gate through block-diagonal
  (per-head) recurrent matrices, so it is not a linear recurrence and has no parallel form.

``PARALLEL`` maps ``mlstm_step`` to ``mlstm_parallel``.
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
    check_int,
    check_resets,
    check_shape,
    check_sizes,
    fresh_steps,
    steps_mask,
)
from rnnjax.cells import Cell, contract, matmul
from rnnjax.scan import flip_sequences, scan  # noqa: F401  (scan: in the examples)

Array = jax.Array

__all__ = [
    "MLSTMParams",
    "MLSTMState",
    "SLSTMParams",
    "SLSTMState",
    "mlstm",
    "mlstm_parallel",
    "mlstm_step",
    "slstm",
    "slstm_step",
]


class MLSTMParams(NamedTuple):
    w_q: Array  # [I, H] queries (H = heads · d)
    b_q: Array  # [H]
    w_k: Array  # [I, H] keys
    b_k: Array  # [H]
    w_v: Array  # [I, H] values
    b_v: Array  # [H]
    w_i: Array  # [I, heads] input gate (one scalar per head)
    b_i: Array  # [heads]
    w_f: Array  # [I, heads] forget gate
    b_f: Array  # [heads]
    w_o: Array  # [I, H] output gate
    b_o: Array  # [H]


class MLSTMState(NamedTuple):
    """Carry of ``mlstm_step`` (stabilised: the true memory is ``C e^m``, ``n e^m``)."""

    C: Array  # [*batch, heads, d, d] matrix memory (values × keys)
    n: Array  # [*batch, heads, d]   normaliser
    m: Array  # [*batch, heads]      stabiliser


class SLSTMParams(NamedTuple):
    w_ih: Array  # [I, 4H], gates i, f, z, o
    r: Array  # [heads, d, 4d] block-diagonal recurrent weights, per head gates i, f, z, o
    b: Array  # [4H]


class SLSTMState(NamedTuple):
    """Carry of ``slstm_step``."""

    h: Array  # [*batch, H]
    c: Array  # [*batch, H] cell state (stabilised: true c e^m)
    n: Array  # [*batch, H] normaliser (stabilised)
    m: Array  # [*batch, H] stabiliser


# ----------------------------------------------------------------------------- checks


def _check_params_type(params: Any, expected: type) -> None:
    missing = [f for f in expected._fields if not hasattr(params, f)]
    if missing:
        raise TypeError(
            f"params: expected {expected.__name__}({', '.join(expected._fields)}), got "
            f"{type(params).__name__} without {', '.join(missing)}"
        )


def _check_carry_type(carry: Any, expected: type) -> None:
    if not (isinstance(carry, tuple) and all(hasattr(carry, f) for f in expected._fields)):
        given = f"an array of shape {tuple(carry.shape)}" if hasattr(carry, "shape") else type(carry).__name__
        raise TypeError(
            f"carry: expected {expected.__name__}({', '.join(expected._fields)}) "
            f"(cell.initial_carry(batch_shape) makes one), got {given}"
        )


def _check_x(x: Any, input_size: int, source: str) -> tuple:
    check_float("x", x)
    if x.ndim < 1 or x.shape[-1] != input_size:
        raise ValueError(f"x: expected shape [*batch, {input_size}] (input_size from {source}), got {tuple(x.shape)}")
    return tuple(x.shape[:-1])


def _check_mlstm(params: MLSTMParams, carry: Any, x: Any) -> tuple[int, int, tuple]:
    """Returns ``(heads, d, batch)``."""
    _check_params_type(params, MLSTMParams)
    _check_carry_type(carry, MLSTMState)
    check_float("params.w_i", params.w_i)
    if params.w_i.ndim != 2:
        raise ValueError(f"params.w_i: expected shape [I, heads], got {tuple(params.w_i.shape)}")
    i_size, heads = params.w_i.shape
    check_array("params.w_q", params.w_q)
    if params.w_q.ndim != 2 or params.w_q.shape[0] != i_size or params.w_q.shape[1] % heads:
        raise ValueError(
            f"params.w_q: expected shape [{i_size}, H] with H a multiple of heads = {heads} "
            f"(from params.w_i), got {tuple(params.w_q.shape)}"
        )
    hid = params.w_q.shape[1]
    for name in ("w_k", "w_v", "w_o"):
        check_shape(f"params.{name}", getattr(params, name), (i_size, hid))
    for name in ("b_q", "b_k", "b_v", "b_o"):
        check_shape(f"params.{name}", getattr(params, name), (hid,))
    check_shape("params.w_f", params.w_f, (i_size, heads))
    for name in ("b_i", "b_f"):
        check_shape(f"params.{name}", getattr(params, name), (heads,))
    d = hid // heads
    batch = _check_x(x, i_size, "params.w_q")
    for name, leaf, shape in (("carry.C", carry.C, (heads, d, d)), ("carry.n", carry.n, (heads, d)),
                              ("carry.m", carry.m, (heads,))):
        check_float(name, leaf)
        check_shape(name, leaf, batch + shape, shown=(*batch, *shape))
    return heads, d, batch



def _param_dtype(param_dtype: Any, carry_dtype: Any = jnp.float32) -> Any:
    """Check the factory's ``param_dtype`` (how params are stored) and ``carry_dtype``."""
    check_dtype("param_dtype", param_dtype)
    check_dtype("carry_dtype", carry_dtype)
    return jnp.dtype(param_dtype)


# ----------------------------------------------------------------------------------- mLSTM


def _mlstm_inputs(params: MLSTMParams, x: Array, heads: int, d: int, dtype=None):
    """Queries, keys, values ``[*, heads, d]`` and gate preactivations ``ĩ``, ``log f`` ``[*, heads]``."""
    split = x.shape[:-1] + (heads, d)
    q = (matmul(x, params.w_q, dtype) + params.b_q).reshape(split)
    k = (matmul(x, params.w_k, dtype) / math.sqrt(d) + params.b_k).reshape(split)
    v = (matmul(x, params.w_v, dtype) + params.b_v).reshape(split)
    i_tilde = matmul(x, params.w_i, dtype) + params.b_i
    log_f = jax.nn.log_sigmoid(matmul(x, params.w_f, dtype) + params.b_f)
    return q, k, v, i_tilde, log_f


def _mlstm_out(params: MLSTMParams, h_tilde: Array, x: Array, dtype=None) -> Array:
    """``o ⊙ h̃`` with ``h̃ [*, heads, d]`` flattened to ``[*, H]``."""
    return jax.nn.sigmoid(matmul(x, params.w_o, dtype) + params.b_o) * h_tilde.reshape(h_tilde.shape[:-2] + (-1,))


def _compute_dtype(dtype) -> Any:
    check_dtype("dtype", dtype, allow_none=True)
    return None if dtype is None else jnp.dtype(dtype)


def mlstm_step(params: MLSTMParams, carry: MLSTMState, x: Array, *, dtype=None):
    """mLSTM step: a matrix memory per head, written with an exponential input gate.

    Per head (``d = H / heads``)::

        q = x W_q + b_q     k = (x W_k) / √d + b_k     v = x W_v + b_v          [d]
        ĩ = x w_i + b_i     log f = log σ(x w_f + b_f)     o = σ(x W_o + b_o)    (ĩ, f scalars)
        m' = max(log f + m, ĩ)                           stabiliser
        i' = exp(ĩ - m')    f' = exp(log f + m - m')
        C' = f' C + i' v kᵀ      n' = f' n + i' k
        h̃ = C' q / max(|n'ᵀ q|, exp(-m'))             (= C q / max(|nᵀq|, 1) unstabilised)
        y = o ⊙ h̃  (heads concatenated)

    Args:
      params: ``MLSTMParams(w_q, b_q, w_k, b_k, w_v, b_v [I, H] / [H], w_i, w_f [I, heads],
        b_i, b_f [heads], w_o [I, H], b_o [H])``.
      carry: ``MLSTMState(C [*batch, heads, d, d], n [*batch, heads, d], m [*batch, heads])``.
      x: ``[*batch, I]``.
      dtype: the dtype of the input projections' operands (float32 accumulation); None: as
        they are. The memory (``C``, ``n``, its readout) stays in the carry's precision.

    References: Beck et al. 2024, "xLSTM: extended long short-term memory".

    >>> cell = mlstm(input_size=3, hidden_size=8, num_heads=2)
    >>> carry, y = mlstm_step(cell.init(jax.random.key(0)), cell.initial_carry((5,)), jnp.ones((5, 3)))
    >>> carry.C.shape, y.shape
    ((5, 2, 4, 4), (5, 8))
    """
    heads, d, _ = _check_mlstm(params, carry, x)
    new, h_tilde = mlstm_memory(carry, *_mlstm_inputs(params, x, heads, d, dtype))
    return new, _mlstm_out(params, h_tilde, x, dtype).astype(carry.C.dtype)


def mlstm_memory(carry: MLSTMState, q, k, v, i_tilde, log_f):
    """The memory update and readout of one step, shared by ``mlstm_step`` and the blocks."""
    m_new = jnp.maximum(log_f + carry.m, i_tilde)
    i_gate = jnp.exp(i_tilde - m_new)
    f_gate = jnp.exp(log_f + carry.m - m_new)
    c_new = f_gate[..., None, None] * carry.C + i_gate[..., None, None] * (v[..., :, None] * k[..., None, :])
    n_new = f_gate[..., None] * carry.n + i_gate[..., None] * k
    num = jnp.einsum("...ab,...b->...a", c_new, q)
    den = jnp.maximum(jnp.abs(jnp.sum(n_new * q, axis=-1)), jnp.exp(-m_new))
    new = MLSTMState(c_new.astype(carry.C.dtype), n_new.astype(carry.n.dtype), m_new.astype(carry.m.dtype))
    return new, num / den[..., None]


def _mlstm_chunk(state: MLSTMState, chunk):
    """One chunk of the chunkwise form; ``chunk`` holds ``[L, *batch, heads, ...]`` arrays, and
    with resets also ``fresh: [L, *batch, 1]`` (True where the memory is reset to zeros first)."""
    q, k, v, i_tilde, log_f = chunk[:5]  # padding: i_tilde = -inf, log_f = 0
    L = q.shape[0]
    f_cum = jnp.cumsum(log_f, axis=0)  # F_t = Σ_{s<=t} log f_s   [L, *b, h]
    # D[t, s] = F_t - F_s + ĩ_s for s <= t: the log weight of step s's write as seen at step t.
    causal = jnp.tril(jnp.ones((L, L), bool)).reshape((L, L) + (1,) * (q.ndim - 2))
    dmat = jnp.where(causal, f_cum[:, None] - f_cum[None, :] + i_tilde[None, :], -jnp.inf)  # [L, L, *b, h]
    m_prev = f_cum + state.m  # log weight of the carried memory at step t
    carried = None
    if len(chunk) > 5:
        # A reset at step r replaces the memory by zeros, (C, n, m) = (0, 0, 0): writes before r
        # and the carried memory no longer count from r on, and the zero memory's stabiliser,
        # of log weight F_t - F_{r-1} at step t, enters the max as the step loop's does.
        fresh = chunk[5]
        seg = jnp.cumsum(fresh.astype(jnp.int32), axis=0)  # [L, *b, 1]: resets so far
        dmat = jnp.where(seg[:, None] == seg[None, :], dmat, -jnp.inf)
        carried = seg == 0
        steps = jnp.arange(L).reshape((L,) + (1,) * (fresh.ndim - 1))
        last = jnp.broadcast_to(jax.lax.cummax(jnp.where(fresh, steps, 0), axis=0), f_cum.shape)
        f_before = jnp.take_along_axis(f_cum - log_f, last, axis=0)  # F_{r-1}, r the latest reset
        m_prev = jnp.where(carried, m_prev, f_cum - f_before)
    m = jnp.maximum(m_prev, jnp.max(dmat, axis=1))  # = the sequential stabiliser, exactly
    w = jnp.exp(dmat - m[:, None])  # [L, L, *b, h], 0 above the diagonal and at padding
    w_prev = jnp.exp(m_prev - m)  # [L, *b, h]
    if carried is not None:
        w_prev = jnp.where(carried, w_prev, jnp.zeros((), w_prev.dtype))  # the zero memory adds nothing
    scores = jnp.einsum("t...d,s...d->ts...", q, k) * w  # [L, L, *b, h]
    num = w_prev[..., None] * jnp.einsum("...ab,t...b->t...a", state.C, q) + jnp.einsum("ts...,s...a->t...a", scores, v)
    den = w_prev * jnp.einsum("...b,t...b->t...", state.n, q) + jnp.sum(scores, axis=1)
    h_tilde = num / jnp.maximum(jnp.abs(den), jnp.exp(-m))[..., None]
    # state after the chunk's last step
    w_last, wp_last, m_last = w[-1], w_prev[-1], m[-1]  # [L, *b, h], [*b, h], [*b, h]
    c_new = wp_last[..., None, None] * state.C + jnp.einsum("s...,s...a,s...b->...ab", w_last, v, k)
    n_new = wp_last[..., None] * state.n + jnp.einsum("s...,s...b->...b", w_last, k)
    return MLSTMState(c_new, n_new, m_last), h_tilde


def mlstm_parallel(params: MLSTMParams, carry: MLSTMState, xs: Array, lengths: Array | None = None,
                   reverse: bool = False, *, chunk_size: int = 64, dtype=None, resets: Array | None = None):
    """``mlstm_step`` over a whole sequence in the chunkwise-parallel form.

    The sequence is cut into chunks of ``L = chunk_size`` steps. Inside a chunk, with
    ``F_t = Σ_{s<=t} log f_s`` (cumulative within the chunk) and the carried memory
    ``(C₀, n₀, m₀)``::

        D_ts = F_t - F_s + ĩ_s  (s <= t)        m_t = max(F_t + m₀, max_s D_ts)
        h̃_t = [e^{F_t+m₀-m_t} C₀ q_t + Σ_s e^{D_ts-m_t} (q_t·k_s) v_s]
              / max(|e^{F_t+m₀-m_t} n₀·q_t + Σ_s e^{D_ts-m_t} (q_t·k_s)|, e^{-m_t})

    an attention-like ``L × L`` computation, parallel over the chunk; ``m_t`` is exactly the
    sequential stabiliser, so every exponent is <= 0. Chunks follow each other through
    ``lax.scan`` with the memory at each chunk's end. Work is O(T·L·d + T·d²) per head and the
    sequential depth ``T / L``; ``chunk_size = 1`` is the step loop, ``chunk_size >= T`` the
    fully parallel form. Padding steps get ``f = 1, i = 0``, so the memory is held through them.
    With ``resets`` (packed sequences), a write counts only within its own packed sequence and
    the memory carried into a chunk only up to the chunk's first reset; the zero memory a reset
    starts from keeps its place in the stabiliser, so ``m`` (and the returned carry) are still
    exactly the step loop's.

    Same arguments and results as ``rnnjax.scan(mlstm_step, params, carry, xs,
    lengths=lengths, reverse=reverse)`` (with ``dtype``: of ``mlstm_step(..., dtype=dtype)``;
    the projections of all steps run in it, the chunkwise memory in float32).

    >>> cell = mlstm(3, 8, num_heads=2)
    >>> params, c0, xs = cell.init(jax.random.key(0)), cell.initial_carry((2,)), jnp.ones((10, 2, 3))
    >>> _, ys = mlstm_parallel(params, c0, xs, jnp.array([10, 4]), chunk_size=4)
    >>> bool(jnp.allclose(ys, scan(mlstm_step, params, c0, xs, lengths=jnp.array([10, 4]))[1], atol=1e-5))
    True
    """
    check_float("xs", xs)
    if xs.ndim < 2 or xs.shape[0] == 0:
        raise ValueError(f"xs: expected shape [T, *batch, I] with T >= 1, got {tuple(xs.shape)}")
    if not isinstance(reverse, bool):
        raise TypeError(f"reverse: expected a bool, got {reverse!r}")
    chunk_size = check_int("chunk_size", chunk_size)
    heads, d, batch = _check_mlstm(params, carry, xs[0])
    if lengths is not None:
        check_array("lengths", lengths)
        if tuple(lengths.shape) != batch:
            raise ValueError(
                f"lengths: expected shape [{', '.join(map(str, batch))}] (the batch axes of xs), "
                f"got {tuple(lengths.shape)}"
            )
    if resets is not None:
        resets, _ = check_resets(resets, xs)
    return _mlstm_parallel(params, carry, xs, lengths, reverse, chunk_size, _compute_dtype(dtype), resets)


@partial(jax.jit, static_argnums=(4, 5, 6))
def _mlstm_parallel(params, carry, xs, lengths, reverse, chunk_size, dtype, resets):
    num_steps = xs.shape[0]
    heads = params.w_i.shape[1]
    d = params.w_q.shape[1] // heads
    if lengths is not None:
        lengths = jnp.clip(jnp.asarray(lengths), 0, num_steps)
    fresh = fresh_steps(resets, lengths, num_steps, reverse)
    if reverse:
        xs = flip_sequences(xs, lengths)
        fresh = None if fresh is None else flip_sequences(fresh, lengths)  # in processing order
    final, h_tilde = mlstm_chunkwise(carry, _mlstm_inputs(params, xs, heads, d, dtype), lengths, chunk_size, fresh)
    ys = _mlstm_out(params, h_tilde, xs, dtype)
    if lengths is not None:
        mask = steps_mask(lengths, num_steps)[..., None]
        ys = jnp.where(mask, ys, jnp.zeros((), ys.dtype))
    if reverse:
        ys = flip_sequences(ys, lengths)
    return final, ys.astype(carry.C.dtype)


def mlstm_chunkwise(carry: MLSTMState, inputs, lengths, chunk_size: int, fresh=None):
    """``(final carry, h̃ [T, *batch, heads, d])`` of the forward recurrence from
    ``inputs = (q, k, v, ĩ, log f)`` (each ``[T, *batch, heads, ...]``), chunk by chunk;
    ``fresh: [T, *batch]`` (or None) marks the steps before which the memory is reset."""
    num_steps = inputs[0].shape[0]
    batch = inputs[3].shape[1:-1]
    dtype = jnp.result_type(*inputs, carry.C)
    q, k, v, i_tilde, log_f = (a.astype(dtype) for a in inputs)
    chunk = min(chunk_size, num_steps)
    padded = -(-num_steps // chunk) * chunk
    valid = jnp.arange(padded).reshape((padded,) + (1,) * len(batch)) < (num_steps if lengths is None else lengths)
    valid = valid[..., None]  # [T', *batch, 1]

    def pad(a):
        return jnp.pad(a, [(0, padded - num_steps)] + [(0, 0)] * (a.ndim - 1))

    q, k, v, i_tilde, log_f = map(pad, (q, k, v, i_tilde, log_f))
    i_tilde = jnp.where(valid, i_tilde, -jnp.inf)  # padding: i = 0, f = 1, the memory is held
    log_f = jnp.where(valid, log_f, jnp.zeros((), dtype))
    per_step = (q, k, v, i_tilde, log_f)
    if fresh is not None:
        fresh = jnp.broadcast_to(fresh.reshape(fresh.shape + (1,) * (1 + len(batch) - fresh.ndim)),
                                 (num_steps, *batch))
        per_step += (pad(fresh)[..., None],)  # [T', *batch, 1]

    def chunks(a):
        return a.reshape((padded // chunk, chunk) + a.shape[1:])

    state0 = MLSTMState(*(a.astype(dtype) for a in carry))
    final, h_tilde = jax.lax.scan(_mlstm_chunk, state0, tuple(map(chunks, per_step)))
    h_tilde = h_tilde.reshape((padded,) + h_tilde.shape[2:])[:num_steps]
    final = MLSTMState(*(a.astype(b.dtype) for a, b in zip(final, carry, strict=True)))
    return final, h_tilde


def _small_init(key, shape, dim, dtype):
    """xLSTM's "small init": ``N(0, 2 / (5 dim))``."""
    std = math.sqrt(2.0 / (5.0 * dim))
    return (std * jax.random.normal(key, shape, jnp.promote_types(dtype, jnp.float32))).astype(dtype)


def _check_heads(hidden_size: int, num_heads: Any) -> int:
    heads = check_int("num_heads", num_heads)
    if hidden_size % heads:
        raise ValueError(f"num_heads: expected a divisor of hidden_size = {hidden_size}, got {num_heads!r}")
    return heads


def mlstm(
    input_size: int,
    hidden_size: int,
    *,
    num_heads: int = 4,
    param_dtype=jnp.float32,
    dtype=None,
    carry_dtype=jnp.float32,
) -> Cell:
    """mLSTM cell (matrix memory, ``num_heads`` heads of size ``hidden_size / num_heads``); see ``mlstm_step``.

    Initialised as the xLSTM reference code does: query, key, value and output-gate weights
    ``N(0, 2/(5I))`` (its "small init"), their biases zero; input- and forget-gate weights zero,
    input-gate biases ``N(0, 0.1²)``, forget-gate biases evenly spaced over ``[3, 6]`` across the
    heads (``σ(3) ≈ 0.95`` to ``σ(6) ≈ 0.998``: long memory at the start). The initial carry is
    zeros (``m = 0``).

    Args:
      input_size: ``I``.
      hidden_size: ``H = heads · d``, the size of ``y``.
      num_heads: number of heads (the paper's default 4); must divide ``H``.
      param_dtype, dtype, carry_dtype: the precision policy of ``rnnjax.lstm`` (storage, the
        products' operands with float32 accumulation, the state).

    >>> cell = mlstm(8, 16)
    >>> cell.init(jax.random.key(0)).b_f
    Array([3., 4., 5., 6.], dtype=float32)
    """
    compute = _compute_dtype(dtype)  # the products' dtype; `dtype` below is the storage dtype
    dtype = _param_dtype(param_dtype, carry_dtype)
    check_sizes(input_size=input_size, hidden_size=hidden_size)
    heads = _check_heads(hidden_size, num_heads)
    d = hidden_size // heads

    def init(key) -> MLSTMParams:
        kq, kk, kv, ko, ki = jax.random.split(key, 5)
        shape = (input_size, hidden_size)
        f32 = jnp.promote_types(dtype, jnp.float32)
        return MLSTMParams(
            w_q=_small_init(kq, shape, input_size, dtype), b_q=jnp.zeros(hidden_size, dtype),
            w_k=_small_init(kk, shape, input_size, dtype), b_k=jnp.zeros(hidden_size, dtype),
            w_v=_small_init(kv, shape, input_size, dtype), b_v=jnp.zeros(hidden_size, dtype),
            w_i=jnp.zeros((input_size, heads), dtype),
            b_i=(0.1 * jax.random.normal(ki, (heads,), f32)).astype(dtype),
            w_f=jnp.zeros((input_size, heads), dtype),
            b_f=jnp.linspace(3.0, 6.0, heads, dtype=f32).astype(dtype),
            w_o=_small_init(ko, shape, input_size, dtype), b_o=jnp.zeros(hidden_size, dtype),
        )

    def initial_carry(batch_shape=()):
        batch = check_batch_shape(batch_shape)
        return MLSTMState(jnp.zeros(batch + (heads, d, d), carry_dtype), jnp.zeros(batch + (heads, d), carry_dtype),
                          jnp.zeros(batch + (heads,), carry_dtype))

    return Cell(init, initial_carry, mlstm_step if compute is None else partial(mlstm_step, dtype=compute))


# ----------------------------------------------------------------------------------- sLSTM


def _check_slstm(params: SLSTMParams, carry: Any, x: Any) -> tuple[int, int, tuple]:
    _check_params_type(params, SLSTMParams)
    _check_carry_type(carry, SLSTMState)
    check_float("params.r", params.r)
    if params.r.ndim != 3 or params.r.shape[2] != 4 * params.r.shape[1]:
        raise ValueError(f"params.r: expected shape [heads, d, 4d], got {tuple(params.r.shape)}")
    heads, d = params.r.shape[:2]
    hid = heads * d
    check_array("params.w_ih", params.w_ih)
    if params.w_ih.ndim != 2 or params.w_ih.shape[1] != 4 * hid:
        raise ValueError(
            f"params.w_ih: expected shape [I, {4 * hid}] (4H with H = heads · d = {hid} from params.r), "
            f"got {tuple(params.w_ih.shape)}"
        )
    check_shape("params.b", params.b, (4 * hid,))
    batch = _check_x(x, params.w_ih.shape[0], "params.w_ih")
    for name in SLSTMState._fields:
        leaf = getattr(carry, name)
        check_float(f"carry.{name}", leaf)
        check_shape(f"carry.{name}", leaf, batch + (hid,), shown=(*batch, hid))
    return heads, d, batch


def slstm_step(params: SLSTMParams, carry: SLSTMState, x: Array, *, dtype=None):
    """sLSTM step: exponential gating with normaliser and stabiliser, block-diagonal recurrence.

    ::

        [ĩ, f̃, z̃, õ] = x W + h R + b       R block-diagonal: one [d, 4d] block per head
        log f = log σ(f̃)                   (the sigmoid forget gate)
        m' = max(log f + m, ĩ)
        i' = exp(ĩ - m')     f' = exp(log f + m - m')
        c' = f' ⊙ c + i' ⊙ tanh(z̃)       n' = f' ⊙ n + i'
        h' = σ(õ) ⊙ c' / n',   y = h'

    Args:
      params: ``SLSTMParams(w_ih [I, 4H] gates i, f, z, o; r [heads, d, 4d], each head's
        block with gates i, f, z, o; b [4H])``.
      carry: ``SLSTMState(h, c, n, m)``, each ``[*batch, H]``.
      x: ``[*batch, I]``.
      dtype: the dtype of the products' operands (``x W`` and ``h R``; float32 accumulation);
        None: as they are.

    References: Beck et al. 2024, "xLSTM: extended long short-term memory".

    >>> cell = slstm(input_size=3, hidden_size=8, num_heads=2)
    >>> carry, y = slstm_step(cell.init(jax.random.key(0)), cell.initial_carry((5,)), jnp.ones((5, 3)))
    >>> y.shape
    (5, 8)
    """
    heads, d, batch = _check_slstm(params, carry, x)
    h = carry.h.reshape(batch + (heads, d))
    rec = contract("...hd,hde->...he", h, params.r, dtype)  # [*, heads, 4d], per head gates i, f, z, o
    rec = jnp.swapaxes(rec.reshape(batch + (heads, 4, d)), -3, -2).reshape(batch + (4 * heads * d,))
    pre = matmul(x, params.w_ih, dtype) + rec + params.b
    i_t, f_t, z_t, o_t = jnp.split(pre, 4, axis=-1)
    log_f = jax.nn.log_sigmoid(f_t)
    m_new = jnp.maximum(log_f + carry.m, i_t)
    i_gate = jnp.exp(i_t - m_new)
    f_gate = jnp.exp(log_f + carry.m - m_new)
    c_new = f_gate * carry.c + i_gate * jnp.tanh(z_t)
    n_new = f_gate * carry.n + i_gate
    h_new = jax.nn.sigmoid(o_t) * c_new / n_new
    new = SLSTMState(*(a.astype(b.dtype) for a, b in zip((h_new, c_new, n_new, m_new), carry, strict=True)))
    return new, new.h


def slstm(
    input_size: int,
    hidden_size: int,
    *,
    num_heads: int = 4,
    param_dtype=jnp.float32,
    dtype=None,
    carry_dtype=jnp.float32,
) -> Cell:
    """sLSTM cell (``num_heads`` heads with block-diagonal recurrence); see ``slstm_step``.

    Initialised as the xLSTM reference code does by default: input weights ``N(0, 2/(5I))``
    ("small init"), recurrent weights zero, input, cell and output biases zero, and the
    forget-gate bias of unit ``j`` of each head ``5 - 12 (j / (d - 1))^0.3`` (its "power-law"
    initialisation for a single block: from 5 down to -7, a spread of time scales).

    Args:
      input_size: ``I``.
      hidden_size: ``H = heads · d``.
      num_heads: number of heads (the paper's default 4); must divide ``H``.
      param_dtype, dtype, carry_dtype: the precision policy of ``rnnjax.lstm`` (storage, the
        products' operands with float32 accumulation, the state).

    >>> cell = slstm(8, 16)
    >>> cell.init(jax.random.key(0)).r.shape
    (4, 4, 16)
    """
    compute = _compute_dtype(dtype)  # the products' dtype; `dtype` below is the storage dtype
    dtype = _param_dtype(param_dtype, carry_dtype)
    check_sizes(input_size=input_size, hidden_size=hidden_size)
    heads = _check_heads(hidden_size, num_heads)
    d = hidden_size // heads

    def init(key) -> SLSTMParams:
        f32 = jnp.promote_types(dtype, jnp.float32)
        ratio = np.arange(d) / (d - 1) if d > 1 else np.zeros(1)
        forget = np.tile(5.0 - 12.0 * ratio**0.3, heads)  # [H]
        b = np.zeros(4 * hidden_size)
        b[hidden_size:2 * hidden_size] = forget
        return SLSTMParams(
            w_ih=_small_init(key, (input_size, 4 * hidden_size), input_size, dtype),
            r=jnp.zeros((heads, d, 4 * d), dtype),
            b=jnp.asarray(b, f32).astype(dtype),
        )

    def initial_carry(batch_shape=()):
        shape = check_batch_shape(batch_shape) + (hidden_size,)
        return SLSTMState(*(jnp.zeros(shape, carry_dtype) for _ in range(4)))

    return Cell(init, initial_carry, slstm_step if compute is None else partial(slstm_step, dtype=compute))


PARALLEL = {mlstm_step: mlstm_parallel}
