"""Shared fixtures: a fixed key and the table of built-in cells with their NumPy references."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import rnnjax as rj
from tests import reference as ref

# tests/_*.py are scripts the tests run in subprocesses (some act at import): not test modules
collect_ignore_glob = ["_*.py"]

# The second tier (``pytest -m slow``; the README's first test command runs ``-m "not slow"``):
# whole files that build the documentation, start processes, kill and resume runs, or train the
# experiments' and benchmarks' smoke runs. Other slow tests carry ``@pytest.mark.slow``.
SLOW_FILES = {"test_docs.py", "test_data_safety.py", "test_multiprocess.py", "test_distributed.py"}
SLOW_PREFIXES = ("test_exp_", "test_bench_")


def pytest_collection_modifyitems(config, items):
    for item in items:
        name = item.path.name
        if name in SLOW_FILES or name.startswith(SLOW_PREFIXES):
            item.add_marker(pytest.mark.slow)

# name -> (factory, step, NumPy reference, carry is LSTMState)
CELLS = {
    "elman": (rj.elman, rj.elman_step, ref.elman, False),
    "lstm": (rj.lstm, rj.lstm_step, ref.lstm, True),
    "peephole_lstm": (rj.peephole_lstm, rj.peephole_lstm_step, ref.peephole_lstm, True),
    "cifg_lstm": (rj.cifg_lstm, rj.cifg_lstm_step, ref.cifg_lstm, True),
    "gru": (rj.gru, rj.gru_step, ref.gru, False),
    "gru_reset_before": (rj.gru_reset_before, rj.gru_reset_before_step, ref.gru_reset_before, False),
}


@pytest.fixture
def key():
    return jax.random.key(42)


def random_params(cell, key, scale=0.5):
    """Params with every field (biases, peepholes too) drawn at random, so no term is zero."""
    params = cell.init(key)
    leaves, tree = jax.tree_util.tree_flatten(params)
    keys = jax.random.split(jax.random.fold_in(key, 1), len(leaves))
    return jax.tree_util.tree_unflatten(
        tree, [scale * jax.random.normal(k, l.shape, l.dtype) for k, l in zip(keys, leaves)]
    )


def random_carry(cell, key, batch):
    carry = cell.initial_carry(batch)
    leaves, tree = jax.tree_util.tree_flatten(carry)
    keys = jax.random.split(key, len(leaves))
    return jax.tree_util.tree_unflatten(
        tree, [jax.random.normal(k, l.shape, l.dtype) for k, l in zip(keys, leaves)]
    )


def to_np(tree):
    return jax.tree_util.tree_map(lambda a: np.asarray(a, np.float64), tree)


def params_dict(params):
    return {k: np.asarray(v, np.float64) for k, v in params._asdict().items()}


def assert_trees_close(a, b, atol=1e-5, rtol=1e-5):
    la, ta = jax.tree_util.tree_flatten(a)
    lb, tb = jax.tree_util.tree_flatten(b)
    assert len(la) == len(lb), (ta, tb)
    for x, y in zip(la, lb):
        np.testing.assert_allclose(np.asarray(x, np.float64), np.asarray(y, np.float64), atol=atol, rtol=rtol)


__all__ = ["CELLS", "random_params", "random_carry", "to_np", "params_dict", "assert_trees_close", "jnp"]
