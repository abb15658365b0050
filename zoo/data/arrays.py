"""numpy arrays as a source: ``zoo.data.load((x, y), class_names=..., test=(x, y))``."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np

from zoo.data.datasource import DataSource, array_digest, build_source, make_splits
from zoo.data.plans import SplitPlan
from zoo.errors import InvalidValueError


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


def load_arrays(data: Sequence[Any], options: dict[str, Any]) -> DataSource:
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
    train_digest = array_digest(x, y)
    digests = {"train": train_digest, "validation": train_digest, "test": train_digest}
    if test is not None:
        digests["test"] = array_digest(x_test, y_test)
    plans = make_splits(identities, y, options, make_plan, fixed_test)
    return build_source("arrays", class_names, plans, options, content_key=digests.__getitem__)
