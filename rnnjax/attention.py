"""Attention over encoder outputs, and the encoder–decoder built on it.

An ``Attention`` is a bundle of three pure functions, like a ``Cell``:
``init(key) -> params``, ``prepare(params, memory) -> keys`` (the part that depends only on the
encoder outputs, computed once per source) and ``score(params, query, keys) -> scores``.
``attend`` turns scores into weights with a softmax masked by the source lengths and returns
the context vector and the weights.

Memory is **batch-major** here, ``[*batch, S, K]``: it travels inside a decoder's state, and the
decoders (``greedy``, ``beam_search``) treat every leaf of that state as ``[*batch, ...]``
(beam search adds a beam axis after ``*batch``). ``jnp.moveaxis(ys, 0, -2)`` turns an encoder's
time-major ``ys [S, *batch, K]`` into memory; ``seq2seq`` does it for you.

``seq2seq`` assembles a token-to-token encoder–decoder (embeddings, an encoder ``SeqModel`` or
``Cell``, a decoder ``Cell``, optional attention, an output projection); its ``step`` has the
decoding signature ``step(params, state, token) -> (state, logits)`` shared with
``language_model``, so ``greedy``/``sample``/``beam_search`` decode it directly.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
from jax import lax

from rnnjax._checks import check_array, check_float, check_lengths, is_concrete
from rnnjax.cells import Cell, glorot_uniform
from rnnjax.compose import (
    DenseParams,
    SeqModel,
    _check_bool,
    _check_key,
    carry_hidden,
    dense,
    dense_init,
    rnn,
)
from rnnjax.embed import _check_vocab_size, check_ids, embedding_init, embedding_lookup

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


def _check_size(name: str, value: Any) -> int:
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < 1:
        raise ValueError(f"{name}: expected a positive int, got {value!r}")
    return int(value)


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
    query_size = _check_size("query_size", query_size)
    key_size = _check_size("key_size", key_size)
    attention_size = _check_size("attention_size", attention_size)

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
    query_size = _check_size("query_size", query_size)
    key_size = _check_size("key_size", key_size)

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
    _check_bool("scaled", scaled)

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


def _check_attention(attention: Any) -> None:
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
    _check_attention(attention)
    _check_memory(memory)
    batch, num_src = tuple(memory.shape[:-2]), memory.shape[-2]
    if lengths is not None:
        lengths = _check_source_lengths(lengths, batch, num_src)
    if keys is None:
        keys = attention.prepare(params, memory)
    scores = attention.score(params, query, keys)  # [*batch, S]
    if tuple(scores.shape) != batch + (num_src,):
        raise ValueError(f"score: expected scores of shape {batch + (num_src,)} ([*batch, S]), got {tuple(scores.shape)}")
    weights = masked_softmax(scores, _source_mask(lengths, batch, num_src))
    context = jnp.einsum("...s,...sk->...k", weights.astype(memory.dtype), memory)
    return context, weights


def _check_source_lengths(lengths: Any, batch: tuple, num_src: int) -> Array:
    if isinstance(lengths, (list, tuple, int, np.integer)):
        lengths = np.asarray(lengths)
    check_array("lengths", lengths)
    if not jnp.issubdtype(lengths.dtype, jnp.integer):
        raise TypeError(f"lengths: expected an integer array, got dtype {lengths.dtype}")
    if tuple(lengths.shape) != batch:
        raise ValueError(f"lengths: expected shape {list(batch)} (the batch axes of memory), got {tuple(lengths.shape)}")
    if is_concrete(lengths):
        values = np.asarray(lengths)
        if values.size and (values.min() < 0 or values.max() > num_src):
            raise ValueError(
                f"lengths: expected values in [0, {num_src}] (S = memory.shape[-2]), got min {values.min()} "
                f"and max {values.max()}"
            )
    return jnp.asarray(lengths)


# ----------------------------------------------------------------------------- seq2seq


class Seq2SeqParams(NamedTuple):
    """Parameters of ``seq2seq``."""

    src_embed: Array  # [V_src, E]
    encoder: Any
    tgt_embed: Array  # [V_tgt, E]
    decoder: Any  # decoder cell params; its input is [E + K]
    attention: Any  # attention params; DotParams() or () when there is none
    out: DenseParams  # w [H + K, V_tgt]


class Seq2SeqState(NamedTuple):
    """Decoding state of ``seq2seq``: every leaf is ``[*batch, ...]``."""

    carry: Any  # decoder carry
    memory: Array  # [*batch, S, K] encoder outputs (without attention: [*batch, 1, K] summary)
    keys: Array  # [*batch, S, A] attention.prepare(memory)
    lengths: Array  # [*batch] valid source positions


class Seq2Seq(NamedTuple):
    """An encoder–decoder as a bundle of pure functions; see ``seq2seq``.

    Attributes:
      init: ``init(key) -> Seq2SeqParams``.
      encode: ``encode(params, src [S, *batch], *, lengths=None, train=False, key=None)
        -> Seq2SeqState``.
      step: ``step(params, state, token [*batch]) -> (state, logits [*batch, V_tgt])``, the
        decoding signature of ``greedy``/``sample``/``beam_search``.
      apply: ``apply(params, src, tgt_in [T, *batch], *, src_lengths=None, train=False,
        key=None) -> (logits [T, *batch, V_tgt], weights [T, *batch, S])``, teacher-forced.
    """

    init: Callable[[Array], Seq2SeqParams]
    encode: Callable[..., Seq2SeqState]
    step: Callable[[Seq2SeqParams, Seq2SeqState, Array], tuple[Seq2SeqState, Array]]
    apply: Callable[..., tuple[Array, Array]]


def _check_tokens(name: str, tokens: Any, vocab_size: int) -> Array:
    tokens = check_ids(tokens, vocab_size, name=name)
    if tokens.ndim < 1 or tokens.shape[0] == 0:
        raise ValueError(f"{name}: expected token ids of shape [T, *batch] with T >= 1, got {tuple(tokens.shape)}")
    return tokens


def seq2seq(
    encoder: Cell | SeqModel,
    decoder: Cell,
    *,
    src_vocab: int,
    tgt_vocab: int,
    embed_size: int,
    attention: Attention | None = None,
) -> Seq2Seq:
    """A token-to-token encoder–decoder, with attention or with a single context vector.

    ::

        memory, enc_carry = encoder(embed_src(src))                      # [S, *batch, K]
        context_t = attend(query = hidden(s_{t-1}), memory)   (with attention)
                  = hidden(enc_carry)                          (without: one fixed vector)
        s_t, o_t = decoder.step(s_{t-1}, [embed_tgt(y_{t-1}); context_t])
        logits_t = [o_t; context_t] W_out + b_out

    The query is the previous decoder carry's hidden state (``carry_hidden``: the top layer of a
    ``stack``), as in Bahdanau et al. 2015; ``additive_attention``, ``general_attention`` and
    ``dot_attention`` all plug in. Without attention the context is the encoder's final hidden
    state (``carry_hidden(enc_carry)``; both directions for a ``bidirectional`` encoder), fed at
    every step (Cho et al. 2014) — the classic baseline. The decoder starts from its zero carry;
    to start it elsewhere, replace ``state.carry`` after ``encode``.

    Args:
      encoder: a ``SeqModel`` (e.g. ``bidirectional``, ``deep``) or a ``Cell`` (run with ``rnn``),
        reading ``embed_size`` features.
      decoder: a ``Cell`` (e.g. ``stack(...)``) whose input size is ``embed_size + K``, ``K`` the
        encoder's output size (its final hidden size without attention).
      src_vocab, tgt_vocab: vocabulary sizes.
      embed_size: size of both embedding tables.
      attention: an ``Attention`` whose query size is the decoder's hidden size and key size
        ``K``; None for the context-vector model.

    Returns:
      ``Seq2Seq(init, encode, step, apply)``. Sizes are checked at ``init``: a decoder or
      attention that does not fit raises ``ValueError`` there.

    Teacher forcing: ``apply(params, src, tgt_in, src_lengths=...)`` with ``tgt_in`` the target
    shifted right behind a start token; positions past a target's end do not affect earlier
    ones, so mask them in the loss. Decoding: ``state = encode(params, src, lengths=...)``, then
    ``greedy(model.step, params, state, start, max_len=...)`` or ``beam_search(...)``.

    >>> att = additive_attention(query_size=8, key_size=8, attention_size=8)
    >>> model = seq2seq(bidirectional(gru(4, 4), gru(4, 4)), gru(4 + 8, 8), src_vocab=10, tgt_vocab=6, embed_size=4, attention=att)
    >>> params = model.init(jax.random.key(0))
    >>> logits, weights = model.apply(params, jnp.ones((5, 2), int), jnp.ones((3, 2), int), src_lengths=jnp.array([5, 2]))
    >>> logits.shape, weights.shape, float(weights[0, 1, 2:].sum())
    ((3, 2, 6), (3, 2, 5), 0.0)
    """
    if not isinstance(encoder, (Cell, SeqModel)):
        raise TypeError(f"encoder: expected a rnnjax.Cell or rnnjax.SeqModel, got {type(encoder).__name__}")
    if not isinstance(decoder, Cell):
        raise TypeError(f"decoder: expected a rnnjax.Cell (use stack(...) for several layers), got {type(decoder).__name__}")
    src_vocab = _check_vocab_size(src_vocab, "src_vocab")
    tgt_vocab = _check_vocab_size(tgt_vocab, "tgt_vocab")
    embed_size = _check_size("embed_size", embed_size)
    if attention is not None:
        _check_attention(attention)
    enc = rnn(encoder) if isinstance(encoder, Cell) else encoder

    def encode(params, src, *, lengths=None, train=False, key=None):
        src = _check_tokens("src", src, src_vocab)
        batch, num_src = tuple(src.shape[1:]), src.shape[0]
        _check_bool("train", train)
        if key is not None:
            _check_key(key)
        if lengths is not None:
            lengths = check_lengths(lengths, batch, num_src)
        xs = embedding_lookup(params.src_embed, src)  # [S, *batch, E]
        try:
            enc_carry, ys = enc.apply(params.encoder, xs, lengths=lengths, train=train, key=key)
        except (ValueError, TypeError) as e:
            e.add_note(f"(raised by the encoder, which reads [S, *batch, embed_size={embed_size}] embeddings)")
            raise
        carry = decoder.initial_carry(batch)
        if attention is None:
            memory = carry_hidden(enc_carry)[..., None, :]  # [*batch, 1, K]
            return Seq2SeqState(carry, memory, memory, jnp.ones(batch, jnp.int32))
        memory = jnp.moveaxis(ys, 0, -2)  # [*batch, S, K]
        keys = attention.prepare(params.attention, memory)
        full = jnp.full(batch, num_src, jnp.int32)
        return Seq2SeqState(carry, memory, keys, full if lengths is None else lengths.astype(jnp.int32))

    def decode_step(params, carry, emb, memory, keys, lengths):
        """One decoder step from embedded input ``emb [*batch, E]``; also returns the weights."""
        if attention is None:
            context = memory[..., 0, :]  # [*batch, K]
            weights = jnp.ones(memory.shape[:-1], jnp.float32)  # [*batch, 1]
        else:
            query = carry_hidden(carry)  # [*batch, Q]
            context, weights = attend(attention, params.attention, query, memory, lengths=lengths, keys=keys)
        x = jnp.concatenate([emb, context.astype(emb.dtype)], axis=-1)  # [*batch, E + K]
        carry, y = decoder.step(params.decoder, carry, x)
        logits = dense(params.out, jnp.concatenate([y, context.astype(y.dtype)], axis=-1))  # [*batch, V]
        return carry, logits, weights

    def step(params, state, token):
        emb = embedding_lookup(params.tgt_embed, token)  # [*batch, E]
        carry, logits, _ = decode_step(params, state.carry, emb, state.memory, state.keys, state.lengths)
        return state._replace(carry=carry), logits

    def apply(params, src, tgt_in, *, src_lengths=None, train=False, key=None):
        tgt_in = _check_tokens("tgt_in", tgt_in, tgt_vocab)
        src_arr = jnp.asarray(src) if isinstance(src, (list, tuple)) else src
        if hasattr(src_arr, "shape") and tuple(tgt_in.shape[1:]) != tuple(src_arr.shape[1:]):
            raise ValueError(
                f"tgt_in: expected shape [T, *batch] with *batch = {tuple(src_arr.shape[1:])} from src, "
                f"got {tuple(tgt_in.shape)}"
            )
        state = encode(params, src, lengths=src_lengths, train=train, key=key)
        embs = embedding_lookup(params.tgt_embed, tgt_in)  # [T, *batch, E]

        def body(carry, emb):
            carry, logits, weights = decode_step(params, carry, emb, state.memory, state.keys, state.lengths)
            return carry, (logits, weights)

        _, (logits, weights) = lax.scan(body, state.carry, embs)
        return logits, weights  # [T, *batch, V], [T, *batch, S]

    def draw(key, context_size, hidden_size):
        k_src, k_enc, k_tgt, k_dec, k_att, k_out = jax.random.split(key, 6)
        return Seq2SeqParams(
            src_embed=embedding_init(k_src, src_vocab, embed_size),
            encoder=enc.init(k_enc),
            tgt_embed=embedding_init(k_tgt, tgt_vocab, embed_size),
            decoder=decoder.init(k_dec),
            attention=attention.init(k_att) if attention is not None else (),
            out=dense_init(k_out, hidden_size + context_size, tgt_vocab),
        )

    def check_sizes(key) -> tuple[int, int]:
        """``(K, H)`` from shapes alone; a decoder or attention that does not fit raises here."""
        probe = jax.eval_shape(lambda k: draw(k, 1, 1)._replace(out=None), key)
        try:
            state = jax.eval_shape(lambda p: encode(p, jnp.zeros((1, 1), jnp.int32)), probe)
        except (ValueError, TypeError) as e:
            e.add_note(
                "(raised by seq2seq.init checking the parts on a probe batch of one one-token source "
                "sequence: the encoder's outputs are the attention's memory, so the attention's key "
                "size must equal the encoder's output size)"
            )
            raise
        context_size = state.memory.shape[-1]
        try:
            _, y = jax.eval_shape(decoder.step, probe.decoder, decoder.initial_carry((1,)),
                                  jax.ShapeDtypeStruct((1, embed_size + context_size), probe.tgt_embed.dtype))
        except (ValueError, TypeError) as e:
            e.add_note(
                f"(raised by the decoder, whose input is [embedding; context] of size embed_size + K = "
                f"{embed_size} + {context_size} = {embed_size + context_size})"
            )
            raise
        params = probe._replace(out=DenseParams(jax.ShapeDtypeStruct((y.shape[-1] + context_size, tgt_vocab), y.dtype),
                                                jax.ShapeDtypeStruct((tgt_vocab,), y.dtype)))
        try:
            jax.eval_shape(step, params, state, jax.ShapeDtypeStruct((1,), jnp.int32))
        except (ValueError, TypeError) as e:
            e.add_note(
                f"(raised by the attention: its query is the decoder's hidden state, of size "
                f"{jax.eval_shape(carry_hidden, decoder.initial_carry((1,))).shape[-1]}, and its keys "
                f"the encoder outputs, of size K = {context_size})"
            )
            raise
        return context_size, y.shape[-1]

    def init(key):
        # Sizes are found, and the parts checked against each other, on shapes alone before
        # any parameter is drawn: K from the encoder, H from the decoder.
        return draw(key, *check_sizes(key))

    return Seq2Seq(init, encode, step, apply)


__all__ = [
    "AdditiveParams",
    "Attention",
    "DotParams",
    "GeneralParams",
    "Seq2Seq",
    "Seq2SeqParams",
    "Seq2SeqState",
    "additive_attention",
    "attend",
    "dot_attention",
    "general_attention",
    "masked_softmax",
    "seq2seq",
]
