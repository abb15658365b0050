"""Tests for zoo.cost.count_macs against hand-computed counts and published figures."""

import keras
import pytest

from zoo.cost import count_macs


def _one_layer(layer, input_shape):
    inputs = keras.Input(input_shape)
    return keras.Model(inputs, layer(inputs))


@pytest.mark.parametrize(
    ("layer", "input_shape", "expected"),
    [
        # 8*8 output positions * 3*3 kernel * 3 inputs * 4 filters
        (keras.layers.Conv2D(4, 3, padding="same"), (8, 8, 3), 8 * 8 * 3 * 3 * 3 * 4),
        # valid padding: 6*6 positions; groups=2 -> each filter sees 4 / 2 channels
        (keras.layers.Conv2D(8, 3, groups=2), (8, 8, 4), 6 * 6 * 3 * 3 * 2 * 8),
        # stride 2, same: 3*3 positions * 3*3 kernel * 8 channels * multiplier 2
        (
            keras.layers.DepthwiseConv2D(3, strides=2, padding="same", depth_multiplier=2),
            (6, 6, 8),
            3 * 3 * 3 * 3 * 8 * 2,
        ),
        # depthwise 2*2 positions * 3*3 * 16, then pointwise 2*2 * 16 * 5
        (keras.layers.SeparableConv2D(5, 3), (4, 4, 16), 2 * 2 * 3 * 3 * 16 + 2 * 2 * 16 * 5),
        # transpose: every input position scatters a 2*2 kernel: 3*3 * 2*2 * 5 * 6
        (keras.layers.Conv2DTranspose(6, 2, strides=2), (3, 3, 5), 3 * 3 * 2 * 2 * 5 * 6),
        (keras.layers.Conv1D(4, 3), (10, 2), 8 * 3 * 2 * 4),
        # a Dense on a feature map runs once per position
        (keras.layers.Dense(7), (3, 3, 5), 3 * 3 * 5 * 7),
        (keras.layers.Dense(10), (20,), 20 * 10),
        (keras.layers.BatchNormalization(), (4, 4, 3), 0),
        (keras.layers.MaxPooling2D(), (4, 4, 3), 0),
    ],
    ids=lambda v: type(v).__name__ if isinstance(v, keras.layers.Layer) else None,
)
def test_single_layer_counts(layer, input_shape, expected):
    assert count_macs(_one_layer(layer, input_shape)) == expected


def test_nested_model_and_sequential_are_counted_layer_by_layer():
    inner = keras.Sequential(
        [keras.Input((4, 4, 3)), keras.layers.Conv2D(2, 1), keras.layers.Dense(5)], name="inner"
    )
    inputs = keras.Input((4, 4, 3))
    x = inner(inputs)
    x = keras.layers.Flatten()(x)
    outputs = keras.layers.Dense(3)(x)
    model = keras.Model(inputs, outputs)
    # inner: conv 16*3*2 = 96, dense 16*2*5 = 160; outer dense 80*3 = 240
    assert count_macs(inner) == 96 + 160
    assert count_macs(model) == 96 + 160 + 240


def test_shared_layer_counts_once_per_call():
    dense = keras.layers.Dense(4)
    a, b = keras.Input((3,)), keras.Input((3,))
    model = keras.Model([a, b], [dense(a), dense(b)])
    assert count_macs(model) == 2 * 3 * 4


def test_unknown_spatial_size_is_refused_with_fix():
    model = _one_layer(keras.layers.Conv2D(4, 3), (None, None, 3))
    with pytest.raises(ValueError, match=r"conv2d.*\(None, None, None, 3\).*fixed input_shape"):
        count_macs(model)


def test_model_without_graph_is_refused():
    class Plain(keras.Model):
        def call(self, x):
            return x

    with pytest.raises(ValueError, match="functional or Sequential.*Plain"):
        count_macs(Plain())


@pytest.mark.parametrize(
    ("builder", "published"),
    [
        # Howard et al. 2017, Table 8: 1.0 MobileNet-224, 569 million mult-adds.
        (keras.applications.MobileNet, 569e6),
        # Sandler et al. 2018, Table 4: MobileNetV2 (1.0, 224), 300 million MAdds.
        (keras.applications.MobileNetV2, 300e6),
    ],
)
def test_matches_published_mult_adds(builder, published):
    model = builder(include_top=True, weights=None, input_shape=(224, 224, 3))
    assert count_macs(model) == pytest.approx(published, rel=0.01)
