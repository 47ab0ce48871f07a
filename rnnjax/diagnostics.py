"""Gradient-flow diagnostics: how much gradient reaches each time step.

For a recurrence ``h_t = f(h_{t-1}, x_t)`` and a loss ``L``, :func:`gradient_flow` gives
``‖∂L/∂h‖`` and :func:`state_jacobian_norms` ``‖∂h_final/∂h‖_F`` for the carry ``h`` at every
time step — the
picture of vanishing (norms falling geometrically as ``t`` moves away from the loss) and
exploding (rising) gradients (Bengio et al. 1994; Pascanu et al. 2013). Both work for any step
function and loss; :func:`plot_gradient_flow` draws them on a log scale.

Entry ``t`` is about the carry *entering* step ``t`` — the state ``h_{t-1}`` that meets
``xs[t]``, with ``h_{-1}`` the initial carry — taken whole (for an LSTM both ``h`` and ``c``).
This is well defined for any cell, whose output ``y_t`` is computed from ``h_{t-1}`` and
``x_t``: the loss on ``y_t`` is included at entry ``t``. The derivatives are total (every path
through later steps counts). They are computed by adding a zero perturbation ``ε_t`` to the
carry entering each step and differentiating with respect to it, so one backward pass gives
all ``T`` gradients.
"""

from __future__ import annotations

import inspect
import math
import os
import warnings
from collections.abc import Callable, Mapping
from functools import partial
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
from jax import lax

from rnnjax._checks import check_array, check_lengths, shape_str, takes_positional
from rnnjax.scan import scan

Array = jax.Array

__all__ = ["gradient_flow", "plot_gradient_flow", "state_jacobian_norms"]


def _prepare(step, params, carry, xs, lengths):
    """Validate; return (batch, lengths) and check carry leaves start with the batch axes."""
    if not callable(step):
        raise TypeError(f"step: expected a function step(params, carry, x), got {type(step).__name__}")
    check_array("xs", xs)
    if xs.ndim < 2 or xs.shape[0] == 0:
        raise ValueError(f"xs: expected shape [T, *batch, I] with T >= 1, got {tuple(xs.shape)}")
    batch = tuple(xs.shape[1:-1])
    if lengths is not None:
        lengths = check_lengths(lengths, batch, xs.shape[0])
    jax.eval_shape(partial(scan, step, lengths=lengths), params, carry, xs)  # scan's own checks
    for path, leaf in jax.tree_util.tree_flatten_with_path(carry)[0]:
        if tuple(jnp.shape(leaf)[: len(batch)]) != batch:
            raise ValueError(
                f"carry{jax.tree_util.keystr(path)}: expected a leaf starting with the batch axes "
                f"{shape_str(batch)} of xs, got shape {tuple(jnp.shape(leaf))}"
            )
    return batch, lengths


def _perturbed_scan(step, params, carry, xs, eps, lengths, truncate=None):
    """Scan with ``eps[t]`` added to the carry entering step ``t`` (valid steps only).

    Padding is handled as in ``rnnjax.scan`` (carry held, outputs zero). With ``truncate=k`` the
    carry entering steps k, 2k, ... passes through ``stop_gradient`` (before ``eps`` is added),
    as in ``rnnjax.truncated_scan``.
    """
    num_steps, nb = xs.shape[0], xs.ndim - 2

    def body(c, inp):
        x, e, t = inp
        if truncate is not None:
            cut = (t % truncate == 0) & (t > 0)
            c = jax.tree_util.tree_map(lambda a: jnp.where(cut, lax.stop_gradient(a), a), c)
        if lengths is None:
            return step(params, jax.tree_util.tree_map(jnp.add, c, e), x)
        valid = t < lengths  # [*batch]

        def pick(n, o):
            return jnp.where(valid.reshape(valid.shape + (1,) * (jnp.ndim(n) - nb)), n, o)

        # The perturbation enters only where a step happens, so padding positions get no gradient.
        c_in = jax.tree_util.tree_map(lambda a, b: a + pick(b, jnp.zeros_like(b)), c, e)
        new_c, y = step(params, c_in, x)
        zeros = jax.tree_util.tree_map(jnp.zeros_like, y)
        return jax.tree_util.tree_map(pick, new_c, c), jax.tree_util.tree_map(pick, y, zeros)

    return lax.scan(body, carry, (xs, eps, jnp.arange(num_steps)))


def _zeros_over_time(carry, num_steps):
    return jax.tree_util.tree_map(lambda c: jnp.zeros((num_steps,) + jnp.shape(c), jnp.result_type(c)), carry)


def _norm_per_sequence(tree, num_axes: int) -> Array:
    """sqrt of the sum of squares over each leaf's axes after the first ``num_axes``."""
    total = 0.0
    for leaf in jax.tree_util.tree_leaves(tree):
        sq = jnp.square(leaf.astype(jnp.float32))
        total = total + jnp.sum(sq, axis=tuple(range(num_axes, leaf.ndim)))
    return jnp.sqrt(total)


def gradient_flow(
    step: Callable,
    params: Any,
    carry: Any,
    xs: Array,
    loss_fn: Callable[[Any, Any], Array],
    *,
    lengths: Array | None = None,
    truncate: int | None = None,
) -> Array:
    """``‖∂L/∂h_{t-1}‖`` for every time step ``t`` and sequence ``b``: ``[T, *batch]``.

    ``L = loss_fn(ys, final_carry)`` with ``(final_carry, ys) = rnnjax.scan(step, params, carry,
    xs, lengths=lengths)``; ``h_{t-1}`` is the carry entering step ``t`` (all its leaves, e.g.
    ``h`` and ``c``; ``h_{-1}`` is ``carry``), and the norm is over sequence ``b``'s state alone.
    Positions past a sequence's length (no step happens there) are 0.

    Args:
      step: ``step(params, carry, x) -> (carry, y)``, any cell.
      params, carry, xs, lengths: as for ``rnnjax.scan``; carry leaves ``[*batch, ...]``.
      loss_fn: ``loss_fn(ys, final_carry) -> scalar``.
      truncate: None (full backpropagation through time) or ``k >= 1``: the gradient as
        ``rnnjax.truncated_scan(..., truncate=k)`` computes it, cut before steps k, 2k, ...; the
        norm entering a chunk's first step then counts only the loss terms of that chunk.

    >>> cell = elman(input_size=2, hidden_size=8)
    >>> params = cell.init(jax.random.key(0))
    >>> params = params._replace(w_hh=0.5 * params.w_hh)   # a contraction: gradients vanish
    >>> g = gradient_flow(cell.step, params, cell.initial_carry((1,)), jnp.ones((30, 1, 2)), lambda ys, c: jnp.sum(ys[-1]))
    >>> g.shape, bool(g[0, 0] < 1e-6 * g[-1, 0])
    ((30, 1), True)
    """
    if not callable(loss_fn):
        raise TypeError(f"loss_fn: expected a function loss_fn(ys, final_carry), got {type(loss_fn).__name__}")
    if takes_positional(loss_fn, 2) is False:
        raise TypeError(
            f"loss_fn: expected a function loss_fn(ys, final_carry), got one with signature {inspect.signature(loss_fn)}"
        )
    if truncate is not None and (
        not isinstance(truncate, (int, np.integer)) or isinstance(truncate, bool) or truncate < 1
    ):
        raise ValueError(f"truncate: expected None or an int >= 1, got {truncate!r}")
    batch, lengths = _prepare(step, params, carry, xs, lengths)

    def objective(eps):
        final, ys = _perturbed_scan(step, params, carry, xs, eps, lengths, truncate)
        loss = loss_fn(ys, final)
        if jnp.shape(loss) != ():
            raise TypeError(f"loss_fn: expected a scalar loss, got shape {jnp.shape(loss)}")
        return loss

    grads = jax.grad(objective)(_zeros_over_time(carry, xs.shape[0]))
    return _norm_per_sequence(grads, 1 + len(batch))


def state_jacobian_norms(
    step: Callable,
    params: Any,
    carry: Any,
    xs: Array,
    *,
    lengths: Array | None = None,
) -> Array:
    """``‖∂h_final/∂h_{t-1}‖_F`` (Frobenius) for every step ``t`` and sequence: ``[T, *batch]``.

    ``h_final`` is the final carry (each sequence's carry after its last valid step) and
    ``h_{t-1}`` the carry entering step ``t``, both flattened over all carry leaves (size ``d``).
    For a linear recurrence ``h_t = h_{t-1} W + x_t U`` over ``L`` steps it is
    ``‖W^(L-t)‖_F``. Positions past a sequence's length are 0. Costs ``d`` backward passes
    (batched).

    Args:
      step, params, carry, xs, lengths: as for ``rnnjax.scan``; carry leaves ``[*batch, ...]``.

    >>> cell = elman(input_size=2, hidden_size=4)
    >>> params = cell.init(jax.random.key(0))
    >>> params = params._replace(w_hh=3.0 * params.w_hh)   # large recurrent weights
    >>> j = state_jacobian_norms(cell.step, params, cell.initial_carry(), 0.01 * jnp.ones((6, 2)))
    >>> j.shape, bool(j[0] > 10 * j[-1])   # near-linear regime: ‖(3Q)^6‖ ≫ ‖3Q‖, exploding
    ((6,), True)
    """
    batch, lengths = _prepare(step, params, carry, xs, lengths)
    nb = len(batch)
    leaves, treedef = jax.tree_util.tree_flatten(carry)
    sizes = [math.prod(jnp.shape(leaf)[nb:]) for leaf in leaves]
    d = sum(sizes)

    def final_carry(eps):
        return _perturbed_scan(step, params, carry, xs, eps, lengths)[0]

    _, vjp = jax.vjp(final_carry, _zeros_over_time(carry, xs.shape[0]))

    def squared_row(i):
        """Σ_j (∂h_final[i]/∂h_{t-1}[j])², per t and sequence: [T, *batch]."""
        onehot = jax.nn.one_hot(i, d, dtype=jnp.float32)  # [d]
        pieces = jnp.split(onehot, np.cumsum(sizes)[:-1]) if len(sizes) > 1 else [onehot]
        cot = [
            jnp.broadcast_to(p.reshape(jnp.shape(leaf)[nb:]), jnp.shape(leaf)).astype(jnp.result_type(leaf))
            for p, leaf in zip(pieces, leaves, strict=True)
        ]
        (g,) = vjp(jax.tree_util.tree_unflatten(treedef, cot))
        return jnp.square(_norm_per_sequence(g, 1 + nb))

    rows = lax.map(squared_row, jnp.arange(d), batch_size=min(d, 32))  # [d, T, *batch]
    return jnp.sqrt(jnp.sum(rows, axis=0))


def plot_gradient_flow(
    norms: Array | Mapping[str, Array],
    path: str | os.PathLike,
    *,
    title: str | None = None,
    ylabel: str = "‖∂L/∂h_t‖",
) -> str:
    """Plot norms over time on a log scale and save a PNG; returns the path.

    ``norms`` is a ``[T, *batch]`` array (from :func:`gradient_flow` or
    :func:`state_jacobian_norms`) or ``{label: array}`` to compare runs or cells. Each curve is
    the median over the batch, with the batch's min–max range shaded; zeros (padding, or
    gradients that vanished exactly) cannot be shown on a log scale and are left out.

    >>> import tempfile, os
    >>> p = plot_gradient_flow({"a": 0.9 ** jnp.arange(20.0)[::-1, None]}, os.path.join(tempfile.mkdtemp(), "g.png"))
    >>> os.path.getsize(p) > 0
    True
    """
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    curves = dict(norms) if isinstance(norms, Mapping) else {"": norms}
    if not curves:
        raise TypeError("norms: expected an array [T, *batch] or a non-empty mapping of labels to arrays")
    path = os.fspath(path)
    if not path.lower().endswith(".png"):
        raise ValueError(f"path: expected a file ending in .png, got {path!r}")

    fig = Figure(figsize=(6.4, 4.0), dpi=100, layout="constrained")
    FigureCanvasAgg(fig)
    ax = fig.add_subplot()
    for i, (label, arr) in enumerate(curves.items()):
        a = np.asarray(arr, dtype=np.float64)
        if a.ndim < 1:
            raise ValueError(f"norms{'[' + repr(label) + ']' if label else ''}: expected shape [T, *batch], got {a.shape}")
        a = a.reshape(a.shape[0], -1)
        a = np.where(a > 0, a, np.nan)  # log scale: zeros left out
        t = np.arange(a.shape[0])
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", RuntimeWarning)  # a time step where all are zero
            med, lo, hi = np.nanmedian(a, 1), np.nanmin(a, 1), np.nanmax(a, 1)
        color = f"C{i % 10}"
        ax.plot(t, med, color=color, label=label or None)
        if a.shape[1] > 1:
            ax.fill_between(t, lo, hi, color=color, alpha=0.2, linewidth=0)
    ax.set_yscale("log")
    ax.set_xlabel("time step t")
    ax.set_ylabel(ylabel)
    if title:
        ax.set_title(title)
    if any(curves):
        ax.legend()
    ax.grid(True, which="both", alpha=0.3)
    os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
    fig.savefig(path)
    return path

