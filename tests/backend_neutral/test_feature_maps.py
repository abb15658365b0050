"""``features_only`` on the current backend: the maps, their strides, the shared weights."""

import keras
import numpy as np

import zoo
from zoo.features import tensor_strides

SMALL = (64, 64, 3)


def test_features_only_maps_and_the_last_is_the_backbone_output():
    backbone = zoo.create_backbone("mobilenet_v2", weights=None, input_shape=SMALL)
    features = zoo.features.features_model(backbone, zoo.get_spec("mobilenet_v2"), (-3, -2, -1))
    assert [(f.block, f.reduction) for f in features.feature_info] == [
        ("block_5", 8),
        ("block_12", 16),
        ("top", 32),
    ]
    x = np.random.default_rng(0).uniform(-1, 1, (2, *SMALL)).astype("float32")
    maps = [keras.ops.convert_to_numpy(m) for m in features(x, training=False)]
    assert [m.shape for m in maps] == [(2, 8, 8, 32), (2, 4, 4, 96), (2, 2, 2, 1280)]
    expected = keras.ops.convert_to_numpy(backbone(x, training=False))
    np.testing.assert_allclose(maps[-1], expected, rtol=1e-5, atol=1e-6)
    # The features model shares the backbone's variables: nothing copied.
    assert {id(v) for v in features.weights} <= {id(v) for v in backbone.weights}


def test_strides_walk_nested_models():
    inner_in = keras.Input((16, 16, 4))
    inner = keras.Model(inner_in, keras.layers.Conv2D(4, 3, strides=2, padding="same")(inner_in))
    stem = keras.Sequential([keras.Input((32, 32, 3)), keras.layers.MaxPooling2D(2)])
    x = inputs = keras.Input((32, 32, 3))
    x = stem(x)
    x = keras.layers.Conv2D(4, 1)(x)
    y = inner(x)
    z = keras.layers.AveragePooling2D(3, strides=2, padding="same")(x)
    out = keras.layers.Add()([y, z])
    model = keras.Model(inputs, out)
    strides = tensor_strides(model)
    assert strides[id(x)] == (2, 2)
    assert strides[id(out)] == (4, 4)
