"""Models export with ``jax.export`` for a symbolic time length and batch size, survive
serialisation, and the deserialised function equals the jitted model at other shapes."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from jax import export

import rnnjax as rj

pytest.importorskip("flatbuffers", reason="needs the export extra: pip install -e '.[export]'")

I, H, V = 3, 4, 7
SHAPES = ((5, 2), (9, 3))  # (T, B) pairs the exported function is called at


def _round_trip(fn, *specs):
    exported = export.export(jax.jit(fn))(*specs)
    return export.deserialize(exported.serialize())


def _close(a, b):
    for x, y in zip(jax.tree_util.tree_leaves(a), jax.tree_util.tree_leaves(b), strict=True):
        np.testing.assert_allclose(np.asarray(x), np.asarray(y), atol=1e-6)


def _data(T, B, int_inputs=False):
    key = jax.random.key(T * 10 + B)
    xs = jax.random.randint(key, (T, B), 0, V) if int_inputs else jax.random.normal(key, (T, B, I))
    return xs, jnp.arange(T, T - B, -1, dtype=jnp.int32)  # lengths T, T-1, ...


SEQ_MODELS = {
    "rnn": lambda: rj.rnn(rj.lstm(I, H)),
    "deep": lambda: rj.deep(rj.gru(I, H), rj.elman(H, H), dropout=0.5),
    "bidirectional": lambda: rj.bidirectional(rj.lstm(I, H), rj.deep(rj.gru(I, H))),
}


@pytest.mark.parametrize("name", sorted(SEQ_MODELS))
def test_seq_models_export_with_symbolic_time_and_batch(name):
    model = SEQ_MODELS[name]()
    params = model.init(jax.random.key(0))

    def apply(params, xs, lengths):
        return model.apply(params, xs, lengths=lengths)

    t, b = export.symbolic_shape("t, b")
    restored = _round_trip(apply, params, jax.ShapeDtypeStruct((t, b, I), jnp.float32),
                           jax.ShapeDtypeStruct((b,), jnp.int32))
    for T, B in SHAPES:
        xs, lengths = _data(T, B)
        _close(restored.call(params, xs, lengths), jax.jit(apply)(params, xs, lengths))


def test_initial_carry_takes_symbolic_dims():
    (b,) = export.symbolic_shape("b")
    carry = jax.eval_shape(lambda: rj.lstm(I, H).initial_carry((b, 2)))
    assert carry.h.shape == (b, 2, H)


def test_seq2seq_encode_and_decoder_step_export():
    model = rj.seq2seq(rj.bidirectional(rj.gru(I, H), rj.gru(I, H)), rj.gru(I + 2 * H, 2 * H), src_vocab=V,
                       tgt_vocab=V, embed_size=I, attention=rj.dot_attention())
    params = model.init(jax.random.key(1))
    s, b = export.symbolic_shape("s, b")

    def encode(params, src, lengths):
        return model.encode(params, src, lengths=lengths)

    enc = _round_trip(encode, params, jax.ShapeDtypeStruct((s, b), jnp.int32), jax.ShapeDtypeStruct((b,), jnp.int32))
    state_spec = jax.eval_shape(encode, params, jax.ShapeDtypeStruct((s, b), jnp.int32),
                                jax.ShapeDtypeStruct((b,), jnp.int32))
    step = _round_trip(model.step, params, state_spec, jax.ShapeDtypeStruct((b,), jnp.int32))
    for S, B in SHAPES:
        src, lengths = _data(S, B, int_inputs=True)
        state = enc.call(params, src, lengths)
        _close(state, jax.jit(encode)(params, src, lengths))
        token = jnp.ones((B,), jnp.int32)
        _close(step.call(params, state, token), jax.jit(model.step)(params, state, token))


def test_language_model_exports():
    lm = rj.language_model(rj.stack(rj.lstm(I, H), rj.gru(H, H)), V, embed_size=I)
    params = lm.init(jax.random.key(2))
    t, b = export.symbolic_shape("t, b")

    def apply(params, tokens, lengths):
        return lm.apply(params, tokens, lengths=lengths)

    restored = _round_trip(apply, params, jax.ShapeDtypeStruct((t, b), jnp.int32), jax.ShapeDtypeStruct((b,), jnp.int32))
    carry_spec = jax.eval_shape(lambda: lm.initial_carry((b,)))
    step = _round_trip(lm.step, params, carry_spec, jax.ShapeDtypeStruct((b,), jnp.int32))
    for T, B in SHAPES:
        tokens, lengths = _data(T, B, int_inputs=True)
        _close(restored.call(params, tokens, lengths), jax.jit(apply)(params, tokens, lengths))
        carry, token = lm.initial_carry((B,)), jnp.zeros((B,), jnp.int32)
        _close(step.call(params, carry, token), jax.jit(lm.step)(params, carry, token))
