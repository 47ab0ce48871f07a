"""Parity with torch.nn.RNN/LSTM/GRU on packed (variable-length) batches, both directions.

Weights are copied from a torch module (transposed: ours are (in, out)); outputs, final states
and gradients with respect to weights and inputs must agree to float32 round-off.
"""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import rnnjax as rj

torch = pytest.importorskip("torch", reason="needs the dev extra: pip install -e '.[dev]'")
from torch.nn.utils.rnn import pack_padded_sequence, pad_packed_sequence  # noqa: E402

T, B, I, H = 7, 4, 3, 5
LENGTHS = [7, 5, 2, 1]  # torch wants them sorted (or enforce_sorted=False)


def np32(t):
    return t.detach().numpy().astype(np.float32)


def torch_to_params(module, kind, suffix):
    w_ih = np32(getattr(module, f"weight_ih_l0{suffix}")).T
    w_hh = np32(getattr(module, f"weight_hh_l0{suffix}")).T
    b_ih = np32(getattr(module, f"bias_ih_l0{suffix}"))
    b_hh = np32(getattr(module, f"bias_hh_l0{suffix}"))
    if kind == "gru":
        return rj.GRUParams(w_ih, w_hh, b_ih, b_hh)
    cls = rj.LSTMParams if kind == "lstm" else rj.ElmanParams
    return cls(w_ih, w_hh, b_ih + b_hh)


def torch_param_grads(module, kind, suffix):
    g = lambda n: np32(getattr(module, f"{n}_l0{suffix}").grad)
    w = (g("weight_ih").T, g("weight_hh").T)
    if kind == "gru":
        return w + (g("bias_ih"), g("bias_hh"))
    # our single bias b = b_ih + b_hh gets the gradient of either
    np.testing.assert_allclose(g("bias_ih"), g("bias_hh"), atol=1e-6)
    return w + (g("bias_ih"),)


@pytest.mark.parametrize("kind", ["elman", "lstm", "gru"])
def test_bidirectional_packed_matches_torch(kind):
    torch.manual_seed(0)
    module = {"elman": torch.nn.RNN, "lstm": torch.nn.LSTM, "gru": torch.nn.GRU}[kind](
        I, H, bidirectional=True
    )
    step = {"elman": rj.elman_step, "lstm": rj.lstm_step, "gru": rj.gru_step}[kind]
    rng = np.random.default_rng(0)
    xs = rng.normal(size=(T, B, I)).astype(np.float32)
    h0 = rng.normal(size=(2, B, H)).astype(np.float32)
    c0 = rng.normal(size=(2, B, H)).astype(np.float32)
    r_out = rng.normal(size=(T, B, 2 * H)).astype(np.float32)  # random cotangents
    r_h = rng.normal(size=(2, B, H)).astype(np.float32)

    # torch
    x_t = torch.tensor(xs, requires_grad=True)
    packed = pack_padded_sequence(x_t, torch.tensor(LENGTHS))
    init = (torch.tensor(h0), torch.tensor(c0)) if kind == "lstm" else torch.tensor(h0)
    out_p, state = module(packed, init)
    out_t, _ = pad_packed_sequence(out_p, total_length=T)
    h_n = state[0] if kind == "lstm" else state
    (out_t * torch.tensor(r_out)).sum().add_((h_n * torch.tensor(r_h)).sum()).backward()

    # rnnjax: a forward and a reverse scan with the same lengths
    lengths = jnp.array(LENGTHS)
    params = (torch_to_params(module, kind, ""), torch_to_params(module, kind, "_reverse"))

    def carry(d):
        return rj.LSTMState(jnp.asarray(h0[d]), jnp.asarray(c0[d])) if kind == "lstm" else jnp.asarray(h0[d])

    def run(params, xs):
        c_f, y_f = rj.scan(step, params[0], carry(0), xs, lengths=lengths)
        c_b, y_b = rj.scan(step, params[1], carry(1), xs, lengths=lengths, reverse=True)
        out = jnp.concatenate([y_f, y_b], axis=-1)
        h_n = jnp.stack([c.h if kind == "lstm" else c for c in (c_f, c_b)])
        c_n = jnp.stack([c.c for c in (c_f, c_b)]) if kind == "lstm" else None
        return out, h_n, c_n

    out, h_n_j, c_n_j = jax.jit(run)(params, jnp.asarray(xs))
    np.testing.assert_allclose(out, np32(out_t), atol=2e-5)
    np.testing.assert_allclose(h_n_j, np32(h_n), atol=2e-5)
    if kind == "lstm":
        np.testing.assert_allclose(c_n_j, np32(state[1]), atol=2e-5)

    def loss(params, xs):
        out, h_n, _ = run(params, xs)
        return jnp.sum(out * r_out) + jnp.sum(h_n * r_h)

    g_params, g_xs = jax.jit(jax.grad(loss, argnums=(0, 1)))(params, jnp.asarray(xs))
    np.testing.assert_allclose(g_xs, np32(x_t.grad), atol=5e-5)
    for d, suffix in enumerate(["", "_reverse"]):
        for got, want in zip(g_params[d], torch_param_grads(module, kind, suffix)):
            np.testing.assert_allclose(got, want, atol=5e-5, rtol=1e-4)
