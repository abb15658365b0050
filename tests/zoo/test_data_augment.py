"""Tests for zoo.data.augment: mixing augmentations mix labels with the images' weights."""

import weakref

import keras
import numpy as np
import pytest
import tensorflow as tf

from zoo import data
from zoo.data import arrays, augment, datasource, fashion_mnist, folder, pipeline, plans, sources
from zoo.data import tfds as tfds_source
from zoo.errors import ZooError

NUM_CLASSES = 6


def _batch(seed: int = 0, size: int = 16):
    """Six distinct continuous-valued images (no two pixels collide) and int labels."""
    rng = np.random.default_rng(seed)
    images = rng.uniform(0.0, 255.0, (6, size, size, 3)).astype(np.float32)
    labels = np.array([3, 0, 4, 1, 2, 5], dtype=np.int64)
    return images, labels


def _run(aug, images, labels):
    """Applies ``aug`` the way pipelines do: inside a tf.data map."""
    ds = tf.data.Dataset.from_tensors((images, labels)).map(aug)
    x, y = next(iter(ds))
    return x.numpy(), y.numpy()


def _targets(labels, smoothing):
    one_hot = np.eye(NUM_CLASSES, dtype=np.float64)[labels]
    return one_hot * (1 - smoothing) + smoothing / NUM_CLASSES


@pytest.mark.parametrize("smoothing", [0.0, 0.1])
def test_mixup_mixes_labels_with_the_weight_recovered_from_the_images(smoothing):
    images, labels = _batch()
    aug = data.augmentation(
        {"mixup": 1.0}, seed=3, num_classes=NUM_CLASSES, label_smoothing=smoothing
    )
    assert aug.soft_labels and data.mixes_labels(aug)
    mixed, soft = _run(aug, images, labels)
    assert soft.shape == (6, NUM_CLASSES) and soft.dtype == np.float32
    targets = _targets(labels, smoothing)
    x = images.astype(np.float64)
    weights = []
    for i in range(6):
        # mixed_i = w * x_i + (1 - w) * x_j: find the partner j and w by least squares.
        fits = []
        for j in range(6):
            d = (x[i] - x[j]).ravel()
            r = mixed[i].ravel() - x[j].ravel()
            w = 1.0 if j == i else float(r @ d / (d @ d))
            fits.append((float(np.abs(r - w * d).max()), w, j))
        residual, w, j = min(fits)
        assert residual < 1e-2, f"example {i} is not a mix of two images"
        np.testing.assert_allclose(soft[i], w * targets[i] + (1 - w) * targets[j], atol=1e-5)
        weights.append(w)
    assert any(0.05 < w < 0.95 for w in weights)  # the batch was really mixed


@pytest.mark.parametrize("smoothing", [0.0, 0.1])
def test_cutmix_label_weight_is_the_pasted_pixel_share(smoothing):
    images, labels = _batch(size=9)  # small: whole-pixel boxes differ from real-valued areas
    targets = _targets(labels, smoothing)
    shares = []
    for seed in range(4):
        aug = data.augmentation(
            ["cutmix"], seed=seed, num_classes=NUM_CLASSES, label_smoothing=smoothing
        )
        mixed, soft = _run(aug, images, labels)
        np.testing.assert_allclose(soft.sum(axis=1), 1.0, atol=1e-5)
        for i in range(6):
            pasted = np.any(np.abs(mixed[i] - images[i]) > 1e-3, axis=-1)  # (h, w)
            share = float(pasted.mean())
            partner = i
            if pasted.any():
                # Every pasted pixel comes from one other image.
                sources_ = [j for j in range(6) if np.allclose(mixed[i][pasted], images[j][pasted])]
                assert len(sources_) == 1, f"example {i}: pasted pixels from {sources_}"
                partner = sources_[0]
            expected = (1 - share) * targets[i] + share * targets[partner]
            np.testing.assert_allclose(soft[i], expected, atol=1e-5)
            shares.append(share)
    assert any(0.0 < s < 1.0 for s in shares)


def test_label_keeping_augmentation_and_random_crop_size():
    images, labels = _batch(size=14)
    aug = data.augmentation(["random_crop", "flip"], image_size=(10, 12), seed=0)
    assert not aug.soft_labels and aug.crop_fraction == 0.875
    assert aug.resize_to((10, 12)) == (12, 14)  # ceil(10 / 0.875), ceil(12 / 0.875)
    x, y = _run(aug, images[:, :12, :14], labels)
    assert x.shape == (6, 10, 12, 3) and x.dtype == np.float32
    assert np.array_equal(y, labels)

    smooth = data.augmentation(["flip"], num_classes=NUM_CLASSES, label_smoothing=0.2)
    assert smooth.soft_labels and not data.mixes_labels(smooth)
    _, y = _run(smooth, images, labels)
    np.testing.assert_allclose(y, _targets(labels, 0.2), atol=1e-6)


def _toy():
    rng = np.random.default_rng(0)
    x = rng.integers(0, 256, (64, 12, 12, 3), dtype=np.uint8)
    return data.load((x, np.arange(64) % 4), validation_fraction=0.25, seed=0)


def test_pipeline_yields_soft_labels_when_it_mixes_and_one_hot_for_evaluation():
    ds = _toy()
    train = ds.pipeline(
        "train", (10, 10), 8, training=True, augment=["random_crop", "cutmix"], label_smoothing=0.1
    )
    x, y = next(iter(train))
    assert x.shape == (8, 10, 10, 3) and y.shape == (8, 4) and y.dtype == tf.float32
    np.testing.assert_allclose(y.numpy().sum(axis=1), 1.0, atol=1e-5)
    assert float(tf.reduce_min(y)) >= 0.1 / 4 - 1e-6  # smoothed before mixing
    val = ds.pipeline("validation", (10, 10), 8, augment=["random_crop", "cutmix"])
    xv, yv = next(iter(val))
    assert xv.shape == (8, 10, 10, 3) and set(np.unique(yv.numpy())) <= {0.0, 1.0}
    plain = ds.pipeline("train", (10, 10), 8, training=True, augment=["random_crop"])
    assert next(iter(plain))[1].dtype == tf.int64


def test_augmentation_errors_and_keras_layers():
    aug = data.augmentation(["mixup"])
    with pytest.raises(ZooError, match="need the number of classes.*num_classes="):
        aug(tf.zeros((2, 4, 4, 3)), tf.constant([0, 1]))
    assert aug.replace(num_classes=3).num_classes == 3
    with pytest.raises(ValueError, match="label_smoothing=1.5.*num_classes=1"):
        augment.Augmentation(num_classes=1, label_smoothing=1.5)
    with pytest.raises(TypeError, match="expected a list of names"):
        data.augmentation(3)
    stack = keras.layers.Pipeline([keras.layers.RandomFlip(), keras.layers.MixUp()])
    built = data.augmentation(stack, num_classes=4)
    assert [type(x).__name__ for x in (*built.layers, *built.mixes)] == ["RandomFlip", "MixUp"]
    backwards = keras.layers.Pipeline([keras.layers.CutMix(), keras.layers.RandomFlip()])
    with pytest.raises(ValueError, match="must come after every other layer"):
        data.augmentation(backwards)


def test_no_side_channels_the_plan_is_an_argument():
    modules = (augment, pipeline, plans, sources, datasource, arrays, fashion_mnist, folder)
    for module in (*modules, tfds_source):
        channels = [
            name
            for name, value in vars(module).items()
            if isinstance(value, weakref.WeakKeyDictionary | weakref.WeakValueDictionary)
        ]
        assert not channels, f"{module.__name__} keeps {channels}"
    ds = _toy()
    a = [y.numpy() for _, y in data.pipeline(ds.plan("train"), (8, 8), 8, training=True)]
    b = [y.numpy() for _, y in ds.pipeline("train", (8, 8), 8, training=True)]
    assert all(np.array_equal(p, q) for p, q in zip(a, b, strict=True))
    assert ds.plan("test") is None
    with pytest.raises(ValueError, match="no test split.*test_fraction"):
        ds.pipeline("test", (8, 8))


def test_called_on_images_alone_only_when_labels_stay():
    images, _ = _batch(size=8)
    flip = data.augmentation(["flip", "zoom"], seed=0)
    assert flip(tf.constant(images), training=True).shape == (6, 8, 8, 3)
    with pytest.raises(TypeError, match="must see them.*dataset.map"):
        data.augmentation(["cutmix"], num_classes=NUM_CLASSES)(tf.constant(images))
