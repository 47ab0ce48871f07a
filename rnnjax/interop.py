"""Weights in and out of PyTorch, Flax (linen and NNX), Haiku, Equinox and Keras 3.

Each peer's recurrent layers are mapped onto the rnnjax cell that computes the same equations,
with the gate order, weight orientation and bias placement translated exactly; where a peer
computes something no rnnjax cell computes (an LSTM with other gate functions, a flax cell
whose ``carry_init`` is not zeros), the call raises an error naming the option instead of
mapping it approximately.

- PyTorch: ``from_torch(module)``; ``nn.RNN``/``LSTM``/``GRU`` give ``(deep SeqModel, params)``,
  ``nn.RNNCell``/``LSTMCell``/``GRUCell`` give ``(Cell, params)``;
- Flax linen: ``from_flax(module, variables)`` and Flax NNX: ``from_flax(module)``, for
  ``LSTMCell``, ``OptimizedLSTMCell``, ``GRUCell``, ``SimpleCell``, linen's ``MGUCell``
  (``(Cell, params)``; NNX has no ``MGUCell``) and ``RNN``, ``Bidirectional``
  (``(SeqModel, params)``);
- Haiku: ``from_haiku(params, "LSTM" | "GRU" | "VanillaRNN")`` gives ``(Cell, params)``;
- Equinox: ``from_equinox(cell)`` for ``eqx.nn.LSTMCell``/``GRUCell`` gives ``(Cell, params)``;
- Keras 3: ``from_keras(layer, weights=None)`` for ``LSTM``, ``GRU``, ``SimpleRNN`` and
  ``Bidirectional`` gives ``(SeqModel, params)``.

A batch-major model (``batch_first``, Flax's and Keras's default layout) reads and returns
``[*batch, T, F]`` and is meant for use as it is: ``deep``, ``bidirectional`` and the other
combinators hand time-major sequences to their layers, so nest the time-major cells instead
(``from_torch`` of a module with ``batch_first=False`` gives them).

Every ``to_*`` writes rnnjax params back in the peer's own layout (checking shapes first, so a
mismatch changes nothing). Peer libraries are imported only inside these functions; rnnjax
never depends on them.

How each peer maps (``W`` blocks are per gate; rnnjax weights are ``(in, out)``):

- PyTorch: ``w_ih = weight_ih.T`` (gates i, f, g, o / r, z, n as in rnnjax). The LSTM and Elman
  bias is ``b = bias_ih + bias_hh`` (``to_torch`` writes ``b`` into ``bias_ih`` and zeros into
  ``bias_hh``); the GRU keeps both. A ``batch_first`` module gives a model that reads and
  returns ``[*batch, T, F]``; inter-layer ``dropout`` becomes ``deep(dropout=...)``.
- Flax linen: the per-gate dense layers are concatenated (LSTM: biases on the ``h*`` layers;
  GRU: biases on ``ir``, ``iz``, ``in`` and ``hn``, so ``b_hh = [0, 0, b_hn]``). NNX's GRU has
  no ``b_hn``: it maps exactly to ``GRUParams`` with ``b_hh = 0``, and ``to_flax`` refuses a
  nonzero ``b_hh[2H:]``. ``MGUCell`` (gates f, n) maps to ``rnnjax.mgu`` with its
  ``reset_gate``: ``w_ih = [if, in]``, ``w_hh = [hf, hn]`` kernels, ``b_ih = [if, in]`` biases
  and ``b_hh = [0, b_hn]`` (``hn`` has a bias only with ``reset_gate=True``; ``to_flax`` folds
  the parts of ``b_hh`` flax has no place for into the input biases). ``RNN`` and
  ``Bidirectional`` follow their ``time_major`` (batch-major ``[*batch, T, F]`` by default).
- Haiku: ``LSTM`` has gates i, g, f, o and adds 1 to the forget pre-activation inside the
  step; rnnjax folds that 1 into ``b``. ``GRU`` is the reset-before GRU with gates z, r, a and
  ``h' = (1 - z) h + z a``: rnnjax's ``z`` is Haiku's ``1 - z``, so the z-gate weights and bias
  are negated (``σ(-u) = 1 - σ(u)``). ``VanillaRNN`` is an Elman cell with ReLU.
- Equinox: weights are ``(out, in)``; the GRU's ``bias_n`` sits inside the reset gate, so
  ``b_hh = [0, 0, bias_n]``.
- Keras 3: LSTM gates i, f, c, o; GRU gates z, r, h with ``h' = z h + (1 - z) h~`` as in
  rnnjax. ``reset_after=True`` (bias ``(2, 3H)``: input and recurrent rows) maps to ``gru``,
  ``reset_after=False`` (bias ``(3H,)``) to ``gru_reset_before``. Models are batch-major.

Round trips ``to_*(from_*(...))`` reproduce the peer's arrays exactly, except where a bias is
folded: PyTorch's LSTM/Elman ``bias_ih + bias_hh`` and Haiku ``VanillaRNN(double_bias=True)``
come back as one bias and a zero one (the same function), and Haiku's forget bias passes
through ``+ 1`` and ``- 1`` in floating point. In the other direction ``from_*(to_*(params))``
gives ``params`` back exactly wherever the peer can hold them. The mappings are exact in the
equations; computed values agree to rounding (sums in another order, ``σ(-u)`` for ``1 - σ(u)``),
which the parity tests hold to 1e-5 in float32.

References: the recurrent layers of ``torch.nn``, ``flax.linen``/``flax.nnx``
(``recurrent.py``), ``haiku`` (``hk.LSTM``, ``hk.GRU``, ``hk.VanillaRNN``), ``equinox.nn`` and
``keras.layers``, whose equations each mapping follows.

>>> import torch
>>> from rnnjax import interop
>>> module = torch.nn.LSTM(3, 5, num_layers=2, batch_first=True)
>>> model, params = interop.from_torch(module)
>>> carry, ys = model.apply(params, jnp.ones((2, 4, 3)), lengths=jnp.array([4, 2]))
>>> h_n, c_n = interop.to_torch_carry(carry)
>>> ys.shape, h_n.shape
((2, 4, 5), (2, 2, 5))
"""

from __future__ import annotations

from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

import rnnjax as rj
from rnnjax._checks import check_array

Array = jax.Array

__all__ = [
    "from_equinox",
    "from_flax",
    "from_haiku",
    "from_keras",
    "from_torch",
    "from_torch_carry",
    "to_equinox",
    "to_flax",
    "to_haiku",
    "to_keras",
    "to_torch",
    "to_torch_carry",
]


# ----------------------------------------------------------------------------- shared helpers


def _need(module: str, pip: str):
    import importlib

    try:
        return importlib.import_module(module)
    except ImportError as e:
        raise ImportError(f"rnnjax.interop needs {pip} for this: pip install {pip}") from e


def _blocks(a, n: int, order, axis: int = -1):
    """Split ``a`` into ``n`` equal blocks along ``axis`` and concatenate them in ``order``."""
    parts = np.split(np.asarray(a), n, axis=axis)
    return np.concatenate([parts[i] for i in order], axis=axis)


def _inverse(order) -> list[int]:
    inv = [0] * len(order)
    for new, old in enumerate(order):
        inv[old] = new
    return inv


def _f32(a) -> np.ndarray:
    """A host copy for arithmetic (16-bit floats widened to float32)."""
    a = np.asarray(a)
    return a.astype(np.float32) if a.dtype.name in ("bfloat16", "float16") else a


def _check_type(name: str, params: Any, cls: type, peer: str) -> None:
    if not isinstance(params, cls):
        raise TypeError(f"{name}: expected rnnjax {cls.__name__} (for {peer}), got {type(params).__name__}")


def _check_leaf(name: str, value: Any, shape: tuple, why: str) -> None:
    check_array(name, value)
    if tuple(value.shape) != tuple(shape):
        raise ValueError(f"{name}: expected shape {tuple(shape)} ({why}), got {tuple(value.shape)}")


def _check_zero(name: str, value: Any, why: str) -> None:
    v = _f32(value)
    if np.any(v != 0):
        raise ValueError(f"{name}: {why}, so it must be zero; got max |{name.rsplit('.', 1)[-1]}| = "
                         f"{float(np.abs(v).max()):.3g}")


def _outputs_reversed(model, time_major: bool):
    """``model`` whose outputs come in processing order of a reverse scan (each valid prefix flipped)."""

    def apply(params, xs, *, lengths=None, carry=None, train=False, key=None):
        carry, ys = model.apply(params, xs, lengths=lengths, carry=carry, train=train, key=key)
        return carry, rj.flip_sequences(ys, lengths, time_major=time_major)

    return rj.SeqModel(model.init, apply)


def _cell(kind: str, input_size: int, hidden_size: int, dtype, activation="tanh"):
    if kind == "elman":
        return rj.elman(input_size, hidden_size, activation=activation, param_dtype=dtype)
    factory = {"lstm": rj.lstm, "gru": rj.gru, "gru_reset_before": rj.gru_reset_before}[kind]
    return factory(input_size, hidden_size, param_dtype=dtype)


def _jnp(a, dtype=None):
    return jnp.asarray(a, dtype=dtype)


# -------------------------------------------------------------------------------- PyTorch

_TORCH_GATES = {"RNN_TANH": 1, "RNN_RELU": 1, "LSTM": 4, "GRU": 3}
_TORCH_PARAMS = {"RNN_TANH": "ElmanParams", "RNN_RELU": "ElmanParams", "LSTM": "LSTMParams",
                 "GRU": "GRUParams"}


def _torch_mode(module, torch) -> tuple[str, bool]:
    """``(mode, layered)``: torch's mode string and whether it is a whole-sequence module."""
    nn = torch.nn
    if isinstance(module, nn.RNNBase):
        if module.mode not in _TORCH_GATES:
            raise TypeError(f"module: expected torch.nn.RNN, LSTM or GRU, got mode {module.mode!r}")
        return module.mode, True
    if isinstance(module, nn.LSTMCell):
        return "LSTM", False
    if isinstance(module, nn.GRUCell):
        return "GRU", False
    if isinstance(module, nn.RNNCell):
        if module.nonlinearity not in ("tanh", "relu"):
            raise ValueError(f"module.nonlinearity: expected 'tanh' or 'relu', got {module.nonlinearity!r}")
        return "RNN_TANH" if module.nonlinearity == "tanh" else "RNN_RELU", False
    raise TypeError(
        "module: expected torch.nn.RNN, LSTM, GRU, RNNCell, LSTMCell or GRUCell, got "
        f"{type(module).__name__}"
    )


def _torch_array(t):
    """A torch tensor as a NumPy array of the same dtype (bfloat16 through ml_dtypes)."""
    import torch

    t = t.detach().cpu()
    if t.dtype == torch.bfloat16:
        return t.float().numpy().astype(jnp.bfloat16)
    return t.numpy()


def _torch_out_size(module) -> int:
    """Features each direction outputs: ``proj_size`` for a projected LSTM, else ``hidden_size``."""
    return getattr(module, "proj_size", 0) or module.hidden_size


def _no_packed(model):
    """``model`` refusing a torch ``PackedSequence`` with a hint (it would fail as a non-array)."""

    def apply(params, xs, **kwargs):
        if type(xs).__name__ == "PackedSequence":
            raise TypeError(
                "xs: expected an array, got a torch PackedSequence; pass the padded batch "
                "(torch.nn.utils.rnn.pad_packed_sequence) as an array and its lengths as lengths="
            )
        return model.apply(params, xs, **kwargs)

    return rj.SeqModel(model.init, apply)


def _torch_layer_params(module, mode: str, suffix: str):
    get = lambda name: _torch_array(getattr(module, name + suffix))  # noqa: E731
    w_ih, w_hh = get("weight_ih"), get("weight_hh")
    dtype = w_ih.dtype
    if module.bias:
        b_ih, b_hh = get("bias_ih"), get("bias_hh")
    else:
        b_ih = b_hh = np.zeros(w_ih.shape[0], dtype)
    w_ih, w_hh = _jnp(w_ih.T), _jnp(w_hh.T)
    if mode == "GRU":
        return rj.GRUParams(w_ih, w_hh, _jnp(b_ih), _jnp(b_hh))
    b = _jnp((_f32(b_ih) + _f32(b_hh)).astype(dtype))
    if mode == "LSTM" and getattr(module, "proj_size", 0):
        return rj.LSTMProjParams(w_ih, w_hh, b, _jnp(get("weight_hr").T))
    cls = rj.LSTMParams if mode == "LSTM" else rj.ElmanParams
    return cls(w_ih, w_hh, b)


def _torch_cell(mode: str, input_size: int, hidden_size: int, dtype, proj_size: int = 0):
    if proj_size:
        return rj.lstm(input_size, hidden_size, proj_size=proj_size, param_dtype=dtype)
    kind = {"RNN_TANH": "elman", "RNN_RELU": "elman", "LSTM": "lstm", "GRU": "gru"}[mode]
    return _cell(kind, input_size, hidden_size, dtype, "relu" if mode == "RNN_RELU" else "tanh")


def from_torch(module) -> tuple[Any, Any]:
    """An rnnjax model (or cell) and params computing what a PyTorch recurrent module computes.

    ``torch.nn.RNN`` (tanh or relu), ``nn.LSTM`` (``bias=False`` too) and ``nn.GRU`` give
    ``(model, params)``: ``model`` is ``rnnjax.deep`` of one layer per ``num_layers`` (each an
    ``rnnjax.bidirectional`` pair when ``bidirectional=True``) with the module's inter-layer
    ``dropout``; ``params`` is a tuple with one entry per layer (``BiParams(fwd, bwd)`` when
    bidirectional). With ``batch_first=True`` the model reads ``xs: [*batch, T, I]`` and returns
    ``ys: [*batch, T, D*H]``; otherwise both are time-major. Padded batches take ``lengths``
    (what ``pack_padded_sequence`` encodes); ``to_torch_carry`` turns the model's final carry
    into torch's ``h_n`` (and ``c_n``), ``from_torch_carry`` turns torch's ``(h_0, c_0)`` into
    the model's ``carry=``.

    ``nn.RNNCell``, ``nn.LSTMCell`` and ``nn.GRUCell`` give ``(cell, params)`` of the matching
    rnnjax cell (``elman``, ``lstm``, ``gru``).

    Params keep the module's dtype. ``nn.LSTM(proj_size=P)`` gives ``rnnjax.lstm(...,
    proj_size=P)`` layers (``LSTMProjParams`` with ``w_hr = weight_hr.T``; ``h_n`` is then
    ``[L*D, B, P]``).

    >>> import torch
    >>> cell, params = from_torch(torch.nn.GRUCell(3, 4))
    >>> type(params).__name__, params.w_ih.shape
    ('GRUParams', (3, 12))
    """
    torch = _need("torch", "torch")
    mode, layered = _torch_mode(module, torch)
    if not layered:
        params = _torch_layer_params(module, mode, "")
        return _torch_cell(mode, module.input_size, module.hidden_size, params.w_ih.dtype), params
    directions = 2 if module.bidirectional else 1
    layers, params = [], []
    for k in range(module.num_layers):
        input_size = module.input_size if k == 0 else _torch_out_size(module) * directions
        ps = [_torch_layer_params(module, mode, f"_l{k}" + ("_reverse" if d else "")) for d in range(directions)]
        cells = [_torch_cell(mode, input_size, module.hidden_size, p.w_ih.dtype, getattr(module, "proj_size", 0))
                 for p in ps]
        layers.append(rj.bidirectional(*cells) if directions == 2 else cells[0])
        params.append(rj.BiParams(*ps) if directions == 2 else ps[0])
    model = rj.deep(*layers, dropout=float(module.dropout), time_major=not module.batch_first)
    return _no_packed(model), tuple(params)


def _torch_writes(module, mode: str, params, suffix: str, name: str, input_size: int):
    """Check ``params`` against the module's tensors ``*{suffix}``; the (tensor, array) pairs to copy."""
    hidden = module.hidden_size
    gates = _TORCH_GATES[mode]
    proj = getattr(module, "proj_size", 0) if mode == "LSTM" else 0
    cls = rj.LSTMProjParams if proj else getattr(rj, _TORCH_PARAMS[mode])
    peer = f"torch.nn.{type(module).__name__}"
    _check_type(name, params, cls, peer)
    _check_leaf(f"{name}.w_ih", params.w_ih, (input_size, gates * hidden),
                f"weight_ih{suffix} of the module, transposed")
    _check_leaf(f"{name}.w_hh", params.w_hh, (proj or hidden, gates * hidden),
                f"weight_hh{suffix} of the module, transposed")
    if proj:
        _check_leaf(f"{name}.w_hr", params.w_hr, (hidden, proj), f"weight_hr{suffix} of the module, transposed")
    if mode == "GRU":
        biases = {"bias_ih": ("b_ih", params.b_ih), "bias_hh": ("b_hh", params.b_hh)}
    else:
        biases = {"bias_ih": ("b", params.b), "bias_hh": ("b", None)}
    for torch_name, (field, value) in biases.items():
        if value is None:
            continue
        _check_leaf(f"{name}.{field}", value, (gates * hidden,), f"{torch_name}{suffix} of the module")
        if not module.bias:
            _check_zero(f"{name}.{field}", value, "the module has bias=False")
    writes = [(getattr(module, "weight_ih" + suffix), params.w_ih.T),
              (getattr(module, "weight_hh" + suffix), params.w_hh.T)]
    if proj:
        writes.append((getattr(module, "weight_hr" + suffix), params.w_hr.T))
    if module.bias:
        for torch_name, (_, value) in biases.items():
            target = getattr(module, torch_name + suffix)
            writes.append((target, np.zeros(target.shape, np.float32) if value is None else value))
    return writes


def _torch_layered_entries(params, module, name: str = "params"):
    """``(params, suffix, name, input_size)`` of each direction of each layer, checked."""
    directions = 2 if module.bidirectional else 1
    if not isinstance(params, (tuple, list)) or hasattr(params, "_fields"):
        raise TypeError(
            f"{name}: expected a tuple with one entry per layer ({module.num_layers}, as from_torch "
            f"returns), got {type(params).__name__}"
        )
    if len(params) != module.num_layers:
        raise ValueError(
            f"{name}: expected {module.num_layers} entries (the module's num_layers), got {len(params)}"
        )
    entries = []
    for k, p in enumerate(params):
        input_size = module.input_size if k == 0 else _torch_out_size(module) * directions
        if directions == 2:
            if not isinstance(p, rj.BiParams):
                raise TypeError(f"{name}[{k}]: expected BiParams(fwd, bwd) (the module is bidirectional), "
                                f"got {type(p).__name__}")
            entries += [(p.fwd, f"_l{k}", f"{name}[{k}].fwd", input_size),
                        (p.bwd, f"_l{k}_reverse", f"{name}[{k}].bwd", input_size)]
        else:
            entries.append((p, f"_l{k}", f"{name}[{k}]", input_size))
    return entries


def to_torch(params, module):
    """Write rnnjax params into a matching PyTorch module, in place; returns the module.

    ``params`` has the structure ``from_torch(module)`` returns (a tuple per layer for
    ``nn.RNN``/``LSTM``/``GRU``, the cell's params for the ``*Cell`` modules). Every shape is
    checked before anything is written. The single LSTM/Elman bias ``b`` goes into ``bias_ih``
    and ``bias_hh`` becomes zero; a module with ``bias=False`` accepts only zero biases. Values
    are cast to the module's dtype, so ``from_torch(to_torch(params, module))`` gives ``params``
    back exactly when the dtypes agree.

    >>> import torch
    >>> module = to_torch(rj.lstm(3, 4).init(jax.random.key(0)), torch.nn.LSTMCell(3, 4))
    >>> float(module.bias_ih.detach()[4]), float(module.bias_hh.detach()[4])   # rnnjax.lstm's forget bias
    (1.0, 0.0)
    """
    torch = _need("torch", "torch")
    mode, layered = _torch_mode(module, torch)
    if layered:
        entries = _torch_layered_entries(params, module)
    else:
        entries = [(params, "", "params", module.input_size)]
    writes = []
    for p, suffix, name, input_size in entries:
        writes += _torch_writes(module, mode, p, suffix, name, input_size)
    with torch.no_grad():
        for target, value in writes:
            target.copy_(torch.from_numpy(np.array(_f32(value), copy=True)).to(target.dtype))
    return module


def _carry_entries(carry) -> list:
    """The per-direction carries of a ``from_torch`` model's carry, in torch's ``h_n`` order."""
    if isinstance(carry, rj.BiCarry):
        return [carry.fwd, carry.bwd]
    if isinstance(carry, (tuple, list)) and not hasattr(carry, "_fields"):
        return [c for layer in carry for c in _carry_entries(layer)]
    return [carry]


def to_torch_carry(carry):
    """A ``from_torch`` model's final carry in torch's layout: ``(h_n, c_n)`` for an LSTM, else ``h_n``.

    ``h_n`` (and ``c_n``) is ``[num_layers * num_directions, *batch, H]`` with entry
    ``k * num_directions + d`` for layer ``k``, direction ``d`` (0 forward, 1 backward), as
    torch returns it. A cell's carry (``from_torch`` of a ``*Cell`` module) comes back as
    ``(h, c)`` for ``LSTMState`` and as itself otherwise.

    >>> carry = (rj.BiCarry(jnp.zeros((2, 4)), jnp.ones((2, 4))),)
    >>> to_torch_carry(carry)[:, 0, 0]
    Array([0., 1.], dtype=float32)
    """
    if isinstance(carry, rj.LSTMState):
        return carry.h, carry.c
    if not isinstance(carry, (tuple, list)) or hasattr(carry, "_fields"):
        check_array("carry", carry)
        return carry
    entries = _carry_entries(carry)
    if all(isinstance(c, rj.LSTMState) for c in entries):
        return jnp.stack([c.h for c in entries]), jnp.stack([c.c for c in entries])
    for i, c in enumerate(entries):
        check_array(f"carry (direction {i} in torch order)", c)
    return jnp.stack(entries)


def from_torch_carry(module, state):
    """Torch's initial state for ``module`` as the carry of the ``from_torch(module)`` model.

    ``state`` is what the module takes: ``h_0`` or, for an LSTM, ``(h_0, c_0)``, each
    ``[num_layers * num_directions, *batch, H]`` (``[*batch, H]`` for a ``*Cell`` module);
    torch tensors or arrays.

    >>> import torch
    >>> module = torch.nn.GRU(3, 4, num_layers=2)
    >>> carry = from_torch_carry(module, torch.zeros(2, 5, 4))
    >>> len(carry), carry[1].shape
    (2, (5, 4))
    """
    torch = _need("torch", "torch")
    mode, layered = _torch_mode(module, torch)

    def arr(name, x):
        if isinstance(x, torch.Tensor):
            x = _torch_array(x)
        check_array(name, x)
        return jnp.asarray(x)

    lstm = mode == "LSTM"
    if lstm:
        if not isinstance(state, (tuple, list)) or len(state) != 2:
            raise TypeError(f"state: expected (h_0, c_0) for an LSTM, got {type(state).__name__}")
        hs, cs = arr("state[0]", state[0]), arr("state[1]", state[1])
    else:
        hs = arr("state", state)
        cs = None
    hidden = module.hidden_size
    if not layered:
        for name, x in (("state[0]", hs), ("state[1]", cs)) if lstm else (("state", hs),):
            if x.ndim < 1 or x.shape[-1] != hidden:
                raise ValueError(f"{name}: expected shape [*batch, {hidden}] (hidden_size), got {tuple(x.shape)}")
        return rj.LSTMState(hs, cs) if lstm else hs
    directions = 2 if module.bidirectional else 1
    n = module.num_layers * directions
    sizes = {"state[0]": (_torch_out_size(module), "proj_size" if getattr(module, "proj_size", 0) else "hidden_size"),
             "state[1]": (hidden, "hidden_size"), "state": (hidden, "hidden_size")}
    for name, x in (("state[0]", hs), ("state[1]", cs)) if lstm else (("state", hs),):
        size, what = sizes[name]
        if x.ndim < 2 or x.shape[0] != n or x.shape[-1] != size:
            raise ValueError(
                f"{name}: expected shape [{n}, *batch, {size}] (num_layers * num_directions, batch, "
                f"{what}), got {tuple(x.shape)}"
            )
    one = (lambda i: rj.LSTMState(hs[i], cs[i])) if lstm else (lambda i: hs[i])
    layers = []
    for k in range(module.num_layers):
        if directions == 2:
            layers.append(rj.BiCarry(one(2 * k), one(2 * k + 1)))
        else:
            layers.append(one(k))
    return tuple(layers)


# ----------------------------------------------------------------------------------- Flax


def _flax_kind(module) -> str:
    """``"linen"`` or ``"nnx"``."""
    linen = _need("flax.linen", "flax")
    nnx = _need("flax.nnx", "flax")
    if isinstance(module, linen.Module):
        return "linen"
    if isinstance(module, nnx.Module):
        return "nnx"
    raise TypeError(f"module: expected a flax linen or NNX module, got {type(module).__name__}")


def _flax_fns(cell, peer: str) -> None:
    """Gated cells must use the standard sigmoid gates and tanh activation."""
    if cell.gate_fn is not jax.nn.sigmoid:
        raise ValueError(f"gate_fn: rnnjax's {peer} gates are sigmoid, got {cell.gate_fn!r}")
    if cell.activation_fn is not jnp.tanh:
        raise ValueError(f"activation_fn: rnnjax's {peer} uses tanh, got {cell.activation_fn!r}")


def _flax_dtype(cell, dtype) -> None:
    if getattr(cell, "dtype", None) is not None and jnp.dtype(cell.dtype) != jnp.dtype(dtype):
        raise ValueError(
            f"dtype: the flax cell computes in {jnp.dtype(cell.dtype)} with {jnp.dtype(dtype)} "
            "params; rnnjax computes in the params' dtype, so there is no exact equivalent. Use "
            "dtype=None (or equal to param_dtype)"
        )


def _flax_carry_init(cell) -> None:
    """rnnjax's cells start from zeros; a flax cell whose ``carry_init`` is another one does not."""
    carry_init = getattr(cell, "carry_init", None)
    if carry_init is not None and carry_init is not _need("flax.linen", "flax").initializers.zeros_init():
        raise ValueError(
            f"carry_init: the flax cell starts from carry_init={carry_init!r}, rnnjax's cells from "
            "zeros; build the cell with the default carry_init (the weights are unchanged) to "
            "convert it, and pass any other initial state as carry="
        )


def _unsupported_flax_cell(cell):
    return TypeError(
        "module: expected a flax LSTMCell, OptimizedLSTMCell, GRUCell, SimpleCell, MGUCell (linen), "
        f"RNN or Bidirectional, got {type(cell).__name__}"
    )


def _get(tree, path: tuple, where: str, peer: str):
    node = tree
    for i, k in enumerate(path):
        try:
            node = node[k]
        except (KeyError, TypeError, IndexError):
            shown = where + "".join(f"[{p!r}]" for p in path[: i + 1])
            raise ValueError(f"{where.split('[')[0]}: expected {shown} (the params of a {peer}), missing") from None
    return np.asarray(node)


_LSTM_GATES = ("i", "f", "g", "o")
_GRU_GATES = ("r", "z", "n")
_MGU_GATES = ("f", "n")


def _linen_cell(cell, p, where: str):
    linen = _need("flax.linen", "flax")
    peer = type(cell).__name__
    g = lambda *path: _get(p, path, where, f"flax {peer}")  # noqa: E731
    if isinstance(cell, (linen.LSTMCell, linen.OptimizedLSTMCell)):
        _flax_fns(cell, "LSTM")
        w_ih = np.concatenate([g("i" + c, "kernel") for c in _LSTM_GATES], axis=-1)
        w_hh = np.concatenate([g("h" + c, "kernel") for c in _LSTM_GATES], axis=-1)
        b = np.concatenate([g("h" + c, "bias") for c in _LSTM_GATES], axis=-1)
        params = rj.LSTMParams(_jnp(w_ih), _jnp(w_hh), _jnp(b))
        kind = "lstm"
    elif isinstance(cell, linen.GRUCell):
        _flax_fns(cell, "GRU")
        w_ih = np.concatenate([g("i" + c, "kernel") for c in _GRU_GATES], axis=-1)
        w_hh = np.concatenate([g("h" + c, "kernel") for c in _GRU_GATES], axis=-1)
        b_ih = np.concatenate([g("i" + c, "bias") for c in _GRU_GATES], axis=-1)
        b_hn = g("hn", "bias")
        b_hh = np.concatenate([np.zeros_like(b_hn), np.zeros_like(b_hn), b_hn])
        params = rj.GRUParams(_jnp(w_ih), _jnp(w_hh), _jnp(b_ih), _jnp(b_hh))
        kind = "gru"
    elif isinstance(cell, linen.SimpleCell):
        if cell.residual:
            raise ValueError("residual: flax SimpleCell(residual=True) adds h inside the activation; "
                             "rnnjax's Elman cell has no such term")
        params = rj.ElmanParams(_jnp(g("i", "kernel")), _jnp(g("h", "kernel")), _jnp(g("i", "bias")))
        kind = "elman"
    elif isinstance(cell, linen.MGUCell):
        _flax_fns(cell, "MGU")
        w_ih = np.concatenate([g("i" + c, "kernel") for c in _MGU_GATES], axis=-1)
        w_hh = np.concatenate([g("h" + c, "kernel") for c in _MGU_GATES], axis=-1)
        b_ih = np.concatenate([g("i" + c, "bias") for c in _MGU_GATES], axis=-1)
        # hf has no bias; hn has one only with reset_gate (without, it would just add to in's)
        b_hn = g("hn", "bias") if cell.reset_gate else np.zeros_like(b_ih[: b_ih.shape[0] // 2])
        b_hh = np.concatenate([np.zeros_like(b_hn), b_hn])
        params = rj.MGUParams(_jnp(w_ih), _jnp(w_hh), _jnp(b_ih), _jnp(b_hh))
        kind = "mgu"
    else:
        raise _unsupported_flax_cell(cell)
    _flax_dtype(cell, params.w_ih.dtype)
    _flax_carry_init(cell)
    hidden = params.w_hh.shape[0]
    if hidden != cell.features:
        raise ValueError(f"variables: {where} holds a hidden size of {hidden}, but the cell has "
                         f"features={cell.features}")
    if kind == "mgu":
        return rj.mgu(params.w_ih.shape[0], hidden, reset_gate=bool(cell.reset_gate),
                      param_dtype=params.w_ih.dtype), params
    act = cell.activation_fn if kind == "elman" else "tanh"
    return _cell(kind, params.w_ih.shape[0], hidden, params.w_ih.dtype, act), params


def _nnx_value(v):
    return None if v is None else np.asarray(v[...])


def _nnx_cell(cell):
    nnx = _need("flax.nnx", "flax")
    if isinstance(cell, nnx.LSTMCell):
        _flax_fns(cell, "LSTM")
        ins = [cell.ii, cell.if_, cell.ig, cell.io]
        hs = [cell.hi, cell.hf, cell.hg, cell.ho]
        params = rj.LSTMParams(
            _jnp(np.concatenate([_nnx_value(d.kernel) for d in ins], -1)),
            _jnp(np.concatenate([_nnx_value(d.kernel) for d in hs], -1)),
            _jnp(np.concatenate([_nnx_value(d.bias) for d in hs], -1)),
        )
        kind = "lstm"
    elif isinstance(cell, nnx.OptimizedLSTMCell):
        _flax_fns(cell, "LSTM")
        params = rj.LSTMParams(_jnp(_nnx_value(cell.dense_i.kernel)), _jnp(_nnx_value(cell.dense_h.kernel)),
                               _jnp(_nnx_value(cell.dense_h.bias)))
        kind = "lstm"
    elif isinstance(cell, nnx.GRUCell):
        _flax_fns(cell, "GRU")
        b_ih = _nnx_value(cell.dense_i.bias)
        params = rj.GRUParams(_jnp(_nnx_value(cell.dense_i.kernel)), _jnp(_nnx_value(cell.dense_h.kernel)),
                              _jnp(b_ih), _jnp(np.zeros_like(b_ih)))
        kind = "gru"
    elif isinstance(cell, nnx.SimpleCell):
        if cell.residual:
            raise ValueError("residual: flax SimpleCell(residual=True) adds h inside the activation; "
                             "rnnjax's Elman cell has no such term")
        params = rj.ElmanParams(_jnp(_nnx_value(cell.dense_i.kernel)), _jnp(_nnx_value(cell.dense_h.kernel)),
                                _jnp(_nnx_value(cell.dense_i.bias)))
        kind = "elman"
    else:
        raise _unsupported_flax_cell(cell)
    _flax_dtype(cell, params.w_ih.dtype)
    _flax_carry_init(cell)
    act = cell.activation_fn if kind == "elman" else "tanh"
    return _cell(kind, params.w_ih.shape[0], params.w_hh.shape[0], params.w_ih.dtype, act), params


def _is_flax_concat(fn) -> bool:
    return getattr(fn, "__name__", None) == "_concatenate" and getattr(fn, "__module__", "").startswith("flax.")


def _flax_seq(module, p, kind: str):
    """``(model, params)`` for a flax RNN/Bidirectional, or None when ``module`` is a cell."""
    lib = _need("flax.linen" if kind == "linen" else "flax.nnx", "flax")

    def cell_of(rnn, sub, where):
        if not isinstance(rnn, lib.RNN):
            raise TypeError(f"module.{where}: expected a flax RNN, got {type(rnn).__name__}")
        if kind == "linen":
            return _linen_cell(rnn.cell, _sub(sub, "cell", where), f"variables['params']{where and '[' + repr(where) + ']'}['cell']")
        return _nnx_cell(rnn.cell)

    def _sub(tree, key, where):
        if tree is None:
            return None
        if key not in tree:
            raise ValueError(f"variables: expected the params of {where or 'the RNN'} under {key!r}, "
                             f"found keys {sorted(tree)}")
        return tree[key]

    if isinstance(module, lib.Bidirectional):
        cf, pf = cell_of(module.forward_rnn, _sub(p, "forward_rnn", "") if kind == "linen" else None, "forward_rnn")
        cb, pb = cell_of(module.backward_rnn, _sub(p, "backward_rnn", "") if kind == "linen" else None, "backward_rnn")
        merge = "concat" if _is_flax_concat(module.merge_fn) else module.merge_fn
        model = rj.bidirectional(cf, cb, merge=merge, time_major=bool(module.time_major))
        params = rj.BiParams(pf, pb)
    elif isinstance(module, lib.RNN):
        if kind == "linen":
            cell, params = _linen_cell(module.cell, _sub(p, "cell", ""), "variables['params']['cell']")
        else:
            cell, params = _nnx_cell(module.cell)
        model = rj.rnn(cell, reverse=bool(module.reverse), time_major=bool(module.time_major))
        if module.reverse and not module.keep_order:
            model = _outputs_reversed(model, bool(module.time_major))
    else:
        return None
    return model, params


def _linen_params(variables):
    if variables is None:
        raise TypeError("variables: expected the linen module's variables (module.init(...)), got None")
    if not hasattr(variables, "keys"):
        raise TypeError(f"variables: expected a dict of variables, got {type(variables).__name__}")
    return variables["params"] if "params" in variables else variables


def from_flax(module, variables=None) -> tuple[Any, Any]:
    """An rnnjax cell or model and params computing what a Flax recurrent module computes.

    Flax linen: ``from_flax(module, variables)`` with ``variables`` from ``module.init`` (or just
    its ``"params"``). Flax NNX: ``from_flax(module)``, the params read from the module.

    - ``LSTMCell``, ``OptimizedLSTMCell`` → ``(rnnjax.lstm cell, LSTMParams)`` (gate functions
      must be the defaults, sigmoid and tanh);
    - ``GRUCell`` → ``(rnnjax.gru cell, GRUParams)``; linen's ``hn`` bias is ``b_hh[2H:]``,
      NNX's GRU has none (``b_hh = 0``);
    - ``SimpleCell`` → ``(rnnjax.elman cell with the cell's activation_fn, ElmanParams)``;
    - linen ``MGUCell`` → ``(rnnjax.mgu cell with the cell's reset_gate, MGUParams)``;
      ``b_hh = [0, hn bias]`` (``hn`` has a bias only with ``reset_gate=True``, so ``b_hh = 0``
      without). Flax NNX has no ``MGUCell``;
    - ``RNN(cell)`` → ``(rnnjax.rnn model, params)``; ``Bidirectional(RNN, RNN)`` →
      ``(rnnjax.bidirectional model, BiParams)``; a custom ``merge_fn`` is used as rnnjax's
      ``merge`` (it must act on the feature axis only). Both follow the module's ``time_major``:
      batch-major ``[*batch, T, F]`` by default. Flax leaves padding outputs as they come;
      rnnjax zeros them, and the valid outputs and final carries agree.

    Flax's LSTM carry is ``(c, h)``; rnnjax's is ``LSTMState(h, c)``. rnnjax's cells start
    from zeros, so a cell with another ``carry_init`` raises ``ValueError`` (other initial
    states are the model's ``carry=``).

    >>> import flax.linen as nn
    >>> module = nn.RNN(nn.GRUCell(4))
    >>> variables = module.init(jax.random.key(0), jnp.ones((2, 5, 3)))
    >>> model, params = from_flax(module, variables)
    >>> model.apply(params, jnp.ones((2, 5, 3)), lengths=jnp.array([5, 2]))[1].shape
    (2, 5, 4)
    """
    kind = _flax_kind(module)
    if kind == "linen":
        p = _linen_params(variables)
    else:
        if variables is not None:
            raise TypeError("variables: an NNX module holds its own params; call from_flax(module)")
        p = None
    seq = _flax_seq(module, p, kind)
    if seq is not None:
        return seq
    if kind == "linen":
        return _linen_cell(module, p, "variables['params']")
    return _nnx_cell(module)


def _flax_cell_arrays(cell, params, name: str, kind: str) -> dict:
    """``{path tuple: array}`` of the flax cell's params holding ``params``."""
    lib = _need("flax.linen" if kind == "linen" else "flax.nnx", "flax")
    lstm_types = (lib.LSTMCell, lib.OptimizedLSTMCell)
    if isinstance(cell, lstm_types):
        _flax_fns(cell, "LSTM")
        _check_type(name, params, rj.LSTMParams, f"flax {type(cell).__name__}")
        wi, wh, b = (np.split(np.asarray(a), 4, axis=-1) for a in (params.w_ih, params.w_hh, params.b))
        if kind == "nnx" and isinstance(cell, lib.OptimizedLSTMCell):
            return {("dense_i", "kernel"): np.asarray(params.w_ih), ("dense_h", "kernel"): np.asarray(params.w_hh),
                    ("dense_h", "bias"): np.asarray(params.b)}
        out = {}
        for j, c in enumerate(_LSTM_GATES):
            attr = ("if_" if (kind == "nnx" and c == "f") else "i" + c)
            out[(attr, "kernel")] = wi[j]
            out[("h" + c, "kernel")] = wh[j]
            out[("h" + c, "bias")] = b[j]
        return out
    if isinstance(cell, lib.GRUCell):
        _flax_fns(cell, "GRU")
        _check_type(name, params, rj.GRUParams, f"flax {type(cell).__name__}")
        hidden = np.asarray(params.w_hh).shape[0]
        b_ih, b_hh = np.asarray(params.b_ih), np.asarray(params.b_hh)
        # r and z see b_ih + b_hh only as a sum: fold b_hh into the input biases
        b_in = np.concatenate([(_f32(b_ih[: 2 * hidden]) + _f32(b_hh[: 2 * hidden])).astype(b_ih.dtype),
                               b_ih[2 * hidden:]])
        if kind == "nnx":
            _check_zero(f"{name}.b_hh[{2 * hidden}:]", b_hh[2 * hidden:],
                        "flax NNX's GRUCell has no bias inside the reset gate (b_hn)")
            return {("dense_i", "kernel"): np.asarray(params.w_ih), ("dense_i", "bias"): b_in,
                    ("dense_h", "kernel"): np.asarray(params.w_hh)}
        wi, wh, bi = (np.split(a, 3, axis=-1) for a in (np.asarray(params.w_ih), np.asarray(params.w_hh), b_in))
        out = {}
        for j, c in enumerate(_GRU_GATES):
            out[("i" + c, "kernel")] = wi[j]
            out[("i" + c, "bias")] = bi[j]
            out[("h" + c, "kernel")] = wh[j]
        out[("hn", "bias")] = b_hh[2 * hidden:]
        return out
    if isinstance(cell, lib.SimpleCell):
        _check_type(name, params, rj.ElmanParams, f"flax {type(cell).__name__}")
        if cell.residual:
            raise ValueError("residual: flax SimpleCell(residual=True) adds h inside the activation; "
                             "rnnjax's Elman cell has no such term")
        if kind == "nnx":
            return {("dense_i", "kernel"): np.asarray(params.w_ih), ("dense_i", "bias"): np.asarray(params.b),
                    ("dense_h", "kernel"): np.asarray(params.w_hh)}
        return {("i", "kernel"): np.asarray(params.w_ih), ("i", "bias"): np.asarray(params.b),
                ("h", "kernel"): np.asarray(params.w_hh)}
    if isinstance(cell, getattr(lib, "MGUCell", ())):
        _flax_fns(cell, "MGU")
        _check_type(name, params, rj.MGUParams, f"flax {type(cell).__name__}")
        hidden = cell.features
        _check_leaf(f"{name}.w_hh", params.w_hh, (hidden, 2 * hidden), "the hf and hn kernels side by side")
        for field in ("b_ih", "b_hh"):
            _check_leaf(f"{name}.{field}", getattr(params, field), (2 * hidden,), "gates f, n")
        b_ih, b_hh = np.asarray(params.b_ih), np.asarray(params.b_hh)
        # b_hh's f part, and without reset_gate its n part too, is only ever added to b_ih's
        folded = hidden if cell.reset_gate else 2 * hidden
        b_in = np.concatenate([(_f32(b_ih[:folded]) + _f32(b_hh[:folded])).astype(b_ih.dtype), b_ih[folded:]])
        wi, wh, bi = (np.split(a, 2, axis=-1) for a in (np.asarray(params.w_ih), np.asarray(params.w_hh), b_in))
        out = {}
        for j, c in enumerate(_MGU_GATES):
            out[("i" + c, "kernel")] = wi[j]
            out[("i" + c, "bias")] = bi[j]
            out[("h" + c, "kernel")] = wh[j]
        if cell.reset_gate:
            out[("hn", "bias")] = b_hh[hidden:]
        return out
    raise _unsupported_flax_cell(cell)


def _flax_cells(module, params, kind: str):
    """``[(cell, params, path prefix, name)]`` for a cell, RNN or Bidirectional."""
    lib = _need("flax.linen" if kind == "linen" else "flax.nnx", "flax")
    if isinstance(module, lib.Bidirectional):
        if not isinstance(params, rj.BiParams):
            raise TypeError(f"params: expected BiParams(fwd, bwd) (for flax Bidirectional), got {type(params).__name__}")
        return [(module.forward_rnn.cell, params.fwd, ("forward_rnn", "cell"), "params.fwd"),
                (module.backward_rnn.cell, params.bwd, ("backward_rnn", "cell"), "params.bwd")]
    if isinstance(module, lib.RNN):
        return [(module.cell, params, ("cell",), "params")]
    return [(module, params, (), "params")]


def to_flax(params, module, variables=None):
    """Write rnnjax params into a Flax module's layout (the inverse of ``from_flax``).

    Flax linen: ``to_flax(params, module, variables)`` returns new variables (a dict like
    ``variables``, whose shapes are checked) holding ``params``. Flax NNX: ``to_flax(params,
    module)`` writes the module's ``nnx.Param`` variables in place and returns the module.

    The GRU's ``b_hh[:2H]`` is folded into the input biases (flax has no recurrent bias for r
    and z); NNX's GRU has no ``b_hn`` either, so a nonzero ``b_hh[2H:]`` is an error there.
    Likewise the MGU's ``b_hh[:H]`` is folded into the ``if`` bias, and with
    ``reset_gate=False`` (no ``hn`` bias) ``b_hh[H:]`` into the ``in`` bias: the same function,
    and ``from_flax`` gives the params back exactly when the folded parts are zero.

    >>> import flax.linen as nn
    >>> module = nn.LSTMCell(4)
    >>> variables = module.init(jax.random.key(0), module.initialize_carry(jax.random.key(1), (3,)), jnp.ones(3))
    >>> new = to_flax(rj.lstm(3, 4).init(jax.random.key(2)), module, variables)
    >>> new["params"]["hf"]["bias"][0]
    Array(1., dtype=float32)
    """
    kind = _flax_kind(module)
    writes = []
    for cell, p, prefix, name in _flax_cells(module, params, kind):
        for path, value in _flax_cell_arrays(cell, p, name, kind).items():
            writes.append((prefix + path, value, name))
    if kind == "nnx":
        targets = []
        for path, value, name in writes:
            node = module
            for k in path:
                node = getattr(node, k)
            if node is None:
                raise ValueError(f"module: has no {'.'.join(path)} for {name}")
            if tuple(node.shape) != tuple(value.shape):
                raise ValueError(f"{name}: {'.'.join(path)} expects shape {tuple(node.shape)}, the "
                                 f"params give {tuple(value.shape)}")
            targets.append((node, value))
        for node, value in targets:
            node[...] = jnp.asarray(value, node[...].dtype)
        return module
    if variables is None:
        raise TypeError("variables: expected the linen module's variables (module.init(...)) as the "
                        "template, got None")
    import flax

    variables = flax.core.unfreeze(variables)
    has_params = "params" in variables
    tree = variables["params"] if has_params else variables
    for path, value, name in writes:
        node = tree
        for k in path[:-1]:
            if k not in node:
                raise ValueError(f"variables: expected {'/'.join(path)} (for {name}), missing")
            node = node[k]
        old = node.get(path[-1])
        if old is None:
            raise ValueError(f"variables: expected {'/'.join(path)} (for {name}), missing")
        if tuple(old.shape) != tuple(value.shape):
            raise ValueError(f"{name}: variables {'/'.join(path)} has shape {tuple(old.shape)}, the params "
                             f"give {tuple(value.shape)}")
        node[path[-1]] = jnp.asarray(value, old.dtype)
    return variables


# ---------------------------------------------------------------------------------- Haiku

_HAIKU_CORES = {"LSTM": "lstm", "GRU": "gru", "VanillaRNN": "vanilla_rnn"}
_HAIKU_LSTM_ORDER = (0, 2, 1, 3)  # haiku i, g, f, o -> rnnjax i, f, g, o (the swap is its own inverse)
_HAIKU_GRU_ORDER = (1, 0, 2)  # haiku z, r, a -> rnnjax r, z, n (its own inverse too)


def _haiku_core(core) -> str:
    name = core.__name__ if isinstance(core, type) else core
    if name not in _HAIKU_CORES:
        raise ValueError(f"core: expected one of {sorted(_HAIKU_CORES)} (or the haiku class), got {core!r}")
    return name


def _haiku_modules(params, core: str, name):
    """The module names (keys of ``params``) that hold the core's params."""
    if not hasattr(params, "keys"):
        raise TypeError(f"params: expected a haiku params dict (transformed.init(...)), got {type(params).__name__}")
    name = _HAIKU_CORES[core] if name is None else name
    keys = {"LSTM": [f"{name}/linear"], "GRU": [name], "VanillaRNN": [f"{name}/linear", f"{name}/linear_1"]}[core]
    for k in keys[:1]:
        if k not in params:
            raise ValueError(f"name: no haiku module {k!r} in params (for a {core} named {name!r}); the "
                             f"params hold {sorted(params)}")
    return keys


def from_haiku(params, core, *, name: str | None = None) -> tuple[Any, Any]:
    """An rnnjax cell and params computing what a Haiku recurrent core computes.

    Args:
      params: the haiku params dict (``hk.transform(f).init(...)``); other modules' entries are
        ignored.
      core: ``"LSTM"``, ``"GRU"`` or ``"VanillaRNN"`` (or ``hk.LSTM`` etc.).
      name: the core's module name in ``params`` (``"lstm"``, ``"gru"``, ``"vanilla_rnn"`` by
        default; e.g. ``"encoder/~/lstm"`` inside another module).

    Returns ``(rnnjax.lstm cell, LSTMParams)`` with Haiku's ``+1`` forget bias folded into ``b``,
    ``(rnnjax.gru_reset_before cell, GRUResetBeforeParams)`` with the update gate negated (see
    the module notes), or ``(rnnjax.elman ReLU cell, ElmanParams)``. Haiku's LSTM state is
    ``LSTMState(hidden, cell)``, rnnjax's ``LSTMState(h, c)`` in the same order.

    >>> import haiku as hk
    >>> f = hk.transform(lambda x: hk.LSTM(4)(x, hk.LSTM(4).initial_state(2)))
    >>> cell, params = from_haiku(f.init(jax.random.key(0), jnp.ones((2, 3))), "LSTM")
    >>> params.w_ih.shape, float(params.b[4])
    ((3, 16), 1.0)
    """
    core = _haiku_core(core)
    keys = _haiku_modules(params, core, name)
    g = lambda k, f: _get(params, (k, f), "params", f"haiku {core}")  # noqa: E731
    if core == "LSTM":
        w, b = g(keys[0], "w"), g(keys[0], "b")
        hidden = w.shape[1] // 4
        input_size = w.shape[0] - hidden
        w = _blocks(w, 4, _HAIKU_LSTM_ORDER)
        b = _f32(_blocks(b, 4, _HAIKU_LSTM_ORDER)).copy()
        b[hidden:2 * hidden] += 1.0
        params_out = rj.LSTMParams(_jnp(w[:input_size]), _jnp(w[input_size:]), _jnp(b.astype(w.dtype)))
        return _cell("lstm", input_size, hidden, w.dtype), params_out
    if core == "GRU":
        w_i, w_h, b = g(keys[0], "w_i"), g(keys[0], "w_h"), g(keys[0], "b")
        hidden = w_h.shape[0]
        sign = np.ones(3 * hidden, w_i.dtype)
        sign[hidden:2 * hidden] = -1  # rnnjax's z is haiku's 1 - z
        w_i, w_h, b = (_blocks(a, 3, _HAIKU_GRU_ORDER) * sign for a in (w_i, w_h, b))
        params_out = rj.GRUResetBeforeParams(_jnp(w_i), _jnp(w_h), _jnp(b), _jnp(np.zeros_like(b)))
        return _cell("gru_reset_before", w_i.shape[0], hidden, w_i.dtype), params_out
    w_i, b_i = g(keys[0], "w"), g(keys[0], "b")
    w_h = g(keys[1], "w")
    b = b_i
    if keys[1] in params and "b" in params[keys[1]]:  # double_bias=True
        b = (_f32(b_i) + _f32(np.asarray(params[keys[1]]["b"]))).astype(b_i.dtype)
    return _cell("elman", w_i.shape[0], w_h.shape[0], w_i.dtype, "relu"), rj.ElmanParams(_jnp(w_i), _jnp(w_h), _jnp(b))


def to_haiku(params, haiku_params, core, *, name: str | None = None):
    """rnnjax params in a Haiku core's layout: a new params dict like ``haiku_params``.

    The inverse of ``from_haiku`` (same ``core`` and ``name``); ``haiku_params`` is the
    template whose shapes are checked and whose other entries are kept. A ``VanillaRNN`` with
    ``double_bias=True`` gets ``b`` as its input bias and a zero hidden bias.

    >>> import haiku as hk
    >>> f = hk.transform(lambda x: hk.GRU(4)(x, jnp.zeros((2, 4))))
    >>> template = f.init(jax.random.key(0), jnp.ones((2, 3)))
    >>> new = to_haiku(rj.gru_reset_before(3, 4).init(jax.random.key(1)), template, "GRU")
    >>> new["gru"]["w_i"].shape
    (3, 12)
    """
    core = _haiku_core(core)
    keys = _haiku_modules(haiku_params, core, name)
    g = lambda k, f: _get(haiku_params, (k, f), "haiku_params", f"haiku {core}")  # noqa: E731
    out = {k: dict(v) for k, v in haiku_params.items()}
    if core == "LSTM":
        _check_type("params", params, rj.LSTMParams, "haiku LSTM")
        template = g(keys[0], "w")
        hidden = template.shape[1] // 4
        input_size = template.shape[0] - hidden
        _check_leaf("params.w_ih", params.w_ih, (input_size, 4 * hidden), f"{keys[0]}/w rows for x")
        _check_leaf("params.w_hh", params.w_hh, (hidden, 4 * hidden), f"{keys[0]}/w rows for h")
        _check_leaf("params.b", params.b, (4 * hidden,), f"{keys[0]}/b")
        b = _f32(params.b).copy()
        b[hidden:2 * hidden] -= 1.0
        w = np.concatenate([np.asarray(params.w_ih), np.asarray(params.w_hh)], axis=0)
        out[keys[0]]["w"] = _jnp(_blocks(w, 4, _HAIKU_LSTM_ORDER), template.dtype)
        out[keys[0]]["b"] = _jnp(_blocks(b, 4, _HAIKU_LSTM_ORDER), template.dtype)
        return out
    if core == "GRU":
        _check_type("params", params, rj.GRUResetBeforeParams, "haiku GRU")
        w_i, w_h = g(keys[0], "w_i"), g(keys[0], "w_h")
        hidden = w_h.shape[0]
        _check_leaf("params.w_ih", params.w_ih, w_i.shape, f"{keys[0]}/w_i")
        _check_leaf("params.w_hh", params.w_hh, w_h.shape, f"{keys[0]}/w_h")
        _check_leaf("params.b_ih", params.b_ih, (3 * hidden,), f"{keys[0]}/b")
        _check_leaf("params.b_hh", params.b_hh, (3 * hidden,), f"{keys[0]}/b")
        sign = np.ones(3 * hidden, np.float32)
        sign[hidden:2 * hidden] = -1
        b = _f32(params.b_ih) + _f32(params.b_hh)
        for field, value in (("w_i", params.w_ih), ("w_h", params.w_hh), ("b", b)):
            v = np.asarray(value)
            out[keys[0]][field] = _jnp(_blocks(v * sign.astype(v.dtype), 3, _HAIKU_GRU_ORDER), w_i.dtype)
        return out
    _check_type("params", params, rj.ElmanParams, "haiku VanillaRNN")
    w_i, w_h = g(keys[0], "w"), g(keys[1], "w")
    _check_leaf("params.w_ih", params.w_ih, w_i.shape, f"{keys[0]}/w")
    _check_leaf("params.w_hh", params.w_hh, w_h.shape, f"{keys[1]}/w")
    _check_leaf("params.b", params.b, (w_h.shape[0],), f"{keys[0]}/b")
    out[keys[0]]["w"] = _jnp(params.w_ih, w_i.dtype)
    out[keys[0]]["b"] = _jnp(params.b, w_i.dtype)
    out[keys[1]]["w"] = _jnp(params.w_hh, w_h.dtype)
    if "b" in out[keys[1]]:
        out[keys[1]]["b"] = jnp.zeros_like(out[keys[1]]["b"])
    return out


# -------------------------------------------------------------------------------- Equinox


def _eqx_kind(cell) -> str:
    eqx = _need("equinox", "equinox")
    if isinstance(cell, eqx.nn.LSTMCell):
        return "lstm"
    if isinstance(cell, eqx.nn.GRUCell):
        return "gru"
    raise TypeError(f"cell: expected equinox.nn.LSTMCell or GRUCell, got {type(cell).__name__}")


def from_equinox(cell) -> tuple[Any, Any]:
    """An rnnjax cell and params computing what an Equinox ``LSTMCell`` or ``GRUCell`` computes.

    ``eqx.nn.LSTMCell`` → ``(rnnjax.lstm cell, LSTMParams)`` (its state ``(h, c)`` is
    ``LSTMState(h, c)``); ``eqx.nn.GRUCell`` → ``(rnnjax.gru cell, GRUParams)`` with
    ``b_hh = [0, 0, bias_n]``. ``use_bias=False`` gives zero biases.

    >>> import equinox as eqx
    >>> cell, params = from_equinox(eqx.nn.GRUCell(3, 4, key=jax.random.key(0)))
    >>> params.b_hh.shape
    (12,)
    """
    kind = _eqx_kind(cell)
    w_ih, w_hh = np.asarray(cell.weight_ih).T, np.asarray(cell.weight_hh).T
    hidden = w_hh.shape[0]
    dtype = w_ih.dtype
    if kind == "lstm":
        b = np.asarray(cell.bias) if cell.use_bias else np.zeros(4 * hidden, dtype)
        return _cell("lstm", w_ih.shape[0], hidden, dtype), rj.LSTMParams(_jnp(w_ih), _jnp(w_hh), _jnp(b))
    if cell.use_bias:
        b_ih = np.asarray(cell.bias)
        b_hh = np.concatenate([np.zeros(2 * hidden, dtype), np.asarray(cell.bias_n)])
    else:
        b_ih = b_hh = np.zeros(3 * hidden, dtype)
    return _cell("gru", w_ih.shape[0], hidden, dtype), rj.GRUParams(_jnp(w_ih), _jnp(w_hh), _jnp(b_ih), _jnp(b_hh))


def to_equinox(params, cell):
    """A copy of the Equinox cell holding rnnjax params (the inverse of ``from_equinox``).

    The GRU's ``b_hh[:2H]`` is folded into ``bias``; a cell with ``use_bias=False`` accepts only
    zero biases.

    >>> import equinox as eqx
    >>> cell = eqx.nn.LSTMCell(3, 4, key=jax.random.key(0))
    >>> to_equinox(rj.lstm(3, 4).init(jax.random.key(1)), cell).weight_ih.shape
    (16, 3)
    """
    eqx = _need("equinox", "equinox")
    kind = _eqx_kind(cell)
    hidden, input_size = cell.hidden_size, cell.input_size
    gates = 4 if kind == "lstm" else 3
    cls = rj.LSTMParams if kind == "lstm" else rj.GRUParams
    _check_type("params", params, cls, f"equinox {type(cell).__name__}")
    _check_leaf("params.w_ih", params.w_ih, (input_size, gates * hidden), "the cell's weight_ih, transposed")
    _check_leaf("params.w_hh", params.w_hh, (hidden, gates * hidden), "the cell's weight_hh, transposed")
    dtype = np.asarray(cell.weight_ih).dtype
    w_ih, w_hh = _jnp(np.asarray(params.w_ih).T, dtype), _jnp(np.asarray(params.w_hh).T, dtype)
    if kind == "lstm":
        _check_leaf("params.b", params.b, (4 * hidden,), "the cell's bias")
        if not cell.use_bias:
            _check_zero("params.b", params.b, "the cell has use_bias=False")
            return eqx.tree_at(lambda c: (c.weight_ih, c.weight_hh), cell, (w_ih, w_hh))
        return eqx.tree_at(lambda c: (c.weight_ih, c.weight_hh, c.bias), cell, (w_ih, w_hh, _jnp(params.b, dtype)))
    _check_leaf("params.b_ih", params.b_ih, (3 * hidden,), "the cell's bias")
    _check_leaf("params.b_hh", params.b_hh, (3 * hidden,), "the cell's bias")
    if not cell.use_bias:
        _check_zero("params.b_ih", params.b_ih, "the cell has use_bias=False")
        _check_zero("params.b_hh", params.b_hh, "the cell has use_bias=False")
        return eqx.tree_at(lambda c: (c.weight_ih, c.weight_hh), cell, (w_ih, w_hh))
    b_ih, b_hh = np.asarray(params.b_ih), np.asarray(params.b_hh)
    bias = np.concatenate([_f32(b_ih[: 2 * hidden]) + _f32(b_hh[: 2 * hidden]), _f32(b_ih[2 * hidden:])])
    return eqx.tree_at(lambda c: (c.weight_ih, c.weight_hh, c.bias, c.bias_n), cell,
                       (w_ih, w_hh, _jnp(bias, dtype), _jnp(b_hh[2 * hidden:], dtype)))


# ---------------------------------------------------------------------------------- Keras

_KERAS_GRU_ORDER = (1, 0, 2)  # keras z, r, h -> rnnjax r, z, n (its own inverse)
_KERAS_MERGES = {"concat": "concat", "sum": "sum", "mul": "mul", "ave": "mean"}


def _keras_kind(cell) -> str:
    name = type(cell).__name__
    kinds = {"LSTMCell": "lstm", "GRUCell": "gru", "SimpleRNNCell": "elman"}
    if name not in kinds:
        raise TypeError(f"layer: expected a keras LSTM, GRU, SimpleRNN or Bidirectional layer, got a "
                        f"layer with cell {name}")
    kind = kinds[name]
    if kind == "gru" and not cell.reset_after:
        kind = "gru_reset_before"
    return kind


def _keras_activation(fn, where: str, allowed: tuple) -> str:
    keras = _need("keras", "keras")
    for a in allowed:
        if fn is keras.activations.get(a):
            return a
    raise ValueError(f"{where}: expected one of {list(allowed)} (what rnnjax computes here), got {fn!r}")


def _keras_cell_check(cell, kind: str) -> str:
    for option in ("dropout", "recurrent_dropout"):
        if getattr(cell, option, 0.0):
            raise ValueError(
                f"{option}: keras drops inputs separately for each gate, which rnnjax has no option "
                f"for; build the layer with {option}=0.0 (the weights are unchanged) to convert it"
            )
    if kind == "elman":
        return _keras_activation(cell.activation, "activation", ("tanh", "relu", "sigmoid"))
    _keras_activation(cell.activation, "activation", ("tanh",))
    _keras_activation(cell.recurrent_activation, "recurrent_activation", ("sigmoid",))
    return "tanh"


def _keras_layers(layer):
    """``[(rnn layer, name)]`` and the merge for a Bidirectional (None otherwise)."""
    if not getattr(layer, "built", False):
        raise ValueError("layer: not built yet; call it on an input or layer.build(input_shape) first")
    if type(layer).__name__ == "Bidirectional":
        if layer.merge_mode not in _KERAS_MERGES:
            raise ValueError(f"merge_mode: expected one of {sorted(_KERAS_MERGES)}, got {layer.merge_mode!r}")
        return [(layer.forward_layer, "forward_layer"), (layer.backward_layer, "backward_layer")], \
            _KERAS_MERGES[layer.merge_mode]
    if not hasattr(layer, "cell"):
        raise TypeError(f"layer: expected a keras LSTM, GRU, SimpleRNN or Bidirectional layer, got "
                        f"{type(layer).__name__}")
    if layer.go_backwards:
        raise ValueError("go_backwards: a lone keras layer with go_backwards=True returns its outputs "
                         "reversed; use it inside keras.layers.Bidirectional, or rnnjax.rnn(cell, "
                         "reverse=True) (outputs in input order)")
    return [(layer, "layer")], None


def _keras_params(cell, kind: str, ws: list, where: str):
    hidden = cell.units
    n = 3 if cell.use_bias else 2
    if len(ws) != n:
        raise ValueError(f"weights: expected {n} arrays for {where} (kernel, recurrent_kernel"
                         f"{', bias' if cell.use_bias else ''}), got {len(ws)}")
    kernel, rec = np.asarray(ws[0]), np.asarray(ws[1])
    gates = {"lstm": 4, "gru": 3, "gru_reset_before": 3, "elman": 1}[kind]
    if kernel.ndim != 2 or kernel.shape[1] != gates * hidden:
        raise ValueError(f"weights: expected kernel of shape [I, {gates * hidden}] for {where}, got {kernel.shape}")
    if rec.shape != (hidden, gates * hidden):
        raise ValueError(f"weights: expected recurrent_kernel of shape {(hidden, gates * hidden)} for {where}, "
                         f"got {rec.shape}")
    bias_shape = (2, gates * hidden) if kind == "gru" else (gates * hidden,)
    bias = np.asarray(ws[2]) if cell.use_bias else np.zeros(bias_shape, kernel.dtype)
    if bias.shape != bias_shape:
        raise ValueError(f"weights: expected bias of shape {bias_shape} for {where}, got {bias.shape}")
    if kind == "lstm":
        return rj.LSTMParams(_jnp(kernel), _jnp(rec), _jnp(bias))
    if kind == "elman":
        return rj.ElmanParams(_jnp(kernel), _jnp(rec), _jnp(bias))
    r = lambda a: _jnp(_blocks(a, 3, _KERAS_GRU_ORDER))  # noqa: E731
    if kind == "gru":
        return rj.GRUParams(r(kernel), r(rec), r(bias[0]), r(bias[1]))
    return rj.GRUResetBeforeParams(r(kernel), r(rec), r(bias), _jnp(np.zeros_like(bias)))


def from_keras(layer, weights=None) -> tuple[Any, Any]:
    """An rnnjax model and params computing what a Keras 3 recurrent layer computes.

    Args:
      layer: a built ``keras.layers.LSTM``, ``GRU`` (either ``reset_after``), ``SimpleRNN`` or
        ``Bidirectional`` of those; its configuration (units, activations, ``use_bias``, merge
        mode) decides the rnnjax model.
      weights: the layer's weights list (``layer.get_weights()``, the default), e.g. one saved
        earlier for a layer of this configuration.

    Returns ``(model, params)``: ``rnnjax.rnn`` of ``lstm``/``gru``/``gru_reset_before``/
    ``elman``, or ``rnnjax.bidirectional`` with ``BiParams``. The model is batch-major like
    Keras (``xs: [*batch, T, I]``); a Keras mask of valid prefixes is ``lengths``. Keras's LSTM
    states ``[h, c]`` are ``LSTMState(h, c)``. ``dropout``/``recurrent_dropout`` (per-gate
    masks in Keras) and a lone ``go_backwards`` layer raise ``ValueError``.

    >>> import os; os.environ.setdefault("KERAS_BACKEND", "jax")
    'jax'
    >>> import keras
    >>> layer = keras.layers.GRU(4)
    >>> layer.build((None, 5, 3))
    >>> model, params = from_keras(layer)
    >>> params.b_hh.shape
    (12,)
    """
    layers, merge = _keras_layers(layer)
    ws = list(layer.get_weights() if weights is None else weights)
    made, offset = [], 0
    for sub, where in layers:
        kind = _keras_kind(sub.cell)
        act = _keras_cell_check(sub.cell, kind)
        n = 3 if sub.cell.use_bias else 2
        p = _keras_params(sub.cell, kind, ws[offset:offset + n], where)
        offset += n
        made.append((_cell(kind, p.w_ih.shape[0], sub.cell.units, p.w_ih.dtype, act), p))
    if offset != len(ws):
        raise ValueError(f"weights: expected {offset} arrays for this layer, got {len(ws)}")
    if merge is None:
        (cell, params), = made
        return rj.rnn(cell, time_major=False), params
    (cf, pf), (cb, pb) = made
    return rj.bidirectional(cf, cb, merge=merge, time_major=False), rj.BiParams(pf, pb)


def to_keras(params, layer):
    """Write rnnjax params into a built Keras layer (``layer.set_weights``); returns the layer.

    The inverse of ``from_keras``. ``GRU(reset_after=False)`` has no recurrent bias, so
    ``b_hh`` is folded into its single bias (only ``b_hh[2H:] = 0`` can be held exactly: a
    nonzero one is an error); a layer with ``use_bias=False`` accepts only zero biases.

    >>> import os; os.environ.setdefault("KERAS_BACKEND", "jax")
    'jax'
    >>> import keras
    >>> layer = keras.layers.SimpleRNN(4)
    >>> layer.build((None, 5, 3))
    >>> to_keras(rj.elman(3, 4).init(jax.random.key(0)), layer).get_weights()[1].shape
    (4, 4)
    """
    layers, merge = _keras_layers(layer)
    if merge is not None:
        if not isinstance(params, rj.BiParams):
            raise TypeError(f"params: expected BiParams(fwd, bwd) (for keras Bidirectional), got {type(params).__name__}")
        entries = [(layers[0][0], params.fwd, "params.fwd"), (layers[1][0], params.bwd, "params.bwd")]
    else:
        entries = [(layers[0][0], params, "params")]
    template = layer.get_weights()
    out = []
    for sub, p, name in entries:
        cell = sub.cell
        kind = _keras_kind(cell)
        _keras_cell_check(cell, kind)
        hidden = cell.units
        cls = {"lstm": rj.LSTMParams, "gru": rj.GRUParams, "gru_reset_before": rj.GRUResetBeforeParams,
               "elman": rj.ElmanParams}[kind]
        _check_type(name, p, cls, f"keras {type(sub).__name__}")
        gates = {"lstm": 4, "gru": 3, "gru_reset_before": 3, "elman": 1}[kind]
        input_size = template[len(out)].shape[0]
        _check_leaf(f"{name}.w_ih", p.w_ih, (input_size, gates * hidden), "the layer's kernel")
        _check_leaf(f"{name}.w_hh", p.w_hh, (hidden, gates * hidden), "the layer's recurrent_kernel")
        r = lambda a: _blocks(a, 3, _KERAS_GRU_ORDER)  # noqa: E731
        if kind in ("lstm", "elman"):
            _check_leaf(f"{name}.b", p.b, (gates * hidden,), "the layer's bias")
            ws = [np.asarray(p.w_ih), np.asarray(p.w_hh)]
            biases = [("b", np.asarray(p.b))]
            bias = np.asarray(p.b)
        else:
            _check_leaf(f"{name}.b_ih", p.b_ih, (3 * hidden,), "the layer's bias")
            _check_leaf(f"{name}.b_hh", p.b_hh, (3 * hidden,), "the layer's bias")
            ws = [r(p.w_ih), r(p.w_hh)]
            b_ih, b_hh = np.asarray(p.b_ih), np.asarray(p.b_hh)
            biases = [("b_ih", b_ih), ("b_hh", b_hh)]
            if kind == "gru":
                bias = np.stack([r(b_ih), r(b_hh)])
            else:
                _check_zero(f"{name}.b_hh[{2 * hidden}:]", b_hh[2 * hidden:],
                            "keras GRU(reset_after=False) has no bias inside the reset gate")
                bias = r(np.concatenate([_f32(b_ih[: 2 * hidden]) + _f32(b_hh[: 2 * hidden]),
                                         _f32(b_ih[2 * hidden:])]))
        if cell.use_bias:
            ws.append(bias)
        else:
            for field, value in biases:
                _check_zero(f"{name}.{field}", value, "the layer has use_bias=False")
        out += ws
    for i, (new, old) in enumerate(zip(out, template, strict=True)):
        out[i] = np.asarray(new).astype(old.dtype)
    layer.set_weights(out)
    return layer

