"""Tests for ``test_fraction``: every source can hold out a stable test split."""

import hashlib
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from zoo import data


def _check_three_way(ds, n):
    """Train, validation and test identities are disjoint and cover all ``n`` examples."""
    parts = [set(ds.identities(s)) for s in ("train", "validation", "test")]
    assert all(parts) and sum(len(p) for p in parts) == n
    assert len(set.union(*parts)) == n
    return parts


def test_arrays_and_folder_hold_out_a_stable_disjoint_test_split(tmp_path):
    rng = np.random.default_rng(0)
    x = rng.integers(0, 256, (200, 4, 4, 3), dtype=np.uint8)
    options = {"validation_fraction": 0.2, "test_fraction": 0.3, "seed": 5}
    first = _check_three_way(data.load((x, np.arange(200) % 2), **options), 200)
    again = _check_three_way(data.load((x, np.arange(200) % 2), **options), 200)
    assert first == again and 30 < len(first[2]) < 90

    for c, name in enumerate(["a", "b"]):
        for i in range(12):
            path = tmp_path / name / f"{i}.png"
            path.parent.mkdir(exist_ok=True)
            Image.fromarray(np.full((4, 4, 3), 10 * i + c, np.uint8)).save(path)
    folder = data.load(f"folder:{tmp_path}", **options)
    parts = _check_three_way(folder, 24)
    assert parts == _check_three_way(data.load(f"folder:{tmp_path}", **options), 24)
    x, y = next(iter(folder.pipeline("test", (4, 4), 64)))
    assert x.shape[0] == len(parts[2]) == folder.num_examples("test")


def test_fashion_mnist_keeps_its_test_set_unless_asked():
    plain = data.load("fashion_mnist", validation_fraction=0.1, per_class=5)
    assert plain.num_examples("test") == 10_000 and plain.identities("test")[0] == "test:0"
    held = data.load("fashion_mnist", validation_fraction=0.1, test_fraction=0.1)
    train, val, test = _check_three_way(held, 60_000)
    assert 5_500 < len(test) < 6_500 and not any(i.startswith("test:") for i in test)
    assert held.options["test_fraction"] == 0.1
    assert held.fingerprint("test") != plain.fingerprint("test")


def _digests(dataset):
    return sorted(hashlib.sha256(x.numpy().tobytes()).hexdigest() for x, _ in dataset)


def test_tfds_test_fraction_is_a_stable_hash_split_disjoint_from_validation():
    import tensorflow_datasets as tfds

    options = {"validation_fraction": 0.25, "test_fraction": 0.25, "seed": 2}
    with tfds.testing.mock_data(num_examples=40):
        ds = data.load("tfds:tf_flowers", **options)
        parts = [_digests(ds.split(s)) for s in ("train", "validation", "test")]
        assert all(parts) and sum(len(p) for p in parts) == 40
        assert len(set().union(*parts)) == 40  # disjoint (mock images are all different)
        again = data.load("tfds:tf_flowers", **options)
        assert _digests(again.test) == parts[2] and _digests(again.validation) == parts[1]
        # A subsampled training split still leaves the test examples out.
        small = data.load("tfds:tf_flowers", per_class=2, **options)
        assert not set(_digests(small.train)) & set(parts[2])
        with pytest.raises(ValueError, match="either test_split='test' or test_fraction"):
            data.load("tfds:tf_flowers", test_split="test", test_fraction=0.1)


def test_unknown_option_lists_test_fraction(tmp_path: Path):
    with pytest.raises(ValueError, match="expected some of .*test_fraction"):
        data.load("fashion_mnist", test_size=0.1)
