"""Cell equations written out in NumPy, independently of the library, for equivalence tests.

Each function takes NumPy arrays (params as a dict of arrays with the field names of the params NamedTuples (docs/design.md))
and returns ``(new_carry, y)`` in float64.
"""

import numpy as np


def sigmoid(z):
    return 1.0 / (1.0 + np.exp(-z))


def elman(p, h, x, act=np.tanh):
    h = act(x @ p["w_ih"] + h @ p["w_hh"] + p["b"])
    return h, h


def lstm(p, carry, x):
    h, c = carry
    hs = h.shape[-1]
    z = x @ p["w_ih"] + h @ p["w_hh"] + p["b"]
    i = sigmoid(z[..., 0 * hs : 1 * hs])
    f = sigmoid(z[..., 1 * hs : 2 * hs])
    g = np.tanh(z[..., 2 * hs : 3 * hs])
    o = sigmoid(z[..., 3 * hs : 4 * hs])
    c = f * c + i * g
    h = o * np.tanh(c)
    return (h, c), h


def peephole_lstm(p, carry, x):
    h, c = carry
    hs = h.shape[-1]
    z = x @ p["w_ih"] + h @ p["w_hh"] + p["b"]
    i = sigmoid(z[..., :hs] + p["w_ci"] * c)
    f = sigmoid(z[..., hs : 2 * hs] + p["w_cf"] * c)
    g = np.tanh(z[..., 2 * hs : 3 * hs])
    c_new = f * c + i * g
    o = sigmoid(z[..., 3 * hs :] + p["w_co"] * c_new)
    h = o * np.tanh(c_new)
    return (h, c_new), h


def cifg_lstm(p, carry, x):
    h, c = carry
    hs = h.shape[-1]
    z = x @ p["w_ih"] + h @ p["w_hh"] + p["b"]
    i = sigmoid(z[..., :hs])
    g = np.tanh(z[..., hs : 2 * hs])
    o = sigmoid(z[..., 2 * hs :])
    c = (1 - i) * c + i * g
    h = o * np.tanh(c)
    return (h, c), h


def gru(p, h, x):
    hs = h.shape[-1]
    wi, wh, bi, bh = p["w_ih"], p["w_hh"], p["b_ih"], p["b_hh"]
    blk = lambda k: slice(k * hs, (k + 1) * hs)
    r = sigmoid(x @ wi[:, blk(0)] + bi[blk(0)] + h @ wh[:, blk(0)] + bh[blk(0)])
    z = sigmoid(x @ wi[:, blk(1)] + bi[blk(1)] + h @ wh[:, blk(1)] + bh[blk(1)])
    n = np.tanh(x @ wi[:, blk(2)] + bi[blk(2)] + r * (h @ wh[:, blk(2)] + bh[blk(2)]))
    h = (1 - z) * n + z * h
    return h, h


def gru_reset_before(p, h, x):
    hs = h.shape[-1]
    wi, wh, bi, bh = p["w_ih"], p["w_hh"], p["b_ih"], p["b_hh"]
    blk = lambda k: slice(k * hs, (k + 1) * hs)
    r = sigmoid(x @ wi[:, blk(0)] + bi[blk(0)] + h @ wh[:, blk(0)] + bh[blk(0)])
    z = sigmoid(x @ wi[:, blk(1)] + bi[blk(1)] + h @ wh[:, blk(1)] + bh[blk(1)])
    n = np.tanh(x @ wi[:, blk(2)] + bi[blk(2)] + (r * h) @ wh[:, blk(2)] + bh[blk(2)])
    h = (1 - z) * n + z * h
    return h, h
