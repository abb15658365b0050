"""The object every source kind gives: :class:`DataSource`, and the splitting they share.

Each source kind (``zoo.data.arrays``, ``fashion_mnist``, ``folder``, ``tfds``) lists its
examples' identities and labels; :func:`make_splits` assigns them to train / validation /
test by a stable hash and subsamples train, :func:`build_source` wraps the plans in a
:class:`DataSource`. :func:`zoo.data.load` picks the kind.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import tensorflow as tf

from zoo.data import splits as _splits
from zoo.data.pipeline import pipeline as _batches
from zoo.data.plans import SplitPlan, dataset_from_plan
from zoo.errors import InvalidValueError, UnknownNameError, ZooError

SPLITS = ("train", "validation", "test")


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
            image_size: ``(height, width)`` the images are resized to, as for
                :func:`zoo.data.pipeline`.
            batch_size: images per batch.
            training: shuffle and augment (the training split's pipeline).
            augment: augmentation names or an ``Augmentation``, as for
                :func:`zoo.data.pipeline`.
            **options: further :func:`zoo.data.pipeline` options (``num_classes`` is
                this source's).

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
        counts = count_labels(plan.labels, self.num_classes)
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


# -- options and splitting, shared by every source kind ------------------------------------

_COMMON = {"validation_fraction", "seed", "train_size", "per_class"}
_OPTIONS = {
    "fashion_mnist": _COMMON | {"test_fraction", "data_dir", "download"},
    "folder": _COMMON | {"test_fraction", "strict", "exif_transpose", "labels_csv"},
    "tfds": _COMMON | {"test_fraction", "data_dir", "download", "test_split"},
    "arrays": _COMMON | {"test_fraction", "class_names", "test"},
}


def check_options(kind: str, options: dict[str, Any]) -> dict[str, Any]:
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


def make_splits(
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


def build_source(
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


def _label_key(label: np.ndarray) -> str:
    """An int label as itself, a multi-hot row as its class indices ("0;3")."""
    if np.ndim(label):
        return ";".join(str(i) for i in np.flatnonzero(label))
    return str(int(label))


def count_labels(labels: np.ndarray, num_classes: int) -> np.ndarray:
    """Examples per class: int labels ``(n,)`` or multi-hot ``(n, num_classes)``."""
    if labels.ndim == 2:
        return labels.sum(axis=0).astype(np.int64)
    return np.bincount(labels, minlength=num_classes)


def array_digest(x: np.ndarray, y: np.ndarray) -> str:
    h = hashlib.sha256(str((x.shape, y.shape)).encode())
    h.update(memoryview(x).cast("B"))
    h.update(memoryview(np.ascontiguousarray(y)).cast("B"))
    return h.hexdigest()
