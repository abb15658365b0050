"""Fashion-MNIST as a source: Debian's IDX files, Keras' cache, then Keras' downloader.

Fashion-MNIST (Xiao, Rasul and Vollgraf, 2017, arXiv:1708.07747): 70,000 28x28 greyscale
images of 10 clothing classes, 60,000 for training and 10,000 for testing.
"""

from __future__ import annotations

import gzip
import os
import struct
from functools import lru_cache
from pathlib import Path
from typing import Any

import numpy as np

from zoo.data.datasource import (
    DatasetUnavailableError,
    DataSource,
    array_digest,
    build_source,
    make_splits,
)
from zoo.data.plans import SplitPlan
from zoo.errors import InvalidValueError

FASHION_MNIST_CLASSES = (
    "T-shirt/top",
    "Trouser",
    "Pullover",
    "Dress",
    "Coat",
    "Sandal",
    "Shirt",
    "Sneaker",
    "Bag",
    "Ankle boot",
)
# Where Debian's `dataset-fashion-mnist` package puts the four IDX files.
DEBIAN_FASHION_MNIST_DIR = Path("/usr/share/datasets/fashion-mnist")
_FASHION_FILES = {
    "train_images": "train-images-idx3-ubyte",
    "train_labels": "train-labels-idx1-ubyte",
    "test_images": "t10k-images-idx3-ubyte",
    "test_labels": "t10k-labels-idx1-ubyte",
}


def keras_datasets_dir() -> Path:
    """Keras' dataset cache: ``$KERAS_HOME/datasets`` (default ``~/.keras/datasets``)."""
    return Path(os.environ.get("KERAS_HOME", Path.home() / ".keras")) / "datasets"


def fashion_mnist_search_dirs() -> list[Path]:
    """Where Fashion-MNIST's IDX files are looked for, in order."""
    return [DEBIAN_FASHION_MNIST_DIR, keras_datasets_dir() / "fashion-mnist"]


def find_idx(directory: Path) -> dict[str, Path] | None:
    found = {}
    for key, stem in _FASHION_FILES.items():
        for candidate in (directory / f"{stem}.gz", directory / stem):
            if candidate.is_file():
                found[key] = candidate
                break
        else:
            return None
    return found


def read_idx(path: str | os.PathLike) -> np.ndarray:
    """Reads an IDX file of unsigned bytes (gzip-compressed if it ends in ``.gz``).

    The format (LeCun's MNIST page): two zero bytes, a type byte (0x08 = uint8), a byte
    with the number of dimensions, one big-endian uint32 per dimension, then the data.

    Returns:
        uint8 array with the file's dimensions, e.g. ``(60000, 28, 28)``.

    Raises:
        ValueError: bad magic number or a size that does not match the header.
    """
    path = Path(path)
    opener = gzip.open if path.suffix == ".gz" else open
    try:
        with opener(path, "rb") as f:
            data = f.read()
    except (OSError, EOFError) as error:
        raise InvalidValueError(f"Cannot read IDX file {path}: {error}") from error
    if len(data) < 4 or data[:2] != b"\0\0" or data[2] != 0x08 or data[3] == 0:
        raise InvalidValueError(
            f"{path} is not an IDX file of unsigned bytes: magic {data[:4].hex() or 'missing'} "
            "(expected 000008NN). Re-install the files (`apt-get install "
            "--reinstall dataset-fashion-mnist`) or delete them from Keras' cache."
        )
    ndim = data[3]
    header = 4 + 4 * ndim
    dims = struct.unpack(f">{ndim}I", data[4:header]) if len(data) >= header else ()
    expected = header + int(np.prod(dims, dtype=np.int64)) if dims else None
    if expected is None or len(data) != expected:
        raise InvalidValueError(
            f"{path} holds {len(data)} bytes but its header {dims} needs {expected}; "
            "the file is truncated or corrupt. Re-install or re-download it."
        )
    return np.frombuffer(data, dtype=np.uint8, offset=header).reshape(dims)


@lru_cache(maxsize=4)
def _read_fashion_mnist(paths: tuple[tuple[str, str], ...], _stamp: tuple) -> dict[str, np.ndarray]:
    arrays = {key: read_idx(path) for key, path in paths}
    problems = []
    for part in ("train", "test"):
        x, y = arrays[f"{part}_images"], arrays[f"{part}_labels"]
        if x.ndim != 3 or x.shape[1:] != (28, 28):
            problems.append(f"{part} images have shape {x.shape} (expected (n, 28, 28))")
        if y.ndim != 1 or len(y) != len(x):
            problems.append(f"{part} labels have shape {y.shape} (expected ({len(x)},))")
        elif len(y) and y.max() >= len(FASHION_MNIST_CLASSES):
            problems.append(f"{part} labels reach {y.max()} (expected 0..9)")
    if problems:
        where = os.path.dirname(paths[0][1])
        raise InvalidValueError(
            f"Fashion-MNIST files in {where} are inconsistent: {'; '.join(problems)}."
        )
    for array in arrays.values():
        array.flags.writeable = False  # shared between loads: keep it immutable
    return arrays


def _fashion_mnist_arrays(data_dir: str | os.PathLike | None, download: bool | None):
    dirs = [Path(data_dir)] if data_dir is not None else fashion_mnist_search_dirs()
    for directory in dirs:
        files = find_idx(directory)
        if files is not None:
            items = tuple(sorted((k, str(p)) for k, p in files.items()))
            stamp = tuple((p, os.stat(p).st_mtime_ns, os.stat(p).st_size) for _, p in items)
            return _read_fashion_mnist(items, stamp), str(directory)
    if download is None:
        download = not os.environ.get("ZOO_OFFLINE") and data_dir is None
    names = ", ".join(f"{stem}.gz" for stem in _FASHION_FILES.values())
    fix = (
        "Install Debian's package (`apt-get install dataset-fashion-mnist`), or put the four "
        f"IDX files ({names}) in {dirs[-1]}"
        + ("" if data_dir is not None else f" or {DEBIAN_FASHION_MNIST_DIR}")
        + "."
    )
    if not download:
        raise DatasetUnavailableError(
            f"Fashion-MNIST not found in {', '.join(map(str, dirs))} and downloading is off"
            f"{' (ZOO_OFFLINE is set)' if os.environ.get('ZOO_OFFLINE') else ''}. {fix}"
        )
    import keras

    try:
        (x, y), (xt, yt) = keras.datasets.fashion_mnist.load_data()
    except Exception as error:  # urllib, socket and Keras' own errors alike
        raise DatasetUnavailableError(
            f"Downloading Fashion-MNIST failed: {error}. {fix}"
        ) from error
    arrays = {"train_images": x, "train_labels": y, "test_images": xt, "test_labels": yt}
    return arrays, "keras.datasets.fashion_mnist"


def load_fashion_mnist(options: dict[str, Any]) -> DataSource:
    arrays, origin = _fashion_mnist_arrays(options.get("data_dir"), options.get("download"))
    x, y = arrays["train_images"], arrays["train_labels"].astype(np.int64)
    xt, yt = arrays["test_images"], arrays["test_labels"].astype(np.int64)
    identities = [str(i) for i in range(len(x))]
    n_cls = len(FASHION_MNIST_CLASSES)

    def make_plan(positions: np.ndarray) -> SplitPlan:
        return SplitPlan(
            "memory", n_cls, [identities[i] for i in positions], y[positions], x[positions]
        )

    test = None
    if not options.get("test_fraction"):  # the official test set, unless told to hold one out
        test = SplitPlan("memory", n_cls, [f"test:{i}" for i in range(len(xt))], yt, xt)
    plans = make_splits(identities, y, options, make_plan, fixed_test=test)
    digests: dict[str, str] = {}

    def content_key(split: str) -> str:
        part = "test" if split == "test" and test is not None else "train"
        if part not in digests:
            digests[part] = array_digest(arrays[f"{part}_images"], arrays[f"{part}_labels"])
        return digests[part]

    data = build_source(
        "fashion_mnist", FASHION_MNIST_CLASSES, plans, options, content_key=content_key
    )
    data.origin = origin
    return data
