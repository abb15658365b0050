"""What ``fine_tune`` trains on: batched ``tf.data`` datasets, or ``(x, y)`` numpy arrays.

Arrays work on every Keras backend. On TensorFlow they become a ``tf.data`` pipeline
(``from_tensor_slices``, a seeded shuffle that changes every iteration, ``batch``), so
they train exactly like a dataset from ``zoo.data.pipeline``; elsewhere they stay numpy
(:class:`zoo.caching.dataset.ArrayInput`), shuffled per pass from (seed, pass), and reach
``fit`` as a ``keras.utils.PyDataset``. Either way a resumed run sees the same orders.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np

from zoo.caching.dataset import ArrayInput, tensorflow_backend
from zoo.errors import InvalidValueError
from zoo.training.stages import Stage

PIXEL_DTYPES = ("float32", "uint8")


def is_arrays(data: Any) -> bool:
    """Whether ``data`` is an ``(x, y)`` pair of numpy arrays."""
    return (
        isinstance(data, tuple | list)
        and len(data) == 2
        and all(isinstance(a, np.ndarray) for a in data)
    )


def prepare_inputs(
    train: Any,
    validation: Any,
    batch_size: int | None,
    seed: int,
    stages: Sequence[Stage],
) -> tuple[Any, Any]:
    """``train`` and ``validation`` as the stage loop reads them.

    Args:
        train: a batched ``tf.data.Dataset``, or ``(x, y)``: pixels 0..255
            ``(n, height, width, 3)`` float32 or uint8, and int labels ``(n,)`` or
            multi-hot ``(n, classes)``.
        validation: the same kind as ``train``, or None.
        batch_size: images per batch; required with arrays, not allowed with datasets
            (they are batched already).
        seed: seed of the arrays' shuffling.
        stages: the call's stages (augmentation needs TensorFlow).

    Returns:
        ``(train, validation)``: datasets as given; arrays as ``tf.data`` on TensorFlow,
        :class:`ArrayInput` elsewhere.

    Raises:
        InvalidValueError: every problem at once: arrays without ``batch_size`` (or with a
            bad one), x and y of different lengths, a bad pixel shape or dtype, a
            ``batch_size`` with a dataset, or augmentation on a backend without
            TensorFlow.
    """
    arrays = is_arrays(train)
    problems = []
    if arrays:
        if batch_size is None:
            problems.append("arrays need batch_size: pass e.g. fine_tune(..., batch_size=32)")
        elif not (isinstance(batch_size, int) and batch_size >= 1):
            problems.append(f"batch_size must be an integer >= 1, got {batch_size!r}")
        problems += _array_problems("train", train)
        if validation is not None:
            if is_arrays(validation):
                problems += _array_problems("validation", validation)
            else:
                problems.append("validation must be (x, y) arrays too when train is")
        augmented = [s.name for s in stages if s.augment is not None]
        if augmented and not tensorflow_backend():
            problems.append(
                f"stages {augmented} augment, and augmentation needs TensorFlow (the "
                "tensorflow Keras backend); drop augment= or run with KERAS_BACKEND=tensorflow"
            )
    elif batch_size is not None:
        problems.append(
            "batch_size is for (x, y) arrays; a dataset is batched already, so drop batch_size"
        )
    if problems:
        raise InvalidValueError("fine_tune: " + "; ".join(problems) + ".")
    if not arrays:
        return train, validation
    tr = ArrayInput(train[0], train[1], int(batch_size), seed)
    va = None if validation is None else ArrayInput(*validation, int(batch_size), seed, False)
    if not tensorflow_backend():
        return tr, va
    return _tf_dataset(tr), (_tf_dataset(va) if va is not None else None)


def _array_problems(name: str, data: Any) -> list[str]:
    x, y = data
    problems = []
    if x.ndim != 4 or x.shape[-1] != 3:
        problems.append(f"{name} x must be pixels (n, height, width, 3), got shape {x.shape}")
    if x.dtype.name not in PIXEL_DTYPES:
        problems.append(f"{name} x must be float32 or uint8 pixels 0..255, got {x.dtype}")
    if y.ndim not in (1, 2):
        problems.append(
            f"{name} y must be int labels (n,) or multi-hot (n, classes), got shape {y.shape}"
        )
    if len(x) != len(y):
        problems.append(f"{name} x has {len(x)} images but y has {len(y)} labels")
    if len(x) == 0:
        problems.append(f"{name} has no images")
    return problems


def _tf_dataset(data: ArrayInput) -> Any:
    """The arrays as a batched ``tf.data`` pipeline, reshuffled each iteration when
    ``data.shuffle`` (iteration k's order drawn from (seed, k), as exact resume needs)."""
    import tensorflow as tf

    ds = tf.data.Dataset.from_tensor_slices((data.x, data.y))
    if data.shuffle:
        ds = ds.shuffle(len(data.x), seed=data.seed, reshuffle_each_iteration=True)
    ds = ds.batch(data.batch_size)
    return ds.map(lambda x, y: (tf.cast(x, tf.float32), y))
