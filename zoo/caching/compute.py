"""Computing activations: the prefix run once, in inference mode, over a dataset.

:func:`compute_activations` runs the frozen prefix (``zoo.caching.plan.split_model``)
over batches of pixels; :func:`derive_activations` computes the activations at a higher
cut from those at a lower one (``zoo.caching.plan.middle_model``), so one pass over the
images serves two stages. Results are stored by :class:`zoo.caching.store.ActivationWriter`.

On the TensorFlow backend the forward pass is a ``tf.function`` (optionally XLA-compiled)
over a ``tf.data`` dataset, TensorFlow imported inside functions; on other backends it is
Keras' compiled ``predict_on_batch`` (jitted on JAX) over numpy batches
(:class:`zoo.caching.dataset.ArrayInput`). Both run a copy of the frozen layers with their
BatchNorms folded into the convolutions (:mod:`zoo.caching.fold`), except under a
``tf.distribute`` strategy.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import keras
import numpy as np

from zoo.caching.dataset import ArrayInput, tensorflow_backend, without_autotune
from zoo.caching.fold import fold_batchnorm
from zoo.caching.store import (
    CACHE_DTYPES,
    DEFAULT_CACHE_BUDGET_BYTES,
    Activations,
    ActivationWriter,
    example_keys,
    numpy_dtype,
)
from zoo.errors import InvalidValueError


def _forward_fn(prefix: keras.Model, dtype: str, jit_compile: bool) -> Any:
    """``prefix`` in inference mode as a function of a batch -> numpy in ``dtype``.

    Runs a copy of ``prefix`` with its BatchNorms folded into the convolutions before them
    (:func:`zoo.caching.fold.fold_batchnorm`: the same function to float rounding, made
    once per prefix; its layers are frozen while it is cached), except under a
    ``tf.distribute`` strategy: there the copy's new variables would be mirrored and, on a
    multi-worker cluster, broadcast at creation by every worker, so ``prefix`` runs as is.
    On TensorFlow a ``tf.function`` traced once per prefix; elsewhere ``predict_on_batch``,
    which Keras compiles (on JAX, a jitted call with ``training=False``).
    """
    np_dtype = numpy_dtype(dtype)
    cache = prefix.__dict__.setdefault("_zoo_forward", {})
    if "folded" not in cache:
        cache["folded"] = prefix if _under_tf_strategy() else fold_batchnorm(prefix)[0]
    folded = cache["folded"]
    if not tensorflow_backend():

        def predict(x: Any) -> np.ndarray:
            return np.asarray(folded.predict_on_batch(np.asarray(x))).astype(np_dtype, copy=False)

        return predict
    import tensorflow as tf

    key = (dtype, jit_compile)
    if key not in cache:
        tf_dtype = tf.as_dtype(dtype)

        @tf.function(jit_compile=jit_compile, reduce_retracing=True)
        def forward(x: Any) -> Any:
            return tf.cast(folded(x, training=False), tf_dtype)

        cache[key] = forward
    fn = cache[key]
    return lambda x: np.asarray(fn(x)).astype(np_dtype, copy=False)


def _under_tf_strategy() -> bool:
    """Whether a ``tf.distribute`` strategy other than the default is in scope."""
    if not tensorflow_backend():
        return False
    import tensorflow as tf

    return tf.distribute.has_strategy()


def _batches(dataset: Any) -> Iterator[Any]:
    """One pass over ``dataset``: arrays in stored order (the cache sorts its rows by
    :func:`example_keys` anyway), or tf.data without autotuning."""
    if isinstance(dataset, ArrayInput):
        return dataset.batches(None)
    return iter(without_autotune(dataset))


def _num_batches(dataset: Any) -> int | None:
    if isinstance(dataset, ArrayInput):
        return dataset.steps
    batches = int(dataset.cardinality())
    return batches if batches > 0 else None


def compute_activations(
    prefix: keras.Model,
    dataset: Any,
    *,
    dtype: str = "float32",
    budget_bytes: int = DEFAULT_CACHE_BUDGET_BYTES,
    disk_dir: Path | None = None,
    jit_compile: bool = False,
    verbose: int = 1,
    label: str = "train",
) -> Activations:
    """Runs ``prefix`` once in inference mode over ``dataset`` and stores its outputs.

    Args:
        prefix: pixels -> activations model.
        dataset: batched ``tf.data.Dataset`` of ``(pixels, labels)``; extra elements
            (sample weights) are not supported.
        dtype: storage dtype, one of ``CACHE_DTYPES``.
        budget_bytes: activations above this size go to ``disk_dir`` as a memmap.
        disk_dir: where an over-budget cache is written (created). Required to spill.
        jit_compile: compile the forward pass with XLA.
        verbose: 1 shows a progress bar.
        label: split name for the progress bar and file names.

    Returns:
        The :class:`Activations`; labels are kept in memory, ``canonical`` is set.

    Raises:
        ValueError: the dataset does not yield ``(pixels, labels)`` pairs or the dtype is
            unknown.
        CacheUnavailable: over budget without a ``disk_dir``.
    """
    forward = _forward_fn(prefix, _checked_dtype(dtype), jit_compile)
    keys: list[np.ndarray] = []

    def outputs() -> Iterator[tuple[np.ndarray, np.ndarray]]:
        for element in _batches(dataset):
            if not isinstance(element, tuple) or len(element) != 2:
                raise InvalidValueError(
                    "Caching needs a dataset of (pixels, labels) pairs; got elements of "
                    f"{dataset.element_spec}. Drop sample weights or set cache='off'."
                )
            y = np.asarray(element[1])
            keys.append(example_keys(np.asarray(element[0]), y))
            yield forward(element[0]), y

    def canonical() -> np.ndarray:
        return np.argsort(
            np.concatenate(keys) if keys else np.zeros((0,), np.uint64), kind="stable"
        )

    store = ActivationWriter(dtype, budget_bytes, disk_dir, label)
    return store.run(outputs(), canonical, _num_batches(dataset), verbose)


def derive_activations(
    middle: keras.Model,
    base: Activations,
    *,
    dtype: str = "float32",
    budget_bytes: int = DEFAULT_CACHE_BUDGET_BYTES,
    disk_dir: Path | None = None,
    jit_compile: bool = False,
    verbose: int = 1,
    label: str = "train",
) -> Activations:
    """Activations at a higher cut, computed from ``base`` (those at a lower one).

    Runs ``middle`` (:func:`middle_model`) in inference mode over ``base.x`` in its
    stored order and batch size, so the result holds what :func:`compute_activations`
    would for the higher cut (same rows, labels and canonical order) without running the
    layers below the lower cut again.

    Args:
        middle: activations at the lower cut -> activations at the higher cut.
        base: the activations at the lower cut.
        dtype, budget_bytes, disk_dir, jit_compile, verbose, label: as for
            :func:`compute_activations`.

    Returns:
        The :class:`Activations`; ``seconds`` counts ``base.seconds`` too (a pass from
        pixels to the higher cut).

    Raises:
        CacheUnavailable: over budget without a ``disk_dir``.
    """
    forward = _forward_fn(middle, _checked_dtype(dtype), jit_compile)
    step = base.batch_size or 32

    def outputs() -> Iterator[tuple[np.ndarray, np.ndarray]]:
        for start in range(0, len(base.x), step):
            x = np.asarray(base.x[start : start + step], np.float32)
            yield forward(x), base.y[start : start + step]

    def canonical() -> np.ndarray:
        return base.canonical if base.canonical is not None else np.arange(len(base.x))

    store = ActivationWriter(dtype, budget_bytes, disk_dir, label, earlier_seconds=base.seconds)
    return store.run(outputs(), canonical, -(-len(base.x) // step), verbose)


def _checked_dtype(name: str) -> str:
    if name not in CACHE_DTYPES:
        raise InvalidValueError(f"cache_dtype must be one of {CACHE_DTYPES}, got {name!r}.")
    return name
