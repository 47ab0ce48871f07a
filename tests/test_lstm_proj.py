"""LSTM with a recurrent projection (``lstm(..., proj_size=P)``): NumPy equations, and parity
with ``torch.nn.LSTM(proj_size=P)`` through ``rnnjax.interop`` (values, final carries, gradients)."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import rnnjax as rj

I, H, P, B = 4, 6, 3, 3


def np_lstm_proj(p, h, c, x):
    sig = lambda v: 1 / (1 + np.exp(-v))
    z = x @ p["w_ih"] + h @ p["w_hh"] + p["b"]
    i, f, g, o = np.split(z, 4, axis=-1)
    c = sig(f) * c + sig(i) * np.tanh(g)
    return (sig(o) * np.tanh(c)) @ p["w_hr"], c


def test_step_matches_the_equations_and_shapes():
    cell = rj.lstm(I, H, proj_size=P)
    params = jax.tree_util.tree_map(lambda a: a + 0.3, cell.init(jax.random.key(0)))
    assert params.w_hh.shape == (P, 4 * H) and params.w_hr.shape == (H, P)
    np.testing.assert_allclose(params.b[H:2 * H], 1.3)  # forget bias 1.0 (+ the 0.3 above)
    carry = cell.initial_carry((B,))
    assert carry.h.shape == (B, P) and carry.c.shape == (B, H)
    carry = rj.LSTMState(jax.random.normal(jax.random.key(1), (B, P)), jax.random.normal(jax.random.key(2), (B, H)))
    x = jax.random.normal(jax.random.key(3), (B, I))
    (h, c), y = jax.jit(cell.step)(params, carry, x)
    want_h, want_c = np_lstm_proj({k: np.asarray(v, np.float64) for k, v in params._asdict().items()},
                                  np.asarray(carry.h, np.float64), np.asarray(carry.c, np.float64), np.asarray(x))
    np.testing.assert_allclose(h, want_h, atol=1e-5)
    np.testing.assert_allclose(c, want_c, atol=1e-5)
    np.testing.assert_array_equal(y, h)
    with pytest.raises(ValueError, match=r"carry.h: expected shape \[3, 3\], got \(3, 6\)"):
        cell.step(params, rj.LSTMState(jnp.zeros((B, H)), jnp.zeros((B, H))), x)
    with pytest.raises(ValueError, match="proj_size: expected a positive int, got 0"):
        rj.lstm(I, H, proj_size=0)


def test_torch_parity_values_carries_and_gradients():
    torch = pytest.importorskip("torch", reason="needs the dev extra: pip install -e '.[dev]'")
    from torch.nn.utils.rnn import pack_padded_sequence, pad_packed_sequence

    from rnnjax import interop

    torch.manual_seed(0)
    module = torch.nn.LSTM(I, H, num_layers=2, bidirectional=True, proj_size=P)
    model, params = interop.from_torch(module)
    x = torch.randn(7, 4, I, requires_grad=True)
    lengths = torch.tensor([7, 5, 2, 1])
    packed, (h_n, c_n) = module(pack_padded_sequence(x, lengths, enforce_sorted=False))
    out, _ = pad_packed_sequence(packed, total_length=7)
    (out.square().sum() + h_n.sum() + c_n.sum()).backward()

    def loss(params, xs):
        carry, ys = model.apply(params, xs, lengths=jnp.asarray(lengths.numpy()))
        h, c = interop.to_torch_carry(carry)
        return jnp.sum(ys ** 2) + jnp.sum(h) + jnp.sum(c), (ys, h, c)

    (_, (ys, h, c)), (g_params, g_xs) = jax.jit(jax.value_and_grad(loss, argnums=(0, 1), has_aux=True))(
        params, jnp.asarray(x.detach().numpy()))
    np.testing.assert_allclose(ys, out.detach().numpy(), atol=1e-5)
    np.testing.assert_allclose(h, h_n.detach().numpy(), atol=1e-5)
    np.testing.assert_allclose(c, c_n.detach().numpy(), atol=1e-5)
    np.testing.assert_allclose(g_xs, x.grad.numpy(), atol=1e-5)
    fwd = g_params[0].fwd  # layer 0, forward direction against torch's parameter gradients
    np.testing.assert_allclose(fwd.w_hr, module.weight_hr_l0.grad.numpy().T, atol=1e-5)
    np.testing.assert_allclose(fwd.w_hh, module.weight_hh_l0.grad.numpy().T, atol=1e-5)
    np.testing.assert_allclose(fwd.b, module.bias_ih_l0.grad.numpy(), atol=1e-5)
    np.testing.assert_allclose(g_params[1].bwd.w_ih, module.weight_ih_l1_reverse.grad.numpy().T, atol=1e-5)
    # round trip: written into a fresh module and read back, the params are the same
    back = interop.from_torch(interop.to_torch(params, torch.nn.LSTM(I, H, num_layers=2, bidirectional=True,
                                                                     proj_size=P)))[1]
    for a, b in zip(jax.tree_util.tree_leaves(back), jax.tree_util.tree_leaves(params), strict=True):
        np.testing.assert_allclose(a, b, atol=1e-7)
