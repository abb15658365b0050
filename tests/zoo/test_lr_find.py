"""The learning-rate range test: rising rates, a suggestion, the model left as it was."""

import keras
import numpy as np
import pytest
import tensorflow as tf

from zoo.classifier import build_classifier
from zoo.policies import UnfreezeTop
from zoo.training import Stage
from zoo.training.lr_find import lr_find, steepest


@pytest.fixture(scope="module")
def tiny():
    from zoo.testing import temporary_backbone

    with temporary_backbone() as spec:
        yield spec.name


def test_range_test_suggests_a_rate_and_restores_every_variable(tiny):
    rng = np.random.default_rng(0)
    y = np.arange(64) % 3
    x = (rng.uniform(0, 80, (64, 32, 32, 3)) + 85.0 * y[:, None, None, None]).astype("float32")
    train = tf.data.Dataset.from_tensor_slices((x, y)).shuffle(64, seed=0).batch(16)
    keras.utils.set_random_seed(0)
    model = build_classifier(tiny, 3, weights=None)
    before = [np.array(v) for v in model.variables]
    stage = Stage("top", UnfreezeTop(blocks=1, batchnorm="trainable"), 1, 1e-3, optimizer="sgd")

    result = lr_find(model, train, stage, start_lr=1e-4, end_lr=100.0, steps=40)

    rates = result.learning_rates
    assert rates[0] == pytest.approx(1e-4) and np.all(np.diff(rates) > 0)
    assert len(result.losses) == len(rates) == len(result.smoothed)
    assert result.stopped_early and len(rates) < 40  # SGD at 100 diverges
    assert result.suggestion is not None and 1e-4 < result.suggestion < rates[-1]
    changed = [
        v.path for v, b in zip(model.variables, before, strict=True) if not np.array_equal(v, b)
    ]
    assert changed == []


def test_steepest_picks_the_fastest_fall_before_the_minimum():
    rates = list(np.geomspace(1e-5, 1.0, 6))
    smoothed = [2.0, 1.9, 1.2, 1.0, 0.9, 5.0]  # the fall from 1.9 to 1.2 is the steepest
    assert steepest(rates, smoothed) in (rates[1], rates[2])
    assert steepest(rates[:2], smoothed[:2]) is None


def test_the_command_names_the_stages_a_recipe_has(capsys):
    from recipes.cli import main

    assert main(["lr-find", "fashion-mnist-lite0", "--stage", "7"]) == 2
    err = capsys.readouterr().err
    assert "--stage 7: the recipe has stages 0..1 (head, fine-tune)" in err
