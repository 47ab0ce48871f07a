"""A token-to-token encoder–decoder: ``rnnjax.seq2seq``.

``seq2seq`` assembles embeddings, an encoder ``SeqModel`` or ``Cell``, a decoder ``Cell``,
optional attention (``rnnjax/attention.py``) and an output projection. Its ``step`` has the
decoding signature ``step(params, state, token) -> (state, logits)`` shared with
``language_model``, so ``greedy``/``sample``/``beam_search`` decode it directly.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
from jax import lax

from rnnjax._checks import (
    check_array,
    check_bool,
    check_impl,
    check_int,
    check_key,
    check_lengths,
    check_unroll,
)
from rnnjax.attention import Attention, attend, check_attention
from rnnjax.cells import Cell
from rnnjax.compose import DenseParams, SeqModel, carry_hidden, dense, dense_init, rnn
from rnnjax.embed import check_ids, embedding_init, embedding_lookup
from rnnjax.packing import PackLayout, unpack_sequences

Array = jax.Array


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
      encode: ``encode(params, src [S, *batch], *, lengths=None, train=False, key=None,
        resets=None, layout=None) -> Seq2SeqState`` (``resets``/``layout``: packed sources, one
        state per packed sequence).
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


def _time_first(name: str, tokens: Any, time_major: bool) -> Any:
    """Token ids ``[*batch, T]`` (``time_major=False``) as ``[T, *batch]``."""
    if time_major:
        return tokens
    tokens = jnp.asarray(tokens) if isinstance(tokens, (list, tuple)) else tokens
    check_array(name, tokens)
    if tokens.ndim < 1:
        raise ValueError(f"{name}: expected token ids of shape [*batch, T] (time_major=False), got {tuple(tokens.shape)}")
    return jnp.moveaxis(tokens, -1, 0)


def seq2seq(
    encoder: Cell | SeqModel,
    decoder: Cell,
    *,
    src_vocab: int,
    tgt_vocab: int,
    embed_size: int,
    attention: Attention | None = None,
    time_major: bool = True,
    unroll: int | bool = 1,
    impl: str = "auto",
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
      time_major: False for batch-major token ids ``src: [*batch, S]``, ``tgt_in: [*batch, T]``
        and outputs ``logits: [*batch, T, V]``, ``weights: [*batch, T, S]``.
      unroll: time steps per loop iteration of the encoder given as a ``Cell`` and of the
        teacher-forced decoder (see ``rnnjax.scan``).
      impl: ``"auto"`` or ``"loop"`` for the encoder given as a ``Cell`` (see ``rnnjax.scan``).

    Returns:
      ``Seq2Seq(init, encode, step, apply)``. Sizes are checked at ``init``: a decoder or
      attention that does not fit raises ``ValueError`` there.

    Teacher forcing: ``apply(params, src, tgt_in, src_lengths=...)`` with ``tgt_in`` the target
    shifted right behind a start token; positions past a target's end do not affect earlier
    ones, so mask them in the loss. Decoding: ``state = encode(params, src, lengths=...)``, then
    ``greedy(model.step, params, state, start, max_len=...)`` or ``beam_search(...)``.

    Packed sources (with attention): ``encode(params, packed.xs, lengths=packed.lengths,
    resets=packed.resets, layout=packed.layout)`` for ``packed = pack_sequences(sources,
    row_length)`` runs the encoder over the packed rows (each source as if alone) and returns
    the state of one decoder per packed source, in input order (batch ``[N]``, memory
    ``[N, L_max, K]`` with each source's own length), ready for the decoders.

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
    src_vocab = check_int("src_vocab", src_vocab)
    tgt_vocab = check_int("tgt_vocab", tgt_vocab)
    embed_size = check_int("embed_size", embed_size)
    if attention is not None:
        check_attention(attention)
    check_unroll(unroll)
    check_impl(impl)
    enc = rnn(encoder, unroll=unroll, impl=impl) if isinstance(encoder, Cell) else encoder

    check_bool("time_major", time_major)

    def encode_tm(params, src, *, lengths=None, train=False, key=None, resets=None, layout=None):
        if resets is not None or layout is not None:
            return encode_packed(params, src, lengths, train, key, resets, layout)
        src = _check_tokens("src", src, src_vocab)
        batch, num_src = tuple(src.shape[1:]), src.shape[0]
        check_bool("train", train)
        if key is not None:
            check_key(key)
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

    def encode_packed(params, src, lengths, train, key, resets, layout):
        if resets is None or layout is None:
            raise ValueError("resets, layout: packed sources need both (Packed.resets and Packed.layout), got one")
        if attention is None:
            raise ValueError(
                "resets: packed sources need attention (each decoder reads its own source's memory); "
                "without it the context is a row's final carry, which only its last source reaches"
            )
        if not isinstance(layout, PackLayout):
            raise TypeError(f"layout: expected the PackLayout of pack_sequences, got {type(layout).__name__}")
        src = _check_tokens("src", src, src_vocab)
        if src.shape != (layout.row_length, layout.num_rows):
            raise ValueError(f"src: expected the packed rows' shape ({layout.row_length}, {layout.num_rows}) "
                             f"from layout, got {tuple(src.shape)}")
        xs = embedding_lookup(params.src_embed, src)  # [S, R, E]
        try:
            _, ys = enc.apply(params.encoder, xs, lengths=lengths, train=train, key=key, resets=resets)
        except (ValueError, TypeError) as e:
            e.add_note(f"(raised by the encoder, which reads [S, *batch, embed_size={embed_size}] embeddings)")
            raise
        memory = jnp.moveaxis(unpack_sequences(ys, layout), 0, -2)  # [N, L_max, K]
        keys = attention.prepare(params.attention, memory)
        n = layout.num_sequences
        return Seq2SeqState(decoder.initial_carry((n,)), memory, keys, jnp.asarray(layout.lengths, jnp.int32))

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

    def apply_tm(params, src, tgt_in, *, src_lengths=None, train=False, key=None):
        tgt_in = _check_tokens("tgt_in", tgt_in, tgt_vocab)
        src_arr = jnp.asarray(src) if isinstance(src, (list, tuple)) else src
        if hasattr(src_arr, "shape") and tuple(tgt_in.shape[1:]) != tuple(src_arr.shape[1:]):
            raise ValueError(
                f"tgt_in: expected shape [T, *batch] with *batch = {tuple(src_arr.shape[1:])} from src, "
                f"got {tuple(tgt_in.shape)}"
            )
        state = encode_tm(params, src, lengths=src_lengths, train=train, key=key)
        embs = embedding_lookup(params.tgt_embed, tgt_in)  # [T, *batch, E]

        def body(carry, emb):
            carry, logits, weights = decode_step(params, carry, emb, state.memory, state.keys, state.lengths)
            return carry, (logits, weights)

        _, (logits, weights) = lax.scan(body, state.carry, embs, unroll=unroll)
        return logits, weights  # [T, *batch, V], [T, *batch, S]

    def encode(params, src, *, lengths=None, train=False, key=None, resets=None, layout=None):
        if resets is not None and not time_major:
            resets = jnp.moveaxis(jnp.asarray(resets), -1, 0)  # [R, S] -> [S, R]
        return encode_tm(params, _time_first("src", src, time_major), lengths=lengths, train=train, key=key,
                         resets=resets, layout=layout)

    def apply(params, src, tgt_in, *, src_lengths=None, train=False, key=None):
        logits, weights = apply_tm(params, _time_first("src", src, time_major), _time_first("tgt_in", tgt_in, time_major),
                                   src_lengths=src_lengths, train=train, key=key)
        if time_major:
            return logits, weights
        return jnp.moveaxis(logits, 0, -2), jnp.moveaxis(weights, 0, -2)  # [*batch, T, V], [*batch, T, S]

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
            state = jax.eval_shape(lambda p: encode_tm(p, jnp.zeros((1, 1), jnp.int32)), probe)
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
        query_size = None
        if attention is not None:
            try:
                query_size = jax.eval_shape(carry_hidden, decoder.initial_carry((1,))).shape[-1]
            except TypeError as e:
                e.add_note("(raised by seq2seq.init: the attention's query is the decoder carry's hidden state)")
                raise
        params = probe._replace(out=DenseParams(jax.ShapeDtypeStruct((y.shape[-1] + context_size, tgt_vocab), y.dtype),
                                                jax.ShapeDtypeStruct((tgt_vocab,), y.dtype)))
        try:
            jax.eval_shape(step, params, state, jax.ShapeDtypeStruct((1,), jnp.int32))
        except (ValueError, TypeError) as e:
            e.add_note(
                f"(raised by the attention: its query is the decoder's hidden state, of size "
                f"{query_size}, and its keys "
                f"the encoder outputs, of size K = {context_size})"
            )
            raise
        return context_size, y.shape[-1]

    def init(key):
        # Sizes are found, and the parts checked against each other, on shapes alone before
        # any parameter is drawn: K from the encoder, H from the decoder.
        return draw(key, *check_sizes(key))

    return Seq2Seq(init, encode, step, apply)


__all__ = ["Seq2Seq", "Seq2SeqParams", "Seq2SeqState", "seq2seq"]
