"""Stable, seeded splits and stratified subsampling.

Every example has an identity string (a file path relative to the dataset root, or an
index for in-memory data). Which split it lands in depends only on a hash of that identity
and the seed, as TensorFlow's old ``retrain.py`` example did (hash -> percentage): adding or
removing a file never moves any other file between train and validation, and a different
process with the same seed makes the same split.
"""

from __future__ import annotations

import hashlib
from collections.abc import Sequence

import numpy as np

from zoo.errors import InvalidValueError


def unit_hash(identity: str, seed: int, salt: str = "split") -> float:
    """Maps ``(identity, seed, salt)`` to a number in ``[0, 1)``, the same on every machine.

    Args:
        identity: the example's identity, e.g. ``"cats/001.jpg"`` or ``"123"``.
        seed: the split seed.
        salt: separates independent uses of the hash (splitting vs. subsampling).

    Returns:
        The first 8 bytes of ``sha256(salt, seed, identity)`` as a fraction of ``2**64``.
    """
    digest = hashlib.sha256(f"{salt}\0{int(seed)}\0{identity}".encode()).digest()
    return int.from_bytes(digest[:8], "big") / 2.0**64


def unit_hashes(identities: Sequence[str], seed: int, salt: str = "split") -> np.ndarray:
    """:func:`unit_hash` of each identity, as a float64 array of shape ``(n,)``."""
    return np.fromiter(
        (unit_hash(i, seed, salt) for i in identities), dtype=np.float64, count=len(identities)
    )


def assign_splits(
    identities: Sequence[str],
    seed: int,
    validation_fraction: float,
    test_fraction: float = 0.0,
) -> np.ndarray:
    """Assigns each example to train (0), validation (1) or test (2) by its hash.

    An example goes to validation when its hash is below ``validation_fraction``, to test
    when it lies in ``[validation_fraction, validation_fraction + test_fraction)``.

    Returns:
        int8 array of shape ``(n,)`` with values 0, 1 or 2.

    Raises:
        ValueError: if a fraction is outside ``[0, 1)`` or they sum to 1 or more.
    """
    check_fractions(validation_fraction, test_fraction)
    h = unit_hashes(identities, seed)
    out = np.zeros(len(identities), dtype=np.int8)
    out[h < validation_fraction] = 1
    out[(h >= validation_fraction) & (h < validation_fraction + test_fraction)] = 2
    return out


def check_fractions(validation_fraction: float, test_fraction: float = 0.0) -> None:
    """Raises ValueError unless both fractions are in ``[0, 1)`` and sum to less than 1."""
    problems = [
        f"{name}={value!r} (expected 0 <= {name} < 1)"
        for name, value in (
            ("validation_fraction", validation_fraction),
            ("test_fraction", test_fraction),
        )
        if not 0.0 <= float(value) < 1.0
    ]
    if not problems and validation_fraction + test_fraction >= 1.0:
        problems.append(
            f"validation_fraction + test_fraction = {validation_fraction + test_fraction} "
            "leaves no training data (expected < 1)"
        )
    if problems:
        raise InvalidValueError("Bad split options: " + "; ".join(problems) + ".")


def stratified_subsample(
    identities: Sequence[str],
    labels: np.ndarray,
    seed: int,
    size: int | None = None,
    per_class: int | None = None,
) -> np.ndarray:
    """Picks a deterministic, class-balanced subset; returns sorted positions into the input.

    Within each class the examples with the lowest hash of ``(identity, seed)`` win, so the
    choice is stable for a seed and adding an example displaces at most one other.

    Args:
        identities: identity of each example, length ``n``.
        labels: int array ``(n,)``.
        seed: subsampling seed.
        size: total examples to keep, spread over the classes in proportion to their
            frequency (largest remainder), at least one per present class.
        per_class: at most this many examples of each class.

    Returns:
        int64 array of positions (ascending) into ``identities``.

    Raises:
        ValueError: if ``size`` exceeds the number of examples or is smaller than the
            number of classes present, or a count is not positive.
    """
    labels = np.asarray(labels)
    n = len(identities)
    keep = np.arange(n)
    if size is None and per_class is None:
        return keep
    h = unit_hashes(identities, seed, salt="subsample")
    classes, counts = np.unique(labels, return_counts=True)
    quota = {int(c): int(k) for c, k in zip(classes, counts, strict=True)}
    if per_class is not None:
        if int(per_class) < 1:
            raise InvalidValueError(f"per_class={per_class!r}; expected a positive integer.")
        quota = {c: min(k, int(per_class)) for c, k in quota.items()}
    if size is not None:
        available = sum(quota.values())
        if not len(quota) <= int(size) <= available:
            raise InvalidValueError(
                f"train_size/size={size!r} but the split has {available} examples in "
                f"{len(quota)} classes; expected {len(quota)} <= size <= {available}."
            )
        quota = _proportional(quota, int(size))
    chosen = []
    for c, k in quota.items():
        members = np.flatnonzero(labels == c)
        order = members[np.argsort(h[members], kind="stable")]
        chosen.append(order[:k])
    return np.sort(np.concatenate(chosen)).astype(np.int64)


def _proportional(counts: dict[int, int], size: int) -> dict[int, int]:
    """Splits ``size`` over classes in proportion to ``counts`` (largest remainder, >= 1)."""
    total = sum(counts.values())
    exact = {c: size * k / total for c, k in counts.items()}
    quota = {c: max(1, min(counts[c], int(v))) for c, v in exact.items()}
    # Hand out (or take back) the remainder by largest fractional part, deterministically.
    by_remainder = sorted(counts, key=lambda c: (-(exact[c] - int(exact[c])), c))
    while sum(quota.values()) < size:
        for c in by_remainder:
            if sum(quota.values()) < size and quota[c] < counts[c]:
                quota[c] += 1
    while sum(quota.values()) > size:
        for c in reversed(by_remainder):
            if sum(quota.values()) > size and quota[c] > 1:
                quota[c] -= 1
    return quota
