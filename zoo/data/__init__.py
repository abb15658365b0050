"""Dataset sources, tf.data input pipelines and training-batch augmentation.

``load(source, **options)`` gives a :class:`DataSource` with stable train / validation /
test splits of ``(uint8 image (h, w, 3), int64 label)``; ``DataSource.pipeline(split,
image_size, batch_size, training, augment)`` batches a split for a model;
``augmentation(names, num_classes=...)`` builds the :class:`Augmentation` applied to
training batches (MixUp and CutMix mix labels with the images' weights).

Example::

    from zoo import data
    ds = data.load("fashion_mnist", validation_fraction=0.1, seed=0, per_class=100)
    train = ds.pipeline("train", (224, 224), 32, training=True, augment=["flip", "mixup"])
    val = ds.pipeline("validation", (224, 224), 32, augment=["flip", "mixup"])
"""

from zoo.data.augment import (
    AUGMENTATIONS,
    Augmentation,
    augmentation,
    mixes_labels,
    one_hot_labels,
)
from zoo.data.catalog import available_sources
from zoo.data.images import IMAGE_EXTENSIONS, check_image, decode_image_bytes, decode_rgb
from zoo.data.pipeline import pipeline, resize
from zoo.data.plans import SplitPlan, dataset_from_plan
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
    "Augmentation",
    "CorruptImagesError",
    "DataSource",
    "DatasetUnavailableError",
    "SplitPlan",
    "assign_splits",
    "augmentation",
    "available_sources",
    "check_image",
    "dataset_from_plan",
    "decode_image_bytes",
    "decode_rgb",
    "fashion_mnist_search_dirs",
    "load",
    "mixes_labels",
    "one_hot_labels",
    "pipeline",
    "read_idx",
    "resize",
    "stratified_subsample",
    "unit_hash",
]
