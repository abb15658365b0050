"""MixUp and CutMix together: one of them per batch, CutMix with probability switch_prob."""

import numpy as np
import pytest
import tensorflow as tf

from zoo.data import augmentation

VALUES = np.arange(8, dtype=np.float32) * 30.0 + 5.0  # image i is the constant VALUES[i]


def _kinds(switch_prob, batches=16):
    aug = augmentation(
        {"mixup": 1.0, "cutmix": 1.0}, seed=3, num_classes=8, switch_prob=switch_prob
    )
    images = tf.constant(np.broadcast_to(VALUES[:, None, None, None], (8, 8, 8, 3)))
    labels = tf.range(8)
    kinds = []
    for _ in range(batches):
        mixed, soft = aug(images, labels)
        pixels = mixed.numpy()
        np.testing.assert_allclose(soft.numpy().sum(axis=1), 1.0, rtol=1e-6)
        # CutMix pastes whole pixels: every value is one of the originals. MixUp blends
        # (alpha 1: uniform weights), which gives values between them.
        pasted = np.isin(pixels, VALUES).all()
        kinds.append("cutmix" if pasted else "mixup")
    return kinds


def test_both_listed_gives_one_kind_per_batch_in_the_asked_proportion():
    kinds = _kinds(0.5)
    assert 2 <= kinds.count("cutmix") <= 14, kinds  # both kinds, never both in one batch
    assert set(_kinds(1.0, 4)) == {"cutmix"}
    assert set(_kinds(0.0, 4)) == {"mixup"}


def test_switch_prob_is_checked():
    with pytest.raises(ValueError, match=r"switch_prob=1.5 \(expected 0 <= x <= 1\)"):
        augmentation(["mixup", "cutmix"], num_classes=3, switch_prob=1.5)
