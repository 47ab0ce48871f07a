"""rnnjax.interop against the real peer libraries: the converted rnnjax model must compute what
the peer's module computes (outputs and final carries to 1e-5 on padded batches where the peer
takes lengths or masks, full length otherwise; gradients too for PyTorch), and converting back
must reproduce the peer's arrays exactly."""

import os

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import rnnjax as rj
from rnnjax import interop

T, B, IN, H = 5, 3, 3, 4
LENGTHS = np.array([3, 5, 1])  # unsorted, one full and one of a single step
TOL = dict(rtol=1e-5, atol=1e-5)

pytestmark = pytest.mark.filterwarnings("ignore::DeprecationWarning")


def rng(seed=0):
    return np.random.default_rng(seed)


def valid(ys, time_axis):
    """``ys`` with every padding position set to zero (peers leave them as they come)."""
    ys = np.moveaxis(np.asarray(ys), time_axis, 0).copy()
    ys[np.arange(ys.shape[0])[:, None] >= LENGTHS[None, :]] = 0.0
    return np.moveaxis(ys, 0, time_axis)


def assert_trees_equal(a, b):
    """Exactly equal leaves and equal structure."""
    assert jax.tree_util.tree_structure(a) == jax.tree_util.tree_structure(b)
    for x, y in zip(jax.tree_util.tree_leaves(a), jax.tree_util.tree_leaves(b), strict=True):
        assert np.asarray(x).dtype == np.asarray(y).dtype
        np.testing.assert_array_equal(np.asarray(x), np.asarray(y))


def run(model, params, xs, **kwargs):
    """``model.apply(params, xs, lengths=LENGTHS)`` under jit: one compile instead of many eager ops."""
    apply = jax.jit(lambda p, x, lengths: model.apply(p, x, lengths=lengths, **kwargs))
    return apply(params, jnp.asarray(xs), jnp.asarray(LENGTHS))


def scan_full(cell, params, xs):
    """``rnnjax.scan`` of the cell over the full length of ``xs``, from zeros, under jit."""
    return jax.jit(lambda p, x: rj.scan(cell.step, p, cell.initial_carry((B,)), x))(params, jnp.asarray(xs))


def random_like(params, seed=1):
    leaves, tree = jax.tree_util.tree_flatten(params)
    r = rng(seed)
    return jax.tree_util.tree_unflatten(tree, [jnp.asarray(r.normal(size=leaf.shape).astype(np.float32) * 0.5)
                                               for leaf in leaves])


# --------------------------------------------------------------------------------- PyTorch

torch_cases = {  # each option in at least one case, kept small: grads of a deep bi-LSTM are slow
    "lstm_2x_bi": ("LSTM", dict(num_layers=2, bidirectional=True)),
    "lstm_no_bias_batch_first": ("LSTM", dict(bias=False, batch_first=True)),
    "gru_bi_batch_first": ("GRU", dict(bidirectional=True, batch_first=True)),
    "rnn_relu_2x_batch_first": ("RNN", dict(nonlinearity="relu", num_layers=2, batch_first=True)),
}


def zeros(cls, input_size, hidden, gates):
    """Params of ``cls`` without running an initialiser (cheap: the error tests only need shapes)."""
    w = (jnp.zeros((input_size, gates * hidden)), jnp.zeros((hidden, gates * hidden)))
    biases = (jnp.zeros(gates * hidden),) * (len(cls._fields) - 2)
    return cls(*w, *biases)


@pytest.fixture(scope="module")
def torch():
    return pytest.importorskip("torch", reason="needs the dev extra: pip install -e '.[dev]'")


def torch_grad_of(grads, name, batch_first):
    """The rnnjax gradient matching torch parameter ``name`` (e.g. weight_ih_l1_reverse)."""
    kind, _, rest = name.partition("_l")
    layer, _, reverse = rest.partition("_")
    g = grads[int(layer)]
    if isinstance(g, rj.BiParams):
        g = g.bwd if reverse else g.fwd
    field = {"weight_ih": "w_ih", "weight_hh": "w_hh"}.get(kind)
    if field:
        return np.asarray(getattr(g, field)).T
    if isinstance(g, rj.GRUParams):
        return np.asarray(g.b_ih if kind == "bias_ih" else g.b_hh)
    return np.asarray(g.b)  # b = bias_ih + bias_hh: each gets the gradient of b


@pytest.mark.parametrize("case", list(torch_cases))
def test_torch_packed_batch_outputs_carry_and_gradients(torch, case):
    from torch.nn.utils.rnn import pack_padded_sequence, pad_packed_sequence

    name, kwargs = torch_cases[case]
    torch.manual_seed(0)
    module = getattr(torch.nn, name)(IN, H, **kwargs)
    lstm = name == "LSTM"
    bf = kwargs.get("batch_first", False)
    n = kwargs.get("num_layers", 1) * (2 if kwargs.get("bidirectional") else 1)
    r = rng()
    xs = r.normal(size=(B, T, IN) if bf else (T, B, IN)).astype(np.float32)
    h0, c0 = (r.normal(size=(n, B, H)).astype(np.float32) for _ in range(2))
    out_size = H * (2 if kwargs.get("bidirectional") else 1)
    r_out = r.normal(size=xs.shape[:2] + (out_size,)).astype(np.float32)
    r_h, r_c = (r.normal(size=(n, B, H)).astype(np.float32) for _ in range(2))

    x_t = torch.tensor(xs, requires_grad=True)
    packed = pack_padded_sequence(x_t, torch.tensor(LENGTHS), batch_first=bf, enforce_sorted=False)
    state0 = (torch.tensor(h0), torch.tensor(c0)) if lstm else torch.tensor(h0)
    out_p, state = module(packed, state0)
    out_t, _ = pad_packed_sequence(out_p, batch_first=bf, total_length=T)
    h_n, c_n = state if lstm else (state, None)
    loss = (out_t * torch.tensor(r_out)).sum() + (h_n * torch.tensor(r_h)).sum()
    if lstm:
        loss = loss + (c_n * torch.tensor(r_c)).sum()
    loss.backward()

    model, params = interop.from_torch(module)
    carry0 = interop.from_torch_carry(module, state0)

    def jloss(params, xs):
        carry, ys = model.apply(params, xs, lengths=jnp.asarray(LENGTHS), carry=carry0)
        state = interop.to_torch_carry(carry)
        h, c = state if lstm else (state, None)
        total = jnp.sum(ys * r_out) + jnp.sum(h * r_h)
        return (total + jnp.sum(c * r_c) if lstm else total), (carry, ys)

    grad = jax.jit(jax.grad(jloss, argnums=(0, 1), has_aux=True))
    (g_params, g_xs), (carry, ys) = grad(params, jnp.asarray(xs))
    np.testing.assert_allclose(ys, out_t.detach().numpy(), **TOL)  # zeros at padding on both sides
    state = interop.to_torch_carry(carry)
    np.testing.assert_allclose(state[0] if lstm else state, h_n.detach().numpy(), **TOL)
    if lstm:
        np.testing.assert_allclose(state[1], c_n.detach().numpy(), **TOL)

    np.testing.assert_allclose(g_xs, x_t.grad.numpy(), **TOL)
    for pname, p in module.named_parameters():
        np.testing.assert_allclose(torch_grad_of(g_params, pname, bf), p.grad.numpy(), err_msg=pname, **TOL)


def test_torch_cells_one_step(torch):
    torch.manual_seed(0)
    r = rng(2)
    x, h, c = (r.normal(size=(B, s)).astype(np.float32) for s in (IN, H, H))
    for module in (torch.nn.RNNCell(IN, H), torch.nn.LSTMCell(IN, H), torch.nn.GRUCell(IN, H)):
        cell, params = interop.from_torch(module)
        if isinstance(module, torch.nn.LSTMCell):
            h_t, c_t = module(torch.tensor(x), (torch.tensor(h), torch.tensor(c)))
            carry, y = cell.step(params, interop.from_torch_carry(module, (h, c)), jnp.asarray(x))
            np.testing.assert_allclose(carry.c, c_t.detach().numpy(), **TOL)
            np.testing.assert_allclose(interop.to_torch_carry(carry)[0], h_t.detach().numpy(), **TOL)
        else:
            h_t = module(torch.tensor(x), torch.tensor(h))
            carry, y = cell.step(params, interop.from_torch_carry(module, h), jnp.asarray(x))
        np.testing.assert_allclose(y, h_t.detach().numpy(), err_msg=type(module).__name__, **TOL)


def test_torch_round_trips(torch):
    torch.manual_seed(0)
    for name in ("RNN", "LSTM", "GRU"):
        module = getattr(torch.nn, name)(IN, H, num_layers=2, bidirectional=True)
        model, params = interop.from_torch(module)
        # rnnjax -> torch -> rnnjax is exact
        mine = random_like(params)
        assert_trees_equal(interop.from_torch(interop.to_torch(mine, module))[1], mine)
        # torch -> rnnjax -> torch: the same tensors for the GRU; for RNN/LSTM bias_ih + bias_hh
        # comes back as one bias (and zeros), so the module computes the same outputs
        torch.manual_seed(1)
        source = getattr(torch.nn, name)(IN, H, num_layers=2, bidirectional=True)
        target = interop.to_torch(interop.from_torch(source)[1], getattr(torch.nn, name)(IN, H, num_layers=2, bidirectional=True))
        for (pname, p), q in zip(source.named_parameters(), target.parameters(), strict=True):
            if name == "GRU" or pname.startswith("weight"):
                assert torch.equal(p, q), pname
        x = torch.tensor(rng(3).normal(size=(T, B, IN)).astype(np.float32))
        np.testing.assert_allclose(source(x)[0].detach().numpy(), target(x)[0].detach().numpy(), **TOL)
    cell = torch.nn.GRUCell(IN, H)
    _, p = interop.from_torch(cell)
    assert_trees_equal(interop.from_torch(interop.to_torch(random_like(p), cell))[1], random_like(p))


def test_torch_dropout_and_bfloat16(torch):
    module = torch.nn.LSTM(IN, H, num_layers=2, dropout=0.3)
    model, params = interop.from_torch(module)
    xs = jnp.asarray(rng().normal(size=(T, B, IN)).astype(np.float32))
    _, ys_eval = run(model, params, xs)
    _, ys_train = run(model, params, xs, train=True, key=jax.random.key(0))
    assert float(jnp.abs(ys_train - ys_eval).max()) > 1e-3  # inter-layer dropout is on in training
    with pytest.raises(ValueError, match="dropout=0.3"):
        model.apply(params, xs, train=True)
    _, p16 = interop.from_torch(torch.nn.GRU(IN, H).to(torch.bfloat16))
    assert p16[0].w_ih.dtype == jnp.bfloat16


def test_torch_bad_input(torch):
    from torch.nn.utils.rnn import pack_padded_sequence

    model, params = interop.from_torch(torch.nn.GRU(IN, H))
    packed = pack_padded_sequence(torch.zeros(T, B, IN), torch.tensor(LENGTHS), enforce_sorted=False)
    with pytest.raises(TypeError, match="xs: expected an array, got a torch PackedSequence; pass the padded"):
        model.apply(params, packed)
    gru = torch.nn.GRU(IN, H)
    with pytest.raises(ValueError, match=r"params\[0\]\.b_hh: expected shape \(12,\) \(bias_hh_l0 of the module\)"):
        interop.to_torch((params[0]._replace(b_hh=jnp.zeros(5)),), gru)
    with pytest.raises(TypeError, match="LSTMProjParams"):  # plain LSTM params into a projected LSTM
        interop.to_torch(interop.from_torch(torch.nn.LSTM(IN, H))[1], torch.nn.LSTM(IN, H, proj_size=2))
    with pytest.raises(TypeError, match="module: expected torch.nn.RNN.*got Linear"):
        interop.from_torch(torch.nn.Linear(IN, H))
    module = torch.nn.LSTM(IN, H, num_layers=2)
    before = [p.detach().clone() for p in module.parameters()]
    _, params = interop.from_torch(module)
    wrong = (params[0], zeros(rj.LSTMParams, H, H + 1, 4))
    with pytest.raises(ValueError, match=r"params\[1\]\.w_ih: expected shape \(4, 16\) \(weight_ih_l1 of the "
                                         r"module, transposed\), got \(4, 20\)"):
        interop.to_torch(wrong, module)
    with pytest.raises(ValueError, match=r"params: expected 2 entries \(the module's num_layers\), got 1"):
        interop.to_torch(params[:1], module)
    with pytest.raises(TypeError, match=r"params\[0\]: expected rnnjax LSTMParams \(for torch.nn.LSTM\), got GRUParams"):
        interop.to_torch((zeros(rj.GRUParams, IN, H, 3), params[1]), module)
    for p, q in zip(module.parameters(), before, strict=True):  # nothing was written
        assert torch.equal(p, q)
    no_bias = torch.nn.LSTM(IN, H, bias=False)
    with pytest.raises(ValueError, match=r"params\[0\]\.b: the module has bias=False, so it must be zero"):
        interop.to_torch((zeros(rj.LSTMParams, IN, H, 4)._replace(b=jnp.ones(4 * H)),), no_bias)
    with pytest.raises(ValueError, match=r"state\[0\]: expected shape \[2, \*batch, 4\]"):
        interop.from_torch_carry(module, (torch.zeros(1, B, H), torch.zeros(1, B, H)))
    with pytest.raises(TypeError, match=r"state: expected \(h_0, c_0\) for an LSTM"):
        interop.from_torch_carry(module, torch.zeros(2, B, H))


# ------------------------------------------------------------------------------ Flax linen


@pytest.fixture(scope="module")
def linen():
    return pytest.importorskip("flax.linen", reason="needs the dev extra: pip install -e '.[dev]'")


@pytest.fixture(scope="module")
def batch():
    """A batch-major padded batch [B, T, IN] and its time-major twin."""
    xs = rng(4).normal(size=(B, T, IN)).astype(np.float32)
    return xs, np.swapaxes(xs, 0, 1)


def flax_lstm_carry(carry):
    """Flax's LSTM carry (c, h) as rnnjax's LSTMState(h, c); other carries as they are."""
    return rj.LSTMState(carry[1], carry[0]) if isinstance(carry, tuple) else carry


def linen_cells(linen):
    return {
        "LSTMCell": linen.LSTMCell(H),
        "OptimizedLSTMCell": linen.OptimizedLSTMCell(H),
        "GRUCell": linen.GRUCell(H),
        "SimpleCell_relu": linen.SimpleCell(H, activation_fn=jax.nn.relu),
    }


def randomise(variables, seed=5):
    """Every leaf random (flax initialises biases to zero, which would hide a misplaced bias)."""
    return random_like(variables, seed)


@pytest.mark.parametrize("name", ["LSTMCell", "OptimizedLSTMCell", "GRUCell", "SimpleCell_relu"])
def test_linen_rnn_padded_batch(linen, batch, name):
    xs, xs_tm = batch
    module = linen.RNN(linen_cells(linen)[name], return_carry=True)
    variables = randomise(module.init(jax.random.key(0), xs))
    carry_f, ys_f = jax.jit(lambda v, x: module.apply(v, x, seq_lengths=LENGTHS))(variables, xs)
    model, params = interop.from_flax(module, variables)
    carry, ys = run(model, params, xs)
    np.testing.assert_allclose(ys, valid(ys_f, 1), **TOL)  # batch-major like flax
    assert_trees_close(carry, flax_lstm_carry(carry_f))
    # time-major rnnjax call on the transposed batch gives the same
    _, ys_tm = run(rj.rnn(interop.from_flax(module.cell, variables["params"]["cell"])[0]), params, xs_tm)
    np.testing.assert_allclose(np.swapaxes(ys_tm, 0, 1), ys, atol=0)
    # flax -> rnnjax -> flax reproduces the variables exactly
    assert_trees_equal(interop.to_flax(params, module, variables), variables)


def assert_trees_close(a, b):
    assert jax.tree_util.tree_structure(a) == jax.tree_util.tree_structure(b)
    for x, y in zip(jax.tree_util.tree_leaves(a), jax.tree_util.tree_leaves(b), strict=True):
        np.testing.assert_allclose(np.asarray(x), np.asarray(y), **TOL)


def test_linen_bidirectional_time_major_and_reverse(linen, batch):
    xs, xs_tm = batch
    module = linen.Bidirectional(linen.RNN(linen.LSTMCell(H)), linen.RNN(linen.GRUCell(H)), return_carry=True)
    variables = randomise(module.init(jax.random.key(0), xs))
    (cf, cb), ys_f = jax.jit(lambda v, x: module.apply(v, x, seq_lengths=LENGTHS))(variables, xs)
    model, params = interop.from_flax(module, variables)
    carry, ys = run(model, params, xs)
    np.testing.assert_allclose(ys, valid(ys_f, 1), **TOL)
    assert_trees_close(carry, rj.BiCarry(flax_lstm_carry(cf), cb))
    assert_trees_equal(interop.to_flax(params, module, variables), variables)

    # a time-major reverse RNN without keep_order returns outputs in processing order
    module = linen.RNN(linen.GRUCell(H), time_major=True, reverse=True, return_carry=True)
    variables = randomise(module.init(jax.random.key(0), xs_tm), seed=6)
    c_f, ys_f = jax.jit(lambda v, x: module.apply(v, x, seq_lengths=LENGTHS))(variables, xs_tm)
    model, params = interop.from_flax(module, variables)
    carry, ys = run(model, params, xs_tm)
    np.testing.assert_allclose(ys, valid(ys_f, 0), **TOL)
    np.testing.assert_allclose(carry, c_f, **TOL)


def test_linen_round_trip_from_rnnjax_and_errors(linen):
    cell = linen.GRUCell(H)
    variables = cell.init(jax.random.key(0), jnp.zeros((B, H)), jnp.zeros((B, IN)))
    mine = random_like(zeros(rj.GRUParams, IN, H, 3))
    mine = mine._replace(b_hh=mine.b_hh.at[: 2 * H].set(0.0))  # flax holds b_hh[:2H] folded into b_ih
    assert_trees_equal(interop.from_flax(cell, interop.to_flax(mine, cell, variables))[1], mine)
    # a nonzero b_hh[:2H] is folded: same function, so one step agrees
    full = random_like(zeros(rj.GRUParams, IN, H, 3))
    back = interop.from_flax(cell, interop.to_flax(full, cell, variables))[1]
    x, h = jnp.asarray(rng().normal(size=(B, IN)), jnp.float32), jnp.asarray(rng(1).normal(size=(B, H)), jnp.float32)
    np.testing.assert_allclose(rj.gru_step(back, h, x)[1], rj.gru_step(full, h, x)[1], **TOL)

    hard = linen.LSTMCell(H, gate_fn=jax.nn.hard_sigmoid)
    v = hard.init(jax.random.key(0), (jnp.zeros((B, H)), jnp.zeros((B, H))), jnp.zeros((B, IN)))
    with pytest.raises(ValueError, match="gate_fn: rnnjax's LSTM gates are sigmoid"):
        interop.from_flax(hard, v)
    res = linen.SimpleCell(H, residual=True)
    with pytest.raises(ValueError, match="residual"):
        interop.from_flax(res, res.init(jax.random.key(0), jnp.zeros((B, H)), jnp.zeros((B, IN))))
    half = linen.GRUCell(H, dtype=jnp.bfloat16)  # computes in bfloat16 with float32 params
    with pytest.raises(ValueError, match="dtype: the flax cell computes in bfloat16 with float32 params"):
        interop.from_flax(half, variables)
    with pytest.raises(TypeError, match="variables: expected the linen module's variables"):
        interop.from_flax(cell)
    with pytest.raises(ValueError, match=r"variables: expected variables\['params'\]\['hn'\] \(the params of a flax GRUCell\), missing"):
        interop.from_flax(cell, {"params": {k: v for k, v in variables["params"].items() if k != "hn"}})
    with pytest.raises(ValueError, match=r"params: variables cell/ir/kernel has shape \(3, 4\), the params give \(5, 4\)"):
        interop.to_flax(zeros(rj.GRUParams, 5, H, 3), linen.RNN(cell), {"params": {"cell": variables["params"]}})


# ------------------------------------------------------------------------ Flax linen MGUCell


def mgu_variables(linen, cell, seed):
    """Random variables (every leaf nonzero) of a linen MGUCell on [B, IN] inputs."""
    return randomise(cell.init(jax.random.key(0), jnp.zeros((B, H)), jnp.zeros((B, IN))), seed)


@pytest.mark.parametrize("reset_gate", [True, False])
def test_linen_mgu_padded_batch(linen, batch, reset_gate):
    xs, _ = batch
    module = linen.RNN(linen.MGUCell(H, reset_gate=reset_gate), return_carry=True)
    variables = randomise(module.init(jax.random.key(0), xs), seed=11)
    assert ("bias" in variables["params"]["cell"]["hn"]) == reset_gate  # flax's hn bias comes with the gate
    carry_f, ys_f = jax.jit(lambda v, x: module.apply(v, x, seq_lengths=LENGTHS))(variables, xs)
    model, params = interop.from_flax(module, variables)
    assert isinstance(params, rj.MGUParams)
    carry, ys = run(model, params, xs)
    np.testing.assert_allclose(ys, valid(ys_f, 1), **TOL)
    np.testing.assert_allclose(carry, carry_f, **TOL)
    # flax -> rnnjax -> flax reproduces the variables exactly
    assert_trees_equal(interop.to_flax(params, module, variables), variables)

    # rnnjax -> flax -> rnnjax gives the params back bitwise where flax can hold them: b_hh's
    # f part (and without the reset gate its n part) is folded into the input biases
    mine = random_like(zeros(rj.MGUParams, IN, H, 2), seed=12)
    mine = mine._replace(b_hh=mine.b_hh.at[: H if reset_gate else 2 * H].set(0.0))
    cell = linen.MGUCell(H, reset_gate=reset_gate)
    template = mgu_variables(linen, cell, seed=13)
    assert_trees_equal(interop.from_flax(cell, interop.to_flax(mine, cell, template))[1], mine)
    # a nonzero folded part is the same function: one flax step equals rnnjax's step on the full params
    full = random_like(zeros(rj.MGUParams, IN, H, 2), seed=14)
    x = jnp.asarray(rng(2).normal(size=(B, IN)), jnp.float32)
    h = jnp.asarray(rng(3).normal(size=(B, H)), jnp.float32)
    h_f, _ = cell.apply(interop.to_flax(full, cell, template), h, x)
    np.testing.assert_allclose(h_f, rj.mgu_step(full, h, x, reset_gate=reset_gate)[1], **TOL)


def test_linen_mgu_bidirectional_and_reverse(linen, batch):
    xs, _ = batch
    # each direction with its own reset_gate: the converted cells must keep them apart
    module = linen.Bidirectional(linen.RNN(linen.MGUCell(H)), linen.RNN(linen.MGUCell(H, reset_gate=False)),
                                 return_carry=True)
    variables = randomise(module.init(jax.random.key(0), xs), seed=15)
    (cf, cb), ys_f = jax.jit(lambda v, x: module.apply(v, x, seq_lengths=LENGTHS))(variables, xs)
    model, params = interop.from_flax(module, variables)
    carry, ys = run(model, params, xs)
    np.testing.assert_allclose(ys, valid(ys_f, 1), **TOL)
    assert_trees_close(carry, rj.BiCarry(cf, cb))
    assert_trees_equal(interop.to_flax(params, module, variables), variables)

    # a batch-major reverse RNN without keep_order returns outputs in processing order
    module = linen.RNN(linen.MGUCell(H), reverse=True, return_carry=True)
    variables = randomise(module.init(jax.random.key(0), xs), seed=16)
    c_f, ys_f = jax.jit(lambda v, x: module.apply(v, x, seq_lengths=LENGTHS))(variables, xs)
    model, params = interop.from_flax(module, variables)
    carry, ys = run(model, params, xs)
    np.testing.assert_allclose(ys, valid(ys_f, 1), **TOL)
    np.testing.assert_allclose(carry, c_f, **TOL)


def test_linen_mgu_unsupported_options(linen, nnx):
    variables = mgu_variables(linen, linen.MGUCell(H), seed=17)
    for kw, match in ((dict(gate_fn=jax.nn.hard_sigmoid), "^gate_fn: rnnjax's MGU gates are sigmoid"),
                      (dict(activation_fn=jax.nn.relu), "^activation_fn: rnnjax's MGU uses tanh"),
                      (dict(dtype=jnp.bfloat16), "^dtype: the flax cell computes in bfloat16 with float32 params"),
                      (dict(carry_init=linen.initializers.ones_init()), "^carry_init: the flax cell starts from")):
        with pytest.raises(ValueError, match=match):
            interop.from_flax(linen.MGUCell(H, **kw), variables)
        with pytest.raises(ValueError, match=match):
            interop.from_flax(linen.RNN(linen.MGUCell(H, **kw)), {"params": {"cell": variables["params"]}})
    # the default carry_init given explicitly is fine
    interop.from_flax(linen.MGUCell(H, carry_init=linen.initializers.zeros_init()), variables)
    with pytest.raises(ValueError, match=r"variables: expected variables\['params'\]\['hn'\] \(the params of a flax MGUCell\), missing"):
        interop.from_flax(linen.MGUCell(H), {"params": {k: v for k, v in variables["params"].items() if k != "hn"}})
    cell = linen.MGUCell(H)
    with pytest.raises(TypeError, match="params: expected rnnjax MGUParams \\(for flax MGUCell\\), got GRUParams"):
        interop.to_flax(zeros(rj.GRUParams, IN, H, 3), cell, variables)
    with pytest.raises(ValueError, match=r"params.b_hh: expected shape \(8,\) \(gates f, n\), got \(12,\)"):
        interop.to_flax(zeros(rj.MGUParams, IN, H, 2)._replace(b_hh=jnp.zeros(3 * H)), cell, variables)
    with pytest.raises(ValueError, match=r"params: variables if/kernel has shape \(3, 4\), the params give \(5, 4\)"):
        interop.to_flax(zeros(rj.MGUParams, 5, H, 2), cell, variables)
    # flax NNX has no MGUCell (flax 0.12): when it gains one, interop must map it too
    assert not hasattr(nnx, "MGUCell"), "flax NNX now has an MGUCell: map it in rnnjax.interop"


# -------------------------------------------------------------------------------- Flax NNX


@pytest.fixture(scope="module")
def nnx():
    return pytest.importorskip("flax.nnx", reason="needs the dev extra: pip install -e '.[dev]'")


def nnx_randomise(nnx, module, seed=7):
    state = nnx.state(module, nnx.Param)
    nnx.update(module, random_like(state, seed))
    return module


@pytest.mark.parametrize("name", ["LSTMCell", "OptimizedLSTMCell", "GRUCell", "SimpleCell"])
def test_nnx_rnn_padded_batch(nnx, batch, name):
    xs, _ = batch
    cell = getattr(nnx, name)(IN, H, rngs=nnx.Rngs(0))
    module = nnx_randomise(nnx, nnx.RNN(cell, return_carry=True))
    carry_f, ys_f = nnx.jit(lambda m, x: m(x, seq_lengths=jnp.asarray(LENGTHS)))(module, jnp.asarray(xs))
    model, params = interop.from_flax(module)
    carry, ys = run(model, params, xs)
    np.testing.assert_allclose(ys, valid(ys_f, 1), **TOL)
    assert_trees_close(carry, flax_lstm_carry(carry_f))
    before = jax.tree_util.tree_map(np.asarray, nnx.state(module, nnx.Param))
    other = nnx.RNN(getattr(nnx, name)(IN, H, rngs=nnx.Rngs(1)))
    interop.to_flax(params, other)  # rnnjax -> NNX: the same arrays as the source module
    assert_trees_equal(jax.tree_util.tree_map(np.asarray, nnx.state(other, nnx.Param)), before)


def test_nnx_bidirectional_and_gru_without_b_hn(nnx, batch):
    xs, _ = batch
    module = nnx.Bidirectional(nnx.RNN(nnx.GRUCell(IN, H, rngs=nnx.Rngs(0))),
                               nnx.RNN(nnx.LSTMCell(IN, H, rngs=nnx.Rngs(1))), return_carry=True)
    nnx_randomise(nnx, module)
    (cf, cb), ys_f = nnx.jit(lambda m, x: m(x, seq_lengths=jnp.asarray(LENGTHS)))(module, jnp.asarray(xs))
    model, params = interop.from_flax(module)
    carry, ys = run(model, params, xs)
    np.testing.assert_allclose(ys, valid(ys_f, 1), **TOL)
    assert_trees_close(carry, rj.BiCarry(cf, flax_lstm_carry(cb)))
    assert not np.any(np.asarray(params.fwd.b_hh))  # NNX's GRU has no recurrent bias at all
    # b_hh[:2H] folds into the input bias; b_hh[2H:] (b_hn) has no place in NNX's GRU
    gru = module.forward_rnn.cell
    kernel = np.asarray(gru.dense_i.kernel[...])
    bad = params.fwd._replace(b_hh=params.fwd.b_hh.at[2 * H].set(0.5))
    with pytest.raises(ValueError, match=r"params.fwd.b_hh\[8:\]: flax NNX's GRUCell has no bias inside "
                                         r"the reset gate \(b_hn\), so it must be zero; got max .* = 0.5"):
        interop.to_flax(rj.BiParams(bad, params.bwd), module)
    np.testing.assert_array_equal(gru.dense_i.kernel[...], kernel)  # unchanged after the error
    with pytest.raises(TypeError, match="variables: an NNX module holds its own params"):
        interop.from_flax(module, {})


# ----------------------------------------------------------------------------------- Haiku


@pytest.fixture(scope="module")
def hk():
    return pytest.importorskip("haiku", reason="needs the dev extra: pip install -e '.[dev]'")


def haiku_cores(hk):
    return {
        "LSTM": lambda: hk.LSTM(H),
        "GRU": lambda: hk.GRU(H, b_init=hk.initializers.RandomNormal()),
        "VanillaRNN": lambda: hk.VanillaRNN(H, double_bias=False),
        "VanillaRNN_double_bias": lambda: hk.VanillaRNN(H),
    }


@pytest.mark.parametrize("name", ["LSTM", "GRU", "VanillaRNN", "VanillaRNN_double_bias"])
def test_haiku_cores_full_length(hk, batch, name):
    _, xs_tm = batch
    make = haiku_cores(hk)[name]

    def unroll(xs):
        core = make()
        return hk.dynamic_unroll(core, xs, core.initial_state(B))

    f = hk.transform(unroll)
    hparams = random_like(f.init(jax.random.key(0), jnp.asarray(xs_tm)), seed=8)
    ys_h, state_h = jax.jit(f.apply)(hparams, None, jnp.asarray(xs_tm))
    core = name.split("_")[0]
    cell, params = interop.from_haiku(hparams, core)
    carry, ys = scan_full(cell, params, xs_tm)
    np.testing.assert_allclose(ys, ys_h, **TOL)
    assert_trees_close(carry, rj.LSTMState(*state_h) if core == "LSTM" else state_h)
    back = interop.to_haiku(params, hparams, core)
    if name == "LSTM":  # the forget bias passes through +1 and -1 in float32
        np.testing.assert_array_equal(back["lstm/linear"]["w"], hparams["lstm/linear"]["w"])
        np.testing.assert_allclose(back["lstm/linear"]["b"], hparams["lstm/linear"]["b"], rtol=0, atol=2e-7)
    elif name == "VanillaRNN_double_bias":  # the two biases come back as one (and a zero one)
        np.testing.assert_allclose(jax.jit(f.apply)(back, None, jnp.asarray(xs_tm))[0], ys_h, **TOL)
    else:
        assert_trees_equal(back, hparams)


def test_haiku_rnnjax_round_trip_and_errors(hk):
    f = hk.transform(lambda x: hk.GRU(H)(x, jnp.zeros((B, H))))
    template = f.init(jax.random.key(0), jnp.zeros((B, IN)))
    mine = random_like(zeros(rj.GRUResetBeforeParams, IN, H, 3))
    mine = mine._replace(b_hh=jnp.zeros_like(mine.b_hh))  # haiku's GRU holds one bias
    assert_trees_equal(interop.from_haiku(interop.to_haiku(mine, template, "GRU"), hk.GRU)[1], mine)
    with pytest.raises(ValueError, match=r"name: no haiku module 'lstm/linear' in params.*\['gru'\]"):
        interop.from_haiku(template, "LSTM")
    f2 = hk.transform(lambda x: hk.VanillaRNN(H)(x, jnp.zeros((B, H))))
    vanilla = f2.init(jax.random.key(0), jnp.zeros((B, IN)))
    with pytest.raises(ValueError, match=r"params: expected params\['vanilla_rnn/linear_1'\] \(the params of a haiku VanillaRNN\), missing"):
        interop.from_haiku({"vanilla_rnn/linear": vanilla["vanilla_rnn/linear"]}, "VanillaRNN")
    with pytest.raises(ValueError, match="core: expected one of"):
        interop.from_haiku(template, "MGU")
    with pytest.raises(ValueError, match=r"params.w_ih: expected shape \(3, 12\) \(gru/w_i\), got \(5, 12\)"):
        interop.to_haiku(zeros(rj.GRUResetBeforeParams, 5, H, 3), template, "GRU")


# --------------------------------------------------------------------------------- Equinox


@pytest.fixture(scope="module")
def eqx():
    return pytest.importorskip("equinox", reason="needs the dev extra: pip install -e '.[dev]'")


@pytest.mark.parametrize("name,use_bias", [("LSTMCell", True), ("GRUCell", True), ("GRUCell", False)])
def test_equinox_cells_full_length(eqx, batch, name, use_bias):
    _, xs_tm = batch
    cell_e = getattr(eqx.nn, name)(IN, H, use_bias=use_bias, key=jax.random.key(0))
    lstm = name == "LSTMCell"
    state0 = (jnp.zeros((B, H)), jnp.zeros((B, H))) if lstm else jnp.zeros((B, H))

    def body(state, x):
        state = jax.vmap(cell_e)(x, state)
        return state, state[0] if lstm else state

    state_e, ys_e = jax.jit(lambda x: jax.lax.scan(body, state0, x))(jnp.asarray(xs_tm))
    cell, params = interop.from_equinox(cell_e)
    carry, ys = scan_full(cell, params, xs_tm)
    np.testing.assert_allclose(ys, ys_e, **TOL)
    assert_trees_close(carry, rj.LSTMState(*state_e) if lstm else state_e)
    back = interop.to_equinox(params, getattr(eqx.nn, name)(IN, H, use_bias=use_bias, key=jax.random.key(1)))
    assert_trees_equal(eqx.filter(back, eqx.is_array), eqx.filter(cell_e, eqx.is_array))
    if not use_bias:
        with pytest.raises(ValueError, match=r"params.b_ih: the cell has use_bias=False, so it must be zero"):
            interop.to_equinox(random_like(params), cell_e)


# ----------------------------------------------------------------------------------- Keras


@pytest.fixture(scope="module")
def keras():
    os.environ.setdefault("KERAS_BACKEND", "jax")
    keras = pytest.importorskip("keras", reason="needs the dev extra: pip install -e '.[dev]'")
    if keras.backend.backend() != "jax":
        pytest.skip("keras runs on another backend in this process")
    return keras


def keras_layers(keras):
    kw = dict(return_sequences=True, return_state=True, bias_initializer="random_normal")
    return {
        "LSTM": lambda: keras.layers.LSTM(H, **kw),
        "GRU_reset_after": lambda: keras.layers.GRU(H, **kw),
        "GRU_reset_before": lambda: keras.layers.GRU(H, reset_after=False, **kw),
        "SimpleRNN_relu": lambda: keras.layers.SimpleRNN(H, activation="relu", **kw),
        "Bidirectional_LSTM_sum": lambda: keras.layers.Bidirectional(keras.layers.LSTM(H, **kw), merge_mode="sum"),
        "Bidirectional_GRU": lambda: keras.layers.Bidirectional(keras.layers.GRU(H, **kw)),
    }


@pytest.mark.parametrize("name", ["LSTM", "GRU_reset_after", "GRU_reset_before", "SimpleRNN_relu",
                                  "Bidirectional_LSTM_sum", "Bidirectional_GRU"])
def test_keras_masked_batch(keras, batch, name):
    xs, _ = batch
    layer = keras_layers(keras)[name]()
    mask = np.arange(T)[None, :] < LENGTHS[:, None]
    out = layer(xs, mask=mask)
    ys_k, states = np.asarray(out[0]), [np.asarray(s) for s in out[1:]]
    model, params = interop.from_keras(layer)
    carry, ys = run(model, params, xs)
    np.testing.assert_allclose(ys, valid(ys_k, 1), **TOL)
    directions = [carry.fwd, carry.bwd] if isinstance(carry, rj.BiCarry) else [carry]
    mine = [s for c in directions for s in ((c.h, c.c) if isinstance(c, rj.LSTMState) else (c,))]
    for a, b in zip(mine, states, strict=True):
        np.testing.assert_allclose(a, b, **TOL)
    fresh = keras_layers(keras)[name]()
    fresh.build(xs.shape)
    interop.to_keras(params, fresh)
    for a, b in zip(fresh.get_weights(), layer.get_weights(), strict=True):
        np.testing.assert_array_equal(a, b)
    # a weights list given separately (e.g. saved earlier) gives the same params
    assert_trees_equal(interop.from_keras(fresh, layer.get_weights())[1], params)


def test_keras_bad_input(keras):
    with pytest.raises(ValueError, match="layer: not built yet"):
        interop.from_keras(keras.layers.LSTM(H))
    for kw, option in ((dict(dropout=0.2), "dropout"), (dict(go_backwards=True), "go_backwards"),
                       (dict(recurrent_activation="hard_sigmoid"), "recurrent_activation")):
        layer = keras.layers.LSTM(H, **kw)
        layer.build((None, T, IN))
        with pytest.raises(ValueError, match=f"^{option}: "):
            interop.from_keras(layer)
    layer = keras.layers.Bidirectional(keras.layers.GRU(H), merge_mode=None)
    layer.build((None, T, IN))
    with pytest.raises(ValueError, match="merge_mode: expected one of"):
        interop.from_keras(layer)
    layer = keras.layers.GRU(H, reset_after=False)
    layer.build((None, T, IN))
    _, params = interop.from_keras(layer)
    with pytest.raises(ValueError, match=r"params.b_hh\[8:\]: keras GRU\(reset_after=False\) has no bias"):
        interop.to_keras(params._replace(b_hh=params.b_hh + 1.0), layer)
    with pytest.raises(ValueError, match=r"weights: expected 3 arrays for layer"):
        interop.from_keras(layer, layer.get_weights()[:2])
    no_bias = keras.layers.LSTM(H, use_bias=False)
    no_bias.build((None, T, IN))
    _, params = interop.from_keras(no_bias)
    assert not np.any(np.asarray(params.b))
    with pytest.raises(ValueError, match=r"params.b: the layer has use_bias=False, so it must be zero"):
        interop.to_keras(params._replace(b=params.b + 1.0), no_bias)
