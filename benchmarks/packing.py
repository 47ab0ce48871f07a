"""Packed vs padded vs length-bucketed batches: training throughput on skewed real lengths.

Run from the repository root::

    .venv/bin/python benchmarks/packing.py            # about 2.5 minutes on 2 cores (load ~6)
    .venv/bin/python benchmarks/packing.py --smoke    # seconds (the test suite runs this)

Data: the paragraphs of the Python language reference (``pydoc_data.topics``, the character
model's text), as character ids; a paragraph longer than the row (256) is cut to 256. Their
lengths are skewed (median ~114, a quarter over 235), which is where padding wastes compute.

Model: a 2-layer bidirectional LSTM (``deep(bidirectional(lstm, lstm), bidirectional(...))``,
embedding 32, hidden 64 per direction) with a per-step softmax over the characters, trained
with Adam on the next character (a tagging-shaped loss over valid positions). Three ways to
batch the same sequences, each one epoch over the same valid tokens:

* ``padded``: batches of 32 (``--batch``) sequences in random order, each padded to the row length 256
  (one compiled shape);
* ``bucketed``: sequences sorted by length, batches of 32 neighbours, each padded to its
  longest rounded up to a multiple of 32 (at most 8 compiled shapes);
* ``packed``: ``rnnjax.pack_sequences`` rows of 256 steps (first-fit-decreasing), 32 rows per
  batch, with ``resets`` (one compiled shape; each sequence is computed as if alone).

Timed after compiling every shape once: the epochs of the three run in turns, ``--rounds``
times, and each reports its median valid tokens per second. Output: a table on stdout and
``benchmarks/results/packing.json``.
"""

from __future__ import annotations

import argparse
import json
import platform
import re
import statistics
import sys
import time
from pathlib import Path

import jax
import numpy as np
import optax

if __package__ in (None, ""):
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import rnnjax as rj
from experiments.text_data import CharVocab, python_reference_text

RESULTS = Path(__file__).resolve().parent / "results"
ROW, EMBED, HIDDEN = 256, 32, 64


def paragraphs(limit: int | None, row: int) -> tuple[list[np.ndarray], int]:
    text = python_reference_text()
    vocab = CharVocab.from_text(text)
    paras = [p for p in re.split(r"\n\s*\n", text) if p.strip()]
    if limit is not None:
        rng = np.random.default_rng(0)
        paras = [paras[i] for i in sorted(rng.choice(len(paras), limit, replace=False))]
    return [np.asarray(vocab.encode(p[:row]), np.int32) for p in paras], vocab.size


def build(vocab_size: int):
    def layer(n_in):
        return rj.bidirectional(rj.lstm(n_in, HIDDEN), rj.lstm(n_in, HIDDEN))

    model = rj.deep(layer(EMBED), layer(2 * HIDDEN))
    k1, k2, k3 = jax.random.split(jax.random.key(0), 3)
    params = (rj.embedding_init(k1, vocab_size, EMBED), model.init(k2), rj.dense_init(k3, 2 * HIDDEN, vocab_size))
    opt = optax.adam(1e-3)

    @jax.jit
    def step(params, opt_state, tokens, targets, lengths, resets):
        def loss_fn(p):
            emb, rnn_p, out_p = p
            xs = rj.embedding_lookup(emb, tokens)  # [T, B, E]
            _, ys = model.apply(rnn_p, xs, lengths=lengths, resets=resets)
            return rj.sequence_cross_entropy(rj.dense(out_p, ys), targets, mask=targets >= 0)

        loss, grads = jax.value_and_grad(loss_fn)(params)
        updates, opt_state = opt.update(grads, opt_state, params)
        return optax.apply_updates(params, updates), opt_state, loss

    return params, opt.init(params), step


def next_targets(seq: np.ndarray) -> np.ndarray:
    """Next-character targets of one sequence, -1 (ignored) at its last step."""
    return np.concatenate([seq[1:], [-1]]).astype(np.int32)


def padded_batches(seqs, width_of, order, batch):
    """Batches [T, B] of the sequences in ``order``, each padded to ``width_of(longest)``."""
    out = []
    for i in range(0, len(order), batch):
        idx = order[i : i + batch]
        width = width_of(max(len(seqs[j]) for j in idx))
        tokens = np.zeros((width, batch), np.int32)
        targets = np.full((width, batch), -1, np.int32)
        lengths = np.zeros(batch, np.int32)
        for b, j in enumerate(idx):
            n = len(seqs[j])
            tokens[:n, b], targets[:n, b], lengths[b] = seqs[j], next_targets(seqs[j]), n
        out.append((tokens, targets, lengths, None))
    return out


def packed_batches(seqs, row, batch):
    packed = rj.pack_sequences(seqs, row)
    lay = packed.layout
    targets = np.full((row, lay.num_rows), -1, np.int32)
    for i, seq in enumerate(seqs):
        targets[lay.starts[i] : lay.starts[i] + len(seq), lay.rows[i]] = next_targets(seq)
    tokens, resets, lengths = (np.asarray(a) for a in (packed.xs, packed.resets, packed.lengths))
    out = []
    for i in range(0, lay.num_rows, batch):
        sl = slice(i, i + batch)
        t, g, r, n = tokens[:, sl], targets[:, sl], resets[:, sl], lengths[sl]
        if t.shape[1] < batch:  # the last batch: spare rows of padding keep one compiled shape
            pad = batch - t.shape[1]
            t, g = np.pad(t, ((0, 0), (0, pad))), np.pad(g, ((0, 0), (0, pad)), constant_values=-1)
            r, n = np.pad(r, ((0, 0), (0, pad))), np.pad(n, (0, pad))
        out.append((t, g, n, r))
    return out


def run_epoch(step, state, batches):
    params, opt_state = state
    loss = None
    for tokens, targets, lengths, resets in batches:
        params, opt_state, loss = step(params, opt_state, tokens, targets, lengths, resets)
    jax.block_until_ready(loss)
    return (params, opt_state), float(loss)


def main(argv=None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--smoke", action="store_true", help="64 paragraphs, rows of 64, batches of 8, 1 round")
    parser.add_argument("--batch", type=int, default=32, help="sequences (padded) or rows (packed) per batch")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--out", type=Path, default=RESULTS / "packing.json")
    args = parser.parse_args(argv)
    row = 64 if args.smoke else ROW
    seqs, vocab_size = paragraphs(64 if args.smoke else None, row)
    rounds = 1 if args.smoke else args.rounds
    batch = 8 if args.smoke else args.batch
    valid = sum(len(s) for s in seqs)
    rng = np.random.default_rng(0)
    by_length = sorted(range(len(seqs)), key=lambda i: len(seqs[i]))
    modes = {
        "padded": padded_batches(seqs, lambda n: row, list(rng.permutation(len(seqs))), batch),
        "bucketed": padded_batches(seqs, lambda n: min(row, -(-n // 32) * 32), by_length, batch),
        "packed": packed_batches(seqs, row, batch),
    }
    params, opt_state, step = build(vocab_size)
    results = {"rows": {}, "valid_tokens": valid, "sequences": len(seqs), "row": row, "batch": batch,
               "hidden": HIDDEN, "platform": platform.platform(), "jax": jax.__version__}
    for name, batches in modes.items():  # compile every shape once, untimed
        positions = sum(b[0].size for b in batches)
        shapes = {b[0].shape for b in batches}
        t0 = time.perf_counter()
        seen = set()
        for b in batches:
            if b[0].shape not in seen:
                seen.add(b[0].shape)
                run_epoch(step, (params, opt_state), [b])
        results["rows"][name] = {"batches": len(batches), "positions": positions, "shapes": len(shapes),
                                 "padding_share": 1 - valid / positions, "compile_s": time.perf_counter() - t0,
                                 "epoch_s": []}
    for _ in range(rounds):
        for name, batches in modes.items():
            t0 = time.perf_counter()
            _, loss = run_epoch(step, (params, opt_state), batches)
            results["rows"][name]["epoch_s"].append(time.perf_counter() - t0)
            results["rows"][name]["last_loss"] = loss
    base = None
    print(f"{len(seqs)} sequences, {valid} valid tokens, rows of {row}, batch {batch}, 2-layer BiLSTM H={HIDDEN}")
    print("| batching | batches | padding | compiled shapes | compile s | epoch s (median; fastest) | "
          "valid tokens/s (median) | x padded (median; fastest) |")
    print("|---|---:|---:|---:|---:|---:|---:|---:|")
    for name, r in results["rows"].items():
        r["median_epoch_s"] = statistics.median(r["epoch_s"])
        r["tokens_per_s"] = valid / r["median_epoch_s"]
        base = base or r["tokens_per_s"]
        r["speedup_over_padded"] = r["tokens_per_s"] / base
        fastest = min(results["rows"]["padded"]["epoch_s"]) / min(r["epoch_s"])
        r["fastest_speedup_over_padded"] = fastest
        print(f"| {name} | {r['batches']} | {100 * r['padding_share']:.0f}% | {r['shapes']} | {r['compile_s']:.0f} | "
              f"{r['median_epoch_s']:.1f}; {min(r['epoch_s']):.1f} | {r['tokens_per_s']:.0f} | "
              f"{r['speedup_over_padded']:.2f}x; {fastest:.2f}x |")
    if not args.smoke:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(json.dumps(results, indent=2) + "\n")
    return results


if __name__ == "__main__":
    main()
