"""Training on many devices with ``tf.distribute``: which strategy, and checks around it.

``fine_tune(..., distribution=...)`` and the recipe's ``[run] distribute`` take

* ``"none"``: no strategy, one device;
* ``"mirrored"``: ``tf.distribute.MirroredStrategy``, one replica per visible GPU, or per
  logical CPU device when there is no GPU (:func:`configure_logical_cpus` splits the CPU,
  a testing aid);
* ``"multi_worker"``: ``tf.distribute.MultiWorkerMirroredStrategy``, the cluster read from
  the ``TF_CONFIG`` environment variable (TensorFlow's cluster spec, checked here first);
* ``"auto"``: mirrored when more than one accelerator is visible, else none;
* a ``tf.distribute.Strategy`` object, used as given.

On the JAX backend (:func:`jax_distribution`) the same names map to the Keras distribution
API: ``"mirrored"`` is ``keras.distribution.DataParallel`` over ``jax.devices()`` (set for
the call, the model's variables replicated on its mesh, both undone afterwards), ``"auto"``
picks it when more than one accelerator is visible, and ``"multi_worker"`` is not supported
(a multi-host JAX run initialises ``jax.distributed`` itself, outside zoo).

Data parallelism, synchronous: every replica runs the same step on its slice of the global
batch and the gradients are summed across replicas (Keras scales each replica's loss by
``1 / replicas``, so the step is the one of the whole batch). The global batch is the
caller's (the recipe's ``batch_size``) and must divide evenly among the replicas; learning
rates are not rescaled. Variables must be created inside the strategy's scope, so the
model is built there (:func:`check_model_in_scope` says how when it was not).

Many processes (``"multi_worker"``): every worker runs the same program; the chief (worker
0, or the task of type ``"chief"``: :func:`is_chief_task`) alone writes checkpoints, logs,
the export and the report, and the others write nothing, so no temporary directories are
needed. An exact resume needs every worker to start from the same bits, so every worker
reads the chief's checkpoint, as TensorFlow's ``BackupAndRestore`` does: on two hosts the
run directory must be on storage both see (or copied to the others before ``--resume``).
Each worker rebuilds its activation caches itself (same keys, same order, same bits). A
killed worker stops the others at their next collective: on loopback they fail at once
(``UnavailableError``, connection reset); a host that vanishes without resetting its
connections leaves them waiting, so restart them all, with ``resume``. Tested as two
local processes on loopback ports (``tests/recipes/test_run_multi_worker.py``): the
resumed run ends with the weights of one never interrupted, bit for bit.

Source: TensorFlow's "Distributed training with Keras" guide and ``tf.distribute`` API
(https://www.tensorflow.org/guide/distributed_training) and "Multi-worker training with
Keras" tutorial; TF Model Garden builds its strategies from a config the same way.
"""

from __future__ import annotations

import contextlib
import functools
import json
import os
from collections.abc import Iterator
from dataclasses import asdict, dataclass
from typing import Any

import numpy as np

from zoo.errors import InvalidValueError, ZooError

DISTRIBUTIONS = ("auto", "none", "mirrored", "multi_worker")


class DistributionError(ZooError, ValueError):
    """A distribution that cannot be set up as asked (bad ``TF_CONFIG``, a model built
    outside the strategy's scope, a batch that does not divide among the replicas, logical
    devices asked for after TensorFlow started)."""


@dataclass(frozen=True)
class DistributionInfo:
    """How a :func:`zoo.fine_tune` call was distributed (JSON-able via :meth:`to_dict`).

    Attributes:
        asked: the ``distribution`` argument as given (a strategy object: its class name).
        strategy: the strategy's class name, or ``"none"``.
        replicas: replicas in sync (1 without a strategy).
        workers: processes in the cluster (1 unless multi-worker).
        devices: the devices of this worker's replicas.
        is_chief: whether this worker writes checkpoints, logs and the export.
        reason: why this strategy (``"auto"``'s choice, or "given").
    """

    asked: str = "none"
    strategy: str = "none"
    replicas: int = 1
    workers: int = 1
    devices: tuple[str, ...] = ()
    is_chief: bool = True
    reason: str = ""

    def to_dict(self) -> dict[str, Any]:
        """A JSON-able dict of the fields."""
        d = asdict(self)
        d["devices"] = list(self.devices)
        return d

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> DistributionInfo:
        """The inverse of :meth:`to_dict`."""
        return cls(**{**d, "devices": tuple(d.get("devices", ()))})

    def per_replica_batch(self, global_batch: int) -> int:
        """Images each replica sees per step for a global batch of ``global_batch``."""
        return global_batch // max(self.replicas, 1)


def configure_logical_cpus(count: int) -> None:
    """Splits the CPU into ``count`` logical devices: a testing aid for ``"mirrored"``.

    Lets a machine without GPUs run (and test) a mirrored strategy with ``count`` replicas;
    the replicas share the same cores, so it measures overhead, not speed. Must run before
    TensorFlow initialises its devices (before any tensor is made); calling it again with
    the same count is harmless.

    Args:
        count: logical CPU devices, >= 1.

    Raises:
        InvalidValueError: ``count`` is not an integer >= 1.
        DistributionError: TensorFlow already initialised with a different device layout.
    """
    import tensorflow as tf

    if isinstance(count, bool) or not isinstance(count, int) or count < 1:
        raise InvalidValueError(f"logical_cpu_devices must be an integer >= 1, got {count!r}.")
    cpu = tf.config.list_physical_devices("CPU")[0]
    wanted = [tf.config.LogicalDeviceConfiguration() for _ in range(count)]
    try:
        tf.config.set_logical_device_configuration(cpu, wanted)
    except RuntimeError as err:  # TensorFlow's "cannot be modified after initialization"
        if len(tf.config.list_logical_devices("CPU")) == count:
            return
        raise DistributionError(
            f"logical_cpu_devices={count}: TensorFlow already initialised its devices "
            f"({len(tf.config.list_logical_devices('CPU'))} logical CPU), and they can only "
            "be split before that; set it first thing in a fresh process (the recipe's "
            "[run] logical_cpu_devices does)."
        ) from err


def resolve_distribution(distribution: Any, model: Any = None) -> tuple[Any, DistributionInfo]:
    """The ``tf.distribute.Strategy`` (or None) for ``distribution``, and its description.

    Args:
        distribution: None, ``"auto"``, ``"none"``, ``"mirrored"``, ``"multi_worker"`` or a
            ``tf.distribute.Strategy``. With ``model`` given, a model built inside a
            strategy's scope brings its own: None and ``"auto"`` use it, and the name of
            its kind is accepted for it (a new strategy could not hold its variables).
        model: the Keras model to be trained, or None.

    Returns:
        ``(strategy or None, DistributionInfo)``.

    Raises:
        InvalidValueError: an unknown name.
        DistributionError: ``"multi_worker"`` without a usable ``TF_CONFIG``, or a name
            that contradicts the strategy the model was built under.
    """
    asked = distribution if isinstance(distribution, str | None) else type(distribution).__name__
    own = _model_strategy(model)
    if distribution is not None and not isinstance(distribution, str):
        return distribution, describe(distribution, asked, "given")
    if distribution not in (None, *DISTRIBUTIONS):
        raise InvalidValueError(
            f"distribution must be one of {DISTRIBUTIONS}, None or a tf.distribute.Strategy, "
            f"got {distribution!r}."
        )
    if own is not None:
        _check_same_kind(own, distribution)
        return own, describe(own, str(asked), "the strategy the model was built under")
    if distribution in (None, "none"):
        return None, describe(None, str(asked or "none"), "one device")
    if distribution == "auto":
        count = accelerator_count()
        if count <= 1:
            return None, describe(None, "auto", f"{count} accelerator(s) visible: one device")
        strategy = make_strategy("mirrored")
        return strategy, describe(strategy, "auto", f"{count} accelerators visible")
    strategy = make_strategy(distribution)
    return strategy, describe(strategy, distribution, "given")


def make_strategy(name: str) -> Any:
    """A new ``"mirrored"`` or ``"multi_worker"`` strategy (see the module docstring).

    Build the model inside ``make_strategy(name).scope()`` and pass the strategy to
    :func:`zoo.fine_tune`.

    Raises:
        InvalidValueError: another name.
        DistributionError: ``"multi_worker"`` without a usable ``TF_CONFIG``.
    """
    import tensorflow as tf

    if name == "mirrored":
        gpus = tf.config.list_logical_devices("GPU")
        devices = gpus or tf.config.list_logical_devices("CPU")
        return tf.distribute.MirroredStrategy([d.name for d in devices])
    if name == "multi_worker":
        read_tf_config()
        return _multi_worker_class()()
    raise InvalidValueError(f"make_strategy takes 'mirrored' or 'multi_worker', got {name!r}.")


@functools.cache
def _multi_worker_class() -> type:
    """``tf.distribute.MultiWorkerMirroredStrategy`` with a ``reduce`` Keras 3 can call.

    Keras 3's ``fit`` / ``evaluate`` (3.15, TF 2.21) call the multi-worker strategy's
    ``reduce`` in two ways it does not take (keras-team/keras#20585): with an ``(x, y)``
    batch (a nest; it reduces one tensor) to build metrics symbolically, and with
    ``axis=0`` on each replica's scalar logs (a scalar has no axis 0). What those calls mean
    is a reduction of each tensor, across replicas only for a scalar, and that is what this
    ``reduce`` does; everything else is TensorFlow's strategy as is.
    """
    import tensorflow as tf

    class MultiWorkerMirroredStrategy(tf.distribute.MultiWorkerMirroredStrategy):
        def reduce(self, reduce_op: Any, value: Any, axis: Any = None) -> Any:
            base = super().reduce

            def one(v: Any) -> Any:
                if v is None:
                    return None
                rank = getattr(self.experimental_local_results(v)[0], "shape", None)
                return base(reduce_op, v, None if rank is not None and rank.rank == 0 else axis)

            return tf.nest.map_structure(one, value)

    return MultiWorkerMirroredStrategy


def read_tf_config(environ: Any = None) -> dict[str, Any]:
    """``TF_CONFIG`` parsed and checked: a cluster of workers and this process's task.

    The form TensorFlow documents, e.g. for two hosts (the second sets ``"index": 1``)::

        {"cluster": {"worker": ["host1:12345", "host2:12345"]},
         "task": {"type": "worker", "index": 0}}

    Args:
        environ: the environment to read (default ``os.environ``).

    Returns:
        The parsed dict.

    Raises:
        DistributionError: missing, not JSON, or not a cluster with this task in it; every
            problem is listed.
    """
    text = (os.environ if environ is None else environ).get("TF_CONFIG")
    example = (
        'e.g. TF_CONFIG=\'{"cluster": {"worker": ["host1:12345", "host2:12345"]}, '
        '"task": {"type": "worker", "index": 0}}\''
    )
    if not text:
        raise DistributionError(
            f"distribute='multi_worker' needs the TF_CONFIG environment variable, {example}."
        )
    try:
        config = json.loads(text)
    except json.JSONDecodeError as err:
        raise DistributionError(f"TF_CONFIG is not JSON ({err}); {example}.") from err
    problems = _tf_config_problems(config)
    if problems:
        raise DistributionError(f"TF_CONFIG is malformed: {'; '.join(problems)}; {example}.")
    return config


def is_chief_task(config: dict[str, Any]) -> bool:
    """Whether the task a checked ``TF_CONFIG`` (:func:`read_tf_config`) names is the chief.

    TensorFlow's rule (``multi_worker_util.is_chief``): the task of type ``"chief"``, or,
    when the cluster has none, worker 0. Known before any strategy exists, so a runner can
    decide what this process may write before TensorFlow starts.
    """
    task = config["task"]
    if "chief" in config["cluster"]:
        return task["type"] == "chief"
    return task["type"] == "worker" and task["index"] == 0


def _tf_config_problems(config: Any) -> list[str]:
    if not isinstance(config, dict):
        return [f"expected a JSON object, got {type(config).__name__}"]
    cluster, task = config.get("cluster"), config.get("task")
    problems = []
    if not isinstance(cluster, dict) or not cluster:
        problems.append("no 'cluster' object of task type -> list of 'host:port'")
        cluster = {}
    for kind, hosts in cluster.items():
        bad = [h for h in hosts if not _host_port(h)] if isinstance(hosts, list) else [hosts]
        if bad or not hosts:
            problems.append(f"cluster[{kind!r}] must be a list of 'host:port', got {hosts!r}")
    if not isinstance(task, dict):
        problems.append("no 'task' object with 'type' and 'index'")
    else:
        kind, index = task.get("type"), task.get("index")
        hosts = cluster.get(kind)
        if not isinstance(hosts, list):
            problems.append(f"task type {kind!r} is not in the cluster ({sorted(cluster)})")
        elif not (isinstance(index, int) and 0 <= index < len(hosts)):
            problems.append(f"task index {index!r} is not in 0..{len(hosts) - 1}")
    return problems


def _host_port(value: Any) -> bool:
    if not isinstance(value, str) or ":" not in value:
        return False
    host, port = value.rsplit(":", 1)
    return bool(host) and port.isdigit()


def accelerator_count() -> int:
    """GPUs (or TPU cores) TensorFlow sees."""
    import tensorflow as tf

    return len(tf.config.list_logical_devices("GPU")) or len(tf.config.list_logical_devices("TPU"))


def describe(strategy: Any, asked: str, reason: str) -> DistributionInfo:
    """The :class:`DistributionInfo` of ``strategy`` (None: one device)."""
    if strategy is None:
        return DistributionInfo(asked=asked, reason=reason)
    extended = strategy.extended
    workers = 1
    resolver = getattr(strategy, "cluster_resolver", None)
    if resolver is not None and resolver.cluster_spec().jobs:
        workers = len(resolver.cluster_spec().as_dict().get("worker", [])) or 1
    devices = tuple(getattr(extended, "worker_devices", ()) or ())
    return DistributionInfo(
        asked=asked,
        strategy=type(strategy).__name__,
        replicas=int(strategy.num_replicas_in_sync),
        workers=workers,
        devices=devices,
        is_chief=is_chief(strategy),
        reason=reason,
    )


def is_chief(strategy: Any) -> bool:
    """Whether this process writes (checkpoints, logs, the export): True unless it is a
    worker other than the chief of a multi-worker cluster."""
    if strategy is None:
        return True
    return bool(getattr(strategy.extended, "should_checkpoint", True))


def check_model_in_scope(model: Any, strategy: Any) -> None:
    """Raises unless every variable of ``model`` was created in ``strategy``'s scope.

    Raises:
        DistributionError: names up to five variables made outside, and the fix.
    """
    if strategy is None:
        return
    outside = [v.path for v in model.variables if not _in_scope(strategy, v)]
    if outside:
        more = f" and {len(outside) - 5} more" if len(outside) > 5 else ""
        raise DistributionError(
            f"{len(outside)} of the model's variables were created outside the "
            f"{type(strategy).__name__}'s scope ({', '.join(outside[:5])}{more}); build the "
            "model inside it: `with strategy.scope(): model = zoo.build_classifier(...)`, "
            "then pass the same strategy."
        )


def _in_scope(strategy: Any, variable: Any) -> bool:
    tf_variable = getattr(variable, "value", variable)  # a Keras variable wraps a tf.Variable
    return bool(strategy.extended.variable_created_in_scope(tf_variable))


def check_global_batch(batch: int | None, info: DistributionInfo, what: str) -> None:
    """Raises when a global batch of ``batch`` does not divide among the replicas.

    Raises:
        DistributionError: says the batch, the replicas and the nearest batches that do.
    """
    n = info.replicas
    if batch is None or n <= 1 or batch % n == 0:
        return
    low, high = max(batch - batch % n, n), batch - batch % n + n
    raise DistributionError(
        f"{what} {batch} does not divide among {n} replicas ({info.strategy}); the global "
        f"batch is split evenly across them, so use a multiple of {n} (e.g. {low} or {high})."
    )


def _model_strategy(model: Any) -> Any:
    """The strategy ``model`` was built under (Keras records it), or None."""
    return getattr(model, "_distribute_strategy", None) if model is not None else None


def _check_same_kind(own: Any, asked: str | None) -> None:
    kind = {
        "MirroredStrategy": "mirrored",
        "MultiWorkerMirroredStrategy": "multi_worker",
        "CollectiveAllReduceStrategy": "multi_worker",  # TensorFlow's own class name
    }.get(type(own).__name__)
    if asked in (None, "auto") or asked == kind:
        return
    raise DistributionError(
        f"distribution={asked!r}, but the model was built inside a {type(own).__name__}'s "
        f"scope, which Keras will train it with; build the model outside any strategy "
        "scope, or pass that strategy."
    )


def unreplicated(model: Any) -> Any:
    """A copy of ``model`` made outside any strategy, with the same weights (bitwise).

    Dropout seed-generator states are not weights and are not copied.

    A model built in a strategy's scope holds distributed variables, which a SavedModel
    records under other names; export (and anything that looks at variables one by one)
    takes this copy. A model built outside any strategy comes back as is.

    Raises:
        DistributionError: called inside a strategy's scope (the copy would be replicated).
    """
    import keras
    import tensorflow as tf

    if getattr(model, "_distribute_strategy", None) is None:
        return model
    if tf.distribute.has_strategy():
        raise DistributionError(
            "unreplicated(model) must be called outside `with strategy.scope():`."
        )
    copy = keras.saving.deserialize_keras_object(keras.saving.serialize_keras_object(model))
    # Weights, not all variables: a dropout layer's seed-generator state is named by a
    # global counter (``seed_generator_2`` in the copy) and only draws masks in training.
    ours = {v.path: v for v in model.weights}
    theirs = {v.path: v for v in copy.weights}
    if set(ours) != set(theirs):
        raise DistributionError(
            f"Could not copy {model.name!r} out of its strategy: variables differ "
            f"({sorted(set(ours) ^ set(theirs))[:5]})."
        )
    for path, variable in theirs.items():
        variable.assign(np.asarray(ours[path]))
    return copy


# -- the JAX backend: the Keras distribution API ------------------------------------------------


@contextlib.contextmanager
def jax_distribution(distribution: Any, model: Any) -> Iterator[DistributionInfo]:
    """On the JAX backend: ``distribution`` set for the block, ``model``'s variables on it.

    With a ``keras.distribution.DataParallel`` (``"mirrored"``, ``"auto"`` with several
    accelerators, or one given), the distribution is made the global one and every
    variable of ``model`` is replicated on its device mesh; on leaving, the variables come
    back to one device (same values, bitwise) and the previous distribution is restored.
    Each batch is split along its first axis among the devices, so every batch (the last
    of a pass included) must divide evenly among them.

    Args:
        distribution: None, ``"none"``, ``"auto"``, ``"mirrored"``, ``"multi_worker"`` or
            a ``keras.distribution.DataParallel`` / ``ModelParallel``.
        model: the Keras model to be trained.

    Yields:
        The :class:`DistributionInfo` of the call.

    Raises:
        InvalidValueError: an unknown name or object.
        DistributionError: ``"multi_worker"`` (not supported on JAX here).
    """
    import keras

    dist, info = _resolve_jax(distribution)
    if dist is None:
        yield info
        return
    with dist.scope():
        _place(
            model,
            lambda v: keras.distribution.distribute_tensor(v.value, dist.get_variable_layout(v)),
        )
        try:
            yield info
        finally:
            _place(model, lambda v: np.asarray(v.value))


def _place(model: Any, value: Any) -> None:
    for variable in model.variables:
        variable.assign(value(variable))


def assign_in_place(variable: Any, value: Any) -> None:
    """``variable.assign(value)``, keeping the variable where the distribution put it.

    Under a Keras distribution on JAX (:func:`jax_distribution`) every variable lives on
    the device mesh; a plain ``assign`` of a numpy array would put it back on one device,
    and the next jitted step refuses the mix. Elsewhere this is a plain ``assign``.

    Args:
        variable: a Keras variable.
        value: an array of the variable's shape.
    """
    import keras

    dist = keras.distribution.distribution() if keras.backend.backend() == "jax" else None
    if dist is not None:
        value = keras.distribution.distribute_tensor(value, dist.get_variable_layout(variable))
    variable.assign(value)


def _resolve_jax(distribution: Any) -> tuple[Any, DistributionInfo]:
    """The Keras distribution (or None) for ``distribution`` on JAX, and its description."""
    import jax
    import keras

    kinds = (keras.distribution.DataParallel, keras.distribution.ModelParallel)
    if isinstance(distribution, kinds):
        return distribution, _describe_jax(distribution, type(distribution).__name__, "given")
    if distribution not in (None, *DISTRIBUTIONS):
        raise InvalidValueError(
            f"distribution must be one of {DISTRIBUTIONS}, None or a keras.distribution "
            f"DataParallel / ModelParallel on the JAX backend, got {distribution!r}."
        )
    if distribution == "multi_worker":
        raise DistributionError(
            "distribute='multi_worker' is not supported on the JAX backend (it maps to "
            "tf.distribute.MultiWorkerMirroredStrategy); use 'mirrored' for the devices of "
            "this machine, or run with KERAS_BACKEND=tensorflow."
        )
    asked = distribution or "none"
    if distribution == "auto":
        count = sum(1 for d in jax.devices() if d.platform != "cpu")
        if count <= 1:
            why = f"{count} accelerator(s) visible: one device"
            return None, DistributionInfo(asked="auto", reason=why)
        dist = keras.distribution.DataParallel(devices=keras.distribution.list_devices())
        return dist, _describe_jax(dist, "auto", f"{count} accelerators visible")
    if distribution == "mirrored":
        dist = keras.distribution.DataParallel(devices=keras.distribution.list_devices())
        return dist, _describe_jax(dist, "mirrored", "given")
    return None, DistributionInfo(asked=asked, reason="one device")


def _describe_jax(dist: Any, asked: str, reason: str) -> DistributionInfo:
    devices = tuple(str(d) for d in dist.device_mesh.devices.flatten())
    return DistributionInfo(
        asked=asked,
        strategy=type(dist).__name__,
        replicas=len(devices),
        devices=devices,
        reason=reason,
    )
