"""ImageNet-1k class names, in the order ImageNet classifiers use (sorted WordNet ids).

Both lists come from files tensorflow-datasets installs, read as text (tfds itself, and so
TensorFlow, is not imported):

* ``tensorflow_datasets/datasets/imagenet2012/labels.txt``: the 1000 WordNet ids, sorted,
  one per line; line ``i`` is class ``i`` of every ImageNet-1k classifier.
* ``tensorflow_datasets/datasets/siscore/labels.py``: ``IMAGENET_LABELS_LIST``, the
  human-readable descriptions in the same order ("tabby, tabby cat", "espresso", ...).
"""

from __future__ import annotations

import ast
import functools
import importlib.util
from pathlib import Path

from zoo.errors import InvalidValueError, MissingFileError

NUM_CLASSES = 1000


def _tfds_file(relative: str) -> Path:
    spec = importlib.util.find_spec("tensorflow_datasets")
    if spec is None or not spec.submodule_search_locations:
        raise MissingFileError(
            "ImageNet class names come from tensorflow-datasets, which is not installed; "
            "run `pip install tensorflow-datasets`."
        )
    path = Path(next(iter(spec.submodule_search_locations))) / relative
    if not path.is_file():
        raise MissingFileError(
            f"{path} is missing from the installed tensorflow-datasets; reinstall it."
        )
    return path


@functools.cache
def wordnet_ids() -> tuple[str, ...]:
    """The 1000 ImageNet-1k WordNet ids in class order, e.g. ``wordnet_ids()[281] == "n02123045"``.

    Raises:
        FileNotFoundError: tensorflow-datasets (which ships the list) is not installed.
    """
    text = _tfds_file("datasets/imagenet2012/labels.txt").read_text()
    ids = tuple(line.strip() for line in text.splitlines() if line.strip())
    if len(ids) != NUM_CLASSES or list(ids) != sorted(ids):
        raise InvalidValueError(f"Expected {NUM_CLASSES} sorted WordNet ids, got {len(ids)}.")
    return ids


@functools.cache
def descriptions() -> tuple[str, ...]:
    """The 1000 human-readable class descriptions in class order.

    Each is the WordNet synonym list, e.g. ``descriptions()[281] == "tabby, tabby cat"``.

    Raises:
        FileNotFoundError: tensorflow-datasets is not installed, or no longer ships the list.
        ValueError: the list found does not have 1000 entries.
    """
    source = _tfds_file("datasets/siscore/labels.py").read_text()
    for node in ast.parse(source).body:  # read the literal without importing tfds
        if (
            isinstance(node, ast.Assign)
            and isinstance(node.targets[0], ast.Name)
            and node.targets[0].id == "IMAGENET_LABELS_LIST"
        ):
            names = tuple(ast.literal_eval(node.value))
            if len(names) != NUM_CLASSES:
                raise InvalidValueError(
                    f"Expected {NUM_CLASSES} ImageNet descriptions, got {len(names)}."
                )
            return names
    raise MissingFileError("tensorflow-datasets no longer ships IMAGENET_LABELS_LIST.")


def class_names() -> list[str]:
    """Short names in class order: the first synonym of each description (``"tabby"``).

    One short name repeats (``"maillot"``, classes 638 and 639); use
    :func:`descriptions` or :func:`wordnet_ids` where names must be unique.
    """
    return [d.split(",")[0].strip() for d in descriptions()]


def decode(logits_row: object, top: int = 5) -> list[tuple[int, str, str, float]]:
    """The ``top`` classes of one row of ImageNet scores, best first.

    Args:
        logits_row: ``(1000,)`` logits or probabilities (array-like).
        top: how many classes to return.

    Returns:
        ``[(class index, WordNet id, short name, score), ...]``.

    Raises:
        ValueError: the row does not have 1000 entries.
    """
    import numpy as np

    row = np.asarray(logits_row, dtype="float64").reshape(-1)
    if row.shape[0] != NUM_CLASSES:
        raise InvalidValueError(f"Expected {NUM_CLASSES} ImageNet scores, got shape {row.shape}.")
    names = class_names()
    ids = wordnet_ids()
    order = np.argsort(-row)[:top]
    return [(int(i), ids[i], names[i], float(row[i])) for i in order]
