"""Stage keys for the best epoch, EMA and class weights: recipe words -> zoo.Stage."""

import sys
from types import SimpleNamespace

import numpy as np
import pytest

from recipes import runner
from recipes.config import DEFAULT_EMA, RecipeError, parse_recipe
from zoo.caching.engine import EngineChoice

if sys.version_info >= (3, 11):
    import tomllib
else:  # Python 3.10
    import tomli as tomllib

RECIPE = """
[data]
source = "photos"
image_size = [32, 32]

[model]
backbone = "inception_v3"
weights = "none"

[[stages]]
name = "head"
policy = "freeze_backbone"
epochs = 1
learning_rate = 1e-3
"""


def _recipe(**stage):
    data = tomllib.loads(RECIPE)
    data["stages"][0].update(stage)
    return parse_recipe(data)


def _data(counts):
    return SimpleNamespace(class_names=list(counts), class_counts=lambda split: dict(counts))


def test_defaults_restore_the_best_validation_loss_epoch_without_ema():
    stage = _recipe().stages[0].to_stage()
    assert (stage.restore_best, stage.monitor, stage.ema, stage.class_weight) == (
        True,
        "val_loss",
        None,
        None,
    )


@pytest.mark.parametrize("ema, momentum", [(True, DEFAULT_EMA), (0.99, 0.99), (False, None)])
def test_ema_true_takes_the_default_momentum(ema, momentum):
    assert _recipe(ema=ema).stages[0].to_stage().ema == momentum


def test_bad_ema_and_weights_are_recipe_errors():
    with pytest.raises(RecipeError, match=r"ema.*momentum in \(0, 1\)"):
        _recipe(ema=1.5)
    with pytest.raises(RecipeError, match=r"class_weight.*finite and > 0"):
        _recipe(class_weight={"cat": -1.0})
    with pytest.raises(RecipeError, match=r"monitor"):
        _recipe(monitor="val_top5")


def test_balanced_class_weight_follows_scikit_learn():
    from sklearn.utils.class_weight import compute_class_weight

    counts = {"cat": 90, "dog": 30, "eel": 0, "fox": 6}
    stages = runner._stages(_recipe(class_weight="balanced"), 4, _data(counts))
    labels = [i for i, n in enumerate(counts.values()) for _ in range(n)]
    present = np.array(sorted(set(labels)))
    expected = compute_class_weight("balanced", classes=present, y=np.array(labels))
    got = stages[0].class_weight
    assert [got[i] for i in present] == pytest.approx(list(expected))
    assert got[2] == 1.0  # a class with no training image weighs 1


def test_class_weight_table_by_name_and_its_errors():
    counts = {"cat": 9, "dog": 3}
    stages = runner._stages(_recipe(class_weight={"dog": 3.0}), 2, _data(counts))
    assert stages[0].class_weight == {0: 1.0, 1: 3.0}
    with pytest.raises(RecipeError, match=r"class_weight: no class named 'cow'.*'cat', 'dog'"):
        runner._stages(_recipe(class_weight={"cow": 2.0}), 2, _data(counts))
    no_counts = SimpleNamespace(class_names=["cat", "dog"], class_counts=lambda split: None)
    with pytest.raises(RecipeError, match="'balanced' needs the training labels"):
        runner._stages(_recipe(class_weight="balanced"), 2, no_counts)


def test_augment_strengths_reach_the_layers_and_the_recipe_round_trips():
    from recipes.config import recipe_to_toml

    data = tomllib.loads(RECIPE)
    data["data"]["augment"] = ["random_crop", "rand_augment", "mixup", "cutmix"]
    data["data"]["augment_strength"] = {
        "crop_fraction": 0.75,
        "rand_augment_magnitude": 0.3,
        "rand_augment_layers": 3,
        "mixup_alpha": 0.4,
        "cutmix_factor": 0.8,
        "switch_prob": 0.25,
    }
    recipe = parse_recipe(data)
    assert parse_recipe(tomllib.loads(recipe_to_toml(recipe))) == recipe
    aug = runner._stages(recipe, 3)[0].augment
    assert aug.crop_fraction == 0.75 and aug.switch_prob == 0.25
    rand = next(layer for layer in aug.layers if type(layer).__name__ == "RandAugment")
    assert rand.num_ops == 3 and rand.factor == pytest.approx((0, 0.3))
    mixup, cutmix = aug.mixes
    assert mixup.alpha == 0.4 and cutmix.factor == pytest.approx((0, 0.8))
    with pytest.raises(RecipeError, match="switch_prob"):
        data["data"]["augment_strength"] = {"switch_prob": 2.0}
        parse_recipe(data)


def test_flip_tta_averages_the_mirrors_logits_and_keeps_the_single_view_score(monkeypatch):
    images = np.zeros((4, 2, 2, 3), np.float32)
    images[:, :, 0, :] = 255.0  # the left column bright, the right dark
    labels = np.zeros(4, int)
    monkeypatch.setattr(runner, "_batches", lambda *args, **kwargs: [(images, labels)])

    class Sided:  # class 0 from the left column's brightness, class 1 (stronger) the right's
        def predict_on_batch(self, x):
            x = np.asarray(x)
            return np.stack([2 * x[:, :, 0].mean((1, 2)), 3 * x[:, :, -1].mean((1, 2))], 1) / 255

    data = SimpleNamespace(class_names=["a", "b"], identities=lambda split: None, validation=None)
    choice = EngineChoice("tensorflow", "auto", False, "a stand-in model")
    monkeypatch.setattr(runner, "_inference_model", lambda r, model, d, s: (model, choice))
    data_recipe = tomllib.loads(RECIPE)
    data_recipe["evaluate"] = {"tta": ["flip"]}
    metrics = runner._evaluate(parse_recipe(data_recipe), Sided(), data, log=lambda line: None)
    # Alone: logits (2, 0), right. Mirrored: (0, 3). Averaged: (1, 1.5), wrong.
    assert metrics["tta"]["top1_without"] == 1.0 and metrics["top1"] == 0.0
    assert metrics["tta"]["views"] == ["image", "flip"] and "calibration" not in metrics


def test_the_temperature_is_recorded_in_the_export_metadata():
    recipe = _recipe()
    metadata = runner._export_metadata(recipe, {"temperature": 0.7, "fitted_on": "validation"})
    assert metadata["temperature"] == 0.7  # what the export's probabilities apply
    assert metadata["calibration"]["fitted_on"] == "validation"
    uncalibrated = runner._export_metadata(recipe, None)
    assert "calibration" not in uncalibrated and "temperature" not in uncalibrated
