"""Training with optax: a training state, the default optimiser recipe, one jitted train step.

The recipe is ``optax.chain(optax.clip_by_global_norm(1.0), optax.adam(lr))``
(:func:`make_optimizer`). :func:`make_train_step` turns a loss and an optax transformation into
one jitted step ``(state, batch) -> (state, metrics)`` that

- reports the global gradient norm *before* clipping every step (``metrics["grad_norm"]``);
- skips steps whose loss, gradients, new params or new optimiser state hold NaN/Inf: params
  and optimiser state stay as they were, ``state.skipped`` counts them and
  ``metrics["skipped"]`` flags them;
- donates the old state's buffers, and traces once (shapes and dtypes fixed across steps).

:func:`fit` is a small loop around such a step with checkpoints, resume, a progress bar and a
metrics log; the scans for long sequences (truncated BPTT, rematerialisation) are
:func:`truncated_scan` and :func:`remat_scan`.
"""

from __future__ import annotations

import inspect
import math
import numbers
import warnings
from collections.abc import Callable
from typing import Any, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
import optax

from rnnjax._checks import takes_positional
from rnnjax.records import MetricsLog, progress_bar

Array = jax.Array


class TrainState(NamedTuple):
    """Everything a training run needs to continue exactly; a pytree Orbax can save as is.

    Attributes:
      params: the model parameters (any pytree of arrays).
      opt_state: the optax state.
      step: ``[]`` int32, steps taken so far (skipped ones included); the data position.
      key: PRNG key; step ``n`` receives ``jax.random.fold_in(key, n)``, so resuming at step
        ``n`` gives the same randomness.
      skipped: ``[]`` int32, steps skipped because the loss, a gradient or the update was not
        finite.
      carry: recurrent carry passed from one step to the next (truncated BPTT over a stream),
        or None.
    """

    params: Any
    opt_state: Any
    step: Array
    key: Array
    skipped: Array
    carry: Any = None


def init_train_state(params: Any, optimizer: optax.GradientTransformation, key: Array, *, carry: Any = None) -> TrainState:
    """A fresh :class:`TrainState` at step 0.

    Args:
      params: model parameters.
      optimizer: the optax transformation the train step will use.
      key: a PRNG key (``jax.random.key(seed)``).
      carry: initial carry for steps that pass one along (``make_train_step(..., carry=True)``).

    The state holds copies of ``params``, ``carry`` and ``key``: the train step donates the
    state's buffers, and the arrays passed in here stay usable. Params holding NaN or Inf are a
    ValueError naming the leaves (nothing could be learnt from them: every step would be skipped).

    >>> state = init_train_state({"w": jnp.ones(3)}, make_optimizer(1e-3), jax.random.key(0))
    >>> int(state.step), int(state.skipped)
    (0, 0)
    """
    _check_optimizer(optimizer)
    if not hasattr(key, "dtype") or not (
        jax.dtypes.issubdtype(key.dtype, jax.dtypes.prng_key) or key.dtype == jnp.uint32
    ):
        raise TypeError(f"key: expected a PRNG key such as jax.random.key(0), got {key!r}")
    bad = _nonfinite_leaves(params, "params")
    if bad:
        raise ValueError(
            f"params: expected finite initial values, got NaN or Inf in {', '.join(bad[:4])}"
            f"{f' and {len(bad) - 4} more' if len(bad) > 4 else ''}; check the initialiser or the loaded weights"
        )
    # Copies, so that donating the state to the train step never deletes the caller's arrays.
    params, carry, key = jax.tree_util.tree_map(jnp.copy, (params, carry, key))
    return TrainState(
        params=params,
        opt_state=optimizer.init(params),
        step=jnp.zeros((), jnp.int32),
        key=key,
        skipped=jnp.zeros((), jnp.int32),
        carry=carry,
    )


_CLIPS = ("global_norm", "value", None)


def make_optimizer(
    learning_rate: float | optax.Schedule,
    *,
    clip: str | None = "global_norm",
    threshold: float = 1.0,
    optimizer: Callable[..., optax.GradientTransformation] = optax.adam,
) -> optax.GradientTransformation:
    """The default recipe: clip the gradients, then ``optimizer(learning_rate)``.

    - ``clip="global_norm"``: ``optax.chain(optax.clip_by_global_norm(threshold), optimizer(lr))``
      — rescale all gradients together when their global norm exceeds ``threshold``;
    - ``clip="value"``: ``optax.chain(optax.clip(threshold), optimizer(lr))`` — clip each
      gradient entry to ``[-threshold, threshold]``;
    - ``clip=None``: ``optimizer(lr)``.

    Args:
      learning_rate: a positive number or an optax schedule (``step -> rate``); a number must
        be finite and non-zero in float32 unless ``jax_enable_x64`` is on. (A schedule that
        returns Inf makes the params non-finite: such steps are skipped by the train step.)
      clip: ``"global_norm"``, ``"value"`` or None.
      threshold: the clipping threshold (> 0).
      optimizer: an optax optimiser factory taking the learning rate (``optax.adam``,
        ``optax.sgd``, ...).

    >>> opt = make_optimizer(1e-3)   # optax.chain(optax.clip_by_global_norm(1.0), optax.adam(1e-3))
    >>> updates, _ = opt.update({"w": jnp.full(4, 100.0)}, opt.init({"w": jnp.zeros(4)}))
    >>> updates["w"].shape
    (4,)
    """
    _check_learning_rate(learning_rate)
    if clip not in _CLIPS:
        raise ValueError(f"clip: expected one of {_CLIPS}, got {clip!r}")
    if not isinstance(threshold, (int, float)) or isinstance(threshold, bool) or not threshold > 0:
        raise ValueError(f"threshold: expected a positive number, got {threshold!r}")
    if not callable(optimizer):
        raise TypeError(f"optimizer: expected an optax optimiser factory such as optax.adam, got {optimizer!r}")
    base = optimizer(learning_rate)
    _check_optimizer(base, name="optimizer(learning_rate)")
    if clip == "global_norm":
        return optax.chain(optax.clip_by_global_norm(threshold), base)
    if clip == "value":
        return optax.chain(optax.clip(threshold), base)
    return base


def _nonfinite_leaves(tree: Any, name: str) -> list[str]:
    """Paths (``name['w']``) of the floating-point leaves holding NaN/Inf (concrete ones only)."""
    bad = []
    for path, x in jax.tree_util.tree_leaves_with_path(tree):
        if not hasattr(x, "dtype") or not jnp.issubdtype(x.dtype, jnp.inexact) or isinstance(x, jax.core.Tracer):
            continue
        if isinstance(x, jax.Array) and not x.is_fully_addressable:
            finite = bool(jnp.all(jnp.isfinite(x)))  # on the devices (every process calls this)
        else:
            finite = bool(np.isfinite(np.asarray(x)).all())  # on the host: no compile per shape
        if not finite:
            bad.append(name + jax.tree_util.keystr(path))
    return bad


def _check_learning_rate(learning_rate: Any) -> None:
    if callable(learning_rate):
        return  # an optax schedule: step -> learning rate
    value = learning_rate
    if hasattr(value, "dtype") and getattr(value, "shape", None) == () and np.issubdtype(value.dtype, np.number):
        try:
            value = value.item()  # a scalar array (not while tracing)
        except Exception:
            return
    if isinstance(value, bool) or not isinstance(value, numbers.Real):
        raise TypeError(
            f"learning_rate: expected a positive number or an optax schedule (step -> rate), got {learning_rate!r}"
        )
    if not (math.isfinite(value) and value > 0):
        raise ValueError(f"learning_rate: expected a positive finite number, got {learning_rate!r}")
    if not jax.config.jax_enable_x64:  # params are float32 at most: the rate is applied in it
        info = np.finfo(np.float32)
        if not float(info.smallest_subnormal) <= value <= float(info.max):
            raise ValueError(
                f"learning_rate: expected a positive number that is finite and non-zero in float32, the "
                f"params' dtype unless jax_enable_x64 is on (from {info.smallest_subnormal:.3g} to "
                f"{info.max:.4g}), got {learning_rate!r}"
            )


def _check_optimizer(optimizer: Any, name: str = "optimizer") -> None:
    if not (callable(getattr(optimizer, "init", None)) and callable(getattr(optimizer, "update", None))):
        raise TypeError(
            f"{name}: expected an optax.GradientTransformation (with init and update), "
            f"got {type(optimizer).__name__}"
        )


def _all_finite(tree: Any) -> Array:
    leaves = [jnp.all(jnp.isfinite(x)) for x in jax.tree_util.tree_leaves(tree)]
    return jnp.all(jnp.stack(leaves)) if leaves else jnp.array(True)


def _select(ok: Array, new: Any, old: Any) -> Any:
    return jax.tree_util.tree_map(lambda n, o: jnp.where(ok, n, o), new, old)


def _describe(out: Any) -> str:
    """A user-facing name for a loss function's output (never a tracer's class name)."""
    if isinstance(out, tuple):
        return f"a tuple of {len(out)}"
    shape = getattr(out, "shape", None)
    if shape == ():
        return "a scalar"
    if shape is not None:
        return f"an array of shape {tuple(shape)}"
    return type(out).__name__


def make_train_step(
    loss_fn: Callable,
    optimizer: optax.GradientTransformation,
    *,
    has_aux: bool = False,
    carry: bool = False,
    skip_nonfinite: bool = True,
    donate: bool = True,
) -> Callable[[TrainState, Any], tuple[TrainState, dict]]:
    """One jitted training step ``train_step(state, batch) -> (state, metrics)``.

    The loss is called with the step's own key, ``jax.random.fold_in(state.key, state.step)``:

    - ``loss_fn(params, batch, key) -> loss`` (or ``(loss, aux)`` with ``has_aux``);
    - with ``carry=True``: ``loss_fn(params, carry, batch, key) -> (loss, carry)`` (or
      ``(loss, (carry, aux))``); the returned carry is stored, without gradient, in
      ``state.carry`` for the next step — truncated BPTT over a stream, one update per chunk.

    ``aux`` must be a dict of arrays; its entries join ``metrics``, which always holds
    ``loss``, ``grad_norm`` (global norm of the gradients before any clipping), ``skipped``
    (this step was not applied) and ``skipped_total``.

    Non-finite guard (``skip_nonfinite``): when the loss, any gradient, any of the updated params
    or any leaf of the updated optimiser state is NaN/Inf (e.g. a learning-rate schedule that
    returned Inf, or an out-of-range label, which the losses turn into a NaN loss), params and
    optimiser state keep their old values (selected with ``jnp.where`` inside the step) and
    ``state.skipped`` grows by one; ``state.step`` still advances, so the next step sees the next
    batch. A carry that became non-finite is reset to zeros. (``optax.apply_if_finite`` is not
    used: it looks only at the gradients, not the loss, and accepts non-finite updates after
    ``max_consecutive_errors`` of them.)

    The step is ``jax.jit``-ed once, with the incoming state donated (``donate``): do not use a
    state after passing it in. It retraces only if shapes or dtypes change.

    Args:
      loss_fn: the loss, as above; a pure function of arrays.
      optimizer: an optax transformation (e.g. :func:`make_optimizer`).
      has_aux: ``loss_fn`` also returns a dict of metrics.
      carry: ``loss_fn`` takes and returns a carry kept in ``state.carry``.
      skip_nonfinite: guard against NaN/Inf steps (on by default).
      donate: donate the incoming state's buffers to the outputs.

    >>> opt = make_optimizer(0.1)
    >>> step = make_train_step(lambda p, batch, key: jnp.sum((p - batch) ** 2), opt)
    >>> state, metrics = step(init_train_state(jnp.zeros(2), opt, jax.random.key(0)), jnp.ones(2))
    >>> sorted(metrics), int(state.step)
    (['grad_norm', 'loss', 'skipped', 'skipped_total'], 1)
    """
    if not callable(loss_fn):
        raise TypeError(f"loss_fn: expected a function, got {type(loss_fn).__name__}")
    _check_optimizer(optimizer)
    for name, value in (("has_aux", has_aux), ("carry", carry), ("skip_nonfinite", skip_nonfinite), ("donate", donate)):
        if not isinstance(value, bool):
            raise TypeError(f"{name}: expected a bool, got {value!r}")
    if takes_positional(loss_fn, 4 if carry else 3) is False:
        wanted = "loss_fn(params, carry, batch, key) (carry=True)" if carry else "loss_fn(params, batch, key)"
        raise TypeError(f"loss_fn: expected a function {wanted}, got one with signature {inspect.signature(loss_fn)}")

    def split_output(out):
        """loss_fn's output -> (loss, (new_carry, aux))."""
        expected = "(loss, " + ("(carry, aux))" if carry and has_aux else "carry)" if carry else "aux)")
        if carry or has_aux:
            if not (isinstance(out, tuple) and len(out) == 2):
                raise TypeError(f"loss_fn: expected it to return {expected}, got {_describe(out)}")
            loss, rest = out
            if carry and has_aux:
                if not (isinstance(rest, tuple) and len(rest) == 2):
                    raise TypeError(f"loss_fn: expected it to return {expected}, got (loss, {type(rest).__name__})")
                new_carry, aux = rest
            else:
                new_carry, aux = (rest, {}) if carry else (None, rest)
        else:
            loss, new_carry, aux = out, None, {}
            if isinstance(out, tuple):
                raise TypeError(
                    f"loss_fn: expected a scalar floating-point loss, got {_describe(out)}; for a loss_fn "
                    "that returns (loss, aux) pass has_aux=True to make_train_step"
                )
        if not hasattr(loss, "shape") or loss.shape != () or not jnp.issubdtype(loss.dtype, jnp.floating):
            raise TypeError(f"loss_fn: expected a scalar floating-point loss, got {getattr(loss, 'shape', loss)!r}"
                            f" {getattr(loss, 'dtype', '')}")
        if not isinstance(aux, dict):
            raise TypeError(f"loss_fn: expected aux to be a dict of arrays, got {type(aux).__name__}")
        return loss, (new_carry, aux)

    def train_step(state: TrainState, batch: Any):
        if not isinstance(state, TrainState):
            raise TypeError(f"state: expected a TrainState (see init_train_state), got {type(state).__name__}")
        if carry and state.carry is None:
            raise ValueError("state.carry: make_train_step(carry=True) needs init_train_state(..., carry=initial_carry)")
        if not carry and state.carry is not None:
            raise ValueError("state.carry: the state holds a carry; pass carry=True to make_train_step")
        key = jax.random.fold_in(state.key, state.step)

        def objective(params):
            out = loss_fn(params, state.carry, batch, key) if carry else loss_fn(params, batch, key)
            return split_output(out)

        (loss, (new_carry, aux)), grads = jax.value_and_grad(objective, has_aux=True)(state.params)
        clash = set(aux) & {"loss", "grad_norm", "skipped", "skipped_total"}
        if clash:
            raise ValueError(f"loss_fn: aux keys {sorted(clash)} clash with the step's own metrics")
        grad_norm = optax.tree.norm(grads)
        updates, opt_state = optimizer.update(grads, state.opt_state, state.params)
        params = optax.apply_updates(state.params, updates)
        if skip_nonfinite:
            ok = jnp.isfinite(loss) & _all_finite(grads) & _all_finite(params) & _all_finite(opt_state)
            params = _select(ok, params, state.params)
            opt_state = _select(ok, opt_state, state.opt_state)
        else:
            ok = jnp.array(True)
        if carry:
            new_carry = jax.lax.stop_gradient(new_carry)
            if skip_nonfinite:
                zeros = jax.tree_util.tree_map(jnp.zeros_like, new_carry)
                new_carry = _select(_all_finite(new_carry), new_carry, zeros)
        skipped = state.skipped + (~ok).astype(jnp.int32)
        new_state = TrainState(params, opt_state, state.step + 1, state.key, skipped, new_carry)
        metrics = {"loss": loss, "grad_norm": grad_norm, "skipped": ~ok, "skipped_total": skipped, **aux}
        return new_state, metrics

    return jax.jit(train_step, donate_argnums=(0,) if donate else ())


def fit(
    train_step: Callable[[TrainState, Any], tuple[TrainState, dict]],
    state: TrainState,
    data: Callable[[int], Any],
    num_steps: int,
    *,
    checkpoints: Any = None,
    save_every: int | None = None,
    log: MetricsLog | None = None,
    log_every: int = 1,
    progress: bool | None = None,
    callback: Callable[[int, TrainState, dict], None] | None = None,
) -> TrainState:
    """Run ``train_step`` until ``state.step == num_steps``, resuming from the latest checkpoint.

    The loop, in full::

        take the checkpoint directory's writer lock
        if checkpoints has a checkpoint: state = restore(newest intact); log.truncate(state.step)
        (no checkpoint restored, and log holds rows after state.step: see ``log`` below)
        (params or optimiser state not finite: ValueError)
        for i in range(state.step, num_steps):
            state, metrics = train_step(state, data(i))
            every log_every steps: log.write(i + 1, scalar metrics); show the loss on the bar
            callback(i + 1, state, metrics)
            every save_every steps: checkpoints.save(state)   # only a finite state
        checkpoints.save(state)   # the final state, unless just saved

    Resuming never starts from garbage: a checkpoint that fails verification (files truncated,
    deleted or altered; see :class:`Checkpoints`) or holds NaN/Inf is skipped with a warning
    naming its step, the directory and what failed, moved aside (``<step>.damaged`` or
    ``<step>.nonfinite``) so that the run can save that step again, and the newest intact one
    is restored. A state holding NaN or Inf is never saved: with the train step's guard (the
    default) that cannot happen; without it (``skip_nonfinite=False``) fit raises
    ``FloatingPointError`` at the save, naming the leaves, and the checkpoints already saved
    (all finite) stay.

    ``data(i)`` is the batch of step ``i``. Make it a function of ``i`` alone (e.g.
    :func:`chunk_stream`, or a batch drawn with ``jax.random.fold_in(key, i)``): then the data
    position is the step, the PRNG key is folded with the step, and a run killed at any point
    and resumed ends bitwise equal to an uninterrupted one.

    Args:
      train_step: from :func:`make_train_step`.
      state: the initial state (also the template checkpoints are restored into).
      data: ``data(step) -> batch``.
      num_steps: total number of steps of the run (not the number still to do); at least
        the step of ``state`` or of the restored checkpoint.
      checkpoints: where to save and resume from, or None.
      save_every: save every this many steps (and at the end); None saves only at the end.
      log: a :class:`MetricsLog`; new rows are appended. After a checkpoint is restored, the
        rows after its step (logged by the interrupted run) are dropped first. Without a
        restored checkpoint, a log holding rows after ``state.step`` is dropped back to
        ``state.step`` (with a warning) only when fit logged to it with these ``checkpoints``
        before (a run that stopped before its first checkpoint; fit notes its logs in the
        directory's ``.rnnjax-run.json``); otherwise (another run's log) it is a ValueError,
        and nothing in it is deleted or mixed with the new run's rows.
      log_every: log (and update the bar's postfix) every this many steps; the scalar
        entries of ``metrics`` are logged.
      progress: show a progress bar (None: only when stderr is a terminal).
      callback: ``callback(step, state, metrics)`` after every step (e.g. to evaluate).

    Returns:
      The final state.

    >>> opt = make_optimizer(0.1)
    >>> step = make_train_step(lambda p, batch, key: jnp.sum((p - batch) ** 2), opt)
    >>> state = fit(step, init_train_state(jnp.zeros(2), opt, jax.random.key(0)), lambda i: jnp.ones(2), 50)
    >>> int(state.step), bool(jnp.allclose(state.params, 1.0, atol=0.05))
    (50, True)
    """
    if not callable(train_step):
        raise TypeError(f"train_step: expected a function, got {type(train_step).__name__}")
    if not isinstance(state, TrainState):
        raise TypeError(f"state: expected a TrainState (see init_train_state), got {type(state).__name__}")
    if not callable(data):
        raise TypeError(f"data: expected a function data(step) -> batch, got {type(data).__name__}")
    if takes_positional(data, 1) is False:
        raise TypeError(f"data: expected a function data(step) -> batch, got one with signature {inspect.signature(data)}")
    for name, value, allow_none in (("num_steps", num_steps, False), ("save_every", save_every, True), ("log_every", log_every, False)):
        if value is None and allow_none:
            continue
        if not isinstance(value, int) or isinstance(value, bool) or value < (0 if name == "num_steps" else 1):
            kind = "a non-negative int" if name == "num_steps" else "a positive int" + (" or None" if allow_none else "")
            raise ValueError(f"{name}: expected {kind}, got {value!r}")
    from rnnjax.checkpoint import (
        Checkpoints,  # Orbax loads when checkpoints are used, not with rnnjax
    )

    if checkpoints is not None and not isinstance(checkpoints, Checkpoints):
        raise TypeError(f"checkpoints: expected rnnjax.Checkpoints, got {type(checkpoints).__name__}")
    if log is not None and not isinstance(log, MetricsLog):
        raise TypeError(f"log: expected rnnjax.MetricsLog, got {type(log).__name__}")

    resumed = None if checkpoints is None else checkpoints._resume(state)  # takes the writer lock
    restored = resumed is not None
    if restored:
        state, _ = resumed
    start = int(state.step)
    if num_steps < start:
        where = f"the checkpoint restored from {checkpoints.directory}" if restored else "the given state"
        raise ValueError(f"num_steps: expected at least {start}, the step of {where}, got {num_steps}")
    bad = _nonfinite_leaves(state.params, "state.params") + _nonfinite_leaves(state.opt_state, "state.opt_state")
    if bad:
        raise ValueError(
            f"state: expected finite params and optimiser state at step {start}, got NaN or Inf in "
            f"{', '.join(bad[:4])}{f' and {len(bad) - 4} more' if len(bad) > 4 else ''}"
        )
    if log is not None:
        if restored:
            log.truncate(start)  # rows an interrupted run logged after its last checkpoint
        elif log.rows and log.rows[-1]["step"] > start:
            if checkpoints is not None and log.path is not None and checkpoints._wrote_log(log.path):
                warnings.warn(
                    f"fit: dropped the rows after step {start} of {log.path}: the run that logged them "
                    f"stopped before its first checkpoint in {checkpoints.directory}",
                    RuntimeWarning,
                    stacklevel=2,
                )
                log.truncate(start)
            else:
                hint = (
                    f"they are not from a run of fit that checkpointed into {checkpoints.directory}; "
                    "use a new file, or remove this one to start afresh"
                    if checkpoints is not None
                    else "use a new file (or pass the checkpoints of the run that wrote it, to resume it)"
                )
                raise ValueError(
                    f"log: {log.path or 'the log'} already holds {len(log.rows)} rows up to step "
                    f"{log.rows[-1]['step']}, and the run starts at step {start} with no checkpoint restored; "
                    + hint
                )
    if checkpoints is not None and log is not None and log.path is not None:
        checkpoints._note_log(log.path)

    def save(state, step):
        try:
            checkpoints.save(state, step=step, allow_nonfinite=False)  # checked while checksummed
        except FloatingPointError as e:
            e.add_note("(make_train_step's non-finite guard, skip_nonfinite=True, skips the steps that would "
                       "make params or optimiser state non-finite)")
            raise
    with progress_bar(max(num_steps, start), initial=start, enabled=progress) as bar:
        for i in range(start, num_steps):
            state, metrics = train_step(state, data(i))
            done = i + 1
            if done % log_every == 0 or done == num_steps:
                scalars = {k: v for k, v in metrics.items() if np.size(v) == 1}
                if log is not None:
                    log.write(done, scalars)
                if not bar.disable and "loss" in scalars:
                    bar.set_postfix(loss=f"{float(scalars['loss']):.4g}", refresh=False)
            if callback is not None:
                callback(done, state, metrics)
            if checkpoints is not None and save_every is not None and done % save_every == 0:
                save(state, done)
            bar.update(1)
    if checkpoints is not None:
        if int(state.step) not in checkpoints.steps:
            save(state, int(state.step))
        checkpoints.wait()
    return state


__all__ = [
    "TrainState",
    "fit",
    "init_train_state",
    "make_optimizer",
    "make_train_step",
]
