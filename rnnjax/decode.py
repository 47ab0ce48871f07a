"""Autoregressive decoding: greedy, temperature/top-k sampling and beam search.

Every decoder here drives one contract, the **decoding step**::

    step(params, state, token [*batch] int) -> (state, logits [*batch, V])

``state`` is any pytree whose leaves all start with the batch axes ``[*batch, ...]``. A
language model (``language_model(...).step``: embed the token, advance a cell, project to the
vocabulary) and an attention decoder (``seq2seq(...).step``, whose state also carries the
encoder memory) both have this form, as does any function you write.

Decoding runs in ``lax.while_loop`` and stops early once every sequence has emitted ``eos``.
The functions are pure and unjitted; jit them at the edge with the step, ``max_len`` and the
other settings closed over::

    generate = jax.jit(lambda p, s, start: rnnjax.greedy(model.step, p, s, start, max_len=20, eos=EOS))

Outputs are time-major like every sequence in rnnjax: ``tokens [max_len, *batch]``. A sequence
that emits ``eos`` is finished: ``eos`` is kept as its last token, every later position holds
``eos`` too, and its length counts the tokens up to and including the first ``eos``.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
from jax import lax

from rnnjax._checks import (
    check_array,
    check_bool,
    check_float,
    check_impl,
    check_int,
    check_key,
    check_unroll,
    is_concrete,
)
from rnnjax.cells import Cell
from rnnjax.compose import (
    DenseParams,
    StackedCarry,
    dense,
    dense_init,
    has_parallel_form,
    rnn,
    stack_layers,
)
from rnnjax.embed import check_ids, embedding_init, embedding_lookup, one_hot
from rnnjax.scan import scan

Array = jax.Array


# ----------------------------------------------------------------------------- checks


def _check_int(name: str, value: Any, *, minimum: int) -> int:
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < minimum:
        raise ValueError(f"{name}: expected an int >= {minimum}, got {value!r}")
    return int(value)


def _check_scalar(name: str, value: Any, *, positive: bool, hint: str = "") -> None:
    """A float (> 0 or >= 0); a scalar jax array is accepted too (checked when concrete), so
    the value may vary under ``jit`` without recompiling."""
    bound = "> 0" if positive else ">= 0"
    if hasattr(value, "shape") and hasattr(value, "dtype"):
        if value.shape != () or not jnp.issubdtype(value.dtype, jnp.floating):
            raise TypeError(f"{name}: expected a float {bound}, got an array of shape {tuple(value.shape)} and dtype {value.dtype}")
        if not is_concrete(value):
            return
        value = float(value)
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not (value > 0 if positive else value >= 0):
        raise ValueError(f"{name}: expected a float {bound}{hint}, got {value!r}")


def _check_decode(step, params, state, start, max_len, eos) -> tuple[Array, tuple, int]:
    """Validate the common arguments; returns ``(start, batch, vocab_size)``."""
    if not callable(step):
        raise TypeError(f"step: expected a function step(params, state, token) -> (state, logits), got {type(step).__name__}")
    _check_int("max_len", max_len, minimum=1)
    if isinstance(start, (int, np.integer)) and not isinstance(start, bool):
        start = np.asarray(start)
    check_array("start", start)
    if not jnp.issubdtype(start.dtype, jnp.integer):
        raise TypeError(f"start: expected integer token ids of shape [*batch], got dtype {start.dtype}")
    start = jnp.asarray(start, jnp.int32)
    batch = tuple(start.shape)
    try:
        new_state, logits = jax.eval_shape(step, params, state, start)
    except (ValueError, TypeError) as e:
        e.add_note(f"(raised by step(params, state, start) with start of shape {batch}: start must be one "
                   "token id per sequence, with the batch shape of state)")
        raise
    if logits.ndim != len(batch) + 1 or tuple(logits.shape[:-1]) != batch:
        raise ValueError(
            f"step: expected logits of shape [*batch, V] with *batch = {batch} from start, got "
            f"{tuple(logits.shape)}; pass start as an array of shape [*batch] matching the state"
        )
    in_tree = jax.tree_util.tree_structure(state)
    out_tree = jax.tree_util.tree_structure(new_state)
    if in_tree != out_tree:
        raise ValueError(f"state: step must return a state of the structure it was given; given {in_tree}, returned {out_tree}")
    for (path, a), b in zip(jax.tree_util.tree_flatten_with_path(state)[0], jax.tree_util.tree_leaves(new_state), strict=True):
        if tuple(jnp.shape(a)) != tuple(b.shape) or jnp.result_type(a) != b.dtype:
            raise ValueError(
                f"state{jax.tree_util.keystr(path)}: step returned shape {b.shape} {b.dtype} for a leaf of "
                f"shape {jnp.shape(a)} {jnp.result_type(a)}; they must match"
            )
    vocab_size = logits.shape[-1]
    if eos is not None:
        _check_int("eos", eos, minimum=0)
        if eos >= vocab_size:
            raise ValueError(f"eos: expected a token id in [0, {vocab_size}) (V from the step's logits), got {eos}")
    if is_concrete(start):
        check_ids(start, vocab_size, name="start")
    return start, batch, vocab_size


def _decode_loop(step, params, state, start, max_len, eos, pick):
    """Shared loop of greedy and sample; ``pick(t, logits) -> token``."""
    batch = tuple(start.shape)
    fill = 0 if eos is None else eos

    def cond(c):
        t, _, _, done, _, _ = c
        return (t < max_len) & ~jnp.all(done)

    def body(c):
        t, state, prev, done, lengths, tokens = c
        state, logits = step(params, state, prev)  # logits [*batch, V]
        tok = jnp.where(done, fill, pick(t, logits).astype(jnp.int32))
        tokens = lax.dynamic_update_index_in_dim(tokens, tok, t, 0)
        lengths = lengths + (~done).astype(jnp.int32)
        if eos is not None:
            done = done | (tok == eos)
        return t + 1, state, tok, done, lengths, tokens

    init = (
        jnp.asarray(0, jnp.int32),
        state,
        start,
        jnp.zeros(batch, bool),
        jnp.zeros(batch, jnp.int32),
        jnp.full((max_len,) + batch, fill, jnp.int32),
    )
    *_, lengths, tokens = lax.while_loop(cond, body, init)
    return tokens, lengths


# ----------------------------------------------------------------------------- greedy, sample


def _tokens_layout(tokens: Array, time_major: bool) -> Array:
    """Decoded ``tokens [max_len, ...]``; with ``time_major=False`` the time axis goes last
    (``[*batch, max_len]``, and ``[*batch, beam_size, max_len]`` for beams)."""
    return tokens if check_bool("time_major", time_major) else jnp.moveaxis(tokens, 0, -1)


def greedy(
    step: Callable,
    params: Any,
    state: Any,
    start: Array | int,
    *,
    max_len: int,
    eos: int | None = None,
    time_major: bool = True,
) -> tuple[Array, Array]:
    """Greedy decoding: feed back the most likely token at every step.

    Args:
      step: ``step(params, state, token [*batch]) -> (state, logits [*batch, V])``.
      params: the step's params.
      state: initial state, every leaf ``[*batch, ...]`` (e.g. ``lm.initial_carry((B,))`` or
        ``model.encode(params, src)``).
      start: ``[*batch]`` int, the first input token of each sequence (a start-of-sequence
        id, or the last token of a prompt); a Python int means an unbatched state.
      max_len: number of tokens to generate at most (static).
      eos: end-of-sequence id; a sequence that emits it stays finished. None: never stop early.

    ``time_major=False`` returns ``tokens [*batch, max_len]`` (each sequence a row).

    Returns:
      ``(tokens [max_len, *batch] int32, lengths [*batch] int32)``; positions after a
      sequence's first ``eos`` hold ``eos`` (0 when ``eos`` is None, where all positions are
      generated), and ``lengths`` counts the tokens up to and including that ``eos``.

    >>> def step(params, state, token):  # logits favour token (t + 1) % 4
    ...     return state, jax.nn.one_hot((token + 1) % 4, 4)
    >>> tokens, lengths = greedy(step, None, jnp.zeros(2), jnp.array([0, 2]), max_len=5, eos=3)
    >>> tokens[:, 0].tolist(), tokens[:, 1].tolist(), lengths.tolist()
    ([1, 2, 3, 3, 3], [3, 3, 3, 3, 3], [3, 1])
    """
    start, _, _ = _check_decode(step, params, state, start, max_len, eos)
    tokens, lengths = _decode_loop(step, params, state, start, max_len, eos,
                                   lambda t, logits: jnp.argmax(logits, axis=-1))
    return _tokens_layout(tokens, time_major), lengths


def top_k_logits(logits: Array, k: int) -> Array:
    """Keep the ``k`` largest logits on the last axis and set the rest to ``-inf``.

    Ties with the ``k``-th largest value are kept.

    >>> top_k_logits(jnp.array([1.0, 3.0, 2.0, 0.0]), 2)
    Array([-inf,   3.,   2., -inf], dtype=float32)
    """
    check_float("logits", logits)
    vocab_size = logits.shape[-1] if logits.ndim else 0
    _check_int("k", k, minimum=1)
    if k > vocab_size:
        raise ValueError(f"k: expected at most {vocab_size} (the size of the last axis of logits), got {k}")
    kth = lax.top_k(logits, k)[0][..., -1:]  # [*batch, 1]
    return jnp.where(logits < kth, -jnp.inf, logits)


def sample(
    step: Callable,
    params: Any,
    state: Any,
    start: Array | int,
    key: Array,
    *,
    max_len: int,
    eos: int | None = None,
    temperature: float = 1.0,
    top_k: int | None = None,
    time_major: bool = True,
) -> tuple[Array, Array]:
    """Ancestral sampling with temperature and optional top-k truncation.

    At each step the next token is drawn from ``softmax(top_k(logits) / temperature)``:
    ``temperature < 1`` sharpens the distribution, ``> 1`` flattens it; ``top_k`` keeps only the
    ``k`` most likely tokens (``top_k=1`` is greedy). Each step draws with
    ``jax.random.fold_in(key, t)``, so one ``key`` gives one reproducible batch of samples.

    Args:
      step, params, state, start, max_len, eos: as in ``greedy``.
      key: PRNG key.
      temperature: a finite float > 0 (or a scalar float array, to vary it under ``jit``).
      top_k: None (the full distribution) or an int in ``[1, V]``.

    Returns:
      ``(tokens [max_len, *batch], lengths [*batch])`` as in ``greedy``.

    Outside ``jit`` a temperature that is not a finite number > 0 and a ``start`` id outside
    ``[0, V)`` are ValueErrors. Under ``jit`` their values are unknown while tracing; there a
    traced temperature ``<= 0``, Inf or NaN makes every token ``-1`` and every length 0, and an
    out-of-range ``start`` id does so for its own sequence — an id no vocabulary has, which
    ``check_ids`` or an embedding lookup downstream rejects, instead of plausible-looking
    samples from a meaningless distribution.

    >>> def step(params, state, token):
    ...     return state, jnp.log(jnp.array([0.1, 0.2, 0.7])) * jnp.ones(token.shape + (3,))
    >>> tokens, _ = sample(step, None, jnp.zeros(()), jnp.zeros(1000, int), jax.random.key(0), max_len=1, top_k=2)
    >>> sorted(set(tokens[0].tolist()))  # token 0 is outside the top 2
    [1, 2]
    """
    start, _, vocab_size = _check_decode(step, params, state, start, max_len, eos)
    check_key(key)
    _check_scalar("temperature", temperature, positive=True, hint=" (use greedy for the argmax)")
    if not hasattr(temperature, "shape") or is_concrete(temperature):
        if not np.isfinite(float(temperature)):
            raise ValueError(f"temperature: expected a finite float > 0, got {float(temperature)!r}")
    if top_k is not None:
        top_k = _check_int("top_k", top_k, minimum=1)
        if top_k > vocab_size:
            raise ValueError(f"top_k: expected an int in [1, {vocab_size}] (V from the step's logits), got {top_k}")

    # Values the checks above cannot see under jit: tokens -1 and length 0 mark them.
    temp = jnp.asarray(temperature, jnp.float32)
    bad_temp = ~((temp > 0) & jnp.isfinite(temp))
    bad = bad_temp | (start < 0) | (start >= vocab_size)  # [*batch]
    temp = jnp.where(bad_temp, jnp.ones((), jnp.float32), temp)

    def pick(t, logits):
        logits = logits.astype(jnp.float32)
        if top_k is not None:
            logits = top_k_logits(logits, top_k)
        return jax.random.categorical(jax.random.fold_in(key, t), logits / temp, axis=-1)

    tokens, lengths = _decode_loop(step, params, state, start, max_len, eos, pick)
    return _tokens_layout(jnp.where(bad, -1, tokens), time_major), jnp.where(bad, 0, lengths)


# ----------------------------------------------------------------------------- beam search


def beam_search(
    step: Callable,
    params: Any,
    state: Any,
    start: Array | int,
    *,
    max_len: int,
    beam_size: int,
    eos: int | None = None,
    length_norm: float = 1.0,
    time_major: bool = True,
) -> tuple[Array, Array, Array]:
    """Beam search with per-beam end-of-sequence handling and length normalisation.

    Keeps the ``beam_size`` best hypotheses per sequence. A hypothesis that emits ``eos`` is
    finished: it stays in the beam with its score frozen and competes with the live ones,
    which are extended by every token. Hypotheses are ranked by the length-normalised score

    ::

        score = log p(y_1 .. y_L) / L ** length_norm

    with ``L`` the number of generated tokens (``eos`` included): ``length_norm=0`` ranks by
    raw log-probability (which favours short outputs), ``1`` by mean log-probability per token.
    The search stops at ``max_len`` or once every beam is finished. ``beam_size=1`` is greedy
    decoding.

    The state gets a beam axis after the batch axes: the step sees ``state`` leaves
    ``[*batch, beam_size, ...]`` and tokens ``[*batch, beam_size]``, which every rnnjax step
    handles (steps take any leading batch shape).

    Args:
      step, params, state, start, max_len, eos: as in ``greedy``.
      beam_size: number of hypotheses kept per sequence.
      length_norm: the exponent α above, a float >= 0 (or a scalar float array).

    Returns:
      ``(tokens [max_len, *batch, beam_size], lengths [*batch, beam_size], scores [*batch,
      beam_size])``, best first along the beam axis (``tokens[..., 0]`` is the best sequence);
      ``scores`` are the normalised scores (``-inf`` for beam slots that never held a
      hypothesis, when the vocabulary is smaller than the beam).

    >>> def step(params, state, token):
    ...     return state, jnp.log(jnp.array([0.5, 0.3, 0.2])) * jnp.ones(token.shape + (3,))
    >>> tokens, lengths, scores = beam_search(step, None, jnp.zeros(()), jnp.array(1), max_len=3, beam_size=2, eos=0)
    >>> tokens[:, 0].tolist(), int(lengths[0])
    ([0, 0, 0], 1)
    """
    start, batch, vocab_size = _check_decode(step, params, state, start, max_len, eos)
    beam_size = _check_int("beam_size", beam_size, minimum=1)
    _check_scalar("length_norm", length_norm, positive=False)
    nb = len(batch)
    kb = batch + (beam_size,)  # [*batch, K]

    def tile(leaf):
        leaf = jnp.asarray(leaf)
        if tuple(leaf.shape[:nb]) != batch:
            raise ValueError(
                f"state: every leaf must start with the batch axes {batch} of start to be split into "
                f"beams, got a leaf of shape {tuple(leaf.shape)}"
            )
        return jnp.repeat(jnp.expand_dims(leaf, nb), beam_size, axis=nb)

    def gather(leaf, beam):  # leaf [*batch, K, ...], beam [*batch, K]
        idx = beam.reshape(beam.shape + (1,) * (leaf.ndim - nb - 1))
        return jnp.take_along_axis(leaf, idx, axis=nb)

    def normalise(logp, length):
        return logp / jnp.maximum(length, 1).astype(jnp.float32) ** length_norm

    vocab = jnp.arange(vocab_size)
    # A finished hypothesis has one continuation, eos, at no cost.
    finished_row = jnp.where(vocab == (0 if eos is None else eos), 0.0, -jnp.inf)  # [V]

    def cond(c):
        t, _, _, logp, done, _, _ = c
        return (t < max_len) & ~jnp.all(done | (logp == -jnp.inf))

    def body(c):
        t, state, prev, logp, done, lengths, tokens = c
        state, logits = step(params, state, prev)  # [*batch, K, V]
        lp = jax.nn.log_softmax(logits.astype(jnp.float32), axis=-1)
        cont = jnp.where(done[..., None], finished_row, lp)
        cand = logp[..., None] + cont  # [*batch, K, V]
        cand_len = jnp.where(done, lengths, lengths + 1)  # [*batch, K]
        ranked = normalise(cand, cand_len[..., None]).reshape(batch + (beam_size * vocab_size,))
        _, idx = lax.top_k(ranked, beam_size)  # [*batch, K]
        beam, tok = idx // vocab_size, (idx % vocab_size).astype(jnp.int32)
        logp = jnp.take_along_axis(cand.reshape(ranked.shape), idx, axis=-1)
        lengths = jnp.take_along_axis(cand_len, beam, axis=-1)
        was_done = jnp.take_along_axis(done, beam, axis=-1)
        done = was_done | (tok == eos) if eos is not None else was_done
        state = jax.tree_util.tree_map(lambda leaf: gather(leaf, beam), state)
        tokens = jnp.take_along_axis(tokens, beam[None], axis=nb + 1)  # [max_len, *batch, K]
        tokens = lax.dynamic_update_index_in_dim(tokens, tok, t, 0)
        return t + 1, state, tok, logp, done, lengths, tokens

    first = jnp.where(jnp.arange(beam_size) == 0, 0.0, -jnp.inf)  # one live hypothesis to start
    init = (
        jnp.asarray(0, jnp.int32),
        jax.tree_util.tree_map(tile, state),
        jnp.broadcast_to(start[..., None], kb),
        jnp.broadcast_to(first, kb),
        jnp.zeros(kb, bool),
        jnp.zeros(kb, jnp.int32),
        jnp.full((max_len,) + kb, 0 if eos is None else eos, jnp.int32),
    )
    _, _, _, logp, _, lengths, tokens = lax.while_loop(cond, body, init)
    scores = jnp.where(logp == -jnp.inf, -jnp.inf, normalise(logp, lengths))
    scores, order = lax.top_k(scores, beam_size)  # best first
    lengths = jnp.take_along_axis(lengths, order, axis=-1)
    tokens = jnp.take_along_axis(tokens, order[None], axis=nb + 1)
    return _tokens_layout(tokens, time_major), lengths, scores


# ----------------------------------------------------------------------------- language model


class LanguageModelParams(NamedTuple):
    """Parameters of ``language_model``."""

    embed: Array | None  # [V, E]; None with one-hot inputs
    cell: Any
    out: DenseParams  # w [H, V]


class LanguageModel(NamedTuple):
    """A token-level recurrent language model; see ``language_model``.

    Attributes:
      init: ``init(key) -> LanguageModelParams``.
      initial_carry: ``initial_carry(batch_shape=()) -> carry`` (zeros).
      step: ``step(params, carry, token [*batch]) -> (carry, logits [*batch, V])``, the
        decoding signature.
      apply: ``apply(params, tokens [T, *batch], *, lengths=None, carry=None)
        -> (carry, logits [T, *batch, V])``, teacher-forced over whole sequences.
    """

    init: Callable[[Array], LanguageModelParams]
    initial_carry: Callable[..., Any]
    step: Callable[[LanguageModelParams, Any, Array], tuple[Any, Array]]
    apply: Callable[..., tuple[Any, Array]]


def language_model(cell: Cell, vocab_size: int, *, embed_size: int | None = None, parallel: bool = False,
                   unroll: int | bool = 1, impl: str = "auto") -> LanguageModel:
    """Embedding → cell → output projection, for next-token prediction and sampling.

    ::

        x_t = E[y_t]   (or one_hot(y_t) when embed_size is None)
        h_t, o_t = cell.step(h_{t-1}, x_t)          logits_t = o_t W_out + b_out

    Args:
      cell: any ``Cell`` (e.g. ``stack(lstm(E, H), lstm(H, H))``) whose input size is
        ``embed_size``, or ``vocab_size`` with one-hot inputs.
      vocab_size: number of tokens ``V``.
      embed_size: size of a learned embedding table ``[V, E]``; None feeds one-hot vectors.
      parallel: ``apply`` runs the cell layer by layer (each layer of a ``stack(...)``, or the
        one cell), each through its parallel-in-time form where it has one (``rnn(layer,
        parallel=True)``: the Mamba, Hawk and mLSTM blocks, LRU, RG-LRU, S6, minGRU, ...) and
        through its step loop where it has none; the results, carries included, equal the
        sequential ``apply``. ``step`` decodes with the same params either way. At least one
        layer must have a parallel form.
      unroll, impl: for the step loops of ``apply`` (see ``rnnjax.scan``).

    Returns:
      ``LanguageModel(init, initial_carry, step, apply)``. Train ``apply`` on ``tokens[:-1]``
      against targets ``tokens[1:]``; sample with ``sample(lm.step, params, carry, start, key,
      ...)``. To continue a prompt, run ``carry, _ = lm.apply(params, prompt[:-1])`` and start
      from ``prompt[-1]``.

    A Mamba language model trained in parallel and decoded step by step:

    >>> blocks = stack(mamba_block(16, state_size=4), mamba_block(16, state_size=4))
    >>> lm = language_model(blocks, vocab_size=20, embed_size=16, parallel=True)
    >>> params, prompt = lm.init(jax.random.key(0)), jnp.zeros((6, 2), int)
    >>> carry, logits = jax.jit(lm.apply)(params, prompt[:-1])         # associative scans over time
    >>> tokens, _ = greedy(lm.step, params, carry, prompt[-1], max_len=4)
    >>> logits.shape, tokens.shape
    ((5, 2, 20), (4, 2))

    >>> lm = language_model(stack(gru(8, 16), gru(16, 16)), vocab_size=20, embed_size=8)
    >>> params = lm.init(jax.random.key(0))
    >>> carry, logits = lm.apply(params, jnp.zeros((5, 2), int))
    >>> tokens, lengths = greedy(lm.step, params, lm.initial_carry((2,)), jnp.zeros(2, int), max_len=7)
    >>> logits.shape, tokens.shape
    ((5, 2, 20), (7, 2))
    """
    if not isinstance(cell, Cell):
        raise TypeError(f"cell: expected a rnnjax.Cell, got {type(cell).__name__}")
    vocab_size = check_int("vocab_size", vocab_size)
    if embed_size is not None:
        embed_size = check_int("embed_size", embed_size)
    input_size = vocab_size if embed_size is None else embed_size
    check_unroll(unroll)
    check_impl(impl)
    layered = None
    if check_bool("parallel", parallel):
        layers = stack_layers(cell)
        if not any(has_parallel_form(layer) for layer in layers):
            raise ValueError(
                "parallel: expected a cell with a parallel-in-time form, or a stack(...) with at least one "
                "layer that has one (see rnnjax.rnn), got none")
        layered = [rnn(layer, parallel=has_parallel_form(layer), unroll=unroll, impl=impl) for layer in layers]

    def inputs(params, tokens):
        if params.embed is None:
            return one_hot(tokens, vocab_size)
        return embedding_lookup(params.embed, tokens)

    def init(key):
        k1, k2, k3 = jax.random.split(key, 3)
        try:  # the cell's output size, from shapes alone (a misfit raises before anything is drawn)
            _, y = jax.eval_shape(cell.step, jax.eval_shape(cell.init, k2), cell.initial_carry((1,)),
                                  jax.ShapeDtypeStruct((1, input_size), jnp.float32))
        except (ValueError, TypeError) as e:
            what = f"embed_size = {embed_size}" if embed_size is not None else f"vocab_size = {vocab_size} (one-hot)"
            e.add_note(f"(raised by the cell, whose input size must be {what})")
            raise
        table = None if embed_size is None else embedding_init(k1, vocab_size, embed_size)
        return LanguageModelParams(table, cell.init(k2), dense_init(k3, y.shape[-1], vocab_size))

    def initial_carry(batch_shape=()):
        return cell.initial_carry(batch_shape)

    def step(params, carry, token):
        carry, y = cell.step(params.cell, carry, inputs(params, token))
        return carry, dense(params.out, y)

    def apply(params, tokens, *, lengths=None, carry=None):
        tokens = check_ids(tokens, vocab_size, name="tokens")
        if tokens.ndim < 1 or tokens.shape[0] == 0:
            raise ValueError(f"tokens: expected shape [T, *batch] with T >= 1, got {tuple(tokens.shape)}")
        if carry is None:
            carry = cell.initial_carry(tuple(tokens.shape[1:]))
        xs = inputs(params, tokens)  # [T, *batch, E]
        if layered is None:
            carry, ys = scan(cell.step, params.cell, carry, xs, lengths=lengths, unroll=unroll, impl=impl)
        elif len(layered) == 1 and not hasattr(cell.step, "layers"):
            carry, ys = layered[0].apply(params.cell, xs, lengths=lengths, carry=carry)
        else:  # layer by layer, as deep(...) does with these layers: same params and carries as the stack
            finals, ys = [], xs
            for k, layer in enumerate(layered):
                try:
                    c, ys = layer.apply(params.cell[k], ys, lengths=lengths, carry=carry[k])
                except (ValueError, TypeError) as e:
                    e.add_note(f"(raised by layer {k} of the language model's stack)")
                    raise
                finals.append(c)
            carry = StackedCarry(finals) if isinstance(carry, StackedCarry) else tuple(finals)
        return carry, dense(params.out, ys)  # [T, *batch, V]

    return LanguageModel(init, initial_carry, step, apply)


__all__ = [
    "LanguageModel",
    "LanguageModelParams",
    "beam_search",
    "greedy",
    "language_model",
    "sample",
    "top_k_logits",
]
