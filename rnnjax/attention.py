"""Attention over encoder outputs.

An ``Attention`` is a bundle of three pure functions, like a ``Cell``:
``init(key) -> params``, ``prepare(params, memory) -> keys`` (the part that depends only on the
encoder outputs, computed once per source) and ``score(params, query, keys) -> scores``.
``attend`` turns scores into weights with a softmax masked by the source lengths and returns
the context vector and the weights.

Memory is **batch-major** here, ``[*batch, S, K]``: it travels inside a decoder's state, and the
decoders (``greedy``, ``beam_search``) treat every leaf of that state as ``[*batch, ...]``
(beam search adds a beam axis after ``*batch``). ``jnp.moveaxis(ys, 0, -2)`` turns an encoder's
time-major ``ys [S, *batch, K]`` into memory; ``rnnjax.seq2seq`` does it for you.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp

from rnnjax._checks import check_bool, check_float, check_int, check_lengths
from rnnjax.cells import glorot_uniform

Array = jax.Array


class Attention(NamedTuple):
    """An attention mechanism as a bundle of pure functions.

    Attributes:
      init: ``init(key) -> params``.
      prepare: ``prepare(params, memory [*batch, S, K]) -> keys [*batch, S, A]``, computed once
        per source sequence.
      score: ``score(params, query [*batch, Q], keys) -> scores [*batch, S]`` (unnormalised).
    """

    init: Callable[[Array], Any]
    prepare: Callable[[Any, Array], Array]
    score: Callable[[Any, Array, Array], Array]


class AdditiveParams(NamedTuple):
    """Bahdanau attention: ``score_s = v · tanh(q W_q + k_s W_k)``."""

    w_q: Array  # [Q, A]
    w_k: Array  # [K, A]
    v: Array  # [A]


class GeneralParams(NamedTuple):
    """Luong "general" attention: ``score_s = q W k_sᵀ``."""

    w: Array  # [Q, K]


class DotParams(NamedTuple):
    """Luong "dot" attention has no parameters."""


# ----------------------------------------------------------------------------- checks


def _check_memory(memory: Any) -> None:
    check_float("memory", memory)
    if memory.ndim < 2 or memory.shape[-2] == 0:
        raise ValueError(
            f"memory: expected shape [*batch, S, K] with S >= 1 (batch-major; "
            f"jnp.moveaxis(ys, 0, -2) converts time-major encoder outputs), got {tuple(memory.shape)}"
        )


def _check_query(query: Any, size: int, batch: tuple) -> None:
    check_float("query", query)
    if tuple(query.shape) != batch + (size,):
        raise ValueError(
            f"query: expected shape [*batch, {size}] with *batch = {batch} from memory, got {tuple(query.shape)}"
            " (memory is batch-major [*batch, S, K]; jnp.moveaxis(ys, 0, -2) converts time-major encoder outputs)"
        )


def _check_keys_feature(keys: Any, size: int, what: str) -> None:
    if keys.ndim < 2 or keys.shape[-1] != size:
        raise ValueError(f"memory: expected shape [*batch, S, {size}] ({what}), got {tuple(keys.shape)}")


# ----------------------------------------------------------------------------- mechanisms


def additive_attention(query_size: int, key_size: int, attention_size: int, *, dtype=jnp.float32) -> Attention:
    """Additive (Bahdanau) attention.

    ::

        score_s = v · tanh(q W_q + k_s W_k)          α = softmax over valid s
        context = Σ_s α_s k_s

    ``prepare`` computes ``k_s W_k`` for all source positions once. Weights start
    Glorot-uniform.

    References: Bahdanau, Cho & Bengio 2015, "Neural machine translation by jointly learning to
    align and translate".

    >>> att = additive_attention(query_size=4, key_size=6, attention_size=5)
    >>> params = att.init(jax.random.key(0))
    >>> context, weights = attend(att, params, jnp.ones((2, 4)), jnp.ones((2, 7, 6)), lengths=jnp.array([7, 3]))
    >>> context.shape, weights.shape
    ((2, 6), (2, 7))
    """
    query_size = check_int("query_size", query_size)
    key_size = check_int("key_size", key_size)
    attention_size = check_int("attention_size", attention_size)

    def init(key):
        k1, k2, k3 = jax.random.split(key, 3)
        return AdditiveParams(
            w_q=glorot_uniform(k1, (query_size, attention_size), dtype),
            w_k=glorot_uniform(k2, (key_size, attention_size), dtype),
            v=glorot_uniform(k3, (attention_size, 1), dtype)[:, 0],
        )

    def prepare(params, memory):
        _check_keys_feature(memory, params.w_k.shape[0], "K from params.w_k")
        return memory @ params.w_k  # [*batch, S, A]

    def score(params, query, keys):
        _check_query(query, params.w_q.shape[0], tuple(keys.shape[:-2]))
        q = query @ params.w_q  # [*batch, A]
        return jnp.tanh(keys + q[..., None, :]) @ params.v  # [*batch, S]

    return Attention(init, prepare, score)


def general_attention(query_size: int, key_size: int, *, dtype=jnp.float32) -> Attention:
    """Luong "general" (bilinear) attention: ``score_s = q W k_sᵀ``, ``W: [Q, K]``.

    ``prepare`` computes ``k_s Wᵀ`` once, so each step costs one dot product per position.

    References: Luong, Pham & Manning 2015, "Effective approaches to attention-based neural
    machine translation".

    >>> att = general_attention(query_size=4, key_size=6)
    >>> context, weights = attend(att, att.init(jax.random.key(0)), jnp.ones((4,)), jnp.ones((7, 6)))
    >>> context.shape, round(float(weights.sum()), 5)
    ((6,), 1.0)
    """
    query_size = check_int("query_size", query_size)
    key_size = check_int("key_size", key_size)

    def init(key):
        return GeneralParams(glorot_uniform(key, (query_size, key_size), dtype))

    def prepare(params, memory):
        _check_keys_feature(memory, params.w.shape[1], "K from params.w")
        return memory @ params.w.T  # [*batch, S, Q]

    def score(params, query, keys):
        _check_query(query, params.w.shape[0], tuple(keys.shape[:-2]))
        return jnp.einsum("...q,...sq->...s", query, keys)

    return Attention(init, prepare, score)


def dot_attention(*, scaled: bool = False) -> Attention:
    """Luong "dot" attention: ``score_s = q · k_s`` (divided by ``√K`` when ``scaled``).

    Needs query and memory of the same size; it has no parameters (``DotParams()``).

    References: Luong, Pham & Manning 2015; the scaled form is Vaswani et al. 2017's.

    >>> att = dot_attention()
    >>> context, weights = attend(att, att.init(jax.random.key(0)), jnp.ones((2, 3)), jnp.ones((2, 5, 3)))
    >>> weights[0]
    Array([0.2, 0.2, 0.2, 0.2, 0.2], dtype=float32)
    """
    check_bool("scaled", scaled)

    def init(key):
        del key
        return DotParams()

    def prepare(params, memory):
        return memory

    def score(params, query, keys):
        _check_query(query, keys.shape[-1], tuple(keys.shape[:-2]))
        s = jnp.einsum("...k,...sk->...s", query, keys)
        return s / jnp.sqrt(jnp.asarray(keys.shape[-1], s.dtype)) if scaled else s

    return Attention(init, prepare, score)


def check_attention(attention: Any) -> None:
    if not isinstance(attention, Attention):
        raise TypeError(f"attention: expected a rnnjax.Attention, got {type(attention).__name__}")


def _source_mask(lengths: Array | None, batch: tuple, num_src: int) -> Array:
    positions = jnp.arange(num_src)
    if lengths is None:
        return jnp.ones(batch + (num_src,), bool)
    return positions < lengths[..., None]  # [*batch, S]


def masked_softmax(scores: Array, mask: Array) -> Array:
    """Softmax over the last axis restricted to ``mask``; exactly 0 where ``mask`` is False.

    Computed in float32. A row with no valid entry gives all zeros (not NaN).

    >>> masked_softmax(jnp.array([1.0, 1.0, 5.0]), jnp.array([True, True, False]))
    Array([0.5, 0.5, 0. ], dtype=float32)
    """
    s = scores.astype(jnp.float32)
    s = jnp.where(mask, s, jnp.finfo(jnp.float32).min)
    w = jax.nn.softmax(s, axis=-1)
    return jnp.where(mask, w, 0.0)


def attend(
    attention: Attention,
    params: Any,
    query: Array,
    memory: Array,
    *,
    lengths: Array | None = None,
    keys: Array | None = None,
) -> tuple[Array, Array]:
    """Attend from ``query`` over ``memory``, masked by source ``lengths``.

    ::

        α = softmax(score(q, k_s)) over s < length (α_s = 0 on padding)
        context = Σ_s α_s memory_s

    Args:
      attention: the mechanism (``additive_attention``, ``general_attention``,
        ``dot_attention`` or your own ``Attention``).
      params: its params.
      query: ``[*batch, Q]``, e.g. the decoder's hidden state.
      memory: ``[*batch, S, K]`` encoder outputs, batch-major.
      lengths: ``[*batch]`` valid source positions (all ``S`` when None); values are
        range-checked when concrete.
      keys: ``attention.prepare(params, memory)`` if already computed (decoders compute it
        once per source).

    Returns:
      ``(context [*batch, K], weights [*batch, S])``; weights sum to 1 over the valid positions
      and are exactly 0 on padding (all 0 for an empty source, whose context is then 0).

    >>> att = dot_attention()
    >>> _, w = attend(att, (), jnp.ones(2), jnp.ones((4, 2)), lengths=jnp.array(3))
    >>> w
    Array([0.33333334, 0.33333334, 0.33333334, 0.        ], dtype=float32)
    """
    check_attention(attention)
    _check_memory(memory)
    batch, num_src = tuple(memory.shape[:-2]), memory.shape[-2]
    if lengths is not None:
        lengths = check_lengths(lengths, batch, num_src, source="memory",
                                steps_name="S = memory.shape[-2]")
    if keys is None:
        keys = attention.prepare(params, memory)
    scores = attention.score(params, query, keys)  # [*batch, S]
    if tuple(scores.shape) != batch + (num_src,):
        raise ValueError(f"score: expected scores of shape {batch + (num_src,)} ([*batch, S]), got {tuple(scores.shape)}")
    weights = masked_softmax(scores, _source_mask(lengths, batch, num_src))
    context = jnp.einsum("...s,...sk->...k", weights.astype(memory.dtype), memory)
    return context, weights


__all__ = [
    "AdditiveParams",
    "Attention",
    "DotParams",
    "GeneralParams",
    "additive_attention",
    "attend",
    "dot_attention",
    "general_attention",
    "masked_softmax",
]
