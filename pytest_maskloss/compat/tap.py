"""A tap on a model's loss computation inside its own step: while a ``LossTap`` is open, every
``compute_loss`` the model's ``fit``/``evaluate``/``*_on_batch`` runs hands its tensors (inputs,
labels, predictions with their Keras mask, sample weights, the loss it returns, the model's
added losses) to a host function, as numpy, once per step.

How the tensors reach the host, by backend: TensorFlow (Keras 3 and Keras 2) through
``tf.py_function`` in the traced step; JAX through ``jax.debug.callback`` (the step is always
jitted; the callback runs once per step); PyTorch directly (its steps run eagerly). A TensorFlow
step compiled by XLA (``jit_compile=True``, Keras 3's default when a GPU is visible) cannot call
the host, so there the tensors leave the step as one more entry of the logs ``train_step`` /
``test_step`` return, and the step function the model calls (``train_function`` /
``test_function``) is wrapped to take that entry out before Keras sees the logs (on Keras 3,
inside the step function after each step: ``compat.xlasteps``). The tap
installs instance attributes over ``compute_loss``, ``train_step``, ``test_step`` and
``reset_metrics`` and resets the cached step functions so that they are traced with it; closing it
removes the attributes and puts back the step functions the model had. A step function traced
while the tap was open where the model had none stays in place with the tap inert in it (its
callback returns at once), so the model is not traced a second time.

A sparse cross-entropy may be observed through per-token statistics computed in the step
(``statistics=``, ``compat.tokenstats``) instead of the predictions: they take every one of the
routes above in their place. In a TensorFlow graph they are computed before Keras's loss, which
then reads the logits after them (``compat.ordering``).

What the tap cannot follow raises ``TapUnavailable`` (with a sentence saying why) before anything
is changed: on Keras 2, an XLA step that runs several steps per execution (only the last one's
logs leave the compiled loop), and an XLA step over several replicas. The tap never
changes what the step computes, and an error on the host side is kept, not raised into the step.
"""

from __future__ import annotations

import threading

import numpy as np

from pytest_maskloss.compat import flavours as F
from pytest_maskloss.compat.masks import keras_mask
from pytest_maskloss.compat.hostcopy import detached as _detached
from pytest_maskloss.compat.hostcopy import map_leaves
from pytest_maskloss.compat.hostcopy import numpy_tree as _numpy
from pytest_maskloss.compat.hostcopy import symbolic as _symbolic
from pytest_maskloss.compat.hostcopy import view as _view
from pytest_maskloss.compat.xlasteps import (LOGS_KEY, UNLOADER, LogsStripped, TapUnavailable,
                                             refuse_unfollowable_xla, unloaded_steps,
                                             unloads_each_step, xla_compiled)

_FUNCTIONS = ("train_function", "test_function")
_STEPS = {"train_step": "train", "test_step": "test"}
_MAKERS = {"make_train_function": ("train_function", "train"),
           "make_test_function": ("test_function", "test")}


class LossTap:
    """Context manager; ``on_period()`` is called when Keras resets its metrics (an epoch or an
    evaluation begins), ``on_step(record)`` with one dict of numpy values per step:
    ``phase`` ("train" or "test"), ``replica``, ``x``, ``y``, ``y_pred``, ``sample_weight``,
    ``mask`` (the Keras mask on the predictions, or None), ``loss`` (what compute_loss returned),
    ``added`` (Σ model.losses) and, when ``per_token`` is given, ``per_token``: the value of
    ``per_token(y, y_pred)`` computed inside the step (backend tensors in, tensors out).
    ``statistics(y, y_pred)``, when given, is computed inside the step too (``stats``); where it
    gives a value, ``y_pred`` is not sent (None): the statistics stand for it. Where it raises,
    ``y_pred`` is sent as without it, and the reason is kept in ``declined``."""

    def __init__(self, model, info, on_step, *, on_period=lambda: None, per_token=None,
                 want_x=True, want_pred=True, statistics=None):
        self.through_logs = xla_compiled(model, info)
        if self.through_logs:
            refuse_unfollowable_xla(model, info)
        self.model = model
        self.info = info
        self.on_step = on_step
        self.on_period = on_period
        self.per_token = per_token
        self.want_x = want_x
        self.want_pred = want_pred
        self.statistics = statistics
        self.declined = []  # why the statistics could not be computed in a trace
        self.errors = []  # host-side errors (never raised into the step)
        self.active = True
        self.steps = 0
        # the phase being traced (or run, on PyTorch); a plain attribute, not a thread-local:
        # tf.distribute traces each replica's step in a thread of its own
        self._phase = None
        self._saved = {}
        self._traced = {}  # step functions traced with the tap, reused by the next opening
        self._left = {}  # the step functions the model had when the tap last closed
        self.key = None  # what the tap was built for (set by its owner; see ``kept_tap``)
        self._in_logs = {}  # XLA: phase -> the tensors of the step being traced
        self._layouts = {}  # XLA: phase -> (structure, which leaves are present) of those
        self._lock = threading.Lock()
        self._making = None  # XLA: the phase whose step function Keras is making

    def fits_model(self) -> bool:
        """Does the model still run its step the way the tap was built for? ``compile()`` may
        have switched XLA on or off, or made an XLA step one the tap cannot follow."""
        if xla_compiled(self.model, self.info) != self.through_logs:
            return False
        if self.through_logs:
            try:
                refuse_unfollowable_xla(self.model, self.info)
            except TapUnavailable:
                return False
        return True

    # -- opening and closing -------------------------------------------------------------

    def open(self, on_step, on_period=None):
        """Reopen the tap for another call, with new sinks; the step functions it traced before
        are reused (no second trace)."""
        self.on_step = on_step
        self.on_period = on_period or _ignore
        self.errors = []
        return self

    def __enter__(self):
        self.active = True
        model = self.model
        makers = tuple(_MAKERS) if self.through_logs else ()
        unloader = (UNLOADER,) if self.through_logs and unloads_each_step(model, self.info) else ()
        self._saved = {name: model.__dict__.get(name, _ABSENT)
                       for name in ("compute_loss", "reset_metrics", *_STEPS, *makers, *unloader)}
        self._functions = {name: getattr(model, name, None) for name in _FUNCTIONS}
        for name, function in self._functions.items():
            if function is not self._left.get(name, function):
                # compile() (or the user) replaced the step function since the tap closed: what
                # the tap traced then holds the old loss and optimizer, so it is traced afresh
                self._traced.pop(name, None)
        original_loss = model.compute_loss
        tap = self

        def compute_loss(x=None, y=None, y_pred=None, sample_weight=None, **kwargs):
            given = _unaliased(sample_weight)
            stats, seen, undo = tap._before_loss(y, y_pred)
            try:
                loss = original_loss(x, y, seen, sample_weight, **kwargs)
            finally:
                undo()
            try:
                tap._send(x, y, y_pred, given, loss, kwargs.get("training"), stats)
            except Exception as exc:  # the step must not fail because of the tap
                tap.errors.append(f"{type(exc).__name__}: {exc}")
            return loss

        _set(model, "compute_loss", compute_loss)
        for name, phase in _STEPS.items():
            _set(model, name, self._phased(getattr(model, name), phase))
        original_reset = model.reset_metrics

        def reset_metrics(*args, **kwargs):
            # Keras resets its metrics when an epoch (or an evaluation) begins: a new period
            tap.flush()
            tap.on_period()
            return original_reset(*args, **kwargs)

        _set(model, "reset_metrics", reset_metrics)
        for name in makers:
            _set(model, name, self._stripping_maker(getattr(model, name), *_MAKERS[name]))
        for name in unloader:
            _set(model, name, unloaded_steps(self, getattr(model, name)))
        for name in _FUNCTIONS:
            _set(model, name, self._traced.get(name))
        return self

    def __exit__(self, *exc):
        model = self.model
        for name, value in self._saved.items():
            if value is _ABSENT:
                model.__dict__.pop(name, None)
            else:
                _set(model, name, value)
        self.flush()
        self.active = False
        for name, value in self._functions.items():
            current = getattr(model, name, None)
            if current is not None and current is not value:
                self._traced[name] = current
            # A step function traced for this call replaces none the model had: it stays, with
            # the tap inert in it, so the model's next call is not traced once more.
            if value is not None or current is None:
                _set(model, name, value)
            self._left[name] = getattr(model, name, None)
        self.on_step = self.on_period = _ignore
        return False

    def _phased(self, step, phase):
        tap = self

        def phased(*args, **kwargs):
            previous, tap._phase = tap._phase, phase
            try:
                logs = step(*args, **kwargs)
            finally:
                tap._phase = previous
            carried = tap._in_logs.pop(phase, None)
            if carried is not None and isinstance(logs, dict):  # XLA: out with the logs
                logs = {**logs, LOGS_KEY: carried}
            return logs

        return phased

    def _stripping_maker(self, make, function_name, phase):
        """``make_*_function`` wrapped so that the step function it makes has the tap's entry
        taken out of the logs it returns (and handed to the host)."""
        tap, model = self, self.model

        def make_function(*args, **kwargs):
            previous, tap._making = tap._making, phase
            try:
                made = make(*args, **kwargs)  # Keras 3 sets the attribute; Keras 2 also returns it
            finally:
                tap._making = previous
            function = getattr(model, function_name, None) or made
            if function is not None and not isinstance(function, LogsStripped):
                function = LogsStripped(function, tap, phase)
                _set(model, function_name, function)
            return function

        return make_function

    def flush(self):
        """Wait until every step's callback has run (JAX dispatches them asynchronously)."""
        if self.info.backend == F.JAX:
            import jax

            jax.effects_barrier()

    # -- inside the step -------------------------------------------------------------------

    def _before_loss(self, y, y_pred):
        """``(statistics or _LATER, predictions for Keras's loss, undo)``. In a TensorFlow
        graph the statistics come first and Keras's loss reads the logits after them
        (``compat.ordering``: its fused kernel then works in place, as without the tap)."""
        if self.statistics is None or self.through_logs or self.info.backend != F.TENSORFLOW:
            return _LATER, y_pred, _ignore
        stats = self._statistics(y, y_pred)
        if stats is None:
            return None, y_pred, _ignore
        try:
            from pytest_maskloss.compat.ordering import ordered_after

            seen, undo = ordered_after(stats, y_pred, getattr(self.statistics, "from_logits", ()))
        except Exception as exc:  # unordered, as before: only slower
            self.declined.append(f"ordering: {type(exc).__name__}: {exc}")
            return stats, y_pred, _ignore
        return stats, seen, undo

    def _send(self, x, y, y_pred, sample_weight, loss, training, stats=None):
        phase = self._phase
        if phase is None:  # compute_loss called outside train_step/test_step
            phase = "train" if training else "test"
        if stats is _LATER:
            stats = self._statistics(y, y_pred)
        payload = {
            "x": x if self.want_x else None,
            "y": y,
            "y_pred": y_pred if self.want_pred and stats is None else None,
            "stats": stats,
            "sample_weight": sample_weight,
            "mask": _masks(y_pred),
            "loss": loss,
            "added": _added_losses(self.model),
            "per_token": self.per_token(y, y_pred) if self.per_token is not None else None,
        }
        backend = self.info.backend
        if self.through_logs:
            self._carry_in_logs(payload, phase)
        elif backend == F.TENSORFLOW:
            self._send_tensorflow(payload, phase)
        elif backend == F.JAX:
            import jax

            # ordered effects are refused when the step spans several devices (Keras'
            # DataParallel): there the steps' own data dependence keeps the callbacks in order
            jax.debug.callback(lambda tree: self._receive(tree, phase, 0), payload,
                               ordered=not _spans_devices())
        elif not _symbolic(payload):  # Keras builds a PyTorch model on meta tensors first
            self._receive(_detached(payload), phase, 0)

    def _statistics(self, y, y_pred):
        if self.statistics is None:
            return None
        try:
            return self.statistics(y, y_pred)
        except Exception as exc:  # the predictions are sent instead
            self.declined.append(f"{type(exc).__name__}: {exc}")
            return None

    def _send_tensorflow(self, payload, phase):
        import tensorflow as tf

        flat = tf.nest.flatten(payload)
        present = [t is not None for t in flat]
        inputs = [tf.convert_to_tensor(t) for t in flat if t is not None]
        replica = _replica_id()
        if replica is not None:
            inputs.append(replica)

        def host(*tensors):
            if not self.active:
                return np.int32(0)
            values = iter(_view(t) for t in tensors)
            leaves = [next(values) if p else None for p in present]
            replica_id = int(next(values)) if replica is not None else 0
            self._receive(tf.nest.pack_sequence_as(payload, leaves), phase, replica_id)
            return np.int32(0)

        tf.py_function(host, inputs, Tout=tf.int32)

    def _carry_in_logs(self, payload, phase):
        """XLA: the payload's tensors, to be returned with the step's logs (``_phased``)."""
        import tensorflow as tf

        flat = tf.nest.flatten(payload)
        present = [t is not None for t in flat]
        # the layout stays on the host (one per phase: a phase's payload keeps its structure);
        # the logs carry a tuple of tensors only: Keras 3 passes them through
        # tf.experimental.Optional, which takes no lists, and Keras 2 through control deps
        self._layouts[phase] = (tf.nest.map_structure(lambda _: None, payload), present)
        self._in_logs[phase] = tuple(tf.convert_to_tensor(t) for t in flat if t is not None)

    def receive_from_logs(self, carried, phase):
        """The host side of ``_carry_in_logs``: the tensors a step returned with its logs."""
        import tensorflow as tf

        structure, present = self._layouts[phase]
        tensors = carried
        values = iter(_view(t) for t in tensors)
        leaves = [next(values) if p else None for p in present]
        self._receive(tf.nest.pack_sequence_as(structure, leaves), phase, 0)

    # -- on the host -------------------------------------------------------------------------

    def _receive(self, tree, phase, replica):
        if not self.active:
            return
        try:
            record = {k: _numpy(v) for k, v in tree.items()}
            record["phase"], record["replica"] = phase, int(replica)
            with self._lock:
                self.steps += 1
                self.on_step(record)
        except Exception as exc:  # a bug on our side must not reach the user's step
            self.errors.append(f"{type(exc).__name__}: {exc}")


_ABSENT = object()
_LATER = object()  # the statistics are computed with the rest of the payload


def _spans_devices() -> bool:
    """A Keras 3 distribution over more than one device is set (JAX runs the step SPMD)."""
    try:
        from keras import distribution

        current = distribution.distribution()
        return current is not None and current.device_mesh.devices.size > 1
    except Exception:  # no distribution API (older Keras 3): a single-device step
        return False


def _ignore(*args):
    return None


def _set(model, name, value):
    # Keras 3 layers track attribute assignments; bypass that for our temporary attributes
    object.__setattr__(model, name, value)


def _unaliased(sample_weight):
    """The sample weights as the step was given them. Keras 3's masked reduction multiplies the
    weights by the mask's ``total/valid`` rescale in place (``sample_weight *= mask``), which on
    PyTorch changes the batch's own tensor (measured on 3.15.1 with ignore_class): a copy is taken
    before the loss runs. Other backends' tensors are immutable and are passed as they are."""
    return map_leaves(lambda t: t.detach().clone() if hasattr(t, "detach") and hasattr(t, "clone") else t,
                      sample_weight)


def _masks(y_pred):
    if isinstance(y_pred, dict):
        return {k: keras_mask(v) for k, v in y_pred.items()}
    if isinstance(y_pred, (list, tuple)):
        return type(y_pred)(keras_mask(v) for v in y_pred)
    return keras_mask(y_pred)


def _added_losses(model):
    losses = list(getattr(model, "losses", []) or [])
    if not losses:
        return None
    total = None
    for loss in losses:
        value = _sum(loss)
        total = value if total is None else total + value
    return total


def _sum(tensor):
    if hasattr(tensor, "detach"):
        return tensor.float().sum()
    try:
        from keras import ops

        return ops.sum(ops.cast(tensor, "float32"))
    except ImportError:  # Keras 2 without Keras 3 installed
        import tensorflow as tf

        return tf.reduce_sum(tf.cast(tensor, tf.float32))


def _replica_id():
    try:
        import tensorflow as tf
    except ImportError:
        return None
    if not tf.distribute.has_strategy() or tf.distribute.in_cross_replica_context():
        return None
    ctx = tf.distribute.get_replica_context()
    if ctx is None or ctx.num_replicas_in_sync <= 1:
        return None
    return tf.convert_to_tensor(ctx.replica_id_in_sync_group)
