"""Token inputs: embedding tables, one-hot inputs and pretrained word vectors.

Token ids are integers in ``[0, vocab_size)``, time-major like every sequence here
(``ids: [T, *batch]``); ``embedding_lookup`` turns them into ``[T, *batch, E]`` inputs for a cell.

**Out-of-range ids.** ``jnp.take`` silently clamps an out-of-range index to the last row, so a
bad id would train on the wrong vector without a sound. ``embedding_lookup`` and ``one_hot`` therefore
check the ids whenever their values are known (outside ``jit``, or ``jit`` arguments marked
static) and raise ``ValueError`` naming the offending id and its position. Inside ``jit``/
``grad``/``vmap`` the values cannot be inspected while tracing; there an out-of-range id reads a
row of NaN instead of a clamped row, so the mistake surfaces as a NaN loss. To fail fast in a
jitted pipeline, call ``check_ids`` on each batch before the jitted step (the batch is concrete
there), or wrap the step in ``jax.experimental.checkify``.

**Frozen or fine-tuned embeddings** are an optimiser choice, made with optax rather than by
editing gradients: ``optax.selective_transform(tx, freeze_mask=mask)`` routes the leaves marked
``True`` in ``mask`` (a tree of bools shaped like the params) to ``optax.set_to_zero()`` and the
rest to ``tx``. With NamedTuple params the mask is one line::

    mask = jax.tree.map(lambda _: False, params)._replace(embed=True)   # freeze `embed`
    tx = optax.selective_transform(optax.adam(1e-3), freeze_mask=mask)

Because the frozen leaves never reach ``tx``, gradient clipping inside ``tx`` sees only the
trained parameters, and no optimiser state is kept for the frozen table.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Mapping, Sequence
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np

from rnnjax._checks import check_array, check_float, is_concrete

Array = jax.Array
_standard_normal = jax.nn.initializers.normal(1.0)


def _check_vocab_size(vocab_size: Any, name: str = "vocab_size") -> int:
    if isinstance(vocab_size, bool) or not isinstance(vocab_size, (int, np.integer)) or vocab_size < 1:
        raise ValueError(f"{name}: expected a positive int, got {vocab_size!r}")
    return int(vocab_size)


def check_ids(ids: Any, vocab_size: int, *, name: str = "ids") -> Array:
    """Check token ids: an integer array whose values (when concrete) lie in ``[0, vocab_size)``.

    Returns ``ids`` as a jax array. Raises ``TypeError`` for a non-integer dtype and
    ``ValueError`` naming the first offending id and its index. Under ``jit`` the values are
    not known and only the dtype is checked.

    >>> check_ids(jnp.array([[1, 2], [0, 3]]), vocab_size=4).shape
    (2, 2)
    """
    vocab_size = _check_vocab_size(vocab_size)
    if isinstance(ids, (list, tuple, int, np.integer)):
        ids = np.asarray(ids)
    check_array(name, ids)
    if not jnp.issubdtype(ids.dtype, jnp.integer):
        raise TypeError(f"{name}: expected an integer array of token ids, got dtype {ids.dtype}")
    if is_concrete(ids):
        values = np.asarray(ids)
        bad = (values < 0) | (values >= vocab_size)
        if bad.any():
            where = tuple(int(i) for i in np.argwhere(bad)[0])
            raise ValueError(
                f"{name}: expected token ids in [0, {vocab_size}) (vocab_size), got {values[where]} at "
                f"index {where} ({int(bad.sum())} out-of-range ids; min {values.min()}, max {values.max()})"
            )
    return jnp.asarray(ids)


def embedding_init(
    key: Array,
    vocab_size: int,
    embed_size: int,
    *,
    init: Callable = _standard_normal,
    dtype=jnp.float32,
) -> Array:
    """A fresh embedding table ``[vocab_size, embed_size]``, entries ``N(0, 1)`` by default.

    ``init`` is any ``jax.nn.initializers``-style function ``(key, shape, dtype) -> Array``.

    >>> embedding_init(jax.random.key(0), 100, 16).shape
    (100, 16)
    """
    vocab_size = _check_vocab_size(vocab_size)
    _check_vocab_size(embed_size, "embed_size")
    return init(key, (vocab_size, int(embed_size)), dtype)


def _check_table(table: Any) -> None:
    check_float("table", table)
    if table.ndim != 2:
        raise ValueError(f"table: expected shape [vocab_size, embed_size], got {tuple(table.shape)}")


def embedding_lookup(table: Array, ids: Array) -> Array:
    """Look up token ids in an embedding table: ``table [V, E]``, ``ids [...]`` → ``[..., E]``.

    Ids outside ``[0, V)`` raise ``ValueError`` when concrete; under ``jit`` they give a row of
    NaN (see the module docstring). Gradients flow into the looked-up rows.

    >>> table = embedding_init(jax.random.key(0), 10, 4)
    >>> embedding_lookup(table, jnp.array([[1, 2, 3], [4, 5, 6]])).shape
    (2, 3, 4)
    """
    _check_table(table)
    vocab_size = table.shape[0]
    ids = check_ids(ids, vocab_size)
    # jnp.take wraps negative ids around; send every out-of-range id to row V, which "fill" reads as NaN.
    ids = jnp.where((ids >= 0) & (ids < vocab_size), ids, vocab_size)
    return jnp.take(table, ids, axis=0, mode="fill", fill_value=jnp.nan)


def one_hot(ids: Array, vocab_size: int, *, dtype=jnp.float32) -> Array:
    """One-hot inputs: ``ids [...]`` → ``[..., vocab_size]`` (an embedding fixed to the identity).

    Ids outside ``[0, vocab_size)`` raise ``ValueError`` when concrete; under ``jit`` they give
    a row of NaN (``jax.nn.one_hot`` alone would give a silent row of zeros).

    >>> one_hot(jnp.array([2, 0]), 3)
    Array([[0., 0., 1.],
           [1., 0., 0.]], dtype=float32)
    """
    vocab_size = _check_vocab_size(vocab_size)
    ids = check_ids(ids, vocab_size)
    out = jax.nn.one_hot(ids, vocab_size, dtype=dtype)
    valid = ((ids >= 0) & (ids < vocab_size))[..., None]
    return jnp.where(valid, out, jnp.array(jnp.nan, dtype))


def _check_header_dim(path: str, lineno: int, line: str, dim: int) -> None:
    """The first vector line after a word2vec header ``<count> <dim>`` has ``dim`` numbers."""
    fields = line.split()
    numbers = 0
    for field in reversed(fields[1:]):  # the trailing fields that are numbers (words may hold spaces)
        try:
            float(field)
        except ValueError:
            break
        numbers += 1
    if numbers != dim:
        raise ValueError(
            f"{path}:{lineno}: the word2vec header (line 1) gives vectors of {dim} numbers, but this line "
            f"has {numbers} numbers after its word; fix the header or the file"
        )


class PretrainedVectors(NamedTuple):
    """Result of ``load_vectors``."""

    table: Array  # [V, E] embedding table in vocabulary order
    found: np.ndarray  # [V] bool, True where the row came from the file
    coverage: float  # fraction of the vocabulary found in the file


def _vocab_index(vocab: Sequence[str] | Mapping[str, int]) -> dict[str, int]:
    if isinstance(vocab, Mapping):
        index = {str(w): int(i) for w, i in vocab.items()}
        ids = sorted(index.values())
        if ids != list(range(len(ids))):
            raise ValueError(
                f"vocab: expected a mapping word -> id with ids 0 .. {len(ids) - 1}, each once, got "
                f"ids from {ids[0] if ids else None} to {ids[-1] if ids else None}"
            )
    elif isinstance(vocab, (str, bytes)) or not isinstance(vocab, Sequence):
        raise TypeError(f"vocab: expected a sequence of words or a mapping word -> id, got {type(vocab).__name__}")
    else:
        index = {}
        for i, w in enumerate(vocab):
            if w in index:
                raise ValueError(f"vocab: word {w!r} appears twice (ids {index[w]} and {i})")
            index[w] = i
    if not index:
        raise ValueError("vocab: expected at least one word, got an empty vocabulary")
    return index


def load_vectors(
    path: str | os.PathLike,
    vocab: Sequence[str] | Mapping[str, int],
    *,
    key: Array,
    unknown_init: Callable | None = None,
    dtype=jnp.float32,
    encoding: str = "utf-8",
) -> PretrainedVectors:
    """Build an embedding table for ``vocab`` from a GloVe or word2vec text file.

    The file has one word per line followed by its vector, separated by spaces
    (``the 0.418 0.24968 ...``); a word2vec header line ``<count> <dim>`` is recognised and
    skipped. Words may contain spaces (the last ``dim`` fields are the vector). Only lines whose
    word is in ``vocab`` are parsed; the first occurrence of a word wins. Matching is exact
    (lower-case the vocabulary yourself for uncased vectors).

    Rows of vocabulary words missing from the file are drawn from ``N(μ, σ²)`` with ``μ, σ`` the
    mean and standard deviation of all loaded entries, so they sit at the scale of the pretrained
    ones; pass ``unknown_init(key, shape, dtype)`` to choose otherwise (e.g.
    ``jax.nn.initializers.zeros``).

    Args:
      path: the text file.
      vocab: words in id order (``vocab[i]`` has id ``i``) or a mapping word → id over ids
        ``0 .. V-1``.
      key: PRNG key for the missing rows.
      unknown_init: optional initializer for the missing rows.
      dtype: dtype of the table.
      encoding: text encoding of the file.

    Returns:
      ``PretrainedVectors(table [V, E], found [V] bool, coverage)``; report
      ``coverage`` and inspect ``[w for w, f in zip(vocab, found) if not f]`` for the misses.

    Raises:
      ValueError: a malformed line (named by its line number) — a vector entry that is not a
        finite number (``nan``, ``inf``) included, as it would also spoil the mean and spread
        drawn for the missing words —, a word2vec header whose dimension the lines do not have,
        a file that is not text in ``encoding`` (e.g. a binary word2vec file), or no word of
        ``vocab`` found.

    >>> import tempfile, pathlib
    >>> f = pathlib.Path(tempfile.mkdtemp()) / "vecs.txt"
    >>> _ = f.write_text("the 0.1 0.2\\ncat 0.3 0.4\\n")
    >>> vecs = load_vectors(f, ["<pad>", "the", "cat"], key=jax.random.key(0))
    >>> vecs.table.shape, vecs.found.tolist(), round(vecs.coverage, 3)
    ((3, 2), [False, True, True], 0.667)
    """
    index = _vocab_index(vocab)
    num_words = len(index)
    rows: dict[int, np.ndarray] = {}
    dim = None
    header = False
    path = os.path.expanduser(os.fspath(path))
    lineno = 0
    with open(path, encoding=encoding) as f:
        try:
            for lineno, line in enumerate(f, 1):
                line = line.rstrip()
                if not line:
                    continue
                if lineno == 1:
                    head = line.split()
                    if len(head) == 2 and head[0].isdigit() and head[1].isdigit():
                        dim = int(head[1])  # word2vec header: <count> <dim>
                        header = True
                        continue
                if dim is None:
                    dim = len(line.split()) - 1
                    if dim < 1:
                        raise ValueError(f"{path}:{lineno}: expected a word followed by its vector, got {line[:80]!r}")
                elif header:
                    _check_header_dim(path, lineno, line, dim)
                    header = False  # the first vector line settles it
                parts = line.rsplit(maxsplit=dim)
                if len(parts) != dim + 1:
                    raise ValueError(
                        f"{path}:{lineno}: expected a word and {dim} numbers, got {len(parts) - 1} numbers"
                    )
                i = index.get(parts[0])
                if i is None or i in rows:
                    continue
                try:
                    row = np.asarray(parts[1:], dtype=np.float64)
                except ValueError:
                    raise ValueError(f"{path}:{lineno}: expected {dim} numbers after {parts[0]!r}, got {line[:80]!r}") from None
                if not np.isfinite(row).all():
                    bad = [parts[1 + j] for j in np.flatnonzero(~np.isfinite(row))[:3]]
                    raise ValueError(
                        f"{path}:{lineno}: expected finite numbers in the vector of {parts[0]!r}, got {', '.join(bad)}"
                    )
                rows[i] = row
        except UnicodeDecodeError as e:
            raise ValueError(
                f"path: expected a text file of word vectors in {encoding}, got {path!r}, which is not {encoding} "
                f"text (what follows line {lineno} cannot be decoded: {e.reason}); a binary word2vec "
                "file must be converted to text first (e.g. gensim's KeyedVectors.load_word2vec_format(p, "
                "binary=True).save_word2vec_format(q)), or pass the file's encoding"
            ) from None
    if not rows:
        raise ValueError(
            f"vocab: none of its {num_words} words is in {path}; check the file and the words' case"
        )
    found = np.zeros(num_words, bool)
    found[list(rows)] = True
    loaded = np.stack([rows[i] for i in sorted(rows)])  # [n_found, E]
    if unknown_init is None:
        mean, std = float(loaded.mean()), float(loaded.std())
        unknown = mean + std * jax.random.normal(key, (num_words, dim), jnp.float32)
    else:
        unknown = unknown_init(key, (num_words, dim), dtype)
    table = np.array(unknown, dtype=np.float64)
    table[found] = loaded
    return PretrainedVectors(jnp.asarray(table, dtype), found, float(found.mean()))


__all__ = [
    "PretrainedVectors",
    "check_ids",
    "embedding_lookup",
    "embedding_init",
    "load_vectors",
    "one_hot",
]
