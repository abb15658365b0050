"""Registry, backbones, heads, classifier, policies and fingerprints on the current backend.

Small inputs and random weights: what is checked is that model building and one real
optimizer step behave the same on every Keras backend, not what pretrained weights do.
"""

import json

import keras
import numpy as np
import pytest

import zoo
from zoo import fingerprint
from zoo.policies import get_backbone
from zoo.testing import (
    calibrate_batchnorm,
    random_batch,
    run_multiplier_test,
    run_policy_test,
    temporary_backbone,
)

SMALL = (64, 64, 3)


def test_registry_lists_and_suggests():
    assert {"efficientnet_lite0", "inception_v3", "resnet50"} <= set(zoo.list_backbones())
    assert zoo.list_backbones("efficientnet_lite*")[0] == "efficientnet_lite0"
    with pytest.raises(zoo.UnknownBackboneError, match="Did you mean inception_v3"):
        zoo.get_spec("inceptoin_v3")


@pytest.mark.parametrize("name", ["efficientnet_lite0", "mobilenet_v2"])
def test_backbone_matches_its_spec(name):
    spec = zoo.get_spec(name)
    backbone = zoo.create_backbone(name, weights=None, input_shape=SMALL)
    assert backbone.count_params() == spec.params
    assert backbone.output.shape[-1] == spec.feature_dim
    names = {layer.name for layer in backbone.layers}
    assert {block.end for block in spec.blocks} <= names


@pytest.mark.parametrize(
    "head, multi_label, activation",
    [("linear", False, "softmax"), (zoo.MLPHead(units=(8,), dropout=0.1), True, "sigmoid")],
)
def test_classifier_forward_and_keras_file_round_trip(tmp_path, head, multi_label, activation):
    model = zoo.build_classifier(
        "efficientnet_lite0", 4, head=head, weights=None, input_shape=SMALL, multi_label=multi_label
    )
    x, _ = random_batch(model, 2)
    logits = keras.ops.convert_to_numpy(model(x, training=False))
    assert logits.shape == (2, 4) and np.isfinite(logits).all()
    assert model.get_layer("head").output_activation == activation
    model.save(tmp_path / "m.keras")
    again = keras.saving.load_model(tmp_path / "m.keras", safe_mode=True)
    np.testing.assert_allclose(keras.ops.convert_to_numpy(again(x)), logits, atol=1e-5)
    assert fingerprint.digest(fingerprint.manifest(again)) == fingerprint.digest(
        fingerprint.manifest(model)
    )


@pytest.fixture
def tiny():
    """A calibrated classifier on the 3-block test backbone (b0, b1, b2)."""
    with temporary_backbone() as spec:
        model = zoo.build_classifier(spec.name, 3, weights=None, input_shape=(16, 16, 3))
        calibrate_batchnorm(model, random_batch(model, 8, seed=1)[0])
        yield model


@pytest.mark.parametrize("run_eagerly", [True, False])
def test_unfreeze_top_trains_only_the_top_and_keeps_the_rest_bitwise(tiny, run_eagerly):
    result = run_policy_test(tiny, zoo.UnfreezeTop(blocks=1), steps=2, run_eagerly=run_eagerly)
    assert result.problems() == []
    changed = result.changed()
    assert {"conv2/kernel", "head/logits/kernel"} <= changed
    assert not changed & {"conv0/kernel", "conv1/kernel", "bn2/moving_mean", "bn2/gamma"}


def test_block_learning_rates_scale_a_compiled_adam_step(tiny):
    policy = zoo.UnfreezeTop(blocks=3, lr_multipliers={"b0": 0.1, "b2": 0.5})
    ratios = run_multiplier_test(tiny, policy, optimizer="adam", run_eagerly=False)
    assert [(r.group, r.multiplier) for r in ratios] == [
        ("b0", 0.1),
        ("b1", 1.0),
        ("b2", 0.5),
        ("head", 1.0),
    ]
    for r in ratios:
        assert r.relative_error < 0.05, r


def test_frozen_manifest_marks_the_frozen_backbone(tiny):
    zoo.FreezeBackbone().apply(tiny)
    manifest = fingerprint.manifest(tiny)
    frozen = fingerprint.frozen_set(manifest)
    backbone_paths = {p for p in fingerprint.entries(manifest) if p.startswith("backbone/")}
    assert frozen == backbone_paths and backbone_paths
    assert not get_backbone(tiny).trainable_weights
    reread = fingerprint.check(json.loads(fingerprint.to_json(manifest)))
    assert fingerprint.digest(reread) == fingerprint.digest(manifest)
