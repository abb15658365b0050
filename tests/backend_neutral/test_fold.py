"""BatchNorm folded into the convolution before it: same function, original untouched.

Backend-neutral: the cache's prefix pass folds on every backend.
"""

import keras
import numpy as np

import zoo
from zoo.caching.fold import FoldedBatchNorm, fold_batchnorm, foldable_pairs
from zoo.testing import calibrate_batchnorm


def _randomize_batchnorms(model, seed=0):
    """Moving statistics, scale and offset far from the identity, so a wrong fold shows."""
    rng = np.random.default_rng(seed)
    for layer in model._flatten_layers(include_self=False):
        if isinstance(layer, keras.layers.BatchNormalization):
            n = layer.moving_mean.shape[0]
            layer.gamma.assign(rng.uniform(0.5, 2.0, n).astype("float32"))
            layer.beta.assign(rng.normal(0, 1, n).astype("float32"))
            layer.moving_mean.assign(rng.normal(0, 1, n).astype("float32"))
            layer.moving_variance.assign(rng.uniform(0.2, 3.0, n).astype("float32"))


def _mixed_model():
    """Three pairs that fold and three BatchNorms that must stay."""
    x = inputs = keras.Input((12, 12, 4))
    x = keras.layers.Conv2D(8, 3, padding="same", use_bias=False, name="c1")(x)
    x = keras.layers.BatchNormalization(name="bn1")(x)  # folds
    x = keras.layers.ReLU()(x)
    x = keras.layers.DepthwiseConv2D(3, depth_multiplier=2, padding="same", name="dw")(x)
    x = keras.layers.BatchNormalization(name="bn2")(x)  # folds (16 = 8 x 2 channels)
    x = keras.layers.Conv2D(16, 1, use_bias=True, name="c3")(x)
    x = keras.layers.BatchNormalization(name="bn3")(x)  # folds, onto an existing bias
    branch = keras.layers.Conv2D(16, 1, activation="relu", name="c4")(x)
    branch = keras.layers.BatchNormalization(name="bn4")(branch)  # conv has an activation
    shared = keras.layers.Conv2D(16, 1, use_bias=False, name="c5")(branch)
    y = keras.layers.BatchNormalization(name="bn5")(shared)  # conv output read twice
    x = keras.layers.Add()([x, y, shared])
    x = keras.layers.GlobalAveragePooling2D()(x)
    x = keras.layers.Dense(6, name="dense")(x)
    outputs = keras.layers.BatchNormalization(name="bn6")(x)  # after a Dense
    return keras.Model(inputs, outputs)


def test_foldable_pairs_fold_and_the_function_stays_the_same():
    model = _mixed_model()
    _randomize_batchnorms(model)
    x = np.random.default_rng(1).normal(0, 1, (4, 12, 12, 4)).astype("float32")
    before = {v.path: np.array(v) for v in model.weights}
    expected = np.asarray(model(x, training=False))

    assert sorted(bn.name for _, bn in foldable_pairs(model)) == ["bn1", "bn2", "bn3"]
    folded, count = fold_batchnorm(model)

    assert count == 3
    names = {type(layer).__name__: [] for layer in folded.layers}
    for layer in folded.layers:
        names[type(layer).__name__].append(layer.name)
    assert sorted(names["FoldedBatchNorm"]) == ["bn1", "bn2", "bn3"]
    assert sorted(names["BatchNormalization"]) == ["bn4", "bn5", "bn6"]
    got = np.asarray(folded(x, training=False))
    np.testing.assert_allclose(got, expected, rtol=1e-5, atol=1e-5 * np.abs(expected).max())
    # The original keeps its weights and graph: no layer was called again.
    assert all(np.array_equal(np.array(v), before[v.path]) for v in model.weights)
    assert all(len(layer._inbound_nodes) == 1 for layer in model.layers[1:])


def test_a_backbone_folds_every_batchnorm_and_matches_in_inference():
    model = zoo.build_classifier("efficientnet_lite0", 3, weights=None, input_shape=(32, 32, 3))
    x = np.random.default_rng(2).uniform(0, 255, (8, 32, 32, 3)).astype("float32")
    calibrate_batchnorm(model, x)
    norms = [
        layer
        for layer in model._flatten_layers(include_self=False)
        if isinstance(layer, keras.layers.BatchNormalization)
    ]
    expected = np.asarray(model(x, training=False))

    folded, count = fold_batchnorm(model)

    assert count == len(norms) > 40  # in EfficientNet-Lite every BatchNorm follows a conv
    assert not any(
        isinstance(layer, keras.layers.BatchNormalization)
        for layer in folded._flatten_layers(include_self=False)
    )
    assert any(isinstance(layer, FoldedBatchNorm) for layer in folded._flatten_layers())
    got = np.asarray(folded(x, training=False))
    np.testing.assert_allclose(got, expected, rtol=1e-4, atol=1e-4 * np.abs(expected).max())


def test_a_model_without_foldable_pairs_is_returned_as_is():
    x = inputs = keras.Input((8, 8, 3))
    x = keras.layers.Conv2D(4, 3, activation="relu")(x)
    x = keras.layers.BatchNormalization()(x)  # after an activation: not foldable
    model = keras.Model(inputs, x)

    assert fold_batchnorm(model) == (model, 0)
