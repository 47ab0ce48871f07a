"""The residual blocks of Mamba, Hawk and xLSTM, built from rnnjax cells and a few generic pieces.

Each block is a ``Cell`` of model width ``D`` (input and output ``[*batch, D]``), so it runs
step by step (``rnnjax.scan``, ``stack``, the decoders) with a carry that holds its causal
convolution's last inputs next to the recurrence's state, and stacks with ``deep`` like any
cell. The Mamba, Hawk and mLSTM blocks also have a whole-sequence form
``*_parallel(params, carry, xs, lengths, reverse)`` with ``rnnjax.scan``'s semantics, evaluated
with the cell's associative scan or chunkwise form (``PARALLEL`` maps each block step to it);
the sLSTM block, like the sLSTM, runs step by step only.

Generic pieces: ``rms_norm``, ``causal_conv_step`` / ``causal_conv`` (a causal depthwise 1-D
convolution, step by step or over a whole sequence) and ``gated_mlp``.
"""

from __future__ import annotations

import math
from functools import partial
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp

from rnnjax._checks import (
    check_batch_shape,
    check_dtype,
    check_float,
    check_int,
    check_shape,
    steps_mask,
)
from rnnjax.cells import Cell, matmul, precision_step
from rnnjax.linear_rnn import (
    RGLRUParams,
    SelectiveSSMParams,
    rg_lru,
    rg_lru_parallel,
    rg_lru_step,
    selective_ssm,
    selective_ssm_parallel,
    selective_ssm_step,
)
from rnnjax.scan import flip_sequences, scan  # noqa: F401  (scan: in the examples)
from rnnjax.xlstm import (
    MLSTMState,
    SLSTMParams,
    SLSTMState,
    mlstm_chunkwise,
    mlstm_memory,
    slstm,
    slstm_step,
)

Array = jax.Array

__all__ = [
    "CausalConvParams",
    "GatedMLPParams",
    "HawkBlockParams",
    "HawkBlockState",
    "MLSTMBlockParams",
    "MLSTMBlockState",
    "MambaBlockParams",
    "MambaBlockState",
    "SLSTMBlockParams",
    "SLSTMBlockState",
    "causal_conv",
    "causal_conv_step",
    "gated_mlp",
    "hawk_block",
    "hawk_block_parallel",
    "hawk_block_step",
    "mamba_block",
    "mamba_block_parallel",
    "mamba_block_step",
    "mlstm_block",
    "mlstm_block_parallel",
    "mlstm_block_step",
    "rms_norm",
    "slstm_block",
    "slstm_block_step",
]


class CausalConvParams(NamedTuple):
    w: Array  # [K, C] one filter per channel; w[K-1] multiplies the current input
    b: Array  # [C]


class GatedMLPParams(NamedTuple):
    w_gate: Array  # [D, M]
    w_up: Array  # [D, M]
    w_down: Array  # [M, D]


class MambaBlockParams(NamedTuple):
    norm: Array  # [D] RMSNorm scale
    w_in: Array  # [D, 2E] input projection to the SSM branch and the gate branch z
    conv: CausalConvParams  # w [K, E], b [E]
    ssm: SelectiveSSMParams  # E channels (w_in None)
    w_out: Array  # [E, D]


class MambaBlockState(NamedTuple):
    conv: Array  # [*batch, K-1, E] the convolution's last K-1 inputs, oldest first
    ssm: Array  # [*batch, E, N]


class HawkBlockParams(NamedTuple):
    norm1: Array  # [D] RMSNorm scale before the temporal mixing
    w_gate: Array  # [D, R] GeLU gate branch
    w_x: Array  # [D, R] recurrent branch
    conv: CausalConvParams  # w [K, R], b [R]
    rnn: RGLRUParams  # R channels (w_in None)
    w_out: Array  # [R, D]
    norm2: Array  # [D] RMSNorm scale before the MLP
    mlp: GatedMLPParams  # D -> M -> D


class HawkBlockState(NamedTuple):
    conv: Array  # [*batch, K-1, R]
    rnn: Array  # [*batch, R]


class MLSTMBlockParams(NamedTuple):
    norm: Array  # [D] layer-norm scale
    w_up: Array  # [D, 2E] up-projection to the mLSTM branch x_m and the gate branch z
    conv: CausalConvParams  # w [K, E], b [E]
    w_q: Array  # [E, E] queries from the convolved branch
    w_k: Array  # [E, E] keys from the convolved branch
    w_v: Array  # [E, E] values from x_m
    w_i: Array  # [3E, heads] input gate from [q; k; v]
    b_i: Array  # [heads]
    w_f: Array  # [3E, heads] forget gate from [q; k; v]
    b_f: Array  # [heads]
    out_norm: Array  # [E] scale of the per-head layer norm of the memory readout
    skip: Array  # [E] learnable skip from the convolved branch
    w_down: Array  # [E, D]


class MLSTMBlockState(NamedTuple):
    conv: Array  # [*batch, K-1, E]
    cell: MLSTMState  # C [*batch, heads, d, d], n [*batch, heads, d], m [*batch, heads]


class SLSTMBlockParams(NamedTuple):
    norm1: Array  # [D] layer-norm scale before the sLSTM
    conv: CausalConvParams  # w [K, D], b [D]
    cell: SLSTMParams  # input [c; h] (2D), hidden D: i, f read c, z, o read h
    out_norm: Array  # [D] scale of the per-head layer norm of the sLSTM output
    norm2: Array  # [D] layer-norm scale before the MLP
    mlp: GatedMLPParams  # D -> M -> D


class SLSTMBlockState(NamedTuple):
    conv: Array  # [*batch, K-1, D]
    cell: SLSTMState  # h, c, n, m [*batch, D]


# ------------------------------------------------------------------------ generic pieces


def rms_norm(x: Array, scale: Array, *, eps: float = 1e-6) -> Array:
    """``x / sqrt(mean(x²) + eps) ⊙ scale`` over the last axis (Zhang & Sennrich 2019).

    >>> rms_norm(jnp.array([3.0, 4.0]), jnp.ones(2))
    Array([0.8485281, 1.1313708], dtype=float32)
    """
    check_float("x", x)
    check_shape("scale", scale, (x.shape[-1],))
    return x * jax.lax.rsqrt(jnp.mean(x * x, axis=-1, keepdims=True) + eps) * scale


def _check_conv(params: CausalConvParams, channels: int | None = None) -> tuple[int, int]:
    check_float("params.w", params.w)
    if params.w.ndim != 2 or (channels is not None and params.w.shape[1] != channels):
        raise ValueError(f"params.w: expected shape [K, {channels if channels is not None else 'C'}], "
                         f"got {tuple(params.w.shape)}")
    k, c = params.w.shape
    check_shape("params.b", params.b, (c,))
    return k, c


def causal_conv_step(params: CausalConvParams, buf: Array, x: Array):
    """One step of a causal depthwise 1-D convolution: ``y_t = Σ_j w[j] ⊙ x_{t-K+1+j} + b``.

    Args:
      params: ``CausalConvParams(w [K, C], b [C])``.
      buf: ``[*batch, K-1, C]``, the previous ``K-1`` inputs, oldest first (zeros at the start).
      x: ``[*batch, C]``.

    Returns ``(buf', y)``: the buffer shifted by one with ``x`` at its end, and ``y [*batch, C]``.

    >>> p = CausalConvParams(jnp.array([[1.0], [10.0]]), jnp.zeros(1))   # K = 2
    >>> buf, y = causal_conv_step(p, jnp.zeros((1, 1)), jnp.array([2.0]))
    >>> y, causal_conv_step(p, buf, jnp.array([3.0]))[1]
    (Array([20.], dtype=float32), Array([32.], dtype=float32))
    """
    k, c = _check_conv(params)
    check_float("x", x)
    if x.ndim < 1 or x.shape[-1] != c:
        raise ValueError(f"x: expected shape [*batch, {c}] (C from params.w), got {tuple(x.shape)}")
    batch = tuple(x.shape[:-1])
    check_shape("carry", buf, batch + (k - 1, c), shown=(*batch, k - 1, c))
    window = jnp.concatenate([buf, x[..., None, :].astype(buf.dtype)], axis=-2)  # [*, K, C]
    y = jnp.sum(window * params.w, axis=-2) + params.b
    return window[..., 1:, :], y


def causal_conv(params: CausalConvParams, buf: Array, xs: Array, lengths: Array | None = None,
                reverse: bool = False):
    """``causal_conv_step`` over a whole sequence ``xs [T, *batch, C]`` at once.

    Same results as ``rnnjax.scan(causal_conv_step, params, buf, xs, lengths=lengths,
    reverse=reverse)``: ``K`` shifted products instead of ``T`` steps; the returned buffer holds
    each sequence's last ``K-1`` valid inputs (preceded by the initial buffer's when shorter).

    >>> p = CausalConvParams(jnp.array([[1.0], [10.0]]), jnp.zeros(1))
    >>> causal_conv(p, jnp.zeros((1, 1)), jnp.array([[2.0], [3.0], [4.0]]))[1][:, 0]
    Array([20., 32., 43.], dtype=float32)
    """
    k, c = _check_conv(params)
    check_float("xs", xs)
    if xs.ndim < 2 or xs.shape[-1] != c or xs.shape[0] == 0:
        raise ValueError(f"xs: expected shape [T, *batch, {c}] with T >= 1, got {tuple(xs.shape)}")
    num_steps, batch = xs.shape[0], tuple(xs.shape[1:-1])
    check_shape("carry", buf, batch + (k - 1, c), shown=(*batch, k - 1, c))
    if lengths is not None:
        lengths = jnp.clip(jnp.asarray(lengths), 0, num_steps)
    if reverse:
        xs = flip_sequences(xs, lengths)
    cat = jnp.concatenate([jnp.moveaxis(buf, -2, 0), xs.astype(buf.dtype)], axis=0)  # [K-1+T, *, C]
    ys = sum(params.w[j] * cat[j:j + num_steps] for j in range(k)) + params.b
    if lengths is None:
        new_buf = cat[num_steps:]
    else:
        idx = lengths[None] + jnp.arange(k - 1).reshape((k - 1,) + (1,) * len(batch))  # [K-1, *batch]
        new_buf = jnp.take_along_axis(cat, idx[..., None], axis=0)
        ys = jnp.where(steps_mask(lengths, num_steps)[..., None], ys, jnp.zeros((), ys.dtype))
    if reverse:
        ys = flip_sequences(ys, lengths)
    return jnp.moveaxis(new_buf, 0, -2), ys


def gated_mlp(params: GatedMLPParams, x: Array, dtype=None) -> Array:
    """Gated MLP with GeLU: ``(gelu(x W_gate) ⊙ (x W_up)) W_down`` (Shazeer 2020, GeGLU).

    >>> p = GatedMLPParams(jnp.ones((2, 3)), jnp.ones((2, 3)), jnp.ones((3, 2)))
    >>> gated_mlp(p, jnp.zeros(2))
    Array([0., 0.], dtype=float32)
    """
    hidden = jax.nn.gelu(matmul(x, params.w_gate, dtype)) * matmul(x, params.w_up, dtype)
    return matmul(hidden, params.w_down, dtype)



def _param_dtype(param_dtype: Any, carry_dtype: Any) -> Any:
    check_dtype("param_dtype", param_dtype)
    check_dtype("carry_dtype", carry_dtype)
    return jnp.dtype(param_dtype)

def _uniform(key, shape, fan_in, dtype):
    """``U(±1/sqrt(fan_in))``, PyTorch's default for linear and convolution layers."""
    bound = 1.0 / math.sqrt(fan_in)
    return jax.random.uniform(key, shape, jnp.promote_types(dtype, jnp.float32), -bound, bound).astype(dtype)


def _lecun(key, shape, fan_in, dtype):
    return (jax.random.normal(key, shape, jnp.promote_types(dtype, jnp.float32)) / math.sqrt(fan_in)).astype(dtype)


def _conv_init(key, k: int, c: int, dtype) -> CausalConvParams:
    k1, k2 = jax.random.split(key)
    return CausalConvParams(_uniform(k1, (k, c), k, dtype), _uniform(k2, (c,), k, dtype))


def _check_block_x(x: Any, d: int) -> tuple:
    check_float("x", x)
    if x.ndim < 1 or x.shape[-1] != d:
        raise ValueError(f"x: expected shape [*batch, {d}] (D from params.norm), got {tuple(x.shape)}")
    return tuple(x.shape[:-1])


def _check_block_carry(carry: Any, expected: type) -> None:
    if not (isinstance(carry, tuple) and all(hasattr(carry, f) for f in expected._fields)):
        given = f"an array of shape {tuple(carry.shape)}" if hasattr(carry, "shape") else type(carry).__name__
        raise TypeError(f"carry: expected {expected.__name__}({', '.join(expected._fields)}) "
                        f"(cell.initial_carry(batch_shape) makes one), got {given}")


def _check_seq(xs: Any, reverse: Any) -> None:
    check_float("xs", xs)
    if xs.ndim < 2 or xs.shape[0] == 0:
        raise ValueError(f"xs: expected shape [T, *batch, D] with T >= 1, got {tuple(xs.shape)}")
    if not isinstance(reverse, bool):
        raise TypeError(f"reverse: expected a bool, got {reverse!r}")


def _zero_padding(ys: Array, lengths) -> Array:
    if lengths is None:
        return ys
    return jnp.where(steps_mask(lengths, ys.shape[0])[..., None], ys, jnp.zeros((), ys.dtype))


# ---------------------------------------------------------------------------- Mamba block


def mamba_block_step(params: MambaBlockParams, carry: MambaBlockState, x: Array, *, dtype=None):
    """One step of the Mamba residual block.

    ::

        [u, z] = RMSNorm(x) W_in                 u, z: [E]
        u = silu(causal_conv(u))                 depthwise, kernel K
        y = S6(u)                                rnnjax.selective_ssm_step, E channels
        out = x + (y ⊙ silu(z)) W_out

    Args:
      params: ``MambaBlockParams(norm [D], w_in [D, 2E], conv, ssm, w_out [E, D])``.
      carry: ``MambaBlockState(conv [*batch, K-1, E], ssm [*batch, E, N])``.
      x: ``[*batch, D]``.

    References: Gu & Dao 2023, "Mamba: linear-time sequence modeling with selective state
    spaces" (Figure 3, and the pre-norm residual stacking of its reference code).

    >>> block = mamba_block(8)
    >>> carry, y = mamba_block_step(block.init(jax.random.key(0)), block.initial_carry((2,)), jnp.ones((2, 8)))
    >>> carry.conv.shape, carry.ssm.shape, y.shape
    ((2, 3, 16), (2, 16, 16), (2, 8))
    """
    _check_block_carry(carry, MambaBlockState)
    _check_block_x(x, params.norm.shape[0])
    u, z = jnp.split(matmul(rms_norm(x, params.norm), params.w_in, dtype), 2, axis=-1)
    conv, u = causal_conv_step(params.conv, carry.conv, u)
    ssm, y = selective_ssm_step(params.ssm, carry.ssm, jax.nn.silu(u), dtype=dtype)
    out = x + matmul(y * jax.nn.silu(z), params.w_out, dtype)
    return MambaBlockState(conv, ssm), out.astype(x.dtype)


def mamba_block_parallel(params: MambaBlockParams, carry: MambaBlockState, xs: Array,
                         lengths: Array | None = None, reverse: bool = False, *, dtype=None):
    """``mamba_block_step`` over a whole sequence: the convolution at once, the SSM as one
    associative scan. Same arguments and results as ``rnnjax.scan(mamba_block_step, ...)``.

    >>> block = mamba_block(4, state_size=2)
    >>> p, c, xs = block.init(jax.random.key(0)), block.initial_carry((2,)), jnp.ones((5, 2, 4))
    >>> _, ys = mamba_block_parallel(p, c, xs, jnp.array([5, 3]))
    >>> bool(jnp.allclose(ys, scan(mamba_block_step, p, c, xs, lengths=jnp.array([5, 3]))[1], atol=1e-5))
    True
    """
    _check_seq(xs, reverse)
    _check_block_carry(carry, MambaBlockState)
    _check_block_x(xs[0], params.norm.shape[0])
    return _mamba_block_parallel(params, carry, xs, lengths, reverse, dtype)


@partial(jax.jit, static_argnums=(4, 5))
def _mamba_block_parallel(params, carry, xs, lengths, reverse, dtype):
    if lengths is not None:
        lengths = jnp.clip(lengths, 0, xs.shape[0])
    if reverse:
        xs = flip_sequences(xs, lengths)
    u, z = jnp.split(matmul(rms_norm(xs, params.norm), params.w_in, dtype), 2, axis=-1)
    conv, u = causal_conv(params.conv, carry.conv, u, lengths)
    ssm, y = selective_ssm_parallel(params.ssm, carry.ssm, jax.nn.silu(u), lengths, False, dtype=dtype)
    ys = _zero_padding(xs + matmul(y * jax.nn.silu(z), params.w_out, dtype), lengths)
    if reverse:
        ys = flip_sequences(ys, lengths)
    return MambaBlockState(conv, ssm), ys.astype(xs.dtype)


def mamba_block(
    d_model: int,
    *,
    expand: int = 2,
    state_size: int = 16,
    conv_size: int = 4,
    dt_rank: int | None = None,
    param_dtype=jnp.float32,
    carry_dtype=jnp.float32,
    dtype=None,
) -> Cell:
    """The Mamba residual block of width ``d_model``; see ``mamba_block_step``.

    Defaults as in the paper: ``E = expand · d_model`` with ``expand = 2``, ``N = 16`` states
    per channel, a convolution of width 4, ``dt_rank = ceil(d_model / 16)``. The SSM is
    initialised as ``rnnjax.selective_ssm`` (S4D-real ``A``, Mamba's ``Δ`` range); projections
    and the convolution as PyTorch's defaults ``U(±1/sqrt(fan_in))`` (Mamba's reference code),
    the norm's scale 1.

    Precision (``param_dtype``, ``dtype``, ``carry_dtype``, as every factory): with ``dtype``
    the products with weights (projections, the inner cell's, the MLP) run in it, forward and
    backward, accumulated in float32; the norms, the convolution, the gates and the state stay
    in float32.

    >>> import rnnjax as rj
    >>> model = rj.deep(mamba_block(16), mamba_block(16))     # two residual blocks
    >>> model.apply(model.init(jax.random.key(0)), jnp.ones((5, 2, 16)))[1].shape
    (5, 2, 16)
    """
    step = precision_step(mamba_block_step, param_dtype, dtype, carry_dtype)
    dtype = _param_dtype(param_dtype, carry_dtype)
    d = check_int("d_model", d_model)
    e = d * check_int("expand", expand)
    k = check_int("conv_size", conv_size)
    n = check_int("state_size", state_size)
    rank = math.ceil(d / 16) if dt_rank is None else check_int("dt_rank", dt_rank)
    ssm_cell = selective_ssm(e, e, state_size=n, dt_rank=rank, param_dtype=dtype, carry_dtype=carry_dtype)

    def init(key) -> MambaBlockParams:
        k_in, k_conv, k_ssm, k_out = jax.random.split(key, 4)
        return MambaBlockParams(
            norm=jnp.ones(d, dtype),
            w_in=_uniform(k_in, (d, 2 * e), d, dtype),
            conv=_conv_init(k_conv, k, e, dtype),
            ssm=ssm_cell.init(k_ssm),
            w_out=_uniform(k_out, (e, d), e, dtype),
        )

    def initial_carry(batch_shape=()):
        batch = check_batch_shape(batch_shape)
        return MambaBlockState(jnp.zeros(batch + (k - 1, e), carry_dtype), ssm_cell.initial_carry(batch))

    return Cell(init, initial_carry, step)


# ----------------------------------------------------------------------------- Hawk block


def hawk_block_step(params: HawkBlockParams, carry: HawkBlockState, x: Array, *, dtype=None):
    """One step of Hawk's residual block: RG-LRU temporal mixing, then a gated MLP.

    ::

        h = RMSNorm₁(x)
        r = RG-LRU(causal_conv(h W_x))           rnnjax.rg_lru_step, R channels
        x = x + (r ⊙ gelu(h W_gate)) W_out       the recurrent block
        x = x + gated_mlp(RMSNorm₂(x))           (gelu(· W_gate) ⊙ (· W_up)) W_down

    Args:
      params: ``HawkBlockParams(norm1 [D], w_gate [D, R], w_x [D, R], conv, rnn, w_out [R, D],
        norm2 [D], mlp)``.
      carry: ``HawkBlockState(conv [*batch, K-1, R], rnn [*batch, R])``.
      x: ``[*batch, D]``.

    References: De et al. 2024, "Griffin: mixing gated linear recurrences with local attention
    for efficient language models" (Figure 2: residual block, recurrent block, gated MLP).

    >>> block = hawk_block(6)
    >>> carry, y = hawk_block_step(block.init(jax.random.key(0)), block.initial_carry((2,)), jnp.ones((2, 6)))
    >>> carry.rnn.shape, y.shape
    ((2, 8), (2, 6))
    """
    _check_block_carry(carry, HawkBlockState)
    _check_block_x(x, params.norm1.shape[0])
    h = rms_norm(x, params.norm1)
    conv, u = causal_conv_step(params.conv, carry.conv, matmul(h, params.w_x, dtype))
    rnn, r = rg_lru_step(params.rnn, carry.rnn, u, dtype=dtype)
    x2 = x + matmul(r * jax.nn.gelu(matmul(h, params.w_gate, dtype)), params.w_out, dtype)
    out = x2 + gated_mlp(params.mlp, rms_norm(x2, params.norm2), dtype)
    return HawkBlockState(conv, rnn), out.astype(x.dtype)


def hawk_block_parallel(params: HawkBlockParams, carry: HawkBlockState, xs: Array,
                        lengths: Array | None = None, reverse: bool = False, *, dtype=None):
    """``hawk_block_step`` over a whole sequence (the RG-LRU as one associative scan). Same
    arguments and results as ``rnnjax.scan(hawk_block_step, ...)``.

    >>> block = hawk_block(4)
    >>> p, c, xs = block.init(jax.random.key(0)), block.initial_carry((2,)), jnp.ones((5, 2, 4))
    >>> _, ys = hawk_block_parallel(p, c, xs, jnp.array([5, 3]), True)
    >>> bool(jnp.allclose(ys, scan(hawk_block_step, p, c, xs, lengths=jnp.array([5, 3]), reverse=True)[1], atol=1e-5))
    True
    """
    _check_seq(xs, reverse)
    _check_block_carry(carry, HawkBlockState)
    _check_block_x(xs[0], params.norm1.shape[0])
    return _hawk_block_parallel(params, carry, xs, lengths, reverse, dtype)


@partial(jax.jit, static_argnums=(4, 5))
def _hawk_block_parallel(params, carry, xs, lengths, reverse, dtype):
    if lengths is not None:
        lengths = jnp.clip(lengths, 0, xs.shape[0])
    if reverse:
        xs = flip_sequences(xs, lengths)
    h = rms_norm(xs, params.norm1)
    conv, u = causal_conv(params.conv, carry.conv, matmul(h, params.w_x, dtype), lengths)
    rnn, r = rg_lru_parallel(params.rnn, carry.rnn, u, lengths, False, dtype=dtype)
    x2 = xs + matmul(r * jax.nn.gelu(matmul(h, params.w_gate, dtype)), params.w_out, dtype)
    ys = _zero_padding(x2 + gated_mlp(params.mlp, rms_norm(x2, params.norm2), dtype), lengths)
    if reverse:
        ys = flip_sequences(ys, lengths)
    return HawkBlockState(conv, rnn), ys.astype(xs.dtype)


def hawk_block(
    d_model: int,
    *,
    rnn_width: int | None = None,
    mlp_expansion: int = 3,
    conv_size: int = 4,
    param_dtype=jnp.float32,
    carry_dtype=jnp.float32,
    dtype=None,
) -> Cell:
    """Hawk's residual block of width ``d_model``; see ``hawk_block_step``.

    Defaults as in the paper: RNN width ``R = ceil(4 D / 3)``, MLP expansion 3, convolution
    width 4. The RG-LRU is initialised as ``rnnjax.rg_lru``; projections LeCun-normal
    (``N(0, 1/fan_in)``), the convolution ``U(±1/sqrt(K))``, norm scales 1.

    Precision (``param_dtype``, ``dtype``, ``carry_dtype``, as every factory): with ``dtype``
    the products with weights (projections, the inner cell's, the MLP) run in it, forward and
    backward, accumulated in float32; the norms, the convolution, the gates and the state stay
    in float32.

    >>> block = hawk_block(12)
    >>> jax.eval_shape(block.init, jax.random.key(0)).mlp.w_up.shape
    (12, 36)
    """
    step = precision_step(hawk_block_step, param_dtype, dtype, carry_dtype)
    dtype = _param_dtype(param_dtype, carry_dtype)
    d = check_int("d_model", d_model)
    r = math.ceil(4 * d / 3) if rnn_width is None else check_int("rnn_width", rnn_width)
    m = d * check_int("mlp_expansion", mlp_expansion)
    k = check_int("conv_size", conv_size)
    rnn_cell = rg_lru(r, r, param_dtype=dtype, carry_dtype=carry_dtype)

    def init(key) -> HawkBlockParams:
        ks = jax.random.split(key, 8)
        return HawkBlockParams(
            norm1=jnp.ones(d, dtype),
            w_gate=_lecun(ks[0], (d, r), d, dtype),
            w_x=_lecun(ks[1], (d, r), d, dtype),
            conv=_conv_init(ks[2], k, r, dtype),
            rnn=rnn_cell.init(ks[3]),
            w_out=_lecun(ks[4], (r, d), r, dtype),
            norm2=jnp.ones(d, dtype),
            mlp=GatedMLPParams(_lecun(ks[5], (d, m), d, dtype), _lecun(ks[6], (d, m), d, dtype),
                               _lecun(ks[7], (m, d), m, dtype)),
        )

    def initial_carry(batch_shape=()):
        batch = check_batch_shape(batch_shape)
        return HawkBlockState(jnp.zeros(batch + (k - 1, r), carry_dtype), rnn_cell.initial_carry(batch))

    return Cell(init, initial_carry, step)


# ---------------------------------------------------------------------------- xLSTM blocks


def _layer_norm(x: Array, scale: Array, eps: float = 1e-5) -> Array:
    """Bias-free layer norm over the last axis (xLSTM's norms have a scale and no bias)."""
    mu = jnp.mean(x, axis=-1, keepdims=True)
    var = jnp.mean(jnp.square(x - mu), axis=-1, keepdims=True)
    return (x - mu) * jax.lax.rsqrt(var + eps) * scale


def _head_norm(h: Array, scale: Array, heads: int) -> Array:
    """Layer norm of each head's ``d`` features separately (xLSTM's multi-head layer norm)."""
    split = h.reshape(h.shape[:-1] + (heads, -1))
    return _layer_norm(split, 1.0).reshape(h.shape) * scale


def _mlstm_block_inputs(params: MLSTMBlockParams, xm: Array, c: Array, dtype=None):
    heads = params.w_i.shape[1]
    e = params.w_q.shape[1]
    d = e // heads
    split = c.shape[:-1] + (heads, d)
    q, k, v = matmul(c, params.w_q, dtype), matmul(c, params.w_k, dtype), matmul(xm, params.w_v, dtype)
    gate_in = jnp.concatenate([q, k, v], axis=-1)
    i_tilde = matmul(gate_in, params.w_i, dtype) + params.b_i
    log_f = jax.nn.log_sigmoid(matmul(gate_in, params.w_f, dtype) + params.b_f)
    return q.reshape(split), (k / math.sqrt(d)).reshape(split), v.reshape(split), i_tilde, log_f


def _mlstm_block_out(params: MLSTMBlockParams, x, h_tilde, c, z, dtype=None):
    heads = params.w_i.shape[1]
    h = _head_norm(h_tilde.reshape(h_tilde.shape[:-2] + (-1,)), params.out_norm, heads)
    return x + matmul((h + params.skip * c) * jax.nn.silu(z), params.w_down, dtype)


def _check_mlstm_block_carry(carry: Any) -> None:
    _check_block_carry(carry, MLSTMBlockState)
    _check_block_carry(carry.cell, MLSTMState)


def mlstm_block_step(params: MLSTMBlockParams, carry: MLSTMBlockState, x: Array, *, dtype=None):
    """One step of the xLSTM mLSTM block (pre up-projection).

    ::

        [x_m, z] = LayerNorm(x) W_up                      [E] each, E = 2D
        c = silu(causal_conv(x_m))
        q = c W_q    k = (c W_k) / √d    v = x_m W_v       per head, d = E / heads
        ĩ = [q; k; v] w_i + b_i    log f = log σ([q; k; v] w_f + b_f)
        h̃ = mLSTM memory(q, k, v, ĩ, f)                   as in rnnjax.mlstm_step, no output gate
        out = x + ((HeadNorm(h̃) + skip ⊙ c) ⊙ silu(z)) W_down

    Args:
      params: ``MLSTMBlockParams(norm, w_up, conv, w_q, w_k, w_v, w_i, b_i, w_f, b_f, out_norm,
        skip, w_down)``.
      carry: ``MLSTMBlockState(conv [*batch, K-1, E], cell MLSTMState)``.
      x: ``[*batch, D]``.

    References: Beck et al. 2024, "xLSTM: extended long short-term memory" (the mLSTM block,
    Figure 10, and its reference implementation, whose q, k, v projections are block-diagonal
    with blocks of 4; here they are dense).

    >>> block = mlstm_block(8, num_heads=2)
    >>> carry, y = mlstm_block_step(block.init(jax.random.key(0)), block.initial_carry((3,)), jnp.ones((3, 8)))
    >>> carry.cell.C.shape, y.shape
    ((3, 2, 8, 8), (3, 8))
    """
    _check_mlstm_block_carry(carry)
    _check_block_x(x, params.norm.shape[0])
    xm, z = jnp.split(matmul(_layer_norm(x, params.norm), params.w_up, dtype), 2, axis=-1)
    conv, c = causal_conv_step(params.conv, carry.conv, xm)
    c = jax.nn.silu(c)
    cell, h_tilde = mlstm_memory(carry.cell, *_mlstm_block_inputs(params, xm, c, dtype))
    return MLSTMBlockState(conv, cell), _mlstm_block_out(params, x, h_tilde, c, z, dtype).astype(x.dtype)


def mlstm_block_parallel(params: MLSTMBlockParams, carry: MLSTMBlockState, xs: Array,
                         lengths: Array | None = None, reverse: bool = False, *, chunk_size: int = 64,
                         dtype=None):
    """``mlstm_block_step`` over a whole sequence, the memory in the chunkwise-parallel form of
    ``rnnjax.mlstm_parallel``. Same arguments and results as ``rnnjax.scan(mlstm_block_step, ...)``.

    >>> block = mlstm_block(4, num_heads=2)
    >>> p, c, xs = block.init(jax.random.key(0)), block.initial_carry((2,)), jnp.ones((5, 2, 4))
    >>> _, ys = mlstm_block_parallel(p, c, xs, jnp.array([5, 3]), chunk_size=2)
    >>> bool(jnp.allclose(ys, scan(mlstm_block_step, p, c, xs, lengths=jnp.array([5, 3]))[1], atol=1e-5))
    True
    """
    _check_seq(xs, reverse)
    _check_mlstm_block_carry(carry)
    _check_block_x(xs[0], params.norm.shape[0])
    return _mlstm_block_parallel(params, carry, xs, lengths, reverse, check_int("chunk_size", chunk_size), dtype)


@partial(jax.jit, static_argnums=(4, 5, 6))
def _mlstm_block_parallel(params, carry, xs, lengths, reverse, chunk_size, dtype):
    if lengths is not None:
        lengths = jnp.clip(lengths, 0, xs.shape[0])
    if reverse:
        xs = flip_sequences(xs, lengths)
    xm, z = jnp.split(matmul(_layer_norm(xs, params.norm), params.w_up, dtype), 2, axis=-1)
    conv, c = causal_conv(params.conv, carry.conv, xm, lengths)
    c = jax.nn.silu(c)
    cell, h_tilde = mlstm_chunkwise(carry.cell, _mlstm_block_inputs(params, xm, c, dtype), lengths, chunk_size)
    ys = _zero_padding(_mlstm_block_out(params, xs, h_tilde, c, z, dtype), lengths)
    if reverse:
        ys = flip_sequences(ys, lengths)
    return MLSTMBlockState(conv, cell), ys.astype(xs.dtype)


def _small(key, shape, dim, dtype):
    return (math.sqrt(2.0 / (5.0 * dim)) * jax.random.normal(key, shape, jnp.promote_types(dtype, jnp.float32))
            ).astype(dtype)


def mlstm_block(
    d_model: int,
    *,
    expansion: int = 2,
    num_heads: int = 4,
    conv_size: int = 4,
    param_dtype=jnp.float32,
    carry_dtype=jnp.float32,
    dtype=None,
) -> Cell:
    """The xLSTM mLSTM block of width ``d_model``; see ``mlstm_block_step``.

    Defaults as in the paper: up-projection factor 2, 4 heads, convolution width 4.
    Initialised as the reference code: projections ``N(0, 2/(5·fan_in))`` ("small init"),
    gate weights zero, input-gate biases ``N(0, 0.1²)``, forget-gate biases evenly spaced in
    ``[3, 6]``, the skip and norm scales 1, the convolution ``U(±1/sqrt(K))``.

    Precision (``param_dtype``, ``dtype``, ``carry_dtype``, as every factory): with ``dtype``
    the products with weights (projections, the inner cell's, the MLP) run in it, forward and
    backward, accumulated in float32; the norms, the convolution, the gates and the state stay
    in float32.

    >>> jax.eval_shape(mlstm_block(16).init, jax.random.key(0)).w_i.shape   # [3E, heads]
    (96, 4)
    """
    step = precision_step(mlstm_block_step, param_dtype, dtype, carry_dtype)
    dtype = _param_dtype(param_dtype, carry_dtype)
    d = check_int("d_model", d_model)
    e = d * check_int("expansion", expansion)
    heads = check_int("num_heads", num_heads)
    if e % heads:
        raise ValueError(f"num_heads: expected a divisor of expansion · d_model = {e}, got {num_heads!r}")
    k = check_int("conv_size", conv_size)
    dh = e // heads

    def init(key) -> MLSTMBlockParams:
        ks = jax.random.split(key, 7)
        f32 = jnp.promote_types(dtype, jnp.float32)
        return MLSTMBlockParams(
            norm=jnp.ones(d, dtype),
            w_up=_small(ks[0], (d, 2 * e), d, dtype),
            conv=_conv_init(ks[1], k, e, dtype),
            w_q=_small(ks[2], (e, e), e, dtype),
            w_k=_small(ks[3], (e, e), e, dtype),
            w_v=_small(ks[4], (e, e), e, dtype),
            w_i=jnp.zeros((3 * e, heads), dtype),
            b_i=(0.1 * jax.random.normal(ks[5], (heads,), f32)).astype(dtype),
            w_f=jnp.zeros((3 * e, heads), dtype),
            b_f=jnp.linspace(3.0, 6.0, heads, dtype=f32).astype(dtype),
            out_norm=jnp.ones(e, dtype),
            skip=jnp.ones(e, dtype),
            w_down=_small(ks[6], (e, d), e, dtype),
        )

    def initial_carry(batch_shape=()):
        batch = check_batch_shape(batch_shape)
        z = partial(jnp.zeros, dtype=carry_dtype)
        return MLSTMBlockState(z(batch + (k - 1, e)),
                               MLSTMState(z(batch + (heads, dh, dh)), z(batch + (heads, dh)), z(batch + (heads,))))

    return Cell(init, initial_carry, step)


def _slstm_input_mask(d: int, dtype) -> Array:
    """``[2D, 4D]``: the gates i, f read the convolved input c, the gates z, o the normed input h."""
    top = jnp.concatenate([jnp.ones((d, 2 * d)), jnp.zeros((d, 2 * d))], axis=1)
    return jnp.concatenate([top, 1.0 - top], axis=0).astype(dtype)


def slstm_block_step(params: SLSTMBlockParams, carry: SLSTMBlockState, x: Array, *, dtype=None):
    """One step of the xLSTM sLSTM block (post up-projection).

    ::

        h = LayerNorm₁(x)       c = silu(causal_conv(h))
        y = sLSTM([c; h])       rnnjax.slstm_step; gates i, f read c, gates z, o read h
        x = x + HeadNorm(y)
        x = x + gated_mlp(LayerNorm₂(x))          (gelu(· W_gate) ⊙ (· W_up)) W_down

    The sLSTM's input weights act through a fixed mask, so the i, f columns see only ``c`` and
    the z, o columns only ``h`` whatever the params hold.

    Args:
      params: ``SLSTMBlockParams(norm1, conv, cell SLSTMParams(w_ih [2D, 4D], r, b), out_norm,
        norm2, mlp)``.
      carry: ``SLSTMBlockState(conv [*batch, K-1, D], cell SLSTMState)``.
      x: ``[*batch, D]``.

    References: Beck et al. 2024, "xLSTM: extended long short-term memory" (the sLSTM block,
    Figure 9; the reference code's gate projections are block-diagonal per head, here dense).

    >>> block = slstm_block(8, num_heads=2)
    >>> carry, y = slstm_block_step(block.init(jax.random.key(0)), block.initial_carry((3,)), jnp.ones((3, 8)))
    >>> carry.cell.c.shape, y.shape
    ((3, 8), (3, 8))
    """
    _check_block_carry(carry, SLSTMBlockState)
    d = params.norm1.shape[0]
    _check_block_x(x, d)
    h = _layer_norm(x, params.norm1)
    conv, c = causal_conv_step(params.conv, carry.conv, h)
    cell_params = params.cell._replace(w_ih=params.cell.w_ih * _slstm_input_mask(d, params.cell.w_ih.dtype))
    cell, y = slstm_step(cell_params, carry.cell, jnp.concatenate([jax.nn.silu(c), h], axis=-1), dtype=dtype)
    heads = params.cell.r.shape[0]
    x2 = x + _head_norm(y, params.out_norm, heads)
    out = x2 + gated_mlp(params.mlp, _layer_norm(x2, params.norm2), dtype)
    return SLSTMBlockState(conv, cell), out.astype(x.dtype)


def slstm_block(
    d_model: int,
    *,
    num_heads: int = 4,
    conv_size: int = 4,
    mlp_size: int | None = None,
    param_dtype=jnp.float32,
    carry_dtype=jnp.float32,
    dtype=None,
) -> Cell:
    """The xLSTM sLSTM block of width ``d_model``; see ``slstm_block_step``.

    Defaults as in the paper: 4 heads, convolution width 4, MLP size ``ceil(4 D / 3)``. The
    sLSTM is initialised as ``rnnjax.slstm`` (its input-weight blocks that the mask removes are
    zero), the MLP "small init" ``N(0, 2/(5·fan_in))``, norm scales 1.

    Precision (``param_dtype``, ``dtype``, ``carry_dtype``, as every factory): with ``dtype``
    the products with weights (projections, the inner cell's, the MLP) run in it, forward and
    backward, accumulated in float32; the norms, the convolution, the gates and the state stay
    in float32.

    >>> jax.eval_shape(slstm_block(12).init, jax.random.key(0)).mlp.w_up.shape
    (12, 16)
    """
    step = precision_step(slstm_block_step, param_dtype, dtype, carry_dtype)
    dtype = _param_dtype(param_dtype, carry_dtype)
    d = check_int("d_model", d_model)
    k = check_int("conv_size", conv_size)
    m = math.ceil(4 * d / 3) if mlp_size is None else check_int("mlp_size", mlp_size)
    cell = slstm(2 * d, d, num_heads=num_heads, param_dtype=dtype, carry_dtype=carry_dtype)

    def init(key) -> SLSTMBlockParams:
        ks = jax.random.split(key, 5)
        p = cell.init(ks[0])
        p = p._replace(w_ih=p.w_ih * _slstm_input_mask(d, p.w_ih.dtype))
        return SLSTMBlockParams(
            norm1=jnp.ones(d, dtype),
            conv=_conv_init(ks[1], k, d, dtype),
            cell=p,
            out_norm=jnp.ones(d, dtype),
            norm2=jnp.ones(d, dtype),
            mlp=GatedMLPParams(_small(ks[2], (d, m), d, dtype), _small(ks[3], (d, m), d, dtype),
                               _small(ks[4], (m, d), m, dtype)),
        )

    def initial_carry(batch_shape=()):
        batch = check_batch_shape(batch_shape)
        return SLSTMBlockState(jnp.zeros(batch + (k - 1, d), carry_dtype), cell.initial_carry(batch))

    return Cell(init, initial_carry, step)


PARALLEL = {
    mamba_block_step: mamba_block_parallel,
    hawk_block_step: hawk_block_parallel,
    mlstm_block_step: mlstm_block_parallel,
}
