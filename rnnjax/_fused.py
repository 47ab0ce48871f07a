"""Whole-sequence kernels for the built-in Elman, LSTM and GRU cells, with a hand-written VJP.

``rnnjax.scan`` runs ``elman_step``, ``lstm_step`` and ``gru_step`` through these kernels (the
registry of built-in cells, ``rnnjax/_registry.py``, names each step's kernel). Their
values and gradients are those of the plain step loop, up to float rounding; what changes is
the layout of the work:

* forward, per time step as in the step, but each gate's pre-activation is its own ``[B, H]``
  product of ``[x_t, h_{t-1}]`` with that gate's columns of ``[W_ih; W_hh]``, instead of one
  ``[B, GH]`` product cut into column blocks (the gate arithmetic on contiguous arrays is
  faster, and one contraction then gives ``dW_ih`` and ``dW_hh`` together);
* backward: autodiff of ``lax.scan`` would compute, at every step, ``h_{t-1}ᵀ dZ_t`` and
  ``x_tᵀ dZ_t`` (``[H, B] x [B, GH]`` products) and add them into ``[H, GH]`` accumulators, and
  save more intermediates than it needs. Here the backward pass is a reversed scan that
  carries only ``(dh, dc)`` and emits the gradient ``dZ_t`` of each step's gate
  pre-activations, with one ``[B, GH] x [GH, H]`` matmul per step. The weight gradients are
  then single large matmuls over all steps at once::

      [dW_ih; dW_hh] = Σ_t [x_t, h_{t-1}]ᵀ dZ_t      db = Σ_{t,b} dZ_t      dX = dZ W_ihᵀ

* the forward pass saves only what the backward needs: ``[x_t, h_{t-1}]`` (or ``h_{t-1}``),
  ``c_{t-1}`` and the gate activations.

The forward layout is chosen per platform when the function is lowered
(``lax.platform_dependent``): the per-gate ``[x_t, h_{t-1}]`` products above on CPU, where
they measured fastest, and on GPU/TPU the layout of cuDNN — the input projection of all ``T``
steps as one large GEMM before the loop, then one stacked ``[B, H] x [H, GH]`` recurrent
product per step. Both save the same residuals, so the backward pass is shared; ``LAYOUT``
forces one of them (the tests compare them). Written in plain ``jax.lax``, the kernels run
on any backend. Padding (``valid[t, b] = False``) holds the carry and outputs zeros, exactly as in
``rnnjax.scan``; it gets no gradient. A reset (``fresh[t, b] = True``, from ``rnnjax.scan``'s
``resets``) sets the carry to zeros just before step ``t``, and no gradient crosses it back.
Reverse-mode differentiation (to any order), ``jit`` and
``vmap`` work; forward mode (``jvp``) does not, as for any ``jax.custom_vjp``.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from functools import partial

import jax
import jax.numpy as jnp
from jax import lax

from rnnjax._checks import steps_mask
from rnnjax.cells import ElmanParams, GRUParams, LSTMParams, LSTMState, matmul

Array = jax.Array

_sigmoid = jax.nn.sigmoid


def _pick(valid, new, old):
    """``where(valid, new, old)`` with ``valid: [B]`` broadcast over the feature axis."""
    return new if valid is None else jnp.where(valid[:, None], new, old)


def _fresh(fresh, x):
    """``x`` with the rows where ``fresh: [B]`` is True set to zero (a carry reset), else ``x``."""
    return x if fresh is None else jnp.where(fresh[:, None], jnp.zeros_like(x), x)


def _contract_time_batch(a: Array, b: Array, dtype=None) -> Array:
    """``Σ_{t,b} a[t, b, :]ᵀ b[t, b, :]`` as one ``[M, T·B] x [T·B, N]`` matmul -> ``[M, N]``.

    With ``dtype`` the operands are cast to it and the sum accumulated in float32.
    """
    dims = (((0, 1), (0, 1)), ((), ()))
    if dtype is None:
        return lax.dot_general(a, b, dims)
    return lax.dot_general(a.astype(dtype), b.astype(dtype), dims, preferred_element_type=jnp.float32)


def _grads_of_projection(w_ih, xs, d_xw, dtype):
    """Gradients of ``XW = X W_ih + b`` given ``dXW`` for all steps: ``(dW_ih, db, dX)``."""
    dw_ih = _contract_time_batch(xs, d_xw, dtype).astype(w_ih.dtype)  # [I, GH]
    db = jnp.sum(d_xw, axis=(0, 1))  # [GH]
    dxs = matmul(d_xw, w_ih.T, dtype).astype(xs.dtype)  # [T, B, I]
    return dw_ih, db, dxs


def _cast(w: Array, dtype) -> Array:
    """Weights in the compute dtype, cast once outside the time loop."""
    return w if dtype is None else w.astype(dtype)


def _scan(body, carry, xs, reverse, unroll):
    return lax.scan(body, carry, xs, reverse=reverse, unroll=unroll)


# None: the forward layout is chosen per platform when lowering (per-gate products on CPU, the
# hoisted input GEMM and one stacked recurrent product elsewhere); "cpu" / "accelerator" force one.
LAYOUT: str | None = None


def _by_platform(cpu: Callable, accelerator: Callable, *args):
    """``cpu(*args)`` when lowered for CPU, else ``accelerator(*args)`` (unless ``LAYOUT`` forces one)."""
    if LAYOUT == "cpu":
        return cpu(*args)
    if LAYOUT == "accelerator":
        return accelerator(*args)
    return lax.platform_dependent(*args, cpu=cpu, default=accelerator)


# ------------------------------------------------------------------------------------- LSTM
#
# Layout: each gate's pre-activation is its own [B, H] product ``[x_t, h_{t-1}] W_gate`` with
# ``W_gate`` the gate's columns of ``[W_ih; W_hh]`` ([I+H, H]), rather than one [B, 4H]
# product split into column blocks afterwards: on XLA:CPU the gate arithmetic on contiguous
# [B, H] arrays measured ~25% faster (B=32, I=128, H=256) and no slower at B=64, H=512.


def _gate_weights(w_ih: Array, w_hh: Array, num_gates: int, dtype=None) -> list[Array]:
    """The columns of ``[W_ih; W_hh]`` ([I+H, GH]) for each gate: G arrays ``[I+H, H]``."""
    return jnp.split(_cast(jnp.concatenate([w_ih, w_hh], axis=0), dtype), num_gates, axis=1)


# Forward-only (inference) runs above this many multiply-adds per step and gate use one
# [B, I+H] x [I+H, 4H] product instead of one per gate: XLA:CPU splits the large product over
# its threads. Measured A/B (load ~1): B=64 I=256 H=512 (25M per gate) inference 1.08-1.17x
# faster stacked; B=32 I=128 H=256 (12.6M) 1.2x slower stacked; the training step (forward
# saving residuals + fused backward) was 0.93x at both sizes stacked, so it stays per gate.
STACKED_MIN_MACS = 20_000_000


def _stacked(batch, in_size: int, hidden: int, save: bool) -> bool:
    """Whether a step's gate products are one stacked matmul (else one per gate).

    A symbolic batch size (``jax.export`` with a dynamic batch) cannot be compared with the
    threshold: such a function keeps one product per gate, the layout of every other case.
    """
    if save or jax.export.is_symbolic_dim(batch):
        return False
    return batch * (in_size + hidden) * hidden >= STACKED_MIN_MACS


def _lstm_forward(reverse, unroll, dtype, params, h0, c0, xs, valid, fresh, save: bool):
    run = partial(_lstm_forward_cpu, reverse, unroll, dtype, save=save)
    hoisted = partial(_lstm_forward_hoisted, reverse, unroll, dtype, save=save)
    return _by_platform(run, hoisted, params, h0, c0, xs, valid, fresh)


def _lstm_cell(zi, zf, zg, zo, h, c, m):
    """The LSTM update from gate pre-activations; returns the new carry, ``y`` and ``(i, f, g, o)``."""
    i, f, g, o = _sigmoid(zi), _sigmoid(zf), jnp.tanh(zg), _sigmoid(zo)
    c_full = f * c + i * g
    h_new = (o * jnp.tanh(c_full)).astype(h.dtype)
    c_new = c_full.astype(c.dtype)
    y = h_new if m is None else jnp.where(m[:, None], h_new, 0)
    return (_pick(m, h_new, h), _pick(m, c_new, c)), y, (i, f, g, o)


def _lstm_forward_hoisted(reverse, unroll, dtype, params: LSTMParams, h0, c0, xs, valid, fresh, *, save: bool):
    xw = matmul(xs, _cast(params.w_ih, dtype), dtype) + params.b  # [T, B, 4H]: one GEMM, all steps
    w_hh = _cast(params.w_hh, dtype)  # [H, 4H]

    def body(carry, inp):
        xw_t, x, m, r = inp
        h, c = _fresh(r, carry[0]), _fresh(r, carry[1])
        z = xw_t + matmul(h, w_hh, dtype)  # [B, 4H]: one recurrent product per step
        new, y, acts = _lstm_cell(*jnp.split(z, 4, axis=-1), h, c, m)
        res = (_cast(jnp.concatenate([x, h], axis=-1), dtype), c, *acts) if save else ()
        return new, (y, res)

    (h, c), (ys, res) = _scan(body, (h0, c0), (xw, xs, valid, fresh), reverse, unroll)
    return (h, c), ys, res


def _lstm_forward_cpu(reverse, unroll, dtype, params: LSTMParams, h0, c0, xs, valid, fresh, *, save: bool):
    if _stacked(h0.shape[0], xs.shape[-1], h0.shape[-1], save):
        w_all = _cast(jnp.concatenate([params.w_ih, params.w_hh], axis=0), dtype)  # [I+H, 4H]

        def gates(xh):
            return jnp.split(matmul(xh, w_all, dtype) + params.b, 4, axis=-1)
    else:
        ws = _gate_weights(params.w_ih, params.w_hh, 4, dtype)
        bs = jnp.split(params.b, 4)

        def gates(xh):
            return [matmul(xh, w, dtype) + b for w, b in zip(ws, bs, strict=True)]

    def body(carry, inp):
        x, m, r = inp
        h, c = _fresh(r, carry[0]), _fresh(r, carry[1])
        xh = _cast(jnp.concatenate([x, h], axis=-1), dtype)  # [B, I+H], saved in the compute dtype
        new, y, acts = _lstm_cell(*gates(xh), h, c, m)
        return new, (y, (xh, c, *acts) if save else ())

    (h, c), (ys, res) = _scan(body, (h0, c0), (xs, valid, fresh), reverse, unroll)
    return (h, c), ys, res


@partial(jax.custom_vjp, nondiff_argnums=(0, 1, 2))
def _lstm(reverse, unroll, dtype, params, h0, c0, xs, valid, fresh):
    (h, c), ys, _ = _lstm_forward(reverse, unroll, dtype, params, h0, c0, xs, valid, fresh, save=False)
    return (h, c), ys


def _lstm_fwd(reverse, unroll, dtype, params, h0, c0, xs, valid, fresh):
    (h, c), ys, res = _lstm_forward(reverse, unroll, dtype, params, h0, c0, xs, valid, fresh, save=True)
    return ((h, c), ys), (params, xs, valid, fresh, res)


def _lstm_bwd(reverse, unroll, dtype, saved, cts):
    # xhs: [x_t, h_{t-1}] per step; cs: c_{t-1}; i, f, g, o: gate activations, all [T, B, *]
    params, xs, valid, fresh, (xhs, cs, i_s, f_s, g_s, o_s) = saved
    (dh_last, dc_last), dys = cts
    w_hh_t = _cast(params.w_hh.T, dtype)  # [4H, H]

    def body(carry, inp):
        dh, dc = carry
        dy, c_prev, i, f, g, o, m, r = inp
        dh_new = _pick(m, dh + dy, jnp.zeros_like(dh))  # padding: nothing reaches the step
        dc_new = _pick(m, dc, jnp.zeros_like(dc))
        tc = jnp.tanh(f * c_prev + i * g)
        dc_full = dc_new + dh_new * o * (1 - tc * tc)
        dz = jnp.concatenate(
            [dc_full * g * i * (1 - i), dc_full * c_prev * f * (1 - f),
             dc_full * i * (1 - g * g), dh_new * tc * o * (1 - o)], axis=-1)  # [B, 4H]
        dh_prev = _fresh(r, _pick(m, matmul(dz, w_hh_t, dtype), dh).astype(dh.dtype))  # a reset: none
        dc_prev = _fresh(r, _pick(m, dc_full * f, dc).astype(dc.dtype))                  # crosses it
        return (dh_prev, dc_prev), dz

    inputs = (dys, cs, i_s, f_s, g_s, o_s, valid, fresh)
    (dh0, dc0), dz = _scan(body, (dh_last, dc_last), inputs, not reverse, unroll)
    n_in = xs.shape[-1]
    dw = _contract_time_batch(xhs, dz, dtype)  # [I+H, 4H]: dW_ih on top of dW_hh
    dxs = matmul(dz, params.w_ih.T, dtype).astype(xs.dtype)  # [T, B, I]
    grads = LSTMParams(dw[:n_in].astype(params.w_ih.dtype), dw[n_in:].astype(params.w_hh.dtype),
                       jnp.sum(dz, axis=(0, 1)).astype(params.b.dtype))
    return grads, dh0, dc0, dxs, None, None


_lstm.defvjp(_lstm_fwd, _lstm_bwd)


# -------------------------------------------------------------------------------------- GRU
#
# Per-gate products as for the LSTM: r and z from ``[x_t, h_{t-1}]`` with their stacked input
# and recurrent columns; n keeps its two products apart, since only the recurrent one is reset.


def _gru_forward(reverse, unroll, dtype, params, h0, xs, valid, fresh, save: bool):
    run = partial(_gru_forward_cpu, reverse, unroll, dtype, save=save)
    hoisted = partial(_gru_forward_hoisted, reverse, unroll, dtype, save=save)
    return _by_platform(run, hoisted, params, h0, xs, valid, fresh)


def _gru_cell(r, z, n, hn, h, m, save):
    h_new = ((1.0 - z) * n + z * h).astype(h.dtype)
    y = h_new if m is None else jnp.where(m[:, None], h_new, 0)
    return _pick(m, h_new, h), (y, (h, r, z, n, hn) if save else ())


def _gru_forward_hoisted(reverse, unroll, dtype, params: GRUParams, h0, xs, valid, fresh, *, save: bool):
    xw = matmul(xs, _cast(params.w_ih, dtype), dtype) + params.b_ih  # [T, B, 3H]: one GEMM, all steps
    w_hh = _cast(params.w_hh, dtype)  # [H, 3H]

    def body(h, inp):
        xw_t, m, reset = inp
        h = _fresh(reset, h)
        xr, xz, xn = jnp.split(xw_t, 3, axis=-1)
        hr, hz, hn = jnp.split(matmul(h, w_hh, dtype) + params.b_hh, 3, axis=-1)  # one product per step
        r, z = _sigmoid(xr + hr), _sigmoid(xz + hz)
        return _gru_cell(r, z, jnp.tanh(xn + r * hn), hn, h, m, save)

    h, (ys, res) = _scan(body, h0, (xw, valid, fresh), reverse, unroll)
    return h, ys, res


def _gru_forward_cpu(reverse, unroll, dtype, params: GRUParams, h0, xs, valid, fresh, *, save: bool):
    w_r, w_z, _ = _gate_weights(params.w_ih, params.w_hh, 3, dtype)
    w_in = _cast(jnp.split(params.w_ih, 3, axis=1)[2], dtype)
    w_hn = _cast(jnp.split(params.w_hh, 3, axis=1)[2], dtype)
    (bi_r, bi_z, b_in), (bh_r, bh_z, b_hn) = jnp.split(params.b_ih, 3), jnp.split(params.b_hh, 3)

    def body(h, inp):
        x, m, reset = inp
        h = _fresh(reset, h)
        xh = jnp.concatenate([x, h], axis=-1)  # [B, I+H]
        # the two biases are added to the product one by one, in its (wider) dtype
        r = _sigmoid(matmul(xh, w_r, dtype) + bi_r + bh_r)
        z = _sigmoid(matmul(xh, w_z, dtype) + bi_z + bh_z)
        hn = matmul(h, w_hn, dtype) + b_hn
        return _gru_cell(r, z, jnp.tanh(matmul(x, w_in, dtype) + b_in + r * hn), hn, h, m, save)

    h, (ys, res) = _scan(body, h0, (xs, valid, fresh), reverse, unroll)
    return h, ys, res


@partial(jax.custom_vjp, nondiff_argnums=(0, 1, 2))
def _gru(reverse, unroll, dtype, params, h0, xs, valid, fresh):
    h, ys, _ = _gru_forward(reverse, unroll, dtype, params, h0, xs, valid, fresh, save=False)
    return h, ys


def _gru_fwd(reverse, unroll, dtype, params, h0, xs, valid, fresh):
    h, ys, res = _gru_forward(reverse, unroll, dtype, params, h0, xs, valid, fresh, save=True)
    return (h, ys), (params, xs, valid, fresh, res)


def _gru_bwd(reverse, unroll, dtype, saved, cts):
    params, xs, valid, fresh, (hs, r_s, z_s, n_s, hn_s) = saved  # hs: h_{t-1}
    dh_last, dys = cts
    w_hh_t = _cast(params.w_hh.T, dtype)  # [3H, H]

    def body(dh, inp):
        dy, h_prev, r, z, n, hn, m, reset = inp
        dh_new = _pick(m, dh + dy, jnp.zeros_like(dh))
        dn = dh_new * (1 - z) * (1 - n * n)  # gradient of n's pre-activation
        dr = dn * hn * r * (1 - r)
        dzg = dh_new * (h_prev - n) * z * (1 - z)
        d_hw = jnp.concatenate([dr, dzg, dn * r], axis=-1)  # gradient of h W_hh + b_hh
        dh_prev = _fresh(reset, _pick(m, matmul(d_hw, w_hh_t, dtype) + dh_new * z, dh).astype(dh.dtype))
        return dh_prev, jnp.concatenate([dr, dzg, dn], axis=-1)  # gradient of x W_ih + b_ih

    dh0, d_xw = _scan(body, dh_last, (dys, hs, r_s, z_s, n_s, hn_s, valid, fresh), not reverse, unroll)
    hidden = hs.shape[-1]
    d_hw = jnp.concatenate([d_xw[..., : 2 * hidden], d_xw[..., 2 * hidden :] * r_s], axis=-1)
    dw_hh = _contract_time_batch(hs, d_hw, dtype).astype(params.w_hh.dtype)
    db_hh = jnp.sum(d_hw, axis=(0, 1)).astype(params.b_hh.dtype)
    dw_ih, db_ih, dxs = _grads_of_projection(params.w_ih, xs, d_xw, dtype)
    return GRUParams(dw_ih, dw_hh, db_ih.astype(params.b_ih.dtype), db_hh), dh0, dxs, None, None


_gru.defvjp(_gru_fwd, _gru_bwd)


# ------------------------------------------------------------------------------------ Elman


def _elman_forward(reverse, unroll, activation, dtype, params, h0, xs, valid, fresh, save: bool):
    run = partial(_elman_forward_cpu, reverse, unroll, activation, dtype, save=save)
    hoisted = partial(_elman_forward_hoisted, reverse, unroll, activation, dtype, save=save)
    return _by_platform(run, hoisted, params, h0, xs, valid, fresh)


def _elman_cell(activation, a, xh, h, m, save):
    h_new = activation(a).astype(h.dtype)
    y = h_new if m is None else jnp.where(m[:, None], h_new, 0)
    return _pick(m, h_new, h), (y, (xh, a) if save else ())


def _elman_forward_hoisted(reverse, unroll, activation, dtype, params: ElmanParams, h0, xs, valid, fresh, *,
                           save: bool):
    xw = matmul(xs, _cast(params.w_ih, dtype), dtype) + params.b  # [T, B, H]: one GEMM, all steps
    w_hh = _cast(params.w_hh, dtype)

    def body(h, inp):
        xw_t, x, m, r = inp
        h = _fresh(r, h)
        xh = _cast(jnp.concatenate([x, h], axis=-1), dtype) if save else None
        return _elman_cell(activation, xw_t + matmul(h, w_hh, dtype), xh, h, m, save)

    h, (ys, res) = _scan(body, h0, (xw, xs, valid, fresh), reverse, unroll)
    return h, ys, res


def _elman_forward_cpu(reverse, unroll, activation, dtype, params: ElmanParams, h0, xs, valid, fresh, *,
                       save: bool):
    w = _cast(jnp.concatenate([params.w_ih, params.w_hh], axis=0), dtype)  # [I+H, H]

    def body(h, inp):
        x, m, r = inp
        h = _fresh(r, h)
        xh = _cast(jnp.concatenate([x, h], axis=-1), dtype)  # [B, I+H]
        return _elman_cell(activation, matmul(xh, w, dtype) + params.b, xh, h, m, save)

    h, (ys, res) = _scan(body, h0, (xs, valid, fresh), reverse, unroll)
    return h, ys, res


@partial(jax.custom_vjp, nondiff_argnums=(0, 1, 2, 3))
def _elman(reverse, unroll, activation, dtype, params, h0, xs, valid, fresh):
    h, ys, _ = _elman_forward(reverse, unroll, activation, dtype, params, h0, xs, valid, fresh, save=False)
    return h, ys


def _elman_fwd(reverse, unroll, activation, dtype, params, h0, xs, valid, fresh):
    h, ys, res = _elman_forward(reverse, unroll, activation, dtype, params, h0, xs, valid, fresh, save=True)
    return (h, ys), (params, xs, valid, fresh, res)


def _elman_bwd(reverse, unroll, activation, dtype, saved, cts):
    params, xs, valid, fresh, (xhs, pre) = saved  # xhs: [x_t, h_{t-1}]; pre: pre-activations
    dh_last, dys = cts
    # act'(a) for all steps at once; the activation is elementwise, so a JVP with ones gives it.
    slope = jax.jvp(activation, (pre,), (jnp.ones_like(pre),))[1]  # [T, B, H]
    w_hh_t = _cast(params.w_hh.T, dtype)

    def body(dh, inp):
        dy, s, m, r = inp
        da = _pick(m, (dh + dy) * s, jnp.zeros_like(s))
        return _fresh(r, _pick(m, matmul(da, w_hh_t, dtype), dh).astype(dh.dtype)), da

    dh0, da = _scan(body, dh_last, (dys, slope, valid, fresh), not reverse, unroll)
    n_in = xs.shape[-1]
    dw = _contract_time_batch(xhs, da, dtype)  # [I+H, H]
    dxs = matmul(da, params.w_ih.T, dtype).astype(xs.dtype)
    grads = ElmanParams(dw[:n_in].astype(params.w_ih.dtype), dw[n_in:].astype(params.w_hh.dtype),
                        jnp.sum(da, axis=(0, 1)).astype(params.b.dtype))
    return grads, dh0, dxs, None, None


_elman.defvjp(_elman_fwd, _elman_bwd)


# ------------------------------------------------------------------------------ entry points
#
# The registry's ``fused`` kernels: ``kernel(params, carry, xs, valid, reverse, unroll, **kw)
# -> (carry, ys)`` on one flat batch axis (``xs: [T, B, I]``, carry leaves ``[B, H]``,
# ``valid: [T, B]`` bool or None).


def lstm_sequence(params: LSTMParams, carry: LSTMState, xs, valid, fresh, reverse, unroll, *, dtype=None):
    (h, c), ys = _lstm(reverse, unroll, dtype, params, carry.h, carry.c, xs, valid, fresh)
    return LSTMState(h, c), ys


def gru_sequence(params: GRUParams, h, xs, valid, fresh, reverse, unroll, *, dtype=None):
    return _gru(reverse, unroll, dtype, params, h, xs, valid, fresh)


def elman_sequence(params: ElmanParams, h, xs, valid, fresh, reverse, unroll, *, activation=jnp.tanh,
                   dtype=None):
    return _elman(reverse, unroll, activation, dtype, params, h, xs, valid, fresh)


def run_fused(kernel: Callable, params, carry, xs: Array, lengths: Array | None, reverse: bool, unroll,
              fresh: Array | None = None):
    """Run a fused ``kernel`` on ``xs: [T, *batch, I]``; same contract as ``rnnjax.scan``.

    Arguments are assumed checked (``rnnjax.scan`` does it); ``fresh: [T, *batch]`` marks the
    steps before which the carry is reset to zeros (already shifted for ``reverse`` and
    masked to valid steps by the caller). The batch axes are flattened into one for the
    kernel and restored on the way out.
    """
    num_steps, batch = xs.shape[0], tuple(xs.shape[1:-1])
    n = math.prod(batch)
    x2 = xs.reshape((num_steps, n, xs.shape[-1]))
    flat = jax.tree_util.tree_map(lambda a: a.reshape((n,) + a.shape[len(batch):]), carry)  # [B, H]
    valid = None if lengths is None else steps_mask(lengths.reshape((n,)), num_steps)  # [T, B]
    fresh = None if fresh is None else fresh.reshape((num_steps, n))
    new_carry, ys = kernel(params, flat, x2, valid, fresh, reverse, unroll)
    new_carry = jax.tree_util.tree_map(lambda a: a.reshape(batch + a.shape[1:]), new_carry)
    return new_carry, ys.reshape((num_steps,) + batch + ys.shape[-1:])
