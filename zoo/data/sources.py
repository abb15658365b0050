"""Dataset sources: :func:`load` picks the kind (arrays, Fashion-MNIST, folder, tfds).

Every source yields unbatched ``tf.data`` datasets of ``(uint8 image (height, width, 3),
int64 label)`` plus class names, as a :class:`~zoo.data.datasource.DataSource`;
:func:`zoo.data.pipeline` turns a split into batches for a model. Each kind lives in its own
module (``zoo.data.arrays``, ``fashion_mnist``, ``folder``, ``tfds``); the splitting they
share lives in ``zoo.data.datasource``.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from zoo.data.arrays import load_arrays
from zoo.data.datasource import (
    SPLITS,
    CorruptImagesError,
    DatasetUnavailableError,
    DataSource,
    check_options,
)
from zoo.data.fashion_mnist import (
    DEBIAN_FASHION_MNIST_DIR,
    FASHION_MNIST_CLASSES,
    fashion_mnist_search_dirs,
    load_fashion_mnist,
    read_idx,
)
from zoo.data.folder import load_folder
from zoo.data.tfds import load_tfds
from zoo.errors import InvalidValueError

__all__ = [
    "DEBIAN_FASHION_MNIST_DIR",
    "FASHION_MNIST_CLASSES",
    "SPLITS",
    "CorruptImagesError",
    "DataSource",
    "DatasetUnavailableError",
    "fashion_mnist_search_dirs",
    "load",
    "read_idx",
]


def load(source: str | tuple[np.ndarray, np.ndarray], **options: Any) -> DataSource:
    """Loads a dataset with stable train / validation / test splits.

    Sources:
        - ``"fashion_mnist"``: the real Fashion-MNIST (60,000 train, 10,000 test, 28x28
          greyscale as RGB), read from Debian's ``dataset-fashion-mnist`` files, then Keras'
          cache (``$KERAS_HOME/datasets/fashion-mnist``), then Keras' downloader.
        - ``"folder:PATH"``: one sub-folder per class (sorted names = class names) of
          JPEG/PNG/BMP/GIF/WebP files, any colour mode.
        - ``"tfds:NAME[:SPLIT]"``: a tfds image-classification dataset (``SPLIT`` defaults
          to ``train``; its ``test`` split, if any, becomes :attr:`DataSource.test`).
        - ``(x, y)``: numpy arrays, ``x`` uint8 ``(n, h, w)``, ``(n, h, w, 1)`` or
          ``(n, h, w, 3)``, ``y`` integer labels ``(n,)``.

    Options (all keyword):
        validation_fraction: share of the training data held out for validation, chosen by
            a stable hash of each example's identity and ``seed`` (default 0.1).
        test_fraction: share of the training data held out as the test split the same way
            (disjoint from validation, stable across runs). Folders and arrays have no
            other test split; for fashion_mnist and tfds it replaces the dataset's own test
            split, so give it only to hold out a test set from the training data.
        seed: split and subsampling seed (default 0).
        train_size / per_class: stratified, deterministic subsample of the training split.
        strict: (folder) refuse the dataset if any file cannot be decoded.
        labels_csv: (folder) a CSV of ``path,label1;label2`` rows (paths relative to the
            folder, optional header ``path,labels``) instead of class sub-folders: labels
            are then multi-hot float32 ``(num_classes,)``, class names the sorted labels.
            Every row must stay inside the folder (no absolute path, no ``..`` or symbolic
            link leading out); a relative ``labels_csv`` is inside the folder too, an
            absolute one may be anywhere.
        exif_transpose: (folder) apply the EXIF orientation tag (default False: images are
            seen as stored, exactly as `serve_bytes` decodes them; see zoo.data.images).
        class_names / test: (arrays) class names; ``(x_test, y_test)``.
        data_dir / download: (fashion_mnist, tfds) where to look; whether to download
            (default: yes unless ``ZOO_OFFLINE`` is set).
        test_split: (tfds) the tfds split used as test (default "test" if it exists and
            no ``test_fraction`` is given).

    Returns:
        A :class:`DataSource`.

    Raises:
        ValueError: unknown source or option, bad option value, empty or single-class data,
            labels out of range; :class:`CorruptImagesError` with ``strict=True``;
            :class:`zoo.files.OutsideFolderError` for labels CSV rows outside the folder.
        FileNotFoundError: a folder that does not exist; :class:`DatasetUnavailableError`
            when a dataset is not here and cannot be downloaded.
    """
    if isinstance(source, tuple | list) and len(source) == 2 and not isinstance(source, str):
        return load_arrays(source, check_options("arrays", options))
    if not isinstance(source, str):
        raise InvalidValueError(
            f"source={type(source).__name__}; expected 'fashion_mnist', 'folder:PATH', "
            "'tfds:NAME[:SPLIT]' or a tuple (x, y) of numpy arrays."
        )
    kind, _, rest = source.partition(":")
    if source == "fashion_mnist":
        return load_fashion_mnist(check_options("fashion_mnist", options))
    if kind == "folder" and rest:
        return load_folder(rest, check_options("folder", options))
    if kind == "tfds" and rest:
        return load_tfds(rest, check_options("tfds", options))
    raise InvalidValueError(
        f"Unknown data source {source!r}; expected 'fashion_mnist', 'folder:PATH', "
        "'tfds:NAME[:SPLIT]' or a tuple (x, y) of numpy arrays. `zoo datasets` lists them."
    )
