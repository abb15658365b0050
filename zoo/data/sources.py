"""Dataset sources: Fashion-MNIST, image folders, tfds datasets and numpy arrays.

:func:`load` is the one entry point. Every source yields unbatched ``tf.data`` datasets of
``(uint8 image (height, width, 3), int64 label)`` plus class names; :func:`zoo.data.pipeline`
turns a split into batches for a model.
"""

from __future__ import annotations

import csv
import gzip
import hashlib
import json
import os
import struct
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from functools import lru_cache
from pathlib import Path
from typing import Any

import numpy as np
import tensorflow as tf

from zoo.data import images as _images
from zoo.data import splits as _splits
from zoo.data.pipeline import pipeline as _batches
from zoo.data.plans import SplitPlan, dataset_from_plan, to_rgb
from zoo.errors import InvalidValueError, MissingFileError, UnknownNameError, ZooError

SPLITS = ("train", "validation", "test")

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


class DatasetUnavailableError(ZooError, FileNotFoundError):
    """The dataset is neither on this machine nor downloadable (offline)."""


class CorruptImagesError(ZooError, ValueError):
    """``strict=True`` and some files of an image folder cannot be decoded."""


# -- the object load() returns ------------------------------------------------------------


@dataclass(eq=False)
class DataSource:
    """Splits of one dataset as unbatched ``tf.data.Dataset`` of ``(image, label)``.

    Images are uint8 ``(height, width, 3)`` (sizes may differ between examples), labels
    int64 scalars in ``[0, len(class_names))`` (multi-hot float32 ``(num_classes,)`` for a
    folder with a labels CSV: :attr:`multi_label`).

    Attributes:
        source: the canonical source string, e.g. ``"fashion_mnist"`` or ``"folder:/data"``.
        class_names: class names, index = label.
        train: training split.
        validation: validation split (taken from the training data by a stable hash), or
            ``None`` when ``validation_fraction=0``.
        test: test split, or ``None`` when the source has none.
        skipped: ``(path, reason)`` for each file left out because it cannot be decoded.
        options: the options that decided the splits (seed, fractions, subsampling).
        origin: where the data was read from (a folder, or "keras.datasets.fashion_mnist").
    """

    source: str
    class_names: list[str]
    train: tf.data.Dataset
    validation: tf.data.Dataset | None
    test: tf.data.Dataset | None
    skipped: list[tuple[str, str]] = field(default_factory=list)
    options: dict[str, Any] = field(default_factory=dict)
    origin: str | None = None
    _plans: dict[str, SplitPlan] = field(default_factory=dict, repr=False)
    _content_key: Callable[[str], str] | None = field(default=None, repr=False)
    _fingerprints: dict[str, str] = field(default_factory=dict, repr=False)

    @property
    def num_classes(self) -> int:
        """Number of classes."""
        return len(self.class_names)

    @property
    def multi_label(self) -> bool:
        """Whether labels are multi-hot float32 ``(num_classes,)`` (a folder's labels CSV)."""
        labels = self._plans["train"].labels
        return labels is not None and labels.ndim == 2

    def split(self, name: str) -> tf.data.Dataset | None:
        """The split called ``name`` ("train", "validation" or "test").

        Raises:
            KeyError: for another name.
        """
        if name not in SPLITS:
            raise UnknownNameError(f"Unknown split {name!r}; expected one of {', '.join(SPLITS)}.")
        return getattr(self, name)

    def plan(self, split: str) -> SplitPlan | None:
        """What ``split`` holds (``None`` if absent), for :func:`zoo.data.pipeline`.

        Raises:
            KeyError: for an unknown split name.
        """
        self.split(split)
        return self._plans.get(split)

    def pipeline(
        self,
        split: str,
        image_size: tuple[int, int],
        batch_size: int = 32,
        training: bool = False,
        augment: Any = None,
        **options: Any,
    ) -> tf.data.Dataset:
        """Batches of ``split`` for a model: :func:`zoo.data.pipeline` of its plan.

        Args:
            split: "train", "validation" or "test".
            image_size, batch_size, training, augment, options: as for
                :func:`zoo.data.pipeline` (``num_classes`` is this source's).

        Returns:
            Batched ``(float32 (batch, height, width, 3) pixels 0..255, labels)``.

        Raises:
            KeyError: for an unknown split name; ValueError: for an absent split or bad
                arguments.
        """
        plan = self.plan(split)
        if plan is None:
            raise InvalidValueError(
                f"{self.source} has no {split} split; ask for validation_fraction / "
                "test_fraction when loading it."
            )
        return _batches(plan, image_size, batch_size, training, augment, **options)

    def num_examples(self, split: str) -> int | None:
        """Examples in ``split`` (0 if absent; ``None`` if unknown, e.g. tfds unsubsampled)."""
        self.split(split)
        plan = self._plans.get(split)
        if plan is None:
            return 0
        return None if plan.identities is None else len(plan.identities)

    def class_counts(self, split: str) -> dict[str, int] | None:
        """Examples per class name in ``split`` (``None`` where the labels are not known)."""
        self.split(split)
        plan = self._plans.get(split)
        if plan is None:
            return {name: 0 for name in self.class_names}
        if plan.labels is None:
            return None
        counts = _count_labels(plan.labels, self.num_classes)
        return {name: int(k) for name, k in zip(self.class_names, counts, strict=True)}

    def identities(self, split: str) -> list[str] | None:
        """Identity of each example of ``split`` (relative path or index), in order."""
        self.split(split)
        plan = self._plans.get(split)
        return None if plan is None or plan.identities is None else list(plan.identities)

    def fingerprint(self, split: str) -> str:
        """A stable hex digest of ``split``: the source, options, identities and content.

        Equal fingerprints mean the same examples with the same labels (file sizes and
        modification times for folders, the pixel bytes for arrays), so it can key caches.

        Raises:
            KeyError: for an unknown split name.
        """
        self.split(split)
        if split not in self._fingerprints:
            plan = self._plans.get(split)
            h = hashlib.sha256()
            head = {"source": self.source, "split": split, "options": self.options}
            h.update(json.dumps(head, sort_keys=True, default=str).encode())
            h.update(json.dumps(self.class_names).encode())
            if plan is not None and plan.identities is not None:
                for identity, label in zip(plan.identities, plan.labels, strict=True):
                    h.update(f"{identity}\0{_label_key(label)}\n".encode())
            if plan is not None and self._content_key is not None:
                h.update(self._content_key(split).encode())
            self._fingerprints[split] = h.hexdigest()
        return self._fingerprints[split]

    def summary(self) -> dict[str, Any]:
        """JSON-able description: source, classes, per-split counts, skipped files."""
        return {
            "source": self.source,
            "class_names": list(self.class_names),
            "examples": {s: self.num_examples(s) for s in SPLITS},
            "skipped": [{"path": p, "reason": r} for p, r in self.skipped],
            "options": dict(self.options),
        }


# -- load() ------------------------------------------------------------------------------

_COMMON = {"validation_fraction", "seed", "train_size", "per_class"}
_OPTIONS = {
    "fashion_mnist": _COMMON | {"test_fraction", "data_dir", "download"},
    "folder": _COMMON | {"test_fraction", "strict", "exif_transpose", "labels_csv"},
    "tfds": _COMMON | {"test_fraction", "data_dir", "download", "test_split"},
    "arrays": _COMMON | {"test_fraction", "class_names", "test"},
}


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
            labels out of range; :class:`CorruptImagesError` with ``strict=True``.
        FileNotFoundError: a folder that does not exist; :class:`DatasetUnavailableError`
            when a dataset is not here and cannot be downloaded.
    """
    if isinstance(source, tuple | list) and len(source) == 2 and not isinstance(source, str):
        return _load_arrays(source, _check_options("arrays", options))
    if not isinstance(source, str):
        raise InvalidValueError(
            f"source={type(source).__name__}; expected 'fashion_mnist', 'folder:PATH', "
            "'tfds:NAME[:SPLIT]' or a tuple (x, y) of numpy arrays."
        )
    kind, _, rest = source.partition(":")
    if source == "fashion_mnist":
        return _load_fashion_mnist(_check_options("fashion_mnist", options))
    if kind == "folder" and rest:
        return _load_folder(rest, _check_options("folder", options))
    if kind == "tfds" and rest:
        return _load_tfds(rest, _check_options("tfds", options))
    raise InvalidValueError(
        f"Unknown data source {source!r}; expected 'fashion_mnist', 'folder:PATH', "
        "'tfds:NAME[:SPLIT]' or a tuple (x, y) of numpy arrays. `zoo datasets` lists them."
    )


def _check_options(kind: str, options: dict[str, Any]) -> dict[str, Any]:
    unknown = sorted(set(options) - _OPTIONS[kind])
    if unknown:
        raise InvalidValueError(
            f"Unknown option(s) for a {kind} source: {', '.join(unknown)}; "
            f"expected some of {', '.join(sorted(_OPTIONS[kind]))}."
        )
    merged = {"validation_fraction": 0.1, "seed": 0, "train_size": None, "per_class": None}
    merged.update(options)
    _splits.check_fractions(merged["validation_fraction"], merged.get("test_fraction", 0.0))
    return merged


def _split_options(options: dict[str, Any]) -> dict[str, Any]:
    """The options that decide which examples land in which split (fingerprinted)."""
    keys = ("validation_fraction", "test_fraction", "seed", "train_size", "per_class")
    return {k: options.get(k) for k in keys if options.get(k) is not None}


def _make_splits(
    identities: list[str],
    labels: np.ndarray,
    options: dict[str, Any],
    make_plan: Callable[[np.ndarray], SplitPlan],
    fixed_test: SplitPlan | None = None,
) -> dict[str, SplitPlan]:
    """Hash-assigns examples to splits, subsamples train; returns a plan per present split."""
    assigned = _splits.assign_splits(
        identities,
        options["seed"],
        options["validation_fraction"],
        options.get("test_fraction", 0.0),
    )
    plans: dict[str, SplitPlan] = {}
    for code, name in enumerate(SPLITS):
        positions = np.flatnonzero(assigned == code)
        if name == "train":
            chosen = _splits.stratified_subsample(
                [identities[i] for i in positions],
                labels[positions],
                options["seed"],
                size=options["train_size"],
                per_class=options["per_class"],
            )
            positions = positions[chosen]
        if len(positions) or name == "train":
            plans[name] = make_plan(positions)
    if fixed_test is not None:
        plans["test"] = fixed_test
    return plans


def _build(
    source: str,
    class_names: Sequence[str],
    plans: dict[str, SplitPlan],
    options: dict[str, Any],
    skipped: list[tuple[str, str]] | None = None,
    content_key: Callable[[str], str] | None = None,
) -> DataSource:
    if plans["train"].size() == 0:
        raise InvalidValueError(
            f"{source}: the training split is empty; lower validation_fraction/test_fraction "
            "or add data."
        )
    datasets = {name: dataset_from_plan(plan) for name, plan in plans.items()}
    return DataSource(
        source=source,
        class_names=list(class_names),
        train=datasets["train"],
        validation=datasets.get("validation"),
        test=datasets.get("test"),
        skipped=list(skipped or []),
        options=_split_options(options),
        _plans=plans,
        _content_key=content_key,
    )


# -- arrays -------------------------------------------------------------------------------


def _check_arrays(
    x: Any, y: Any, what: str, num_classes: int | None
) -> tuple[np.ndarray, np.ndarray]:
    """Validates one (x, y) pair; returns uint8 images and int64 labels or raises all problems."""
    x, y = np.asarray(x), np.asarray(y)
    problems = []
    if x.ndim not in (3, 4):
        problems.append(f"{what} x has shape {x.shape} (expected (n, h, w) or (n, h, w, 1|3))")
    elif x.ndim == 4 and x.shape[-1] not in (1, 3):
        problems.append(f"{what} x has {x.shape[-1]} channels (expected 1 or 3)")
    numeric = np.issubdtype(x.dtype, np.number)
    if not numeric or (x.dtype != np.uint8 and x.size and (x.min() < 0 or x.max() > 255)):
        problems.append(f"{what} x has dtype {x.dtype} / values outside 0..255 (expected uint8)")
    integral = np.issubdtype(y.dtype, np.integer) or (
        np.issubdtype(y.dtype, np.floating) and np.all(np.mod(y, 1) == 0)
    )
    if y.ndim != 1 or len(y) != len(x):
        problems.append(f"{what} y has shape {y.shape} (expected ({len(x)},) integer labels)")
    elif not integral:
        problems.append(f"{what} y has dtype {y.dtype} (expected integer class indices)")
    elif len(y):
        limit = np.inf if num_classes is None else num_classes
        bad = np.unique(y[(y < 0) | (y >= limit)])
        if len(bad):
            problems.append(
                f"{what} y has labels out of range: {bad[:10].astype(np.int64).tolist()} "
                f"(expected 0 <= label < {num_classes or 'num_classes'}; check class_names)"
            )
    if problems:
        raise InvalidValueError("Bad arrays: " + "; ".join(problems) + ".")
    return np.ascontiguousarray(x.astype(np.uint8, copy=False)), y.astype(np.int64)


def _load_arrays(data: Sequence[Any], options: dict[str, Any]) -> DataSource:
    class_names = options.get("class_names")
    num_classes = len(class_names) if class_names is not None else None
    x, y = _check_arrays(data[0], data[1], "train", num_classes)
    test = options.get("test")
    if test is not None:
        x_test, y_test = _check_arrays(test[0], test[1], "test", num_classes)
    if class_names is None:
        top = max(int(y.max()) if len(y) else 0, int(y_test.max()) if test is not None else 0)
        class_names = [str(i) for i in range(top + 1)]
    if len(class_names) < 2:
        raise InvalidValueError(
            f"The arrays have {len(class_names)} class(es); classification needs at least 2."
        )
    if len(x) == 0:
        raise InvalidValueError("The arrays are empty (0 examples).")
    identities = [str(i) for i in range(len(x))]
    n_cls = len(class_names)

    def make_plan(positions: np.ndarray) -> SplitPlan:
        return SplitPlan(
            "memory", n_cls, [identities[i] for i in positions], y[positions], x[positions]
        )

    fixed_test = None
    if test is not None:
        if options.get("test_fraction"):
            raise InvalidValueError("Give either test=(x, y) or test_fraction, not both.")
        fixed_test = SplitPlan(
            "memory", n_cls, [f"test:{i}" for i in range(len(x_test))], y_test, x_test
        )
    train_digest = _array_digest(x, y)
    digests = {"train": train_digest, "validation": train_digest, "test": train_digest}
    if test is not None:
        digests["test"] = _array_digest(x_test, y_test)
    plans = _make_splits(identities, y, options, make_plan, fixed_test)
    return _build("arrays", class_names, plans, options, content_key=digests.__getitem__)


def _array_digest(x: np.ndarray, y: np.ndarray) -> str:
    h = hashlib.sha256(str((x.shape, y.shape)).encode())
    h.update(memoryview(x).cast("B"))
    h.update(memoryview(np.ascontiguousarray(y)).cast("B"))
    return h.hexdigest()


# -- Fashion-MNIST ------------------------------------------------------------------------


def keras_datasets_dir() -> Path:
    """Keras' dataset cache: ``$KERAS_HOME/datasets`` (default ``~/.keras/datasets``)."""
    return Path(os.environ.get("KERAS_HOME", Path.home() / ".keras")) / "datasets"


def fashion_mnist_search_dirs() -> list[Path]:
    """Where Fashion-MNIST's IDX files are looked for, in order."""
    return [DEBIAN_FASHION_MNIST_DIR, keras_datasets_dir() / "fashion-mnist"]


def _find_idx(directory: Path) -> dict[str, Path] | None:
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
        files = _find_idx(directory)
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


def _load_fashion_mnist(options: dict[str, Any]) -> DataSource:
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
    plans = _make_splits(identities, y, options, make_plan, fixed_test=test)
    digests: dict[str, str] = {}

    def content_key(split: str) -> str:
        part = "test" if split == "test" and test is not None else "train"
        if part not in digests:
            digests[part] = _array_digest(arrays[f"{part}_images"], arrays[f"{part}_labels"])
        return digests[part]

    data = _build("fashion_mnist", FASHION_MNIST_CLASSES, plans, options, content_key=content_key)
    data.origin = origin
    return data


# -- image folders ------------------------------------------------------------------------


def _load_folder(path: str, options: dict[str, Any]) -> DataSource:
    root = Path(path).expanduser()
    if not root.is_dir():
        raise MissingFileError(
            f"Image folder {root} does not exist or is not a folder; expected a folder with "
            "one sub-folder of images per class."
        )
    root = root.resolve()
    if options.get("labels_csv"):
        if options["train_size"] is not None or options["per_class"] is not None:
            raise InvalidValueError(
                "train_size / per_class subsample by class, which a multi-label labels_csv "
                "does not have; leave them out or list fewer files in the CSV."
            )
        class_names, all_files = _labels_csv(root, options["labels_csv"])
    else:
        class_names, all_files = _class_folders(root)
    exif = bool(options.get("exif_transpose", False))
    reasons = _images.check_images([p for p, _ in all_files], exif_transpose=exif)
    skipped = [(str(p), r) for (p, _), r in zip(all_files, reasons, strict=True) if r is not None]
    if skipped and options.get("strict"):
        listing = "; ".join(f"{p}: {r}" for p, r in skipped)
        raise CorruptImagesError(
            f"strict=True and {len(skipped)} file(s) in {root} cannot be decoded: {listing}. "
            "Fix or remove them, or load with strict=False to skip them."
        )
    good = [(p, label) for (p, label), r in zip(all_files, reasons, strict=True) if r is None]
    labels = np.array([label for _, label in good], dtype=all_files[0][1].dtype)
    counts = _count_labels(labels, len(class_names))
    emptied = [name for name, k in zip(class_names, counts, strict=True) if k == 0]
    if emptied:
        raise InvalidValueError(
            f"Class(es) {', '.join(emptied)} in {root} have no decodable image "
            f"({len(skipped)} file(s) skipped, see the list): "
            + "; ".join(f"{p}: {r}" for p, r in skipped[:10])
        )
    paths = [str(p) for p, _ in good]
    identities = [Path(p).relative_to(root).as_posix() for p in paths]
    n_cls = len(class_names)

    def make_plan(positions: np.ndarray) -> SplitPlan:
        return SplitPlan(
            "files",
            n_cls,
            [identities[i] for i in positions],
            labels[positions],
            paths=[paths[i] for i in positions],
            exif_transpose=exif,
        )

    plans = _make_splits(identities, labels, options, make_plan)

    def content_key(split: str) -> str:
        h = hashlib.sha256(f"exif={exif}".encode())
        for p in plans[split].paths:
            st = os.stat(p)
            h.update(f"{st.st_size}:{st.st_mtime_ns}\n".encode())
        return h.hexdigest()

    data = _build(f"folder:{root}", class_names, plans, options, skipped, content_key)
    data.options["exif_transpose"] = exif
    if options.get("labels_csv"):
        data.options["labels_csv"] = str(options["labels_csv"])
    data.origin = str(root)
    return data


def _class_folders(root: Path) -> tuple[list[str], list[tuple[Path, np.int64]]]:
    """Class names (sub-folders) and ``(file, int label)`` of every image under them."""
    class_names, files = _images.list_class_files(root)
    if len(class_names) < 2:
        raise InvalidValueError(
            f"{root} has {len(class_names)} class folder(s) ({', '.join(class_names) or 'none'});"
            " expected one sub-folder per class and at least 2 classes."
        )
    no_files = [name for name in class_names if not files[name]]
    if no_files:
        raise InvalidValueError(
            f"Empty class folder(s) in {root}: {', '.join(no_files)} (no "
            f"{'/'.join(_images.IMAGE_EXTENSIONS)} files); add images or remove the folder(s)."
        )
    return class_names, [
        (p, np.int64(label)) for label, name in enumerate(class_names) for p in files[name]
    ]


def _labels_csv(root: Path, csv_path: str | os.PathLike) -> tuple[list[str], list[tuple]]:
    """Class names and ``(file, multi-hot float32 label)`` from ``path,label1;label2`` rows.

    Paths are relative to ``root``; an optional first row ``path,labels`` is a header.
    Every problem (missing file, row without labels, duplicate path) is listed at once.
    """
    table = Path(csv_path) if Path(csv_path).is_absolute() else root / csv_path
    if not table.is_file():
        raise MissingFileError(
            f"Labels CSV {table} does not exist; expected rows 'path,label1;label2' with "
            f"paths relative to {root}."
        )
    with open(table, newline="", encoding="utf-8") as f:
        rows = [row for row in csv.reader(f) if row and any(cell.strip() for cell in row)]
    if rows and [c.strip().lower() for c in rows[0]] == ["path", "labels"]:
        rows = rows[1:]
    problems, entries, seen = [], [], set()
    for number, row in enumerate(rows, start=1):
        names = sorted({n.strip() for n in (row[1] if len(row) > 1 else "").split(";")} - {""})
        rel = row[0].strip()
        if len(row) != 2 or not names:
            problems.append(f"row {number} {row!r}: expected 'path,label1;label2'")
        elif not (root / rel).is_file():
            problems.append(f"row {number}: no file {root / rel}")
        elif rel in seen:
            problems.append(f"row {number}: {rel} listed twice")
        else:
            seen.add(rel)
            entries.append((root / rel, names))
    class_names = sorted({n for _, names in entries for n in names})
    if not problems and len(class_names) < 2:
        problems.append(f"{len(class_names)} label(s) in all rows; expected at least 2")
    if problems:
        raise InvalidValueError(f"Bad labels CSV {table}: " + "; ".join(problems) + ".")
    index = {name: i for i, name in enumerate(class_names)}
    files = []
    for path, names in entries:
        multi_hot = np.zeros(len(class_names), dtype=np.float32)
        multi_hot[[index[n] for n in names]] = 1.0
        files.append((path, multi_hot))
    return class_names, files


def _label_key(label: np.ndarray) -> str:
    """An int label as itself, a multi-hot row as its class indices ("0;3")."""
    if np.ndim(label):
        return ";".join(str(i) for i in np.flatnonzero(label))
    return str(int(label))


def _count_labels(labels: np.ndarray, num_classes: int) -> np.ndarray:
    """Examples per class: int labels ``(n,)`` or multi-hot ``(n, num_classes)``."""
    if labels.ndim == 2:
        return labels.sum(axis=0).astype(np.int64)
    return np.bincount(labels, minlength=num_classes)


# -- tfds ---------------------------------------------------------------------------------


def _load_tfds(spec: str, options: dict[str, Any]) -> DataSource:
    import tensorflow_datasets as tfds

    name, _, split = spec.partition(":")
    split = split or "train"
    data_dir = options.get("data_dir")
    try:
        builder = tfds.builder(name, data_dir=data_dir)
    except Exception as error:  # tfds raises its own DatasetNotFoundError
        raise InvalidValueError(f"Unknown tfds dataset {name!r}: {error}") from error
    info = builder.info
    image_key, label_key = info.supervised_keys or ("image", "label")
    features = info.features
    problems = []
    if image_key not in features or not isinstance(features[image_key], tfds.features.Image):
        problems.append(f"no image feature {image_key!r}")
    if label_key not in features or not isinstance(features[label_key], tfds.features.ClassLabel):
        problems.append(f"no class-label feature {label_key!r}")
    if problems:
        raise InvalidValueError(
            f"tfds dataset {name!r} is not an image-classification dataset ({'; '.join(problems)}); "
            "expected supervised keys (image, label) with an Image and a ClassLabel feature."
        )
    class_names = list(features[label_key].names)
    _ensure_prepared(builder, name, options.get("download"))
    test_split = _tfds_test_split(info, split, options)
    seed = int(options["seed"])
    fractions = (float(options["validation_fraction"]), float(options.get("test_fraction") or 0))
    n_cls = len(class_names)

    def reader(tfds_split: str, part: int | None) -> Callable[[], tf.data.Dataset]:
        def make() -> tf.data.Dataset:
            ds = builder.as_dataset(
                split=tfds_split,
                shuffle_files=False,
                read_config=tfds.ReadConfig(add_tfds_id=True),
            )
            if part is not None and sum(fractions) > 0:
                ds = ds.filter(lambda ex: _part_of(ex["tfds_id"], seed, *fractions) == part)
            return ds.map(
                lambda ex: (to_rgb(ex[image_key]), tf.cast(ex[label_key], tf.int64)),
                num_parallel_calls=tf.data.AUTOTUNE,
                deterministic=True,
            )

        return make

    plans = {"train": SplitPlan("tfds", n_cls, make=reader(split, 0))}
    if fractions[0] > 0:
        plans["validation"] = SplitPlan("tfds", n_cls, make=reader(split, 1))
    if fractions[1] > 0:
        plans["test"] = SplitPlan("tfds", n_cls, make=reader(split, 2))
    elif test_split:
        plans["test"] = SplitPlan("tfds", n_cls, make=reader(test_split, None))
    if options["train_size"] is not None or options["per_class"] is not None:
        plans["train"] = _subsample_tfds(
            builder, split, (image_key, label_key), options, plans["train"]
        )
    version = str(getattr(builder, "version", ""))
    data = _build(f"tfds:{name}:{split}", class_names, plans, options)
    data.options.update({"tfds_version": version, "test_split": test_split})
    data.origin = str(builder.data_dir)
    return data


def _tfds_test_split(info: Any, split: str, options: dict[str, Any]) -> str | None:
    """The tfds split used as test: ``test_split``, else "test" if it exists; none when
    ``test_fraction`` holds the test set out of ``split``."""
    test_split = options.get("test_split")
    if options.get("test_fraction"):
        if test_split is not None:
            raise InvalidValueError(
                f"Give either test_split={test_split!r} or test_fraction="
                f"{options['test_fraction']!r}, not both."
            )
        return None
    if test_split is None and "test" in info.splits and not split.startswith("test"):
        test_split = "test"
    return test_split


def _part(identity: str, seed: int, validation: float, test: float) -> int:
    """0 train, 1 validation, 2 test: as :func:`zoo.data.splits.assign_splits` decides."""
    h = _splits.unit_hash(identity, seed)
    return 1 if h < validation else 2 if h < validation + test else 0


def _part_of(tfds_id: tf.Tensor, seed: int, validation: float, test: float) -> tf.Tensor:
    """In-graph :func:`_part` of a tfds id (int32 scalar)."""

    def _code(identity: bytes) -> np.int32:
        return np.int32(_part(identity.decode(), seed, validation, test))

    code = tf.numpy_function(_code, [tfds_id], tf.int32, stateful=False)
    code.set_shape([])
    return code


def _subsample_tfds(
    builder: Any, split: str, keys: tuple[str, str], options: dict[str, Any], plan: SplitPlan
) -> SplitPlan:
    """Reads ids and labels once (images not decoded), then keeps a stratified subset."""
    import tensorflow_datasets as tfds

    image_key, label_key = keys
    seed = int(options["seed"])
    fractions = (float(options["validation_fraction"]), float(options.get("test_fraction") or 0))
    ds = builder.as_dataset(
        split=split,
        shuffle_files=False,
        read_config=tfds.ReadConfig(add_tfds_id=True),
        decoders={image_key: tfds.decode.SkipDecoding()},
    )
    ids, labels = [], []
    for ex in ds.map(lambda ex: (ex["tfds_id"], ex[label_key])).as_numpy_iterator():
        identity = ex[0].decode()
        if _part(identity, seed, *fractions) == 0:
            ids.append(identity)
            labels.append(int(ex[1]))
    labels = np.array(labels, dtype=np.int64)
    keep = _splits.stratified_subsample(
        ids, labels, seed, size=options["train_size"], per_class=options["per_class"]
    )
    kept_ids = [ids[i] for i in keep]
    table = tf.lookup.StaticHashTable(
        tf.lookup.KeyValueTensorInitializer(
            tf.constant(kept_ids, tf.string), tf.ones(len(keep), tf.int64)
        ),
        default_value=0,
    )

    def make() -> tf.data.Dataset:
        reader = builder.as_dataset(
            split=split, shuffle_files=False, read_config=tfds.ReadConfig(add_tfds_id=True)
        )
        chosen = reader.filter(lambda ex: table.lookup(ex["tfds_id"]) > 0)
        return chosen.map(
            lambda ex: (to_rgb(ex[image_key]), tf.cast(ex[label_key], tf.int64)),
            num_parallel_calls=tf.data.AUTOTUNE,
            deterministic=True,
        )

    return SplitPlan("tfds", plan.num_classes, kept_ids, labels[keep], make=make)


def _ensure_prepared(builder: Any, name: str, download: bool | None) -> None:
    """Downloads and prepares the dataset when allowed; raises a clear error otherwise."""
    if builder.is_prepared():
        return
    if download is None:
        download = not os.environ.get("ZOO_OFFLINE")
    if download:
        try:
            builder.download_and_prepare()
        except Exception as error:  # network, checksum and tfds' own errors alike
            raise DatasetUnavailableError(
                f"tfds dataset {name!r} could not be downloaded and prepared: {error}. "
                f"Prepare it on a machine with internet access (`tfds build {name}`) and copy "
                f"{builder.data_dir} here (or pass data_dir=)."
            ) from error
        return
    # Offline: as_dataset may still work (tfds.testing.mock_data); try it before giving up.
    try:
        builder.as_dataset(split=tfds_first_split(builder))
    except Exception as error:
        raise DatasetUnavailableError(
            f"tfds dataset {name!r} is not prepared in {builder.data_dir} and downloading is "
            f"off{' (ZOO_OFFLINE is set)' if os.environ.get('ZOO_OFFLINE') else ''}. Prepare it "
            f"where the internet is (`tfds build {name}`) and copy the folder there, or pass "
            "data_dir= / download=True."
        ) from error


def tfds_first_split(builder: Any) -> str:
    """ "train" if the dataset has it (or the splits are unknown), else its first split."""
    splits = list(builder.info.splits.keys())
    return "train" if not splits or "train" in splits else splits[0]
