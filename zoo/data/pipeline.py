"""Batched tf.data input pipelines and Keras augmentation stacks.

:func:`pipeline` turns an unbatched split of ``(uint8 image, int64 label)`` into batches of
float32 pixels 0..255 sized for a backbone; :func:`augmentation` builds the stack of Keras
preprocessing layers applied to training batches.
"""

from __future__ import annotations

import math
import weakref
from collections.abc import Mapping, Sequence
from typing import Any

import keras
import numpy as np
import tensorflow as tf

from zoo.data.sources import SplitPlan, decode_file, plan_of, to_rgb
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

# Canonical order: geometry first, colour next, label mixing last (it needs final images).
AUGMENTATIONS = ("crop", "flip", "rotation", "zoom", "rand_augment", "mixup", "cutmix")
_ALIASES = {
    "random_crop": "crop",
    "random_flip": "flip",
    "random_rotation": "rotation",
    "random_zoom": "zoom",
    "randaugment": "rand_augment",
    "mix_up": "mixup",
    "cut_mix": "cutmix",
}
DEFAULT_CROP_FRACTION = 0.875  # the crop covers 87.5% of each side, as in Inception training
_CROP_FRACTION: weakref.WeakKeyDictionary = weakref.WeakKeyDictionary()


def augmentation(
    names_or_config: str | Sequence[str] | Mapping[str, Any],
    image_size: tuple[int, int] | None = None,
    seed: int | None = None,
) -> keras.layers.Layer:
    """Builds a stack of Keras preprocessing layers for training batches.

    Names (in the order applied): ``crop`` (RandomCrop to ``image_size`` from images the
    pipeline resizes ``1 / fraction`` larger), ``flip`` (RandomFlip, horizontal),
    ``rotation`` (RandomRotation, factor 0.1 of a full turn), ``zoom`` (RandomZoom 0.1),
    ``rand_augment`` (RandAugment, Cubuk et al. 2019, value range 0..255), ``mixup``
    (MixUp, Zhang et al. 2018, alpha 0.2) and ``cutmix`` (CutMix, Yun et al. 2019).

    A config dict maps names to a value: ``True`` for the defaults, a number for the main
    parameter (crop fraction, flip is a mode string, rotation/zoom factor, RandAugment
    factor, MixUp alpha, CutMix factor), or a dict of the Keras layer's keyword arguments.
    ``False`` / ``None`` leaves the name out.

    MixUp and CutMix mix labels, so they need one-hot float labels: :func:`pipeline`
    switches to one-hot labels whenever the stack contains one of them (on every split it
    is given that ``augment``, training or not, so the loss sees one format).

    Args:
        names_or_config: e.g. ``["flip", "rotation"]``, ``"flip,zoom"`` or
            ``{"flip": True, "rand_augment": {"num_ops": 2}, "mixup": 0.4}``.
        image_size: ``(height, width)``; required for ``crop``.
        seed: base seed of the layers' random draws.

    Returns:
        A ``keras.layers.Pipeline`` taking ``{"images": (batch, h, w, 3) float32 0..255,
        "labels": ...}`` (or just images) with ``training=True``.

    Raises:
        ValueError: unknown names or bad values (all listed at once).
    """
    config = _normalize(names_or_config)
    layers = []
    problems = []
    crop_fraction = None
    for index, name in enumerate(n for n in AUGMENTATIONS if n in config):
        value = config[name]
        layer_seed = None if seed is None else int(seed) + index
        try:
            if name == "crop":
                layer, crop_fraction = _crop_layer(value, image_size, layer_seed)
            else:
                layer = _make_layer(name, value, layer_seed)
        except (TypeError, ValueError) as error:
            problems.append(f"{name}={value!r}: {error}")
            continue
        layers.append(layer)
    if problems:
        raise InvalidValueError("Bad augmentation config: " + "; ".join(problems) + ".")
    stack = keras.layers.Pipeline(layers, name="augmentation")
    if crop_fraction is not None:
        _CROP_FRACTION[stack] = crop_fraction
    return stack


def _normalize(names_or_config: Any) -> dict[str, Any]:
    if isinstance(names_or_config, str):
        items = {n.strip(): True for n in names_or_config.split(",") if n.strip()}
    elif isinstance(names_or_config, Mapping):
        items = dict(names_or_config)
    elif isinstance(names_or_config, Sequence):
        items = {str(n): True for n in names_or_config}
    else:
        raise InvalidValueError(
            f"augmentation got {type(names_or_config).__name__}; expected a list of names, "
            f"a comma-separated string or a dict (names: {', '.join(AUGMENTATIONS)})."
        )
    config = {}
    unknown = []
    for raw, value in items.items():
        name = _ALIASES.get(str(raw).lower(), str(raw).lower())
        if name not in AUGMENTATIONS:
            unknown.append(str(raw))
        elif value is not None and value is not False:
            config[name] = value
    if unknown:
        raise InvalidValueError(
            f"Unknown augmentation(s): {', '.join(unknown)}; expected some of "
            f"{', '.join(AUGMENTATIONS)}."
        )
    return config


def _crop_layer(value: Any, image_size: Any, seed: int | None) -> tuple[keras.layers.Layer, float]:
    if image_size is None:
        raise InvalidValueError("crop needs image_size=(height, width)")
    fraction = DEFAULT_CROP_FRACTION if value is True else float(value)
    if not 0.0 < fraction <= 1.0:
        raise InvalidValueError(f"the crop fraction must be in (0, 1], got {fraction}")
    height, width = (int(v) for v in image_size)
    return keras.layers.RandomCrop(height, width, seed=seed), fraction


def _make_layer(name: str, value: Any, seed: int | None) -> keras.layers.Layer:
    kwargs: dict[str, Any] = dict(value) if isinstance(value, Mapping) else {}
    main = None if value is True or isinstance(value, Mapping) else value
    kwargs.setdefault("seed", seed)
    if name == "flip":
        kwargs.setdefault("mode", main or "horizontal")
        return keras.layers.RandomFlip(**kwargs)
    if name == "rotation":
        kwargs.setdefault("factor", 0.1 if main is None else float(main))
        return keras.layers.RandomRotation(**kwargs)
    if name == "zoom":
        kwargs.setdefault("height_factor", 0.1 if main is None else float(main))
        return keras.layers.RandomZoom(**kwargs)
    if name == "rand_augment":
        kwargs.setdefault("value_range", (0, 255))
        if main is not None:
            kwargs.setdefault("factor", float(main))
        return keras.layers.RandAugment(**kwargs)
    if name == "mixup":
        kwargs.setdefault("alpha", 0.2 if main is None else float(main))
        return keras.layers.MixUp(**kwargs)
    kwargs.setdefault("factor", 1.0 if main is None else float(main))
    return keras.layers.CutMix(**kwargs)


def mixes_labels(layer: keras.layers.Layer | None) -> bool:
    """Whether ``layer`` (or a layer inside it) is MixUp or CutMix, which need one-hot labels."""
    if layer is None:
        return False
    inner = getattr(layer, "layers", None) or [layer]
    return any(isinstance(x, keras.layers.MixUp | keras.layers.CutMix) for x in inner)


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
    dataset: tf.data.Dataset,
    image_size: tuple[int, int],
    batch_size: int = 32,
    training: bool = False,
    augment: str | Sequence[str] | Mapping[str, Any] | keras.layers.Layer | None = None,
    *,
    seed: int = 0,
    method: str = "bilinear",
    crop_to_aspect_ratio: bool = False,
    antialias: bool = False,
    label_mode: str = "auto",
    num_classes: int | None = None,
    shuffle_buffer: int | None = None,
    cache: bool = False,
    drop_remainder: bool = False,
) -> tf.data.Dataset:
    """Batches a split for a model: decode, RGB, resize, (shuffle, augment), batch, prefetch.

    Order is deterministic for a ``seed``; only training pipelines shuffle (reshuffled each
    epoch, seeded) and augment. Splits from :func:`zoo.data.load` are shuffled before
    decoding (only indices or paths sit in the shuffle buffer) and in-memory data such as
    Fashion-MNIST is gathered and resized a whole batch at a time.

    Args:
        dataset: unbatched ``(uint8 image (h, w, 3), int label)``, e.g. ``data.train``.
        image_size: ``(height, width)`` of the backbone input, e.g. ``spec.input_size``.
        batch_size: examples per batch.
        training: shuffle and augment.
        augment: names / config for :func:`augmentation`, or a Keras layer; applied only
            when ``training``, but MixUp / CutMix in it make the labels one-hot either way.
        seed: shuffle seed (and augmentation seed when ``augment`` is not a layer).
        method: resize method (``tf.image.resize``).
        crop_to_aspect_ratio: centre-crop to the target aspect ratio before resizing.
        antialias: antialiased downsampling.
        label_mode: "int" (int64 ``(batch,)``), "one_hot" (float32 ``(batch, classes)``)
            or "auto" (one-hot when ``augment`` mixes labels, else int).
        num_classes: needed for one-hot labels of a dataset not made by :func:`load`.
        shuffle_buffer: buffer for datasets not made by :func:`load` (default 1024);
            splits from :func:`load` are shuffled completely.
        cache: keep resized uint8 images in memory after the first epoch (small datasets).
        drop_remainder: drop the last incomplete batch.

    Returns:
        Batched dataset of ``(float32 (batch, height, width, 3) pixels 0..255, labels)``.

    Raises:
        ValueError: bad sizes, method, label mode, or one-hot labels with unknown classes.
    """
    image_size = _check_args(image_size, batch_size, method, label_mode)
    plan = plan_of(dataset)
    stack = None
    if augment is not None:
        stack = (
            augment
            if isinstance(augment, keras.layers.Layer)
            else augmentation(augment, image_size=image_size, seed=seed)
        )
    one_hot = label_mode == "one_hot" or (label_mode == "auto" and mixes_labels(stack))
    if one_hot:
        num_classes = num_classes or (plan.num_classes if plan is not None else None)
        if not num_classes:
            raise InvalidValueError(
                "One-hot labels (label_mode='one_hot', or MixUp/CutMix in augment) need "
                "num_classes= for a dataset not made by zoo.data.load."
            )
    size = image_size
    if training and stack is not None and stack in _CROP_FRACTION:
        fraction = _CROP_FRACTION[stack]
        size = (math.ceil(image_size[0] / fraction), math.ceil(image_size[1] / fraction))
    resize_kw = {
        "method": method,
        "crop_to_aspect_ratio": crop_to_aspect_ratio,
        "antialias": antialias,
    }

    if plan is not None and plan.kind == "memory":
        batches = _memory_batches(plan, size, batch_size, training, seed, drop_remainder, resize_kw)
    elif plan is not None and plan.kind == "files" and not cache:
        batches = _file_batches(plan, size, batch_size, training, seed, drop_remainder, resize_kw)
    else:
        batches = _generic_batches(
            dataset,
            plan,
            size,
            batch_size,
            training,
            seed,
            drop_remainder,
            resize_kw,
            shuffle_buffer,
            cache,
        )
    if one_hot:
        depth = int(num_classes)
        batches = batches.map(lambda x, y: (x, tf.one_hot(y, depth, dtype=tf.float32)))
    if training and stack is not None:
        batches = batches.map(
            lambda x, y: _apply_stack(stack, x, y), num_parallel_calls=AUTOTUNE, deterministic=True
        )
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


def _apply_stack(stack: keras.layers.Layer, images: tf.Tensor, labels: tf.Tensor):
    out = stack({"images": images, "labels": labels}, training=True)
    # Keras' layers hand labels back as floats; keep int labels int for sparse losses.
    return tf.cast(out["images"], tf.float32), tf.cast(out["labels"], labels.dtype)


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
