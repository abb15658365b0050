"""What a split of a :class:`zoo.data.DataSource` holds, and its unbatched tf.data dataset.

A :class:`SplitPlan` is handed to :func:`zoo.data.pipeline` as an argument, so batches can
be built efficiently (shuffle indices or paths before decoding, resize whole batches).
"""

from __future__ import annotations

import os
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
import tensorflow as tf

from zoo.data import images as _images


@dataclass(eq=False)
class SplitPlan:
    """What a split of a :class:`DataSource` holds, so pipelines can be built efficiently.

    Attributes:
        kind: "memory" (``images`` in RAM), "files" (``paths`` decoded with Pillow) or
            "tfds" (a tfds dataset, ``make`` builds it).
        identities: identity of each example (None for tfds: not enumerated).
        labels: int64 ``(n,)`` (None for tfds).
        images: uint8 ``(n, h, w)`` or ``(n, h, w, c)`` for "memory".
        paths: absolute file paths for "files".
        exif_transpose: for "files", whether the EXIF orientation is applied (default
            not, as in serving: :mod:`zoo.data.images`).
        make: for "tfds", builds the unbatched dataset ``(image, label)``.
        num_classes: number of classes of the source.
    """

    kind: str
    num_classes: int
    identities: list[str] | None = None
    labels: np.ndarray | None = None
    images: np.ndarray | None = None
    paths: list[str] | None = None
    exif_transpose: bool = False
    make: Callable[[], tf.data.Dataset] | None = None

    def size(self) -> int | None:
        """Number of examples, or ``None`` when not enumerated (tfds)."""
        return None if self.identities is None else len(self.identities)


def dataset_from_plan(plan: SplitPlan) -> tf.data.Dataset:
    """The unbatched ``(uint8 image (h, w, 3), int64 label)`` dataset of ``plan``."""
    if plan.kind == "memory":
        dataset = tf.data.Dataset.from_tensor_slices((plan.images, plan.labels))
        dataset = dataset.map(lambda x, y: (to_rgb(x), y))
    elif plan.kind == "files":
        exif = plan.exif_transpose
        dataset = tf.data.Dataset.from_tensor_slices((plan.paths, plan.labels))
        dataset = dataset.map(
            lambda p, y: (decode_file(p, exif), y),
            num_parallel_calls=tf.data.AUTOTUNE,
            deterministic=True,
        )
    else:
        dataset = plan.make()
    return dataset


def to_rgb(images: tf.Tensor, batched: bool = False) -> tf.Tensor:
    """Greyscale, RGB or RGBA uint8 images -> RGB (alpha dropped, as TensorFlow's decoders do).

    Args:
        images: ``(h, w)`` or ``(h, w, 1|3|4)``; with ``batched``, a leading batch axis.
        batched: whether the first axis is the batch.

    Returns:
        ``(h, w, 3)`` (or ``(batch, h, w, 3)``), same dtype.
    """
    if images.shape.rank == (3 if batched else 2):
        images = images[..., None]
    channels = images.shape[-1]
    if channels == 1:
        return tf.repeat(images, 3, axis=-1)
    if channels == 4:
        return images[..., :3]
    return images


def decode_file(path: tf.Tensor, exif_transpose: bool = False) -> tf.Tensor:
    """Decodes one validated image file with Pillow inside tf.data.

    Args:
        path: scalar string tensor.
        exif_transpose: apply the EXIF orientation tag (default not, as in serving).

    Returns:
        uint8 tensor ``(height, width, 3)``.
    """

    def _decode(p: bytes) -> np.ndarray:
        return _images.decode_rgb(os.fsdecode(p), exif_transpose)

    image = tf.numpy_function(_decode, [path], tf.uint8, stateful=False)
    image.set_shape([None, None, 3])
    return image
