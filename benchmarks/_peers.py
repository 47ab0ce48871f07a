"""Builders for one benchmark entry per library: a zero-argument callable that runs one step.

Every builder takes ``(kind, size, mode)`` with ``kind`` in ``lstm | gru | elman``, ``size`` a
``Size`` and ``mode`` in ``train | infer`` and returns a callable that runs one step to
completion (``block_until_ready`` / torch's synchronous CPU ops), or ``None`` when the library
has no such cell. ``train`` is forward + backward over the whole sequence (gradients of
``mean(ys**2)`` with respect to all weights); ``infer`` is the forward pass alone. Data is
time-major ``[T, B, I]`` everywhere, float32. ``rnnjax_entry`` also takes the cell's precision
policy (``dtype``) and ``torch_entry`` a device (``"cuda"`` waits for the device after each
step); their defaults are what ``bench.py`` runs.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
from jax import lax


class Size(NamedTuple):
    name: str
    batch: int
    steps: int
    inputs: int
    hidden: int


def _data(size: Size, seed: int = 0):
    rng = np.random.default_rng(seed)
    return rng.standard_normal((size.steps, size.batch, size.inputs)).astype(np.float32)


def _lengths(size: Size, seed: int = 1):
    """Lengths between T/2 and T, the longest equal to T."""
    rng = np.random.default_rng(seed)
    lengths = rng.integers(size.steps // 2, size.steps + 1, size=size.batch)
    lengths[0] = size.steps
    return lengths.astype(np.int32)


def _jax_runner(forward: Callable, params, xs, mode: str, *, jit=jax.jit, grad=jax.grad) -> Callable[[], None]:
    """``forward(params, xs) -> ys``; train = gradient of ``mean(ys**2)``, infer = ys."""
    fn = jit(grad(lambda p, x: _mse(forward(p, x)))) if mode == "train" else jit(forward)
    xs = jnp.asarray(xs)
    return lambda: jax.block_until_ready(fn(params, xs))


def _mse(ys):
    return jnp.mean(ys**2)


# ---------------------------------------------------------------------------------- rnnjax


def rnnjax_entry(kind: str, size: Size, mode: str, *, dtype=None):
    """``dtype``: the cells' product dtype (``jnp.bfloat16``: bf16 x bf16 accumulated in float32)."""
    import rnnjax as rj

    factory = {"lstm": rj.lstm, "gru": rj.gru, "elman": rj.elman}[kind]
    cell = factory(size.inputs, size.hidden, dtype=dtype)
    params = cell.init(jax.random.key(0))
    carry = cell.initial_carry((size.batch,))

    def forward(p, xs):
        _, ys = rj.scan(cell.step, p, carry, xs)
        return ys

    return _jax_runner(forward, params, _data(size), mode)


def rnnjax_deep_bi_model(size: Size):
    import rnnjax as rj

    i, h = size.inputs, size.hidden
    return rj.deep(
        rj.bidirectional(rj.lstm(i, h), rj.lstm(i, h)),
        rj.bidirectional(rj.lstm(2 * h, h), rj.lstm(2 * h, h)),
    )


def rnnjax_deep_bi(size: Size, mode: str):
    model = rnnjax_deep_bi_model(size)
    params = model.init(jax.random.key(0))
    lengths = jnp.asarray(_lengths(size))

    def forward(p, xs):
        _, ys = model.apply(p, xs, lengths=lengths)
        return ys

    return _jax_runner(forward, params, _data(size), mode)


# ----------------------------------------------------------------------------- flax linen


def linen_entry(cell_name: str):
    def build(kind: str, size: Size, mode: str):
        from flax import linen as nn

        wanted = {"lstm": ("OptimizedLSTMCell", "LSTMCell"), "gru": ("GRUCell",), "elman": ("SimpleCell",)}
        if cell_name not in wanted[kind]:
            return None
        model = nn.RNN(getattr(nn, cell_name)(features=size.hidden), time_major=True)
        xs = _data(size)
        variables = model.init(jax.random.key(0), xs)

        def forward(v, x):
            return model.apply(v, x)

        return _jax_runner(forward, variables, xs, mode)

    return build


def linen_deep_bi(size: Size, mode: str):
    from flax import linen as nn

    def layer():
        rnn = lambda: nn.RNN(nn.OptimizedLSTMCell(features=size.hidden), time_major=True)
        return nn.Bidirectional(rnn(), rnn(), time_major=True)

    class Deep(nn.Module):
        @nn.compact
        def __call__(self, xs, lengths):
            for _ in range(2):
                xs = layer()(xs, seq_lengths=lengths)
            return xs

    model, xs, lengths = Deep(), _data(size), jnp.asarray(_lengths(size))
    variables = model.init(jax.random.key(0), xs, lengths)

    def forward(v, x):
        return model.apply(v, x, lengths)

    return _jax_runner(forward, variables, xs, mode)


# -------------------------------------------------------------------------------- flax nnx


def _nnx_runner(module, xs, mode: str, **call_kwargs):
    from flax import nnx

    graphdef, params, rest = nnx.split(module, nnx.Param, ...)

    def forward(p, x):
        return nnx.merge(graphdef, p, rest)(x, **call_kwargs)

    return _jax_runner(forward, params, xs, mode)


def _nnx_cell(kind: str, in_features: int, size: Size, rngs):
    from flax import nnx

    cls = {"lstm": nnx.OptimizedLSTMCell, "gru": nnx.GRUCell, "elman": nnx.SimpleCell}[kind]
    return cls(in_features, size.hidden, rngs=rngs)


def _nnx_zero_carry(kind: str, size: Size):
    """Initial carry given explicitly: without one, nnx.RNN draws it from an RNG stream."""
    zeros = jnp.zeros((size.batch, size.hidden))
    return (zeros, zeros) if kind == "lstm" else zeros


def nnx_entry(kind: str, size: Size, mode: str):
    from flax import nnx

    model = nnx.RNN(_nnx_cell(kind, size.inputs, size, nnx.Rngs(0)), time_major=True)
    return _nnx_runner(model, _data(size), mode, initial_carry=_nnx_zero_carry(kind, size))


def nnx_deep_bi(size: Size, mode: str):
    from flax import nnx

    rngs = nnx.Rngs(0)

    def rnn(in_features):
        return nnx.RNN(_nnx_cell("lstm", in_features, size, rngs), time_major=True)

    class Deep(nnx.Module):
        def __init__(self):
            self.layers = nnx.List([
                nnx.Bidirectional(rnn(n), rnn(n), time_major=True)
                for n in (size.inputs, 2 * size.hidden)
            ])

        def __call__(self, xs, seq_lengths):
            carry = _nnx_zero_carry("lstm", size)
            for layer in self.layers:
                xs = layer(xs, initial_carry=(carry, carry), seq_lengths=seq_lengths)
            return xs

    return _nnx_runner(Deep(), _data(size), mode, seq_lengths=jnp.asarray(_lengths(size)))


# -------------------------------------------------------------------------------- equinox


def equinox_entry(kind: str, size: Size, mode: str):
    import equinox as eqx

    if kind == "elman":
        return None  # equinox has no simple-RNN cell
    key = jax.random.key(0)
    cell = {"lstm": eqx.nn.LSTMCell, "gru": eqx.nn.GRUCell}[kind](size.inputs, size.hidden, key=key)
    zeros = jnp.zeros((size.batch, size.hidden))
    carry = (zeros, zeros) if kind == "lstm" else zeros

    def forward(cell, xs):
        def step(c, x):
            c = jax.vmap(cell)(x, c)
            return c, (c[0] if kind == "lstm" else c)

        _, ys = lax.scan(step, carry, xs)
        return ys

    return _jax_runner(forward, cell, _data(size), mode, jit=eqx.filter_jit, grad=eqx.filter_grad)


# ---------------------------------------------------------------------------------- haiku


def haiku_entry(kind: str, size: Size, mode: str):
    import haiku as hk

    def unroll(xs):
        core = {"lstm": hk.LSTM, "gru": hk.GRU, "elman": hk.VanillaRNN}[kind](size.hidden)
        ys, _ = hk.dynamic_unroll(core, xs, core.initial_state(size.batch), time_major=True)
        return ys

    model = hk.without_apply_rng(hk.transform(unroll))
    xs = _data(size)
    return _jax_runner(model.apply, model.init(jax.random.key(0), xs), xs, mode)


# ---------------------------------------------------------------------------------- torch


def _torch_runner(module, run: Callable, mode: str, device: str = "cpu"):
    import torch

    sync = torch.cuda.synchronize if device.startswith("cuda") else (lambda: None)
    if mode == "train":
        def step():
            module.zero_grad(set_to_none=True)
            (run() ** 2).mean().backward()
            sync()
    else:
        def step():
            with torch.inference_mode():
                run()
            sync()
    return step


def torch_entry(kind: str, size: Size, mode: str, *, device: str = "cpu"):
    """``device="cuda"``: the module and data on the GPU (cuDNN's RNN kernels)."""
    import torch

    torch.manual_seed(0)
    module = {"lstm": torch.nn.LSTM, "gru": torch.nn.GRU, "elman": torch.nn.RNN}[kind](
        size.inputs, size.hidden
    ).to(device)
    xs = torch.from_numpy(_data(size)).to(device)
    return _torch_runner(module, lambda: module(xs)[0], mode, device)


def torch_deep_bi(size: Size, mode: str):
    import torch
    from torch.nn.utils.rnn import pack_padded_sequence, pad_packed_sequence

    torch.manual_seed(0)
    module = torch.nn.LSTM(size.inputs, size.hidden, num_layers=2, bidirectional=True)
    xs, lengths = torch.from_numpy(_data(size)), torch.from_numpy(_lengths(size)).long()

    def run():
        packed = pack_padded_sequence(xs, lengths, enforce_sorted=False)
        return pad_packed_sequence(module(packed)[0], total_length=size.steps)[0]

    return _torch_runner(module, run, mode)


# ------------------------------------------------------------------------------ the table

# name -> (builder for the single-layer cases, builder for the deep bidirectional case, package)
LIBRARIES: dict[str, tuple[Callable | None, Callable | None, str]] = {
    "rnnjax": (rnnjax_entry, rnnjax_deep_bi, "rnnjax"),
    "flax.linen OptimizedLSTMCell": (linen_entry("OptimizedLSTMCell"), linen_deep_bi, "flax"),
    "flax.linen LSTMCell": (linen_entry("LSTMCell"), None, "flax"),
    "flax.linen GRUCell": (linen_entry("GRUCell"), None, "flax"),
    "flax.linen SimpleCell": (linen_entry("SimpleCell"), None, "flax"),
    "flax.nnx RNN": (nnx_entry, nnx_deep_bi, "flax"),
    "equinox scan+vmap": (equinox_entry, None, "equinox"),
    "haiku dynamic_unroll": (haiku_entry, None, "haiku"),
    "torch nn": (torch_entry, torch_deep_bi, "torch"),
}
