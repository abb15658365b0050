"""``create_backbone(features_only=True)``: pretrained feature maps and out_indices errors.

Every registered backbone's stages are checked against its built model in
``test_backbones.py`` (which builds each architecture once for the module); here the
pretrained path and the argument checks, on EfficientNet-Lite0 at a small input.
"""

import numpy as np
import pytest

import zoo
from zoo.errors import InvalidTypeError, InvalidValueError
from zoo.features import features_model

LITE0 = "efficientnet_lite0"
SHAPE = (64, 64, 3)


@pytest.fixture(scope="module")
def pixels():
    rng = np.random.default_rng(0)
    return rng.integers(0, 256, (2, *SHAPE)).astype("float32")


def test_pretrained_features_are_the_backbones_maps(pixels):
    features = zoo.create_backbone(
        LITE0, weights="imagenet", input_shape=SHAPE, features_only=True, out_indices=(1, 2, 3, 4)
    )
    backbone = zoo.create_backbone(LITE0, weights="imagenet", input_shape=SHAPE)
    assert features.zoo_weights == backbone.zoo_weights and backbone.zoo_weights["sha256"]
    info = features.feature_info
    assert [(f.index, f.block, f.channels, f.reduction) for f in info] == [
        (1, "block2b", 24, 4),
        (2, "block3b", 40, 8),
        (3, "block5c", 112, 16),
        (4, "top", 1280, 32),
    ]
    x = zoo.Preprocess(zoo.get_spec(LITE0).preprocessing)(pixels)  # the same input contract
    maps = features.predict_on_batch(x)
    assert [m.shape for m in maps] == [
        (2, 64 // f.reduction, 64 // f.reduction, f.channels) for f in info
    ]
    np.testing.assert_allclose(maps[-1], backbone.predict_on_batch(x), rtol=1e-5, atol=1e-5)


@pytest.fixture(scope="module")
def small_lite0():
    return zoo.create_backbone(LITE0, weights=None, input_shape=(32, 32, 3))


def test_negative_indices_count_from_the_coarsest_stage(small_lite0):
    model = features_model(small_lite0, zoo.get_spec(LITE0), out_indices=(-1, -3))
    assert [f.reduction for f in model.feature_info] == [8, 32]  # network order, not given order
    assert [f.index for f in model.feature_info] == [2, 4]
    assert model.outputs[-1] is small_lite0.outputs[0]


@pytest.mark.parametrize(
    ("out_indices", "error", "match"),
    [
        ((1, 5), InvalidValueError, r"\[5\] out of range; 'efficientnet_lite0' has 5 feature "
         r"stages, so valid indices are 0\.\.4 or -5\.\.-1 \(0: stride 2 \(block1a\)"),
        ((-6,), InvalidValueError, r"valid indices are 0\.\.4 or -5\.\.-1"),
        ((1, -4), InvalidValueError, "names a stage twice"),
        ((), InvalidValueError, "out_indices is empty"),
        (3, InvalidTypeError, "must be a sequence of ints"),
        ((1, 2.0), InvalidTypeError, r"must be ints; got \[2\.0\]"),
    ],
)  # fmt: skip
def test_bad_out_indices_say_the_valid_range(small_lite0, out_indices, error, match):
    with pytest.raises(error, match=match):
        features_model(small_lite0, zoo.get_spec(LITE0), out_indices)


def test_features_only_refuses_the_top_and_stray_out_indices():
    with pytest.raises(InvalidValueError, match="leave include_top=False"):
        zoo.create_backbone(LITE0, weights=None, include_top=True, features_only=True)
    with pytest.raises(InvalidValueError, match="pass features_only=True too"):
        zoo.create_backbone(LITE0, weights=None, out_indices=(1, 2))


def test_fewer_stages_than_four():
    # The Inception family's blocks start at stride 8: three stages, so (1, 2, 3, 4) is out.
    with pytest.raises(InvalidValueError, match=r"has 3 feature stages.*0: stride 8 \(mixed2\)"):
        zoo.create_backbone(
            "inception_v3", weights=None, input_shape=(75, 75, 3), features_only=True,
            out_indices=(1, 2, 3, 4),
        )  # fmt: skip
