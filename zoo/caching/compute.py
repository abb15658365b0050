"""Computing activations: the prefix run once, in inference mode, over a dataset.

:func:`compute_activations` runs the frozen prefix (``zoo.caching.plan.split_model``)
over batches of pixels; :func:`derive_activations` computes the activations at a higher
cut from those at a lower one (``zoo.caching.plan.middle_model``), so one pass over the
images serves two stages. Results are stored by :class:`zoo.caching.store.ActivationWriter`.

The forward pass runs on the engine :mod:`zoo.caching.engine` chooses (``engine="auto"``:
probed on the pass's first batch): TensorFlow as built, TensorFlow with BatchNorm folded
into the convolutions (:mod:`zoo.caching.fold`) or LiteRT, each checked against the model
as built within a relative error of 1e-5 before it is used. On the TensorFlow backend the
TensorFlow engines are a ``tf.function`` (optionally XLA-compiled) over a ``tf.data``
dataset, TensorFlow imported inside functions; on other backends Keras' compiled
``predict_on_batch`` (jitted on JAX) over numpy batches
(:class:`zoo.caching.dataset.ArrayInput`). Under a ``tf.distribute`` strategy the prefix
runs as built.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import keras
import numpy as np

from zoo.caching.dataset import ArrayInput, without_autotune
from zoo.caching.engine import EngineChoice, Forward, check_engine, choose_engine
from zoo.caching.store import (
    CACHE_DTYPES,
    DEFAULT_CACHE_BUDGET_BYTES,
    Activations,
    ActivationWriter,
    example_keys,
    numpy_dtype,
)
from zoo.errors import InvalidValueError


def _forward_fn(
    prefix: keras.Model, engine: str, jit_compile: bool, sample: Any, images: int | None
) -> tuple[Forward, EngineChoice]:
    """``prefix`` in inference mode on the engine :func:`zoo.caching.engine.choose_engine`
    picks (probed on ``sample``, the pass's first batch): a function of a batch -> float32
    numpy, and the choice. Chosen once per prefix, engine and XLA setting, so a training
    and a validation pass share one probe."""
    cache = prefix.__dict__.setdefault("_zoo_forward", {})
    key = (engine, jit_compile)
    if key not in cache:
        cache[key] = choose_engine(
            prefix, np.asarray(sample), engine, jit_compile=jit_compile, images=images
        )
    return cache[key]


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
    engine: str = "auto",
) -> Activations:
    """Runs ``prefix`` once in inference mode over ``dataset`` and stores its outputs.

    Args:
        prefix: pixels -> activations model.
        dataset: batched ``tf.data.Dataset`` of ``(pixels, labels)``; extra elements
            (sample weights) are not supported.
        dtype: storage dtype, one of ``CACHE_DTYPES``.
        budget_bytes: activations above this size go to ``disk_dir`` as a memmap.
        disk_dir: where an over-budget cache is written (created). Required to spill.
        jit_compile: compile the forward pass with XLA (the TensorFlow engines).
        verbose: 1 shows a progress bar.
        label: split name for the progress bar and file names.
        engine: ``"auto"``, ``"tensorflow"`` or ``"litert"``
            (:func:`zoo.caching.engine.choose_engine`, probed on the first batch; a
            second pass of the same ``prefix`` reuses the choice).

    Returns:
        The :class:`Activations`; labels are kept in memory, ``canonical`` is set,
        ``engine`` records the engine and its probe.

    Raises:
        ValueError: the dataset does not yield ``(pixels, labels)`` pairs or the dtype is
            unknown; an unknown engine, or ``"litert"`` where it cannot run or disagrees
            with TensorFlow.
        CacheUnavailable: over budget without a ``disk_dir``.
    """
    np_dtype = numpy_dtype(_checked_dtype(dtype))
    check_engine(engine)
    keys: list[np.ndarray] = []
    chosen: list[EngineChoice] = []
    batches = _num_batches(dataset)

    def outputs() -> Iterator[tuple[np.ndarray, np.ndarray]]:
        for element in _batches(dataset):
            if not isinstance(element, tuple) or len(element) != 2:
                raise InvalidValueError(
                    "Caching needs a dataset of (pixels, labels) pairs; got elements of "
                    f"{dataset.element_spec}. Drop sample weights or set cache='off'."
                )
            x, y = np.asarray(element[0]), np.asarray(element[1])
            keys.append(example_keys(x, y))
            if not chosen:
                images = batches * len(x) if batches is not None else None
                forward, choice = _forward_fn(prefix, engine, jit_compile, x, images)
                chosen.append(choice)
                store.engine = choice.to_dict()
            yield forward(x).astype(np_dtype, copy=False), y

    def canonical() -> np.ndarray:
        return np.argsort(
            np.concatenate(keys) if keys else np.zeros((0,), np.uint64), kind="stable"
        )

    store = ActivationWriter(dtype, budget_bytes, disk_dir, label)
    return store.run(outputs(), canonical, batches, verbose)


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
    engine: str = "auto",
) -> Activations:
    """Activations at a higher cut, computed from ``base`` (those at a lower one).

    Runs ``middle`` (:func:`middle_model`) in inference mode over ``base.x`` in its
    stored order and batch size, so the result holds what :func:`compute_activations`
    would for the higher cut (same rows, labels and canonical order) without running the
    layers below the lower cut again.

    Args:
        middle: activations at the lower cut -> activations at the higher cut.
        base: the activations at the lower cut.
        dtype, budget_bytes, disk_dir, jit_compile, verbose, label, engine: as for
            :func:`compute_activations` (the engine probed on ``middle``'s first batch).

    Returns:
        The :class:`Activations`; ``seconds`` counts ``base.seconds`` too (a pass from
        pixels to the higher cut); ``engine`` records the middle pass's engine.

    Raises:
        CacheUnavailable: over budget without a ``disk_dir``.
    """
    np_dtype = numpy_dtype(_checked_dtype(dtype))
    check_engine(engine)
    step = base.batch_size or 32
    chosen: list[EngineChoice] = []

    def outputs() -> Iterator[tuple[np.ndarray, np.ndarray]]:
        for start in range(0, len(base.x), step):
            x = np.asarray(base.x[start : start + step], np.float32)
            forward, choice = _forward_fn(middle, engine, jit_compile, x, len(base.x))
            if not chosen:
                chosen.append(choice)
                store.engine = choice.to_dict()
            yield forward(x).astype(np_dtype, copy=False), base.y[start : start + step]

    def canonical() -> np.ndarray:
        return base.canonical if base.canonical is not None else np.arange(len(base.x))

    store = ActivationWriter(dtype, budget_bytes, disk_dir, label, earlier_seconds=base.seconds)
    return store.run(outputs(), canonical, -(-len(base.x) // step), verbose)


def _checked_dtype(name: str) -> str:
    if name not in CACHE_DTYPES:
        raise InvalidValueError(f"cache_dtype must be one of {CACHE_DTYPES}, got {name!r}.")
    return name
