"""Frozen-prefix activation caching: equality with plain training, fallback, storage."""

import keras
import numpy as np
import pytest
import tensorflow as tf

from zoo import caching
from zoo.caching import compute as caching_compute
from zoo.caching import engine as caching_engine
from zoo.caching import plan as caching_plan
from zoo.classifier import build_classifier
from zoo.fingerprint import manifest
from zoo.policies import FreezeBackbone, FullFineTune, UnfreezeTop
from zoo.registry import get_spec
from zoo.training import Stage, fine_tune

BACKBONE = "efficientnet_lite0"  # has stochastic depth in its blocks, which caching must handle
SIZE = 32


def _model(like=None):
    model = build_classifier(BACKBONE, 3, weights=None, input_shape=(SIZE, SIZE, 3))
    if like is not None:
        for mine, theirs in zip(model.variables, like.variables, strict=True):
            mine.assign(theirs)
    return model


def _data(n=32, batch=16, seed=0):
    rng = np.random.default_rng(seed)
    x = rng.uniform(0, 255, (n, SIZE, SIZE, 3)).astype("float32")
    y = rng.integers(0, 3, n)
    return tf.data.Dataset.from_tensor_slices((x, y)).batch(batch)


def _weights(model):
    return {v.path: np.array(v) for v in model.variables}


def _max_diff(a, b):
    return max(float(np.max(np.abs(a[k] - b[k]))) for k in a)


@pytest.mark.slow
def test_prefix_cache_training_equals_plain_training():
    data = _data()
    stage = dict(
        name="top", policy=UnfreezeTop(blocks=2, batchnorm="frozen"), epochs=2, learning_rate=1e-2
    )
    cached = _model()
    plain = _model(like=cached)
    before = manifest(cached)
    start = _weights(cached)

    r_cached = fine_tune(cached, data, data, [Stage(**stage)], shuffle_cache=False, verbose=0)
    r_plain = fine_tune(plain, data, data, [Stage(**stage, cache="off")], verbose=0)

    info = r_cached.stages[0].cache
    assert info.used and info.cut == "block6d" and info.location == "memory" and info.exact
    assert not r_plain.stages[0].cache.used
    assert "cache='off'" in r_plain.stages[0].cache.reason
    after_cached, after_plain = _weights(cached), _weights(plain)
    # Training happened (through the suffix, on the full model's own variables) ...
    trained = r_cached.stages[0].trainable_paths
    assert "block7a_dwconv/kernel" in trained and "block6d_dwconv/kernel" not in trained
    assert _max_diff({k: start[k] for k in trained}, {k: after_cached[k] for k in trained}) > 1e-3
    # ... and gives the same model as plain training with the same semantics.
    assert _max_diff(after_cached, after_plain) <= 1e-5
    # The frozen prefix is bitwise unchanged (manifest sha256 of every frozen variable).
    frozen = r_cached.frozen_in_all_stages
    assert any("block1a" in p for p in frozen) and not any("top_conv" in p for p in frozen)
    now = {e["path"]: e["sha256"] for e in manifest(cached)["variables"]}
    was = {e["path"]: e["sha256"] for e in before["variables"]}
    changed = [p for p in frozen if now[p] != was[p]]
    assert changed == []


@pytest.mark.slow
def test_prefix_cache_with_trainable_batchnorm_matches_plain_training(monkeypatch):
    # The main job's fine-tune: the trained blocks' BatchNorm layers use batch statistics
    # and update their moving statistics; the frozen blocks' stay in inference mode, so
    # the prefix is still a fixed function of the input and can be cached.
    data = _data()
    stage = dict(
        name="top",
        policy=UnfreezeTop(blocks=2, batchnorm="trainable"),
        epochs=2,
        learning_rate=1e-2,
    )

    # With the prefix run unfolded, the cache does plain training's arithmetic. Bitwise on
    # the AVX-512 machines; not promised: the prefix runs in another graph than the train
    # step, and which oneDNN kernel (so which order of a convolution's sums) each graph
    # gets depends on the CPU (6e-8 apart on AVX2, measured under a tf.distribute strategy).
    monkeypatch.setattr(caching_engine, "fold_batchnorm", lambda model: (model, 0))
    cached = _model()
    plain = _model(like=cached)
    start = _weights(cached)
    r = fine_tune(cached, data, data, [Stage(**stage)], shuffle_cache=False, verbose=0)
    fine_tune(plain, data, data, [Stage(**stage, cache="off")], verbose=0)
    assert r.stages[0].cache.used and r.stages[0].cache.cut == "block6d"
    after_cached, after_plain = _weights(cached), _weights(plain)
    assert _max_diff(after_cached, after_plain) <= 1e-6
    moved = [k for k in after_cached if not np.array_equal(start[k], after_cached[k])]
    assert "block7a_bn/moving_mean" in moved and "top_bn/gamma" in moved
    assert not any(k.startswith("block6d") for k in moved)

    # Folded (what zoo runs), the cached activations are the same to float rounding
    # (tests/backend_neutral/test_fold.py). Training on them is not compared weight by weight
    # here: four steps at 1e-2 through BatchNorm in training mode, on batches of 16, amplify
    # rounding to about 1e-3 in some weights with SGD, and to 1e-2 with Adam.


def test_head_only_cache_predictions_match_full_model():
    data = _data()
    model = _model()
    result = fine_tune(model, data, None, [Stage("head", FreezeBackbone(), 2, 1e-2)], verbose=0)

    info = result.stages[0].cache
    assert info.used and info.cut_layer == get_spec(BACKBONE).blocks[-1].end
    assert info.size_bytes == 32 * int(np.prod(info.shape)) * 4 + 32 * 8
    images = np.concatenate([x for x, _ in data])
    with caching.frozen_layers_in_inference(model):
        split = caching.split_model(model, caching.plan_cut(model))
    features = split.prefix(images, training=False)
    head_on_features = np.asarray(split.suffix(features, training=False))
    full = model.predict(images, verbose=0)
    assert np.max(np.abs(full - head_on_features)) <= 1e-5


def test_augmentation_falls_back_to_plain_training_with_reason():
    model = _model()
    flip = keras.layers.RandomFlip("horizontal", seed=1)
    stage = Stage("aug", FreezeBackbone(), 1, 1e-3, augment=flip)
    result = fine_tune(model, _data(16), None, [stage], verbose=0)
    info = result.stages[0].cache
    assert not info.used
    assert "augmentation is on (RandomFlip)" in info.reason
    assert result.stages[0].history["loss"]


def test_over_budget_cache_spills_to_disk_in_bfloat16(tmp_path):
    data = _data()
    model = _model()
    stage = Stage("head", FreezeBackbone(), 1, 1e-2, cache_dtype="bfloat16")
    result = fine_tune(
        model, data, data, [stage], cache_dir=tmp_path, cache_budget_bytes=1000, verbose=0
    )
    info = result.stages[0].cache
    assert info.used and not info.exact and info.dtype == "bfloat16"
    assert info.location.startswith(str(tmp_path))
    assert "exceed the memory budget of 1000 bytes" in info.location_reason
    per_split = 32 * int(np.prod(info.shape)) * 2 + 32 * 8  # bfloat16: 2 bytes a value
    assert info.size_bytes == 2 * per_split
    assert sorted(p.name for p in (tmp_path / info.key[:16]).iterdir()) == [
        "train.canonical.npy",
        "train.json",
        "train.x.bin",
        "train.y.npy",
        "validation.canonical.npy",
        "validation.json",
        "validation.x.bin",
        "validation.y.npy",
    ]


def test_plan_cut_respects_frozen_flags_and_stochastic_layers():
    model = _model()
    FreezeBackbone().apply(model)
    # Keras keeps a frozen Dropout active: the cut must stay below the first stochastic depth.
    assert caching.plan_cut(model).block == "block2a"
    with caching.frozen_layers_in_inference(model) as off:
        assert "block2b_drop" in off
        assert caching.plan_cut(model).block == "top"
    assert model.get_layer("backbone").get_layer("block2b_drop").rate > 0  # restored
    FullFineTune().apply(model)
    with pytest.raises(caching.CacheUnavailable, match="trainable variables below the cut"):
        caching.plan_cut(model)


class _ShiftInTraining(keras.layers.Layer):
    """Adds 1 in training mode only: neither BatchNorm nor stochastic, so only a probe sees it."""

    def call(self, x, training=False):
        return x + 1.0 if training else x


def _model_with_custom_layer():
    from zoo.registry import Block

    pixels = keras.Input((8, 8, 3))
    x = keras.layers.Conv2D(4, 3, name="c1")(pixels)
    x = _ShiftInTraining(name="shift")(x)
    inner = keras.Model(pixels, keras.layers.Conv2D(4, 3, name="c2")(x), name="backbone")
    outer_in = keras.Input((8, 8, 3))
    pooled = keras.layers.GlobalAveragePooling2D()(inner(outer_in))
    model = keras.Model(outer_in, keras.layers.Dense(2, name="head")(pooled))
    model.zoo_blocks = (Block("b1", "shift"), Block("b2", "c2"))
    inner.get_layer("c1").trainable = False
    return model


def test_only_layers_zoo_cannot_vouch_for_are_probed():
    model = _model()
    UnfreezeTop(blocks=2, batchnorm="frozen").apply(model)
    with caching.frozen_layers_in_inference(model):
        assert caching.layers_to_probe(caching.plan_cut(model)) == []

    custom = _model_with_custom_layer()
    plan = caching.plan_cut(custom)
    assert plan.block == "b1"
    assert caching.layers_to_probe(plan) == ["shift"]
    prefix = caching.split_model(custom, plan).prefix
    images = np.random.default_rng(0).uniform(0, 255, (2, 8, 8, 3)).astype("float32")
    assert "differs between training and inference" in caching.probe_prefix(prefix, images)


def test_fine_tune_probes_unvetted_layers_and_falls_back(monkeypatch):
    def refuse(prefix, images):
        raise AssertionError("a prefix of Keras' own layers must not be probed")

    monkeypatch.setattr(caching_plan, "probe_prefix", refuse)
    stage = Stage("head", FreezeBackbone(), 1, 1e-2)
    assert fine_tune(_model(), _data(16), None, [stage], verbose=0).stages[0].cache.used

    monkeypatch.setattr(caching_plan, "layers_to_probe", lambda plan: ["odd_layer"])
    monkeypatch.setattr(caching_plan, "probe_prefix", lambda prefix, images: "it differs")
    info = fine_tune(_model(), _data(16), None, [stage], verbose=0).stages[0].cache
    assert not info.used
    assert info.reason == "it differs; probed because of ['odd_layer']"


def test_derived_activations_equal_a_direct_pass_and_spill_like_it(tmp_path):
    model = _model()
    UnfreezeTop(blocks=2, batchnorm="frozen").apply(model)
    with caching.frozen_layers_in_inference(model):
        lower = caching.plan_cut(model)
    FreezeBackbone().apply(model)
    with caching.frozen_layers_in_inference(model):
        upper = caching.plan_cut(model)
        data = _data(n=40)  # a smaller last batch
        base = caching.compute_activations(
            caching.split_model(model, lower).prefix, data, verbose=0
        )
        direct = caching.compute_activations(
            caching.split_model(model, upper).prefix, data, verbose=0
        )
        middle = caching.middle_model(model, lower, upper)
        derived = caching.derive_activations(middle, base, verbose=0)
        spilled = caching.derive_activations(
            middle, base, budget_bytes=1000, disk_dir=tmp_path, label="train", verbose=0
        )
    assert (lower.block, upper.block) == ("block6d", "top")
    assert derived.x.shape == direct.x.shape == (40, 1, 1, 1280)
    assert float(np.max(np.abs(derived.x - direct.x))) <= 1e-5
    np.testing.assert_array_equal(derived.y, direct.y)
    np.testing.assert_array_equal(derived.canonical, direct.canonical)
    assert derived.seconds > base.seconds > 0  # a pass from pixels, through the base
    reloaded = caching.load_activations(tmp_path, "train")
    assert spilled.location == reloaded.location == str(tmp_path)
    np.testing.assert_array_equal(np.asarray(reloaded.x), derived.x)
    np.testing.assert_array_equal(reloaded.canonical, derived.canonical)
    assert reloaded.seconds == spilled.seconds > base.seconds  # the pass time is kept
    with pytest.raises(caching.CacheUnavailable, match="not below"):
        caching.middle_model(model, upper, lower)


@pytest.mark.slow
def test_next_stage_cache_is_computed_once_and_this_stage_derives_from_it(monkeypatch):
    data = _data()
    stages = [
        Stage("head", FreezeBackbone(), 2, 1e-2),
        Stage("top", UnfreezeTop(blocks=2, batchnorm="frozen"), 2, 1e-2),
    ]
    passes = []
    compute = caching.compute_activations
    monkeypatch.setattr(
        caching_compute,
        "compute_activations",
        lambda prefix, *a, **k: passes.append(prefix.output.shape) or compute(prefix, *a, **k),
    )
    shared = _model()
    one_by_one = _model(like=shared)

    result = fine_tune(shared, data, data, stages, shuffle_cache=False, verbose=0)
    seen, passes[:] = list(passes), []
    for stage in stages:  # alone, a stage cannot look ahead
        fine_tune(one_by_one, data, data, [stage], shuffle_cache=False, verbose=0)

    # Shared: one pass from pixels (train, validation) to block6d for both stages.
    assert [s[1:] for s in seen] == [(1, 1, 192)] * 2
    assert [s[1:] for s in passes] == [(1, 1, 1280)] * 2 + [(1, 1, 192)] * 2
    head, top = result.stages[0].cache, result.stages[1].cache
    assert head.cut == "top" and head.derived_from == "block6d" and not head.reused
    assert top.cut == "block6d" and top.reused
    assert top.location_reason == "reused from an earlier stage"
    assert head.pass_seconds > top.pass_seconds > 0 and top.build_seconds < head.build_seconds
    assert _max_diff(_weights(shared), _weights(one_by_one)) <= 1e-5


def test_cached_dataset_batches_in_canonical_order_without_autotuning():
    x = np.arange(5, dtype="float32").reshape(5, 1, 1, 1)
    acts = caching.Activations(x, np.arange(5), "memory", 2, canonical=np.array([4, 3, 2, 1, 0]))
    ds = caching.cached_dataset(acts, 2, first_epoch=0, epochs=1, shuffle=False, seed=0)
    # Autotuning's thread would stall the iterator's deletion at the end of fit.
    assert ds.options().autotune.enabled is False
    assert [b[1].numpy().tolist() for b in ds] == [[0, 1], [2, 3], [4]]
    shuffled = caching.cached_dataset(acts, 5, first_epoch=0, epochs=1, shuffle=True, seed=0)
    (batch,) = [b[1].numpy().tolist() for b in shuffled]
    assert batch == [4, 3, 2, 1, 0]  # one batch holds its examples in canonical order
