"""Batched tf.data input pipelines.

:func:`pipeline` turns an unbatched split of ``(uint8 image, int64 label)`` into batches of
float32 pixels 0..255 sized for a backbone, augmenting training batches with an
:class:`zoo.data.augment.Augmentation`.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import keras
import numpy as np
import tensorflow as tf

from zoo.data.augment import Augmentation, augmentation, one_hot_labels
from zoo.data.plans import SplitPlan, dataset_from_plan, decode_file, to_rgb
from zoo.errors import InvalidValueError

AUTOTUNE = tf.data.AUTOTUNE
RESIZE_METHODS = (
    "bilinear",
    "nearest",
    "bicubic",
    "area",
    "lanczos3",
    "lanczos5",
    "gaussian",
    "mitchellcubic",
)


def resize(
    images: tf.Tensor,
    image_size: tuple[int, int],
    method: str = "bilinear",
    crop_to_aspect_ratio: bool = False,
    antialias: bool = False,
) -> tf.Tensor:
    """Resizes images to ``image_size``, optionally centre-cropping to its aspect ratio first.

    Args:
        images: uint8 or float ``(h, w, 3)`` or ``(batch, h, w, 3)``.
        image_size: ``(height, width)`` in pixels.
        method: a ``tf.image.ResizeMethod`` name, e.g. "bilinear", "bicubic", "area".
        crop_to_aspect_ratio: crop the largest centred box with the target aspect ratio
            before resizing, so objects are not stretched.
        antialias: low-pass filter when downsampling.

    Returns:
        float32 pixels in 0..255 of shape ``(height, width, 3)`` or ``(batch, ...)``.
    """
    height, width = int(image_size[0]), int(image_size[1])
    if crop_to_aspect_ratio:
        shape = tf.shape(images)
        h, w = shape[-3], shape[-2]
        # Largest box of aspect width/height inside (h, w), centred.
        crop_h = tf.minimum(h, tf.cast(tf.round(tf.cast(w, tf.float64) * height / width), tf.int32))
        crop_w = tf.minimum(w, tf.cast(tf.round(tf.cast(h, tf.float64) * width / height), tf.int32))
        crop_h, crop_w = tf.maximum(crop_h, 1), tf.maximum(crop_w, 1)
        images = tf.image.crop_to_bounding_box(
            images, (h - crop_h) // 2, (w - crop_w) // 2, crop_h, crop_w
        )
    out = tf.image.resize(images, (height, width), method=method, antialias=antialias)
    return tf.clip_by_value(tf.cast(out, tf.float32), 0.0, 255.0)


def pipeline(
    split: tf.data.Dataset | SplitPlan,
    image_size: tuple[int, int],
    batch_size: int = 32,
    training: bool = False,
    augment: str
    | Sequence[str]
    | Mapping[str, Any]
    | Augmentation
    | keras.layers.Layer
    | None = None,
    *,
    seed: int = 0,
    method: str = "bilinear",
    crop_to_aspect_ratio: bool = False,
    antialias: bool = False,
    label_mode: str = "auto",
    num_classes: int | None = None,
    label_smoothing: float = 0.0,
    shuffle_buffer: int | None = None,
    cache: bool = False,
    drop_remainder: bool = False,
) -> tf.data.Dataset:
    """Batches a split for a model: decode, RGB, resize, (shuffle, augment), batch, prefetch.

    Order is deterministic for a ``seed``; only training pipelines shuffle (reshuffled each
    epoch, seeded) and augment. Given a :class:`SplitPlan` (``DataSource.plan(name)``, or
    simply ``DataSource.pipeline(name, ...)``), files and indices are shuffled completely
    before decoding and in-memory data such as Fashion-MNIST is gathered and resized a
    whole batch at a time; a plain ``tf.data.Dataset`` goes through a shuffle buffer.

    Args:
        split: a :class:`SplitPlan`, or an unbatched ``tf.data.Dataset`` of
            ``(uint8 image (h, w, 3), int label)``.
        image_size: ``(height, width)`` of the backbone input, e.g. ``spec.input_size``.
        batch_size: examples per batch.
        training: shuffle and augment.
        augment: names / config for :func:`zoo.data.augmentation`, an
            :class:`Augmentation` or a Keras layer; applied only when ``training``. When
            it gives soft labels (mixup, cutmix, label smoothing), every split built with
            it gets ``(batch, num_classes)`` float32 labels, so the loss sees one format:
            mixed on training batches, plain one-hot elsewhere.
        seed: shuffle seed (and augmentation seed when ``augment`` is not built yet).
        method: resize method (``tf.image.resize``).
        crop_to_aspect_ratio: centre-crop to the target aspect ratio before resizing.
        antialias: antialiased downsampling.
        label_mode: "int" (int64 ``(batch,)``), "one_hot" (float32 ``(batch, classes)``)
            or "auto" (soft when ``augment`` gives soft labels, else int).
        num_classes: classes for one-hot / soft labels; known for a :class:`SplitPlan`.
        label_smoothing: smoothing of training labels when ``augment`` is built here.
        shuffle_buffer: buffer for a plain ``tf.data.Dataset`` (default 1024); a
            :class:`SplitPlan` is shuffled completely.
        cache: keep resized uint8 images in memory after the first epoch (small datasets).
        drop_remainder: drop the last incomplete batch.

    Returns:
        Batched dataset of ``(float32 (batch, height, width, 3) pixels 0..255, labels)``.

    Raises:
        ValueError: bad sizes, method, label mode, augmentation, or one-hot labels with
            unknown classes.
    """
    image_size = _check_args(image_size, batch_size, method, label_mode)
    plan = split if isinstance(split, SplitPlan) else None
    num_classes = num_classes or (plan.num_classes if plan is not None else None)
    aug = None
    if augment is not None:
        aug = augmentation(
            augment,
            image_size=image_size,
            seed=seed,
            num_classes=num_classes,
            label_smoothing=label_smoothing,
        )
    one_hot = label_mode == "one_hot" or (
        label_mode == "auto" and aug is not None and aug.soft_labels
    )
    if one_hot and not num_classes:
        raise InvalidValueError(
            "One-hot labels (label_mode='one_hot', or mixup / cutmix / label smoothing in "
            "augment) need num_classes= for a plain tf.data.Dataset."
        )
    size = aug.resize_to(image_size) if training and aug is not None else image_size
    resize_kw = {
        "method": method,
        "crop_to_aspect_ratio": crop_to_aspect_ratio,
        "antialias": antialias,
    }
    batching = (size, batch_size, training, seed, drop_remainder, resize_kw)
    if plan is not None and plan.kind == "memory":
        batches = _memory_batches(plan, *batching)
    elif plan is not None and plan.kind == "files" and not cache:
        batches = _file_batches(plan, *batching)
    else:
        dataset = split if plan is None else dataset_from_plan(plan)
        batches = _generic_batches(dataset, plan, *batching, shuffle_buffer, cache)
    augmented = training and aug is not None
    if augmented:
        # Soft labels come from the augmentation itself (smoothed, then mixed).
        batches = batches.map(aug, num_parallel_calls=AUTOTUNE, deterministic=True)
    if one_hot and not (augmented and aug.soft_labels):
        depth = int(num_classes)
        batches = batches.map(lambda x, y: (x, one_hot_labels(y, depth)))
    return batches.prefetch(AUTOTUNE)


def _check_args(image_size: Any, batch_size: Any, method: str, label_mode: str) -> tuple[int, int]:
    problems = []
    try:
        size = tuple(int(v) for v in image_size)
        if len(size) != 2 or min(size) < 1:
            raise ValueError
    except (TypeError, ValueError):
        problems.append(f"image_size={image_size!r} (expected (height, width), positive ints)")
        size = (0, 0)
    if not isinstance(batch_size, int | np.integer) or batch_size < 1:
        problems.append(f"batch_size={batch_size!r} (expected a positive int)")
    if method not in RESIZE_METHODS:
        problems.append(f"method={method!r} (expected one of {', '.join(RESIZE_METHODS)})")
    if label_mode not in ("auto", "int", "one_hot"):
        problems.append(f"label_mode={label_mode!r} (expected 'auto', 'int' or 'one_hot')")
    if problems:
        raise InvalidValueError("Bad pipeline arguments: " + "; ".join(problems) + ".")
    return size


def _memory_batches(
    plan: SplitPlan, size, batch_size, training, seed, drop_remainder, resize_kw
) -> tf.data.Dataset:
    images = tf.constant(plan.images)
    labels = tf.constant(plan.labels)
    batched_rank = plan.images.ndim  # (n, h, w) greyscale or (n, h, w, c)
    n = len(plan.labels)
    order = tf.data.Dataset.range(n)
    if training:
        order = order.shuffle(n, seed=seed, reshuffle_each_iteration=True)

    def gather(index: tf.Tensor):
        x = tf.gather(images, index)
        x = to_rgb(x, batched=True) if batched_rank in (3, 4) else x
        return resize(x, size, **resize_kw), tf.gather(labels, index)

    order = order.batch(batch_size, drop_remainder=drop_remainder)
    return order.map(gather, num_parallel_calls=AUTOTUNE, deterministic=True)


def _file_batches(
    plan: SplitPlan, size, batch_size, training, seed, drop_remainder, resize_kw
) -> tf.data.Dataset:
    exif = plan.exif_transpose
    files = tf.data.Dataset.from_tensor_slices((plan.paths, plan.labels))
    if training:
        files = files.shuffle(len(plan.paths), seed=seed, reshuffle_each_iteration=True)
    images = files.map(
        lambda p, y: (resize(decode_file(p, exif), size, **resize_kw), y),
        num_parallel_calls=AUTOTUNE,
        deterministic=True,
    )
    return images.batch(batch_size, drop_remainder=drop_remainder)


def _generic_batches(
    dataset, plan, size, batch_size, training, seed, drop_remainder, resize_kw, buffer, cache
) -> tf.data.Dataset:
    def to_uint8(x, y):
        return tf.cast(tf.round(resize(to_rgb(x), size, **resize_kw)), tf.uint8), y

    static = dataset.element_spec[0].shape
    if cache:
        # Cache small resized uint8 images, then shuffle them completely each epoch.
        dataset = dataset.map(to_uint8, num_parallel_calls=AUTOTUNE, deterministic=True).cache()
        count = plan.size() if plan is not None else None
        if training:
            dataset = dataset.shuffle(
                count or buffer or 1024, seed=seed, reshuffle_each_iteration=True
            )
        dataset = dataset.batch(batch_size, drop_remainder=drop_remainder)
        return dataset.map(lambda x, y: (tf.cast(x, tf.float32), y))
    if training:
        dataset = dataset.shuffle(buffer or 1024, seed=seed, reshuffle_each_iteration=True)
    if static.is_fully_defined():
        # Same-size images: batch first, then resize whole batches (much faster).
        dataset = dataset.batch(batch_size, drop_remainder=drop_remainder)
        return dataset.map(
            lambda x, y: (resize(to_rgb(x, batched=True), size, **resize_kw), y),
            num_parallel_calls=AUTOTUNE,
            deterministic=True,
        )
    dataset = dataset.map(
        lambda x, y: (resize(to_rgb(x), size, **resize_kw), y),
        num_parallel_calls=AUTOTUNE,
        deterministic=True,
    )
    return dataset.batch(batch_size, drop_remainder=drop_remainder)
