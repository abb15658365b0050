"""build_classifier: structure, logits, info, .keras round trips, mixed precision, errors."""

import keras
import numpy as np
import pytest

import zoo
from zoo.classifier import Classifier, build_classifier, classifier_info
from zoo.heads import LinearHead, MLPHead
from zoo.policies import FreezeBackbone, UnfreezeTop, make_optimizer
from zoo.testing import calibrate_batchnorm, random_batch, temporary_backbone


@pytest.fixture
def tiny_name():
    with temporary_backbone() as spec:
        yield spec.name


def _np(x):
    return keras.ops.convert_to_numpy(x)


def test_pixels_preprocess_backbone_head_give_logits(tiny_name):
    model = build_classifier(
        tiny_name, 4, weights=None, input_shape=(16, 16, 3), class_names=["a", "b", "c", "d"]
    )
    assert [layer.name for layer in model.layers] == ["pixels", "preprocess", "backbone", "head"]
    assert isinstance(model.get_layer("preprocess"), zoo.Preprocess)
    assert isinstance(model.get_layer("head"), LinearHead)
    x, _ = random_batch(model, 3)
    logits = _np(model(x))
    assert logits.shape == (3, 4) and logits.dtype == np.float32
    parts = model.get_layer("head")(model.get_layer("backbone")(model.get_layer("preprocess")(x)))
    np.testing.assert_array_equal(logits, _np(parts))
    scaled = (x - 127.5) / 127.5  # the tiny backbone uses inception scaling
    np.testing.assert_allclose(_np(model.get_layer("preprocess")(x)), scaled, atol=1e-6)
    assert classifier_info(model) == {
        "backbone": tiny_name,
        "input_size": (16, 16),
        "num_classes": 4,
        "class_names": ["a", "b", "c", "d"],
        "multi_label": False,
        "preprocessing": {
            "mode": "inception",
            "mean": [127.5] * 3,
            "std": [127.5] * 3,
            "channel_order": "rgb",
        },
        "head": "LinearHead",
        "weights": {"source": None, "sha256": None},
    }
    assert classifier_info(build_classifier(tiny_name, 2, weights=None))["class_names"] == [
        "0",
        "1",
    ]
    multi = build_classifier(tiny_name, 2, head="mlp", weights=None, multi_label=True)
    assert classifier_info(multi)["multi_label"] and classifier_info(multi)["head"] == "MLPHead"


@pytest.mark.slow
def test_inception_v3_tutorial_is_one_call():
    # Keras' InceptionV3 fine-tuning example: frozen base, global average pooling,
    # Dense(1024, relu), softmax classifier.
    model = build_classifier(
        "inception_v3", 5, head=MLPHead(units=(1024,)), weights=None, input_shape=(75, 75, 3)
    )
    summary = FreezeBackbone().apply(model)
    head = model.get_layer("head")
    assert (head.pooling, head.units, head.activation, head.output_activation) == (
        "avg",
        (1024,),
        "relu",
        "softmax",
    )
    assert {w.path: tuple(w.shape) for w in model.trainable_weights} == {
        "head/dense_0/kernel": (2048, 1024),
        "head/dense_0/bias": (1024,),
        "head/logits/kernel": (1024, 5),
        "head/logits/bias": (5,),
    }
    assert summary.trainable_blocks == [] and len(summary.groups) == 12  # 11 blocks + head


@pytest.mark.slow
def test_keras_file_round_trip_on_a_real_backbone(tmp_path):
    model = build_classifier(
        "mobilenet_v2",
        3,
        head=MLPHead(units=(8,), pooling="gem", normalization="batchnorm", dropout=0.2),
        weights=None,
        input_shape=(32, 32, 3),
        class_names=["cat", "dog", "fox"],
    )
    x, _ = random_batch(model, 4)
    calibrate_batchnorm(model, x)  # non-default moving statistics must survive too
    path = tmp_path / "classifier.keras"
    model.save(path)
    loaded = keras.saving.load_model(path, safe_mode=True)
    assert isinstance(loaded, Classifier)
    np.testing.assert_array_equal(_np(model(x, training=False)), _np(loaded(x, training=False)))
    assert classifier_info(loaded) == classifier_info(model)
    assert [w.path for w in loaded.weights] == [w.path for w in model.weights]


def test_round_trip_keeps_the_policy_and_the_optimizer(tiny_name, tmp_path):
    model = build_classifier(tiny_name, 3, weights=None, input_shape=(16, 16, 3))
    policy = UnfreezeTop(blocks=2, lr_decay=0.5)
    policy.apply(model)
    schedule = keras.optimizers.schedules.ExponentialDecay(1e-3, 4, 0.5)
    model.compile(
        optimizer=make_optimizer("adamw", schedule, model, policy, weight_decay=0.01),
        loss=model.get_layer("head").loss(),
    )
    x, y = random_batch(model, 4)
    model.fit(x, y, batch_size=2, shuffle=False, verbose=0)
    model.save(tmp_path / "m.keras")
    loaded = keras.saving.load_model(tmp_path / "m.keras", safe_mode=True)
    assert loaded.zoo_policy == policy
    assert [w.path for w in loaded.trainable_weights] == [w.path for w in model.trainable_weights]
    assert loaded.optimizer.lr_multipliers == {"conv1/kernel": 0.25, "conv2/kernel": 0.5}
    assert int(loaded.optimizer.iterations) == 2
    for a, b in zip(model.optimizer.variables, loaded.optimizer.variables, strict=True):
        np.testing.assert_array_equal(_np(a), _np(b))
    # Training on from the file gives the same weights as training on in memory.
    model.fit(x, y, batch_size=2, shuffle=False, verbose=0)
    loaded.fit(x, y, batch_size=2, shuffle=False, verbose=0)
    for a, b in zip(model.weights, loaded.weights, strict=True):
        np.testing.assert_array_equal(_np(a), _np(b), err_msg=a.path)


def test_head_is_float32_under_mixed_precision(tiny_name):
    keras.mixed_precision.set_global_policy("mixed_bfloat16")
    try:
        model = build_classifier(tiny_name, 3, head="mlp", weights=None, input_shape=(16, 16, 3))
        x, _ = random_batch(model, 2)
        assert keras.backend.standardize_dtype(model(x).dtype) == "float32"
        assert model.get_layer("backbone").layers[1].compute_dtype == "bfloat16"
        head = model.get_layer("head")
        assert {w.dtype for w in head.weights} == {"float32"}
        assert {layer.compute_dtype for layer in head._flatten_layers()} == {"float32"}
    finally:
        keras.mixed_precision.set_global_policy("float32")


def test_bad_arguments_raise_clear_errors(tiny_name):
    cases = [
        (dict(num_classes=0), r"num_classes must be an integer >= 1, got 0"),
        (dict(num_classes=-1), r"num_classes must be an integer >= 1, got -1"),
        (
            dict(head="resnet_head"),
            r"Unknown head 'resnet_head'; expected one of \['knn', 'linear', 'mlp'\]",
        ),
        (dict(class_names=["a", "b"]), r"2 class names for num_classes=3"),
        (dict(class_names=["a", "a", "b"]), r"duplicate class names \['a'\]"),
        (dict(class_names="abc"), "must be a list of strings"),
        (dict(input_shape=(4, 4, 3)), r"at least 8x8 pixels; got input_shape \(4, 4, 3\)"),
        (dict(input_shape=(16, 16)), r"input_shape must be \(height, width, 3\)"),
    ]
    for kwargs, match in cases:
        args = {"num_classes": 3, "weights": None, **kwargs}
        with pytest.raises(ValueError, match=match):
            build_classifier(tiny_name, **args)
    with pytest.raises(ValueError, match=r"unknown pooling 'mean'"):
        build_classifier(tiny_name, 3, head=LinearHead(pooling="mean"), weights=None)
    with pytest.raises(KeyError, match=r"Unknown backbone 'inception_v9'.*inception_v3"):
        build_classifier("inception_v9", 3, weights=None)
    inputs = keras.Input((4,))
    with pytest.raises(ValueError, match="needs a model made by zoo.build_classifier"):
        classifier_info(keras.Model(inputs, keras.layers.Dense(2)(inputs)))
