"""Heads: pooling, hidden layers, logits, float32 under mixed precision, serialization."""

import keras
import numpy as np
import pytest

from zoo.heads import GeMPooling2D, LinearHead, MLPHead, make_head


def _features(batch=2, size=3, channels=5, seed=0):
    rng = np.random.default_rng(seed)
    return rng.uniform(0.0, 2.0, size=(batch, size, size, channels)).astype("float32")


def test_linear_head_outputs_logits_of_a_dense_layer_on_average_pooled_features():
    x = _features()
    head = LinearHead(num_classes=4)
    logits = keras.ops.convert_to_numpy(head(x))
    kernel, bias = (keras.ops.convert_to_numpy(w) for w in head.logits.weights)
    expected = x.mean(axis=(1, 2)) @ kernel + bias
    np.testing.assert_allclose(logits, expected, rtol=1e-5, atol=1e-6)
    assert head.name == "head" and head.output_activation == "softmax"


def test_max_pooling_and_pooled_inputs():
    x = _features()
    head = LinearHead(num_classes=3, pooling="max")
    logits = keras.ops.convert_to_numpy(head(x))
    kernel, bias = (keras.ops.convert_to_numpy(w) for w in head.logits.weights)
    np.testing.assert_allclose(logits, x.max(axis=(1, 2)) @ kernel + bias, rtol=1e-5, atol=1e-6)
    pooled = LinearHead(num_classes=3)  # (batch, channels) input skips pooling
    assert tuple(pooled(x.mean(axis=(1, 2))).shape) == (2, 3) and pooled.pool is None


def test_gem_pooling_is_the_generalized_mean_and_p_is_learnable_or_fixed():
    x = _features()
    for p in (1.0, 3.0):
        out = keras.ops.convert_to_numpy(GeMPooling2D(p=p)(x))
        np.testing.assert_allclose(out, np.mean(x**p, axis=(1, 2)) ** (1 / p), rtol=1e-5)
    big = keras.ops.convert_to_numpy(GeMPooling2D(p=60.0)(x))
    np.testing.assert_allclose(big, x.max(axis=(1, 2)), rtol=0.1)
    learned, fixed = GeMPooling2D(p=3.0), GeMPooling2D(p=3.0, learnable=False)
    learned(x), fixed(x)
    assert [w.name for w in learned.trainable_weights] == ["p"]
    assert fixed.trainable_weights == [] and len(fixed.non_trainable_weights) == 1


def test_gem_head_learns_p():
    head = LinearHead(num_classes=2, pooling="gem", gem_p=3.0)
    head(_features())
    assert "head/gem_pool/p" in [w.path for w in head.trainable_weights]


def test_mlp_head_layers_in_order():
    head = MLPHead(num_classes=3, units=(8, 4), normalization="batchnorm", activation="gelu")
    out = head(_features(), training=False)
    assert tuple(out.shape) == (2, 3)
    names = [layer.name for layer in head.hidden]
    assert names == [
        "dense_0", "bn_0", "act_0", "dropout_0",
        "dense_1", "bn_1", "act_1", "dropout_1",
    ]  # fmt: skip
    assert [layer.units for layer in head.hidden if isinstance(layer, keras.layers.Dense)] == [8, 4]
    assert head.logits.kernel.shape == (4, 3)
    ln = MLPHead(num_classes=2, units=(6,), normalization="layernorm")
    ln(_features())
    assert isinstance(ln.hidden[1], keras.layers.LayerNormalization)


def test_dropout_before_the_classifier_only_in_training():
    x = _features(batch=4)
    head = LinearHead(num_classes=3, dropout=0.5)
    a = keras.ops.convert_to_numpy(head(x, training=False))
    b = keras.ops.convert_to_numpy(head(x, training=False))
    c = keras.ops.convert_to_numpy(head(x, training=True))
    np.testing.assert_array_equal(a, b)
    assert not np.allclose(a, c)
    no_drop = LinearHead(num_classes=3)
    no_drop(x)
    assert no_drop.drop is None


def test_multi_label_head_uses_sigmoid_and_binary_loss():
    head = LinearHead(num_classes=5, multi_label=True)
    assert head.output_activation == "sigmoid"
    assert isinstance(head.loss(), keras.losses.BinaryCrossentropy)
    assert isinstance(LinearHead(num_classes=5).loss(), keras.losses.SparseCategoricalCrossentropy)
    assert isinstance(
        LinearHead(num_classes=5).loss(label_smoothing=0.1), keras.losses.CategoricalCrossentropy
    )


def test_head_computes_in_float32_under_mixed_precision():
    keras.mixed_precision.set_global_policy("mixed_bfloat16")
    try:
        x = keras.ops.cast(_features(), "bfloat16")
        head = MLPHead(num_classes=3, units=(4,), pooling="gem", normalization="batchnorm")
        out = head(x)
        assert keras.backend.standardize_dtype(out.dtype) == "float32"
        assert head.compute_dtype == "float32"
        for layer in head._flatten_layers():
            assert layer.compute_dtype == "float32", layer.name
        assert keras.layers.Dense(2).compute_dtype == "bfloat16"  # the policy is active
    finally:
        keras.mixed_precision.set_global_policy("float32")


def test_heads_round_trip_through_config_and_keras_file(tmp_path):
    x = _features()
    for head in (
        LinearHead(num_classes=3, pooling="max", dropout=0.2, multi_label=True),
        MLPHead(num_classes=3, units=(6, 5), dropout=0.1, activation="swish", pooling="gem"),
    ):
        inputs = keras.Input((3, 3, 5))
        model = keras.Model(inputs, head(inputs))
        path = tmp_path / f"{head.__class__.__name__}.keras"
        model.save(path)
        loaded = keras.saving.load_model(path, safe_mode=True)
        np.testing.assert_array_equal(
            keras.ops.convert_to_numpy(model(x)), keras.ops.convert_to_numpy(loaded(x))
        )
        assert loaded.layers[-1].get_config() == head.get_config()


def test_make_head_copies_and_fills_num_classes():
    mine = MLPHead(units=(7,), dropout=0.3)
    made = make_head(mine, 4)
    assert made is not mine and mine.num_classes is None
    assert (made.num_classes, made.units, made.dropout, made.name) == (4, (7,), 0.3, "head")
    assert isinstance(make_head(None, 2), LinearHead)
    assert isinstance(make_head("mlp", 2), MLPHead)
    assert make_head("linear", 2, multi_label=True).multi_label


BAD_HEADS = [
    (lambda: make_head("transformer", 3), r"Unknown head 'transformer'.*linear.*mlp"),
    (lambda: LinearHead(pooling="median"), r"unknown pooling 'median'.*avg.*max.*gem"),
    (lambda: make_head("linear", 0), r"num_classes must be an integer >= 1, got 0"),
    (lambda: LinearHead(num_classes=-2), r"num_classes must be an integer >= 1, got -2"),
    (lambda: LinearHead(dropout=1.0), r"dropout must be in \[0, 1\), got 1.0"),
    (lambda: MLPHead(units=()), r"units must be positive integers"),
    (lambda: MLPHead(units=(0,)), r"units must be positive integers"),
    (lambda: MLPHead(activation="nope"), r"unknown activation 'nope'"),
    (lambda: MLPHead(normalization="group"), r"unknown normalization 'group'"),
    (lambda: make_head(LinearHead(num_classes=3), 5), r"made for 3 classes.*has 5"),
    (lambda: LinearHead()(_features()), r"no num_classes"),
    (lambda: GeMPooling2D(p=0), r"p > 0"),
    (lambda: LinearHead(pooling="x", dropout=2.0), r"pooling 'x'.*dropout must be"),  # all at once
]


def test_bad_head_arguments_raise_clear_errors():
    # One test, not one per case: every test pays about a second of Keras session reset.
    for make, match in BAD_HEADS:
        with pytest.raises(ValueError, match=match):
            make()
    with pytest.raises(TypeError, match="zoo.heads.Head instance; got Dense"):
        make_head(keras.layers.Dense(3), 3)
