"""Dataset sources and tf.data input pipelines.

``load(source, **options)`` gives a :class:`DataSource` with stable train / validation /
test splits of ``(uint8 image (h, w, 3), int64 label)``; ``pipeline(split, image_size,
batch_size, training, augment)`` batches a split for a model; ``augmentation(names)``
builds the Keras preprocessing-layer stack used on training batches.

Example::

    from zoo import data
    ds = data.load("fashion_mnist", validation_fraction=0.1, seed=0, per_class=100)
    train = data.pipeline(ds.train, (224, 224), 32, training=True, augment=["flip"])
    val = data.pipeline(ds.validation, (224, 224), 32)
"""

from zoo.data.catalog import available_sources
from zoo.data.images import IMAGE_EXTENSIONS, check_image, decode_rgb
from zoo.data.pipeline import AUGMENTATIONS, augmentation, mixes_labels, pipeline, resize
from zoo.data.sources import (
    FASHION_MNIST_CLASSES,
    CorruptImagesError,
    DatasetUnavailableError,
    DataSource,
    fashion_mnist_search_dirs,
    load,
    read_idx,
)
from zoo.data.splits import assign_splits, stratified_subsample, unit_hash

__all__ = [
    "AUGMENTATIONS",
    "FASHION_MNIST_CLASSES",
    "IMAGE_EXTENSIONS",
    "CorruptImagesError",
    "DataSource",
    "DatasetUnavailableError",
    "assign_splits",
    "augmentation",
    "available_sources",
    "check_image",
    "decode_rgb",
    "fashion_mnist_search_dirs",
    "load",
    "mixes_labels",
    "pipeline",
    "read_idx",
    "resize",
    "stratified_subsample",
    "unit_hash",
]
